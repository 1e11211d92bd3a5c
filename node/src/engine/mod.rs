//! The swap engine: drives the protocol's [`BuyerSwap`] and
//! [`SellerSwap`] state machines with
//! real I/O (the node's counterpart of `protocol/tests/sim`).
//!
//! Every event (a peer's message, a Lightning event, a chain change, a tick, an API call) is fed
//! to its swap; the returned [`Action`](looper_protocol::swap::Action)s are carried out in order,
//! and [`Action::Persist`](looper_protocol::swap::Action::Persist)
//! commits the swap's record to the [`SwapStore`] before anything after it happens. Results of
//! actions (a built funding transaction, a created invoice, an already-succeeded payment) are fed
//! back to the same swap before its next event is taken.
//!
//! The engine runs over traits for all its I/O ([`io`]: chain, Lightning, wallet, transport,
//! store, clock, entropy), so the deterministic test bed in `tests/` drives this very engine over
//! simulated parts. Its steps are public: [`Engine::handle_message`],
//! [`Engine::handle_lightning`], [`Engine::poll`], [`Engine::flush_funding`]; [`Engine::run`]
//! is the production loop that calls them as messages, events and timer ticks arrive.
//!
//! At start ([`Engine::start`]) every open swap is loaded, its keys derived again from the seed
//! (`key_index`), and `resume` carried out.
//!
//! Nostr keys: the node's identity serves its offers and its swaps as a seller; each buyer swap
//! talks to its seller with a key of its own ([`crate::seed::swap_nostr_secret_key`] of its key
//! index), which the transport holds from the swap's start (or resume) until the swap can no
//! longer hear from the seller. A message is the swap's only when it names the swap, comes from
//! its peer and is addressed to the swap's key (spec `04-nostr.md`, "Keys").
//!
//! Locking: no engine-wide lock is held across an await. Each swap has its own lock, held while
//! one of its events is handled (its events are handled one at a time, in arrival order); see
//! [`swaps`](self) for the rules.
//!
//! Layout: `swaps` (one swap's driver), `incoming` (peer messages, new seller swaps), `watcher`
//! (chain poll), `funding` (funding batcher), `offers` (the served offer), `blocklist` (the
//! seller's blocked keys), [`io`] (the traits).

mod blocklist;
mod claims;
mod cpfp;
pub use blocklist::{BlockListError, BlockSource, BlockedPeer, MAX_BLOCK_NOTE_CHARS};
mod funding;
mod incoming;
pub mod io;
mod offers;
mod swaps;
mod track;
pub use track::SellerTrack;
mod watcher;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::{FeeRate, ScriptBuf};
use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerSwap};
use looper_protocol::checks::CheckError;
use looper_protocol::fees::{FeeEstimates, DEFAULT_SPEND_TARGET};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::Offer;
use looper_protocol::record::SwapRecord as ProtoRecord;
use looper_protocol::seller::{LockerStart, LoopInLimits, SellerPolicy, SellerSwap};
use looper_protocol::swap::{Context, Event, Notification, StateKind, TxPurpose};
use looper_protocol::SwapId;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::task::JoinSet;

use self::funding::FundingRequest;
use self::io::{Clock, Entropy, SwapTransport, SwapWallet};
use self::swaps::{Machine, Slot, SwapTable};
use crate::chain::{ChainError, ChainSource};
use crate::lightning::{Lightning, LightningDelivery, LightningEvent};
use crate::nostr::{Keys as NostrKeys, PublicKey as NostrPublicKey, RateLimit, RateLimiter};
use crate::store::{StoreError, SwapStore};
use crate::wallet::WalletError;

/// Errors of the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain source failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// Key derivation failed.
    #[error("cannot derive swap keys: {0}")]
    Keys(String),
    /// The taker's checks refused the offer: a loop-out buyer's or a loop-in locker's (the
    /// check's code reaches the API).
    #[error("offer refused: {0}")]
    Refused(CheckError),
    /// The state machine refused the event.
    #[error("swap refused the request: {0}")]
    Swap(String),
    /// No such swap.
    #[error("no swap {0}")]
    UnknownSwap(String),
    /// A record does not decode.
    #[error("swap record {id} does not decode: {reason}")]
    Record {
        /// The swap.
        id: String,
        /// Why.
        reason: String,
    },
    /// The Nostr transport failed.
    #[error("nostr: {0}")]
    Transport(String),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Seller policy for new swaps (also the locker's of a loop in this node takes).
    pub seller_policy: SellerPolicy,
    /// The claimer's limits in a loop in this node serves as maker (its route CLTV cap, its
    /// confirmations floor, its claim fee cap; the fee limit does not apply to a maker).
    pub claimer_policy: BuyerPolicy,
    /// How often the chain is polled (and `Tick` fed).
    pub chain_poll: Duration,
    /// Every how many polls the on-chain wallet is synced.
    pub wallet_sync_every: u32,
    /// Seller: the offer served from the configuration (`seller.enabled`). Published when
    /// [`Engine::run`] starts and republished every [`EngineConfig::offer_refresh`] with a new
    /// `expires_at` (now + [`EngineConfig::offer_ttl`]), until withdrawn.
    pub seller_offer: Option<Offer>,
    /// Maker of loop ins: the loop-in offer served from the configuration (`[seller.in]`),
    /// republished as [`EngineConfig::seller_offer`] is, its `max_amount_sat` following what the
    /// node's channels can pay ([`Engine::refresh_loop_in_offer`]).
    pub loop_in_offer: Option<Offer>,
    /// Seller: most swaps served at the same time (`seller.max_concurrent_swaps`); further
    /// requests are refused with `rate_limited`. `None`: no limit.
    pub max_concurrent_swaps: Option<u32>,
    /// Seller: most satoshis locked at once in HTLCs not paid for yet
    /// (`seller.max_unpaid_locked_sat`); a request that would go over it is refused with
    /// `rate_limited` and the served offer advertises at most what is left. `None`: no cap.
    pub max_unpaid_locked_sat: Option<u64>,
    /// Seller: Nostr keys (hex) whose swap requests are dropped unanswered
    /// (`seller.blocked_keys`). Keys blocked at runtime ([`Engine::block_peer`]) are added to
    /// them; these cannot be unblocked but here.
    pub blocked_peers: Vec<String>,
    /// Seller: refuse a request its Lightning channels cannot receive or its wallet cannot fund
    /// (`amount_out_of_range`). Off only in tests whose swaps are never paid (no channel).
    pub check_liquidity: bool,
    /// Seller: the served offer's prepay is priced from the fee rate ([`looper_api::Prepay::Auto`],
    /// `seller.prepay_sat = "auto"`) and repriced when the rate moves.
    pub auto_prepay: bool,
    /// How often the served offer is republished.
    pub offer_refresh: Duration,
    /// Lifetime given to each published version of the served offer (`expires_at`).
    pub offer_ttl: Duration,
    /// Per-sender limit on the `error` replies to messages that do not decode.
    pub decode_reply_limit: RateLimit,
    /// Confirmation targets of the swaps' own transactions.
    pub fees: FeeSettings,
    /// Seller: publish offers with their `ln_address` (`seller.publish_lightning_address`). When
    /// `false`, [`Engine::publish_offer`] takes the address out of every offer it publishes or
    /// stores, whoever built it (the configuration or `POST /v1/offers`).
    pub publish_ln_address: bool,
}

/// Confirmation targets of the swaps' own transactions (`[fees]` in the configuration); the cap
/// is the wallet's ([`SwapWallet::max_fee_rate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSettings {
    /// Claims (a buyer's `--conf-target` overrides it for its swap).
    pub claim_target: u16,
    /// Refunds.
    pub refund_target: u16,
    /// Fundings.
    pub funding_target: u16,
}

impl Default for FeeSettings {
    fn default() -> Self {
        Self {
            claim_target: DEFAULT_SPEND_TARGET,
            refund_target: DEFAULT_SPEND_TARGET,
            funding_target: DEFAULT_FUNDING_TARGET,
        }
    }
}

/// What a swap this node takes starts from ([`Engine::taker_parts`]).
struct TakerParts {
    ctx: Context,
    keys: SwapKeys,
    nostr_keys: NostrKeys,
    destination: ScriptBuf,
    swap_id: SwapId,
}

/// Default confirmation target of fundings, in blocks (Loop's HTLC target).
pub const DEFAULT_FUNDING_TARGET: u16 = 6;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            seller_policy: SellerPolicy::default(),
            claimer_policy: BuyerPolicy::default(),
            chain_poll: Duration::from_secs(3),
            wallet_sync_every: 5,
            seller_offer: None,
            loop_in_offer: None,
            max_concurrent_swaps: None,
            max_unpaid_locked_sat: None,
            blocked_peers: Vec::new(),
            check_liquidity: true,
            auto_prepay: false,
            offer_refresh: Duration::from_secs(20 * 60),
            offer_ttl: Duration::from_secs(3600),
            decode_reply_limit: RateLimit::new(5, 10),
            fees: FeeSettings::default(),
            publish_ln_address: true,
        }
    }
}

/// A notification of one swap, as subscribers receive it.
#[derive(Debug, Clone, Serialize)]
pub struct SwapNotification {
    /// The swap.
    pub swap_id: SwapId,
    /// Sequence number in the swap's event log.
    pub seq: u64,
    /// What happened.
    pub notification: Notification,
}

/// Everything the engine is built from.
pub struct EngineParts {
    /// The store.
    pub store: Arc<dyn SwapStore>,
    /// The on-chain wallet.
    pub wallet: Arc<dyn SwapWallet>,
    /// The chain source.
    pub chain: Arc<dyn ChainSource>,
    /// The Lightning node.
    pub lightning: Arc<dyn Lightning>,
    /// The message transport.
    pub transport: Arc<dyn SwapTransport>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Randomness for swap ids and MuSig2 nonces ([`io::OsEntropy`] in the node).
    pub entropy: Arc<dyn Entropy>,
    /// The swap master key (`NodeKeys::swap_master`).
    pub swap_master: Xpriv,
    /// Settings.
    pub config: EngineConfig,
}

/// Which of the configuration's offers ([`Misc::served`]).
#[derive(Debug, Clone, Copy)]
enum Served {
    /// The loop-out offer (`[seller]`).
    Out,
    /// The loop-in offer (`[seller.in]`).
    In,
}

impl Misc {
    /// The configuration's offer `which` while it is served, and whether it is off the relays
    /// because the node cannot serve it now.
    fn served(&mut self, which: Served) -> (&mut Option<Offer>, &mut bool) {
        match which {
            Served::Out => (&mut self.served_offer, &mut self.offer_unfunded),
            Served::In => (&mut self.served_in_offer, &mut self.in_offer_unpayable),
        }
    }
}

/// Engine-wide odds and ends, each touched under a short lock (never across an await).
struct Misc {
    polls: u32,
    /// The configuration's offer while it is served (cleared when withdrawn).
    served_offer: Option<Offer>,
    /// The served offer is off the relays because the wallet could not fund it; the chain poll
    /// publishes it again once it can.
    offer_unfunded: bool,
    /// The configuration's loop-in offer while it is served (cleared when withdrawn).
    served_in_offer: Option<Offer>,
    /// The loop-in offer is off the relays because the channels could not pay its minimum; the
    /// chain poll publishes it again once they can.
    in_offer_unpayable: bool,
    /// Replies to undecodable messages, per sender.
    decode_replies: RateLimiter<NostrPublicKey>,
    /// `FundHtlc`s not funded yet, funded together by [`Engine::flush_funding`].
    funding_queue: Vec<FundingRequest>,
    /// Broadcasts that failed, by swap and purpose, tried again at every chain poll.
    retry_broadcasts: BTreeMap<(SwapId, TxPurpose), bitcoin::Transaction>,
    /// Fundings waiting in the mempool and their children ([`Engine::bump_fundings`]).
    funding_bumps: BTreeMap<bitcoin::Txid, cpfp::FundingBump>,
    /// Buyer swaps that asked for a script-path claim, claimed together by
    /// [`Engine::flush_claims`].
    claim_queue: std::collections::BTreeSet<SwapId>,
}

struct Inner {
    store: Arc<dyn SwapStore>,
    wallet: Arc<dyn SwapWallet>,
    chain: Arc<dyn ChainSource>,
    lightning: Arc<dyn Lightning>,
    transport: Arc<dyn SwapTransport>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    swap_master: Xpriv,
    config: EngineConfig,
    /// The seller's block list (configuration and runtime keys).
    blocked: blocklist::BlockList,
    swaps: SwapTable,
    /// Tip and fee rate as last seen (`now_secs` is read from the clock at each use).
    ctx: StdMutex<Context>,
    misc: StdMutex<Misc>,
    /// Held by the one running [`Engine::flush_funding`] (across its wallet and chain calls).
    funding_flush: tokio::sync::Mutex<()>,
    /// Held by the one running [`Engine::flush_claims`].
    claim_flush: tokio::sync::Mutex<()>,
    /// Held by the one reading the chain for takers ([`Engine::refresh_context`], across the
    /// chain calls), with the number of the last read that succeeded: takers that come together
    /// share one read.
    refresh: tokio::sync::Mutex<u64>,
    /// Reads of [`Inner::refresh`] started (numbered from 1, under its lock).
    refresh_started: AtomicU64,
    notifications: broadcast::Sender<SwapNotification>,
}

/// The swap engine (cheap to clone; shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Runs a store call: on a multi-threaded runtime the worker is handed over meanwhile (redb
/// commits fsync), elsewhere it is called as is.
fn blocking_store<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Most swap messages handled at the same time by [`Engine::run`].
const MAX_CONCURRENT_MESSAGES: usize = 256;

impl Engine {
    /// Builds the engine: loads every open swap, re-attaches its keys and carries out `resume`.
    ///
    /// # Errors
    /// Store or chain errors. A record that does not decode is logged and skipped.
    pub async fn start(parts: EngineParts) -> Result<Engine, EngineError> {
        let (notifications, _) = broadcast::channel(1024);
        let tip = parts.chain.tip_height().await?;
        let mut ctx = Context::new(parts.clock.now_secs(), tip, FeeRate::ZERO);
        ctx.batch_claims = true;
        let estimates = watcher::read_estimates(&*parts.chain).await;
        watcher::apply_fees(&mut ctx, estimates, &parts.config.fees, &*parts.wallet);
        let misc = Misc {
            polls: 0,
            served_offer: parts.config.seller_offer.clone(),
            offer_unfunded: false,
            served_in_offer: parts.config.loop_in_offer.clone(),
            in_offer_unpayable: false,
            decode_replies: RateLimiter::new(parts.config.decode_reply_limit),
            funding_queue: Vec::new(),
            retry_broadcasts: BTreeMap::new(),
            funding_bumps: BTreeMap::new(),
            claim_queue: std::collections::BTreeSet::new(),
        };
        let blocked = blocklist::BlockList::load(&parts.config.blocked_peers, &*parts.store)?;
        let inner = Arc::new(Inner {
            blocked,
            store: parts.store,
            wallet: parts.wallet,
            chain: parts.chain,
            lightning: parts.lightning,
            transport: parts.transport,
            clock: parts.clock,
            entropy: parts.entropy,
            swap_master: parts.swap_master,
            config: parts.config,
            swaps: SwapTable::default(),
            ctx: StdMutex::new(ctx),
            misc: StdMutex::new(misc),
            funding_flush: tokio::sync::Mutex::new(()),
            claim_flush: tokio::sync::Mutex::new(()),
            refresh: tokio::sync::Mutex::new(0),
            refresh_started: AtomicU64::new(0),
            notifications,
        });
        // Every message to the identity can be asked for proof of work: the sellers' answers to
        // this node's buyer swaps go to the swaps' own keys.
        inner.transport.set_unmined_expected(false);
        let engine = Engine { inner };
        if let Err(e) = engine.sync_wallet().await {
            tracing::warn!(error = %e, "wallet sync at start failed");
        }
        engine.resume_all().await?;
        Ok(engine)
    }

    fn lock_misc(&self) -> MutexGuard<'_, Misc> {
        self.inner.misc.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_ctx(&self) -> MutexGuard<'_, Context> {
        self.inner.ctx.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn decode_reply_allowed(&self, sender: &NostrPublicKey) -> bool {
        self.lock_misc().decode_replies.check(sender)
    }

    async fn resume_all(&self) -> Result<(), EngineError> {
        let records =
            blocking_store(|| self.inner.store.list_swaps(&crate::store::SwapFilter::pending()))?;
        for rec in records {
            let id = rec.id;
            let machine = match ProtoRecord::from_bytes(&rec.data) {
                Ok(record) => Machine::from_record(record),
                Err(e) => {
                    tracing::error!(swap = %id, error = %e, "cannot load swap record");
                    continue;
                }
            };
            tracing::info!(swap = %id, state = machine.state_name(), "resuming swap");
            let (local, holds_key) = self.local_key(id, &machine).await;
            let slot = Arc::new(Slot::new(machine, local, holds_key));
            if self.inner.swaps.insert_if(id, Arc::clone(&slot), |_| true).is_ok() {
                self.resume_one(id, &slot).await;
            }
        }
        self.flush_queues().await;
        Ok(())
    }

    /// The fee rate of the swaps' own spends as last estimated (a claim's or refund's target),
    /// and of fundings.
    pub fn fee_rates(&self) -> (FeeRate, FeeRate) {
        let ctx = self.lock_ctx();
        let targets = &self.inner.config.fees;
        (
            ctx.fees.estimates.rate_for(targets.claim_target),
            ctx.fees.estimates.rate_for(targets.funding_target),
        )
    }

    /// The confirmation targets of the swaps' own transactions.
    pub fn fee_settings(&self) -> FeeSettings {
        self.inner.config.fees
    }

    /// Subscribes to every swap's notifications.
    pub fn subscribe(&self) -> broadcast::Receiver<SwapNotification> {
        self.inner.notifications.subscribe()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SwapStore> {
        &self.inner.store
    }

    /// The wallet.
    pub fn wallet(&self) -> &Arc<dyn SwapWallet> {
        &self.inner.wallet
    }

    /// The chain source.
    pub fn chain(&self) -> &Arc<dyn ChainSource> {
        &self.inner.chain
    }

    /// The Lightning node.
    pub fn lightning(&self) -> &Arc<dyn Lightning> {
        &self.inner.lightning
    }

    /// The message transport.
    pub fn transport(&self) -> &Arc<dyn SwapTransport> {
        &self.inner.transport
    }

    /// The keys of swap index `index` (a read-only export of the swap, `crate::export`).
    ///
    /// # Errors
    /// [`EngineError::Keys`] for an index of 2^31 or more.
    pub fn swap_keys(&self, index: u32) -> Result<SwapKeys, EngineError> {
        SwapKeys::derive(&self.inner.swap_master, index)
            .map_err(|e| EngineError::Keys(e.to_string()))
    }

    /// The Nostr keys of buyer swap `index` ([`crate::seed::swap_nostr_secret_key`]).
    ///
    /// # Errors
    /// [`EngineError::Keys`] for an index of 2^31 or more.
    fn swap_nostr_keys(&self, index: u32) -> Result<NostrKeys, EngineError> {
        let secret = crate::seed::swap_nostr_secret_key(&self.inner.swap_master, index)
            .map_err(|e| EngineError::Keys(e.to_string()))?;
        let secret = nostr_sdk::SecretKey::from_slice(&secret.secret_bytes())
            .map_err(|e| EngineError::Keys(e.to_string()))?;
        Ok(NostrKeys::new(secret))
    }

    /// Has the transport hold buyer swap `id`'s own key (derived from `index`) and returns its
    /// public key. A transport that could not tell its relays still holds it (its refetch asks
    /// for it): logged.
    ///
    /// # Errors
    /// [`EngineError::Keys`] when the key cannot be derived.
    async fn hold_swap_key(&self, id: SwapId, index: u32) -> Result<NostrPublicKey, EngineError> {
        let keys = self.swap_nostr_keys(index)?;
        if let Err(e) = self.inner.transport.add_key(&keys).await {
            tracing::warn!(swap = %id, error = %e, "cannot subscribe to the swap's own key yet");
        }
        Ok(keys.public_key())
    }

    /// Our key in a loaded swap, and whether the transport holds it for the swap: the
    /// identity for a seller swap; the swap's own key for a buyer swap, held while it may hear
    /// from its seller.
    async fn local_key(&self, id: SwapId, machine: &Machine) -> (NostrPublicKey, bool) {
        let identity = self.inner.transport.public_key();
        if !machine.is_taker() {
            return (identity, false);
        }
        let tip = self.lock_ctx().tip_height;
        let held = machine.hears_peer(tip);
        let key = if held {
            self.hold_swap_key(id, machine.key_index()).await
        } else {
            self.swap_nostr_keys(machine.key_index()).map(|k| k.public_key())
        };
        match key {
            Ok(key) => (key, held),
            Err(e) => {
                // Only for an index with no hardened child, whose swap keys cannot be derived
                // either: the swap never loads, so never speaks.
                tracing::error!(swap = %id, error = %e, "cannot derive the swap's nostr key");
                (identity, false)
            }
        }
    }

    /// Gives back the own keys of buyer swaps that can no longer hear from their seller
    /// ([`Machine::hears_peer`]): the transport stops listening to them.
    async fn release_swap_keys(&self) {
        let tip = self.lock_ctx().tip_height;
        // A pending swap keeps its key: only ended ones are looked at (under their lock).
        let holding = self
            .inner
            .swaps
            .select(|s| s.holds_key.load(Ordering::Relaxed) && s.view().kind != StateKind::Pending);
        for (id, slot) in holding {
            let done = !slot.machine.lock().await.hears_peer(tip);
            if done && slot.holds_key.swap(false, Ordering::Relaxed) {
                tracing::debug!(swap = %id, "the swap's own nostr key is released");
                self.inner.transport.remove_key(&slot.local).await;
            }
        }
    }

    /// Syncs the on-chain wallet.
    ///
    /// # Errors
    /// Wallet sync errors.
    pub async fn sync_wallet(&self) -> Result<(), EngineError> {
        Ok(self.inner.wallet.sync().await?)
    }

    /// Buyer: takes `offer` from `seller` for `amount_sat`. Returns the new swap's id.
    ///
    /// # Errors
    /// [`EngineError::Refused`] when the offer does not fit the policy; store or key errors.
    pub async fn take_offer(
        &self,
        offer: Offer,
        seller: NostrPublicKey,
        amount_sat: u64,
        policy: BuyerPolicy,
    ) -> Result<SwapId, EngineError> {
        self.take_offer_to(offer, seller, amount_sat, policy, None).await
    }

    /// Like [`Engine::take_offer`], claiming to `destination` instead of a new address of the
    /// node's wallet.
    ///
    /// # Errors
    /// As [`Engine::take_offer`].
    pub async fn take_offer_to(
        &self,
        offer: Offer,
        seller: NostrPublicKey,
        amount_sat: u64,
        policy: BuyerPolicy,
        destination: Option<ScriptBuf>,
    ) -> Result<SwapId, EngineError> {
        self.take_offer_labelled(offer, seller, amount_sat, policy, destination, None).await
    }

    /// Like [`Engine::take_offer_to`], with a label ([`SwapStore::put_swap_label`]) committed
    /// under the new swap's id before the swap starts (autoloop's ledger entry).
    ///
    /// # Errors
    /// As [`Engine::take_offer`].
    pub async fn take_offer_labelled(
        &self,
        offer: Offer,
        seller: NostrPublicKey,
        amount_sat: u64,
        policy: BuyerPolicy,
        destination: Option<ScriptBuf>,
        label: Option<serde_json::Value>,
    ) -> Result<SwapId, EngineError> {
        let TakerParts { ctx, keys, nostr_keys, destination: claim_destination, swap_id } =
            self.taker_parts(destination, label.as_ref()).await?;
        let start = BuyerStart {
            swap_id,
            peer: seller.to_hex(),
            offer,
            amount_sat,
            policy,
            claim_destination,
            keys,
        };
        let (swap, actions) = BuyerSwap::start(start, &ctx).map_err(EngineError::Refused)?;
        tracing::info!(swap = %swap_id, amount_sat, "taking offer");
        let slot = Arc::new(Slot::new(Machine::Buyer(swap), nostr_keys.public_key(), true));
        self.start_taker_swap(swap_id, slot, &nostr_keys, actions).await?;
        Ok(swap_id)
    }

    /// Loop in as taker: locks `amount_sat` for Lightning funds, taking `offer` (a loop-in
    /// offer) of `maker`. This node makes the preimage, issues the invoice and funds the HTLC
    /// from its wallet once the maker accepted; refunds go to `refund_destination` (default: a
    /// new address of the node's wallet). Returns the new swap's id.
    ///
    /// # Errors
    /// [`EngineError::Refused`] when the offer does not fit `limits`; store, wallet or key
    /// errors.
    pub async fn take_loop_in_offer(
        &self,
        offer: Offer,
        maker: NostrPublicKey,
        amount_sat: u64,
        limits: LoopInLimits,
        refund_destination: Option<ScriptBuf>,
    ) -> Result<SwapId, EngineError> {
        self.take_loop_in_offer_labelled(offer, maker, amount_sat, limits, refund_destination, None)
            .await
    }

    /// Like [`Engine::take_loop_in_offer`], with a label committed under the new swap's id
    /// before the swap starts (as [`Engine::take_offer_labelled`]).
    ///
    /// # Errors
    /// As [`Engine::take_loop_in_offer`].
    pub async fn take_loop_in_offer_labelled(
        &self,
        offer: Offer,
        maker: NostrPublicKey,
        amount_sat: u64,
        limits: LoopInLimits,
        refund_destination: Option<ScriptBuf>,
        label: Option<serde_json::Value>,
    ) -> Result<SwapId, EngineError> {
        let TakerParts { ctx, keys, nostr_keys, destination: refund_destination, swap_id } =
            self.taker_parts(refund_destination, label.as_ref()).await?;
        let start = LockerStart {
            swap_id,
            peer: maker.to_hex(),
            offer,
            amount_sat,
            limits,
            policy: self.inner.config.seller_policy,
            refund_destination,
            keys,
        };
        let (swap, actions) =
            SellerSwap::start_loop_in(start, &ctx).map_err(EngineError::Refused)?;
        tracing::info!(swap = %swap_id, amount_sat, "taking a loop-in offer");
        let slot = Arc::new(Slot::new(Machine::Seller(swap), nostr_keys.public_key(), true));
        self.start_taker_swap(swap_id, slot, &nostr_keys, actions).await?;
        Ok(swap_id)
    }

    /// What a swap this node takes starts from: the context refreshed from the chain, the swap's
    /// keys at a fresh index, its own Nostr key (never the identity, so that the maker cannot link
    /// it to the node's other swaps), where our spend of the HTLC pays (`destination`, or a new
    /// address of the wallet) and a fresh random swap id, under which `label` is committed.
    async fn taker_parts(
        &self,
        destination: Option<ScriptBuf>,
        label: Option<&serde_json::Value>,
    ) -> Result<TakerParts, EngineError> {
        self.refresh_context().await?;
        let ctx = self.context();
        let index = blocking_store(|| self.inner.store.next_swap_index())?;
        let keys = SwapKeys::derive(&self.inner.swap_master, index)
            .map_err(|e| EngineError::Keys(e.to_string()))?;
        let nostr_keys = self.swap_nostr_keys(index)?;
        let destination = match destination {
            Some(spk) => spk,
            None => blocking_store(|| self.inner.wallet.new_script())?,
        };
        let mut id = [0u8; 32];
        self.inner.entropy.fill(&mut id);
        if let Some(label) = label {
            blocking_store(|| self.inner.store.put_swap_label(&SwapId(id), label))?;
        }
        Ok(TakerParts { ctx, keys, nostr_keys, destination, swap_id: SwapId(id) })
    }

    /// Inserts a taker swap just started, has the transport hold its own key (before its
    /// request goes out), and carries out its first actions.
    async fn start_taker_swap(
        &self,
        swap_id: SwapId,
        slot: Arc<Slot>,
        nostr_keys: &NostrKeys,
        actions: Vec<looper_protocol::swap::Action>,
    ) -> Result<(), EngineError> {
        let mut machine = slot.machine.lock().await;
        if self.inner.swaps.insert_if(swap_id, Arc::clone(&slot), |_| true).is_err() {
            return Err(EngineError::Swap("swap id collision".into()));
        }
        // Listening to the swap's key before the request goes out (stored answers would come
        // all the same: the subscription has no `since`).
        if let Err(e) = self.inner.transport.add_key(nostr_keys).await {
            tracing::warn!(swap = %swap_id, error = %e, "cannot subscribe to the swap's own key yet");
        }
        self.carry_out(swap_id, &slot, &mut machine, actions).await;
        drop(machine);
        self.flush_queues().await;
        Ok(())
    }

    /// Brings the context's tip and fee estimates up to the chain's now: a taker's checks run
    /// against the chain as it is (the maker answers from its own tip at once: a stale one here
    /// would refuse a fair timeout). Takers that come together share one read of the chain: a
    /// read that started after this call came is as good as its own (a node taking 100 offers at
    /// once asked its chain source 200 times).
    async fn refresh_context(&self) -> Result<(), EngineError> {
        let started_before = self.inner.refresh_started.load(Ordering::SeqCst);
        let mut last_read = self.inner.refresh.lock().await;
        if *last_read > started_before {
            return Ok(());
        }
        let this = self.inner.refresh_started.fetch_add(1, Ordering::SeqCst) + 1;
        let tip = self.inner.chain.tip_height().await?;
        let estimates = watcher::read_estimates(&*self.inner.chain).await;
        {
            let mut ctx = self.lock_ctx();
            ctx.tip_height = ctx.tip_height.max(tip);
            watcher::apply_fees(&mut ctx, estimates, &self.inner.config.fees, &*self.inner.wallet);
        }
        *last_read = this;
        Ok(())
    }

    /// Asks a swap to abort (the state machine decides what that means in its state).
    ///
    /// # Errors
    /// [`EngineError::UnknownSwap`], [`EngineError::Swap`].
    pub async fn abort(&self, swap_id: SwapId) -> Result<(), EngineError> {
        self.feed(swap_id, Event::UserAbort).await?;
        self.flush_queues().await;
        Ok(())
    }

    /// Asks a swap for its own script-path spend as soon as the chain allows (the buyer's claim
    /// leaf, the seller's refund leaf from the timeout on), without waiting on the peer; a spend
    /// that is out goes out again. [`EngineError::Swap`] says why when there is nothing to spend
    /// now (and, for a refund before the timeout, from which block).
    ///
    /// # Errors
    /// [`EngineError::UnknownSwap`], [`EngineError::Swap`].
    pub async fn script_spend(&self, swap_id: SwapId) -> Result<(), EngineError> {
        self.feed(swap_id, Event::UserScriptSpend).await?;
        self.flush_queues().await;
        Ok(())
    }

    /// The state name and kind of an active (in-memory) swap (never waits for the swap).
    pub async fn swap_state(&self, swap_id: SwapId) -> Option<(String, StateKind)> {
        self.inner.swaps.get(&swap_id).map(|s| {
            let v = s.view();
            (v.state.to_string(), v.kind)
        })
    }

    /// The swap's current record as the protocol stores it, if the engine has it.
    pub async fn swap_record(&self, swap_id: SwapId) -> Option<ProtoRecord> {
        let slot = self.inner.swaps.get(&swap_id)?;
        let machine = slot.machine.lock().await;
        Some(machine.proto_record())
    }

    /// Ids of the swaps the engine holds.
    pub async fn swap_ids(&self) -> Vec<SwapId> {
        self.inner.swaps.ids()
    }

    /// Processes a Lightning event and acknowledges it once what follows is persisted (so a
    /// crash before that gets the event again from the Lightning node after the restart).
    pub async fn handle_lightning(&self, delivery: LightningDelivery) {
        if self.on_lightning_event(delivery.event.clone()).await {
            delivery.ack();
        }
    }

    /// `false` when persisting failed (the event must come again).
    async fn on_lightning_event(&self, ev: LightningEvent) -> bool {
        let (hash, event) = match ev {
            LightningEvent::PaymentClaimable { payment_hash, amount_msat } => {
                (payment_hash, Event::PaymentClaimable { payment_hash, amount_msat })
            }
            LightningEvent::PaymentClaimed { payment_hash, .. } => {
                (payment_hash, Event::PaymentClaimed { payment_hash })
            }
            LightningEvent::PaymentSucceeded { payment_hash, preimage, .. } => {
                (payment_hash, Event::PaymentSucceeded { preimage })
            }
            LightningEvent::PaymentFailed { payment_hash: Some(h), reason } => {
                // The event names no attempt, and may be a replay of an earlier attempt's
                // failure: what counts is what the node knows now (pending: another attempt is
                // in flight, the failure is stale).
                tracing::debug!(reason = %reason, "lightning payment failed");
                (h, Event::PaymentStatus { payment_hash: h, status: self.payment_status(h) })
            }
            LightningEvent::PaymentFailed { payment_hash: None, .. } => return true,
        };
        let found = self.inner.swaps.select(|s| s.routes(hash));
        let Some((id, slot)) = found.into_iter().next() else {
            tracing::debug!("lightning event for no swap");
            return true;
        };
        let done = match self.feed_slot(id, &slot, event).await {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(swap = %id, error = %e, "lightning event refused");
                true
            }
        };
        self.flush_queues().await;
        done
    }

    /// Runs the engine until `shutdown` resolves: swap messages are handled as they arrive (up
    /// to 256 at once, each followed by the queued fundings), Lightning
    /// events one at a time in order, a chain poll every [`EngineConfig::chain_poll`] and the
    /// served offer republished every [`EngineConfig::offer_refresh`].
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let (stop, stopped) = watch::channel(false);
        let mut loops = JoinSet::new();
        loops.spawn(self.clone().lightning_loop(stopped.clone()));
        loops.spawn(self.clone().poll_loop(stopped.clone()));
        loops.spawn(self.clone().offer_loop(stopped));
        let mut incoming = self.inner.transport.incoming();
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_MESSAGES));
        let mut handlers = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                msg = recv_opt(&mut incoming) => match msg {
                    Some(m) => {
                        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                        let engine = self.clone();
                        handlers.spawn(async move {
                            engine.handle_message(m).await;
                            engine.flush_queues().await;
                            drop(permit);
                        });
                    }
                    None => incoming = None,
                },
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
            }
        }
        let _ = stop.send(true);
        // What is running finishes (bounded); what is left is cut as a crash would cut it (every
        // swap resumes from its last persisted state).
        let drain = async {
            while handlers.join_next().await.is_some() {}
            while loops.join_next().await.is_some() {}
        };
        if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
            tracing::warn!("engine work still running at shutdown: stopped");
        }
        handlers.abort_all();
        loops.abort_all();
        // A stopped seller serves nobody: take the offers off the relays (bounded wait).
        let served: Vec<String> = {
            let misc = self.lock_misc();
            misc.served_offer
                .iter()
                .chain(&misc.served_in_offer)
                .map(|o| o.offer_id.clone())
                .collect()
        };
        for id in served {
            let withdraw = self.inner.transport.withdraw_offer(&id);
            match tokio::time::timeout(Duration::from_secs(5), withdraw).await {
                Ok(Ok(_)) => tracing::info!(offer = %id, "offer withdrawn at shutdown"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot withdraw the offer at shutdown"),
                Err(_) => tracing::warn!("withdrawing the offer at shutdown timed out"),
            }
        }
        tracing::info!("engine stopped");
    }

    async fn lightning_loop(self, mut stopped: watch::Receiver<bool>) {
        let mut events = self.inner.lightning.take_events();
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                ev = recv_opt(&mut events) => match ev {
                    Some(d) => self.handle_lightning(d).await,
                    None => events = None,
                },
            }
        }
    }

    async fn poll_loop(self, mut stopped: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.inner.config.chain_poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = ticker.tick() => self.poll().await,
            }
        }
    }

    async fn offer_loop(self, mut stopped: watch::Receiver<bool>) {
        if self.inner.config.auto_prepay {
            // An automatic prepay is priced from the fee rate: the first publication waits for
            // the first poll's estimates (bounded), so that it does not go out at the floor
            // price and get repriced moments later.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while self.lock_ctx().fees.estimates == FeeEstimates::flat(FeeRate::ZERO)
                && tokio::time::Instant::now() < deadline
                && !*stopped.borrow()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let every = self.inner.config.offer_refresh.max(Duration::from_secs(1));
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                // The first tick is at once: the offer goes out when the engine starts.
                _ = ticker.tick() => self.refresh_served_offer().await,
            }
        }
    }
}

async fn recv_opt<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
