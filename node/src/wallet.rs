//! The on-chain wallet: a BDK taproot (BIP-0086) wallet derived from the node seed, persisted in
//! the node's redb file, synced through the node's chain source ([`WalletSync`]: bdk_esplora or
//! bdk_electrum). It funds HTLCs (several in one transaction), receives claims and refunds, and
//! sends.
//!
//! # Persistence: an own [`WalletPersister`] on the shared redb file, not `bdk_redb`
//!
//! `bdk_redb` 0.1 is marked experimental and pins its own redb version, which would put a second
//! redb (and a second database file format) into the node. `bdk_wallet::ChangeSet` is serde, so a
//! persister is small: [`RedbWalletPersister`] appends every staged changeset as one JSON row of
//! the table [`WALLET_TABLE_NAME`] in `DATADIR/looper.redb` (the same file and `redb::Database` as
//! the [`crate::store::RedbStore`]), each committed before the call returns: in the store's group
//! commit when the persister was made from the store ([`RedbWalletPersister::grouped`], as the
//! node does), else in a write transaction of its own. Loading merges
//! the rows in order (BDK's `Merge`) and compacts them back into one row, so the table stays small
//! and a write costs one append, not a rewrite of the whole wallet.
//!
//! # Concurrency
//!
//! The wallet sits behind a mutex that is never held across an `.await`: a sync builds its request
//! under the lock, queries the chain source without it (Electrum's blocking client on tokio's
//! blocking pool), and applies the result under it again. Funding
//! transactions are built and signed under the lock but are only marked spent once
//! [`LooperWallet::apply_unconfirmed`] is called after the broadcast; the engine must therefore
//! build, broadcast and apply one funding transaction at a time (which batching does anyway), and
//! call [`LooperWallet::cancel_tx`] when a built transaction is not broadcast.

use std::sync::{Arc, Mutex, MutexGuard};

use bdk_esplora::EsploraAsyncExt;
use bdk_wallet::chain::Merge;
use bdk_wallet::{
    Balance, ChangeSet, KeychainKind, LocalOutput, PersistedWallet, SignOptions, TxOrdering,
    Wallet, WalletPersister,
};
use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Amount, FeeRate, Network, ScriptBuf, Transaction, Txid};
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use crate::chain::{BitcoindChainSource, ChainError, ChainSource, ElectrumClient};
use crate::seed::NodeKeys;
use crate::store::{RedbStore, StoreError};

/// Name of the redb table holding the wallet's changesets.
pub const WALLET_TABLE_NAME: &str = "bdk_wallet_changesets";

const WALLET_TABLE: TableDefinition<u64, &str> = TableDefinition::new(WALLET_TABLE_NAME);

/// Gap of unused addresses scanned past the last used one on a full scan, and the wallet's
/// look-ahead (the scripts past the last revealed one that a block scan matches). 50, not the
/// usual 20: a seller reveals its swaps' destinations in batches ahead of the requests
/// (`engine::io::SCRIPT_BATCH`), and a crash leaves those not handed out unused; with a wider
/// gap the batches are large enough that a burst of swap requests does not wait for them.
pub const STOP_GAP: usize = 50;

/// [`STOP_GAP`] as BDK's look-ahead takes it.
const LOOKAHEAD: u32 = STOP_GAP as u32;

/// Parallel Esplora requests during a sync.
pub const PARALLEL_REQUESTS: usize = 4;

/// Scripts asked for in one Electrum batch during a sync.
pub const ELECTRUM_BATCH_SIZE: usize = 10;

/// Most passes of a bitcoind sync over the same blocks while its payments reveal new scripts.
const BITCOIND_SYNC_ROUNDS: usize = 10;

/// The client a [`LooperWallet`] syncs through: the node's chain source's.
#[derive(Clone)]
pub enum WalletSync {
    /// An Esplora server (bdk_esplora).
    Esplora(esplora_client::AsyncClient),
    /// An Electrum server (bdk_electrum; merkle proofs checked against the headers).
    Electrum(Arc<ElectrumClient>),
    /// bitcoind's JSON-RPC: blocks (those matching the wallet's scripts, by their BIP-0158
    /// filters) and the mempool ([`BitcoindChainSource::wallet_feed`]).
    Bitcoind(Arc<BitcoindChainSource>),
}

impl std::fmt::Debug for WalletSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalletSync::Esplora(c) => f.debug_tuple("Esplora").field(&c.url()).finish(),
            WalletSync::Electrum(_) => f.write_str("Electrum"),
            WalletSync::Bitcoind(_) => f.write_str("Bitcoind"),
        }
    }
}

impl From<esplora_client::AsyncClient> for WalletSync {
    fn from(client: esplora_client::AsyncClient) -> Self {
        WalletSync::Esplora(client)
    }
}

impl From<Arc<ElectrumClient>> for WalletSync {
    fn from(client: Arc<ElectrumClient>) -> Self {
        WalletSync::Electrum(client)
    }
}

/// Errors of the wallet persister.
#[derive(Debug, thiserror::Error)]
pub enum WalletPersistError {
    /// redb failed.
    #[error("wallet database error while trying to {op}")]
    Database {
        /// What was being done.
        op: &'static str,
        /// redb's error (boxed: it is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// A changeset could not be encoded.
    #[error("cannot encode a wallet changeset")]
    Encode(#[source] serde_json::Error),
    /// The store's group commit failed otherwise (its writer stopped).
    #[error("the store could not write the wallet")]
    Store(#[source] StoreError),
    /// A stored changeset could not be decoded or a changeset encoded.
    #[error("corrupt or unencodable wallet changeset (row {row})")]
    Json {
        /// The row key.
        row: u64,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

fn pdb<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> WalletPersistError {
    move |e| WalletPersistError::Database { op, source: Box::new(e.into()) }
}

/// BDK [`WalletPersister`] on the node's redb database (see the module documentation).
#[derive(Clone)]
pub struct RedbWalletPersister {
    db: Arc<Database>,
    /// The swap store on the same database, whose group commit the changesets join (`None`: a
    /// write transaction of their own).
    group: Option<RedbStore>,
}

impl std::fmt::Debug for RedbWalletPersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbWalletPersister")
    }
}

impl RedbWalletPersister {
    /// A persister on `db` (usually [`crate::store::RedbStore::database`]), each changeset in a
    /// write transaction of its own.
    pub fn new(db: Arc<Database>) -> RedbWalletPersister {
        RedbWalletPersister { db, group: None }
    }

    /// A persister on `store`'s database whose changesets join the store's group commit
    /// ([`RedbStore::write_in_group`]): redb takes one write transaction at a time, and while a
    /// burst of swaps keeps the store's writer committing, a wallet write of its own waited
    /// behind several of its transactions (with the wallet locked: a seller revealing the next
    /// refund scripts held up every request behind it).
    pub fn grouped(store: &RedbStore) -> RedbWalletPersister {
        RedbWalletPersister { db: store.database(), group: Some(store.clone()) }
    }

    /// Number of changeset rows currently stored (1 after a load; grows by one per persist).
    ///
    /// # Errors
    /// [`WalletPersistError::Database`].
    pub fn row_count(&self) -> Result<u64, WalletPersistError> {
        let tx = self.db.begin_read().map_err(pdb("begin a read"))?;
        match tx.open_table(WALLET_TABLE) {
            Ok(t) => {
                let mut n = 0;
                for row in t.iter().map_err(pdb("count rows"))? {
                    row.map_err(pdb("count rows"))?;
                    n += 1;
                }
                Ok(n)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(pdb("open the wallet table")(e)),
        }
    }
}

impl WalletPersister for RedbWalletPersister {
    type Error = WalletPersistError;

    fn initialize(persister: &mut Self) -> Result<ChangeSet, Self::Error> {
        let tx = persister.db.begin_write().map_err(pdb("begin a write"))?;
        let merged = {
            let mut table = tx.open_table(WALLET_TABLE).map_err(pdb("open the wallet table"))?;
            let mut merged = ChangeSet::default();
            let mut rows = 0u64;
            for row in table.iter().map_err(pdb("read the wallet"))? {
                let (key, json) = row.map_err(pdb("read the wallet"))?;
                let row = key.value();
                let cs: ChangeSet = serde_json::from_str(json.value())
                    .map_err(|source| WalletPersistError::Json { row, source })?;
                merged.merge(cs);
                rows += 1;
            }
            if rows > 1 {
                // Compact: one row holding the merged changeset.
                table.retain(|_, _| false).map_err(pdb("compact the wallet"))?;
                let json = serde_json::to_string(&merged)
                    .map_err(|source| WalletPersistError::Json { row: 0, source })?;
                table.insert(0, json.as_str()).map_err(pdb("compact the wallet"))?;
            }
            merged
        };
        tx.commit().map_err(pdb("commit the wallet"))?;
        Ok(merged)
    }

    fn persist(persister: &mut Self, changeset: &ChangeSet) -> Result<(), Self::Error> {
        if changeset.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(changeset).map_err(WalletPersistError::Encode)?;
        match &persister.group {
            Some(store) => {
                store.write_in_group(move |tx| append_changeset(tx, &json)).map_err(persist_error)
            }
            None => {
                let tx = persister.db.begin_write().map_err(pdb("begin a write"))?;
                append_changeset(&tx, &json).map_err(persist_error)?;
                tx.commit().map_err(pdb("commit the wallet"))
            }
        }
    }
}

impl From<Arc<Database>> for RedbWalletPersister {
    fn from(db: Arc<Database>) -> Self {
        RedbWalletPersister::new(db)
    }
}

impl From<&RedbStore> for RedbWalletPersister {
    fn from(store: &RedbStore) -> Self {
        RedbWalletPersister::grouped(store)
    }
}

/// Appends the changeset `json` as the wallet table's next row, in `tx`.
fn append_changeset(tx: &WriteTransaction, json: &str) -> Result<(), StoreError> {
    let db =
        |op: &'static str| move |e: redb::Error| StoreError::Database { op, source: Box::new(e) };
    let mut table =
        tx.open_table(WALLET_TABLE).map_err(|e| db("open the wallet table")(e.into()))?;
    let last = table.last().map_err(|e| db("read the wallet")(e.into()))?;
    let next = last.map_or(0, |(k, _)| k.value() + 1);
    table.insert(next, json).map_err(|e| db("write the wallet")(e.into()))?;
    Ok(())
}

/// A store error of a wallet write, as the persister's error.
fn persist_error(e: StoreError) -> WalletPersistError {
    match e {
        StoreError::Database { op, source } => WalletPersistError::Database { op, source },
        other => WalletPersistError::Store(other),
    }
}

/// Errors of [`LooperWallet`]. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Persisting or loading the wallet failed.
    #[error("wallet persistence failed")]
    Persist(#[from] WalletPersistError),
    /// The wallet could not be created from the node's descriptors (details withheld: the
    /// descriptors carry private keys).
    #[error("cannot create the wallet from the node's descriptors")]
    Descriptor,
    /// The stored wallet does not match the node's keys or network.
    #[error("stored wallet does not match this node: {reason}")]
    Mismatch {
        /// What differs (network, genesis, public descriptor).
        reason: String,
    },
    /// The node's keys could not be derived.
    #[error("cannot derive the wallet keys")]
    Keys(#[from] crate::seed::SeedError),
    /// Syncing with the chain source failed (the Esplora or Electrum client's error).
    #[error("wallet sync failed")]
    Sync(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sync result does not connect to the wallet's chain (reorg during sync); retry.
    #[error("wallet sync result does not connect to the local chain; retry")]
    CannotConnect(#[source] Box<bdk_wallet::chain::local_chain::CannotConnectError>),
    /// A transaction could not be built (e.g. insufficient funds, output below dust).
    #[error("cannot build the transaction")]
    CreateTx(#[source] Box<bdk_wallet::error::CreateTxError>),
    /// Signing failed.
    #[error("cannot sign the transaction")]
    Sign(#[source] Box<bdk_wallet::signer::SignerError>),
    /// The signed PSBT is not complete (a input the wallet cannot sign).
    #[error("the wallet could not finalize every input of the transaction")]
    NotFinalized,
    /// The finished transaction could not be extracted (absurd fee rate, missing UTXO data).
    #[error("cannot extract the signed transaction")]
    Extract(#[source] Box<bitcoin::psbt::ExtractTxError>),
    /// An address is for another network.
    #[error("address {address} is not a {network} address")]
    WrongNetwork {
        /// The address as given.
        address: String,
        /// The wallet's network.
        network: Network,
    },
    /// No outputs were given to fund.
    #[error("no outputs to fund")]
    NoOutputs,
    /// A requested output is missing from the built transaction (a BDK invariant broke).
    #[error("built transaction lacks requested output {index}")]
    OutputMissing {
        /// Position of the output in the request.
        index: usize,
    },
    /// Broadcasting failed.
    #[error("broadcast failed")]
    Broadcast(#[from] ChainError),
    /// The wallet lock was poisoned by a panicking thread.
    #[error("wallet lock poisoned")]
    Poisoned,
    /// A wallet other than the BDK one (a test bed's) could not do what was asked.
    #[error("wallet unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

macro_rules! boxed_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for WalletError {
            fn from(e: $ty) -> Self {
                WalletError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    bdk_wallet::chain::local_chain::CannotConnectError => CannotConnect,
    bdk_wallet::error::CreateTxError => CreateTx,
    bdk_wallet::signer::SignerError => Sign,
    bitcoin::psbt::ExtractTxError => Extract,
);

/// A child paying for an unconfirmed transaction of ours (CPFP): it spends the parent's output
/// to the wallet (its change) back to the wallet, with the fee that lifts the pair to a fee rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpfpTx {
    /// The signed child, recorded by the wallet as unconfirmed (persisted), not broadcast.
    pub tx: Transaction,
    /// The child's fee.
    pub fee: Amount,
    /// The fee rate of parent and child together.
    pub package_rate: FeeRate,
}

/// The vsize of a child spending one P2TR output of the wallet to one P2TR output (key path).
const CPFP_CHILD_VBYTES: u64 = 111;

/// A signed transaction funding one or more outputs (HTLCs), not yet broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingTx {
    /// The signed transaction.
    pub tx: Transaction,
    /// For each requested output, in the order given, its output index in `tx`.
    pub vouts: Vec<u32>,
    /// The fee paid.
    pub fee: Amount,
    /// The fee rate used (after the cap).
    pub fee_rate: FeeRate,
}

/// A wallet sync's request ([`LooperWallet::sync_request`]).
enum SyncRequest {
    Full(bdk_wallet::chain::spk_client::FullScanRequest<KeychainKind>),
    Incremental(bdk_wallet::chain::spk_client::SyncRequest<(KeychainKind, u32)>),
}

/// A wallet sync's result ([`LooperWallet::apply_sync`]).
enum SyncUpdate {
    Full(bdk_wallet::chain::spk_client::FullScanResponse<KeychainKind>),
    Incremental(bdk_wallet::chain::spk_client::SyncResponse),
}

struct Inner {
    wallet: PersistedWallet<RedbWalletPersister>,
    persister: RedbWalletPersister,
    synced_once: bool,
    /// The last seen/evicted time given to a transaction by [`Inner::stamp`].
    last_stamp: u64,
}

impl Inner {
    /// A time for a seen/evicted mark later than every one given before: BDK drops a
    /// transaction evicted at or after it was last seen, so marks within one second must
    /// still be ordered.
    fn stamp(&mut self) -> u64 {
        self.last_stamp = self.last_stamp.saturating_add(1).max(now_secs());
        self.last_stamp
    }

    fn persist(&mut self) -> Result<(), WalletError> {
        self.wallet.persist(&mut self.persister)?;
        Ok(())
    }
}

/// The node's on-chain wallet (see the module documentation).
pub struct LooperWallet {
    inner: Mutex<Inner>,
    /// Held from building a spending transaction until it is broadcast and applied, so two
    /// spends (an HTLC funding and a `send`) never pick the same coins.
    spend: tokio::sync::Mutex<()>,
    /// The balance as last computed, for [`LooperWallet::recent_balance`].
    last_balance: Mutex<Option<Balance>>,
    network: Network,
    max_fee_rate: FeeRate,
}

impl std::fmt::Debug for LooperWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LooperWallet")
            .field("network", &self.network)
            .field("max_fee_rate", &self.max_fee_rate)
            .finish()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LooperWallet {
    /// Loads the wallet from `db`, or creates it from the node's BIP-0086 descriptors on first
    /// start. Every fee rate the wallet pays is capped at `max_fee_rate`.
    ///
    /// # Errors
    /// [`WalletError::Mismatch`] when the stored wallet is for other keys or another network;
    /// persistence or descriptor errors.
    pub fn load_or_create(
        persister: impl Into<RedbWalletPersister>,
        keys: &NodeKeys,
        network: Network,
        max_fee_rate: FeeRate,
    ) -> Result<LooperWallet, WalletError> {
        let descriptors = keys.wallet_descriptors()?;
        let mut persister = persister.into();
        let loaded = Wallet::load()
            .descriptor(KeychainKind::External, Some(descriptors.external.clone()))
            .descriptor(KeychainKind::Internal, Some(descriptors.internal.clone()))
            .extract_keys()
            .check_network(network)
            .lookahead(LOOKAHEAD)
            .load_wallet(&mut persister);
        let wallet = match loaded {
            Ok(Some(wallet)) => wallet,
            Ok(None) => Wallet::create(descriptors.external, descriptors.internal)
                .network(network)
                .lookahead(LOOKAHEAD)
                .create_wallet(&mut persister)
                .map_err(|e| match e {
                    bdk_wallet::CreateWithPersistError::Persist(p) => WalletError::Persist(p),
                    bdk_wallet::CreateWithPersistError::DataAlreadyExists(_) => {
                        WalletError::Mismatch {
                            reason: "wallet data appeared while creating it".to_string(),
                        }
                    }
                    bdk_wallet::CreateWithPersistError::Descriptor(_) => WalletError::Descriptor,
                })?,
            Err(bdk_wallet::LoadWithPersistError::Persist(p)) => return Err(p.into()),
            Err(bdk_wallet::LoadWithPersistError::InvalidChangeSet(e)) => {
                return Err(match e {
                    bdk_wallet::LoadError::Descriptor(_) => WalletError::Descriptor,
                    // Mismatch errors show public descriptors, network or genesis hash only.
                    other => WalletError::Mismatch { reason: other.to_string() },
                });
            }
        };
        Ok(LooperWallet {
            inner: Mutex::new(Inner { wallet, persister, synced_once: false, last_stamp: 0 }),
            spend: tokio::sync::Mutex::new(()),
            last_balance: Mutex::new(None),
            network,
            max_fee_rate,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, WalletError> {
        self.inner.lock().map_err(|_| WalletError::Poisoned)
    }

    /// The wallet's network.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The fee-rate cap.
    pub fn max_fee_rate(&self) -> FeeRate {
        self.max_fee_rate
    }

    /// `rate` limited to the cap (logged when it bites).
    pub fn capped(&self, rate: FeeRate) -> FeeRate {
        if rate > self.max_fee_rate {
            tracing::warn!(
                requested_sat_per_vb = rate.to_sat_per_vb_floor(),
                cap_sat_per_vb = self.max_fee_rate.to_sat_per_vb_floor(),
                "fee rate capped"
            );
            self.max_fee_rate
        } else {
            rate
        }
    }

    /// Syncs with Esplora: a full scan (discovering used addresses up to [`STOP_GAP`] unused
    /// ones) on the first call in this process, then incremental syncs of the revealed scripts.
    /// The result is persisted before returning.
    ///
    /// # Errors
    /// [`WalletError::Sync`], [`WalletError::CannotConnect`] (retry), persistence errors.
    pub async fn sync(&self, client: &esplora_client::AsyncClient) -> Result<(), WalletError> {
        let update = match self.sync_request()? {
            SyncRequest::Full(req) => SyncUpdate::Full(
                client
                    .full_scan(req, STOP_GAP, PARALLEL_REQUESTS)
                    .await
                    .map_err(|e| WalletError::Sync(e))?,
            ),
            SyncRequest::Incremental(req) => SyncUpdate::Incremental(
                client.sync(req, PARALLEL_REQUESTS).await.map_err(|e| WalletError::Sync(e))?,
            ),
        };
        self.apply_sync(update)
    }

    /// [`LooperWallet::sync`] through an Electrum server (bdk_electrum, on tokio's blocking
    /// pool; every confirmation's merkle proof is checked against its block header, and the
    /// spent outputs of the wallet's transactions are fetched for their fees).
    ///
    /// # Errors
    /// As [`LooperWallet::sync`].
    pub async fn sync_electrum(&self, client: &Arc<ElectrumClient>) -> Result<(), WalletError> {
        let request = self.sync_request()?;
        let client = Arc::clone(client);
        let update = tokio::task::spawn_blocking(move || match request {
            SyncRequest::Full(req) => {
                client.full_scan(req, STOP_GAP, ELECTRUM_BATCH_SIZE, true).map(SyncUpdate::Full)
            }
            SyncRequest::Incremental(req) => {
                client.sync(req, ELECTRUM_BATCH_SIZE, true).map(SyncUpdate::Incremental)
            }
        })
        .await
        .map_err(|e| WalletError::Sync(Box::new(e)))?
        .map_err(|e| WalletError::Sync(Box::new(e)))?;
        self.apply_sync(update)
    }

    /// [`LooperWallet::sync`] through whichever client `source` is.
    ///
    /// # Errors
    /// As [`LooperWallet::sync`].
    pub async fn sync_with(&self, source: &WalletSync) -> Result<(), WalletError> {
        match source {
            WalletSync::Esplora(client) => self.sync(client).await,
            WalletSync::Electrum(client) => self.sync_electrum(client).await,
            WalletSync::Bitcoind(source) => self.sync_bitcoind(source).await,
        }
    }

    /// [`LooperWallet::sync`] through bitcoind's JSON-RPC: the blocks since the wallet's last
    /// checkpoint still in bitcoind's chain (a reorg is rolled back there), whole where a
    /// block's filter matches the wallet's scripts (revealed and look-ahead), headers elsewhere;
    /// then the mempool's transactions, and the wallet's unconfirmed ones the mempool no longer
    /// holds are marked evicted (as of the sync's start, so that one recorded during the sync
    /// stays). A wallet restored from its seed reads the chain from genesis.
    ///
    /// # Errors
    /// As [`LooperWallet::sync`].
    pub async fn sync_bitcoind(&self, source: &BitcoindChainSource) -> Result<(), WalletError> {
        let (checkpoint, started) = {
            let mut inner = self.lock()?;
            (inner.wallet.latest_checkpoint(), inner.stamp())
        };
        let scripts = |inner: &MutexGuard<'_, Inner>| -> Vec<ScriptBuf> {
            inner.wallet.spk_index().inner().all_spks().values().cloned().collect()
        };
        // A payment found in a block can move the look-ahead window: read the same blocks again
        // for the new scripts until they stay the same (as a full scan's stop gap).
        let mut known = scripts(&self.lock()?);
        let mut rounds = 0;
        let feed = loop {
            let feed = source
                .wallet_feed(&checkpoint, &known)
                .await
                .map_err(|e| WalletError::Sync(Box::new(e)))?;
            let mut inner = self.lock()?;
            for (block, height, connected_to) in &feed.blocks {
                inner
                    .wallet
                    .apply_block_connected_to(block, *height, *connected_to)
                    .map_err(|e| WalletError::Sync(Box::new(e)))?;
            }
            let now = scripts(&inner);
            rounds += 1;
            if now.len() == known.len() || rounds >= BITCOIND_SYNC_ROUNDS {
                break feed;
            }
            known = now;
        };
        let mut inner = self.lock()?;
        let in_pool: std::collections::HashSet<Txid> =
            feed.mempool.iter().map(|t| t.compute_txid()).collect();
        inner.wallet.apply_unconfirmed_txs(feed.mempool.iter().map(|t| (Arc::clone(t), started)));
        let gone: Vec<(Txid, u64)> = inner
            .wallet
            .transactions()
            .filter(|t| !t.chain_position.is_confirmed())
            .map(|t| t.tx_node.txid)
            .filter(|txid| !in_pool.contains(txid))
            .map(|txid| (txid, started))
            .collect();
        inner.wallet.apply_evicted_txs(gone);
        inner.synced_once = true;
        inner.persist()
    }

    /// What the next sync asks: a full scan first in this process, then the revealed scripts.
    fn sync_request(&self) -> Result<SyncRequest, WalletError> {
        let inner = self.lock()?;
        Ok(if inner.synced_once {
            SyncRequest::Incremental(inner.wallet.start_sync_with_revealed_spks().build())
        } else {
            SyncRequest::Full(inner.wallet.start_full_scan().build())
        })
    }

    /// Applies and persists a sync's result.
    fn apply_sync(&self, update: SyncUpdate) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        match update {
            SyncUpdate::Full(update) => {
                inner.wallet.apply_update(update)?;
                inner.synced_once = true;
            }
            SyncUpdate::Incremental(update) => inner.wallet.apply_update(update)?,
        }
        inner.persist()
    }

    /// The balance (confirmed, trusted and untrusted pending, immature).
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn balance(&self) -> Result<Balance, WalletError> {
        let balance = self.lock()?.wallet.balance();
        self.remember_balance(&balance);
        Ok(balance)
    }

    /// The balance without waiting for the wallet: computed now when nobody holds it, otherwise
    /// the one computed last (the wallet is building, signing or persisting a transaction; what
    /// that changes shows on the next call). For checks a moment's lag cannot hurt: a seller
    /// asking whether it can fund one more swap does not wait behind its own fundings.
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn recent_balance(&self) -> Result<Balance, WalletError> {
        match self.inner.try_lock() {
            Ok(inner) => {
                let balance = inner.wallet.balance();
                drop(inner);
                self.remember_balance(&balance);
                Ok(balance)
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                let last = self.last_balance.lock().map_err(|_| WalletError::Poisoned)?.clone();
                match last {
                    Some(balance) => Ok(balance),
                    None => self.balance(),
                }
            }
            Err(std::sync::TryLockError::Poisoned(_)) => Err(WalletError::Poisoned),
        }
    }

    fn remember_balance(&self, balance: &Balance) {
        if let Ok(mut last) = self.last_balance.lock() {
            *last = Some(balance.clone());
        }
    }

    /// Serializes spends: hold the guard from building a transaction until it is broadcast and
    /// applied ([`LooperWallet::apply_unconfirmed`]) or cancelled, so that concurrent spends never
    /// choose the same coins. [`LooperWallet::send`] takes it itself.
    pub async fn spend_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.spend.lock().await
    }

    /// Height of the wallet's latest synced block.
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn synced_height(&self) -> Result<u32, WalletError> {
        Ok(self.lock()?.wallet.latest_checkpoint().height())
    }

    /// A new receive address (revealed and persisted, so it is watched from now on). Claims and
    /// refunds pay to such addresses.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn new_address(&self) -> Result<Address, WalletError> {
        let mut inner = self.lock()?;
        let info = inner.wallet.reveal_next_address(KeychainKind::External);
        inner.persist()?;
        Ok(info.address)
    }

    /// How many receive addresses the wallet has revealed (the next one's index).
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn revealed_receive_addresses(&self) -> Result<u32, WalletError> {
        let inner = self.lock()?;
        Ok(inner.wallet.derivation_index(KeychainKind::External).map_or(0, |i| i.saturating_add(1)))
    }

    /// `count` new receive addresses (revealed and persisted together, in one write): what
    /// [`LooperWallet::new_address`] gives, for callers that hand them out one by one later.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn new_addresses(&self, count: usize) -> Result<Vec<Address>, WalletError> {
        let mut inner = self.lock()?;
        let addresses = (0..count)
            .map(|_| inner.wallet.reveal_next_address(KeychainKind::External).address)
            .collect();
        inner.persist()?;
        Ok(addresses)
    }

    /// Reveals (and persists) the wallet's addresses up to the highest one among `scripts`,
    /// searching the first `search_limit` addresses of each keychain; returns how many of
    /// `scripts` were found. A wallet restored from the seed alone calls it with the claim and
    /// refund destinations of its restored swaps: a full scan stops after [`STOP_GAP`] unused
    /// addresses, and a seller leaves one unused refund address per claimed swap, so a refund
    /// paying past that gap would otherwise stay unseen. Revealed addresses are watched by every
    /// sync and never handed out again by [`LooperWallet::new_address`].
    ///
    /// # Errors
    /// Persistence errors.
    pub fn reveal_scripts(
        &self,
        scripts: &[ScriptBuf],
        search_limit: u32,
    ) -> Result<usize, WalletError> {
        if scripts.is_empty() {
            return Ok(0);
        }
        let wanted: std::collections::HashSet<&ScriptBuf> = scripts.iter().collect();
        let mut inner = self.lock()?;
        let mut found = 0usize;
        for keychain in [KeychainKind::External, KeychainKind::Internal] {
            let mut highest: Option<u32> = None;
            for (index, spk) in
                inner.wallet.unbounded_spk_iter(keychain).take(search_limit as usize)
            {
                if wanted.contains(&spk) {
                    found += 1;
                    highest = Some(index);
                }
            }
            if let Some(index) = highest {
                let revealed = inner.wallet.derivation_index(keychain);
                if revealed.is_none_or(|r| r < index) {
                    let _ = inner.wallet.reveal_addresses_to(keychain, index).count();
                }
            }
        }
        inner.persist()?;
        Ok(found)
    }

    /// Whether `script` belongs to the wallet.
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn is_mine(&self, script: &ScriptBuf) -> Result<bool, WalletError> {
        Ok(self.lock()?.wallet.is_mine(script.clone()))
    }

    /// The wallet's unspent outputs.
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn list_unspent(&self) -> Result<Vec<LocalOutput>, WalletError> {
        Ok(self.lock()?.wallet.list_unspent().collect())
    }

    /// A transaction of the wallet (canonical: in the chain, or recorded unconfirmed and not
    /// evicted) with an output paying `amount` to `script`, and that output's index: a funding
    /// built before a crash, that a swap must take instead of funding its HTLC twice.
    ///
    /// # Errors
    /// [`WalletError::Poisoned`].
    pub fn find_payment(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> Result<Option<(Transaction, u32)>, WalletError> {
        let inner = self.lock()?;
        for ctx in inner.wallet.transactions() {
            let tx = &ctx.tx_node.tx;
            let found =
                tx.output.iter().position(|o| &o.script_pubkey == script && o.value == amount);
            if let Some(vout) = found.and_then(|v| u32::try_from(v).ok()) {
                return Ok(Some((Transaction::clone(tx), vout)));
            }
        }
        Ok(None)
    }

    /// Builds and signs one transaction paying every `(script, amount)` of `outputs` (several
    /// HTLCs in one transaction = batching), with change back to the wallet, at `fee_rate`
    /// (capped). Returns the transaction and each output's index. Nothing is broadcast; call
    /// [`LooperWallet::apply_unconfirmed`] after broadcasting it, or
    /// [`LooperWallet::cancel_tx`] if it is dropped.
    ///
    /// # Errors
    /// [`WalletError::NoOutputs`], [`WalletError::CreateTx`] (e.g. insufficient funds), signing
    /// errors.
    pub fn build_funding_tx(
        &self,
        outputs: &[(ScriptBuf, Amount)],
        fee_rate: FeeRate,
    ) -> Result<FundingTx, WalletError> {
        if outputs.is_empty() {
            return Err(WalletError::NoOutputs);
        }
        let fee_rate = self.capped(fee_rate);
        let mut inner = self.lock()?;
        let mut builder = inner.wallet.build_tx();
        for (script, amount) in outputs {
            builder.add_recipient(script.clone(), *amount);
        }
        builder.fee_rate(fee_rate).ordering(TxOrdering::Untouched);
        let psbt = builder.finish()?;
        let (tx, fee) = Self::sign_and_extract(&inner.wallet, psbt)?;
        // Find each requested output, each index used once (two equal outputs get two indices).
        let mut used = vec![false; tx.output.len()];
        let mut vouts = Vec::with_capacity(outputs.len());
        for (index, (script, amount)) in outputs.iter().enumerate() {
            let found = tx
                .output
                .iter()
                .enumerate()
                .position(|(i, o)| {
                    !used.get(i).copied().unwrap_or(true)
                        && &o.script_pubkey == script
                        && o.value == *amount
                })
                .ok_or(WalletError::OutputMissing { index })?;
            if let Some(u) = used.get_mut(found) {
                *u = true;
            }
            vouts.push(u32::try_from(found).map_err(|_| WalletError::OutputMissing { index })?);
        }
        // The change address was revealed: persist it.
        inner.persist()?;
        Ok(FundingTx { tx, vouts, fee, fee_rate })
    }

    fn sign_and_extract(
        wallet: &Wallet,
        mut psbt: bitcoin::Psbt,
    ) -> Result<(Transaction, Amount), WalletError> {
        let finalized = wallet.sign(&mut psbt, SignOptions::default())?;
        if !finalized {
            return Err(WalletError::NotFinalized);
        }
        let fee = psbt.fee().map_err(|_| WalletError::NotFinalized)?;
        let tx = psbt.extract_tx()?;
        Ok((tx, fee))
    }

    /// Builds, signs and broadcasts a payment of `amount` to `address` at `fee_rate` (capped),
    /// then records it as unconfirmed. Returns the txid.
    ///
    /// # Errors
    /// [`WalletError::WrongNetwork`], [`WalletError::CreateTx`], [`WalletError::Broadcast`], ...
    pub async fn send(
        &self,
        chain: &dyn ChainSource,
        address: Address<NetworkUnchecked>,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Txid, WalletError> {
        let text = address.clone().assume_checked().to_string();
        let address = address
            .require_network(self.network)
            .map_err(|_| WalletError::WrongNetwork { address: text, network: self.network })?;
        let fee_rate = self.capped(fee_rate);
        // Built and recorded under the guard (so no concurrent spend picks the same coins);
        // broadcast after it is released, and forgotten again if the broadcast fails.
        let tx = {
            let _spending = self.spend_guard().await;
            let mut inner = self.lock()?;
            let mut builder = inner.wallet.build_tx();
            builder.add_recipient(address.script_pubkey(), amount).fee_rate(fee_rate);
            let psbt = builder.finish()?;
            let (tx, _) = Self::sign_and_extract(&inner.wallet, psbt)?;
            let at = inner.stamp();
            inner.wallet.apply_unconfirmed_txs([(tx.clone(), at)]);
            inner.persist()?;
            tx
        };
        match chain.broadcast(&tx).await {
            Ok(txid) => Ok(txid),
            Err(e) => {
                self.forget_tx(&tx)?;
                Err(e.into())
            }
        }
    }

    /// Records a broadcast transaction (ours or one paying us, e.g. a claim) as unconfirmed, so
    /// its inputs are spent and its outputs usable before the next sync. Persisted.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn apply_unconfirmed(&self, tx: &Transaction) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        let at = inner.stamp();
        inner.wallet.apply_unconfirmed_txs([(tx.clone(), at)]);
        inner.persist()
    }

    /// Builds a child of `parent` (an unconfirmed transaction of this wallet, e.g. a funding)
    /// that spends its output to the wallet (its change) back to the wallet, paying what lifts
    /// parent and child together to `package_rate` (capped). A child of that output the wallet
    /// recorded before (`replaces`, or one found in the wallet: built before a restart) is
    /// replaced: the new one pays more (BIP-125). The child is recorded as unconfirmed and
    /// persisted before it is returned, so that it survives a restart; give it to
    /// [`LooperWallet::forget_tx`] if it is not broadcast. `Ok(None)`: nothing to do (the
    /// parent pays that rate on its own) or not possible (no output to the wallet, or too small
    /// to pay the fee); an earlier child is then kept.
    ///
    /// # Errors
    /// [`WalletError::CreateTx`], signing and persistence errors (an earlier child is kept).
    pub fn build_cpfp(
        &self,
        parent: &Transaction,
        replaces: Option<&Transaction>,
        package_rate: FeeRate,
    ) -> Result<Option<CpfpTx>, WalletError> {
        let package_rate = self.capped(package_rate);
        let mut inner = self.lock()?;
        let txid = parent.compute_txid();
        let Some(vout) =
            parent.output.iter().position(|o| inner.wallet.is_mine(o.script_pubkey.clone()))
        else {
            return Ok(None);
        };
        let Ok(vout) = u32::try_from(vout) else { return Ok(None) };
        let Ok(parent_fee) = inner.wallet.calculate_fee(parent) else { return Ok(None) };
        let parent_vsize = parent.vsize() as u64;
        if package_rate.fee_vb(parent_vsize).is_some_and(|f| parent_fee >= f) {
            return Ok(None); // it pays that rate on its own
        }
        let outpoint = bitcoin::OutPoint { txid, vout };
        let earlier = replaces.cloned().or_else(|| {
            inner
                .wallet
                .transactions()
                .filter(|t| !t.chain_position.is_confirmed())
                .map(|t| Transaction::clone(&t.tx_node.tx))
                .find(|tx| tx.input.iter().any(|i| i.previous_output == outpoint))
        });
        // The earlier child steps aside while the new one is built, and comes back if none is.
        if let Some(old) = &earlier {
            let at = inner.stamp();
            inner.wallet.apply_evicted_txs([(old.compute_txid(), at)]);
        }
        let built = Self::cpfp_child(&mut inner, outpoint, parent_fee, parent_vsize, package_rate);
        match built {
            Ok(Some(child)) => {
                if let Some(old) = &earlier {
                    inner.wallet.cancel_tx(old);
                }
                let at = inner.stamp();
                inner.wallet.apply_unconfirmed_txs([(child.tx.clone(), at)]);
                inner.persist()?;
                Ok(Some(child))
            }
            other => {
                if let Some(old) = earlier {
                    let at = inner.stamp();
                    inner.wallet.apply_unconfirmed_txs([(old, at)]);
                }
                inner.persist()?;
                other
            }
        }
    }

    /// The child of [`LooperWallet::build_cpfp`], signed, not recorded.
    fn cpfp_child(
        inner: &mut Inner,
        outpoint: bitcoin::OutPoint,
        parent_fee: Amount,
        parent_vsize: u64,
        package_rate: FeeRate,
    ) -> Result<Option<CpfpTx>, WalletError> {
        let Some(value) = inner.wallet.get_utxo(outpoint).map(|u| u.txout.value) else {
            return Ok(None);
        };
        let mut child_vsize = CPFP_CHILD_VBYTES;
        // Twice at most: the child's real size may differ from the estimate.
        for _ in 0..2 {
            let total = package_rate
                .fee_vb(parent_vsize.saturating_add(child_vsize))
                .unwrap_or(Amount::MAX_MONEY);
            let fee = total.checked_sub(parent_fee).unwrap_or(Amount::ZERO);
            // What is left must stay above the dust limit of a P2TR output.
            if fee == Amount::ZERO || value < fee + Amount::from_sat(330) {
                return Ok(None);
            }
            let change = inner.wallet.next_unused_address(bdk_wallet::KeychainKind::Internal);
            let mut builder = inner.wallet.build_tx();
            builder
                .add_utxo(outpoint)
                .map_err(|e| WalletError::Unavailable { reason: format!("cpfp input: {e}") })?;
            builder.manually_selected_only().drain_to(change.script_pubkey()).fee_absolute(fee);
            let psbt = builder.finish()?;
            let (tx, fee) = Self::sign_and_extract(&inner.wallet, psbt)?;
            let vsize = tx.vsize() as u64;
            if vsize > child_vsize {
                inner.wallet.cancel_tx(&tx);
                child_vsize = vsize;
                continue;
            }
            let total_fee = fee.to_sat().saturating_add(parent_fee.to_sat());
            let total_vsize = parent_vsize.saturating_add(vsize).max(1);
            let rate = FeeRate::from_sat_per_kwu(total_fee.saturating_mul(250) / total_vsize);
            return Ok(Some(CpfpTx { tx, fee, package_rate: rate }));
        }
        Ok(None)
    }

    /// Releases the change address of a built transaction that will not be broadcast.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn cancel_tx(&self, tx: &Transaction) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        inner.wallet.cancel_tx(tx);
        inner.persist()
    }

    /// Forgets a transaction recorded with [`LooperWallet::apply_unconfirmed`] that was never
    /// broadcast (or was refused): it is marked evicted, so its inputs are spendable again, and
    /// its change address released.
    ///
    /// # Errors
    /// Persistence errors.
    pub fn forget_tx(&self, tx: &Transaction) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        let at = inner.stamp();
        inner.wallet.apply_evicted_txs([(tx.compute_txid(), at)]);
        inner.wallet.cancel_tx(tx);
        inner.persist()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::seed::Mnemonic;
    use crate::store::RedbStore;

    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn keys(network: Network) -> NodeKeys {
        NodeKeys::from_mnemonic(&Mnemonic::parse(ABANDON, "t").unwrap(), network).unwrap()
    }

    /// A fresh regtest wallet in a temporary store, paying at most `cap_sat_vb`.
    fn regtest_wallet(cap_sat_vb: u32) -> (tempfile::TempDir, RedbStore, LooperWallet) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("looper.redb")).unwrap();
        let w = LooperWallet::load_or_create(
            store.database(),
            &keys(Network::Regtest),
            Network::Regtest,
            FeeRate::from_sat_per_vb_u32(cap_sat_vb),
        )
        .unwrap();
        (dir, store, w)
    }

    #[test]
    fn create_reload_and_persist_in_the_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("looper.redb");
        let cap = FeeRate::from_sat_per_vb_u32(50);
        let (a1, a2);
        {
            // Written through the store's group commit (as the node does), beside swap writes.
            let store = RedbStore::open(&path).unwrap();
            let w = LooperWallet::load_or_create(
                &store,
                &keys(Network::Regtest),
                Network::Regtest,
                cap,
            )
            .unwrap();
            let swaps = {
                let store = store.clone();
                std::thread::spawn(move || {
                    use crate::store::SwapStore;
                    (0..50).map(|_| store.next_swap_index().unwrap()).collect::<Vec<_>>().pop()
                })
            };
            a1 = w.new_address().unwrap();
            a2 = w.new_address().unwrap();
            assert_eq!(w.new_addresses(30).unwrap().len(), 30);
            assert_eq!(swaps.join().unwrap(), Some(49));
            assert_ne!(a1, a2);
            assert_eq!(w.balance().unwrap().total(), Amount::ZERO);
            // BIP-0086 regtest first address of the "abandon" mnemonic.
            assert!(a1.to_string().starts_with("bcrt1p"));
            let p = RedbWalletPersister::new(store.database());
            assert!(p.row_count().unwrap() >= 2);
        }
        let store = RedbStore::open(&path).unwrap();
        let w = LooperWallet::load_or_create(
            store.database(),
            &keys(Network::Regtest),
            Network::Regtest,
            cap,
        )
        .unwrap();
        // Loading compacted the rows into one.
        assert_eq!(RedbWalletPersister::new(store.database()).row_count().unwrap(), 1);
        // The revealed addresses survived: the next one is new.
        let a3 = w.new_address().unwrap();
        assert_ne!(a3, a1);
        assert_ne!(a3, a2);
        assert!(w.is_mine(&a1.script_pubkey()).unwrap());
        // The swap store in the same file kept its writes and is usable.
        use crate::store::SwapStore;
        assert!(store.next_swap_index().unwrap() >= 50);
    }

    #[test]
    fn the_recent_balance_does_not_wait_for_a_busy_wallet() {
        let (_dir, _store, w) = regtest_wallet(50);
        // Nothing computed yet and the wallet free: computed now.
        assert_eq!(w.recent_balance().unwrap(), w.balance().unwrap());
        // The wallet held (building a funding, say): the last one, at once.
        let held = w.inner.lock().unwrap();
        assert_eq!(w.recent_balance().unwrap().total(), Amount::ZERO);
        drop(held);
        assert_eq!(w.recent_balance().unwrap().total(), Amount::ZERO);
    }

    #[test]
    fn reveal_scripts_moves_past_a_gap() {
        let (_old_dir, _old_store, old) = regtest_wallet(50);
        // A seller's unused refund addresses: the 120th is far past the full scan's stop gap.
        let addresses: Vec<Address> = (0..120).map(|_| old.new_address().unwrap()).collect();
        let refund = addresses[119].script_pubkey();

        let (_new_dir, _new_store, restored) = regtest_wallet(50);
        let foreign = ScriptBuf::new_op_return([1u8; 4]);
        assert_eq!(restored.reveal_scripts(&[refund.clone(), foreign.clone()], 1_000).unwrap(), 1);
        assert!(restored.is_mine(&refund).unwrap());
        // Never handed out again.
        let next = restored.new_address().unwrap();
        assert!(!addresses.contains(&next));
        // Idempotent; a script beyond the search limit is not found.
        assert_eq!(restored.reveal_scripts(&[refund], 1_000).unwrap(), 1);
        assert_eq!(restored.reveal_scripts(&[addresses[119].script_pubkey()], 10).unwrap(), 0);
        assert_eq!(restored.reveal_scripts(&[], 10).unwrap(), 0);
        assert!(!restored.is_mine(&foreign).unwrap());
    }

    #[test]
    fn other_keys_or_network_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("looper.redb")).unwrap();
        let cap = FeeRate::from_sat_per_vb_u32(50);
        LooperWallet::load_or_create(
            store.database(),
            &keys(Network::Regtest),
            Network::Regtest,
            cap,
        )
        .unwrap();
        let other =
            NodeKeys::from_mnemonic(&Mnemonic::generate().unwrap(), Network::Regtest).unwrap();
        let e = LooperWallet::load_or_create(store.database(), &other, Network::Regtest, cap)
            .unwrap_err();
        assert!(matches!(e, WalletError::Mismatch { .. }), "{e}");
        assert!(!e.to_string().contains("prv"), "{e}");
        let e = LooperWallet::load_or_create(
            store.database(),
            &keys(Network::Signet),
            Network::Signet,
            cap,
        )
        .unwrap_err();
        assert!(matches!(e, WalletError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn funding_without_funds_is_a_typed_error() {
        let (_dir, _store, w) = regtest_wallet(5);
        assert!(matches!(
            w.build_funding_tx(&[], FeeRate::from_sat_per_vb_u32(1)),
            Err(WalletError::NoOutputs)
        ));
        let spk = w.new_address().unwrap().script_pubkey();
        let e = w
            .build_funding_tx(&[(spk, Amount::from_sat(10_000))], FeeRate::from_sat_per_vb_u32(1))
            .unwrap_err();
        assert!(matches!(e, WalletError::CreateTx(_)), "{e}");
        assert_eq!(w.capped(FeeRate::from_sat_per_vb_u32(500)), FeeRate::from_sat_per_vb_u32(5));
    }
}
