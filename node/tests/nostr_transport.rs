//! The Nostr transport against nostr-relay-builder's in-process relay on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bitcoin::Network;
use looper_node::nostr::wire::{self, Envelope, Offer, OFFER_KIND};
use looper_node::nostr::{
    build_gift_wrap, Incoming, MemoryProcessedEvents, NostrTransport, OfferFilter, ProcessedEvents,
    RateLimit, SendOptions, TransportConfig, TransportError, MAX_KEYS_PER_FILTER,
};
use nostr_relay_builder::prelude::{
    EventBuilder, Keys, Kind, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, RelayBuilder, Tag,
    Timestamp,
};
use nostr_sdk::Client;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

mod fixtures {
    use super::*;
    use bitcoin::Network;
    use looper_protocol::messages::{ErrorCode, ErrorMessage, Message, SwapRequest};
    use looper_protocol::{SwapDirection, SwapId};
    use secp256k1::{PublicKey, Secp256k1, SecretKey};

    fn pk(i: u8) -> PublicKey {
        // Any i in 1..=255 repeated 32 times is a valid scalar.
        match SecretKey::from_slice(&[i.max(1); 32]) {
            Ok(sk) => PublicKey::from_secret_key(&Secp256k1::new(), &sk),
            Err(_) => unreachable!("valid scalar"),
        }
    }

    pub fn offer(id: &str, network: Network, min: u64, max: u64, base: u64, ppm: u32) -> Offer {
        Offer {
            version: 1,
            offer_id: id.into(),
            network,
            direction: SwapDirection::LoopOut,
            min_amount_sat: min,
            max_amount_sat: max,
            fee_base_sat: base,
            fee_ppm: ppm,
            funding_fee_sat: 300,
            prepay_sat: None,
            min_confirmations: 1,
            timeout_delta: 288,
            claim_margin: 20,
            invoice_expiry_secs: 3_600,
            ln_node_id: pk(9),
            ln_address: Some("127.0.0.1:9735".into()),
            relays: vec!["ws://127.0.0.1:7777".into()],
            pow_difficulty: None,
            expires_at: Timestamp::now().as_secs() + 3600,
        }
    }

    /// A `swap_request` for offer `offer_id` with sequence `seq`.
    pub fn request_for(offer_id: &str, seq: u32) -> Envelope {
        Envelope::new(
            SwapId([seq as u8; 32]),
            seq,
            Message::SwapRequest(SwapRequest {
                offer_id: offer_id.into(),
                direction: SwapDirection::LoopOut,
                network: Network::Regtest,
                amount_sat: 100_000,
                buyer_musig_pubkey: pk(1),
                buyer_claim_pubkey: pk(2).x_only_public_key().0,
                max_total_fee_sat: 2_000,
                prepay_accepted: false,
            }),
        )
    }

    /// A `swap_request` with sequence `seq`.
    pub fn request(seq: u32) -> Envelope {
        request_for("offer-1", seq)
    }

    /// A message that is not a swap request (an `error`), with sequence `seq`.
    pub fn other(seq: u32) -> Envelope {
        Envelope::new(
            SwapId([7; 32]),
            seq,
            Message::Error(ErrorMessage::new(ErrorCode::InvalidState, "test")),
        )
    }

    pub fn is_request(m: &Incoming) -> bool {
        matches!(&m.message, Ok(e) if wire::is_swap_request(e))
    }

    pub fn seq_of(m: &Incoming) -> Option<u32> {
        m.message.as_ref().ok().map(|e| e.seq)
    }
}
use fixtures::*;

fn relay_builder() -> RelayBuilder {
    RelayBuilder::default().rate_limit(nostr_relay_builder::builder::RateLimit {
        max_reqs: 500,
        notes_per_minute: 100_000,
    })
}

async fn start_relay() -> Result<(LocalRelay, String)> {
    let relay = LocalRelay::new(relay_builder());
    relay.run().await?;
    let url = relay.url().await.to_string();
    Ok((relay, url))
}

fn config(relays: &[&str]) -> TransportConfig {
    let keys = Keys::generate();
    let mut c = TransportConfig::new(
        keys.secret_key().to_secret_bytes(),
        relays.iter().map(|s| s.to_string()).collect(),
    );
    c.retry_interval = Duration::from_secs(1);
    c.fetch_timeout = Duration::from_secs(5);
    c
}

async fn transport(c: TransportConfig) -> Result<(NostrTransport, mpsc::Receiver<Incoming>)> {
    let t = NostrTransport::connect(c, Arc::new(MemoryProcessedEvents::new())).await?;
    let rx = t.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    Ok((t, rx))
}

async fn recv(rx: &mut mpsc::Receiver<Incoming>) -> Result<Incoming> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("timed out waiting for a message")?
        .ok_or_else(|| anyhow!("channel closed"))
}

/// Nothing more arrives within `d`.
async fn quiet(rx: &mut mpsc::Receiver<Incoming>, d: Duration) -> Result<()> {
    match tokio::time::timeout(d, rx.recv()).await {
        Err(_) => Ok(()),
        Ok(m) => Err(anyhow!("unexpected message: {m:?}")),
    }
}

async fn raw_client(url: &str) -> Result<(Client, Keys)> {
    let keys = Keys::generate();
    let client = Client::new(keys.clone());
    client.add_relay(url).await?;
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    Ok((client, keys))
}

async fn poll_until<F, Fut>(what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!("timed out: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_publish_discover_filter_withdraw() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let (seller, _rx) = transport(config(&[&url])).await?;
    let (seller2, _rx2) = transport(config(&[&url])).await?;
    let (buyer, _rx3) = transport(config(&[&url])).await?;

    seller.publish_offer(&offer("cheap", Network::Regtest, 10_000, 1_000_000, 100, 1_000)).await?;
    seller.publish_offer(&offer("small", Network::Regtest, 10_000, 50_000, 0, 0)).await?;
    seller2
        .publish_offer(&offer("dear", Network::Regtest, 10_000, 1_000_000, 1_000, 5_000))
        .await?;
    seller2.publish_offer(&offer("signet", Network::Signet, 10_000, 1_000_000, 0, 0)).await?;

    // Hostile or broken offers from a raw client: all ignored.
    let (raw, raw_keys) = raw_client(&url).await?;
    let exp = Tag::expiration(Timestamp::from_secs(Timestamp::now().as_secs() + 3600));
    let n = Tag::parse(["n", "regtest"])?;
    let bad =
        [
            EventBuilder::new(Kind::Custom(OFFER_KIND), "{not json").tags([
                Tag::identifier("bad"),
                exp.clone(),
                n.clone(),
            ]),
            // valid content, but no expiration
            EventBuilder::new(
                Kind::Custom(OFFER_KIND),
                wire::offer_content(&offer("noexp", Network::Regtest, 1, 10_000_000, 0, 0)),
            )
            .tags([Tag::identifier("noexp"), n.clone()]),
            // d tag differs from the offer id
            EventBuilder::new(
                Kind::Custom(OFFER_KIND),
                wire::offer_content(&offer("x", Network::Regtest, 1, 10_000_000, 0, 0)),
            )
            .tags([Tag::identifier("y"), exp.clone(), n.clone()]),
            // claims regtest in the tag, signet in the content
            EventBuilder::new(
                Kind::Custom(OFFER_KIND),
                wire::offer_content(&offer("liar", Network::Signet, 1, 10_000_000, 0, 0)),
            )
            .tags([Tag::identifier("liar"), exp.clone(), n.clone()]),
            // oversize content
            EventBuilder::new(Kind::Custom(OFFER_KIND), "x".repeat(wire::MAX_OFFER_BYTES + 1))
                .tags([Tag::identifier("big"), exp.clone(), n.clone()]),
        ];
    for b in bad {
        raw.send_event(&b.sign_with_keys(&raw_keys)?).await?;
    }

    let want = OfferFilter {
        network: Network::Regtest,
        amount_sat: 100_000,
        sellers: vec![],
        direction: looper_protocol::SwapDirection::LoopOut,
    };
    let found = buyer.discover_offers(&want).await?;
    let ids: Vec<&str> = found.iter().map(|o| o.offer.offer_id.as_str()).collect();
    assert_eq!(ids, ["cheap", "dear"], "ranked by cost, filtered: {found:#?}");
    assert_eq!(found[0].seller, seller.public_key());
    assert_eq!(found[0].cost_sat, 100 + 100 + 300);
    assert_eq!(found[1].seller, seller2.public_key());

    // A small amount fits all three regtest offers; "small" is the cheapest.
    let small = buyer.discover_offers(&OfferFilter { amount_sat: 20_000, ..want.clone() }).await?;
    let ids: Vec<&str> = small.iter().map(|o| o.offer.offer_id.as_str()).collect();
    assert_eq!(ids, ["small", "cheap", "dear"]);

    // Seller filter.
    let only = buyer
        .discover_offers(&OfferFilter { sellers: vec![seller2.public_key()], ..want.clone() })
        .await?;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].offer.offer_id, "dear");

    // Refresh republishes with a later created_at; withdraw removes the offer.
    assert_eq!(seller.refresh_offers().await?, 2);
    seller.withdraw_offer("cheap").await?;
    let found = buyer.discover_offers(&want).await?;
    let ids: Vec<&str> = found.iter().map(|o| o.offer.offer_id.as_str()).collect();
    assert_eq!(ids, ["dear"]);
    assert_eq!(seller.refresh_offers().await?, 1, "withdrawn offers are not refreshed");

    for t in [&seller, &seller2, &buyer] {
        t.shutdown().await;
    }
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_expire() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let mut c = config(&[&url]);
    c.offer_ttl = Duration::from_secs(2);
    let (seller, _rx) = transport(c).await?;
    let (buyer, _rx2) = transport(config(&[&url])).await?;
    seller.publish_offer(&offer("short", Network::Regtest, 1_000, 1_000_000, 0, 0)).await?;
    let want = OfferFilter {
        network: Network::Regtest,
        amount_sat: 10_000,
        sellers: vec![],
        direction: looper_protocol::SwapDirection::LoopOut,
    };
    assert_eq!(buyer.discover_offers(&want).await?.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(buyer.discover_offers(&want).await?.is_empty(), "expired offer dropped");
    seller.shutdown().await;
    buyer.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_round_trip_and_decode_errors() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let (alice, mut alice_rx) = transport(config(&[&url])).await?;
    let (bob, mut bob_rx) = transport(config(&[&url])).await?;

    let env = request(0);
    let report = alice.send(&bob.public_key(), &[], &env).await?;
    let got = recv(&mut bob_rx).await?;
    assert_eq!(got.sender, alice.public_key());
    assert_eq!(got.event_id, report.event_id);
    assert_eq!(got.message.as_ref().ok(), Some(&env));

    bob.send(&alice.public_key(), &alice.relays(), &other(1)).await?;
    let back = recv(&mut alice_rx).await?;
    assert_eq!(back.sender, bob.public_key());
    assert_eq!(seq_of(&back), Some(1));

    // A malformed envelope is delivered as a decode error, so the engine can answer `error`.
    alice.send_raw(&bob.public_key(), &[], "{\"garbage\":".into(), SendOptions::default()).await?;
    let bad = recv(&mut bob_rx).await?;
    assert_eq!(bad.sender, alice.public_key());
    assert!(bad.message.is_err());

    // Gift wraps that do not open, or carry another rumor kind, are dropped.
    let (raw, raw_keys) = raw_client(&url).await?;
    let chat = EventBuilder::private_msg(&raw_keys, bob.public_key(), "hello", []).await?;
    raw.send_event(&chat).await?;
    alice.send(&bob.public_key(), &[], &other(2)).await?;
    let next = recv(&mut bob_rx).await?;
    assert_eq!(seq_of(&next), Some(2), "kind-14 chat message dropped");
    poll_until("invalid counted", || async { Ok(bob.stats().await.invalid >= 1) }).await?;

    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_delivered_once() -> Result<()> {
    let (relay1, url1) = start_relay().await?;
    let (relay2, url2) = start_relay().await?;
    let (bob, mut bob_rx) = transport(config(&[&url1, &url2])).await?;
    let alice = Keys::generate();
    let wrapped = build_gift_wrap(
        &alice,
        &bob.public_key(),
        wire::envelope_content(&request(0)),
        Timestamp::from_secs(Timestamp::now().as_secs() + 3600),
        None,
    )
    .await?;
    // The same gift wrap through two relays, twice each.
    for url in [&url1, &url2] {
        let (raw, _) = raw_client(url).await?;
        raw.send_event(&wrapped).await?;
        raw.send_event(&wrapped).await?;
    }
    let got = recv(&mut bob_rx).await?;
    assert_eq!(got.sender, alice.public_key());
    quiet(&mut bob_rx, Duration::from_secs(2)).await?;
    // The relay pool already drops most copies; whatever reaches the receiver is filtered by id.
    assert_eq!(bob.stats().await.delivered, 1);
    bob.shutdown().await;
    relay1.shutdown();
    relay2.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_ids_survive_restart() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let (alice, _alice_rx) = transport(config(&[&url])).await?;
    let bob_config = config(&[&url]);
    let store = Arc::new(MemoryProcessedEvents::new());
    let bob = NostrTransport::connect(bob_config.clone(), store.clone()).await?;
    let mut bob_rx = bob.incoming().ok_or_else(|| anyhow!("taken"))?;
    let first = alice.send(&bob.public_key(), &[], &request(0)).await?;
    let got = recv(&mut bob_rx).await?;
    assert_eq!(got.event_id, first.event_id);
    assert!(store.is_processed(first.event_id.to_bytes())?);
    bob.shutdown().await;
    drop(bob_rx);

    // While bob is down, alice sends another message; it is stored by the relay.
    let second = alice.send(&bob.public_key(), &[], &other(1)).await?;

    // Bob restarts with the same store: the relay replays both, only the new one is delivered.
    let bob = NostrTransport::connect(bob_config, store.clone()).await?;
    let mut bob_rx = bob.incoming().ok_or_else(|| anyhow!("taken"))?;
    let got = recv(&mut bob_rx).await?;
    assert_eq!(got.event_id, second.event_id);
    assert_eq!(seq_of(&got), Some(1));
    quiet(&mut bob_rx, Duration::from_secs(2)).await?;
    assert_eq!(store.len(), 2);

    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_ack_redelivers_unacked_after_restart() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let (alice, _alice_rx) = transport(config(&[&url])).await?;
    let mut bob_config = config(&[&url]);
    bob_config.manual_ack = true;
    let store = Arc::new(MemoryProcessedEvents::new());
    let bob = NostrTransport::connect(bob_config.clone(), store.clone()).await?;
    let mut bob_rx = bob.incoming().ok_or_else(|| anyhow!("taken"))?;
    alice.send(&bob.public_key(), &[], &request(0)).await?;
    let m0 = recv(&mut bob_rx).await?;
    bob.ack(&m0.event_id)?;
    alice.send(&bob.public_key(), &[], &other(1)).await?;
    let m1 = recv(&mut bob_rx).await?;
    assert_eq!(seq_of(&m1), Some(1));
    // Crash before acknowledging m1.
    bob.shutdown().await;
    drop(bob_rx);
    let bob = NostrTransport::connect(bob_config, store).await?;
    let mut bob_rx = bob.incoming().ok_or_else(|| anyhow!("taken"))?;
    let again = recv(&mut bob_rx).await?;
    assert_eq!(again.event_id, m1.event_id);
    quiet(&mut bob_rx, Duration::from_secs(2)).await?;
    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_events_are_dropped_unread() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let (alice, _alice_rx) = transport(config(&[&url])).await?;
    let mut bob_config = config(&[&url]);
    bob_config.max_event_bytes = 8_000;
    let (bob, mut bob_rx) = transport(bob_config).await?;

    // A valid message whose gift wrap is larger than bob accepts.
    let big = format!("{{\"pad\":\"{}\"}}", "a".repeat(6_000));
    let sent = alice.send_raw(&bob.public_key(), &[], big, SendOptions::default()).await?;
    assert!(sent.event_bytes > 8_000);
    alice.send(&bob.public_key(), &[], &request(7)).await?;
    let got = recv(&mut bob_rx).await?;
    assert_eq!(seq_of(&got), Some(7));
    quiet(&mut bob_rx, Duration::from_secs(1)).await?;
    assert_eq!(bob.stats().await.delivered, 1);

    // The sender refuses envelopes over the protocol limit outright.
    let too_big = alice
        .send_raw(
            &bob.public_key(),
            &[],
            "x".repeat(wire::MAX_MESSAGE_BYTES + 1),
            SendOptions::default(),
        )
        .await;
    assert!(too_big.is_err());

    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_requests_are_rate_limited_per_sender() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let mut bob_config = config(&[&url]);
    bob_config.request_rate_limit = RateLimit::new(2, 1);
    let (bob, mut bob_rx) = transport(bob_config).await?;
    let (alice, _a) = transport(config(&[&url])).await?;
    let (carol, _c) = transport(config(&[&url])).await?;

    for seq in 0..5 {
        alice.send(&bob.public_key(), &[], &request(seq)).await?;
    }
    // Other message types from the same sender are not limited by the request bucket.
    alice.send(&bob.public_key(), &[], &other(10)).await?;
    carol.send(&bob.public_key(), &[], &request(20)).await?;

    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(recv(&mut bob_rx).await?);
    }
    quiet(&mut bob_rx, Duration::from_secs(2)).await?;
    let from_alice_requests =
        got.iter().filter(|m| m.sender == alice.public_key() && is_request(m)).count();
    assert_eq!(from_alice_requests, 2);
    assert!(got.iter().any(|m| seq_of(m) == Some(10)));
    assert!(got.iter().any(|m| m.sender == carol.public_key()));
    assert_eq!(bob.stats().await.rate_limited, 3);

    for t in [&alice, &bob, &carol] {
        t.shutdown().await;
    }
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_of_work_required_on_swap_requests() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let mut bob_config = config(&[&url]);
    bob_config.pow_difficulty = Some(10);
    let (bob, mut bob_rx) = transport(bob_config).await?;
    let (alice, _a) = transport(config(&[&url])).await?;

    // Without work: dropped.
    alice.send(&bob.public_key(), &[], &request(0)).await?;
    // Too little work: dropped.
    let weak = SendOptions { pow: Some(4), ..Default::default() };
    alice.send_with(&bob.public_key(), &[], &request(1), weak).await?;
    // Enough work: delivered.
    let strong = SendOptions { pow: Some(10), ..Default::default() };
    let report = alice.send_with(&bob.public_key(), &[], &request(2), strong).await?;
    let got = recv(&mut bob_rx).await?;
    assert_eq!(got.event_id, report.event_id);
    assert_eq!(seq_of(&got), Some(2));
    assert!(got.pow_bits >= 10);
    // Later messages of a swap need no work.
    alice.send(&bob.public_key(), &[], &other(3)).await?;
    assert_eq!(seq_of(&recv(&mut bob_rx).await?), Some(3));
    quiet(&mut bob_rx, Duration::from_secs(1)).await?;
    assert_eq!(bob.stats().await.insufficient_pow, 2);

    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_of_work_demanded_by_the_offer() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let (seller, mut seller_rx) = transport(config(&[&url])).await?;
    let (buyer, _b) = transport(config(&[&url])).await?;
    let mut o = offer("worky", Network::Regtest, 10_000, 1_000_000, 0, 0);
    o.pow_difficulty = Some(8);
    seller.publish_offer(&o).await?;
    let want = OfferFilter {
        network: Network::Regtest,
        amount_sat: 50_000,
        sellers: vec![],
        direction: looper_protocol::SwapDirection::LoopOut,
    };
    let found = buyer.discover_offers(&want).await?;
    assert_eq!(found.len(), 1);
    let pow = found[0].offer.pow_difficulty;
    assert_eq!(pow, Some(8));

    // A request for another offer needs no work; one for this offer does.
    buyer.send(&seller.public_key(), &found[0].offer.relays, &request_for("worky", 0)).await?;
    let opts = SendOptions { pow, ..Default::default() };
    buyer
        .send_with(&seller.public_key(), &found[0].offer.relays, &request_for("worky", 1), opts)
        .await?;
    buyer.send(&seller.public_key(), &[], &request_for("other", 2)).await?;
    let mut seqs = vec![seq_of(&recv(&mut seller_rx).await?), seq_of(&recv(&mut seller_rx).await?)];
    seqs.sort();
    assert_eq!(seqs, [Some(1), Some(2)]);
    quiet(&mut seller_rx, Duration::from_secs(1)).await?;
    assert_eq!(seller.stats().await.insufficient_pow, 1);

    buyer.shutdown().await;
    seller.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_keys_are_heard_and_spoken_besides_the_identity() -> Result<()> {
    // A buyer talks to a seller with a swap's own key: the seller sees that key as the sender and
    // answers to it; the buyer hears the answer on that key, as well as its identity's messages,
    // until it gives the key back. More keys than one filter holds spread over several
    // subscriptions, all heard.
    let (relay, url) = start_relay().await?;
    let (seller, mut seller_rx) = transport(config(&[&url])).await?;
    let (buyer, mut buyer_rx) = transport(config(&[&url])).await?;

    // An answer stored before the key is added comes once it is (no `since`: a resumed swap).
    let early = Keys::generate();
    seller.send(&early.public_key(), &[], &other(7)).await?;
    let keys: Vec<Keys> = (0..MAX_KEYS_PER_FILTER + 5).map(|_| Keys::generate()).collect();
    for k in &keys {
        buyer.add_key(k.clone()).await?;
    }
    buyer.add_key(keys[0].clone()).await?;
    buyer.add_key(early.clone()).await?;
    assert_eq!(buyer.swap_keys().len(), MAX_KEYS_PER_FILTER + 6, "a key added twice is one");
    let got = recv(&mut buyer_rx).await?;
    assert_eq!((got.recipient, seq_of(&got)), (early.public_key(), Some(7)));

    // The last key (in the second subscription) speaks and hears.
    let last = keys[MAX_KEYS_PER_FILTER + 4].clone();
    let as_last = SendOptions { from: Some(last.public_key()), ..Default::default() };
    buyer.send_with(&seller.public_key(), &[], &request(0), as_last).await?;
    let req = recv(&mut seller_rx).await?;
    assert_eq!((req.sender, req.recipient), (last.public_key(), seller.public_key()));
    assert_ne!(req.sender, buyer.public_key(), "the identity does not show");
    seller.send(&req.sender, &[], &other(1)).await?;
    let answer = recv(&mut buyer_rx).await?;
    assert_eq!(
        (answer.recipient, answer.sender, seq_of(&answer)),
        (last.public_key(), seller.public_key(), Some(1))
    );
    // The identity is heard as before, and a key of the first subscription too.
    seller.send(&buyer.public_key(), &[], &other(2)).await?;
    assert_eq!(recv(&mut buyer_rx).await?.recipient, buyer.public_key());
    seller.send(&keys[0].public_key(), &[], &other(3)).await?;
    assert_eq!(recv(&mut buyer_rx).await?.recipient, keys[0].public_key());

    // Given back: nothing more is heard on the key, and nothing can be sent as it.
    buyer.remove_key(&last.public_key()).await;
    assert!(!buyer.swap_keys().contains(&last.public_key()));
    seller.send(&last.public_key(), &[], &other(4)).await?;
    quiet(&mut buyer_rx, Duration::from_secs(2)).await?;
    let refused = buyer.send_with(&seller.public_key(), &[], &request(5), as_last).await;
    assert!(matches!(refused, Err(TransportError::UnknownKey(k)) if k == last.public_key()));
    for k in keys.iter().chain([&early]) {
        buyer.remove_key(&k.public_key()).await;
    }
    assert!(buyer.swap_keys().is_empty());
    // The identity is still heard once every swap key is gone.
    seller.send(&buyer.public_key(), &[], &other(6)).await?;
    assert_eq!(seq_of(&recv(&mut buyer_rx).await?), Some(6));

    buyer.shutdown().await;
    seller.shutdown().await;
    relay.shutdown();
    Ok(())
}

/// The keys `transport` asks the relay at `url` for (the `#p` of its subscriptions there).
async fn keys_asked(transport: &NostrTransport, url: &str) -> Result<Vec<String>> {
    use nostr_sdk::{Alphabet, SingleLetterTag};
    let relay = transport.client().relay(url).await?;
    let mut keys: Vec<String> = relay
        .subscriptions()
        .await
        .values()
        .flatten()
        .filter_map(|f| f.generic_tags.get(&SingleLetterTag::lowercase(Alphabet::P)))
        .flatten()
        .cloned()
        .collect();
    keys.sort();
    Ok(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_relay_is_asked_only_for_the_keys_that_spoke_there() -> Result<()> {
    // A buyer with two swap keys writes to a seller on the seller's relay with one of them: that
    // relay is asked for that key's gift wraps only (the answer arrives), never for the buyer's
    // identity or its other swap's key; the buyer's own relay is asked for all of them.
    let (relay_s, url_s) = start_relay().await?;
    let (relay_b, url_b) = start_relay().await?;
    let (seller, mut seller_rx) = transport(config(&[&url_s])).await?;
    let (buyer, mut buyer_rx) = transport(config(&[&url_b])).await?;
    let (a, b) = (Keys::generate(), Keys::generate());
    buyer.add_key(a.clone()).await?;
    buyer.add_key(b.clone()).await?;
    let as_a = SendOptions { from: Some(a.public_key()), ..Default::default() };
    buyer.send_with(&seller.public_key(), std::slice::from_ref(&url_s), &request(0), as_a).await?;
    assert_eq!(recv(&mut seller_rx).await?.sender, a.public_key());
    seller.send(&a.public_key(), &[], &other(1)).await?;
    let answer = recv(&mut buyer_rx).await?;
    assert_eq!((answer.recipient, seq_of(&answer)), (a.public_key(), Some(1)));

    assert_eq!(keys_asked(&buyer, &url_s).await?, vec![a.public_key().to_hex()]);
    let mut all = [buyer.public_key(), a.public_key(), b.public_key()]
        .iter()
        .map(|k| k.to_hex())
        .collect::<Vec<_>>();
    all.sort();
    assert_eq!(keys_asked(&buyer, &url_b).await?, all);
    // Given back: no relay is asked for it any more.
    buyer.remove_key(&a.public_key()).await;
    assert!(keys_asked(&buyer, &url_s).await?.is_empty());
    assert!(!keys_asked(&buyer, &url_b).await?.contains(&a.public_key().to_hex()));

    buyer.shutdown().await;
    seller.shutdown().await;
    relay_s.shutdown();
    relay_b.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_identity_is_asked_for_work_before_decrypting() -> Result<()> {
    // A node serving only a proof-of-work offer, expecting no unmined message on its identity,
    // drops unmined gift wraps to its identity unread; its sellers' unmined answers to a swap key
    // are read.
    let (relay, url) = start_relay().await?;
    let (node, mut node_rx) = transport(config(&[&url])).await?;
    let (peer, _p) = transport(config(&[&url])).await?;
    let mut o = offer("worky", Network::Regtest, 10_000, 1_000_000, 0, 0);
    o.pow_difficulty = Some(8);
    node.publish_offer(&o).await?;
    node.set_unmined_expected(false);
    let swap_key = Keys::generate();
    node.add_key(swap_key.clone()).await?;
    peer.send(&node.public_key(), &[], &other(1)).await?;
    peer.send(&swap_key.public_key(), &[], &other(2)).await?;
    let got = recv(&mut node_rx).await?;
    assert_eq!((got.recipient, seq_of(&got)), (swap_key.public_key(), Some(2)));
    quiet(&mut node_rx, Duration::from_secs(1)).await?;
    let st = node.stats().await;
    assert_eq!((st.insufficient_pow, st.invalid), (1, 0), "{st:?}");

    peer.shutdown().await;
    node.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_relays_down_still_delivers() -> Result<()> {
    let (relay1, url1) = start_relay().await?;
    let (relay2, url2) = start_relay().await?;
    let (alice, mut alice_rx) = transport(config(&[&url1, &url2])).await?;
    let (bob, mut bob_rx) = transport(config(&[&url1, &url2])).await?;

    alice.send(&bob.public_key(), &[], &request(0)).await?;
    assert_eq!(seq_of(&recv(&mut bob_rx).await?), Some(0));

    relay2.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let report = alice.send(&bob.public_key(), &[], &other(1)).await?;
    assert!(started.elapsed() < Duration::from_secs(8), "send does not wait for the dead relay");
    assert_eq!(report.accepted_by.to_string(), url1);
    assert_eq!(seq_of(&recv(&mut bob_rx).await?), Some(1));
    bob.send(&alice.public_key(), &[], &other(2)).await?;
    assert_eq!(seq_of(&recv(&mut alice_rx).await?), Some(2));

    alice.shutdown().await;
    bob.shutdown().await;
    relay1.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_mid_way_reconnects() -> Result<()> {
    // One relay whose events survive a restart on the same port (a persistent relay).
    let db = Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: None,
    }));
    let relay = LocalRelay::new(relay_builder().database(db.clone()));
    relay.run().await?;
    let url = relay.url().await.to_string();
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow!("no port in {url}"))?;

    let (alice, _a) = transport(config(&[&url])).await?;
    let (bob, mut bob_rx) = transport(config(&[&url])).await?;
    alice.send(&bob.public_key(), &[], &request(0)).await?;
    assert_eq!(seq_of(&recv(&mut bob_rx).await?), Some(0));

    relay.shutdown();
    drop(relay);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Alice sends while the relay is down; the send keeps retrying until the relay is back.
    let bob_pk = bob.public_key();
    let alice2 = alice.clone();
    let sending = tokio::spawn(async move { alice2.send(&bob_pk, &[], &other(1)).await });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let relay = LocalRelay::new(relay_builder().database(db).port(port));
    relay.run().await?;
    sending.await??;
    let got = recv(&mut bob_rx).await?;
    assert_eq!(seq_of(&got), Some(1));
    quiet(&mut bob_rx, Duration::from_secs(1)).await?;

    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_a_buyer_on_other_relays() -> Result<()> {
    // Seller and buyer have no relay in common: the buyer sends to the seller's advertised relay
    // and from then on also reads there, so the seller's replies on its own relay arrive.
    let (relay_s, url_s) = start_relay().await?;
    let (relay_b, url_b) = start_relay().await?;
    let (seller, mut seller_rx) = transport(config(&[&url_s])).await?;
    let (buyer, mut buyer_rx) = transport(config(&[&url_b])).await?;
    buyer.send(&seller.public_key(), std::slice::from_ref(&url_s), &request(0)).await?;
    let got = recv(&mut seller_rx).await?;
    assert_eq!(got.sender, buyer.public_key());
    seller.send(&buyer.public_key(), &[], &other(1)).await?;
    assert_eq!(seq_of(&recv(&mut buyer_rx).await?), Some(1));
    buyer.shutdown().await;
    seller.shutdown().await;
    relay_s.shutdown();
    relay_b.shutdown();
    Ok(())
}

/// A SOCKS5 proxy on 127.0.0.1 (no authentication, CONNECT only, as Tor's): pipes each
/// connection to its target and records the targets, one per connection.
struct Socks5Proxy {
    addr: std::net::SocketAddr,
    targets: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Socks5Proxy {
    async fn start() -> Result<Socks5Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let _ = Self::serve(client, seen).await;
                });
            }
        });
        Ok(Socks5Proxy { addr, targets, task })
    }

    async fn serve(
        mut client: tokio::net::TcpStream,
        seen: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await?;
        anyhow::ensure!(head[0] == 5, "not SOCKS5");
        let mut methods = vec![0u8; usize::from(head[1])];
        client.read_exact(&mut methods).await?;
        anyhow::ensure!(methods.contains(&0), "no 'no authentication' method");
        client.write_all(&[5, 0]).await?;
        let mut req = [0u8; 4];
        client.read_exact(&mut req).await?;
        anyhow::ensure!(req[1] == 1, "not CONNECT");
        let host = match req[3] {
            1 => {
                let mut ip = [0u8; 4];
                client.read_exact(&mut ip).await?;
                std::net::Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let len = client.read_u8().await?;
                let mut name = vec![0u8; usize::from(len)];
                client.read_exact(&mut name).await?;
                String::from_utf8(name)?
            }
            other => anyhow::bail!("address type {other} not served"),
        };
        let port = client.read_u16().await?;
        let target = format!("{host}:{port}");
        seen.lock().map_err(|_| anyhow!("poisoned"))?.push(target.clone());
        let mut upstream = tokio::net::TcpStream::connect(&target).await?;
        client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With a `proxy`, the transport's relay connections (offers, swap messages) and the backups'
/// go through it: the proxy sees each connection to the relay, and the traffic works through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_traffic_goes_through_the_proxy() -> Result<()> {
    let (relay, url) = start_relay().await?;
    let relay_addr = url.trim_start_matches("ws://").trim_end_matches('/').to_string();
    let proxy = Socks5Proxy::start().await?;
    let mut proxied = config(&[&url]);
    proxied.proxy = Some(proxy.addr);
    let (seller, mut seller_rx) = transport(proxied).await?;
    assert_eq!(proxy.targets(), vec![relay_addr.clone()], "the transport's one connection");
    let (buyer, mut buyer_rx) = transport(config(&[&url])).await?;
    assert_eq!(proxy.targets().len(), 1, "a transport without a proxy connects directly");

    // Offers and messages both ways, through the proxy.
    seller.publish_offer(&offer("tor", Network::Regtest, 10_000, 1_000_000, 0, 0)).await?;
    let want = OfferFilter {
        network: Network::Regtest,
        amount_sat: 100_000,
        sellers: vec![],
        direction: looper_protocol::SwapDirection::LoopOut,
    };
    let found = buyer.discover_offers(&want).await?;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].seller, seller.public_key());
    buyer.send(&seller.public_key(), &seller.relays(), &request_for("tor", 0)).await?;
    assert!(is_request(&recv(&mut seller_rx).await?));
    seller.send(&buyer.public_key(), &[], &other(1)).await?;
    assert_eq!(seq_of(&recv(&mut buyer_rx).await?), Some(1));

    // The backups' own relay client.
    let backups = looper_node::backup::BackupRelays::connect_via(
        std::slice::from_ref(&url),
        Some(proxy.addr),
    )
    .await?;
    backups.fetch(Keys::generate().public_key(), Duration::from_secs(5)).await?;
    assert_eq!(proxy.targets(), vec![relay_addr.clone(), relay_addr], "and the backups'");

    backups.shutdown().await;
    seller.shutdown().await;
    buyer.shutdown().await;
    relay.shutdown();
    Ok(())
}
