//! The deterministic test bed over many seeds: honest runs, crashes after any commit, and a
//! malicious peer of each kind. A failure prints the scenario, the run's trace and the command
//! that reruns it (`LOOPER_SCENARIO=... cargo test -p looper-conformance --test testbed
//! one_scenario`). `LOOPER_BED_SEEDS=N` runs N seeds per group. Each group runs both directions:
//! its odd seeds as a loop in (the seller, the locker, takes the buyer's loop-in offer), its even
//! ones as a loop out, so loop in costs the CI no extra seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use looper_conformance::testbed::{drill, run, Drill, Malice, Scenario, BUYER, SELLER};
use looper_protocol::swap::ANTI_REORG_DEPTH;

fn seeds(default: u64) -> u64 {
    std::env::var("LOOPER_BED_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

async fn many(name: &str, n: u64, make: impl Fn(u64) -> Scenario) {
    let mut failures = Vec::new();
    let (mut claimed, mut refunded, mut lost, mut crashes, mut loop_ins) = (0, 0, 0, 0, 0);
    for seed in 0..n {
        let sc = make(seed);
        loop_ins += u64::from(sc.loop_in);
        match run(sc).await {
            Ok(o) => {
                claimed += o.claimed;
                refunded += o.refunded;
                lost += o.lost;
                crashes += o.crashes;
            }
            Err(f) => failures.push(f.to_string()),
        }
    }
    eprintln!("{name}: {n} seeds ({loop_ins} loop in), {claimed} swaps claimed, {refunded} refunded, {lost} lost to a double-spent funding, {crashes} crashes injected, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{name}: {} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An honest run; odd seeds are loop ins.
fn honest(seed: u64) -> Scenario {
    Scenario { seed, steps: 300, swaps: 2, malice: None, crashes: false, loop_in: seed % 2 == 1 }
}

/// Reruns the scenario a failure printed (`LOOPER_SCENARIO=...`); nothing without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_scenario() {
    let Ok(text) = std::env::var("LOOPER_SCENARIO") else { return };
    let sc = Scenario::parse(&text).expect("LOOPER_SCENARIO as a failure prints it");
    match run(sc).await {
        Ok(o) => {
            if std::env::var_os("LOOPER_BED_LOG").is_some() {
                o.log.iter().filter(|l| !l.starts_with("mined")).for_each(|l| eprintln!("{l}"));
            }
            eprintln!(
                "{} claimed, {} refunded, {} lost, {} crashes",
                o.claimed, o.refunded, o.lost, o.crashes
            )
        }
        Err(f) => panic!("{f}"),
    }
}

/// A run replays exactly: the same scenario twice gives the same log, step by step.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_run_replays_exactly() {
    for sc in [
        Scenario { crashes: true, ..honest(7) },
        Scenario { malice: Some((SELLER, Malice::Replays)), crashes: true, ..honest(8) },
        Scenario { malice: Some((BUYER, Malice::Replays)), crashes: true, ..honest(9) },
    ] {
        let (a, b) = (run(sc).await.unwrap(), run(sc).await.unwrap());
        assert!(a.log.len() > 20, "a run does something");
        assert_eq!(a.log, b.log, "{} does not replay", sc.repro());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn honest_runs_with_message_and_chain_faults() {
    many("honest", seeds(150), honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn crashes_after_any_commit() {
    many("crashes", seeds(150), |seed| Scenario { crashes: true, ..honest(seed + 10_000) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_malicious_seller_never_costs_the_buyer() {
    for (k, m) in Malice::SELLER.into_iter().enumerate() {
        let base = 20_000 + 1_000 * k as u64;
        many(&format!("seller {m:?}"), seeds(20), |seed| Scenario {
            malice: Some((SELLER, m)),
            crashes: true,
            ..honest(base + seed)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_malicious_buyer_never_costs_the_seller() {
    for (k, m) in Malice::BUYER.into_iter().enumerate() {
        let base = 40_000 + 1_000 * k as u64;
        many(&format!("buyer {m:?}"), seeds(20), |seed| Scenario {
            malice: Some((BUYER, m)),
            crashes: true,
            ..honest(base + seed)
        })
        .await;
    }
}

/// 60 swaps requested at once are funded in batches of at most 50 HTLCs (a seller record keeps
/// its funding transaction and must fit one encrypted backup event), and all of them end.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn fundings_are_batched_by_at_most_50_htlcs() {
    let sc = Scenario { steps: 40, swaps: 60, ..honest(2) };
    let o = run(sc).await.unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(o.claimed + o.refunded, 60);
    assert!(o.max_seller_tx_outputs > 2, "fundings were batched");
    assert!(o.max_seller_tx_outputs <= 51, "{} outputs", o.max_seller_tx_outputs);
}

/// A seller that withholds its signatures leaves every swap to the script path: claims due at
/// the same time go out in one transaction, and every run still ends with balances that add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn claims_due_together_are_batched() {
    let mut most = 0;
    for seed in 0..seeds(6) {
        let sc = Scenario {
            swaps: 4,
            malice: Some((SELLER, Malice::WithholdSignatures)),
            loop_in: false,
            ..honest(90_000 + seed)
        };
        let o = run(sc).await.unwrap_or_else(|f| panic!("{f}"));
        assert!(o.max_buyer_claim_inputs <= 20, "{} inputs", o.max_buyer_claim_inputs);
        most = most.max(o.max_buyer_claim_inputs);
    }
    assert!(most >= 2, "no claim of several swaps in any run");
}

/// The repro string names the direction, and reads back (also in its form before loop in).
#[test]
fn a_scenario_reads_back_from_its_repro_string() {
    let sc = Scenario { malice: Some((SELLER, Malice::NeverFunds)), crashes: true, ..honest(5) };
    assert!(sc.loop_in);
    let text = sc.repro();
    assert_eq!(text, "5:300:2:true:seller-NeverFunds:in");
    let back = Scenario::parse(&text).unwrap();
    assert_eq!(back.repro(), text);
    let old = Scenario::parse("4:300:2:false:honest").unwrap();
    assert!(!old.loop_in);
    assert!(Scenario::parse("4:300:2:false:honest:sideways").is_none());
}

/// A loop in where claims fall due together: the buyer (the maker) claims through the leaf, and
/// balances add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn loop_in_claims_through_the_leaf_when_the_seller_withholds_its_signatures() {
    for seed in 0..seeds(2) {
        let sc = Scenario {
            swaps: 3,
            malice: Some((SELLER, Malice::WithholdSignatures)),
            loop_in: true,
            ..honest(91_000 + seed)
        };
        let o = run(sc).await.unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(o.claimed + o.refunded, 3, "{}", sc.repro());
    }
}

/// Final at depth (spec `02-swap-flow.md`), both directions, over the real engines: the buyer's
/// claim confirmed once, reorganised out and dropped from the mempool, goes out again, and both
/// swaps end `Claimed` only once it is `ANTI_REORG_DEPTH` deep. Before the rule both ended at the
/// first confirmation and the claim was never sent again (seeds 614 and 90509 found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_claim_reorganised_out_and_dropped_goes_out_again() {
    for loop_in in [false, true] {
        let o = drill(Drill::ClaimDropped, loop_in).await.unwrap_or_else(|f| panic!("{f}"));
        assert!(o.sent_again, "{o:?}");
        assert_eq!(o.buyer, "Claimed", "loop_in {loop_in}");
        assert_eq!(o.seller.as_deref(), Some("Claimed"));
        let deep = o.decided_by.1 + ANTI_REORG_DEPTH - 1;
        assert!(o.ended_at.0.is_some_and(|t| t >= deep), "{o:?}");
        assert!(o.ended_at.1.is_some_and(|t| t >= deep), "{o:?}");
    }
}

/// The same for the seller's refund of a buyer that never pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_refund_reorganised_out_and_dropped_goes_out_again() {
    for loop_in in [false, true] {
        let o = drill(Drill::RefundDropped, loop_in).await.unwrap_or_else(|f| panic!("{f}"));
        assert!(o.sent_again, "{o:?}");
        assert_eq!(o.seller.as_deref(), Some("Refunded"), "loop_in {loop_in}");
        let deep = o.decided_by.1 + ANTI_REORG_DEPTH - 1;
        assert!(o.ended_at.1.is_some_and(|t| t >= deep), "{o:?}");
    }
}

/// A reorg puts the seller's refund where the buyer's claim was: the buyer follows the chain
/// and ends `Lost` (by that refund) once it is deep, not `Claimed` at its claim's first
/// confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_reorg_that_lands_the_other_sides_spend_decides() {
    for loop_in in [false, true] {
        let o = drill(Drill::RefundReplacesClaim, loop_in).await.unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(o.buyer, "Lost", "loop_in {loop_in}: {o:?}");
        let deep = o.decided_by.1 + ANTI_REORG_DEPTH - 1;
        assert!(o.ended_at.0.is_some_and(|t| t >= deep), "{o:?}");
    }
}
