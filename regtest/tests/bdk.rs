//! A BDK 2.x wallet (bdk_esplora) syncs from the chain, sends to a taproot address, and
//! follows a two-block reorg.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bdk_esplora::EsploraAsyncExt;
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::bip32::Xpriv;
use bitcoin::key::{Keypair, Secp256k1};
use bitcoin::{Address, Amount, FeeRate, Network};
use common::TempDir;
use looper_regtest::RegtestChain;

async fn sync(wallet: &mut Wallet, client: &esplora_client::AsyncClient) {
    let request = wallet.start_sync_with_revealed_spks().build();
    let update = client.sync(request, 2).await.unwrap();
    wallet.apply_update(update).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdk_wallet_syncs_sends_to_taproot_and_follows_a_reorg() {
    let dir = TempDir::new("bdk");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let client = esplora_client::Builder::new(&chain.esplora_url()).build_async().unwrap();

    let xprv = Xpriv::new_master(Network::Regtest, &[7u8; 32]).unwrap();
    let mut wallet =
        Wallet::create(format!("tr({xprv}/86h/1h/0h/0/*)"), format!("tr({xprv}/86h/1h/0h/1/*)"))
            .network(Network::Regtest)
            .create_wallet_no_persist()
            .unwrap();
    let addr = wallet.reveal_next_address(KeychainKind::External).address;
    chain.fund_address(&addr, Amount::from_sat(1_000_000)).unwrap();

    let request = wallet.start_full_scan().build();
    let update = client.full_scan(request, 10, 2).await.unwrap();
    wallet.apply_update(update).unwrap();
    assert_eq!(wallet.balance().confirmed, Amount::from_sat(1_000_000));
    assert_eq!(wallet.latest_checkpoint().hash(), chain.tip_hash().unwrap());

    // Send to a taproot address outside the wallet.
    let secp = Secp256k1::new();
    let kp = Keypair::from_seckey_slice(&secp, &[9u8; 32]).unwrap();
    let dest = Address::p2tr(&secp, kp.x_only_public_key().0, None, Network::Regtest);
    let mut builder = wallet.build_tx();
    builder
        .add_recipient(dest.script_pubkey(), Amount::from_sat(300_000))
        .fee_rate(FeeRate::from_sat_per_vb(2).unwrap());
    let mut psbt = builder.finish().unwrap();
    assert!(wallet.sign(&mut psbt, SignOptions::default()).unwrap());
    let tx = psbt.extract_tx().unwrap();
    let txid = tx.compute_txid();
    client.broadcast(&tx).await.unwrap();
    assert!(chain.in_mempool(&txid).unwrap());
    chain.mine(1).unwrap();
    sync(&mut wallet, &client).await;
    assert!(wallet.get_tx(txid).unwrap().chain_position.is_confirmed());
    let out = client
        .get_tx_info(&txid)
        .await
        .unwrap()
        .unwrap()
        .vout
        .into_iter()
        .find(|o| o.scriptpubkey == dest.script_pubkey())
        .unwrap();
    assert_eq!(out.value, 300_000);

    // Two-block reorg: the send is unconfirmed again, then re-mined.
    chain.mine(1).unwrap();
    sync(&mut wallet, &client).await;
    chain.reorg(2).unwrap();
    sync(&mut wallet, &client).await;
    assert_eq!(wallet.latest_checkpoint().hash(), chain.tip_hash().unwrap());
    assert!(!wallet.get_tx(txid).unwrap().chain_position.is_confirmed());
    chain.mine(1).unwrap();
    sync(&mut wallet, &client).await;
    assert!(wallet.get_tx(txid).unwrap().chain_position.is_confirmed());
    assert_eq!(
        wallet.balance().confirmed,
        Amount::from_sat(1_000_000 - 300_000) - wallet.calculate_fee(&tx).unwrap()
    );
    chain.shutdown();
}
