//! [`MemoryStore`]: the [`SwapStore`] in memory, for tests and simulations. It behaves like
//! [`super::RedbStore`] (same test suite) but forgets everything when dropped.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    sort_and_limit, BlockEntry, BlockMeta, PaymentHash, RestoreState, StoreError, SwapEvent,
    SwapFilter, SwapId, SwapRecord, SwapStore, MAX_SWAP_INDEX,
};

#[derive(Default)]
struct Inner {
    swaps: BTreeMap<SwapId, SwapRecord>,
    by_hash: BTreeMap<PaymentHash, SwapId>,
    offers: BTreeMap<String, serde_json::Value>,
    next_swap_index: u64,
    restore_state: u64,
    processed: BTreeMap<[u8; 32], u64>,
    events: BTreeMap<SwapId, Vec<serde_json::Value>>,
    blocked: BTreeMap<String, BlockMeta>,
    labels: BTreeMap<SwapId, serde_json::Value>,
    settings: BTreeMap<String, serde_json::Value>,
}

/// The [`SwapStore`] in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl SwapStore for MemoryStore {
    fn put_swap(&self, record: &SwapRecord) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let old_hash = inner.swaps.get(&record.id).and_then(|r| r.payment_hash);
        if let Some(old) = old_hash.filter(|h| Some(*h) != record.payment_hash) {
            inner.by_hash.remove(&old);
        }
        if let Some(hash) = record.payment_hash {
            inner.by_hash.insert(hash, record.id);
        }
        inner.swaps.insert(record.id, record.clone());
        Ok(())
    }

    fn get_swap(&self, id: &SwapId) -> Result<Option<SwapRecord>, StoreError> {
        Ok(self.lock()?.swaps.get(id).cloned())
    }

    fn get_swap_by_payment_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<SwapRecord>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.by_hash.get(hash).and_then(|id| inner.swaps.get(id)).cloned())
    }

    fn list_swaps(&self, filter: &SwapFilter) -> Result<Vec<SwapRecord>, StoreError> {
        let mut out: Vec<SwapRecord> =
            self.lock()?.swaps.values().filter(|r| filter.matches(r)).cloned().collect();
        sort_and_limit(&mut out, filter.limit);
        Ok(out)
    }

    fn put_offer(&self, id: &str, offer: &serde_json::Value) -> Result<(), StoreError> {
        self.lock()?.offers.insert(id.to_string(), offer.clone());
        Ok(())
    }

    fn get_offer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.lock()?.offers.get(id).cloned())
    }

    fn list_offers(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        Ok(self.lock()?.offers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn delete_offer(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.offers.remove(id).is_some())
    }

    fn next_swap_index(&self) -> Result<u32, StoreError> {
        let mut inner = self.lock()?;
        let index = u32::try_from(inner.next_swap_index)
            .ok()
            .filter(|i| *i <= MAX_SWAP_INDEX)
            .ok_or(StoreError::IndexExhausted)?;
        inner.next_swap_index += 1;
        Ok(index)
    }

    fn peek_swap_index(&self) -> Result<u32, StoreError> {
        u32::try_from(self.lock()?.next_swap_index).map_err(|_| StoreError::IndexExhausted)
    }

    fn raise_swap_index(&self, at_least: u32) -> Result<u32, StoreError> {
        if at_least > MAX_SWAP_INDEX.saturating_add(1) {
            return Err(StoreError::IndexExhausted);
        }
        let mut inner = self.lock()?;
        inner.next_swap_index = inner.next_swap_index.max(u64::from(at_least));
        u32::try_from(inner.next_swap_index).map_err(|_| StoreError::IndexExhausted)
    }

    fn restore_state(&self) -> Result<RestoreState, StoreError> {
        Ok(RestoreState::from_u64(self.lock()?.restore_state))
    }

    fn set_restore_state(&self, state: RestoreState) -> Result<(), StoreError> {
        self.lock()?.restore_state = state.to_u64();
        Ok(())
    }

    fn mark_event_processed(&self, id: [u8; 32], seen_at: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner.processed.contains_key(&id) {
            return Ok(false);
        }
        inner.processed.insert(id, seen_at);
        Ok(true)
    }

    fn is_event_processed(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.lock()?.processed.contains_key(id))
    }

    fn prune_processed_events(&self, before: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let len = inner.processed.len();
        inner.processed.retain(|_, seen_at| *seen_at >= before);
        Ok(len - inner.processed.len())
    }

    fn append_swap_event(&self, id: &SwapId, event: &serde_json::Value) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let log = inner.events.entry(*id).or_default();
        log.push(event.clone());
        Ok(log.len() as u64 - 1)
    }

    fn swap_events(&self, id: &SwapId, from: u64) -> Result<Vec<SwapEvent>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .events
            .get(id)
            .map(|log| {
                log.iter()
                    .enumerate()
                    .map(|(i, e)| SwapEvent { seq: i as u64, event: e.clone() })
                    .filter(|e| e.seq >= from)
                    .collect()
            })
            .unwrap_or_default())
    }

    fn block_key(
        &self,
        key_hex: &str,
        note: Option<&str>,
        at_secs: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner.blocked.contains_key(key_hex) {
            return Ok(false);
        }
        let meta = BlockMeta { note: note.map(str::to_string), added_at: at_secs };
        inner.blocked.insert(key_hex.to_string(), meta);
        Ok(true)
    }

    fn unblock_key(&self, key_hex: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.blocked.remove(key_hex).is_some())
    }

    fn blocked_keys(&self) -> Result<Vec<BlockEntry>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.blocked.iter().map(|(k, m)| m.clone().into_entry(k.clone())).collect())
    }

    fn put_swap_label(&self, id: &SwapId, label: &serde_json::Value) -> Result<(), StoreError> {
        self.lock()?.labels.insert(*id, label.clone());
        Ok(())
    }

    fn swap_labels(&self) -> Result<Vec<(SwapId, serde_json::Value)>, StoreError> {
        Ok(self.lock()?.labels.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    fn put_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.lock()?.settings.insert(name.to_string(), value.clone());
        Ok(())
    }

    fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.lock()?.settings.get(name).cloned())
    }
}
