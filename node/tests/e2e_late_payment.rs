//! End to end on the regtest harness (issue 8 item 3): a payment of the swap invoice that reaches
//! the seller too late (`tip + claim_margin > timeout_height`) is failed back by the seller's
//! engine (the seller safety rule), and the seller refunds with the refund leaf at the timeout.
//!
//! An honest buyer cannot produce this: its route budget makes ldk-node fail the HTLC itself,
//! and a live buyer aborts (`TimeoutTooClose`) once its budget is below 42 blocks, after which
//! the seller refunds cooperatively and is no longer `Funded`. So the buyer takes the offer
//! asking 50 confirmations (it never pays), is killed once the HTLC is funded, and a second
//! buyer node (`payer`, with its own channel to the seller) pays the swap invoice by hand
//! (`POST /v1/ln/pay` with a 500-block CLTV budget) at `tip == timeout_height - 1`.
//!
//! That the HTLC reached the seller and was failed by the engine, not by LDK: the payer's
//! ldk-node logs the failure as `RecipientRejected` (an HTLC never sent would be
//! `RouteNotFound`), and the seller's ldk-node never logs "Failed to accept/forward incoming
//! HTLC" (its own rejections, such as a final expiry too soon).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use looper_regtest::harness::{wait_until, Harness, HarnessConfig, LoopOutReport, NodeSpec};
use serde_json::{json, Value};

use e2e_common::{scratch, state_of, take_unpaid, AMOUNT};

const SWAP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
struct Balances {
    buyer_wallet: u64,
    payer_ln_out_msat: u64,
    seller_wallet: u64,
}

async fn balances(h: &Harness) -> Result<Balances> {
    h.sync_all().await;
    let b = h.node("buyer")?.api();
    let p = h.node("payer")?.api();
    let s = h.node("seller")?.api();
    Ok(Balances {
        buyer_wallet: b.wallet_balance().await?.total_sat,
        payer_ln_out_msat: p.ln_balance().await?.lightning_outbound_msat,
        seller_wallet: s.wallet_balance().await?.total_sat,
    })
}

/// The first field named `key` (depth first) and its path.
fn find_first(v: &Value, key: &str, path: &str) -> Option<(String, Value)> {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(key) {
                return Some((format!("{path}.{key}"), x.clone()));
            }
            m.iter().find_map(|(k, x)| find_first(x, key, &format!("{path}.{k}")))
        }
        Value::Array(a) => {
            a.iter().enumerate().find_map(|(i, x)| find_first(x, key, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// The ldk-node log of a node.
fn ldk_log(datadir: &Path) -> String {
    std::fs::read_to_string(datadir.join("ldk").join("ldk_node.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_late_payment_failed_back_by_the_seller() -> Result<()> {
    let s = scratch()?;
    let t0 = Instant::now();
    let mut seller = NodeSpec::seller("seller");
    seller.offer.claim_margin = 2;
    seller.offer.timeout_delta = 60;
    let mut c = HarnessConfig::new(&s.dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![seller, NodeSpec::buyer("buyer"), NodeSpec::buyer("payer")];
    // A 2-block margin keeps the test short: the buyer's floor (default 20) follows it.
    for n in &mut c.nodes {
        n.buyer_min_claim_margin = Some(2);
    }
    c.channel_sat = 10 * AMOUNT + 100_000;
    let mut h = Harness::start(c).await?;
    eprintln!("harness up in {:.1} s", t0.elapsed().as_secs_f64());

    let before = balances(&h).await?;
    let id = take_unpaid(&h, SWAP_TIMEOUT).await?;
    let view = h.node("buyer")?.api().swap(&id).await?;
    let (inv_path, invoice) =
        find_first(&view.record, "invoice", "record").context("no invoice in the record")?;
    let invoice = invoice.as_str().context("invoice is not a string")?.to_string();
    let (to_path, timeout) = find_first(&view.record, "timeout_height", "record")
        .context("no timeout_height in the record")?;
    let timeout = u32::try_from(timeout.as_u64().context("timeout_height")?)?;
    let hash = view.payment_hash.clone().context("no payment hash")?;
    eprintln!("invoice at {inv_path}, timeout {timeout} at {to_path}");
    // A live buyer would abort (budget below 42 blocks) and the seller refund cooperatively.
    h.kill("buyer")?;

    // The last block before the timeout: too late to claim (tip + 2 > timeout), too early to
    // refund with the refund leaf.
    let tip = h.chain().tip_height()?;
    ensure!(tip < timeout - 1, "tip {tip} already at the timeout {timeout}");
    let tip = h.mine(timeout - 1 - tip).await?;
    ensure!(tip == timeout - 1, "tip {tip}, timeout {timeout}");
    // The seller's engine polls the chain every second (its view of the tip is not in the API):
    // a generous wait, else it would claim the payment as still in time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(state_of(&h, "seller", &id).await == "Funded", "seller not Funded before the payment");

    let payer = h.node("payer")?;
    let paid: Value = payer
        .api()
        .post("/v1/ln/pay", &json!({"invoice": invoice, "max_total_cltv_expiry_delta": 500}))
        .await?;
    eprintln!("pay: {paid}");
    ensure!(paid["status"] == "pending", "{paid}");
    let needle = format!("Failed to send payment with ID {hash} due to");
    let line = wait_until("the payment fails", SWAP_TIMEOUT, || async {
        ldk_log(payer.datadir()).lines().find(|l| l.contains(&needle)).map(String::from)
    })
    .await?;
    eprintln!("payer: {line}");
    ensure!(line.contains("RecipientRejected"), "the HTLC did not reach the seller: {line}");
    let seller_ldk = ldk_log(h.node("seller")?.datadir());
    ensure!(
        !seller_ldk.contains("Failed to accept/forward incoming HTLC"),
        "the seller's ldk-node rejected the HTLC itself, not the engine"
    );
    let out = wait_until("payer's channel balance back", SWAP_TIMEOUT, || async {
        let b = payer.api().ln_balance().await.ok()?;
        (b.lightning_outbound_msat == before.payer_ln_out_msat).then_some(())
    })
    .await;
    if out.is_err() {
        bail!(
            "payer's outbound {} -> {:?}",
            before.payer_ln_out_msat,
            payer.api().ln_balance().await.ok()
        );
    }
    let seller = h.node("seller")?.api().clone();
    let st = seller.swap(&id).await?.state;
    ensure!(st == "Funded", "seller in {st} after the late payment");
    let paid_events =
        seller.swap_events(&id).await?.into_iter().filter(|e| e["event"] == "paid").count();
    ensure!(paid_events == 0, "the seller notified a payment");

    // The timeout: the seller refunds with the refund leaf.
    let deadline = Instant::now() + SWAP_TIMEOUT;
    loop {
        let st = seller.swap(&id).await.map(|v| v.state).unwrap_or_default();
        ensure!(st != "Paid" && st != "Claimed", "seller in {st}");
        if st == "Refunded" {
            break;
        }
        ensure!(Instant::now() < deadline, "seller never refunded (at {st})");
        h.mine(1).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = seller.swap_events(&id).await?;
    ensure!(!events.iter().any(|e| e["event"] == "paid"), "the seller notified a payment");
    let refund = events
        .iter()
        .find(|e| e["event"] == "broadcast")
        .with_context(|| format!("no refund broadcast in {events:?}"))?;
    ensure!(refund["purpose"] == "script_refund", "{refund}");
    let refund_fee = refund["fee_sat"].as_u64().unwrap_or(0);
    let funding_txid = events
        .iter()
        .find(|e| e["event"] == "funding_seen")
        .and_then(|e| e["txid"].as_str())
        .context("no funding")?;
    let mut r = LoopOutReport { funding_txid: funding_txid.into(), ..Default::default() };
    r.fill_chain_data(&h.chain().esplora_url()).await;
    ensure!(r.funding_fee_paid_sat > 0, "funding fee unknown: {r:?}");

    // The buyer comes back to a spent HTLC.
    h.restart("buyer").await?;
    let buyer = h.node("buyer")?.api().clone();
    let b = wait_until("buyer side final", SWAP_TIMEOUT, || async {
        let v = buyer.swap(&id).await.ok()?;
        v.is_final().then_some(v)
    })
    .await?;
    let reason = find_first(&b.record, "reason", "record").map(|(_, v)| v);
    eprintln!("buyer ended {} ({}), reason {reason:?}", b.state, b.status);
    ensure!(b.state == "Aborted", "buyer ended in {}", b.state);

    let want_seller = before.seller_wallet - r.funding_fee_paid_sat - refund_fee;
    let got = wait_until("balances settled", SWAP_TIMEOUT, || async {
        let now = balances(&h).await.ok()?;
        (now.seller_wallet == want_seller && now.buyer_wallet == before.buyer_wallet).then_some(now)
    })
    .await;
    let got = match got {
        Ok(g) => g,
        Err(e) => bail!("{e:#}; before {before:?}, now {:?}", balances(&h).await.ok()),
    };
    ensure!(got.payer_ln_out_msat == before.payer_ln_out_msat, "{before:?} -> {got:?}");
    eprintln!(
        "late payment failed back; script refund fee {refund_fee} sat, funding fee {} sat; {:.1} s",
        r.funding_fee_paid_sat,
        t0.elapsed().as_secs_f64()
    );
    h.stop().await;
    Ok(())
}
