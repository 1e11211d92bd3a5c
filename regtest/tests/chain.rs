//! The chain behind its Esplora API: shapes parsed by esplora-client 0.12, mempool rejects
//! with Bitcoin Core's reasons, reorgs and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::SecretKey;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use common::{spend, TempDir};
use esplora_client::{AsyncClient, Builder};
use looper_regtest::{test_key, Error, RegtestChain};
use serde_json::{json, Value};

fn client(chain: &RegtestChain) -> AsyncClient {
    Builder::new(&chain.esplora_url()).build_async().unwrap()
}

fn reject_reason(e: esplora_client::Error) -> String {
    match e {
        esplora_client::Error::HttpResponse { status, message } => {
            assert_eq!(status, 400, "{message}");
            message
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_shapes_are_parsed_by_esplora_client() {
    let dir = TempDir::new("shapes");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    assert_eq!(c.get_height().await.unwrap(), 101);
    assert_eq!(c.get_tip_hash().await.unwrap(), chain.tip_hash().unwrap());

    let (_key, addr) = test_key("shapes").unwrap();
    let txid = chain.fund_address(&addr, Amount::from_sat(1_000_000)).unwrap();
    let tip = c.get_height().await.unwrap();
    assert_eq!(tip, 102);

    let info = c.get_tx_info(&txid).await.unwrap().unwrap();
    assert!(info.status.confirmed);
    assert_eq!(info.status.block_height, Some(102));
    assert!(info.fee > 0);
    assert!(info.vin.iter().all(|v| v.prevout.is_some()));
    assert_eq!(info.to_tx().compute_txid(), txid);
    let raw = c.get_tx(&txid).await.unwrap().unwrap();
    assert_eq!(raw.compute_txid(), txid);
    let status = c.get_tx_status(&txid).await.unwrap();
    assert!(status.confirmed);

    let block_hash = status.block_hash.unwrap();
    let header = c.get_header_by_hash(&block_hash).await.unwrap();
    assert_eq!(header.block_hash(), block_hash);
    let bstatus = c.get_block_status(&block_hash).await.unwrap();
    assert!(bstatus.in_best_chain);
    assert_eq!(bstatus.height, Some(102));
    let binfo = c.get_block_info(&block_hash).await.unwrap();
    assert_eq!(binfo.tx_count, 2);
    let txids = c.get_block_txids(&block_hash).await.unwrap();
    assert_eq!(txids[1], txid);
    let block = c.get_block_by_hash(&block_hash).await.unwrap().unwrap();
    assert_eq!(block.block_hash(), block_hash);
    assert_eq!(c.get_block_hash(102).await.unwrap(), block_hash);
    let infos = c.get_block_infos(None).await.unwrap();
    assert_eq!(infos.len(), 10);
    assert_eq!(infos[0].id, block_hash);
    let infos = c.get_block_infos(Some(5)).await.unwrap();
    assert_eq!(infos.len(), 6);

    let proof = c.get_merkle_proof(&txid).await.unwrap().unwrap();
    assert_eq!(proof.block_height, 102);
    assert_eq!(proof.pos, 1);
    let mb = c.get_merkle_block(&txid).await.unwrap().unwrap();
    let mut matches = Vec::new();
    let mut idx = Vec::new();
    mb.txn.extract_matches(&mut matches, &mut idx).unwrap();
    assert_eq!(matches, vec![txid]);

    let vout =
        info.vout.iter().position(|o| o.scriptpubkey == addr.script_pubkey()).unwrap() as u64;
    let os = c.get_output_status(&txid, vout).await.unwrap().unwrap();
    assert!(!os.spent);
    let outspends = c.get_tx_outspends(&txid).await.unwrap();
    assert_eq!(outspends.len(), info.vout.len());

    let history = c.scripthash_txs(&addr.script_pubkey(), None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].txid, txid);
    let utxos = c.get_address_utxos(&addr).await.unwrap();
    assert_eq!(utxos.len(), 1);
    assert_eq!(utxos[0].value, Amount::from_sat(1_000_000));
    let stats = c.get_address_stats(&addr).await.unwrap();
    assert_eq!(stats.chain_stats.funded_txo_sum, 1_000_000);

    let fees = c.get_fee_estimates().await.unwrap();
    for t in [1u16, 2, 3, 6, 12, 25, 144, 504, 1008] {
        assert!(fees.contains_key(&t), "missing target {t}");
    }

    // Unknown things are 404s, which the client maps to None.
    let unknown = Txid::from_str(&"11".repeat(32)).unwrap();
    assert!(c.get_tx(&unknown).await.unwrap().is_none());
    assert!(c.get_tx_info(&unknown).await.unwrap().is_none());
    assert!(c.get_merkle_proof(&unknown).await.unwrap().is_none());
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mempool_rejects_with_core_reasons() {
    let dir = TempDir::new("rejects");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let (key, addr) = test_key("rejects").unwrap();
    let spk = addr.script_pubkey();
    let (_, dest) = test_key("rejects-dest").unwrap();
    let dest = dest.script_pubkey();
    let value = Amount::from_sat(1_000_000);
    let funding = chain.fund_address(&addr, value).unwrap();
    let info = c.get_tx_info(&funding).await.unwrap().unwrap();
    let vout = info.vout.iter().position(|o| o.scriptpubkey == spk).unwrap() as u32;
    let prev = OutPoint::new(funding, vout);
    let out = Amount::from_sat(990_000);

    // Corrupted signature.
    let mut bad = spend(&key, prev, &spk, value, &dest, out, LockTime::ZERO, Sequence::MAX);
    let mut items: Vec<Vec<u8>> = bad.input[0].witness.iter().map(|w| w.to_vec()).collect();
    items[0][10] ^= 0x01;
    bad.input[0].witness = bitcoin::Witness::from_slice(&items);
    let reason = reject_reason(c.broadcast(&bad).await.unwrap_err());
    eprintln!("corrupted signature: {reason}");
    assert!(reason.contains("mempool-script-verify-flag-failed"), "{reason}");

    // Non-final: lock time above the next block's height.
    let tip = chain.tip_height().unwrap();
    let lock = LockTime::from_height(tip + 10).unwrap();
    let nonfinal =
        spend(&key, prev, &spk, value, &dest, out, lock, Sequence::ENABLE_LOCKTIME_NO_RBF);
    let reason = reject_reason(c.broadcast(&nonfinal).await.unwrap_err());
    assert!(reason.contains("\"non-final\""), "{reason}");

    // BIP-68: relative lock of 5 blocks on a coin confirmed one block ago.
    let relative =
        spend(&key, prev, &spk, value, &dest, out, LockTime::ZERO, Sequence::from_height(5));
    let reason = reject_reason(c.broadcast(&relative).await.unwrap_err());
    assert!(reason.contains("non-BIP68-final"), "{reason}");

    // Outputs above inputs.
    let greedy = spend(
        &key,
        prev,
        &spk,
        value,
        &dest,
        Amount::from_sat(1_000_001),
        LockTime::ZERO,
        Sequence::MAX,
    );
    let reason = reject_reason(c.broadcast(&greedy).await.unwrap_err());
    assert!(reason.contains("bad-txns-in-belowout"), "{reason}");

    // Double spend paying less: not a replacement; after confirmation the input is gone.
    let first = spend(&key, prev, &spk, value, &dest, out, LockTime::ZERO, Sequence::MAX);
    c.broadcast(&first).await.unwrap();
    assert!(chain.in_mempool(&first.compute_txid()).unwrap());
    let second = spend(
        &key,
        prev,
        &spk,
        value,
        &dest,
        Amount::from_sat(995_000),
        LockTime::ZERO,
        Sequence::MAX,
    );
    let reason = reject_reason(c.broadcast(&second).await.unwrap_err());
    assert!(reason.contains("insufficient fee, rejecting replacement"), "{reason}");
    chain.mine(1).unwrap();
    assert_eq!(chain.confirmation_height(&first.compute_txid()).unwrap(), Some(tip + 1));
    let reason = reject_reason(c.broadcast(&second).await.unwrap_err());
    assert!(reason.contains("bad-txns-inputs-missingorspent"), "{reason}");

    // Immature coinbase.
    let hashes = chain.mine_blocks(1, &addr).unwrap();
    let block = c.get_block_by_hash(&hashes[0]).await.unwrap().unwrap();
    let cb = &block.txdata[0];
    let cb_value = cb.output[0].value;
    let immature = spend(
        &key,
        OutPoint::new(cb.compute_txid(), 0),
        &spk,
        cb_value,
        &dest,
        cb_value - Amount::from_sat(10_000),
        LockTime::ZERO,
        Sequence::MAX,
    );
    match chain.submit_transaction(&immature) {
        Err(Error::TxRejected { reason, .. }) => {
            assert!(reason.starts_with("bad-txns-premature-spend-of-coinbase"), "{reason}")
        }
        other => panic!("immature coinbase spend accepted: {other:?}"),
    }
    // ...which becomes spendable 100 blocks later.
    chain.mine(99).unwrap();
    chain.submit_transaction(&immature).unwrap();
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&immature.compute_txid()).unwrap().is_some());
    // The kernel's undo data agrees with the chain's bookkeeping.
    let h = chain.tip_height().unwrap();
    assert!(chain.check_undo(h).unwrap());
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_unconfirms_and_reconfirms() {
    let dir = TempDir::new("reorg");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let (_key, addr) = test_key("reorg").unwrap();
    let txid = chain.fund_address(&addr, Amount::from_sat(500_000)).unwrap();
    chain.mine(1).unwrap();
    let old_tip = chain.tip_hash().unwrap();
    let old_block = c.get_tx_status(&txid).await.unwrap().block_hash.unwrap();
    let height = chain.tip_height().unwrap();

    let new = chain.reorg(2).unwrap();
    assert_eq!(new.len(), 3);
    assert_eq!(chain.tip_height().unwrap(), height + 1);
    assert_eq!(c.get_tip_hash().await.unwrap(), new[2]);
    assert!(!c.get_block_status(&old_tip).await.unwrap().in_best_chain);
    assert!(!c.get_block_status(&old_block).await.unwrap().in_best_chain);
    // The funding transaction went back to the mempool.
    assert!(!c.get_tx_status(&txid).await.unwrap().confirmed);
    assert!(chain.in_mempool(&txid).unwrap());
    let utxos = c.get_address_utxos(&addr).await.unwrap();
    assert_eq!(utxos.len(), 1);
    assert!(!utxos[0].status.confirmed);

    chain.mine(1).unwrap();
    let status = c.get_tx_status(&txid).await.unwrap();
    assert!(status.confirmed);
    assert_eq!(status.block_height, Some(height + 2));
    chain.shutdown();
}

#[test]
fn restart_rebuilds_the_indexes_from_the_kernel() {
    let dir = TempDir::new("restart");
    let (_key, addr) = test_key("restart").unwrap();
    let (txid, height) = {
        let chain = RegtestChain::start(dir.path()).unwrap();
        let txid = chain.fund_address(&addr, Amount::from_sat(700_000)).unwrap();
        (txid, chain.tip_height().unwrap())
    };
    let chain = RegtestChain::start(dir.path()).unwrap();
    assert_eq!(chain.tip_height().unwrap(), height);
    assert_eq!(chain.confirmation_height(&txid).unwrap(), Some(height));
    // Funding still works from the rebuilt UTXO set.
    chain.fund_address(&addr, Amount::from_sat(100_000)).unwrap();
    assert!(chain.check_undo(height + 1).unwrap());
}

#[tokio::test]
async fn a_dropped_transaction_leaves_the_history_and_a_banned_one_never_comes_back() {
    let dir = TempDir::new("drop");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let (_key, addr) = test_key("drop").unwrap();
    let txid = chain.fund_address(&addr, Amount::from_sat(500_000)).unwrap();
    // Confirmed by `fund_address`: reorganised out, it is back in the mempool.
    chain.reorg(1).unwrap();
    assert!(chain.in_mempool(&txid).unwrap());
    let tx = c.get_tx(&txid).await.unwrap().unwrap();
    // Dropped (evicted): gone from the mempool and the address history, but it may come back.
    assert!(chain.drop_transaction(&txid, false).unwrap());
    assert!(!chain.in_mempool(&txid).unwrap());
    assert!(c.get_address_txs(&addr, None).await.unwrap().is_empty());
    assert_eq!(chain.submit_transaction(&tx).unwrap(), txid);
    // Banned (double-spent): refused from now on.
    assert!(chain.drop_transaction(&txid, true).unwrap());
    assert!(chain.submit_transaction(&tx).is_err());
    chain.mine(1).unwrap();
    assert!(c.get_tx_status(&txid).await.unwrap().block_height.is_none());
    chain.shutdown();
}

// ---------------------------------------------------------------- fee market

/// A coin of `key`'s P2WPKH: its outpoint and output.
struct Coin {
    key: SecretKey,
    spk: ScriptBuf,
    outpoint: OutPoint,
    txout: TxOut,
}

/// Funds a fresh key (named `seed`) with `amount_sat`, confirmed.
async fn coin(chain: &RegtestChain, c: &AsyncClient, seed: &str, amount_sat: u64) -> Coin {
    let (key, addr) = test_key(seed).unwrap();
    let spk = addr.script_pubkey();
    let txid = chain.fund_address(&addr, Amount::from_sat(amount_sat)).unwrap();
    let tx = c.get_tx(&txid).await.unwrap().unwrap();
    let vout = tx.output.iter().position(|o| o.script_pubkey == spk).unwrap();
    Coin { key, spk, outpoint: OutPoint::new(txid, vout as u32), txout: tx.output[vout].clone() }
}

/// Output `vout` of `tx`, paying to `from`'s key, as a coin.
fn output(from: &Coin, tx: &Transaction, vout: u32) -> Coin {
    Coin {
        key: from.key,
        spk: from.spk.clone(),
        outpoint: OutPoint::new(tx.compute_txid(), vout),
        txout: tx.output[vout as usize].clone(),
    }
}

/// Spends `inputs` (all of the first coin's key) into `outputs` equal outputs back to that key,
/// paying `fee_sat`.
fn pay(inputs: &[&Coin], outputs: usize, fee_sat: u64) -> Transaction {
    let total: u64 = inputs.iter().map(|c| c.txout.value.to_sat()).sum();
    let each = (total - fee_sat) / outputs as u64;
    let rest = (total - fee_sat) - each * outputs as u64;
    let spk = inputs[0].spk.clone();
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|c| TxIn {
                previous_output: c.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: (0..outputs)
            .map(|i| TxOut {
                value: Amount::from_sat(each + if i == 0 { rest } else { 0 }),
                script_pubkey: spk.clone(),
            })
            .collect(),
    };
    let prevouts: Vec<(OutPoint, TxOut)> =
        inputs.iter().map(|c| (c.outpoint, c.txout.clone())).collect();
    looper_regtest::sign_p2wpkh(&mut tx, &inputs[0].key, &prevouts).unwrap();
    tx
}

/// `pay` at `rate` sat/vB (rounded up).
fn pay_at(inputs: &[&Coin], outputs: usize, rate: u64) -> Transaction {
    let vsize = pay(inputs, outputs, 1000).vsize() as u64;
    pay(inputs, outputs, rate * vsize)
}

fn rejection(chain: &RegtestChain, tx: &Transaction) -> String {
    match chain.submit_transaction(tx) {
        Err(Error::TxRejected { txid, reason }) => {
            assert_eq!(txid, tx.compute_txid());
            reason
        }
        other => panic!("{} accepted: {other:?}", tx.compute_txid()),
    }
}

async fn post(chain: &RegtestChain, route: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}{route}", chain.esplora_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{route}: {}", res.status());
    res.json().await.unwrap()
}

async fn get(chain: &RegtestChain, route: &str) -> reqwest::Response {
    reqwest::get(format!("{}{route}", chain.esplora_url())).await.unwrap()
}

fn txids(v: &Value) -> BTreeSet<Txid> {
    v.as_array().unwrap().iter().map(|t| Txid::from_str(t.as_str().unwrap()).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_must_pay_for_everything_it_evicts() {
    let dir = TempDir::new("rbf");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let funded = coin(&chain, &c, "rbf", 1_000_000).await;

    // The original (about 9 sat/vB) and a child of it (about 9 sat/vB).
    let original = pay(&[&funded], 1, 1_000);
    let original_id = chain.submit_transaction(&original).unwrap();
    let child = pay(&[&output(&funded, &original, 0)], 1, 1_000);
    let child_id = chain.submit_transaction(&child).unwrap();
    assert_eq!(chain.mempool_entry(&original_id).unwrap(), Some((1_000, original.vsize() as u64)));

    // Rule 6: a fee rate no higher than the original's is refused.
    let lower = pay(&[&funded], 1, 900);
    let reason = rejection(&chain, &lower);
    let lower_rate = 900 * 1000 / lower.vsize() as u64;
    let old_rate = 1_000 * 1000 / original.vsize() as u64;
    assert_eq!(
        reason,
        format!(
            "insufficient fee, rejecting replacement {}; new feerate 0.{lower_rate:08} BTC/kvB <= old feerate 0.{old_rate:08} BTC/kvB",
            lower.compute_txid()
        )
    );
    // Through Esplora: HTTP 400 with Core's code and message.
    let reason = reject_reason(c.broadcast(&lower).await.unwrap_err());
    assert!(reason.contains("\"code\":-26") && reason.contains("new feerate"), "{reason}");

    // Rule 3: a higher fee rate, but less than the original and its child together.
    let without_child = pay(&[&funded], 1, 1_500);
    assert_eq!(
        rejection(&chain, &without_child),
        format!(
            "insufficient fee, rejecting replacement {}, less fees than conflicting txs; 0.000015 < 0.00002",
            without_child.compute_txid()
        )
    );

    // Rule 4: both fees, but not the incremental relay fee (1 sat/vB) for its own size.
    let stingy = pay(&[&funded], 1, 2_050);
    let vsize = stingy.vsize() as u64;
    assert_eq!(vsize, 110);
    assert_eq!(
        rejection(&chain, &stingy),
        format!(
            "insufficient fee, rejecting replacement {}, not enough additional fees to relay; 0.0000005 < 0.0000011",
            stingy.compute_txid()
        )
    );
    assert!(chain.in_mempool(&original_id).unwrap() && chain.in_mempool(&child_id).unwrap());

    // Enough: 2000 + 1 sat/vB. The original and its child leave the mempool and the API.
    let bump = pay(&[&funded], 1, 2_000 + vsize);
    let bump_id = chain.submit_transaction(&bump).unwrap();
    assert!(chain.in_mempool(&bump_id).unwrap());
    assert!(!chain.in_mempool(&original_id).unwrap());
    assert!(!chain.in_mempool(&child_id).unwrap());
    assert_eq!(chain.mempool_size().unwrap(), 1);
    assert!(chain.mempool_entry(&original_id).unwrap().is_none());
    assert!(c.get_tx(&original_id).await.unwrap().is_none());
    assert!(c.get_tx(&child_id).await.unwrap().is_none());
    assert_eq!(chain.outspend(&funded.outpoint).unwrap(), Some(bump_id));
    let history = c.scripthash_txs(&funded.spk, None).await.unwrap();
    let ids: Vec<Txid> = history.iter().map(|t| t.txid).collect();
    assert_eq!(ids, vec![bump_id, funded.outpoint.txid]);
    let mempool: Vec<Txid> = c.get_mempool_txids().await.unwrap();
    assert_eq!(mempool, vec![bump_id]);

    // The replaced ones are double spends now; the replacement confirms.
    assert!(chain.submit_transaction(&child).is_err());
    chain.mine(1).unwrap();
    assert_eq!(chain.confirmation_height(&bump_id).unwrap(), Some(chain.tip_height().unwrap()));
    assert!(chain.confirmation_height(&original_id).unwrap().is_none());
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_follow_rules_two_and_five_and_never_spend_what_they_replace() {
    let dir = TempDir::new("rbf-rules");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let funded = coin(&chain, &c, "rbf-rules", 2_000_000).await;
    let other = coin(&chain, &c, "rbf-rules", 500_000).await;

    // The original fans out to 100 outputs, each spent by a child: 101 transactions.
    let original = pay(&[&funded], 100, 10_000);
    chain.submit_transaction(&original).unwrap();
    let mut children = Vec::new();
    for vout in 0..100 {
        let child = pay(&[&output(&funded, &original, vout)], 1, 200);
        children.push(chain.submit_transaction(&child).unwrap());
    }
    assert_eq!(chain.mempool_size().unwrap(), 101);

    // Spending an output of the transaction it would replace.
    let own_output = output(&funded, &original, 0);
    let circular = pay(&[&funded, &own_output], 1, 100_000);
    assert_eq!(
        rejection(&chain, &circular),
        format!(
            "bad-txns-spends-conflicting-tx, {} spends conflicting transaction {}",
            circular.compute_txid(),
            original.compute_txid()
        )
    );

    // Rule 5: 101 evictions.
    let bump = pay(&[&funded], 1, 100_000);
    assert_eq!(
        rejection(&chain, &bump),
        format!(
            "too many potential replacements, rejecting replacement {}; too many potential replacements (101 > 100)",
            bump.compute_txid()
        )
    );

    // Rule 2: a new unconfirmed input (an output of an unrelated mempool transaction).
    let unrelated = pay(&[&other], 1, 1_000);
    chain.submit_transaction(&unrelated).unwrap();
    let unconfirmed = output(&other, &unrelated, 0);
    // (Both coins are of the same key.)
    let adds = pay(&[&funded, &unconfirmed], 1, 100_000);
    // (Dropping one child brings the evictions down to 100.)
    assert!(chain.drop_tx(&children[99], false).unwrap());
    assert_eq!(
        rejection(&chain, &adds),
        format!(
            "replacement-adds-unconfirmed, replacement {} adds unconfirmed input, idx 1",
            adds.compute_txid()
        )
    );

    // 100 evictions are allowed.
    let bump_id = chain.submit_transaction(&bump).unwrap();
    assert_eq!(chain.mempool_size().unwrap(), 2, "the bump and the unrelated transaction");
    assert!(chain.in_mempool(&bump_id).unwrap());
    assert!(children.iter().all(|t| !chain.in_mempool(t).unwrap()));
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_spike_refuses_and_evicts_cheap_transactions_and_raises_the_estimates() {
    let dir = TempDir::new("spike");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    assert_eq!(chain.min_fee_rate().unwrap(), 0.0);
    let low_coin = coin(&chain, &c, "spike-low", 100_000).await;
    let parent_coin = coin(&chain, &c, "spike-parent", 100_000).await;
    let high_coin = coin(&chain, &c, "spike-high", 100_000).await;

    let low = pay_at(&[&low_coin], 1, 2);
    let low_id = chain.submit_transaction(&low).unwrap();
    // A 2 sat/vB parent whose 30 sat/vB child pays for it (package about 16 sat/vB).
    let parent = pay_at(&[&parent_coin], 1, 2);
    let parent_id = chain.submit_transaction(&parent).unwrap();
    let child = pay_at(&[&output(&parent_coin, &parent, 0)], 1, 30);
    let child_id = chain.submit_transaction(&child).unwrap();
    let high = pay_at(&[&high_coin], 1, 20);
    let high_id = chain.submit_transaction(&high).unwrap();

    // 10 sat/vB: the lone 2 sat/vB transaction goes, the parent stays thanks to its child.
    let evicted = chain.set_min_fee_rate(10.0).unwrap();
    assert_eq!(evicted, vec![low_id]);
    assert_eq!(chain.min_fee_rate().unwrap(), 10.0);
    assert!(!chain.in_mempool(&low_id).unwrap());
    assert!(c.get_tx(&low_id).await.unwrap().is_none());
    for t in [parent_id, child_id, high_id] {
        assert!(chain.in_mempool(&t).unwrap());
    }
    // Refused on entry, in Core's words.
    let vsize = low.vsize() as u64;
    assert_eq!(
        rejection(&chain, &low),
        format!("mempool min fee not met, {} < {}", 2 * vsize, 10 * vsize)
    );
    // The estimates follow (the configured rate is 1 sat/vB).
    let fees = c.get_fee_estimates().await.unwrap();
    assert_eq!(fees.len(), looper_regtest::FEE_TARGETS.len());
    assert!(fees.values().all(|r| *r == 10.0), "{fees:?}");
    assert!(chain.fee_estimates().unwrap().values().all(|r| *r == 10.0));

    // 25 sat/vB through the control route: the parent (with its child) and the 20 sat/vB one.
    let answer = post(&chain, "/regtest/min-fee-rate", json!({ "sat_vb": 25 })).await;
    assert_eq!(answer["sat_vb"], json!(25.0));
    assert_eq!(txids(&answer["evicted"]), BTreeSet::from([parent_id, child_id, high_id]));
    assert_eq!(chain.mempool_size().unwrap(), 0);
    let current: Value = get(&chain, "/regtest/min-fee-rate").await.json().await.unwrap();
    assert_eq!(current["sat_vb"], json!(25.0));
    assert_eq!(c.get_fee_estimates().await.unwrap().get(&1), Some(&25.0));
    // Funding still works (it pays the minimum) and confirms.
    let funded = coin(&chain, &c, "spike-after", 50_000).await;
    assert!(chain.confirmation_height(&funded.outpoint.txid).unwrap().is_some());

    // The spike is over: the cheap transaction is welcome again.
    assert!(chain.set_min_fee_rate(0.0).unwrap().is_empty());
    assert_eq!(chain.submit_transaction(&low).unwrap(), low_id);
    assert_eq!(c.get_fee_estimates().await.unwrap().get(&6), Some(&1.0));
    assert!(chain.set_min_fee_rate(-1.0).is_err());
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_estimates_follow_an_override_curve_floored_at_the_min_fee_rate() {
    let dir = TempDir::new("curve");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    chain.set_fee_estimates(Some(BTreeMap::from([(1, 50.0), (6, 20.0)]))).unwrap();
    let fees = c.get_fee_estimates().await.unwrap();
    for (target, rate) in [(1u16, 50.0), (2, 50.0), (5, 50.0), (6, 20.0), (25, 20.0), (1008, 20.0)]
    {
        assert_eq!(fees.get(&target), Some(&rate), "target {target}: {fees:?}");
    }
    // What BDK and ldk-node compute from it.
    assert_eq!(esplora_client::convert_fee_rate(3, fees.clone()), Some(50.0));
    assert_eq!(esplora_client::convert_fee_rate(12, fees), Some(20.0));

    // The minimum fee rate floors the curve.
    chain.set_min_fee_rate(30.0).unwrap();
    let fees = chain.fee_estimates().unwrap();
    assert_eq!((fees[&1], fees[&6], fees[&144]), (50.0, 30.0, 30.0));

    // Through the control route: a curve naming only target 3, then null.
    let answer = post(&chain, "/regtest/fee-estimates", json!({ "3": 40 })).await;
    assert_eq!(answer["override"], json!({ "3": 40.0 }));
    assert_eq!(answer["estimates"]["1"], json!(40.0));
    assert_eq!(answer["estimates"]["144"], json!(40.0));
    let answer = post(&chain, "/regtest/fee-estimates", Value::Null).await;
    assert_eq!(answer["override"], Value::Null);
    assert_eq!(answer["estimates"]["1"], json!(30.0));
    let current: Value = get(&chain, "/regtest/fee-estimates").await.json().await.unwrap();
    assert_eq!(current["override"], Value::Null);
    chain.set_min_fee_rate(0.0).unwrap();
    assert!(chain.fee_estimates().unwrap().values().all(|r| *r == 1.0));
    assert!(chain.set_fee_estimates(Some(BTreeMap::new())).is_err());
    assert!(chain.set_fee_estimates(Some(BTreeMap::from([(0, 5.0)]))).is_err());
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_take_the_highest_fee_rate_packages_and_leave_the_rest() {
    let dir = TempDir::new("congested");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let low_coin = coin(&chain, &c, "congested-low", 100_000).await;
    let high_coin = coin(&chain, &c, "congested-high", 100_000).await;
    let mid_coin = coin(&chain, &c, "congested-mid", 100_000).await;
    let parent_coin = coin(&chain, &c, "congested-parent", 100_000).await;

    // Room for one 110 vB transaction per block.
    chain.set_max_block_vsize(Some(150)).unwrap();
    assert_eq!(chain.max_block_vsize().unwrap(), Some(150));
    let low = chain.submit_transaction(&pay_at(&[&low_coin], 1, 2)).unwrap();
    let high = chain.submit_transaction(&pay_at(&[&high_coin], 1, 20)).unwrap();
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&high).unwrap().is_some());
    assert!(chain.in_mempool(&low).unwrap());
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&low).unwrap().is_some());

    // Ancestor-aware: a 1 sat/vB parent with a 60 sat/vB child (about 30 sat/vB together)
    // goes before a 20 sat/vB transaction, parent first; room for two transactions.
    let answer = post(&chain, "/regtest/max-block-vsize", json!({ "vsize": 230 })).await;
    assert_eq!(answer["vsize"], json!(230));
    let mid = chain.submit_transaction(&pay_at(&[&mid_coin], 1, 20)).unwrap();
    let parent = pay_at(&[&parent_coin], 1, 1);
    let parent_id = chain.submit_transaction(&parent).unwrap();
    let child =
        chain.submit_transaction(&pay_at(&[&output(&parent_coin, &parent, 0)], 1, 60)).unwrap();
    let hash = chain.mine(1).unwrap()[0];
    let block = c.get_block_txids(&hash).await.unwrap();
    assert_eq!(block[1..], [parent_id, child]);
    assert!(chain.in_mempool(&mid).unwrap());

    // Back to unlimited blocks.
    let answer = post(&chain, "/regtest/max-block-vsize", json!({ "vsize": null })).await;
    assert_eq!(answer["vsize"], Value::Null);
    let current: Value = get(&chain, "/regtest/max-block-vsize").await.json().await.unwrap();
    assert_eq!(current["vsize"], Value::Null);
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&mid).unwrap().is_some());
    chain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_and_its_child_can_be_resubmitted() {
    let dir = TempDir::new("drop-resubmit");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let c = client(&chain);
    let funded = coin(&chain, &c, "drop-resubmit", 100_000).await;
    let parent = pay_at(&[&funded], 1, 3);
    let parent_id = chain.submit_transaction(&parent).unwrap();
    let child = pay_at(&[&output(&funded, &parent, 0)], 1, 5);
    let child_id = chain.submit_transaction(&child).unwrap();

    // The mempool entry (library and route) tells a transaction's fee rate.
    let (fee, vsize) = chain.mempool_entry(&parent_id).unwrap().unwrap();
    assert_eq!((fee, vsize), (3 * parent.vsize() as u64, parent.vsize() as u64));
    let entry: Value =
        get(&chain, &format!("/regtest/mempool/{parent_id}")).await.json().await.unwrap();
    assert_eq!(entry["fee"], json!(fee));
    assert_eq!(entry["vsize"], json!(vsize));
    assert_eq!(entry["fee_rate_sat_vb"], json!(3.0));

    // Dropping the parent drops the child; both come back when resubmitted.
    assert!(chain.drop_tx(&parent_id, false).unwrap());
    assert!(!chain.in_mempool(&parent_id).unwrap() && !chain.in_mempool(&child_id).unwrap());
    assert!(chain.mempool_entry(&child_id).unwrap().is_none());
    assert_eq!(get(&chain, &format!("/regtest/mempool/{parent_id}")).await.status(), 404);
    assert!(c.get_tx(&child_id).await.unwrap().is_none());
    assert!(!chain.drop_tx(&parent_id, false).unwrap(), "not in the mempool any more");
    assert_eq!(chain.submit_transaction(&parent).unwrap(), parent_id);
    assert_eq!(chain.submit_transaction(&child).unwrap(), child_id);

    // Through the route, for good: refused from then on.
    let answer =
        post(&chain, "/regtest/drop", json!({ "txid": child_id.to_string(), "forever": true }))
            .await;
    assert_eq!(answer["dropped"], json!(true));
    assert!(chain.submit_transaction(&child).is_err());
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&parent_id).unwrap().is_some());
    assert!(chain.confirmation_height(&child_id).unwrap().is_none());
    chain.shutdown();
}
