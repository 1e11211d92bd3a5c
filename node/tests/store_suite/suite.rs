//! One test suite for every [`SwapStore`] backend (after rust-nostr's `nostr-database-test-suite`).
//!
//! Each function takes a fresh, empty store and panics on the first failed check. Run them all
//! on a backend with `swap_store_test_suite!(name, make_store_expr)`: the expression is evaluated
//! once per test and must dereference to a [`SwapStore`]; wrap a backend that needs a temporary
//! directory in a struct that keeps it alive and implements `Deref`.

use looper_node::store::{
    BlockEntry, PaymentHash, RestoreState, StoreError, SwapFilter, SwapId, SwapRecord, SwapRole,
    SwapStatus, SwapStore, MAX_SWAP_INDEX,
};

/// Generates one `#[test]` per suite function in a module `$name`, each on a fresh store made by
/// evaluating `$make`.
macro_rules! swap_store_test_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            swap_store_test_suite!(@tests $make;
                swaps_roundtrip,
                swaps_payment_hash_index,
                swaps_list_and_filter,
                swaps_large_record,
                offers_crud,
                swap_index_monotonic,
                swap_index_concurrent,
                swap_index_raise,
                restore_state_roundtrip,
                processed_events,
                swap_event_log,
                blocked_keys_roundtrip,
                labels_and_settings
            );
        }
    };
    (@tests $make:expr; $($test:ident),+) => {
        $(
            #[test]
            fn $test() {
                let fixture = $make;
                crate::suite::$test(&*fixture);
            }
        )+
    };
}

/// A swap id whose bytes are all `n`.
pub fn id(n: u8) -> SwapId {
    SwapId([n; 32])
}

/// A payment hash whose bytes are all `n`.
pub fn hash(n: u8) -> PaymentHash {
    PaymentHash([n; 32])
}

/// A record for tests.
pub fn record(n: u8, role: SwapRole, status: SwapStatus, updated_at: u64) -> SwapRecord {
    SwapRecord {
        id: id(n),
        role,
        state: format!("state-{n}"),
        status,
        payment_hash: Some(hash(n)),
        created_at: 1_000,
        updated_at,
        data: format!("{{\"version\":1,\"n\":{n}}}").into_bytes(),
    }
}

/// Put, get, overwrite; a missing id is `None`.
pub fn swaps_roundtrip(store: &dyn SwapStore) {
    assert_eq!(store.get_swap(&id(1)).unwrap(), None);
    let r = record(1, SwapRole::Buyer, SwapStatus::Pending, 10);
    store.put_swap(&r).unwrap();
    assert_eq!(store.get_swap(&id(1)).unwrap(), Some(r.clone()));

    let mut r2 = r.clone();
    r2.state = "funded".into();
    r2.updated_at = 11;
    r2.data = b"{\"version\":1,\"funded\":true}".to_vec();
    store.put_swap(&r2).unwrap();
    assert_eq!(store.get_swap(&id(1)).unwrap(), Some(r2));
    assert_eq!(store.list_swaps(&SwapFilter::default()).unwrap().len(), 1);

    let mut empty = record(2, SwapRole::Seller, SwapStatus::Failed, 1);
    empty.data = Vec::new();
    empty.payment_hash = None;
    store.put_swap(&empty).unwrap();
    assert_eq!(store.get_swap(&id(2)).unwrap(), Some(empty));
}

/// The payment-hash index follows the record: absent, set, changed, shared by nobody else.
pub fn swaps_payment_hash_index(store: &dyn SwapStore) {
    let mut r = record(1, SwapRole::Buyer, SwapStatus::Pending, 10);
    r.payment_hash = None;
    store.put_swap(&r).unwrap();
    assert_eq!(store.get_swap_by_payment_hash(&hash(1)).unwrap(), None);

    r.payment_hash = Some(hash(7));
    store.put_swap(&r).unwrap();
    assert_eq!(store.get_swap_by_payment_hash(&hash(7)).unwrap().map(|s| s.id), Some(id(1)));

    r.payment_hash = Some(hash(8));
    store.put_swap(&r).unwrap();
    assert_eq!(store.get_swap_by_payment_hash(&hash(7)).unwrap(), None);
    assert_eq!(store.get_swap_by_payment_hash(&hash(8)).unwrap(), Some(r.clone()));

    let other = record(2, SwapRole::Seller, SwapStatus::Pending, 10);
    store.put_swap(&other).unwrap();
    assert_eq!(store.get_swap_by_payment_hash(&hash(2)).unwrap(), Some(other));
    assert_eq!(store.get_swap_by_payment_hash(&hash(8)).unwrap().map(|s| s.id), Some(id(1)));
}

/// Listing: order (most recent first, ties by id), status, role, time and limit filters, open
/// swaps.
pub fn swaps_list_and_filter(store: &dyn SwapStore) {
    store.put_swap(&record(1, SwapRole::Buyer, SwapStatus::Pending, 30)).unwrap();
    store.put_swap(&record(2, SwapRole::Seller, SwapStatus::Pending, 50)).unwrap();
    store.put_swap(&record(3, SwapRole::Seller, SwapStatus::Succeeded, 40)).unwrap();
    store.put_swap(&record(4, SwapRole::Buyer, SwapStatus::Failed, 40)).unwrap();

    let ids = |f: &SwapFilter| -> Vec<u8> {
        store.list_swaps(f).unwrap().iter().map(|r| r.id.0[0]).collect()
    };
    assert_eq!(ids(&SwapFilter::default()), vec![2, 3, 4, 1]);
    assert_eq!(ids(&SwapFilter::pending()), vec![2, 1]);
    assert_eq!(
        ids(&SwapFilter { status: Some(SwapStatus::Failed), ..Default::default() }),
        vec![4]
    );
    assert_eq!(ids(&SwapFilter { role: Some(SwapRole::Seller), ..Default::default() }), vec![2, 3]);
    assert_eq!(ids(&SwapFilter { updated_since: Some(40), ..Default::default() }), vec![2, 3, 4]);
    assert_eq!(ids(&SwapFilter { limit: Some(2), ..Default::default() }), vec![2, 3]);
    let open = store.list_open_swaps().unwrap();
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|r| r.status == SwapStatus::Pending));
    assert_eq!(open[0].data, record(2, SwapRole::Seller, SwapStatus::Pending, 50).data);

    // A swap that finishes leaves the open list.
    store.put_swap(&record(2, SwapRole::Seller, SwapStatus::Succeeded, 60)).unwrap();
    assert_eq!(ids(&SwapFilter::pending()), vec![1]);
}

/// A large record (256 KiB of data) round-trips byte for byte.
pub fn swaps_large_record(store: &dyn SwapStore) {
    let mut r = record(9, SwapRole::Seller, SwapStatus::Pending, 1);
    r.data = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    store.put_swap(&r).unwrap();
    assert_eq!(store.get_swap(&id(9)).unwrap(), Some(r));
}

/// Offers: put, get, overwrite, list in id order, delete.
pub fn offers_crud(store: &dyn SwapStore) {
    assert_eq!(store.get_offer("a").unwrap(), None);
    assert!(store.list_offers().unwrap().is_empty());
    let a = serde_json::json!({"min_amount_sat": 1000, "fee_ppm": 10});
    let b = serde_json::json!({"min_amount_sat": 2000, "nested": {"x": [1, 2]}});
    store.put_offer("b", &b).unwrap();
    store.put_offer("a", &a).unwrap();
    assert_eq!(store.get_offer("a").unwrap(), Some(a.clone()));
    assert_eq!(
        store.list_offers().unwrap(),
        vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())]
    );
    let a2 = serde_json::json!({"min_amount_sat": 5});
    store.put_offer("a", &a2).unwrap();
    assert_eq!(store.get_offer("a").unwrap(), Some(a2));
    assert!(store.delete_offer("a").unwrap());
    assert!(!store.delete_offer("a").unwrap());
    assert_eq!(store.list_offers().unwrap(), vec![("b".to_string(), b)]);
}

/// The swap index counts 0, 1, 2, ...; `peek` does not reserve.
pub fn swap_index_monotonic(store: &dyn SwapStore) {
    assert_eq!(store.peek_swap_index().unwrap(), 0);
    assert_eq!(store.peek_swap_index().unwrap(), 0);
    for expected in 0..10 {
        assert_eq!(store.next_swap_index().unwrap(), expected);
    }
    assert_eq!(store.peek_swap_index().unwrap(), 10);
}

/// Four threads drawing indices at once never get the same one.
pub fn swap_index_concurrent(store: &dyn SwapStore) {
    let mut all: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| (0..25).map(|_| store.next_swap_index().unwrap()).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<u32>>());
}

/// `raise_swap_index` moves the next index up, never down, and refuses the impossible.
pub fn swap_index_raise(store: &dyn SwapStore) {
    assert_eq!(store.raise_swap_index(0).unwrap(), 0);
    assert_eq!(store.next_swap_index().unwrap(), 0);
    assert_eq!(store.raise_swap_index(250).unwrap(), 250);
    assert_eq!(store.peek_swap_index().unwrap(), 250);
    assert_eq!(store.raise_swap_index(100).unwrap(), 250, "never lowered");
    assert_eq!(store.next_swap_index().unwrap(), 250);
    assert_eq!(store.next_swap_index().unwrap(), 251);
    assert!(matches!(store.raise_swap_index(MAX_SWAP_INDEX + 2), Err(StoreError::IndexExhausted)));
    assert_eq!(store.raise_swap_index(MAX_SWAP_INDEX).unwrap(), MAX_SWAP_INDEX);
    assert_eq!(store.next_swap_index().unwrap(), MAX_SWAP_INDEX);
    assert!(matches!(store.next_swap_index(), Err(StoreError::IndexExhausted)));
}

/// The restore state starts unknown and keeps what is set.
pub fn restore_state_roundtrip(store: &dyn SwapStore) {
    assert_eq!(store.restore_state().unwrap(), RestoreState::Unknown);
    store.set_restore_state(RestoreState::InProgress).unwrap();
    assert_eq!(store.restore_state().unwrap(), RestoreState::InProgress);
    store.set_restore_state(RestoreState::Complete).unwrap();
    assert_eq!(store.restore_state().unwrap(), RestoreState::Complete);
}

/// Processed Nostr ids: first mark is `true`, the second `false`; pruning by time.
pub fn processed_events(store: &dyn SwapStore) {
    let e1 = [1u8; 32];
    let e2 = [2u8; 32];
    assert!(!store.is_event_processed(&e1).unwrap());
    assert!(store.mark_event_processed(e1, 100).unwrap());
    assert!(!store.mark_event_processed(e1, 200).unwrap());
    assert!(store.is_event_processed(&e1).unwrap());
    assert!(store.mark_event_processed(e2, 300).unwrap());
    // e1 keeps its first time (100), so pruning before 150 removes it only.
    assert_eq!(store.prune_processed_events(150).unwrap(), 1);
    assert!(!store.is_event_processed(&e1).unwrap());
    assert!(store.is_event_processed(&e2).unwrap());
    assert_eq!(store.prune_processed_events(150).unwrap(), 0);
    assert_eq!(store.prune_processed_events(301).unwrap(), 1);
    assert!(!store.is_event_processed(&e2).unwrap());
}

/// Per-swap event logs: sequence numbers from 0 without gaps, separate per swap, read from an
/// offset.
pub fn swap_event_log(store: &dyn SwapStore) {
    assert!(store.swap_events(&id(1), 0).unwrap().is_empty());
    for i in 0..5u64 {
        let seq = store.append_swap_event(&id(1), &serde_json::json!({"step": i})).unwrap();
        assert_eq!(seq, i);
    }
    assert_eq!(store.append_swap_event(&id(2), &serde_json::json!("other")).unwrap(), 0);
    // Neighbouring ids do not leak into each other's logs.
    assert_eq!(store.append_swap_event(&SwapId([0u8; 32]), &serde_json::json!(null)).unwrap(), 0);
    let all = store.swap_events(&id(1), 0).unwrap();
    assert_eq!(all.len(), 5);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.event, serde_json::json!({"step": i}));
    }
    let tail = store.swap_events(&id(1), 3).unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(store.swap_events(&id(1), 5).unwrap().is_empty());
    assert_eq!(store.swap_events(&id(2), 0).unwrap().len(), 1);
}

/// Block, list (by key), block again (unchanged), unblock, unblock again.
pub fn blocked_keys_roundtrip(store: &dyn SwapStore) {
    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    assert!(store.blocked_keys().unwrap().is_empty());
    assert!(!store.unblock_key(&a).unwrap());
    assert!(store.block_key(&b, None, 20).unwrap());
    assert!(store.block_key(&a, Some("spam"), 10).unwrap());
    let first = vec![
        BlockEntry { key: a.clone(), note: Some("spam".into()), added_at: 10 },
        BlockEntry { key: b.clone(), note: None, added_at: 20 },
    ];
    assert_eq!(store.blocked_keys().unwrap(), first);
    // Blocking again changes nothing (the first note and time stay).
    assert!(!store.block_key(&a, Some("other"), 30).unwrap());
    assert_eq!(store.blocked_keys().unwrap(), first);
    assert!(store.unblock_key(&a).unwrap());
    assert!(!store.unblock_key(&a).unwrap());
    assert_eq!(store.blocked_keys().unwrap(), vec![first[1].clone()]);
}

/// Swap labels and named settings: write, replace, read back in order; absent ones.
pub fn labels_and_settings(store: &dyn SwapStore) {
    assert!(store.swap_labels().unwrap().is_empty());
    assert_eq!(store.setting("autoloop").unwrap(), None);
    store.put_swap_label(&id(2), &serde_json::json!({"label": "autoloop", "n": 2})).unwrap();
    store.put_swap_label(&id(1), &serde_json::json!({"label": "autoloop", "n": 1})).unwrap();
    store.put_swap_label(&id(2), &serde_json::json!({"label": "autoloop", "n": 3})).unwrap();
    let labels = store.swap_labels().unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels[0], (id(1), serde_json::json!({"label": "autoloop", "n": 1})));
    assert_eq!(labels[1], (id(2), serde_json::json!({"label": "autoloop", "n": 3})));
    store.put_setting("autoloop", &serde_json::json!({"enabled": true})).unwrap();
    store.put_setting("autoloop", &serde_json::json!({"enabled": false})).unwrap();
    store.put_setting("other", &serde_json::json!(1)).unwrap();
    assert_eq!(store.setting("autoloop").unwrap(), Some(serde_json::json!({"enabled": false})));
    assert_eq!(store.setting("other").unwrap(), Some(serde_json::json!(1)));
    assert_eq!(store.setting("none").unwrap(), None);
}
