//! A swap's on-chain settlement is final at `ANTI_REORG_DEPTH` confirmations, not its first
//! (spec `02-swap-flow.md`, "Final at depth"), in both directions: a claim or a refund confirmed
//! once, reorganised out and dropped from the mempool, goes out again and the swap ends only once
//! it is deep enough; a reorg that puts the peer's spend in its place decides the outcome.
//!
//! Before the rule, the swap ended at the first confirmation and stopped watching: the claim or
//! refund that a reorg took out and the mempool dropped was never sent again (the buyer of a loop
//! out had paid, and after the timeout the seller could refund).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use bitcoin::{Amount, FeeRate, OutPoint, Transaction};
use looper_protocol::buyer::BuyerState;
use looper_protocol::keys::SwapKeys;
use looper_protocol::seller::SellerState;
use looper_protocol::spend::{claim_script_path, refund_script_path};
use looper_protocol::swap::{StateKind, ANTI_REORG_DEPTH};
use sim::{Opts, Sim, DIRECTIONS};

use crate::common::master;

fn sim(loop_in: bool, opts: Opts) -> Sim {
    let mut sim = Sim::new(Opts { loop_in, route_cltv: 60, ..opts });
    sim.pump();
    sim
}

/// The buyer's claim, once it is in the chain (recorded, not final yet).
fn buyer_claim_confirmed(sim: &Sim) -> Option<Transaction> {
    match sim.buyer.as_ref()?.state() {
        BuyerState::ClaimBroadcast { claim_tx, htlc, .. } if htlc.spent.is_some() => {
            Some(claim_tx.clone())
        }
        _ => None,
    }
}

/// The seller's refund, once it is in the chain (recorded, not final yet).
fn seller_refund_confirmed(sim: &Sim) -> Option<Transaction> {
    match sim.seller.as_ref()?.state() {
        SellerState::Refunding { refund_tx, funding, .. } if funding.spent.is_some() => {
            Some(refund_tx.clone())
        }
        _ => None,
    }
}

/// Mines a block at a time (with the sim's ticks) until `until` holds.
fn mine_until<T>(sim: &mut Sim, what: &str, until: impl Fn(&Sim) -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(t) = until(sim) {
            return t;
        }
        sim.advance_secs(31);
        sim.mine(1);
    }
    panic!("never {what}: {:#?}", sim.log)
}

fn buyer_state(sim: &Sim) -> &'static str {
    sim.buyer().state().name()
}

fn seller_state(sim: &Sim) -> &'static str {
    sim.seller_state().name()
}

/// The buyer's claim confirms once; the seller (paid) and the buyer both wait for its depth. A
/// reorg puts it back in the mempool (it confirms again, later); a second one takes it out and
/// the mempool drops it: the buyer sends it again at once, and both end `Claimed` exactly at
/// `ANTI_REORG_DEPTH` confirmations of the block that holds it now.
#[test]
fn a_claim_reorganised_out_and_dropped_goes_out_again_and_is_final_only_at_depth() {
    for loop_in in DIRECTIONS {
        let mut sim = sim(loop_in, Opts::default());
        let claim = mine_until(&mut sim, "a confirmed claim", buyer_claim_confirmed);
        let txid = claim.compute_txid();
        let first = sim.confirmed_at(txid).unwrap();
        assert_eq!(buyer_state(&sim), "ClaimBroadcast", "loop_in {loop_in}");
        assert_eq!(sim.buyer().kind(), StateKind::Pending);
        assert_eq!(seller_state(&sim), "Paid");

        // Back to the mempool: forgotten, confirmed again in the next block.
        sim.reorg_out(txid, false);
        assert!(sim.in_mempool(txid));
        assert!(buyer_claim_confirmed(&sim).is_none(), "{:#?}", sim.log);
        sim.mine(1);
        let second = sim.confirmed_at(txid).unwrap();
        assert!(second > first);

        // Out of the chain and dropped: the buyer sends it again, at once.
        let sent = sim.broadcasts.len();
        sim.reorg_out(txid, true);
        assert!(sim.broadcasts.len() > sent, "sent again: {:#?}", sim.log);
        let again = sim.persisted_spend(sim::Party::Buyer).unwrap().compute_txid();
        assert!(sim.in_mempool(again), "the claim went out again: {:#?}", sim.log);
        assert_eq!(buyer_state(&sim), "ClaimBroadcast");

        sim.mine(1);
        let height = sim.confirmed_at(again).expect("confirmed again");
        sim.mine(ANTI_REORG_DEPTH - 2);
        assert_eq!(buyer_state(&sim), "ClaimBroadcast", "final only at depth");
        assert_eq!(seller_state(&sim), "Paid", "final only at depth");
        sim.mine(1);
        assert_eq!(sim.ctx.tip_height, height + ANTI_REORG_DEPTH - 1);
        let BuyerState::Claimed { claim_txid, .. } = sim.buyer().state() else {
            panic!("{}: {:#?}", buyer_state(&sim), sim.log)
        };
        assert_eq!(*claim_txid, again);
        let SellerState::Claimed { claim_txid, .. } = sim.seller_state() else {
            panic!("{}", seller_state(&sim))
        };
        assert_eq!(*claim_txid, again);
        sim.check_invariants();
    }
}

/// A deeper reorg after the payment takes out the claim and the funding under it, and the mempool
/// drops both: the seller, paid, sends its funding again (the claimer's claim needs it), the
/// claim follows, and both end `Claimed`. Before, a paid seller never sent its funding again.
#[test]
fn a_paid_sellers_funding_reorganised_out_and_dropped_goes_out_again() {
    for loop_in in DIRECTIONS {
        let mut sim = sim(loop_in, Opts::default());
        let claim = mine_until(&mut sim, "a confirmed claim", buyer_claim_confirmed);
        let SellerState::Paid { funding, .. } = sim.seller_state() else {
            panic!("{}", seller_state(&sim))
        };
        let funding_txid = funding.tx.compute_txid();
        sim.reorg_out(claim.compute_txid(), true);
        sim.reorg_out(funding_txid, true);
        assert!(!sim.in_mempool(funding_txid));
        // Sent again with the next block (every block until it confirms).
        sim.advance_secs(31);
        sim.mine(1);
        let back = sim.in_mempool(funding_txid) || sim.confirmed_at(funding_txid).is_some();
        assert!(back, "loop_in {loop_in}: sent again: {:#?}", sim.log);
        sim.run_to_end(400);
        assert!(
            matches!(sim.buyer().state(), BuyerState::Claimed { .. }),
            "loop_in {loop_in}: {}: {:#?}",
            buyer_state(&sim),
            sim.log
        );
        assert!(
            matches!(sim.seller_state(), SellerState::Claimed { .. }),
            "{}",
            seller_state(&sim)
        );
        sim.check_invariants();
    }
}

/// The seller's refund (the buyer vanished without paying) confirms once; a reorg takes it out
/// and the mempool drops it: the seller sends it again and ends `Refunded` only at depth.
#[test]
fn a_refund_reorganised_out_and_dropped_goes_out_again_and_is_final_only_at_depth() {
    for loop_in in DIRECTIONS {
        let opts = Opts { buyer_vanishes_after_accept: true, ..Opts::default() };
        let mut sim = sim(loop_in, opts);
        let refund = mine_until(&mut sim, "a confirmed refund", seller_refund_confirmed);
        let txid = refund.compute_txid();
        assert_eq!(seller_state(&sim), "Refunding", "loop_in {loop_in}");
        sim.reorg_out(txid, true);
        assert!(seller_refund_confirmed(&sim).is_none());
        let again = sim.persisted_spend(sim::Party::Seller).unwrap().compute_txid();
        assert!(sim.in_mempool(again), "the refund went out again: {:#?}", sim.log);

        sim.mine(1);
        let height = sim.confirmed_at(again).expect("confirmed again");
        sim.mine(ANTI_REORG_DEPTH - 2);
        assert_eq!(seller_state(&sim), "Refunding", "final only at depth");
        sim.mine(1);
        assert_eq!(sim.ctx.tip_height, height + ANTI_REORG_DEPTH - 1);
        let SellerState::Refunded { refund_txid, .. } = sim.seller_state() else {
            panic!("{}: {:#?}", seller_state(&sim), sim.log)
        };
        assert_eq!(*refund_txid, again);
        sim.check_invariants();
    }
}

/// The HTLC's outpoint, the seller's keys and the buyer's, from the sim's parties.
fn parties(sim: &Sim) -> (OutPoint, SwapKeys, SwapKeys) {
    let seller = sim.seller.as_ref().unwrap();
    let outpoint = match seller.state() {
        SellerState::Paid { funding, .. }
        | SellerState::Funded { funding, .. }
        | SellerState::Refunding { funding, .. } => funding.outpoint,
        other => panic!("{}", other.name()),
    };
    let seller_keys = SwapKeys::derive(&master(1), seller.key_index()).unwrap();
    let buyer_keys = SwapKeys::derive(&master(2), sim.buyer().key_index()).unwrap();
    (outpoint, seller_keys, buyer_keys)
}

/// The buyer's claim confirms once, then a reorg puts the seller's refund in its place (a claim
/// mined at the timeout, where a refund is valid too): the buyer stops sending its claim and
/// ends `Lost` once the refund is deep.
#[test]
fn a_reorg_that_puts_the_sellers_refund_in_place_of_the_claim_decides() {
    for loop_in in DIRECTIONS {
        let mut sim = sim(loop_in, Opts::default());
        let claim = mine_until(&mut sim, "a confirmed claim", buyer_claim_confirmed);
        let (outpoint, seller_keys, _) = parties(&sim);
        let htlc = sim.seller.as_ref().unwrap().htlc().unwrap().clone();
        let amount = Amount::from_sat(sim.seller.as_ref().unwrap().quote().htlc_amount_sat);
        let rate = FeeRate::from_sat_per_vb(2).unwrap();
        let refund =
            refund_script_path(&htlc, outpoint, amount, seller_keys.refund(), sim::p2tr(10), rate)
                .unwrap();
        sim.reorg_replace(claim.compute_txid(), refund.clone());
        let height = sim.confirmed_at(refund.compute_txid()).unwrap();
        assert_eq!(buyer_state(&sim), "ClaimBroadcast", "loop_in {loop_in}");
        let sent = sim.broadcasts.len();
        while sim.ctx.tip_height < height + ANTI_REORG_DEPTH - 1 {
            sim.mine(1);
        }
        assert_eq!(sim.broadcasts.len(), sent, "no claim sent against a confirmed refund");
        let BuyerState::Lost { spend_txid, funding_gone: false, .. } = sim.buyer().state() else {
            panic!("{}: {:#?}", buyer_state(&sim), sim.log)
        };
        assert_eq!(*spend_txid, refund.compute_txid());
    }
}

/// The seller's refund confirms once, then a reorg puts the buyer's claim in its place: the
/// seller stops sending its refund and ends `Claimed` once the claim is deep.
#[test]
fn a_reorg_that_puts_the_buyers_claim_in_place_of_the_refund_decides() {
    for loop_in in DIRECTIONS {
        let opts = Opts { buyer_vanishes_after_accept: true, ..Opts::default() };
        let mut sim = sim(loop_in, opts);
        let refund = mine_until(&mut sim, "a confirmed refund", seller_refund_confirmed);
        let (outpoint, seller_keys, buyer_keys) = parties(&sim);
        let htlc = sim.seller.as_ref().unwrap().htlc().unwrap().clone();
        let amount = Amount::from_sat(sim.seller.as_ref().unwrap().quote().htlc_amount_sat);
        let rate = FeeRate::from_sat_per_vb(2).unwrap();
        let claim = claim_script_path(
            &htlc,
            outpoint,
            amount,
            seller_keys.preimage(),
            buyer_keys.claim(),
            sim::p2tr(20),
            rate,
        )
        .unwrap();
        sim.reorg_replace(refund.compute_txid(), claim.clone());
        let height = sim.confirmed_at(claim.compute_txid()).unwrap();
        assert_eq!(seller_state(&sim), "Refunding", "loop_in {loop_in}");
        let sent = sim.broadcasts.len();
        sim.mine(ANTI_REORG_DEPTH - 2);
        assert_eq!(seller_state(&sim), "Refunding", "final only at depth");
        while sim.ctx.tip_height < height + ANTI_REORG_DEPTH - 1 {
            sim.mine(1);
        }
        assert_eq!(sim.broadcasts.len(), sent, "no refund sent against a confirmed claim");
        let SellerState::Claimed { claim_txid, .. } = sim.seller_state() else {
            panic!("{}: {:#?}", seller_state(&sim), sim.log)
        };
        assert_eq!(*claim_txid, claim.compute_txid());
    }
}

/// A node that restarts with a spend recorded forgets it and asks the chain again: a claim that
/// left the chain while the node was down goes out again (nothing reports it gone), one still
/// there is recorded again and final at the same depth.
#[test]
fn a_restart_forgets_the_recorded_spend_and_the_chain_tells_again() {
    for loop_in in DIRECTIONS {
        let mut sim = sim(loop_in, Opts::default());
        let claim = mine_until(&mut sim, "a confirmed claim", buyer_claim_confirmed);
        let txid = claim.compute_txid();
        let height = sim.confirmed_at(txid).unwrap();
        // Still there: recorded again at the restart's first look.
        sim.restart(sim::Party::Buyer);
        assert_eq!(buyer_claim_confirmed(&sim).map(|t| t.compute_txid()), Some(txid));
        // Gone while down (the sim's watcher does not report it to a node that is down): the
        // restart sends it again.
        let (h, tx) = sim.chain.confirmed.remove(&txid).unwrap();
        assert_eq!(h, height);
        drop(tx);
        sim.restart(sim::Party::Buyer);
        assert!(sim.in_mempool(txid), "{:#?}", sim.log);
        sim.mine(1);
        let again = sim.confirmed_at(txid).unwrap();
        while sim.ctx.tip_height < again + ANTI_REORG_DEPTH - 1 {
            assert_eq!(buyer_state(&sim), "ClaimBroadcast");
            sim.mine(1);
        }
        assert_eq!(buyer_state(&sim), "Claimed", "{:#?}", sim.log);
    }
}
