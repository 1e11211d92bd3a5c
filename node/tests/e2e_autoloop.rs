//! Autoloop end to end on the regtest harness (issue 18): real `looper-node` processes with
//! autoloop running every second, the embedded chain, a local relay and the harness's channel
//! buyer -> seller. Payments pushed through the channel move its balance past a threshold: the
//! node with too much local balance loops out on its own (the seller's loop-out offer), the node
//! with too little loops in (the buyer's loop-in offer); the buyer's budget then stops a second
//! loop out and says so; a dry run changes nothing; a restart keeps the rules and the spent
//! budget. Every autoloop swap is labelled `autoloop` in `GET /v1/swaps`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use looper_api::{
    AutoloopAction, AutoloopBudget, AutoloopConfig, AutoloopPlan, AutoloopRule, AutoloopStatus,
    SwapStatus, SwapSummary,
};
use looper_protocol::SwapDirection;
use looper_regtest::harness::{wait_until, ApiClient, Harness, HarnessConfig, NodeSpec};

use e2e_common::scratch;

const SWAP_TIMEOUT: Duration = Duration::from_secs(180);
/// Largest autoloop swap: within the 10 % of the channel ldk-node lets be in flight.
const MAX_SWAP: u64 = 150_000;

async fn status(api: &ApiClient) -> Result<AutoloopStatus> {
    Ok(api.get("/v1/autoloop").await?)
}

async fn dry_run(api: &ApiClient) -> Result<AutoloopPlan> {
    Ok(api.post("/v1/autoloop/dry-run", &serde_json::json!({})).await?)
}

async fn set(api: &ApiClient, config: &AutoloopConfig) -> Result<AutoloopStatus> {
    Ok(api.put("/v1/autoloop", config).await?)
}

async fn autoloop_swaps(api: &ApiClient) -> Result<Vec<SwapSummary>> {
    Ok(api.swaps().await?.into_iter().filter(|s| s.label.as_deref() == Some("autoloop")).collect())
}

/// The local share of the node's one channel, percent.
async fn local_pct(api: &ApiClient) -> Result<u64> {
    let ch = api.ln_channels().await?;
    let c = ch.first().context("no channel")?;
    Ok(c.outbound_msat * 100 / (c.outbound_msat + c.inbound_msat).max(1))
}

/// The autoloop swap of `api` in `direction` once it ended (it must succeed).
async fn wait_autoloop_swap(api: &ApiClient, direction: SwapDirection) -> Result<SwapSummary> {
    let s = wait_until("an autoloop swap to end", SWAP_TIMEOUT, || async {
        let swaps = autoloop_swaps(api).await.ok()?;
        swaps.into_iter().find(|s| s.direction == direction && s.status != SwapStatus::Pending)
    })
    .await?;
    ensure!(s.status == SwapStatus::Succeeded, "autoloop swap ended {:?}: {s:?}", s.state);
    Ok(s)
}

fn rule(low_pct: u8, high_pct: u8) -> AutoloopRule {
    AutoloopRule {
        low_pct,
        high_pct,
        max_swap_sat: MAX_SWAP,
        min_interval_secs: 0,
        max_cost_sat: 5_000,
        max_cost_ppm: 50_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_autoloop_balances_both_ways_within_its_budget() -> Result<()> {
    let started = std::time::Instant::now();
    let s = scratch()?;
    let mut c = HarnessConfig::new(&s.dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![NodeSpec::seller("seller"), NodeSpec::buyer("buyer")];
    c.channel_sat = 2_000_000;
    let mut h = Harness::start(c).await?;
    let buyer = h.node("buyer")?.api().clone();
    let seller = h.node("seller")?.api().clone();
    h.publish_loop_in_offer("buyer").await?;
    let miner = h.start_miner(Duration::from_secs(1));

    // Off by default.
    let st = status(&buyer).await?;
    ensure!(!st.config.enabled && st.period_start == 0, "{st:?}");
    ensure!(st.stopped.as_deref() == Some("autoloop is disabled"), "{st:?}");

    // The channel starts all on the buyer's side: 3 x 200 000 sat to the seller (70 / 30).
    for _ in 0..3 {
        buyer.push_payment(&seller, 200_000).await?;
    }
    // (A channel's balances show a payment once its commitment dance is over.)
    wait_until("the payments in the buyer's balance", SWAP_TIMEOUT, || async {
        (local_pct(&buyer).await.ok()? < 72).then_some(())
    })
    .await?;
    eprintln!(
        "buyer local {}%, seller local {}%",
        local_pct(&buyer).await?,
        local_pct(&seller).await?
    );

    // The buyer loops out above 78 % (never in), within a budget for one swap; the seller loops
    // in below 13 % (never out). (The thresholds leave a few percent of margin to each drift.)
    let buyer_rules = AutoloopConfig {
        enabled: false,
        rule: rule(0, 78),
        overrides: Vec::new(),
        budget: AutoloopBudget { max_fee_sat: 2_500, period_secs: 86_400, max_in_flight: 1 },
        max_seller_failures: 0,
    };
    let st = set(&buyer, &buyer_rules).await?;
    ensure!(st.period_start > 0 && st.left_sat == 2_500, "{st:?}");
    let seller_rules = AutoloopConfig {
        enabled: true,
        rule: rule(13, 100),
        budget: AutoloopBudget { max_fee_sat: 20_000, ..AutoloopBudget::default() },
        ..buyer_rules.clone()
    };
    set(&seller, &seller_rules).await?;
    let plan = dry_run(&buyer).await?;
    ensure!(plan.decisions.len() == 1, "{plan:?}");
    ensure!(plan.decisions[0].action == AutoloopAction::None, "{plan:?}");
    ensure!(plan.decisions[0].reason.contains("within [0%, 78%]"), "{plan:?}");

    // Drift: the seller pays the buyer 250 000 sat: the buyer is above 78 %. Still disabled: a
    // dry run says what it would do (the seller's offer, its quote) and changes nothing.
    seller.push_payment(&buyer, 250_000).await?;
    eprintln!("buyer local {}% after the drift", local_pct(&buyer).await?);
    let plan = wait_until("the dry run wants a loop out", SWAP_TIMEOUT, || async {
        let p = dry_run(&buyer).await.ok()?;
        p.decisions.first().is_some_and(|d| d.choice.is_some()).then_some(p)
    })
    .await?;
    let d = &plan.decisions[0];
    eprintln!("dry run: {}", d.reason);
    ensure!(plan.dry_run && plan.stopped.as_deref() == Some("autoloop is disabled"), "{plan:?}");
    ensure!(d.action == AutoloopAction::None && d.amount_sat == Some(MAX_SWAP), "{d:?}");
    ensure!(d.reason.starts_with("would loop out 150000 sat"), "{d:?}");
    let choice = d.choice.clone().context("choice")?;
    ensure!(choice.seller == seller.info().await?.nostr_pubkey, "{choice:?}");
    ensure!(choice.swap_fee_sat == 1_000 + MAX_SWAP * 2_500 / 1_000_000, "{choice:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(buyer.swaps().await?.is_empty(), "a dry run started a swap");
    let st = status(&buyer).await?;
    ensure!(st.spent_sat == 0 && st.swaps.is_empty() && st.last_run.is_none(), "{st:?}");

    // Enabled: the buyer loops out on its own, labelled autoloop.
    set(&buyer, &AutoloopConfig { enabled: true, ..buyer_rules.clone() }).await?;
    let out = wait_autoloop_swap(&buyer, SwapDirection::LoopOut).await?;
    ensure!(out.amount_sat == Some(MAX_SWAP), "{out:?}");
    ensure!(out.state == "Claimed", "{out:?}");
    let spent = wait_until("the loop out's cost in the ledger", SWAP_TIMEOUT, || async {
        let st = status(&buyer).await.ok()?;
        (st.in_flight == 0 && st.swaps.len() == 1).then_some(st)
    })
    .await?;
    ensure!(spent.swaps[0].status == SwapStatus::Succeeded, "{spent:?}");
    ensure!(spent.spent_sat > 1_675 && spent.spent_sat < 2_500, "{spent:?}");
    ensure!(spent.spent_sat == spent.swaps[0].cost_sat, "{spent:?}");
    eprintln!(
        "autoloop loop out of {MAX_SWAP} sat: cost {} sat, buyer local {}% ({:.0?})",
        spent.spent_sat,
        local_pct(&buyer).await?,
        started.elapsed()
    );

    // Drift the other way: the seller pays 2 x 150 000 sat: it is below 13 % and loops in (the
    // buyer's loop-in offer); the buyer is above 78 % again but its budget is spent.
    for _ in 0..2 {
        seller.push_payment(&buyer, 150_000).await?;
    }
    eprintln!("seller local {}% after the second drift", local_pct(&seller).await?);
    let inn = wait_autoloop_swap(&seller, SwapDirection::LoopIn).await?;
    ensure!(inn.amount_sat == Some(MAX_SWAP), "{inn:?}");
    eprintln!(
        "autoloop loop in of {MAX_SWAP} sat: seller local {}% ({:.0?})",
        local_pct(&seller).await?,
        started.elapsed()
    );
    // The buyer (the maker of that loop in) has it unlabelled: not its own autoloop's.
    let made = buyer.swap(&inn.swap_id).await?;
    ensure!(made.direction == SwapDirection::LoopIn && made.label.is_none(), "{made:?}");

    let blocked = wait_until("the buyer's budget says it is spent", SWAP_TIMEOUT, || async {
        let st = status(&buyer).await.ok()?;
        st.stopped.as_deref().is_some_and(|s| s.starts_with("budget spent")).then_some(st)
    })
    .await?;
    eprintln!("buyer: {}", blocked.stopped.clone().unwrap_or_default());
    ensure!(local_pct(&buyer).await? > 78, "the buyer is not above its threshold");
    let run = blocked.last_run.clone().context("last run")?;
    ensure!(!run.dry_run && run.decisions[0].reason.contains("left in the budget"), "{run:?}");
    ensure!(autoloop_swaps(&buyer).await?.len() == 1, "a second loop out started");

    // A restart keeps the rules and the spent budget: still nothing started.
    h.restart("buyer").await?;
    let buyer = h.node("buyer")?.api().clone();
    let after = status(&buyer).await?;
    ensure!(after.config == AutoloopConfig { enabled: true, ..buyer_rules }, "{after:?}");
    ensure!(
        after.spent_sat == blocked.spent_sat,
        "spent {} -> {}",
        blocked.spent_sat,
        after.spent_sat
    );
    ensure!(after.period_start == blocked.period_start, "{after:?}");
    ensure!(after.swaps.len() == 1, "{after:?}");
    let plan = dry_run(&buyer).await?;
    ensure!(plan.stopped.as_deref().is_some_and(|s| s.starts_with("budget spent")), "{plan:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(autoloop_swaps(&buyer).await?.len() == 1, "a loop out started after the restart");
    miner.stop();
    eprintln!("e2e autoloop done in {:.0?}", started.elapsed());
    h.stop().await;
    Ok(())
}
