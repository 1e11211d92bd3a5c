//! `EsploraChainSource`, `ElectrumChainSource` and `LooperWallet` against the embedded regtest
//! chain (Bitcoin Core's kernel behind an Esplora API and an Electrum server): tip, statuses,
//! history, spends, idempotent broadcast, rejects, fee rates, the same answers from both sources;
//! wallet full scan, batched HTLC funding, send, reload from redb, restore from seed, and its
//! sync over Electrum.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::time::Instant;

use anyhow::Result;
use bitcoin::secp256k1::{Keypair, Secp256k1};
use bitcoin::{Address, Amount, FeeRate, Network, OutPoint, ScriptBuf, Txid};
use std::sync::Arc;

use looper_node::chain::{
    BitcoindChainSource, BitcoindRpc, ChainError, ChainSource, ElectrumChainSource,
    EsploraChainSource, RpcAuth, TxStatus,
};
use looper_node::seed::{Mnemonic, NodeKeys};
use looper_node::store::RedbStore;
use looper_node::wallet::WalletSync;
use looper_node::wallet::{LooperWallet, WalletError};
use looper_regtest::RegtestChain;

const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// A P2TR script of a fresh random key (stands in for an HTLC output).
fn random_p2tr() -> ScriptBuf {
    let secp = Secp256k1::new();
    let kp = Keypair::new(&secp, &mut bitcoin::secp256k1::rand::thread_rng());
    let (xonly, _) = kp.x_only_public_key();
    Address::p2tr(&secp, xonly, None, Network::Regtest).script_pubkey()
}

fn keys() -> NodeKeys {
    NodeKeys::from_mnemonic(&Mnemonic::parse(MNEMONIC, "test").unwrap(), Network::Regtest).unwrap()
}

fn start_chain(dir: &std::path::Path) -> RegtestChain {
    RegtestChain::start(dir.join("chain")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_chain_source() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let chain = start_chain(dir.path());
    let src = EsploraChainSource::new(&chain.esplora_url(), FeeRate::from_sat_per_vb_u32(3))?;

    assert_eq!(src.tip_height().await?, chain.tip_height()?);

    // An output the chain funds and mines.
    let script = random_p2tr();
    let amount = Amount::from_sat(50_000);
    let txid = chain.fund_script(&script, amount)?;
    let tip = chain.tip_height()?;
    assert_eq!(src.tip_height().await?, tip);
    assert_eq!(src.tx_status(&txid).await?, Some(TxStatus::Confirmed { height: tip }));
    let tx = src.get_tx(&txid).await?.expect("funding tx");
    assert_eq!(tx.compute_txid(), txid);

    let found = src.find_output(&script, amount).await?.expect("output");
    assert_eq!(found.outpoint.txid, txid);
    assert_eq!(tx.output[found.outpoint.vout as usize].script_pubkey, script);
    assert_eq!(found.status.confirmations(tip), 1);
    assert_eq!(src.find_output(&script, Amount::from_sat(1)).await?, None);
    assert_eq!(src.script_history(&script).await?.len(), 1);
    assert!(src.script_history(&random_p2tr()).await?.is_empty());
    assert_eq!(src.output_spend(&found.outpoint).await?, None);

    // Unknown transaction.
    let unknown = Txid::from_str(&"11".repeat(32))?;
    assert_eq!(src.tx_status(&unknown).await?, None);
    assert_eq!(src.get_tx(&unknown).await?, None);

    // Broadcasting a known (confirmed) transaction again is fine.
    assert_eq!(src.broadcast(&tx).await?, txid);

    // Fee rates: the regtest chain estimates 1 sat/vB for every target.
    assert_eq!(src.fee_rate(6).await?, FeeRate::from_sat_per_vb_u32(1));
    assert_eq!(src.fee_rate(0).await?, FeeRate::from_sat_per_vb_u32(1));

    // A broken transaction is rejected with the node's reason.
    let mut bad = tx.clone();
    bad.output[0].value = Amount::from_sat(bad.output[0].value.to_sat() + 1);
    let e = src.broadcast(&bad).await.unwrap_err();
    assert!(matches!(e, ChainError::Rejected { .. }), "{e}");
    Ok(())
}

/// What the engine asks, asked of `src` on `chain` (a fresh chain per source): the answers both
/// sources must give.
async fn chain_source_contract(chain: &RegtestChain, src: &dyn ChainSource) -> Result<()> {
    assert_eq!(src.tip_height().await?, chain.tip_height()?);
    let (key, addr) = looper_regtest::test_key("contract")?;
    let spk = addr.script_pubkey();
    let fund = chain.fund_address(&addr, Amount::from_sat(100_000))?;
    let height = chain.tip_height()?;
    assert_eq!(src.tip_height().await?, height);
    assert_eq!(src.tx_status(&fund).await?, Some(TxStatus::Confirmed { height }));
    let funding = src.find_output(&spk, Amount::from_sat(100_000)).await?.expect("the output");
    assert_eq!((funding.outpoint.txid, funding.status), (fund, TxStatus::Confirmed { height }));
    assert_eq!(src.output_spend(&funding.outpoint).await?, None);

    // Spend it to an HTLC-like script: unconfirmed, then confirmed.
    let htlc = random_p2tr();
    let mut spend = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: funding.outpoint,
            sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: Amount::from_sat(99_000),
            script_pubkey: htlc.clone(),
        }],
    };
    let prevout = funding.tx.output[funding.outpoint.vout as usize].clone();
    looper_regtest::sign_p2wpkh(&mut spend, &key, &[(funding.outpoint, prevout)])?;
    let spend_id = src.broadcast(&spend).await?;
    assert_eq!(src.broadcast(&spend).await?, spend_id, "idempotent in the mempool");
    assert_eq!(src.tx_status(&spend_id).await?, Some(TxStatus::Unconfirmed));
    let spent = src.output_spend(&funding.outpoint).await?.expect("the spend");
    assert_eq!((spent.txid, spent.vin, spent.status), (spend_id, 0, TxStatus::Unconfirmed));
    let history = src.script_history(&spk).await?;
    let ids: Vec<Txid> = history.iter().map(|h| h.tx.compute_txid()).collect();
    assert_eq!(ids, vec![spend_id, fund], "newest first");
    let found = src.find_output(&htlc, Amount::from_sat(99_000)).await?.expect("the htlc");
    assert_eq!(found.status, TxStatus::Unconfirmed);
    chain.mine(1)?;
    let height = chain.tip_height()?;
    assert_eq!(src.tx_status(&spend_id).await?, Some(TxStatus::Confirmed { height }));
    let spent = src.output_spend(&funding.outpoint).await?.expect("the spend");
    assert_eq!(spent.status, TxStatus::Confirmed { height });
    assert_eq!(src.broadcast(&spend).await?, spend_id, "idempotent once confirmed");

    // Unknown, refused, evicted.
    let unknown = Txid::from_str(&"11".repeat(32))?;
    assert_eq!(src.tx_status(&unknown).await?, None);
    assert_eq!(src.get_tx(&unknown).await?, None);
    assert!(src.script_history(&random_p2tr()).await?.is_empty());
    let mut bad = spend.clone();
    bad.output[0].value = Amount::from_sat(100_001);
    match src.broadcast(&bad).await.unwrap_err() {
        ChainError::Rejected { reason, .. } => assert!(!reason.is_empty()),
        e => panic!("{e}"),
    }
    let (key2, addr2) = looper_regtest::test_key("contract-2")?;
    let fund2 = chain.fund_address(&addr2, Amount::from_sat(50_000))?;
    let out2 = src.find_output(&addr2.script_pubkey(), Amount::from_sat(50_000)).await?.unwrap();
    let mut child = spend.clone();
    child.input[0].previous_output = out2.outpoint;
    child.output[0].value = Amount::from_sat(49_000);
    let prevout = out2.tx.output[out2.outpoint.vout as usize].clone();
    looper_regtest::sign_p2wpkh(&mut child, &key2, &[(out2.outpoint, prevout)])?;
    let child_id = src.broadcast(&child).await?;
    assert!(chain.drop_tx(&child_id, false)?);
    assert_eq!(src.tx_status(&child_id).await?, None, "evicted");
    assert_eq!(src.get_tx(&child_id).await?, None, "evicted");
    assert_eq!(src.output_spend(&out2.outpoint).await?, None);
    assert_eq!(src.tx_status(&fund2).await?.and_then(|s| s.height()), Some(chain.tip_height()?));

    // Fee rates: 1 sat/vB for every target, then a curve.
    assert_eq!(src.fee_rate(6).await?, FeeRate::from_sat_per_vb_u32(1));
    assert_eq!(src.fee_rate(0).await?, FeeRate::from_sat_per_vb_u32(1));
    chain.set_fee_estimates(Some([(1, 50.0), (6, 20.0), (144, 2.0)].into_iter().collect()))?;
    assert_eq!(src.fee_rate(1).await?, FeeRate::from_sat_per_vb_u32(50));
    assert_eq!(src.fee_rate(6).await?, FeeRate::from_sat_per_vb_u32(20));
    let all = src.fee_estimates().await?;
    assert_eq!(all.rate_for(3), FeeRate::from_sat_per_vb_u32(50));
    assert_eq!(all.rate_for(12), FeeRate::from_sat_per_vb_u32(20));
    assert_eq!(all.rate_for(144), FeeRate::from_sat_per_vb_u32(2));
    chain.set_fee_estimates(None)?;
    Ok(())
}

/// The chain's interfaces.
#[derive(Debug, Clone, Copy)]
enum Source {
    Esplora,
    Electrum,
    Bitcoind,
}

/// A chain source of `kind` on `chain` and the wallet sync through it.
async fn source(chain: &RegtestChain, kind: Source) -> Result<(Arc<dyn ChainSource>, WalletSync)> {
    let fallback = FeeRate::from_sat_per_vb_u32(3);
    Ok(match kind {
        Source::Esplora => {
            let src = EsploraChainSource::new(&chain.esplora_url(), fallback)?;
            let sync = WalletSync::Esplora(src.client().clone());
            (src.into_dyn(), sync)
        }
        Source::Electrum => {
            let src = ElectrumChainSource::connect(&chain.electrum_url(), fallback).await?;
            let sync = WalletSync::Electrum(Arc::clone(src.client()));
            (src.into_dyn(), sync)
        }
        Source::Bitcoind => {
            let auth = RpcAuth::Cookie(chain.rpc_cookie_file().to_path_buf());
            let src = Arc::new(BitcoindChainSource::new(
                BitcoindRpc::new(&chain.rpc_url(), auth)?,
                fallback,
            ));
            src.check(Network::Regtest).await?;
            (src.clone() as Arc<dyn ChainSource>, WalletSync::Bitcoind(src))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_source_answers_alike() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for kind in [Source::Esplora, Source::Electrum, Source::Bitcoind] {
        let chain = RegtestChain::start(dir.path().join(format!("{kind:?}")))?;
        let (src, _) = source(&chain, kind).await?;
        chain_source_contract(&chain, src.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("{kind:?}: {e:#}"))?;
    }
    Ok(())
}

/// The wallet synced over Electrum (bdk_electrum) and over bitcoind's JSON-RPC (blocks and
/// mempool): full scan, receive, a funding through the source, a send, a reorg, and a restore
/// from the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_syncs_over_electrum() -> Result<()> {
    wallet_syncs_over(Source::Electrum).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_syncs_over_bitcoind_rpc() -> Result<()> {
    wallet_syncs_over(Source::Bitcoind).await
}

async fn wallet_syncs_over(kind: Source) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let chain = start_chain(dir.path());
    let (src, sync) = source(&chain, kind).await?;
    let cap = FeeRate::from_sat_per_vb_u32(20);
    let store = RedbStore::open(&dir.path().join("node").join("looper.redb"))?;
    let wallet = LooperWallet::load_or_create(store.database(), &keys(), Network::Regtest, cap)?;
    wallet.sync_with(&sync).await?;
    assert_eq!(wallet.balance()?.total(), Amount::ZERO);
    assert_eq!(wallet.synced_height()?, chain.tip_height()?);

    chain.fund_address(&wallet.new_address()?, Amount::from_sat(1_000_000))?;
    wallet.sync_with(&sync).await?;
    assert_eq!(wallet.balance()?.confirmed, Amount::from_sat(1_000_000));

    let outputs = vec![(random_p2tr(), Amount::from_sat(300_000))];
    let funding = wallet.build_funding_tx(&outputs, FeeRate::from_sat_per_vb_u32(2))?;
    let txid = src.broadcast(&funding.tx).await?;
    wallet.apply_unconfirmed(&funding.tx)?;
    let after = Amount::from_sat(700_000) - funding.fee;
    wallet.sync_with(&sync).await?;
    assert_eq!(wallet.balance()?.total(), after);
    chain.mine(1)?;
    wallet.sync_with(&sync).await?;
    assert_eq!(wallet.balance()?.confirmed, after);

    let (_, outside) = looper_regtest::test_key("outside-electrum")?;
    let sent = wallet
        .send(
            src.as_ref(),
            outside.to_string().parse()?,
            Amount::from_sat(100_000),
            FeeRate::from_sat_per_vb_u32(2),
        )
        .await?;
    assert_eq!(src.tx_status(&sent).await?, Some(TxStatus::Unconfirmed));
    chain.mine(1)?;
    wallet.sync_with(&sync).await?;
    let balance = wallet.balance()?;
    assert_eq!(balance.total(), balance.confirmed);
    assert!(balance.confirmed < after - Amount::from_sat(100_000));

    // A reorg of both blocks: the wallet follows (its transactions are pending again), then
    // they confirm anew.
    chain.reorg(2)?;
    wallet.sync_with(&sync).await?;
    assert_eq!(wallet.synced_height()?, chain.tip_height()?);
    assert_eq!(wallet.balance()?.total(), balance.total());
    assert_eq!(wallet.balance()?.confirmed, Amount::ZERO, "the funded coin is spent, pending");
    assert_eq!(src.tx_status(&txid).await?, Some(TxStatus::Unconfirmed));
    chain.mine(1)?;
    wallet.sync_with(&sync).await?;
    assert_eq!(wallet.balance()?, balance);

    // Payments to addresses 40 and 80 apart: a restored wallet finds the second only once the
    // first moved its look-ahead window (a full scan's stop gap; bitcoind: a second pass).
    let spacing = looper_node::wallet::STOP_GAP - 10;
    let mut far = Vec::new();
    for i in 1..=2 * spacing {
        let addr = wallet.new_address()?;
        if i % spacing == 0 {
            far.push(addr);
        }
    }
    for addr in &far {
        chain.fund_address(addr, Amount::from_sat(10_000))?;
    }
    wallet.sync_with(&sync).await?;
    let balance = wallet.balance()?;
    assert_eq!(balance.confirmed, balance.total());

    // Restore from the seed alone: the full scan (or the block scan) finds the same funds.
    let other = RedbStore::open(&dir.path().join("restored").join("looper.redb"))?;
    let restored = LooperWallet::load_or_create(other.database(), &keys(), Network::Regtest, cap)?;
    restored.sync_with(&sync).await?;
    assert_eq!(restored.balance()?.confirmed, balance.confirmed, "{kind:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_fund_batch_send_reload_restore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let chain = start_chain(dir.path());
    let src = EsploraChainSource::new(&chain.esplora_url(), FeeRate::from_sat_per_vb_u32(2))?;
    let db_path = dir.path().join("node").join("looper.redb");
    let cap = FeeRate::from_sat_per_vb_u32(20);

    let store = RedbStore::open(&db_path)?;
    let wallet = LooperWallet::load_or_create(store.database(), &keys(), Network::Regtest, cap)?;
    let t = Instant::now();
    wallet.sync(src.client()).await?;
    eprintln!("first full scan (empty wallet): {:?}", t.elapsed());
    assert_eq!(wallet.balance()?.total(), Amount::ZERO);

    // Receive 0.01 BTC, confirmed.
    let addr = wallet.new_address()?;
    chain.fund_address(&addr, Amount::from_sat(1_000_000))?;
    let t = Instant::now();
    wallet.sync(src.client()).await?;
    eprintln!("incremental sync: {:?}", t.elapsed());
    assert_eq!(wallet.balance()?.confirmed, Amount::from_sat(1_000_000));
    assert_eq!(wallet.synced_height()?, chain.tip_height()?);

    // Fund three HTLC-like outputs in one transaction (batching), at a rate above the cap.
    let outputs = vec![
        (random_p2tr(), Amount::from_sat(100_000)),
        (random_p2tr(), Amount::from_sat(200_000)),
        (random_p2tr(), Amount::from_sat(150_000)),
    ];
    let funding = wallet.build_funding_tx(&outputs, FeeRate::from_sat_per_vb_u32(500))?;
    assert_eq!(funding.fee_rate, cap, "fee rate capped");
    assert_eq!(funding.vouts.len(), 3);
    for ((script, amount), vout) in outputs.iter().zip(&funding.vouts) {
        let out = &funding.tx.output[*vout as usize];
        assert_eq!(&out.script_pubkey, script);
        assert_eq!(out.value, *amount);
    }
    let vsize = funding.tx.vsize() as u64;
    assert!(funding.fee.to_sat() >= 20 * vsize, "fee {} vsize {vsize}", funding.fee);
    let txid = src.broadcast(&funding.tx).await?;
    // Idempotent: the same transaction again (now in the mempool).
    assert_eq!(src.broadcast(&funding.tx).await?, txid);
    assert_eq!(src.tx_status(&txid).await?, Some(TxStatus::Unconfirmed));
    wallet.apply_unconfirmed(&funding.tx)?;
    let expected_after = Amount::from_sat(1_000_000 - 450_000) - funding.fee;
    assert_eq!(wallet.balance()?.total(), expected_after);

    // Each funded output is findable by script and amount while unconfirmed, then confirmed.
    let (s0, a0) = &outputs[0];
    let found = src.find_output(s0, *a0).await?.expect("htlc output");
    assert_eq!(found.status, TxStatus::Unconfirmed);
    assert_eq!(found.outpoint, OutPoint { txid, vout: funding.vouts[0] });
    chain.mine(1)?;
    let tip = chain.tip_height()?;
    assert_eq!(src.tx_status(&txid).await?, Some(TxStatus::Confirmed { height: tip }));
    wallet.sync(src.client()).await?;
    assert_eq!(wallet.balance()?.confirmed, expected_after);

    // Send to an outside address; the spent wallet output reports its spender.
    let before: Vec<OutPoint> = wallet.list_unspent()?.iter().map(|u| u.outpoint).collect();
    let (_, outside) = looper_regtest::test_key("outside")?;
    let sent = wallet
        .send(
            &src,
            outside.to_string().parse()?,
            Amount::from_sat(100_000),
            FeeRate::from_sat_per_vb_u32(2),
        )
        .await?;
    let mut spender_seen = false;
    for op in &before {
        if let Some(spend) = src.output_spend(op).await? {
            assert_eq!(spend.txid, sent);
            assert_eq!(spend.status, TxStatus::Unconfirmed);
            spender_seen = true;
        }
    }
    assert!(spender_seen);
    // A mainnet address is refused.
    let e = wallet
        .send(
            &src,
            "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr".parse()?,
            Amount::from_sat(1_000),
            FeeRate::from_sat_per_vb_u32(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, WalletError::WrongNetwork { .. }), "{e}");
    chain.mine(1)?;
    wallet.sync(src.client()).await?;
    let balance = wallet.balance()?;
    assert!(balance.confirmed < expected_after - Amount::from_sat(100_000));
    assert_eq!(balance.total(), balance.confirmed);

    // Reload from the redb file: same balance before any sync.
    drop(wallet);
    drop(store);
    let store = RedbStore::open(&db_path)?;
    let wallet = LooperWallet::load_or_create(store.database(), &keys(), Network::Regtest, cap)?;
    assert_eq!(wallet.balance()?, balance);

    // Restore from the seed alone into an empty data dir: the full scan finds the same funds.
    let other = RedbStore::open(&dir.path().join("restored").join("looper.redb"))?;
    let restored = LooperWallet::load_or_create(other.database(), &keys(), Network::Regtest, cap)?;
    let t = Instant::now();
    restored.sync(src.client()).await?;
    eprintln!("restore full scan: {:?}", t.elapsed());
    assert_eq!(restored.balance()?.confirmed, balance.confirmed);
    Ok(())
}

/// Issue 14: a funding stuck at a low fee rate is lifted by a child spending its change (CPFP):
/// the pair reaches the target rate, survives a mempool minimum fee above the parent's own rate,
/// a higher child replaces the first (BIP-125), and both confirm with the wallet's balance right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_pays_for_a_stuck_funding() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let chain = start_chain(dir.path());
    let src = EsploraChainSource::new(&chain.esplora_url(), FeeRate::from_sat_per_vb_u32(2))?;
    let store = RedbStore::open(&dir.path().join("node").join("looper.redb"))?;
    let cap = FeeRate::from_sat_per_vb_u32(100);
    let wallet = LooperWallet::load_or_create(store.database(), &keys(), Network::Regtest, cap)?;
    chain.fund_address(&wallet.new_address()?, Amount::from_sat(1_000_000))?;
    wallet.sync(src.client()).await?;

    let outputs = vec![(random_p2tr(), Amount::from_sat(200_000))];
    let funding = wallet.build_funding_tx(&outputs, FeeRate::from_sat_per_vb_u32(1))?;
    let parent = funding.tx.compute_txid();
    src.broadcast(&funding.tx).await?;
    wallet.apply_unconfirmed(&funding.tx)?;
    // Already at 1 sat/vB: nothing to do.
    assert!(wallet.build_cpfp(&funding.tx, None, FeeRate::from_sat_per_vb_u32(1))?.is_none());

    let package = |a: Txid, b: Txid| -> Result<f64> {
        let (fa, va) = chain.mempool_entry(&a)?.expect("parent in the mempool");
        let (fb, vb) = chain.mempool_entry(&b)?.expect("child in the mempool");
        Ok((fa + fb) as f64 / (va + vb) as f64)
    };
    let first = wallet
        .build_cpfp(&funding.tx, None, FeeRate::from_sat_per_vb_u32(10))?
        .expect("a child for 10 sat/vB");
    src.broadcast(&first.tx).await?;
    let rate = package(parent, first.tx.compute_txid())?;
    assert!((10.0..10.5).contains(&rate), "package rate {rate}");

    // A spike above the parent's own rate: the child keeps it in the mempool.
    chain.set_min_fee_rate(5.0)?;
    assert!(chain.in_mempool(&parent)?);

    // Higher again: the new child replaces the first.
    let second = wallet
        .build_cpfp(&funding.tx, Some(&first.tx), FeeRate::from_sat_per_vb_u32(20))?
        .expect("a child for 20 sat/vB");
    src.broadcast(&second.tx).await?;
    assert!(!chain.in_mempool(&first.tx.compute_txid())?, "the first child was replaced");
    let rate = package(parent, second.tx.compute_txid())?;
    assert!((20.0..20.5).contains(&rate), "package rate {rate}");

    chain.mine(1)?;
    assert!(chain.confirmation_height(&parent)?.is_some());
    assert!(chain.confirmation_height(&second.tx.compute_txid())?.is_some());
    wallet.sync(src.client()).await?;
    let expected = Amount::from_sat(1_000_000 - 200_000) - funding.fee - second.fee;
    assert_eq!(wallet.balance()?.confirmed, expected);
    chain.set_min_fee_rate(0.0)?;
    Ok(())
}
