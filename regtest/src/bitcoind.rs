//! Bitcoin Core's JSON-RPC interface over the same chain and mempool as the Esplora API: HTTP
//! POST of JSON-RPC requests (or arrays of them) with HTTP basic authentication, by the cookie
//! (`__cookie__` and the password in the chain's `.cookie` file, as bitcoind writes it) or by a
//! configured user and password.
//!
//! The calls of ldk-node 0.7's bitcoind chain source (lightning-block-sync's `RpcClient` and
//! ldk-node's own) are served with Bitcoin Core's shapes, error codes and HTTP statuses (200, 404
//! for an unknown method, 500 for other errors, 401 without valid credentials):
//!
//! | method | answer |
//! |---|---|
//! | `getblockchaininfo`, `getblockcount`, `getbestblockhash`, `getblockhash` | the active chain |
//! | `getblockheader` (verbose or hex), `getblock` (verbosity 0 or 1) | any block the chain knows (a stale one has `confirmations: -1`) |
//! | `getrawtransaction` (hex or verbose; the chain indexes every transaction, as `-txindex`) | the active chain and the mempool; `-5` otherwise |
//! | `gettxout` | an unspent output (the mempool's spends count unless `include_mempool` is false) |
//! | `sendrawtransaction` | mempool acceptance as `POST /tx`; already in the mempool is success |
//! | `estimatesmartfee`, `getmempoolinfo` | the `/fee-estimates` rates and the mempool minimum, in BTC/kvB |
//! | `getrawmempool` (plain or verbose), `getmempoolentry` | the mempool, with entry time and height |
//! | `getblockfilter` | BIP-0158 basic filters and their header chain (as `-blockfilterindex`) |
//! | `getnetworkinfo`, `uptime` | a Bitcoin Core 28 node |

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use bitcoin::bip158::{BlockFilter, FilterHeader};
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{Address, BlockHash, Network, OutPoint, Transaction, Txid, Work};
use serde_json::{json, Value};

use crate::chain::{BlockRec, ChainState};
use crate::error::Error;
use crate::esplora::served_fee_estimates;
use crate::rpc::{RpcError, RpcResult};
use crate::Shared;

/// Bitcoin Core's `RPC_MISC_ERROR`.
const RPC_MISC_ERROR: i64 = -1;
/// Bitcoin Core's `RPC_TYPE_ERROR`.
const RPC_TYPE_ERROR: i64 = -3;
/// Bitcoin Core's `RPC_INVALID_ADDRESS_OR_KEY` (unknown block or transaction).
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
/// Bitcoin Core's `RPC_INVALID_PARAMETER`.
const RPC_INVALID_PARAMETER: i64 = -8;
/// Bitcoin Core's `RPC_DESERIALIZATION_ERROR`.
const RPC_DESERIALIZATION_ERROR: i64 = -22;
/// Bitcoin Core's `RPC_VERIFY_ERROR` (missing inputs).
const RPC_VERIFY_ERROR: i64 = -25;
/// Bitcoin Core's `RPC_VERIFY_REJECTED` (policy or consensus).
const RPC_VERIFY_REJECTED: i64 = -26;
/// Bitcoin Core's `RPC_VERIFY_ALREADY_IN_UTXO_SET`.
const RPC_VERIFY_ALREADY_IN_UTXO_SET: i64 = -27;
/// JSON-RPC's parse error.
const RPC_PARSE_ERROR: i64 = -32700;
/// JSON-RPC's invalid request.
const RPC_INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's method not found.
const RPC_METHOD_NOT_FOUND: i64 = -32601;

/// The user name of cookie authentication.
pub const COOKIE_USER: &str = "__cookie__";

/// Bitcoin Core's default minimum relay and incremental fee rate (sat/kvB).
const MIN_RELAY_FEE_SAT_KVB: u64 = 1000;

/// The server's state: the chain, the accepted credentials (`user:password`, base64 as in the
/// `Authorization` header) and the BIP-0158 filters computed so far.
pub(crate) struct RpcState {
    shared: Arc<Shared>,
    credentials: Vec<String>,
    filters: Mutex<HashMap<BlockHash, (BlockFilter, FilterHeader)>>,
    started: std::time::Instant,
}

impl RpcState {
    /// The state for `shared`, accepting each `(user, password)` of `credentials`.
    pub(crate) fn new(shared: Arc<Shared>, credentials: &[(String, String)]) -> Self {
        let engine = base64::engine::general_purpose::STANDARD;
        RpcState {
            shared,
            credentials: credentials
                .iter()
                .map(|(user, password)| engine.encode(format!("{user}:{password}")))
                .collect(),
            filters: Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(given) = value.strip_prefix("Basic ") else { return false };
        self.credentials.iter().any(|c| c == given.trim())
    }
}

/// The router: JSON-RPC at `/` (and `/wallet/...`, which Core also answers).
pub(crate) fn router(state: Arc<RpcState>) -> Router {
    Router::new().route("/", post(rpc)).route("/wallet/{name}", post(rpc)).with_state(state)
}

async fn rpc(State(st): State<Arc<RpcState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !st.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"jsonrpc\"")],
            "",
        )
            .into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            let e = RpcError::new(RPC_PARSE_ERROR, "Parse error");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, error_body(Value::Null, &e));
        }
    };
    // The chain's work is quick but holds a std mutex: keep it off the async workers.
    let answer = tokio::task::spawn_blocking(move || match request {
        Value::Array(batch) => {
            let answers: Vec<Value> = batch.iter().map(|r| handle(&st, r).1).collect();
            (StatusCode::OK, Value::Array(answers))
        }
        single => handle(&st, &single),
    })
    .await;
    match answer {
        Ok((status, body)) => reply(status, body),
        Err(e) => {
            let e = RpcError::new(RPC_MISC_ERROR, e.to_string());
            reply(StatusCode::INTERNAL_SERVER_ERROR, error_body(Value::Null, &e))
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn error_body(id: Value, e: &RpcError) -> Value {
    json!({ "result": null, "error": e.to_json(), "id": id })
}

/// One request: the HTTP status Bitcoin Core gives it (for a lone request) and the answer.
fn handle(st: &RpcState, request: &Value) -> (StatusCode, Value) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        let e = RpcError::new(RPC_INVALID_REQUEST, "Method must be a string");
        return (StatusCode::BAD_REQUEST, error_body(id, &e));
    };
    let empty = Vec::new();
    let params = match request.get("params") {
        None | Some(Value::Null) => &empty,
        Some(Value::Array(p)) => p,
        Some(_) => {
            let e = RpcError::new(RPC_INVALID_REQUEST, "Params must be an array");
            return (StatusCode::BAD_REQUEST, error_body(id, &e));
        }
    };
    match call(st, method, params) {
        Ok(result) => (StatusCode::OK, json!({ "result": result, "error": null, "id": id })),
        Err(e) if e.code == RPC_METHOD_NOT_FOUND => (StatusCode::NOT_FOUND, error_body(id, &e)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, error_body(id, &e)),
    }
}

fn with<T>(shared: &Shared, f: impl FnOnce(&mut ChainState) -> RpcResult<T>) -> RpcResult<T> {
    let mut guard =
        shared.state.lock().map_err(|_| RpcError::new(RPC_MISC_ERROR, "chain state poisoned"))?;
    match guard.as_mut() {
        Some(s) => f(s),
        None => Err(RpcError::new(RPC_MISC_ERROR, "the chain is shut down")),
    }
}

fn call(st: &RpcState, method: &str, p: &[Value]) -> RpcResult<Value> {
    let sh = st.shared.as_ref();
    match method {
        "getblockchaininfo" => with(sh, |s| {
            let tip = s.tip_hash();
            Ok(json!({
                "chain": "regtest",
                "blocks": s.tip_height(),
                "headers": s.tip_height(),
                "bestblockhash": tip.to_string(),
                "difficulty": block(s, &tip)?.block.header.difficulty_float(),
                "time": block(s, &tip)?.block.header.time,
                "mediantime": s.mtp(&tip),
                "verificationprogress": 1.0,
                "initialblockdownload": false,
                "chainwork": work_hex(chainwork(s, &tip)),
                "size_on_disk": 0,
                "pruned": false,
                "warnings": [],
            }))
        }),
        "getblockcount" => with(sh, |s| Ok(json!(s.tip_height()))),
        "getbestblockhash" => with(sh, |s| Ok(json!(s.tip_hash().to_string()))),
        "getblockhash" => {
            let height = param_u64(p, 0, "height")?;
            with(sh, |s| {
                s.active
                    .get(usize::try_from(height).unwrap_or(usize::MAX))
                    .map(|h| json!(h.to_string()))
                    .ok_or_else(|| {
                        RpcError::new(RPC_INVALID_PARAMETER, "Block height out of range")
                    })
            })
        }
        "getblockheader" => {
            let hash = param_block_hash(p, 0)?;
            let verbose = opt_bool(p, 1, true)?;
            with(sh, |s| {
                let rec = block(s, &hash)?;
                if verbose {
                    Ok(header_json(s, rec))
                } else {
                    Ok(json!(serialize(&rec.block.header).to_lower_hex_string()))
                }
            })
        }
        "getblock" => {
            let hash = param_block_hash(p, 0)?;
            let verbosity = match p.get(1) {
                None | Some(Value::Null) => 1,
                Some(Value::Bool(b)) => u64::from(*b),
                Some(v) => v.as_u64().ok_or_else(|| type_error("verbosity"))?,
            };
            with(sh, |s| {
                let rec = block(s, &hash)?;
                match verbosity {
                    0 => Ok(json!(serialize(&rec.block).to_lower_hex_string())),
                    1 => {
                        let mut v = header_json(s, rec);
                        v["size"] = json!(rec.size);
                        v["weight"] = json!(rec.weight);
                        v["tx"] = json!(rec
                            .block
                            .txdata
                            .iter()
                            .map(|t| t.compute_txid().to_string())
                            .collect::<Vec<_>>());
                        Ok(v)
                    }
                    _ => Err(RpcError::new(
                        RPC_INVALID_PARAMETER,
                        "verbosity 2 and above are not served",
                    )),
                }
            })
        }
        "getrawtransaction" => {
            let txid = param_txid(p, 0)?;
            let verbose = match p.get(1) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => v.as_u64().ok_or_else(|| type_error("verbose"))? > 0,
            };
            with(sh, |s| {
                let rec = s
                    .txs
                    .get(&txid)
                    .filter(|r| s.mempool.contains_key(&txid) || r.confirmed.is_some())
                    .ok_or_else(|| {
                        RpcError::new(
                            RPC_INVALID_ADDRESS_OR_KEY,
                            "No such mempool or blockchain transaction. Use gettransaction for \
                             wallet transactions.",
                        )
                    })?;
                let hex = serialize(&rec.tx).to_lower_hex_string();
                if !verbose {
                    return Ok(json!(hex));
                }
                let mut v = json!({
                    "txid": txid.to_string(),
                    "hash": rec.tx.compute_wtxid().to_string(),
                    "version": rec.tx.version.0,
                    "size": rec.tx.total_size(),
                    "vsize": rec.tx.vsize(),
                    "weight": rec.tx.weight().to_wu(),
                    "locktime": rec.tx.lock_time.to_consensus_u32(),
                    "hex": hex,
                });
                if let Some((hash, height, _)) = rec.confirmed {
                    let time = block(s, &hash)?.block.header.time;
                    v["blockhash"] = json!(hash.to_string());
                    v["confirmations"] = json!(s.tip_height() + 1 - height);
                    v["time"] = json!(time);
                    v["blocktime"] = json!(time);
                }
                Ok(v)
            })
        }
        "gettxout" => {
            let txid = param_txid(p, 0)?;
            let vout = u32::try_from(param_u64(p, 1, "n")?).map_err(|_| type_error("n"))?;
            let include_mempool = opt_bool(p, 2, true)?;
            with(sh, |s| Ok(txout_json(s, OutPoint::new(txid, vout), include_mempool)))
        }
        "sendrawtransaction" => {
            let hex = param_str(p, 0, "hexstring")?;
            let tx: Transaction = Vec::<u8>::from_hex(hex.trim())
                .ok()
                .and_then(|raw| deserialize(&raw).ok())
                .ok_or_else(|| {
                    RpcError::new(
                        RPC_DESERIALIZATION_ERROR,
                        "TX decode failed. Make sure the tx has at least one input.",
                    )
                })?;
            let txid = tx.compute_txid();
            with(sh, |s| match s.accept(tx) {
                Ok(txid) => Ok(json!(txid.to_string())),
                // Bitcoin Core answers the txid for a transaction it already has in its mempool.
                Err(Error::TxRejected { reason, .. }) if reason == "txn-already-in-mempool" => {
                    Ok(json!(txid.to_string()))
                }
                Err(Error::TxRejected { reason, .. }) if reason == "txn-already-known" => {
                    Err(RpcError::new(
                        RPC_VERIFY_ALREADY_IN_UTXO_SET,
                        "Transaction outputs already in utxo set",
                    ))
                }
                Err(Error::TxRejected { reason, .. })
                    if reason.starts_with("bad-txns-inputs-missingorspent") =>
                {
                    Err(RpcError::new(RPC_VERIFY_ERROR, reason))
                }
                Err(Error::TxRejected { reason, .. }) => {
                    Err(RpcError::new(RPC_VERIFY_REJECTED, reason))
                }
                Err(other) => Err(RpcError::new(RPC_MISC_ERROR, other.to_string())),
            })
        }
        "estimatesmartfee" => {
            let target = param_u64(p, 0, "conf_target")?;
            if !(1..=1008).contains(&target) {
                return Err(RpcError::new(
                    RPC_INVALID_PARAMETER,
                    format!("Invalid conf_target, must be between 1 and 1008 (got {target})"),
                ));
            }
            let base = sh.fee_rate_sat_vb;
            with(sh, |s| {
                let estimates = served_fee_estimates(base, s);
                let target = u16::try_from(target).unwrap_or(1008);
                let found = estimates.range(..=target).next_back();
                Ok(match found {
                    Some((blocks, sat_vb)) => {
                        json!({ "feerate": btc_kvb_of_sat_vb(*sat_vb), "blocks": blocks })
                    }
                    None => {
                        json!({ "errors": ["Insufficient data or no feerate found"], "blocks": 0 })
                    }
                })
            })
        }
        "getmempoolinfo" => with(sh, |s| {
            let bytes: u64 = s.mempool.values().map(|e| e.vsize).sum();
            let fees: u64 = s.mempool.values().map(|e| e.fee).sum();
            let min = s.min_fee_rate_sat_kvb.max(MIN_RELAY_FEE_SAT_KVB);
            Ok(json!({
                "loaded": true,
                "size": s.mempool.len(),
                "bytes": bytes,
                "usage": bytes,
                "total_fee": fees as f64 / 1e8,
                "maxmempool": 300_000_000,
                "mempoolminfee": min as f64 / 1e8,
                "minrelaytxfee": MIN_RELAY_FEE_SAT_KVB as f64 / 1e8,
                "incrementalrelayfee": MIN_RELAY_FEE_SAT_KVB as f64 / 1e8,
                "unbroadcastcount": 0,
                "fullrbf": true,
            }))
        }),
        "getrawmempool" => {
            let verbose = opt_bool(p, 0, false)?;
            with(sh, |s| {
                let mut ids: Vec<(u64, Txid)> =
                    s.mempool.iter().map(|(t, e)| (e.seq, *t)).collect();
                ids.sort_unstable();
                if verbose {
                    let map: serde_json::Map<String, Value> = ids
                        .into_iter()
                        .filter_map(|(_, t)| mempool_entry_json(s, &t).map(|e| (t.to_string(), e)))
                        .collect();
                    Ok(Value::Object(map))
                } else {
                    Ok(json!(ids.into_iter().map(|(_, t)| t.to_string()).collect::<Vec<_>>()))
                }
            })
        }
        "getmempoolentry" => {
            let txid = param_txid(p, 0)?;
            with(sh, |s| {
                mempool_entry_json(s, &txid).ok_or_else(|| {
                    RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
                })
            })
        }
        "getblockfilter" => {
            let hash = param_block_hash(p, 0)?;
            if let Some(kind) = p.get(1).and_then(Value::as_str) {
                if kind != "basic" {
                    return Err(RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, "Unknown filtertype"));
                }
            }
            let (filter, header) = block_filter(st, &hash)?;
            Ok(json!({
                "filter": filter.content.to_lower_hex_string(),
                "header": header.to_string(),
            }))
        }
        "getnetworkinfo" => Ok(json!({
            "version": 280000,
            "subversion": concat!("/looper-regtest:", env!("CARGO_PKG_VERSION"), "/"),
            "protocolversion": 70016,
            "localrelay": true,
            "networkactive": true,
            "connections": 0,
            "relayfee": MIN_RELAY_FEE_SAT_KVB as f64 / 1e8,
            "incrementalfee": MIN_RELAY_FEE_SAT_KVB as f64 / 1e8,
            "warnings": [],
        })),
        "uptime" => Ok(json!(st.started.elapsed().as_secs())),
        _ => Err(RpcError::new(RPC_METHOD_NOT_FOUND, "Method not found")),
    }
}

// ---------------------------------------------------------------- parameters

fn type_error(name: &str) -> RpcError {
    RpcError::new(RPC_TYPE_ERROR, format!("{name}: wrong type"))
}

fn param<'a>(p: &'a [Value], i: usize, name: &str) -> RpcResult<&'a Value> {
    p.get(i).filter(|v| !v.is_null()).ok_or_else(|| {
        RpcError::new(RPC_INVALID_PARAMETER, format!("Missing required parameter {name}"))
    })
}

fn param_str<'a>(p: &'a [Value], i: usize, name: &str) -> RpcResult<&'a str> {
    param(p, i, name)?.as_str().ok_or_else(|| type_error(name))
}

fn param_u64(p: &[Value], i: usize, name: &str) -> RpcResult<u64> {
    param(p, i, name)?.as_u64().ok_or_else(|| type_error(name))
}

fn opt_bool(p: &[Value], i: usize, default: bool) -> RpcResult<bool> {
    match p.get(i) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => v.as_u64().map(|n| n > 0).ok_or_else(|| type_error("flag")),
    }
}

fn param_block_hash(p: &[Value], i: usize) -> RpcResult<BlockHash> {
    BlockHash::from_str(param_str(p, i, "blockhash")?)
        .map_err(|_| RpcError::new(RPC_INVALID_PARAMETER, "blockhash must be of length 64 (hex)"))
}

fn param_txid(p: &[Value], i: usize) -> RpcResult<Txid> {
    Txid::from_str(param_str(p, i, "txid")?)
        .map_err(|_| RpcError::new(RPC_INVALID_PARAMETER, "txid must be of length 64 (hex)"))
}

// ---------------------------------------------------------------- answers

/// sat/vB as BTC/kvB, rounded to the satoshi.
fn btc_kvb_of_sat_vb(sat_vb: f64) -> f64 {
    (sat_vb * 1000.0).round() / 1e8
}

fn block<'a>(s: &'a ChainState, hash: &BlockHash) -> RpcResult<&'a BlockRec> {
    s.blocks.get(hash).ok_or_else(|| RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, "Block not found"))
}

/// The total work of the chain ending at `hash`.
fn chainwork(s: &ChainState, hash: &BlockHash) -> Work {
    let mut total: Option<Work> = None;
    let mut cur = s.blocks.get(hash);
    while let Some(rec) = cur {
        let work = rec.block.header.work();
        total = Some(match total {
            Some(t) => t + work,
            None => work,
        });
        cur = if rec.height == 0 { None } else { s.blocks.get(&rec.block.header.prev_blockhash) };
    }
    total.unwrap_or_else(|| Work::from_be_bytes([0; 32]))
}

fn work_hex(work: Work) -> String {
    work.to_be_bytes().to_lower_hex_string()
}

fn header_json(s: &ChainState, rec: &BlockRec) -> Value {
    let h = &rec.block.header;
    let hash = h.block_hash();
    let active = s.in_active(&hash);
    let confirmations: i64 =
        if active { i64::from(s.tip_height()) - i64::from(rec.height) + 1 } else { -1 };
    let mut v = json!({
        "hash": hash.to_string(),
        "confirmations": confirmations,
        "height": rec.height,
        "version": h.version.to_consensus(),
        "versionHex": format!("{:08x}", h.version.to_consensus()),
        "merkleroot": h.merkle_root.to_string(),
        "time": h.time,
        "mediantime": s.mtp(&hash),
        "nonce": h.nonce,
        "bits": format!("{:08x}", h.bits.to_consensus()),
        "difficulty": h.difficulty_float(),
        "chainwork": work_hex(chainwork(s, &hash)),
        "nTx": rec.block.txdata.len(),
    });
    if rec.height > 0 {
        v["previousblockhash"] = json!(h.prev_blockhash.to_string());
    }
    if active {
        if let Some(next) = s.active.get(rec.height as usize + 1) {
            v["nextblockhash"] = json!(next.to_string());
        }
    }
    v
}

fn txout_json(s: &ChainState, op: OutPoint, include_mempool: bool) -> Value {
    if include_mempool && s.mempool_spends.contains_key(&op) {
        return Value::Null;
    }
    let (out, confirmations, coinbase) = match s.utxos.get(&op) {
        Some(coin) => (coin.txout.clone(), s.tip_height() + 1 - coin.height, coin.coinbase),
        None if include_mempool && s.mempool.contains_key(&op.txid) => match s.prevout(&op) {
            Some(out) => (out.clone(), 0, false),
            None => return Value::Null,
        },
        None => return Value::Null,
    };
    let mut spk = json!({ "hex": out.script_pubkey.to_hex_string() });
    if let Ok(addr) = Address::from_script(&out.script_pubkey, Network::Regtest) {
        spk["address"] = json!(addr.to_string());
    }
    json!({
        "bestblock": s.tip_hash().to_string(),
        "confirmations": confirmations,
        "value": out.value.to_btc(),
        "scriptPubKey": spk,
        "coinbase": coinbase,
    })
}

fn mempool_entry_json(s: &ChainState, txid: &Txid) -> Option<Value> {
    let e = s.mempool.get(txid)?;
    let rec = s.txs.get(txid)?;
    let depends: Vec<String> = rec
        .tx
        .input
        .iter()
        .map(|i| i.previous_output.txid)
        .filter(|t| s.mempool.contains_key(t))
        .map(|t| t.to_string())
        .collect();
    let fee = e.fee as f64 / 1e8;
    Some(json!({
        "vsize": e.vsize,
        "weight": rec.tx.weight().to_wu(),
        "time": e.time,
        "height": e.height,
        "fees": { "base": fee, "modified": fee, "ancestor": fee, "descendant": fee },
        "depends": depends,
        "bip125-replaceable": true,
        "unbroadcast": false,
    }))
}

/// The BIP-0158 basic filter of `hash` and its header (computed from genesis once, then kept).
fn block_filter(st: &RpcState, hash: &BlockHash) -> RpcResult<(BlockFilter, FilterHeader)> {
    let mut cache =
        st.filters.lock().map_err(|_| RpcError::new(RPC_MISC_ERROR, "filter cache poisoned"))?;
    if let Some(found) = cache.get(hash) {
        return Ok(found.clone());
    }
    with(&st.shared, |s| {
        // The blocks back to one whose filter is known (or genesis), then forward.
        let mut path = Vec::new();
        let mut cur = *hash;
        loop {
            let rec = block(s, &cur)?;
            if cache.contains_key(&cur) {
                break;
            }
            path.push(cur);
            if rec.height == 0 {
                break;
            }
            cur = rec.block.header.prev_blockhash;
        }
        for h in path.into_iter().rev() {
            let rec = block(s, &h)?;
            let filter = BlockFilter::new_script_filter(&rec.block, |op| {
                s.prevout(op)
                    .map(|o| o.script_pubkey.clone())
                    .ok_or(bitcoin::bip158::Error::UtxoMissing(*op))
            })
            .map_err(|e| RpcError::new(RPC_MISC_ERROR, format!("filter of {h}: {e}")))?;
            let previous = if rec.height == 0 {
                FilterHeader::all_zeros()
            } else {
                cache
                    .get(&rec.block.header.prev_blockhash)
                    .map(|f| f.1)
                    .unwrap_or_else(FilterHeader::all_zeros)
            };
            let header = filter.filter_header(&previous);
            cache.insert(h, (filter, header));
        }
        cache.get(hash).cloned().ok_or_else(|| RpcError::new(RPC_MISC_ERROR, "filter not computed"))
    })
}
