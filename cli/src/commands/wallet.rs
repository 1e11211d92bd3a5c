//! `looper wallet balance|address|send`.

use clap::Subcommand;
use looper_api::{AddressResponse, SendRequest, SendResponse, WalletBalance};
use serde_json::json;

use super::{confirm, parse_sat, Ctx};
use crate::error::CliResult;
use crate::output::{key_values, print_json, sat};

/// Wallet commands.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Balance of the on-chain swap wallet.
    #[command(after_help = "Example:\n  looper wallet balance")]
    Balance,
    /// A new receive address of the swap wallet.
    #[command(after_help = "Example:\n  looper wallet address")]
    Address,
    /// Send from the swap wallet (asks for confirmation unless --yes).
    #[command(
        after_help = "Example:\n  looper wallet send --address bcrt1q... --amount 50000 --fee-rate 2"
    )]
    Send {
        /// Destination address.
        #[arg(long, value_name = "ADDR")]
        address: String,
        /// Amount in satoshis.
        #[arg(long, value_name = "SAT", value_parser = parse_sat)]
        amount: u64,
        /// Fee rate in sat/vB (default: the node's estimate).
        #[arg(long, value_name = "SAT_PER_VB", value_parser = parse_sat)]
        fee_rate: Option<u64>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs a wallet command.
pub async fn wallet(ctx: &Ctx, cmd: WalletCommand) -> CliResult<()> {
    let client = ctx.client()?;
    match cmd {
        WalletCommand::Balance => {
            let v: WalletBalance =
                client.get("/v1/wallet/balance", "get the wallet balance").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!(
                    "{}",
                    key_values(&[
                        ("confirmed", sat(v.confirmed_sat)),
                        ("pending (own)", sat(v.trusted_pending_sat)),
                        ("pending (incoming)", sat(v.untrusted_pending_sat)),
                        ("immature", sat(v.immature_sat)),
                        ("total", sat(v.total_sat)),
                    ])
                );
            }
        }
        WalletCommand::Address => {
            let v: AddressResponse =
                client.post("/v1/wallet/address", &json!({}), "get a new address").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                println!("{}", v.address);
            }
        }
        WalletCommand::Send { address, amount, fee_rate, yes } => {
            let rate = fee_rate.map(|r| format!(" at {r} sat/vB")).unwrap_or_default();
            confirm(&format!("Send {} to {address}{rate}?", sat(amount)), yes)?;
            let body = SendRequest {
                address: address.clone(),
                amount_sat: amount,
                fee_rate_sat_vb: fee_rate,
            };
            let v: SendResponse =
                client.post("/v1/wallet/send", &body, "send from the wallet").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                println!("sent {} to {address}: txid {}", sat(amount), v.txid);
            }
        }
    }
    Ok(())
}
