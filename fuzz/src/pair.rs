//! A buyer and a seller state machine driven by fuzz bytes (the `state_machines` target), in the
//! manner of rust-lightning's `chanmon_consistency`: every byte picks what happens next - a message
//! delivered, dropped, duplicated, replayed or altered by the peer, a block, a reorg, time passing,
//! a Lightning payment reaching the seller or failing, a crash after a persist, a restart, a user
//! abort - and after every step the invariants of `docs/fuzzing.md` are checked. A violation
//! panics with the step log.
//!
//! The environment is honest where the protocol trusts it (each party's own chain view, its own
//! Lightning node, its own store) and hostile where it does not (the peer's messages, timing and
//! ordering, crashes).
//!
//! The first byte picks the direction (its low bit: 0 loop out, 1 loop in). In a loop in the
//! seller (the locker) is the taker and starts with its `swap_request`, and the buyer (the
//! claimer) is made from the request delivered to it; everything after runs as in a loop out,
//! with the parties' money roles (the buyer pays and claims, the seller locks and refunds).

use std::collections::VecDeque;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::rand::rngs::StdRng;
use bitcoin::secp256k1::rand::SeedableRng;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use lightning_invoice::Bolt11Invoice;
use looper_protocol::buyer::{BuyerState, BuyerSwap, BUYER_TRANSITIONS};
use looper_protocol::htlc::Htlc;
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{
    decode_envelope, encode, AbortReason, Envelope, ErrorCode, ErrorMessage, Message, Offer,
    SwapAbort, MIN_CLTV_BUDGET_BLOCKS,
};
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::{
    LockerStart, LoopInLimits, SellerPolicy, SellerState, SellerSwap, MAX_COOP_SIGNATURES,
    SELLER_TRANSITIONS,
};
use looper_protocol::swap::{
    Action, Context, Event, HtlcStatus, PaymentStatus, StateKind, Transition, TxPurpose,
};
use looper_protocol::{PaymentHash, Preimage, SwapDirection, SwapId};

use crate::{buyer_policy, master, offer, p2tr, start_buyer, start_context, InvoiceSpec};

/// Which party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The buyer.
    Buyer,
    /// The seller.
    Seller,
}

impl Party {
    fn from_byte(b: u8) -> Self {
        if b & 1 == 0 {
            Party::Buyer
        } else {
            Party::Seller
        }
    }
}

/// Where a call into a state machine came from (some invariants differ for `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Handle,
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaymentState {
    /// Sent by the buyer's node, not yet at the seller.
    InFlight,
    /// Claimed by the seller.
    Settled,
    /// Failed (by a hop, by the seller, or never sent).
    Failed,
}

#[derive(Debug, Clone)]
struct Payment {
    /// The block from which it has failed at the latest: its route's CLTV budget from the tip
    /// it was sent at (LDK counts from the next block).
    expiry_height: u32,
    hash: PaymentHash,
    amount_msat: u64,
    state: PaymentState,
    /// The buyer's attempt number ([`Action::PayInvoice`]).
    attempt: u32,
    /// The preimage, once settled.
    preimage: Option<Preimage>,
}

/// What the parties have done so far, for the invariants.
#[derive(Debug, Default)]
struct Track {
    /// The highest payment attempt number the buyer used.
    last_attempt: u32,
    /// The buyer was told that its payment succeeded.
    payment_succeeded: bool,
    /// The buyer sent a `coop_refund_response` (a refund partial signature).
    buyer_signed_refund: bool,
    /// The seller emitted `ClaimPayment`: the preimage is out (its point of no return).
    seller_claimed: bool,
    /// The seller emitted the funding broadcast.
    seller_funded: bool,
    /// The seller broadcast a refund.
    seller_refunded: bool,
    /// `coop_claim_response`s the seller sent.
    coop_claim_responses: u32,
    /// Every transaction either party asked to broadcast (a repeat is a rebroadcast).
    broadcast: Vec<Txid>,
}

/// The simulated chain: what the parties broadcast (first seen wins), mined on demand.
#[derive(Debug, Default)]
struct Chain {
    mempool: Vec<Transaction>,
    confirmed: Vec<(u32, Transaction)>,
}

impl Chain {
    fn all(&self) -> impl Iterator<Item = (&Transaction, Option<u32>)> {
        self.confirmed
            .iter()
            .map(|(h, t)| (t, Some(*h)))
            .chain(self.mempool.iter().map(|t| (t, None)))
    }

    fn spender_of(&self, op: OutPoint) -> Option<(Transaction, Option<u32>)> {
        self.all()
            .find(|(t, _)| t.input.iter().any(|i| i.previous_output == op))
            .map(|(t, h)| (t.clone(), h))
    }

    fn outputs_to(&self, spk: &ScriptBuf) -> Vec<(OutPoint, u64, Option<u32>)> {
        let mut out = Vec::new();
        for (t, h) in self.all() {
            let txid = t.compute_txid();
            for (v, o) in t.output.iter().enumerate() {
                if o.script_pubkey == *spk {
                    out.push((OutPoint { txid, vout: v as u32 }, o.value.to_sat(), h));
                }
            }
        }
        out
    }
}

/// The pair, its environment and the invariant bookkeeping.
pub struct Pair {
    ctx: Context,
    rng: StdRng,
    offer: Offer,
    /// The swap's id (both machines').
    swap_id: SwapId,
    /// The buyer: from the start in a loop out, once the request reached it in a loop in.
    buyer: Option<BuyerSwap>,
    seller: Option<SellerSwap>,
    buyer_record: Vec<u8>,
    seller_record: Vec<u8>,
    to_seller: VecDeque<Envelope>,
    to_buyer: VecDeque<Envelope>,
    /// Everything each party ever sent (for replays).
    sent_by_buyer: Vec<Envelope>,
    sent_by_seller: Vec<Envelope>,
    chain: Chain,
    buyer_watch: Option<ScriptBuf>,
    seller_watch: Option<ScriptBuf>,
    buyer_seen: Vec<String>,
    seller_seen: Vec<String>,
    payments: Vec<Payment>,
    /// Payment outcomes the buyer's node has not reported yet, by payment hash.
    buyer_results: VecDeque<(PaymentHash, Event)>,
    funding_counter: u8,
    next_funding_fails: bool,
    crash_at: Option<(Party, u8)>,
    track: Track,
    log: Vec<String>,
}

fn buyer_keys(index: u32) -> SwapKeys {
    SwapKeys::derive(&master(2), index).unwrap()
}

fn seller_keys(index: u32) -> SwapKeys {
    SwapKeys::derive(&master(1), index).unwrap()
}

/// Whether `to` is reachable from `from` through rows of `table` (one call may make several
/// transitions, e.g. `Accepted -> Funded -> Paying` on a confirmed HTLC output).
fn in_table(table: &[Transition], from: &str, to: &str) -> bool {
    let mut reached = vec![from];
    let mut i = 0;
    while i < reached.len() {
        if reached[i] == to {
            return true;
        }
        for (f, t, _) in table {
            if *f == reached[i] && !reached.contains(t) {
                reached.push(t);
            }
        }
        i += 1;
    }
    false
}

fn record_of(party: Party, buyer: Option<&BuyerSwap>, seller: Option<&SellerSwap>) -> Vec<u8> {
    let record = match party {
        Party::Buyer => match buyer {
            Some(b) => SwapRecord::from(b),
            None => return Vec::new(),
        },
        Party::Seller => match seller {
            Some(s) => SwapRecord::from(s),
            None => return Vec::new(),
        },
    };
    record.to_bytes().expect("a swap record always encodes")
}

/// The seller's `Funded`-or-later funding outpoint, if any.
fn seller_funding(state: &SellerState) -> Option<OutPoint> {
    match state {
        SellerState::Funded { funding, .. }
        | SellerState::Paid { funding, .. }
        | SellerState::Claimed { funding, .. }
        | SellerState::RefundingCooperatively { funding, .. }
        | SellerState::Refunding { funding, .. }
        | SellerState::Refunded { funding, .. } => Some(funding.outpoint),
        _ => None,
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Pair {
    /// A loop out: a buyer that has just sent its `swap_request`, and no seller yet.
    pub fn new() -> Self {
        Self::with_direction(false)
    }

    /// A loop out as [`Pair::new`], or a loop in: a seller (the taker, the locker) that has just
    /// sent its `swap_request` for the buyer's loop-in offer, and no buyer yet.
    pub fn with_direction(loop_in: bool) -> Self {
        // Claims through the node's batcher, as `looper-node` runs them.
        let ctx = Context { batch_claims: true, ..start_context() };
        let mut offer = offer();
        let (buyer, seller, first, actions) = if loop_in {
            offer.direction = SwapDirection::LoopIn;
            offer.offer_id = "fuzz-in".into();
            let start = LockerStart {
                swap_id: SwapId([0xab; 32]),
                peer: "buyer".into(),
                offer: offer.clone(),
                amount_sat: crate::AMOUNT_SAT,
                limits: LoopInLimits { max_total_fee_sat: 50_000, max_timeout_delta: 200, ..LoopInLimits::default() },
                policy: SellerPolicy::default(),
                refund_destination: p2tr(10),
                keys: seller_keys(0),
            };
            let (s, actions) = SellerSwap::start_loop_in(start, &ctx).expect("the locker starts");
            (None, Some(s), Party::Seller, actions)
        } else {
            let (b, actions) = start_buyer(&ctx);
            (Some(b), None, Party::Buyer, actions)
        };
        let mut pair = Pair {
            ctx,
            rng: StdRng::seed_from_u64(7),
            offer,
            swap_id: SwapId([0xab; 32]),
            buyer,
            seller,
            buyer_record: Vec::new(),
            seller_record: Vec::new(),
            to_seller: VecDeque::new(),
            to_buyer: VecDeque::new(),
            sent_by_buyer: Vec::new(),
            sent_by_seller: Vec::new(),
            chain: Chain::default(),
            buyer_watch: None,
            seller_watch: None,
            buyer_seen: Vec::new(),
            seller_seen: Vec::new(),
            payments: Vec::new(),
            buyer_results: VecDeque::new(),
            funding_counter: 0,
            next_funding_fails: false,
            crash_at: None,
            track: Track::default(),
            log: Vec::new(),
        };
        if first == Party::Seller {
            pair.check_actions(first, Origin::Handle, &Event::Tick, "Requested", &actions, 0);
        }
        pair.run(first, actions);
        pair
    }

    /// The buyer, which every buyer action and state check has (the fuzz run fails otherwise).
    fn b(&self) -> &BuyerSwap {
        match &self.buyer {
            Some(b) => b,
            None => self.fail("a buyer action or check without a buyer"),
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "invariant violated: {what}\nbuyer: {:?}\nseller: {:?}\nsteps:\n{}",
            self.buyer.as_ref().map(|b| b.state().name()),
            self.seller.as_ref().map(|s| s.state().name()),
            self.log.join("\n")
        )
    }

    fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.fail(what);
        }
    }

    fn outbox_len(&self, party: Party) -> usize {
        match party {
            Party::Buyer => self.buyer.as_ref().map_or(0, |b| b.outbox().sent.len()),
            Party::Seller => self.seller.as_ref().map_or(0, |s| s.outbox().sent.len()),
        }
    }

    fn state_name(&self, party: Party) -> &'static str {
        match party {
            Party::Buyer => self.buyer.as_ref().map_or("-", |b| b.state().name()),
            Party::Seller => self.seller.as_ref().map_or("-", |s| s.state().name()),
        }
    }

    // ----- feeding the machines ---------------------------------------------------------------

    fn feed(&mut self, party: Party, event: Event) {
        let label = format!("{party:?} <- {}", event_label(&event));
        self.log.push(label);
        let ctx = self.ctx;
        let before_name = self.state_name(party);
        let resends = self.outbox_len(party);
        let before_swap = match party {
            Party::Buyer => self.buyer.as_ref().map(SwapRecord::from),
            Party::Seller => self.seller.as_ref().map(SwapRecord::from),
        };
        let result = match party {
            Party::Buyer => match self.buyer.as_mut() {
                Some(b) => b.handle(event.clone(), &ctx, &mut self.rng),
                None => return,
            },
            Party::Seller => match self.seller.as_mut() {
                Some(s) => s.handle(event.clone(), &ctx, &mut self.rng),
                None => return,
            },
        };
        match result {
            Ok(actions) => {
                self.check_actions(party, Origin::Handle, &event, before_name, &actions, resends);
                self.run(party, actions);
            }
            Err(e) => {
                self.log.push(format!("  refused: {e}"));
                let before = before_swap.map(|r| r.to_bytes().expect("a swap record encodes"));
                let after = record_of(party, self.buyer.as_ref(), self.seller.as_ref());
                self.check(
                    before.unwrap_or_default() == after,
                    "an event refused with an error changed the swap",
                );
            }
        }
        self.check_global();
    }

    /// Checks one action list against the rules of `spec/02-swap-flow.md` (see `docs/fuzzing.md`).
    fn check_actions(
        &mut self,
        party: Party,
        origin: Origin,
        event: &Event,
        before: &'static str,
        actions: &[Action],
        resends: usize,
    ) {
        let after = self.state_name(party);
        let table = if party == Party::Buyer { BUYER_TRANSITIONS } else { SELLER_TRANSITIONS };
        if origin == Origin::Handle {
            self.check(in_table(table, before, after), "a transition outside the transition table");
        }
        let mut persisted = false;
        for action in actions {
            self.log.push(format!("  {party:?} -> {}", action_label(action)));
            // Re-sending what the swap sent before, with the original `seq`, is not a new
            // message (`resume`, and the seller's cooperative-refund retries).
            if let Action::Send(env) = action {
                if usize::try_from(env.seq).is_ok_and(|seq| seq < resends) {
                    continue;
                }
            }
            let external = matches!(
                action,
                Action::Send(_) | Action::Broadcast { .. } | Action::PayInvoice { .. }
            );
            // Re-broadcasting a transaction broadcast before (every block while unconfirmed)
            // changes nothing.
            let rebroadcast = matches!(action, Action::Broadcast { tx, .. }
                if self.track.broadcast.contains(&tx.compute_txid()));
            if let Action::Broadcast { tx, .. } = action {
                self.track.broadcast.push(tx.compute_txid());
            }
            if origin == Origin::Handle && external && !rebroadcast {
                self.check(persisted, "an action before the transition was persisted");
            }
            if matches!(action, Action::Persist) {
                persisted = true;
            }
            match party {
                Party::Buyer => self.check_buyer_action(origin, action),
                Party::Seller => self.check_seller_action(origin, event, before, action),
            }
        }
    }

    fn check_buyer_action(&mut self, origin: Origin, action: &Action) {
        match action {
            Action::PayInvoice {
                invoice,
                amount_msat,
                max_total_cltv_expiry_delta,
                attempt,
                ..
            } => {
                let BuyerState::Paying { terms, htlc, max_cltv, .. } = &self.b().state() else {
                    self.fail("PayInvoice outside Paying");
                };
                // Never a second payment while one may still succeed (or did): a new attempt
                // number only once every earlier attempt failed for good.
                let same_attempt = self.payments.iter().any(|p| p.attempt == *attempt);
                if !same_attempt {
                    self.check(
                        !self.payment_live(terms.htlc_params.payment_hash),
                        "PayInvoice while an earlier attempt is in flight or succeeded",
                    );
                    self.check(
                        *attempt > self.track.last_attempt,
                        "a payment attempt number reused",
                    );
                }
                self.check(!self.track.payment_succeeded, "PayInvoice after the payment succeeded");
                self.check(
                    !self.track.buyer_signed_refund,
                    "PayInvoice after signing a cooperative refund",
                );
                self.check(
                    *invoice == terms.invoice,
                    "PayInvoice for another invoice than the agreed one",
                );
                self.check(
                    *amount_msat == terms.invoice_amount_msat
                        && *amount_msat == terms.quote.invoice_amount_sat.saturating_mul(1000),
                    "PayInvoice amount differs from the quote",
                );
                self.check(
                    *max_total_cltv_expiry_delta == *max_cltv,
                    "PayInvoice cltv differs from the state",
                );
                if origin == Origin::Handle {
                    let t = terms.htlc_params.timeout_height;
                    let available = t
                        .saturating_sub(self.ctx.tip_height)
                        .saturating_sub(self.offer.claim_margin);
                    self.check(
                        *max_total_cltv_expiry_delta
                            >= MIN_CLTV_BUDGET_BLOCKS.max(terms.min_final_cltv)
                            && *max_total_cltv_expiry_delta <= available
                            && *max_total_cltv_expiry_delta <= self.b().policy().max_route_cltv,
                        "PayInvoice with a cltv budget outside [max(42, f), min(R, T - tip - m)]",
                    );
                    self.check(
                        self.ctx.now_secs < terms.invoice_expires_at,
                        "PayInvoice of an expired invoice",
                    );
                    // The HTLC as the buyer's own chain view has it: agreed script and value,
                    // confirmed enough, unspent.
                    let script =
                        Htlc::new(terms.htlc_params.clone()).unwrap().script_pubkey().to_owned();
                    let found = self
                        .chain
                        .outputs_to(&script)
                        .into_iter()
                        .find(|(op, _, _)| *op == htlc.outpoint);
                    let Some((_, value, height)) = found else {
                        self.fail("PayInvoice without the HTLC output on chain");
                    };
                    self.check(
                        value == terms.quote.htlc_amount_sat,
                        "PayInvoice for an HTLC of another value",
                    );
                    let required = self
                        .offer
                        .min_confirmations
                        .max(self.b().policy().min_confirmations)
                        .max(1);
                    let confs = looper_protocol::swap::confirmations(height, self.ctx.tip_height);
                    self.check(
                        confs >= required,
                        "PayInvoice before the HTLC has enough confirmations",
                    );
                    self.check(
                        self.chain.spender_of(htlc.outpoint).is_none(),
                        "PayInvoice with the HTLC already spent",
                    );
                }
                self.track.last_attempt = self.track.last_attempt.max(*attempt);
            }
            Action::Send(env) => match &env.body {
                Message::CoopRefundResponse(_) => {
                    let live = self.b().payment_hash().is_some_and(|h| self.payment_live(h));
                    self.check(
                        !live && !self.track.payment_succeeded,
                        "a cooperative refund signed while a payment is in flight or done (after the point of no return)",
                    );
                    self.check(
                        matches!(self.b().state(), BuyerState::Aborted { .. }),
                        "a cooperative refund signed before Aborted was persisted",
                    );
                    self.track.buyer_signed_refund = true;
                }
                Message::SwapAbort(SwapAbort { reason, .. }) => {
                    let live = self.b().payment_hash().is_some_and(|h| self.payment_live(h));
                    self.check(
                        !live && !self.track.payment_succeeded,
                        "swap_abort sent after the point of no return",
                    );
                    self.check(
                        !self.track.buyer_signed_refund || *reason != AbortReason::PaymentFailed,
                        "payment_failed after a refund",
                    );
                }
                Message::CoopClaimRequest(_) => {
                    self.check(
                        self.track.payment_succeeded,
                        "coop_claim_request before the payment succeeded",
                    );
                }
                _ => {}
            },
            Action::Broadcast { purpose, .. } => {
                self.check(
                    matches!(purpose, TxPurpose::CooperativeClaim | TxPurpose::ScriptClaim),
                    "the buyer broadcast something else than a claim",
                );
                self.check(
                    self.track.payment_succeeded,
                    "a claim broadcast before the payment succeeded",
                );
            }
            Action::CreateInvoice { .. }
            | Action::FundHtlc { .. }
            | Action::ClaimPayment { .. }
            | Action::FailPayment { .. } => self.fail("a seller action from the buyer"),
            _ => {}
        }
    }

    fn check_seller_action(
        &mut self,
        origin: Origin,
        event: &Event,
        before: &str,
        action: &Action,
    ) {
        let Some(seller) = self.seller.as_ref() else { return };
        let quote = *seller.quote();
        let t = seller.timeout_height().unwrap_or(0);
        let hash = seller.payment_hash();
        let script = seller.htlc().map(|h| h.script_pubkey().to_owned());
        let after = seller.state().name();
        match action {
            Action::ClaimPayment { payment_hash, amount_msat, preimage } => {
                self.check(
                    *payment_hash == hash && preimage.payment_hash() == hash,
                    "ClaimPayment for another hash",
                );
                self.check(after == "Paid" || after == "Claimed", "ClaimPayment outside Paid");
                if before == "Funded" && origin == Origin::Handle {
                    let Event::PaymentClaimable { amount_msat: got, .. } = event else {
                        self.fail("the first ClaimPayment not caused by a claimable payment");
                    };
                    self.check(*got == *amount_msat, "ClaimPayment of another amount");
                    self.check(
                        *amount_msat >= quote.invoice_amount_sat.saturating_mul(1000),
                        "ClaimPayment of a payment below the invoice amount",
                    );
                    self.check(
                        self.ctx.tip_height.saturating_add(self.offer.claim_margin) <= t,
                        "ClaimPayment with tip + claim_margin > timeout_height",
                    );
                    self.check(
                        !self.track.seller_refunded,
                        "ClaimPayment after a refund was broadcast",
                    );
                    if let Some(op) = seller_funding(seller.state()) {
                        self.check(
                            self.chain.spender_of(op).is_none(),
                            "ClaimPayment with the HTLC already spent",
                        );
                    }
                }
                self.check(
                    before != "RefundingCooperatively"
                        && before != "Refunding"
                        && before != "Refunded",
                    "ClaimPayment after a refund started",
                );
                self.track.seller_claimed = true;
            }
            Action::Broadcast { tx, purpose } => match purpose {
                TxPurpose::Funding => {
                    let ok = script.as_ref().is_some_and(|s| {
                        tx.output.iter().any(|o| {
                            o.script_pubkey == *s && o.value.to_sat() == quote.htlc_amount_sat
                        })
                    });
                    self.check(ok, "a funding transaction that does not pay the HTLC");
                    self.track.seller_funded = true;
                }
                TxPurpose::CooperativeRefund | TxPurpose::ScriptRefund => {
                    self.check(
                        !self.track.seller_claimed,
                        "a refund signed after the point of no return (payment claimed)",
                    );
                    if *purpose == TxPurpose::ScriptRefund {
                        self.check(
                            self.ctx.tip_height >= t,
                            "a refund-leaf spend before the tip reached timeout_height",
                        );
                        self.check(
                            tx.lock_time == LockTime::from_consensus(t),
                            "a refund-leaf spend whose nLockTime is not timeout_height",
                        );
                    }
                    self.track.seller_refunded = true;
                }
                _ => self.fail("the seller broadcast a claim"),
            },
            Action::Send(env) => match &env.body {
                Message::CoopClaimResponse(_) => {
                    self.check(
                        self.track.seller_claimed && after == "Paid",
                        "a claim partial signature before the point of no return (not Paid)",
                    );
                    self.track.coop_claim_responses += 1;
                    self.check(
                        self.track.coop_claim_responses <= MAX_COOP_SIGNATURES,
                        "more coop_claim_responses than MAX_COOP_SIGNATURES",
                    );
                }
                Message::CoopRefundRequest(_) => {
                    self.check(
                        !self.track.seller_claimed,
                        "a cooperative refund asked for after the point of no return (payment claimed)",
                    );
                    self.check(
                        after == "RefundingCooperatively",
                        "coop_refund_request outside RefundingCooperatively",
                    );
                }
                Message::SwapAbort(_) => {
                    self.check(
                        !self.track.seller_funded,
                        "swap_abort sent by the seller after funding",
                    );
                }
                _ => {}
            },
            Action::FundHtlc { script_pubkey, amount_sat, .. } => {
                self.check(
                    Some(script_pubkey) == script.as_ref() && *amount_sat == quote.htlc_amount_sat,
                    "FundHtlc for another script or amount",
                );
            }
            Action::CreateInvoice { payment_hash, amount_msat, .. } => {
                self.check(
                    *payment_hash == hash
                        && *amount_msat == quote.invoice_amount_sat.saturating_mul(1000),
                    "CreateInvoice for another hash or amount",
                );
            }
            Action::PayInvoice { .. } => self.fail("a buyer action from the seller"),
            _ => {}
        }
    }

    /// Invariants of the pair after every step.
    fn check_global(&self) {
        self.check(
            !self.buyer.as_ref().is_some_and(|b| matches!(b.state(), BuyerState::Lost { .. })),
            "the buyer lost the HTLC after paying (no honest seller refunds a paid swap)",
        );
        if let Some(s) = &self.seller {
            if let SellerState::Claimed { amount_msat, .. } = s.state() {
                self.check(
                    self.track.seller_claimed && *amount_msat > 0,
                    "the HTLC was claimed from the seller without the seller being paid",
                );
            }
            if self.track.seller_claimed {
                self.check(
                    !matches!(
                        s.state(),
                        SellerState::Refunded { .. } | SellerState::Refunding { .. }
                    ),
                    "the seller refunds after it was paid",
                );
            }
        }
        if self.track.buyer_signed_refund {
            self.check(!self.track.payment_succeeded, "the buyer paid after signing a refund");
        }
    }

    // ----- carrying out actions ---------------------------------------------------------------

    fn persist(&mut self, party: Party) -> bool {
        let bytes = record_of(party, self.buyer.as_ref(), self.seller.as_ref());
        // A record always reads back, and reads back to the same record.
        let back = SwapRecord::from_bytes(&bytes).expect("a persisted record decodes");
        let again = back.to_bytes().expect("a decoded record encodes");
        self.check(again == bytes, "a persisted record does not read back identically");
        match party {
            Party::Buyer => self.buyer_record = bytes,
            Party::Seller => self.seller_record = bytes,
        }
        if let Some((p, n)) = self.crash_at {
            if p == party {
                if n == 0 {
                    self.crash_at = None;
                    self.log.push(format!(
                        "  crash {party:?} after persisting {}",
                        self.state_name(party)
                    ));
                    self.restart(party);
                    return false;
                }
                self.crash_at = Some((p, n - 1));
            }
        }
        true
    }

    fn run(&mut self, party: Party, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist => {
                    let alive = self.persist(party);
                    if !alive {
                        return; // The rest died with the process.
                    }
                }
                Action::Send(env) => {
                    // Real encoding on the way; our own messages always decode.
                    let env = decode_envelope(&encode(&env)).expect("our own message decodes");
                    if party == Party::Buyer {
                        self.sent_by_buyer.push(env.clone());
                        self.to_seller.push_back(env);
                    } else {
                        self.sent_by_seller.push(env.clone());
                        self.to_buyer.push_back(env);
                    }
                }
                Action::CreateInvoice { payment_hash, amount_msat, expiry_secs, .. } => {
                    let invoice = crate::make_invoice(&InvoiceSpec {
                        currency: lightning_invoice::Currency::Regtest,
                        payment_hash,
                        amount_msat: Some(amount_msat),
                        created_at: self.ctx.now_secs,
                        expiry_secs: u64::from(expiry_secs),
                        min_final_cltv: 42,
                        description: "fuzz".into(),
                        signer: crate::ln_secret(),
                        explicit_payee: None,
                    })
                    .expect("the seller's invoice builds");
                    // The pair's offer asks for no prepay.
                    self.feed(party, Event::InvoiceCreated { invoice, prepay_invoice: None });
                }
                Action::FundHtlc { script_pubkey, amount_sat, .. } => {
                    if self.next_funding_fails {
                        self.next_funding_fails = false;
                        self.feed(party, Event::FundingFailed { reason: "wallet empty".into() });
                        continue;
                    }
                    self.funding_counter = self.funding_counter.wrapping_add(1);
                    let tx = Transaction {
                        version: Version::TWO,
                        lock_time: LockTime::ZERO,
                        input: vec![TxIn {
                            previous_output: OutPoint {
                                txid: Txid::from_byte_array([self.funding_counter; 32]),
                                vout: 0,
                            },
                            script_sig: ScriptBuf::new(),
                            sequence: Sequence::MAX,
                            witness: Witness::new(),
                        }],
                        output: vec![
                            TxOut { value: Amount::from_sat(50_000), script_pubkey: p2tr(11) },
                            TxOut { value: Amount::from_sat(amount_sat), script_pubkey },
                        ],
                    };
                    self.feed(party, Event::FundingBuilt { tx, vout: 1 });
                }
                Action::Broadcast { tx, .. } => self.broadcast(tx),
                Action::QueueClaim => {
                    // The node's claim batcher, with this one swap: built, taken, broadcast.
                    let ctx = self.ctx;
                    if let Ok((event, tx)) = looper_protocol::claims::claim_alone(self.b(), &ctx) {
                        let txid = tx.compute_txid();
                        self.feed(party, event);
                        if self.b().claim_txid() == Some(txid) {
                            self.broadcast(tx);
                        }
                    }
                }
                Action::WatchHtlc { script_pubkey } => {
                    match party {
                        Party::Buyer => self.buyer_watch = Some(script_pubkey),
                        Party::Seller => self.seller_watch = Some(script_pubkey),
                    }
                    self.notify_chain();
                }
                Action::PayInvoice {
                    invoice,
                    amount_msat,
                    attempt,
                    max_total_cltv_expiry_delta,
                } => {
                    let inv: Bolt11Invoice =
                        invoice.parse().expect("the buyer pays a checked invoice");
                    let hash = PaymentHash(inv.payment_hash().to_byte_array());
                    // One payment per attempt: the node finds an attempt by its identity.
                    if !self.payments.iter().any(|p| p.attempt == attempt) {
                        let expiry_height = self
                            .ctx
                            .tip_height
                            .saturating_add(1)
                            .saturating_add(max_total_cltv_expiry_delta);
                        self.payments.push(Payment {
                            expiry_height,
                            hash,
                            amount_msat,
                            state: PaymentState::InFlight,
                            attempt,
                            preimage: None,
                        });
                    }
                }
                Action::ClaimPayment { payment_hash, preimage, .. } => {
                    let settled = self.settle(payment_hash, preimage);
                    if settled {
                        // The node reports the claim settled.
                        self.feed(party, Event::PaymentClaimed { payment_hash });
                    }
                }
                Action::CheckPayment { payment_hash } => {
                    let status = self.payment_status(party, payment_hash);
                    if party == Party::Buyer && matches!(status, PaymentStatus::Succeeded { .. }) {
                        self.track.payment_succeeded = true;
                    }
                    self.feed(party, Event::PaymentStatus { payment_hash, status });
                }
                Action::CheckHtlc { outpoint, script_pubkey } => {
                    let status = self.htlc_status(outpoint, &script_pubkey);
                    self.feed(party, Event::HtlcChecked { outpoint, status });
                }
                Action::FailPayment { payment_hash } => {
                    for i in 0..self.payments.len() {
                        if self.payments[i].hash == payment_hash
                            && self.payments[i].state == PaymentState::InFlight
                        {
                            self.payments[i].state = PaymentState::Failed;
                            let attempt = self.payments[i].attempt;
                            self.buyer_results.push_back((
                                payment_hash,
                                payment_failed("failed back by the seller", attempt),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The seller's node claims the held payments for `hash`; whether one settled now.
    fn settle(&mut self, hash: PaymentHash, preimage: Preimage) -> bool {
        let mut settled = false;
        for i in 0..self.payments.len() {
            if self.payments[i].hash == hash && self.payments[i].state == PaymentState::InFlight {
                self.payments[i].state = PaymentState::Settled;
                self.payments[i].preimage = Some(preimage.clone());
                self.buyer_results.push_back((hash, payment_succeeded(preimage.clone())));
                settled = true;
            }
        }
        settled
    }

    /// Whether a payment for `hash` may still succeed or did.
    fn payment_live(&self, hash: PaymentHash) -> bool {
        self.payments.iter().any(|p| p.hash == hash && p.state != PaymentState::Failed)
    }

    /// What `party`'s Lightning node knows of the payment for `hash` (its answer to
    /// `CheckPayment`).
    fn payment_status(&self, party: Party, hash: PaymentHash) -> PaymentStatus {
        let mine: Vec<&Payment> = self.payments.iter().filter(|p| p.hash == hash).collect();
        if let Some(p) = mine.iter().find(|p| p.state == PaymentState::Settled) {
            let preimage = if party == Party::Buyer { p.preimage.clone() } else { None };
            return PaymentStatus::Succeeded { preimage };
        }
        if mine.is_empty() {
            return PaymentStatus::Unknown;
        }
        match party {
            Party::Buyer if mine.iter().any(|p| p.state == PaymentState::InFlight) => {
                PaymentStatus::Pending
            }
            // A payment on its way has not reached the seller's node yet.
            Party::Seller if mine.iter().all(|p| p.state == PaymentState::InFlight) => {
                PaymentStatus::Unknown
            }
            _ => PaymentStatus::Failed,
        }
    }

    /// The HTLC output as the chain shows it now (the answer to `CheckHtlc`).
    fn htlc_status(&self, outpoint: OutPoint, script: &ScriptBuf) -> HtlcStatus {
        let found = self.chain.outputs_to(script).into_iter().find(|(op, _, _)| *op == outpoint);
        match found {
            None => HtlcStatus::Missing,
            Some(_) if self.chain.spender_of(outpoint).is_some() => HtlcStatus::Spent,
            Some((_, value_sat, confirmed_height)) => {
                HtlcStatus::Unspent { value_sat, confirmed_height }
            }
        }
    }

    fn broadcast(&mut self, tx: Transaction) {
        let txid = tx.compute_txid();
        if self.chain.all().any(|(t, _)| t.compute_txid() == txid) {
            return;
        }
        // First seen wins.
        if tx.input.iter().any(|i| self.chain.spender_of(i.previous_output).is_some()) {
            self.log.push("  broadcast rejected: double spend".into());
            return;
        }
        // Refund-leaf spends are non-final before the timeout.
        if tx.lock_time.to_consensus_u32() > self.ctx.tip_height {
            self.log.push("  broadcast rejected: non-final".into());
            return;
        }
        self.chain.mempool.push(tx);
        self.notify_chain();
    }

    fn notify_chain(&mut self) {
        for party in [Party::Buyer, Party::Seller] {
            let watch = match party {
                Party::Buyer => self.buyer_watch.clone(),
                Party::Seller => self.seller_watch.clone(),
            };
            let Some(spk) = watch else { continue };
            for (op, value, height) in self.chain.outputs_to(&spk) {
                let key = format!("out {op} {height:?}");
                if !self.seen(party).contains(&key) {
                    self.seen(party).push(key);
                    self.feed(
                        party,
                        Event::HtlcOutput {
                            outpoint: op,
                            value_sat: value,
                            script_pubkey: spk.clone(),
                            confirmed_height: height,
                        },
                    );
                }
                if let Some((tx, h)) = self.chain.spender_of(op) {
                    let key = format!("spent {op} {} {h:?}", tx.compute_txid());
                    if !self.seen(party).contains(&key) {
                        self.seen(party).push(key);
                        self.feed(party, Event::HtlcSpent { tx, confirmed_height: h });
                    }
                }
            }
        }
    }

    fn seen(&mut self, party: Party) -> &mut Vec<String> {
        match party {
            Party::Buyer => &mut self.buyer_seen,
            Party::Seller => &mut self.seller_seen,
        }
    }

    /// Restarts a party from its last persisted record.
    pub fn restart(&mut self, party: Party) {
        self.log.push(format!("restart {party:?}"));
        let ctx = self.ctx;
        // The node watches and re-reads the chain after a restart.
        match party {
            Party::Buyer => self.buyer_seen.clear(),
            Party::Seller => self.seller_seen.clear(),
        }
        match party {
            Party::Buyer => {
                if self.buyer_record.is_empty() {
                    return;
                }
                let Ok(SwapRecord::Buyer(b)) = SwapRecord::from_bytes(&self.buyer_record) else {
                    self.fail("the buyer's record does not restore");
                };
                let keys = buyer_keys(b.key_index());
                let b = BuyerSwap::load(b, keys).expect("the buyer's keys fit");
                let before = b.state().name();
                let resends = b.outbox().sent.len();
                let buyer = self.buyer.insert(b);
                let actions = buyer.resume(&ctx, &mut self.rng).expect("the buyer resumes");
                self.check_actions(
                    Party::Buyer,
                    Origin::Resume,
                    &Event::Tick,
                    before,
                    &actions,
                    resends,
                );
                self.run(Party::Buyer, actions);
            }
            Party::Seller => {
                if self.seller_record.is_empty() {
                    return;
                }
                let Ok(SwapRecord::Seller(s)) = SwapRecord::from_bytes(&self.seller_record) else {
                    self.fail("the seller's record does not restore");
                };
                let keys = seller_keys(s.key_index());
                let s = SellerSwap::load(s, keys).expect("the seller's keys fit");
                let before = s.state().name();
                let resends = s.outbox().sent.len();
                self.seller = Some(s);
                let actions = match self.seller.as_mut() {
                    Some(s) => s.resume(&ctx, &mut self.rng).expect("the seller resumes"),
                    None => Vec::new(),
                };
                self.check_actions(
                    Party::Seller,
                    Origin::Resume,
                    &Event::Tick,
                    before,
                    &actions,
                    resends,
                );
                self.run(Party::Seller, actions);
            }
        }
        self.notify_chain();
        self.check_global();
    }

    // ----- the environment ---------------------------------------------------------------------

    fn queue(&mut self, to: Party) -> &mut VecDeque<Envelope> {
        match to {
            Party::Buyer => &mut self.to_buyer,
            Party::Seller => &mut self.to_seller,
        }
    }

    /// Delivers an envelope to `to` as the transport would: encoded, size-checked and decoded.
    fn deliver(&mut self, to: Party, env: Envelope) {
        let Ok(env) = decode_envelope(&encode(&env)) else {
            self.log.push(format!("{to:?}: undecodable message dropped"));
            return;
        };
        if to == Party::Seller && self.seller.is_none() {
            let Message::SwapRequest(req) = env.body.clone() else { return };
            self.log.push("Seller <- swap_request".into());
            match SellerSwap::from_request(
                env.swap_id,
                "buyer".into(),
                self.offer.clone(),
                req,
                seller_keys(0),
                p2tr(10),
                SellerPolicy::default(),
                &self.ctx,
            ) {
                Ok((s, actions)) => {
                    self.seller = Some(s);
                    self.check_actions(
                        Party::Seller,
                        Origin::Handle,
                        &Event::Tick,
                        "AwaitingInvoice",
                        &actions,
                        0,
                    );
                    self.run(Party::Seller, actions);
                }
                Err(e) => {
                    let reply = Envelope::error_reply(env.swap_id, 0, e);
                    self.to_buyer.push_back(reply);
                }
            }
            return;
        }
        if to == Party::Buyer && self.buyer.is_none() {
            // Loop in: the maker (the claimer) is made from the taker's request.
            let Message::LoopInRequest(req) = env.body.clone() else { return };
            self.log.push("Buyer <- swap_request (loop in)".into());
            match BuyerSwap::from_loop_in_request(
                env.swap_id,
                "seller".into(),
                self.offer.clone(),
                req,
                buyer_keys(0),
                p2tr(20),
                buyer_policy(),
                &self.ctx,
            ) {
                Ok((b, actions)) => {
                    self.buyer = Some(b);
                    self.check_actions(
                        Party::Buyer,
                        Origin::Handle,
                        &Event::Tick,
                        "Accepting",
                        &actions,
                        0,
                    );
                    self.run(Party::Buyer, actions);
                }
                Err(e) => {
                    let reply = Envelope::error_reply(env.swap_id, 0, e);
                    self.to_seller.push_back(reply);
                }
            }
            return;
        }
        self.feed(to, Event::Message(env));
    }

    fn take(&mut self, to: Party, idx: u8) -> Option<Envelope> {
        let q = self.queue(to);
        if q.is_empty() {
            return None;
        }
        let i = usize::from(idx) % q.len();
        q.remove(i)
    }

    fn next_seq(&self, to: Party) -> u32 {
        match to {
            Party::Buyer => self.buyer.as_ref().map_or(0, |b| b.inbox().next_seq),
            Party::Seller => self.seller.as_ref().map_or(0, |s| s.inbox().next_seq),
        }
    }

    fn tick_both(&mut self) {
        self.feed(Party::Buyer, Event::Tick);
        self.feed(Party::Seller, Event::Tick);
    }

    fn mine(&mut self) {
        self.ctx.tip_height += 1;
        self.ctx.now_secs += 600;
        let h = self.ctx.tip_height;
        for tx in std::mem::take(&mut self.chain.mempool) {
            self.chain.confirmed.push((h, tx));
        }
        self.log.push(format!("mined {h}"));
        // A payment still on its way when its HTLCs expire fails back, and the buyer's node
        // says so at once.
        for i in 0..self.payments.len() {
            let p = &self.payments[i];
            if p.state == PaymentState::InFlight && p.expiry_height <= h {
                self.payments[i].state = PaymentState::Failed;
                let attempt = self.payments[i].attempt;
                self.feed(Party::Buyer, payment_failed("htlc expired", attempt));
            }
        }
        self.notify_chain();
        self.tick_both();
    }

    fn reorg(&mut self) {
        let h = self.ctx.tip_height;
        let (back, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.chain.confirmed)
            .into_iter()
            .partition(|(height, _)| *height == h);
        self.chain.confirmed = keep;
        let mut mempool: Vec<Transaction> = back.into_iter().map(|(_, t)| t).collect();
        mempool.append(&mut self.chain.mempool);
        self.chain.mempool = mempool;
        self.ctx.tip_height -= 1;
        self.log.push(format!("reorg to {}", self.ctx.tip_height));
        self.notify_chain();
    }

    /// A payment of the buyer reaches the seller.
    fn payment_arrives(&mut self, idx: u8, underpay: bool) {
        let live: Vec<usize> = (0..self.payments.len())
            .filter(|i| self.payments[*i].state == PaymentState::InFlight)
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[usize::from(idx) % live.len()];
        let (hash, amount) = (self.payments[i].hash, self.payments[i].amount_msat);
        let amount_msat = if underpay { amount.saturating_sub(1_000) } else { amount };
        self.feed(Party::Seller, Event::PaymentClaimable { payment_hash: hash, amount_msat });
        // No answer from the seller (unknown hash, refused): its node fails the payment back.
        if self.payments[i].state == PaymentState::InFlight {
            self.payments[i].state = PaymentState::Failed;
            let attempt = self.payments[i].attempt;
            self.buyer_results.push_back((hash, payment_failed("no answer", attempt)));
        }
    }

    /// A payment of the buyer fails before reaching the seller (`not_sent`: it never left).
    fn payment_fails(&mut self, idx: u8, not_sent: bool) {
        let live: Vec<usize> = (0..self.payments.len())
            .filter(|i| self.payments[*i].state == PaymentState::InFlight)
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[usize::from(idx) % live.len()];
        self.payments[i].state = PaymentState::Failed;
        let (hash, attempt) = (self.payments[i].hash, self.payments[i].attempt);
        self.buyer_results.push_back((
            hash,
            if not_sent {
                payment_not_sent("no usable channel", attempt)
            } else {
                payment_failed("temporary channel failure", attempt)
            },
        ));
    }

    fn deliver_payment_result(&mut self) {
        let Some((_, event)) = self.buyer_results.pop_front() else { return };
        if matches!(event, Event::PaymentSucceeded { .. }) {
            self.track.payment_succeeded = true;
        }
        self.feed(Party::Buyer, event);
    }

    /// Alters one JSON field of a queued message (the peer lies), keeping its `seq`.
    fn alter(&mut self, to: Party, idx: u8, field: u8, how: u8, value: u64) {
        let Some(env) = self.take(to, idx) else { return };
        let mut json: serde_json::Value = serde_json::from_slice(&encode(&env)).unwrap();
        let mut paths: Vec<Vec<String>> = Vec::new();
        collect_paths(&json, &mut Vec::new(), &mut paths);
        paths.retain(|p| {
            p.first().map(String::as_str) != Some("seq")
                && p.first().map(String::as_str) != Some("v")
        });
        if paths.is_empty() {
            return;
        }
        let path = paths[usize::from(field) % paths.len()].clone();
        let Some(leaf) = pointer_mut(&mut json, &path) else { return };
        *leaf = mutate_leaf(leaf, how, value);
        self.log.push(format!("{to:?}: altered {} of {}", path.join("."), env.body.kind_name()));
        let bytes = serde_json::to_vec(&json).unwrap();
        match decode_envelope(&bytes) {
            Ok(altered) => self.deliver(to, altered),
            Err(e) => self.log.push(format!("  altered message refused by the decoder: {e}")),
        }
    }

    /// The peer sends one of its earlier messages again as a new one (next `seq`).
    fn replay(&mut self, to: Party, idx: u8) {
        let history = match to {
            Party::Buyer => &self.sent_by_seller,
            Party::Seller => &self.sent_by_buyer,
        };
        if history.is_empty() {
            return;
        }
        let mut env = history[usize::from(idx) % history.len()].clone();
        env.seq = self.next_seq(to);
        self.log.push(format!("{to:?}: replayed {} as seq {}", env.body.kind_name(), env.seq));
        self.deliver(to, env);
    }

    /// The peer sends an abort or an error of its own (next `seq`).
    fn forge(&mut self, to: Party, kind: u8) {
        let reasons = [
            AbortReason::UserRequested,
            AbortReason::ChecksFailed,
            AbortReason::PaymentFailed,
            AbortReason::TimeoutTooClose,
            AbortReason::FundingTimeout,
            AbortReason::OfferWithdrawn,
            AbortReason::Internal,
        ];
        let body = if kind & 0x80 == 0 {
            Message::SwapAbort(SwapAbort {
                reason: reasons[usize::from(kind) % reasons.len()],
                message: None,
            })
        } else {
            Message::Error(ErrorMessage::new(ErrorCode::InvalidState, "forged"))
        };
        let swap_id = self.swap_id;
        let env = Envelope::new(swap_id, self.next_seq(to), body);
        self.log.push(format!("{to:?}: forged {}", env.body.kind_name()));
        self.deliver(to, env);
    }

    /// Runs the fuzz bytes as a sequence of steps, then lets the swap finish honestly and checks
    /// the outcome.
    pub fn run_bytes(data: &[u8]) {
        let mut it = data.iter().copied();
        // The direction byte: its low bit.
        let loop_in = it.next().is_some_and(|d| d & 1 == 1);
        let mut pair = Pair::with_direction(loop_in);
        let mut steps = 0;
        while let Some(op) = it.next() {
            steps += 1;
            if steps > 256 {
                break;
            }
            let mut arg = || it.next().unwrap_or(0);
            match op % 20 {
                0 | 1 => {
                    let (to, i) = (Party::from_byte(op >> 5), arg());
                    if let Some(env) = pair.take(to, i) {
                        pair.log.push(format!("deliver {} to {to:?}", env.body.kind_name()));
                        pair.deliver(to, env);
                    }
                }
                2 => {
                    let (to, i) = (Party::from_byte(op >> 5), arg());
                    if let Some(env) = pair.take(to, i) {
                        pair.log.push(format!("drop {} to {to:?}", env.body.kind_name()));
                    }
                }
                3 => {
                    let (to, i) = (Party::from_byte(op >> 5), arg());
                    let q = pair.queue(to);
                    if !q.is_empty() {
                        let e = q[usize::from(i) % q.len()].clone();
                        q.push_back(e);
                    }
                }
                4 => {
                    let to = Party::from_byte(op >> 5);
                    let (i, field, how) = (arg(), arg(), arg());
                    let value = u64::from_le_bytes([arg(), arg(), arg(), arg(), 0, 0, 0, 0]);
                    pair.alter(to, i, field, how, value);
                }
                5 => {
                    let (to, i) = (Party::from_byte(op >> 5), arg());
                    pair.replay(to, i);
                }
                6 => {
                    let (to, k) = (Party::from_byte(op >> 5), arg());
                    pair.forge(to, k);
                }
                7 | 8 => {
                    let n = 1 + arg() % 8;
                    for _ in 0..n {
                        pair.mine();
                    }
                }
                9 => {
                    if pair.ctx.tip_height > crate::START_HEIGHT {
                        pair.reorg();
                    }
                }
                10 => {
                    pair.ctx.now_secs += u64::from(arg() % 64);
                    pair.tick_both();
                }
                11 => {
                    let p = Party::from_byte(op >> 5);
                    pair.feed(p, Event::Tick);
                }
                12 => {
                    let (i, under) = (arg(), op & 0x80 != 0);
                    pair.payment_arrives(i, under);
                }
                13 => {
                    let i = arg();
                    pair.payment_fails(i, op & 0x80 != 0);
                }
                14 | 15 => pair.deliver_payment_result(),
                16 => {
                    let p = Party::from_byte(op >> 5);
                    pair.restart(p);
                }
                17 => {
                    let (p, n) = (Party::from_byte(op >> 5), arg() % 4);
                    pair.crash_at = Some((p, n));
                }
                18 => {
                    let p = Party::from_byte(op >> 5);
                    pair.log.push(format!("user abort {p:?}"));
                    pair.feed(p, Event::UserAbort);
                }
                _ => pair.next_funding_fails = op & 0x80 != 0,
            }
        }
        pair.finish();
        if std::env::var_os("LOOPER_FUZZ_LOG").is_some() {
            eprintln!(
                "buyer: {}, seller: {}\n{}",
                pair.state_name(Party::Buyer),
                pair.state_name(Party::Seller),
                pair.log.join("\n")
            );
        }
    }

    /// Lets the swap finish with an honest network: both restart (re-sending everything), every
    /// message and payment is delivered, blocks are mined past the timeout. Then the outcome must
    /// be one where nobody lost money (`docs/fuzzing.md`, "Outcome").
    fn finish(&mut self) {
        self.log.push("--- finish honestly".into());
        self.crash_at = None;
        self.restart(Party::Buyer);
        self.restart(Party::Seller);
        for _ in 0..400 {
            self.pump();
            // No seller (a loop out's request never delivered): nothing to wait for. A seller
            // without a timeout yet (a loop in's `Requested`): until it ends or the rounds do.
            let end = self
                .seller
                .as_ref()
                .map_or(0, |s| s.timeout_height().unwrap_or(u32::MAX - 30).saturating_add(30));
            let done = self.buyer.as_ref().is_none_or(|b| b.kind() != StateKind::Pending)
                && self.seller.as_ref().is_none_or(|s| s.kind() != StateKind::Pending);
            if done || self.ctx.tip_height > end {
                break;
            }
            self.ctx.now_secs += 31;
            self.tick_both();
            self.pump();
            self.mine();
        }
        self.pump();
        if self.track.payment_succeeded || self.track.seller_claimed {
            self.check(
                matches!(self.b().state(), BuyerState::Claimed { .. }),
                "outcome: the seller was paid but the buyer did not claim the HTLC",
            );
        }
        if let Some(s) = &self.seller {
            if self.track.seller_funded {
                let done =
                    matches!(s.state(), SellerState::Claimed { .. } | SellerState::Refunded { .. });
                self.check(done, "outcome: the seller's HTLC is neither claimed nor refunded");
            }
            // A loop-in taker whose request no maker of its swap answered (its swap id altered
            // on the way) waits in `Requested` with nothing locked, as a loop-out taker in
            // `Requested` does.
            let unanswered = matches!(s.state(), SellerState::Requested);
            self.check(
                s.kind() != StateKind::Pending || unanswered,
                "outcome: the seller never finished",
            );
        }
    }

    /// Delivers everything queued until the network is quiet.
    fn pump(&mut self) {
        for _ in 0..200 {
            if let Some(env) = self.to_seller.pop_front() {
                self.deliver(Party::Seller, env);
            } else if let Some(env) = self.to_buyer.pop_front() {
                self.deliver(Party::Buyer, env);
            } else if self.payments.iter().any(|p| p.state == PaymentState::InFlight) {
                self.payment_arrives(0, false);
            } else if !self.buyer_results.is_empty() {
                self.deliver_payment_result();
            } else {
                return;
            }
        }
    }
}

// The buyer's Lightning node's reports of a payment's outcome, built in one place.

fn payment_succeeded(preimage: Preimage) -> Event {
    Event::PaymentSucceeded { preimage }
}

fn payment_failed(reason: &str, attempt: u32) -> Event {
    Event::PaymentFailed { reason: reason.into(), attempt }
}

fn payment_not_sent(reason: &str, attempt: u32) -> Event {
    Event::PaymentNotSent { reason: reason.into(), attempt }
}

#[allow(unreachable_patterns)] // new variants print with Debug
fn event_label(e: &Event) -> String {
    match e {
        Event::Message(env) => format!("{} seq {}", env.body.kind_name(), env.seq),
        Event::Tick => "tick".into(),
        Event::HtlcOutput { confirmed_height, value_sat, .. } => {
            format!("htlc output {value_sat} sat at {confirmed_height:?}")
        }
        Event::HtlcSpent { tx, confirmed_height } => {
            format!("htlc spent by {} at {confirmed_height:?}", tx.compute_txid())
        }
        Event::FundingBuilt { .. } => "funding built".into(),
        Event::FundingFailed { .. } => "funding failed".into(),
        Event::InvoiceCreated { .. } => "invoice created".into(),
        Event::PaymentClaimable { amount_msat, .. } => {
            format!("payment claimable {amount_msat} msat")
        }
        Event::PaymentClaimed { .. } => "payment claimed".into(),
        Event::PaymentSucceeded { .. } => "payment succeeded".into(),
        Event::PaymentFailed { .. } => "payment failed".into(),
        Event::PaymentNotSent { .. } => "payment not sent".into(),
        Event::UserAbort => "user abort".into(),
        other => format!("{other:?}"),
    }
}

#[allow(unreachable_patterns)] // new variants print with Debug
fn action_label(a: &Action) -> String {
    match a {
        Action::Persist => "persist".into(),
        Action::Send(env) => format!("send {} seq {}", env.body.kind_name(), env.seq),
        Action::CreateInvoice { .. } => "create invoice".into(),
        Action::FundHtlc { .. } => "fund htlc".into(),
        Action::Broadcast { purpose, .. } => format!("broadcast {purpose:?}"),
        Action::WatchHtlc { .. } => "watch htlc".into(),
        Action::PayInvoice { max_total_cltv_expiry_delta, .. } => {
            format!("pay invoice (cltv {max_total_cltv_expiry_delta})")
        }
        Action::ClaimPayment { .. } => "claim payment".into(),
        Action::FailPayment { .. } => "fail payment".into(),
        Action::Notify(n) => format!("notify {n:?}"),
        other => format!("{other:?}"),
    }
}

fn collect_paths(v: &serde_json::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                prefix.push(k.clone());
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn pointer_mut<'a>(
    v: &'a mut serde_json::Value,
    path: &[String],
) -> Option<&'a mut serde_json::Value> {
    let mut cur = v;
    for key in path {
        cur = cur.as_object_mut()?.get_mut(key)?;
    }
    Some(cur)
}

/// A lie about one field: a hex digit changed, a number changed, a string cut or replaced.
fn mutate_leaf(v: &serde_json::Value, how: u8, value: u64) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            match how % 3 {
                0 if !chars.is_empty() => {
                    let i = (value as usize) % chars.len();
                    chars[i] = match chars[i] {
                        '0' => '1',
                        'a' => 'b',
                        c if c.is_ascii_hexdigit() => '0',
                        _ => 'a',
                    };
                    Value::String(chars.into_iter().collect())
                }
                1 => Value::String(
                    chars.into_iter().take((value as usize) % (s.len() + 1)).collect(),
                ),
                _ => Value::String(format!("{value:064x}")),
            }
        }
        Value::Number(n) => {
            let x = n.as_u64().unwrap_or(0);
            Value::from(match how % 3 {
                0 => x.wrapping_add(1 + value % 16),
                1 => x.saturating_sub(1 + value % 16),
                _ => value,
            })
        }
        Value::Bool(b) => Value::Bool(!b),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::Pair;

    /// The committed seeds of the `state_machines` target (both directions: the first byte) run
    /// without breaking an invariant, outside libFuzzer (`cargo test` in `fuzz/`).
    #[test]
    fn the_committed_seeds_keep_every_invariant() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/state_machines");
        let mut loop_ins = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            loop_ins += usize::from(bytes.first().is_some_and(|d| d & 1 == 1));
            Pair::run_bytes(&bytes);
        }
        assert!(loop_ins >= 5, "loop-in seeds: {loop_ins}");
    }

    /// Both directions let finish honestly from the start.
    #[test]
    fn both_directions_finish() {
        Pair::run_bytes(&[1]);
        Pair::run_bytes(&[0]);
    }

    /// A few hundred pseudo-random inputs in each direction (a smoke run without libFuzzer;
    /// `LOOPER_FUZZ_SMOKE=N` runs N).
    #[test]
    fn pseudo_random_inputs_keep_every_invariant() {
        use bitcoin::secp256k1::rand::{rngs::StdRng, Rng, SeedableRng};
        let n: usize =
            std::env::var("LOOPER_FUZZ_SMOKE").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
        let mut rng = StdRng::seed_from_u64(42);
        for i in 0..n {
            let len = rng.gen_range(1..160);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            bytes[0] = (i % 2) as u8;
            Pair::run_bytes(&bytes);
        }
    }
}
