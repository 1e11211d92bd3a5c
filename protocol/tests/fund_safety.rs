//! Fund safety (issue 12): each scenario is an attack or a fault that cost a user money before
//! the rule it checks existed (spec `02-swap-flow.md`, "Buyer checks", "Payment attempts",
//! "Cooperative spends"; `03-transactions.md`, "Telling a claim from a refund").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use bitcoin::{Amount, FeeRate, OutPoint, Txid};
use looper_protocol::buyer::{BuyerCheckError, BuyerPolicy, BuyerStart, BuyerState, BuyerSwap};
use looper_protocol::htlc::Htlc;
use looper_protocol::htlc::HtlcSpendPath;
use looper_protocol::keys::SwapKeys;
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::{LockerCheckError, SellerState};
use looper_protocol::spend::{claim_script_path, refund_script_path};
use looper_protocol::swap::{Context, Event, StateKind, TxPurpose, ANTI_REORG_DEPTH};
use looper_protocol::SwapId;
use sim::{Opts, Party, Sim, START_HEIGHT, START_TIME};

use crate::common::{master, pair};

fn sim(opts: Opts) -> Sim {
    Sim::new(Opts { route_cltv: 60, ..opts })
}

fn run(opts: Opts) -> Sim {
    let mut sim = sim(opts);
    sim.run_to_end(400);
    sim.check_invariants();
    sim
}

fn start(offer_margin: u32, amount_sat: u64, policy: BuyerPolicy) -> Result<(), BuyerCheckError> {
    let mut offer = sim::offer();
    offer.claim_margin = offer_margin;
    let ctx = Context::new(START_TIME, START_HEIGHT, FeeRate::from_sat_per_vb(2).unwrap());
    let start = BuyerStart {
        swap_id: SwapId([1; 32]),
        peer: "seller".into(),
        offer,
        amount_sat,
        policy,
        claim_destination: sim::p2tr(20),
        keys: SwapKeys::derive(&master(2), 0).unwrap(),
    };
    BuyerSwap::start(start, &ctx).map(|_| ())
}

/// A seller that never answers the request (offline, or dropping it): the buyer gives up after
/// `REQUEST_TIMEOUT_SECS`, telling the seller, instead of a swap pending for ever.
#[test]
fn a_request_the_seller_never_answers_ends() {
    use looper_protocol::messages::{AbortReason, Message};
    use looper_protocol::swap::{Action, StateKind, REQUEST_TIMEOUT_SECS};
    let ctx = Context::new(START_TIME, START_HEIGHT, FeeRate::from_sat_per_vb(2).unwrap());
    let start = BuyerStart {
        swap_id: SwapId([1; 32]),
        peer: "seller".into(),
        offer: sim::offer(),
        amount_sat: 200_000,
        policy: BuyerPolicy::default(),
        claim_destination: sim::p2tr(20),
        keys: SwapKeys::derive(&master(2), 0).unwrap(),
    };
    let (mut swap, _) = BuyerSwap::start(start, &ctx).unwrap();
    use bitcoin::secp256k1::rand::{rngs::StdRng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(1);
    let at = |secs: u64| {
        Context::new(START_TIME + secs, START_HEIGHT + 1, FeeRate::from_sat_per_vb(2).unwrap())
    };
    let early = swap.handle(Event::Tick, &at(REQUEST_TIMEOUT_SECS - 1), &mut rng).unwrap();
    assert!(early.is_empty(), "{early:?}");
    assert_eq!(swap.state(), &BuyerState::Requested);
    let late = swap.handle(Event::Tick, &at(REQUEST_TIMEOUT_SECS), &mut rng).unwrap();
    assert_eq!(swap.kind(), StateKind::Failed, "{:?}", swap.state());
    assert!(late.contains(&Action::Persist));
    let told = late.iter().any(|a| {
        matches!(a, Action::Send(e) if matches!(&e.body, Message::SwapAbort(m) if m.reason == AbortReason::FundingTimeout))
    });
    assert!(told, "{late:?}");
}

/// Item 1: the seller's offer no longer sets the buyer's safety margin.
#[test]
fn an_offer_below_the_buyers_claim_margin_floor_is_refused() {
    let policy = BuyerPolicy::default();
    assert_eq!(policy.min_claim_margin, 20);
    assert_eq!(
        start(1, 200_000, policy),
        Err(BuyerCheckError::ClaimMarginTooLow { offered: 1, min: 20 })
    );
    assert_eq!(start(20, 200_000, policy), Ok(()));
    // A buyer may demand more than the default.
    let strict = BuyerPolicy { min_claim_margin: 40, ..policy };
    assert!(matches!(start(20, 200_000, strict), Err(BuyerCheckError::ClaimMarginTooLow { .. })));
}

/// Item 1: every payment's budget keeps the buyer's margin, from the tip of that attempt.
#[test]
fn every_payment_keeps_the_claim_margin_before_the_timeout() {
    let sim = run(Opts { fail_first_payments: 2, ..Opts::default() });
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    let timeout = sim.buyer().terms().unwrap().htlc_params.timeout_height;
    assert_eq!(sim.pay_budgets.len(), 3);
    for (tip, budget) in &sim.pay_budgets {
        assert!(tip + budget + 20 <= timeout, "tip {tip} + budget {budget} + 20 > {timeout}");
    }
}

/// Item 2: a failure of an earlier attempt, replayed (after a restart, before the Lightning
/// event loop caught up), neither ends the attempt in flight nor leads to a refund signature.
#[test]
fn a_replayed_failure_of_an_earlier_attempt_is_ignored() {
    let mut sim = sim(Opts { fail_first_payments: 1, payment_delay_blocks: 3, ..Opts::default() });
    sim.pump();
    for _ in 0..20 {
        if sim.attempts.len() == 2 {
            break;
        }
        sim.advance_secs(11);
        sim.mine(1);
    }
    assert_eq!(sim.attempts, vec![1, 2], "{:#?}", sim.log);
    assert!(matches!(sim.buyer().state(), BuyerState::Paying { attempt: 2, .. }));
    for _ in 0..5 {
        let stale = Event::PaymentFailed { attempt: 1, reason: "replayed".into() };
        let actions =
            sim.buyer.as_mut().unwrap().handle(stale, &sim.ctx.clone(), &mut sim.rng).unwrap();
        assert!(actions.is_empty(), "{actions:?}");
    }
    assert!(matches!(sim.buyer().state(), BuyerState::Paying { attempt: 2, .. }));
    // The seller asks for a refund now: refused, a payment is in flight.
    sim.user_abort(Party::Seller);
    sim.pump();
    sim.run_to_end(400);
    sim.check_invariants();
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert!(matches!(sim.seller_state(), SellerState::Claimed { .. }), "{:#?}", sim.log);
}

/// Item 2: a payment found succeeded leads to the claim in any state, also after an abort.
#[test]
fn a_payment_that_succeeds_after_an_abort_is_claimed() {
    let mut sim = sim(Opts { payment_delay_blocks: 2, ..Opts::default() });
    sim.pump();
    for _ in 0..10 {
        if sim.attempts.len() == 1 {
            break;
        }
        sim.mine(1);
    }
    // The old bug: a stale failure moved the swap to Aborted while the payment was in flight.
    // Whatever got it there, the success must still lead to the claim.
    let terms = sim.buyer().terms().cloned();
    let htlc = match &sim.buyer().state() {
        BuyerState::Paying { htlc, .. } => Some(htlc.clone()),
        other => panic!("not paying: {}", other.name()),
    };
    let aborted = BuyerState::Aborted {
        reason: looper_protocol::messages::AbortReason::PaymentFailed,
        check: None,
        message: None,
        terms,
        htlc,
        offered: None,
    };
    // The state is not writable from outside: edit the stored record and load it again.
    let mut record = serde_json::to_value(SwapRecord::from(sim.buyer())).unwrap();
    record["swap"]["state"] = serde_json::to_value(aborted).unwrap();
    let SwapRecord::Buyer(record) = serde_json::from_value(record).unwrap() else {
        panic!("not a buyer record")
    };
    let keys = SwapKeys::derive(&master(2), record.key_index()).unwrap();
    sim.buyer = Some(BuyerSwap::load(record, keys).unwrap());
    sim.run_to_end(400);
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
}

/// Item 3: a buyer that crashed in `Paying` asks its node first and never pays twice; an attempt
/// that never went out is made again with a budget from the current tip.
#[test]
fn resuming_in_paying_never_pays_twice_or_with_a_stale_budget() {
    // The crash hits after `Paying` is persisted and before the payment went out; 3 blocks pass
    // while the node is down.
    let sim = run(Opts {
        crash_at: Some((Party::Buyer, "Paying")),
        crash_downtime_blocks: 3,
        ..Opts::default()
    });
    assert!(sim.crashed);
    assert_eq!(
        sim.pay_budgets.len(),
        1,
        "the attempt that never went out is made once: {:#?}",
        sim.log
    );
    assert!(sim.pay_budgets[0].0 >= START_HEIGHT + 4, "from the tip after the restart");
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    let timeout = sim.buyer().terms().unwrap().htlc_params.timeout_height;
    for (tip, budget) in &sim.pay_budgets {
        assert!(tip + budget + 20 <= timeout, "stale budget: tip {tip} budget {budget}");
    }
    // Down for 30 blocks (5 hours): the invoice expired meanwhile; the buyer pays nothing.
    let sim = run(Opts {
        crash_at: Some((Party::Buyer, "Paying")),
        crash_downtime_blocks: 30,
        ..Opts::default()
    });
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(sim.pay_budgets.is_empty(), "{:?}", sim.pay_budgets);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }));
    // A crash while the payment is in flight: the resumed buyer waits for it.
    let sim = run(Opts {
        crash_at: Some((Party::Buyer, "Paying")),
        payment_delay_blocks: 3,
        ..Opts::default()
    });
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
}

/// Item 5: a seller whose Lightning claim never settles does not co-sign the claim; the HTLC
/// becomes refundable again and is refunded, and the buyer (who never got the preimage) paid
/// nothing.
#[test]
fn a_claim_that_never_settles_leaves_the_htlc_refundable() {
    let sim = run(Opts { seller_claim_never_settles: true, ..Opts::default() });
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert!(!sim.purposes().contains(&TxPurpose::CooperativeClaim));
    assert!(sim.log.iter().any(|l| l.contains("never settled")), "{:#?}", sim.log);
}

/// Item 6: the funding transaction disappears before the payment (reorganised out and
/// dropped, or double-spent): the buyer does not pay for an HTLC that is not there.
#[test]
fn a_funding_that_disappears_is_not_paid_for() {
    for notify in [true, false] {
        let mut sim = sim(Opts::default());
        sim.pump();
        // Funded and in the mempool, not confirmed yet.
        let funding: Txid = match &sim.buyer().state() {
            BuyerState::Funded { htlc, .. } => htlc.outpoint.txid,
            other => panic!("not funded: {} {:#?}", other.name(), sim.log),
        };
        // Double-spent: gone for good. Without `notify` the chain watcher has not seen it yet and
        // the check right before paying finds it gone.
        sim.remove_tx(funding, notify);
        sim.run_to_end(300);
        assert_eq!(sim.buyer_paid_msat, 0, "notify={notify}: {:#?}", sim.log);
        assert!(sim.attempts.is_empty(), "notify={notify}: {:#?}", sim.log);
        assert!(matches!(sim.buyer().state(), BuyerState::Aborted { .. }), "{:#?}", sim.log);
    }
}

/// Item 6 / issue 14: a claim the network dropped goes out again at the next block.
#[test]
fn a_dropped_claim_is_rebroadcast() {
    let sim = run(Opts { drop_first_claim: true, ..Opts::default() });
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    let line = sim.log.iter().find(|l| l.contains("dropped by the network")).unwrap();
    let dropped_at: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let BuyerState::Claimed { claim_txid, .. } = sim.buyer().state() else { unreachable!() };
    let (confirmed_at, _) = sim.chain.confirmed[claim_txid];
    // Out again at the next block, mined in the one after: not a block later.
    assert!(confirmed_at <= dropped_at + 2, "dropped at {dropped_at}, confirmed at {confirmed_at}");
}

/// Item 7: a swap whose claim the buyer could not afford at its highest fee rate is refused
/// before anything is paid.
#[test]
fn a_claim_the_buyer_cannot_afford_is_refused_before_paying() {
    let policy = BuyerPolicy::default();
    assert_eq!(policy.max_claim_fee_rate_sat_vb, 200);
    // 152 vB at 200 sat/vB = 30,400 sat: a 30,000 sat HTLC would be all fee.
    assert!(matches!(
        start(20, 30_000, policy),
        Err(BuyerCheckError::ClaimUnaffordable { claim_fee_sat: 30_400, .. })
    ));
    assert_eq!(start(20, 31_000, policy), Ok(()));
}

/// Item 8: the seller asks for the cooperative refund again when the first request is lost.
#[test]
fn the_seller_asks_for_the_cooperative_refund_again() {
    let sim = run(Opts {
        buyer_aborts_when_funded: true,
        drop_first_refund_request: true,
        ..Opts::default()
    });
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeRefund]);
}

/// Item 8: a claim and a refund are told apart by the spending path in the witness, not by
/// where the outputs pay (a refund may pay anywhere, even to the buyer's claim address).
#[test]
fn claim_or_refund_is_read_from_the_witness() {
    let p = pair(0, START_HEIGHT + 144);
    let outpoint =
        OutPoint { txid: Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()), vout: 0 };
    let amount = Amount::from_sat(100_000);
    let rate = FeeRate::from_sat_per_vb(2).unwrap();
    // The seller's refund paying to the buyer's claim destination is still a refund.
    let refund =
        refund_script_path(&p.htlc, outpoint, amount, p.seller.refund(), sim::p2tr(20), rate)
            .unwrap();
    assert_eq!(p.htlc.spend_path(&refund, outpoint), Some(HtlcSpendPath::RefundLeaf));
    let claim = claim_script_path(
        &p.htlc,
        outpoint,
        amount,
        p.seller.preimage(),
        p.buyer.claim(),
        sim::p2tr(10),
        rate,
    )
    .unwrap();
    assert_eq!(p.htlc.spend_path(&claim, outpoint), Some(HtlcSpendPath::ClaimLeaf));
    let other = OutPoint { vout: 1, ..outpoint };
    assert_eq!(p.htlc.spend_path(&claim, other), None);
}

/// Every check of either role has its own stable code, listed once in `CheckError::CODES` (the node's API
/// answers with it; `node/tests/api_openapi.rs` checks that `node/openapi.yaml` lists each).
#[test]
fn every_buyer_check_has_a_stable_code() {
    let err = start(1, 200_000, BuyerPolicy::default()).unwrap_err();
    assert_eq!(err.code(), "claim_margin_too_low");
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(json["check"], "claim_margin_too_low", "the code is the serialized tag");
    // `code()` and `CODES` name the same checks, as the serialized tag does.
    let all = [
        BuyerCheckError::QuoteMismatch(String::new()),
        BuyerCheckError::FeeTooHigh { fee_sat: 0, max_sat: 0 },
        BuyerCheckError::InvoiceInvalid(String::new()),
        BuyerCheckError::InvoicePayee,
        BuyerCheckError::InvoiceNetwork,
        BuyerCheckError::InvoiceHashMismatch,
        BuyerCheckError::InvoiceAmountMismatch { invoice_msat: 0, quote_msat: 0 },
        BuyerCheckError::InvoiceExpired,
        BuyerCheckError::PrepayTooHigh { prepay_sat: 1, max_sat: 0 },
        BuyerCheckError::PrepayInvoiceInvalid("x".into()),
        BuyerCheckError::HtlcScriptMismatch(String::new()),
        BuyerCheckError::HtlcAmountMismatch { expected_sat: 0, got_sat: 0 },
        BuyerCheckError::TimeoutOutOfRange { timeout_height: 0, min: 0, max: 0 },
        BuyerCheckError::CltvBudgetTooShort { budget: 0, needed: 0 },
        BuyerCheckError::HtlcSpent,
        BuyerCheckError::ClaimMarginTooLow { offered: 0, min: 0 },
        BuyerCheckError::ClaimUnaffordable { htlc_sat: 0, claim_fee_sat: 0, fee_rate_sat_vb: 0 },
        // The loop-in locker's own (one type for both roles: `LockerCheckError` is this one).
        LockerCheckError::NotLoopIn,
        LockerCheckError::InvalidOffer(String::new()),
        LockerCheckError::TimeoutTooLong { blocks: 0, max: 0 },
    ];
    let codes: Vec<&str> = all.iter().map(BuyerCheckError::code).collect();
    assert_eq!(codes, BuyerCheckError::CODES);
    for check in &all {
        assert_eq!(serde_json::to_value(check).unwrap()["check"], check.code());
    }
    let mut sorted = BuyerCheckError::CODES.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), BuyerCheckError::CODES.len(), "codes are unique");
}

/// A buyer restored from a backup onto a Lightning node that lost its payments (the backup may
/// be older than the payment): "no payment known" proves nothing, so it neither pays again nor
/// co-signs a refund; the seller's refund after the timeout ends the swap.
#[test]
fn a_restored_buyer_with_its_payments_lost_never_pays_again_nor_cosigns_a_refund() {
    let mut sim = sim(Opts::default());
    sim.pump();
    assert!(matches!(sim.buyer().state(), BuyerState::Funded { .. }), "{:#?}", sim.log);
    // The backup shows `Funded`; the node that restores it knows no payment.
    let mut record = sim.buyer().record().clone();
    record.mark_lightning_state_lost();
    sim.buyer_record = SwapRecord::from(record).to_bytes().unwrap();
    sim.restart(Party::Buyer);
    sim.user_abort(Party::Seller);
    sim.run_to_end(400);
    assert!(sim.attempts.is_empty(), "paid again: {:?}", sim.attempts);
    assert!(!sim.purposes().contains(&TxPurpose::CooperativeRefund), "{:#?}", sim.log);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(sim.buyer().state().name(), "Lost", "fate unknown: {:#?}", sim.log);
}

/// Item 7 / issue 14: estimates far above the buyer's cap (2,000 sat/vB: 152 vB of it would be
/// more than the 200,000 sat HTLC) do not price the claim away: outside the deadline's urgent
/// window it goes out at the cap, and confirms.
#[test]
fn a_claim_is_priced_at_the_cap_when_estimates_are_above_it() {
    let mut sim = sim(Opts { payment_delay_blocks: 1, ..Opts::default() });
    sim.pump();
    for _ in 0..10 {
        if !sim.attempts.is_empty() {
            break;
        }
        sim.mine(1);
    }
    assert!(matches!(sim.buyer().state(), BuyerState::Paying { .. }), "{:#?}", sim.log);
    sim.ctx.fees.estimates =
        looper_protocol::fees::FeeEstimates::flat(FeeRate::from_sat_per_vb(2_000).unwrap());
    sim.run_to_end(100);
    sim.check_invariants();
    let BuyerState::Claimed { claim_txid, .. } = sim.buyer().state() else {
        panic!("not claimed: {:#?}", sim.log)
    };
    let (_, tx) = sim.chain.confirmed.get(claim_txid).cloned().unwrap();
    assert!(sim.fee_of(&tx) <= 200 * tx.vsize() as u64, "capped: {}", sim.fee_of(&tx));
    assert!(!sim.log.iter().any(|l| l.contains("Stalled")), "{:#?}", sim.log);
}

/// Found by the `state_machines` fuzz target: the seller fails a late payment back, the buyer's
/// node is slow to say so, and the seller's refund confirms first. The buyer, whose payment's
/// fate is still unknown, must not report the swap lost: it waits for the payment's outcome.
/// Failed: the swap ends `Aborted` having paid nothing. Succeeded after the refund (a dishonest
/// seller, or an HTLC that outlived its CLTV budget): `Lost`.
#[test]
fn a_refund_seen_before_the_payments_fate_waits_for_it() {
    let opts =
        Opts { payment_delay_blocks: 130, hold_buyer_failure_reports: true, ..Opts::default() };
    let refunded_while_paying = |sim: &Sim| {
        assert!(refund_recorded_while_paying(sim).is_some(), "{:#?}", sim.log);
        assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    };

    let aborted_unpaid = |sim: &Sim| {
        assert!(
            matches!(
                sim.buyer().state(),
                BuyerState::Aborted { check: Some(BuyerCheckError::HtlcSpent), .. }
            ),
            "{:#?}",
            sim.log
        );
        assert_eq!(sim.buyer_paid_msat, 0);
    };

    // The payment failed: nothing lost.
    let mut sim = run_until_refunded(opts.clone());
    refunded_while_paying(&sim);
    sim.release_held_reports();
    aborted_unpaid(&sim);

    // The record written in between carries the refund: restarted, the buyer asks its node,
    // learns the payment failed, and ends the same way.
    let mut sim = run_until_refunded(opts.clone());
    refunded_while_paying(&sim);
    sim.restart(Party::Buyer);
    aborted_unpaid(&sim);

    // The payment succeeded after the refund: lost, and said so.
    let mut sim = run_until_refunded(opts);
    let preimage = SwapKeys::derive(&master(1), 0).unwrap().preimage().clone();
    sim.inject(Party::Buyer, Event::PaymentSucceeded { preimage });
    assert!(matches!(sim.buyer().state(), BuyerState::Lost { .. }), "{:#?}", sim.log);
}

fn run_until_refunded(opts: Opts) -> Sim {
    let mut sim = sim(opts);
    sim.run_to_end(300);
    sim
}

/// The seller's refund the buyer recorded as confirmed while paying.
fn refund_recorded_while_paying(sim: &Sim) -> Option<Txid> {
    match sim.buyer().state() {
        BuyerState::Paying { htlc, .. } => htlc.spent.filter(|s| !s.ours).map(|s| s.txid),
        _ => None,
    }
}

/// As [`a_refund_seen_before_the_payments_fate_waits_for_it`], but the payment succeeds while
/// the refund is one block deep: the buyer is not `Lost` until the refund is final, starts no
/// claim meanwhile, and claims the HTLC should a reorg take the refund out.
#[test]
fn a_payment_that_succeeds_after_a_refund_is_lost_only_when_the_refund_is_final() {
    let opts =
        Opts { payment_delay_blocks: 130, hold_buyer_failure_reports: true, ..Opts::default() };
    let preimage = SwapKeys::derive(&master(1), 0).unwrap().preimage().clone();
    let refunded_one_deep = |opts: Opts| {
        let mut sim = sim(opts);
        sim.pump();
        for _ in 0..300 {
            if let Some(txid) = refund_recorded_while_paying(&sim) {
                assert_eq!(sim.confirmed_at(txid), Some(sim.ctx.tip_height), "one block deep");
                return (sim, txid);
            }
            sim.advance_secs(31);
            sim.mine(1);
        }
        panic!("never refunded while paying: {:#?}", sim.log)
    };

    // The refund stays: lost, exactly when it is final.
    let (mut sim, refund) = refunded_one_deep(opts.clone());
    let refund_height = sim.confirmed_at(refund).unwrap();
    sim.inject(Party::Buyer, Event::PaymentSucceeded { preimage: preimage.clone() });
    let claimed_before = sim.purposes().len();
    sim.mine(ANTI_REORG_DEPTH - 2);
    assert_eq!(sim.buyer().state().name(), "Claiming", "{:#?}", sim.log);
    assert_eq!(sim.purposes().len(), claimed_before, "no claim against a confirmed refund");
    sim.mine(1);
    assert_eq!(sim.ctx.tip_height, refund_height + ANTI_REORG_DEPTH - 1);
    let BuyerState::Lost { spend_txid, .. } = sim.buyer().state() else {
        panic!("not lost at depth: {:#?}", sim.log)
    };
    assert_eq!(*spend_txid, refund);

    // A reorg takes the refund out (and the seller is gone, so it does not come back): the
    // buyer, paid, claims the HTLC with the preimage its payment revealed.
    let (mut sim, refund) = refunded_one_deep(opts.clone());
    sim.inject(Party::Buyer, Event::PaymentSucceeded { preimage: preimage.clone() });
    sim.seller = None;
    sim.reorg_out(refund, true);
    sim.run_to_end(300);
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);

    // Back in the mempool after a reorg: forgotten until it confirms again (then final at depth).
    let (mut sim, refund) = refunded_one_deep(opts);
    sim.reorg_out(refund, false);
    assert_eq!(refund_recorded_while_paying(&sim), None, "{:#?}", sim.log);
    sim.inject(Party::Buyer, Event::PaymentSucceeded { preimage });
    sim.mine(1);
    let height = sim.confirmed_at(refund).expect("confirmed again");
    sim.mine(ANTI_REORG_DEPTH - 2);
    assert_ne!(sim.buyer().state().name(), "Lost", "{:#?}", sim.log);
    sim.mine(1);
    assert_eq!(sim.ctx.tip_height, height + ANTI_REORG_DEPTH - 1);
    assert_eq!(sim.buyer().state().name(), "Lost", "{:#?}", sim.log);
}

/// Issue 15.3: the invoice expired unpaid and the buyer's `swap_abort` was lost. The seller does
/// not leave its coins in the HTLC until the timeout: at the invoice's expiry (plus
/// `EXPIRED_INVOICE_REFUND_SECS`) it asks the buyer for a cooperative refund, and a buyer that is
/// there (it gave up, having paid nothing) signs it.
#[test]
fn an_expired_unpaid_invoice_is_refunded_cooperatively_before_the_timeout() {
    let sim = run(Opts { fail_first_payments: 1_000, drop_buyer_abort: true, ..Opts::default() });
    assert!(sim.log.iter().any(|l| l == "wire: swap_abort lost"), "{:#?}", sim.log);
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(matches!(sim.buyer().state(), BuyerState::Aborted { .. }), "{:#?}", sim.log);
    let SellerState::Refunded { .. } = sim.seller_state() else {
        panic!("not refunded: {:#?}", sim.log)
    };
    assert_eq!(
        sim.purposes(),
        vec![TxPurpose::Funding, TxPurpose::CooperativeRefund],
        "{:#?}",
        sim.log
    );
    let (_, _, refund) = sim.broadcasts.last().copied().unwrap();
    let (height, _) = sim.chain.confirmed[&refund];
    let timeout = START_HEIGHT + sim.offer.timeout_delta;
    assert!(height < timeout, "refunded at {height}, the timeout is {timeout}");
}

/// The fund-safety scenarios of the settled swap, as loop ins (the seller, the locker, took the
/// buyer's loop-in offer; everything after the funding is the shared code): a Lightning claim
/// that never settles, a dropped claim, a lost cooperative-refund request, an expired unpaid
/// invoice whose `swap_abort` was lost.
#[test]
fn the_settlement_and_refund_rules_hold_in_a_loop_in() {
    let sim = run(Opts { loop_in: true, seller_claim_never_settles: true, ..Opts::default() });
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert!(!sim.purposes().contains(&TxPurpose::CooperativeClaim));

    let sim = run(Opts { loop_in: true, drop_first_claim: true, ..Opts::default() });
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert!(sim.log.iter().any(|l| l.contains("dropped by the network")), "{:#?}", sim.log);

    let sim = run(Opts {
        loop_in: true,
        buyer_aborts_when_funded: true,
        drop_first_refund_request: true,
        ..Opts::default()
    });
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeRefund]);

    let sim = run(Opts {
        loop_in: true,
        fail_first_payments: 1_000,
        drop_buyer_abort: true,
        ..Opts::default()
    });
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(
        sim.purposes(),
        vec![TxPurpose::Funding, TxPurpose::CooperativeRefund],
        "{:#?}",
        sim.log
    );
}

/// A swap whose buyer is paying (a payment takes 3 blocks to arrive).
fn paying(loop_in: bool) -> Sim {
    let mut sim = sim(Opts { payment_delay_blocks: 3, loop_in, ..Opts::default() });
    sim.pump();
    for _ in 0..100 {
        if sim.buyer().state().has_paid() {
            break;
        }
        sim.advance_secs(31);
        sim.mine(1);
    }
    let state = sim.buyer().state();
    assert!(matches!(state, BuyerState::Paying { .. }), "{} {:#?}", state.name(), sim.log);
    sim
}

/// After the payment, the seller double-spends its funding (the residual risk of paying after
/// `min_confirmations`, spec `02-swap-flow.md`): the buyer keeps trying to claim until the
/// required confirmations past the timeout, then ends `Lost` with the invoice as its loss, in
/// both directions. The funding leaves while the payment is still in flight (`Paying`): the
/// decision waits for the payment's fate.
#[test]
fn a_funding_double_spent_after_the_payment_ends_lost_past_the_timeout() {
    for loop_in in sim::DIRECTIONS {
        let mut sim = paying(loop_in);
        let BuyerState::Paying { htlc, terms, .. } = sim.buyer().state() else { unreachable!() };
        let (funding, timeout) = (htlc.outpoint.txid, terms.htlc_params.timeout_height);
        sim.remove_tx(funding, true);
        while sim.ctx.tip_height < timeout {
            sim.advance_secs(31);
            sim.mine(1);
        }
        // Paid and still claiming at the timeout: a funding that came back would be claimed.
        let state = sim.buyer().state();
        assert!(
            matches!(state, BuyerState::Claiming { .. } | BuyerState::ClaimBroadcast { .. }),
            "loop_in={loop_in}: {} {:#?}",
            state.name(),
            sim.log
        );
        let gone_since = match state {
            BuyerState::Claiming { htlc, .. } | BuyerState::ClaimBroadcast { htlc, .. } => {
                htlc.gone_since
            }
            _ => None,
        };
        assert!(gone_since.is_some(), "the departure is recorded");
        // The record keeps it across a restart.
        sim.restart(Party::Buyer);
        sim.run_to_end(20);
        let BuyerState::Lost { terms, spend_txid, funding_gone } = sim.buyer().state() else {
            panic!("loop_in={loop_in}: not lost: {} {:#?}", sim.buyer().state().name(), sim.log)
        };
        assert!(*funding_gone);
        assert_eq!(*spend_txid, funding);
        assert_eq!(sim.buyer_paid_msat, terms.invoice_amount_msat, "the loss is the invoice");
        assert!(sim.ctx.tip_height > timeout, "not before the timeout and its depth");
        assert_eq!(sim.buyer().kind(), StateKind::Failed);
        let record = SwapRecord::from(sim.buyer()).to_bytes().unwrap();
        let back = SwapRecord::from_bytes(&record).unwrap();
        let SwapRecord::Buyer(b) = back else { panic!("a buyer record") };
        assert!(matches!(b.state(), BuyerState::Lost { funding_gone: true, .. }));
    }
}

/// A funding that leaves the buyer's chain view after the payment and comes back (a reorg, a
/// chain source that lost it for a while) is claimed as usual: its departure is forgotten.
#[test]
fn a_funding_that_leaves_and_comes_back_after_the_payment_is_claimed() {
    for loop_in in sim::DIRECTIONS {
        let mut sim = paying(loop_in);
        let BuyerState::Paying { htlc, terms, .. } = sim.buyer().state() else { unreachable!() };
        let (outpoint, confirmed_height) = (htlc.outpoint, htlc.confirmed_height);
        let value_sat = terms.quote.htlc_amount_sat;
        let script_pubkey =
            Htlc::new(terms.htlc_params.clone()).unwrap().script_pubkey().to_owned();
        sim.inject(Party::Buyer, Event::HtlcGone { outpoint });
        let BuyerState::Paying { htlc, .. } = sim.buyer().state() else { panic!("paying") };
        assert!(htlc.gone_since.is_some());
        sim.inject(
            Party::Buyer,
            Event::HtlcOutput { outpoint, value_sat, script_pubkey, confirmed_height },
        );
        let BuyerState::Paying { htlc, .. } = sim.buyer().state() else { panic!("paying") };
        assert_eq!(htlc.gone_since, None);
        sim.run_to_end(400);
        sim.check_invariants();
        assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    }
}
