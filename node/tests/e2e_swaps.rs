//! End to end on the regtest harness: real `looper-node` processes (this crate's binary), the
//! embedded chain, a local Nostr relay, a real ldk-node channel buyer -> seller. Loop outs with
//! the cooperative claim (once per chain source: Esplora, Electrum and bitcoind's JSON-RPC, each
//! for the engine, the wallet and ldk-node) and the script-path claim, the refunds (cooperative after the buyer's abort;
//! the refund leaf after the timeout when the buyer is gone), SIGKILL and restart of either side
//! at each swap state (balances before and after differ only by the accounted fees), a reorg of
//! the funding block, a funding that vanishes before the payment (reorganised out and dropped;
//! double-spent), and no secret in any node log.
//!
//! The late payment failed back is in `e2e_late_payment.rs`: an honest buyer cannot pay that late
//! (its route budget, `timeout - tip - claim_margin` >= 42 blocks, bounds the HTLC's expiry, and it
//! aborts with `timeout_too_close` first), so there a third node pays the swap invoice with a large
//! CLTV budget at `tip == timeout - 1` and the seller's engine must fail it back.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bitcoin::Network;
use looper_node::seed::{Mnemonic, NodeKeys};
use looper_regtest::harness::{
    wait_until, Harness, HarnessConfig, LoopOutReport, NodeChainSource, NodeSpec,
};
use serde_json::{json, Value};

use e2e_common::{scratch, state_of, take_unpaid, AMOUNT, MAX_FEE};

const SWAP_TIMEOUT: Duration = Duration::from_secs(180);

fn config(dir: &std::path::Path, seller: NodeSpec) -> HarnessConfig {
    let mut c = HarnessConfig::new(dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![seller, NodeSpec::buyer("buyer")];
    c.channel_sat = 10 * AMOUNT + 100_000;
    c
}

#[derive(Debug, Clone, Copy)]
struct Balances {
    buyer_wallet: u64,
    buyer_ln_out_msat: u64,
    seller_wallet: u64,
}

async fn balances(h: &Harness) -> Result<Balances> {
    h.sync_all().await;
    let b = h.node("buyer")?.api();
    let s = h.node("seller")?.api();
    Ok(Balances {
        buyer_wallet: b.wallet_balance().await?.total_sat,
        buyer_ln_out_msat: b.ln_balance().await?.lightning_outbound_msat,
        seller_wallet: s.wallet_balance().await?.total_sat,
    })
}

/// After a claimed swap: the buyer's wallet got `amount - claim fee`, its channel balance went
/// down by the invoice, the seller's wallet paid `amount + funding fee`.
async fn check_balances(h: &Harness, before: Balances, r: &LoopOutReport) -> Result<()> {
    let want_buyer = before.buyer_wallet + r.amount_sat - r.claim_fee_sat;
    let want_seller = before.seller_wallet - r.amount_sat - r.funding_fee_paid_sat;
    let invoice_msat = (r.amount_sat + r.swap_fee_sat + r.funding_fee_sat) * 1000;
    let got = wait_until("balances settled", SWAP_TIMEOUT, || async {
        let now = balances(h).await.ok()?;
        // A channel whose peer is still reconnecting after a restart reports no outbound
        // capacity for a moment: wait for the channel balance too.
        let paid = before.buyer_ln_out_msat.checked_sub(now.buyer_ln_out_msat);
        (now.buyer_wallet == want_buyer
            && now.seller_wallet == want_seller
            && paid == Some(invoice_msat))
        .then_some(now)
    })
    .await
    .with_context(|| format!("before {before:?}, report {r:?}"));
    let got = match got {
        Ok(g) => g,
        Err(e) => bail!("{e:#}; now {:?}", balances(h).await.ok()),
    };
    ensure!(
        before.buyer_ln_out_msat - got.buyer_ln_out_msat == invoice_msat,
        "buyer channel balance {} -> {}, invoice {invoice_msat} msat",
        before.buyer_ln_out_msat,
        got.buyer_ln_out_msat
    );
    Ok(())
}

/// Follows the swap on the buyer, then waits for the seller's side to finish too.
async fn finish(h: &Harness, swap_id: &str) -> Result<LoopOutReport> {
    let buyer = h.node("buyer")?;
    let mut r = looper_regtest::harness::report_follow(buyer, swap_id, SWAP_TIMEOUT).await?;
    r.fill_chain_data(&h.chain().esplora_url()).await;
    let seller = h.node("seller")?.api();
    let state = wait_until("seller side final", SWAP_TIMEOUT, || async {
        let v = seller.swap(swap_id).await.ok()?;
        v.is_final().then_some(v.state)
    })
    .await?;
    ensure!(state == "Claimed", "seller ended in {state}");
    Ok(r)
}

async fn take(h: &Harness) -> Result<String> {
    let offer = h.best_offer("buyer", AMOUNT).await?;
    Ok(h.node("buyer")?.api().swap_out(&offer, AMOUNT, MAX_FEE).await?)
}

/// Every string field of a JSON value named `key`, recursively.
fn find_field(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                }
                find_field(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_field(x, key, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_cooperative_claim_and_no_secret_in_logs() -> Result<()> {
    let s = scratch()?;
    let h = Harness::start(config(&s.dir, NodeSpec::seller("seller"))).await?;
    let before = balances(&h).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let swap_id = take(&h).await?;
    // Catch the preimage from the buyer's record while it is claiming (the claim waits a block).
    let buyer = h.node("buyer")?.api().clone();
    let id = swap_id.clone();
    let preimages = tokio::spawn(async move {
        let mut found = Vec::new();
        let deadline = Instant::now() + SWAP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(v) = buyer.swap(&id).await {
                find_field(&v.record, "preimage", &mut found);
                if v.is_final() || !found.is_empty() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found
    });
    // The buyer's event stream (SSE), opened as the swap starts: it must carry the whole log
    // and end by itself after `finished`.
    let stream = {
        let buyer = h.node("buyer")?.api().clone();
        let id = swap_id.clone();
        tokio::spawn(async move { buyer.swap_event_stream(&id).await })
    };
    let r = finish(&h, &swap_id).await?;
    miner.stop();
    eprintln!("{r}");
    let streamed = tokio::time::timeout(Duration::from_secs(30), stream)
        .await
        .context("the event stream did not end after the swap finished")???;
    let logged = h.node("buyer")?.api().swap_events(&swap_id).await?;
    let seqs: Vec<u64> = streamed.iter().map(|(seq, _)| *seq).collect();
    ensure!(seqs == (0..logged.len() as u64).collect::<Vec<_>>(), "stream ids {seqs:?}");
    let streamed: Vec<Value> = streamed.into_iter().map(|(_, e)| e).collect();
    ensure!(streamed == logged, "stream {streamed:?}\nlog {logged:?}");
    ensure!(r.claim_purpose == "cooperative_claim", "{r:?}");
    ensure!(r.claim_vsize == 111, "cooperative claim is {} vB", r.claim_vsize);
    check_balances(&h, before, &r).await?;

    // Secrets: seed phrase and keys derived from it, API token, the swap's preimage.
    let preimages = preimages.await?;
    ensure!(!preimages.is_empty(), "never saw the preimage in the buyer's record");
    let mut secrets: Vec<(String, String)> = Vec::new();
    for node in h.nodes() {
        let phrase = std::fs::read_to_string(node.datadir().join("seed"))?;
        let mnemonic = Mnemonic::parse(phrase.trim(), "seed file")?;
        let words: Vec<&str> = phrase.split_whitespace().collect();
        for w in words.windows(3) {
            secrets.push((format!("{} seed words", node.name()), w.join(" ")));
        }
        let keys = NodeKeys::from_mnemonic(&mnemonic, Network::Regtest)?;
        secrets.push((format!("{} master xprv", node.name()), keys.master().to_string()));
        secrets.push((format!("{} swap xprv", node.name()), keys.swap_master()?.to_string()));
        secrets.push((format!("{} ldk seed", node.name()), hex::encode(keys.ldk_seed_bytes()?)));
        secrets.push((
            format!("{} nostr key", node.name()),
            hex::encode(keys.nostr_secret_key()?.secret_bytes()),
        ));
        secrets.push((format!("{} api token", node.name()), node.token()?));
    }
    for p in &preimages {
        secrets.push(("preimage".into(), p.clone()));
    }
    let logs: Vec<PathBuf> = h.nodes().iter().map(|n| n.log_file()).collect();
    h.stop().await;
    for log in logs {
        let text = std::fs::read_to_string(&log)?.to_lowercase();
        ensure!(text.contains("swap"), "{} looks empty", log.display());
        for (what, secret) in &secrets {
            ensure!(
                !text.contains(&secret.to_lowercase()),
                "{} contains the {what}",
                log.display()
            );
        }
    }
    Ok(())
}

/// The cooperative loop out with both nodes on the chain's Electrum server: their engines'
/// chain source, their wallets' sync (bdk_electrum) and ldk-node's chain source (the channel
/// opened at setup, the payment) all read the chain over Electrum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_cooperative_claim_over_electrum() -> Result<()> {
    cooperative_claim_on(NodeChainSource::Electrum, "chain source: Electrum").await
}

/// The same over bitcoind's JSON-RPC (cookie authentication): the engines' script histories
/// from the scanned blocks' filters, the wallets synced from blocks, ldk-node's bitcoind source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_cooperative_claim_over_bitcoind_rpc() -> Result<()> {
    cooperative_claim_on(NodeChainSource::BitcoindRpc, "chain source: bitcoind JSON-RPC").await
}

async fn cooperative_claim_on(source: NodeChainSource, logged: &str) -> Result<()> {
    let s = scratch()?;
    let mut c = config(&s.dir, NodeSpec::seller("seller").on(source));
    c.nodes[1] = NodeSpec::buyer("buyer").on(source);
    let h = Harness::start(c).await?;
    for node in h.nodes() {
        let log = std::fs::read_to_string(node.log_file())?;
        ensure!(log.contains(logged), "{} is not on {source:?}", node.name());
    }
    run_loop_out(&h, "cooperative_claim").await?;
    h.stop().await;
    Ok(())
}

/// One loop out on `h` with a miner running: claimed through `purpose`, the balances differing
/// only by the fees.
async fn run_loop_out(h: &Harness, purpose: &str) -> Result<LoopOutReport> {
    let before = balances(h).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let swap_id = take(h).await?;
    let r = finish(h, &swap_id).await?;
    miner.stop();
    eprintln!("{r}");
    ensure!(r.claim_purpose == purpose, "{r:?}");
    check_balances(h, before, &r).await?;
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_script_path_claim() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.seller_cooperative = false;
    let h = Harness::start(config(&s.dir, seller)).await?;
    run_loop_out(&h, "script_claim").await?;
    h.stop().await;
    Ok(())
}

/// The buyer's states in order (a state after the target means the kill came too late).
const BUYER_ORDER: [&str; 7] =
    ["Requested", "Accepted", "Funded", "Paying", "Claiming", "ClaimBroadcast", "Claimed"];
/// The seller's states of a claimed swap in order.
const SELLER_ORDER: [&str; 5] = ["AwaitingInvoice", "Accepted", "Funded", "Paid", "Claimed"];

/// How a kill case holds the swap in the state it kills at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Blocks are mined only while the buyer waits for the funding confirmation (stalled for
    /// 2 s), so the waiting states (`Accepted`/`Funded` with the funding in the mempool, `Paid`,
    /// `ClaimBroadcast` with the claim in the mempool) hold still until the kill. The short
    /// steps (`AwaitingInvoice`, the seller's `Accepted`) are caught by fast polling or not.
    Natural,
    /// The seller is frozen (SIGSTOP) before the request: the buyer stays in `Requested`.
    SellerFrozenFirst,
    /// The seller is frozen once the buyer is `Funded`, then the confirming block is mined: the
    /// buyer pays into a silent peer (the HTLC really is in flight) and stays in `Paying`.
    SellerFrozenBeforePay,
    /// The seller is frozen the moment the buyer is `Claiming`: no co-signature comes.
    SellerFrozenOnReach,
}

/// One SIGKILL case: `victim` is killed once its view of the swap is in `state`.
#[derive(Debug, Clone, Copy)]
struct KillCase {
    victim: &'static str,
    state: &'static str,
    hold: Hold,
}

const fn case(victim: &'static str, state: &'static str, hold: Hold) -> KillCase {
    KillCase { victim, state, hold }
}

/// States reached by a Lightning update whose ChannelManager write is still under way.
const LDK_WRITES_AT: [(&str, &str); 3] =
    [("buyer", "Paying"), ("buyer", "Claiming"), ("seller", "Paid")];

/// How long ldk-node is given to persist its ChannelManager after such an update.
const LDK_SETTLE: Duration = Duration::from_secs(1);

/// The buyer killed at each of its states of a claimed swap.
const BUYER_KILLS: [KillCase; 6] = [
    case("buyer", "Requested", Hold::SellerFrozenFirst),
    case("buyer", "Accepted", Hold::Natural),
    case("buyer", "Funded", Hold::Natural),
    case("buyer", "Paying", Hold::SellerFrozenBeforePay),
    case("buyer", "Claiming", Hold::SellerFrozenOnReach),
    case("buyer", "ClaimBroadcast", Hold::Natural),
];

/// The seller killed at each of its states of a claimed swap.
const SELLER_KILLS: [KillCase; 4] = [
    case("seller", "AwaitingInvoice", Hold::Natural),
    case("seller", "Accepted", Hold::Natural),
    case("seller", "Funded", Hold::Natural),
    case("seller", "Paid", Hold::Natural),
];

/// What one kill case did.
#[derive(Debug)]
struct KillOutcome {
    case: KillCase,
    killed_at: String,
    secs: f64,
}

impl KillOutcome {
    fn caught(&self) -> bool {
        self.killed_at == self.case.state
    }
}

/// Runs one kill case on a running harness: a loop out, the victim killed with SIGKILL in
/// `case.state` (or at the first state after it, when the state passed too fast), restarted;
/// the swap must end `Claimed` on both sides with the balances differing only by the fees.
async fn kill_case(h: &mut Harness, case: KillCase) -> Result<KillOutcome> {
    let t0 = Instant::now();
    let before = balances(h).await?;
    let offer = h.best_offer("buyer", AMOUNT).await?;
    let mut frozen = false;
    if case.hold == Hold::SellerFrozenFirst {
        h.pause("seller")?;
        frozen = true;
    }
    let swap_id = h.node("buyer")?.api().swap_out(&offer, AMOUNT, MAX_FEE).await?;
    let order: &[&str] = if case.victim == "buyer" { &BUYER_ORDER } else { &SELLER_ORDER };
    let target = order.iter().position(|s| *s == case.state).context("unknown state")?;
    let deadline = Instant::now() + SWAP_TIMEOUT;
    let mut last_change = Instant::now();
    let mut last_state = String::new();
    let killed_at = loop {
        let Ok(v) = h.node(case.victim)?.api().swap(&swap_id).await else {
            ensure!(Instant::now() < deadline, "{} never reached {}", case.victim, case.state);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let at = order.iter().position(|s| *s == v.state);
        if v.state == case.state {
            if case.hold == Hold::SellerFrozenOnReach && !frozen {
                h.pause("seller")?;
                // Still there once the seller is frozen?
                let again = h.node(case.victim)?.api().swap(&swap_id).await?;
                break again.state;
            }
            break v.state;
        }
        ensure!(!v.is_final(), "{} passed {}: ended in {}", case.victim, case.state, v.state);
        if at.is_some_and(|i| i > target) {
            // Passed too fast to catch: killed at the next state instead.
            break v.state;
        }
        if v.state != last_state {
            last_state = v.state.clone();
            last_change = Instant::now();
        }
        let buyer_state = if case.victim == "buyer" {
            v.state.clone()
        } else {
            h.node("buyer")?.api().swap(&swap_id).await.map(|b| b.state).unwrap_or_default()
        };
        if case.hold == Hold::SellerFrozenBeforePay && !frozen && buyer_state == "Funded" {
            h.pause("seller")?;
            frozen = true;
            h.mine(1).await?;
            last_change = Instant::now();
        }
        let stall = if case.hold == Hold::SellerFrozenBeforePay && !frozen { 10 } else { 2 };
        if matches!(buyer_state.as_str(), "Accepted" | "Funded")
            && !(case.hold == Hold::SellerFrozenBeforePay && frozen)
            && h.chain().mempool_size()? > 0
            && last_change.elapsed() > Duration::from_secs(stall)
        {
            h.mine(1).await?;
            last_change = Instant::now();
        }
        ensure!(
            Instant::now() < deadline,
            "{} never reached {} (at {})",
            case.victim,
            case.state,
            v.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let frozen = frozen || case.hold == Hold::SellerFrozenOnReach;
    // Right after a Lightning state change (the buyer's HTLC sent, the seller's claim) ldk-node
    // has updated its ChannelMonitor but persists its ChannelManager a moment later, in the
    // background. A SIGKILL inside that window of a few milliseconds makes LDK find a stale
    // ChannelManager at the next start and force-close the channel: funds are safe (the swap
    // still finishes, the channel's balance comes back on chain) but the channel is gone, which
    // is LDK's design, not this test's subject (README, "Known limitations"). The kill waits
    // for that write, then reports the state it really hit.
    // The state hit may be past the one wanted (the swap moved on within milliseconds): the
    // Lightning update behind the wanted state is just as fresh.
    let fresh_update = LDK_WRITES_AT.contains(&(case.victim, killed_at.as_str()))
        || LDK_WRITES_AT.contains(&(case.victim, case.state));
    let killed_at = if fresh_update {
        tokio::time::sleep(LDK_SETTLE).await;
        h.node(case.victim)?.api().swap(&swap_id).await?.state
    } else {
        killed_at
    };
    h.kill(case.victim)?;
    eprintln!("killed {} at {killed_at} (wanted {})", case.victim, case.state);
    // The other side keeps going for a moment on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.resume("seller")?;
    h.restart(case.victim).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let r = finish(h, &swap_id).await;
    miner.stop();
    let r = r.with_context(|| format!("{case:?}, killed at {killed_at}"))?;
    check_balances(h, before, &r).await.with_context(|| format!("{case:?}"))?;
    if frozen {
        // After a few seconds frozen the seller's relay connection may not deliver the next
        // request (seen once: the next swap stayed in `Requested`); a clean restart resets it.
        h.restart("seller").await?;
    }
    Ok(KillOutcome { case, killed_at, secs: t0.elapsed().as_secs_f64() })
}

/// Runs the kill cases one after another on one harness and prints a table.
async fn kill_matrix(cases: &[KillCase]) -> Result<()> {
    let s = scratch()?;
    let t0 = Instant::now();
    let mut h = Harness::start(config(&s.dir, NodeSpec::seller("seller"))).await?;
    eprintln!("harness up in {:.1} s", t0.elapsed().as_secs_f64());
    let mut outcomes = Vec::new();
    // `LOOPER_KILL_STATES=Paying,Claiming` runs only those cases (debugging one case).
    let only = std::env::var("LOOPER_KILL_STATES").ok();
    let wanted = |c: &KillCase| only.as_deref().is_none_or(|o| o.split(',').any(|s| s == c.state));
    for c in cases.iter().filter(|c| wanted(c)) {
        outcomes.push(kill_case(&mut h, *c).await?);
    }
    h.stop().await;
    eprintln!("SIGKILL matrix ({:.1} s in all):", t0.elapsed().as_secs_f64());
    for o in &outcomes {
        eprintln!(
            "  {:<7} {:<16} killed at {:<16} {:>6.1} s{}",
            o.case.victim,
            o.case.state,
            o.killed_at,
            o.secs,
            if o.caught() { "" } else { "  (passed too fast: not caught)" }
        );
    }
    // The held states must be caught every time; the short steps are best effort.
    for o in &outcomes {
        let best_effort = matches!(
            (o.case.victim, o.case.state),
            ("seller", "AwaitingInvoice") | ("seller", "Accepted") | ("buyer", "Claiming")
        );
        ensure!(best_effort || o.caught(), "{:?} killed at {}", o.case, o.killed_at);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_sigkill_buyer_at_each_state() -> Result<()> {
    kill_matrix(&BUYER_KILLS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_sigkill_seller_at_each_state() -> Result<()> {
    kill_matrix(&SELLER_KILLS).await
}

/// What a refunded swap cost the seller.
#[derive(Debug)]
struct RefundFacts {
    purpose: String,
    refund_vsize: u64,
    refund_fee_sat: u64,
    funding_fee_sat: u64,
}

/// The seller's events of `swap_id`: its funding fee (from the chain) and its refund.
async fn refund_facts(h: &Harness, swap_id: &str) -> Result<RefundFacts> {
    let events = h.node("seller")?.api().swap_events(swap_id).await?;
    let mut r = LoopOutReport::default();
    let mut refund = None;
    for e in &events {
        match e["event"].as_str() {
            Some("funding_seen") if r.funding_txid.is_empty() => {
                r.funding_txid = e["txid"].as_str().unwrap_or("").into();
            }
            Some("broadcast") => refund = Some(e.clone()),
            _ => {}
        }
    }
    let refund = refund.with_context(|| format!("no refund broadcast in {events:?}"))?;
    ensure!(!r.funding_txid.is_empty(), "no funding in {events:?}");
    r.fill_chain_data(&h.chain().esplora_url()).await;
    ensure!(r.funding_fee_paid_sat > 0, "funding fee unknown: {r:?}");
    Ok(RefundFacts {
        purpose: refund["purpose"].as_str().unwrap_or("").into(),
        refund_vsize: refund["vsize"].as_u64().unwrap_or(0),
        refund_fee_sat: refund["fee_sat"].as_u64().unwrap_or(0),
        funding_fee_sat: r.funding_fee_paid_sat,
    })
}

/// Waits for both sides of a refunded swap to end (seller `Refunded`, buyer `Aborted`), then
/// checks the balances: the buyer paid nothing, the seller the funding and the refund fee.
async fn check_refunded(h: &Harness, before: Balances, swap_id: &str) -> Result<RefundFacts> {
    let seller = h.node("seller")?.api();
    let buyer = h.node("buyer")?.api();
    let s = wait_until("seller side final", SWAP_TIMEOUT, || async {
        let v = seller.swap(swap_id).await.ok()?;
        v.is_final().then_some(v.state)
    })
    .await?;
    let b = wait_until("buyer side final", SWAP_TIMEOUT, || async {
        let v = buyer.swap(swap_id).await.ok()?;
        v.is_final().then_some(v.state)
    })
    .await?;
    ensure!(s == "Refunded" && b == "Aborted", "seller {s}, buyer {b}");
    let f = refund_facts(h, swap_id).await?;
    let want_seller = before.seller_wallet - f.funding_fee_sat - f.refund_fee_sat;
    let got = wait_until("balances settled", SWAP_TIMEOUT, || async {
        let now = balances(h).await.ok()?;
        (now.seller_wallet == want_seller
            && now.buyer_wallet == before.buyer_wallet
            && now.buyer_ln_out_msat == before.buyer_ln_out_msat)
            .then_some(now)
    })
    .await;
    let got = match got {
        Ok(g) => g,
        Err(e) => bail!("{e:#}; before {before:?}, {f:?}, now {:?}", balances(h).await.ok()),
    };
    ensure!(
        got.buyer_ln_out_msat == before.buyer_ln_out_msat,
        "buyer channel balance {} -> {}",
        before.buyer_ln_out_msat,
        got.buyer_ln_out_msat
    );
    Ok(f)
}

/// The refund paths on one harness whose seller offers the shortest timeout (claim margin 2,
/// 1 confirmation: 45 blocks, +15): a cooperative refund (the buyer aborts once funded), a
/// cooperative refund with the seller killed in `RefundingCooperatively` (buyer frozen, so no
/// answer comes) and in `Refunding` (refund in the mempool), and the refund leaf after the
/// timeout (the buyer is killed once funded and comes back after the refund). The buyer waits
/// for 50 confirmations (`min_confirmations` of the request), so it never pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_refunds() -> Result<()> {
    let s = scratch()?;
    let t0 = Instant::now();
    let mut seller = NodeSpec::seller("seller");
    seller.offer.claim_margin = 2;
    seller.offer.timeout_delta = 60;
    let mut c = config(&s.dir, seller);
    // A 2-block margin keeps the test short: the buyer's floor (default 20) follows it.
    for n in &mut c.nodes {
        n.buyer_min_claim_margin = Some(2);
    }
    let mut h = Harness::start(c).await?;
    eprintln!("harness up in {:.1} s", t0.elapsed().as_secs_f64());
    // 1. Cooperative refund: the buyer aborts once funded.
    let t = Instant::now();
    let before = balances(&h).await?;
    let id = take_unpaid(&h, SWAP_TIMEOUT).await?;
    let _: Value =
        h.node("buyer")?.api().post(&format!("/v1/swaps/{id}/abort"), &json!({})).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let f = check_refunded(&h, before, &id).await;
    miner.stop();
    let f = f.context("cooperative refund")?;
    ensure!(f.purpose == "cooperative_refund", "{f:?}");
    ensure!(f.refund_vsize == 111, "cooperative refund is {} vB", f.refund_vsize);
    eprintln!("cooperative refund: {f:?} in {:.1} s", t.elapsed().as_secs_f64());

    // 2. Cooperative refund, the seller killed in RefundingCooperatively and in Refunding.
    let t = Instant::now();
    let before = balances(&h).await?;
    let id = take_unpaid(&h, SWAP_TIMEOUT).await?;
    let _: Value =
        h.node("buyer")?.api().post(&format!("/v1/swaps/{id}/abort"), &json!({})).await?;
    // The abort is on the relay when the call returns; the frozen buyer answers nothing.
    h.pause("buyer")?;
    wait_until("seller asks for a cooperative refund", SWAP_TIMEOUT, || async {
        (state_of(&h, "seller", &id).await == "RefundingCooperatively").then_some(())
    })
    .await?;
    h.kill("seller")?;
    eprintln!("killed seller at RefundingCooperatively");
    h.resume("buyer")?;
    h.restart("seller").await?;
    // No block until the refund is in the mempool (the seller may also fall back to the refund
    // leaf if the buyer's answer got lost: then blocks up to the timeout are needed).
    let deadline = Instant::now() + SWAP_TIMEOUT;
    let mut since = Instant::now();
    loop {
        let st = state_of(&h, "seller", &id).await;
        if st == "Refunding" {
            break;
        }
        ensure!(Instant::now() < deadline, "seller never refunding (at {st})");
        if st == "Funded" && since.elapsed() > Duration::from_secs(2) {
            h.mine(10).await?;
            since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.kill("seller")?;
    eprintln!("killed seller at Refunding");
    h.restart("seller").await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let f = check_refunded(&h, before, &id).await;
    miner.stop();
    let f = f.context("cooperative refund with kills")?;
    eprintln!("refund after kills: {f:?} in {:.1} s", t.elapsed().as_secs_f64());

    // 3. Refund leaf after the timeout: the buyer is gone from the funding on.
    let t = Instant::now();
    let before = balances(&h).await?;
    let offer = h.best_offer("buyer", AMOUNT).await?;
    let id = h.node("buyer")?.api().swap_out(&offer, AMOUNT, MAX_FEE).await?;
    wait_until("buyer sees the funded htlc", SWAP_TIMEOUT, || async {
        (state_of(&h, "buyer", &id).await == "Funded").then_some(())
    })
    .await?;
    h.kill("buyer")?;
    let deadline = Instant::now() + SWAP_TIMEOUT;
    loop {
        let st = state_of(&h, "seller", &id).await;
        if st == "Refunded" {
            break;
        }
        ensure!(Instant::now() < deadline, "seller never refunded (at {st})");
        h.mine(if st == "Refunding" { 1 } else { 5 }).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    h.restart("buyer").await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let f = check_refunded(&h, before, &id).await;
    miner.stop();
    let f = f.context("refund after the timeout")?;
    ensure!(f.purpose == "script_refund", "{f:?}");
    eprintln!("refund leaf after the timeout: {f:?} in {:.1} s", t.elapsed().as_secs_f64());
    h.stop().await;
    eprintln!("refunds: {:.1} s in all", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The block confirming the HTLC funding is replaced (1-block reorg) before the buyer pays
/// (the offer asks 2 confirmations); the swap still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_reorg_of_the_funding_block() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.offer.min_confirmations = 2;
    let h = Harness::start(config(&s.dir, seller)).await?;
    let before = balances(&h).await?;
    let swap_id = take(&h).await?;
    let buyer = h.node("buyer")?.api();
    // The funding reaches the mempool.
    wait_until("funding in the mempool", SWAP_TIMEOUT, || async {
        let v = buyer.swap(&swap_id).await.ok()?;
        // The buyer may already be `Funded` (it saw the funding in the mempool).
        (matches!(v.state.as_str(), "Accepted" | "Funded") && h.chain().mempool_size().ok()? > 0)
            .then_some(())
    })
    .await?;
    h.mine(1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = buyer.swap(&swap_id).await?;
    ensure!(
        matches!(v.state.as_str(), "Accepted" | "Funded"),
        "buyer moved on with 1 confirmation: {}",
        v.state
    );
    let chain = h.chain().clone();
    tokio::task::spawn_blocking(move || chain.reorg(1)).await??;
    h.sync_all().await;
    let miner = h.start_miner(Duration::from_secs(1));
    let r = finish(&h, &swap_id).await?;
    miner.stop();
    eprintln!("{r}");
    check_balances(&h, before, &r).await?;
    h.stop().await;
    Ok(())
}

/// Takes a swap from a seller whose offer asks 2 confirmations, lets the funding confirm once,
/// then replaces that block (1-block reorg) and drops the funding from the mempool (`forever`:
/// as if its input had been double-spent). Returns the swap id and the funding txid once the
/// buyer reported the HTLC gone and went back to `Accepted`.
async fn fund_then_vanish(h: &Harness, forever: bool) -> Result<(String, bitcoin::Txid)> {
    let swap_id = take(h).await?;
    let buyer = h.node("buyer")?.api();
    let funding = wait_until("funding seen by the buyer", SWAP_TIMEOUT, || async {
        let events = buyer.swap_events(&swap_id).await.ok()?;
        events
            .iter()
            .find(|e| e["event"] == "funding_seen")
            .and_then(|e| e["txid"].as_str().and_then(|t| t.parse::<bitcoin::Txid>().ok()))
    })
    .await?;
    h.mine(1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = buyer.swap(&swap_id).await?.state;
    ensure!(
        matches!(state.as_str(), "Accepted" | "Funded"),
        "buyer moved on: {state}: {:?}",
        buyer.swap_events(&swap_id).await?
    );
    let chain = h.chain().clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        chain.reorg(1)?;
        ensure!(chain.drop_transaction(&funding, forever)?, "funding not in the mempool");
        Ok(())
    })
    .await??;
    h.sync_all().await;
    wait_until("buyer sees the htlc gone", SWAP_TIMEOUT, || async {
        let events = buyer.swap_events(&swap_id).await.ok()?;
        let gone = events.iter().any(|e| e["event"] == "funding_gone");
        (gone && buyer.swap(&swap_id).await.ok()?.state == "Accepted").then_some(())
    })
    .await?;
    Ok((swap_id, funding))
}

/// Nothing was paid for the swap: no payment attempt in the buyer's log, its channel balance
/// as before.
async fn ensure_unpaid(h: &Harness, swap_id: &str, before: Balances) -> Result<()> {
    let events = h.node("buyer")?.api().swap_events(swap_id).await?;
    ensure!(!events.iter().any(|e| e["event"] == "paying"), "the buyer paid: {events:?}");
    let now = balances(h).await?;
    ensure!(
        now.buyer_ln_out_msat >= before.buyer_ln_out_msat,
        "buyer's channel balance went down: {before:?} -> {now:?}"
    );
    Ok(())
}

/// Issue 12 item 6: the funding block is reorganised out and the funding dropped from the
/// mempool before the buyer pays. The buyer sees the HTLC gone and does not pay for it; the
/// seller broadcasts its funding again at the next block, and once it is back and confirmed the
/// swap completes with the usual balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_funding_reorged_out_and_dropped_is_paid_only_once_back() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.offer.min_confirmations = 2;
    let h = Harness::start(config(&s.dir, seller)).await?;
    let before = balances(&h).await?;
    let (swap_id, funding) = fund_then_vanish(&h, false).await?;
    ensure_unpaid(&h, &swap_id, before).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let r = finish(&h, &swap_id).await?;
    miner.stop();
    ensure!(r.funding_txid == funding.to_string(), "another funding: {}", r.funding_txid);
    check_balances(&h, before, &r).await?;
    h.stop().await;
    Ok(())
}

/// Issue 12 item 6: the funding's input is double-spent (the funding is reorganised out and can
/// never come back). The buyer never pays and gives up when the timeout comes too close; its
/// channel balance is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_funding_double_spent_is_never_paid_for() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.offer.min_confirmations = 2;
    // Short: the buyer gives up once `tip > timeout - margin 20 - the invoice's final CLTV
    // delta`, some 20-30 blocks after the swap starts.
    seller.offer.timeout_delta = 90;
    let h = Harness::start(config(&s.dir, seller)).await?;
    let before = balances(&h).await?;
    let (swap_id, _) = fund_then_vanish(&h, true).await?;
    let miner = h.start_miner(Duration::from_millis(500));
    let buyer = h.node("buyer")?.api();
    let state = wait_until("buyer gives up", SWAP_TIMEOUT, || async {
        let v = buyer.swap(&swap_id).await.ok()?;
        v.is_final().then_some(v.state)
    })
    .await?;
    miner.stop();
    ensure!(state == "Aborted", "buyer ended in {state}");
    ensure_unpaid(&h, &swap_id, before).await?;
    h.stop().await;
    Ok(())
}
