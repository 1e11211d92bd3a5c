//! [`BackedUpStore`]: the node's [`SwapStore`] with backups. It delegates every call to the real
//! store and adds two hooks, so the engine needs no change:
//!
//! - `put_swap`, `put_offer`, `delete_offer`: once the write is committed, the new version is
//!   queued for publication ([`BackupHandle::submit`], never blocking);
//! - `next_swap_index`: indices are handed out in reserved blocks; the first index of a new block
//!   is returned only after the mark "every index below N may be used" reached a relay
//!   ([`BackupHandle::reserve_blocking`]), otherwise the call fails and no index is used. Once
//!   an index in the last reserved block is drawn, the next blocks are reserved in the background,
//!   so that a burst of swaps seldom waits for a mark.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::codec::Payload;
use super::worker::BackupHandle;
use crate::store::{
    BlockEntry, PaymentHash, RestoreState, StoreError, SwapEvent, SwapFilter, SwapId, SwapRecord,
    SwapStore, MAX_SWAP_INDEX,
};

/// How many swap indices one reservation covers.
pub const INDEX_BLOCK: u32 = 100;

/// Records updated this recently (seconds) are published again at start.
const RECENT_SECS: u64 = 24 * 3600;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The [`SwapStore`] with backups (see the module documentation).
pub struct BackedUpStore {
    inner: Arc<dyn SwapStore>,
    backup: BackupHandle,
    /// Indices below this are covered by a mark a relay accepted in this process.
    reserved: Arc<AtomicU32>,
    /// A reservation ahead of need ([`BackedUpStore::reserve_ahead`]) is under way.
    reserving_ahead: Arc<AtomicBool>,
    /// Held while a block is reserved (one reservation at a time; drawing an index inside a
    /// reserved block and the record writes never wait for it).
    drawing: Mutex<()>,
    block: u32,
}

impl std::fmt::Debug for BackedUpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackedUpStore").field("block", &self.block).finish_non_exhaustive()
    }
}

impl BackedUpStore {
    /// Wraps `inner`, reserving indices in blocks of [`INDEX_BLOCK`].
    pub fn new(inner: Arc<dyn SwapStore>, backup: BackupHandle) -> BackedUpStore {
        Self::with_block(inner, backup, INDEX_BLOCK)
    }

    /// Wraps `inner`, reserving indices in blocks of `block` (at least 1).
    pub fn with_block(
        inner: Arc<dyn SwapStore>,
        backup: BackupHandle,
        block: u32,
    ) -> BackedUpStore {
        BackedUpStore {
            inner,
            backup,
            reserved: Arc::new(AtomicU32::new(0)),
            reserving_ahead: Arc::new(AtomicBool::new(false)),
            drawing: Mutex::new(()),
            block: block.max(1),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn SwapStore> {
        &self.inner
    }

    /// The publisher handle.
    pub fn backup(&self) -> &BackupHandle {
        &self.backup
    }

    /// Indices below this value are covered by a reservation made in this process.
    pub fn reserved_up_to(&self) -> u32 {
        self.reserved.load(Ordering::SeqCst)
    }

    /// Reserves the block that holds the next index, if this process has not yet: done in the
    /// background at start so that the first swap does not wait for it. Returns the mark.
    ///
    /// # Errors
    /// [`StoreError::IndexNotReserved`] when no relay accepted the mark; store errors.
    pub fn ensure_reserved(&self) -> Result<u32, StoreError> {
        let _drawing = self.drawing.lock().map_err(|_| StoreError::Poisoned)?;
        let next = self.inner.peek_swap_index()?;
        if next >= self.reserved_up_to() {
            self.reserve_from(next)?;
        }
        Ok(self.reserved_up_to())
    }

    /// Queues swap records for publication: every record and every offer with `all` (a store
    /// from before backups), else the pending records and those updated in the last day. Called
    /// at start, so that the relays hold the current version even when the previous process
    /// stopped before publishing it. Returns how many were queued.
    ///
    /// # Errors
    /// Store errors.
    pub fn queue_existing(&self, all: bool) -> Result<usize, StoreError> {
        let mut records = if all {
            self.inner.list_swaps(&SwapFilter::default())?
        } else {
            let since = now_secs().saturating_sub(RECENT_SECS);
            let mut r = self.inner.list_swaps(&SwapFilter::pending())?;
            let recent = SwapFilter { updated_since: Some(since), ..SwapFilter::default() };
            r.extend(self.inner.list_swaps(&recent)?);
            r
        };
        records.sort_by_key(|r| r.id);
        records.dedup_by(|a, b| a.id == b.id);
        let reserved_index = self.reserved_up_to();
        let mut n = 0;
        for record in records {
            self.backup.submit(Payload::Swap { record, reserved_index });
            n += 1;
        }
        if all {
            for (offer_id, offer) in self.inner.list_offers()? {
                self.backup.submit(Payload::Offer { offer_id, offer: Some(offer) });
                n += 1;
            }
        }
        Ok(n)
    }

    /// Publishes the mark `index + block` (so `index` and the block after it are covered) and
    /// records it. The caller holds `drawing`.
    fn reserve_from(&self, index: u32) -> Result<(), StoreError> {
        let up_to = index.saturating_add(self.block).min(MAX_SWAP_INDEX.saturating_add(1));
        self.backup
            .reserve_blocking(up_to)
            .map_err(|e| StoreError::IndexNotReserved { reason: e.to_string() })?;
        self.reserved.fetch_max(up_to, Ordering::SeqCst);
        Ok(())
    }

    /// When `index` is in the last block of the reserved indices, reserves the blocks after them
    /// in the background (on the current tokio runtime; none: nothing), so that a burst of
    /// swaps does not wait for a mark at every block: each mark is published at least a second
    /// after the one before (its `created_at` must be later), and a burst draws more than a
    /// block a second. The mark covers [`AHEAD_BLOCKS`] blocks past the reserved ones. A
    /// failure is only logged: the index that needs the block reserves it itself.
    fn reserve_ahead(&self, index: u32) {
        let reserved = self.reserved_up_to();
        if reserved.saturating_sub(index) > self.block
            || self.reserving_ahead.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reserving_ahead.store(false, Ordering::SeqCst);
            return;
        };
        let up_to = reserved
            .saturating_add(self.block.saturating_mul(AHEAD_BLOCKS))
            .min(MAX_SWAP_INDEX.saturating_add(1));
        // Queued now: a draw that needs these blocks before they are reserved waits behind it.
        let reservation = self.backup.reserve_queued(up_to);
        let (mark, busy) = (Arc::clone(&self.reserved), Arc::clone(&self.reserving_ahead));
        runtime.spawn(async move {
            match reservation.await {
                Ok(()) => {
                    mark.fetch_max(up_to, Ordering::SeqCst);
                }
                Err(e) => tracing::debug!(up_to, error = %e, "cannot reserve swap indices ahead"),
            }
            busy.store(false, Ordering::SeqCst);
        });
    }
}

/// How many blocks [`BackedUpStore::reserve_ahead`] reserves past the reserved indices.
const AHEAD_BLOCKS: u32 = 4;

impl SwapStore for BackedUpStore {
    fn put_swap(&self, record: &SwapRecord) -> Result<(), StoreError> {
        self.inner.put_swap(record)?;
        let reserved_index = self.reserved_up_to();
        self.backup.submit(Payload::Swap { record: record.clone(), reserved_index });
        Ok(())
    }

    fn get_swap(&self, id: &SwapId) -> Result<Option<SwapRecord>, StoreError> {
        self.inner.get_swap(id)
    }

    fn get_swap_by_payment_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<SwapRecord>, StoreError> {
        self.inner.get_swap_by_payment_hash(hash)
    }

    fn list_swaps(&self, filter: &SwapFilter) -> Result<Vec<SwapRecord>, StoreError> {
        self.inner.list_swaps(filter)
    }

    fn list_open_swaps(&self) -> Result<Vec<SwapRecord>, StoreError> {
        self.inner.list_open_swaps()
    }

    fn put_offer(&self, id: &str, offer: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.put_offer(id, offer)?;
        self.backup.submit(Payload::Offer { offer_id: id.to_string(), offer: Some(offer.clone()) });
        Ok(())
    }

    fn get_offer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.get_offer(id)
    }

    fn list_offers(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.inner.list_offers()
    }

    fn delete_offer(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.inner.delete_offer(id)?;
        if existed {
            self.backup.submit(Payload::Offer { offer_id: id.to_string(), offer: None });
        }
        Ok(existed)
    }

    /// The index is drawn (and persisted) first; when it is not covered by this process's
    /// reservation, a new block is reserved before it is returned. When that fails the index is
    /// burnt (never used) and the call fails.
    ///
    /// Concurrent callers draw their indices together (one group commit of the store, each its
    /// own index) and only the reservation is taken one at a time, looked at again under the
    /// lock: a block reserved meanwhile by another caller covers this index too.
    fn next_swap_index(&self) -> Result<u32, StoreError> {
        let index = self.inner.next_swap_index()?;
        if index >= self.reserved_up_to() {
            let _drawing = self.drawing.lock().map_err(|_| StoreError::Poisoned)?;
            if index >= self.reserved_up_to() {
                self.reserve_from(index)?;
            }
        }
        self.reserve_ahead(index);
        Ok(index)
    }

    fn peek_swap_index(&self) -> Result<u32, StoreError> {
        self.inner.peek_swap_index()
    }

    fn raise_swap_index(&self, at_least: u32) -> Result<u32, StoreError> {
        self.inner.raise_swap_index(at_least)
    }

    fn restore_state(&self) -> Result<RestoreState, StoreError> {
        self.inner.restore_state()
    }

    fn set_restore_state(&self, state: RestoreState) -> Result<(), StoreError> {
        self.inner.set_restore_state(state)
    }

    fn mark_event_processed(&self, id: [u8; 32], seen_at: u64) -> Result<bool, StoreError> {
        self.inner.mark_event_processed(id, seen_at)
    }

    fn is_event_processed(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.is_event_processed(id)
    }

    fn prune_processed_events(&self, before: u64) -> Result<usize, StoreError> {
        self.inner.prune_processed_events(before)
    }

    fn append_swap_event(&self, id: &SwapId, event: &serde_json::Value) -> Result<u64, StoreError> {
        self.inner.append_swap_event(id, event)
    }

    fn swap_events(&self, id: &SwapId, from: u64) -> Result<Vec<SwapEvent>, StoreError> {
        self.inner.swap_events(id, from)
    }

    // The block list is the operator's setting, not swap state: it is not backed up.
    fn block_key(
        &self,
        key_hex: &str,
        note: Option<&str>,
        at_secs: u64,
    ) -> Result<bool, StoreError> {
        self.inner.block_key(key_hex, note, at_secs)
    }

    fn unblock_key(&self, key_hex: &str) -> Result<bool, StoreError> {
        self.inner.unblock_key(key_hex)
    }

    fn blocked_keys(&self) -> Result<Vec<BlockEntry>, StoreError> {
        self.inner.blocked_keys()
    }
    fn put_swap_label(
        &self,
        id: &looper_protocol::SwapId,
        label: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inner.put_swap_label(id, label)
    }
    fn swap_labels(&self) -> Result<Vec<(looper_protocol::SwapId, serde_json::Value)>, StoreError> {
        self.inner.swap_labels()
    }
    fn put_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.put_setting(name, value)
    }
    fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.setting(name)
    }
}
