//! An external chain: your own bitcoind + Esplora (electrs), driven by shell commands.

use std::process::Command;

use bitcoin::{Address, Amount};

use crate::error::{Error, Result};

/// A regtest chain run elsewhere: an Esplora URL for reading and shell command templates for
/// mining and funding (run with `sh -c`). Placeholders: `{n}`, `{address}`, `{amount_sat}`,
/// `{amount_btc}`.
///
/// Example for bitcoind:
/// `ExternalChain::new("http://127.0.0.1:3002", "bitcoin-cli -regtest generatetoaddress {n} {address}")
///     .with_fund_command("bitcoin-cli -regtest sendtoaddress {address} {amount_btc}")`
#[derive(Debug, Clone)]
pub struct ExternalChain {
    /// Base URL of the Esplora API.
    pub esplora_url: String,
    /// Command template that mines `{n}` blocks to `{address}`.
    pub mine_command: String,
    /// Command template that sends `{amount_btc}` / `{amount_sat}` to `{address}`.
    pub fund_command: Option<String>,
}

impl ExternalChain {
    /// An external chain with a mining command.
    pub fn new(esplora_url: impl Into<String>, mine_command: impl Into<String>) -> Self {
        Self {
            esplora_url: esplora_url.into().trim_end_matches('/').to_string(),
            mine_command: mine_command.into(),
            fund_command: None,
        }
    }

    /// Adds a funding command.
    pub fn with_fund_command(mut self, fund_command: impl Into<String>) -> Self {
        self.fund_command = Some(fund_command.into());
        self
    }

    /// Reads `LOOPER_ESPLORA_URL`, `LOOPER_MINE_CMD` and (optional) `LOOPER_FUND_CMD`.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("LOOPER_ESPLORA_URL").ok()?;
        let mine = std::env::var("LOOPER_MINE_CMD").ok()?;
        let mut chain = Self::new(url, mine);
        chain.fund_command = std::env::var("LOOPER_FUND_CMD").ok();
        Some(chain)
    }

    /// Mines `n` blocks to `address`; returns the command's standard output.
    pub fn mine_blocks(&self, n: u32, address: &Address) -> Result<String> {
        let cmd = self
            .mine_command
            .replace("{n}", &n.to_string())
            .replace("{address}", &address.to_string());
        run(&cmd)
    }

    /// Sends `amount` to `address`; returns the command's standard output (often the txid).
    pub fn fund_address(&self, address: &Address, amount: Amount) -> Result<String> {
        let template = self
            .fund_command
            .as_ref()
            .ok_or_else(|| Error::InvalidRequest("no fund command configured".into()))?;
        let cmd = template
            .replace("{address}", &address.to_string())
            .replace("{amount_sat}", &amount.to_sat().to_string())
            .replace("{amount_btc}", &format!("{:.8}", amount.to_btc()));
        run(&cmd)
    }
}

fn run(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| Error::io("running chain command", e))?;
    if !out.status.success() {
        return Err(Error::InvalidRequest(format!(
            "chain command failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_templated() {
        let (_, addr) = crate::test_key("ext").unwrap();
        let chain = ExternalChain::new("http://x/", "echo mine {n} {address}")
            .with_fund_command("echo fund {address} {amount_btc} {amount_sat}");
        assert_eq!(chain.esplora_url, "http://x");
        assert_eq!(chain.mine_blocks(3, &addr).unwrap(), format!("mine 3 {addr}"));
        assert_eq!(
            chain.fund_address(&addr, Amount::from_sat(150_000_000)).unwrap(),
            format!("fund {addr} 1.50000000 150000000")
        );
        assert!(ExternalChain::new("u", "exit 3").mine_blocks(1, &addr).is_err());
    }
}
