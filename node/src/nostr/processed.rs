//! Persistence of processed Nostr event ids, so a restart neither repeats nor misses messages.

use std::collections::HashSet;
use std::sync::Mutex;

/// Error from a [`ProcessedEvents`] store.
#[derive(Debug, thiserror::Error)]
#[error("processed-events store: {0}")]
pub struct ProcessedStoreError(pub String);

/// A durable set of Nostr event ids that the node has already acted on.
///
/// The node's redb store implements it; [`MemoryProcessedEvents`] is the in-memory version for tests.
/// Both methods must be cheap: they run once for every gift wrap a relay delivers.
pub trait ProcessedEvents: Send + Sync {
    /// Records `id` as processed. Returns `true` when it was not recorded before.
    fn mark_processed(&self, id: [u8; 32]) -> Result<bool, ProcessedStoreError>;

    /// Whether `id` was recorded by [`ProcessedEvents::mark_processed`].
    fn is_processed(&self, id: [u8; 32]) -> Result<bool, ProcessedStoreError>;
}

/// An in-memory [`ProcessedEvents`] (tests, ephemeral tools). Share it through an `Arc` to simulate
/// a restart with the same store.
#[derive(Debug, Default)]
pub struct MemoryProcessedEvents {
    ids: Mutex<HashSet<[u8; 32]>>,
}

impl MemoryProcessedEvents {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of recorded ids.
    pub fn len(&self) -> usize {
        self.ids.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether no id is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ProcessedEvents for MemoryProcessedEvents {
    fn mark_processed(&self, id: [u8; 32]) -> Result<bool, ProcessedStoreError> {
        let mut ids = self.ids.lock().map_err(|_| ProcessedStoreError("lock poisoned".into()))?;
        Ok(ids.insert(id))
    }

    fn is_processed(&self, id: [u8; 32]) -> Result<bool, ProcessedStoreError> {
        let ids = self.ids.lock().map_err(|_| ProcessedStoreError("lock poisoned".into()))?;
        Ok(ids.contains(&id))
    }
}
