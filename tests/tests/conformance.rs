//! Buyer and seller engines run whole swaps over nostr-relay-builder's relay on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bitcoin::Network;
use looper_conformance::{drive, lock, settle, Behaviour, Engine, MockTamper, SharedWorld, World};
use looper_node::nostr::wire::{self, Envelope};
use looper_node::nostr::{
    Incoming, MemoryProcessedEvents, NostrTransport, OfferFilter, SendOptions, TransportConfig,
};
use looper_protocol::buyer::{BuyerCheckError, BuyerState};
use looper_protocol::messages::{AbortReason, ErrorCode, Message, SwapAbort, SUPPORTED_VERSIONS};
use looper_protocol::seller::SellerState;
use looper_protocol::swap::TxPurpose;
use nostr_relay_builder::prelude::{Keys, LocalRelay, RelayBuilder};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

async fn start_relay() -> Result<(LocalRelay, String)> {
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    let url = relay.url().await.to_string();
    Ok((relay, url))
}

async fn transport(url: &str) -> Result<NostrTransport> {
    let keys = Keys::generate();
    let mut c = TransportConfig::new(keys.secret_key().to_secret_bytes(), vec![url.to_string()]);
    c.retry_interval = Duration::from_secs(1);
    c.fetch_timeout = Duration::from_secs(5);
    Ok(NostrTransport::connect(c, Arc::new(MemoryProcessedEvents::new())).await?)
}

struct Setup {
    relay: LocalRelay,
    url: String,
    world: SharedWorld,
    buyer: Engine,
    seller: Engine,
}

/// Seller publishes its offer; the buyer discovers it on the relay and takes it.
async fn setup(buyer_b: Behaviour, seller_b: Behaviour) -> Result<Setup> {
    let (relay, url) = start_relay().await?;
    let world = World::shared()?;
    let seller_t = transport(&url).await?;
    let offer = looper_conformance::offer(&world, "conformance", vec![url.clone()])?;
    seller_t.publish_offer(&offer).await?;
    let seller = Engine::seller(seller_t, world.clone(), offer, seller_b)?;

    let buyer_t = transport(&url).await?;
    let want = OfferFilter { network: Network::Regtest, amount_sat: 200_000, sellers: vec![] };
    let deadline = Instant::now() + WAIT;
    let found = loop {
        let found = buyer_t.discover_offers(&want).await?;
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let taken = found.first().ok_or_else(|| anyhow!("no offer discovered"))?;
    assert_eq!(taken.seller, seller.transport.public_key());
    let buyer =
        Engine::buyer(buyer_t, world.clone(), taken.seller, taken.offer.clone(), 200_000, buyer_b)
            .await?;
    Ok(Setup { relay, url, world, buyer, seller })
}

async fn teardown(s: Setup) {
    s.buyer.transport.shutdown().await;
    s.seller.transport.shutdown().await;
    s.relay.shutdown();
}

fn buyer_state(e: &Engine) -> &BuyerState {
    match &e.swap {
        looper_conformance::Swap::Buyer(b) => b.state(),
        _ => panic!("not a buyer"),
    }
}

fn seller_state(e: &Engine) -> &SellerState {
    match &e.swap {
        looper_conformance::Swap::Seller(Some(s)) => s.state(),
        _ => panic!("no seller swap"),
    }
}

fn purposes(world: &SharedWorld) -> Vec<TxPurpose> {
    lock(world).unwrap().purposes()
}

fn log(world: &SharedWorld) -> Vec<String> {
    lock(world).unwrap().log.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_claim_over_the_relay() -> Result<()> {
    let started = Instant::now();
    let mut s = setup(Behaviour::default(), Behaviour::default()).await?;
    let blocks = drive(&mut s.buyer, &mut s.seller, 50).await?;
    let wall = started.elapsed();
    assert!(matches!(buyer_state(&s.buyer), BuyerState::Claimed { .. }), "{:#?}", log(&s.world));
    assert!(matches!(seller_state(&s.seller), SellerState::Claimed { .. }));
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let (msgs, bytes) = {
        let w = lock(&s.world).unwrap();
        (w.sent_to[0] + w.sent_to[1], w.event_bytes)
    };
    let bs = s.buyer.transport.stats().await;
    let ss = s.seller.transport.stats().await;
    println!(
        "FIGURES: wall {:.2} s, {blocks} blocks, {msgs} swap messages, {bytes} bytes of gift \
         wraps, websocket bytes sent buyer {} seller {}, received buyer {} seller {}",
        wall.as_secs_f64(),
        bs.bytes_sent,
        ss.bytes_sent,
        bs.bytes_received,
        ss.bytes_received
    );
    let _ = &s.url;
    teardown(s).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_uncooperative_script_claim() -> Result<()> {
    let mut s =
        setup(Behaviour::default(), Behaviour { uncooperative: true, ..Default::default() })
            .await?;
    drive(&mut s.buyer, &mut s.seller, 60).await?;
    assert!(matches!(buyer_state(&s.buyer), BuyerState::Claimed { .. }), "{:#?}", log(&s.world));
    assert!(matches!(seller_state(&s.seller), SellerState::Claimed { .. }));
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::ScriptClaim]);
    teardown(s).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_aborts_cooperative_refund() -> Result<()> {
    let mut s =
        setup(Behaviour { abort_when_funded: true, ..Default::default() }, Behaviour::default())
            .await?;
    drive(&mut s.buyer, &mut s.seller, 60).await?;
    assert!(
        matches!(seller_state(&s.seller), SellerState::Refunded { .. }),
        "{}: {:#?}",
        s.seller.state_name(),
        log(&s.world)
    );
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::CooperativeRefund]);
    assert_eq!(lock(&s.world).unwrap().buyer_paid_msat, 0);
    teardown(s).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_vanishes_refund_after_timeout() -> Result<()> {
    let mut s =
        setup(Behaviour { vanish_after_accept: true, ..Default::default() }, Behaviour::default())
            .await?;
    drive(&mut s.buyer, &mut s.seller, 400).await?;
    let st = seller_state(&s.seller);
    assert!(matches!(st, SellerState::Refunded { .. }), "{}: {:#?}", st.name(), log(&s.world));
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::ScriptRefund]);
    assert!(lock(&s.world).unwrap().ctx.tip_height > looper_conformance::START_HEIGHT + 144);
    assert_eq!(lock(&s.world).unwrap().seller_received_msat, 0);
    teardown(s).await;
    Ok(())
}

/// Keeps both engines running until the attacker gets a reply (bounded).
async fn await_reply(
    s: &mut Setup,
    arx: &mut mpsc::Receiver<Incoming>,
    what: &str,
) -> Result<Incoming> {
    let deadline = Instant::now() + WAIT;
    loop {
        settle(&mut s.buyer, &mut s.seller).await?;
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), arx.recv()).await {
            return m.ok_or_else(|| anyhow!("closed"));
        }
        if Instant::now() > deadline {
            return Err(anyhow!("no reply to {what}"));
        }
    }
}

fn error_of(m: &Incoming) -> Result<looper_protocol::messages::ErrorMessage> {
    match &m.message {
        Ok(Envelope { body: Message::Error(e), .. }) => Ok(e.clone()),
        other => Err(anyhow!("expected an error, got {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_client_beside_an_honest_swap() -> Result<()> {
    let mut s = setup(Behaviour::default(), Behaviour::default()).await?;
    // Let the seller take the honest request first.
    settle(&mut s.buyer, &mut s.seller).await?;
    let honest_id = s.seller.swap_id().ok_or_else(|| anyhow!("seller took no swap"))?;
    let state_before = s.seller.state_name();

    let attacker = transport(&s.url).await?;
    let mut arx = attacker.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let seller_pk = s.seller.transport.public_key();
    let template = wire::envelope_content(&Envelope::new(
        honest_id,
        1,
        Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
    ));
    let mut value: serde_json::Value = serde_json::from_str(&template)?;

    // 1. Malformed: a readable swap id, but the body is wrong.
    let mut malformed = value.clone();
    malformed["reason"] = serde_json::json!(42);
    attacker.send_raw(&seller_pk, &[], malformed.to_string(), SendOptions::default()).await?;
    settle(&mut s.buyer, &mut s.seller).await?;
    let reply = await_reply(&mut s, &mut arx, "the malformed message").await?;
    let e = error_of(&reply)?;
    assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");

    // 2. Unknown version.
    value["v"] = serde_json::json!(99);
    attacker.send_raw(&seller_pk, &[], value.to_string(), SendOptions::default()).await?;
    let reply = await_reply(&mut s, &mut arx, "the unknown version").await?;
    let e = error_of(&reply)?;
    assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{e:?}");
    assert_eq!(e.supported_versions, Some(SUPPORTED_VERSIONS.to_vec()));

    // 3. A well-formed abort of the honest buyer's swap, from the attacker: unknown_swap.
    let abort = Envelope::new(
        honest_id,
        7,
        Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
    );
    attacker.send(&seller_pk, &[], &abort).await?;
    let reply = await_reply(&mut s, &mut arx, "the foreign abort").await?;
    let e = error_of(&reply)?;
    assert_eq!(e.code, ErrorCode::UnknownSwap, "{e:?}");
    assert_eq!(reply.message.as_ref().map(|m| m.swap_id).ok(), Some(honest_id));
    assert_eq!(s.seller.state_name(), state_before, "the attacker changed nothing");
    assert_eq!(s.seller.peer, Some(s.buyer.transport.public_key()));

    // The honest swap completes.
    drive(&mut s.buyer, &mut s.seller, 50).await?;
    assert!(matches!(buyer_state(&s.buyer), BuyerState::Claimed { .. }), "{:#?}", log(&s.world));
    assert!(matches!(seller_state(&s.seller), SellerState::Claimed { .. }));
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    assert_eq!(s.seller.stranger_replies.len(), 3);
    attacker.shutdown().await;
    teardown(s).await;
    Ok(())
}

fn flood_request(i: u8) -> Envelope {
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    let secp = Secp256k1::new();
    let pk = SecretKey::from_slice(&[1; 32]).unwrap().public_key(&secp);
    Envelope::new(
        looper_protocol::SwapId([i; 32]),
        0,
        Message::SwapRequest(looper_protocol::messages::SwapRequest {
            offer_id: "conformance".into(),
            direction: looper_protocol::SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: 100_000,
            buyer_musig_pubkey: pk,
            buyer_claim_pubkey: pk.x_only_public_key().0,
            max_total_fee_sat: 50_000,
            prepay_accepted: false,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_oversize_and_flood_are_ignored() -> Result<()> {
    use nostr_sdk::{Client, Filter, Kind};
    let mut s = setup(Behaviour::default(), Behaviour::default()).await?;
    settle(&mut s.buyer, &mut s.seller).await?;
    let seller_pk = s.seller.transport.public_key();
    let honest_id = s.seller.swap_id().ok_or_else(|| anyhow!("seller took no swap"))?;

    // Replayed old messages: a raw client republishes every gift wrap addressed to the seller.
    let raw_keys = Keys::generate();
    let raw = Client::new(raw_keys);
    raw.add_relay(&s.url).await?;
    raw.connect().await;
    raw.wait_for_connection(Duration::from_secs(5)).await;
    let old = raw
        .fetch_events(Filter::new().kind(Kind::GiftWrap).pubkey(seller_pk), Duration::from_secs(5))
        .await?;
    assert!(!old.is_empty(), "the buyer's request is on the relay");
    for ev in old.iter() {
        let _ = raw.send_event(ev).await;
    }

    // Oversized content and a flood of requests from another key.
    let attacker = transport(&s.url).await?;
    let mut arx = attacker.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let oversize_sent = attacker
        .send_raw(&seller_pk, &[], "x".repeat(200_000), SendOptions::default())
        .await
        .is_ok();
    for i in 0..12u8 {
        attacker.send(&seller_pk, &[], &flood_request(i)).await?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        settle(&mut s.buyer, &mut s.seller).await?;
        let st = s.seller.transport.stats().await;
        if st.rate_limited > 0 && (!oversize_sent || st.oversize > 0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("flood/oversize never accounted: {st:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The requests that got through the rate limit are refused (the seller serves one swap).
    let mut refused = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), arx.recv()).await {
        assert!(error_of(&m).is_ok());
        refused += 1;
    }
    assert!(refused <= 12);
    assert_eq!(s.seller.swap_id(), Some(honest_id));
    assert_eq!(s.seller.peer, Some(s.buyer.transport.public_key()));

    drive(&mut s.buyer, &mut s.seller, 50).await?;
    assert!(matches!(buyer_state(&s.buyer), BuyerState::Claimed { .. }), "{:#?}", log(&s.world));
    assert!(matches!(seller_state(&s.seller), SellerState::Claimed { .. }));
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let st = s.seller.transport.stats().await;
    println!("seller transport after the abuse: {st:?}, {refused} refusals");
    raw.shutdown().await;
    attacker.shutdown().await;
    teardown(s).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_mid_swap() -> Result<()> {
    let mut s = setup(Behaviour::default(), Behaviour::default()).await?;
    // Request and accept go through the first relay.
    settle(&mut s.buyer, &mut s.seller).await?;
    assert!(!s.buyer.finished() && !s.seller.finished(), "{:#?}", log(&s.world));
    let mid = (s.buyer.state_name(), s.seller.state_name());
    let port: u16 = s.url.trim_end_matches('/').rsplit(':').next().unwrap().parse()?;
    s.relay.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay = LocalRelay::new(RelayBuilder::default().port(port).rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    s.relay = relay;
    println!("relay restarted with buyer {} and seller {}", mid.0, mid.1);
    drive(&mut s.buyer, &mut s.seller, 50).await?;
    assert!(matches!(buyer_state(&s.buyer), BuyerState::Claimed { .. }), "{:#?}", log(&s.world));
    assert!(matches!(seller_state(&s.seller), SellerState::Claimed { .. }));
    assert_eq!(purposes(&s.world), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    teardown(s).await;
    Ok(())
}

/// What a scenario of the state-machine simulation must end in.
#[derive(Clone, Copy)]
enum Expect {
    /// Both claim cooperatively: funding then cooperative claim.
    CooperativeClaim,
    /// The late payment is failed back; the buyer aborts with `payment_failed`, the seller
    /// refunds.
    FailedBackAndRefunded,
    /// The buyer refuses on the named pre-payment check and pays nothing; the seller is not paid
    /// and (when the flag says so) gets its HTLC back.
    Refused(&'static str, fn(&BuyerCheckError) -> bool, SellerRefunds),
}

/// Whether the seller of a refused scenario must end refunded. A seller whose broadcast funding
/// differs from the transaction its state machine built cannot: its refunds spend an outpoint
/// that does not exist (the simulation asserts only the buyer's side there, too).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SellerRefunds {
    Yes,
    NotItsOwnTamperedFunding,
}

/// One scenario of `protocol/tests/simulation.rs`, with its fault injected through the engines'
/// mocks.
struct Scenario {
    name: &'static str,
    buyer: Behaviour,
    seller: Behaviour,
    expect: Expect,
}

fn refused(name: &'static str, check: fn(&BuyerCheckError) -> bool) -> Expect {
    Expect::Refused(name, check, SellerRefunds::Yes)
}

fn tampered(t: MockTamper) -> Behaviour {
    Behaviour { mock_tamper: Some(t), ..Default::default() }
}

fn wire_faults(duplicate: bool, reorder: bool) -> Behaviour {
    Behaviour { mock_duplicate: duplicate, mock_reorder: reorder, ..Default::default() }
}

fn scenarios() -> Vec<Scenario> {
    let honest = Behaviour::default();
    let s = |name, buyer, seller, expect| Scenario { name, buyer, seller, expect };
    vec![
        s(
            "late_payment_is_failed_back_and_refunded",
            // The payment spends 130 of the 144 blocks in flight: past timeout - claim_margin.
            Behaviour { mock_payment_delay_blocks: 130, ..Default::default() },
            honest,
            Expect::FailedBackAndRefunded,
        ),
        s(
            "wrong_htlc_amount_is_refused",
            honest,
            tampered(MockTamper::FundingValue),
            Expect::Refused(
                "HtlcAmountMismatch | HtlcScriptMismatch",
                |c| {
                    matches!(
                        c,
                        BuyerCheckError::HtlcAmountMismatch { .. }
                            | BuyerCheckError::HtlcScriptMismatch(_)
                    )
                },
                SellerRefunds::NotItsOwnTamperedFunding,
            ),
        ),
        s(
            "wrong_htlc_script_is_refused",
            honest,
            tampered(MockTamper::HtlcScript),
            refused("HtlcScriptMismatch", |c| matches!(c, BuyerCheckError::HtlcScriptMismatch(_))),
        ),
        s(
            "wrong_invoice_hash_is_refused",
            honest,
            tampered(MockTamper::InvoiceHash),
            refused("InvoiceHashMismatch", |c| matches!(c, BuyerCheckError::InvoiceHashMismatch)),
        ),
        s(
            "expired_invoice_is_refused",
            honest,
            tampered(MockTamper::InvoiceExpired),
            refused("InvoiceExpired", |c| matches!(c, BuyerCheckError::InvoiceExpired)),
        ),
        s(
            "invoice_above_the_quote_is_refused",
            honest,
            tampered(MockTamper::InvoiceAmount),
            refused("InvoiceAmountMismatch", |c| {
                matches!(c, BuyerCheckError::InvoiceAmountMismatch { .. })
            }),
        ),
        s(
            "invoice_from_another_node_is_refused",
            honest,
            tampered(MockTamper::InvoicePayee),
            refused("InvoicePayee", |c| matches!(c, BuyerCheckError::InvoicePayee)),
        ),
        s(
            "cltv_budget_too_short_is_refused",
            Behaviour { max_route_cltv: Some(30), ..Default::default() },
            honest,
            refused("CltvBudgetTooShort", |c| {
                matches!(c, BuyerCheckError::CltvBudgetTooShort { .. })
            }),
        ),
        s(
            "duplicated_messages_change_nothing",
            wire_faults(true, false),
            wire_faults(true, false),
            Expect::CooperativeClaim,
        ),
        s(
            "reordered_messages_change_nothing",
            wire_faults(false, true),
            wire_faults(false, true),
            Expect::CooperativeClaim,
        ),
        s(
            "duplicated_and_reordered_messages_change_nothing",
            wire_faults(true, true),
            wire_faults(true, true),
            Expect::CooperativeClaim,
        ),
    ]
}

/// Runs one scenario over its own relay; `Ok(summary)` when the outcome is the expected one.
async fn run_scenario(sc: &Scenario) -> Result<String> {
    let mut s = setup(sc.buyer, sc.seller).await?;
    let outcome = drive(&mut s.buyer, &mut s.seller, 400).await;
    let result = check_scenario(sc, &s, outcome.map_err(anyhow::Error::from));
    teardown(s).await;
    result
}

fn check_scenario(sc: &Scenario, s: &Setup, driven: Result<u32>) -> Result<String> {
    let (paid, received, failed_back, duplicates, reversed) = {
        let w = lock(&s.world).map_err(|e| anyhow!("{e}"))?;
        let faults = (w.mock_duplicates_sent, w.mock_reversed_batches);
        (w.buyer_paid_msat, w.seller_received_msat, w.failed_back, faults.0, faults.1)
    };
    // The wire mocks must have had something to do.
    if sc.buyer.mock_duplicate && duplicates == 0 {
        return Err(anyhow!("nothing was duplicated"));
    }
    if sc.seller.mock_reorder && reversed == 0 {
        return Err(anyhow!("no batch was reordered"));
    }
    let purposes = purposes(&s.world);
    let seller = match &s.seller.swap {
        looper_conformance::Swap::Seller(Some(sw)) => Some(sw.state()),
        _ => None,
    };
    let buyer = buyer_state(&s.buyer);
    let ctx = || {
        format!(
            "buyer {}, seller {}, txs {purposes:?}, paid {paid}, received {received}: {:#?}",
            buyer.name(),
            s.seller.state_name(),
            log(&s.world)
        )
    };
    let blocks = match (driven, sc.expect) {
        (Ok(blocks), _) => blocks,
        // The tampering seller never finishes; the buyer's side is what is checked.
        (Err(_), Expect::Refused(_, _, SellerRefunds::NotItsOwnTamperedFunding)) => 400,
        (Err(e), _) => return Err(anyhow!("{e}; {}", ctx())),
    };
    match sc.expect {
        Expect::CooperativeClaim => {
            if !(matches!(buyer, BuyerState::Claimed { .. })
                && matches!(seller, Some(SellerState::Claimed { .. }))
                && purposes == [TxPurpose::Funding, TxPurpose::CooperativeClaim])
            {
                return Err(anyhow!("expected a cooperative claim; {}", ctx()));
            }
        }
        Expect::FailedBackAndRefunded => {
            if !(received == 0
                && failed_back >= 1
                // Retried or not, the buyer ends aborted having paid nothing.
                && matches!(buyer, BuyerState::Aborted { .. })
                && matches!(seller, Some(SellerState::Refunded { .. })))
            {
                return Err(anyhow!("expected failed back and refunded; {}", ctx()));
            }
        }
        Expect::Refused(name, ok, refunds) => {
            if refunds == SellerRefunds::Yes
                && !matches!(seller, Some(SellerState::Refunded { .. }))
            {
                return Err(anyhow!("expected the seller to refund; {}", ctx()));
            }
            let BuyerState::Aborted { check: Some(check), .. } = buyer else {
                return Err(anyhow!("expected the buyer to refuse on {name}; {}", ctx()));
            };
            if !ok(check) || paid != 0 || received != 0 {
                return Err(anyhow!("expected {name}, got {check:?}; {}", ctx()));
            }
        }
    }
    Ok(format!(
        "buyer {}, seller {}, {blocks} blocks, txs {purposes:?}, {duplicates} duplicates, \
         {reversed} reversed batches",
        buyer.name(),
        s.seller.state_name()
    ))
}

/// Every scenario of the state-machine simulation (`protocol/tests/simulation.rs`) not covered
/// above, over the real relay, each on its own relay and engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_scenarios_over_the_relay() -> Result<()> {
    let mut failures = Vec::new();
    for sc in scenarios() {
        let started = Instant::now();
        match run_scenario(&sc).await {
            Ok(summary) => {
                println!(
                    "SCENARIO {} ok in {:.2} s: {summary}",
                    sc.name,
                    started.elapsed().as_secs_f64()
                )
            }
            Err(e) => {
                println!("SCENARIO {} FAILED: {e:#}", sc.name);
                failures.push(sc.name);
            }
        }
    }
    assert!(failures.is_empty(), "failed scenarios: {failures:?}");
    Ok(())
}
