//! Relay faults beside whole swaps: an unresponsive relay (nostr-relay-builder's `MockRelay` with
//! `RelayTestOptions::unresponsive_connection`), a relay that answers every subscription with
//! random events (`RelayTestOptions::send_random_events`), garbage gift wraps from a raw client,
//! and an unknown message type. In each case the honest swap still completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bitcoin::Network;
use looper_conformance::pair::{transport, Pair, PairOptions};
use looper_node::nostr::wire::{self, Envelope};
use looper_node::nostr::{Incoming, OfferFilter, SendOptions};
use looper_node::store::SwapStore;
use looper_protocol::messages::{AbortReason, ErrorCode, Message, SwapAbort};
use looper_protocol::swap::TxPurpose;
use looper_protocol::SwapId;
use nostr_relay_builder::builder::{RateLimit, RelayTestOptions};
use nostr_relay_builder::prelude::{Keys, LocalRelay, MockRelay, RelayBuilder};
use nostr_sdk::{Client, EventBuilder, Kind, Tag};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);
const CLAIMED: &[&str] = &["Claimed"];

/// Every test is bounded: a hang fails it instead of stalling the suite.
const TEST_BOUND: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .map_err(|_| anyhow!("test exceeded {TEST_BOUND:?}"))?
}

fn generous() -> RateLimit {
    RateLimit { max_reqs: 500, notes_per_minute: 100_000 }
}

async fn start_local() -> Result<(LocalRelay, String)> {
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(generous()));
    relay.run().await?;
    let url = relay.url().await.to_string();
    Ok((relay, url))
}

/// Both nodes over `relays`; the buyer discovers the offer there or gets it out of band; with
/// `hold`, its payment waits 30 blocks (room for what a test does mid-swap).
async fn pair(relays: &[String], discover: bool, hold: bool) -> Result<Pair> {
    let mut o = PairOptions::new(relays.to_vec());
    o.discover = discover;
    if hold {
        o.mock_payment_delay_blocks = 30;
    }
    Ok(Pair::start(o).await?)
}

async fn assert_cooperative_claim(p: &Pair) -> Result<()> {
    p.wait_for(CLAIMED, CLAIMED, Duration::from_secs(40)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    // The honest parties never got an error from each other.
    for node in [&p.buyer, &p.seller] {
        let events = node.store.inner.swap_events(&p.swap_id, 0)?;
        assert!(events.iter().all(|e| e.event["event"] != "peer_error"), "{events:?}");
    }
    Ok(())
}

/// (a) One of the two relays accepts TCP connections but never completes the websocket
/// handshake (`unresponsive_connection` longer than the test). Offer discovery and every swap
/// message go through the other relay; the swap completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_relay_beside_a_working_one() -> Result<()> {
    bounded(async {
        let started = Instant::now();
        let dead = MockRelay::run_with_opts(RelayTestOptions {
            unresponsive_connection: Some(Duration::from_secs(600)),
            send_random_events: false,
        })
        .await?;
        let dead_url = dead.url().await.to_string();
        let (good, good_url) = start_local().await?;
        // The unresponsive relay first: nothing may wait on it.
        let relays = vec![dead_url.clone(), good_url.clone()];
        let p = pair(&relays, true, false).await?;
        assert_cooperative_claim(&p).await?;
        let (bs, ss) = (p.buyer_t.stats().await, p.seller_t.stats().await);
        assert!(bs.delivered > 0 && ss.delivered > 0);
        println!(
            "unresponsive relay: swap done in {:.2} s; buyer {bs:?}; seller {ss:?}",
            started.elapsed().as_secs_f64()
        );
        p.shutdown().await;
        good.shutdown();
        dead.shutdown();
        Ok(())
    })
    .await
}

/// (b1) The only relay answers every subscription with random signed text notes instead of the
/// stored events (`send_random_events`); live events still flow. Both parties receive the
/// junk on their gift-wrap subscription. Discovery finds no offer (the relay never returns
/// stored events), so the buyer takes the offer out of band; the swap completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_events_relay() -> Result<()> {
    bounded(async {
        let relay = MockRelay::run_with_opts(RelayTestOptions {
            unresponsive_connection: None,
            send_random_events: true,
        })
        .await?;
        let url = relay.url().await.to_string();
        let relays = vec![url.clone()];

        // A raw client sees what the parties see: random notes on any subscription.
        let raw = Client::new(Keys::generate());
        raw.add_relay(&url).await?;
        raw.connect().await;
        raw.wait_for_connection(Duration::from_secs(5)).await;
        let junk = raw
            .fetch_events(
                nostr_sdk::Filter::new().kind(Kind::GiftWrap).pubkey(Keys::generate().public_key()),
                Duration::from_secs(5),
            )
            .await?;
        // 0.44.1 builds 500 identical text notes ("Test", one random key, one second): they share
        // an event id, so a subscription gets a handful at most.
        assert!(!junk.is_empty(), "the mock relay sent random events");
        assert!(junk.iter().all(|e| e.kind == Kind::TextNote));
        raw.shutdown().await;

        let p = pair(&relays, false, false).await?;
        let found = p
            .buyer_t
            .discover_offers(&OfferFilter {
                network: Network::Regtest,
                amount_sat: 200_000,
                sellers: vec![],
                direction: looper_protocol::SwapDirection::LoopOut,
            })
            .await?;
        assert!(found.is_empty(), "random notes are not offers: {found:?}");
        assert_cooperative_claim(&p).await?;
        let (bs, ss) = (p.buyer_t.stats().await, p.seller_t.stats().await);
        // Text notes are not gift wraps to us: dropped before counting.
        assert_eq!(bs.invalid + ss.invalid, 0);
        println!("random events relay: buyer {bs:?}; seller {ss:?}");
        p.shutdown().await;
        relay.shutdown();
        Ok(())
    })
    .await
}

/// (b2) A raw client publishes garbage addressed to both parties on a normal relay, before and
/// during the swap: gift wraps whose content is not NIP-44, gift wraps wrapping a seal of the
/// wrong kind, a real NIP-59 gift wrap of a kind-1 rumor, and plain text notes tagging them.
/// Nothing panics, the transports count the bad wraps as invalid and the swap completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_events_to_both_parties() -> Result<()> {
    bounded(async {
        let (relay, url) = start_local().await?;
        let relays = vec![url.clone()];
        let p = pair(&relays, true, true).await?;
        let targets = [p.buyer_t.public_key(), p.seller_t.public_key()];

        let raw_keys = Keys::generate();
        let raw = Client::new(raw_keys.clone());
        raw.add_relay(&url).await?;
        raw.connect().await;
        raw.wait_for_connection(Duration::from_secs(5)).await;
        let mut wraps_sent = 0u64;
        let spam = |round: u32| {
            let raw = raw.clone();
            let raw_keys = raw_keys.clone();
            async move {
                let mut sent = 0u64;
                for pk in targets {
                    let junk = Keys::generate();
                    // Not NIP-44 at all.
                    let e = EventBuilder::new(Kind::GiftWrap, format!("garbage {round}"))
                        .tag(Tag::public_key(pk))
                        .sign_with_keys(&junk)?;
                    raw.send_event(&e).await?;
                    // Valid NIP-44 v2 to the party, but the plaintext is not a seal.
                    let ct = nostr_sdk::nips::nip44::encrypt(
                        junk.secret_key(),
                        &pk,
                        "{\"not\":\"a seal\"}",
                        nostr_sdk::nips::nip44::Version::V2,
                    )?;
                    let e = EventBuilder::new(Kind::GiftWrap, ct)
                        .tag(Tag::public_key(pk))
                        .sign_with_keys(&junk)?;
                    raw.send_event(&e).await?;
                    // A well-formed NIP-59 gift wrap whose rumor is a text note.
                    let rumor = EventBuilder::text_note("hello").build(raw_keys.public_key());
                    let e = EventBuilder::gift_wrap(&raw_keys, &pk, rumor, [])
                        .await
                        .map_err(|e| anyhow!("gift wrap: {e}"))?;
                    raw.send_event(&e).await?;
                    // A text note that tags the party.
                    let e = EventBuilder::text_note("spam")
                        .tag(Tag::public_key(pk))
                        .sign_with_keys(&junk)?;
                    raw.send_event(&e).await?;
                    sent += 3;
                }
                anyhow::Ok(sent)
            }
        };
        wraps_sent += spam(0).await?;
        // Request and accept travel beside the first wave; the second hits the middle.
        p.wait_for(&[], &["Accepted", "Funded"], WAIT).await?;
        wraps_sent += spam(1).await?;
        assert_cooperative_claim(&p).await?;

        // Every bad gift wrap is eventually counted as invalid (bounded wait).
        let deadline = Instant::now() + WAIT;
        loop {
            let (bs, ss) = (p.buyer_t.stats().await, p.seller_t.stats().await);
            if bs.invalid + ss.invalid >= wraps_sent {
                println!("garbage: {wraps_sent} bad wraps sent; buyer {bs:?}; seller {ss:?}");
                break;
            }
            if Instant::now() > deadline {
                return Err(anyhow!("bad wraps not all refused: {bs:?} {ss:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        raw.shutdown().await;
        p.shutdown().await;
        relay.shutdown();
        Ok(())
    })
    .await
}

/// The attacker's next message (bounded).
async fn await_reply(arx: &mut mpsc::Receiver<Incoming>, what: &str) -> Result<Incoming> {
    match tokio::time::timeout(WAIT, arx.recv()).await {
        Ok(Some(m)) => Ok(m),
        _ => Err(anyhow!("no reply to {what}")),
    }
}

/// (c) An unknown message `type` from a raw client gets the specified error back: decoding stops
/// at `unknown_type`, answered with code `malformed` (spec/01-messages.md, "Decoding" and the
/// error-code table) about the sender's swap id. The honest swap beside it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_is_answered() -> Result<()> {
    bounded(async {
        let (relay, url) = start_local().await?;
        let relays = vec![url.clone()];
        let p = pair(&relays, true, true).await?;
        p.wait_for(&[], &["Accepted", "Funded"], WAIT).await?;
        let honest_id = p.swap_id;

        let attacker = transport(&relays).await?;
        let mut arx = attacker.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
        let seller_pk = p.seller_t.public_key();
        let mut refused = 0;
        for id in [SwapId([0x5a; 32]), honest_id] {
            // The swap id as the wire writes it.
            let template = wire::envelope_content(&Envelope::new(
                id,
                0,
                Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
            ));
            let t: serde_json::Value = serde_json::from_str(&template)?;
            let teleport = serde_json::json!({
                "v": 1, "type": "swap_teleport", "swap_id": t["swap_id"], "seq": 0
            });
            attacker
                .send_raw(&seller_pk, &[], teleport.to_string(), SendOptions::default())
                .await?;
            let reply = await_reply(&mut arx, "the unknown type").await?;
            assert_eq!(reply.sender, seller_pk);
            let env = reply.message.as_ref().map_err(|e| anyhow!("undecodable reply: {e}"))?;
            assert_eq!(env.swap_id, id, "the reply is about the sender's swap id");
            let Message::Error(e) = &env.body else {
                return Err(anyhow!("expected an error, got {env:?}"));
            };
            assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");
            assert!(e.message.contains("swap_teleport"), "{e:?}");
            refused += 1;
        }
        assert_eq!(refused, 2);
        assert_cooperative_claim(&p).await?;
        attacker.shutdown().await;
        p.shutdown().await;
        relay.shutdown();
        Ok(())
    })
    .await
}
