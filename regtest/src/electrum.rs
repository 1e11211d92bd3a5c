//! Electrum protocol server (protocol 1.4, the methods electrs serves) over the same chain and
//! mempool as the Esplora API: JSON-RPC 2.0 requests, one per line, over plain TCP.
//!
//! What the Electrum clients of the workspace call (electrum-client 0.24, bdk_electrum 0.23,
//! ldk-node 0.7's Electrum chain source and lightning-transaction-sync) is served as electrs
//! serves it:
//!
//! | method | answer |
//! |---|---|
//! | `server.version`, `server.ping`, `server.features`, `server.banner`, `server.donation_address`, `server.peers.subscribe` | the server, protocol 1.4 |
//! | `blockchain.headers.subscribe` | the tip (`{height, hex}`), then a notification at each new tip |
//! | `blockchain.block.header`, `blockchain.block.headers` | raw headers of the active chain (at most 2016 a call; no checkpoint proofs) |
//! | `blockchain.scripthash.get_history`, `get_mempool`, `listunspent`, `get_balance` | from the chain's script index: confirmed in block order, then the mempool (height 0, or -1 with an unconfirmed parent) |
//! | `blockchain.scripthash.subscribe`, `unsubscribe` | the script's status (SHA-256 of `txid:height:` over its history), then a notification at each change |
//! | `blockchain.transaction.get` | a transaction of the active chain or the mempool (not verbose) |
//! | `blockchain.transaction.get_merkle`, `id_from_pos` | real merkle branches of the active chain's blocks |
//! | `blockchain.transaction.broadcast` | mempool acceptance as `POST /tx` (a transaction already in the mempool is success, as Bitcoin Core's `sendrawtransaction`) |
//! | `blockchain.estimatefee`, `blockchain.relayfee` | the `/fee-estimates` rates in BTC/kvB |
//! | `mempool.get_fee_histogram` | empty |
//!
//! Batches come as several request lines written at once (electrum-client's `batch_call`) or as
//! one JSON array (answered by one array). A request without `id` is a notification: it is
//! carried out and not answered. Errors are JSON-RPC error objects: `-32700` (not JSON),
//! `-32600`, `-32601` (unknown method), `-32602` (bad parameters), and `1` for what the chain
//! refuses or does not know (an unknown transaction, a rejected broadcast with Bitcoin Core's
//! reason as the message).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{BlockHash, Transaction, Txid};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::chain::{script_hash, ChainState};
use crate::error::Error;
use crate::esplora::{history, merkle_branch, script_utxos, served_fee_estimates};
use crate::rpc::{RpcError, RpcResult};
use crate::Shared;

/// The Electrum protocol version served.
pub const ELECTRUM_PROTOCOL_VERSION: &str = "1.4";

const SERVER_VERSION: &str = concat!("looper-regtest ", env!("CARGO_PKG_VERSION"));

/// Longest request line accepted (a batch of large transactions' hex fits).
const MAX_LINE_BYTES: usize = 16 << 20;

/// Most headers one `blockchain.block.headers` call returns (as electrs and ElectrumX).
const MAX_HEADERS: u32 = 2016;

/// Most scripthash subscriptions of one connection.
const MAX_SUBSCRIPTIONS: usize = 100_000;

/// How often a connection with subscriptions looks for changes to notify.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(100);

/// Bitcoin Core's default minimum relay fee rate (sat/kvB), served by `blockchain.relayfee`.
const MIN_RELAY_FEE_SAT_KVB: u64 = 1000;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// ElectrumX's `BAD_REQUEST`: the chain does not know or refuses what was asked.
const BAD_REQUEST: i64 = 1;

impl RpcError {
    fn params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(BAD_REQUEST, message)
    }
}

/// Accepts connections until `stop` changes (or its sender is dropped); each connection is
/// served by its own task, which ends with the runtime.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, Arc::clone(&shared), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "electrum server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut session = Session::new(shared);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut tick = tokio::time::interval(NOTIFY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut out: Vec<Value> = Vec::new();
        let mut close = false;
        tokio::select! {
            _ = stop.changed() => return,
            read = reader.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let rest = pending.split_off(pos + 1);
                    let line = std::mem::replace(&mut pending, rest);
                    if let Some(answer) = session.handle_line(&line) {
                        out.push(answer);
                    }
                }
                if pending.len() > MAX_LINE_BYTES {
                    out.push(error_response(
                        Value::Null,
                        &RpcError::new(INVALID_REQUEST, "request line too long"),
                    ));
                    close = true;
                }
            }
            _ = tick.tick() => out = session.notifications(),
        }
        for value in out {
            let mut line = value.to_string().into_bytes();
            line.push(b'\n');
            if writer.write_all(&line).await.is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

fn error_response(id: Value, e: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() })
}

fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// Runs `f` on the chain state (an error once the chain is shut down).
fn with<T>(shared: &Shared, f: impl FnOnce(&mut ChainState) -> RpcResult<T>) -> RpcResult<T> {
    let mut guard =
        shared.state.lock().map_err(|_| RpcError::new(INTERNAL_ERROR, "chain state poisoned"))?;
    match guard.as_mut() {
        Some(s) => f(s),
        None => Err(RpcError::new(INTERNAL_ERROR, "the chain is shut down")),
    }
}

/// One connection's subscriptions.
struct Session {
    shared: Arc<Shared>,
    /// The tip last sent, once `blockchain.headers.subscribe` was called.
    headers: Option<BlockHash>,
    /// Subscribed scripthashes, by the hex the client gave: the chain's script hash and the
    /// status last sent.
    scripts: HashMap<String, (sha256::Hash, Value)>,
    /// The chain's [`ChainState::change_mark`] when the notifications were last computed.
    last_mark: Option<(BlockHash, u64, usize)>,
}

impl Session {
    fn new(shared: Arc<Shared>) -> Self {
        Session { shared, headers: None, scripts: HashMap::new(), last_mark: None }
    }

    /// Answers one line: a request, a batch (JSON array) or nothing (a notification).
    fn handle_line(&mut self, line: &[u8]) -> Option<Value> {
        let text = line.trim_ascii();
        if text.is_empty() {
            return None;
        }
        let request: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => {
                return Some(error_response(
                    Value::Null,
                    &RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
                ))
            }
        };
        match request {
            Value::Array(batch) if batch.is_empty() => {
                Some(error_response(Value::Null, &RpcError::new(INVALID_REQUEST, "empty batch")))
            }
            Value::Array(batch) => {
                let answers: Vec<Value> =
                    batch.iter().filter_map(|r| self.handle_request(r)).collect();
                (!answers.is_empty()).then_some(Value::Array(answers))
            }
            single => self.handle_request(&single),
        }
    }

    fn handle_request(&mut self, request: &Value) -> Option<Value> {
        let Some(object) = request.as_object() else {
            return Some(error_response(
                Value::Null,
                &RpcError::new(INVALID_REQUEST, "a request is a JSON object"),
            ));
        };
        let id = object.get("id").cloned();
        let result = match (object.get("method").and_then(Value::as_str), object.get("params")) {
            (None, _) => Err(RpcError::new(INVALID_REQUEST, "the request has no method")),
            (Some(method), None | Some(Value::Null)) => self.call(method, &[]),
            (Some(method), Some(Value::Array(params))) => self.call(method, params),
            (Some(_), Some(_)) => Err(RpcError::params("params must be an array")),
        };
        let id = id?;
        Some(match result {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => error_response(id, &e),
        })
    }

    fn call(&mut self, method: &str, p: &[Value]) -> RpcResult<Value> {
        let shared = Arc::clone(&self.shared);
        let sh = shared.as_ref();
        match method {
            "server.version" => Ok(json!([SERVER_VERSION, ELECTRUM_PROTOCOL_VERSION])),
            "server.ping" => Ok(Value::Null),
            "server.banner" => Ok(json!("looper-regtest: Bitcoin Core's kernel on regtest")),
            "server.donation_address" => Ok(json!("")),
            "server.peers.subscribe" | "mempool.get_fee_histogram" => Ok(json!([])),
            "server.features" => with(sh, |s| {
                let genesis = s.active.first().map(|h| h.to_string()).unwrap_or_default();
                Ok(json!({
                    "genesis_hash": genesis,
                    "hosts": {},
                    "protocol_min": ELECTRUM_PROTOCOL_VERSION,
                    "protocol_max": ELECTRUM_PROTOCOL_VERSION,
                    "pruning": null,
                    "server_version": SERVER_VERSION,
                    "hash_function": "sha256",
                }))
            }),
            "blockchain.headers.subscribe" => {
                let (tip, answer) = with(sh, |s| Ok((s.tip_hash(), tip_json(s)?)))?;
                self.headers = Some(tip);
                Ok(answer)
            }
            "blockchain.block.header" => {
                let height = param_u32(p, 0, "height")?;
                no_checkpoint(p, 1)?;
                with(sh, |s| Ok(json!(header_hex(s, height)?)))
            }
            "blockchain.block.headers" => {
                let start = param_u32(p, 0, "start_height")?;
                let count = param_u32(p, 1, "count")?;
                no_checkpoint(p, 2)?;
                with(sh, |s| {
                    let tip = s.tip_height();
                    let count =
                        if start > tip { 0 } else { count.min(MAX_HEADERS).min(tip - start + 1) };
                    let mut hex = String::with_capacity(count as usize * 160);
                    for height in start..start + count {
                        hex.push_str(&header_hex(s, height)?);
                    }
                    Ok(json!({ "count": count, "hex": hex, "max": MAX_HEADERS }))
                })
            }
            "blockchain.estimatefee" => {
                let target = param_u32(p, 0, "number")?.max(1);
                let target = u16::try_from(target).unwrap_or(u16::MAX);
                let base = sh.fee_rate_sat_vb;
                with(sh, |s| {
                    let rate = served_fee_estimates(base, s)
                        .range(..=target)
                        .next_back()
                        .map(|(_, sat_vb)| btc_kvb(*sat_vb));
                    Ok(json!(rate.unwrap_or(-1.0)))
                })
            }
            "blockchain.relayfee" => with(sh, |s| {
                let rate = s.min_fee_rate_sat_kvb.max(MIN_RELAY_FEE_SAT_KVB);
                Ok(json!(rate as f64 / 1e8))
            }),
            "blockchain.scripthash.get_history" => {
                let h = param_scripthash(p, 0)?;
                with(sh, |s| Ok(history_json(s, &h, true)))
            }
            "blockchain.scripthash.get_mempool" => {
                let h = param_scripthash(p, 0)?;
                with(sh, |s| Ok(history_json(s, &h, false)))
            }
            "blockchain.scripthash.get_balance" => {
                let h = param_scripthash(p, 0)?;
                with(sh, |s| Ok(balance_json(s, &h)))
            }
            "blockchain.scripthash.listunspent" => {
                let h = param_scripthash(p, 0)?;
                with(sh, |s| Ok(unspent_json(s, &h)))
            }
            "blockchain.scripthash.subscribe" => {
                let key = param_str(p, 0, "scripthash")?.to_ascii_lowercase();
                let h = parse_scripthash(&key)?;
                if !self.scripts.contains_key(&key) && self.scripts.len() >= MAX_SUBSCRIPTIONS {
                    return Err(RpcError::bad("too many subscriptions"));
                }
                let status = with(sh, |s| Ok(status_json(s, &h)))?;
                self.scripts.insert(key, (h, status.clone()));
                Ok(status)
            }
            "blockchain.scripthash.unsubscribe" => {
                let key = param_str(p, 0, "scripthash")?.to_ascii_lowercase();
                parse_scripthash(&key)?;
                Ok(json!(self.scripts.remove(&key).is_some()))
            }
            "blockchain.transaction.get" => {
                let txid = param_txid(p, 0)?;
                if opt_bool(p, 1, "verbose")? {
                    return Err(RpcError::bad("verbose transactions are not supported"));
                }
                with(sh, |s| {
                    if !is_live(s, &txid) {
                        return Err(RpcError::bad(format!(
                            "no such mempool or blockchain transaction: {txid}"
                        )));
                    }
                    let rec = s
                        .txs
                        .get(&txid)
                        .ok_or_else(|| RpcError::bad(format!("no such transaction: {txid}")))?;
                    Ok(json!(serialize(&rec.tx).to_lower_hex_string()))
                })
            }
            "blockchain.transaction.get_merkle" => {
                let txid = param_txid(p, 0)?;
                let height = param_u32(p, 1, "height")?;
                with(sh, |s| {
                    let (hash, at, pos) =
                        s.txs.get(&txid).and_then(|r| r.confirmed).ok_or_else(|| {
                            RpcError::bad(format!("transaction {txid} is not confirmed"))
                        })?;
                    if at != height {
                        return Err(RpcError::bad(format!(
                            "transaction {txid} is not in the block at height {height}"
                        )));
                    }
                    let rec = s
                        .blocks
                        .get(&hash)
                        .ok_or_else(|| RpcError::new(INTERNAL_ERROR, "block missing"))?;
                    Ok(json!({
                        "block_height": height,
                        "merkle": merkle_branch(&rec.block, pos),
                        "pos": pos,
                    }))
                })
            }
            "blockchain.transaction.id_from_pos" => {
                let height = param_u32(p, 0, "height")?;
                let pos = param_u32(p, 1, "tx_pos")? as usize;
                let merkle = opt_bool(p, 2, "merkle")?;
                with(sh, |s| {
                    let rec = s
                        .active
                        .get(height as usize)
                        .and_then(|h| s.blocks.get(h))
                        .ok_or_else(|| RpcError::bad(format!("no block at height {height}")))?;
                    let tx = rec.block.txdata.get(pos).ok_or_else(|| {
                        RpcError::bad(format!("no transaction at position {pos}"))
                    })?;
                    let txid = tx.compute_txid().to_string();
                    Ok(if merkle {
                        json!({ "tx_hash": txid, "merkle": merkle_branch(&rec.block, pos) })
                    } else {
                        json!(txid)
                    })
                })
            }
            "blockchain.transaction.broadcast" => {
                let raw = param_str(p, 0, "raw_tx")?;
                let tx: Transaction = Vec::<u8>::from_hex(raw.trim())
                    .ok()
                    .and_then(|bytes| deserialize(&bytes).ok())
                    .ok_or_else(|| RpcError::bad("TX decode failed"))?;
                let txid = tx.compute_txid();
                with(sh, |s| match s.accept(tx) {
                    Ok(txid) => Ok(json!(txid.to_string())),
                    Err(Error::TxRejected { reason, .. }) if reason == "txn-already-in-mempool" => {
                        Ok(json!(txid.to_string()))
                    }
                    Err(Error::TxRejected { reason, .. }) => Err(RpcError::bad(reason)),
                    Err(other) => Err(RpcError::new(INTERNAL_ERROR, other.to_string())),
                })
            }
            _ => Err(RpcError::new(METHOD_NOT_FOUND, format!("unknown method {method:?}"))),
        }
    }

    /// The notifications due since the last call: a new tip for a headers subscription, a new
    /// status for each subscribed script whose history changed.
    fn notifications(&mut self) -> Vec<Value> {
        if self.headers.is_none() && self.scripts.is_empty() {
            return Vec::new();
        }
        let shared = Arc::clone(&self.shared);
        let headers = &mut self.headers;
        let scripts = &mut self.scripts;
        let last_mark = &mut self.last_mark;
        with(&shared, |s| {
            let mark = s.change_mark();
            if *last_mark == Some(mark) {
                return Ok(Vec::new());
            }
            *last_mark = Some(mark);
            let mut out = Vec::new();
            if let Some(sent) = headers.as_mut() {
                if *sent != s.tip_hash() {
                    *sent = s.tip_hash();
                    out.push(notification("blockchain.headers.subscribe", json!([tip_json(s)?])));
                }
            }
            for (key, (h, sent)) in scripts.iter_mut() {
                let status = status_json(s, h);
                if status != *sent {
                    *sent = status.clone();
                    out.push(notification("blockchain.scripthash.subscribe", json!([key, status])));
                }
            }
            Ok(out)
        })
        .unwrap_or_default()
    }
}

// ---------------------------------------------------------------- parameters

fn param<'a>(p: &'a [Value], i: usize, name: &str) -> RpcResult<&'a Value> {
    p.get(i).ok_or_else(|| RpcError::params(format!("missing parameter {name}")))
}

fn param_str<'a>(p: &'a [Value], i: usize, name: &str) -> RpcResult<&'a str> {
    param(p, i, name)?.as_str().ok_or_else(|| RpcError::params(format!("{name} must be a string")))
}

fn param_u32(p: &[Value], i: usize, name: &str) -> RpcResult<u32> {
    param(p, i, name)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| RpcError::params(format!("{name} must be a non-negative integer")))
}

fn opt_bool(p: &[Value], i: usize, name: &str) -> RpcResult<bool> {
    match p.get(i) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RpcError::params(format!("{name} must be a boolean"))),
    }
}

/// Checkpoint proofs (`cp_height` above 0) are not served.
fn no_checkpoint(p: &[Value], i: usize) -> RpcResult<()> {
    match p.get(i) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64() == Some(0) => Ok(()),
        Some(_) => Err(RpcError::bad("checkpoint proofs (cp_height) are not supported")),
    }
}

/// An Electrum scripthash: the script's SHA-256, hex in reversed byte order; the chain's index
/// keys are in natural order.
fn parse_scripthash(hex: &str) -> RpcResult<sha256::Hash> {
    let mut bytes = <[u8; 32]>::from_hex(hex)
        .map_err(|_| RpcError::params("scripthash must be 64 hex characters"))?;
    bytes.reverse();
    Ok(sha256::Hash::from_byte_array(bytes))
}

fn param_scripthash(p: &[Value], i: usize) -> RpcResult<sha256::Hash> {
    parse_scripthash(param_str(p, i, "scripthash")?)
}

fn param_txid(p: &[Value], i: usize) -> RpcResult<Txid> {
    Txid::from_str(param_str(p, i, "tx_hash")?)
        .map_err(|_| RpcError::params("tx_hash must be 64 hex characters"))
}

// ---------------------------------------------------------------- answers

/// sat/vB as BTC/kvB, rounded to the satoshi (Bitcoin Core's `estimatesmartfee` unit).
fn btc_kvb(sat_vb: f64) -> f64 {
    (sat_vb * 1000.0).round() / 1e8
}

fn header_hex(s: &ChainState, height: u32) -> RpcResult<String> {
    s.active
        .get(height as usize)
        .and_then(|h| s.blocks.get(h))
        .map(|rec| serialize(&rec.block.header).to_lower_hex_string())
        .ok_or_else(|| RpcError::bad(format!("height {height} out of range")))
}

fn tip_json(s: &ChainState) -> RpcResult<Value> {
    let height = s.tip_height();
    Ok(json!({ "height": height, "hex": header_hex(s, height)? }))
}

/// Whether `txid` is in the active chain or the mempool.
fn is_live(s: &ChainState, txid: &Txid) -> bool {
    s.mempool.contains_key(txid) || s.txs.get(txid).is_some_and(|r| r.confirmed.is_some())
}

/// A script's live history in Electrum's order: confirmed by block and position, then the
/// mempool by arrival, each with its Electrum height (the block's; 0 in the mempool, -1 for a
/// mempool transaction with an unconfirmed input) and, in the mempool, its fee.
fn electrum_history(s: &ChainState, h: &sha256::Hash) -> Vec<(Txid, i64, Option<u64>)> {
    let (mempool, confirmed) = history(s, h);
    let mut out = Vec::with_capacity(mempool.len() + confirmed.len());
    for txid in confirmed.into_iter().rev() {
        if let Some((_, height, _)) = s.txs.get(&txid).and_then(|r| r.confirmed) {
            out.push((txid, i64::from(height), None));
        }
    }
    for txid in mempool.into_iter().rev() {
        let Some(rec) = s.txs.get(&txid) else { continue };
        let unconfirmed_parent =
            rec.tx.input.iter().any(|i| s.mempool.contains_key(&i.previous_output.txid));
        let fee = s.mempool.get(&txid).map(|e| e.fee);
        out.push((txid, if unconfirmed_parent { -1 } else { 0 }, fee));
    }
    out
}

fn history_json(s: &ChainState, h: &sha256::Hash, confirmed_too: bool) -> Value {
    let list: Vec<Value> = electrum_history(s, h)
        .into_iter()
        .filter(|(_, height, _)| confirmed_too || *height <= 0)
        .map(|(txid, height, fee)| match fee {
            Some(fee) => json!({ "height": height, "tx_hash": txid.to_string(), "fee": fee }),
            None => json!({ "height": height, "tx_hash": txid.to_string() }),
        })
        .collect();
    Value::Array(list)
}

/// The Electrum status of a script: the hex SHA-256 of `txid:height:` over its history, `null`
/// when it has none.
fn status_json(s: &ChainState, h: &sha256::Hash) -> Value {
    let list = electrum_history(s, h);
    if list.is_empty() {
        return Value::Null;
    }
    let text: String = list.iter().map(|(txid, height, _)| format!("{txid}:{height}:")).collect();
    json!(sha256::Hash::hash(text.as_bytes()).to_byte_array().to_lower_hex_string())
}

fn unspent_json(s: &ChainState, h: &sha256::Hash) -> Value {
    let mut list: Vec<(u32, usize, Txid, u32, u64)> = script_utxos(s, h)
        .into_iter()
        .map(|(txid, vout, value)| {
            // Confirmed in block order, the mempool (height 0) last.
            let (height, pos) = s
                .txs
                .get(&txid)
                .and_then(|r| r.confirmed)
                .map(|(_, height, pos)| (height, pos))
                .unwrap_or((0, usize::MAX));
            (height, pos, txid, vout, value)
        })
        .collect();
    list.sort_unstable_by_key(|(height, pos, txid, vout, _)| {
        (*height == 0, *height, *pos, *txid, *vout)
    });
    Value::Array(
        list.into_iter()
            .map(|(height, _, txid, vout, value)| {
                json!({ "height": height, "tx_hash": txid.to_string(), "tx_pos": vout, "value": value })
            })
            .collect(),
    )
}

fn balance_json(s: &ChainState, h: &sha256::Hash) -> Value {
    let (mempool, confirmed) = history(s, h);
    let mut confirmed_sat: u64 = 0;
    for txid in &confirmed {
        let Some(rec) = s.txs.get(txid) else { continue };
        for (vout, o) in rec.tx.output.iter().enumerate() {
            let op = bitcoin::OutPoint::new(*txid, vout as u32);
            if script_hash(&o.script_pubkey) == *h && s.utxos.contains_key(&op) {
                confirmed_sat = confirmed_sat.saturating_add(o.value.to_sat());
            }
        }
    }
    let mut unconfirmed: i64 = 0;
    for txid in &mempool {
        let Some(rec) = s.txs.get(txid) else { continue };
        for o in &rec.tx.output {
            if script_hash(&o.script_pubkey) == *h {
                unconfirmed = unconfirmed.saturating_add_unsigned(o.value.to_sat());
            }
        }
        for i in &rec.tx.input {
            if let Some(prev) = s.prevout(&i.previous_output) {
                if script_hash(&prev.script_pubkey) == *h {
                    unconfirmed = unconfirmed.saturating_sub_unsigned(prev.value.to_sat());
                }
            }
        }
    }
    json!({ "confirmed": confirmed_sat, "unconfirmed": unconfirmed })
}
