//! The seller's block list: Nostr keys whose swap requests are dropped unanswered. It is the
//! configuration's keys ([`EngineConfig::blocked_peers`](super::EngineConfig::blocked_peers),
//! fixed for the engine's life) and the keys blocked at runtime ([`Engine::block_peer`], kept in
//! the store and loaded again at start). The request check reads an in-memory copy, never the
//! store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex as StdMutex, RwLock};

pub use looper_api::{BlockSource, MAX_BLOCK_NOTE_CHARS};

use super::{blocking_store, Engine};
use crate::nostr::PublicKey as NostrPublicKey;
use crate::store::{StoreError, SwapStore};

/// Errors of the block list's engine methods.
#[derive(Debug, thiserror::Error)]
pub enum BlockListError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key is blocked by the configuration, which the API does not change.
    #[error(
        "{0} is blocked by the configuration: remove it from seller.blocked_keys and restart the node"
    )]
    FromConfig(String),
    /// The note is not acceptable.
    #[error("note: {0}")]
    BadNote(String),
}

/// One key of the effective block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedPeer {
    /// The key.
    pub key: NostrPublicKey,
    /// Where it comes from ([`BlockSource::Config`] when it is in the configuration, even if it
    /// was blocked through the API too).
    pub source: BlockSource,
    /// The note given when it was blocked at runtime.
    pub note: Option<String>,
    /// When it was blocked at runtime (UNIX seconds); `None` for a configuration key only.
    pub added_at: Option<u64>,
}

/// The block list the engine holds.
pub(super) struct BlockList {
    /// The configuration's keys (lower-case hex).
    config: BTreeSet<String>,
    /// The keys blocked at runtime, as stored (lower-case hex).
    stored: RwLock<BTreeSet<String>>,
    /// Held across a change (store write, then memory), so that the two never disagree.
    edit: StdMutex<()>,
}

impl BlockList {
    /// The configuration's keys and the stored ones.
    pub(super) fn load(config: &[String], store: &dyn SwapStore) -> Result<BlockList, StoreError> {
        let stored = blocking_store(|| store.blocked_keys())?;
        Ok(BlockList {
            config: config.iter().map(|k| k.trim().to_ascii_lowercase()).collect(),
            stored: RwLock::new(stored.into_iter().map(|e| e.key).collect()),
            edit: StdMutex::new(()),
        })
    }

    /// Whether `key_hex` (lower-case hex) is blocked.
    pub(super) fn contains(&self, key_hex: &str) -> bool {
        self.config.contains(key_hex)
            || self
                .stored
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(key_hex)
    }

    fn set_stored(&self, key_hex: &str, blocked: bool) {
        let mut stored = self.stored.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocked {
            stored.insert(key_hex.to_string());
        } else {
            stored.remove(key_hex);
        }
    }
}

/// The note as kept: trimmed, `None` when empty; one line of at most [`MAX_BLOCK_NOTE_CHARS`].
fn clean_note(note: Option<&str>) -> Result<Option<String>, BlockListError> {
    let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(None) };
    if note.chars().count() > MAX_BLOCK_NOTE_CHARS {
        return Err(BlockListError::BadNote(format!(
            "longer than {MAX_BLOCK_NOTE_CHARS} characters"
        )));
    }
    if note.chars().any(char::is_control) {
        return Err(BlockListError::BadNote("must be one line of text".into()));
    }
    Ok(Some(note.to_string()))
}

impl Engine {
    /// Seller: whether swap requests from `key` are dropped (configuration or runtime block).
    pub fn is_blocked(&self, key: &NostrPublicKey) -> bool {
        self.inner.blocked.contains(&key.to_hex())
    }

    /// Seller: blocks `key` from now on (its next swap requests are dropped unanswered; its
    /// swaps already running go on), with an optional note, and keeps it in the store. Blocking
    /// a key already blocked changes nothing. Returns its entry.
    ///
    /// # Errors
    /// [`BlockListError::BadNote`] for a note longer than [`MAX_BLOCK_NOTE_CHARS`] or with
    /// control characters; store errors.
    pub fn block_peer(
        &self,
        key: NostrPublicKey,
        note: Option<&str>,
    ) -> Result<BlockedPeer, BlockListError> {
        let note = clean_note(note)?;
        let hex = key.to_hex();
        let list = &self.inner.blocked;
        if !list.config.contains(&hex) {
            let _edit = list.edit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = self.inner.clock.now_secs();
            if blocking_store(|| self.inner.store.block_key(&hex, note.as_deref(), now))? {
                tracing::info!(key = %hex, "key blocked");
            }
            list.set_stored(&hex, true);
        }
        let entry = self.blocked_peers()?.into_iter().find(|p| p.key == key);
        // Not found only if it was unblocked meanwhile: answer what was asked.
        Ok(entry.unwrap_or(BlockedPeer { key, source: BlockSource::Api, note, added_at: None }))
    }

    /// Seller: unblocks a key blocked at runtime. Returns whether it was blocked.
    ///
    /// # Errors
    /// [`BlockListError::FromConfig`] for a key of the configuration (`seller.blocked_keys`):
    /// it stays blocked; store errors.
    pub fn unblock_peer(&self, key: &NostrPublicKey) -> Result<bool, BlockListError> {
        let hex = key.to_hex();
        let list = &self.inner.blocked;
        if list.config.contains(&hex) {
            return Err(BlockListError::FromConfig(hex));
        }
        let _edit = list.edit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let removed = blocking_store(|| self.inner.store.unblock_key(&hex))?;
        list.set_stored(&hex, false);
        if removed {
            tracing::info!(key = %hex, "key unblocked");
        }
        Ok(removed)
    }

    /// Seller: the effective block list (the configuration's keys and those blocked at runtime),
    /// ordered by key.
    ///
    /// # Errors
    /// Store errors.
    pub fn blocked_peers(&self) -> Result<Vec<BlockedPeer>, BlockListError> {
        let stored = blocking_store(|| self.inner.store.blocked_keys())?;
        let mut out: BTreeMap<String, BlockedPeer> = BTreeMap::new();
        for hex in &self.inner.blocked.config {
            let Ok(key) = NostrPublicKey::from_hex(hex) else { continue };
            let peer = BlockedPeer { key, source: BlockSource::Config, note: None, added_at: None };
            out.insert(hex.clone(), peer);
        }
        for e in stored {
            let Ok(key) = NostrPublicKey::from_hex(&e.key) else {
                tracing::warn!(key = %e.key, "stored blocked key does not read: skipped");
                continue;
            };
            let peer = out.entry(e.key).or_insert(BlockedPeer {
                key,
                source: BlockSource::Api,
                note: None,
                added_at: None,
            });
            peer.note = e.note;
            peer.added_at = Some(e.added_at);
        }
        Ok(out.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_one_short_line() {
        assert_eq!(clean_note(None).ok(), Some(None));
        assert_eq!(clean_note(Some("  ")).ok(), Some(None));
        assert_eq!(clean_note(Some(" spam ")).ok(), Some(Some("spam".into())));
        let long = "x".repeat(MAX_BLOCK_NOTE_CHARS + 1);
        assert!(matches!(clean_note(Some(&long)), Err(BlockListError::BadNote(_))));
        assert!(clean_note(Some(&"é".repeat(MAX_BLOCK_NOTE_CHARS))).is_ok());
        assert!(matches!(clean_note(Some("a\nb")), Err(BlockListError::BadNote(_))));
    }
}
