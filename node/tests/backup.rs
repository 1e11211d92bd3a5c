//! Swap-store backups (`looper_node::backup`): the event format against hostile input, the
//! restore plan, and the store wrapper with its index reservations against nostr-relay-builder's
//! in-process relay: a node that loses its store restores every record and never hands out an
//! index it used before, even when the record of the last swap never reached a relay.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Network, ScriptBuf};
use looper_node::backup::{
    decode_event, encode_event, encode_payload, BackupError, BackupKeys, BackupOptions,
    BackupRelays, Backups, DecodeError, Payload, PublisherOptions, RestorePlan, BACKUP_KIND,
    MAX_BACKUP_PLAINTEXT_BYTES,
};
use looper_node::seed::{Mnemonic, NodeKeys};
use looper_node::store::{
    MemoryStore, RestoreState, StoreError, SwapId, SwapRecord, SwapRole, SwapStatus, SwapStore,
};
use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::Offer;
use looper_protocol::record::SwapRecord as ProtoRecord;
use looper_protocol::swap::Context;
use nostr_relay_builder::prelude::{LocalRelay, RelayBuilder};
use nostr_sdk::nips::nip44;
use nostr_sdk::{EventBuilder, JsonUtil, Keys, Kind, SecretKey, Tag, Timestamp};

const ABANDON: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

fn node_keys() -> NodeKeys {
    NodeKeys::from_mnemonic(&Mnemonic::parse(ABANDON, "test").unwrap(), Network::Regtest).unwrap()
}

fn backup_keys() -> BackupKeys {
    BackupKeys::from_node_keys(&node_keys()).unwrap()
}

fn offer() -> Offer {
    serde_json::from_value(serde_json::json!({
        "v": 1, "offer_id": "o", "network": "regtest", "direction": "loop_out",
        "min_amount_sat": 10_000, "max_amount_sat": 1_000_000, "fee_base_sat": 1_000,
        "fee_ppm": 2_500, "funding_fee_sat": 300, "min_confirmations": 1, "timeout_delta": 288,
        "claim_margin": 20, "invoice_expiry_secs": 3600,
        "ln_node_id": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "relays": ["ws://127.0.0.1:1"], "expires_at": 4_000_000_000u64
    }))
    .unwrap()
}

/// A real buyer record (the protocol's bytes) with swap id `[n; 32]` and key index `index`.
fn buyer_record(n: u8, index: u32, updated_at: u64) -> SwapRecord {
    let keys = SwapKeys::derive(&node_keys().swap_master().unwrap(), index).unwrap();
    let ctx = Context::new(1_700_000_000, 200, bitcoin::FeeRate::from_sat_per_vb_u32(2));
    let start = BuyerStart {
        swap_id: SwapId([n; 32]),
        peer: "11".repeat(32),
        offer: offer(),
        amount_sat: 100_000,
        policy: BuyerPolicy::default(),
        claim_destination: ScriptBuf::new_op_return([n; 8]),
        keys,
    };
    let (swap, _) = BuyerSwap::start(start, &ctx).unwrap();
    let proto = ProtoRecord::from(&swap);
    SwapRecord {
        id: SwapId([n; 32]),
        role: SwapRole::Buyer,
        state: proto.state_name().to_string(),
        status: SwapStatus::Pending,
        payment_hash: None,
        created_at: 1_700_000_000,
        updated_at,
        data: proto.to_bytes().unwrap(),
    }
}

/// What the restore makes of a record: a pending buyer is marked `lightning_state_lost` (its
/// new Lightning node no longer knows the payments it made).
fn as_restored(mut r: SwapRecord) -> SwapRecord {
    let mut proto = looper_protocol::record::SwapRecord::from_bytes(&r.data).unwrap();
    if let looper_protocol::record::SwapRecord::Buyer(b) = &mut proto {
        if b.kind() == looper_protocol::swap::StateKind::Pending {
            b.mark_lightning_state_lost();
        }
    }
    r.data = proto.to_bytes().unwrap();
    r
}

fn quick() -> PublisherOptions {
    PublisherOptions {
        publish_timeout: Duration::from_secs(5),
        reserve_timeout: Duration::from_secs(5),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    }
}

fn options(relay: &str, seed_created: bool, block: u32) -> BackupOptions {
    BackupOptions {
        relays: vec![relay.to_string()],
        seed_created,
        restore_timeout: Duration::from_secs(5),
        publisher: quick(),
        index_block: block,
        proxy: None,
    }
}

async fn local_relay() -> (LocalRelay, String) {
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 1_000, notes_per_minute: 100_000 },
    ));
    relay.run().await.unwrap();
    let url = relay.url().await.to_string();
    (relay, url)
}

/// Every backup payload of our key on `relay`, decoded.
async fn relay_payloads(url: &str) -> Vec<(Timestamp, Payload)> {
    let relays = BackupRelays::connect(&[url.to_string()]).await.unwrap();
    let keys = backup_keys();
    let fetched = relays.fetch(keys.public_key(), Duration::from_secs(5)).await.unwrap();
    relays.shutdown().await;
    fetched.events.iter().map(|e| (e.created_at, decode_event(&keys, e).unwrap())).collect()
}

#[test]
fn payloads_roundtrip_and_d_tags_hide_ids() {
    let keys = backup_keys();
    let record = buyer_record(7, 3, 1_700_000_100);
    for payload in [
        Payload::Swap { record: record.clone(), reserved_index: 100 },
        Payload::Index { reserved_index: 200 },
        Payload::Offer { offer_id: "o".into(), offer: Some(serde_json::json!({"fee_ppm": 1})) },
        Payload::Offer { offer_id: "o".into(), offer: None },
    ] {
        let event = encode_event(&keys, &payload, Timestamp::from_secs(1_700_000_000)).unwrap();
        assert_eq!(event.kind, Kind::Custom(BACKUP_KIND));
        assert_eq!(event.pubkey, keys.public_key());
        let d = event.tags.identifier().unwrap().to_string();
        assert_eq!(d.len(), 64);
        // Neither the swap id nor any plaintext shows.
        assert!(!event.as_json().contains(&record.id.to_string()));
        assert_eq!(decode_event(&keys, &event).unwrap(), payload);
    }
    // The record's bytes come back exactly.
    let event = encode_event(
        &keys,
        &Payload::Swap { record: record.clone(), reserved_index: 0 },
        Timestamp::now(),
    )
    .unwrap();
    match decode_event(&keys, &event).unwrap() {
        Payload::Swap { record: back, .. } => assert_eq!(back, record),
        other => panic!("{other:?}"),
    }
    // The backup key is not the node's Nostr identity.
    let identity = node_keys().nostr_secret_key().unwrap();
    assert_ne!(
        keys.public_key(),
        Keys::new(SecretKey::from_slice(&identity.secret_bytes()).unwrap()).public_key()
    );
    assert!(!format!("{keys:?}")
        .contains(&hex::encode(node_keys().backup_secret_key().unwrap().secret_bytes())));
}

#[test]
fn hostile_backup_events_are_refused() {
    let keys = backup_keys();
    let secret = node_keys().backup_secret_key().unwrap();
    let signer = Keys::new(SecretKey::from_slice(&secret.secret_bytes()).unwrap());
    let pk = signer.public_key();
    let sign = |b: EventBuilder| b.sign_with_keys(&signer).unwrap();
    let encrypt =
        |json: &str| nip44::encrypt(signer.secret_key(), &pk, json, nip44::Version::V2).unwrap();
    let index = Payload::Index { reserved_index: 5 };
    let good = encode_event(&keys, &index, Timestamp::now()).unwrap();

    // Another author (a relay cannot forge ours; it can hand us someone else's).
    let stranger = Keys::generate();
    let other = encode_event(
        &BackupKeys::from_secret_bytes(&stranger.secret_key().secret_bytes()).unwrap(),
        &index,
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!(decode_event(&keys, &other), Err(DecodeError::WrongAuthor));
    // Another kind.
    let wrong_kind = sign(EventBuilder::new(Kind::TextNote, good.content.clone()));
    assert_eq!(decode_event(&keys, &wrong_kind), Err(DecodeError::WrongKind(1)));
    // Content that is not ours or not NIP-44.
    let d = good.tags.identifier().unwrap().to_string();
    let garbage = sign(
        EventBuilder::new(Kind::Custom(BACKUP_KIND), "not encrypted").tag(Tag::identifier(&d)),
    );
    assert_eq!(decode_event(&keys, &garbage), Err(DecodeError::Decrypt));
    let to_other = sign(
        EventBuilder::new(
            Kind::Custom(BACKUP_KIND),
            nip44::encrypt(signer.secret_key(), &stranger.public_key(), "{}", nip44::Version::V2)
                .unwrap(),
        )
        .tag(Tag::identifier(&d)),
    );
    assert_eq!(decode_event(&keys, &to_other), Err(DecodeError::Decrypt));
    // Oversized content is refused before decrypting.
    let big = sign(
        EventBuilder::new(Kind::Custom(BACKUP_KIND), "A".repeat(100_000)).tag(Tag::identifier(&d)),
    );
    assert!(matches!(decode_event(&keys, &big), Err(DecodeError::TooLarge(_))));
    // Decrypts but is not a payload, or of an unknown version.
    for (json, want) in [
        ("[1,2,3]", "json"),
        (r#"{"v":2,"type":"index","reserved_index":1}"#, "version"),
        (r#"{"v":1,"type":"index"}"#, "json"),
        (r#"{"v":1,"type":"swap","reserved_index":1,"swap":{}}"#, "json"),
        (r#"{"v":1,"type":"offer","offer_id":"","offer":null}"#, "invalid"),
    ] {
        let e = sign(
            EventBuilder::new(Kind::Custom(BACKUP_KIND), encrypt(json)).tag(Tag::identifier(&d)),
        );
        let err = decode_event(&keys, &e).unwrap_err();
        let ok = match want {
            "json" => matches!(err, DecodeError::Json(_)),
            "version" => err == DecodeError::UnsupportedVersion(2),
            _ => matches!(err, DecodeError::Invalid(_)),
        };
        assert!(ok, "{json}: {err:?}");
    }
    // A valid payload under another record's d tag (a relay mixing them up).
    let moved = sign(
        EventBuilder::new(Kind::Custom(BACKUP_KIND), good.content.clone())
            .tag(Tag::identifier(keys.d_tag("swap/00"))),
    );
    assert_eq!(decode_event(&keys, &moved), Err(DecodeError::TagMismatch));
    // No d tag.
    let untagged = sign(EventBuilder::new(Kind::Custom(BACKUP_KIND), good.content.clone()));
    assert_eq!(decode_event(&keys, &untagged), Err(DecodeError::NoIdentifier));
    // A forged signature.
    let mut forged = good.clone();
    forged.content = encrypt(r#"{"v":1,"type":"index","reserved_index":999999}"#);
    assert_eq!(decode_event(&keys, &forged), Err(DecodeError::BadSignature));

    // The plan skips them all and keeps the good one.
    let plan = RestorePlan::from_events(
        &keys,
        &[good, other, wrong_kind, garbage, to_other, big, moved, untagged, forged],
    );
    assert_eq!(plan.skipped, 8);
    assert_eq!(plan.index_mark, 5);
    assert_eq!(plan.next_index, 5);
}

#[test]
fn oversized_payloads_are_not_encoded() {
    let mut record = buyer_record(1, 0, 1);
    record.state = "x".repeat(MAX_BACKUP_PLAINTEXT_BYTES);
    let e = encode_payload(&Payload::Swap { record, reserved_index: 0 }).unwrap_err();
    assert!(matches!(e, BackupError::TooLarge { .. }), "{e}");
}

#[test]
fn restore_plan_takes_the_newest_versions_and_the_highest_index() {
    let keys = backup_keys();
    let at = |s: u64| Timestamp::from_secs(1_700_000_000 + s);
    let ev = |p: &Payload, s: u64| encode_event(&keys, p, at(s)).unwrap();
    let old = buyer_record(1, 4, 10);
    let mut new = buyer_record(1, 4, 20);
    new.status = SwapStatus::Failed;
    let other = buyer_record(2, 9, 15);
    // A record whose protocol data does not decode.
    let mut broken = buyer_record(3, 50, 15);
    broken.data = b"{\"version\":1}".to_vec();
    // A record whose data belongs to another swap.
    let mut swapped = buyer_record(4, 60, 15);
    swapped.data = buyer_record(5, 60, 15).data;
    let events = vec![
        ev(&Payload::Swap { record: new.clone(), reserved_index: 0 }, 2),
        ev(&Payload::Swap { record: old, reserved_index: 7 }, 1),
        ev(&Payload::Swap { record: other.clone(), reserved_index: 0 }, 1),
        ev(&Payload::Swap { record: broken, reserved_index: 0 }, 1),
        ev(&Payload::Swap { record: swapped, reserved_index: 0 }, 1),
        ev(&Payload::Index { reserved_index: 8 }, 1),
        ev(&Payload::Offer { offer_id: "a".into(), offer: Some(serde_json::json!(1)) }, 1),
        ev(&Payload::Offer { offer_id: "b".into(), offer: Some(serde_json::json!(2)) }, 1),
        ev(&Payload::Offer { offer_id: "b".into(), offer: None }, 2),
    ];
    let plan = RestorePlan::from_events(&keys, &events);
    assert_eq!(plan.skipped, 2);
    assert_eq!(plan.swaps.len(), 2);
    assert_eq!(plan.swaps[0].record, as_restored(new), "the newest version wins");
    assert_eq!(plan.swaps[0].key_index, 4);
    assert_eq!(plan.swaps[1].record, as_restored(other));
    assert_eq!(plan.swaps[1].wallet_script, ScriptBuf::new_op_return([2u8; 8]));
    assert_eq!(plan.offers, vec![("a".to_string(), serde_json::json!(1))]);
    assert_eq!(plan.index_mark, 8);
    // Above the mark (8) and above the highest restored key index (9).
    assert_eq!(plan.next_index, 10);
    assert_eq!(plan.open_swaps(), 1);
    // Without any index event the restored keys still bound it.
    let plan = RestorePlan::from_events(&keys, &events[..3]);
    assert_eq!(plan.next_index, 10);
    assert_eq!(RestorePlan::from_events(&keys, &[]).next_index, 0);
}

/// The scenario of issue 12, item 4 without the chain: a node draws indices across two blocks,
/// persists records for the first swaps only (the last ones crash before their records exist),
/// loses its store, and restores: every record is back and the next index is above all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_never_reuses_an_index() {
    let (relay, url) = local_relay().await;
    let keys = backup_keys();

    let first: Arc<dyn SwapStore> = Arc::new(MemoryStore::new());
    let backups = Backups::start(options(&url, true, 5), keys.clone(), Arc::clone(&first), None)
        .await
        .unwrap();
    assert!(backups.restored().is_none());
    assert_eq!(first.restore_state().unwrap(), RestoreState::Complete);
    let store = backups.store();
    let mut used = Vec::new();
    for _ in 0..7 {
        // As the engine draws them: inside `block_in_place` on a runtime worker.
        used.push(tokio::task::block_in_place(|| store.next_swap_index()).unwrap());
    }
    assert_eq!(used, (0..7).collect::<Vec<u32>>());
    // Records of the swaps with indices 0..=2 only; 3..=6 never got theirs (a crash right after
    // drawing the index, or a backup that never left the node).
    for i in 0..3u32 {
        let store = Arc::clone(&store);
        let r = buyer_record(i as u8 + 1, i, 100 + u64::from(i));
        tokio::task::spawn_blocking(move || store.put_swap(&r)).await.unwrap().unwrap();
    }
    store.put_offer("o", &serde_json::json!({"fee_ppm": 5})).unwrap();
    store.put_offer("gone", &serde_json::json!({"fee_ppm": 6})).unwrap();
    assert!(store.delete_offer("gone").unwrap());
    assert_eq!(backups.handle().flush(Duration::from_secs(10)).await, 0);
    backups.shutdown(Duration::from_secs(5)).await;

    // What the relay holds: the newest mark, the three records, the offers. The first draw is in
    // the last block reserved (0..5), so the blocks after it were reserved ahead, four of them:
    // 25 (the draw of index 5 found them reserved, or waited for them).
    let payloads = relay_payloads(&url).await;
    let marks: Vec<u32> = payloads
        .iter()
        .filter_map(|(_, p)| match p {
            Payload::Index { reserved_index } => Some(*reserved_index),
            _ => None,
        })
        .collect();
    assert_eq!(marks, vec![25], "one current mark (addressable: the newest replaced the first)");

    // The data dir is lost: a new, empty store with the same seed.
    let second: Arc<dyn SwapStore> = Arc::new(MemoryStore::new());
    let t = Instant::now();
    let backups = Backups::start(options(&url, false, 5), keys.clone(), Arc::clone(&second), None)
        .await
        .unwrap();
    eprintln!("restore took {:?}", t.elapsed());
    let report = backups.restored().cloned().unwrap();
    assert_eq!(report.swaps, 3);
    assert_eq!(report.open_swaps, 3);
    assert_eq!(report.offers, 1);
    assert_eq!(report.skipped, 0);
    assert_eq!(report.next_index, 25);
    assert_eq!(second.restore_state().unwrap(), RestoreState::Complete);
    for i in 0..3u8 {
        let back = second.get_swap(&SwapId([i + 1; 32])).unwrap().unwrap();
        assert_eq!(back, as_restored(buyer_record(i + 1, u32::from(i), 100 + u64::from(i))));
        let looper_protocol::record::SwapRecord::Buyer(b) =
            looper_protocol::record::SwapRecord::from_bytes(&back.data).unwrap()
        else {
            panic!("not a buyer")
        };
        assert!(b.lightning_state_lost(), "a restored buyer must not trust 'no payment known'");
    }
    assert_eq!(
        second.list_offers().unwrap(),
        vec![("o".to_string(), serde_json::json!({"fee_ppm": 5}))]
    );
    let store = backups.store();
    let next = tokio::task::spawn_blocking(move || store.next_swap_index()).await.unwrap().unwrap();
    assert!(next > *used.iter().max().unwrap(), "index {next} reused");
    assert_eq!(next, 25);
    backups.shutdown(Duration::from_secs(5)).await;

    // A third start on the restored store: nothing to restore again.
    let backups =
        Backups::start(options(&url, false, 5), keys, Arc::clone(&second), None).await.unwrap();
    assert!(backups.restored().is_none());
    backups.shutdown(Duration::from_secs(5)).await;
    relay.shutdown();
}

/// The newest version of a record reaches the relay, even when it is written several times in
/// one second (addressable events: same `created_at` would keep the lowest id, not the newest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_updates_leave_the_newest_version_on_the_relay() {
    let (relay, url) = local_relay().await;
    let backups =
        Backups::start(options(&url, true, 100), backup_keys(), Arc::new(MemoryStore::new()), None)
            .await
            .unwrap();
    let store = backups.store();
    let mut last = buyer_record(9, 0, 0);
    for step in 0..20u64 {
        last = buyer_record(9, 0, step);
        last.state = format!("step-{step}");
        store.put_swap(&last).unwrap();
        if step % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(backups.handle().flush(Duration::from_secs(10)).await, 0);
    backups.shutdown(Duration::from_secs(5)).await;
    let swaps: Vec<SwapRecord> = relay_payloads(&url)
        .await
        .into_iter()
        .filter_map(|(_, p)| match p {
            Payload::Swap { record, .. } => Some(record),
            _ => None,
        })
        .collect();
    assert_eq!(swaps, vec![last]);
    relay.shutdown();
}

/// Without a relay: no index is handed out (the reservation cannot be published), and a restore
/// that is due fails the start instead of starting from index 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_relay_no_index_and_no_blind_restore() {
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://{}", l.local_addr().unwrap())
    };
    let mut opts = options(&dead, true, 100);
    opts.restore_timeout = Duration::from_secs(1);
    opts.publisher.reserve_timeout = Duration::from_secs(1);
    let raw: Arc<dyn SwapStore> = Arc::new(MemoryStore::new());
    let backups =
        Backups::start(opts.clone(), backup_keys(), Arc::clone(&raw), None).await.unwrap();
    let store = backups.store();
    let t = Instant::now();
    let drawing = tokio::task::spawn_blocking({
        let store = Arc::clone(&store);
        move || store.next_swap_index()
    });
    // Records are written meanwhile without waiting for the reservation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let w = Instant::now();
    store.put_swap(&buyer_record(1, 0, 1)).unwrap();
    assert!(w.elapsed() < Duration::from_millis(500), "put_swap waited {:?}", w.elapsed());
    let e = drawing.await.unwrap().unwrap_err();
    assert!(matches!(e, StoreError::IndexNotReserved { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    assert_eq!(store.get_swap(&SwapId([1; 32])).unwrap().map(|r| r.id), Some(SwapId([1; 32])));
    backups.shutdown(Duration::from_secs(1)).await;

    // An empty store whose seed existed before: the restore is due and cannot be done.
    opts.seed_created = false;
    let empty: Arc<dyn SwapStore> = Arc::new(MemoryStore::new());
    let e = Backups::start(opts, backup_keys(), Arc::clone(&empty), None).await.unwrap_err();
    assert!(matches!(e, BackupError::NoRelayAnswered { .. }), "{e}");
    assert!(e.to_string().contains("start it again once a relay is reachable"), "{e}");
    assert_eq!(empty.restore_state().unwrap(), RestoreState::Unknown);
    assert_eq!(empty.peek_swap_index().unwrap(), 0);
}

/// A store from before backups existed (records, no restore state) is adopted and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_store_is_adopted_and_published() {
    let (relay, url) = local_relay().await;
    let raw: Arc<dyn SwapStore> = Arc::new(MemoryStore::new());
    let mut done = buyer_record(1, 0, 1);
    done.status = SwapStatus::Succeeded;
    raw.put_swap(&done).unwrap();
    raw.put_swap(&buyer_record(2, 1, 2)).unwrap();
    raw.put_offer("o", &serde_json::json!({"x": 1})).unwrap();
    raw.next_swap_index().unwrap();
    raw.next_swap_index().unwrap();
    let backups = Backups::start(options(&url, false, 100), backup_keys(), Arc::clone(&raw), None)
        .await
        .unwrap();
    assert!(backups.restored().is_none(), "a store with records is not restored over");
    assert_eq!(raw.restore_state().unwrap(), RestoreState::Complete);
    assert_eq!(backups.handle().flush(Duration::from_secs(10)).await, 0);
    backups.shutdown(Duration::from_secs(5)).await;
    let payloads = relay_payloads(&url).await;
    let swaps = payloads.iter().filter(|(_, p)| matches!(p, Payload::Swap { .. })).count();
    let offers = payloads.iter().filter(|(_, p)| matches!(p, Payload::Offer { .. })).count();
    assert_eq!((swaps, offers), (2, 1));
    relay.shutdown();
}
