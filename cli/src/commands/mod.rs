//! The command line (clap) and the dispatch to one module per command group.

pub mod autoloop;
pub mod block;
pub mod info;
pub mod ln;
pub mod loop_in;
pub mod offers;
pub mod out;
pub mod stats;
pub mod swaps;
pub mod wallet;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client::{Client, ConnectOptions};
use crate::error::{CliError, CliResult};
use crate::output::Format;

const MAIN_AFTER_HELP: &str = "\
Examples:
  looper --network signet info
  looper offers --amount 250000
  looper out --amount 250000 --best
  looper swap monitor

The node's data dir: --datadir, else $HOME/.looper/NETWORK (bitcoin, testnet, testnet4, signet,
regtest; NETWORK from --network, default mainnet: bitcoin), or an older node's $HOME/.looper.
The node's address: --rpc-url, else `api.listen` of DATADIR/looper.toml, else 127.0.0.1 and the
network's default port (8839 mainnet, 18839 testnet, 48839 testnet4, 38839 signet, 28839 regtest).
The token: --token-file, else DATADIR/api.token. Exit codes: 0 ok, 1 failure, 2 usage.";

/// `looper`: take and make peer-to-peer Lightning <-> on-chain swaps through a looper-node.
#[derive(Debug, Parser)]
#[command(name = "looper", version, about, after_help = MAIN_AFTER_HELP)]
pub struct Cli {
    /// The node's data directory (reads api.token and looper.toml). Default:
    /// $HOME/.looper/NETWORK.
    #[arg(
        long,
        global = true,
        env = "LOOPER_DATADIR",
        hide_env_values = true,
        help_heading = "Global options",
        value_name = "DIR"
    )]
    pub datadir: Option<PathBuf>,
    /// The node's control API URL, e.g. http://127.0.0.1:28839.
    #[arg(
        long,
        global = true,
        env = "LOOPER_RPC_URL",
        hide_env_values = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub rpc_url: Option<String>,
    /// File holding the API token. Default: DATADIR/api.token.
    #[arg(
        long,
        global = true,
        env = "LOOPER_TOKEN_FILE",
        hide_env_values = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// Network of the node: picks its default data dir, and its default API port when
    /// looper.toml does not say. Default: mainnet.
    #[arg(
        long,
        global = true,
        env = "LOOPER_NETWORK",
        hide_env_values = true,
        help_heading = "Global options",
        value_name = "NETWORK"
    )]
    pub network: Option<String>,
    /// Print JSON (schema in the README) instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The node: network, tip height, keys, open swaps.
    #[command(after_help = "Example:\n  looper info\n  looper --json info")]
    Info,
    /// Live offers on Nostr, best (cheapest) first.
    #[command(
        after_help = "Examples:\n  looper offers --amount 250000\n  looper offers --in --amount 250000"
    )]
    Offers(offers::OffersArgs),
    /// This node's own offers (seller): create, list, withdraw.
    #[command(subcommand)]
    Offer(offers::OfferCommand),
    /// The seller's block list of Nostr keys (requests dropped): add, remove, list.
    #[command(subcommand)]
    Block(block::BlockCommand),
    /// Loop out: pay Lightning, receive on-chain. Shows the quote, asks, then follows the swap.
    #[command(
        after_help = "Examples:\n  looper out --amount 250000 --best\n  looper out --amount 250000 --offer 5f2c... --max-total-fee 3000 --yes"
    )]
    Out(out::OutArgs),
    /// Loop in: lock on-chain BTC, be paid over Lightning. Shows the quote, asks, then follows
    /// the swap.
    #[command(
        after_help = "Examples:\n  looper in --amount 250000\n  looper in --amount 250000 --offer in-1 --max-total-fee 3000 --yes"
    )]
    In(loop_in::InArgs),
    /// Every swap of this node, newest first.
    #[command(after_help = "Example:\n  looper swaps")]
    Swaps,
    /// One swap by id or payment hash; `swap monitor [ID]`, `swap abort ID`, `swap export ID`.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  looper swap 9d1e...\n  looper swap monitor\n  looper swap abort 9d1e...\n  looper swap export 9d1e... --out swap.json"
    )]
    Swap(swaps::SwapArgs),
    /// Totals over every swap: outcomes, volume, fees earned and paid, on-chain fees, prepays,
    /// losses to griefing.
    #[command(after_help = "Example:\n  looper stats\n  looper --json stats")]
    Stats,
    /// The on-chain swap wallet: balance, address, send.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// The Lightning node: info, channels, balance, peers, connect, disconnect, open, close,
    /// invoice, pay, address, withdraw.
    #[command(subcommand)]
    Ln(ln::LnCommand),
    /// Autoloop: rules that keep the channels balanced by swapping on their own within a fee
    /// budget (off by default): status, set, dry-run.
    #[command(subcommand)]
    Autoloop(autoloop::AutoloopCommand),
    /// Sync the wallets with the chain now.
    #[command(after_help = "Example:\n  looper sync")]
    Sync,
    /// Shell completions on stdout.
    #[command(after_help = "Example:\n  looper completions bash > /etc/bash_completion.d/looper")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What every command gets: how to reach the node and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where the node is.
    pub opts: ConnectOptions,
    /// Human or JSON.
    pub format: Format,
}

impl Ctx {
    /// A client of the node (reads the token now).
    ///
    /// # Errors
    /// See [`Client::connect`].
    pub fn client(&self) -> CliResult<Client> {
        Client::connect(&self.opts)
    }

    /// Whether JSON is asked for.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Parses an amount in satoshis: digits, `_` or `,` as separators; at least 1.
///
/// # Errors
/// A message clap shows as a usage error.
pub fn parse_sat(s: &str) -> Result<u64, String> {
    let clean: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    if clean.is_empty() || !clean.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number of satoshis (e.g. 250000)"));
    }
    let n: u64 = clean.parse().map_err(|_| format!("{s:?} is too large"))?;
    if n == 0 {
        return Err("the amount must be at least 1 sat".into());
    }
    if n > 2_100_000_000_000_000 {
        return Err(format!("{s:?} is more than 21 million BTC"));
    }
    Ok(n)
}

/// Asks `question [y/N]` on the terminal unless `yes`.
///
/// # Errors
/// A usage error when stdin is not a terminal and `yes` is not set; a failure when the user does
/// not answer yes.
pub fn confirm(question: &str, yes: bool) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "cannot ask for confirmation",
            "standard input is not a terminal",
            "pass --yes to go ahead without asking",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        CliError::failure(
            "cannot read the answer",
            e.to_string(),
            "pass --yes to skip the question",
        )
    })?;
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::failure("stopped", "not confirmed", "nothing was done")),
    }
}

/// Runs the parsed command.
///
/// # Errors
/// The command's [`CliError`].
pub async fn run(cli: Cli) -> CliResult<()> {
    let ctx = Ctx {
        opts: ConnectOptions {
            datadir: cli.datadir,
            rpc_url: cli.rpc_url,
            token_file: cli.token_file,
            network: cli.network,
        },
        format: if cli.json { Format::Json } else { Format::Human },
    };
    match cli.command {
        Command::Info => info::info(&ctx).await,
        Command::Offers(args) => offers::discover(&ctx, &args).await,
        Command::Offer(cmd) => offers::offer(&ctx, cmd).await,
        Command::Block(cmd) => block::block(&ctx, cmd).await,
        Command::Out(args) => out::out(&ctx, &args).await,
        Command::In(args) => loop_in::loop_in(&ctx, &args).await,
        Command::Swaps => swaps::list(&ctx).await,
        Command::Swap(args) => swaps::swap(&ctx, args).await,
        Command::Stats => stats::stats(&ctx).await,
        Command::Wallet(cmd) => wallet::wallet(&ctx, cmd).await,
        Command::Ln(cmd) => ln::ln(&ctx, cmd).await,
        Command::Autoloop(cmd) => autoloop::autoloop(&ctx, cmd).await,
        Command::Sync => info::sync(&ctx).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "looper", &mut std::io::stdout());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_sat("250000"), Ok(250_000));
        assert_eq!(parse_sat("250_000"), Ok(250_000));
        assert_eq!(parse_sat("250,000"), Ok(250_000));
        assert!(parse_sat("0").is_err());
        assert!(parse_sat("-5").is_err());
        assert!(parse_sat("1.5").is_err());
        assert!(parse_sat("abc").is_err());
        assert!(parse_sat("99999999999999999999999").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
