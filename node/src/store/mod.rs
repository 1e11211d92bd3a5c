//! The node's persistent state behind one trait, [`SwapStore`]: swap records, our published
//! offers, the swap key-derivation index, the [`RestoreState`], processed Nostr event ids, a
//! per-swap event log, the seller's block list of Nostr keys (the keys blocked through the
//! API; those of the configuration are not stored), swap labels (autoloop's ledger) and named
//! settings (autoloop's rules).
//!
//! Two implementations: [`RedbStore`] (one redb file, `DATADIR/looper.redb`, shared with the BDK
//! wallet persister through [`RedbStore::database`]) and [`MemoryStore`] (tests, simulations).
//! Both pass the same test suite (`node/tests/store_suite/suite.rs`, run by
//! `node/tests/store_suite.rs` on each).
//!
//! Durability: every write method runs one redb write transaction and commits it (fsync) before it
//! returns, so the engine can "persist, then act". The methods are synchronous and may block for
//! the length of an fsync; call them from `tokio::task::spawn_blocking` where that matters.
//!
//! Swap records are opaque to the store: `data` holds the protocol crate's versioned JSON, and the
//! store keeps beside it only what it needs to index and list (role, state name, status, payment
//! hash, timestamps).

mod group;
mod memory;
mod redb_store;

use serde::{Deserialize, Serialize};

pub use looper_protocol::{PaymentHash, SwapId};
pub use memory::MemoryStore;
pub use redb_store::{RedbStore, INDEX_BLOCK, SCHEMA_VERSION};

/// File name of the database in the data dir.
pub const DB_FILE_NAME: &str = "looper.redb";

/// Which side of the swap this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapRole {
    /// The taker: pays Lightning, receives on-chain (loop out).
    Buyer,
    /// The maker: locks on-chain, receives Lightning.
    Seller,
}

/// Where a swap stands, from the state machine's `kind()`: only [`SwapStatus::Pending`] swaps are
/// reloaded and resumed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapStatus {
    /// Still running: the engine must drive it (it may hold funds).
    Pending,
    /// Finished as intended (claimed).
    Succeeded,
    /// Finished without the exchange (refunded, aborted before funding, failed).
    Failed,
}

/// One stored swap: the protocol's serialized state plus the fields the store indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRecord {
    /// The swap id (primary key).
    pub id: SwapId,
    /// Our role in it.
    pub role: SwapRole,
    /// Name of the state-machine state (`"funded"`, `"claimed"`, ...), for listings and logs.
    pub state: String,
    /// Pending, succeeded or failed.
    pub status: SwapStatus,
    /// The payment hash, once known (secondary index: [`SwapStore::get_swap_by_payment_hash`]).
    pub payment_hash: Option<PaymentHash>,
    /// Creation time, UNIX seconds.
    pub created_at: u64,
    /// Time of the last transition, UNIX seconds.
    pub updated_at: u64,
    /// The protocol crate's versioned JSON of the swap state. Opaque here.
    pub data: Vec<u8>,
}

/// What [`SwapStore::list_swaps`] returns. Every field set narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapFilter {
    /// Only swaps with this status.
    pub status: Option<SwapStatus>,
    /// Only swaps with this role.
    pub role: Option<SwapRole>,
    /// Only swaps updated at or after this UNIX time.
    pub updated_since: Option<u64>,
    /// At most this many (the most recently updated first).
    pub limit: Option<usize>,
}

impl SwapFilter {
    /// All pending swaps (the ones to resume at start).
    pub fn pending() -> SwapFilter {
        SwapFilter { status: Some(SwapStatus::Pending), ..SwapFilter::default() }
    }

    /// Whether `record` passes the filter (ignoring `limit`).
    pub fn matches(&self, record: &SwapRecord) -> bool {
        self.status.is_none_or(|s| s == record.status)
            && self.role.is_none_or(|r| r == record.role)
            && self.updated_since.is_none_or(|t| record.updated_at >= t)
    }
}

/// One entry of a swap's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapEvent {
    /// Position in the swap's log, from 0, without gaps.
    pub seq: u64,
    /// The event, as JSON (shape chosen by the engine).
    pub event: serde_json::Value,
}

/// One key of the seller's block list as the store keeps it ([`SwapStore::block_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    /// The Nostr public key, x-only, lower-case hex (the primary key).
    pub key: String,
    /// Free text given when the key was blocked.
    pub note: Option<String>,
    /// When the key was blocked, UNIX seconds.
    pub added_at: u64,
}

/// What is stored beside a blocked key (everything of [`BlockEntry`] but the key). Shared by both
/// stores so they encode identically.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlockMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    added_at: u64,
}

impl BlockMeta {
    fn into_entry(self, key: String) -> BlockEntry {
        BlockEntry { key, note: self.note, added_at: self.added_at }
    }
}

/// Errors of the stores. They name what was being done; none carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (I/O, corruption, already open, ...).
    #[error("database error while trying to {op}")]
    Database {
        /// What the store was doing ("open the database", "commit", ...).
        op: &'static str,
        /// redb's error (boxed: it is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored value could not be decoded.
    #[error("corrupt {what} in the store")]
    Corrupt {
        /// Which value ("swap record 00ab..", "offer x").
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded (not expected for the store's own types).
    #[error("cannot encode {what}")]
    Encode {
        /// Which value.
        what: String,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer Looper.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade looper-node")]
    SchemaTooNew {
        /// Version in the file.
        found: u64,
        /// Highest version this build knows.
        supported: u64,
    },
    /// A schema migration failed.
    #[error("cannot migrate the database from schema version {from}: {reason}")]
    Migration {
        /// Version the migration started from.
        from: u64,
        /// What went wrong.
        reason: String,
    },
    /// All 2^31 swap indices are used (BIP-32 hardened index space).
    #[error("swap key index space exhausted")]
    IndexExhausted,
    /// A new block of swap indices could not be reserved in the node's backups (no relay
    /// accepted the reservation; see `crate::backup`): no index is handed out until one does.
    #[error("cannot reserve swap key indices: {reason}")]
    IndexNotReserved {
        /// Why (no secret material).
        reason: String,
    },
    /// A lock was poisoned by a panicking thread (memory store).
    #[error("store lock poisoned")]
    Poisoned,
}

/// The node's persistent state. Implementations are `Send + Sync` and every write is durable when
/// the method returns.
pub trait SwapStore: Send + Sync {
    /// Inserts or replaces a swap record (and updates the payment-hash index).
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn put_swap(&self, record: &SwapRecord) -> Result<(), StoreError>;

    /// The swap with this id.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn get_swap(&self, id: &SwapId) -> Result<Option<SwapRecord>, StoreError>;

    /// The swap whose payment hash is `hash` (the seed API's `GET /loop/out/{payment_hash}`).
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn get_swap_by_payment_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<SwapRecord>, StoreError>;

    /// Swaps passing `filter`, most recently updated first (ties by id).
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn list_swaps(&self, filter: &SwapFilter) -> Result<Vec<SwapRecord>, StoreError>;

    /// All pending swaps: what the engine reloads and resumes at start.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn list_open_swaps(&self) -> Result<Vec<SwapRecord>, StoreError> {
        self.list_swaps(&SwapFilter::pending())
    }

    /// Inserts or replaces one of our published offers (JSON).
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn put_offer(&self, id: &str, offer: &serde_json::Value) -> Result<(), StoreError>;

    /// One of our offers.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn get_offer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// All our offers, ordered by id.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn list_offers(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// Deletes an offer; `false` if there was none with this id.
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn delete_offer(&self, id: &str) -> Result<bool, StoreError>;

    /// Returns the next unused swap key index, committed as used before it is returned (alone, or
    /// with a block of the next ones, [`INDEX_BLOCK`] for [`RedbStore`]), so an index is never
    /// handed out twice, even across a crash.
    ///
    /// # Errors
    /// [`StoreError::IndexExhausted`] after 2^31 indices, or a database error.
    fn next_swap_index(&self) -> Result<u32, StoreError>;

    /// The index [`SwapStore::next_swap_index`] would return next (nothing is reserved). A node
    /// restored from its seed scans swap keys up to here.
    ///
    /// # Errors
    /// [`StoreError`] on a database error.
    fn peek_swap_index(&self) -> Result<u32, StoreError>;

    /// Raises the next swap index to at least `at_least` (it is never lowered) and returns the
    /// next index after the call. A node restored from its backups starts past every index it
    /// used before (`crate::backup`).
    ///
    /// # Errors
    /// [`StoreError::IndexExhausted`] for `at_least` above [`MAX_SWAP_INDEX`] + 1, or a database
    /// error.
    fn raise_swap_index(&self, at_least: u32) -> Result<u32, StoreError>;

    /// Whether the store is known to hold the node's whole history ([`RestoreState`]).
    ///
    /// # Errors
    /// [`StoreError`] on a database error.
    fn restore_state(&self) -> Result<RestoreState, StoreError>;

    /// Records the [`RestoreState`].
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn set_restore_state(&self, state: RestoreState) -> Result<(), StoreError>;

    /// Records a Nostr event id as processed at `seen_at` (UNIX seconds); `false` if it already
    /// was (the caller then skips the event).
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn mark_event_processed(&self, id: [u8; 32], seen_at: u64) -> Result<bool, StoreError>;

    /// Whether a Nostr event id was processed.
    ///
    /// # Errors
    /// [`StoreError`] on a database error.
    fn is_event_processed(&self, id: &[u8; 32]) -> Result<bool, StoreError>;

    /// Forgets processed event ids seen before `before` (UNIX seconds); returns how many.
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn prune_processed_events(&self, before: u64) -> Result<usize, StoreError>;

    /// Appends an event to a swap's log and returns its sequence number.
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn append_swap_event(&self, id: &SwapId, event: &serde_json::Value) -> Result<u64, StoreError>;

    /// A swap's events with `seq >= from`, in order (`from = 0` for all; a monitor passes the
    /// last seen `seq + 1`).
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn swap_events(&self, id: &SwapId, from: u64) -> Result<Vec<SwapEvent>, StoreError>;

    /// Adds a Nostr key (x-only, lower-case hex) to the block list with an optional note, blocked
    /// at `at_secs` (UNIX seconds); `false`, and nothing changed, if it was there already.
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn block_key(
        &self,
        key_hex: &str,
        note: Option<&str>,
        at_secs: u64,
    ) -> Result<bool, StoreError>;

    /// Removes a key from the block list; `false` if it was not there.
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn unblock_key(&self, key_hex: &str) -> Result<bool, StoreError>;

    /// The block list, ordered by key.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn blocked_keys(&self) -> Result<Vec<BlockEntry>, StoreError>;

    /// Inserts or replaces the label of a swap (JSON; autoloop's ledger entry of a swap it
    /// started, written before the swap starts). A label may name a swap id that has no record
    /// (a swap refused before its first commit).
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn put_swap_label(&self, id: &SwapId, label: &serde_json::Value) -> Result<(), StoreError>;

    /// Every swap label, ordered by swap id.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn swap_labels(&self) -> Result<Vec<(SwapId, serde_json::Value)>, StoreError>;

    /// Inserts or replaces a named setting (JSON; e.g. autoloop's rules).
    ///
    /// # Errors
    /// [`StoreError`] if the write cannot be committed.
    fn put_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError>;

    /// A named setting.
    ///
    /// # Errors
    /// [`StoreError`] on a database or decoding error.
    fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError>;
}

/// Largest swap index: indices are hardened BIP-32 child numbers (below 2^31).
pub const MAX_SWAP_INDEX: u32 = (1 << 31) - 1;

/// What a store knows about its own completeness, for the restore from backups
/// (`crate::backup`): a node whose data dir was lost and that starts again from its seed finds an
/// empty store in [`RestoreState::Unknown`] and must fetch its backups before it hands out a swap
/// index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestoreState {
    /// Nothing recorded: a new store (a restore may be due), or one written before backups
    /// existed.
    Unknown,
    /// A restore from backups started and did not finish: it runs again at the next start.
    InProgress,
    /// The store holds the node's history: created together with a new seed, restored from
    /// backups, or adopted as it was.
    Complete,
}

impl RestoreState {
    /// The value kept in the store (`0` unknown, `1` in progress, `2` complete).
    pub fn to_u64(self) -> u64 {
        match self {
            RestoreState::Unknown => 0,
            RestoreState::InProgress => 1,
            RestoreState::Complete => 2,
        }
    }

    /// The state of a stored value (values above 2, from a newer build, count as complete).
    pub fn from_u64(value: u64) -> RestoreState {
        match value {
            0 => RestoreState::Unknown,
            1 => RestoreState::InProgress,
            _ => RestoreState::Complete,
        }
    }
}

/// The metadata stored beside a swap's data (everything of [`SwapRecord`] except `id` and
/// `data`). Shared by both stores so they encode identically.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SwapMeta {
    role: SwapRole,
    state: String,
    status: SwapStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_hash: Option<PaymentHash>,
    created_at: u64,
    updated_at: u64,
}

impl SwapMeta {
    fn of(record: &SwapRecord) -> SwapMeta {
        SwapMeta {
            role: record.role,
            state: record.state.clone(),
            status: record.status,
            payment_hash: record.payment_hash,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    fn into_record(self, id: SwapId, data: Vec<u8>) -> SwapRecord {
        SwapRecord {
            id,
            role: self.role,
            state: self.state,
            status: self.status,
            payment_hash: self.payment_hash,
            created_at: self.created_at,
            updated_at: self.updated_at,
            data,
        }
    }
}

/// Sorts most recently updated first (ties by id) and applies the limit.
fn sort_and_limit(records: &mut Vec<SwapRecord>, limit: Option<usize>) {
    records.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
    if let Some(limit) = limit {
        records.truncate(limit);
    }
}
