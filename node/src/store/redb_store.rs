//! [`RedbStore`]: the [`SwapStore`] on one redb file.
//!
//! Tables (schema version 1):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | `u64` (`schema_version`, `next_swap_index`, `restore_state`) |
//! | `swap_meta` | `[u8; 32]` swap id | `&str` JSON of role, state, status, payment hash, times |
//! | `swap_data` | `[u8; 32]` swap id | `&[u8]` the protocol's versioned swap JSON |
//! | `swap_by_payment_hash` | `[u8; 32]` payment hash | `[u8; 32]` swap id |
//! | `offers` | `&str` offer id | `&str` offer JSON |
//! | `nostr_processed` | `[u8; 32]` event id | `u64` seen at (UNIX seconds) |
//! | `swap_events` | `([u8; 32], u64)` swap id, seq | `&str` event JSON |
//! | `blocked_keys` | `&str` Nostr key (x-only hex) | `&str` JSON of note, blocked at |
//!
//! `blocked_keys` came after version 1 without a version bump: a new table changes no existing
//! one, and opening a file creates the tables it lacks.
//!
//! The BDK wallet keeps its changesets in its own table of the same file
//! ([`crate::wallet::WALLET_TABLE_NAME`]).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::group::GroupCommit;
use super::{
    sort_and_limit, BlockEntry, BlockMeta, PaymentHash, RestoreState, StoreError, SwapEvent,
    SwapFilter, SwapId, SwapMeta, SwapRecord, SwapStore, MAX_SWAP_INDEX,
};

/// Schema version written by this build. Bump it with a migration step (private `migrate`) and a test
/// that opens a file of the previous version.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SWAP_META: TableDefinition<[u8; 32], &str> = TableDefinition::new("swap_meta");
const SWAP_DATA: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("swap_data");
const SWAP_BY_HASH: TableDefinition<[u8; 32], [u8; 32]> =
    TableDefinition::new("swap_by_payment_hash");
const OFFERS: TableDefinition<&str, &str> = TableDefinition::new("offers");
const NOSTR_PROCESSED: TableDefinition<[u8; 32], u64> = TableDefinition::new("nostr_processed");
const SWAP_EVENTS: TableDefinition<([u8; 32], u64), &str> = TableDefinition::new("swap_events");
const BLOCKED_KEYS: TableDefinition<&str, &str> = TableDefinition::new("blocked_keys");
/// Swap labels (autoloop's ledger), JSON by swap id. Added in schema version 1 (a table is
/// created at open: older files need no migration).
const SWAP_LABELS: TableDefinition<[u8; 32], &str> = TableDefinition::new("swap_labels");
/// Named settings (autoloop's rules), JSON by name.
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");

const KEY_SCHEMA_VERSION: &str = "schema_version";
const KEY_NEXT_SWAP_INDEX: &str = "next_swap_index";
const KEY_RESTORE_STATE: &str = "restore_state";

fn db_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Database { op, source: Box::new(e.into()) }
}

/// The drawn-ahead indices (a poisoned lock is taken over: two plain numbers, each update whole).
fn lock_indices(m: &Mutex<Option<IndexBlock>>) -> MutexGuard<'_, Option<IndexBlock>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value of the meta table (0 when absent), in a read or a write transaction.
fn meta_value(
    meta: &impl ReadableTable<&'static str, u64>,
    key: &str,
    op: &'static str,
) -> Result<u64, StoreError> {
    Ok(meta.get(key).map_err(db_err(op))?.map(|v| v.value()).unwrap_or(0))
}

/// The [`SwapStore`] on a redb file. Cheap to clone (the database is shared).
///
/// Writes are group-committed (`store/group.rs`): concurrent writers share one durable commit.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    group: Arc<GroupCommit>,
    /// Swap indices drawn ahead ([`INDEX_BLOCK`] at a time): `next..end`, where `end` is the
    /// stored next index; `None` until the first draw reads it.
    indices: Arc<Mutex<Option<IndexBlock>>>,
}

/// How many swap indices [`RedbStore`] commits as used at once: one durable write per block,
/// not per swap. A crash skips what is left of the block (indices are never handed out twice;
/// a skipped one is a key path never used).
pub const INDEX_BLOCK: u32 = 32;

/// Swap indices committed as used and not handed out yet.
#[derive(Debug, Clone, Copy)]
struct IndexBlock {
    next: u64,
    end: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens (or creates) the database file, creating its parent directory, every table, and
    /// migrating an older schema.
    ///
    /// # Errors
    /// [`StoreError::Database`] (e.g. the file is open in another process),
    /// [`StoreError::SchemaTooNew`] or [`StoreError::Migration`].
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database {
                op: "create the database directory",
                source: Box::new(redb::Error::Io(e)),
            })?;
        }
        let db = Database::create(path).map_err(db_err("open the database"))?;
        Self::from_database(Arc::new(db))
    }

    /// Uses an already open database (e.g. an in-memory redb backend in tests).
    ///
    /// # Errors
    /// As [`RedbStore::open`].
    pub fn from_database(db: Arc<Database>) -> Result<RedbStore, StoreError> {
        let group = Arc::new(GroupCommit::start(Arc::clone(&db))?);
        let store = RedbStore { db, group, indices: Arc::new(Mutex::new(None)) };
        store.init()?;
        Ok(store)
    }

    /// Runs `op` in a write transaction, group-committed with the other writes queued now.
    fn write<R: Send + 'static>(
        &self,
        op: impl FnMut(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.group.write(op)
    }

    /// Runs `op` in a write transaction of the store's group commit (`store/group.rs`), with the
    /// other writes queued now, and returns once that transaction is durable: for other tables
    /// in the same database (the wallet's changesets), so that their writes do not wait for
    /// redb's write lock behind the store's. A failing `op` fails only its caller; `op` may run
    /// again (after another write of its group failed) and must not keep anything from a run.
    ///
    /// # Errors
    /// `op`'s error, or [`StoreError::Database`] when the commit fails.
    pub fn write_in_group<R: Send + 'static>(
        &self,
        op: impl FnMut(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write(op)
    }

    /// The shared database, for the wallet persister.
    pub fn database(&self) -> Arc<Database> {
        Arc::clone(&self.db)
    }

    /// The schema version stored in the file.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let table = tx.open_table(META).map_err(db_err("open the meta table"))?;
        let version = table
            .get(KEY_SCHEMA_VERSION)
            .map_err(db_err("read the schema version"))?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok(version)
    }

    fn init(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err("begin a write"))?;
        {
            let mut meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
            let found = meta
                .get(KEY_SCHEMA_VERSION)
                .map_err(db_err("read the schema version"))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION)
                        .map_err(db_err("write the schema version"))?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::SchemaTooNew { found: v, supported: SCHEMA_VERSION })
                }
                Some(v) if v < SCHEMA_VERSION => {
                    drop(meta);
                    migrate(&tx, v)?;
                    let mut meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
                    meta.insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION)
                        .map_err(db_err("write the schema version"))?;
                }
                Some(_) => {}
            }
        }
        tx.open_table(SWAP_META).map_err(db_err("create tables"))?;
        tx.open_table(SWAP_DATA).map_err(db_err("create tables"))?;
        tx.open_table(SWAP_BY_HASH).map_err(db_err("create tables"))?;
        tx.open_table(OFFERS).map_err(db_err("create tables"))?;
        tx.open_table(NOSTR_PROCESSED).map_err(db_err("create tables"))?;
        tx.open_table(SWAP_EVENTS).map_err(db_err("create tables"))?;
        tx.open_table(BLOCKED_KEYS).map_err(db_err("create tables"))?;
        tx.open_table(SWAP_LABELS).map_err(db_err("create tables"))?;
        tx.open_table(SETTINGS).map_err(db_err("create tables"))?;
        tx.commit().map_err(db_err("commit the schema"))
    }

    fn read_record(meta_json: &str, id: SwapId, data: Vec<u8>) -> Result<SwapRecord, StoreError> {
        let meta: SwapMeta = serde_json::from_str(meta_json)
            .map_err(|source| StoreError::Corrupt { what: format!("swap record {id}"), source })?;
        Ok(meta.into_record(id, data))
    }

    fn get_swap_in(
        tx: &redb::ReadTransaction,
        id: &SwapId,
    ) -> Result<Option<SwapRecord>, StoreError> {
        let metas = tx.open_table(SWAP_META).map_err(db_err("open swaps"))?;
        let datas = tx.open_table(SWAP_DATA).map_err(db_err("open swaps"))?;
        let Some(meta) = metas.get(id.0).map_err(db_err("read a swap"))? else {
            return Ok(None);
        };
        let data = datas
            .get(id.0)
            .map_err(db_err("read a swap"))?
            .map(|d| d.value().to_vec())
            .unwrap_or_default();
        Self::read_record(meta.value(), *id, data).map(Some)
    }
}

/// Upgrades the tables from schema version `from` to [`SCHEMA_VERSION`], inside the opening
/// write transaction (so a failed migration leaves the file untouched).
///
/// Version 1 is the first layout, so there is no step yet. A later version adds one step per
/// version, applied in order, e.g. `if from < 2 { /* rewrite swap_meta */ }`, and a test that
/// opens a file written in the previous layout (see `node/tests/store_suite.rs`).
fn migrate(tx: &redb::WriteTransaction, from: u64) -> Result<(), StoreError> {
    let _ = tx;
    Err(StoreError::Migration {
        from,
        reason: format!("no migration path to version {SCHEMA_VERSION}"),
    })
}

impl SwapStore for RedbStore {
    fn put_swap(&self, record: &SwapRecord) -> Result<(), StoreError> {
        let meta_json = serde_json::to_string(&SwapMeta::of(record)).map_err(|source| {
            StoreError::Encode { what: format!("swap record {}", record.id), source }
        })?;
        let record = record.clone();
        self.write(move |tx| {
            let mut metas = tx.open_table(SWAP_META).map_err(db_err("open swaps"))?;
            let mut datas = tx.open_table(SWAP_DATA).map_err(db_err("open swaps"))?;
            let mut by_hash = tx.open_table(SWAP_BY_HASH).map_err(db_err("open swaps"))?;
            let old_hash = match metas.get(record.id.0).map_err(db_err("read a swap"))? {
                Some(old) => {
                    serde_json::from_str::<SwapMeta>(old.value()).ok().and_then(|m| m.payment_hash)
                }
                None => None,
            };
            if let Some(old) = old_hash.filter(|h| Some(*h) != record.payment_hash) {
                by_hash.remove(old.0).map_err(db_err("update the payment hash index"))?;
            }
            if let Some(hash) = record.payment_hash {
                by_hash
                    .insert(hash.0, record.id.0)
                    .map_err(db_err("update the payment hash index"))?;
            }
            metas.insert(record.id.0, meta_json.as_str()).map_err(db_err("write a swap"))?;
            datas.insert(record.id.0, record.data.as_slice()).map_err(db_err("write a swap"))?;
            Ok(())
        })
    }

    fn get_swap(&self, id: &SwapId) -> Result<Option<SwapRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        Self::get_swap_in(&tx, id)
    }

    fn get_swap_by_payment_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<SwapRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let id = {
            let by_hash = tx.open_table(SWAP_BY_HASH).map_err(db_err("open swaps"))?;
            let found = by_hash.get(hash.0).map_err(db_err("read the payment hash index"))?;
            match found {
                Some(id) => SwapId(id.value()),
                None => return Ok(None),
            }
        };
        Self::get_swap_in(&tx, &id)
    }

    fn list_swaps(&self, filter: &SwapFilter) -> Result<Vec<SwapRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let metas = tx.open_table(SWAP_META).map_err(db_err("open swaps"))?;
        let datas = tx.open_table(SWAP_DATA).map_err(db_err("open swaps"))?;
        let mut out = Vec::new();
        for entry in metas.iter().map_err(db_err("list swaps"))? {
            let (key, meta) = entry.map_err(db_err("list swaps"))?;
            let id = SwapId(key.value());
            // Decode the metadata first; fetch the data only for matching swaps.
            let record = Self::read_record(meta.value(), id, Vec::new())?;
            if !filter.matches(&record) {
                continue;
            }
            let data = datas
                .get(id.0)
                .map_err(db_err("read a swap"))?
                .map(|d| d.value().to_vec())
                .unwrap_or_default();
            out.push(SwapRecord { data, ..record });
        }
        sort_and_limit(&mut out, filter.limit);
        Ok(out)
    }

    fn put_offer(&self, id: &str, offer: &serde_json::Value) -> Result<(), StoreError> {
        let json = serde_json::to_string(offer)
            .map_err(|source| StoreError::Encode { what: format!("offer {id}"), source })?;
        let id = id.to_string();
        self.write(move |tx| {
            let mut offers = tx.open_table(OFFERS).map_err(db_err("open offers"))?;
            offers.insert(id.as_str(), json.as_str()).map_err(db_err("write an offer"))?;
            Ok(())
        })
    }

    fn get_offer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let offers = tx.open_table(OFFERS).map_err(db_err("open offers"))?;
        let found = offers.get(id).map_err(db_err("read an offer"))?;
        match found {
            Some(json) => serde_json::from_str(json.value())
                .map(Some)
                .map_err(|source| StoreError::Corrupt { what: format!("offer {id}"), source }),
            None => Ok(None),
        }
    }

    fn list_offers(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let offers = tx.open_table(OFFERS).map_err(db_err("open offers"))?;
        let mut out = Vec::new();
        for entry in offers.iter().map_err(db_err("list offers"))? {
            let (id, json) = entry.map_err(db_err("list offers"))?;
            let id = id.value().to_string();
            let value = serde_json::from_str(json.value())
                .map_err(|source| StoreError::Corrupt { what: format!("offer {id}"), source })?;
            out.push((id, value));
        }
        Ok(out)
    }

    fn delete_offer(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut offers = tx.open_table(OFFERS).map_err(db_err("open offers"))?;
            let removed = offers.remove(id.as_str()).map_err(db_err("delete an offer"))?;
            Ok(removed.is_some())
        })
    }

    /// Hands out the next index of the block drawn ahead, drawing (and committing) the next
    /// block first when it is used up: never an index that is not committed as used.
    fn next_swap_index(&self) -> Result<u32, StoreError> {
        let mut indices = lock_indices(&self.indices);
        let block = match *indices {
            Some(b) if b.next < b.end => b,
            _ => {
                let (next, end) = self.write(|tx| {
                    let mut meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
                    let current = meta_value(&meta, KEY_NEXT_SWAP_INDEX, "read the swap index")?;
                    if current > u64::from(MAX_SWAP_INDEX) {
                        return Err(StoreError::IndexExhausted);
                    }
                    let end = (current + u64::from(INDEX_BLOCK)).min(u64::from(MAX_SWAP_INDEX) + 1);
                    meta.insert(KEY_NEXT_SWAP_INDEX, end)
                        .map_err(db_err("write the swap index"))?;
                    Ok((current, end))
                })?;
                IndexBlock { next, end }
            }
        };
        let index = u32::try_from(block.next).map_err(|_| StoreError::IndexExhausted)?;
        *indices = Some(IndexBlock { next: block.next + 1, end: block.end });
        Ok(index)
    }

    fn peek_swap_index(&self) -> Result<u32, StoreError> {
        let indices = lock_indices(&self.indices);
        let current = match *indices {
            Some(b) => b.next,
            None => {
                let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
                let meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
                meta_value(&meta, KEY_NEXT_SWAP_INDEX, "read the swap index")?
            }
        };
        u32::try_from(current).map_err(|_| StoreError::IndexExhausted)
    }

    fn raise_swap_index(&self, at_least: u32) -> Result<u32, StoreError> {
        if at_least > MAX_SWAP_INDEX.saturating_add(1) {
            return Err(StoreError::IndexExhausted);
        }
        let mut indices = lock_indices(&self.indices);
        let stored = self.write(move |tx| {
            let mut meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
            let current = meta_value(&meta, KEY_NEXT_SWAP_INDEX, "read the swap index")?;
            let next = current.max(u64::from(at_least));
            if next != current {
                meta.insert(KEY_NEXT_SWAP_INDEX, next).map_err(db_err("write the swap index"))?;
            }
            Ok(next)
        })?;
        // What is left of the block below `at_least` is skipped; past its end, the next draw
        // starts at the stored index.
        let block = match *indices {
            Some(b) if u64::from(at_least) < b.end => {
                IndexBlock { next: b.next.max(u64::from(at_least)), end: b.end }
            }
            _ => IndexBlock { next: stored, end: stored },
        };
        *indices = Some(block);
        u32::try_from(block.next).map_err(|_| StoreError::IndexExhausted)
    }

    fn restore_state(&self) -> Result<RestoreState, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
        let value = meta_value(&meta, KEY_RESTORE_STATE, "read the restore state")?;
        Ok(RestoreState::from_u64(value))
    }

    fn set_restore_state(&self, state: RestoreState) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut meta = tx.open_table(META).map_err(db_err("open the meta table"))?;
            meta.insert(KEY_RESTORE_STATE, state.to_u64())
                .map_err(db_err("write the restore state"))?;
            Ok(())
        })
    }

    fn mark_event_processed(&self, id: [u8; 32], seen_at: u64) -> Result<bool, StoreError> {
        if self.is_event_processed(&id)? {
            return Ok(false);
        }
        self.write(move |tx| {
            let mut table =
                tx.open_table(NOSTR_PROCESSED).map_err(db_err("open processed events"))?;
            let exists = table.get(id).map_err(db_err("read processed events"))?.is_some();
            if !exists {
                table.insert(id, seen_at).map_err(db_err("write processed events"))?;
            }
            Ok(!exists)
        })
    }

    fn is_event_processed(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let table = tx.open_table(NOSTR_PROCESSED).map_err(db_err("open processed events"))?;
        let found = table.get(*id).map_err(db_err("read processed events"))?;
        Ok(found.is_some())
    }

    fn prune_processed_events(&self, before: u64) -> Result<usize, StoreError> {
        self.write(move |tx| {
            let mut removed = 0usize;
            let mut table =
                tx.open_table(NOSTR_PROCESSED).map_err(db_err("open processed events"))?;
            table
                .retain(|_, seen_at| {
                    let keep = seen_at >= before;
                    if !keep {
                        removed += 1;
                    }
                    keep
                })
                .map_err(db_err("prune processed events"))?;
            Ok(removed)
        })
    }

    fn append_swap_event(&self, id: &SwapId, event: &serde_json::Value) -> Result<u64, StoreError> {
        let json = serde_json::to_string(event)
            .map_err(|source| StoreError::Encode { what: format!("event of swap {id}"), source })?;
        let id = *id;
        self.write(move |tx| {
            let mut table = tx.open_table(SWAP_EVENTS).map_err(db_err("open swap events"))?;
            let last = table
                .range((id.0, 0)..=(id.0, u64::MAX))
                .map_err(db_err("read swap events"))?
                .next_back()
                .transpose()
                .map_err(db_err("read swap events"))?
                .map(|(k, _)| k.value().1);
            let seq = last.map_or(0, |s| s + 1);
            table.insert((id.0, seq), json.as_str()).map_err(db_err("write a swap event"))?;
            Ok(seq)
        })
    }

    fn swap_events(&self, id: &SwapId, from: u64) -> Result<Vec<SwapEvent>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let table = tx.open_table(SWAP_EVENTS).map_err(db_err("open swap events"))?;
        let mut out = Vec::new();
        for entry in
            table.range((id.0, from)..=(id.0, u64::MAX)).map_err(db_err("read swap events"))?
        {
            let (key, json) = entry.map_err(db_err("read swap events"))?;
            let seq = key.value().1;
            let event = serde_json::from_str(json.value()).map_err(|source| {
                StoreError::Corrupt { what: format!("event {seq} of swap {id}"), source }
            })?;
            out.push(SwapEvent { seq, event });
        }
        Ok(out)
    }

    fn block_key(
        &self,
        key_hex: &str,
        note: Option<&str>,
        at_secs: u64,
    ) -> Result<bool, StoreError> {
        let meta = BlockMeta { note: note.map(str::to_string), added_at: at_secs };
        let json = serde_json::to_string(&meta).map_err(|source| StoreError::Encode {
            what: format!("blocked key {key_hex}"),
            source,
        })?;
        let key_hex = key_hex.to_string();
        self.write(move |tx| {
            let mut table = tx.open_table(BLOCKED_KEYS).map_err(db_err("open blocked keys"))?;
            let key = key_hex.as_str();
            let exists = table.get(key).map_err(db_err("read blocked keys"))?.is_some();
            if !exists {
                table.insert(key, json.as_str()).map_err(db_err("write a blocked key"))?;
            }
            Ok(!exists)
        })
    }

    fn unblock_key(&self, key_hex: &str) -> Result<bool, StoreError> {
        let key_hex = key_hex.to_string();
        self.write(move |tx| {
            let mut table = tx.open_table(BLOCKED_KEYS).map_err(db_err("open blocked keys"))?;
            let removed = table.remove(key_hex.as_str()).map_err(db_err("delete a blocked key"))?;
            Ok(removed.is_some())
        })
    }

    fn blocked_keys(&self) -> Result<Vec<BlockEntry>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let table = tx.open_table(BLOCKED_KEYS).map_err(db_err("open blocked keys"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err("list blocked keys"))? {
            let (key, json) = entry.map_err(db_err("list blocked keys"))?;
            let key = key.value().to_string();
            let meta: BlockMeta = serde_json::from_str(json.value()).map_err(|source| {
                StoreError::Corrupt { what: format!("blocked key {key}"), source }
            })?;
            out.push(meta.into_entry(key));
        }
        Ok(out)
    }

    fn put_swap_label(&self, id: &SwapId, label: &serde_json::Value) -> Result<(), StoreError> {
        let json = serde_json::to_string(label)
            .map_err(|source| StoreError::Encode { what: format!("label of swap {id}"), source })?;
        let key = id.0;
        self.write(move |tx| {
            let mut table = tx.open_table(SWAP_LABELS).map_err(db_err("open swap labels"))?;
            table.insert(key, json.as_str()).map_err(db_err("write a swap label"))?;
            Ok(())
        })
    }

    fn swap_labels(&self) -> Result<Vec<(SwapId, serde_json::Value)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let table = tx.open_table(SWAP_LABELS).map_err(db_err("open swap labels"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err("list swap labels"))? {
            let (key, json) = entry.map_err(db_err("list swap labels"))?;
            let id = SwapId(key.value());
            let label = serde_json::from_str(json.value()).map_err(|source| {
                StoreError::Corrupt { what: format!("label of swap {id}"), source }
            })?;
            out.push((id, label));
        }
        Ok(out)
    }

    fn put_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let json = serde_json::to_string(value)
            .map_err(|source| StoreError::Encode { what: format!("setting {name}"), source })?;
        let name = name.to_string();
        self.write(move |tx| {
            let mut table = tx.open_table(SETTINGS).map_err(db_err("open settings"))?;
            table.insert(name.as_str(), json.as_str()).map_err(db_err("write a setting"))?;
            Ok(())
        })
    }

    fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("begin a read"))?;
        let table = tx.open_table(SETTINGS).map_err(db_err("open settings"))?;
        let Some(json) = table.get(name).map_err(db_err("read a setting"))? else {
            return Ok(None);
        };
        serde_json::from_str(json.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt { what: format!("setting {name}"), source })
    }
}
