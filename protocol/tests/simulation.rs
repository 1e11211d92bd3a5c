//! Named scenarios of a whole loop out, driven deterministically (spec `02-swap-flow.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use looper_protocol::buyer::{BuyerCheckError, BuyerState};
use looper_protocol::messages::AbortReason;
use looper_protocol::seller::SellerState;
use looper_protocol::swap::TxPurpose;
use sim::{Opts, Party, Sim, Tamper};

fn run(opts: Opts) -> Sim {
    let mut sim = Sim::new(Opts { route_cltv: 60, ..opts });
    sim.run_to_end(400);
    sim.check_invariants();
    sim
}

fn assert_refused(sim: &Sim, expected: fn(&BuyerCheckError) -> bool) {
    let BuyerState::Aborted { check: Some(check), .. } = &sim.buyer.state() else {
        panic!("buyer not aborted on a check: {:?}\n{:#?}", sim.buyer.state().name(), sim.log);
    };
    assert!(expected(check), "wrong check: {check:?}");
    assert_eq!(sim.buyer_paid_msat, 0, "paid nothing");
}

#[test]
fn cooperative_claim() {
    let sim = run(Opts::default());
    assert!(matches!(sim.buyer.state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert!(matches!(sim.seller_state(), SellerState::Claimed { .. }));
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
}

#[test]
fn seller_silent_at_claim_falls_back_to_script_path() {
    let sim = run(Opts { seller_uncooperative: true, ..Opts::default() });
    assert!(matches!(sim.buyer.state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptClaim]);
}

#[test]
fn buyer_never_pays_seller_refunds_after_timeout() {
    let sim = run(Opts { buyer_vanishes_after_accept: true, ..Opts::default() });
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptRefund]);
    assert_eq!(sim.buyer_paid_msat, 0);
}

#[test]
fn buyer_aborts_cooperative_refund() {
    let sim = run(Opts { buyer_aborts_when_funded: true, ..Opts::default() });
    assert!(matches!(
        sim.buyer.state(),
        BuyerState::Aborted { reason: AbortReason::UserRequested, .. }
    ));
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeRefund]);
}

#[test]
fn a_failed_payment_is_tried_again() {
    let sim = run(Opts { fail_first_payments: 2, ..Opts::default() });
    assert!(matches!(sim.buyer.state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let sim = run(Opts { fail_first_payments: 5, ..Opts::default() });
    assert!(matches!(
        sim.buyer.state(),
        BuyerState::Aborted { reason: AbortReason::PaymentFailed, .. }
    ));
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
}

#[test]
fn a_payment_not_sent_does_not_count_as_a_failed_one() {
    // More unsent attempts than MAX_PAYMENT_ATTEMPTS, plus failed ones: still paid.
    let sim = run(Opts { unsent_first_payments: 5, fail_first_payments: 2, ..Opts::default() });
    assert!(matches!(sim.buyer.state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    // A payment that never goes out ends the swap too, having paid nothing.
    let sim = run(Opts { unsent_first_payments: 1000, ..Opts::default() });
    assert!(matches!(sim.buyer.state(), BuyerState::Aborted { .. }), "{:#?}", sim.log);
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
}

#[test]
fn late_payment_is_failed_back_and_refunded() {
    // The payment spends 130 of the 144 blocks in flight: past timeout - claim_margin.
    let sim = run(Opts { payment_delay_blocks: 130, ..Opts::default() });
    assert_eq!(sim.seller_received_msat, 0);
    assert!(sim.seller_failed_payments >= 1);
    // The buyer may try again, but the invoice expires or the timeout comes too close: it gives
    // up having paid nothing.
    assert!(matches!(sim.buyer.state(), BuyerState::Aborted { .. }), "{:#?}", sim.log);
    assert_eq!(sim.buyer_paid_msat, 0);
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
}

#[test]
fn wrong_htlc_amount_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::FundingValue), ..Opts::default() });
    assert_refused(&sim, |c| {
        matches!(
            c,
            BuyerCheckError::HtlcAmountMismatch { .. } | BuyerCheckError::HtlcScriptMismatch(_)
        )
    });
}

#[test]
fn wrong_htlc_script_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::HtlcScript), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::HtlcScriptMismatch(_)));
}

#[test]
fn wrong_invoice_hash_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::InvoiceHash), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::InvoiceHashMismatch));
}

#[test]
fn expired_invoice_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::InvoiceExpired), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::InvoiceExpired));
}

#[test]
fn invoice_above_the_quote_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::InvoiceAmount), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::InvoiceAmountMismatch { .. }));
}

#[test]
fn invoice_from_another_node_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::InvoicePayee), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::InvoicePayee));
}

#[test]
fn cltv_budget_too_short_is_refused() {
    let sim = run(Opts { buyer_max_route_cltv: Some(30), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::CltvBudgetTooShort { .. }));
}

#[test]
fn duplicated_and_reordered_messages_change_nothing() {
    for opts in [
        Opts { duplicate_messages: true, ..Opts::default() },
        Opts { reorder_messages: true, ..Opts::default() },
        Opts { duplicate_messages: true, reorder_messages: true, ..Opts::default() },
    ] {
        let sim = run(opts.clone());
        assert!(
            matches!(sim.buyer.state(), BuyerState::Claimed { .. }),
            "{opts:?}: {:#?}",
            sim.log
        );
        assert_eq!(
            sim.purposes(),
            vec![TxPurpose::Funding, TxPurpose::CooperativeClaim],
            "{opts:?}"
        );
    }
}

#[test]
fn restored_from_its_record_at_every_state_a_swap_finishes() {
    let buyer_states = ["Requested", "Accepted", "Funded", "Paying", "Claiming", "ClaimBroadcast"];
    let seller_states = ["AwaitingInvoice", "Accepted", "Funded", "Paid"];
    for (party, state) in buyer_states
        .iter()
        .map(|s| (Party::Buyer, *s))
        .chain(seller_states.iter().map(|s| (Party::Seller, *s)))
    {
        let sim = run(Opts { crash_at: Some((party, state)), ..Opts::default() });
        assert!(sim.crashed, "never reached {party:?} {state}");
        assert!(
            matches!(sim.buyer.state(), BuyerState::Claimed { .. }),
            "{party:?} {state}: {:#?}",
            sim.log
        );
        assert!(matches!(sim.seller_state(), SellerState::Claimed { .. }), "{party:?} {state}");
        // Fresh nonces after the restart: the claim is still the cooperative one.
        assert_eq!(
            sim.purposes(),
            vec![TxPurpose::Funding, TxPurpose::CooperativeClaim],
            "{party:?} {state}: {:#?}",
            sim.log
        );
    }
    // The refund paths, too.
    for state in ["RefundingCooperatively", "Refunding"] {
        let sim = run(Opts {
            crash_at: Some((Party::Seller, state)),
            buyer_aborts_when_funded: true,
            ..Opts::default()
        });
        assert!(sim.crashed, "never reached {state}");
        assert!(
            matches!(sim.seller_state(), SellerState::Refunded { .. }),
            "{state}: {:#?}",
            sim.log
        );
        // A restarted seller asks again with fresh nonces: still refunded at once, on the key path.
        assert_eq!(
            sim.purposes(),
            vec![TxPurpose::Funding, TxPurpose::CooperativeRefund],
            "{state}: {:#?}",
            sim.log
        );
    }
}

/// `looper swap claim`: a paid buyer whose seller does not co-sign claims through the leaf at
/// once, without waiting out the cooperative window; asked before paying, it is refused.
#[test]
fn the_user_forces_the_claim_leaf_without_waiting_for_the_seller() {
    use looper_protocol::swap::{Event, SwapError};
    let mut sim = Sim::new(Opts { route_cltv: 60, seller_uncooperative: true, ..Opts::default() });
    let mut refused_before_paying = false;
    for _ in 0..60 {
        if matches!(sim.buyer.state(), BuyerState::Claiming { .. }) {
            break;
        }
        if !refused_before_paying && matches!(sim.buyer.state(), BuyerState::Funded { .. }) {
            let ctx = sim.ctx;
            let r = sim.buyer.handle(
                Event::UserScriptSpend,
                &ctx,
                &mut bitcoin::secp256k1::rand::thread_rng(),
            );
            assert!(matches!(r, Err(SwapError::NotNow { .. })), "{r:?}");
            refused_before_paying = true;
        }
        sim.mine(1);
    }
    assert!(refused_before_paying);
    assert!(matches!(sim.buyer.state(), BuyerState::Claiming { .. }), "{:#?}", sim.log);
    // No time passes: the cooperative window is still open.
    sim.inject(Party::Buyer, Event::UserScriptSpend);
    assert!(
        matches!(
            sim.buyer.state(),
            BuyerState::ClaimBroadcast { purpose: TxPurpose::ScriptClaim, .. }
        ),
        "{:#?}",
        sim.log
    );
    sim.run_to_end(400);
    sim.check_invariants();
    assert!(matches!(sim.buyer.state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptClaim]);
}

/// `looper swap refund`: before the timeout the seller is told from which block the refund leaf
/// is valid (nothing changes); from the timeout on it refunds at once, also while it waits on a
/// cooperative refund.
#[test]
fn the_user_forces_the_refund_leaf_from_the_timeout_on() {
    use looper_protocol::swap::{Event, SwapError};
    let mut sim =
        Sim::new(Opts { route_cltv: 60, buyer_vanishes_after_accept: true, ..Opts::default() });
    for _ in 0..10 {
        if matches!(sim.seller.as_ref().map(|s| s.state()), Some(SellerState::Funded { .. })) {
            break;
        }
        sim.mine(1);
    }
    let ctx = sim.ctx;
    let seller = sim.seller.as_mut().unwrap();
    let timeout = seller.htlc_params().unwrap().timeout_height;
    let r =
        seller.handle(Event::UserScriptSpend, &ctx, &mut bitcoin::secp256k1::rand::thread_rng());
    match r {
        Err(SwapError::NotNow { reason }) => {
            assert!(reason.contains(&format!("from block {timeout}")), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(sim.seller_state(), SellerState::Funded { .. }));
    // At the timeout, whatever it is waiting on.
    while sim.ctx.tip_height < timeout {
        sim.ctx.tip_height += 1;
    }
    sim.inject(Party::Seller, Event::UserScriptSpend);
    assert!(
        matches!(
            sim.seller_state(),
            SellerState::Refunding { purpose: TxPurpose::ScriptRefund, .. }
        ),
        "{:?}",
        sim.seller_state()
    );
    sim.run_to_end(400);
    sim.check_invariants();
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }));
}
