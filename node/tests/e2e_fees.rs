//! End to end on the regtest harness (issue 14 item 5): claims and refunds that do not confirm
//! are replaced (BIP-0125, script path) by the rule of `protocol/src/fees.rs`, with real nodes on
//! the embedded chain and its fee market (`set_min_fee_rate`, `set_fee_estimates`, `drop_tx`).
//!
//! One harness (a seller with a 50-block timeout, a 2-block claim margin and a 50 sat/vB cap; a
//! buyer with a 5 sat/vB cap) runs the four scenarios one after the other (in the order 2, 1,
//! 4, 3: the refund kills the buyer for good):
//!
//! 1. `spike_claim_bumped(restart: false)`: the mempool minimum fee rate jumps to 30 sat/vB after
//!    the HTLC's first confirmation, before the claim (the buyer asks 3 confirmations). The
//!    claim (at the buyer's 5 sat/vB cap) is refused; no replacement while the cap holds; from
//!    6 blocks before the deadline (timeout - 2) the buyer replaces it above its cap, and it
//!    confirms before the timeout, for at most 80% of the HTLC. The seller ends `Claimed` and
//!    never refunds; the buyer's wallet receives the HTLC minus the claim's fee.
//! 2. `dropped_claim_rebroadcast`: a normal swap whose claim is dropped from the mempool: the
//!    buyer rebroadcasts it after the next block, and it confirms unchanged.
//! 3. `refund_bumped`: the buyer never pays (it asks 50 confirmations and is killed); at the
//!    timeout the seller's refund (1 sat/vB) goes out; a spike (estimates 25, minimum 20) evicts
//!    it and the seller replaces it at 25 sat/vB; a second one (estimates 80, minimum 40) evicts
//!    that and the seller replaces it at its cap, 50 sat/vB; it confirms, the seller is
//!    `Refunded`, its wallet down by the funding fee and the last refund's fee only.
//! 4. `spike_claim_bumped(restart: true)`: as 1, but the buyer is SIGKILLed right after its first
//!    `replaced` event, the replacement is dropped from the mempool and a block is mined while it
//!    is down; restarted, it carries on from the persisted replacement (every later replacement
//!    replaces it and pays more; the mined claim pays at least as much) and the claim confirms
//!    before the timeout.
//!
//! The engine polls the chain every second (its view of the tip is not in the API): after each
//! block the test gives the nodes time to see it (in the urgent window: until the buyer reacts)
//! before the next one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bitcoin::{OutPoint, Txid};
use looper_protocol::fees::{DEADLINE_SAFETY_BLOCKS, MAX_DEADLINE_FEE_PERCENT, URGENT_BLOCKS};
use looper_protocol::swap::ANTI_REORG_DEPTH;
use looper_regtest::harness::{wait_until, Harness, HarnessConfig, LoopOutReport, NodeSpec};
use serde_json::{json, Value};

use e2e_common::{scratch, state_of, take_unpaid, AMOUNT, MAX_FEE};

const SWAP_TIMEOUT: Duration = Duration::from_secs(120);
/// The seller's `timeout_delta`: short, so that the claim's urgent window is a few dozen blocks
/// away (the buyer needs `timeout - tip - claim_margin >= 42` when it pays).
const TIMEOUT_DELTA: u32 = 50;
/// The offer's claim margin and the buyer's floor.
const CLAIM_MARGIN: u32 = 2;
/// The buyer's fee-rate cap (`fees.max_fee_rate_sat_vb`).
const BUYER_CAP_SAT_VB: u64 = 5;
/// The seller's fee-rate cap.
const SELLER_CAP_SAT_VB: u64 = 50;
/// The mempool minimum fee rate of the claim scenarios' spike.
const SPIKE_SAT_VB: f64 = 30.0;
/// How long the nodes get to see a block when nothing is expected of them (the chain poll is 1 s).
const BLOCK_SEEN: Duration = Duration::from_millis(1300);

fn config(dir: &std::path::Path) -> HarnessConfig {
    let mut seller = NodeSpec::seller("seller");
    seller.offer.timeout_delta = TIMEOUT_DELTA;
    seller.offer.claim_margin = CLAIM_MARGIN;
    seller.max_fee_rate_sat_vb = Some(SELLER_CAP_SAT_VB);
    let mut buyer = NodeSpec::buyer("buyer");
    buyer.buyer_min_claim_margin = Some(CLAIM_MARGIN);
    buyer.max_fee_rate_sat_vb = Some(BUYER_CAP_SAT_VB);
    let mut c = HarnessConfig::new(dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![seller, buyer];
    c.channel_sat = 10 * AMOUNT + 100_000;
    c
}

/// The first field named `key` (depth first).
fn find_first(v: &Value, key: &str) -> Option<Value> {
    match v {
        Value::Object(m) => {
            m.get(key).cloned().or_else(|| m.values().find_map(|x| find_first(x, key)))
        }
        Value::Array(a) => a.iter().find_map(|x| find_first(x, key)),
        _ => None,
    }
}

/// The swap's record on `node`.
async fn record(h: &Harness, node: &str, id: &str) -> Result<Value> {
    Ok(h.node(node)?.api().swap(id).await?.record)
}

/// The swap's notifications on `node`, oldest first.
async fn events(h: &Harness, node: &str, id: &str) -> Result<Vec<Value>> {
    Ok(h.node(node)?.api().swap_events(id).await?)
}

/// The notifications named `kind`.
fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events.iter().filter(|e| e["event"] == kind).cloned().collect()
}

fn txid_of(v: &Value, key: &str) -> Result<Txid> {
    let s = v[key].as_str().with_context(|| format!("no {key} in {v}"))?;
    Ok(Txid::from_str(s)?)
}

fn u64_of(v: &Value, key: &str) -> Result<u64> {
    v[key].as_u64().with_context(|| format!("no {key} in {v}"))
}

/// A transaction as an event reports it (`broadcast`, `replaced`).
#[derive(Debug, Clone, Copy)]
struct Spend {
    txid: Txid,
    fee_sat: u64,
    vsize: u64,
}

impl Spend {
    fn of(event: &Value) -> Result<Spend> {
        Ok(Spend {
            txid: txid_of(event, "txid")?,
            fee_sat: u64_of(event, "fee_sat")?,
            vsize: u64_of(event, "vsize")?,
        })
    }
    fn rate_sat_vb(&self) -> f64 {
        self.fee_sat as f64 / self.vsize as f64
    }
}

/// What the test needs of the agreed terms, from the buyer's record.
#[derive(Debug, Clone, Copy)]
struct Terms {
    timeout_height: u32,
    htlc_sat: u64,
}

async fn terms(h: &Harness, id: &str) -> Result<Terms> {
    let rec = record(h, "buyer", id).await?;
    let timeout = find_first(&rec, "timeout_height").and_then(|v| v.as_u64());
    let htlc = find_first(&rec, "htlc_amount_sat").and_then(|v| v.as_u64());
    match (timeout, htlc) {
        (Some(t), Some(a)) => Ok(Terms { timeout_height: u32::try_from(t)?, htlc_sat: a }),
        _ => bail!("no timeout_height / htlc_amount_sat in the buyer's record {rec}"),
    }
}

/// The HTLC's outpoint from `node`'s record (`"txid:vout"`).
async fn htlc_outpoint(h: &Harness, node: &str, id: &str) -> Result<OutPoint> {
    let rec = record(h, node, id).await?;
    let op = find_first(&rec, "outpoint").with_context(|| format!("no outpoint in {rec}"))?;
    Ok(OutPoint::from_str(op.as_str().context("outpoint is not a string")?)?)
}

async fn wallet_sat(h: &Harness, node: &str) -> Result<u64> {
    h.sync_all().await;
    Ok(h.node(node)?.api().wallet_balance().await?.total_sat)
}

/// Waits for `node`'s wallet to hold `want` sat.
async fn wallet_settles(h: &Harness, node: &str, want: u64) -> Result<()> {
    let got = wait_until(&format!("{node}'s wallet at {want} sat"), SWAP_TIMEOUT, || async {
        (wallet_sat(h, node).await.ok()? == want).then_some(())
    })
    .await;
    if got.is_err() {
        bail!("{node}'s wallet holds {:?} sat, want {want}", wallet_sat(h, node).await.ok());
    }
    Ok(())
}

async fn wait_state(h: &Harness, node: &str, id: &str, want: &str) -> Result<()> {
    let what = format!("{node} in {want}");
    let r = wait_until(&what, SWAP_TIMEOUT, || async {
        let st = state_of(h, node, id).await;
        (st == want).then_some(())
    })
    .await;
    if r.is_err() {
        bail!("{what}: it is in {:?}", state_of(h, node, id).await);
    }
    Ok(())
}

/// Takes the seller's offer; `min_confirmations` overrides the buyer's default.
async fn take(h: &Harness, min_confirmations: Option<u32>) -> Result<String> {
    let offer = h.best_offer("buyer", AMOUNT).await?;
    let mut body = json!({
        "offer": offer.offer,
        "seller": offer.seller,
        "amount_sat": AMOUNT,
        "max_total_fee_sat": MAX_FEE,
    });
    if let Some(n) = min_confirmations {
        body["min_confirmations"] = json!(n);
    }
    let v: Value = h.node("buyer")?.api().post("/v1/swaps/out", &body).await?;
    Ok(v["swap_id"].as_str().context("swap_id")?.to_string())
}

/// The funding transaction once `node` saw it (and the chain has it).
async fn funding_txid(h: &Harness, node: &str, id: &str) -> Result<Txid> {
    let seen = wait_until(&format!("{node} sees the funding"), SWAP_TIMEOUT, || async {
        let view = h.node(node).ok()?.api().swap(id).await.ok()?;
        if view.is_final() {
            return Some(Err(view.state));
        }
        let ev = events(h, node, id).await.ok()?;
        let seen = of_kind(&ev, "funding_seen");
        seen.first().and_then(|e| txid_of(e, "txid").ok()).map(Ok)
    })
    .await?;
    let txid = match seen {
        Ok(txid) => txid,
        Err(state) => bail!("{node} ended in {state}: {:?}", events(h, node, id).await.ok()),
    };
    wait_until("the funding in the chain", SWAP_TIMEOUT, || async {
        let c = h.chain();
        (c.in_mempool(&txid).ok()? || c.confirmation_height(&txid).ok()?.is_some()).then_some(())
    })
    .await?;
    Ok(txid)
}

/// The first `broadcast` event on `node` whose purpose ends with `what` (`"claim"`,
/// `"script_refund"`), once there is one.
async fn first_broadcast(h: &Harness, node: &str, id: &str, what: &str) -> Result<Spend> {
    let e = wait_until(&format!("{node}'s {what} broadcast"), SWAP_TIMEOUT, || async {
        let ev = events(h, node, id).await.ok()?;
        of_kind(&ev, "broadcast")
            .into_iter()
            .find(|e| e["purpose"].as_str().is_some_and(|p| p.ends_with(what)))
    })
    .await?;
    Spend::of(&e)
}

/// The seller's side after a claim: `Claimed`, and no refund ever went out.
async fn seller_claimed_without_refund(h: &Harness, id: &str) -> Result<()> {
    wait_state(h, "seller", id, "Claimed").await?;
    let ev = events(h, "seller", id).await?;
    let refunds: Vec<&Value> = ev
        .iter()
        .filter(|e| e["purpose"].as_str().is_some_and(|p| p.ends_with("refund")))
        .collect();
    ensure!(refunds.is_empty(), "the seller sent refunds: {refunds:?}");
    Ok(())
}

/// Scenario 2: a claim dropped from the mempool is rebroadcast at the next block and confirms.
async fn dropped_claim_rebroadcast(h: &Harness) -> Result<()> {
    let t0 = Instant::now();
    let before = wallet_sat(h, "buyer").await?;
    let id = take(h, None).await?;
    let funding = funding_txid(h, "buyer", &id).await?;
    h.mine(1).await?;
    ensure!(h.chain().confirmation_height(&funding)?.is_some(), "funding not mined");
    wait_state(h, "buyer", &id, "ClaimBroadcast").await?;
    let claim = first_broadcast(h, "buyer", &id, "claim").await?;
    wait_until("the claim in the mempool", SWAP_TIMEOUT, || async {
        h.chain().in_mempool(&claim.txid).ok()?.then_some(())
    })
    .await?;
    // The buyer counts blocks for its rebroadcast from the tip of its first poll after the
    // broadcast: let that poll happen first.
    tokio::time::sleep(BLOCK_SEEN).await;
    ensure!(h.chain().drop_tx(&claim.txid, false)?, "the claim was not in the mempool");
    let tip = h.mine(1).await?;
    ensure!(h.chain().confirmation_height(&claim.txid)?.is_none(), "a dropped claim was mined");
    wait_until("the claim rebroadcast", Duration::from_secs(30), || async {
        h.chain().in_mempool(&claim.txid).ok()?.then_some(())
    })
    .await?;
    eprintln!("dropped claim {} back in the mempool after block {tip}", claim.txid);
    // Final once ANTI_REORG_DEPTH deep.
    h.mine(ANTI_REORG_DEPTH).await?;
    wait_state(h, "buyer", &id, "Claimed").await?;
    let rec = record(h, "buyer", &id).await?;
    let claimed = find_first(&rec, "claim_txid").and_then(|v| v.as_str().map(String::from));
    ensure!(claimed == Some(claim.txid.to_string()), "claimed with another transaction: {rec}");
    let ev = events(h, "buyer", &id).await?;
    ensure!(of_kind(&ev, "replaced").is_empty(), "the claim was replaced: {ev:?}");
    let received = find_first(&rec, "received_sat").and_then(|v| v.as_u64()).context("received")?;
    let t = terms(h, &id).await?;
    ensure!(received + claim.fee_sat == t.htlc_sat, "received {received}, claim {claim:?}, {t:?}");
    seller_claimed_without_refund(h, &id).await?;
    wallet_settles(h, "buyer", before + received).await?;
    eprintln!(
        "scenario 2 (dropped claim rebroadcast) passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Scenarios 1 and 4: a spike above the buyer's cap before its claim; the claim is replaced in
/// the urgent window and confirms before the timeout. With `restart`, the buyer is killed right
/// after its first replacement and started again.
async fn spike_claim_bumped(h: &mut Harness, restart: bool) -> Result<()> {
    let t0 = Instant::now();
    let name = if restart { "4 (restart mid-bump)" } else { "1 (spike, claim bumped)" };
    let before = wallet_sat(h, "buyer").await?;
    // Three confirmations: the spike comes after the first, before the payment and the claim.
    let id = take(h, Some(3)).await?;
    let funding = funding_txid(h, "buyer", &id).await?;
    h.mine(1).await?;
    ensure!(h.chain().confirmation_height(&funding)?.is_some(), "funding not mined");
    let evicted = h.chain().set_min_fee_rate(SPIKE_SAT_VB)?;
    ensure!(state_of(h, "buyer", &id).await == "Funded", "the buyer went on before the spike");
    eprintln!("spike to {SPIKE_SAT_VB} sat/vB (evicted {evicted:?})");
    for _ in 0..2 {
        h.mine(1).await?;
        tokio::time::sleep(BLOCK_SEEN).await;
    }
    wait_state(h, "buyer", &id, "ClaimBroadcast").await?;
    let t = terms(h, &id).await?;
    let outpoint = htlc_outpoint(h, "buyer", &id).await?;
    let first = first_broadcast(h, "buyer", &id, "claim").await?;
    ensure!(
        first.rate_sat_vb() <= BUYER_CAP_SAT_VB as f64,
        "the first claim pays above the cap: {first:?}"
    );
    ensure!(!h.chain().in_mempool(&first.txid)?, "a claim below the spike was accepted: {first:?}");
    let deadline = t.timeout_height - DEADLINE_SAFETY_BLOCKS;
    let window = deadline - URGENT_BLOCKS;
    eprintln!(
        "claim {} at {:.1} sat/vB refused; timeout {}, deadline {deadline}, urgent from {window}, \
         tip {}",
        first.txid,
        first.rate_sat_vb(),
        t.timeout_height,
        h.chain().tip_height()?
    );

    // Block by block until the claim confirms.
    let mut first_replaced_at: Option<u32> = None;
    let mut killed_at: Option<(Spend, u32)> = None;
    loop {
        let st = state_of(h, "buyer", &id).await;
        if st == "Claimed" {
            break;
        }
        let spend = h.chain().outspend(&outpoint)?;
        if let Some(spend) =
            spend.filter(|t| h.chain().confirmation_height(t).ok().flatten().is_some())
        {
            // Confirmed: the swap ends once the claim is ANTI_REORG_DEPTH deep (past the timeout
            // maybe: the seller, paid, never refunds).
            eprintln!("claim {spend} confirmed at tip {}", h.chain().tip_height()?);
            h.mine(ANTI_REORG_DEPTH - 1).await?;
            wait_state(h, "buyer", &id, "Claimed").await?;
            break;
        }
        let seller_st = state_of(h, "seller", &id).await;
        ensure!(!seller_st.starts_with("Refund"), "the seller refunds ({seller_st})");
        let tip = h.chain().tip_height()?;
        ensure!(tip < t.timeout_height, "no claim confirmed by the timeout {}", t.timeout_height);
        let ev = events(h, "buyer", &id).await?;
        let replaced = of_kind(&ev, "replaced");
        if first_replaced_at.is_none() && !replaced.is_empty() {
            let rec = record(h, "buyer", &id).await?;
            let sent = find_first(&rec, "sent_height").and_then(|v| v.as_u64()).unwrap_or(0);
            let sent = u32::try_from(sent)?;
            eprintln!("first replacement at tip {sent} (seen at {tip}): {}", replaced[0]);
            first_replaced_at = Some(sent);
            if restart {
                h.kill("buyer")?;
                let r0 = Spend::of(&replaced[0])?;
                let was_out = h.chain().drop_tx(&r0.txid, false)?;
                let tip = h.mine(1).await?;
                eprintln!(
                    "buyer killed; replacement {} dropped (was in the mempool: {was_out}); \
                     block {tip} mined while it is down",
                    r0.txid
                );
                killed_at = Some((r0, tip));
                h.restart("buyer").await?;
                eprintln!("buyer restarted");
                continue;
            }
        }
        let n_replaced = replaced.len();
        let tip = h.mine(1).await?;
        if tip >= window {
            // In the urgent window: give the buyer time to replace (or to see the claim).
            let _ = wait_until("the buyer reacts", Duration::from_secs(8), || async {
                let ev = events(h, "buyer", &id).await.ok()?;
                let st = state_of(h, "buyer", &id).await;
                (st == "Claimed" || of_kind(&ev, "replaced").len() > n_replaced).then_some(())
            })
            .await;
        } else {
            tokio::time::sleep(BLOCK_SEEN).await;
        }
    }

    let rec = record(h, "buyer", &id).await?;
    let claim_txid = find_first(&rec, "claim_txid")
        .and_then(|v| v.as_str().and_then(|s| Txid::from_str(s).ok()))
        .with_context(|| format!("no claim_txid in {rec}"))?;
    let received = find_first(&rec, "received_sat").and_then(|v| v.as_u64()).context("received")?;
    let height = h.chain().confirmation_height(&claim_txid)?.context("the claim is not mined")?;
    ensure!(
        h.chain().outspend(&outpoint)? == Some(claim_txid),
        "the htlc's spend is not the claim"
    );
    ensure!(height <= t.timeout_height, "claim mined at {height}, timeout {}", t.timeout_height);
    let ev = events(h, "buyer", &id).await?;
    let replaced: Vec<Spend> =
        of_kind(&ev, "replaced").iter().map(Spend::of).collect::<Result<_>>()?;
    ensure!(!replaced.is_empty(), "no replacement: {ev:?}");
    let at = first_replaced_at.context("no replacement seen while mining")?;
    ensure!(
        (window..=deadline).contains(&at),
        "first replacement at {at}, outside the urgent window {window}..={deadline} (cap holds \
         before)"
    );
    // Each replacement replaces the one before, and pays more.
    let mut prev = first;
    for (e, r) in of_kind(&ev, "replaced").iter().zip(&replaced) {
        ensure!(txid_of(e, "replaces")? == prev.txid, "{e} does not replace {}", prev.txid);
        ensure!(r.fee_sat > prev.fee_sat, "{r:?} pays no more than {prev:?}");
        prev = *r;
    }
    let last = *replaced.last().expect("not empty");
    ensure!(last.txid == claim_txid, "the mined claim {claim_txid} is not the last replacement");
    ensure!(
        last.rate_sat_vb() > BUYER_CAP_SAT_VB as f64,
        "the claim pays {:.1} sat/vB, not above the cap {BUYER_CAP_SAT_VB}",
        last.rate_sat_vb()
    );
    ensure!(
        last.fee_sat * 100 <= t.htlc_sat * MAX_DEADLINE_FEE_PERCENT,
        "the claim's fee {} is above {MAX_DEADLINE_FEE_PERCENT}% of the htlc {}",
        last.fee_sat,
        t.htlc_sat
    );
    ensure!(received + last.fee_sat == t.htlc_sat, "received {received}, claim {last:?}, {t:?}");
    if restart {
        let (r0, down_tip) = killed_at.context("the buyer was never killed")?;
        ensure!(last.fee_sat >= r0.fee_sat, "after the restart {last:?} pays less than {r0:?}");
        ensure!(height > down_tip, "claim mined at {height}, while the buyer was down");
        eprintln!(
            "after the restart: {} more replacement(s); claim mined at {height}",
            replaced.len() - 1
        );
    }
    seller_claimed_without_refund(h, &id).await?;
    wallet_settles(h, "buyer", before + received).await?;
    h.chain().set_min_fee_rate(0.0)?;
    // The nodes read the estimates at their next poll: the next swap is funded at the calm rate.
    tokio::time::sleep(BLOCK_SEEN).await;
    eprintln!(
        "scenario {name} passed in {:.1} s: claim {claim_txid} mined at {height} (timeout {}, \
         {} block(s) early), {} replacement(s), fee {} sat for {} vB ({:.1} sat/vB, cap \
         {BUYER_CAP_SAT_VB}), received {received} of {}",
        t0.elapsed().as_secs_f64(),
        t.timeout_height,
        t.timeout_height - height,
        replaced.len(),
        last.fee_sat,
        last.vsize,
        last.rate_sat_vb(),
        t.htlc_sat
    );
    Ok(())
}

/// Waits for the `n`th (from 1) `replaced` event on `node`.
async fn nth_replacement(h: &Harness, node: &str, id: &str, n: usize) -> Result<Value> {
    let r = wait_until(&format!("{node}'s replacement {n}"), Duration::from_secs(30), || async {
        let ev = events(h, node, id).await.ok()?;
        of_kind(&ev, "replaced").get(n - 1).cloned()
    })
    .await;
    match r {
        Ok(e) => Ok(e),
        Err(e) => bail!("{e}; events {:?}", events(h, node, id).await.ok()),
    }
}

/// Sets the fee-estimate curve flat at `estimate` and the mempool minimum at `min`; the evicted.
fn spike(h: &Harness, estimate: f64, min: f64) -> Result<Vec<Txid>> {
    h.chain().set_fee_estimates(Some(BTreeMap::from([(1, estimate)])))?;
    Ok(h.chain().set_min_fee_rate(min)?)
}

/// Scenario 3: the seller's refund, evicted by a spike, is replaced at the new estimate, then at
/// its cap, and confirms.
async fn refund_bumped(h: &mut Harness) -> Result<()> {
    let t0 = Instant::now();
    let before = wallet_sat(h, "seller").await?;
    let id = take_unpaid(h, SWAP_TIMEOUT).await?;
    let t = terms(h, &id).await?;
    let outpoint = htlc_outpoint(h, "buyer", &id).await?;
    // A live buyer would abort (budget below 42 blocks) and the seller refund cooperatively.
    h.kill("buyer")?;
    let funding = funding_txid(h, "seller", &id).await?;
    let tip = h.chain().tip_height()?;
    ensure!(tip < t.timeout_height, "tip {tip} already at the timeout {}", t.timeout_height);
    let tip = h.mine(t.timeout_height - tip).await?;
    ensure!(h.chain().confirmation_height(&funding)?.is_some(), "funding not mined");
    let r0 = first_broadcast(h, "seller", &id, "script_refund").await?;
    wait_state(h, "seller", &id, "Refunding").await?;
    wait_until("the refund in the mempool", SWAP_TIMEOUT, || async {
        h.chain().in_mempool(&r0.txid).ok()?.then_some(())
    })
    .await?;
    eprintln!("refund {} at {:.1} sat/vB at tip {tip}", r0.txid, r0.rate_sat_vb());

    // Estimates 25 (below the seller's cap), minimum 20: the refund is evicted; the next block
    // comes without it and the seller replaces it at the estimate.
    let evicted = spike(h, 25.0, 20.0)?;
    ensure!(evicted.contains(&r0.txid), "the refund was not evicted: {evicted:?}");
    h.mine(1).await?;
    let e1 = nth_replacement(h, "seller", &id, 1).await?;
    let r1 = Spend::of(&e1)?;
    ensure!(txid_of(&e1, "replaces")? == r0.txid, "{e1} does not replace {}", r0.txid);
    ensure!(e1["purpose"] == "script_refund", "{e1}");
    let (fee, vsize) = wait_until("replacement 1 in the mempool", SWAP_TIMEOUT, || async {
        h.chain().mempool_entry(&r1.txid).ok()?
    })
    .await?;
    ensure!(fee == r1.fee_sat && vsize == r1.vsize, "mempool ({fee}, {vsize}) vs {r1:?}");
    ensure!((24.0..=26.0).contains(&r1.rate_sat_vb()), "replacement 1 pays {r1:?}, estimate 25");

    // Estimates 80 (above the cap), minimum 40: evicted again; replaced at the cap.
    let evicted = spike(h, 80.0, 40.0)?;
    ensure!(evicted.contains(&r1.txid), "replacement 1 was not evicted: {evicted:?}");
    h.mine(1).await?;
    let e2 = nth_replacement(h, "seller", &id, 2).await?;
    let r2 = Spend::of(&e2)?;
    ensure!(txid_of(&e2, "replaces")? == r1.txid, "{e2} does not replace {}", r1.txid);
    let cap = SELLER_CAP_SAT_VB as f64;
    ensure!(
        r2.rate_sat_vb() <= cap && r2.rate_sat_vb() >= cap - 1.0,
        "replacement 2 pays {:.1} sat/vB, want the cap {cap}",
        r2.rate_sat_vb()
    );
    wait_until("replacement 2 in the mempool", SWAP_TIMEOUT, || async {
        h.chain().in_mempool(&r2.txid).ok()?.then_some(())
    })
    .await?;
    h.mine(ANTI_REORG_DEPTH).await?;
    wait_state(h, "seller", &id, "Refunded").await?;
    ensure!(h.chain().outspend(&outpoint)? == Some(r2.txid), "the htlc's spend is not {r2:?}");
    let ev = events(h, "seller", &id).await?;
    ensure!(of_kind(&ev, "replaced").len() == 2, "{ev:?}");
    ensure!(of_kind(&ev, "paid").is_empty(), "the seller notified a payment");

    let mut r = LoopOutReport { funding_txid: funding.to_string(), ..Default::default() };
    r.fill_chain_data(&h.chain().esplora_url()).await;
    ensure!(r.funding_fee_paid_sat > 0, "funding fee unknown: {r:?}");
    wallet_settles(h, "seller", before - r.funding_fee_paid_sat - r2.fee_sat).await?;
    h.chain().set_min_fee_rate(0.0)?;
    h.chain().set_fee_estimates(None)?;
    eprintln!(
        "scenario 3 (refund bumped) passed in {:.1} s: refund {} -> {} ({:.1} sat/vB) -> {} \
         ({:.1} sat/vB, cap {SELLER_CAP_SAT_VB}); funding fee {}",
        t0.elapsed().as_secs_f64(),
        r0.txid,
        r1.txid,
        r1.rate_sat_vb(),
        r2.txid,
        r2.rate_sat_vb(),
        r.funding_fee_paid_sat
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_claim_and_refund_replacements() -> Result<()> {
    let s = scratch()?;
    let t0 = Instant::now();
    let mut h = Harness::start(config(&s.dir)).await?;
    eprintln!("harness up in {:.1} s", t0.elapsed().as_secs_f64());
    // The seller prices a request's timeout from the tip of its last chain poll (every second):
    // right after the setup's blocks it may still hold the tip it started with.
    tokio::time::sleep(Duration::from_secs(3)).await;
    dropped_claim_rebroadcast(&h).await?;
    spike_claim_bumped(&mut h, false).await?;
    spike_claim_bumped(&mut h, true).await?;
    // Last: it kills the buyer.
    refund_bumped(&mut h).await?;
    eprintln!("all scenarios in {:.1} s", t0.elapsed().as_secs_f64());
    h.stop().await;
    Ok(())
}
