//! Legacy conformance engine (to go): a buyer engine and a seller engine (the protocol state machines behind the
//! node's Nostr transport) with a simulated chain and Lightning network shared by both parties.
//!
//! Each [`Engine`] owns its swap state machine and its [`NostrTransport`]; `Action::Send` goes
//! over the real transport to the peer's key, and messages arriving from the transport are fed
//! back as `Event::Message`. Everything else (chain, Lightning, virtual clock and tip) lives in a
//! [`World`] behind a mutex, advanced by [`drive`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bitcoin::bip32::Xpriv;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::rand::rngs::StdRng;
use bitcoin::secp256k1::rand::SeedableRng;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute::LockTime, Amount, FeeRate, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use looper_node::nostr::{Incoming, NostrTransport, PublicKey};
use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerState, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{Envelope, ErrorCode, ErrorMessage, Message, Offer};
use looper_protocol::seller::{SellerPolicy, SellerSwap};
use looper_protocol::swap::{
    Action, Context, Event, HtlcStatus, PaymentStatus, StateKind, TxPurpose,
};
use looper_protocol::{PaymentHash, SwapDirection, SwapId};
use tokio::sync::mpsc;

/// Start height of the simulated chain.
pub const START_HEIGHT: u32 = 1_000;

/// Errors of the conformance engines.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The shared world's mutex was poisoned by a panicking thread.
    #[error("world lock poisoned")]
    Poisoned,
    /// Key derivation failed.
    #[error("key derivation: {0}")]
    Keys(String),
    /// The buyer state machine refused to start.
    #[error("buyer start refused: {0}")]
    Start(String),
    /// A transport call failed.
    #[error("transport: {0}")]
    Transport(#[from] looper_node::nostr::TransportError),
    /// An invoice could not be built or parsed.
    #[error("invoice: {0}")]
    Invoice(String),
    /// The transport's incoming channel was already taken.
    #[error("incoming channel already taken")]
    NoIncoming,
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Which side of the swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Party {
    /// Pays Lightning, receives on-chain.
    Buyer,
    /// Locks on-chain, receives Lightning.
    Seller,
}

impl Party {
    fn index(self) -> usize {
        match self {
            Party::Buyer => 0,
            Party::Seller => 1,
        }
    }
}

/// The simulated chain, Lightning network and clock shared by both engines.
#[derive(Debug)]
pub struct World {
    /// Virtual time, tip and fee rate.
    pub ctx: Context,
    /// Unconfirmed transactions.
    pub mempool: Vec<Transaction>,
    /// Confirmed transactions with their height.
    pub confirmed: BTreeMap<Txid, (u32, Transaction)>,
    /// Every accepted broadcast, in order.
    pub broadcasts: Vec<(Party, TxPurpose, Txid)>,
    /// Events for a party coming from outside its engine (Lightning).
    pub pending: [VecDeque<Event>; 2],
    /// Lightning payments in flight: (height at which it reaches the seller, payment hash,
    /// amount in msat).
    pub in_flight: Vec<(u32, PaymentHash, u64)>,
    /// Payments the seller failed back.
    pub failed_back: u32,
    /// Extra copies sent by the duplicating wire mock.
    pub mock_duplicates_sent: u64,
    /// Batches of two or more envelopes the reordering wire mock released in reverse.
    pub mock_reversed_batches: u64,
    /// What the buyer paid, in msat.
    pub buyer_paid_msat: u64,
    /// What the seller received, in msat.
    pub seller_received_msat: u64,
    /// Swap messages sent by the engines to each party (index: [`Party`]).
    pub sent_to: [u64; 2],
    /// Swap messages each party has taken from its transport.
    pub received: [u64; 2],
    /// Encoded bytes of every swap message the engines sent.
    pub event_bytes: u64,
    /// Parties that are gone (their messages are no longer awaited).
    pub gone: [bool; 2],
    /// Free-form log.
    pub log: Vec<String>,
    ln_secret: SecretKey,
}

impl World {
    /// A fresh world at [`START_HEIGHT`], shared.
    pub fn shared() -> Result<SharedWorld, EngineError> {
        let ln_secret =
            SecretKey::from_slice(&[7; 32]).map_err(|e| EngineError::Keys(e.to_string()))?;
        Ok(Arc::new(Mutex::new(World {
            ctx: Context {
                now_secs: 1_800_000_000,
                tip_height: START_HEIGHT,
                fee_rate: FeeRate::from_sat_per_vb_u32(2),
            },
            mempool: Vec::new(),
            confirmed: BTreeMap::new(),
            broadcasts: Vec::new(),
            pending: [VecDeque::new(), VecDeque::new()],
            in_flight: Vec::new(),
            failed_back: 0,
            mock_duplicates_sent: 0,
            mock_reversed_batches: 0,
            buyer_paid_msat: 0,
            seller_received_msat: 0,
            sent_to: [0; 2],
            received: [0; 2],
            event_bytes: 0,
            gone: [false; 2],
            log: Vec::new(),
            ln_secret,
        })))
    }
}

/// The shared world.
pub type SharedWorld = Arc<Mutex<World>>;

/// Locks the shared world.
pub fn lock(world: &SharedWorld) -> Result<MutexGuard<'_, World>, EngineError> {
    world.lock().map_err(|_| EngineError::Poisoned)
}

impl World {
    fn all(&self) -> impl Iterator<Item = (&Transaction, Option<u32>)> {
        self.confirmed
            .values()
            .map(|(h, t)| (t, Some(*h)))
            .chain(self.mempool.iter().map(|t| (t, None)))
    }

    fn spender_of(&self, op: OutPoint) -> Option<(Transaction, Option<u32>)> {
        self.all()
            .find(|(t, _)| t.input.iter().any(|i| i.previous_output == op))
            .map(|(t, h)| (t.clone(), h))
    }

    fn output_exists(&self, op: OutPoint) -> bool {
        self.all().any(|(t, _)| t.compute_txid() == op.txid && (op.vout as usize) < t.output.len())
    }

    /// The ln node id of the simulated seller Lightning node.
    pub fn ln_node_id(&self) -> bitcoin::secp256k1::PublicKey {
        self.ln_secret.public_key(&Secp256k1::new())
    }

    /// The purposes of all accepted broadcasts, in order.
    pub fn purposes(&self) -> Vec<TxPurpose> {
        self.broadcasts.iter().map(|(_, p, _)| *p).collect()
    }

    fn broadcast(&mut self, party: Party, tx: Transaction, purpose: TxPurpose) {
        let txid = tx.compute_txid();
        if self.all().any(|(t, _)| t.compute_txid() == txid) {
            return;
        }
        if tx.input.iter().any(|i| self.spender_of(i.previous_output).is_some()) {
            self.log.push(format!("{party:?} {purpose:?} rejected: double spend"));
            return;
        }
        if purpose != TxPurpose::Funding
            && !tx.input.iter().all(|i| self.output_exists(i.previous_output))
        {
            self.log.push(format!("{party:?} {purpose:?} rejected: missing inputs"));
            return;
        }
        if purpose != TxPurpose::Funding && tx.lock_time.to_consensus_u32() > self.ctx.tip_height {
            self.log.push(format!("{party:?} {purpose:?} rejected: non-final"));
            return;
        }
        self.broadcasts.push((party, purpose, txid));
        self.mempool.push(tx);
    }

    /// Mines one block: confirms the mempool, advances time, delivers Lightning payments.
    pub fn mine(&mut self) {
        self.ctx.tip_height = self.ctx.tip_height.saturating_add(1);
        self.ctx.now_secs = self.ctx.now_secs.saturating_add(600);
        let h = self.ctx.tip_height;
        for tx in std::mem::take(&mut self.mempool) {
            self.confirmed.insert(tx.compute_txid(), (h, tx));
        }
        self.deliver_payments();
    }

    fn deliver_payments(&mut self) {
        let tip = self.ctx.tip_height;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|(at, _, _)| *at <= tip);
        self.in_flight = later;
        for (_, payment_hash, amount_msat) in due {
            self.pending[Party::Seller.index()]
                .push_back(Event::PaymentClaimable { payment_hash, amount_msat });
        }
    }

    /// The seller's invoice, with the tampering of `tamper` (a [`MockTamper`]) applied.
    fn make_invoice(
        &self,
        hash: PaymentHash,
        amount_msat: u64,
        expiry_secs: u32,
        tamper: Option<MockTamper>,
    ) -> Result<String, EngineError> {
        let secp = Secp256k1::new();
        let (mut hash, mut amount_msat, mut expiry) = (hash, amount_msat, u64::from(expiry_secs));
        let mut created = self.ctx.now_secs;
        let mut key = self.ln_secret;
        match tamper {
            Some(MockTamper::InvoiceHash) => hash = PaymentHash([0x99; 32]),
            Some(MockTamper::InvoiceAmount) => amount_msat += 1_000,
            Some(MockTamper::InvoiceExpired) => {
                expiry = 10;
                created -= 100;
            }
            Some(MockTamper::InvoicePayee) => {
                key = SecretKey::from_slice(&[8; 32])
                    .map_err(|e| EngineError::Keys(e.to_string()))?;
            }
            _ => {}
        }
        InvoiceBuilder::new(Currency::Regtest)
            .description("conformance".into())
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .payment_secret(PaymentSecret([42; 32]))
            .duration_since_epoch(Duration::from_secs(created))
            .min_final_cltv_expiry_delta(42)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(expiry))
            .build_signed(|h| secp.sign_ecdsa_recoverable(h, &key))
            .map(|i| i.to_string())
            .map_err(|e| EngineError::Invoice(e.to_string()))
    }
}

/// What a dishonest seller tampers with (fault-injection mock, the conformance counterpart of the
/// protocol simulation's `Tamper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockTamper {
    /// The broadcast funding transaction pays 1,000 sat less into the HTLC than agreed.
    FundingValue,
    /// `swap_accept` names another HTLC scriptPubKey.
    HtlcScript,
    /// The invoice commits to another payment hash.
    InvoiceHash,
    /// The invoice expired before it is sent.
    InvoiceExpired,
    /// The invoice asks 1 sat more than the quote.
    InvoiceAmount,
    /// The invoice is signed by another Lightning node.
    InvoicePayee,
}

/// Misbehaviour switches of an engine. The `mock_*` fields are fault-injection mocks: they make
/// the engine (or its simulated chain, Lightning node or wire) misbehave on purpose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Seller: refuse to co-sign claims.
    pub uncooperative: bool,
    /// Buyer: abort once the HTLC is funded.
    pub abort_when_funded: bool,
    /// Buyer: vanish once the seller accepted.
    pub vanish_after_accept: bool,
    /// Buyer: the route CLTV cap of its policy (default 500).
    pub max_route_cltv: Option<u32>,
    /// Seller mock: tamper with what the seller sends, broadcasts or invoices.
    pub mock_tamper: Option<MockTamper>,
    /// Buyer mock: blocks the buyer's Lightning payment spends in flight before it reaches the
    /// seller (0: it arrives with the next block).
    pub mock_payment_delay_blocks: u32,
    /// Wire mock: every envelope this engine sends is sent twice (two distinct gift wraps).
    pub mock_duplicate: bool,
    /// Wire mock: the envelopes of one step are held and released in reverse order.
    pub mock_reorder: bool,
}

/// The swap an engine runs.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Swap {
    /// The buyer side.
    Buyer(BuyerSwap),
    /// The seller side (none until a request for its offer arrives).
    Seller(Option<SellerSwap>),
}

/// One party: its swap state machine, its Nostr transport and a handle to the shared world.
pub struct Engine {
    /// Which side.
    pub party: Party,
    /// The swap.
    pub swap: Swap,
    /// The node's transport.
    pub transport: NostrTransport,
    rx: mpsc::Receiver<Incoming>,
    /// The swap's peer (set by the buyer at start, by the seller on the request it takes).
    pub peer: Option<PublicKey>,
    world: SharedWorld,
    rng: StdRng,
    offer: Option<Offer>,
    master: Xpriv,
    behaviour: Behaviour,
    watch: Vec<ScriptBuf>,
    seen: BTreeSet<String>,
    /// Errors this engine received (code), for the tests.
    pub errors_received: Vec<ErrorMessage>,
    /// Replies sent to strangers (recipient, code).
    pub stranger_replies: Vec<(PublicKey, ErrorCode)>,
    local: VecDeque<Event>,
    outbox: Vec<(PublicKey, Envelope)>,
}

fn master(tag: u8) -> Result<Xpriv, EngineError> {
    Xpriv::new_master(Network::Regtest, &[tag; 32]).map_err(|e| EngineError::Keys(e.to_string()))
}

fn p2tr(tag: u8) -> Result<ScriptBuf, EngineError> {
    let k = SwapKeys::derive(&master(tag)?, 0).map_err(|e| EngineError::Keys(e.to_string()))?;
    Ok(ScriptBuf::new_p2tr(&Secp256k1::new(), k.claim_pubkey(), None))
}

/// The seller's offer used by the conformance scenarios.
pub fn offer(world: &SharedWorld, id: &str, relays: Vec<String>) -> Result<Offer, EngineError> {
    let w = lock(world)?;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Offer {
        version: 1,
        offer_id: id.into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 5_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: w.ln_node_id(),
        ln_address: None,
        relays,
        pow_difficulty: None,
        // Valid both for the relay (wall clock) and the state machines (virtual clock).
        expires_at: wall.max(w.ctx.now_secs) + 86_400,
    })
}

impl Engine {
    fn new(
        party: Party,
        swap: Swap,
        transport: NostrTransport,
        world: SharedWorld,
        behaviour: Behaviour,
    ) -> Result<Self, EngineError> {
        let rx = transport.incoming().ok_or(EngineError::NoIncoming)?;
        Ok(Engine {
            party,
            swap,
            transport,
            rx,
            peer: None,
            world,
            rng: StdRng::seed_from_u64(if party == Party::Buyer { 2 } else { 1 }),
            offer: None,
            master: master(if party == Party::Buyer { 2 } else { 1 })?,
            behaviour,
            watch: Vec::new(),
            seen: BTreeSet::new(),
            errors_received: Vec::new(),
            stranger_replies: Vec::new(),
            local: VecDeque::new(),
            outbox: Vec::new(),
        })
    }

    /// A seller engine serving `offer` (already published or not).
    pub fn seller(
        transport: NostrTransport,
        world: SharedWorld,
        offer: Offer,
        behaviour: Behaviour,
    ) -> Result<Self, EngineError> {
        let mut e = Engine::new(Party::Seller, Swap::Seller(None), transport, world, behaviour)?;
        e.offer = Some(offer);
        Ok(e)
    }

    /// A buyer engine taking `offer` from `seller` for `amount_sat`; sends the swap request.
    pub async fn buyer(
        transport: NostrTransport,
        world: SharedWorld,
        seller: PublicKey,
        offer: Offer,
        amount_sat: u64,
        behaviour: Behaviour,
    ) -> Result<Self, EngineError> {
        let keys =
            SwapKeys::derive(&master(2)?, 0).map_err(|e| EngineError::Keys(e.to_string()))?;
        let start = BuyerStart {
            swap_id: SwapId([0xab; 32]),
            peer: seller.to_hex(),
            offer: offer.clone(),
            amount_sat,
            policy: BuyerPolicy {
                max_total_fee_sat: 50_000,
                max_route_cltv: behaviour.max_route_cltv.unwrap_or(500),
                min_confirmations: 1,
                ..BuyerPolicy::default()
            },
            claim_destination: p2tr(20)?,
            keys,
        };
        let ctx = lock(&world)?.ctx;
        let (swap, actions) =
            BuyerSwap::start(start, &ctx).map_err(|e| EngineError::Start(e.to_string()))?;
        let mut e = Engine::new(Party::Buyer, Swap::Buyer(swap), transport, world, behaviour)?;
        e.peer = Some(seller);
        e.offer = Some(offer);
        e.run(actions)?;
        e.flush().await?;
        Ok(e)
    }

    /// The swap's id, when there is a swap.
    pub fn swap_id(&self) -> Option<SwapId> {
        match &self.swap {
            Swap::Buyer(b) => Some(b.swap_id()),
            Swap::Seller(s) => s.as_ref().map(|s| s.swap_id()),
        }
    }

    /// Name of the current state (`-` when the seller has no swap yet).
    pub fn state_name(&self) -> &'static str {
        match &self.swap {
            Swap::Buyer(b) => b.state().name(),
            Swap::Seller(s) => s.as_ref().map(|s| s.state().name()).unwrap_or("-"),
        }
    }

    /// Whether the swap reached a final state (or the party is gone).
    pub fn finished(&self) -> bool {
        if self.is_gone() {
            return true;
        }
        match &self.swap {
            Swap::Buyer(b) => b.kind() != StateKind::Pending,
            Swap::Seller(s) => s.as_ref().is_some_and(|s| s.kind() != StateKind::Pending),
        }
    }

    fn is_gone(&self) -> bool {
        lock(&self.world).map(|w| w.gone[self.party.index()]).unwrap_or(true)
    }

    fn feed(&mut self, event: Event) -> Result<(), EngineError> {
        let ctx = lock(&self.world)?.ctx;
        let result = match &mut self.swap {
            Swap::Buyer(b) => b.handle(event, &ctx, &mut self.rng).map_err(|e| e.to_string()),
            Swap::Seller(Some(s)) => {
                s.handle(event, &ctx, &mut self.rng).map_err(|e| e.to_string())
            }
            Swap::Seller(None) => return Ok(()),
        };
        match result {
            Ok(actions) => self.run(actions),
            Err(e) => {
                lock(&self.world)?.log.push(format!("{:?} refused event: {e}", self.party));
                Ok(())
            }
        }
    }

    /// Carries out actions in order; sends are queued for [`Engine::flush`].
    fn run(&mut self, actions: Vec<Action>) -> Result<(), EngineError> {
        for action in actions {
            match action {
                Action::Persist => {}
                Action::Send(mut env) => {
                    if self.behaviour.mock_tamper == Some(MockTamper::HtlcScript) {
                        if let Message::SwapAccept(a) = &mut env.body {
                            a.htlc_script_pubkey = p2tr(33)?;
                        }
                    }
                    if let Some(peer) = self.peer {
                        self.outbox.push((peer, env));
                    }
                }
                Action::CreateInvoice { payment_hash, amount_msat, expiry_secs, .. } => {
                    let invoice = lock(&self.world)?.make_invoice(
                        payment_hash,
                        amount_msat,
                        expiry_secs,
                        self.behaviour.mock_tamper,
                    )?;
                    self.local.push_back(Event::InvoiceCreated { invoice });
                }
                Action::FundHtlc { script_pubkey, amount_sat } => {
                    let tx = Transaction {
                        version: Version::TWO,
                        lock_time: LockTime::ZERO,
                        input: vec![TxIn {
                            previous_output: OutPoint {
                                txid: Txid::from_byte_array([5; 32]),
                                vout: 0,
                            },
                            script_sig: ScriptBuf::new(),
                            sequence: Sequence::MAX,
                            witness: Witness::new(),
                        }],
                        output: vec![
                            TxOut { value: Amount::from_sat(50_000), script_pubkey: p2tr(11)? },
                            TxOut { value: Amount::from_sat(amount_sat), script_pubkey },
                        ],
                    };
                    self.local.push_back(Event::FundingBuilt { tx, vout: 1 });
                }
                Action::Broadcast { mut tx, purpose } => {
                    if purpose == TxPurpose::Funding
                        && self.behaviour.mock_tamper == Some(MockTamper::FundingValue)
                    {
                        if let Some(out) = tx.output.get_mut(1) {
                            out.value = out
                                .value
                                .checked_sub(Amount::from_sat(1_000))
                                .unwrap_or(Amount::ZERO);
                        }
                    }
                    lock(&self.world)?.broadcast(self.party, tx, purpose);
                }
                Action::WatchHtlc { script_pubkey } => {
                    if !self.watch.contains(&script_pubkey) {
                        self.watch.push(script_pubkey);
                    }
                }
                Action::PayInvoice { invoice, amount_msat, .. } => {
                    let inv: lightning_invoice::Bolt11Invoice =
                        invoice.parse().map_err(|e| EngineError::Invoice(format!("{e:?}")))?;
                    let hash = PaymentHash(inv.payment_hash().to_byte_array());
                    let mut w = lock(&self.world)?;
                    if !w.in_flight.iter().any(|(_, h, _)| *h == hash) && w.buyer_paid_msat == 0 {
                        let at = w.ctx.tip_height + self.behaviour.mock_payment_delay_blocks;
                        w.in_flight.push((at, hash, amount_msat));
                    }
                }
                Action::ClaimPayment { preimage, amount_msat, .. } => {
                    let mut w = lock(&self.world)?;
                    if w.seller_received_msat == 0 {
                        w.seller_received_msat = amount_msat;
                        w.buyer_paid_msat = amount_msat;
                        w.pending[Party::Buyer.index()]
                            .push_back(Event::PaymentSucceeded { preimage });
                    }
                }
                Action::FailPayment { payment_hash } => {
                    let mut w = lock(&self.world)?;
                    w.failed_back += 1;
                    // Failed back: the node reports it without naming the attempt.
                    w.pending[Party::Buyer.index()].push_back(Event::PaymentStatus {
                        payment_hash,
                        status: PaymentStatus::Failed,
                    });
                }
                Action::CheckPayment { payment_hash } => {
                    let mut w = lock(&self.world)?;
                    let status = match self.party {
                        Party::Buyer if w.buyer_paid_msat > 0 => PaymentStatus::Pending,
                        Party::Buyer if w.in_flight.iter().any(|(_, h, _)| *h == payment_hash) => {
                            PaymentStatus::Pending
                        }
                        Party::Buyer if w.failed_back > 0 => PaymentStatus::Failed,
                        Party::Seller if w.seller_received_msat > 0 => {
                            PaymentStatus::Succeeded { preimage: None }
                        }
                        _ => PaymentStatus::Unknown,
                    };
                    w.pending[self.party.index()]
                        .push_back(Event::PaymentStatus { payment_hash, status });
                }
                Action::CheckHtlc { outpoint, .. } => {
                    let mut w = lock(&self.world)?;
                    let found = w
                        .all()
                        .find(|(t, _)| t.compute_txid() == outpoint.txid)
                        .map(|(t, h)| (t.output.get(outpoint.vout as usize).map(|o| o.value), h));
                    let status = match found {
                        None | Some((None, _)) => HtlcStatus::Missing,
                        Some((Some(value), height)) => {
                            if w.spender_of(outpoint).is_some() {
                                HtlcStatus::Spent
                            } else {
                                HtlcStatus::Unspent {
                                    value_sat: value.to_sat(),
                                    confirmed_height: height,
                                }
                            }
                        }
                    };
                    w.pending[self.party.index()]
                        .push_back(Event::HtlcChecked { outpoint, status });
                }
                Action::Notify(n) => {
                    lock(&self.world)?.log.push(format!("{:?}: {n:?}", self.party))
                }
            }
        }
        Ok(())
    }

    /// Chain events for the watched scripts not yet reported.
    fn chain_events(&mut self) -> Result<Vec<Event>, EngineError> {
        let w = lock(&self.world)?;
        let mut events = Vec::new();
        for spk in &self.watch {
            let outputs: Vec<(OutPoint, u64, Option<u32>)> = w
                .all()
                .flat_map(|(t, h)| {
                    let txid = t.compute_txid();
                    t.output
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.script_pubkey == *spk)
                        .map(move |(v, o)| (OutPoint { txid, vout: v as u32 }, o.value.to_sat(), h))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (op, value, height) in outputs {
                if self.seen.insert(format!("out {op} {height:?}")) {
                    events.push(Event::HtlcOutput {
                        outpoint: op,
                        value_sat: value,
                        script_pubkey: spk.clone(),
                        confirmed_height: height,
                    });
                }
                if let Some((tx, h)) = w.spender_of(op) {
                    if self.seen.insert(format!("spent {op} {} {h:?}", tx.compute_txid())) {
                        events.push(Event::HtlcSpent { tx, confirmed_height: h });
                    }
                }
            }
        }
        Ok(events)
    }

    /// Handles one message from the transport.
    fn on_incoming(&mut self, m: Incoming) -> Result<(), EngineError> {
        let from_peer = self.peer == Some(m.sender);
        if from_peer {
            lock(&self.world)?.received[self.party.index()] += 1;
        }
        let env = match m.message {
            Ok(env) => env,
            Err(e) => {
                if let Some(reply) = e.reply(0) {
                    if !from_peer {
                        self.stranger_replies.push((m.sender, reply_code(&reply)));
                    }
                    self.outbox.push((m.sender, reply));
                }
                return Ok(());
            }
        };
        if let Message::Error(err) = &env.body {
            self.errors_received.push(err.clone());
        }
        // The seller takes a request for its offer when it has no swap yet.
        if let (Swap::Seller(None), Message::SwapRequest(req)) = (&self.swap, &env.body) {
            let Some(offer) = self.offer.clone() else { return Ok(()) };
            let keys =
                SwapKeys::derive(&self.master, 0).map_err(|e| EngineError::Keys(e.to_string()))?;
            let policy = SellerPolicy { cooperative_claims: !self.behaviour.uncooperative };
            let ctx = lock(&self.world)?.ctx;
            match SellerSwap::from_request(
                env.swap_id,
                m.sender.to_hex(),
                offer,
                req.clone(),
                keys,
                p2tr(10)?,
                policy,
                &ctx,
            ) {
                Ok((s, actions)) => {
                    self.swap = Swap::Seller(Some(s));
                    self.peer = Some(m.sender);
                    lock(&self.world)?.received[self.party.index()] += 1;
                    self.run(actions)?;
                }
                Err(e) => self.outbox.push((m.sender, Envelope::error_reply(env.swap_id, 0, e))),
            }
            return Ok(());
        }
        if !from_peer || self.swap_id() != Some(env.swap_id) {
            // Never fed: someone else's (or no) swap.
            if !matches!(env.body, Message::Error(_)) {
                let reply = Envelope::error_reply(
                    env.swap_id,
                    0,
                    ErrorMessage::new(ErrorCode::UnknownSwap, "no such swap"),
                );
                if !from_peer {
                    self.stranger_replies.push((m.sender, ErrorCode::UnknownSwap));
                }
                self.outbox.push((m.sender, reply));
            }
            return Ok(());
        }
        self.feed(Event::Message(env))
    }

    /// One step: takes pending world events, chain events and transport messages, feeds them,
    /// then sends what the swap wants sent. Returns how many inputs were processed.
    pub async fn step(&mut self) -> Result<usize, EngineError> {
        if self.is_gone() {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            let mut progressed = false;
            while let Some(ev) = self.local.pop_front() {
                self.feed(ev)?;
                progressed = true;
                n += 1;
            }
            let pending: Vec<Event> =
                lock(&self.world)?.pending[self.party.index()].drain(..).collect();
            for ev in pending {
                self.feed(ev)?;
                progressed = true;
                n += 1;
            }
            for ev in self.chain_events()? {
                self.feed(ev)?;
                progressed = true;
                n += 1;
            }
            while let Ok(m) = self.rx.try_recv() {
                self.on_incoming(m)?;
                progressed = true;
                n += 1;
            }
            self.apply_behaviour()?;
            if !progressed && self.local.is_empty() {
                break;
            }
        }
        self.flush().await?;
        Ok(n)
    }

    fn apply_behaviour(&mut self) -> Result<(), EngineError> {
        let Swap::Buyer(b) = &self.swap else { return Ok(()) };
        let accepted = matches!(b.state(), BuyerState::Accepted { .. } | BuyerState::Funded { .. });
        if self.behaviour.vanish_after_accept && accepted {
            lock(&self.world)?.gone[self.party.index()] = true;
            self.outbox.clear();
            return Ok(());
        }
        if self.behaviour.abort_when_funded && matches!(b.state(), BuyerState::Funded { .. }) {
            self.behaviour.abort_when_funded = false;
            self.local.push_back(Event::UserAbort);
        }
        Ok(())
    }

    /// Sends the queued messages over the transport.
    async fn flush(&mut self) -> Result<(), EngineError> {
        if self.is_gone() {
            self.outbox.clear();
            return Ok(());
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        if self.behaviour.mock_reorder && outbox.len() > 1 {
            outbox.reverse();
            lock(&self.world)?.mock_reversed_batches += 1;
        }
        let copies = if self.behaviour.mock_duplicate { 2 } else { 1 };
        for (to, env) in outbox {
            for copy in 0..copies {
                let report = self.transport.send(&to, &[], &env).await?;
                let mut w = lock(&self.world)?;
                w.event_bytes += report.event_bytes as u64;
                if copy > 0 {
                    w.mock_duplicates_sent += 1;
                }
                if Some(to) == self.peer {
                    let other =
                        if self.party == Party::Buyer { Party::Seller } else { Party::Buyer };
                    w.sent_to[other.index()] += 1;
                }
            }
        }
        Ok(())
    }

    /// Feeds a tick.
    pub fn tick(&mut self) {
        self.local.push_back(Event::Tick);
    }
}

fn reply_code(env: &Envelope) -> ErrorCode {
    match &env.body {
        Message::Error(e) => e.code,
        _ => ErrorCode::InvalidState,
    }
}

/// Whether every message sent between the engines has been taken by its recipient.
fn quiet(world: &SharedWorld) -> Result<bool, EngineError> {
    let w = lock(world)?;
    Ok((0..2).all(|i| w.gone[i] || w.sent_to[i] <= w.received[i]))
}

/// Runs both engines until both swaps are finished or `max_blocks` blocks were mined: steps both,
/// waits (bounded) until the messages in flight arrived, then ticks, and mines when nothing moves.
pub async fn drive(
    buyer: &mut Engine,
    seller: &mut Engine,
    max_blocks: u32,
) -> Result<u32, EngineError> {
    let mut blocks = 0;
    while !(buyer.finished() && seller.finished()) {
        if blocks >= max_blocks {
            return Err(EngineError::Timeout(format!(
                "not finished after {max_blocks} blocks: buyer {}, seller {}",
                buyer.state_name(),
                seller.state_name()
            )));
        }
        let mut moved = settle(buyer, seller).await?;
        buyer.tick();
        seller.tick();
        moved += settle(buyer, seller).await?;
        let _ = moved;
        if buyer.finished() && seller.finished() {
            break;
        }
        {
            let mut w = lock(&buyer.world)?;
            w.ctx.now_secs = w.ctx.now_secs.saturating_add(31);
            w.mine();
        }
        blocks += 1;
    }
    Ok(blocks)
}

/// Steps both engines until no input is left and no message is in flight (30 s bound).
pub async fn settle(buyer: &mut Engine, seller: &mut Engine) -> Result<usize, EngineError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    loop {
        let n = buyer.step().await? + seller.step().await?;
        total += n;
        if n == 0 && quiet(&buyer.world)? {
            return Ok(total);
        }
        if Instant::now() > deadline {
            return Err(EngineError::Timeout("messages in flight never arrived".into()));
        }
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
