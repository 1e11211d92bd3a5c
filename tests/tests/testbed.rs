//! The deterministic test bed over many seeds: honest runs, crashes after any commit, and a
//! malicious peer of each kind. A failure prints the seed and the run's trace; rerun one seed
//! with `LOOPER_SEED=<seed> cargo test -p looper-conformance --test testbed one_seed`.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_seed() {
    let Some(seed) = std::env::var("LOOPER_SEED").ok().and_then(|s| s.parse().ok()) else { return };
    let crashes = std::env::var("LOOPER_CRASHES").is_ok();
    let sc = Scenario { seed, steps: 300, swaps: 2, malice: None, crashes };
    match run(sc).await {
        Ok(o) => eprintln!("{o:?}"),
        Err(f) => panic!("{f}"),
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
    let kinds = [
        Malice::WrongKeys,
        Malice::WithholdSignatures,
        Malice::Replays,
        Malice::LateSettlement,
        Malice::ShortFunding,
        Malice::InvoiceHash,
        Malice::InvoiceAmount,
        Malice::InvoicePayee,
        Malice::DoubleSpendFunding,
    ];
    for (k, m) in kinds.into_iter().enumerate() {
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
