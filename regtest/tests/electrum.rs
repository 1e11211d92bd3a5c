//! The chain's Electrum server, read with the clients ldk-node and BDK use: electrum-client
//! (headers, histories, unspent outputs, balances, transactions, real merkle proofs checked
//! against the headers, broadcast, fee estimates, batches, notifications) and a bdk_electrum
//! wallet (full scan, sync, send, a reorg). Same chain and mempool as the Esplora API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use bdk_electrum::BdkElectrumClient;
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::absolute::LockTime;
use bitcoin::bip32::Xpriv;
use bitcoin::hashes::Hash;
use bitcoin::hex::DisplayHex;
use bitcoin::key::{Keypair, Secp256k1};
use bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Sequence, Transaction};
use common::{spend, wait_for, TempDir};
use electrum_client::{Client, ElectrumApi};
use looper_regtest::{test_key, RegtestChain};
use serde_json::{json, Value};

fn client(chain: &RegtestChain) -> Client {
    Client::new(&chain.electrum_url()).unwrap()
}

/// Funds three keys' addresses in one block (so that the merkle branches have levels): the
/// first from the chain's coins, the two others by a chain of spends from it, each with change
/// back to the first. Returns the keys, the two spends' txids and the block's height.
fn fund_three(
    chain: &RegtestChain,
) -> (Vec<(bitcoin::secp256k1::SecretKey, Address)>, Vec<bitcoin::Txid>, u32) {
    let keys: Vec<_> = ["e1", "e2", "e3"].iter().map(|s| test_key(s).unwrap()).collect();
    let (k0, a0) = &keys[0];
    let spk0 = a0.script_pubkey();
    let seed = chain.fund_address(a0, Amount::from_sat(10_000_000)).unwrap();
    let seed_tx = client(chain).transaction_get(&seed).unwrap();
    let vout = seed_tx.output.iter().position(|o| o.script_pubkey == spk0).unwrap();
    let mut prev = (OutPoint::new(seed, vout as u32), seed_tx.output[vout].value);
    let mut txids = Vec::new();
    for (_, addr) in keys.iter().skip(1) {
        let change = prev.1 - Amount::from_sat(1_000_000) - Amount::from_sat(500);
        let mut t = spend(
            k0,
            prev.0,
            &spk0,
            prev.1,
            &addr.script_pubkey(),
            Amount::from_sat(1_000_000),
            LockTime::ZERO,
            Sequence::ENABLE_RBF_NO_LOCKTIME,
        );
        t.output.push(bitcoin::TxOut { value: change, script_pubkey: spk0.clone() });
        let prevout = bitcoin::TxOut { value: prev.1, script_pubkey: spk0.clone() };
        looper_regtest::sign_p2wpkh(&mut t, k0, &[(prev.0, prevout)]).unwrap();
        let txid = chain.submit_transaction(&t).unwrap();
        txids.push(txid);
        prev = (OutPoint::new(txid, 1), change);
    }
    chain.mine(1).unwrap();
    (keys, txids, chain.tip_height().unwrap())
}

#[test]
fn electrum_client_reads_the_chain() {
    let dir = TempDir::new("electrum-read");
    let chain = RegtestChain::start(dir.path()).unwrap();
    assert!(chain.electrum_url().starts_with("tcp://127.0.0.1:"));
    let c = client(&chain);

    // Server and headers.
    let version = c.raw_call("server.version", [electrum_client::Param::String("t".into())]);
    assert_eq!(version.unwrap()[1], "1.4");
    c.ping().unwrap();
    let features = c.server_features().unwrap();
    let genesis = chain.block_hash(0).unwrap().unwrap();
    assert_eq!(features.genesis_hash.to_lower_hex_string(), genesis.to_string());
    let tip = c.block_headers_subscribe().unwrap();
    assert_eq!(tip.height as u32, chain.tip_height().unwrap());
    assert_eq!(tip.header.block_hash(), chain.tip_hash().unwrap());
    for h in [0, 1, 50, tip.height as u32] {
        assert_eq!(
            c.block_header(h as usize).unwrap().block_hash(),
            chain.block_hash(h).unwrap().unwrap()
        );
    }
    let headers = c.block_headers(95, 10).unwrap();
    assert_eq!(headers.count, 7, "95..=101");
    assert_eq!(headers.max, 2016);
    assert_eq!(headers.headers[6].block_hash(), chain.tip_hash().unwrap());
    assert!(matches!(c.block_header(1000).unwrap_err(), electrum_client::Error::Protocol(_)));

    // Histories, unspent outputs, balances, transactions and merkle proofs.
    let (keys, txids, height) = fund_three(&chain);
    let c = client(&chain);
    let spk1 = keys[1].1.script_pubkey();
    let history = c.script_get_history(&spk1).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].tx_hash, txids[0]);
    assert_eq!(history[0].height, height as i32);
    let unspent = c.script_list_unspent(&spk1).unwrap();
    assert_eq!(
        (unspent.len(), unspent[0].value, unspent[0].height),
        (1, 1_000_000, height as usize)
    );
    assert_eq!(c.script_get_balance(&spk1).unwrap().confirmed, 1_000_000);
    // The first key's script: its funding, then two spends (each with change back to it).
    let spk0 = keys[0].1.script_pubkey();
    let h0 = c.script_get_history(&spk0).unwrap();
    assert_eq!(h0.len(), 3, "{h0:?}");
    assert!(h0.windows(2).all(|w| w[0].height <= w[1].height), "blockchain order");
    let header = c.block_header(height as usize).unwrap();
    for txid in &txids {
        let tx = c.transaction_get(txid).unwrap();
        assert_eq!(tx.compute_txid(), *txid);
        let proof = c.transaction_get_merkle(txid, height as usize).unwrap();
        assert_eq!(proof.block_height, height as usize);
        assert!(!proof.merkle.is_empty());
        assert!(electrum_client::utils::validate_merkle_proof(txid, &header.merkle_root, &proof));
        assert_eq!(c.txid_from_pos(height as usize, proof.pos).unwrap(), *txid);
    }
    // Wrong height, unknown transaction: protocol errors.
    assert!(c.transaction_get_merkle(&txids[0], height as usize - 1).is_err());
    let unknown = bitcoin::Txid::from_byte_array([7; 32]);
    assert!(matches!(
        c.transaction_get(&unknown).unwrap_err(),
        electrum_client::Error::Protocol(_)
    ));

    // Batches.
    let spks: Vec<_> = keys.iter().map(|(_, a)| a.script_pubkey()).collect();
    let histories = c.batch_script_get_history(spks.iter().map(|s| s.as_script())).unwrap();
    assert_eq!(histories.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 1, 1]);
    let headers = c.batch_block_header([1u32, 2, height]).unwrap();
    assert_eq!(headers[2].block_hash(), chain.tip_hash().unwrap());
    let txs = c.batch_transaction_get(&txids).unwrap();
    assert_eq!(txs.len(), 2);

    // Fee estimates in BTC/kvB, as `/fee-estimates` serves them.
    assert_eq!(c.estimate_fee(6).unwrap(), 0.00001);
    assert_eq!(c.relay_fee().unwrap(), 0.00001);
    chain.set_fee_estimates(Some(BTreeMap::from([(1, 50.0), (6, 20.0)]))).unwrap();
    assert_eq!(
        c.batch_estimate_fee([1usize, 3, 6, 144]).unwrap(),
        vec![0.0005, 0.0005, 0.0002, 0.0002]
    );
    chain.set_min_fee_rate(30.0).unwrap();
    assert_eq!(c.estimate_fee(6).unwrap(), 0.0003);
    assert_eq!(c.relay_fee().unwrap(), 0.0003);
}

#[test]
fn electrum_broadcast_mempool_and_notifications() {
    let dir = TempDir::new("electrum-mempool");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let (key, addr) = test_key("electrum-bc").unwrap();
    let fund = chain.fund_address(&addr, Amount::from_sat(200_000)).unwrap();
    let c = client(&chain);
    let ftx = c.transaction_get(&fund).unwrap();
    let vout = ftx.output.iter().position(|o| o.script_pubkey == addr.script_pubkey()).unwrap();
    let prev = OutPoint::new(fund, vout as u32);

    // Subscriptions: the tip and the destination script.
    let tip = c.block_headers_subscribe().unwrap();
    let (_, dest) = test_key("electrum-bc-dest").unwrap();
    let dest_spk = dest.script_pubkey();
    assert_eq!(c.script_subscribe(&dest_spk).unwrap(), None, "no history yet");

    let tx = spend(
        &key,
        prev,
        &addr.script_pubkey(),
        Amount::from_sat(200_000),
        &dest_spk,
        Amount::from_sat(199_000),
        LockTime::ZERO,
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    let txid = c.transaction_broadcast(&tx).unwrap();
    assert_eq!(txid, tx.compute_txid());
    assert!(chain.in_mempool(&txid).unwrap(), "one mempool for both APIs");
    // Again: already in the mempool is success (as Bitcoin Core's sendrawtransaction).
    assert_eq!(c.transaction_broadcast(&tx).unwrap(), txid);
    let history = c.script_get_history(&dest_spk).unwrap();
    assert_eq!((history.len(), history[0].height, history[0].fee), (1, 0, Some(1_000)));
    assert_eq!(c.script_get_balance(&dest_spk).unwrap().unconfirmed, 199_000);
    assert_eq!(c.script_get_balance(&addr.script_pubkey()).unwrap().unconfirmed, -200_000);
    let unspent = c.script_list_unspent(&dest_spk).unwrap();
    assert_eq!((unspent.len(), unspent[0].height), (1, 0));

    // A child of the mempool transaction: height -1.
    let (_, dest2) = test_key("electrum-bc-dest2").unwrap();
    let child = spend(
        &test_key("electrum-bc-dest").unwrap().0,
        OutPoint::new(txid, 0),
        &dest_spk,
        Amount::from_sat(199_000),
        &dest2.script_pubkey(),
        Amount::from_sat(198_000),
        LockTime::ZERO,
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    c.transaction_broadcast(&child).unwrap();
    let history = c.script_get_history(&dest2.script_pubkey()).unwrap();
    assert_eq!(history[0].height, -1);

    // Refused: a non-final transaction, with Bitcoin Core's reason.
    let late = spend(
        &test_key("electrum-bc-dest2").unwrap().0,
        OutPoint::new(child.compute_txid(), 0),
        &dest2.script_pubkey(),
        Amount::from_sat(198_000),
        &addr.script_pubkey(),
        Amount::from_sat(197_000),
        LockTime::from_height(10_000).unwrap(),
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    match c.transaction_broadcast(&late).unwrap_err() {
        electrum_client::Error::Protocol(e) => assert_eq!(e["message"], "non-final", "{e}"),
        other => panic!("{other}"),
    }

    // Notifications: the script's status changed (mempool), then a new tip and a new status.
    let status = wait_for("the script notification", Duration::from_secs(10), || {
        c.ping().unwrap();
        c.script_pop(&dest_spk).unwrap()
    });
    chain.mine(1).unwrap();
    let header = wait_for("the header notification", Duration::from_secs(10), || {
        c.ping().unwrap();
        c.block_headers_pop().unwrap()
    });
    assert_eq!(header.height, tip.height + 1);
    assert_eq!(header.header.block_hash(), chain.tip_hash().unwrap());
    let confirmed = wait_for("the second script notification", Duration::from_secs(10), || {
        c.ping().unwrap();
        c.script_pop(&dest_spk).unwrap()
    });
    assert_ne!(status, confirmed);
    assert!(c.script_unsubscribe(&dest_spk).unwrap());
    assert_eq!(c.script_get_history(&dest_spk).unwrap()[0].height, tip.height as i32 + 1);
}

/// Raw JSON-RPC on the socket: a batch as one JSON array, notifications (no id), errors.
#[test]
fn electrum_raw_json_rpc() {
    let dir = TempDir::new("electrum-raw");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let stream = std::net::TcpStream::connect(chain.electrum_addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = |line: &str| -> Value {
        writer.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    let batch = ask(
        r#"[{"jsonrpc":"2.0","id":1,"method":"server.ping","params":[]},{"jsonrpc":"2.0","method":"server.ping","params":[]},{"jsonrpc":"2.0","id":"b","method":"blockchain.headers.subscribe","params":[]}]"#,
    );
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 2, "the notification is not answered: {batch:?}");
    assert_eq!(batch[0], json!({ "jsonrpc": "2.0", "id": 1, "result": null }));
    assert_eq!(batch[1]["id"], "b");
    assert_eq!(batch[1]["result"]["height"], 101);
    assert_eq!(ask("{not json")["error"]["code"], -32700);
    assert_eq!(ask(r#"{"id":2,"method":"no.such","params":[]}"#)["error"]["code"], -32601);
    assert_eq!(
        ask(r#"{"id":3,"method":"blockchain.scripthash.get_history","params":["zz"]}"#)["error"]
            ["code"],
        -32602
    );
    assert_eq!(ask("[]")["error"]["code"], -32600);
}

/// A BDK wallet synced through bdk_electrum (which checks every confirmation's merkle proof
/// against the header): full scan, send to taproot, sync, a two-block reorg.
#[test]
fn bdk_electrum_wallet_syncs_sends_and_follows_a_reorg() {
    let dir = TempDir::new("electrum-bdk");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let client = BdkElectrumClient::new(client(&chain));
    let sync = |wallet: &mut Wallet| {
        let request = wallet.start_sync_with_revealed_spks().build();
        let update = client.sync(request, 10, true).unwrap();
        wallet.apply_update(update).unwrap();
    };

    let xprv = Xpriv::new_master(Network::Regtest, &[8u8; 32]).unwrap();
    let mut wallet =
        Wallet::create(format!("tr({xprv}/86h/1h/0h/0/*)"), format!("tr({xprv}/86h/1h/0h/1/*)"))
            .network(Network::Regtest)
            .create_wallet_no_persist()
            .unwrap();
    let addr = wallet.reveal_next_address(KeychainKind::External).address;
    chain.fund_address(&addr, Amount::from_sat(1_000_000)).unwrap();
    let request = wallet.start_full_scan().build();
    let update = client.full_scan(request, 10, 10, true).unwrap();
    wallet.apply_update(update).unwrap();
    assert_eq!(wallet.balance().confirmed, Amount::from_sat(1_000_000));
    assert_eq!(wallet.latest_checkpoint().hash(), chain.tip_hash().unwrap());

    let secp = Secp256k1::new();
    let kp = Keypair::from_seckey_slice(&secp, &[9u8; 32]).unwrap();
    let dest = Address::p2tr(&secp, kp.x_only_public_key().0, None, Network::Regtest);
    let mut builder = wallet.build_tx();
    builder
        .add_recipient(dest.script_pubkey(), Amount::from_sat(300_000))
        .fee_rate(FeeRate::from_sat_per_vb(2).unwrap());
    let mut psbt = builder.finish().unwrap();
    assert!(wallet.sign(&mut psbt, SignOptions::default()).unwrap());
    let tx: Transaction = psbt.extract_tx().unwrap();
    let txid = client.transaction_broadcast(&tx).unwrap();
    sync(&mut wallet);
    assert!(!wallet.get_tx(txid).unwrap().chain_position.is_confirmed());
    chain.mine(1).unwrap();
    sync(&mut wallet);
    assert!(wallet.get_tx(txid).unwrap().chain_position.is_confirmed());
    // The fee is known: the previous outputs came through the server too.
    assert!(wallet.calculate_fee(&tx).is_ok());

    chain.mine(1).unwrap();
    sync(&mut wallet);
    chain.reorg(2).unwrap();
    sync(&mut wallet);
    assert_eq!(wallet.latest_checkpoint().hash(), chain.tip_hash().unwrap());
    assert!(!wallet.get_tx(txid).unwrap().chain_position.is_confirmed());
    chain.mine(1).unwrap();
    sync(&mut wallet);
    let position = wallet.get_tx(txid).unwrap().chain_position;
    assert!(position.is_confirmed());
    assert_eq!(wallet.latest_checkpoint().hash(), chain.tip_hash().unwrap());
}
