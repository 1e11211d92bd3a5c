//! The shared `SwapStore` test suite on every backend, plus redb-only tests: reopening the file,
//! opening a file written in the schema version 1 layout, refusing newer schemas.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

#[macro_use]
#[path = "store_suite/suite.rs"]
mod suite;

use looper_node::store::{
    MemoryStore, RedbStore, StoreError, SwapFilter, SwapRole, SwapStatus, SwapStore, SCHEMA_VERSION,
};
use redb::{Database, TableDefinition};
use suite::{hash, id, record};

/// A redb store in a temporary directory that lives as long as the store.
struct TempRedb {
    store: RedbStore,
    _dir: tempfile::TempDir,
}

impl TempRedb {
    fn new() -> TempRedb {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("looper.redb")).unwrap();
        TempRedb { store, _dir: dir }
    }
}

impl Deref for TempRedb {
    type Target = RedbStore;
    fn deref(&self) -> &RedbStore {
        &self.store
    }
}

fn in_memory_redb() -> Box<RedbStore> {
    let db =
        Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
    Box::new(RedbStore::from_database(Arc::new(db)).unwrap())
}

swap_store_test_suite!(memory, Box::new(MemoryStore::new()));
swap_store_test_suite!(redb_file, TempRedb::new());
swap_store_test_suite!(redb_in_memory, in_memory_redb());

#[test]
fn redb_reopen_sees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("looper.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.put_swap(&record(1, SwapRole::Seller, SwapStatus::Pending, 5)).unwrap();
        store.put_swap(&record(2, SwapRole::Buyer, SwapStatus::Succeeded, 6)).unwrap();
        store.put_offer("o1", &serde_json::json!({"fee_ppm": 1})).unwrap();
        assert_eq!(store.next_swap_index().unwrap(), 0);
        assert_eq!(store.next_swap_index().unwrap(), 1);
        assert!(store.mark_event_processed([9; 32], 7).unwrap());
        store.append_swap_event(&id(1), &serde_json::json!({"e": 1})).unwrap();
        assert!(store.block_key(&"cc".repeat(32), Some("n"), 9).unwrap());
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        store.get_swap(&id(1)).unwrap(),
        Some(record(1, SwapRole::Seller, SwapStatus::Pending, 5))
    );
    assert_eq!(store.get_swap_by_payment_hash(&hash(2)).unwrap().map(|r| r.id), Some(id(2)));
    assert_eq!(store.list_open_swaps().unwrap().len(), 1);
    assert_eq!(store.get_offer("o1").unwrap(), Some(serde_json::json!({"fee_ppm": 1})));
    // The index continues past every one handed out (what was left of the block drawn ahead is
    // skipped): never handed out twice.
    assert_eq!(store.next_swap_index().unwrap(), looper_node::store::INDEX_BLOCK);
    assert!(!store.mark_event_processed([9; 32], 8).unwrap());
    assert_eq!(store.swap_events(&id(1), 0).unwrap().len(), 1);
    assert_eq!(store.append_swap_event(&id(1), &serde_json::json!({"e": 2})).unwrap(), 1);
    let blocked = store.blocked_keys().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(
        (blocked[0].key.as_str(), blocked[0].note.as_deref()),
        ("cc".repeat(32).as_str(), Some("n"))
    );
}

#[test]
fn redb_second_open_in_process_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("looper.redb");
    let _first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Database { op: "open the database", .. }), "{err}");
    assert_eq!(err.to_string(), "database error while trying to open the database");
}

/// Writes a database exactly as schema version 1 lays it out, with table definitions frozen here
/// (not taken from the store), so that a later change of the store's layout that forgets a
/// migration fails this test.
fn write_v1_file(path: &Path) {
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const SWAP_META: TableDefinition<[u8; 32], &str> = TableDefinition::new("swap_meta");
    const SWAP_DATA: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("swap_data");
    const SWAP_BY_HASH: TableDefinition<[u8; 32], [u8; 32]> =
        TableDefinition::new("swap_by_payment_hash");
    const OFFERS: TableDefinition<&str, &str> = TableDefinition::new("offers");
    const NOSTR_PROCESSED: TableDefinition<[u8; 32], u64> = TableDefinition::new("nostr_processed");
    const SWAP_EVENTS: TableDefinition<([u8; 32], u64), &str> = TableDefinition::new("swap_events");

    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut meta = tx.open_table(META).unwrap();
        meta.insert("schema_version", 1).unwrap();
        meta.insert("next_swap_index", 42).unwrap();
        let mut swap_meta = tx.open_table(SWAP_META).unwrap();
        swap_meta
            .insert(
                [0xab; 32],
                r#"{"role":"seller","state":"funded","status":"pending","payment_hash":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","created_at":1700000000,"updated_at":1700000100}"#,
            )
            .unwrap();
        swap_meta
            .insert(
                [0x01; 32],
                r#"{"role":"buyer","state":"claimed","status":"succeeded","created_at":1,"updated_at":2}"#,
            )
            .unwrap();
        let mut swap_data = tx.open_table(SWAP_DATA).unwrap();
        swap_data.insert([0xab; 32], br#"{"version":1,"opaque":true}"#.as_slice()).unwrap();
        swap_data.insert([0x01; 32], b"".as_slice()).unwrap();
        let mut by_hash = tx.open_table(SWAP_BY_HASH).unwrap();
        by_hash.insert([0xcd; 32], [0xab; 32]).unwrap();
        let mut offers = tx.open_table(OFFERS).unwrap();
        offers.insert("offer-1", r#"{"min_amount_sat":1000}"#).unwrap();
        let mut processed = tx.open_table(NOSTR_PROCESSED).unwrap();
        processed.insert([0x77; 32], 1_700_000_000).unwrap();
        let mut events = tx.open_table(SWAP_EVENTS).unwrap();
        events.insert(([0xab; 32], 0), r#"{"state":"accepted"}"#).unwrap();
        events.insert(([0xab; 32], 1), r#"{"state":"funded"}"#).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn redb_opens_a_schema_v1_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("looper.redb");
    write_v1_file(&path);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let swap = store.get_swap(&looper_node::store::SwapId([0xab; 32])).unwrap().unwrap();
    assert_eq!(swap.role, SwapRole::Seller);
    assert_eq!(swap.state, "funded");
    assert_eq!(swap.status, SwapStatus::Pending);
    assert_eq!(swap.payment_hash, Some(looper_node::store::PaymentHash([0xcd; 32])));
    assert_eq!(swap.updated_at, 1_700_000_100);
    assert_eq!(swap.data, br#"{"version":1,"opaque":true}"#);
    assert_eq!(
        store
            .get_swap_by_payment_hash(&looper_node::store::PaymentHash([0xcd; 32]))
            .unwrap()
            .map(|s| s.id),
        Some(swap.id)
    );
    let open = store.list_open_swaps().unwrap();
    assert_eq!(open.len(), 1);
    let all = store.list_swaps(&SwapFilter::default()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        store.get_offer("offer-1").unwrap(),
        Some(serde_json::json!({"min_amount_sat": 1000}))
    );
    assert_eq!(store.next_swap_index().unwrap(), 42);
    assert!(store.is_event_processed(&[0x77; 32]).unwrap());
    let events = store.swap_events(&swap.id, 0).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event, serde_json::json!({"state": "funded"}));
    assert_eq!(
        store.append_swap_event(&swap.id, &serde_json::json!({"state": "claimed"})).unwrap(),
        2
    );
    // A table added since (without a version bump) is created at open.
    assert!(store.blocked_keys().unwrap().is_empty());
    assert!(store.block_key(&"dd".repeat(32), None, 1).unwrap());
}

fn write_schema_version(path: &Path, version: u64) {
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(META).unwrap().insert("schema_version", version).unwrap();
    tx.commit().unwrap();
}

#[test]
fn redb_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("looper.redb");
    write_schema_version(&path, SCHEMA_VERSION + 1);
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
}

#[test]
fn redb_migration_without_a_path_fails_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("looper.redb");
    write_schema_version(&path, 0);
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Migration { from: 0, .. }), "{err}");
    // The failed open left the version as it was.
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let db = Database::create(&path).unwrap();
    let tx = db.begin_read().unwrap();
    let v = tx.open_table(META).unwrap().get("schema_version").unwrap().unwrap().value();
    assert_eq!(v, 0);
}
