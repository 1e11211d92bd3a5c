//! Figures for `docs/benchmarks.md` ("Nostr transport"): one swap-message round trip over the
//! in-process relay. Prints the figures; asserts only loose sanity bounds.
//!
//! Run: `cargo test -p looper-node --release --test nostr_bench -- --nocapture`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bitcoin::Network;
use looper_node::nostr::wire::{self, Envelope, Message};
use looper_node::nostr::{MemoryProcessedEvents, NostrTransport, SendOptions, TransportConfig};
use looper_protocol::messages::SwapRequest;
use looper_protocol::{SwapDirection, SwapId};
use nostr_relay_builder::prelude::{Keys, LocalRelay, RelayBuilder};

fn request(seq: u32) -> Result<Envelope> {
    let sk = secp256k1::SecretKey::from_slice(&[3; 32])?;
    let pk = secp256k1::PublicKey::from_secret_key(&secp256k1::Secp256k1::new(), &sk);
    Ok(Envelope::new(
        SwapId([seq as u8; 32]),
        seq,
        Message::SwapRequest(SwapRequest {
            offer_id: "regtest-main_1".into(),
            direction: SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: 100_000,
            buyer_musig_pubkey: pk,
            buyer_claim_pubkey: pk.x_only_public_key().0,
            max_total_fee_sat: 2_000,
            prepay_accepted: false,
        }),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_figures() -> Result<()> {
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    let url = relay.url().await.to_string();
    let cfg = |url: &str| {
        let mut c = TransportConfig::new(
            Keys::generate().secret_key().to_secret_bytes(),
            vec![url.to_string()],
        );
        c.request_rate_limit = looper_node::nostr::RateLimit::new(1_000, 1_000);
        c
    };
    let alice = NostrTransport::connect(cfg(&url), Arc::new(MemoryProcessedEvents::new())).await?;
    let bob = NostrTransport::connect(cfg(&url), Arc::new(MemoryProcessedEvents::new())).await?;
    let mut alice_rx = alice.incoming().ok_or_else(|| anyhow!("taken"))?;
    let mut bob_rx = bob.incoming().ok_or_else(|| anyhow!("taken"))?;
    let wait = Duration::from_secs(30);

    // Warm-up round trip.
    alice.send(&bob.public_key(), &[], &request(0)?).await?;
    tokio::time::timeout(wait, bob_rx.recv()).await?;

    let envelope_bytes = wire::encode(&request(1)?).len();
    let (a0, b0) = (alice.stats().await, bob.stats().await);
    let n = 20u32;
    let mut rtts = Vec::new();
    let mut wrap_bytes = 0;
    for i in 0..n {
        let start = Instant::now();
        let sent = alice.send(&bob.public_key(), &[], &request(i + 1)?).await?;
        wrap_bytes = sent.event_bytes;
        tokio::time::timeout(wait, bob_rx.recv()).await?.ok_or_else(|| anyhow!("closed"))?;
        bob.send(&alice.public_key(), &[], &request(i + 1)?).await?;
        tokio::time::timeout(wait, alice_rx.recv()).await?.ok_or_else(|| anyhow!("closed"))?;
        rtts.push(start.elapsed());
    }
    let (a1, b1) = (alice.stats().await, bob.stats().await);
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    let p90 = rtts[rtts.len() * 9 / 10];
    let per_rt = |x: u64, y: u64| (x - y) / u64::from(n);
    println!("envelope (swap_request) bytes: {envelope_bytes}");
    println!("gift wrap event bytes: {wrap_bytes}");
    println!(
        "per round trip: alice sent {} B, received {} B; bob sent {} B, received {} B",
        per_rt(a1.bytes_sent, a0.bytes_sent),
        per_rt(a1.bytes_received, a0.bytes_received),
        per_rt(b1.bytes_sent, b0.bytes_sent),
        per_rt(b1.bytes_received, b0.bytes_received),
    );
    println!(
        "round trip latency over {n}: median {median:?}, p90 {p90:?}, max {:?}",
        rtts[rtts.len() - 1]
    );

    // Proof of work cost at a few difficulties (one gift wrap each).
    for d in [8u8, 12, 16] {
        let start = Instant::now();
        alice
            .send_with(
                &bob.public_key(),
                &[],
                &request(100 + u32::from(d))?,
                SendOptions { pow: Some(d), ..Default::default() },
            )
            .await?;
        println!("send with pow {d}: {:?}", start.elapsed());
    }
    assert!(wrap_bytes > envelope_bytes && wrap_bytes < 8 * envelope_bytes + 4096);
    assert!(median < Duration::from_secs(10));
    alice.shutdown().await;
    bob.shutdown().await;
    relay.shutdown();
    Ok(())
}
