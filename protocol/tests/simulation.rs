//! Named scenarios of a whole swap, driven deterministically (spec `02-swap-flow.md`), each in
//! both directions where it makes sense: a loop out (the buyer takes the seller's offer) and a loop
//! in (the seller, the locker, takes the buyer's loop-in offer). The parties are named by money
//! role: the buyer pays and claims, the seller locks and refunds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use looper_protocol::buyer::{BuyerCheckError, BuyerState};
use looper_protocol::messages::AbortReason;
use looper_protocol::seller::{LockerCheckError, SellerState};
use looper_protocol::swap::TxPurpose;
use sim::{Opts, Party, Sim, Tamper, DIRECTIONS};

fn dir(loop_in: bool) -> &'static str {
    if loop_in {
        "loop in"
    } else {
        "loop out"
    }
}

fn run(opts: Opts) -> Sim {
    let mut sim = Sim::new(Opts { route_cltv: 60, ..opts });
    sim.run_to_end(400);
    sim.check_invariants();
    sim
}

fn assert_refused(sim: &Sim, expected: fn(&BuyerCheckError) -> bool) {
    let BuyerState::Aborted { check: Some(check), .. } = &sim.buyer().state() else {
        panic!("buyer not aborted on a check: {:?}\n{:#?}", sim.buyer().state().name(), sim.log);
    };
    assert!(expected(check), "wrong check: {check:?}");
    assert_eq!(sim.buyer_paid_msat, 0, "paid nothing");
}

#[test]
fn cooperative_claim() {
    for loop_in in DIRECTIONS {
        let sim = run(Opts { loop_in, ..Opts::default() });
        let d = dir(loop_in);
        assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{d}: {:#?}", sim.log);
        assert!(matches!(sim.seller_state(), SellerState::Claimed { .. }), "{d}");
        assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim], "{d}");
        assert_eq!(sim.buyer_paid_msat, sim.seller_received_msat, "{d}");
    }
}

/// The loop-in quote: the seller (the taker) locks the amount and is paid it less the fees.
#[test]
fn a_loop_in_pays_the_locker_the_amount_less_the_fees() {
    let sim = run(Opts { loop_in: true, ..Opts::default() });
    let quote = *sim.seller.as_ref().unwrap().quote();
    assert_eq!(quote.htlc_amount_sat, 200_000);
    assert_eq!(sim.seller_received_msat, (200_000 - quote.fee_sat()) * 1000, "{:#?}", sim.log);
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }));
}

#[test]
fn seller_silent_at_claim_falls_back_to_script_path() {
    for loop_in in DIRECTIONS {
        let sim = run(Opts { loop_in, seller_uncooperative: true, ..Opts::default() });
        let d = dir(loop_in);
        assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptClaim], "{d}");
    }
}

#[test]
fn buyer_never_pays_seller_refunds_after_timeout() {
    for loop_in in DIRECTIONS {
        let sim = run(Opts { loop_in, buyer_vanishes_after_accept: true, ..Opts::default() });
        let d = dir(loop_in);
        assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptRefund], "{d}");
        assert_eq!(sim.buyer_paid_msat, 0);
    }
}

#[test]
fn buyer_aborts_cooperative_refund() {
    for loop_in in DIRECTIONS {
        let sim = run(Opts { loop_in, buyer_aborts_when_funded: true, ..Opts::default() });
        let d = dir(loop_in);
        assert!(
            matches!(
                sim.buyer().state(),
                BuyerState::Aborted { reason: AbortReason::UserRequested, .. }
            ),
            "{d}"
        );
        assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeRefund], "{d}");
    }
}

#[test]
fn a_failed_payment_is_tried_again() {
    for loop_in in DIRECTIONS {
        let d = dir(loop_in);
        let sim = run(Opts { loop_in, fail_first_payments: 2, ..Opts::default() });
        assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim], "{d}");
        let sim = run(Opts { loop_in, fail_first_payments: 5, ..Opts::default() });
        assert!(
            matches!(
                sim.buyer().state(),
                BuyerState::Aborted { reason: AbortReason::PaymentFailed, .. }
            ),
            "{d}"
        );
        assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{d}: {:#?}", sim.log);
    }
}

#[test]
fn a_payment_not_sent_does_not_count_as_a_failed_one() {
    for loop_in in DIRECTIONS {
        let d = dir(loop_in);
        // More unsent attempts than MAX_PAYMENT_ATTEMPTS, plus failed ones: still paid.
        let sim = run(Opts {
            loop_in,
            unsent_first_payments: 5,
            fail_first_payments: 2,
            ..Opts::default()
        });
        assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim], "{d}");
        // A payment that never goes out ends the swap too, having paid nothing.
        let sim = run(Opts { loop_in, unsent_first_payments: 1000, ..Opts::default() });
        assert!(matches!(sim.buyer().state(), BuyerState::Aborted { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.buyer_paid_msat, 0);
        assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{d}: {:#?}", sim.log);
    }
}

#[test]
fn late_payment_is_failed_back_and_refunded() {
    for loop_in in DIRECTIONS {
        let d = dir(loop_in);
        // The payment spends 130 of the 144 blocks in flight: past timeout - claim_margin.
        let sim = run(Opts { loop_in, payment_delay_blocks: 130, ..Opts::default() });
        assert_eq!(sim.seller_received_msat, 0, "{d}");
        assert!(sim.seller_failed_payments >= 1, "{d}");
        // The buyer may try again, but the invoice expires or the timeout comes too close: it
        // gives up having paid nothing.
        assert!(matches!(sim.buyer().state(), BuyerState::Aborted { .. }), "{d}: {:#?}", sim.log);
        assert_eq!(sim.buyer_paid_msat, 0, "{d}");
        assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{d}: {:#?}", sim.log);
    }
}

/// A tampered funding or invoice, in both directions: the buyer refuses before paying and, in a
/// loop in (where the seller locks before it sends the invoice), the seller's lock is refunded.
fn tampered(tamper: Tamper, expected: fn(&BuyerCheckError) -> bool) {
    for loop_in in DIRECTIONS {
        let sim = run(Opts { loop_in, tamper: Some(tamper), ..Opts::default() });
        assert_refused(&sim, expected);
        // (An altered funding is not the one the seller's record holds: it cannot refund it.)
        if sim.purposes().contains(&TxPurpose::Funding) && tamper != Tamper::FundingValue {
            assert!(
                matches!(sim.seller_state(), SellerState::Refunded { .. }),
                "{}: {:#?}",
                dir(loop_in),
                sim.log
            );
        }
    }
}

#[test]
fn wrong_htlc_amount_is_refused() {
    tampered(Tamper::FundingValue, |c| {
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
    // Loop in: the maker's accept names a script the seller does not rebuild; it locks nothing.
    let sim = run(Opts { loop_in: true, tamper: Some(Tamper::HtlcScript), ..Opts::default() });
    let SellerState::Aborted { check: Some(check), .. } = sim.seller_state() else {
        panic!("seller not aborted on a check: {:#?}", sim.log);
    };
    assert!(matches!(check, LockerCheckError::HtlcScriptMismatch(_)), "{check:?}");
    assert!(sim.purposes().is_empty(), "nothing locked: {:?}", sim.purposes());
    assert!(matches!(sim.buyer().state(), BuyerState::Aborted { .. }), "{:#?}", sim.log);
    assert_eq!(sim.buyer_paid_msat, 0);
}

#[test]
fn wrong_invoice_hash_is_refused() {
    tampered(Tamper::InvoiceHash, |c| matches!(c, BuyerCheckError::InvoiceHashMismatch));
}

#[test]
fn expired_invoice_is_refused() {
    tampered(Tamper::InvoiceExpired, |c| matches!(c, BuyerCheckError::InvoiceExpired));
}

#[test]
fn invoice_above_the_quote_is_refused() {
    tampered(Tamper::InvoiceAmount, |c| matches!(c, BuyerCheckError::InvoiceAmountMismatch { .. }));
}

#[test]
fn invoice_from_another_node_is_refused() {
    let sim = run(Opts { tamper: Some(Tamper::InvoicePayee), ..Opts::default() });
    assert_refused(&sim, |c| matches!(c, BuyerCheckError::InvoicePayee));
    // Loop in: the payee is whichever node the taker names (the hash binds the invoice to the
    // HTLC): paid, and claimed.
    let sim = run(Opts { loop_in: true, tamper: Some(Tamper::InvoicePayee), ..Opts::default() });
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert!(matches!(sim.seller_state(), SellerState::Claimed { .. }));
}

#[test]
fn cltv_budget_too_short_is_refused() {
    for loop_in in DIRECTIONS {
        let sim = run(Opts { loop_in, buyer_max_route_cltv: Some(30), ..Opts::default() });
        if loop_in && sim.buyer.is_none() {
            // The maker refuses the request outright: nothing locked, nothing paid.
            assert!(sim.purposes().is_empty(), "{:#?}", sim.log);
            assert!(matches!(sim.seller_state(), SellerState::Aborted { .. }), "{:#?}", sim.log);
            continue;
        }
        assert_refused(&sim, |c| matches!(c, BuyerCheckError::CltvBudgetTooShort { .. }));
    }
}

#[test]
fn duplicated_and_reordered_messages_change_nothing() {
    for loop_in in DIRECTIONS {
        for opts in [
            Opts { loop_in, duplicate_messages: true, ..Opts::default() },
            Opts { loop_in, reorder_messages: true, ..Opts::default() },
            Opts { loop_in, duplicate_messages: true, reorder_messages: true, ..Opts::default() },
        ] {
            let sim = run(opts.clone());
            assert!(
                matches!(sim.buyer().state(), BuyerState::Claimed { .. }),
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
}

#[test]
fn restored_from_its_record_at_every_state_a_swap_finishes() {
    for loop_in in DIRECTIONS {
        let d = dir(loop_in);
        // A loop-out seller's first record is `Accepted`: nothing is written before its invoice
        // is made (a crash before that leaves the request to be delivered again).
        let (buyer_first, seller_first) =
            if loop_in { ("Accepting", "Requested") } else { ("Requested", "Accepted") };
        // A loop-in buyer watches the HTLC from `Accepting` on: it has seen the lock when the
        // seller's `swap_funded` comes, and passes `Accepted` within that one event.
        let buyer_states: Vec<&'static str> = if loop_in {
            vec![buyer_first, "Funded", "Paying", "Claiming", "ClaimBroadcast"]
        } else {
            vec![buyer_first, "Accepted", "Funded", "Paying", "Claiming", "ClaimBroadcast"]
        };
        let seller_states: Vec<&'static str> = if loop_in {
            vec![seller_first, "AwaitingInvoice", "Accepted", "Funded", "Paid"]
        } else {
            vec![seller_first, "Funded", "Paid"]
        };
        for (party, state) in buyer_states
            .iter()
            .map(|s| (Party::Buyer, *s))
            .chain(seller_states.iter().map(|s| (Party::Seller, *s)))
        {
            let sim = run(Opts { loop_in, crash_at: Some((party, state)), ..Opts::default() });
            assert!(sim.crashed, "{d}: never reached {party:?} {state}");
            assert!(
                matches!(sim.buyer().state(), BuyerState::Claimed { .. }),
                "{d}: {party:?} {state}: {:#?}",
                sim.log
            );
            assert!(
                matches!(sim.seller_state(), SellerState::Claimed { .. }),
                "{d}: {party:?} {state}"
            );
            // Fresh nonces after the restart: the claim is still the cooperative one.
            assert_eq!(
                sim.purposes(),
                vec![TxPurpose::Funding, TxPurpose::CooperativeClaim],
                "{d}: {party:?} {state}: {:#?}",
                sim.log
            );
        }
        // The refund paths, too.
        for state in ["RefundingCooperatively", "Refunding"] {
            let sim = run(Opts {
                loop_in,
                crash_at: Some((Party::Seller, state)),
                buyer_aborts_when_funded: true,
                ..Opts::default()
            });
            assert!(sim.crashed, "{d}: never reached {state}");
            assert!(
                matches!(sim.seller_state(), SellerState::Refunded { .. }),
                "{d}: {state}: {:#?}",
                sim.log
            );
            // A restarted seller asks again with fresh nonces: still refunded at once, on the key
            // path.
            assert_eq!(
                sim.purposes(),
                vec![TxPurpose::Funding, TxPurpose::CooperativeRefund],
                "{d}: {state}: {:#?}",
                sim.log
            );
        }
    }
}

/// Crashes of the loop-in parties while nothing is locked yet, with the world moving on while
/// they are down: the swap still ends, and nobody loses.
#[test]
fn a_loop_in_survives_long_downtime_before_the_lock() {
    for (party, state) in [(Party::Seller, "Requested"), (Party::Buyer, "Accepting")] {
        let sim = run(Opts {
            loop_in: true,
            crash_at: Some((party, state)),
            crash_downtime_blocks: 30,
            ..Opts::default()
        });
        assert!(sim.crashed, "never reached {party:?} {state}");
        assert!(sim.finished(), "{party:?} {state}: {:#?}", sim.log);
    }
}

/// `looper swap claim`: a paid buyer whose seller does not co-sign claims through the leaf at
/// once, without waiting out the cooperative window; asked before paying, it is refused.
#[test]
fn the_user_forces_the_claim_leaf_without_waiting_for_the_seller() {
    for loop_in in DIRECTIONS {
        user_forces_the_claim_leaf(loop_in);
    }
}

fn user_forces_the_claim_leaf(loop_in: bool) {
    use looper_protocol::swap::{Event, SwapError};
    let mut sim =
        Sim::new(Opts { loop_in, route_cltv: 60, seller_uncooperative: true, ..Opts::default() });
    let mut refused_before_paying = false;
    for _ in 0..60 {
        if sim.buyer.is_none() {
            sim.mine(1);
            continue;
        }
        if matches!(sim.buyer().state(), BuyerState::Claiming { .. }) {
            break;
        }
        if !refused_before_paying && matches!(sim.buyer().state(), BuyerState::Funded { .. }) {
            let ctx = sim.ctx;
            let r = sim.buyer_mut().handle(
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
    assert!(matches!(sim.buyer().state(), BuyerState::Claiming { .. }), "{:#?}", sim.log);
    // No time passes: the cooperative window is still open.
    sim.inject(Party::Buyer, Event::UserScriptSpend);
    assert!(
        matches!(
            sim.buyer().state(),
            BuyerState::ClaimBroadcast { purpose: TxPurpose::ScriptClaim, .. }
        ),
        "{:#?}",
        sim.log
    );
    sim.run_to_end(400);
    sim.check_invariants();
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert_eq!(sim.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptClaim]);
}

/// `looper swap refund`: before the timeout the seller is told from which block the refund leaf
/// is valid (nothing changes); from the timeout on it refunds at once, also while it waits on a
/// cooperative refund.
#[test]
fn the_user_forces_the_refund_leaf_from_the_timeout_on() {
    for loop_in in DIRECTIONS {
        user_forces_the_refund_leaf(loop_in);
    }
}

fn user_forces_the_refund_leaf(loop_in: bool) {
    use looper_protocol::swap::{Event, SwapError};
    let mut sim = Sim::new(Opts {
        loop_in,
        route_cltv: 60,
        buyer_vanishes_after_accept: true,
        ..Opts::default()
    });
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
