//! Fees and replacement (issue 14, spec `03-cooperative-spend.md`, "Fees and replacement"): a
//! claim or refund that does not confirm in a fee spike is replaced by one paying more, each
//! replacement persisted before it is broadcast (the simulation asserts it at every broadcast),
//! and the buyer's claim confirms before the timeout even when the spike is above its cap. The
//! spike and the stuck refund run in both directions (loop out and loop in).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use bitcoin::FeeRate;
use looper_protocol::buyer::BuyerState;
use looper_protocol::fees::{FeeEstimates, MAX_DEADLINE_FEE_PERCENT};
use looper_protocol::seller::SellerState;
use looper_protocol::swap::TxPurpose;
use sim::{Opts, Party, Sim, DIRECTIONS};

fn vb(n: u64) -> FeeRate {
    FeeRate::from_sat_per_vb(n).unwrap()
}

fn sim(opts: Opts) -> Sim {
    let mut sim = Sim::new(Opts { route_cltv: 60, ..opts });
    if sim.opts.loop_in {
        // The request reaches the maker (the buyer): both machines exist.
        sim.pump();
    }
    sim
}

/// A spike to `rate`: the mempool refuses and blocks leave out anything below it, and the
/// estimates follow it.
fn spike(sim: &mut Sim, rate: FeeRate) {
    sim.min_fee_rate = rate;
    sim.ctx.fees.estimates = FeeEstimates::flat(rate);
}

/// The replacements `who` announced (`Replaced` notifications).
fn replaced(sim: &Sim, who: &str) -> usize {
    sim.log.iter().filter(|l| l.starts_with(&format!("{who}: Replaced"))).count()
}

fn timeout(sim: &Sim) -> u32 {
    sim.buyer().terms().unwrap().htlc_params.timeout_height
}

/// Mines until the buyer's claim confirmed (or 300 blocks).
fn mine_until_claimed(sim: &mut Sim) {
    for _ in 0..300 {
        if matches!(sim.buyer().state(), BuyerState::Claimed { .. }) {
            break;
        }
        sim.mine(1);
    }
}

/// The spike (600 sat/vB) is far above the buyer's cap (200 sat/vB): the claim waits at the cap
/// until the urgent window before its deadline, then doubles at each block, past the cap, and
/// confirms before the timeout, paying less than the deadline's share of the HTLC.
#[test]
fn a_claim_in_a_spike_above_the_cap_is_replaced_until_it_confirms_before_the_timeout() {
    for loop_in in DIRECTIONS {
        claim_in_a_spike_above_the_cap(loop_in);
    }
}

fn claim_in_a_spike_above_the_cap(loop_in: bool) {
    let mut sim = sim(Opts { loop_in, ..Opts::default() });
    spike(&mut sim, vb(600));
    mine_until_claimed(&mut sim);
    let BuyerState::Claimed { claim_txid, .. } = sim.buyer().state() else {
        panic!("not claimed: {:#?}", sim.log)
    };
    let (height, tx) = sim.chain.confirmed.get(claim_txid).cloned().unwrap();
    assert!(height <= timeout(&sim), "claimed at {height}, timeout {}", timeout(&sim));
    assert!(replaced(&sim, "Buyer") >= 2, "{:#?}", sim.log);
    let fee = sim.fee_of(&tx);
    let htlc = 200_000;
    assert!(fee <= htlc * MAX_DEADLINE_FEE_PERCENT / 100, "fee {fee}");
    assert!(fee > 200 * tx.vsize() as u64, "paid past the cap near the deadline: {fee}");
    assert_eq!(sim.purposes().last(), Some(&TxPurpose::ScriptClaim));
    sim.check_invariants();
}

/// A spike that the estimates show but the cap allows: one replacement at the new estimate.
#[test]
fn a_claim_under_a_spike_within_the_cap_is_replaced_at_the_estimate() {
    let mut sim = sim(Opts::default());
    spike(&mut sim, vb(50));
    mine_until_claimed(&mut sim);
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    // Estimates and the mempool agree: the first claim already pays enough.
    assert_eq!(replaced(&sim, "Buyer"), 0, "{:#?}", sim.log);

    // Now the spike comes after the claim went out.
    let mut sim = self::sim(Opts { payment_delay_blocks: 1, ..Opts::default() });
    for _ in 0..40 {
        if matches!(
            sim.buyer().state(),
            BuyerState::Claiming { .. } | BuyerState::ClaimBroadcast { .. }
        ) {
            break;
        }
        sim.mine(1);
    }
    spike(&mut sim, vb(80));
    mine_until_claimed(&mut sim);
    assert!(matches!(sim.buyer().state(), BuyerState::Claimed { .. }), "{:#?}", sim.log);
    assert_eq!(replaced(&sim, "Buyer"), 1, "{:#?}", sim.log);
    assert_eq!(sim.replacements.len(), 1, "replaced in the mempool: {:#?}", sim.log);
    sim.check_invariants();
}

/// A buyer restarted after a replacement carries on from the replacement it persisted (it is
/// what the resumed swap broadcasts), and still confirms before the timeout.
#[test]
fn a_restarted_buyer_continues_from_its_persisted_replacement() {
    let mut sim = sim(Opts::default());
    spike(&mut sim, vb(600));
    for _ in 0..300 {
        if replaced(&sim, "Buyer") > 0 {
            break;
        }
        sim.mine(1);
    }
    let replacement = sim.persisted_spend(Party::Buyer).unwrap().compute_txid();
    let note = sim.log.iter().rev().find(|l| l.starts_with("Buyer: Replaced")).unwrap();
    assert!(note.contains(&format!("txid: {replacement}")), "{note}");
    let before = sim.broadcasts.len();
    sim.restart(Party::Buyer);
    let resumed = &sim.broadcasts[before..];
    assert!(resumed.iter().all(|(p, _, t)| *p != Party::Buyer || *t == replacement), "{resumed:?}");
    mine_until_claimed(&mut sim);
    let BuyerState::Claimed { claim_txid, .. } = sim.buyer().state() else {
        panic!("not claimed: {:#?}", sim.log)
    };
    let (height, _) = sim.chain.confirmed.get(claim_txid).cloned().unwrap();
    assert!(height <= timeout(&sim));
    sim.check_invariants();
}

/// The seller's refund, stuck when fees rise, is replaced at the new estimate under its cap.
#[test]
fn a_refund_stuck_in_a_spike_is_replaced() {
    for loop_in in DIRECTIONS {
        refund_stuck_in_a_spike(loop_in);
    }
}

fn refund_stuck_in_a_spike(loop_in: bool) {
    let mut sim = sim(Opts { loop_in, buyer_vanishes_after_accept: true, ..Opts::default() });
    sim.ctx.fees.max_rate = vb(100);
    sim.pump();
    for _ in 0..300 {
        if matches!(sim.seller_state(), SellerState::Refunding { .. }) {
            break;
        }
        sim.mine(1);
    }
    assert!(matches!(sim.seller_state(), SellerState::Refunding { .. }), "{:#?}", sim.log);
    // The refund at 2 sat/vB is in the mempool; the spike leaves it out of blocks.
    spike(&mut sim, vb(20));
    for _ in 0..20 {
        if matches!(sim.seller_state(), SellerState::Refunded { .. }) {
            break;
        }
        sim.mine(1);
    }
    assert!(matches!(sim.seller_state(), SellerState::Refunded { .. }), "{:#?}", sim.log);
    assert_eq!(replaced(&sim, "Seller"), 1, "{:#?}", sim.log);
    assert_eq!(sim.replacements.len(), 1, "{:#?}", sim.log);
    assert_eq!(sim.purposes().last(), Some(&TxPurpose::ScriptRefund));
}
