//! End to end on the regtest harness: a seller restored from its mnemonic alone (issue 12, item 4).
//!
//! A loop out completes; a second swap is left funded and unpaid (the buyer waits for 50
//! confirmations, so it never pays); the seller is killed (SIGKILL: whatever was not published
//! by then is lost) and everything in its data dir but `seed` is deleted. Started again, it must
//! find both swaps in its backups on the relay, refund the open one (cooperatively once the buyer
//! gives up, or through the refund leaf after the timeout: blocks are mined until it is
//! refunded), see the refund in its restored wallet, and give a new swap a key index above every
//! earlier one and a payment hash no earlier swap used.
//!
//! Before the backups existed this failed twice over: the restarted seller did not know the open
//! swap (`GET /v1/swaps/{id}` answered 404, the HTLC was never refunded), and its next swap drew
//! key index 0 again, reusing the first swap's payment hash, whose preimage the first buyer and
//! the routing nodes know.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bitcoin::Network;
use looper_node::backup::{decode_event, BackupKeys, BackupRelays, Payload};
use looper_node::seed::{Mnemonic, NodeKeys};
use looper_regtest::harness::{wait_until, Harness, HarnessConfig, LoopOutReport, NodeSpec};
use serde_json::Value;

use e2e_common::{scratch, state_of, take_unpaid, AMOUNT, MAX_FEE};

const SWAP_TIMEOUT: Duration = Duration::from_secs(180);

/// The first number field named `key` in a JSON value, recursively.
fn find_u64(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(m) => {
            m.get(key).and_then(Value::as_u64).or_else(|| m.values().find_map(|x| find_u64(x, key)))
        }
        Value::Array(a) => a.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

/// `(key index, payment hash)` of every swap of `node`, by swap id.
async fn seller_swaps(h: &Harness) -> Result<Vec<(String, u64, String, String)>> {
    let api = h.node("seller")?.api();
    let mut out = Vec::new();
    for s in api.swaps().await? {
        let v = api.swap(&s.swap_id).await?;
        let index = find_u64(&v.record, "key_index").context("key_index in the record")?;
        let hash = v.payment_hash.clone().context("payment hash")?;
        out.push((s.swap_id.clone(), index, hash, v.state.clone()));
    }
    Ok(out)
}

fn seller_backup_keys(h: &Harness) -> Result<(BackupKeys, String)> {
    let phrase = std::fs::read_to_string(h.node("seller")?.datadir().join("seed"))?;
    let keys = NodeKeys::from_mnemonic(&Mnemonic::parse(phrase.trim(), "seed")?, Network::Regtest)?;
    let secret_hex = hex::encode(keys.backup_secret_key()?.secret_bytes());
    Ok((BackupKeys::from_node_keys(&keys)?, secret_hex))
}

/// Waits until the relay holds, for each swap, a backup in the state the seller shows.
async fn backups_current(h: &Harness, keys: &BackupKeys, want: &[(String, String)]) -> Result<()> {
    let relays = BackupRelays::connect(&[h.relay_url().to_string()]).await?;
    let found = wait_until("the seller's backups on the relay", SWAP_TIMEOUT, || async {
        let fetched = relays.fetch(keys.public_key(), Duration::from_secs(5)).await.ok()?;
        let states: Vec<(String, String)> = fetched
            .events
            .iter()
            .filter_map(|e| match decode_event(keys, e).ok()? {
                Payload::Swap { record, .. } => Some((record.id.to_string(), record.state)),
                _ => None,
            })
            .collect();
        want.iter().all(|w| states.contains(w)).then_some(())
    })
    .await;
    relays.shutdown().await;
    Ok(found?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_restore_from_seed_refunds_and_never_reuses_a_hash() -> Result<()> {
    let s = scratch()?;
    let t0 = Instant::now();
    let mut seller = NodeSpec::seller("seller");
    // Restored from its seed alone, the seller has no channel left (ldk-node's state is not
    // backed up): the new swap of step 6 is only taken to see its key index and hash.
    seller.seller_checks_liquidity = false;
    // A short timeout (claim margin + 1 confirmation + the 42-block payment budget + 17), so the
    // refund comes after a few dozen blocks.
    seller.offer.timeout_delta = 80;
    let mut config = HarnessConfig::new(&s.dir, env!("CARGO_BIN_EXE_looper-node"));
    config.nodes = vec![seller, NodeSpec::buyer("buyer")];
    config.channel_sat = 10 * AMOUNT + 100_000;
    // The backup publications with their sizes, in the nodes' logs.
    config.node_log_filter = format!("{},looper_node::backup=debug", config.node_log_filter);
    let mut h = Harness::start(config).await?;
    eprintln!("harness up in {:.1} s", t0.elapsed().as_secs_f64());

    // 1. A loop out to the end.
    let t = Instant::now();
    let miner = h.start_miner(Duration::from_secs(1));
    let r = h.loop_out("buyer", AMOUNT, MAX_FEE).await;
    let claimed = r.as_ref().map(|r| r.swap_id.clone());
    let first = match claimed {
        Ok(id) => id,
        Err(e) => {
            miner.stop();
            anyhow::bail!("loop out: {e}");
        }
    };
    let seller_api = h.node("seller")?.api().clone();
    wait_until("the seller's side claimed", SWAP_TIMEOUT, || async {
        (seller_api.swap(&first).await.ok()?.state == "Claimed").then_some(())
    })
    .await?;
    miner.stop();
    eprintln!("loop out claimed in {:.1} s", t.elapsed().as_secs_f64());

    // 2. A seller-funded swap left unpaid; its funding confirmed.
    h.sync_all().await;
    let wallet_before = h.node("seller")?.api().wallet_balance().await?.total_sat;
    let open = take_unpaid(&h, SWAP_TIMEOUT).await?;
    h.mine(1).await?;
    let funding_txid = wait_until("the seller saw its funding", SWAP_TIMEOUT, || async {
        let events = seller_api.swap_events(&open).await.ok()?;
        events.iter().find_map(|e| {
            (e["event"] == "funding_seen").then(|| e["txid"].as_str().map(String::from)).flatten()
        })
    })
    .await?;
    let mut funding = LoopOutReport { funding_txid, ..LoopOutReport::default() };
    funding.fill_chain_data(&h.chain().esplora_url()).await;
    ensure!(funding.funding_fee_paid_sat > 0, "funding fee unknown: {funding:?}");
    let before = seller_swaps(&h).await?;
    ensure!(before.len() == 2, "seller swaps before the wipe: {before:?}");
    let open_state = state_of(&h, "seller", &open).await;
    eprintln!("before the wipe: {before:?}");

    // 3. The backups are on the relay (published in the background as the swaps were
    // persisted); then the seller dies and its data dir goes, all but the mnemonic.
    let (keys, backup_secret_hex) = seller_backup_keys(&h)?;
    backups_current(&h, &keys, &[(first.clone(), "Claimed".into()), (open.clone(), open_state)])
        .await?;
    h.kill("seller")?;
    let t = Instant::now();
    h.restore_from_seed("seller").await?;
    eprintln!("seller restored and up in {:.1} s", t.elapsed().as_secs_f64());

    // 4. Both swaps are known again, with their payment hashes.
    let seller_api = h.node("seller")?.api().clone();
    let restored = seller_swaps(&h).await?;
    for (id, index, hash, _) in &before {
        ensure!(
            restored.iter().any(|(i, x, y, _)| i == id && x == index && y == hash),
            "swap {id} not restored: {restored:?}"
        );
    }

    let datadir = h.node("seller")?.datadir().to_path_buf();
    let log = std::fs::read_to_string(datadir.join("node.log"))?;
    ensure!(log.contains("swaps restored from the backups"), "no restore in the log");

    // 5. The open swap is refunded: blocks come until the buyer gives up (cooperative refund) or
    // the timeout passes (refund leaf).
    let t = Instant::now();
    let deadline = Instant::now() + SWAP_TIMEOUT;
    loop {
        let st = state_of(&h, "seller", &open).await;
        if st == "Refunded" {
            break;
        }
        ensure!(Instant::now() < deadline, "the restored seller never refunded (at {st})");
        h.mine(if st == "Refunding" { 1 } else { 4 }).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = seller_api.swap_events(&open).await?;
    let refund = events
        .iter()
        .find(|e| e["event"] == "broadcast")
        .with_context(|| format!("no refund broadcast in {events:?}"))?;
    let refund_fee = refund["fee_sat"].as_u64().unwrap_or(0);
    eprintln!(
        "refunded ({}) in {:.1} s",
        refund["purpose"].as_str().unwrap_or("?"),
        t.elapsed().as_secs_f64()
    );
    // The refund reached the restored wallet (its address was revealed by the restore).
    let want = wallet_before - funding.funding_fee_paid_sat - refund_fee;
    h.mine(1).await?;
    let last = std::cell::Cell::new(0u64);
    let got = wait_until("the refund in the restored wallet", SWAP_TIMEOUT, || {
        let api = seller_api.clone();
        let last = &last;
        async move {
            let _ = api.sync().await;
            last.set(api.wallet_balance().await.ok()?.total_sat);
            (last.get() == want).then_some(())
        }
    })
    .await;
    let last = last.get();
    ensure!(
        got.is_ok(),
        "restored wallet holds {last}, want {want} (before {wallet_before}, {funding:?}, refund fee {refund_fee})"
    );

    // 6. A new swap on the restored seller: a fresh key index and payment hash.
    let new = take_unpaid(&h, SWAP_TIMEOUT).await?;
    let after = seller_swaps(&h).await?;
    let (_, new_index, new_hash, _) =
        after.iter().find(|(id, ..)| *id == new).context("the new swap on the seller")?.clone();
    let old_hashes: BTreeSet<&String> = before.iter().map(|(_, _, hash, _)| hash).collect();
    let old_max = before.iter().map(|(_, index, ..)| *index).max().unwrap_or(0);
    eprintln!("new swap: key index {new_index} (earlier at most {old_max})");
    ensure!(new_index > old_max, "key index {new_index} reused (earlier up to {old_max})");
    ensure!(!old_hashes.contains(&new_hash), "payment hash {new_hash} reused");

    // No secret of the backups in the restored node's log.
    let log = std::fs::read_to_string(datadir.join("node.log"))?.to_lowercase();
    ensure!(!log.contains(&backup_secret_hex), "the log holds the backup key");
    h.stop().await;
    eprintln!("restore test: {:.1} s in all", t0.elapsed().as_secs_f64());
    Ok(())
}
