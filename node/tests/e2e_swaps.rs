//! End to end on the regtest harness: real `looper-node` processes (this crate's binary), the
//! embedded chain, a local Nostr relay, a real ldk-node channel buyer -> seller. Loop outs with
//! the cooperative and the script-path claim, SIGKILL and restart of either side at several
//! swap states (balances before and after differ only by the accounted fees), a reorg of the
//! funding block, and no secret in any node log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bitcoin::Network;
use looper_node::seed::{Mnemonic, NodeKeys};
use looper_regtest::harness::{
    wait_until, Harness, HarnessConfig, LoopOutReport, NodeSpec, SwapView,
};
use serde_json::Value;

const AMOUNT: u64 = 100_000;
const MAX_FEE: u64 = 10_000;
const SWAP_TIMEOUT: Duration = Duration::from_secs(180);

struct Scratch {
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// LOOPER_KEEP_TESTDIR=1 keeps the directory (node logs, data dirs).
fn scratch() -> Result<Scratch> {
    let tmp = tempfile::tempdir()?;
    if std::env::var_os("LOOPER_KEEP_TESTDIR").is_some() {
        let dir = tmp.keep();
        eprintln!("test dir (kept): {}", dir.display());
        Ok(Scratch { dir, _tmp: None })
    } else {
        Ok(Scratch { dir: tmp.path().to_path_buf(), _tmp: Some(tmp) })
    }
}

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
        (now.buyer_wallet == want_buyer && now.seller_wallet == want_seller).then_some(now)
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
    let r = finish(&h, &swap_id).await?;
    miner.stop();
    eprintln!("{r}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_script_path_claim() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.seller_cooperative = false;
    let h = Harness::start(config(&s.dir, seller)).await?;
    let before = balances(&h).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let swap_id = take(&h).await?;
    let r = finish(&h, &swap_id).await?;
    miner.stop();
    eprintln!("{r}");
    ensure!(r.claim_purpose == "script_claim", "{r:?}");
    check_balances(&h, before, &r).await?;
    h.stop().await;
    Ok(())
}

/// Kills `victim` with SIGKILL once its view of the swap is in `state`, restarts it, lets the
/// swap finish. Blocks are mined only while the buyer waits for the funding confirmation, so
/// that the waiting states (`Accepted`/`Funded` with the funding in the mempool, `Paid`,
/// `ClaimBroadcast` with the claim in the mempool) hold still until the kill.
async fn kill_and_restart_at(victim: &str, state: &str) -> Result<()> {
    let s = scratch()?;
    let mut h = Harness::start(config(&s.dir, NodeSpec::seller("seller"))).await?;
    let before = balances(&h).await?;
    let swap_id = take(&h).await?;
    let deadline = Instant::now() + SWAP_TIMEOUT;
    let mut last_change = Instant::now();
    let mut last_state = String::new();
    loop {
        let v: SwapView = h.node(victim)?.api().swap(&swap_id).await.unwrap_or_default();
        if v.state == state {
            break;
        }
        ensure!(!v.is_final(), "{victim} passed {state}: ended in {}", v.state);
        if v.state != last_state {
            last_state = v.state.clone();
            last_change = Instant::now();
        }
        // Mine only when stalled waiting for the funding confirmation.
        let b = h.node("buyer")?.api().swap(&swap_id).await.unwrap_or_default();
        if matches!(b.state.as_str(), "Accepted" | "Funded")
            && h.chain().mempool_size()? > 0
            && last_change.elapsed() > Duration::from_secs(2)
        {
            h.mine(1).await?;
            last_change = Instant::now();
        }
        ensure!(Instant::now() < deadline, "{victim} never reached {state} (at {})", v.state);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.kill(victim)?;
    eprintln!("killed {victim} at {state}");
    // The other side keeps going for a moment on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.restart(victim).await?;
    let miner = h.start_miner(Duration::from_secs(1));
    let r = finish(&h, &swap_id).await?;
    miner.stop();
    eprintln!("{r}");
    check_balances(&h, before, &r).await?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_sigkill_buyer_accepted() -> Result<()> {
    kill_and_restart_at("buyer", "Accepted").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_sigkill_seller_funded() -> Result<()> {
    kill_and_restart_at("seller", "Funded").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_sigkill_seller_paid() -> Result<()> {
    kill_and_restart_at("seller", "Paid").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_sigkill_buyer_claim_broadcast() -> Result<()> {
    kill_and_restart_at("buyer", "ClaimBroadcast").await
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
        (v.state == "Accepted" && h.chain().mempool_size().ok()? > 0).then_some(())
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
