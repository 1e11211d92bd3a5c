//! Prepay (spec `02-swap-flow.md`, "Prepay"): the seller funds only once the prepay is received
//! and keeps it when the main invoice is never paid; the buyer checks the prepay invoice and caps
//! it. Driven deterministically, with crashes, a griefer that never prepays and one that prepays
//! and then vanishes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use looper_protocol::buyer::{BuyerCheckError, BuyerPolicy, BuyerStart, BuyerState, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::AbortReason;
use looper_protocol::seller::SellerState;
use looper_protocol::swap::{Context, TxPurpose};
use looper_protocol::terms::Quote;
use looper_protocol::SwapId;
use sim::{Opts, Party, Sim, Tamper};

const PREPAY_SAT: u64 = 1_500;

fn run(opts: Opts) -> Sim {
    let mut sim = Sim::new(Opts { route_cltv: 60, prepay_sat: Some(PREPAY_SAT), ..opts });
    sim.run_to_end(400);
    sim.check_invariants();
    sim
}

#[test]
fn a_prepaid_swap_completes_and_the_buyer_pays_the_same_total() {
    let sim = run(Opts::default());
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert!(matches!(sim.seller_state(), SellerState::Claimed { .. }));
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    assert_eq!(sim.prepaid_msat, PREPAY_SAT * 1000);
    let quote = Quote::compute(&sim.offer, 200_000).unwrap();
    let no_prepay = Quote::compute(&sim::offer(), 200_000).unwrap();
    assert_eq!(sim.buyer_paid_msat, quote.invoice_amount_sat * 1000);
    assert_eq!(
        sim.buyer_paid_msat + sim.prepaid_msat,
        no_prepay.invoice_amount_sat * 1000,
        "the prepay is part of the total, not on top of it"
    );
}

#[test]
fn a_buyer_that_never_prepays_locks_nothing() {
    let sim = run(Opts { buyer_skips_prepay: true, ..Opts::default() });
    assert!(
        matches!(
            sim.seller_state(),
            SellerState::Aborted { reason: AbortReason::PaymentFailed, .. }
        ),
        "{:?}\n{:#?}",
        sim.seller_state(),
        sim.log
    );
    assert!(sim.purposes().is_empty(), "nothing funded: {:?}", sim.purposes());
    assert_eq!(sim.prepaid_msat, 0);
}

#[test]
fn a_buyer_that_prepays_and_vanishes_leaves_the_prepay_with_the_seller() {
    let sim = run(Opts { buyer_vanishes_after_accept: true, ..Opts::default() });
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptRefund]);
    assert_eq!(sim.prepaid_msat, PREPAY_SAT * 1000, "the seller keeps the prepay");
    assert_eq!(sim.buyer_paid_msat, 0);
}

#[test]
fn a_prepay_invoice_that_differs_from_the_quote_is_refused_unpaid() {
    let sim = run(Opts { tamper: Some(Tamper::PrepayAmount), ..Opts::default() });
    let BuyerState::Aborted { check: Some(check), .. } = sim.buyer().state() else {
        panic!("buyer not aborted: {:#?}", sim.log);
    };
    assert_eq!(check.code(), "prepay_invoice_invalid");
    assert_eq!(sim.prepay_orders, 0, "never paid");
    assert!(sim.purposes().is_empty());
}

#[test]
fn a_prepay_above_the_buyers_limit_is_refused_before_asking() {
    let mut offer = sim::offer();
    offer.prepay_sat = Some(20_001);
    let policy = BuyerPolicy { max_prepay_sat: 20_000, ..BuyerPolicy::default() };
    let start = BuyerStart {
        swap_id: SwapId([1; 32]),
        peer: "seller".into(),
        offer,
        amount_sat: 200_000,
        policy,
        claim_destination: sim::p2tr(20),
        keys: SwapKeys::derive(&common::master(2), 0).unwrap(),
    };
    let ctx = Context::new(sim::START_TIME, sim::START_HEIGHT, bitcoin::FeeRate::BROADCAST_MIN);
    let err = BuyerSwap::start(start, &ctx).map(|_| ()).unwrap_err();
    assert!(matches!(err, BuyerCheckError::PrepayTooHigh { prepay_sat: 20_001, max_sat: 20_000 }));
}

#[test]
fn a_crash_on_either_side_around_the_prepay_pays_it_once_and_finishes() {
    // (A seller is first written at `Accepted`, with its invoices.)
    for (party, state) in
        [(Party::Seller, "Accepted"), (Party::Buyer, "Requested"), (Party::Buyer, "Accepted")]
    {
        let sim = run(Opts { crash_at: Some((party, state)), ..Opts::default() });
        assert!(sim.crashed, "never reached {party:?} {state}");
        assert!(
            matches!(sim.buyer().state(), BuyerState::Claimed { .. }),
            "crash of {party:?} at {state}: buyer {:?}\n{:#?}",
            sim.buyer().state().name(),
            sim.log
        );
        assert_eq!(sim.prepaid_msat, PREPAY_SAT * 1000, "paid once ({party:?} at {state})");
    }
}
