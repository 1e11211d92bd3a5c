//! One swap's driver: its state machine behind its own lock, the actions it asks for carried out
//! in order (persist first), and what the engine may read of it without waiting for that lock.
//!
//! Locking: the table of swaps ([`SwapTable`]) is a plain mutex held only to look a swap up or
//! insert one, never across an await. Each swap has its own async lock, held while one event is
//! handled and its actions carried out (so one swap's events are handled one at a time, in
//! arrival order, as an actor's mailbox would); other swaps, the API and the chain watcher never
//! wait for it. Readers use the swap's [`View`], updated after every transition.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};

use bitcoin::{OutPoint, ScriptBuf};
use looper_api::EVENT_TIME;
use looper_protocol::buyer::BuyerSwap;
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::Offer;
use looper_protocol::record::{Swap as LoadedSwap, SwapRecord as ProtoRecord};
use looper_protocol::seller::{SellerState, SellerSwap};
use looper_protocol::swap::{Action, Context, Event, Notification, PaymentStatus, StateKind};
use looper_protocol::{PaymentHash, SwapDirection, SwapId};
use tokio::sync::Mutex;

use super::io::EntropyRng;
use super::{blocking_store, Engine, EngineError, SwapNotification};
use crate::lightning::{LightningError, PayOutcome};
use crate::nostr::PublicKey as NostrPublicKey;
use crate::store::{SwapRecord, SwapRole, SwapStatus};

/// The route CLTV cap of a prepay payment (LDK's default): the prepay does not depend on the
/// HTLC's timeout.
const PREPAY_MAX_CLTV: u32 = 1008;

/// A swap's state machine, or its record while its keys are not attached yet.
#[allow(clippy::large_enum_variant)]
pub(super) enum Machine {
    Buyer(BuyerSwap),
    Seller(SellerSwap),
    /// Loaded from the store; its keys could not be derived or attached yet (retried at every
    /// poll: the swap stays watched and shown meanwhile).
    Unloaded(ProtoRecord),
}

impl Machine {
    pub(super) fn from_record(record: ProtoRecord) -> Machine {
        Machine::Unloaded(record)
    }

    pub(super) fn kind(&self) -> StateKind {
        match self {
            Machine::Buyer(b) => b.kind(),
            Machine::Seller(s) => s.kind(),
            Machine::Unloaded(r) => r.kind(),
        }
    }

    pub(super) fn state_name(&self) -> &'static str {
        match self {
            Machine::Buyer(b) => b.state().name(),
            Machine::Seller(s) => s.state().name(),
            Machine::Unloaded(r) => r.state_name(),
        }
    }

    pub(super) fn peer(&self) -> &str {
        match self {
            Machine::Buyer(b) => b.peer(),
            Machine::Seller(s) => s.peer(),
            Machine::Unloaded(ProtoRecord::Buyer(r)) => r.peer(),
            Machine::Unloaded(ProtoRecord::Seller(r)) => r.peer(),
        }
    }

    pub(super) fn payment_hash(&self) -> Option<PaymentHash> {
        match self {
            Machine::Buyer(b) => b.payment_hash(),
            Machine::Seller(s) => Some(s.payment_hash()),
            Machine::Unloaded(ProtoRecord::Buyer(r)) => r.payment_hash(),
            Machine::Unloaded(ProtoRecord::Seller(r)) => Some(r.payment_hash()),
        }
    }

    /// The prepay invoice's hash while the swap has one in play (its Lightning events route
    /// here too).
    pub(super) fn prepay_hash(&self) -> Option<PaymentHash> {
        match self {
            Machine::Buyer(b) => b.prepay_hash(),
            Machine::Seller(s) => s.prepay_hash(),
            Machine::Unloaded(ProtoRecord::Buyer(r)) => r.prepay_hash(),
            Machine::Unloaded(ProtoRecord::Seller(r)) => r.prepay_hash(),
        }
    }

    /// The swap's key index (its keys, preimage and, as a buyer, Nostr key derive from it).
    pub(super) fn key_index(&self) -> u32 {
        match self {
            Machine::Buyer(b) => b.key_index(),
            Machine::Seller(s) => s.key_index(),
            Machine::Unloaded(r) => r.key_index(),
        }
    }

    /// The swap's offer.
    fn offer(&self) -> &Offer {
        match self {
            Machine::Buyer(b) => b.offer(),
            Machine::Seller(s) => s.offer(),
            Machine::Unloaded(ProtoRecord::Buyer(r)) => r.offer(),
            Machine::Unloaded(ProtoRecord::Seller(r)) => r.offer(),
        }
    }

    /// Loop out or loop in (the offer's direction).
    pub(super) fn direction(&self) -> SwapDirection {
        self.offer().direction
    }

    /// Whether this node asked for the swap (the taker: the buyer of a loop out, the locker of a
    /// loop in). A taker speaks with the swap's own Nostr key, never the node's identity.
    pub(super) fn is_taker(&self) -> bool {
        let claimer = matches!(self, Machine::Buyer(_) | Machine::Unloaded(ProtoRecord::Buyer(_)));
        claimer == (self.direction() == SwapDirection::LoopOut)
    }

    /// A taker swap that may still hear from its maker at tip `tip`, so keeps its Nostr key:
    /// while pending; a loop-out buyer also once aborted with agreed terms until the HTLC's
    /// timeout (the seller may ask to refund cooperatively until then).
    pub(super) fn hears_peer(&self, tip: u32) -> bool {
        if !self.is_taker() {
            return false;
        }
        match self {
            Machine::Buyer(b) => match b.kind() {
                StateKind::Pending => true,
                _ => {
                    matches!(b.state(), looper_protocol::buyer::BuyerState::Aborted { .. })
                        && b.terms().is_some_and(|t| tip < t.htlc_params.timeout_height)
                }
            },
            Machine::Seller(s) => s.kind() == StateKind::Pending,
            Machine::Unloaded(r) => r.kind() == StateKind::Pending,
        }
    }

    /// The swap's amount (the HTLC value).
    fn amount_sat(&self) -> u64 {
        match self {
            Machine::Buyer(b) => b.amount_sat(),
            Machine::Seller(s) => s.quote().htlc_amount_sat,
            Machine::Unloaded(ProtoRecord::Buyer(r)) => r.amount_sat(),
            Machine::Unloaded(ProtoRecord::Seller(r)) => r.quote().htlc_amount_sat,
        }
    }

    /// Where a taker sends its messages: the offer's relays (a maker answers on its own).
    fn relays(&self) -> Vec<String> {
        if self.is_taker() {
            self.offer().relays.clone()
        } else {
            Vec::new()
        }
    }

    /// Seller: its funding transaction while it waits unconfirmed (funded, or being refunded
    /// cooperatively before it confirmed).
    /// With the time the buyer stops waiting for it (its invoice's expiry), if known.
    pub(super) fn unconfirmed_funding(&self) -> Option<(&bitcoin::Transaction, Option<u64>)> {
        let Machine::Seller(s) = self else { return None };
        match s.state() {
            SellerState::Funded { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. }
                if funding.confirmed_height.is_none() =>
            {
                Some((&funding.tx, s.invoice_expires_at()))
            }
            _ => None,
        }
    }

    /// Seller waiting for its HTLC to be funded.
    pub(super) fn awaits_funding(&self) -> bool {
        matches!(self, Machine::Seller(s) if matches!(s.state(), SellerState::Accepted { .. }))
    }

    pub(super) fn proto_record(&self) -> ProtoRecord {
        match self {
            Machine::Buyer(b) => ProtoRecord::from(b),
            Machine::Seller(s) => ProtoRecord::from(s),
            Machine::Unloaded(r) => r.clone(),
        }
    }

    fn record(&self, now: u64) -> Result<SwapRecord, EngineError> {
        let proto = self.proto_record();
        let (role, created_at) = match &proto {
            ProtoRecord::Buyer(b) => (SwapRole::Buyer, b.created_at()),
            ProtoRecord::Seller(s) => (SwapRole::Seller, s.created_at()),
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

    fn handle(
        &mut self,
        event: Event,
        ctx: &Context,
        rng: &mut EntropyRng<'_>,
    ) -> Result<Vec<Action>, String> {
        match self {
            Machine::Buyer(b) => b.handle(event, ctx, rng).map_err(|e| e.to_string()),
            Machine::Seller(s) => s.handle(event, ctx, rng).map_err(|e| e.to_string()),
            Machine::Unloaded(_) => Err("the swap is not loaded yet (its keys are missing)".into()),
        }
    }

    /// Loads the record with its keys (derived again from the seed) if not done yet, and asks
    /// what to do now.
    fn resume(
        &mut self,
        master: &bitcoin::bip32::Xpriv,
        ctx: &Context,
        rng: &mut EntropyRng<'_>,
    ) -> Result<Vec<Action>, String> {
        if let Machine::Unloaded(record) = self {
            let keys = SwapKeys::derive(master, record.key_index())
                .map_err(|e| format!("cannot derive swap keys: {e}"))?;
            *self = match record.clone().load(keys).map_err(|e| e.to_string())? {
                LoadedSwap::Buyer(b) => Machine::Buyer(b),
                LoadedSwap::Seller(s) => Machine::Seller(s),
            };
        }
        match self {
            Machine::Buyer(b) => b.resume(ctx, rng).map_err(|e| e.to_string()),
            Machine::Seller(s) => s.resume(ctx, rng).map_err(|e| e.to_string()),
            Machine::Unloaded(_) => Err("the swap is not loaded".into()),
        }
    }
}

fn status_of(kind: StateKind) -> SwapStatus {
    match kind {
        StateKind::Pending => SwapStatus::Pending,
        StateKind::Succeeded => SwapStatus::Succeeded,
        StateKind::Failed => SwapStatus::Failed,
    }
}

/// What the engine reads of a swap without taking its lock (updated after every transition).
#[derive(Debug, Clone)]
pub(super) struct View {
    pub(super) state: &'static str,
    pub(super) kind: StateKind,
    pub(super) payment_hash: Option<PaymentHash>,
    pub(super) prepay_hash: Option<PaymentHash>,
    /// The locker's machine (the seller of a loop out, the taker of a loop in).
    pub(super) seller: bool,
    /// We published the offer (the seller of a loop out, the claimer of a loop in).
    pub(super) maker: bool,
    /// The swap's amount (the HTLC value).
    pub(super) amount_sat: u64,
}

impl View {
    /// Seller of a loop out: the HTLC is (about to be) locked and not paid for: accepted
    /// (funding queued or waiting for the prepay), funded, or being refunded. What the
    /// unpaid-capital budget counts (a taker's own lock in a loop in is its own choice).
    pub(super) fn unpaid_lock(&self) -> Option<UnpaidLock> {
        if !(self.seller && self.maker) {
            return None;
        }
        match self.state {
            "AwaitingInvoice" | "Accepted" => Some(UnpaidLock::Unfunded(self.amount_sat)),
            "Funded" | "RefundingCooperatively" | "Refunding" => {
                Some(UnpaidLock::Funded(self.amount_sat))
            }
            _ => None,
        }
    }
}

/// A seller swap's capital not paid for yet ([`View::unpaid_lock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnpaidLock {
    /// Not funded yet: still in the wallet, promised.
    Unfunded(u64),
    /// In the HTLC.
    Funded(u64),
}

impl View {
    fn of(machine: &Machine) -> View {
        View {
            state: machine.state_name(),
            kind: machine.kind(),
            payment_hash: machine.payment_hash(),
            prepay_hash: machine.prepay_hash(),
            seller: matches!(
                machine,
                Machine::Seller(_) | Machine::Unloaded(ProtoRecord::Seller(_))
            ),
            maker: !machine.is_taker(),
            amount_sat: machine.amount_sat(),
        }
    }
}

/// What the chain watcher reported about an outpoint, so that only changes are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Seen {
    /// The HTLC output itself.
    Output(OutPoint),
    /// Its spend.
    Spend(OutPoint),
}

/// What was reported for a [`Seen`] key: the transaction and its confirmation height.
pub(super) type SeenValue = (bitcoin::Txid, Option<u32>);

/// The chain watcher's part of a swap.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Scripts watched for the HTLC output and its spend.
    pub(super) scripts: Vec<ScriptBuf>,
    /// What was last reported per outpoint, to feed changes only.
    pub(super) seen: BTreeMap<Seen, SeenValue>,
}

/// One swap in the engine.
pub(super) struct Slot {
    /// The counterparty's Nostr key (hex); fixed for the swap's life.
    pub(super) peer: String,
    /// Our Nostr key in this swap: the node's identity as a seller, the swap's own key as a
    /// buyer (spec `04-nostr.md`, "Keys"). Its messages go out as this key, and only messages
    /// addressed to it are the swap's. Fixed for the swap's life.
    pub(super) local: NostrPublicKey,
    /// A buyer swap's own key is held by the transport (given back once the swap can no longer
    /// hear from its maker, [`Machine::hears_peer`]).
    pub(super) holds_key: std::sync::atomic::AtomicBool,
    pub(super) machine: Mutex<Machine>,
    view: StdMutex<View>,
    pub(super) watch: StdMutex<Watch>,
    /// The record loaded but `resume` failed: tried again at every chain poll.
    needs_resume: StdMutex<bool>,
}

fn locked<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slot {
    /// A slot for `machine`, speaking as `local` (`holds_key`: a swap key the transport holds
    /// for it).
    pub(super) fn new(machine: Machine, local: NostrPublicKey, holds_key: bool) -> Slot {
        Slot {
            peer: machine.peer().to_string(),
            local,
            holds_key: std::sync::atomic::AtomicBool::new(holds_key),
            view: StdMutex::new(View::of(&machine)),
            machine: Mutex::new(machine),
            watch: StdMutex::new(Watch::default()),
            needs_resume: StdMutex::new(false),
        }
    }

    pub(super) fn view(&self) -> View {
        locked(&self.view).clone()
    }

    /// The whole view: called once what a transition asked for is carried out (a reader that
    /// sees the new state also finds its record and event log written).
    fn refresh_view(&self, machine: &Machine) {
        *locked(&self.view) = View::of(machine);
    }

    /// Only what routes events to the swap (its payment hash), at once after a transition: a
    /// Lightning event arriving while the transition's actions run still finds its swap.
    fn refresh_routing(&self, machine: &Machine) {
        let mut view = locked(&self.view);
        view.payment_hash = machine.payment_hash();
        view.prepay_hash = machine.prepay_hash();
    }

    /// Whether a Lightning event for `hash` is this swap's (its invoice's or its prepay's).
    pub(super) fn routes(&self, hash: PaymentHash) -> bool {
        let view = locked(&self.view);
        view.payment_hash == Some(hash) || view.prepay_hash == Some(hash)
    }

    pub(super) fn watch(&self) -> MutexGuard<'_, Watch> {
        locked(&self.watch)
    }

    pub(super) fn needs_resume(&self) -> bool {
        *locked(&self.needs_resume)
    }
}

/// The engine's swaps (see the module documentation for the locking rules), in id order: the
/// order polls and ticks visit them is the same in every run (the test bed replays runs).
#[derive(Default)]
pub(super) struct SwapTable {
    swaps: StdMutex<BTreeMap<SwapId, Arc<Slot>>>,
}

impl SwapTable {
    pub(super) fn get(&self, id: &SwapId) -> Option<Arc<Slot>> {
        locked(&self.swaps).get(id).cloned()
    }

    /// Inserts `slot` unless the id is taken (returns the one there) or `admit` refuses, given
    /// the table as it is (checked and inserted atomically).
    pub(super) fn insert_if(
        &self,
        id: SwapId,
        slot: Arc<Slot>,
        admit: impl FnOnce(&mut dyn Iterator<Item = &Arc<Slot>>) -> bool,
    ) -> Result<(), Option<Arc<Slot>>> {
        let mut swaps = locked(&self.swaps);
        if let Some(existing) = swaps.get(&id) {
            return Err(Some(Arc::clone(existing)));
        }
        if !admit(&mut swaps.values()) {
            return Err(None);
        }
        swaps.insert(id, slot);
        Ok(())
    }

    pub(super) fn remove(&self, id: &SwapId) {
        locked(&self.swaps).remove(id);
    }

    /// Ids and slots of every swap matching `keep`.
    pub(super) fn select(&self, keep: impl Fn(&Slot) -> bool) -> Vec<(SwapId, Arc<Slot>)> {
        locked(&self.swaps)
            .iter()
            .filter(|(_, s)| keep(s))
            .map(|(id, s)| (*id, Arc::clone(s)))
            .collect()
    }

    pub(super) fn ids(&self) -> Vec<SwapId> {
        locked(&self.swaps).keys().copied().collect()
    }
}

/// Persisting failed: the rest of the actions must not run.
pub(super) struct Stop;

impl Engine {
    /// The context the state machines see now.
    pub(super) fn context(&self) -> Context {
        let mut ctx = *locked(&self.inner.ctx);
        ctx.now_secs = self.inner.clock.now_secs();
        ctx
    }

    /// Attaches the keys and carries out `resume`. A failure never drops the swap: it stays in
    /// memory (watched, shown in the API and its event log) and is tried again at every poll.
    pub(super) async fn resume_one(&self, id: SwapId, slot: &Slot) {
        let mut machine = slot.machine.lock().await;
        let ctx = self.context();
        let mut rng = EntropyRng(&*self.inner.entropy);
        let result = machine.resume(&self.inner.swap_master, &ctx, &mut rng);
        slot.refresh_routing(&machine);
        let retried = slot.needs_resume();
        match result {
            Ok(actions) => {
                *locked(&slot.needs_resume) = false;
                if retried {
                    tracing::info!(swap = %id, "swap resumed after an earlier failure");
                }
                self.carry_out(id, slot, &mut machine, actions).await;
            }
            Err(reason) => {
                *locked(&slot.needs_resume) = true;
                if !retried {
                    tracing::error!(swap = %id, error = %reason, "cannot resume swap; trying again at every poll");
                    let note = Notification::Stalled { reason: format!("cannot resume: {reason}") };
                    self.carry_out(id, slot, &mut machine, vec![Action::Notify(note)]).await;
                }
                slot.refresh_view(&machine);
            }
        }
    }

    /// Feeds one event to swap `id` and carries out what follows. `Ok(false)`: persisting
    /// failed, the rest was not carried out.
    pub(super) async fn feed(&self, id: SwapId, event: Event) -> Result<bool, EngineError> {
        let slot = self.inner.swaps.get(&id).ok_or(EngineError::UnknownSwap(id.to_string()))?;
        self.feed_slot(id, &slot, event).await
    }

    pub(super) async fn feed_slot(
        &self,
        id: SwapId,
        slot: &Slot,
        event: Event,
    ) -> Result<bool, EngineError> {
        let mut machine = slot.machine.lock().await;
        let ctx = self.context();
        let actions = machine
            .handle(event, &ctx, &mut EntropyRng(&*self.inner.entropy))
            .map_err(EngineError::Swap);
        slot.refresh_routing(&machine);
        Ok(self.carry_out(id, slot, &mut machine, actions?).await)
    }

    /// Carries out `actions` in order, then the events they produced, until quiet. `false` when
    /// persisting failed (nothing after it was done).
    pub(super) async fn carry_out(
        &self,
        id: SwapId,
        slot: &Slot,
        machine: &mut Machine,
        actions: Vec<Action>,
    ) -> bool {
        let mut queue: VecDeque<Vec<Action>> = VecDeque::from([actions]);
        while let Some(actions) = queue.pop_front() {
            let mut followups = Vec::new();
            for action in actions {
                match self.act(id, slot, machine, action).await {
                    Ok(Some(event)) => followups.push(event),
                    Ok(None) => {}
                    // Persisting failed: nothing after it may happen.
                    Err(Stop) => {
                        slot.refresh_view(machine);
                        return false;
                    }
                }
            }
            for event in followups {
                let ctx = self.context();
                let result = machine.handle(event, &ctx, &mut EntropyRng(&*self.inner.entropy));
                slot.refresh_routing(machine);
                match result {
                    Ok(next) => queue.push_back(next),
                    Err(e) => tracing::debug!(swap = %id, error = %e, "follow-up event refused"),
                }
            }
        }
        slot.refresh_view(machine);
        true
    }

    async fn act(
        &self,
        id: SwapId,
        slot: &Slot,
        machine: &mut Machine,
        action: Action,
    ) -> Result<Option<Event>, Stop> {
        match action {
            Action::Persist => {
                let rec = match machine.record(self.inner.clock.now_secs()) {
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
                let relays = machine.relays();
                let Ok(pk) = NostrPublicKey::from_hex(machine.peer()) else {
                    tracing::error!(swap = %id, "peer key does not parse");
                    return Ok(None);
                };
                // A taker mines every message to a maker whose offer asks for proof of work:
                // such a maker may drop unmined gift wraps before decrypting them.
                let pow = machine.is_taker().then(|| machine.offer().pow_difficulty).flatten();
                let request = env.body.is_request();
                let transport = &self.inner.transport;
                let from = &slot.local;
                let sent = match pow.filter(|d| *d > 0) {
                    Some(bits) if !request => {
                        transport.send_with_pow(from, &pk, &relays, &env, bits).await
                    }
                    Some(bits) => {
                        // Shown in the swap's events (`looper out` prints them as they come):
                        // at 20 bits and more this takes seconds.
                        self.notify(id, Notification::ProofOfWork { bits, millis: None });
                        let started = std::time::Instant::now();
                        let sent = transport.send_with_pow(from, &pk, &relays, &env, bits).await;
                        let millis =
                            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        self.notify(id, Notification::ProofOfWork { bits, millis: Some(millis) });
                        sent
                    }
                    None => transport.send(from, &pk, &relays, &env).await,
                };
                if let Err(e) = sent {
                    tracing::warn!(swap = %id, error = %e, "cannot send swap message");
                }
                Ok(None)
            }
            Action::CreateInvoice {
                payment_hash,
                amount_msat,
                expiry_secs,
                description,
                prepay_msat,
                prepay_expiry_secs,
            } => {
                let lightning = &self.inner.lightning;
                let invoice = match lightning
                    .receive_for_hash(payment_hash, amount_msat, expiry_secs, &description)
                    .await
                {
                    Ok(invoice) => invoice,
                    Err(e) => {
                        tracing::error!(swap = %id, error = %e, "cannot create the swap invoice");
                        return Ok(None);
                    }
                };
                let prepay_invoice = match prepay_msat {
                    None => None,
                    Some(msat) => {
                        let desc = format!("{description} prepay");
                        match lightning.invoice(msat, &desc, prepay_expiry_secs).await {
                            Ok(p) => Some(p),
                            Err(e) => {
                                tracing::error!(swap = %id, error = %e, "cannot create the prepay invoice");
                                return Ok(None);
                            }
                        }
                    }
                };
                Ok(Some(Event::InvoiceCreated { invoice, prepay_invoice }))
            }
            Action::FundHtlc { script_pubkey, amount_sat, conf_target } => {
                // Funded with the other swaps queued meanwhile (`flush_funding`).
                self.queue_funding(id, script_pubkey, amount_sat, conf_target);
                Ok(None)
            }
            Action::QueueClaim => {
                // Claimed with the other swaps queued meanwhile (`flush_claims`).
                self.queue_claim(id);
                Ok(None)
            }
            Action::Broadcast { tx, purpose } => {
                self.broadcast(id, &tx, purpose).await;
                Ok(None)
            }
            Action::WatchHtlc { script_pubkey } => {
                let mut watch = slot.watch();
                if !watch.scripts.contains(&script_pubkey) {
                    watch.scripts.push(script_pubkey);
                }
                Ok(None)
            }
            Action::PayInvoice { invoice, max_total_cltv_expiry_delta, attempt, .. } => {
                let hash = machine.payment_hash();
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
            Action::PayPrepay { invoice, .. } => {
                let Some(hash) = machine.prepay_hash() else { return Ok(None) };
                match self.inner.lightning.pay(&invoice, PREPAY_MAX_CLTV).await {
                    Ok(PayOutcome::Started) | Ok(PayOutcome::AlreadyPending) => Ok(None),
                    Ok(PayOutcome::AlreadySucceeded(preimage)) => {
                        Ok(Some(Event::PaymentSucceeded { preimage }))
                    }
                    Err(e) => {
                        tracing::warn!(swap = %id, error = %e, "cannot pay the prepay");
                        Ok(Some(Event::PaymentStatus {
                            payment_hash: hash,
                            status: self.payment_status(hash),
                        }))
                    }
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
                self.notify(id, notification);
                Ok(None)
            }
        }
    }

    /// Logs a swap's notification in its event log and tells the subscribers.
    pub(super) fn notify(&self, id: SwapId, notification: Notification) {
        tracing::info!(swap = %id, notification = ?notification, "swap progress");
        if let Notification::FundingLost { txid, lost_sat } = &notification {
            tracing::warn!(
                swap = %id,
                funding_txid = %txid,
                lost_sat,
                "the htlc's funding left the chain after our payment and never came back: the \
                 payment is lost (the seller double-spent its funding)"
            );
        }
        let mut value = serde_json::to_value(&notification).unwrap_or_default();
        if let serde_json::Value::Object(fields) = &mut value {
            // When it happened (UNIX milliseconds): the log tells how long each step took.
            fields.insert(EVENT_TIME.into(), self.inner.clock.now_millis().into());
        }
        let seq = blocking_store(|| self.inner.store.append_swap_event(&id, &value))
            .unwrap_or_else(|e| {
                tracing::warn!(swap = %id, error = %e, "cannot log swap event");
                0
            });
        // No subscriber is fine.
        let _ = self.inner.notifications.send(SwapNotification { swap_id: id, seq, notification });
    }
}
