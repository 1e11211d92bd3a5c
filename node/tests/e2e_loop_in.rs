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

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};
use looper_protocol::SwapDirection;
use looper_regtest::harness::{
    report_follow, wait_until, Harness, HarnessConfig, LoopOutReport, NodeSpec,
};

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

/// The money of both sides: the taker (`seller`: locks, is paid) and the maker (`buyer`: pays,
/// claims).
#[derive(Debug, Clone, Copy)]
struct Balances {
    taker_wallet: u64,
    /// What the taker can receive: the maker's balance less the reserve (the taker's own
    /// outbound is not linear: it starts below its reserve).
    taker_ln_in_msat: u64,
    maker_wallet: u64,
    maker_ln_out_msat: u64,
}

async fn balances(h: &Harness) -> Result<Balances> {
    h.sync_all().await;
    let taker = h.node("seller")?.api();
    let maker = h.node("buyer")?.api();
    Ok(Balances {
        taker_wallet: taker.wallet_balance().await?.total_sat,
        taker_ln_in_msat: taker.ln_balance().await?.lightning_inbound_msat,
        maker_wallet: maker.wallet_balance().await?.total_sat,
        maker_ln_out_msat: maker.ln_balance().await?.lightning_outbound_msat,
    })
}

/// The report of claimed loop in `id`, read on the maker, with the funding's chain data.
async fn report(h: &Harness, id: &str) -> Result<LoopOutReport> {
    let mut r = report_follow(h.node("buyer")?, id, SWAP_TIMEOUT).await?;
    r.fill_chain_data(&h.chain().esplora_url()).await;
    ensure!(r.loop_in && r.funding_fee_paid_sat > 0, "{r:?}");
    Ok(r)
}

/// After a claimed loop in, to the satoshi: the taker's wallet paid `amount + funding fee` and it
/// received the invoice (the amount less the maker's fees) over the channel; the maker paid the
/// invoice and its wallet got `amount - claim fee`.
async fn check_balances(h: &Harness, before: Balances, r: &LoopOutReport) -> Result<()> {
    let invoice_msat = (r.amount_sat - r.swap_fee_sat - r.funding_fee_sat) * 1000;
    let want = Balances {
        taker_wallet: before.taker_wallet - r.amount_sat - r.funding_fee_paid_sat,
        taker_ln_in_msat: before.taker_ln_in_msat - invoice_msat,
        maker_wallet: before.maker_wallet + r.amount_sat - r.claim_fee_sat,
        maker_ln_out_msat: before.maker_ln_out_msat - invoice_msat,
    };
    let settled = wait_until("balances settled", SWAP_TIMEOUT, || async {
        // A channel whose peer is still reconnecting after a restart reports no outbound
        // capacity for a moment: wait for every figure.
        let now = balances(h).await.ok()?;
        (now.taker_wallet == want.taker_wallet
            && now.taker_ln_in_msat == want.taker_ln_in_msat
            && now.maker_wallet == want.maker_wallet
            && now.maker_ln_out_msat == want.maker_ln_out_msat)
            .then_some(())
    })
    .await;
    if let Err(e) = settled {
        bail!("{e:#}: before {before:?}, want {want:?}, now {:?}; {r:?}", balances(h).await.ok());
    }
    Ok(())
}

/// The taker asks for its funding to confirm within 1 block (`conf_target`), where the chain's
/// estimate is 25 sat/vB against 1 for the node's own funding target: the funding pays that rate.
/// The money adds up to the satoshi.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_loop_in_cooperative_claim() -> Result<()> {
    const URGENT_SAT_VB: u64 = 25;
    let s = scratch()?;
    let h = Harness::start(config(&s.dir)).await?;
    // Only the 1-block target moves (2 and up stay at the harness's 1 sat/vB: the channel's
    // feerate, and so its balances, stay as they are).
    h.chain().set_fee_estimates(Some(BTreeMap::from([(1, URGENT_SAT_VB as f64), (2, 1.0)])))?;
    let maker = h.node("buyer")?.api().clone();
    let taker = h.node("seller")?.api().clone();
    h.publish_loop_in_offer("buyer").await?;
    let before = balances(&h).await?;

    let offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    ensure!(offer.offer.direction == SwapDirection::LoopIn, "{offer:?}");
    // A loop-out taker never sees it.
    let out_offers = taker.discover(AMOUNT).await?;
    ensure!(out_offers.iter().all(|d| d.offer.direction == SwapDirection::LoopOut));

    let miner = h.start_miner(Duration::from_secs(1));
    let id = taker.swap_in_at(&offer, AMOUNT, MAX_FEE, Some(1)).await?;
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

    // The taker's invoice was paid in full (inbound, succeeded, its amount).
    let r = report(&h, &id).await?;
    let invoice_sat = r.amount_sat - r.swap_fee_sat - r.funding_fee_sat;
    let hash = end.payment_hash.clone().unwrap_or_default();
    let paid: looper_api::PaymentInfo = taker.get(&format!("/v1/ln/payments/{hash}")).await?;
    ensure!(paid.status == looper_api::PaymentStatus::Succeeded, "{paid:?}");
    ensure!(paid.direction == looper_api::PaymentDirection::Inbound, "{paid:?}");
    ensure!(paid.amount_msat == Some(invoice_sat * 1000), "{paid:?}, invoice {invoice_sat} sat");
    // The funding paid the rate of the swap's own target.
    let rate = r.funding_fee_paid_sat / r.funding_vsize.max(1);
    ensure!(rate >= URGENT_SAT_VB, "funding at {rate} sat/vB for a 1-block target: {r:?}");
    check_balances(&h, before, &r).await?;
    eprintln!("{r}");
    h.chain().set_fee_estimates(None)?;
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
/// The maker serves its loop-in offer from its configuration (`[seller.in]`): published at
/// start with the id `looper-in`, at most what its channel can pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_a_loop_out_and_a_loop_in_at_once() -> Result<()> {
    let s = scratch()?;
    let mut maker = NodeSpec::buyer("buyer");
    maker.loop_in_offer = true;
    let h = Harness::start(config_with(&s.dir, NodeSpec::seller("seller"), maker)).await?;
    let out_offer = h.best_offer("buyer", AMOUNT).await?;
    let in_offer = h.best_loop_in_offer("seller", AMOUNT).await?;
    ensure!(in_offer.offer.offer_id == "looper-in", "{in_offer:?}");
    let outbound_sat = h.node("buyer")?.api().ln_balance().await?.lightning_outbound_msat / 1000;
    ensure!(in_offer.offer.max_amount_sat <= outbound_sat, "{in_offer:?}, outbound {outbound_sat}");
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
/// end `Claimed` with the balances differing only by the fees. Blocks are mined only while a side waits for one (stalled 2 s), so the
/// waiting states hold still. Returns the state the kill hit.
async fn kill_in(h: &mut Harness, victim: &str, state: &str) -> Result<String> {
    let order: &[&str] = if victim == "seller" { &TAKER_ORDER } else { &MAKER_ORDER };
    let target = order.iter().position(|s| *s == state).expect("a state of the order");
    let before = balances(h).await?;
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
    let r = report(h, &id).await?;
    check_balances(h, before, &r)
        .await
        .map_err(|e| anyhow::anyhow!("{victim} killed at {killed_at}: {e:#}"))?;
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
