//! Two ldk-node 0.7 nodes on the embedded chain: fund, open a channel, pay a BOLT11 invoice,
//! close cooperatively (the close confirms), and follow a two-block reorg; both on the Esplora
//! API, then one on the Electrum server and the other on Bitcoin Core's JSON-RPC (cookie
//! authentication).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Network, OutPoint};
use common::{free_port, wait_for, TempDir};
use ldk_node::config::{BackgroundSyncConfig, ElectrumSyncConfig, EsploraSyncConfig};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::{Builder, Event, Node};
use looper_regtest::RegtestChain;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Which of the chain's interfaces a node reads.
#[derive(Clone, Copy)]
enum Source {
    Esplora,
    Electrum,
    BitcoindRpc,
}

fn build_node(
    chain: &RegtestChain,
    dir: &TempDir,
    name: &str,
    seed: u8,
    source: Source,
) -> (Node, SocketAddress) {
    let port = free_port();
    let addr = SocketAddress::from_str(&format!("127.0.0.1:{port}")).unwrap();
    let background = BackgroundSyncConfig {
        onchain_wallet_sync_interval_secs: 10,
        lightning_wallet_sync_interval_secs: 10,
        fee_rate_cache_update_interval_secs: 10,
    };
    let mut builder = Builder::new();
    builder.set_network(Network::Regtest);
    builder.set_storage_dir_path(dir.sub(name).to_string_lossy().into_owned());
    builder.set_entropy_seed_bytes([seed; 64]);
    builder.set_listening_addresses(vec![addr.clone()]).unwrap();
    match source {
        Source::Esplora => {
            let sync = EsploraSyncConfig { background_sync_config: Some(background) };
            builder.set_chain_source_esplora(chain.esplora_url(), Some(sync));
        }
        Source::Electrum => {
            let sync = ElectrumSyncConfig { background_sync_config: Some(background) };
            builder.set_chain_source_electrum(chain.electrum_url(), Some(sync));
        }
        Source::BitcoindRpc => {
            // The cookie, read from its file as a client of bitcoind does.
            let cookie = std::fs::read_to_string(chain.rpc_cookie_file()).unwrap();
            let (user, password) = cookie.trim().split_once(':').unwrap();
            let rpc = chain.rpc_addr();
            builder.set_chain_source_bitcoind_rpc(
                rpc.ip().to_string(),
                rpc.port(),
                user.to_string(),
                password.to_string(),
            );
        }
    }
    let node = builder.build().unwrap();
    node.start().unwrap();
    (node, addr)
}

/// Waits for an event matching `pred`, acknowledging every event on the way.
fn expect_event<T>(node: &Node, what: &str, mut pred: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(event) = node.next_event() {
            node.event_handled().unwrap();
            if let Some(v) = pred(&event) {
                return v;
            }
            continue;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sync(nodes: &[&Node]) {
    for n in nodes {
        n.sync_wallets().unwrap();
    }
}

#[test]
fn ldk_node_channel_payment_close_and_reorg() {
    channel_payment_close_and_reorg("ldk", Source::Esplora, Source::Esplora);
}

#[test]
fn ldk_node_over_electrum_and_bitcoind_rpc() {
    channel_payment_close_and_reorg("ldk-el-rpc", Source::Electrum, Source::BitcoindRpc);
}

fn channel_payment_close_and_reorg(name: &str, source_a: Source, source_b: Source) {
    let dir = TempDir::new(name);
    let chain = RegtestChain::start(dir.sub("chain")).unwrap();
    let (a, _a_addr) = build_node(&chain, &dir, "a", 1, source_a);
    let (b, b_addr) = build_node(&chain, &dir, "b", 2, source_b);

    // Fund both (b needs an anchor reserve to accept the channel).
    let fund_a = a.onchain_payment().new_address().unwrap();
    let fund_b = b.onchain_payment().new_address().unwrap();
    chain.fund_address(&fund_a, Amount::from_sat(2_000_000)).unwrap();
    chain.fund_address(&fund_b, Amount::from_sat(200_000)).unwrap();
    sync(&[&a, &b]);
    wait_for("funded wallets", TIMEOUT, || {
        sync(&[&a, &b]);
        (a.list_balances().spendable_onchain_balance_sats >= 2_000_000
            && b.list_balances().spendable_onchain_balance_sats >= 200_000)
            .then_some(())
    });

    // Open a channel a -> b.
    let user_channel_id = a.open_channel(b.node_id(), b_addr, 1_000_000, None, None).unwrap();
    let funding_txo = expect_event(&a, "ChannelPending", |e| match e {
        Event::ChannelPending { funding_txo, .. } => Some(*funding_txo),
        _ => None,
    });
    wait_for("funding tx in the mempool", TIMEOUT, || {
        chain.in_mempool(&funding_txo.txid).unwrap().then_some(())
    });
    chain.mine(6).unwrap();
    sync(&[&a, &b]);
    expect_event(&a, "ChannelReady on a", |e| {
        matches!(e, Event::ChannelReady { .. }).then_some(())
    });
    expect_event(&b, "ChannelReady on b", |e| {
        matches!(e, Event::ChannelReady { .. }).then_some(())
    });

    // BOLT11 payment b <- a.
    let desc = Bolt11InvoiceDescription::Direct(Description::new("regtest".into()).unwrap());
    let invoice = b.bolt11_payment().receive(50_000_000, &desc, 3600).unwrap();
    let payment_id = a.bolt11_payment().send(&invoice, None).unwrap();
    expect_event(&a, "PaymentSuccessful", |e| match e {
        Event::PaymentSuccessful { payment_id: Some(id), .. } if *id == payment_id => Some(()),
        Event::PaymentFailed { reason, .. } => panic!("payment failed: {reason:?}"),
        _ => None,
    });
    let received = expect_event(&b, "PaymentReceived", |e| match e {
        Event::PaymentReceived { amount_msat, .. } => Some(*amount_msat),
        _ => None,
    });
    assert_eq!(received, 50_000_000);

    // Cooperative close; the closing transaction confirms.
    let before = a.list_balances().total_onchain_balance_sats;
    a.close_channel(&user_channel_id, b.node_id()).unwrap();
    expect_event(&a, "ChannelClosed on a", |e| {
        matches!(e, Event::ChannelClosed { .. }).then_some(())
    });
    expect_event(&b, "ChannelClosed on b", |e| {
        matches!(e, Event::ChannelClosed { .. }).then_some(())
    });
    let funding: OutPoint = funding_txo;
    let close_txid = wait_for("closing tx", TIMEOUT, || chain.outspend(&funding).unwrap());
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&close_txid).unwrap().is_some());
    wait_for("closing output in a's wallet", TIMEOUT, || {
        sync(&[&a, &b]);
        (a.list_balances().total_onchain_balance_sats > before).then_some(())
    });

    // Two-block reorg: a funding confirmed in the replaced blocks goes back to unconfirmed,
    // and both nodes follow the new tip.
    let extra = a.onchain_payment().new_address().unwrap();
    let extra_txid = chain.fund_address(&extra, Amount::from_sat(123_456)).unwrap();
    chain.mine(1).unwrap();
    sync(&[&a, &b]);
    let old_tip = chain.tip_hash().unwrap();
    assert_eq!(a.status().current_best_block.block_hash, old_tip);
    chain.reorg(2).unwrap();
    assert!(chain.in_mempool(&extra_txid).unwrap());
    let new_tip = chain.tip_hash().unwrap();
    wait_for("nodes on the new tip", TIMEOUT, || {
        sync(&[&a, &b]);
        (a.status().current_best_block.block_hash == new_tip
            && b.status().current_best_block.block_hash == new_tip)
            .then_some(())
    });
    chain.mine(1).unwrap();
    assert!(chain.confirmation_height(&extra_txid).unwrap().is_some());
    let tip = chain.tip_hash().unwrap();
    wait_for("nodes after re-confirmation", TIMEOUT, || {
        sync(&[&a, &b]);
        (a.status().current_best_block.block_hash == tip).then_some(())
    });

    a.stop().unwrap();
    b.stop().unwrap();
    chain.shutdown();
}
