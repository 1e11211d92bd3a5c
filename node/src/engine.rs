//! The swap engine: drives the protocol's [`BuyerSwap`] and [`SellerSwap`] state machines with real
//! I/O (the node's counterpart of `protocol/tests/sim`).
//!
//! One event loop ([`Engine::run`]) selects over incoming Nostr messages, Lightning events and a
//! chain poll timer. Every event is fed to its swap; the returned [`Action`]s are carried out in
//! order, and [`Action::Persist`] commits the swap's record to the [`SwapStore`] before anything
//! after it happens. Results of actions (a built funding transaction, a created invoice, an
//! already-succeeded payment) are fed back to the same swap before the next event is taken.
//!
//! At start ([`Engine::start`]) every open swap is loaded, its keys derived again from the seed
//! (`key_index`), and `resume` carried out.
//!
//! The API side calls [`Engine::take_offer`], [`Engine::abort`], [`Engine::publish_offer`], ...;
//! the state is shared behind one async mutex, so API calls and the loop never interleave inside
//! one transition.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use looper_protocol::buyer::{BuyerCheckError, BuyerPolicy, BuyerStart, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{Envelope, ErrorCode, ErrorMessage, Message, Offer};
use looper_protocol::record::SwapRecord as ProtoRecord;
use looper_protocol::seller::{SellerPolicy, SellerState, SellerSwap};
use looper_protocol::swap::{
    Action, Context, Event, HtlcStatus, Notification, PaymentStatus, StateKind, TxPurpose,
    CLAIM_FEE_TARGET_BLOCKS,
};
use looper_protocol::{PaymentHash, Preimage, SwapId};
use rand::RngCore;
use serde::Serialize;
use tokio::sync::{broadcast, Mutex};

use crate::chain::{ChainError, ChainSource};
use crate::lightning::{Lightning, LightningDelivery, LightningError, LightningEvent, PayOutcome};
use crate::nostr::{Incoming, NostrTransport, PublicKey as NostrPublicKey, RateLimit, RateLimiter};
use crate::store::{StoreError, SwapRecord, SwapRole, SwapStatus, SwapStore};
use crate::wallet::{LooperWallet, WalletError};

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
    /// The buyer's checks refused the offer (the check's code reaches the API).
    #[error("offer refused: {0}")]
    Refused(BuyerCheckError),
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
    /// Seller policy for new swaps.
    pub seller_policy: SellerPolicy,
    /// How often the chain is polled (and `Tick` fed).
    pub chain_poll: Duration,
    /// Every how many polls the on-chain wallet is synced.
    pub wallet_sync_every: u32,
    /// Seller: the offer served from the configuration (`seller.enabled`). Published when
    /// [`Engine::run`] starts and republished every [`EngineConfig::offer_refresh`] with a new
    /// `expires_at` (now + [`EngineConfig::offer_ttl`]), until withdrawn.
    pub seller_offer: Option<Offer>,
    /// Seller: most swaps served at the same time (`seller.max_concurrent_swaps`); further
    /// requests are refused with `rate_limited`. `None`: no limit.
    pub max_concurrent_swaps: Option<u32>,
    /// How often the served offer is republished.
    pub offer_refresh: Duration,
    /// Lifetime given to each published version of the served offer (`expires_at`).
    pub offer_ttl: Duration,
    /// Per-sender limit on the `error` replies to messages that do not decode.
    pub decode_reply_limit: RateLimit,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            seller_policy: SellerPolicy::default(),
            chain_poll: Duration::from_secs(3),
            wallet_sync_every: 5,
            seller_offer: None,
            max_concurrent_swaps: None,
            offer_refresh: Duration::from_secs(20 * 60),
            offer_ttl: Duration::from_secs(3600),
            decode_reply_limit: RateLimit::new(5, 10),
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
    pub wallet: Arc<LooperWallet>,
    /// Esplora client used to sync the wallet (`None`: the wallet is not synced by the engine).
    pub wallet_sync: Option<esplora_client::AsyncClient>,
    /// The chain source.
    pub chain: Arc<dyn ChainSource>,
    /// The Lightning node.
    pub lightning: Arc<dyn Lightning>,
    /// The Nostr transport.
    pub transport: NostrTransport,
    /// The swap master key (`NodeKeys::swap_master`).
    pub swap_master: Xpriv,
    /// Settings.
    pub config: EngineConfig,
}

#[allow(clippy::large_enum_variant)]
enum Machine {
    Buyer(BuyerSwap),
    Seller(SellerSwap),
}

impl Machine {
    fn kind(&self) -> StateKind {
        match self {
            Machine::Buyer(b) => b.kind(),
            Machine::Seller(s) => s.kind(),
        }
    }

    fn state_name(&self) -> &'static str {
        match self {
            Machine::Buyer(b) => b.state.name(),
            Machine::Seller(s) => s.state.name(),
        }
    }

    fn peer(&self) -> &str {
        match self {
            Machine::Buyer(b) => &b.peer,
            Machine::Seller(s) => &s.peer,
        }
    }

    fn payment_hash(&self) -> Option<PaymentHash> {
        match self {
            Machine::Buyer(b) => b.payment_hash(),
            Machine::Seller(s) => Some(s.payment_hash()),
        }
    }

    fn relays(&self) -> Vec<String> {
        match self {
            Machine::Buyer(b) => b.offer.relays.clone(),
            Machine::Seller(_) => Vec::new(),
        }
    }

    fn record(&self, now: u64) -> Result<SwapRecord, EngineError> {
        let (proto, role, created_at) = match self {
            Machine::Buyer(b) => (ProtoRecord::Buyer(b.clone()), SwapRole::Buyer, b.created_at),
            Machine::Seller(s) => (ProtoRecord::Seller(s.clone()), SwapRole::Seller, s.created_at),
        };
        let data = proto.to_bytes().map_err(|e| EngineError::Record {
            id: proto.swap_id().to_string(),
            reason: e.to_string(),
        })?;
        Ok(SwapRecord {
            id: proto.swap_id(),
            role,
            state: self.state_name().to_string(),
            status: status_of(self.kind()),
            payment_hash: self.payment_hash(),
            created_at,
            updated_at: now,
            data,
        })
    }
}

fn status_of(kind: StateKind) -> SwapStatus {
    match kind {
        StateKind::Pending => SwapStatus::Pending,
        StateKind::Succeeded => SwapStatus::Succeeded,
        StateKind::Failed => SwapStatus::Failed,
    }
}

/// What the chain watcher reported about an outpoint, so that only changes are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    /// The HTLC output itself.
    Output(OutPoint),
    /// Its spend.
    Spend(OutPoint),
}

/// What was reported for a [`Seen`] key: the transaction and its confirmation height.
type SeenValue = (bitcoin::Txid, Option<u32>);

struct Active {
    machine: Machine,
    /// Scripts watched for the HTLC output and its spend.
    watch: Vec<ScriptBuf>,
    /// What was last reported per outpoint, to feed changes only.
    seen: HashMap<Seen, SeenValue>,
    /// The record loaded but `resume` failed: tried again at every chain poll.
    needs_resume: bool,
}

impl Active {
    fn new(machine: Machine) -> Self {
        Active { machine, watch: Vec::new(), seen: HashMap::new(), needs_resume: false }
    }
}

struct State {
    swaps: HashMap<SwapId, Active>,
    ctx: Context,
    polls: u32,
    /// The configuration's offer while it is served (cleared when withdrawn).
    served_offer: Option<Offer>,
    /// The served offer is off the relays because the wallet could not fund it; the chain poll
    /// publishes it again once it can.
    offer_unfunded: bool,
    /// Replies to undecodable messages, per sender.
    decode_replies: RateLimiter<NostrPublicKey>,
    /// `FundHtlc`s of this loop iteration, funded together by [`Engine::flush_funding`].
    funding_queue: Vec<(SwapId, ScriptBuf, u64)>,
}

struct Inner {
    store: Arc<dyn SwapStore>,
    wallet: Arc<LooperWallet>,
    wallet_sync: Option<esplora_client::AsyncClient>,
    chain: Arc<dyn ChainSource>,
    lightning: Arc<dyn Lightning>,
    transport: NostrTransport,
    swap_master: Xpriv,
    config: EngineConfig,
    state: Mutex<State>,
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

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn blocking_store<T>(f: impl FnOnce() -> T) -> T {
    // redb commits fsync; keep the runtime's worker usable meanwhile.
    tokio::task::block_in_place(f)
}

impl Engine {
    /// Builds the engine: loads every open swap, re-attaches its keys and carries out `resume`.
    ///
    /// # Errors
    /// Store, chain or key errors. A record that does not decode is logged and skipped.
    pub async fn start(parts: EngineParts) -> Result<Engine, EngineError> {
        let (notifications, _) = broadcast::channel(1024);
        let tip = parts.chain.tip_height().await?;
        let fee_rate = fee_rate(&*parts.chain, &parts.wallet).await;
        let ctx = Context { now_secs: now_secs(), tip_height: tip, fee_rate };
        let served_offer = parts.config.seller_offer.clone();
        let decode_replies = RateLimiter::new(parts.config.decode_reply_limit);
        let inner = Arc::new(Inner {
            store: parts.store,
            wallet: parts.wallet,
            wallet_sync: parts.wallet_sync,
            chain: parts.chain,
            lightning: parts.lightning,
            transport: parts.transport,
            swap_master: parts.swap_master,
            config: parts.config,
            state: Mutex::new(State {
                swaps: HashMap::new(),
                ctx,
                polls: 0,
                served_offer,
                offer_unfunded: false,
                decode_replies,
                funding_queue: Vec::new(),
            }),
            notifications,
        });
        let engine = Engine { inner };
        if let Err(e) = engine.sync_wallet().await {
            tracing::warn!(error = %e, "wallet sync at start failed");
        }
        engine.resume_all().await?;
        Ok(engine)
    }

    async fn resume_all(&self) -> Result<(), EngineError> {
        let records =
            blocking_store(|| self.inner.store.list_swaps(&crate::store::SwapFilter::pending()))?;
        let mut st = self.inner.state.lock().await;
        let ctx = st.ctx;
        for rec in records {
            let id = rec.id;
            let proto = match ProtoRecord::from_bytes(&rec.data) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(swap = %id, error = %e, "cannot load swap record");
                    continue;
                }
            };
            let machine = match proto {
                ProtoRecord::Buyer(b) => Machine::Buyer(b),
                ProtoRecord::Seller(s) => Machine::Seller(s),
            };
            tracing::info!(swap = %id, state = machine.state_name(), "resuming swap");
            st.swaps.insert(id, Active::new(machine));
            self.resume_one(&mut st, id, &ctx).await;
        }
        self.flush_funding(&mut st).await;
        Ok(())
    }

    /// Attaches the keys and carries out `resume`. A failure never drops the swap: it stays in
    /// memory (watched, shown in the API and its event log) and is tried again at every poll.
    async fn resume_one(&self, st: &mut State, id: SwapId, ctx: &Context) {
        let Some(active) = st.swaps.get_mut(&id) else { return };
        let mut rng = rand::rngs::OsRng;
        let result = (|| {
            let index = match &active.machine {
                Machine::Buyer(b) => b.key_index,
                Machine::Seller(s) => s.key_index,
            };
            let keys = SwapKeys::derive(&self.inner.swap_master, index)
                .map_err(|e| format!("cannot derive swap keys: {e}"))?;
            match &mut active.machine {
                Machine::Buyer(b) => b.attach_keys(keys).and_then(|_| b.resume(ctx, &mut rng)),
                Machine::Seller(s) => s.attach_keys(keys).and_then(|_| s.resume(ctx, &mut rng)),
            }
            .map_err(|e| e.to_string())
        })();
        match result {
            Ok(actions) => {
                let retried = active.needs_resume;
                active.needs_resume = false;
                if retried {
                    tracing::info!(swap = %id, "swap resumed after an earlier failure");
                }
                self.carry_out(st, id, actions).await;
            }
            Err(reason) => {
                let first = !active.needs_resume;
                active.needs_resume = true;
                if first {
                    tracing::error!(swap = %id, error = %reason, "cannot resume swap; trying again at every poll");
                    let note = Notification::Stalled { reason: format!("cannot resume: {reason}") };
                    self.carry_out(st, id, vec![Action::Notify(note)]).await;
                }
            }
        }
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
    pub fn wallet(&self) -> &Arc<LooperWallet> {
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

    /// The Nostr transport.
    pub fn transport(&self) -> &NostrTransport {
        &self.inner.transport
    }

    /// Syncs the on-chain wallet (when a sync client was given).
    ///
    /// # Errors
    /// Wallet sync errors.
    pub async fn sync_wallet(&self) -> Result<(), EngineError> {
        if let Some(client) = &self.inner.wallet_sync {
            self.inner.wallet.sync(client).await?;
        }
        Ok(())
    }

    /// Seller: remembers `offer` (served from now on) and publishes it.
    ///
    /// # Errors
    /// Store or transport errors.
    pub async fn publish_offer(&self, offer: &Offer) -> Result<(), EngineError> {
        let value = serde_json::to_value(offer).map_err(|e| EngineError::Record {
            id: offer.offer_id.clone(),
            reason: e.to_string(),
        })?;
        blocking_store(|| self.inner.store.put_offer(&offer.offer_id, &value))?;
        self.inner
            .transport
            .publish_offer(offer)
            .await
            .map_err(|e| EngineError::Transport(e.to_string()))?;
        Ok(())
    }

    /// Seller: withdraws an offer (no new swaps from it). Returns whether it existed.
    ///
    /// # Errors
    /// Store or transport errors.
    pub async fn withdraw_offer(&self, offer_id: &str) -> Result<bool, EngineError> {
        {
            let mut st = self.inner.state.lock().await;
            if st.served_offer.as_ref().is_some_and(|o| o.offer_id == offer_id) {
                st.served_offer = None;
            }
        }
        let existed = blocking_store(|| self.inner.store.delete_offer(offer_id))?;
        self.inner
            .transport
            .withdraw_offer(offer_id)
            .await
            .map_err(|e| EngineError::Transport(e.to_string()))?;
        Ok(existed)
    }

    /// Seller: publishes the configuration's offer again (if still served) with a new
    /// `expires_at`. Called when [`Engine::run`] starts and every
    /// [`EngineConfig::offer_refresh`].
    ///
    /// The offer follows what the wallet can fund: its `max_amount_sat` is lowered to the
    /// spendable balance (less a fee reserve), and it is withdrawn from the relays while the
    /// wallet cannot fund even `min_amount_sat` (and published again once it can).
    pub async fn refresh_served_offer(&self) {
        let Some(mut offer) = self.inner.state.lock().await.served_offer.clone() else { return };
        offer.expires_at = now_secs().saturating_add(self.inner.config.offer_ttl.as_secs());
        let spendable = match self.inner.wallet.balance() {
            Ok(b) => (b.confirmed + b.trusted_pending).to_sat(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the wallet balance for the offer");
                return;
            }
        };
        match fundable_offer(offer, spendable) {
            Some(fundable) => {
                offer = fundable;
                self.inner.state.lock().await.offer_unfunded = false;
            }
            None => {
                let id = {
                    let mut st = self.inner.state.lock().await;
                    if st.offer_unfunded {
                        return;
                    }
                    st.offer_unfunded = true;
                    st.served_offer.as_ref().map(|o| o.offer_id.clone())
                };
                tracing::info!(
                    spendable_sat = spendable,
                    "wallet cannot fund the offer: withdrawn"
                );
                if let Some(id) = id {
                    if let Err(e) = self.inner.transport.withdraw_offer(&id).await {
                        tracing::warn!(error = %e, "cannot withdraw the offer");
                    }
                }
                return;
            }
        }
        match self.publish_offer(&offer).await {
            Ok(()) => tracing::info!(offer = %offer.offer_id, "offer published"),
            Err(e) => {
                tracing::warn!(offer = %offer.offer_id, error = %e, "cannot publish the offer")
            }
        }
    }

    async fn refresh_served_offer_owned(self) {
        self.refresh_served_offer().await;
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
        let mut st = self.inner.state.lock().await;
        let ctx = st.ctx;
        let index = blocking_store(|| self.inner.store.next_swap_index())?;
        let keys = SwapKeys::derive(&self.inner.swap_master, index)
            .map_err(|e| EngineError::Keys(e.to_string()))?;
        let claim_destination = match destination {
            Some(spk) => spk,
            None => self.inner.wallet.new_address()?.script_pubkey(),
        };
        let mut id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut id);
        let swap_id = SwapId(id);
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
        st.swaps.insert(swap_id, Active::new(Machine::Buyer(swap)));
        self.carry_out(&mut st, swap_id, actions).await;
        self.flush_funding(&mut st).await;
        Ok(swap_id)
    }

    /// Asks a swap to abort (the state machine decides what that means in its state).
    ///
    /// # Errors
    /// [`EngineError::UnknownSwap`], [`EngineError::Swap`].
    pub async fn abort(&self, swap_id: SwapId) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        if !st.swaps.contains_key(&swap_id) {
            return Err(EngineError::UnknownSwap(swap_id.to_string()));
        }
        self.feed(&mut st, swap_id, Event::UserAbort).await.map_err(EngineError::Swap)?;
        self.flush_funding(&mut st).await;
        Ok(())
    }

    /// The state name and kind of an active (in-memory) swap.
    pub async fn swap_state(&self, swap_id: SwapId) -> Option<(String, StateKind)> {
        let st = self.inner.state.lock().await;
        st.swaps.get(&swap_id).map(|a| (a.machine.state_name().to_string(), a.machine.kind()))
    }

    /// The swap's current record as the protocol stores it (JSON), if the engine has it.
    pub async fn swap_record(&self, swap_id: SwapId) -> Option<ProtoRecord> {
        let st = self.inner.state.lock().await;
        st.swaps.get(&swap_id).map(|a| match &a.machine {
            Machine::Buyer(b) => ProtoRecord::Buyer(b.clone()),
            Machine::Seller(s) => ProtoRecord::Seller(s.clone()),
        })
    }

    /// Ids of the swaps the engine holds.
    pub async fn swap_ids(&self) -> Vec<SwapId> {
        self.inner.state.lock().await.swaps.keys().copied().collect()
    }

    /// Runs the event loop until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let mut incoming = self.inner.transport.incoming();
        let mut ln_events = self.inner.lightning.take_events();
        let mut ticker = tokio::time::interval(self.inner.config.chain_poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let refresh_every = self.inner.config.offer_refresh.max(Duration::from_secs(1));
        let mut refresh =
            tokio::time::interval_at(tokio::time::Instant::now() + refresh_every, refresh_every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Publishing waits for a relay; the loop does not.
        tokio::spawn(self.clone().refresh_served_offer_owned());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = refresh.tick() => {
                    tokio::spawn(self.clone().refresh_served_offer_owned());
                }
                msg = recv_opt(&mut incoming) => match msg {
                    Some(m) => {
                        self.on_incoming(m).await;
                        // Take what else arrived meanwhile, so that the swaps it starts are
                        // funded in one transaction.
                        for _ in 0..MAX_BATCH {
                            let Some(m) = incoming.as_mut().and_then(|rx| rx.try_recv().ok())
                            else {
                                break;
                            };
                            self.on_incoming(m).await;
                        }
                        let mut st = self.inner.state.lock().await;
                        self.flush_funding(&mut st).await;
                    }
                    None => incoming = None,
                },
                ev = recv_opt(&mut ln_events) => match ev {
                    Some(e) => self.on_lightning(e).await,
                    None => ln_events = None,
                },
                _ = ticker.tick() => self.poll().await,
            }
        }
        // A stopped seller serves nobody: take the offer off the relays (bounded wait).
        let served =
            self.inner.state.lock().await.served_offer.as_ref().map(|o| o.offer_id.clone());
        if let Some(id) = served {
            let withdraw = self.inner.transport.withdraw_offer(&id);
            match tokio::time::timeout(Duration::from_secs(5), withdraw).await {
                Ok(Ok(_)) => tracing::info!(offer = %id, "offer withdrawn at shutdown"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot withdraw the offer at shutdown"),
                Err(_) => tracing::warn!("withdrawing the offer at shutdown timed out"),
            }
        }
        tracing::info!("engine stopped");
    }

    /// Handles one incoming message, then marks its event processed: a crash before that point
    /// has it delivered again after the restart (the transport runs with `manual_ack`).
    async fn on_incoming(&self, inc: Incoming) {
        let event_id = inc.event_id;
        if !self.handle_incoming(inc).await {
            // The swap's record could not be persisted: the event stays unprocessed and comes
            // again with the next refetch (or after a restart).
            tracing::warn!(
                "a nostr message was not processed (persisting failed); kept for redelivery"
            );
            return;
        }
        if let Err(e) = self.inner.transport.ack(&event_id) {
            tracing::warn!(error = %e, "cannot mark a nostr event processed");
        }
    }

    /// `false` when the engine could not persist what follows from the message.
    async fn handle_incoming(&self, inc: Incoming) -> bool {
        let env = match inc.message {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(sender = %inc.sender, error = %e, "undecodable swap message");
                // Answer when the message names a swap, within the sender's reply budget.
                let Some(reply) = e.reply(0) else { return true };
                let allowed = self.inner.state.lock().await.decode_replies.check(&inc.sender);
                if !allowed {
                    tracing::debug!(sender = %inc.sender, "decode-error reply rate limited");
                    return true;
                }
                if let Err(e) = self.inner.transport.send(&inc.sender, &[], &reply).await {
                    tracing::debug!(error = %e, "cannot send decode-error reply");
                }
                return true;
            }
        };
        let sender = inc.sender.to_hex();
        let mut st = self.inner.state.lock().await;
        let id = env.swap_id;
        let known_peer = st.swaps.get(&id).map(|a| a.machine.peer().to_string());
        match known_peer {
            Some(peer) if peer == sender => {
                let repeated_request = matches!(env.body, Message::SwapRequest(_));
                if repeated_request {
                    // The buyer did not get our answer (or asks again after a restart): the same
                    // swap_accept (and what followed) again, never a second swap.
                    let resend = match st.swaps.get(&id).map(|a| &a.machine) {
                        Some(Machine::Seller(s)) => s.outbox.resend_all(),
                        _ => Vec::new(),
                    };
                    tracing::debug!(swap = %id, "repeated swap_request: answers sent again");
                    return self.carry_out(&mut st, id, resend).await;
                }
                match self.feed(&mut st, id, Event::Message(env)).await {
                    Ok(done) => done,
                    Err(e) => {
                        tracing::debug!(swap = %id, error = %e, "message refused");
                        true
                    }
                }
            }
            Some(_) => {
                tracing::warn!(swap = %id, sender = %sender, "message from a stranger for a known swap");
                if matches!(env.body, Message::SwapRequest(_)) {
                    // A live swap id from another key: never a second swap under that id.
                    self.reply_error(&inc.sender, &env, ErrorCode::InvalidState, "swap id in use")
                        .await;
                } else {
                    self.reply_error(&inc.sender, &env, ErrorCode::UnknownSwap, "unknown swap")
                        .await;
                }
                true
            }
            None => match &env.body {
                Message::SwapRequest(_) => self.on_request(&mut st, inc.sender, env).await,
                Message::Error(_) => true,
                _ => {
                    // A finished swap (not in memory) or a stranger.
                    let stored = blocking_store(|| self.inner.store.get_swap(&id)).ok().flatten();
                    if stored.is_none() {
                        self.reply_error(&inc.sender, &env, ErrorCode::UnknownSwap, "unknown swap")
                            .await;
                    }
                    true
                }
            },
        }
    }

    async fn reply_error(
        &self,
        to: &NostrPublicKey,
        env: &Envelope,
        code: ErrorCode,
        message: &str,
    ) {
        if matches!(env.body, Message::Error(_)) {
            return;
        }
        let reply = Envelope::error_reply(env.swap_id, 0, ErrorMessage::new(code, message));
        if let Err(e) = self.inner.transport.send(to, &[], &reply).await {
            tracing::debug!(error = %e, "cannot send error reply");
        }
    }

    async fn on_request(&self, st: &mut State, sender: NostrPublicKey, env: Envelope) -> bool {
        let Message::SwapRequest(req) = env.body.clone() else { return true };
        let id = env.swap_id;
        if blocking_store(|| self.inner.store.get_swap(&id)).ok().flatten().is_some() {
            return true; // a finished swap's request again
        }
        if let Some(max) = self.inner.config.max_concurrent_swaps {
            let serving = st
                .swaps
                .values()
                .filter(|a| {
                    matches!(a.machine, Machine::Seller(_))
                        && a.machine.kind() == StateKind::Pending
                })
                .count();
            if serving >= usize::try_from(max).unwrap_or(usize::MAX) {
                tracing::info!(swap = %id, serving, "swap request refused: too many swaps");
                self.reply_error(
                    &sender,
                    &env,
                    ErrorCode::RateLimited,
                    "too many swaps in progress",
                )
                .await;
                return true;
            }
        }
        let offer = blocking_store(|| self.inner.store.get_offer(&req.offer_id))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value::<Offer>(v).ok());
        let Some(offer) = offer else {
            self.reply_error(&sender, &env, ErrorCode::UnknownOffer, "no such offer").await;
            return true;
        };
        let keys = match blocking_store(|| self.inner.store.next_swap_index())
            .map_err(|e| e.to_string())
            .and_then(|i| SwapKeys::derive(&self.inner.swap_master, i).map_err(|e| e.to_string()))
        {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot derive swap keys");
                self.reply_error(&sender, &env, ErrorCode::Internal, "internal error").await;
                return true;
            }
        };
        let refund = match self.inner.wallet.new_address() {
            Ok(a) => a.script_pubkey(),
            Err(e) => {
                tracing::error!(error = %e, "no refund address");
                self.reply_error(&sender, &env, ErrorCode::Internal, "internal error").await;
                return true;
            }
        };
        match SellerSwap::from_request(
            id,
            sender.to_hex(),
            offer,
            req,
            keys,
            refund,
            self.inner.config.seller_policy,
            &st.ctx,
        ) {
            Ok((swap, actions)) => {
                tracing::info!(swap = %id, amount_sat = swap.request.amount_sat, "new swap request accepted");
                st.swaps.insert(id, Active::new(Machine::Seller(swap)));
                let persisted = self.carry_out(st, id, actions).await;
                if !persisted {
                    // Never recorded: forget it, so that the request delivered again (it stays
                    // unacknowledged) starts the swap afresh.
                    st.swaps.remove(&id);
                }
                persisted
            }
            Err(err) => {
                tracing::info!(swap = %id, error = %err.message, "swap request refused");
                let reply = Envelope::error_reply(id, 0, err);
                if let Err(e) = self.inner.transport.send(&sender, &[], &reply).await {
                    tracing::debug!(error = %e, "cannot send error reply");
                }
                true
            }
        }
    }

    /// Processes a Lightning event and acknowledges it once what follows is persisted (so a crash
    /// before that gets the event again from ldk-node after the restart).
    async fn on_lightning(&self, delivery: LightningDelivery) {
        if self.on_lightning_event(delivery.event.clone()).await {
            delivery.ack();
        }
    }

    /// `false` when persisting failed (the event must come again).
    async fn on_lightning_event(&self, ev: LightningEvent) -> bool {
        let mut st = self.inner.state.lock().await;
        let by_hash = |st: &State, h: PaymentHash| {
            st.swaps.iter().find(|(_, a)| a.machine.payment_hash() == Some(h)).map(|(id, _)| *id)
        };
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
        let Some(id) = by_hash(&st, hash) else {
            tracing::debug!("lightning event for no swap");
            return true;
        };
        let done = match self.feed(&mut st, id, event).await {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(swap = %id, error = %e, "lightning event refused");
                true
            }
        };
        self.flush_funding(&mut st).await;
        done
    }

    /// One chain poll: new tip and fee rate, each watched script's output and spend, then a tick.
    async fn poll(&self) {
        let tip = match self.inner.chain.tip_height().await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "chain poll failed; the swaps' clock keeps moving");
                None
            }
        };
        let fee_rate = fee_rate(&*self.inner.chain, &self.inner.wallet).await;
        let sync_now = {
            let mut st = self.inner.state.lock().await;
            st.polls = st.polls.wrapping_add(1);
            st.polls % self.inner.config.wallet_sync_every.max(1) == 0
        };
        if sync_now {
            if let Err(e) = self.sync_wallet().await {
                tracing::debug!(error = %e, "wallet sync failed");
            }
        }
        let mut st = self.inner.state.lock().await;
        if st.offer_unfunded && sync_now {
            // Funds may have arrived: the refresh publishes the offer again if they did.
            tokio::spawn(self.clone().refresh_served_offer_owned());
        }
        let Some(tip) = tip else {
            // The chain source is down: time still passes (coop deadlines, invoice expiry,
            // payment retries), the tip stays where it was last seen.
            st.ctx.now_secs = now_secs();
            self.tick_pending(&mut st).await;
            return;
        };
        st.ctx = Context { now_secs: now_secs(), tip_height: tip, fee_rate };
        let stalled: Vec<SwapId> =
            st.swaps.iter().filter(|(_, a)| a.needs_resume).map(|(id, _)| *id).collect();
        let ctx = st.ctx;
        for id in stalled {
            self.resume_one(&mut st, id, &ctx).await;
        }
        let ids: Vec<SwapId> = st
            .swaps
            .iter()
            .filter(|(_, a)| !a.watch.is_empty() && a.machine.kind() == StateKind::Pending)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.check_chain(&mut st, id).await;
        }
        self.tick_pending(&mut st).await;
        self.flush_funding(&mut st).await;
    }

    /// Feeds a tick to every pending swap.
    async fn tick_pending(&self, st: &mut State) {
        let pending: Vec<SwapId> = st
            .swaps
            .iter()
            .filter(|(_, a)| a.machine.kind() == StateKind::Pending)
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            if let Err(e) = self.feed(st, id, Event::Tick).await {
                tracing::debug!(swap = %id, error = %e, "tick refused");
            }
        }
    }

    async fn check_chain(&self, st: &mut State, id: SwapId) {
        let Some(scripts) = st.swaps.get(&id).map(|a| a.watch.clone()) else { return };
        for spk in scripts {
            let history = match self.inner.chain.script_history(&spk).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(swap = %id, error = %e, "script history failed");
                    continue;
                }
            };
            let mut events: Vec<(Seen, Option<SeenValue>, Event)> = Vec::new();
            let mut outputs: Vec<OutPoint> = Vec::new();
            for h in &history {
                let txid = h.tx.compute_txid();
                for (vout, o) in h.tx.output.iter().enumerate() {
                    if o.script_pubkey != spk {
                        continue;
                    }
                    let Ok(vout) = u32::try_from(vout) else { continue };
                    let outpoint = OutPoint { txid, vout };
                    outputs.push(outpoint);
                    events.push((
                        Seen::Output(outpoint),
                        Some((txid, h.status.height())),
                        Event::HtlcOutput {
                            outpoint,
                            value_sat: o.value.to_sat(),
                            script_pubkey: spk.clone(),
                            confirmed_height: h.status.height(),
                        },
                    ));
                }
            }
            for op in &outputs {
                let spender =
                    history.iter().find(|h| h.tx.input.iter().any(|i| i.previous_output == *op));
                match spender {
                    Some(h) => events.push((
                        Seen::Spend(*op),
                        Some((h.tx.compute_txid(), h.status.height())),
                        Event::HtlcSpent { tx: h.tx.clone(), confirmed_height: h.status.height() },
                    )),
                    None => {
                        // A spend seen before is gone (reorganised out): forget it, so that the
                        // next spend is reported.
                        if let Some(a) = st.swaps.get_mut(&id) {
                            a.seen.remove(&Seen::Spend(*op));
                        }
                    }
                }
            }
            // Outputs of this script seen before that are in neither the chain nor the mempool
            // any more (reorganised out and dropped, or double-spent).
            let gone: Vec<OutPoint> = st
                .swaps
                .get(&id)
                .map(|a| {
                    a.seen
                        .keys()
                        .filter_map(|k| match k {
                            Seen::Output(op) if !outputs.contains(op) => Some(*op),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            for outpoint in gone {
                if let Some(a) = st.swaps.get_mut(&id) {
                    a.seen.remove(&Seen::Output(outpoint));
                    a.seen.remove(&Seen::Spend(outpoint));
                }
                tracing::warn!(swap = %id, %outpoint, "htlc output left the chain");
                if let Err(e) = self.feed(st, id, Event::HtlcGone { outpoint }).await {
                    tracing::debug!(swap = %id, error = %e, "chain event refused");
                }
            }
            for (key, val, event) in events {
                let changed =
                    st.swaps.get(&id).map(|a| a.seen.get(&key) != val.as_ref()).unwrap_or(false);
                if !changed {
                    continue;
                }
                if let (Some(a), Some(val)) = (st.swaps.get_mut(&id), val) {
                    a.seen.insert(key, val);
                }
                if let Err(e) = self.feed(st, id, event).await {
                    tracing::debug!(swap = %id, error = %e, "chain event refused");
                }
            }
        }
    }

    /// What the Lightning node knows now of the payment for `hash`.
    fn payment_status(&self, hash: PaymentHash) -> PaymentStatus {
        match self.inner.lightning.payment(hash) {
            None => PaymentStatus::Unknown,
            Some(p) => match p.status.as_str() {
                "pending" => PaymentStatus::Pending,
                "succeeded" => PaymentStatus::Succeeded {
                    preimage: p.preimage.as_deref().and_then(|h| h.parse::<Preimage>().ok()),
                },
                _ => PaymentStatus::Failed,
            },
        }
    }

    /// The HTLC output as the chain source sees it now (`None`: the source failed).
    async fn htlc_status(&self, outpoint: OutPoint, spk: &ScriptBuf) -> Option<HtlcStatus> {
        let history = match self.inner.chain.script_history(spk).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%outpoint, error = %e, "cannot check the htlc before paying");
                return None;
            }
        };
        let Some(h) = history.iter().find(|h| h.tx.compute_txid() == outpoint.txid) else {
            return Some(HtlcStatus::Missing);
        };
        let value_sat = h.tx.output.get(outpoint.vout as usize)?.value.to_sat();
        if history.iter().any(|h| h.tx.input.iter().any(|i| i.previous_output == outpoint)) {
            return Some(HtlcStatus::Spent);
        }
        Some(HtlcStatus::Unspent { value_sat, confirmed_height: h.status.height() })
    }

    /// Feeds one event and carries out what follows (including events the actions produce).
    /// `Ok(false)`: persisting failed, the rest was not carried out.
    async fn feed(&self, st: &mut State, id: SwapId, event: Event) -> Result<bool, String> {
        let ctx = st.ctx;
        let actions = {
            let Some(active) = st.swaps.get_mut(&id) else {
                return Err("unknown swap".into());
            };
            let mut rng = rand::rngs::OsRng;
            match &mut active.machine {
                Machine::Buyer(b) => b.handle(event, &ctx, &mut rng),
                Machine::Seller(s) => s.handle(event, &ctx, &mut rng),
            }
            .map_err(|e| e.to_string())?
        };
        Ok(self.carry_out(st, id, actions).await)
    }

    /// Carries out `actions` in order, then the events they produced, until quiet. `false` when
    /// persisting failed (nothing after it was done).
    async fn carry_out(&self, st: &mut State, id: SwapId, actions: Vec<Action>) -> bool {
        let mut queue: VecDeque<Vec<Action>> = VecDeque::from([actions]);
        while let Some(actions) = queue.pop_front() {
            let mut followups = Vec::new();
            for action in actions {
                match self.act(st, id, action).await {
                    Ok(Some(event)) => followups.push(event),
                    Ok(None) => {}
                    Err(Stop) => {
                        // Persisting failed: nothing after it may happen.
                        return false;
                    }
                }
            }
            for event in followups {
                let ctx = st.ctx;
                let Some(active) = st.swaps.get_mut(&id) else { return true };
                let mut rng = rand::rngs::OsRng;
                let result = match &mut active.machine {
                    Machine::Buyer(b) => b.handle(event, &ctx, &mut rng),
                    Machine::Seller(s) => s.handle(event, &ctx, &mut rng),
                };
                match result {
                    Ok(next) => queue.push_back(next),
                    Err(e) => tracing::debug!(swap = %id, error = %e, "follow-up event refused"),
                }
            }
        }
        true
    }

    async fn act(&self, st: &mut State, id: SwapId, action: Action) -> Result<Option<Event>, Stop> {
        let Some(active) = st.swaps.get_mut(&id) else { return Ok(None) };
        match action {
            Action::Persist => {
                let now = now_secs();
                let rec = match active.machine.record(now) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(swap = %id, error = %e, "cannot encode swap record");
                        return Err(Stop);
                    }
                };
                if let Err(e) = blocking_store(|| self.inner.store.put_swap(&rec)) {
                    tracing::error!(swap = %id, error = %e, "cannot persist swap");
                    return Err(Stop);
                }
                tracing::debug!(swap = %id, state = %rec.state, "persisted");
                Ok(None)
            }
            Action::Send(env) => {
                let peer = active.machine.peer().to_string();
                let relays = active.machine.relays();
                let Ok(pk) = NostrPublicKey::from_hex(&peer) else {
                    tracing::error!(swap = %id, "peer key does not parse");
                    return Ok(None);
                };
                if let Err(e) = self.inner.transport.send(&pk, &relays, &env).await {
                    tracing::warn!(swap = %id, error = %e, "cannot send swap message");
                }
                Ok(None)
            }
            Action::CreateInvoice { payment_hash, amount_msat, expiry_secs, description } => {
                match self
                    .inner
                    .lightning
                    .receive_for_hash(payment_hash, amount_msat, expiry_secs, &description)
                    .await
                {
                    Ok(invoice) => Ok(Some(Event::InvoiceCreated { invoice })),
                    Err(e) => {
                        tracing::error!(swap = %id, error = %e, "cannot create the swap invoice");
                        Ok(None)
                    }
                }
            }
            Action::FundHtlc { script_pubkey, amount_sat } => {
                // Funded with the other swaps of this loop iteration (`flush_funding`).
                st.funding_queue.push((id, script_pubkey, amount_sat));
                Ok(None)
            }
            Action::Broadcast { tx, purpose } => {
                self.broadcast(id, &tx, purpose).await;
                Ok(None)
            }
            Action::WatchHtlc { script_pubkey } => {
                if !active.watch.contains(&script_pubkey) {
                    active.watch.push(script_pubkey);
                }
                Ok(None)
            }
            Action::PayInvoice { invoice, max_total_cltv_expiry_delta, attempt, .. } => {
                let hash = active.machine.payment_hash();
                match self.inner.lightning.pay(&invoice, max_total_cltv_expiry_delta).await {
                    Ok(PayOutcome::Started) | Ok(PayOutcome::AlreadyPending) => Ok(None),
                    Ok(PayOutcome::AlreadySucceeded(preimage)) => {
                        Ok(Some(Event::PaymentSucceeded { preimage }))
                    }
                    Err(e @ LightningError::Invalid { .. }) => {
                        Ok(Some(Event::PaymentFailed { attempt, reason: e.to_string() }))
                    }
                    // The send failed: unless the node says a payment for the hash is in flight
                    // or done (an HTLC went out after all), nothing was sent and the buyer
                    // retries without counting it as a failed payment (a peer reconnecting).
                    Err(e) => Ok(Some(match hash.map(|h| self.payment_status(h)) {
                        Some(PaymentStatus::Pending) => {
                            tracing::warn!(swap = %id, error = %e, "send reported an error but the payment is in flight");
                            return Ok(None);
                        }
                        Some(PaymentStatus::Succeeded { preimage: Some(preimage) }) => {
                            Event::PaymentSucceeded { preimage }
                        }
                        _ => Event::PaymentNotSent { attempt, reason: e.to_string() },
                    })),
                }
            }
            Action::CheckPayment { payment_hash } => Ok(Some(Event::PaymentStatus {
                payment_hash,
                status: self.payment_status(payment_hash),
            })),
            Action::CheckHtlc { outpoint, script_pubkey } => Ok(self
                .htlc_status(outpoint, &script_pubkey)
                .await
                .map(|status| Event::HtlcChecked { outpoint, status })),
            Action::ClaimPayment { payment_hash, preimage, amount_msat } => {
                if let Err(e) =
                    self.inner.lightning.claim_for_hash(payment_hash, amount_msat, &preimage).await
                {
                    tracing::error!(swap = %id, error = %e, "cannot claim the held payment");
                }
                Ok(None)
            }
            Action::FailPayment { payment_hash } => {
                if let Err(e) = self.inner.lightning.fail_for_hash(payment_hash).await {
                    tracing::warn!(swap = %id, error = %e, "cannot fail the held payment");
                }
                Ok(None)
            }
            Action::Notify(notification) => {
                tracing::info!(swap = %id, notification = ?notification, "swap progress");
                let value = serde_json::to_value(&notification).unwrap_or_default();
                let seq = blocking_store(|| self.inner.store.append_swap_event(&id, &value))
                    .unwrap_or_else(|e| {
                        tracing::warn!(swap = %id, error = %e, "cannot log swap event");
                        0
                    });
                // No subscriber is fine.
                let _ = self.inner.notifications.send(SwapNotification {
                    swap_id: id,
                    seq,
                    notification,
                });
                Ok(None)
            }
        }
    }

    /// Funds every queued `FundHtlc` in one transaction and feeds each swap its `FundingBuilt`
    /// (with its own output index). When the batch cannot be built, each swap is tried alone.
    async fn flush_funding(&self, st: &mut State) {
        let queued: Vec<(SwapId, ScriptBuf, u64)> = std::mem::take(&mut st.funding_queue)
            .into_iter()
            .filter(|(id, _, _)| {
                // Only swaps still waiting for their funding (an abort meanwhile drops its output).
                st.swaps.get(id).is_some_and(|a| {
                    matches!(&a.machine, Machine::Seller(s) if matches!(s.state, SellerState::Accepted { .. }))
                })
            })
            .collect();
        if queued.is_empty() {
            return;
        }
        if let Err(e) = self.sync_wallet().await {
            tracing::debug!(error = %e, "wallet sync before funding failed");
        }
        // Build, broadcast and apply under the wallet's spend guard (feeding FundingBuilt carries
        // out the swap's Broadcast action).
        let wallet = Arc::clone(&self.inner.wallet);
        let _spending = wallet.spend_guard().await;
        let rate = st.ctx.fee_rate;
        let build = |batch: &[(SwapId, ScriptBuf, u64)]| {
            let outputs: Vec<(ScriptBuf, Amount)> = batch
                .iter()
                .map(|(_, spk, amount)| (spk.clone(), Amount::from_sat(*amount)))
                .collect();
            self.inner.wallet.build_funding_tx(&outputs, rate)
        };
        let mut results: Vec<(SwapId, Event)> = Vec::new();
        match build(&queued) {
            Ok(f) => {
                if queued.len() > 1 {
                    tracing::info!(
                        swaps = queued.len(),
                        txid = %f.tx.compute_txid(),
                        fee_sat = f.fee.to_sat(),
                        "funding several swaps in one transaction"
                    );
                }
                for ((id, _, _), vout) in queued.iter().zip(f.vouts.iter()) {
                    results.push((*id, Event::FundingBuilt { tx: f.tx.clone(), vout: *vout }));
                }
            }
            Err(e) if queued.len() > 1 => {
                tracing::warn!(swaps = queued.len(), error = %e, "batch funding failed; funding each swap alone");
                // One at a time: each is broadcast and applied before the next is built.
                for item in &queued {
                    let event = match build(std::slice::from_ref(item)) {
                        Ok(f) => match f.vouts.first() {
                            Some(vout) => Event::FundingBuilt { tx: f.tx, vout: *vout },
                            None => Event::FundingFailed { reason: "no output".into() },
                        },
                        Err(e) => Event::FundingFailed { reason: e.to_string() },
                    };
                    if let Err(e) = self.feed(st, item.0, event).await {
                        tracing::warn!(swap = %item.0, error = %e, "funding refused");
                    }
                }
            }
            Err(e) => {
                for (id, _, _) in &queued {
                    results.push((*id, Event::FundingFailed { reason: e.to_string() }));
                }
            }
        }
        for (id, event) in results {
            if let Err(e) = self.feed(st, id, event).await {
                tracing::warn!(swap = %id, error = %e, "funding refused");
            }
        }
    }

    async fn broadcast(&self, id: SwapId, tx: &Transaction, purpose: TxPurpose) {
        match self.inner.chain.broadcast(tx).await {
            Ok(txid) => {
                tracing::info!(swap = %id, %txid, purpose = ?purpose, "broadcast");
                if let Err(e) = self.inner.wallet.apply_unconfirmed(tx) {
                    tracing::warn!(swap = %id, error = %e, "wallet did not record the transaction");
                }
            }
            Err(e) => {
                tracing::warn!(swap = %id, purpose = ?purpose, error = %e, "broadcast failed");
            }
        }
    }
}

/// Most incoming messages handled before the queued fundings are carried out.
const MAX_BATCH: usize = 32;

/// Persisting failed: the rest of the actions must not run.
struct Stop;

async fn recv_opt<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn fee_rate(chain: &dyn ChainSource, wallet: &LooperWallet) -> FeeRate {
    let rate =
        chain.fee_rate(CLAIM_FEE_TARGET_BLOCKS).await.unwrap_or(FeeRate::from_sat_per_vb_u32(2));
    wallet.capped(rate)
}

/// Sats kept back from an offer's maximum for the funding transaction's fee.
const FUNDING_FEE_RESERVE_SAT: u64 = 2_000;

/// The offer as far as `spendable_sat` can fund it: `max_amount_sat` lowered to what the wallet
/// holds (less [`FUNDING_FEE_RESERVE_SAT`]); `None` when it cannot fund `min_amount_sat`.
fn fundable_offer(mut offer: Offer, spendable_sat: u64) -> Option<Offer> {
    let fundable = spendable_sat.saturating_sub(FUNDING_FEE_RESERVE_SAT);
    if fundable < offer.min_amount_sat {
        return None;
    }
    offer.max_amount_sat = offer.max_amount_sat.min(fundable);
    Some(offer)
}

#[cfg(test)]
mod offer_funding_tests {
    use super::*;

    fn offer(min: u64, max: u64) -> Offer {
        let json = serde_json::json!({
            "v": 1, "offer_id": "t", "network": "regtest", "direction": "loop_out",
            "min_amount_sat": min, "max_amount_sat": max, "fee_base_sat": 0, "fee_ppm": 0,
            "funding_fee_sat": 0, "min_confirmations": 1, "timeout_delta": 144,
            "claim_margin": 20, "invoice_expiry_secs": 3600,
            "ln_node_id": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", "relays": [], "expires_at": 1
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn offer_follows_the_wallet() {
        assert!(fundable_offer(offer(10_000, 100_000), 11_000).is_none());
        assert_eq!(fundable_offer(offer(10_000, 100_000), 52_000).unwrap().max_amount_sat, 50_000);
        assert_eq!(
            fundable_offer(offer(10_000, 100_000), 10_000_000).unwrap().max_amount_sat,
            100_000
        );
    }
}
