//! Looper regtest: an embedded Bitcoin regtest chain whose consensus validation is Bitcoin
//! Core's own engine (`libbitcoinkernel` through the `bitcoinkernel` crate), served behind an
//! Esplora-compatible REST API, an Electrum protocol server and Bitcoin Core's JSON-RPC (one
//! chain, one mempool), so ldk-node, BDK and Looper's own chain sources can sync from it over
//! any of them.
//!
//! * Blocks are built here (coinbase to a chosen script, BIP-34 height, witness commitment,
//!   regtest bits, ground nonce, time above median-time-past) and handed to
//!   `ChainstateManager::process_block`; the kernel decides validity. A rejected block never
//!   enters the chain; the reject reason comes from the kernel's log.
//! * The kernel has no mempool and no UTXO lookup, so the chain keeps its own UTXO set,
//!   spend index and script index, updated from the blocks the kernel connects (reorgs
//!   included). A transaction enters the mempool when it passes the kernel's
//!   `Transaction::check()`, all inputs exist and are unspent (confirmed or in the mempool;
//!   an input a mempool transaction spends makes it a replacement, below), every input
//!   verifies with `bitcoinkernel::verify` given all spent outputs, it is final for the next
//!   block (lock-time and BIP-68), coinbase inputs are mature and outputs do not exceed
//!   inputs. Reject reasons follow Bitcoin Core
//!   (`non-final`, `bad-txns-premature-spend-of-coinbase`, ...).
//! * Policy, as Bitcoin Core 28+ applies it by default: a transaction spending an output a
//!   mempool transaction already spends replaces it under BIP-0125's rules with full-RBF (no
//!   signalling needed; rules 2 to 6: no new unconfirmed inputs, pays the fees of everything it
//!   evicts plus 1 sat/vB of its own vsize, a higher fee rate than each direct conflict, at most
//!   100 evictions); a settable mempool minimum fee rate ([`RegtestChain::set_min_fee_rate`], a
//!   fee spike) refuses and evicts cheap transactions; blocks take the highest fee rate
//!   packages first, optionally within a small [`RegtestChain::set_max_block_vsize`] (a
//!   congested chain); `/fee-estimates` follows the minimum fee rate or a settable curve
//!   ([`RegtestChain::set_fee_estimates`]).
//!
//! ```no_run
//! # fn main() -> Result<(), looper_regtest::Error> {
//! let chain = looper_regtest::RegtestChain::start("/tmp/chain")?;
//! println!("esplora at {}", chain.esplora_url());
//! println!("electrum at {}", chain.electrum_url());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod bitcoind;
mod chain;
mod electrum;
mod error;
mod esplora;
mod external;
pub mod harness;
mod kernel;
mod rpc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, Amount, BlockHash, Network, ScriptBuf, Transaction, Txid};
use tokio::sync::watch;

pub use bitcoind::COOKIE_USER;
pub use chain::{
    is_final, script_hash, sign_p2wpkh, subsidy, COINBASE_MATURITY, INCREMENTAL_RELAY_FEE_SAT_KVB,
    MAX_REPLACEMENT_CANDIDATES, REGTEST_BITS,
};
pub use electrum::ELECTRUM_PROTOCOL_VERSION;
pub use error::{Error, Result};
pub use esplora::FEE_TARGETS;
pub use external::ExternalChain;

/// State shared by the library handle and the HTTP server.
pub(crate) struct Shared {
    pub(crate) state: Mutex<Option<chain::ChainState>>,
    pub(crate) fee_rate_sat_vb: f64,
}

/// Options for [`RegtestChain::start_with`].
#[derive(Debug, Clone)]
pub struct ChainConfig {
    /// Directory holding the kernel's block files and chainstate (created when missing).
    pub datadir: PathBuf,
    /// Address the Esplora API listens on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Address the Electrum protocol server listens on (`127.0.0.1:0`, the default, picks a
    /// free port).
    pub electrum_listen: SocketAddr,
    /// Address Bitcoin Core's JSON-RPC interface listens on (`127.0.0.1:0`, the default, picks a
    /// free port). It takes the cookie written to `DATADIR/.cookie` and [`ChainConfig::rpc_auth`].
    pub rpc_listen: SocketAddr,
    /// A user and password the JSON-RPC interface takes besides the cookie (bitcoind's
    /// `-rpcuser`/`-rpcpassword`; default none).
    pub rpc_auth: Option<(String, String)>,
    /// Blocks mined to the chain's own key when the chain is fresh, so that
    /// [`RegtestChain::fund_address`] has a matured coinbase (default 101).
    pub premine: u32,
    /// Fee rate (sat/vB) returned by `/fee-estimates` for every target (default 1.0), unless
    /// the minimum fee rate is higher or [`RegtestChain::set_fee_estimates`] overrides it.
    pub fee_rate_sat_vb: f64,
    /// Mempool minimum fee rate in sat/vB (default 0: off); see
    /// [`RegtestChain::set_min_fee_rate`].
    pub min_fee_rate_sat_vb: f64,
    /// Most vsize of mempool transactions one block takes (default `None`: the consensus
    /// weight limit only); see [`RegtestChain::set_max_block_vsize`].
    pub max_block_vsize: Option<u64>,
}

impl ChainConfig {
    /// Defaults for `datadir`: listen on a free local port, premine 101 blocks, 1 sat/vB.
    pub fn new(datadir: impl AsRef<Path>) -> Self {
        Self {
            datadir: datadir.as_ref().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            electrum_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rpc_auth: None,
            premine: 101,
            fee_rate_sat_vb: 1.0,
            min_fee_rate_sat_vb: 0.0,
            max_block_vsize: None,
        }
    }
}

/// A running regtest chain with its Esplora and Electrum servers. Dropping it shuts it down.
pub struct RegtestChain {
    shared: Arc<Shared>,
    addr: SocketAddr,
    electrum_addr: SocketAddr,
    rpc_addr: SocketAddr,
    cookie: (PathBuf, String),
    stop: Option<watch::Sender<bool>>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RegtestChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegtestChain")
            .field("addr", &self.addr)
            .field("electrum_addr", &self.electrum_addr)
            .field("rpc_addr", &self.rpc_addr)
            .finish()
    }
}

impl RegtestChain {
    /// Starts a chain in `datadir` with an Esplora API, an Electrum server and Bitcoin Core's
    /// JSON-RPC on free local ports.
    pub fn start(datadir: impl AsRef<Path>) -> Result<Self> {
        Self::start_with(ChainConfig::new(datadir))
    }

    /// Starts a chain with explicit options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a negative or non-finite fee rate, [`Error::Io`] when the
    /// data directory or the listening socket cannot be set up, [`Error::Kernel`] when the
    /// kernel cannot open the chain.
    pub fn start_with(config: ChainConfig) -> Result<Self> {
        sat_kvb("fee_rate_sat_vb", config.fee_rate_sat_vb)?;
        let min_fee_rate = sat_kvb("min_fee_rate_sat_vb", config.min_fee_rate_sat_vb)?;
        std::fs::create_dir_all(&config.datadir)
            .map_err(|e| Error::io(format!("creating {}", config.datadir.display()), e))?;
        let mut state = chain::ChainState::open(&config.datadir, config.premine)?;
        state.set_min_fee_rate(min_fee_rate);
        state.max_block_vsize = config.max_block_vsize;
        let shared = Arc::new(Shared {
            state: Mutex::new(Some(state)),
            fee_rate_sat_vb: config.fee_rate_sat_vb,
        });
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| Error::io(format!("binding {}", config.listen), e))?;
        listener.set_nonblocking(true).map_err(|e| Error::io("configuring listener", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading listen address", e))?;
        let electrum_listener = std::net::TcpListener::bind(config.electrum_listen)
            .map_err(|e| Error::io(format!("binding {}", config.electrum_listen), e))?;
        electrum_listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the electrum listener", e))?;
        let electrum_addr = electrum_listener
            .local_addr()
            .map_err(|e| Error::io("reading the electrum listen address", e))?;
        let rpc_listener = std::net::TcpListener::bind(config.rpc_listen)
            .map_err(|e| Error::io(format!("binding {}", config.rpc_listen), e))?;
        rpc_listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the rpc listener", e))?;
        let rpc_addr = rpc_listener
            .local_addr()
            .map_err(|e| Error::io("reading the rpc listen address", e))?;
        // bitcoind's cookie: `__cookie__:<random>` in the data dir, readable by its owner only.
        let cookie_password = bitcoin::secp256k1::rand::random::<[u8; 32]>().to_lower_hex_string();
        let cookie_path = config.datadir.join(".cookie");
        write_cookie(&cookie_path, &format!("{COOKIE_USER}:{cookie_password}"))?;
        let mut credentials = vec![(COOKIE_USER.to_string(), cookie_password.clone())];
        credentials.extend(config.rpc_auth.clone());
        let rpc_router =
            bitcoind::router(Arc::new(bitcoind::RpcState::new(Arc::clone(&shared), &credentials)));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("regtest-esplora")
            .enable_all()
            .build()
            .map_err(|e| Error::io("building the server runtime", e))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let router = esplora::router(Arc::clone(&shared));
        let electrum_shared = Arc::clone(&shared);
        let server = std::thread::Builder::new()
            .name("regtest-esplora".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let (listener, electrum_listener, rpc_listener) = match (
                        tokio::net::TcpListener::from_std(listener),
                        tokio::net::TcpListener::from_std(electrum_listener),
                        tokio::net::TcpListener::from_std(rpc_listener),
                    ) {
                        (Ok(l), Ok(e), Ok(r)) => (l, e, r),
                        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                            tracing::error!("server listeners: {e}");
                            return;
                        }
                    };
                    let mut esplora_stop = stop_rx.clone();
                    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
                        let _ = esplora_stop.changed().await;
                    });
                    let mut rpc_stop = stop_rx.clone();
                    let rpc =
                        axum::serve(rpc_listener, rpc_router).with_graceful_shutdown(async move {
                            let _ = rpc_stop.changed().await;
                        });
                    let electrum = electrum::serve(electrum_listener, electrum_shared, stop_rx);
                    let (served, rpc, ()) = tokio::join!(served, rpc, electrum);
                    if let Err(e) = served {
                        tracing::error!("esplora server: {e}");
                    }
                    if let Err(e) = rpc {
                        tracing::error!("json-rpc server: {e}");
                    }
                });
                runtime.shutdown_background();
            })
            .map_err(|e| Error::io("spawning the server thread", e))?;
        tracing::info!(
            "regtest chain listening on http://{addr} (esplora), tcp://{electrum_addr} \
             (electrum), http://{rpc_addr} (bitcoind json-rpc)"
        );
        Ok(Self {
            shared,
            addr,
            electrum_addr,
            rpc_addr,
            cookie: (cookie_path, cookie_password),
            stop: Some(stop_tx),
            server: Some(server),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut chain::ChainState) -> Result<T>) -> Result<T> {
        let mut guard =
            self.shared.state.lock().map_err(|_| Error::Kernel("state lock poisoned".into()))?;
        match guard.as_mut() {
            Some(s) => f(s),
            None => Err(Error::ShutDown),
        }
    }

    /// Base URL of the Esplora API (no trailing slash), e.g. `http://127.0.0.1:41234`.
    pub fn esplora_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Socket address the API listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL of the Electrum protocol server (plain TCP), e.g. `tcp://127.0.0.1:41235`, as
    /// electrum-client, BDK and ldk-node take it.
    pub fn electrum_url(&self) -> String {
        format!("tcp://{}", self.electrum_addr)
    }

    /// Socket address the Electrum server listens on.
    pub fn electrum_addr(&self) -> SocketAddr {
        self.electrum_addr
    }

    /// URL of Bitcoin Core's JSON-RPC interface, e.g. `http://127.0.0.1:41236`.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr)
    }

    /// Socket address the JSON-RPC interface listens on.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The cookie file (`DATADIR/.cookie`, `__cookie__:PASSWORD`), as bitcoind writes it; removed
    /// when the chain stops.
    pub fn rpc_cookie_file(&self) -> &Path {
        &self.cookie.0
    }

    /// The cookie's user and password ([`COOKIE_USER`] and the file's password).
    pub fn rpc_cookie(&self) -> (String, String) {
        (COOKIE_USER.to_string(), self.cookie.1.clone())
    }

    /// Height of the active tip.
    pub fn tip_height(&self) -> Result<u32> {
        self.with(|s| Ok(s.tip_height()))
    }

    /// Hash of the active tip.
    pub fn tip_hash(&self) -> Result<BlockHash> {
        self.with(|s| Ok(s.tip_hash()))
    }

    /// Hash of the active-chain block at `height`.
    pub fn block_hash(&self, height: u32) -> Result<Option<BlockHash>> {
        self.with(|s| Ok(s.active.get(height as usize).copied()))
    }

    /// Mines `n` blocks (with the mempool) paying the coinbase to `address`.
    pub fn mine_blocks(&self, n: u32, address: &Address) -> Result<Vec<BlockHash>> {
        let spk = address.script_pubkey();
        self.with(|s| s.mine(n, &spk))
    }

    /// Mines `n` blocks paying the coinbase to `script_pubkey`.
    pub fn mine_to_script(&self, n: u32, script_pubkey: &ScriptBuf) -> Result<Vec<BlockHash>> {
        self.with(|s| s.mine(n, script_pubkey))
    }

    /// Mines `n` blocks paying the coinbase to the chain's own key.
    pub fn mine(&self, n: u32) -> Result<Vec<BlockHash>> {
        self.with(|s| {
            let spk = s.miner_spk.clone();
            s.mine(n, &spk)
        })
    }

    /// Sends `amount` of matured coinbase funds to `address` and mines it into a block.
    pub fn fund_address(&self, address: &Address, amount: Amount) -> Result<Txid> {
        let spk = address.script_pubkey();
        self.with(|s| s.fund(&spk, amount))
    }

    /// Sends `amount` to `script_pubkey` and mines it into a block.
    pub fn fund_script(&self, script_pubkey: &ScriptBuf, amount: Amount) -> Result<Txid> {
        self.with(|s| s.fund(script_pubkey, amount))
    }

    /// Replaces the last `depth` blocks by a longer competing branch of `depth + 1` blocks
    /// (the kernel reorganises onto it). Transactions of the replaced blocks go back to the
    /// mempool when still valid. Returns the new branch's hashes.
    pub fn reorg(&self, depth: u32) -> Result<Vec<BlockHash>> {
        self.with(|s| s.reorg(depth))
    }

    /// Submits a transaction to the mempool (same rules as `POST /tx`).
    pub fn submit_transaction(&self, tx: &Transaction) -> Result<Txid> {
        let tx = tx.clone();
        self.with(|s| s.accept(tx))
    }

    /// Whether `txid` is in the mempool.
    pub fn in_mempool(&self, txid: &Txid) -> Result<bool> {
        self.with(|s| Ok(s.mempool.contains_key(txid)))
    }

    /// Number of transactions in the mempool.
    pub fn mempool_size(&self) -> Result<usize> {
        self.with(|s| Ok(s.mempool.len()))
    }

    /// Height of the active block confirming `txid`, if any.
    pub fn confirmation_height(&self, txid: &Txid) -> Result<Option<u32>> {
        self.with(|s| Ok(s.txs.get(txid).and_then(|r| r.confirmed).map(|c| c.1)))
    }

    /// The transaction spending `outpoint` (in the mempool or the active chain), if any.
    pub fn outspend(&self, outpoint: &bitcoin::OutPoint) -> Result<Option<Txid>> {
        self.with(|s| {
            Ok(s.mempool_spends.get(outpoint).or_else(|| s.chain_spends.get(outpoint)).map(|x| x.0))
        })
    }

    /// Drops `txid` and its descendants from the mempool (a node may evict or forget it); with
    /// `forever` it is refused from then on (a double spend, seen from the other transaction's
    /// side). Returns whether it was in the mempool. A confirmed transaction is left alone
    /// (reorganise it out first). Same as `POST /regtest/drop`.
    pub fn drop_transaction(&self, txid: &Txid, forever: bool) -> Result<bool> {
        let txid = *txid;
        self.with(|s| Ok(s.drop_tx(txid, forever)))
    }

    /// Same as [`RegtestChain::drop_transaction`]: drops `txid` and its descendants from the
    /// mempool; without `forever` it can be submitted again (a rebroadcast brings it back), with
    /// `forever` it is refused from then on. Returns whether it was in the mempool.
    pub fn drop_tx(&self, txid: &Txid, forever: bool) -> Result<bool> {
        self.drop_transaction(txid, forever)
    }

    /// Fee (sat) and vsize (vB) of `txid` while it is in the mempool, e.g. to check the fee
    /// rate of a fee bump. Same as `GET /regtest/mempool/{txid}`.
    pub fn mempool_entry(&self, txid: &Txid) -> Result<Option<(u64, u64)>> {
        self.with(|s| Ok(s.mempool_entry(txid)))
    }

    /// Sets the mempool minimum fee rate in sat/vB (0 turns it off), as when a fee spike fills
    /// Bitcoin Core's mempool: transactions below it are refused on entry (`mempool min fee not
    /// met, <fee> < <min fee>`) and those already in the mempool whose descendant score (the
    /// higher of their own fee rate and that of them with their descendants) is below it are
    /// evicted with their descendants, which leave the Esplora API as any evicted transaction.
    /// `/fee-estimates` is floored at it. Returns the evicted txids. Same as
    /// `POST /regtest/min-fee-rate`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a negative or non-finite rate.
    pub fn set_min_fee_rate(&self, sat_vb: f64) -> Result<Vec<Txid>> {
        let rate = sat_kvb("min fee rate", sat_vb)?;
        self.with(|s| Ok(s.set_min_fee_rate(rate)))
    }

    /// The mempool minimum fee rate in sat/vB (0: off).
    pub fn min_fee_rate(&self) -> Result<f64> {
        self.with(|s| Ok(s.min_fee_rate_sat_kvb as f64 / 1000.0))
    }

    /// Overrides `/fee-estimates` with a per-target curve in sat/vB (e.g. `{1: 50.0, 6: 20.0}`);
    /// `None` goes back to the configured rate. Precedence: the override (a target it does not
    /// name gets the rate of the largest named target below it, or of the smallest named one),
    /// otherwise [`ChainConfig::fee_rate_sat_vb`]; then every rate is floored at the minimum fee
    /// rate. Same as `POST /regtest/fee-estimates`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for an empty map, a target 0 or a negative or non-finite rate.
    pub fn set_fee_estimates(&self, estimates: Option<BTreeMap<u16, f64>>) -> Result<()> {
        if let Some(map) = &estimates {
            check_fee_estimates(map)?;
        }
        self.with(|s| {
            s.fee_estimates = estimates;
            Ok(())
        })
    }

    /// The estimates `/fee-estimates` serves now (target in blocks -> sat/vB).
    pub fn fee_estimates(&self) -> Result<BTreeMap<u16, f64>> {
        let base = self.shared.fee_rate_sat_vb;
        self.with(|s| Ok(esplora::served_fee_estimates(base, s)))
    }

    /// Limits the vsize of the mempool transactions one block takes (the coinbase not counted),
    /// so that a small block leaves the low fee rate transactions in the mempool (a congested
    /// chain); `None` (the default) leaves only the consensus weight limit. Blocks take the
    /// highest fee rate packages first. [`RegtestChain::fund_address`] still confirms its own
    /// transaction in the next block. Same as `POST /regtest/max-block-vsize`.
    pub fn set_max_block_vsize(&self, vsize: Option<u64>) -> Result<()> {
        self.with(|s| {
            s.max_block_vsize = vsize;
            Ok(())
        })
    }

    /// The block vsize limit set by [`RegtestChain::set_max_block_vsize`].
    pub fn max_block_vsize(&self) -> Result<Option<u64>> {
        self.with(|s| Ok(s.max_block_vsize))
    }

    /// Reason a transaction was dropped from the mempool because the kernel rejected a block
    /// containing it.
    pub fn dropped_reason(&self, txid: &Txid) -> Result<Option<String>> {
        self.with(|s| Ok(s.dropped.get(txid).cloned()))
    }

    /// The chain's funding address (P2WPKH of its fixed miner key).
    pub fn miner_address(&self) -> Result<Address> {
        self.with(|s| {
            Address::from_script(&s.miner_spk, Network::Regtest)
                .map_err(|e| Error::Kernel(format!("miner address: {e}")))
        })
    }

    /// Consistency check: the kernel's undo data for the active block at `height` records as
    /// many spent outputs as the chain's own UTXO bookkeeping.
    pub fn check_undo(&self, height: u32) -> Result<bool> {
        self.with(|s| {
            let kernel = s.kernel.spent_output_count(height)?;
            let ours = s
                .active
                .get(height as usize)
                .and_then(|h| s.blocks.get(h))
                .map(|b| b.undo.len())
                .unwrap_or(0);
            Ok(kernel == ours)
        })
    }

    /// Stops the server and closes the kernel (also done on drop).
    pub fn shutdown(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        if let Ok(mut g) = self.shared.state.lock() {
            g.take();
        }
        let _ = std::fs::remove_file(&self.cookie.0);
    }
}

impl Drop for RegtestChain {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Writes bitcoind's cookie file, readable by its owner only.
fn write_cookie(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file =
        options.open(path).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    file.write_all(content.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A fee rate in sat/vB as Bitcoin Core keeps it: whole sat/kvB.
pub(crate) fn sat_kvb(what: &str, sat_vb: f64) -> Result<u64> {
    if !sat_vb.is_finite() || !(0.0..=1e9).contains(&sat_vb) {
        return Err(Error::InvalidRequest(format!(
            "{what} must be between 0 and 1e9 sat/vB, got {sat_vb}"
        )));
    }
    Ok((sat_vb * 1000.0).round() as u64)
}

/// Checks a `/fee-estimates` override.
pub(crate) fn check_fee_estimates(map: &BTreeMap<u16, f64>) -> Result<()> {
    if map.is_empty() {
        return Err(Error::InvalidRequest(
            "fee estimates override is empty (clear it with null/None)".into(),
        ));
    }
    for (target, rate) in map {
        if *target == 0 {
            return Err(Error::InvalidRequest("fee estimate target 0: targets start at 1".into()));
        }
        sat_kvb(&format!("fee estimate for target {target}"), *rate)?;
    }
    Ok(())
}

/// A deterministic test key: P2WPKH address for `SecretKey` derived from `seed`.
pub fn test_key(seed: &str) -> Result<(SecretKey, Address)> {
    use bitcoin::hashes::{sha256, Hash};
    let digest = sha256::Hash::hash(seed.as_bytes());
    let key = SecretKey::from_slice(digest.as_byte_array())
        .map_err(|e| Error::InvalidRequest(format!("key: {e}")))?;
    let secp = Secp256k1::signing_only();
    let pk = bitcoin::CompressedPublicKey(key.public_key(&secp));
    Ok((key, Address::p2wpkh(&pk, Network::Regtest)))
}

/// Parses a regtest address.
pub fn parse_address(s: &str) -> Result<Address> {
    Address::from_str(s)
        .map_err(|e| Error::InvalidRequest(format!("address: {e}")))?
        .require_network(Network::Regtest)
        .map_err(|e| Error::InvalidRequest(format!("address: {e}")))
}
