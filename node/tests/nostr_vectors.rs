//! `spec/vectors/nostr.json`: example offer and gift-wrapped message events, checked here.
//!
//! Regenerate with `cargo test -p looper-node --test nostr_vectors -- --ignored generate`
//! (signatures and encryption are randomised, so a regenerated file differs byte for byte but
//! checks the same way).

use std::path::PathBuf;

use anyhow::{anyhow, ensure, Context, Result};
use bitcoin::Network;
use looper_node::nostr::wire::{self, Envelope, Message, Offer, OFFER_KIND, SWAP_MESSAGE_KIND};
use looper_node::nostr::{
    build_gift_wrap, max_gift_wrap_bytes, offer_event_builder, open_gift_wrap, parse_offer_event,
    OfferFilter,
};
use looper_protocol::messages::SwapRequest;
use looper_protocol::{SwapDirection, SwapId};
use nostr_sdk::prelude::{
    nip44, Event, EventBuilder, JsonUtil, Keys, Kind, SecretKey, Tag, Timestamp, UnsignedEvent,
};
use serde_json::{json, Value};

const SELLER_SK: &str = "5c0c523f52a5b6fad39ed2403092df8cebc36318b39383bca6c00808626fab3a";
const BUYER_SK: &str = "a2d3b1c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// 2100-01-01T00:00:00Z: far enough that the example never expires.
const FAR_FUTURE: u64 = 4_102_444_800;
const CREATED_AT: u64 = 1_767_225_600;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/nostr.json")
}

fn keys(hex: &str) -> Result<Keys> {
    Ok(Keys::new(SecretKey::from_hex(hex)?))
}

fn example_offer(seller_ln: secp256k1::PublicKey) -> Offer {
    Offer {
        version: 1,
        offer_id: "regtest-main_1".into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 5_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 288,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: seller_ln,
        ln_address: Some("127.0.0.1:9735".into()),
        relays: vec!["wss://relay.example.com".into()],
        pow_difficulty: Some(8),
        expires_at: FAR_FUTURE,
    }
}

fn example_request(buyer_key: secp256k1::PublicKey) -> Envelope {
    Envelope::new(
        SwapId([0x11; 32]),
        0,
        Message::SwapRequest(SwapRequest {
            offer_id: "regtest-main_1".into(),
            direction: SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: 100_000,
            buyer_musig_pubkey: buyer_key,
            buyer_claim_pubkey: buyer_key.x_only_public_key().0,
            max_total_fee_sat: 2_000,
            prepay_accepted: false,
        }),
    )
}

fn secp_pk(hex_sk: &str) -> Result<secp256k1::PublicKey> {
    let sk = secp256k1::SecretKey::from_slice(&hex::decode(hex_sk)?)?;
    Ok(secp256k1::PublicKey::from_secret_key(&secp256k1::Secp256k1::new(), &sk))
}

#[tokio::test]
#[ignore = "writes spec/vectors/nostr.json"]
async fn generate() -> Result<()> {
    let seller = keys(SELLER_SK)?;
    let buyer = keys(BUYER_SK)?;
    let offer = example_offer(secp_pk(SELLER_SK)?);
    let offer_event = offer_event_builder(
        &offer,
        Timestamp::from_secs(FAR_FUTURE),
        Timestamp::from_secs(CREATED_AT),
    )
    .sign_with_keys(&seller)?;
    let envelope = example_request(secp_pk(BUYER_SK)?);
    let wrap = build_gift_wrap(
        &buyer,
        &seller.public_key(),
        wire::envelope_content(&envelope),
        Timestamp::from_secs(FAR_FUTURE),
        Some(8),
    )
    .await?;
    let doc = json!({
        "description": "Looper Nostr events (spec/04-nostr.md). Secret keys are test keys. Signatures and \
                        NIP-44 nonces are random, so implementations verify and open these events rather \
                        than reproduce them byte for byte.",
        "offer_event": {
            "seller_secret_key": SELLER_SK,
            "seller_pubkey": seller.public_key().to_hex(),
            "event": serde_json::from_str::<Value>(&offer_event.as_json())?,
            "offer": serde_json::from_slice::<Value>(&wire::encode_offer(&offer))?,
            "discover": { "network": "regtest", "amount_sat": 100_000, "cost_sat": 1_550 }
        },
        "gift_wrap": {
            "sender_secret_key": BUYER_SK,
            "sender_pubkey": buyer.public_key().to_hex(),
            "recipient_secret_key": SELLER_SK,
            "recipient_pubkey": seller.public_key().to_hex(),
            "pow_difficulty": 8,
            "event": serde_json::from_str::<Value>(&wrap.as_json())?,
            "rumor_kind": SWAP_MESSAGE_KIND,
            "envelope": serde_json::from_slice::<Value>(&wire::encode(&envelope))?
        }
    });
    std::fs::write(vectors_path(), serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(())
}

#[tokio::test]
async fn vectors_validate() -> Result<()> {
    let text =
        std::fs::read_to_string(vectors_path()).context("reading spec/vectors/nostr.json")?;
    let doc: Value = serde_json::from_str(&text)?;
    let str_at = |v: &Value, p: &str| -> Result<String> {
        v.pointer(p)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("missing {p}"))
    };

    // --- the offer event
    let o = &doc["offer_event"];
    let seller = keys(&str_at(o, "/seller_secret_key")?)?;
    ensure!(seller.public_key().to_hex() == str_at(o, "/seller_pubkey")?);
    let event = Event::from_json(o["event"].to_string())?;
    event.verify()?;
    ensure!(event.kind == Kind::Custom(OFFER_KIND));
    ensure!(event.pubkey == seller.public_key());
    ensure!(event.tags.identifier() == Some("regtest-main_1"));
    let expiration = *event.tags.expiration().ok_or_else(|| anyhow!("no expiration"))?;
    let n_tag: Vec<Vec<String>> = event
        .tags
        .iter()
        .map(|t| t.as_slice().to_vec())
        .filter(|t| t.first().map(String::as_str) == Some("n"))
        .collect();
    ensure!(n_tag == vec![vec!["n".to_string(), "regtest".to_string()]]);
    let content: Value = serde_json::from_str(&event.content)?;
    ensure!(content == o["offer"], "content is the offer");
    ensure!(content["expires_at"].as_u64() == Some(expiration.as_secs()));
    let filter = OfferFilter {
        network: Network::Regtest,
        amount_sat: o["discover"]["amount_sat"].as_u64().unwrap_or_default(),
        sellers: vec![],
        direction: looper_protocol::SwapDirection::LoopOut,
    };
    let found = parse_offer_event(&event, &filter, event.created_at)?;
    ensure!(Some(found.cost_sat) == o["discover"]["cost_sat"].as_u64());
    ensure!(found.seller == seller.public_key());
    // Expired once its expiration has passed; wrong network refused.
    ensure!(parse_offer_event(&event, &filter, expiration).is_err());
    let signet = OfferFilter { network: Network::Signet, ..filter.clone() };
    ensure!(parse_offer_event(&event, &signet, event.created_at).is_err());
    // A loop-out offer is not listed to a taker looking for loop in (nor the other way).
    let loop_in =
        OfferFilter { direction: looper_protocol::SwapDirection::LoopIn, ..filter.clone() };
    ensure!(matches!(
        parse_offer_event(&event, &loop_in, event.created_at),
        Err(looper_node::nostr::OfferRejection::WrongDirection)
    ));

    // --- the gift-wrapped swap message
    let g = &doc["gift_wrap"];
    let recipient = keys(&str_at(g, "/recipient_secret_key")?)?;
    let sender = keys(&str_at(g, "/sender_secret_key")?)?;
    let wrap = Event::from_json(g["event"].to_string())?;
    wrap.verify()?;
    ensure!(wrap.kind == Kind::GiftWrap);
    ensure!(wrap.pubkey != sender.public_key(), "wrap signed by an ephemeral key");
    let p: Vec<_> = wrap.tags.public_keys().collect();
    ensure!(p == vec![&recipient.public_key()]);
    ensure!(wrap.tags.expiration().is_some());
    let pow = g["pow_difficulty"].as_u64().unwrap_or_default() as u8;
    ensure!(wrap.check_pow(pow), "gift wrap carries the proof of work");
    ensure!(looper_node::nostr::committed_pow(&wrap) >= pow);
    let opened = open_gift_wrap(&recipient, &wrap).await?;
    ensure!(opened.sender == sender.public_key());
    let envelope: Value = serde_json::from_str(&opened.content)?;
    ensure!(envelope == g["envelope"]);
    let decoded = wire::decode_envelope(opened.content.as_bytes())?;
    ensure!(wire::is_swap_request(&decoded));
    ensure!(g["rumor_kind"].as_u64() == Some(u64::from(SWAP_MESSAGE_KIND)));
    // Nobody else can open it.
    ensure!(open_gift_wrap(&sender, &wrap).await.is_err());
    ensure!(open_gift_wrap(&Keys::generate(), &wrap).await.is_err());
    Ok(())
}

/// A gift wrap whose sealed event is not a seal (kind 13) is refused, even when everything else
/// about it (encryption, signature, rumor) is right.
#[tokio::test]
async fn a_wrap_around_something_other_than_a_seal_is_refused() -> Result<()> {
    let sender = Keys::generate();
    let recipient = Keys::generate();
    let rumor: UnsignedEvent = EventBuilder::new(Kind::Custom(SWAP_MESSAGE_KIND), "{}".to_string())
        .tag(Tag::public_key(recipient.public_key()))
        .build(sender.public_key());
    let encrypted = nip44::encrypt(
        sender.secret_key(),
        &recipient.public_key(),
        rumor.as_json(),
        nip44::Version::default(),
    )?;
    let far = Timestamp::from_secs(FAR_FUTURE);
    for kind in [Kind::TextNote, Kind::Custom(14), Kind::Seal] {
        let sealed = EventBuilder::new(kind, encrypted.clone()).sign_with_keys(&sender)?;
        let wrap = looper_node::nostr::wrap_seal(&recipient.public_key(), &sealed, far, None)?;
        let opened = open_gift_wrap(&recipient, &wrap).await;
        if kind == Kind::Seal {
            ensure!(opened?.sender == sender.public_key());
        } else {
            let err = opened.err().map(|e| e.to_string()).unwrap_or_default();
            ensure!(err.contains("not a seal"), "{kind}: {err}");
        }
    }
    Ok(())
}

/// The largest envelope a gift wrap can carry: NIP-44 encrypts at most 65 535 bytes, and the
/// seal (which holds the encrypted rumor) must itself fit.
#[tokio::test]
async fn largest_envelope_that_fits_a_gift_wrap() -> Result<()> {
    let a = Keys::generate();
    let b = Keys::generate();
    // A swap_funded-like content: mostly hex, so JSON escaping adds little.
    let content =
        |n: usize| format!("{{\"type\":\"swap_funded\",\"tx_hex\":\"{}\"}}", "ab".repeat(n / 2));
    let fits = |n: usize| {
        let a = a.clone();
        let pk = b.public_key();
        async move {
            build_gift_wrap(&a, &pk, content(n), Timestamp::from_secs(FAR_FUTURE), None)
                .await
                .is_ok()
        }
    };
    let (mut lo, mut hi) = (1_000usize, 70_000usize);
    ensure!(fits(lo).await && !fits(hi).await);
    while hi - lo > 2 {
        let mid = (lo + hi) / 2;
        if fits(mid).await {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let max_content = content(lo).len();
    let wrap =
        build_gift_wrap(&a, &b.public_key(), content(lo), Timestamp::from_secs(FAR_FUTURE), None)
            .await?;
    println!(
        "largest hex-heavy envelope in a gift wrap: {max_content} bytes; its gift wrap: {} bytes",
        wrap.as_json().len()
    );
    ensure!(wrap.as_json().len() <= max_gift_wrap_bytes(wire::MAX_MESSAGE_BYTES));
    ensure!(max_content >= 32 * 1024, "at least 32 KiB of envelope fits");
    Ok(())
}
