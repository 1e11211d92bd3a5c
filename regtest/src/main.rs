//! `looper-regtest`: runs the embedded regtest chain (`chain`); further subcommands (the
//! harness) plug into [`Command`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use looper_regtest::{ChainConfig, RegtestChain};

#[derive(Parser)]
#[command(name = "looper-regtest", version, about = "Looper's regtest chain and harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a regtest chain (Bitcoin Core's kernel) behind an Esplora API.
    Chain(ChainArgs),
}

#[derive(Args)]
struct ChainArgs {
    /// Address for the Esplora API.
    #[arg(long, default_value = "127.0.0.1:3002")]
    listen: SocketAddr,
    /// Data directory (kernel block files and chainstate).
    #[arg(long)]
    datadir: PathBuf,
    /// Blocks mined to the chain's own key on a fresh chain.
    #[arg(long, default_value_t = 101)]
    premine: u32,
    /// Fee rate (sat/vB) served by /fee-estimates.
    #[arg(long, default_value_t = 1.0)]
    fee_rate: f64,
}

fn run_chain(args: ChainArgs) -> anyhow::Result<()> {
    let mut config = ChainConfig::new(&args.datadir);
    config.listen = args.listen;
    config.premine = args.premine;
    config.fee_rate_sat_vb = args.fee_rate;
    let chain = RegtestChain::start_with(config).context("starting the regtest chain")?;
    println!("esplora: {}", chain.esplora_url());
    println!("tip height: {}, miner address: {}", chain.tip_height()?, chain.miner_address()?);
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    rt.block_on(tokio::signal::ctrl_c()).context("waiting for ctrl-c")?;
    chain.shutdown();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Chain(args) => run_chain(args),
    }
}
