//! Two engines (seller, buyer), each with its own ldk-node, redb store and BDK wallet, on the
//! embedded regtest chain and a local Nostr relay: a real channel buyer -> seller, the seller
//! publishes an offer, the buyer takes it, and the loop out runs to the end (cooperative claim;
//! script-path claim with the seller's co-signing off).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bitcoin::{Amount, FeeRate, Network};
use std::sync::atomic::{AtomicBool, Ordering};

use looper_node::chain::{
    ChainError, ChainSource, EsploraChainSource, HistoryTx, OutputSpend, TxStatus,
};
use looper_node::engine::io::{BdkSwapWallet, OsEntropy, SystemClock};
use looper_node::engine::{Engine, EngineConfig, EngineParts};
use looper_node::lightning::{LdkConfig, LdkLightning, Lightning};
use looper_node::nostr::{MemoryProcessedEvents, NostrTransport, TransportConfig};
use looper_node::seed::{Mnemonic, NodeKeys};
use looper_node::store::{
    RedbStore, RestoreState, StoreError, SwapEvent, SwapFilter, SwapRecord as StoreRecord,
    SwapStore,
};
use looper_node::wallet::LooperWallet;
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::messages::Offer;
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::SellerPolicy;
use looper_protocol::swap::{StateKind, TxPurpose};
use looper_protocol::{SwapDirection, SwapId};
use looper_regtest::RegtestChain;
use nostr_relay_builder::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(240);

struct Party {
    engine: Engine,
    /// The engine's chain source, with a switch to make it fail.
    faults: Arc<MockFaultyChain>,
    /// The engine's store, with a switch to make writing a swap fail.
    store_faults: Arc<MockFailingStore>,
    /// The transport's processed-events set (messages the engine acknowledged).
    processed: Arc<MemoryProcessedEvents>,
    ln: Arc<LdkLightning>,
    wallet: Arc<LooperWallet>,
    transport: NostrTransport,
    listen: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// A mock for fault injection: the real Esplora chain source, failing every call while `failing`
/// is set (the chain source down).
struct MockFaultyChain {
    inner: Arc<dyn ChainSource>,
    failing: AtomicBool,
}

impl MockFaultyChain {
    fn check(&self, op: &str) -> Result<(), ChainError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(ChainError::Request {
                op: op.to_string(),
                source: Box::new(std::io::Error::other("fault injected: chain source down")),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChainSource for MockFaultyChain {
    async fn tip_height(&self) -> Result<u32, ChainError> {
        self.check("get the tip height")?;
        self.inner.tip_height().await
    }
    async fn tx_status(&self, txid: &bitcoin::Txid) -> Result<Option<TxStatus>, ChainError> {
        self.check("get a transaction status")?;
        self.inner.tx_status(txid).await
    }
    async fn get_tx(
        &self,
        txid: &bitcoin::Txid,
    ) -> Result<Option<bitcoin::Transaction>, ChainError> {
        self.check("get a transaction")?;
        self.inner.get_tx(txid).await
    }
    async fn output_spend(
        &self,
        outpoint: &bitcoin::OutPoint,
    ) -> Result<Option<OutputSpend>, ChainError> {
        self.check("get an output spend")?;
        self.inner.output_spend(outpoint).await
    }
    async fn script_history(&self, script: &bitcoin::Script) -> Result<Vec<HistoryTx>, ChainError> {
        self.check("get a script history")?;
        self.inner.script_history(script).await
    }
    async fn broadcast(&self, tx: &bitcoin::Transaction) -> Result<bitcoin::Txid, ChainError> {
        self.check("broadcast")?;
        self.inner.broadcast(tx).await
    }
    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        self.check("get a fee rate")?;
        self.inner.fee_rate(target_blocks).await
    }
}

/// A mock for fault injection: the real redb store, whose swap writes fail while `failing` is
/// set (a full disk, an I/O error).
struct MockFailingStore {
    inner: RedbStore,
    failing: AtomicBool,
}

impl SwapStore for MockFailingStore {
    fn put_swap(&self, record: &StoreRecord) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Database {
                op: "commit",
                source: Box::new(redb::Error::Io(std::io::Error::other("fault injected"))),
            });
        }
        self.inner.put_swap(record)
    }
    fn get_swap(&self, id: &SwapId) -> Result<Option<StoreRecord>, StoreError> {
        self.inner.get_swap(id)
    }
    fn get_swap_by_payment_hash(
        &self,
        hash: &looper_protocol::PaymentHash,
    ) -> Result<Option<StoreRecord>, StoreError> {
        self.inner.get_swap_by_payment_hash(hash)
    }
    fn list_swaps(&self, filter: &SwapFilter) -> Result<Vec<StoreRecord>, StoreError> {
        self.inner.list_swaps(filter)
    }
    fn put_offer(&self, id: &str, offer: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.put_offer(id, offer)
    }
    fn get_offer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.get_offer(id)
    }
    fn list_offers(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.inner.list_offers()
    }
    fn delete_offer(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_offer(id)
    }
    fn next_swap_index(&self) -> Result<u32, StoreError> {
        self.inner.next_swap_index()
    }
    fn peek_swap_index(&self) -> Result<u32, StoreError> {
        self.inner.peek_swap_index()
    }
    fn raise_swap_index(&self, at_least: u32) -> Result<u32, StoreError> {
        self.inner.raise_swap_index(at_least)
    }
    fn restore_state(&self) -> Result<RestoreState, StoreError> {
        self.inner.restore_state()
    }
    fn set_restore_state(&self, state: RestoreState) -> Result<(), StoreError> {
        self.inner.set_restore_state(state)
    }
    fn mark_event_processed(&self, id: [u8; 32], seen_at: u64) -> Result<bool, StoreError> {
        self.inner.mark_event_processed(id, seen_at)
    }
    fn is_event_processed(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.is_event_processed(id)
    }
    fn prune_processed_events(&self, before: u64) -> Result<usize, StoreError> {
        self.inner.prune_processed_events(before)
    }
    fn append_swap_event(&self, id: &SwapId, event: &serde_json::Value) -> Result<u64, StoreError> {
        self.inner.append_swap_event(id, event)
    }
    fn swap_events(&self, id: &SwapId, from: u64) -> Result<Vec<SwapEvent>, StoreError> {
        self.inner.swap_events(id, from)
    }
    fn block_key(&self, key: &str, note: Option<&str>, at: u64) -> Result<bool, StoreError> {
        self.inner.block_key(key, note, at)
    }
    fn unblock_key(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.unblock_key(key)
    }
    fn blocked_keys(&self) -> Result<Vec<looper_node::store::BlockEntry>, StoreError> {
        self.inner.blocked_keys()
    }
    fn put_swap_label(
        &self,
        id: &looper_protocol::SwapId,
        label: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inner.put_swap_label(id, label)
    }
    fn swap_labels(&self) -> Result<Vec<(looper_protocol::SwapId, serde_json::Value)>, StoreError> {
        self.inner.swap_labels()
    }
    fn put_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.put_setting(name, value)
    }
    fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.setting(name)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn party(
    chain: &RegtestChain,
    relay: &str,
    dir: &std::path::Path,
    seller_policy: SellerPolicy,
) -> Result<Party> {
    party_with(chain, relay, dir, |_| EngineConfig {
        seller_policy,
        chain_poll: Duration::from_secs(1),
        wallet_sync_every: 2,
        ..EngineConfig::default()
    })
    .await
}

/// A party whose engine settings are made from its Lightning node id.
async fn party_with(
    chain: &RegtestChain,
    relay: &str,
    dir: &std::path::Path,
    config: impl FnOnce(bitcoin::secp256k1::PublicKey) -> EngineConfig,
) -> Result<Party> {
    std::fs::create_dir_all(dir)?;
    let mnemonic = Mnemonic::generate()?;
    let keys = NodeKeys::from_mnemonic(&mnemonic, Network::Regtest)?;
    let store = RedbStore::open(&dir.join("looper.redb"))?;
    let wallet = Arc::new(LooperWallet::load_or_create(
        store.database(),
        &keys,
        Network::Regtest,
        FeeRate::from_sat_per_vb_u32(50),
    )?);
    let esplora = EsploraChainSource::new(&chain.esplora_url(), FeeRate::from_sat_per_vb_u32(2))?;
    let sync_client = esplora.client().clone();
    let listen = format!("127.0.0.1:{}", free_port());
    let ln = Arc::new(
        LdkLightning::start(
            LdkConfig {
                network: Network::Regtest,
                esplora_url: chain.esplora_url(),
                storage_dir: dir.join("ldk"),
                listen: vec![listen.clone()],
                alias: None,
                sync_interval_secs: 2,
                rgs_url: None,
                announcement_addresses: Vec::new(),
            },
            keys.ldk_seed_bytes()?,
        )
        .await?,
    );
    let mut tc = TransportConfig::new(keys.nostr_secret_key()?.secret_bytes(), vec![relay.into()]);
    tc.retry_interval = Duration::from_secs(1);
    tc.fetch_timeout = Duration::from_secs(5);
    // As looper-node runs it: the engine acknowledges a message once its effects are persisted.
    tc.manual_ack = true;
    let processed = Arc::new(MemoryProcessedEvents::new());
    let transport = NostrTransport::connect(tc, processed.clone()).await?;
    let store_faults = Arc::new(MockFailingStore { inner: store, failing: AtomicBool::new(false) });
    let faults =
        Arc::new(MockFaultyChain { inner: esplora.into_dyn(), failing: AtomicBool::new(false) });
    let engine = Engine::start(EngineParts {
        store: store_faults.clone() as Arc<dyn SwapStore>,
        wallet: Arc::new(BdkSwapWallet::new(Arc::clone(&wallet), Some(sync_client))),
        chain: faults.clone() as Arc<dyn ChainSource>,
        lightning: ln.clone() as Arc<dyn Lightning>,
        transport: Arc::new(transport.clone()),
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
        swap_master: keys.swap_master()?,
        config: config(ln.node_id()),
    })
    .await?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.clone().run(async move {
        let _ = rx.await;
    }));
    Ok(Party {
        engine,
        faults,
        store_faults,
        processed,
        ln,
        wallet,
        transport,
        listen,
        stop: Some(stop),
        task,
    })
}

/// The next message on `rx` is an `error` for `swap_id` with `code`.
async fn expect_error_reply(
    rx: &mut tokio::sync::mpsc::Receiver<looper_node::nostr::Incoming>,
    swap_id: SwapId,
    code: looper_protocol::messages::ErrorCode,
) -> Result<()> {
    let reply = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await?.expect("reply");
    match reply.message {
        Ok(looper_protocol::messages::Envelope {
            swap_id: id,
            body: looper_protocol::messages::Message::Error(e),
            ..
        }) => {
            assert_eq!(id, swap_id);
            assert_eq!(e.code, code, "{e:?}");
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
    Ok(())
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn offer(seller_ln: bitcoin::secp256k1::PublicKey, relay: &str, id: &str) -> Offer {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    Offer {
        version: 1,
        offer_id: id.into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 1_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: seller_ln,
        ln_address: None,
        relays: vec![relay.into()],
        pow_difficulty: None,
        expires_at: now + 86_400,
    }
}

fn balance(w: &LooperWallet) -> u64 {
    w.balance().map(|b| b.total().to_sat()).unwrap_or(0)
}

async fn loop_out(cooperative: bool) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "looper_node=info".into()),
        )
        .with_test_writer()
        .try_init();
    let tmp = tempfile::tempdir()?;
    // LOOPER_KEEP_TESTDIR=1 keeps the chain, ldk-node logs and stores for a post-mortem.
    let (_guard, dir) = if std::env::var_os("LOOPER_KEEP_TESTDIR").is_some() {
        let p = tmp.keep();
        eprintln!("test dir (kept): {}", p.display());
        (None, p)
    } else {
        let p = tmp.path().to_path_buf();
        (Some(tmp), p)
    };
    let chain = Arc::new(RegtestChain::start(dir.join("chain"))?);
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    let relay_url = relay.url().await.to_string();

    let mut seller = party(
        &chain,
        &relay_url,
        &dir.join("seller"),
        SellerPolicy { cooperative_claims: cooperative },
    )
    .await?;
    let mut buyer = party(&chain, &relay_url, &dir.join("buyer"), SellerPolicy::default()).await?;

    // Fund: the seller's swap wallet (HTLCs), the buyer's Lightning wallet (channel), the
    // seller's Lightning wallet (anchor reserve).
    chain.fund_address(&seller.wallet.new_address()?, Amount::from_sat(2_000_000))?;
    chain.fund_address(&buyer.ln.onchain_address().await?, Amount::from_sat(3_000_000))?;
    chain.fund_address(&seller.ln.onchain_address().await?, Amount::from_sat(200_000))?;
    wait_for("lightning wallets funded", || async {
        let _ = buyer.ln.sync().await;
        let _ = seller.ln.sync().await;
        (buyer.ln.onchain_spendable_sat() >= 3_000_000
            && seller.ln.onchain_spendable_sat() >= 200_000)
            .then_some(())
    })
    .await?;

    // Channel buyer -> seller.
    buyer.ln.open_channel(seller.ln.node_id(), &seller.listen, 2_000_000, None).await?;
    let c = chain.clone();
    wait_for("channel funding in the mempool", || {
        let c = c.clone();
        async move { (c.mempool_size().ok()? > 0).then_some(()) }
    })
    .await?;
    chain.mine(6)?;
    wait_for("channel usable", || async {
        let _ = buyer.ln.sync().await;
        let _ = seller.ln.sync().await;
        (buyer.ln.channels().iter().any(|c| c.usable)
            && seller.ln.channels().iter().any(|c| c.usable))
        .then_some(())
    })
    .await?;

    // Blocks keep coming while the swap runs.
    let miner_chain = chain.clone();
    let miner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let c = miner_chain.clone();
            let _ = tokio::task::spawn_blocking(move || c.mine(1)).await;
        }
    });

    // The seller publishes; the buyer takes.
    let offer = offer(seller.ln.node_id(), &relay_url, "regtest-offer");
    seller.engine.publish_offer(&offer).await?;
    seller.engine.sync_wallet().await?;
    buyer.engine.sync_wallet().await?;
    let buyer_before = balance(&buyer.wallet);
    // ldk-node accepts inbound HTLCs in flight up to 10% of the channel by default.
    let amount = 100_000;
    let seller_pk = seller.transport.public_key();
    let policy = BuyerPolicy {
        max_total_fee_sat: 10_000,
        max_route_cltv: 200,
        min_confirmations: 1,
        ..BuyerPolicy::default()
    };
    let swap_id: SwapId = buyer.engine.take_offer(offer, seller_pk, amount, policy).await?;

    if !cooperative {
        // The buyer's chain source goes down as it starts claiming: its clock keeps moving, so
        // the seller's silence still ends in the script-path claim after 30 s (issue 12, item 8:
        // a failed chain poll used to freeze every swap's clock).
        wait_for("buyer claiming", || async {
            let (state, _) = buyer.engine.swap_state(swap_id).await?;
            (state == "Claiming").then_some(())
        })
        .await?;
        buyer.faults.failing.store(true, Ordering::SeqCst);
        let down = Instant::now();
        wait_for("script-path claim with the chain source down", || async {
            let (state, _) = buyer.engine.swap_state(swap_id).await?;
            (state == "ClaimBroadcast").then_some(())
        })
        .await?;
        assert!(buyer.faults.failing.load(Ordering::SeqCst));
        eprintln!(
            "claimed through the script path {:.0} s into the outage",
            down.elapsed().as_secs_f64()
        );
        buyer.faults.failing.store(false, Ordering::SeqCst);
    }

    let kind = wait_for("buyer swap finished", || async {
        match buyer.engine.swap_state(swap_id).await {
            Some((_, k)) if k != StateKind::Pending => Some(k),
            _ => None,
        }
    })
    .await?;
    let (state, _) = buyer.engine.swap_state(swap_id).await.unwrap();
    let events = buyer.engine.store().swap_events(&swap_id, 0)?;
    assert_eq!(kind, StateKind::Succeeded, "buyer ended in {state}: {events:#?}");
    assert_eq!(state, "Claimed");
    let wanted = if cooperative { TxPurpose::CooperativeClaim } else { TxPurpose::ScriptClaim };
    let purposes: Vec<TxPurpose> = events
        .iter()
        .filter(|e| e.event["event"] == "broadcast")
        .map(|e| serde_json::from_value(e.event["purpose"].clone()).unwrap())
        .collect();
    assert_eq!(purposes, vec![wanted], "{events:#?}");

    let seller_state = wait_for("seller swap finished", || async {
        match seller.engine.swap_state(swap_id).await {
            Some((s, k)) if k != StateKind::Pending => Some(s),
            _ => None,
        }
    })
    .await?;
    assert_eq!(seller_state, "Claimed");

    // The buyer's wallet got the HTLC minus the claim fee.
    let Some(SwapRecord::Buyer(b)) = buyer.engine.swap_record(swap_id).await else {
        bail!("no buyer record")
    };
    let looper_protocol::buyer::BuyerState::Claimed { claim_txid, received_sat, .. } =
        b.state().clone()
    else {
        bail!("not claimed")
    };
    let claim = buyer.engine.chain().get_tx(&claim_txid).await?.expect("claim tx");
    let claim_fee = amount - claim.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
    assert_eq!(received_sat, amount - claim_fee);
    let after = wait_for("claim in the buyer's wallet", || async {
        buyer.engine.sync_wallet().await.ok()?;
        let b = balance(&buyer.wallet);
        (b > buyer_before).then_some(b)
    })
    .await?;
    assert_eq!(after - buyer_before, amount - claim_fee);
    eprintln!(
        "loop out ({}) done: claim fee {claim_fee} sat, claim vsize {}",
        if cooperative { "cooperative" } else { "script path" },
        claim.vsize()
    );

    // The control API answers for the swap by its payment hash, and only with the token.
    let token = looper_node::seed::ApiToken::load_or_create(&dir.join("buyer"))?;
    let app = looper_node::api::router(looper_node::api::ApiState {
        engine: buyer.engine.clone(),
        wallet: Arc::clone(&buyer.wallet),
        nostr: buyer.transport.clone(),
        token: Arc::new(token.clone()),
        network: Network::Regtest,
        autoloop: looper_node::autoloop::Autoloop::new(
            buyer.engine.clone(),
            buyer.transport.clone(),
            looper_node::autoloop::AutoloopSettings {
                network: Network::Regtest,
                buyer_policy: Default::default(),
                interval: std::time::Duration::from_secs(60),
                max_swap_amount_sat: None,
            },
        ),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let hash = b.payment_hash().expect("hash").to_string();
    let (status, body) = http_get(api_addr, &format!("/v1/swaps/{hash}"), None).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    let (status, body) =
        http_get(api_addr, &format!("/v1/swaps/{hash}"), Some(token.expose())).await?;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(v["state"], "Claimed");
    assert_eq!(v["swap_id"], swap_id.to_string());
    server.abort();

    miner.abort();
    for p in [&mut seller, &mut buyer] {
        if let Some(s) = p.stop.take() {
            let _ = s.send(());
        }
    }
    for p in [seller, buyer] {
        let _ = p.task.await;
        p.transport.shutdown().await;
        p.ln.stop().await?;
    }
    relay.shutdown();
    drop(chain);
    Ok(())
}

/// A minimal HTTP/1.1 GET (the test needs no HTTP client crate): status and body.
async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await?;
    let status: u16 = buf.split(' ').nth(1).unwrap_or("0").parse()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loop_out_cooperative_claim() -> Result<()> {
    loop_out(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loop_out_script_path_claim() -> Result<()> {
    loop_out(false).await
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "looper_node=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Sum of the values of `tx`'s inputs (looked up on the chain).
async fn input_value(engine: &Engine, tx: &bitcoin::Transaction) -> Result<u64> {
    let mut sum = 0;
    for input in &tx.input {
        let prev = engine.chain().get_tx(&input.previous_output.txid).await?.expect("prev tx");
        sum += prev.output[input.previous_output.vout as usize].value.to_sat();
    }
    Ok(sum)
}

fn output_value(tx: &bitcoin::Transaction) -> u64 {
    tx.output.iter().map(|o| o.value.to_sat()).sum()
}

/// A loop out that never gets paid: the buyer is stopped once the HTLC is funded (`abort`:
/// false; the seller refunds by the script path after the timeout) or asks to abort
/// (`abort`: true; cooperative refund). No channel is needed: nothing is paid. The seller serves
/// the offer of its configuration (published by the engine and discovered by the buyer), at most
/// one swap at a time. The seller's on-chain balance before and after differ by the funding and
/// refund fees only.
async fn unpaid_swap(abort: bool) -> Result<()> {
    init_tracing();
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let chain = Arc::new(RegtestChain::start(dir.join("chain"))?);
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    let relay_url = relay.url().await.to_string();

    // The smallest timeout the protocol allows: claim margin + confirmations + 42.
    let timeout_delta = 45;
    let r = relay_url.clone();
    let mut seller = party_with(&chain, &relay_url, &dir.join("seller"), move |ln| {
        let mut o = offer(ln, &r, "config-offer");
        o.timeout_delta = timeout_delta;
        o.claim_margin = 2;
        EngineConfig {
            chain_poll: Duration::from_secs(1),
            wallet_sync_every: 2,
            seller_offer: Some(o),
            max_concurrent_swaps: Some(1),
            // No channel: this buyer never pays.
            check_liquidity: false,
            ..EngineConfig::default()
        }
    })
    .await?;
    let mut buyer = party(&chain, &relay_url, &dir.join("buyer"), SellerPolicy::default()).await?;
    chain.fund_address(&seller.wallet.new_address()?, Amount::from_sat(1_000_000))?;
    let before = wait_for("seller wallet funded", || async {
        seller.engine.sync_wallet().await.ok()?;
        let b = balance(&seller.wallet);
        (b >= 1_000_000).then_some(b)
    })
    .await?;

    // The buyer finds the offer the seller's engine published from its configuration.
    let seller_pk = seller.transport.public_key();
    let found = wait_for("the configured offer on the relay", || async {
        let filter = looper_node::nostr::OfferFilter {
            network: Network::Regtest,
            amount_sat: 50_000,
            sellers: vec![seller_pk],
            direction: looper_protocol::SwapDirection::LoopOut,
        };
        let offers = buyer.transport.discover_offers(&filter).await.ok()?;
        offers.into_iter().find(|d| d.offer.offer_id == "config-offer")
    })
    .await?;
    assert_eq!(found.offer.timeout_delta, timeout_delta);

    // The buyer waits for more confirmations than the swap can get: it never pays.
    let policy = BuyerPolicy {
        max_total_fee_sat: 10_000,
        max_route_cltv: 200,
        min_confirmations: 1_000,
        // The offer's 2-block margin keeps the test short; the buyer's floor follows it.
        min_claim_margin: 2,
        ..BuyerPolicy::default()
    };
    let amount = 50_000;
    let swap_id = buyer.engine.take_offer(found.offer.clone(), seller_pk, amount, policy).await?;
    wait_for("buyer sees the funded htlc", || async {
        matches!(buyer.engine.swap_state(swap_id).await, Some((s, _)) if s == "Funded")
            .then_some(())
    })
    .await?;

    // A second request while the first swap runs: refused (max_concurrent_swaps = 1).
    let second = buyer.engine.take_offer(found.offer.clone(), seller_pk, amount, policy).await?;
    let kind = wait_for("second swap refused", || async {
        match buyer.engine.swap_state(second).await {
            Some((_, k)) if k != StateKind::Pending => Some(k),
            _ => None,
        }
    })
    .await?;
    assert_eq!(kind, StateKind::Failed);
    let events = buyer.engine.store().swap_events(&second, 0)?;
    assert!(format!("{events:?}").contains("rate_limited"), "{events:#?}");

    // A message that does not decode but names the swap gets a `malformed` answer.
    let mut tc = TransportConfig::new(
        NodeKeys::from_mnemonic(&Mnemonic::generate()?, Network::Regtest)?
            .nostr_secret_key()?
            .secret_bytes(),
        vec![relay_url.clone()],
    );
    tc.retry_interval = Duration::from_secs(1);
    let stranger = NostrTransport::connect(tc, Arc::new(MemoryProcessedEvents::new())).await?;
    let mut stranger_rx = stranger.incoming().expect("incoming");
    let mut bad: serde_json::Value = serde_json::from_str(
        &looper_node::nostr::wire::envelope_content(&looper_protocol::messages::Envelope::new(
            swap_id,
            1,
            looper_protocol::messages::Message::SwapAbort(looper_protocol::messages::SwapAbort {
                reason: looper_protocol::messages::AbortReason::UserRequested,
                message: None,
            }),
        )),
    )?;
    bad["reason"] = serde_json::json!(42);
    stranger.send_raw(&seller_pk, &[], bad.to_string(), Default::default()).await?;
    expect_error_reply(&mut stranger_rx, swap_id, looper_protocol::messages::ErrorCode::Malformed)
        .await?;

    // The buyer's swap_request again, from the stranger: the live swap id is not taken over.
    let Some(looper_protocol::record::SwapRecord::Buyer(record)) =
        buyer.engine.swap_record(swap_id).await
    else {
        panic!("no buyer record");
    };
    let request = record.outbox().sent.first().cloned().expect("the swap_request");
    stranger.send(&seller_pk, &[], &request).await?;
    expect_error_reply(
        &mut stranger_rx,
        swap_id,
        looper_protocol::messages::ErrorCode::InvalidState,
    )
    .await?;
    stranger.shutdown().await;
    // From the buyer itself, the same request is answered with the original messages again
    // (the buyer's engine drops them as seen), and no second swap starts.
    let delivered = buyer.transport.stats().await.delivered;
    buyer.transport.send(&seller_pk, &[], &request).await?;
    wait_for("the seller's answers again", || async {
        (buyer.transport.stats().await.delivered > delivered).then_some(())
    })
    .await?;
    assert_eq!(seller.engine.swap_ids().await.len(), 1, "a second swap started");

    if abort {
        buyer.engine.abort(swap_id).await?;
    } else {
        // The buyer vanishes.
        if let Some(s) = buyer.stop.take() {
            let _ = s.send(());
        }
    }
    // Blocks until the seller's swap ends (the HTLC times out after `timeout_delta` blocks).
    let c = chain.clone();
    let state = wait_for("seller swap refunded", || {
        let c = c.clone();
        let seller = &seller;
        async move {
            let _ = tokio::task::spawn_blocking(move || c.mine(if abort { 1 } else { 3 })).await;
            match seller.engine.swap_state(swap_id).await {
                Some((s, k)) if k != StateKind::Pending => Some(s),
                _ => None,
            }
        }
    })
    .await?;
    let Some(SwapRecord::Seller(rec)) = seller.engine.swap_record(swap_id).await else {
        bail!("no seller record")
    };
    let events = seller.engine.store().swap_events(&swap_id, 0)?;
    assert_eq!(state, "Refunded", "{events:#?}");
    let looper_protocol::seller::SellerState::Refunded { funding, refund_txid } =
        rec.state().clone()
    else {
        bail!("not refunded")
    };
    let purposes: Vec<TxPurpose> = events
        .iter()
        .filter(|e| e.event["event"] == "broadcast")
        .map(|e| serde_json::from_value(e.event["purpose"].clone()).unwrap())
        .collect();
    let wanted = if abort { TxPurpose::CooperativeRefund } else { TxPurpose::ScriptRefund };
    assert_eq!(purposes, vec![wanted], "{events:#?}");

    let funding_fee = input_value(&seller.engine, &funding.tx).await? - output_value(&funding.tx);
    let refund = seller.engine.chain().get_tx(&refund_txid).await?.expect("refund tx");
    let refund_fee = input_value(&seller.engine, &refund).await? - output_value(&refund);
    let after = wait_for("refund in the seller's wallet", || async {
        seller.engine.sync_wallet().await.ok()?;
        let b = balance(&seller.wallet);
        (b == before - funding_fee - refund_fee).then_some(b)
    })
    .await;
    let after = match after {
        Ok(a) => a,
        Err(_) => bail!(
            "seller balance {} != {before} - funding fee {funding_fee} - refund fee {refund_fee}",
            balance(&seller.wallet)
        ),
    };
    eprintln!(
        "FIGURES: unpaid swap ({}) refunded in {:.1} s: funding fee {funding_fee} sat, refund \
         fee {refund_fee} sat (vsize {}), seller balance {before} -> {after}",
        if abort { "cooperative refund" } else { "script refund after timeout" },
        started.elapsed().as_secs_f64(),
        refund.vsize(),
    );

    for p in [&mut seller, &mut buyer] {
        if let Some(s) = p.stop.take() {
            let _ = s.send(());
        }
    }
    for p in [seller, buyer] {
        let _ = p.task.await;
        p.transport.shutdown().await;
        p.ln.stop().await?;
    }
    relay.shutdown();
    drop(chain);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyer_never_pays_seller_refunds_after_timeout() -> Result<()> {
    unpaid_swap(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyer_aborts_cooperative_refund() -> Result<()> {
    unpaid_swap(true).await
}

/// Issue 12, item 8: a swap message is marked processed only once the engine persisted what
/// follows from it. With the seller's store failing, the buyer's `swap_request` arrives but is
/// not acknowledged (it is delivered again after a restart) and leaves no half-made swap; with
/// the store back, the next request is persisted and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_whose_effects_were_not_persisted_is_not_acknowledged() -> Result<()> {
    init_tracing();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let chain = Arc::new(RegtestChain::start(dir.join("chain"))?);
    let relay = LocalRelay::new(RelayBuilder::default());
    relay.run().await?;
    let relay_url = relay.url().await.to_string();
    // No channel: the swaps here are never paid.
    let mut seller = party_with(&chain, &relay_url, &dir.join("seller"), |_| EngineConfig {
        chain_poll: Duration::from_secs(1),
        wallet_sync_every: 2,
        check_liquidity: false,
        ..EngineConfig::default()
    })
    .await?;
    let mut buyer = party(&chain, &relay_url, &dir.join("buyer"), SellerPolicy::default()).await?;
    chain.fund_address(&seller.wallet.new_address()?, Amount::from_sat(1_000_000))?;
    seller.engine.sync_wallet().await?;
    let offer = offer(seller.ln.node_id(), &relay_url, "ack-offer");
    seller.engine.publish_offer(&offer).await?;
    let seller_pk = seller.transport.public_key();
    let policy = BuyerPolicy {
        max_total_fee_sat: 10_000,
        max_route_cltv: 200,
        min_confirmations: 1_000,
        ..BuyerPolicy::default()
    };

    seller.store_faults.failing.store(true, Ordering::SeqCst);
    let first = buyer.engine.take_offer(offer.clone(), seller_pk, 50_000, policy).await?;
    wait_for("the swap_request delivered to the seller's engine", || async {
        (seller.transport.stats().await.delivered >= 1).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seller.processed.len(), 0, "acknowledged without being persisted");
    assert!(seller.engine.swap_state(first).await.is_none(), "a half-made swap stayed");
    assert!(seller.engine.store().get_swap(&first)?.is_none());

    seller.store_faults.failing.store(false, Ordering::SeqCst);
    let second = buyer.engine.take_offer(offer, seller_pk, 50_000, policy).await?;
    wait_for("the second swap persisted and acknowledged", || async {
        let stored = seller.engine.store().get_swap(&second).ok()??;
        (seller.processed.len() == 1).then_some(stored)
    })
    .await?;

    for p in [&mut seller, &mut buyer] {
        if let Some(stop) = p.stop.take() {
            let _ = stop.send(());
        }
    }
    for p in [seller, buyer] {
        let _ = p.task.await;
        p.transport.shutdown().await;
        p.ln.stop().await?;
    }
    relay.shutdown();
    Ok(())
}
