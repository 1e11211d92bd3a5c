//! Lightning for the engine: one [`Lightning`] trait (object-safe, `Arc<dyn Lightning>`) and its
//! ldk-node implementation, [`LdkLightning`].
//!
//! The seller's swap invoice is a hold invoice (`receive_for_hash`): the payment is held until the
//! engine claims it (`claim_for_hash`) or fails it back (`fail_for_hash`). The buyer pays with a cap
//! on the route's total CLTV. Events come back through [`Lightning::take_events`] as
//! [`LightningEvent`]s keyed by payment hash, so the engine can route them to the swap.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::Network;
use ldk_node::config::{BackgroundSyncConfig, ElectrumSyncConfig, EsploraSyncConfig};
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::routing::router::RouteParametersConfig;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::lightning_types::payment::{
    PaymentHash as LdkPaymentHash, PaymentPreimage as LdkPreimage,
};
use ldk_node::payment::PaymentStatus;
use ldk_node::{Builder, Node};
use looper_protocol::{PaymentHash, Preimage};
use tokio::sync::{mpsc, oneshot};

pub mod kv;
pub mod log;

/// An event of the Lightning node that concerns swaps.
#[derive(Debug, Clone)]
pub enum LightningEvent {
    /// A payment to one of our hold invoices is held, waiting for a claim or a failure.
    PaymentClaimable {
        /// Its hash.
        payment_hash: PaymentHash,
        /// What it pays.
        amount_msat: u64,
    },
    /// A payment to us was claimed.
    PaymentClaimed {
        /// Its hash.
        payment_hash: PaymentHash,
        /// What it paid.
        amount_msat: u64,
    },
    /// A payment we sent succeeded.
    PaymentSucceeded {
        /// Its hash.
        payment_hash: PaymentHash,
        /// The preimage it revealed.
        preimage: Preimage,
        /// Routing fee paid.
        fee_paid_msat: Option<u64>,
    },
    /// A payment we sent failed for good.
    PaymentFailed {
        /// Its hash (when known).
        payment_hash: Option<PaymentHash>,
        /// Why.
        reason: String,
    },
}

/// A [`LightningEvent`] as the event stream delivers it: the node marks the event handled (and so
/// never delivers it again) only once [`LightningDelivery::ack`] is called, after the engine has
/// persisted what follows from it. Dropped without an ack, the event is delivered again (now, or
/// after a restart).
#[derive(Debug)]
pub struct LightningDelivery {
    /// The event.
    pub event: LightningEvent,
    ack: Option<oneshot::Sender<()>>,
}

impl LightningDelivery {
    /// A delivery whose ack is reported on `ack` (`None`: nothing waits for it).
    pub fn new(event: LightningEvent, ack: Option<oneshot::Sender<()>>) -> Self {
        Self { event, ack }
    }

    /// Marks the event processed: the node may forget it.
    pub fn ack(mut self) {
        if let Some(tx) = self.ack.take() {
            // The forwarder stopped meanwhile: the event comes again at the next start.
            let _ = tx.send(());
        }
    }
}

/// What [`Lightning::pay`] found or started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// A new payment is under way; its result comes as an event.
    Started,
    /// The invoice was paid before (a resumed swap): the payment is still in flight.
    AlreadyPending,
    /// The invoice was paid before and succeeded: here is the preimage.
    AlreadySucceeded(Preimage),
}

/// A payment the Lightning node knows, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentInfo {
    /// Its payment hash (hex).
    pub payment_hash: String,
    /// "inbound" or "outbound".
    pub direction: String,
    /// "pending", "succeeded" or "failed".
    pub status: String,
    /// What it pays (when known).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount_msat: Option<u64>,
    /// Routing fee paid (outbound, once known).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fee_paid_msat: Option<u64>,
    /// The preimage: only for an outbound payment that succeeded (the payer's proof of payment;
    /// an inbound preimage is ours and is never shown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preimage: Option<String>,
    /// Last change (unix seconds).
    pub updated_at: u64,
}

/// A channel, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelInfo {
    /// Channel id (hex).
    pub channel_id: String,
    /// The peer's node id.
    pub counterparty: String,
    /// Channel size.
    pub capacity_sat: u64,
    /// What we can send.
    pub outbound_msat: u64,
    /// What we can receive.
    pub inbound_msat: u64,
    /// Whether it is ready.
    pub ready: bool,
    /// Whether it is usable now.
    pub usable: bool,
}

/// A peer of the Lightning node, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id.
    pub node_id: PublicKey,
    /// Its address (`host:port`): the connected one, else the one remembered.
    pub address: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Whether the node remembers it and reconnects to it.
    pub persisted: bool,
}

/// A channel named by the operator: its channel id, or the user channel id the node gave it at
/// opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRef {
    /// The channel id (as [`ChannelInfo::channel_id`] shows it, in hex).
    ChannelId([u8; 32]),
    /// The user channel id ([`Lightning::open_channel`]'s answer).
    UserChannelId(u128),
}

impl FromStr for ChannelRef {
    type Err = LightningError;

    /// 64 hex characters: a channel id; decimal digits: a user channel id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let invalid = || LightningError::Invalid {
            what: "channel id",
            reason: format!(
                "{s:?} is neither a channel id (64 hex characters) nor a user channel id (decimal)"
            ),
        };
        if s.len() == 64 {
            let mut id = [0u8; 32];
            hex::decode_to_slice(s, &mut id).map_err(|_| invalid())?;
            return Ok(ChannelRef::ChannelId(id));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(ChannelRef::UserChannelId).map_err(|_| invalid());
        }
        Err(invalid())
    }
}

impl std::fmt::Display for ChannelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelRef::ChannelId(id) => f.write_str(&hex::encode(id)),
            ChannelRef::UserChannelId(id) => write!(f, "{id}"),
        }
    }
}

/// A channel whose closing [`Lightning::close_channel`] started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosingChannel {
    /// Its channel id (hex).
    pub channel_id: String,
    /// Its user channel id.
    pub user_channel_id: u128,
    /// The peer.
    pub counterparty: PublicKey,
    /// Force close only: the blocks the node's own funds stay locked after the commitment
    /// transaction confirms (the channel's `to_self_delay`).
    pub to_self_delay_blocks: Option<u16>,
}

/// What [`Lightning::withdraw`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawAmount {
    /// This many satoshis.
    Sat(u64),
    /// Everything spendable, less the fee and the anchor-channel reserve.
    All,
}

/// Errors of the Lightning node; they never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum LightningError {
    /// The node could not be built.
    #[error("cannot build the lightning node: {0}")]
    Build(String),
    /// An operation of the node failed.
    #[error("lightning node failed to {op}: {reason}")]
    Node {
        /// The operation.
        op: &'static str,
        /// ldk-node's error.
        reason: String,
    },
    /// Input that does not parse.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A blocking task died.
    #[error("lightning task failed: {0}")]
    Task(String),
    /// No channel of the node has this id.
    #[error("no channel {0}")]
    UnknownChannel(String),
    /// A cooperative close needs the peer connected.
    #[error(
        "the channel's peer {0} is not connected: a cooperative close needs it (wait for it to \
         reconnect, or force-close)"
    )]
    PeerNotConnected(PublicKey),
    /// The on-chain wallet cannot pay for it.
    #[error("insufficient funds in the lightning node's on-chain wallet: {0}")]
    InsufficientFunds(String),
    /// This Lightning node does not do that.
    #[error("the lightning node cannot {0}")]
    Unsupported(&'static str),
}

fn node_err(op: &'static str) -> impl FnOnce(ldk_node::NodeError) -> LightningError {
    move |e| LightningError::Node { op, reason: e.to_string() }
}

/// The Lightning node, as the engine and the API use it.
#[async_trait]
pub trait Lightning: Send + Sync {
    /// Our node id.
    fn node_id(&self) -> PublicKey;

    /// The event stream (returned once; later calls return `None`). Each delivery must be
    /// acknowledged ([`LightningDelivery::ack`]) once processed; the next one comes after that.
    fn take_events(&self) -> Option<mpsc::Receiver<LightningDelivery>>;

    /// A hold invoice for `payment_hash`.
    async fn receive_for_hash(
        &self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        expiry_secs: u32,
        description: &str,
    ) -> Result<String, LightningError>;

    /// Claims a held payment.
    async fn claim_for_hash(
        &self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        preimage: &Preimage,
    ) -> Result<(), LightningError>;

    /// Fails a held payment back.
    async fn fail_for_hash(&self, payment_hash: PaymentHash) -> Result<(), LightningError>;

    /// Pays a BOLT11 invoice with a cap on the route's total CLTV. Idempotent: an invoice paid
    /// before reports [`PayOutcome::AlreadyPending`] or [`PayOutcome::AlreadySucceeded`].
    async fn pay(
        &self,
        invoice: &str,
        max_total_cltv_expiry_delta: u32,
    ) -> Result<PayOutcome, LightningError>;

    /// A payment by its hash (`None`: not known to the node).
    fn payment(&self, payment_hash: PaymentHash) -> Option<PaymentInfo>;

    /// A plain invoice (auto-claimed).
    async fn invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry_secs: u32,
    ) -> Result<String, LightningError>;

    /// Opens a channel to `node_id` at `address` ("host:port").
    async fn open_channel(
        &self,
        node_id: PublicKey,
        address: &str,
        capacity_sat: u64,
        push_msat: Option<u64>,
    ) -> Result<u128, LightningError>;

    /// Our channels.
    fn channels(&self) -> Vec<ChannelInfo>;

    /// A new on-chain address of the Lightning node's own wallet (to fund channels).
    async fn onchain_address(&self) -> Result<bitcoin::Address, LightningError>;

    /// Spendable on-chain balance of the Lightning node's wallet.
    fn onchain_spendable_sat(&self) -> u64;

    /// Syncs the Lightning and on-chain wallets now.
    async fn sync(&self) -> Result<(), LightningError>;

    /// The peers connected or remembered (default: none).
    fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }

    /// Connects to `node_id` at `address` ("host:port"); `persist`: remember it and reconnect to
    /// it, after restarts too.
    ///
    /// # Errors
    /// [`LightningError::Invalid`] for an address that does not parse, [`LightningError::Node`]
    /// when the connection fails; [`LightningError::Unsupported`] by default.
    async fn connect_peer(
        &self,
        _node_id: PublicKey,
        _address: &str,
        _persist: bool,
    ) -> Result<(), LightningError> {
        Err(LightningError::Unsupported("connect to peers"))
    }

    /// Disconnects `node_id` and forgets it (no reconnection).
    ///
    /// # Errors
    /// [`LightningError::Node`]; [`LightningError::Unsupported`] by default.
    async fn disconnect_peer(&self, _node_id: PublicKey) -> Result<(), LightningError> {
        Err(LightningError::Unsupported("disconnect peers"))
    }

    /// Starts closing a channel: cooperatively (the peer must be connected), or by force
    /// (broadcasting the latest commitment transaction; the node's funds then wait for the
    /// channel's `to_self_delay` after it confirms).
    ///
    /// # Errors
    /// [`LightningError::UnknownChannel`], [`LightningError::PeerNotConnected`] (cooperative
    /// only), [`LightningError::Node`]; [`LightningError::Unsupported`] by default.
    async fn close_channel(
        &self,
        _channel: ChannelRef,
        _force: bool,
    ) -> Result<ClosingChannel, LightningError> {
        Err(LightningError::Unsupported("close channels"))
    }

    /// Sends from the Lightning node's own on-chain wallet to `address` (of the node's network);
    /// `fee_rate` defaults to the node's estimate. The transaction's id (the transaction is
    /// broadcast in the background). The wallet is synced first, so that a withdrawal right after
    /// another one (already broadcast) does not spend the same coins.
    ///
    /// # Errors
    /// [`LightningError::InsufficientFunds`], [`LightningError::Invalid`] (the address),
    /// [`LightningError::Node`]; [`LightningError::Unsupported`] by default.
    async fn withdraw(
        &self,
        _address: bitcoin::Address,
        _amount: WithdrawAmount,
        _fee_rate: Option<bitcoin::FeeRate>,
    ) -> Result<bitcoin::Txid, LightningError> {
        Err(LightningError::Unsupported("withdraw on chain"))
    }

    /// Stops the node.
    async fn stop(&self) -> Result<(), LightningError>;
}

/// How to build an [`LdkLightning`].
#[derive(Debug, Clone)]
pub struct LdkConfig {
    /// The network.
    pub network: Network,
    /// Esplora URL: the chain source of [`LdkLightning::start`] (another with
    /// [`LdkLightning::start_with_chain`]).
    pub esplora_url: String,
    /// Storage directory (`DATADIR/ldk`).
    pub storage_dir: std::path::PathBuf,
    /// Listening addresses ("127.0.0.1:9735").
    pub listen: Vec<String>,
    /// Node alias.
    pub alias: Option<String>,
    /// Background sync interval (seconds) for the on-chain and Lightning wallets and fees.
    pub sync_interval_secs: u64,
    /// Rapid gossip sync server URL (`None`: gossip from the peer-to-peer network).
    pub rgs_url: Option<String>,
    /// Addresses announced to the network ("host:port", onion or DNS names too); empty: the
    /// listening addresses. Need an alias and listening addresses.
    pub announcement_addresses: Vec<String>,
}

/// Where ldk-node reads the chain from ([`LdkLightning::start_with_chain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdkChain {
    /// An Esplora HTTP API (base URL).
    Esplora(String),
    /// An Electrum server (`tcp://HOST:PORT` or `ssl://HOST:PORT`).
    Electrum(String),
    /// bitcoind's JSON-RPC.
    BitcoindRpc {
        /// Its host.
        host: String,
        /// Its port.
        port: u16,
        /// The RPC user (`__cookie__` for the cookie).
        user: String,
        /// The password.
        password: String,
    },
}

/// [`Lightning`] over an embedded ldk-node.
pub struct LdkLightning {
    node: Arc<Node>,
    events: Mutex<Option<mpsc::Receiver<LightningDelivery>>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
    reconnect: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How often disconnected channel peers are dialled again. ldk-node itself retries every 60 s; a
/// swap's payment waits on the channel, so a restarted node (or peer) should be usable in seconds.
const PEER_RECONNECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

impl std::fmt::Debug for LdkLightning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdkLightning").field("node_id", &self.node.node_id()).finish()
    }
}

fn to_hash(h: &LdkPaymentHash) -> PaymentHash {
    PaymentHash(h.0)
}

impl LdkLightning {
    /// Builds and starts the node (entropy: the node seed's derived ldk-node seed). Must be called
    /// within a multi-threaded tokio runtime. Starts a task forwarding the node's events: a swap
    /// event is marked handled in ldk-node only after the receiver acknowledged it (persist
    /// before act); one that is not acknowledged is delivered again.
    ///
    /// # Errors
    /// [`LightningError::Build`] (bad address, unreachable Esplora, storage).
    pub async fn start(config: LdkConfig, entropy: [u8; 64]) -> Result<Self, LightningError> {
        let chain = LdkChain::Esplora(config.esplora_url.clone());
        Self::start_with_chain(config, chain, entropy).await
    }

    /// [`LdkLightning::start`] with ldk-node reading the chain from `chain` instead of
    /// [`LdkConfig::esplora_url`].
    ///
    /// # Errors
    /// As [`LdkLightning::start`] (an Electrum server that cannot be reached at start too).
    pub async fn start_with_chain(
        config: LdkConfig,
        chain: LdkChain,
        entropy: [u8; 64],
    ) -> Result<Self, LightningError> {
        let node = tokio::task::spawn_blocking(move || build_node(&config, &chain, entropy))
            .await
            .map_err(|e| LightningError::Task(e.to_string()))??;
        let node = Arc::new(node);
        let (tx, rx) = mpsc::channel(1024);
        let pump_node = Arc::clone(&node);
        let pump = tokio::spawn(async move {
            loop {
                let event = pump_node.next_event_async().await;
                if let Some(mapped) = map_event(&event) {
                    let (ack_tx, ack_rx) = oneshot::channel();
                    if tx.send(LightningDelivery::new(mapped, Some(ack_tx))).await.is_err() {
                        // Nobody listens: leave the event queued for the next start.
                        break;
                    }
                    if ack_rx.await.is_err() {
                        // Not processed (e.g. the store failed): ldk-node still holds the event
                        // and hands it out again.
                        tracing::warn!("lightning event not acknowledged; delivering it again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                }
                if let Err(e) = pump_node.event_handled() {
                    tracing::warn!(error = %e, "ldk-node event_handled failed");
                }
            }
        });
        let reconnect = tokio::spawn(reconnect_peers(Arc::clone(&node)));
        Ok(Self {
            node,
            events: Mutex::new(Some(rx)),
            pump: Mutex::new(Some(pump)),
            reconnect: Mutex::new(Some(reconnect)),
        })
    }

    /// The ldk-node instance (tests, diagnostics).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs `f` on a blocking thread and returns once what it wrote is durable. The payment
    /// records it writes do not hold ldk-node's payment store while their commit is awaited
    /// ([`kv::defer_commits`]): a burst of invoices (or claims) shares commits instead of
    /// taking one each in turn.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> Result<T, LightningError> + Send + 'static,
    ) -> Result<T, LightningError> {
        let node = Arc::clone(&self.node);
        let (out, written) = tokio::task::spawn_blocking(move || kv::defer_commits(|| f(&node)))
            .await
            .map_err(|e| LightningError::Task(e.to_string()))?;
        let out = out?;
        written
            .durable()
            .await
            .map_err(|e| LightningError::Node { op: "store a payment", reason: e.to_string() })?;
        Ok(out)
    }
}

/// Keeps the persisted peers (those we opened channels to) connected: every
/// [`PEER_RECONNECT_INTERVAL`], each one that is not connected is dialled again.
async fn reconnect_peers(node: Arc<Node>) {
    let mut interval = tokio::time::interval(PEER_RECONNECT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let n = Arc::clone(&node);
        // `Node::connect` blocks until the handshake is done (or failed).
        let dialled = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            for peer in n.list_peers().into_iter().filter(|p| p.is_persisted && !p.is_connected) {
                if let Err(e) = n.connect(peer.node_id, peer.address.clone(), true) {
                    failed.push((peer.node_id, e));
                }
            }
            failed
        })
        .await;
        match dialled {
            Ok(failed) => {
                for (peer, e) in failed {
                    tracing::debug!(%peer, error = %e, "cannot reconnect to a channel peer yet");
                }
            }
            Err(e) => tracing::warn!(error = %e, "peer reconnection task failed"),
        }
    }
}

fn build_node(
    config: &LdkConfig,
    chain: &LdkChain,
    entropy: [u8; 64],
) -> Result<Node, LightningError> {
    let secs = config.sync_interval_secs.max(1);
    let background = BackgroundSyncConfig {
        onchain_wallet_sync_interval_secs: secs,
        lightning_wallet_sync_interval_secs: secs,
        fee_rate_cache_update_interval_secs: secs,
    };
    let mut builder = Builder::new();
    builder.set_network(config.network);
    builder.set_storage_dir_path(config.storage_dir.to_string_lossy().into_owned());
    builder.set_entropy_seed_bytes(entropy);
    if !config.listen.is_empty() {
        let addrs = config
            .listen
            .iter()
            .map(|a| {
                SocketAddress::from_str(a).map_err(|_| LightningError::Invalid {
                    what: "listen address",
                    reason: a.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        builder.set_listening_addresses(addrs).map_err(|e| LightningError::Build(e.to_string()))?;
    }
    if let Some(alias) = &config.alias {
        builder.set_node_alias(alias.clone()).map_err(|e| LightningError::Build(e.to_string()))?;
    }
    if !config.announcement_addresses.is_empty() {
        let addrs = config
            .announcement_addresses
            .iter()
            .map(|a| {
                SocketAddress::from_str(a).map_err(|_| LightningError::Invalid {
                    what: "announcement address",
                    reason: a.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        builder
            .set_announcement_addresses(addrs)
            .map_err(|e| LightningError::Build(e.to_string()))?;
    }
    match &config.rgs_url {
        Some(url) => builder.set_gossip_source_rgs(url.trim_end_matches('/').to_string()),
        None => builder.set_gossip_source_p2p(),
    };
    match chain {
        LdkChain::Esplora(url) => {
            let sync = EsploraSyncConfig { background_sync_config: Some(background) };
            builder.set_chain_source_esplora(url.clone(), Some(sync))
        }
        LdkChain::Electrum(url) => {
            let sync = ElectrumSyncConfig { background_sync_config: Some(background) };
            builder.set_chain_source_electrum(url.clone(), Some(sync))
        }
        // ldk-node polls bitcoind every 2 seconds on its own (no interval to set).
        LdkChain::BitcoindRpc { host, port, user, password } => builder
            .set_chain_source_bitcoind_rpc(host.clone(), *port, user.clone(), password.clone()),
    };
    // ldk-node's log file, through one open handle that never panics the node (`log`).
    let ldk_log = log::LdkFileLog::open(&config.storage_dir)
        .map_err(|e| LightningError::Build(format!("Lightning log: {e}")))?;
    builder.set_custom_logger(Arc::new(ldk_log));
    // ldk-node's SQLite file, written with group commit (`kv`): the writes of concurrent
    // payments and channels share their fsyncs.
    let store = kv::GroupSqliteStore::open(&config.storage_dir)
        .map_err(|e| LightningError::Build(format!("Lightning store: {e}")))?;
    let node = builder
        .build_with_store(Arc::new(store))
        .map_err(|e| LightningError::Build(e.to_string()))?;
    node.start().map_err(|e| LightningError::Build(e.to_string()))?;
    Ok(node)
}

fn map_event(event: &ldk_node::Event) -> Option<LightningEvent> {
    match event {
        ldk_node::Event::PaymentClaimable { payment_hash, claimable_amount_msat, .. } => {
            Some(LightningEvent::PaymentClaimable {
                payment_hash: to_hash(payment_hash),
                amount_msat: *claimable_amount_msat,
            })
        }
        ldk_node::Event::PaymentReceived { payment_hash, amount_msat, .. } => {
            Some(LightningEvent::PaymentClaimed {
                payment_hash: to_hash(payment_hash),
                amount_msat: *amount_msat,
            })
        }
        ldk_node::Event::PaymentSuccessful {
            payment_hash,
            payment_preimage,
            fee_paid_msat,
            ..
        } => payment_preimage.map(|p| LightningEvent::PaymentSucceeded {
            payment_hash: to_hash(payment_hash),
            preimage: Preimage(p.0),
            fee_paid_msat: *fee_paid_msat,
        }),
        ldk_node::Event::PaymentFailed { payment_hash, reason, .. } => {
            Some(LightningEvent::PaymentFailed {
                payment_hash: payment_hash.as_ref().map(to_hash),
                reason: reason.map(|r| format!("{r:?}")).unwrap_or_else(|| "unknown".into()),
            })
        }
        ldk_node::Event::ChannelClosed { channel_id, counterparty_node_id, reason, .. } => {
            // A force-close (a peer's error, a stale ChannelManager after a crash) takes the
            // channel's capacity away from swaps: say so where an operator looks.
            let reason = reason.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "unknown".into());
            let peer = counterparty_node_id.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(channel = %channel_id, %peer, %reason, "lightning channel closed");
            None
        }
        ldk_node::Event::ChannelReady { channel_id, counterparty_node_id, .. } => {
            let peer = counterparty_node_id.map(|p| p.to_string()).unwrap_or_default();
            tracing::info!(channel = %channel_id, %peer, "lightning channel ready");
            None
        }
        other => {
            tracing::debug!(event = ?std::mem::discriminant(other), "lightning event");
            None
        }
    }
}

fn description(text: &str) -> Result<Bolt11InvoiceDescription, LightningError> {
    Description::new(text.to_string())
        .map(Bolt11InvoiceDescription::Direct)
        .map_err(|e| LightningError::Invalid { what: "description", reason: e.to_string() })
}

#[async_trait]
impl Lightning for LdkLightning {
    fn node_id(&self) -> PublicKey {
        self.node.node_id()
    }

    fn take_events(&self) -> Option<mpsc::Receiver<LightningDelivery>> {
        self.events.lock().ok().and_then(|mut g| g.take())
    }

    async fn receive_for_hash(
        &self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        expiry_secs: u32,
        desc: &str,
    ) -> Result<String, LightningError> {
        let desc = description(desc)?;
        self.blocking(move |node| {
            node.bolt11_payment()
                .receive_for_hash(amount_msat, &desc, expiry_secs, LdkPaymentHash(payment_hash.0))
                .map(|i| i.to_string())
                .map_err(node_err("create a hold invoice"))
        })
        .await
    }

    async fn claim_for_hash(
        &self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        preimage: &Preimage,
    ) -> Result<(), LightningError> {
        let preimage = LdkPreimage(preimage.0);
        self.blocking(move |node| {
            // Already claimed (a resumed swap): nothing to do.
            if let Some(p) = node.payment(&PaymentId(payment_hash.0)) {
                if p.status == PaymentStatus::Succeeded {
                    return Ok(());
                }
            }
            node.bolt11_payment()
                .claim_for_hash(LdkPaymentHash(payment_hash.0), amount_msat, preimage)
                .map_err(node_err("claim a held payment"))
        })
        .await
    }

    async fn fail_for_hash(&self, payment_hash: PaymentHash) -> Result<(), LightningError> {
        self.blocking(move |node| {
            node.bolt11_payment()
                .fail_for_hash(LdkPaymentHash(payment_hash.0))
                .map_err(node_err("fail a held payment"))
        })
        .await
    }

    async fn pay(
        &self,
        invoice: &str,
        max_total_cltv_expiry_delta: u32,
    ) -> Result<PayOutcome, LightningError> {
        let invoice = Bolt11Invoice::from_str(invoice)
            .map_err(|e| LightningError::Invalid { what: "invoice", reason: e.to_string() })?;
        self.blocking(move |node| {
            let id = PaymentId(invoice.payment_hash().to_byte_array());
            let known = |node: &Node| -> Option<PayOutcome> {
                let p = node.payment(&id)?;
                match p.status {
                    PaymentStatus::Pending => Some(PayOutcome::AlreadyPending),
                    PaymentStatus::Succeeded => match p.kind {
                        ldk_node::payment::PaymentKind::Bolt11 { preimage: Some(pre), .. } => {
                            Some(PayOutcome::AlreadySucceeded(Preimage(pre.0)))
                        }
                        _ => Some(PayOutcome::AlreadyPending),
                    },
                    PaymentStatus::Failed => None,
                }
            };
            if let Some(outcome) = known(node) {
                return Ok(outcome);
            }
            let params = RouteParametersConfig {
                max_total_cltv_expiry_delta,
                ..RouteParametersConfig::default()
            };
            match node.bolt11_payment().send(&invoice, Some(params)) {
                Ok(_) => Ok(PayOutcome::Started),
                Err(ldk_node::NodeError::DuplicatePayment) => {
                    Ok(known(node).unwrap_or(PayOutcome::AlreadyPending))
                }
                Err(e) => Err(LightningError::Node { op: "pay an invoice", reason: e.to_string() }),
            }
        })
        .await
    }

    fn payment(&self, payment_hash: PaymentHash) -> Option<PaymentInfo> {
        let p = self.node.payment(&PaymentId(payment_hash.0))?;
        let outbound = p.direction == ldk_node::payment::PaymentDirection::Outbound;
        let status = match p.status {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        };
        let preimage = match (&p.kind, outbound, p.status) {
            (
                ldk_node::payment::PaymentKind::Bolt11 { preimage: Some(pre), .. },
                true,
                PaymentStatus::Succeeded,
            ) => Some(Preimage(pre.0).to_hex()),
            _ => None,
        };
        Some(PaymentInfo {
            payment_hash: payment_hash.to_string(),
            direction: if outbound { "outbound" } else { "inbound" }.to_string(),
            status: status.to_string(),
            amount_msat: p.amount_msat,
            fee_paid_msat: p.fee_paid_msat,
            preimage,
            updated_at: p.latest_update_timestamp,
        })
    }

    async fn invoice(
        &self,
        amount_msat: u64,
        desc: &str,
        expiry_secs: u32,
    ) -> Result<String, LightningError> {
        let desc = description(desc)?;
        self.blocking(move |node| {
            node.bolt11_payment()
                .receive(amount_msat, &desc, expiry_secs)
                .map(|i| i.to_string())
                .map_err(node_err("create an invoice"))
        })
        .await
    }

    async fn open_channel(
        &self,
        node_id: PublicKey,
        address: &str,
        capacity_sat: u64,
        push_msat: Option<u64>,
    ) -> Result<u128, LightningError> {
        let addr = SocketAddress::from_str(address).map_err(|_| LightningError::Invalid {
            what: "peer address",
            reason: address.to_string(),
        })?;
        self.blocking(move |node| {
            node.open_channel(node_id, addr, capacity_sat, push_msat, None)
                .map(|id| id.0)
                .map_err(node_err("open a channel"))
        })
        .await
    }

    fn channels(&self) -> Vec<ChannelInfo> {
        self.node
            .list_channels()
            .into_iter()
            .map(|c| ChannelInfo {
                channel_id: c.channel_id.to_string(),
                counterparty: c.counterparty_node_id.to_string(),
                capacity_sat: c.channel_value_sats,
                outbound_msat: c.outbound_capacity_msat,
                inbound_msat: c.inbound_capacity_msat,
                ready: c.is_channel_ready,
                usable: c.is_usable,
            })
            .collect()
    }

    async fn onchain_address(&self) -> Result<bitcoin::Address, LightningError> {
        self.blocking(|node| {
            node.onchain_payment().new_address().map_err(node_err("create an on-chain address"))
        })
        .await
    }

    fn onchain_spendable_sat(&self) -> u64 {
        self.node.list_balances().spendable_onchain_balance_sats
    }

    async fn sync(&self) -> Result<(), LightningError> {
        self.blocking(|node| node.sync_wallets().map_err(node_err("sync wallets"))).await
    }

    fn peers(&self) -> Vec<PeerInfo> {
        self.node
            .list_peers()
            .into_iter()
            .map(|p| PeerInfo {
                node_id: p.node_id,
                address: p.address.to_string(),
                connected: p.is_connected,
                persisted: p.is_persisted,
            })
            .collect()
    }

    async fn connect_peer(
        &self,
        node_id: PublicKey,
        address: &str,
        persist: bool,
    ) -> Result<(), LightningError> {
        let addr =
            SocketAddress::from_str(address.trim()).map_err(|_| LightningError::Invalid {
                what: "address",
                reason: format!("{address:?} is not a peer address (host:port)"),
            })?;
        // `Node::connect` blocks until the handshake is done (or failed).
        self.blocking(move |node| {
            node.connect(node_id, addr, persist).map_err(node_err("connect to the peer"))
        })
        .await
    }

    async fn disconnect_peer(&self, node_id: PublicKey) -> Result<(), LightningError> {
        self.blocking(move |node| node.disconnect(node_id).map_err(node_err("disconnect the peer")))
            .await
    }

    async fn close_channel(
        &self,
        channel: ChannelRef,
        force: bool,
    ) -> Result<ClosingChannel, LightningError> {
        self.blocking(move |node| {
            let found = node.list_channels().into_iter().find(|c| match channel {
                ChannelRef::ChannelId(id) => c.channel_id.0 == id,
                ChannelRef::UserChannelId(id) => c.user_channel_id.0 == id,
            });
            let Some(c) = found else {
                return Err(LightningError::UnknownChannel(channel.to_string()));
            };
            let peer = c.counterparty_node_id;
            if force {
                node.force_close_channel(
                    &c.user_channel_id,
                    peer,
                    Some("force-closed by the node's operator".to_string()),
                )
                .map_err(node_err("force-close the channel"))?;
            } else {
                // ldk-node answers only "channel closing failed" when the peer is away.
                if !node.list_peers().iter().any(|p| p.node_id == peer && p.is_connected) {
                    return Err(LightningError::PeerNotConnected(peer));
                }
                node.close_channel(&c.user_channel_id, peer)
                    .map_err(node_err("close the channel"))?;
            }
            Ok(ClosingChannel {
                channel_id: c.channel_id.to_string(),
                user_channel_id: c.user_channel_id.0,
                counterparty: peer,
                to_self_delay_blocks: if force { c.force_close_spend_delay } else { None },
            })
        })
        .await
    }

    async fn withdraw(
        &self,
        address: bitcoin::Address,
        amount: WithdrawAmount,
        fee_rate: Option<bitcoin::FeeRate>,
    ) -> Result<bitcoin::Txid, LightningError> {
        self.blocking(move |node| {
            // ldk-node's wallet learns of its own transactions only when it syncs: a withdrawal
            // right after another would spend the same coins again.
            node.sync_wallets().map_err(node_err("sync wallets"))?;
            let payment = node.onchain_payment();
            let sent = match amount {
                WithdrawAmount::Sat(sat) => payment.send_to_address(&address, sat, fee_rate),
                // Keep the reserve open anchor channels need to pay for their closing.
                WithdrawAmount::All => payment.send_all_to_address(&address, true, fee_rate),
            };
            sent.map_err(|e| match e {
                ldk_node::NodeError::InsufficientFunds => {
                    LightningError::InsufficientFunds(match amount {
                        WithdrawAmount::Sat(sat) => format!(
                            "{sat} sat and the fee are more than the {} sat spendable",
                            node.list_balances().spendable_onchain_balance_sats
                        ),
                        WithdrawAmount::All => "nothing spendable beyond the fee and the \
                                                anchor-channel reserve"
                            .to_string(),
                    })
                }
                ldk_node::NodeError::InvalidAddress => LightningError::Invalid {
                    what: "address",
                    reason: format!("not a {} address", node.config().network),
                },
                other => LightningError::Node { op: "withdraw", reason: other.to_string() },
            })
        })
        .await
    }

    async fn stop(&self) -> Result<(), LightningError> {
        for task in [&self.pump, &self.reconnect] {
            if let Some(task) = task.lock().ok().and_then(|mut g| g.take()) {
                task.abort();
            }
        }
        self.blocking(|node| node.stop().map_err(node_err("stop"))).await
    }
}

/// The ldk-node storage directory inside a data directory.
pub fn storage_dir(datadir: &Path) -> std::path::PathBuf {
    datadir.join("ldk")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_channel_is_named_by_its_id_or_its_user_channel_id() {
        let hex = "ab".repeat(32);
        assert_eq!(hex.parse::<ChannelRef>().unwrap(), ChannelRef::ChannelId([0xab; 32]));
        assert_eq!(hex.to_uppercase().parse::<ChannelRef>().unwrap().to_string(), hex);
        assert_eq!(
            " 340282366920938463463374607431768211455 ".parse::<ChannelRef>().unwrap(),
            ChannelRef::UserChannelId(u128::MAX)
        );
        assert_eq!("7".parse::<ChannelRef>().unwrap().to_string(), "7");
        for bad in [
            "",
            "zz",
            &"g".repeat(64),
            &"a".repeat(63),
            "340282366920938463463374607431768211456",
            "-1",
        ] {
            let e = bad.parse::<ChannelRef>().unwrap_err();
            assert!(
                matches!(e, LightningError::Invalid { what: "channel id", .. }),
                "{bad:?}: {e}"
            );
        }
    }
}
