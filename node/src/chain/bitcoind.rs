//! [`ChainSource`] over Bitcoin Core's JSON-RPC, and the block and mempool feed the BDK wallet
//! syncs from ([`BitcoindChainSource::wallet_feed`]).
//!
//! # Script histories without an address index
//!
//! Bitcoin Core indexes transactions (`-txindex`), not scripts, and the engine asks for the
//! history of HTLC scripts. The source keeps its own, for the scripts it is asked about only:
//!
//! * It follows the active chain over a window of the last [`SCAN_WINDOW`] blocks (more than the
//!   longest swap, [`MAX_TIMEOUT_DELTA`]), block hash by height, by `getbestblockhash` and
//!   walking `previousblockhash` back to a known block at each query: a reorg is found where the
//!   walk meets the known chain, and what the disconnected blocks held is dropped.
//! * A script asked about for the first time is scanned over the whole window, then kept
//!   *watched*: each later query scans only the blocks that came since. A block is scanned
//!   through its BIP-0158 basic filter (`getblockfilter`, needs `-blockfilterindex=1`; kept for
//!   the window), which matches both the scripts a block pays and those it spends from; only a
//!   matching block is fetched (`getblock`). Without the filter index every block is fetched.
//!   In a fetched block, the transactions paying the script are recorded, then those spending an
//!   output so recorded (outputs older than the window are not known: a swap never lives that
//!   long).
//! * The mempool is read with `getrawmempool`, each new transaction once (`getrawtransaction`),
//!   at most every [`MEMPOOL_REFRESH`] (and at once after a broadcast through this source).
//! * A script nobody asked about for a window's length is no longer watched.
//!
//! A transaction's status comes from `getrawtransaction` (verbose): with `-txindex` for any
//! transaction, without it for mempool transactions and, through the blocks scanned above, for
//! those of the watched scripts. Whether an output is spent comes from `gettxout` first (unspent:
//! done), then from the history of its script. Fee rates are `estimatesmartfee`'s.
//!
//! Calls go out as HTTP POSTs with basic authentication: the cookie file (read again when
//! bitcoind answers 401, as after its restart) or a user and password.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bitcoin::bip158::BlockFilter;
use bitcoin::block::Header;
use bitcoin::consensus::{deserialize, encode::serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::hex::FromHex;
use bitcoin::{Block, BlockHash, FeeRate, OutPoint, Script, ScriptBuf, Transaction, Txid};
use looper_protocol::fees::{FeeEstimates, ESTIMATE_TARGETS};
use looper_protocol::messages::MAX_TIMEOUT_DELTA;
use serde_json::{json, Value};

use super::{ChainError, ChainSource, HistoryTx, OutputSpend, TxStatus};

/// Blocks the source follows and scans back for a new script: more than a swap's longest
/// timeout, with room for the claims and refunds after it.
pub const SCAN_WINDOW: u32 = MAX_TIMEOUT_DELTA + 288;

/// How long a mempool snapshot serves queries before it is read again.
pub const MEMPOOL_REFRESH: Duration = Duration::from_secs(2);

/// Calls in one batch request.
const BATCH: usize = 250;

/// Full blocks kept for scans.
const BLOCK_CACHE: usize = 16;

/// Seconds an RPC call may take.
const TIMEOUT_SECS: u64 = 60;

/// Bitcoin Core's `RPC_INVALID_ADDRESS_OR_KEY`: no such block or transaction (or not in the
/// mempool).
const RPC_NOT_FOUND: i64 = -5;

/// How the node authenticates to bitcoind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAuth {
    /// The cookie file bitcoind writes (`DATADIR/.cookie`, `__cookie__:PASSWORD`).
    Cookie(PathBuf),
    /// `-rpcuser` and `-rpcpassword` (or an `-rpcauth` entry).
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

/// Errors of the JSON-RPC client.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The cookie file could not be read or holds no `user:password`.
    #[error("cannot read bitcoind's cookie file {}", path.display())]
    Cookie {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection refused, timeout).
    #[error("bitcoind's JSON-RPC at {url} cannot be reached")]
    Http {
        /// The URL.
        url: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// bitcoind refused the credentials.
    #[error("bitcoind refused the RPC credentials (HTTP 401)")]
    Unauthorized,
    /// bitcoind answered an error.
    #[error("bitcoind error {code}: {message}")]
    Rpc {
        /// Bitcoin Core's code (`-5`: not found, `-26`: rejected, ...).
        code: i64,
        /// Its message.
        message: String,
    },
    /// The answer is not what the call returns.
    #[error("unexpected answer from bitcoind to {method}: {reason}")]
    Decode {
        /// The call.
        method: String,
        /// What is wrong.
        reason: String,
    },
}

impl RpcError {
    fn code(&self) -> Option<i64> {
        match self {
            RpcError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn decode(method: &str, reason: impl Into<String>) -> RpcError {
    RpcError::Decode { method: method.to_string(), reason: reason.into() }
}

/// A minimal Bitcoin Core JSON-RPC client (HTTP POST with basic authentication, batches).
pub struct BitcoindRpc {
    http: reqwest::Client,
    url: String,
    auth: RpcAuth,
    /// The credentials in use (the cookie's, read again after a 401).
    credentials: std::sync::Mutex<Option<(String, String)>>,
    id: AtomicU64,
}

impl std::fmt::Debug for BitcoindRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoindRpc").field("url", &self.url).finish()
    }
}

impl BitcoindRpc {
    /// A client of bitcoind's JSON-RPC at `url` (`http://HOST:PORT`).
    ///
    /// # Errors
    /// [`RpcError::Http`] if the HTTP client cannot be built.
    pub fn new(url: &str, auth: RpcAuth) -> Result<BitcoindRpc, RpcError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(TIMEOUT_SECS))
            .build()
            .map_err(|source| RpcError::Http { url: url.to_string(), source })?;
        Ok(BitcoindRpc {
            http,
            url: url.trim_end_matches('/').to_string(),
            auth,
            credentials: std::sync::Mutex::new(None),
            id: AtomicU64::new(0),
        })
    }

    /// The user and password (for the cookie: read from its file now).
    ///
    /// # Errors
    /// [`RpcError::Cookie`].
    pub fn credentials(&self) -> Result<(String, String), RpcError> {
        match &self.auth {
            RpcAuth::UserPassword { user, password } => Ok((user.clone(), password.clone())),
            RpcAuth::Cookie(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| RpcError::Cookie { path: path.clone(), source })?;
                let (user, password) =
                    text.trim().split_once(':').ok_or_else(|| RpcError::Cookie {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not of the form user:password",
                        ),
                    })?;
                Ok((user.to_string(), password.to_string()))
            }
        }
    }

    fn current_credentials(&self, fresh: bool) -> Result<(String, String), RpcError> {
        let mut guard = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if fresh || guard.is_none() {
            *guard = Some(self.credentials()?);
        }
        guard.clone().ok_or(RpcError::Unauthorized)
    }

    /// Posts `body`; the parsed JSON answer (whatever the HTTP status but 401, as Bitcoin Core
    /// answers errors with 404 or 500 and a JSON body).
    async fn post(&self, body: &Value) -> Result<Value, RpcError> {
        for fresh in [false, true] {
            let (user, password) = self.current_credentials(fresh)?;
            let resp = self
                .http
                .post(&self.url)
                .basic_auth(user, Some(password))
                .json(body)
                .send()
                .await
                .map_err(|source| RpcError::Http { url: self.url.clone(), source })?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                // A cookie changes when bitcoind restarts: read it again, once.
                if matches!(self.auth, RpcAuth::Cookie(_)) && !fresh {
                    continue;
                }
                return Err(RpcError::Unauthorized);
            }
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|source| RpcError::Http { url: self.url.clone(), source })?;
            return serde_json::from_str(&text).map_err(|_| {
                decode("the request", format!("HTTP {status}, not JSON: {:.200}", text.trim()))
            });
        }
        Err(RpcError::Unauthorized)
    }

    fn request(&self, method: &str, params: Value) -> Value {
        let id = self.id.fetch_add(1, Ordering::Relaxed);
        json!({ "jsonrpc": "1.0", "id": id, "method": method, "params": params })
    }

    fn result_of(method: &str, answer: &Value) -> Result<Value, RpcError> {
        match answer.get("error") {
            Some(e) if !e.is_null() => Err(RpcError::Rpc {
                code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string()),
            }),
            _ => answer.get("result").cloned().ok_or_else(|| decode(method, "no result")),
        }
    }

    /// Calls `method` with `params`.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let answer = self.post(&self.request(method, params)).await?;
        Self::result_of(method, &answer)
    }

    /// Calls `method` once per parameter list, in batches; one result per call, in order.
    ///
    /// # Errors
    /// [`RpcError`] for the exchange; each call's own error in its place.
    pub async fn batch(
        &self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        let mut out = Vec::with_capacity(params.len());
        for chunk in params.chunks(BATCH) {
            let requests: Vec<Value> =
                chunk.iter().map(|p| self.request(method, p.clone())).collect();
            let ids: Vec<Value> = requests.iter().map(|r| r["id"].clone()).collect();
            let answer = self.post(&Value::Array(requests)).await?;
            let answers = answer.as_array().ok_or_else(|| decode(method, "not a batch answer"))?;
            let by_id: HashMap<String, &Value> =
                answers.iter().map(|a| (a["id"].to_string(), a)).collect();
            for id in ids {
                match by_id.get(&id.to_string()) {
                    Some(a) => out.push(Self::result_of(method, a)),
                    None => return Err(decode(method, "a batch answer is missing")),
                }
            }
        }
        Ok(out)
    }
}

fn parse<T: FromStr>(method: &str, v: &Value) -> Result<T, RpcError> {
    v.as_str().and_then(|s| T::from_str(s).ok()).ok_or_else(|| decode(method, format!("{v:.100}")))
}

fn parse_hex<T: bitcoin::consensus::Decodable>(method: &str, v: &Value) -> Result<T, RpcError> {
    v.as_str()
        .and_then(|s| Vec::<u8>::from_hex(s).ok())
        .and_then(|b| deserialize(&b).ok())
        .ok_or_else(|| decode(method, "not a hex-encoded object"))
}

/// A BTC/kvB rate as a fee rate, rounded up, at least 1 sat/vB; `fallback` when there is none.
fn rate_of(btc_kvb: Option<f64>, fallback: FeeRate) -> FeeRate {
    match btc_kvb.filter(|r| r.is_finite() && *r > 0.0) {
        Some(r) => {
            let sat_kvb = (r * 1e8).round().min(1e15);
            FeeRate::from_sat_per_kwu((sat_kvb / 4.0).ceil().max(250.0) as u64)
        }
        None => fallback,
    }
}

/// What a block of the scanned chain held for a watched script.
#[derive(Debug, Clone)]
struct Hit {
    height: u32,
    tx: Transaction,
}

/// A watched script: the blocks scanned for it and what they held.
#[derive(Debug)]
struct Watched {
    /// The next height to scan.
    next: u32,
    hits: Vec<Hit>,
    /// The tip height when it was last asked about.
    asked_at: u32,
}

impl Watched {
    /// Whether `tx` pays the script or spends one of its recorded outputs.
    fn touches(&self, script: &Script, tx: &Transaction, extra: &[Transaction]) -> bool {
        if tx.output.iter().any(|o| o.script_pubkey.as_script() == script) {
            return true;
        }
        let pays = |t: &Transaction, op: &OutPoint| {
            t.compute_txid() == op.txid
                && t.output
                    .get(op.vout as usize)
                    .is_some_and(|o| o.script_pubkey.as_script() == script)
        };
        tx.input.iter().any(|i| {
            self.hits.iter().any(|h| pays(&h.tx, &i.previous_output))
                || extra.iter().any(|t| pays(t, &i.previous_output))
        })
    }
}

/// The source's view of the chain (see the module documentation).
#[derive(Default)]
struct View {
    /// Height of `hashes[0]`.
    base: u32,
    /// The active chain's hashes from `base` to the tip.
    hashes: Vec<BlockHash>,
    /// Whether bitcoind serves block filters (`None`: not asked yet).
    filters_served: Option<bool>,
    filters: HashMap<BlockHash, BlockFilter>,
    blocks: VecDeque<(BlockHash, Arc<Block>)>,
    watched: HashMap<ScriptBuf, Watched>,
    mempool: HashMap<Txid, Transaction>,
    mempool_read: Option<Instant>,
}

impl View {
    fn tip(&self) -> Option<u32> {
        u32::try_from(self.hashes.len()).ok().and_then(|n| n.checked_sub(1)).map(|i| self.base + i)
    }

    fn hash_at(&self, height: u32) -> Option<BlockHash> {
        height.checked_sub(self.base).and_then(|i| self.hashes.get(i as usize)).copied()
    }
}

/// [`ChainSource`] over bitcoind's JSON-RPC (see the module documentation).
pub struct BitcoindChainSource {
    rpc: Arc<BitcoindRpc>,
    fallback_fee_rate: FeeRate,
    view: tokio::sync::Mutex<View>,
}

impl std::fmt::Debug for BitcoindChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoindChainSource").field("url", &self.rpc.url).finish()
    }
}

fn request_err(op: impl Into<String>) -> impl FnOnce(RpcError) -> ChainError {
    let op = op.into();
    move |e| ChainError::Request { op, source: Box::new(e) }
}

/// What a wallet sync gets from [`BitcoindChainSource::wallet_feed`].
#[derive(Debug, Default)]
pub struct WalletFeed {
    /// Blocks to apply in order, with their height and the block they connect to: full blocks
    /// where the filter matched the wallet's scripts (or without filters), headers alone (no
    /// transactions) elsewhere.
    pub blocks: Vec<(Block, u32, bdk_wallet::chain::BlockId)>,
    /// The mempool's transactions (the wallet keeps the relevant ones).
    pub mempool: Vec<Arc<Transaction>>,
}

impl BitcoindChainSource {
    /// A source over `rpc`; `fallback_fee_rate` when bitcoind has no estimate.
    pub fn new(rpc: BitcoindRpc, fallback_fee_rate: FeeRate) -> BitcoindChainSource {
        BitcoindChainSource {
            rpc: Arc::new(rpc),
            fallback_fee_rate,
            view: tokio::sync::Mutex::new(View::default()),
        }
    }

    /// The RPC client.
    pub fn rpc(&self) -> &Arc<BitcoindRpc> {
        &self.rpc
    }

    /// Shares it as a trait object.
    pub fn into_dyn(self) -> Arc<dyn ChainSource> {
        Arc::new(self)
    }

    /// Checks that bitcoind answers and is on `network`.
    ///
    /// # Errors
    /// [`ChainError::Request`] when it cannot be reached or refuses the credentials,
    /// [`ChainError::InvalidResponse`] for another network.
    pub async fn check(&self, network: bitcoin::Network) -> Result<(), ChainError> {
        let op = "reach bitcoind";
        let info = self.rpc.call("getblockchaininfo", json!([])).await.map_err(request_err(op))?;
        let chain = info.get("chain").and_then(Value::as_str).unwrap_or_default();
        let want = match network {
            bitcoin::Network::Bitcoin => "main",
            bitcoin::Network::Testnet => "test",
            bitcoin::Network::Testnet4 => "testnet4",
            bitcoin::Network::Signet => "signet",
            bitcoin::Network::Regtest => "regtest",
        };
        if chain != want {
            return Err(ChainError::InvalidResponse {
                op: op.into(),
                reason: format!("bitcoind is on {chain:?}, the node on {want:?}"),
            });
        }
        Ok(())
    }

    async fn header(&self, hash: &BlockHash) -> Result<(u32, BlockHash), RpcError> {
        let m = "getblockheader";
        let v = self.rpc.call(m, json!([hash.to_string(), true])).await?;
        let height = v
            .get("height")
            .and_then(Value::as_u64)
            .and_then(|h| u32::try_from(h).ok())
            .ok_or_else(|| decode(m, "no height"))?;
        let prev = match v.get("previousblockhash") {
            Some(p) => parse(m, p)?,
            None => BlockHash::all_zeros(),
        };
        Ok((height, prev))
    }

    /// Brings the view's chain to bitcoind's tip (reorgs dropped from what was scanned).
    async fn refresh_chain(&self, view: &mut View) -> Result<u32, RpcError> {
        let best: BlockHash =
            parse("getbestblockhash", &self.rpc.call("getbestblockhash", json!([])).await?)?;
        if view.hashes.last() == Some(&best) {
            return view.tip().ok_or_else(|| decode("getbestblockhash", "empty view"));
        }
        let (best_height, _) = self.header(&best).await?;
        let known_tip = view.tip();
        let rebuild = match known_tip {
            None => true,
            Some(tip) => best_height.saturating_sub(tip) > SCAN_WINDOW || best_height < view.base,
        };
        if !rebuild {
            // Walk back from the new tip to the known chain.
            let mut new = Vec::new();
            let (mut hash, mut height) = (best, best_height);
            let fork = loop {
                if view.hash_at(height) == Some(hash) {
                    break Some(height);
                }
                if height <= view.base {
                    break None;
                }
                new.push(hash);
                let (_, prev) = self.header(&hash).await?;
                hash = prev;
                height -= 1;
            };
            if let Some(fork) = fork {
                view.hashes.truncate((fork - view.base + 1) as usize);
                view.hashes.extend(new.into_iter().rev());
                for w in view.watched.values_mut() {
                    w.hits.retain(|h| h.height <= fork);
                    w.next = w.next.min(fork + 1);
                }
                let excess = view.hashes.len().saturating_sub(SCAN_WINDOW as usize + 1);
                if excess > 0 {
                    view.hashes.drain(..excess);
                    view.base += excess as u32;
                    let kept: HashSet<BlockHash> = view.hashes.iter().copied().collect();
                    view.filters.retain(|h, _| kept.contains(h));
                }
                return Ok(best_height);
            }
        }
        // First look, or a jump past the window: read the window afresh.
        let base = best_height.saturating_sub(SCAN_WINDOW);
        let heights: Vec<Value> = (base..=best_height).map(|h| json!([h])).collect();
        let mut hashes = Vec::with_capacity(heights.len());
        for r in self.rpc.batch("getblockhash", heights).await? {
            hashes.push(parse("getblockhash", &r?)?);
        }
        view.base = base;
        view.hashes = hashes;
        view.filters.clear();
        for w in view.watched.values_mut() {
            w.hits.clear();
            w.next = base;
        }
        Ok(best_height)
    }

    /// Fetches the filters of `hashes` not in the view yet (when bitcoind serves them).
    async fn load_filters(&self, view: &mut View, hashes: &[BlockHash]) -> Result<(), RpcError> {
        if view.filters_served == Some(false) {
            return Ok(());
        }
        let missing: Vec<BlockHash> =
            hashes.iter().filter(|h| !view.filters.contains_key(*h)).copied().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let params = missing.iter().map(|h| json!([h.to_string(), "basic"])).collect();
        let answers = match self.rpc.batch("getblockfilter", params).await {
            Ok(a) => a,
            Err(e) if e.code().is_some() => {
                view.filters_served = Some(false);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for (hash, answer) in missing.into_iter().zip(answers) {
            match answer {
                Ok(v) => {
                    let bytes = v
                        .get("filter")
                        .and_then(Value::as_str)
                        .and_then(|s| Vec::<u8>::from_hex(s).ok())
                        .ok_or_else(|| decode("getblockfilter", "no filter"))?;
                    view.filters.insert(hash, BlockFilter::new(&bytes));
                    view.filters_served = Some(true);
                }
                // No filter index (or not built yet): fetch whole blocks.
                Err(RpcError::Rpc { .. }) => {
                    tracing::info!("bitcoind serves no block filters (-blockfilterindex=1): scanning whole blocks");
                    view.filters_served = Some(false);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn block(&self, view: &mut View, hash: &BlockHash) -> Result<Arc<Block>, RpcError> {
        if let Some((_, b)) = view.blocks.iter().find(|(h, _)| h == hash) {
            return Ok(Arc::clone(b));
        }
        let v = self.rpc.call("getblock", json!([hash.to_string(), 0])).await?;
        let block: Arc<Block> = Arc::new(parse_hex("getblock", &v)?);
        view.blocks.push_back((*hash, Arc::clone(&block)));
        if view.blocks.len() > BLOCK_CACHE {
            view.blocks.pop_front();
        }
        Ok(block)
    }

    /// Scans the watched `scripts` up to the view's tip.
    async fn scan(&self, view: &mut View, scripts: &[ScriptBuf]) -> Result<(), RpcError> {
        let Some(tip) = view.tip() else { return Ok(()) };
        let Some(from) = scripts.iter().filter_map(|s| view.watched.get(s)).map(|w| w.next).min()
        else {
            return Ok(());
        };
        let from = from.max(view.base);
        if from > tip {
            return Ok(());
        }
        let hashes: Vec<BlockHash> = (from..=tip).filter_map(|h| view.hash_at(h)).collect();
        self.load_filters(view, &hashes).await?;
        for height in from..=tip {
            let Some(hash) = view.hash_at(height) else { continue };
            let due: Vec<&ScriptBuf> = scripts
                .iter()
                .filter(|s| view.watched.get(*s).is_some_and(|w| w.next <= height))
                .collect();
            if due.is_empty() {
                continue;
            }
            let matched = match view.filters.get(&hash) {
                Some(filter) => {
                    filter.match_any(&hash, due.iter().map(|s| s.as_bytes())).unwrap_or(true)
                }
                None => true,
            };
            let due: Vec<ScriptBuf> = due.into_iter().cloned().collect();
            if matched {
                let block = self.block(view, &hash).await?;
                for script in &due {
                    if let Some(w) = view.watched.get_mut(script) {
                        let found: Vec<Transaction> = block
                            .txdata
                            .iter()
                            .filter(|tx| w.touches(script, tx, &[]))
                            .cloned()
                            .collect();
                        // In block order, so that a spend follows the output it spends.
                        for tx in found {
                            w.hits.push(Hit { height, tx });
                        }
                    }
                }
            }
            for script in &due {
                if let Some(w) = view.watched.get_mut(script) {
                    w.next = height + 1;
                }
            }
        }
        Ok(())
    }

    /// Reads the mempool again if the snapshot is older than [`MEMPOOL_REFRESH`] (or `force`).
    async fn refresh_mempool(&self, view: &mut View, force: bool) -> Result<(), RpcError> {
        if !force && view.mempool_read.is_some_and(|at| at.elapsed() < MEMPOOL_REFRESH) {
            return Ok(());
        }
        let m = "getrawmempool";
        let ids = self.rpc.call(m, json!([false])).await?;
        let ids: HashSet<Txid> = ids
            .as_array()
            .ok_or_else(|| decode(m, "not a list"))?
            .iter()
            .map(|v| parse(m, v))
            .collect::<Result<_, _>>()?;
        view.mempool.retain(|t, _| ids.contains(t));
        let new: Vec<Txid> = ids.into_iter().filter(|t| !view.mempool.contains_key(t)).collect();
        let params = new.iter().map(|t| json!([t.to_string(), false])).collect();
        for (txid, answer) in
            new.into_iter().zip(self.rpc.batch("getrawtransaction", params).await?)
        {
            match answer {
                Ok(v) => {
                    view.mempool.insert(txid, parse_hex("getrawtransaction", &v)?);
                }
                // Left the mempool meanwhile.
                Err(e) if e.code() == Some(RPC_NOT_FOUND) => {}
                Err(e) => return Err(e),
            }
        }
        view.mempool_read = Some(Instant::now());
        Ok(())
    }

    /// The history of `script`: the mempool's transactions touching it, then the confirmed ones,
    /// newest first.
    async fn history(&self, script: &Script) -> Result<Vec<HistoryTx>, RpcError> {
        let mut view = self.view.lock().await;
        let known_tip = view.hashes.last().copied();
        let tip = self.refresh_chain(&mut view).await?;
        let new_block = view.hashes.last().copied() != known_tip;
        let base = view.base;
        let entry = view.watched.entry(script.to_owned()).or_insert(Watched {
            next: base,
            hits: Vec::new(),
            asked_at: tip,
        });
        entry.asked_at = tip;
        self.scan(&mut view, &[script.to_owned()]).await?;
        // A new block changed the mempool: read it again.
        self.refresh_mempool(&mut view, new_block).await?;
        view.watched.retain(|_, w| w.asked_at.saturating_add(SCAN_WINDOW) >= tip);
        let Some(w) = view.watched.get(script) else { return Ok(Vec::new()) };
        // Mempool transactions touching the script, a parent before its child.
        let mut pool: Vec<Transaction> = Vec::new();
        let confirmed: HashSet<Txid> = w.hits.iter().map(|h| h.tx.compute_txid()).collect();
        let mut rest: Vec<&Transaction> =
            view.mempool.values().filter(|t| !confirmed.contains(&t.compute_txid())).collect();
        loop {
            let (touching, others): (Vec<&Transaction>, Vec<&Transaction>) =
                rest.into_iter().partition(|tx| w.touches(script, tx, &pool));
            if touching.is_empty() {
                break;
            }
            pool.extend(touching.into_iter().cloned());
            rest = others;
        }
        let mut out: Vec<HistoryTx> = pool
            .into_iter()
            .rev()
            .map(|tx| HistoryTx { tx, status: TxStatus::Unconfirmed })
            .collect();
        out.extend(w.hits.iter().rev().map(|h| HistoryTx {
            tx: h.tx.clone(),
            status: TxStatus::Confirmed { height: h.height },
        }));
        Ok(out)
    }

    /// A confirmed transaction of a watched script (for a bitcoind without `-txindex`, which
    /// knows only its mempool's).
    async fn known_tx(&self, txid: &Txid) -> Option<(Transaction, TxStatus)> {
        let view = self.view.lock().await;
        view.watched.values().flat_map(|w| w.hits.iter()).find_map(|h| {
            (h.tx.compute_txid() == *txid)
                .then(|| (h.tx.clone(), TxStatus::Confirmed { height: h.height }))
        })
    }

    /// The blocks after the wallet's checkpoint `local` up to bitcoind's tip, fetched whole
    /// where a block's filter matches one of `scripts` (or without filters), as headers
    /// elsewhere; and the mempool's transactions.
    ///
    /// # Errors
    /// [`ChainError::Request`].
    pub async fn wallet_feed(
        &self,
        local: &bdk_wallet::chain::CheckPoint,
        scripts: &[ScriptBuf],
    ) -> Result<WalletFeed, ChainError> {
        let op = "read blocks for the wallet";
        let tip: u32 = self
            .rpc
            .call("getblockcount", json!([]))
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .and_then(|h| u32::try_from(h).ok())
            .ok_or_else(|| ChainError::InvalidResponse {
                op: op.into(),
                reason: "no block count".into(),
            })?;
        // The last checkpoint still in bitcoind's active chain.
        let mut agreement = None;
        for cp in local.iter() {
            if cp.height() > tip {
                continue;
            }
            let v = self
                .rpc
                .call("getblockhash", json!([cp.height()]))
                .await
                .map_err(request_err(op))?;
            let hash: BlockHash = parse("getblockhash", &v).map_err(request_err(op))?;
            if hash == cp.hash() {
                agreement = Some(cp.block_id());
                break;
            }
        }
        let Some(mut connected_to) = agreement else {
            return Err(ChainError::InvalidResponse {
                op: op.into(),
                reason: "no block of the wallet is in bitcoind's chain (another network?)".into(),
            });
        };
        let mut feed = WalletFeed::default();
        let from = connected_to.height + 1;
        if from <= tip {
            let params = (from..=tip).map(|h| json!([h])).collect();
            let mut hashes = Vec::new();
            for r in self.rpc.batch("getblockhash", params).await.map_err(request_err(op))? {
                hashes.push(
                    parse::<BlockHash>("getblockhash", &r.map_err(request_err(op))?)
                        .map_err(request_err(op))?,
                );
            }
            let mut view = self.view.lock().await;
            self.load_filters(&mut view, &hashes).await.map_err(request_err(op))?;
            let matched: Vec<bool> = hashes
                .iter()
                .map(|hash| match view.filters.get(hash) {
                    Some(filter) => {
                        filter.match_any(hash, scripts.iter().map(|s| s.as_bytes())).unwrap_or(true)
                    }
                    None => true,
                })
                .collect();
            // The headers of the blocks the wallet has nothing in, in batches.
            let missed: Vec<Value> = hashes
                .iter()
                .zip(&matched)
                .filter(|(_, m)| !**m)
                .map(|(h, _)| json!([h.to_string(), false]))
                .collect();
            let mut headers = self
                .rpc
                .batch("getblockheader", missed)
                .await
                .map_err(request_err(op))?
                .into_iter();
            for ((height, hash), matched) in (from..=tip).zip(hashes).zip(matched) {
                let block = if matched {
                    (*self.block(&mut view, &hash).await.map_err(request_err(op))?).clone()
                } else {
                    let v = headers
                        .next()
                        .ok_or_else(|| decode("getblockheader", "an answer is missing"))
                        .and_then(|r| r)
                        .map_err(request_err(op))?;
                    let header: Header =
                        parse_hex("getblockheader", &v).map_err(request_err(op))?;
                    Block { header, txdata: Vec::new() }
                };
                feed.blocks.push((block, height, connected_to));
                connected_to = bdk_wallet::chain::BlockId { height, hash };
            }
            self.refresh_mempool(&mut view, true).await.map_err(request_err(op))?;
            feed.mempool = view.mempool.values().cloned().map(Arc::new).collect();
        } else {
            let mut view = self.view.lock().await;
            self.refresh_mempool(&mut view, true).await.map_err(request_err(op))?;
            feed.mempool = view.mempool.values().cloned().map(Arc::new).collect();
        }
        Ok(feed)
    }
}

#[async_trait]
impl ChainSource for BitcoindChainSource {
    async fn tip_height(&self) -> Result<u32, ChainError> {
        let op = "get the tip height";
        let v = self.rpc.call("getblockcount", json!([])).await.map_err(request_err(op))?;
        v.as_u64().and_then(|h| u32::try_from(h).ok()).ok_or_else(|| ChainError::InvalidResponse {
            op: op.into(),
            reason: format!("block count {v}"),
        })
    }

    async fn tx_status(&self, txid: &Txid) -> Result<Option<TxStatus>, ChainError> {
        let op = format!("get the status of transaction {txid}");
        match self.rpc.call("getrawtransaction", json!([txid.to_string(), true])).await {
            Ok(v) => {
                let confirmations = v.get("confirmations").and_then(Value::as_i64).unwrap_or(0);
                match v.get("blockhash") {
                    Some(hash) if confirmations > 0 => {
                        let hash: BlockHash =
                            parse("getrawtransaction", hash).map_err(request_err(op.clone()))?;
                        let (height, _) = self.header(&hash).await.map_err(request_err(op))?;
                        Ok(Some(TxStatus::Confirmed { height }))
                    }
                    // In a block that is no longer active: bitcoind knows it from -txindex.
                    Some(_) => Ok(None),
                    None => Ok(Some(TxStatus::Unconfirmed)),
                }
            }
            // Without -txindex bitcoind knows the mempool only: ask the scanned blocks.
            Err(e) if e.code() == Some(RPC_NOT_FOUND) => {
                Ok(self.known_tx(txid).await.map(|(_, status)| status))
            }
            Err(e) => Err(request_err(op)(e)),
        }
    }

    async fn get_tx(&self, txid: &Txid) -> Result<Option<Transaction>, ChainError> {
        let op = format!("get transaction {txid}");
        match self.rpc.call("getrawtransaction", json!([txid.to_string(), false])).await {
            Ok(v) => Ok(Some(parse_hex("getrawtransaction", &v).map_err(request_err(op))?)),
            Err(e) if e.code() == Some(RPC_NOT_FOUND) => {
                Ok(self.known_tx(txid).await.map(|(tx, _)| tx))
            }
            Err(e) => Err(request_err(op)(e)),
        }
    }

    async fn output_spend(&self, outpoint: &OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        let op = format!("get the spend of output {outpoint}");
        let unspent = self
            .rpc
            .call("gettxout", json!([outpoint.txid.to_string(), outpoint.vout, true]))
            .await
            .map_err(request_err(op.clone()))?;
        if !unspent.is_null() {
            return Ok(None);
        }
        let Some(funding) = self.get_tx(&outpoint.txid).await? else { return Ok(None) };
        let Some(out) = funding.output.get(outpoint.vout as usize) else { return Ok(None) };
        let history = self.history(&out.script_pubkey).await.map_err(request_err(op))?;
        let mut found: Option<OutputSpend> = None;
        for h in history {
            let Some(vin) = h.tx.input.iter().position(|i| i.previous_output == *outpoint) else {
                continue;
            };
            let spend = OutputSpend {
                txid: h.tx.compute_txid(),
                vin: u32::try_from(vin).unwrap_or(u32::MAX),
                status: h.status,
            };
            if spend.status.height().is_some() {
                return Ok(Some(spend));
            }
            found.get_or_insert(spend);
        }
        Ok(found)
    }

    async fn script_history(&self, script: &Script) -> Result<Vec<HistoryTx>, ChainError> {
        self.history(script).await.map_err(request_err("get the history of a script"))
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let txid = tx.compute_txid();
        match self.rpc.call("sendrawtransaction", json!([serialize_hex(tx)])).await {
            Ok(_) => {
                self.view.lock().await.mempool.insert(txid, tx.clone());
                Ok(txid)
            }
            Err(e) => {
                // Idempotence: a transaction bitcoind already has is broadcast.
                if let Ok(Some(_)) = self.tx_status(&txid).await {
                    return Ok(txid);
                }
                match e {
                    RpcError::Rpc { message, .. } => {
                        Err(ChainError::Rejected { txid, reason: message })
                    }
                    other => Err(request_err(format!("broadcast transaction {txid}"))(other)),
                }
            }
        }
    }

    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        let target = target_blocks.clamp(1, 1008);
        let v = self
            .rpc
            .call("estimatesmartfee", json!([target]))
            .await
            .map_err(request_err("get a fee estimate"))?;
        Ok(rate_of(v.get("feerate").and_then(Value::as_f64), self.fallback_fee_rate))
    }

    async fn fee_estimates(&self) -> Result<FeeEstimates, ChainError> {
        let params = ESTIMATE_TARGETS.iter().map(|t| json!([t])).collect();
        let answers = self
            .rpc
            .batch("estimatesmartfee", params)
            .await
            .map_err(request_err("get fee estimates"))?;
        let by_target: HashMap<u16, Option<f64>> = ESTIMATE_TARGETS
            .into_iter()
            .zip(answers)
            .map(|(t, a)| (t, a.ok().and_then(|v| v.get("feerate").and_then(Value::as_f64))))
            .collect();
        Ok(FeeEstimates::from_fn(|target| {
            rate_of(by_target.get(&target).copied().flatten(), self.fallback_fee_rate)
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn core_rates_convert_to_fee_rates() {
        let fallback = FeeRate::from_sat_per_vb_u32(3);
        assert_eq!(rate_of(None, fallback), fallback);
        assert_eq!(rate_of(Some(-1.0), fallback), fallback);
        assert_eq!(rate_of(Some(0.00001), fallback), FeeRate::from_sat_per_vb_u32(1));
        assert_eq!(rate_of(Some(0.0002), fallback), FeeRate::from_sat_per_vb_u32(20));
    }

    #[tokio::test]
    async fn unreachable_bitcoind_and_a_missing_cookie_are_typed_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let auth = RpcAuth::UserPassword { user: "u".into(), password: "p".into() };
        let src = BitcoindChainSource::new(
            BitcoindRpc::new(&format!("http://127.0.0.1:{port}"), auth).unwrap(),
            FeeRate::from_sat_per_vb_u32(2),
        );
        let e = src.tip_height().await.unwrap_err();
        assert_eq!(e.to_string(), "chain source failed to get the tip height");
        let cookie = RpcAuth::Cookie("/nonexistent/.cookie".into());
        let rpc = BitcoindRpc::new("http://127.0.0.1:1", cookie).unwrap();
        let e = rpc.credentials().unwrap_err();
        assert_eq!(e.to_string(), "cannot read bitcoind's cookie file /nonexistent/.cookie");
    }
}
