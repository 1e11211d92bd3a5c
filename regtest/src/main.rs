//! `looper-regtest`: runs the embedded regtest chain (`chain`), the whole harness (`harness`:
//! chain, Nostr relay, funded looper-nodes with a channel) or the demo (`demo`: one loop out end
//! to end with a report).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::time::{Duration, Instant};

use looper_regtest::harness::{self, Harness, HarnessConfig, NodeSpec};
use looper_regtest::{ChainConfig, RegtestChain};

#[derive(Parser)]
#[command(name = "looper-regtest", version, about = "Looper's regtest chain and harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a regtest chain (Bitcoin Core's kernel) behind an Esplora API, an Electrum server and
    /// Bitcoin Core's JSON-RPC.
    Chain(ChainArgs),
    /// Start the chain, a local Nostr relay and looper-nodes (a seller and buyers), funded and
    /// with buyer -> seller channels; print each node's API and a ready `looper` command line.
    Harness(HarnessArgs),
    /// Run one loop out end to end (seller + buyer) and print a report, then stop everything.
    Demo(DemoArgs),
}

#[derive(Args)]
struct NodeBinArgs {
    /// The looper-node binary (default: next to this executable, then on PATH).
    #[arg(long, value_name = "FILE")]
    node_bin: Option<PathBuf>,
    /// Scratch directory (default: a new directory under the system temp dir).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The chain API the nodes read the chain from (their `[chain] source`).
    #[arg(long, value_enum, default_value_t = ChainSourceArg::Esplora)]
    chain_source: ChainSourceArg,
}

/// `--chain-source`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ChainSourceArg {
    /// The chain's Esplora API.
    Esplora,
    /// The chain's Electrum server.
    Electrum,
    /// The chain's Bitcoin Core JSON-RPC.
    Bitcoind,
}

impl From<ChainSourceArg> for harness::NodeChainSource {
    fn from(a: ChainSourceArg) -> Self {
        match a {
            ChainSourceArg::Esplora => harness::NodeChainSource::Esplora,
            ChainSourceArg::Electrum => harness::NodeChainSource::Electrum,
            ChainSourceArg::Bitcoind => harness::NodeChainSource::BitcoindRpc,
        }
    }
}

#[derive(Args)]
struct HarnessArgs {
    /// Number of nodes: one seller and N-1 buyers.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Keep everything running until Ctrl-C, and keep the scratch directory.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    common: NodeBinArgs,
}

#[derive(Args)]
struct DemoArgs {
    /// Swap amount in satoshis.
    #[arg(long, default_value_t = 100_000)]
    amount: u64,
    /// Run a loop in instead: the buyer node (it has the channel's outbound liquidity) makes a
    /// loop-in offer and pays; the seller node locks on chain and is paid over Lightning.
    #[arg(long = "in")]
    loop_in: bool,
    /// Keep the scratch directory (node logs, chain) afterwards.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    common: NodeBinArgs,
}

#[derive(Args)]
struct ChainArgs {
    /// Address for the Esplora API.
    #[arg(long, default_value = "127.0.0.1:3002")]
    listen: SocketAddr,
    /// Address for the Electrum protocol server (plain TCP; electrs's regtest port by default).
    #[arg(long, default_value = "127.0.0.1:60401")]
    electrum_listen: SocketAddr,
    /// Address for Bitcoin Core's JSON-RPC (bitcoind's regtest port by default); it takes the
    /// cookie in DATADIR/.cookie, and --rpc-user/--rpc-password when given.
    #[arg(long, default_value = "127.0.0.1:18443")]
    rpc_listen: SocketAddr,
    /// A JSON-RPC user (with --rpc-password), besides the cookie.
    #[arg(long, requires = "rpc_password")]
    rpc_user: Option<String>,
    /// The JSON-RPC user's password.
    #[arg(long, requires = "rpc_user")]
    rpc_password: Option<String>,
    /// Data directory (kernel block files and chainstate).
    #[arg(long)]
    datadir: PathBuf,
    /// Blocks mined to the chain's own key on a fresh chain.
    #[arg(long, default_value_t = 101)]
    premine: u32,
    /// Fee rate (sat/vB) served by /fee-estimates (floored at --min-fee-rate; overridable with
    /// POST /regtest/fee-estimates).
    #[arg(long, default_value_t = 1.0)]
    fee_rate: f64,
    /// Mempool minimum fee rate (sat/vB; 0: off): cheaper transactions are refused (change it
    /// with POST /regtest/min-fee-rate).
    #[arg(long, default_value_t = 0.0)]
    min_fee_rate: f64,
    /// Most vsize of mempool transactions per block (default: the consensus limit only; change
    /// it with POST /regtest/max-block-vsize).
    #[arg(long, value_name = "VBYTES")]
    max_block_vsize: Option<u64>,
}

fn run_chain(args: ChainArgs) -> anyhow::Result<()> {
    let mut config = ChainConfig::new(&args.datadir);
    config.listen = args.listen;
    config.electrum_listen = args.electrum_listen;
    config.rpc_listen = args.rpc_listen;
    config.rpc_auth = args.rpc_user.zip(args.rpc_password);
    config.premine = args.premine;
    config.fee_rate_sat_vb = args.fee_rate;
    config.min_fee_rate_sat_vb = args.min_fee_rate;
    config.max_block_vsize = args.max_block_vsize;
    let chain = RegtestChain::start_with(config).context("starting the regtest chain")?;
    println!("esplora: {}", chain.esplora_url());
    println!("electrum: {}", chain.electrum_url());
    println!("bitcoind rpc: {} (cookie {})", chain.rpc_url(), chain.rpc_cookie_file().display());
    println!("tip height: {}, miner address: {}", chain.tip_height()?, chain.miner_address()?);
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    rt.block_on(tokio::signal::ctrl_c()).context("waiting for ctrl-c")?;
    chain.shutdown();
    Ok(())
}

fn node_binary(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg.or_else(harness::find_node_binary) {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => anyhow::bail!(
            "looper-node binary not found at {}: build it: cargo build -p looper-node",
            p.display()
        ),
        None => anyhow::bail!(
            "looper-node binary not found next to looper-regtest or on PATH: build it: cargo build -p looper-node"
        ),
    }
}

/// The scratch dir and whether we created it (then it is removed at the end unless kept).
fn scratch_dir(arg: Option<PathBuf>) -> anyhow::Result<(PathBuf, bool)> {
    match arg {
        Some(d) => Ok((d, false)),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let d =
                std::env::temp_dir().join(format!("looper-regtest-{}-{now}", std::process::id()));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            Ok((d, true))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
}

fn run_harness(args: HarnessArgs) -> anyhow::Result<()> {
    let binary = node_binary(args.common.node_bin)?;
    let (dir, created) = scratch_dir(args.common.dir)?;
    let mut config = HarnessConfig::new(&dir, binary);
    let source = args.common.chain_source.into();
    config.nodes = vec![NodeSpec::seller("seller").on(source)];
    for i in 1..args.nodes.max(2) {
        let name = if args.nodes <= 2 { "buyer".to_string() } else { format!("buyer{i}") };
        config.nodes.push(NodeSpec::buyer(name).on(source));
    }
    println!("starting the harness in {} ...", dir.display());
    let rt = runtime()?;
    let result = rt.block_on(async {
        let started = Instant::now();
        let harness = Harness::start(config).await?;
        println!("ready in {:.1} s", started.elapsed().as_secs_f64());
        println!("esplora: {}", harness.chain().esplora_url());
        println!("electrum: {}", harness.chain().electrum_url());
        println!("relay:   {}", harness.relay_url());
        for node in harness.nodes() {
            println!(
                "{} ({:?}): API {}  log {}",
                node.name(),
                node.spec().role,
                node.api_url(),
                node.log_file().display()
            );
            println!("  {}", node.cli_command());
        }
        if args.keep {
            println!("running; Ctrl-C stops everything");
            let _ = tokio::signal::ctrl_c().await;
        }
        harness.stop().await;
        anyhow::Ok(())
    });
    if created && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let binary = node_binary(args.common.node_bin)?;
    let (dir, created) = scratch_dir(args.common.dir)?;
    let mut config = HarnessConfig::new(&dir, binary);
    let source = args.common.chain_source.into();
    config.nodes = config.nodes.into_iter().map(|n| n.on(source)).collect();
    config.channel_sat = (args.amount.saturating_mul(10) + 100_000).max(1_000_000);
    let amount = args.amount;
    let channel_sat = config.channel_sat;
    println!(
        "==> starting a regtest chain, a Nostr relay, a seller and a buyer in {}",
        dir.display()
    );
    let rt = runtime()?;
    let result = rt.block_on(async {
        let started = Instant::now();
        let harness = Harness::start(config).await?;
        println!(
            "==> ready in {:.1} s: wallets funded, channel buyer -> seller of {} sat, offer published",
            started.elapsed().as_secs_f64(),
            channel_sat
        );
        for node in harness.nodes() {
            println!("    {}: {}", node.name(), node.cli_command());
        }
        let miner = harness.start_miner(Duration::from_secs(1));
        let report = if args.loop_in {
            println!(
                "==> loop in of {amount} sat: the seller node locks, the buyer node pays (a block is mined every second)"
            );
            harness.loop_in("seller", "buyer", amount, amount / 10).await
        } else {
            println!("==> loop out of {amount} sat (a block is mined every second)");
            harness.loop_out("buyer", amount, amount / 10).await
        };
        miner.stop();
        let logs: Vec<_> = harness.nodes().iter().map(|n| n.log_file()).collect();
        harness.stop().await;
        match report {
            Ok(r) => {
                println!("{r}");
                anyhow::Ok(())
            }
            Err(e) => {
                for log in logs {
                    eprintln!("--- {}\n{}", log.display(), harness::log_tail(&log, 20));
                }
                Err(e.into())
            }
        }
    });
    if created && !args.keep && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("scratch directory kept: {}", dir.display());
    }
    result
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Chain(_) => "info",
        _ => "warn,nostr_relay_builder=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    match cli.command {
        Command::Chain(args) => run_chain(args),
        Command::Harness(args) => run_harness(args),
        Command::Demo(args) => run_demo(args),
    }
}
