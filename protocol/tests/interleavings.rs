//! Property test, in both directions (loop out and loop in): random interleavings of message delivery, loss, duplication, reordering,
//! blocks, time and crashes never make an honest party lose both sides.
//!
//! Buyer: paid => claimed before the timeout. Seller: locked => paid or refunded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use proptest::prelude::*;
use sim::{Opts, Party, Sim};

#[derive(Debug, Clone)]
enum Op {
    Deliver(Party),
    Drop(Party),
    Duplicate(Party),
    Delay(Party),
    Mine(u32),
    Wait(u64),
    BuyerAbort,
    Crash(Party),
}

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![Just(Party::Buyer), Just(Party::Seller)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => party().prop_map(Op::Deliver),
        1 => party().prop_map(Op::Drop),
        1 => party().prop_map(Op::Duplicate),
        1 => party().prop_map(Op::Delay),
        2 => (1u32..40).prop_map(Op::Mine),
        1 => (1u64..120).prop_map(Op::Wait),
        1 => Just(Op::BuyerAbort),
        1 => party().prop_map(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn honest_parties_never_lose_both_sides(
        ops in proptest::collection::vec(op(), 0..40),
        delay in 0u32..140,
        uncooperative in any::<bool>(),
        loop_in in any::<bool>(),
    ) {
        let mut sim = Sim::new(Opts {
            loop_in,
            route_cltv: 60,
            payment_delay_blocks: delay,
            seller_uncooperative: uncooperative,
            ..Opts::default()
        });
        for op in ops {
            match op {
                Op::Deliver(p) => sim.deliver_one(p),
                Op::Drop(p) => sim.drop_next(p),
                Op::Duplicate(p) => sim.duplicate_next(p),
                Op::Delay(p) => sim.delay_next(p),
                Op::Mine(n) => sim.mine(n),
                Op::Wait(s) => sim.advance_secs(s),
                Op::BuyerAbort => {
                    sim.user_abort(Party::Buyer);
                }
                Op::Crash(p) => {
                    if sim.exists(p) {
                        sim.restart(p);
                    }
                }
            }
        }
        sim.run_to_end(600);
        if sim.seller.is_some() && sim.buyer.is_some() {
            sim.check_invariants();
        } else {
            // The request never reached the maker: nothing locked, nothing paid.
            prop_assert_eq!(sim.buyer_paid_msat, 0);
            prop_assert!(!sim.purposes().contains(&looper_protocol::swap::TxPurpose::Funding));
        }
    }
}

/// The maker's `swap_accept` is lost for good: the taker gives up on its request
/// (`REQUEST_TIMEOUT_SECS`) instead of waiting in `Requested` for ever, and the maker's lock is
/// refunded. Found by the property test above, in both directions.
#[test]
fn a_lost_swap_accept_ends_both_sides() {
    for loop_in in [false, true] {
        let mut sim = Sim::new(Opts { loop_in, route_cltv: 60, ..Opts::default() });
        sim.deliver_one(Party::Seller);
        sim.drop_next(Party::Buyer);
        sim.run_to_end(600);
        if sim.seller.is_some() && sim.buyer.is_some() {
            sim.check_invariants();
        }
        assert_eq!(sim.buyer_paid_msat, 0, "loop_in {loop_in}");
    }
}
