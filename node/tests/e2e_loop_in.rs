//! Loop in end to end on the regtest harness: real `looper-node` processes, the embedded chain,
//! a local Nostr relay and the ldk-node channel buyer -> seller of the harness. Here the node
//! named `buyer` (it has the channel's outbound liquidity) makes a loop-in offer and pays; the
//! node named `seller` (on-chain funds, inbound liquidity) takes it: it makes the preimage,
//! locks the HTLC and is paid over Lightning; the maker claims the HTLC cooperatively, or through
//! the claim leaf when the taker does not co-sign. A maker that never pays: the taker refunds
//! through the refund leaf after the timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::time::Duration;

use anyhow::{ensure, Result};
use looper_protocol::SwapDirection;
use looper_regtest::harness::{wait_until, Harness, HarnessConfig, NodeSpec};

use e2e_common::{scratch, state_of, AMOUNT, MAX_FEE};

const SWAP_TIMEOUT: Duration = Duration::from_secs(180);

fn config(dir: &std::path::Path) -> HarnessConfig {
    config_with(dir, NodeSpec::seller("seller"), NodeSpec::buyer("buyer"))
}

fn config_with(dir: &std::path::Path, taker: NodeSpec, maker: NodeSpec) -> HarnessConfig {
    let mut c = HarnessConfig::new(dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![taker, maker];
    c.channel_sat = 10 * AMOUNT + 100_000;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_loop_in_cooperative_claim() -> Result<()> {
    let s = scratch()?;
    let h = Harness::start(config(&s.dir)).await?;
    let maker = h.node("buyer")?.api().clone();
    let taker = h.node("seller")?.api().clone();
    h.publish_loop_in_offer("buyer").await?;
    h.sync_all().await;
    let taker_wallet = taker.wallet_balance().await?.total_sat;
    let taker_in = taker.ln_balance().await?.lightning_outbound_msat;
    let maker_wallet = maker.wallet_balance().await?.total_sat;

    let offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    ensure!(offer.offer.direction == SwapDirection::LoopIn, "{offer:?}");
    // A loop-out taker never sees it.
    let out_offers = taker.discover(AMOUNT).await?;
    ensure!(out_offers.iter().all(|d| d.offer.direction == SwapDirection::LoopOut));

    let miner = h.start_miner(Duration::from_secs(1));
    let id = taker.swap_in(&offer, AMOUNT, MAX_FEE).await?;
    let end = wait_until("the taker's loop in final", SWAP_TIMEOUT, || async {
        let v = taker.swap(&id).await.ok()?;
        v.is_final().then_some(v)
    })
    .await?;
    ensure!(end.state == "Claimed", "taker (locker) ended in {}: {:?}", end.state, end.record);
    ensure!(end.direction == SwapDirection::LoopIn);
    let made = wait_until("the maker's side final", SWAP_TIMEOUT, || async {
        let v = maker.swap(&id).await.ok()?;
        v.is_final().then_some(v)
    })
    .await?;
    miner.stop();
    ensure!(made.state == "Claimed", "maker (claimer) ended in {}: {:?}", made.state, made.record);
    ensure!(made.direction == SwapDirection::LoopIn);
    // The maker's claim went out through the key path, co-signed by the taker.
    let events = maker.swap_events(&id).await?;
    let text = serde_json::to_string(&events)?;
    ensure!(text.contains("cooperative_claim"), "maker's events: {text}");

    // The money: the taker paid AMOUNT + its funding fee on chain and was paid the invoice
    // (AMOUNT less the maker's fees) over Lightning; the maker's wallet got AMOUNT less its
    // claim fee.
    let quote = &end.record["swap"]["quote"];
    let invoice_sat = quote["invoice_amount_sat"].as_u64().unwrap_or(0);
    ensure!(invoice_sat > 0 && invoice_sat < AMOUNT, "quote {quote}");
    // The taker's invoice was paid in full (inbound, succeeded, its amount).
    let hash = end.payment_hash.clone().unwrap_or_default();
    let paid: looper_api::PaymentInfo = taker.get(&format!("/v1/ln/payments/{hash}")).await?;
    ensure!(paid.status == looper_api::PaymentStatus::Succeeded, "{paid:?}");
    ensure!(paid.direction == looper_api::PaymentDirection::Inbound, "{paid:?}");
    ensure!(paid.amount_msat == Some(invoice_sat * 1000), "{paid:?}, invoice {invoice_sat} sat");
    let got = wait_until("balances settled", SWAP_TIMEOUT, || async {
        h.sync_all().await;
        let out = taker.ln_balance().await.ok()?.lightning_outbound_msat;
        let tw = taker.wallet_balance().await.ok()?.total_sat;
        let mw = maker.wallet_balance().await.ok()?.total_sat;
        eprintln!("taker out {taker_in} -> {out} msat, wallet {taker_wallet} -> {tw}; maker wallet {maker_wallet} -> {mw}");
        (out > taker_in && tw < taker_wallet - AMOUNT && mw > maker_wallet).then_some((tw, mw))
    })
    .await?;
    let (tw, mw) = got;
    let funding_fee = taker_wallet - AMOUNT - tw;
    let claim_fee = maker_wallet + AMOUNT - mw;
    ensure!(funding_fee < 2_000, "taker's funding fee {funding_fee}");
    ensure!(claim_fee < 1_000, "maker's claim fee {claim_fee}");
    eprintln!(
        "loop in of {AMOUNT} sat: taker paid {funding_fee} sat funding fee, received {invoice_sat} \
         sat over Lightning; maker claimed {} sat ({claim_fee} sat claim fee)",
        AMOUNT - claim_fee
    );
    h.stop().await;
    Ok(())
}

/// The taker (locker) does not co-sign (`seller.cooperative_claims = false`): the maker claims
/// through the claim leaf with the preimage its payment revealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_loop_in_script_path_claim() -> Result<()> {
    let s = scratch()?;
    let mut taker = NodeSpec::seller("seller");
    taker.seller_cooperative = false;
    let h = Harness::start(config_with(&s.dir, taker, NodeSpec::buyer("buyer"))).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let r = h.loop_in("seller", "buyer", AMOUNT, MAX_FEE).await?;
    miner.stop();
    eprintln!("{r}");
    ensure!(r.claim_purpose == "script_claim", "{r:?}");
    let taker_state = wait_until("the taker's side final", SWAP_TIMEOUT, || async {
        let v = h.node("seller").ok()?.api().swap(&r.swap_id).await.ok()?;
        v.is_final().then_some(v.state)
    })
    .await?;
    ensure!(taker_state == "Claimed", "taker ended in {taker_state}");
    h.stop().await;
    Ok(())
}

/// The maker accepts, sees the lock and never pays (it is frozen from the funding on): the
/// taker refunds through the refund leaf once the timeout passes, and gets its coins back less
/// the funding and refund fees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_loop_in_refund_when_the_maker_never_pays() -> Result<()> {
    let s = scratch()?;
    let mut maker = NodeSpec::buyer("buyer");
    maker.offer.timeout_delta = 60;
    maker.offer.claim_margin = 2;
    maker.offer.min_confirmations = 3;
    maker.buyer_min_claim_margin = Some(2);
    let mut h = Harness::start(config_with(&s.dir, NodeSpec::seller("seller"), maker)).await?;
    h.publish_loop_in_offer("buyer").await?;
    h.sync_all().await;
    let taker = h.node("seller")?.api().clone();
    let before = taker.wallet_balance().await?.total_sat;
    let offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    let id = taker.swap_in(&offer, AMOUNT, MAX_FEE).await?;
    wait_until("the maker sees the lock", SWAP_TIMEOUT, || async {
        (state_of(&h, "buyer", &id).await == "Funded").then_some(())
    })
    .await?;
    // Frozen before the funding's third confirmation: it never pays.
    h.pause("buyer")?;
    let deadline = std::time::Instant::now() + SWAP_TIMEOUT;
    loop {
        let st = state_of(&h, "seller", &id).await;
        if st == "Refunded" {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "taker never refunded (at {st})");
        h.mine(if st == "Refunding" { 1 } else { 5 }).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v = taker.swap(&id).await?;
    ensure!(v.direction == SwapDirection::LoopIn);
    let events = serde_json::to_string(&taker.swap_events(&id).await?)?;
    ensure!(events.contains("script_refund"), "taker's events: {events}");
    // Nothing was paid over Lightning; the wallet lost the two fees only.
    h.resume("buyer")?;
    let after = wait_until("the taker's wallet settled", SWAP_TIMEOUT, || async {
        h.sync_all().await;
        let now = taker.wallet_balance().await.ok()?.total_sat;
        (now > before - 2_000 && now < before).then_some(now)
    })
    .await?;
    eprintln!("loop in refunded: the taker's wallet {before} -> {after} sat");
    h.stop().await;
    Ok(())
}

/// The maker aborts after the lock (before paying; the offer asks 50 confirmations so it would
/// not pay yet): the taker asks it to co-sign a refund and gets its coins back at once through
/// the key path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_loop_in_cooperative_refund_when_the_maker_aborts() -> Result<()> {
    let s = scratch()?;
    let mut maker = NodeSpec::buyer("buyer");
    maker.offer.min_confirmations = 50;
    maker.offer.timeout_delta = 200;
    let h = Harness::start(config_with(&s.dir, NodeSpec::seller("seller"), maker)).await?;
    h.publish_loop_in_offer("buyer").await?;
    let taker = h.node("seller")?.api().clone();
    let offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    let id = taker.swap_in(&offer, AMOUNT, MAX_FEE).await?;
    wait_until("the maker sees the lock", SWAP_TIMEOUT, || async {
        (state_of(&h, "buyer", &id).await == "Funded").then_some(())
    })
    .await?;
    let _: serde_json::Value = h
        .node("buyer")?
        .api()
        .post(&format!("/v1/swaps/{id}/abort"), &serde_json::json!({}))
        .await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let end = wait_until("the taker refunded", SWAP_TIMEOUT, || async {
        let v = taker.swap(&id).await.ok()?;
        v.is_final().then_some(v)
    })
    .await;
    miner.stop();
    let end = end?;
    ensure!(end.state == "Refunded", "taker ended in {}", end.state);
    let events = serde_json::to_string(&taker.swap_events(&id).await?)?;
    ensure!(events.contains("cooperative_refund"), "taker's events: {events}");
    ensure!(state_of(&h, "buyer", &id).await == "Aborted");
    h.stop().await;
    Ok(())
}

/// One node does a loop out and a loop in at once with the same peer: the seller node sells
/// on chain (loop out, it locks) while it takes the buyer node's loop-in offer (it locks again,
/// and is paid over Lightning); both swaps end claimed on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_a_loop_out_and_a_loop_in_at_once() -> Result<()> {
    let s = scratch()?;
    let h = Harness::start(config(&s.dir)).await?;
    h.publish_loop_in_offer("buyer").await?;
    let out_offer = h.best_offer("buyer", AMOUNT).await?;
    let in_offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let out_id = h.node("buyer")?.api().swap_out(&out_offer, AMOUNT, MAX_FEE).await?;
    let in_id = h.node("seller")?.api().swap_in(&in_offer, AMOUNT, MAX_FEE).await?;
    for (node, id) in
        [("buyer", &out_id), ("seller", &out_id), ("seller", &in_id), ("buyer", &in_id)]
    {
        let api = h.node(node)?.api().clone();
        let state = wait_until(&format!("{node}'s side of {id} final"), SWAP_TIMEOUT, || {
            let api = api.clone();
            async move {
                let v = api.swap(id).await.ok()?;
                v.is_final().then_some(v.state)
            }
        })
        .await?;
        ensure!(state == "Claimed", "{node} ended {id} in {state}");
    }
    miner.stop();
    let listed = h.node("seller")?.api().swaps().await?;
    let directions: Vec<_> = listed.iter().map(|s| (s.swap_id.clone(), s.direction)).collect();
    ensure!(directions.contains(&(out_id.clone(), SwapDirection::LoopOut)), "{directions:?}");
    ensure!(directions.contains(&(in_id.clone(), SwapDirection::LoopIn)), "{directions:?}");
    h.stop().await;
    Ok(())
}

/// The taker's (locker's) states of a claimed loop in, in order.
const TAKER_ORDER: [&str; 6] =
    ["Requested", "AwaitingInvoice", "Accepted", "Funded", "Paid", "Claimed"];
/// The maker's (claimer's) states of a claimed loop in, in order.
const MAKER_ORDER: [&str; 7] =
    ["Accepting", "Accepted", "Funded", "Paying", "Claiming", "ClaimBroadcast", "Claimed"];
/// States reached by a Lightning update whose ChannelManager write is still under way (see
/// `e2e_swaps.rs`, `LDK_SETTLE`: a kill inside that window makes LDK force-close the channel,
/// funds safe; not this test's subject).
const LDK_WRITES_AT: [(&str, &str); 3] =
    [("buyer", "Paying"), ("buyer", "Claiming"), ("seller", "Paid")];

/// One loop in with `victim` (the taker `seller` or the maker `buyer`) killed with SIGKILL in
/// `state` (or the first state after it, when it passed too fast), restarted: both sides must
/// end `Claimed`. Blocks are mined only while a side waits for one (stalled 2 s), so the
/// waiting states hold still. Returns the state the kill hit.
async fn kill_in(h: &mut Harness, victim: &str, state: &str) -> Result<String> {
    let order: &[&str] = if victim == "seller" { &TAKER_ORDER } else { &MAKER_ORDER };
    let target = order.iter().position(|s| *s == state).expect("a state of the order");
    let offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    let id = h.node("seller")?.api().swap_in(&offer, AMOUNT, MAX_FEE).await?;
    let deadline = std::time::Instant::now() + SWAP_TIMEOUT;
    let mut last = (String::new(), std::time::Instant::now());
    let killed_at = loop {
        let now = state_of(h, victim, &id).await;
        let at = order.iter().position(|s| *s == now);
        if at.is_some_and(|i| i >= target) {
            ensure!(now != "Claimed", "{victim} passed {state}: ended in {now}");
            break now;
        }
        let maker = state_of(h, "buyer", &id).await;
        if maker != last.0 {
            last = (maker.clone(), std::time::Instant::now());
        }
        let waits_for_a_block = matches!(maker.as_str(), "Accepted" | "Funded" | "ClaimBroadcast");
        if waits_for_a_block && last.1.elapsed() > Duration::from_secs(2) {
            h.mine(1).await?;
            last.1 = std::time::Instant::now();
        }
        ensure!(std::time::Instant::now() < deadline, "{victim} never reached {state} (at {now})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if LDK_WRITES_AT.contains(&(victim, killed_at.as_str())) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    h.kill(victim)?;
    h.restart(victim).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let ends = both_final(h, &id).await;
    miner.stop();
    for (side, end) in ends? {
        ensure!(end == "Claimed", "{side} ended in {end} after {victim} was killed at {killed_at}");
    }
    Ok(killed_at)
}

/// The final state of swap `id` on the taker (`seller`) and the maker (`buyer`).
async fn both_final(h: &Harness, id: &str) -> Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for side in ["seller", "buyer"] {
        let api = h.node(side)?.api().clone();
        let end = wait_until(&format!("{side} final"), SWAP_TIMEOUT, || {
            let api = api.clone();
            async move {
                let v = api.swap(id).await.ok()?;
                v.is_final().then_some(v.state)
            }
        })
        .await?;
        out.push((side, end));
    }
    Ok(out)
}

/// SIGKILL of either side at each state of a loop in: every swap still ends claimed on both
/// sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_loop_in_sigkill_at_each_state() -> Result<()> {
    let s = scratch()?;
    let mut h = Harness::start(config(&s.dir)).await?;
    h.publish_loop_in_offer("buyer").await?;
    let mut caught = Vec::new();
    for state in &TAKER_ORDER[..5] {
        let at = kill_in(&mut h, "seller", state).await?;
        eprintln!("taker killed for {state}: at {at}");
        caught.push((("taker", *state), at));
    }
    for state in &MAKER_ORDER[..6] {
        let at = kill_in(&mut h, "buyer", state).await?;
        eprintln!("maker killed for {state}: at {at}");
        caught.push((("maker", *state), at));
    }
    let exact = caught.iter().filter(|((_, want), at)| want == at).count();
    eprintln!("{exact} of {} kills hit their state exactly: {caught:?}", caught.len());
    h.stop().await;
    Ok(())
}
