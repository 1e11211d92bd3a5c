//! A buyer and a seller node, each the node's real [`Engine`](looper_node::engine::Engine) in run mode over its real
//! [`NostrTransport`] (real relays on 127.0.0.1), with the chain and Lightning simulated by the
//! [`World`]: a driver task delivers Lightning events and payments and mines
//! a block every [`PairOptions::block_interval`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bitcoin::secp256k1::rand::{thread_rng, Rng};
use bitcoin::Network;
use looper_node::engine::io::SwapTransport;
use looper_node::engine::EngineConfig;
use looper_node::nostr::{
    EventId, Incoming, Keys as NostrKeys, MemoryProcessedEvents, NostrTransport, OfferFilter,
    PublicKey, SendOptions, TransportConfig, TransportError,
};
use looper_node::store::SwapStore;
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::messages::{Envelope, Message, Offer};
use looper_protocol::seller::{LoopInLimits, SellerPolicy};
use looper_protocol::swap::TxPurpose;
use looper_protocol::SwapId;
use nostr_sdk::Keys;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::fakes::{wallet_script, InvoiceTamper};
use crate::node::{sim_config, sim_offer, SimNode};
use crate::world::{lock, SharedWorld, World};

/// The buyer's node index.
pub const BUYER: usize = 0;
/// The seller's node index.
pub const SELLER: usize = 1;

/// Errors of the pair.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A transport failed.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// An engine failed.
    #[error("engine: {0}")]
    Engine(#[from] looper_node::engine::EngineError),
    /// The seller's block list refused a change.
    #[error("block list: {0}")]
    BlockList(#[from] looper_node::engine::BlockListError),
    /// A bounded wait ran out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// How the run is set up (the `mock_*` fields are fault-injection mocks).
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// The relays both nodes use.
    pub relays: Vec<String>,
    /// The buyer finds the offer on the relays (else it gets it out of band).
    pub discover: bool,
    /// Amount of the swap.
    pub amount_sat: u64,
    /// The buyer's limits.
    pub buyer_policy: BuyerPolicy,
    /// The seller's policy.
    pub seller_policy: SellerPolicy,
    /// Time between blocks.
    pub block_interval: Duration,
    /// Clock seconds per block.
    pub block_secs: u64,
    /// Seller mock: what its Lightning node does to its invoices.
    pub mock_invoice: Option<InvoiceTamper>,
    /// Seller mock: sats its wallet keeps back from each HTLC.
    pub mock_short_funding_sat: u64,
    /// Seller mock: its `swap_accept` names another HTLC script.
    pub mock_wrong_htlc_script: bool,
    /// Wire mock: every message of both parties is sent twice.
    pub mock_duplicate: bool,
    /// Wire mock: every message of both parties is held a random 0-300 ms (they overtake).
    pub mock_reorder: bool,
    /// Buyer mock: its payment spends this many blocks in flight.
    pub mock_payment_delay_blocks: u32,
    /// The seller's offer asks for this prepay.
    pub prepay_sat: Option<u64>,
    /// The seller serves its offer from its configuration with the automatic prepay
    /// (`seller.prepay_sat = "auto"`): priced from the fee rate and republished when it moves.
    pub auto_prepay: bool,
    /// The seller's budget for capital locked in unpaid HTLCs.
    pub seller_max_unpaid_locked_sat: Option<u64>,
    /// The seller drops the buyer's requests (the key of the buyer's first swap is on the block
    /// list: a buyer talks to a seller with a key of each swap).
    pub seller_blocks_buyer: bool,
    /// The seller blocks the key of the buyer's first swap at runtime (through
    /// [`Engine::block_peer`], as the API does) before the buyer takes the offer.
    ///
    /// [`Engine::block_peer`]: looper_node::engine::Engine::block_peer
    pub seller_blocks_buyer_at_runtime: bool,
    /// What the seller's Lightning node can receive, msat (default: plenty).
    pub seller_inbound_msat: Option<u64>,
    /// The seller's offer asks for this NIP-13 proof of work.
    pub pow_difficulty: Option<u8>,
    /// Seller mock: once it sent `swap_accept` it never funds and says nothing more (a no-show).
    pub mock_seller_vanishes_after_accept: bool,
    /// Blocks are full of transactions paying this rate (sat/vB): cheaper ones wait.
    pub mine_min_fee_rate_sat_vb: u64,
    /// Loop in: the buyer (the claimer) publishes a loop-in offer and the seller (the locker)
    /// finds it and takes it ([`Engine::take_loop_in_offer`]); the nodes keep their money
    /// roles. The seller-side mocks stay the seller's.
    ///
    /// [`Engine::take_loop_in_offer`]: looper_node::engine::Engine::take_loop_in_offer
    pub loop_in: bool,
    /// How often the buyer's engine polls the chain (`None`: the sim's 50 ms).
    pub buyer_chain_poll: Option<Duration>,
}

impl PairOptions {
    /// Honest defaults over `relays`.
    pub fn new(relays: Vec<String>) -> PairOptions {
        PairOptions {
            relays,
            discover: true,
            amount_sat: 200_000,
            buyer_policy: BuyerPolicy::default(),
            seller_policy: SellerPolicy::default(),
            block_interval: Duration::from_millis(150),
            block_secs: 2,
            mock_invoice: None,
            mock_short_funding_sat: 0,
            mock_wrong_htlc_script: false,
            mock_duplicate: false,
            mock_reorder: false,
            mock_payment_delay_blocks: 0,
            prepay_sat: None,
            auto_prepay: false,
            seller_max_unpaid_locked_sat: None,
            seller_blocks_buyer: false,
            seller_blocks_buyer_at_runtime: false,
            seller_inbound_msat: None,
            pow_difficulty: None,
            mock_seller_vanishes_after_accept: false,
            mine_min_fee_rate_sat_vb: 0,
            loop_in: false,
            buyer_chain_poll: None,
        }
    }
}

/// A node's transport with the wire mocks of [`PairOptions`] (fault injection): sends twice,
/// holds messages a random moment, or rewrites the HTLC script of a `swap_accept`.
pub struct MockWireTransport {
    inner: NostrTransport,
    duplicate: bool,
    reorder: bool,
    wrong_htlc_script: bool,
    /// Sends nothing after a `swap_accept` (set by it).
    silent_after_accept: Option<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl SwapTransport for MockWireTransport {
    fn public_key(&self) -> PublicKey {
        self.inner.public_key()
    }
    async fn add_key(&self, keys: &NostrKeys) -> Result<(), TransportError> {
        self.inner.add_key(keys.clone()).await
    }
    async fn remove_key(&self, key: &PublicKey) {
        self.inner.remove_key(key).await;
    }
    fn incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        self.inner.incoming()
    }
    fn ack(&self, event_id: &EventId) -> Result<bool, TransportError> {
        self.inner.ack(event_id)
    }
    async fn send(
        &self,
        from: &PublicKey,
        peer: &PublicKey,
        relays: &[String],
        envelope: &Envelope,
    ) -> Result<(), TransportError> {
        let opts = SendOptions { from: Some(*from), ..SendOptions::default() };
        if let Some(silent) = &self.silent_after_accept {
            if silent.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            if matches!(envelope.body, Message::SwapAccept(_)) {
                silent.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let mut env = envelope.clone();
        if let (true, Message::SwapAccept(a)) = (self.wrong_htlc_script, &mut env.body) {
            a.htlc_script_pubkey = wallet_script(9, 9);
        }
        let copies = if self.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if self.reorder {
                let (t, peer, relays, env) =
                    (self.inner.clone(), *peer, relays.to_vec(), env.clone());
                let delay = Duration::from_millis(thread_rng().gen_range(0..300));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = t.send_with(&peer, &relays, &env, opts).await;
                });
            } else {
                self.inner.send_with(peer, relays, &env, opts).await?;
            }
        }
        Ok(())
    }
    async fn send_with_pow(
        &self,
        from: &PublicKey,
        peer: &PublicKey,
        relays: &[String],
        envelope: &Envelope,
        pow: u8,
    ) -> Result<(), TransportError> {
        // A buyer's messages to a proof-of-work seller: the wire mocks leave them alone.
        SwapTransport::send_with_pow(&self.inner, from, peer, relays, envelope, pow).await
    }
    fn set_unmined_expected(&self, expected: bool) {
        self.inner.set_unmined_expected(expected);
    }
    async fn publish_offer(&self, offer: &Offer) -> Result<(), TransportError> {
        self.inner.publish_offer(offer).await.map(|_| ())
    }
    async fn withdraw_offer(&self, offer_id: &str) -> Result<(), TransportError> {
        self.inner.withdraw_offer(offer_id).await
    }
}

/// The two running nodes.
pub struct Pair {
    /// The shared world.
    pub world: SharedWorld,
    /// The buyer.
    pub buyer: SimNode,
    /// The seller.
    pub seller: SimNode,
    /// The buyer's transport.
    pub buyer_t: NostrTransport,
    /// The seller's transport.
    pub seller_t: NostrTransport,
    /// The offer taken.
    pub offer: Offer,
    /// The buyer's swap.
    pub swap_id: SwapId,
    stops: Vec<(watch::Sender<bool>, JoinHandle<()>)>,
    buyer_stop: Option<oneshot::Sender<()>>,
    seller_stop: Option<oneshot::Sender<()>>,
    runs: Vec<JoinHandle<()>>,
    buyer_run: Option<JoinHandle<()>>,
    /// The buyer's identity (a restarted buyer connects with it again).
    buyer_keys: Keys,
    /// The seller's identity.
    seller_keys: Keys,
    relays: Vec<String>,
}

/// The Nostr key the buyer's swap of key index `index` talks to the seller with
/// (`looper_node::seed::swap_nostr_secret_key` of the buyer's swap master).
///
/// # Errors
/// The key cannot be derived (an index of 2^31 or more).
pub fn buyer_swap_key(index: u32) -> Result<PublicKey, PairError> {
    let master = crate::node::master(BUYER)?;
    let secret = looper_node::seed::swap_nostr_secret_key(&master, index)
        .map_err(|e| PairError::Other(e.to_string()))?;
    let secret = nostr_sdk::SecretKey::from_slice(&secret.secret_bytes())
        .map_err(|e| PairError::Other(e.to_string()))?;
    Ok(Keys::new(secret).public_key())
}

/// A Nostr transport for a test node, acknowledging by hand as looper-node does.
///
/// # Errors
/// The transport does not connect.
pub async fn transport(relays: &[String]) -> Result<NostrTransport, PairError> {
    transport_with(&Keys::generate(), relays).await
}

/// As [`transport`], with the identity `keys`.
///
/// # Errors
/// The transport does not connect.
pub async fn transport_with(keys: &Keys, relays: &[String]) -> Result<NostrTransport, PairError> {
    let mut c = TransportConfig::new(keys.secret_key().to_secret_bytes(), relays.to_vec());
    c.retry_interval = Duration::from_secs(1);
    c.fetch_timeout = Duration::from_secs(3);
    c.send_timeout = Duration::from_secs(10);
    c.manual_ack = true;
    Ok(NostrTransport::connect(c, Arc::new(MemoryProcessedEvents::new())).await?)
}

/// The seller's offer of the conformance runs.
pub fn offer(world: &SharedWorld, relays: Vec<String>) -> Offer {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let w = lock(world);
    // Valid for the relay (wall clock) and the state machines (world clock).
    sim_offer("conformance", w.ln_node_id(SELLER), relays, wall.max(w.now) + 86_400 * 365)
}

fn config(policy: SellerPolicy) -> EngineConfig {
    EngineConfig { seller_policy: policy, ..sim_config() }
}

impl Pair {
    /// Starts both nodes, publishes the seller's offer, lets the buyer find it (or take it out
    /// of band) and take it.
    ///
    /// # Errors
    /// A transport or engine that does not start; no offer found.
    pub async fn start(o: PairOptions) -> Result<Pair, PairError> {
        let world =
            World::shared(2, &[wallet_script(BUYER, 0), wallet_script(SELLER, 0)], 50_000_000);
        {
            let mut w = lock(&world);
            w.block_secs = o.block_secs;
            w.payment_delay[BUYER] = o.mock_payment_delay_blocks;

            if let Some(inbound) = o.seller_inbound_msat {
                w.ln_inbound_msat[SELLER] = inbound;
            }
            if o.loop_in {
                // The locker checks the offer it found against its clock: the relay's copy
                // expires an hour after it was published, by the wall clock.
                w.now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(w.now);
            }
            w.mine();
            w.mine_min_fee_rate_sat_vb = o.mine_min_fee_rate_sat_vb;
        }
        let seller_keys = Keys::generate();
        let seller_t = transport_with(&seller_keys, &o.relays).await?;
        let buyer_keys = Keys::generate();
        let buyer_t = transport_with(&buyer_keys, &o.relays).await?;
        let wire = |t: &NostrTransport| -> Arc<dyn SwapTransport> {
            Arc::new(MockWireTransport {
                inner: t.clone(),
                duplicate: o.mock_duplicate,
                reorder: o.mock_reorder,
                wrong_htlc_script: false,
                silent_after_accept: None,
            })
        };
        let seller_wire: Arc<dyn SwapTransport> = Arc::new(MockWireTransport {
            inner: seller_t.clone(),
            duplicate: o.mock_duplicate,
            reorder: o.mock_reorder,
            wrong_htlc_script: o.mock_wrong_htlc_script,
            silent_after_accept: o
                .mock_seller_vanishes_after_accept
                .then(|| std::sync::atomic::AtomicBool::new(false)),
        });
        let mut seller_config = config(o.seller_policy);
        seller_config.max_unpaid_locked_sat = o.seller_max_unpaid_locked_sat;
        let mut published = offer(&world, o.relays.clone());
        if o.loop_in {
            // The maker is the buyer: its node is the offer's.
            published.offer_id = "conformance-in".into();
            published.direction = looper_protocol::SwapDirection::LoopIn;
            published.ln_node_id = lock(&world).ln_node_id(BUYER);
        }
        published.prepay_sat = o.prepay_sat;
        published.pow_difficulty = o.pow_difficulty;
        if o.auto_prepay {
            // Served: the engine prices the prepay and publishes it when it starts.
            seller_config.seller_offer = Some(published.clone());
            seller_config.auto_prepay = true;
        }
        if o.seller_blocks_buyer {
            seller_config.blocked_peers = vec![buyer_swap_key(0)?.to_hex()];
        }
        let seller = SimNode::start(&world, SELLER, seller_wire, seller_config, 1).await?;
        if o.seller_blocks_buyer_at_runtime {
            seller.engine.block_peer(buyer_swap_key(0)?, Some("blocked at runtime"))?;
        }
        let mut buyer_config = config(SellerPolicy::default());
        if let Some(every) = o.buyer_chain_poll {
            buyer_config.chain_poll = every;
        }
        let buyer = SimNode::start(&world, BUYER, wire(&buyer_t), buyer_config, 2).await?;
        if let Ok(mut t) = seller.lightning.tamper.lock() {
            *t = o.mock_invoice;
        }
        seller
            .wallet
            .shortchange_sat
            .store(o.mock_short_funding_sat, std::sync::atomic::Ordering::Relaxed);
        seller
            .wallet
            .refuse_funding
            .store(o.mock_seller_vanishes_after_accept, std::sync::atomic::Ordering::Relaxed);
        if o.loop_in {
            buyer.engine.publish_offer(&published).await?;
        } else if o.auto_prepay {
            // What `Engine::run` does first: a poll (the fee estimates), the offer priced and
            // published.
            seller.engine.poll().await;
            seller.engine.refresh_served_offer().await;
        } else {
            seller.engine.publish_offer(&published).await?;
        }
        // The taker finds the maker's offer: the buyer a loop-out one, the seller a loop-in one.
        let (taker_t, maker_t) =
            if o.loop_in { (&seller_t, &buyer_t) } else { (&buyer_t, &seller_t) };
        let taken = if o.discover {
            let want = OfferFilter {
                network: Network::Regtest,
                amount_sat: o.amount_sat,
                sellers: vec![],
                direction: if o.loop_in {
                    looper_protocol::SwapDirection::LoopIn
                } else {
                    looper_protocol::SwapDirection::LoopOut
                },
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let found = taker_t.discover_offers(&want).await?;
                if let Some(f) = found.first() {
                    if f.seller != maker_t.public_key() {
                        return Err(PairError::Other("discovered another maker".into()));
                    }
                    break f.offer.clone();
                }
                if Instant::now() > deadline {
                    return Err(PairError::Timeout("the offer on the relays".into()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            published
        };
        let mut pair = Pair {
            world,
            buyer,
            seller,
            buyer_t,
            seller_t,
            offer: taken.clone(),
            swap_id: SwapId([0; 32]),
            stops: Vec::new(),
            buyer_stop: None,
            seller_stop: None,
            runs: Vec::new(),
            buyer_run: None,
            buyer_keys,
            seller_keys,
            relays: o.relays.clone(),
        };
        pair.run_engines();
        pair.spawn_driver(o.block_interval);
        if o.loop_in {
            let buyer_pk = pair.buyer_t.public_key();
            let limits = LoopInLimits {
                max_total_fee_sat: 50_000,
                max_timeout_delta: 200,
                ..LoopInLimits::default()
            };
            pair.swap_id = pair
                .seller
                .engine
                .take_loop_in_offer(taken, buyer_pk, o.amount_sat, limits, None)
                .await?;
        } else {
            let seller_pk = pair.seller_t.public_key();
            pair.swap_id = pair
                .buyer
                .engine
                .take_offer(taken, seller_pk, o.amount_sat, o.buyer_policy)
                .await?;
        }
        Ok(pair)
    }

    fn run_engines(&mut self) {
        for idx in [BUYER, SELLER] {
            let (tx, rx) = oneshot::channel::<()>();
            let node = if idx == BUYER { &self.buyer } else { &self.seller };
            let run = tokio::spawn(node.engine.clone().run(async move {
                let _ = rx.await;
            }));
            if idx == BUYER {
                self.buyer_run = Some(run);
                self.buyer_stop = Some(tx);
            } else {
                self.runs.push(run);
                self.seller_stop = Some(tx);
            }
        }
    }

    /// The seller's identity keys (a test may speak as the seller beside its node).
    pub fn seller_keys(&self) -> &Keys {
        &self.seller_keys
    }

    /// The buyer's process ends: its engine stops (waited for), its transport disconnects.
    /// [`Pair::restart_buyer`] starts it again.
    pub async fn kill_buyer(&mut self) {
        self.stop_buyer();
        if let Some(run) = self.buyer_run.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
        }
        self.buyer_t.shutdown().await;
    }

    /// The buyer's process starts again as after a restore from its seed (killed first if it
    /// runs): a new transport (the same identity, no processed events: every stored gift wrap
    /// comes again) and a new engine over its store. The engine's resume has the transport
    /// listen to the open swaps' own keys again.
    ///
    /// # Errors
    /// The transport or the engine does not start.
    pub async fn restart_buyer(&mut self) -> Result<(), PairError> {
        if self.buyer_run.is_some() {
            self.kill_buyer().await;
        }
        self.buyer_t = transport_with(&self.buyer_keys, &self.relays).await?;
        self.buyer.transport = Arc::new(self.buyer_t.clone());
        self.buyer.restart().await?;
        let (tx, rx) = oneshot::channel::<()>();
        self.buyer_run = Some(tokio::spawn(self.buyer.engine.clone().run(async move {
            let _ = rx.await;
        })));
        self.buyer_stop = Some(tx);
        Ok(())
    }

    fn spawn_driver(&mut self, block_interval: Duration) {
        let (stop, mut stopped) = watch::channel(false);
        let world = Arc::clone(&self.world);
        let lns = [Arc::clone(&self.buyer.lightning), Arc::clone(&self.seller.lightning)];
        let task = tokio::spawn(async move {
            let mut acks: [Vec<(u64, oneshot::Receiver<()>)>; 2] = [Vec::new(), Vec::new()];
            let mut last_block = Instant::now();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                lock(&world).deliver_payments();
                for (i, ln) in lns.iter().enumerate() {
                    ln.pump(&mut acks[i]).await;
                }
                if last_block.elapsed() >= block_interval {
                    last_block = Instant::now();
                    lock(&world).mine();
                }
            }
        });
        self.stops.push((stop, task));
    }

    /// The buyer's node goes away (its engine stops, everything it would do is dropped).
    pub fn stop_buyer(&mut self) {
        if let Some(s) = self.buyer_stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = lock(&self.world).dead.get_mut(BUYER) {
            *d = true;
        }
    }

    /// The state name of the swap on `node` (`None` before the seller has it).
    pub async fn state(&self, node: usize) -> Option<String> {
        let n = if node == BUYER { &self.buyer } else { &self.seller };
        n.engine.swap_state(self.swap_id).await.map(|(s, _)| s)
    }

    /// Waits (bounded) until both sides of the swap are in one of `end` states.
    ///
    /// # Errors
    /// [`PairError::Timeout`] with the states reached.
    pub async fn wait_for(
        &self,
        buyer_end: &[&str],
        seller_end: &[&str],
        bound: Duration,
    ) -> Result<(), PairError> {
        let deadline = Instant::now() + bound;
        loop {
            let (b, s) = (self.state(BUYER).await, self.state(SELLER).await);
            let b_ok = buyer_end.is_empty() || b.as_deref().is_some_and(|b| buyer_end.contains(&b));
            let s_ok =
                seller_end.is_empty() || s.as_deref().is_some_and(|s| seller_end.contains(&s));
            if b_ok && s_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PairError::Timeout(format!(
                    "buyer {b:?} in {buyer_end:?} and seller {s:?} in {seller_end:?}; log: {:?}",
                    self.log_tail(30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The purposes of the transactions the swap broadcast: the funding, then the claims and
    /// refunds of both sides' event logs (seller first).
    pub fn purposes(&self) -> Vec<TxPurpose> {
        let mut out = Vec::new();
        // The funding is the seller's first broadcast (the engine logs claims and refunds).
        if lock(&self.world).broadcasts.iter().any(|(n, _)| *n == SELLER) {
            out.push(TxPurpose::Funding);
        }
        for node in [&self.seller, &self.buyer] {
            let events = node.store.inner.swap_events(&self.swap_id, 0).unwrap_or_default();
            for e in events {
                if e.event["event"] == "broadcast" {
                    if let Ok(p) = serde_json::from_value::<TxPurpose>(e.event["purpose"].clone()) {
                        if !out.contains(&p) {
                            out.push(p);
                        }
                    }
                }
            }
        }
        out
    }

    /// The last lines of the world's log.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let w = lock(&self.world);
        let mut tail: Vec<String> =
            w.log.iter().rev().filter(|l| !l.starts_with("mined")).take(n).cloned().collect();
        tail.reverse();
        tail
    }

    /// What the buyer paid and the seller was paid, in msat (settled payments).
    pub fn settled_msat(&self) -> u64 {
        let w = lock(&self.world);
        w.payments
            .values()
            .filter(|p| p.state == crate::world::PayState::Succeeded)
            .map(|p| p.amount_msat)
            .sum()
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for s in [self.buyer_stop.take(), self.seller_stop.take()].into_iter().flatten() {
            let _ = s.send(());
        }
        for (stop, task) in self.stops.drain(..) {
            let _ = stop.send(true);
            let _ = task.await;
        }
        for r in self.runs.drain(..).chain(self.buyer_run.take()) {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
        self.buyer_t.shutdown().await;
        self.seller_t.shutdown().await;
    }
}
