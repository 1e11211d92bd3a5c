//! The deterministic test bed over many seeds: honest runs, crashes after any commit, and a
//! malicious peer of each kind. A failure prints the scenario, the run's trace and the command
//! that reruns it (`LOOPER_SCENARIO=... cargo test -p looper-conformance --test testbed
//! one_scenario`). `LOOPER_BED_SEEDS=N` runs N seeds per group.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use looper_conformance::testbed::{run, Malice, Scenario, BUYER, SELLER};

fn seeds(default: u64) -> u64 {
    std::env::var("LOOPER_BED_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

async fn many(name: &str, n: u64, make: impl Fn(u64) -> Scenario) {
    let mut failures = Vec::new();
    let (mut claimed, mut refunded, mut crashes) = (0, 0, 0);
    for seed in 0..n {
        match run(make(seed)).await {
            Ok(o) => {
                claimed += o.claimed;
                refunded += o.refunded;
                crashes += o.crashes;
            }
            Err(f) => failures.push(f.to_string()),
        }
    }
    eprintln!("{name}: {n} seeds, {claimed} swaps claimed, {refunded} refunded, {crashes} crashes injected, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{name}: {} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn honest(seed: u64) -> Scenario {
    Scenario { seed, steps: 300, swaps: 2, malice: None, crashes: false }
}

/// Reruns the scenario a failure printed (`LOOPER_SCENARIO=...`); nothing without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_scenario() {
    let Ok(text) = std::env::var("LOOPER_SCENARIO") else { return };
    let sc = Scenario::parse(&text).expect("LOOPER_SCENARIO as a failure prints it");
    match run(sc).await {
        Ok(o) => eprintln!("{} claimed, {} refunded, {} crashes", o.claimed, o.refunded, o.crashes),
        Err(f) => panic!("{f}"),
    }
}

/// A run replays exactly: the same scenario twice gives the same log, step by step.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_run_replays_exactly() {
    for sc in [
        Scenario { crashes: true, ..honest(7) },
        Scenario { malice: Some((SELLER, Malice::Replays)), crashes: true, ..honest(8) },
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
    for (k, m) in Malice::ALL.into_iter().enumerate() {
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
    for (k, m) in
        [Malice::WrongKeys, Malice::WithholdSignatures, Malice::Replays].into_iter().enumerate()
    {
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
    let sc = Scenario { seed: 3, steps: 40, swaps: 60, malice: None, crashes: false };
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
            ..honest(90_000 + seed)
        };
        let o = run(sc).await.unwrap_or_else(|f| panic!("{f}"));
        assert!(o.max_buyer_claim_inputs <= 20, "{} inputs", o.max_buyer_claim_inputs);
        most = most.max(o.max_buyer_claim_inputs);
    }
    assert!(most >= 2, "no claim of several swaps in any run");
}
