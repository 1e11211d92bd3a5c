//! The Looper regtest harness: the embedded chain, a local Nostr relay and N `looper-node`
//! processes in a scratch directory, funded and connected by a buyer -> seller channel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), looper_regtest::harness::HarnessError> {
//! use looper_regtest::harness::{Harness, HarnessConfig};
//! let config = HarnessConfig::new("/tmp/looper-harness", "target/debug/looper-node");
//! let harness = Harness::start(config).await?;
//! for node in harness.nodes() {
//!     println!("{}: {}", node.name(), node.cli_command());
//! }
//! let report = harness.loop_out("buyer", 100_000, 10_000).await?;
//! println!("{report}");
//! harness.stop().await;
//! # Ok(()) }
//! ```
//!
//! Each node runs as a child process with `--datadir DIR/<name> --network regtest
//! --esplora-url .. --relay .. --ln-listen 127.0.0.1:P --api-listen 127.0.0.1:Q` (with
//! [`NodeChainSource::Electrum`], `--chain-source electrum --electrum-url ..` instead of
//! `--esplora-url`: the chain's Electrum server; with [`NodeChainSource::BitcoindRpc`],
//! `--chain-source bitcoind --bitcoind-rpc-url .. --bitcoind-rpc-cookie ..`); its seller settings and short sync intervals
//! are in `DIR/<name>/looper.toml`; its standard output and error go to `DIR/<name>/node.log`.

mod client;
mod report;

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::Amount;
use looper_api::{OfferContext, OfferTerms};
use looper_protocol::messages::Offer;
use nostr_relay_builder::prelude::{LocalRelay, RelayBuilder};

pub use client::{
    ApiClient, Channel, DiscoveredOffer, ErrorBody, LnBalance, NodeInfo, SwapView, WalletBalance,
};
pub use report::{LoopOutReport, Phase, BUYER_STATES};

use crate::RegtestChain;

/// How long a node may take to answer its API after it was spawned.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the setup steps (funding seen, channel usable, offer discovered) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(240);

/// Errors of the harness. None carries a secret (tokens and seeds are never formatted).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or process operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The regtest chain failed.
    #[error("regtest chain: {0}")]
    Chain(#[from] crate::Error),
    /// The Nostr relay could not start.
    #[error("nostr relay: {0}")]
    Relay(String),
    /// The `looper-node` binary is missing.
    #[error("looper-node binary not found at {}: build it: cargo build -p looper-node", .0.display())]
    MissingBinary(PathBuf),
    /// An HTTP exchange with a node failed.
    #[error("{what}: {reason}")]
    Http {
        /// The request.
        what: String,
        /// Why.
        reason: String,
    },
    /// A node answered with an API error.
    #[error("{what}: HTTP {status} {}: {}", error.code, error.message)]
    Api {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The node's error: its stable code and message.
        error: ErrorBody,
    },
    /// A node process exited.
    #[error("node {name} exited ({status}); last lines of its log:\n{log_tail}")]
    NodeExited {
        /// The node.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its `node.log`.
        log_tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// No node of that name.
    #[error("no node named {0:?}")]
    NoSuchNode(String),
    /// A swap ended in another state than expected.
    #[error("swap {swap_id} ended in {state}: {detail}")]
    SwapFailed {
        /// The swap.
        swap_id: String,
        /// Its final state.
        state: String,
        /// Its events (JSON).
        detail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes an offer and serves buyers.
    Seller,
    /// Takes offers; gets a channel to every seller.
    Buyer,
    /// Both: publishes an offer and gets channels to the other sellers.
    Both,
}

impl Role {
    /// Whether the node publishes an offer.
    pub fn sells(self) -> bool {
        matches!(self, Role::Seller | Role::Both)
    }
    /// Whether the node takes offers (and so gets channels).
    pub fn buys(self) -> bool {
        matches!(self, Role::Buyer | Role::Both)
    }
}

/// The terms the harness's sellers offer by default: 10 000 to 1 000 000 sat, fee 1 000 sat +
/// 2 500 ppm, funding fee 300 sat, no prepay (tests of the prepay set one), 1 confirmation,
/// timeout delta 144 blocks, claim margin 20.
pub fn default_offer_terms() -> OfferTerms {
    OfferTerms {
        prepay_sat: looper_api::Prepay::Sat(0),
        min_amount_sat: 10_000,
        max_amount_sat: 1_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        ..OfferTerms::default()
    }
}

/// Per-sender limits a node puts on incoming Nostr swap traffic (the `[peer_limits]` section of
/// its `looper.toml`): token buckets per sender key, what exceeds them is dropped unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// New swap requests one sender may send back to back.
    pub swap_request_burst: u32,
    /// New swap requests a minute after the burst.
    pub swap_requests_per_minute: u32,
    /// Swap messages of any kind one sender may send back to back.
    pub message_burst: u32,
    /// Swap messages a minute after the burst.
    pub messages_per_minute: u32,
}

impl PeerLimits {
    /// Limits for a peer running `swaps` swaps at once under one Nostr key (the bench's buyers,
    /// as long as there are no per-swap keys): room for each swap's request and its few messages
    /// at once, and as much again every second.
    pub fn for_swaps_at_once(swaps: u32) -> Self {
        let swaps = swaps.max(1);
        PeerLimits {
            swap_request_burst: swaps.saturating_mul(2),
            swap_requests_per_minute: swaps.saturating_mul(120),
            message_burst: swaps.saturating_mul(10),
            messages_per_minute: swaps.saturating_mul(600),
        }
    }
}

/// Which of the chain's APIs a node reads the chain from (its `[chain] source`): the engine,
/// the wallet and ldk-node alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodeChainSource {
    /// The Esplora API ([`RegtestChain::esplora_url`]).
    #[default]
    Esplora,
    /// The Electrum server ([`RegtestChain::electrum_url`]).
    Electrum,
    /// Bitcoin Core's JSON-RPC ([`RegtestChain::rpc_url`], with the chain's cookie file).
    BitcoindRpc,
}

/// One node of the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its name (also its directory under the harness dir).
    pub name: String,
    /// What it does.
    pub role: Role,
    /// Whether, as a seller, it co-signs cooperative claims (off only to test the script path).
    pub seller_cooperative: bool,
    /// Its offer's terms, if it sells (written to `[seller]` of its `looper.toml` and published).
    pub offer: OfferTerms,
    /// As a seller, the swaps it serves at once (`seller.max_concurrent_swaps`).
    pub max_concurrent_swaps: u32,
    /// As a seller, refuse requests its channels cannot receive or its wallet cannot fund
    /// (`seller.check_liquidity`; off only where a test's seller has no channel, e.g. restored
    /// from its seed alone).
    pub seller_checks_liquidity: bool,
    /// As a buyer, its floor for an offer's claim margin (`buyer.min_claim_margin`; `None`: the
    /// node's default, 20). Tests with short timeouts lower it with the offer's.
    pub buyer_min_claim_margin: Option<u32>,
    /// Its per-sender limits on incoming swap traffic (`None`: the node's defaults).
    pub peer_limits: Option<PeerLimits>,
    /// Its cap on every fee rate it pays, in sat/vB (`fees.max_fee_rate_sat_vb`; `None`: the
    /// node's default, 200). A buyer refuses swaps it could not claim at its cap: small swaps
    /// (below about 61 000 sat at 200 sat/vB) need a lower one.
    pub max_fee_rate_sat_vb: Option<u64>,
    /// Its chain source (default: Esplora).
    pub chain_source: NodeChainSource,
    /// It serves a loop-in offer of its `offer` terms from its configuration (`[seller.in]`,
    /// offer id `looper-in`), whatever its role.
    pub loop_in_offer: bool,
}

impl NodeSpec {
    /// A cooperative seller with the default offer.
    pub fn seller(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            role: Role::Seller,
            seller_cooperative: true,
            offer: default_offer_terms(),
            max_concurrent_swaps: 50,
            seller_checks_liquidity: true,
            buyer_min_claim_margin: None,
            peer_limits: None,
            max_fee_rate_sat_vb: None,
            chain_source: NodeChainSource::Esplora,
            loop_in_offer: false,
        }
    }
    /// A buyer.
    pub fn buyer(name: impl Into<String>) -> Self {
        NodeSpec { role: Role::Buyer, ..NodeSpec::seller(name) }
    }
    /// The same node on the chain source `source`.
    pub fn on(self, source: NodeChainSource) -> Self {
        NodeSpec { chain_source: source, ..self }
    }
}

/// What [`Harness::start`] builds.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// Scratch directory (created; the chain goes to `DIR/chain`, node `n` to `DIR/n`).
    pub dir: PathBuf,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// The `looper-node` binary.
    pub node_binary: PathBuf,
    /// Leave everything running when the harness is dropped (only [`Harness::stop`] stops it).
    pub keep: bool,
    /// Size of each buyer -> seller channel (ldk-node lets at most 10 % of it be in flight: make
    /// it ten times the swap amount).
    pub channel_sat: u64,
    /// Sent to each node's swap wallet (the seller funds HTLCs from it).
    pub wallet_fund_sat: u64,
    /// Sent to a seller's ldk-node wallet (anchor reserve).
    pub seller_ln_fund_sat: u64,
    /// `RUST_LOG` of the nodes.
    pub node_log_filter: String,
}

impl HarnessConfig {
    /// A seller and a buyer, 2 000 000 sat channel (swaps up to 200 000 sat).
    pub fn new(dir: impl Into<PathBuf>, node_binary: impl Into<PathBuf>) -> Self {
        HarnessConfig {
            dir: dir.into(),
            nodes: vec![NodeSpec::seller("seller"), NodeSpec::buyer("buyer")],
            node_binary: node_binary.into(),
            keep: false,
            channel_sat: 2_000_000,
            wallet_fund_sat: 5_000_000,
            seller_ln_fund_sat: 300_000,
            node_log_filter: "info,ldk_node=warn,lightning=warn,nostr_relay_pool=warn".into(),
        }
    }
}

/// A running `looper-node` of the harness.
#[derive(Debug)]
pub struct NodeHandle {
    spec: NodeSpec,
    datadir: PathBuf,
    api_addr: SocketAddr,
    ln_addr: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    client: ApiClient,
    info: Option<NodeInfo>,
}

impl NodeHandle {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    /// Its spec.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    /// Its data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }
    /// The control API's base URL (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }
    /// The Lightning listen address.
    pub fn ln_addr(&self) -> SocketAddr {
        self.ln_addr
    }
    /// The file holding the API token.
    pub fn token_file(&self) -> PathBuf {
        self.datadir.join("api.token")
    }
    /// The API token (read from the token file).
    ///
    /// # Errors
    /// [`HarnessError::Io`] when the file cannot be read.
    pub fn token(&self) -> Result<String, HarnessError> {
        read_token(&self.token_file())
    }
    /// The node's log file.
    pub fn log_file(&self) -> PathBuf {
        self.datadir.join("node.log")
    }
    /// The API client.
    pub fn api(&self) -> &ApiClient {
        &self.client
    }
    /// What `GET /v1/info` said at start (`None` before the node first answered).
    pub fn info(&self) -> Option<&NodeInfo> {
        self.info.as_ref()
    }

    /// The node's Lightning node id, from `GET /v1/info`.
    ///
    /// # Errors
    /// [`HarnessError::Http`] when the node never answered `GET /v1/info`.
    fn ln_node_id(&self) -> Result<&str, HarnessError> {
        self.info.as_ref().map(|i| i.ln_node_id.as_str()).ok_or_else(|| HarnessError::Http {
            what: format!("GET /v1/info of {}", self.name()),
            reason: "no answer yet".into(),
        })
    }
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    /// A ready `looper` command line for this node.
    pub fn cli_command(&self) -> String {
        format!("looper --rpc-url {} --token-file {}", self.api_url(), self.token_file().display())
    }

    fn spawn(&mut self, binary: &Path, log_filter: &str) -> Result<(), HarnessError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(io(format!("open {}", self.log_file().display())))?;
        let err = log.try_clone().map_err(io("clone the log handle"))?;
        let mut cmd = Command::new(binary);
        cmd.args(&self.args)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        for var in ["LOOPER_CONFIG", "LOOPER_RESTORE", "LOOPER_LOG_JSON"] {
            cmd.env_remove(var);
        }
        let child = cmd.spawn().map_err(io(format!("spawn {}", binary.display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the API to answer (token file, then `GET /v1/info`).
    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(token) = read_token(&self.token_file()) {
                let client = ApiClient::new(self.api_url(), token)?;
                if let Ok(info) = client.info().await {
                    self.client = client;
                    self.info = Some(info);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "node {} to answer its API",
                    self.name()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn check_alive(&mut self) -> Result<(), HarnessError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(HarnessError::NodeExited {
                    name: self.spec.name.clone(),
                    status: status.to_string(),
                    log_tail: log_tail(&self.log_file(), 30),
                });
            }
        }
        Ok(())
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to the running process.
    fn signal(&self, signal: &str) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    fn kill_now(&mut self) {
        self.paused = false;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn terminate(&mut self, grace: Duration) {
        if self.paused {
            self.signal("CONT");
            self.paused = false;
        }
        self.signal("TERM");
        let Some(mut child) = self.child.take() else { return };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn read_token(path: &Path) -> Result<String, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(HarnessError::Io {
            what: format!("read {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "empty token file"),
        });
    }
    Ok(t.to_string())
}

/// The last `n` lines of a log file (empty when unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound and released).
///
/// # Errors
/// [`HarnessError::Io`] when no port can be bound.
pub fn free_port() -> Result<u16, HarnessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    Ok(l.local_addr().map_err(io("read a bound port"))?.port())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Polls `f` every 250 ms until it returns `Some`, for at most `timeout`.
///
/// # Errors
/// [`HarnessError::Timeout`] naming `what`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A background task mining one block every interval (stopped on drop).
#[derive(Debug)]
pub struct Miner {
    task: tokio::task::JoinHandle<()>,
}

impl Miner {
    /// Stops it.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running harness.
pub struct Harness {
    config: HarnessConfig,
    chain: Arc<RegtestChain>,
    relay: Option<LocalRelay>,
    relay_url: String,
    nodes: Vec<NodeHandle>,
    stopped: bool,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("dir", &self.config.dir)
            .field("relay", &self.relay_url)
            .field("nodes", &self.nodes.iter().map(|n| n.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Harness {
    /// Starts the chain, the relay and the nodes; funds the wallets, opens a channel from each
    /// buyer to each seller and publishes the sellers' offers. Must run in a multi-threaded
    /// tokio runtime.
    ///
    /// # Errors
    /// Any [`HarnessError`]; what was started is stopped again.
    pub async fn start(config: HarnessConfig) -> Result<Harness, HarnessError> {
        if !config.node_binary.is_file() {
            return Err(HarnessError::MissingBinary(config.node_binary.clone()));
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(io(format!("create {}", config.dir.display())))?;
        let chain_dir = config.dir.join("chain");
        let chain = tokio::task::spawn_blocking(move || RegtestChain::start(chain_dir))
            .await
            .map_err(|e| HarnessError::Relay(format!("chain start task: {e}")))??;
        let chain = Arc::new(chain);
        let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
            nostr_relay_builder::builder::RateLimit { max_reqs: 1_000, notes_per_minute: 100_000 },
        ));
        relay.run().await.map_err(|e| HarnessError::Relay(e.to_string()))?;
        let relay_url = relay.url().await.to_string();
        let mut harness = Harness {
            config,
            chain,
            relay: Some(relay),
            relay_url,
            nodes: Vec::new(),
            stopped: false,
        };
        // On error, Drop stops what runs (unless keep).
        harness.spawn_nodes().await?;
        harness.fund().await?;
        harness.open_channels().await?;
        harness.publish_offers().await?;
        Ok(harness)
    }

    async fn spawn_nodes(&mut self) -> Result<(), HarnessError> {
        let specs = self.config.nodes.clone();
        for spec in specs {
            let datadir = self.config.dir.join(&spec.name);
            std::fs::create_dir_all(&datadir)
                .map_err(io(format!("create {}", datadir.display())))?;
            std::fs::write(datadir.join("looper.toml"), node_toml(&spec))
                .map_err(io("write looper.toml"))?;
            let api_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let ln_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let chain = chain_args(&self.chain, spec.chain_source);
            let args = node_args(&datadir, &chain, &self.relay_url, ln_addr, api_addr);
            let mut node = NodeHandle {
                spec,
                datadir,
                api_addr,
                ln_addr,
                args,
                child: None,
                paused: false,
                client: ApiClient::new(format!("http://{api_addr}"), String::new())?,
                info: None,
            };
            node.spawn(&self.config.node_binary, &self.config.node_log_filter)?;
            self.nodes.push(node);
        }
        let binary = self.config.node_binary.clone();
        let filter = self.config.node_log_filter.clone();
        for node in &mut self.nodes {
            let mut tries = 0;
            loop {
                match node.wait_ready().await {
                    Ok(()) => break,
                    // A port picked free was taken meanwhile: new ports, once more.
                    // (The whole log: a backtrace may push the error out of the tail.)
                    Err(HarnessError::NodeExited { .. })
                        if tries < 3 && port_was_taken(&node.log_file()) =>
                    {
                        tries += 1;
                        node.api_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                        node.ln_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                        node.args = node_args(
                            &node.datadir,
                            &chain_args(&self.chain, node.spec.chain_source),
                            &self.relay_url,
                            node.ln_addr,
                            node.api_addr,
                        );
                        node.spawn(&binary, &filter)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn fund(&mut self) -> Result<(), HarnessError> {
        let sellers = self.nodes.iter().filter(|n| n.spec.role.sells()).count() as u64;
        let mut wanted = Vec::new();
        for node in &self.nodes {
            let wallet = parse_addr(&node.client.wallet_address().await?)?;
            self.chain.fund_address(&wallet, Amount::from_sat(self.config.wallet_fund_sat))?;
            let ln_sat = if node.spec.role.buys() {
                self.config.channel_sat * sellers.max(1) + 500_000
            } else {
                self.config.seller_ln_fund_sat
            };
            let ln = parse_addr(&node.client.ln_address().await?)?;
            self.chain.fund_address(&ln, Amount::from_sat(ln_sat))?;
            wanted.push(ln_sat);
        }
        for (node, ln_sat) in self.nodes.iter().zip(wanted) {
            let want_wallet = self.config.wallet_fund_sat;
            wait_until(&format!("{} funded", node.name()), SETUP_TIMEOUT, || async move {
                let _ = node.client.sync().await;
                let w = node.client.wallet_balance().await.ok()?;
                let l = node.client.ln_balance().await.ok()?;
                (w.total_sat >= want_wallet && l.onchain_spendable_sat >= ln_sat).then_some(())
            })
            .await?;
        }
        Ok(())
    }

    async fn open_channels(&mut self) -> Result<(), HarnessError> {
        let mut opened = 0usize;
        for buyer in self.nodes.iter().filter(|n| n.spec.role.buys()) {
            for seller in self.nodes.iter().filter(|n| n.spec.role.sells()) {
                if seller.name() == buyer.name() {
                    continue;
                }
                buyer
                    .client
                    .ln_open(
                        seller.ln_node_id()?,
                        &seller.ln_addr.to_string(),
                        self.config.channel_sat,
                    )
                    .await?;
                opened += 1;
            }
        }
        if opened == 0 {
            return Ok(());
        }
        let chain = Arc::clone(&self.chain);
        wait_until("channel fundings in the mempool", SETUP_TIMEOUT, || {
            let chain = Arc::clone(&chain);
            async move { (chain.mempool_size().ok()? >= opened).then_some(()) }
        })
        .await?;
        self.mine(6).await?;
        for buyer in self.nodes.iter().filter(|n| n.spec.role.buys()) {
            let want = self
                .nodes
                .iter()
                .filter(|s| s.spec.role.sells() && s.name() != buyer.name())
                .count();
            let nodes = &self.nodes;
            wait_until(
                &format!("{}'s channels usable", buyer.name()),
                SETUP_TIMEOUT,
                || async move {
                    for n in nodes {
                        let _ = n.client.sync().await;
                    }
                    let usable =
                        buyer.client.ln_channels().await.ok()?.iter().filter(|c| c.usable).count();
                    (usable >= want).then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn publish_offers(&mut self) -> Result<(), HarnessError> {
        for node in self.nodes.iter().filter(|n| n.spec.role.sells()) {
            let offer = seller_offer(node, &self.relay_url)?;
            node.client.publish_offer(&offer).await?;
        }
        Ok(())
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    /// The node named `name`.
    ///
    /// # Errors
    /// [`HarnessError::NoSuchNode`].
    pub fn node(&self, name: &str) -> Result<&NodeHandle, HarnessError> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| HarnessError::NoSuchNode(name.into()))
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut NodeHandle, HarnessError> {
        self.nodes
            .iter_mut()
            .find(|n| n.name() == name)
            .ok_or_else(|| HarnessError::NoSuchNode(name.into()))
    }

    /// The chain.
    pub fn chain(&self) -> &Arc<RegtestChain> {
        &self.chain
    }

    /// The relay's URL (`ws://127.0.0.1:PORT`).
    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Kills the node with SIGKILL (no clean shutdown).
    ///
    /// # Errors
    /// [`HarnessError::NoSuchNode`].
    pub fn kill(&mut self, name: &str) -> Result<(), HarnessError> {
        self.node_mut(name)?.kill_now();
        Ok(())
    }

    /// Freezes the node's process with SIGSTOP: it keeps its sockets open (peers see a silent
    /// node, not a closed connection) and does nothing until [`Harness::resume`]. Its API does
    /// not answer meanwhile; [`Harness::mine`] and [`Harness::sync_all`] skip it.
    ///
    /// # Errors
    /// [`HarnessError::NoSuchNode`].
    pub fn pause(&mut self, name: &str) -> Result<(), HarnessError> {
        let node = self.node_mut(name)?;
        if node.child.is_some() && !node.paused {
            node.signal("STOP");
            node.paused = true;
        }
        Ok(())
    }

    /// Lets a node frozen by [`Harness::pause`] run again (SIGCONT).
    ///
    /// # Errors
    /// [`HarnessError::NoSuchNode`].
    pub fn resume(&mut self, name: &str) -> Result<(), HarnessError> {
        let node = self.node_mut(name)?;
        if node.paused {
            node.signal("CONT");
            node.paused = false;
        }
        Ok(())
    }

    /// Starts the node again (after [`Harness::kill`], or stops it first with SIGTERM) and waits
    /// for its API.
    ///
    /// # Errors
    /// [`HarnessError::NodeExited`], [`HarnessError::Timeout`], ...
    pub async fn restart(&mut self, name: &str) -> Result<(), HarnessError> {
        let binary = self.config.node_binary.clone();
        let filter = self.config.node_log_filter.clone();
        let node = self.node_mut(name)?;
        node.terminate(Duration::from_secs(20));
        node.spawn(&binary, &filter)?;
        node.wait_ready().await?;
        // Its channels come back once the peers reconnect.
        let node = self.node(name)?;
        let had = node.client.ln_channels().await?.len();
        if had > 0 {
            wait_until(&format!("{name}'s channels usable again"), SETUP_TIMEOUT, || async move {
                let usable =
                    node.client.ln_channels().await.ok()?.iter().filter(|c| c.usable).count();
                (usable >= had).then_some(())
            })
            .await?;
        }
        Ok(())
    }

    /// A node restored from its mnemonic alone: stops it (SIGTERM; nothing to do after
    /// [`Harness::kill`]), deletes everything in its data directory but the seed (`seed`), its
    /// `looper.toml` (the harness's configuration of it) and its log, starts it again and waits
    /// for its API. Its Lightning channels are gone with `ldk/` (the peers force-close them).
    ///
    /// # Errors
    /// [`HarnessError::Io`] when the data directory cannot be emptied; start errors.
    pub async fn restore_from_seed(&mut self, name: &str) -> Result<(), HarnessError> {
        let binary = self.config.node_binary.clone();
        let filter = self.config.node_log_filter.clone();
        let node = self.node_mut(name)?;
        node.terminate(Duration::from_secs(20));
        wipe_datadir_except(&node.datadir, &["seed", "looper.toml", "node.log"])?;
        node.spawn(&binary, &filter)?;
        node.wait_ready().await
    }

    /// Mines `n` blocks, then asks every running node to sync; the new tip height.
    ///
    /// # Errors
    /// [`HarnessError::Chain`].
    pub async fn mine(&self, n: u32) -> Result<u32, HarnessError> {
        let chain = Arc::clone(&self.chain);
        tokio::task::spawn_blocking(move || chain.mine(n))
            .await
            .map_err(|e| HarnessError::Relay(format!("mine task: {e}")))??;
        self.sync_all().await;
        Ok(self.chain.tip_height()?)
    }

    /// `POST /v1/sync` on every running node (errors ignored: a node may be down).
    pub async fn sync_all(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            let _ = node.client.sync().await;
        }
    }

    /// Mines one block every `interval` in the background until the [`Miner`] is dropped.
    pub fn start_miner(&self, interval: Duration) -> Miner {
        let chain = Arc::clone(&self.chain);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let c = Arc::clone(&chain);
                let _ = tokio::task::spawn_blocking(move || c.mine(1)).await;
            }
        });
        Miner { task }
    }

    /// Runs one loop out from `buyer`: takes the cheapest discovered offer for `amount_sat`,
    /// follows the swap to `Claimed` (blocks must come: see [`Harness::start_miner`]) and
    /// reports amounts, fees, transactions and time per phase.
    ///
    /// # Errors
    /// [`HarnessError::SwapFailed`] when the swap ends otherwise; timeouts; API errors.
    pub async fn loop_out(
        &self,
        buyer: &str,
        amount_sat: u64,
        max_total_fee_sat: u64,
    ) -> Result<LoopOutReport, HarnessError> {
        let node = self.node(buyer)?;
        let t0 = Instant::now();
        let offer = self.best_offer(buyer, amount_sat).await?;
        let discovered = t0.elapsed();
        let start = Instant::now();
        let swap_id = node.client.swap_out(&offer, amount_sat, max_total_fee_sat).await?;
        let mut report = report::follow(node, &swap_id, start, SETUP_TIMEOUT).await?;
        report.discover = discovered;
        report.fill_chain_data(&self.chain.esplora_url()).await;
        Ok(report)
    }

    /// The cheapest offer `buyer` discovers for `amount_sat` (waits for one).
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] when none shows up.
    pub async fn best_offer(
        &self,
        buyer: &str,
        amount_sat: u64,
    ) -> Result<DiscoveredOffer, HarnessError> {
        let node = self.node(buyer)?;
        wait_until("an offer on the relay", SETUP_TIMEOUT, || async move {
            node.client.discover(amount_sat).await.ok()?.into_iter().next()
        })
        .await
    }

    /// Runs one loop in: `maker` publishes a loop-in offer, `taker` takes it for `amount_sat`
    /// (locks on chain, is paid over Lightning); follows the maker's side to `Claimed` (blocks
    /// must come: see [`Harness::start_miner`]) and reports amounts, fees, transactions and time
    /// per phase.
    ///
    /// # Errors
    /// [`HarnessError::SwapFailed`] when the swap ends otherwise; timeouts; API errors.
    pub async fn loop_in(
        &self,
        taker: &str,
        maker: &str,
        amount_sat: u64,
        max_total_fee_sat: u64,
    ) -> Result<LoopOutReport, HarnessError> {
        self.publish_loop_in_offer(maker).await?;
        let t0 = Instant::now();
        let offer = self.best_loop_in_offer(taker, amount_sat).await?;
        let discovered = t0.elapsed();
        let start = Instant::now();
        let swap_id =
            self.node(taker)?.client.swap_in(&offer, amount_sat, max_total_fee_sat).await?;
        let mut report = report::follow(self.node(maker)?, &swap_id, start, SETUP_TIMEOUT).await?;
        report.discover = discovered;
        report.fill_chain_data(&self.chain.esplora_url()).await;
        Ok(report)
    }

    /// Has `maker` publish a loop-in offer of its spec's terms (id `<name>-in`) on the harness's
    /// relay; the offer's id.
    ///
    /// # Errors
    /// API errors.
    pub async fn publish_loop_in_offer(&self, maker: &str) -> Result<String, HarnessError> {
        let node = self.node(maker)?;
        let mut offer = seller_offer(node, &self.relay_url)?;
        offer = Offer {
            offer_id: format!("{}-in", node.name()),
            direction: looper_protocol::SwapDirection::LoopIn,
            prepay_sat: None,
            ..offer
        };
        node.client.publish_offer(&offer).await
    }

    /// The cheapest loop-in offer `taker` discovers for `amount_sat` (waits for one).
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] when none shows up.
    pub async fn best_loop_in_offer(
        &self,
        taker: &str,
        amount_sat: u64,
    ) -> Result<DiscoveredOffer, HarnessError> {
        let node = self.node(taker)?;
        wait_until("a loop-in offer on the relay", SETUP_TIMEOUT, || async move {
            node.client.discover_loop_in(amount_sat).await.ok()?.into_iter().next()
        })
        .await
    }

    /// Stops the nodes (SIGTERM, SIGKILL after 20 s), the relay and the chain.
    pub async fn stop(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let _ = tokio::task::spawn_blocking(move || {
            let mut nodes = nodes;
            for n in &mut nodes {
                n.terminate(Duration::from_secs(20));
            }
        })
        .await;
        self.stop_rest();
    }

    fn stop_rest(&mut self) {
        for n in &mut self.nodes {
            n.terminate(Duration::from_secs(10));
        }
        if let Some(relay) = self.relay.take() {
            relay.shutdown();
        }
        self.stopped = true;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !self.stopped && !self.config.keep {
            self.stop_rest();
        }
    }
}

/// A node's chain source flags.
fn chain_args(chain: &RegtestChain, source: NodeChainSource) -> Vec<String> {
    match source {
        NodeChainSource::Esplora => vec!["--esplora-url".into(), chain.esplora_url()],
        NodeChainSource::Electrum => vec![
            "--chain-source".into(),
            "electrum".into(),
            "--electrum-url".into(),
            chain.electrum_url(),
        ],
        NodeChainSource::BitcoindRpc => vec![
            "--chain-source".into(),
            "bitcoind".into(),
            "--bitcoind-rpc-url".into(),
            chain.rpc_url(),
            "--bitcoind-rpc-cookie".into(),
            chain.rpc_cookie_file().display().to_string(),
        ],
    }
}

fn node_args(
    datadir: &Path,
    chain_args: &[String],
    relay_url: &str,
    ln_addr: SocketAddr,
    api_addr: SocketAddr,
) -> Vec<String> {
    let mut args = vec![
        "--datadir".to_string(),
        datadir.display().to_string(),
        "--network".into(),
        "regtest".into(),
    ];
    args.extend_from_slice(chain_args);
    args.extend([
        "--relay".into(),
        relay_url.into(),
        "--ln-listen".into(),
        ln_addr.to_string(),
        "--api-listen".into(),
        api_addr.to_string(),
    ]);
    args
}

/// Deletes every file and directory in `dir` except the names in `keep`.
fn wipe_datadir_except(dir: &Path, keep: &[&str]) -> Result<(), HarnessError> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", dir.display())))?;
        if keep.iter().any(|k| entry.file_name() == **k) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(format!("remove {}", path.display())))?;
    }
    Ok(())
}

/// Whether a node's log shows it could not bind a port (the control API's, or ldk-node's
/// listener, which panics on it).
fn port_was_taken(log_file: &Path) -> bool {
    let log = std::fs::read_to_string(log_file).unwrap_or_default();
    log.contains("Address already in use") || (log.contains("ldk-node") && log.contains("panicked"))
}

fn parse_addr(s: &str) -> Result<bitcoin::Address, HarnessError> {
    crate::parse_address(s).map_err(HarnessError::Chain)
}

/// The `looper.toml` of a node: seller terms (when it sells) and short sync intervals.
fn node_toml(spec: &NodeSpec) -> String {
    let mut s = String::new();
    s.push_str("[seller]\n");
    s.push_str(&format!("enabled = {}\n", spec.role.sells()));
    // The terms under their own names (`OfferTerms`'s serialized keys are the `[seller]` keys).
    if let Ok(serde_json::Value::Object(terms)) = serde_json::to_value(spec.offer) {
        for (key, value) in terms {
            s.push_str(&format!("{key} = {value}\n"));
        }
    }
    s.push_str(&format!("max_concurrent_swaps = {}\n", spec.max_concurrent_swaps));
    if !spec.seller_cooperative {
        // Needs the node's `seller.cooperative_claims` key (script-path tests only).
        s.push_str("cooperative_claims = false\n");
    }
    if !spec.seller_checks_liquidity {
        s.push_str("check_liquidity = false\n");
    }
    if spec.loop_in_offer {
        s.push_str("\n[seller.in]\n");
        if let Ok(serde_json::Value::Object(terms)) = serde_json::to_value(spec.offer) {
            for (key, value) in terms.into_iter().filter(|(k, _)| k != "prepay_sat") {
                s.push_str(&format!("{key} = {value}\n"));
            }
        }
    }
    s.push_str("\n[buyer]\nmax_total_fee_sat = 100000\nmax_route_cltv = 200\n");
    if let Some(margin) = spec.buyer_min_claim_margin {
        s.push_str(&format!("min_claim_margin = {margin}\n"));
    }
    s.push_str(
        "\n[sync]\nwallet_secs = 2\nlightning_secs = 2\nchain_poll_secs = 1\nfee_rate_secs = 60\n\
         autoloop_secs = 1\n",
    );
    if let Some(cap) = spec.max_fee_rate_sat_vb {
        s.push_str(&format!("\n[fees]\nmax_fee_rate_sat_vb = {cap}\n"));
    }
    if let Some(l) = spec.peer_limits {
        s.push_str(&format!(
            "\n[peer_limits]\nswap_request_burst = {}\nswap_requests_per_minute = {}\n\
             message_burst = {}\nmessages_per_minute = {}\n",
            l.swap_request_burst,
            l.swap_requests_per_minute,
            l.message_burst,
            l.messages_per_minute
        ));
    }
    s
}

/// The offer a seller node publishes: its spec's terms, its Lightning node and address, the
/// harness's relay, valid for a day.
fn seller_offer(node: &NodeHandle, relay_url: &str) -> Result<Offer, HarnessError> {
    let ln_node_id = node.ln_node_id()?.parse().map_err(|e| HarnessError::Http {
        what: format!("GET /v1/info of {}", node.name()),
        reason: format!("ln_node_id does not read: {e}"),
    })?;
    Ok(node.spec.offer.offer(OfferContext {
        offer_id: format!("{}-offer", node.name()),
        network: bitcoin::Network::Regtest,
        ln_node_id,
        ln_address: Some(node.ln_addr.to_string()),
        relays: vec![relay_url.to_string()],
        expires_at: unix_now() + 86_400,
        fee_rate_sat_vb: 1,
    }))
}

/// Finds `looper-node`: next to the current executable (the same cargo target dir), then on
/// `PATH`.
pub fn find_node_binary() -> Option<PathBuf> {
    let name = format!("looper-node{}", std::env::consts::EXE_SUFFIX);
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        // Test binaries live in target/debug/deps; the node binary in target/debug.
        for _ in 0..2 {
            if let Some(d) = &dir {
                let candidate = d.join(&name);
                if candidate.is_file() {
                    return Some(candidate);
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(&name)).find(|p| p.is_file())
}

/// Follows swap `swap_id` on `node` (the buyer) until it is final; the report of a `Claimed`
/// swap (phases timed from now; call [`LoopOutReport::fill_chain_data`] for the funding data).
///
/// # Errors
/// [`HarnessError::SwapFailed`] when it ends otherwise; [`HarnessError::Timeout`].
pub async fn report_follow(
    node: &NodeHandle,
    swap_id: &str,
    timeout: Duration,
) -> Result<LoopOutReport, HarnessError> {
    report::follow(node, swap_id, Instant::now(), timeout).await
}
