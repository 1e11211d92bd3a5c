//! The chain behind its Esplora API: shapes parsed by esplora-client 0.12, mempool rejects
//! with Bitcoin Core's reasons, reorgs and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr;

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, OutPoint, Sequence, Txid};
use common::{spend, TempDir};
use esplora_client::{AsyncClient, Builder};
use looper_regtest::{test_key, Error, RegtestChain};

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

    // Double spend: first seen wins; after confirmation the input is gone.
    let first = spend(&key, prev, &spk, value, &dest, out, LockTime::ZERO, Sequence::MAX);
    c.broadcast(&first).await.unwrap();
    assert!(chain.in_mempool(&first.compute_txid()).unwrap());
    let second = spend(
        &key,
        prev,
        &spk,
        value,
        &dest,
        Amount::from_sat(980_000),
        LockTime::ZERO,
        Sequence::MAX,
    );
    let reason = reject_reason(c.broadcast(&second).await.unwrap_err());
    assert!(reason.contains("txn-mempool-conflict"), "{reason}");
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
