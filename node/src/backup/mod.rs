//! Encrypted backups of the swap store on the node's own relays, and the restore from them.
//!
//! Normative text: `spec/04-nostr.md`, "Backups". Why: the swap keys and preimages derive from
//! the seed by swap index, so a node that lost its data dir and starts again from its mnemonic
//! must (1) never hand out an index it used before (earlier buyers and the routing nodes know
//! those preimages) and (2) find the swaps that were in flight to finish or refund them. The seed
//! alone cannot tell which indices were used nor recover the counterparties' keys, so the node
//! keeps an encrypted copy of its state on its relays:
//!
//! - every swap record, each time it is persisted (published in the background,
//!   [`BackedUpStore`]), and our offers;
//! - a key-index high-water mark, published before any index of a new block of
//!   [`store::INDEX_BLOCK`] indices is handed out (the index is refused when no relay accepted
//!   it).
//!
//! Each backup is a NIP-78 addressable event (kind [`BACKUP_KIND`]) signed by a backup key
//! derived from the seed ([`crate::seed::NodeKeys::backup_secret_key`], not the node's public
//! Nostr identity), its content NIP-44 v2 encrypted to itself, its `d` tag an HMAC of the record's
//! label (the swap id does not show).
//!
//! At start ([`Backups::start`]), a node whose store is empty and was not created together with
//! a new seed (the data dir was wiped but for `seed`, or `--restore` gave a mnemonic) fetches its
//! backups (bounded wait, page by page, size-limited), imports every record, raises the next
//! swap index above the mark and above every restored key index, reveals the restored swaps'
//! wallet addresses, and only then lets the engine start, which resumes the open swaps as after
//! any restart. When no relay answers, the start fails: handing out indices then could reuse one.

mod codec;
mod relays;
mod restore;
pub mod store;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use codec::{
    decode_event, decode_payload, encode_event, encode_payload, BackupKeys, DecodeError, Payload,
    BACKUP_FORMAT_VERSION, BACKUP_KIND, MAX_BACKUP_CONTENT_BYTES, MAX_BACKUP_EVENT_BYTES,
    MAX_BACKUP_PLAINTEXT_BYTES,
};
pub use relays::{BackupRelays, Fetched, MAX_FETCH_BYTES_PER_RELAY, MAX_FETCH_EVENTS_PER_RELAY};
pub use restore::{apply_plan, restore_from_relays, RestorePlan, RestoreReport, RestoredSwap};
pub use store::{BackedUpStore, INDEX_BLOCK};
pub use worker::{spawn_publisher, BackupHandle, PublisherOptions, PublisherTasks};

use crate::store::{RestoreState, StoreError, SwapFilter, SwapStore};
use crate::wallet::{LooperWallet, WalletError};

/// How long a restore waits for each relay's connection and for each page of backups.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shutdown waits for the queued backups to reach a relay.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the backups. None carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The backup key is not a valid secret key.
    #[error("invalid backup key")]
    InvalidKey,
    /// No relay configured.
    #[error("no relay configured for the backups")]
    NoRelays,
    /// A relay URL does not parse.
    #[error("invalid relay url {url:?}: {reason}")]
    RelayUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The relay pool refused an operation.
    #[error("relay pool: {0}")]
    Pool(String),
    /// A payload is over the NIP-44 limit (it is not published).
    #[error("backup payload is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A payload could not be encoded, encrypted or signed.
    #[error("cannot encode a backup: {0}")]
    Encode(String),
    /// No relay accepted an event in time.
    #[error("no relay accepted the backup within {timeout:?}: {last_error}")]
    NotDelivered {
        /// How long it was tried.
        timeout: Duration,
        /// The last relay error seen.
        last_error: String,
    },
    /// No relay answered the query for our backups.
    #[error(
        "no relay answered the query for this node's swap backups within {timeout:?}; the store \
         is empty and the seed existed before (a restore), so the node does not start without \
         them (it could reuse a swap key): start it again once a relay is reachable"
    )]
    NoRelayAnswered {
        /// The wait per relay.
        timeout: Duration,
    },
    /// The publisher's tasks are gone.
    #[error("the backup publisher stopped")]
    Stopped,
    /// The publisher did not answer in time.
    #[error("timed out waiting for the backup publisher")]
    Timeout,
    /// A blocking task failed.
    #[error("backup task failed: {0}")]
    Task(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// What the store needs at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    /// The store holds the node's history: nothing to do.
    Nothing,
    /// A store from before backups existed: adopt it as complete and publish all of it.
    Adopt,
    /// An empty store with a seed that existed before: restore from the backups.
    Restore,
}

/// Decides what the store needs (and records "complete" for a store created with a new seed).
///
/// # Errors
/// Store errors.
pub fn start_action(store: &dyn SwapStore, seed_created: bool) -> Result<StartAction, StoreError> {
    match store.restore_state()? {
        RestoreState::Complete => Ok(StartAction::Nothing),
        RestoreState::InProgress => Ok(StartAction::Restore),
        RestoreState::Unknown => {
            let empty = store.peek_swap_index()? == 0
                && store
                    .list_swaps(&SwapFilter { limit: Some(1), ..SwapFilter::default() })?
                    .is_empty()
                && store.list_offers()?.is_empty();
            if seed_created && empty {
                store.set_restore_state(RestoreState::Complete)?;
                Ok(StartAction::Nothing)
            } else if empty {
                Ok(StartAction::Restore)
            } else {
                Ok(StartAction::Adopt)
            }
        }
    }
}

/// Settings of [`Backups::start`].
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The relays (the node's own).
    pub relays: Vec<String>,
    /// The seed was created by this start (a new node: nothing to restore).
    pub seed_created: bool,
    /// Wait per relay connection and per page of a restore.
    pub restore_timeout: Duration,
    /// Publisher timeouts and backoff.
    pub publisher: PublisherOptions,
    /// Indices per reservation.
    pub index_block: u32,
    /// SOCKS5 proxy the relay connections go through (the node's `proxy`); `None`: direct.
    pub proxy: Option<std::net::SocketAddr>,
}

impl BackupOptions {
    /// The defaults for `relays`.
    pub fn new(relays: Vec<String>, seed_created: bool) -> BackupOptions {
        BackupOptions {
            relays,
            seed_created,
            restore_timeout: RESTORE_TIMEOUT,
            publisher: PublisherOptions::default(),
            index_block: INDEX_BLOCK,
            proxy: None,
        }
    }
}

/// The node's backups, running: the relay connection, the publisher and the wrapped store.
pub struct Backups {
    relays: Arc<BackupRelays>,
    handle: BackupHandle,
    store: Arc<BackedUpStore>,
    restored: Option<RestoreReport>,
    _tasks: PublisherTasks,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("relays", &self.relays)
            .field("restored", &self.restored)
            .finish_non_exhaustive()
    }
}

impl Backups {
    /// Connects to the relays, restores the store from the backups when it needs it
    /// ([`start_action`]), starts the publisher and wraps `store`. The block holding the next
    /// swap index is reserved in the background. Must run in a multi-threaded tokio runtime.
    ///
    /// # Errors
    /// [`BackupError::NoRelayAnswered`] when a restore is needed and no relay answered; relay
    /// URL, store and wallet errors.
    pub async fn start(
        options: BackupOptions,
        keys: BackupKeys,
        store: Arc<dyn SwapStore>,
        wallet: Option<Arc<LooperWallet>>,
    ) -> Result<Backups, BackupError> {
        let relays = Arc::new(BackupRelays::connect_via(&options.relays, options.proxy).await?);
        let started = Self::start_on(&relays, &options, &keys, store, wallet).await;
        let (action, restored, store) = match started {
            Ok(s) => s,
            Err(e) => {
                relays.shutdown().await;
                return Err(e);
            }
        };
        let (handle, tasks) = spawn_publisher(Arc::clone(&relays), keys.clone(), options.publisher);
        let wrapped =
            Arc::new(BackedUpStore::with_block(store, handle.clone(), options.index_block));
        let queued = wrapped.queue_existing(action == StartAction::Adopt)?;
        tracing::info!(
            relays = relays.relays().len(),
            backup_key = %keys.public_key(),
            queued,
            "swap backups on"
        );
        let reserving = Arc::clone(&wrapped);
        tokio::task::spawn_blocking(move || match reserving.ensure_reserved() {
            Ok(mark) => tracing::debug!(reserved_index = mark, "swap indices reserved"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reserve swap indices yet; the next swap retries")
            }
        });
        Ok(Backups { relays, handle, store: wrapped, restored, _tasks: tasks })
    }

    async fn start_on(
        relays: &BackupRelays,
        options: &BackupOptions,
        keys: &BackupKeys,
        store: Arc<dyn SwapStore>,
        wallet: Option<Arc<LooperWallet>>,
    ) -> Result<(StartAction, Option<RestoreReport>, Arc<dyn SwapStore>), BackupError> {
        let action = start_action(&*store, options.seed_created)?;
        let restored = match action {
            StartAction::Restore => Some(
                restore_from_relays(
                    relays,
                    keys,
                    Arc::clone(&store),
                    wallet,
                    options.restore_timeout,
                )
                .await?,
            ),
            StartAction::Adopt => {
                tracing::info!("swap store from before backups: publishing all of it");
                store.set_restore_state(RestoreState::Complete)?;
                None
            }
            StartAction::Nothing => None,
        };
        Ok((action, restored, store))
    }

    /// The store to give the engine: the backed-up wrapper.
    pub fn store(&self) -> Arc<dyn SwapStore> {
        Arc::clone(&self.store) as Arc<dyn SwapStore>
    }

    /// The wrapper itself.
    pub fn backed_up_store(&self) -> &Arc<BackedUpStore> {
        &self.store
    }

    /// The publisher handle.
    pub fn handle(&self) -> &BackupHandle {
        &self.handle
    }

    /// What the restore at start did, if one ran.
    pub fn restored(&self) -> Option<&RestoreReport> {
        self.restored.as_ref()
    }

    /// Publishes what is still queued (waiting at most `flush_timeout`), then disconnects.
    pub async fn shutdown(&self, flush_timeout: Duration) {
        let left = self.handle.flush(flush_timeout).await;
        if left > 0 {
            tracing::warn!(
                left = if left == usize::MAX { None } else { Some(left) },
                "some backups were not published before the shutdown; open and recent swaps are published again at the next start"
            );
        }
        self.relays.shutdown().await;
    }
}
