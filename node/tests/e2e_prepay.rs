//! End to end on the regtest harness with a prepay (issue 15, spec `02-swap-flow.md`, "Prepay"):
//! real `looper-node` processes, a real ldk-node channel buyer -> seller. The seller's offer asks
//! for a prepay: the buyer pays it (a plain invoice the seller's ldk-node settles at once) right
//! after `swap_accept`, the seller funds only then, and the rest goes through the hold invoice, so
//! an honest buyer pays what it would without a prepay. A buyer that prepays and then gives up
//! leaves the prepay with the seller, who refunds its HTLC.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::time::Duration;

use anyhow::{ensure, Result};
use looper_regtest::harness::{report_follow, wait_until, Harness, HarnessConfig, NodeSpec};
use serde_json::json;

use e2e_common::{scratch, state_of, take_unpaid, AMOUNT, MAX_FEE};

const PREPAY_SAT: u64 = 1_000;
const SWAP_TIMEOUT: Duration = Duration::from_secs(180);

async fn ln_out_msat(h: &Harness, node: &str) -> Result<u64> {
    Ok(h.node(node)?.api().ln_balance().await?.lightning_outbound_msat)
}

/// Waits until the buyer's channel balance went down by `msat` from `before`.
async fn wait_paid(h: &Harness, before: u64, msat: u64, what: &str) -> Result<()> {
    let got = wait_until(what, SWAP_TIMEOUT, || async {
        let now = ln_out_msat(h, "buyer").await.ok()?;
        (before.checked_sub(now) == Some(msat)).then_some(())
    })
    .await;
    if got.is_err() {
        let now = ln_out_msat(h, "buyer").await?;
        anyhow::bail!("{what}: buyer channel {before} -> {now} msat, expected -{msat}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_prepaid_loop_out_and_a_prepaid_swap_given_up() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.offer.prepay_sat = looper_api::Prepay::Sat(PREPAY_SAT);
    let mut c = HarnessConfig::new(&s.dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![seller, NodeSpec::buyer("buyer")];
    c.channel_sat = 10 * AMOUNT + 100_000;
    let h = Harness::start(c).await?;
    let miner = h.start_miner(Duration::from_secs(1));

    // 1. A prepaid swap that completes: prepay + invoice = amount + swap fee + funding fee.
    let before = ln_out_msat(&h, "buyer").await?;
    let offer = h.best_offer("buyer", AMOUNT).await?;
    ensure!(offer.offer.prepay_sat == Some(PREPAY_SAT), "offer {:?}", offer.offer);
    let id = h.node("buyer")?.api().swap_out(&offer, AMOUNT, MAX_FEE).await?;
    let r = report_follow(h.node("buyer")?, &id, SWAP_TIMEOUT).await?;
    eprintln!("{r}");
    ensure!(r.claim_purpose == "cooperative_claim", "{r:?}");
    wait_until("seller claimed", SWAP_TIMEOUT, || async {
        (state_of(&h, "seller", &id).await == "Claimed").then_some(())
    })
    .await?;
    let total_msat = (r.amount_sat + r.swap_fee_sat + r.funding_fee_sat) * 1000;
    wait_paid(&h, before, total_msat, "prepay and invoice paid").await?;
    for node in ["buyer", "seller"] {
        let events = h.node(node)?.api().swap_events(&id).await?;
        ensure!(
            events.iter().any(|e| e["event"] == "prepaid" && e["amount_sat"] == PREPAY_SAT),
            "{node} logged no prepay: {events:?}"
        );
    }

    // 2. A buyer that prepays, sees the HTLC funded and gives up: the seller keeps the prepay
    //    and takes its coins back (cooperatively).
    let before = ln_out_msat(&h, "buyer").await?;
    let id = take_unpaid(&h, SWAP_TIMEOUT).await?;
    h.node("buyer")?
        .api()
        .post::<_, serde_json::Value>(&format!("/v1/swaps/{id}/abort"), &json!({}))
        .await?;
    wait_until("seller refunded", SWAP_TIMEOUT, || async {
        (state_of(&h, "seller", &id).await == "Refunded").then_some(())
    })
    .await?;
    wait_paid(&h, before, PREPAY_SAT * 1000, "only the prepay paid").await?;
    miner.stop();
    h.stop().await;
    Ok(())
}
