//! Esplora-compatible REST API (shapes follow Blockstream esplora's `API.md` and electrs), plus
//! the chain's control endpoints under `/regtest/`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{Address, Amount, BlockHash, MerkleBlock, Network, OutPoint, Script, Txid};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::chain::{script_hash, BlockRec, ChainState};
use crate::error::Error;
use crate::Shared;

/// Confirmation targets served by `/fee-estimates`.
pub const FEE_TARGETS: [u16; 28] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 144,
    504, 1008,
];

pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::TxRejected { reason, .. } => {
                let code = if reason == "bad-txns-inputs-missingorspent" {
                    -25
                } else if reason == "txn-already-known" || reason == "txn-already-in-mempool" {
                    -27
                } else {
                    -26
                };
                let body = json!({ "code": code, "message": reason });
                ApiError(StatusCode::BAD_REQUEST, format!("sendrawtransaction RPC error: {body}"))
            }
            Error::InvalidRequest(m) => ApiError(StatusCode::BAD_REQUEST, m),
            Error::InsufficientFunds { .. } => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}

fn bad(what: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, format!("invalid {what}"))
}

fn with<T>(shared: &Shared, f: impl FnOnce(&mut ChainState) -> ApiResult<T>) -> ApiResult<T> {
    let mut guard = shared
        .state
        .lock()
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "state poisoned".into()))?;
    match guard.as_mut() {
        Some(s) => f(s),
        None => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "chain is shut down".into())),
    }
}

fn parse_txid(s: &str) -> ApiResult<Txid> {
    Txid::from_str(s).map_err(|_| bad("txid"))
}

fn parse_hash(s: &str) -> ApiResult<BlockHash> {
    BlockHash::from_str(s).map_err(|_| bad("block hash"))
}

fn parse_scripthash(s: &str) -> ApiResult<sha256::Hash> {
    let bytes = <[u8; 32]>::from_hex(s).map_err(|_| bad("scripthash"))?;
    Ok(sha256::Hash::from_byte_array(bytes))
}

fn parse_address(s: &str) -> ApiResult<bitcoin::ScriptBuf> {
    let addr = Address::from_str(s)
        .map_err(|_| bad("address"))?
        .require_network(Network::Regtest)
        .map_err(|_| bad("address (not regtest)"))?;
    Ok(addr.script_pubkey())
}

fn text(s: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], s).into_response()
}

fn octets(b: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
}

/// Builds the router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/blocks/tip/hash", get(tip_hash))
        .route("/blocks/tip/height", get(tip_height))
        .route("/blocks", get(blocks_tip))
        .route("/blocks/{start}", get(blocks_from))
        .route("/block-height/{height}", get(block_height))
        .route("/block/{hash}", get(block_info))
        .route("/block/{hash}/header", get(block_header))
        .route("/block/{hash}/raw", get(block_raw))
        .route("/block/{hash}/status", get(block_status))
        .route("/block/{hash}/txids", get(block_txids))
        .route("/block/{hash}/txid/{index}", get(block_txid_at))
        .route("/block/{hash}/txs", get(block_txs))
        .route("/block/{hash}/txs/{start}", get(block_txs_from))
        .route("/tx", post(post_tx))
        .route("/tx/{txid}", get(tx_info))
        .route("/tx/{txid}/hex", get(tx_hex))
        .route("/tx/{txid}/raw", get(tx_raw))
        .route("/tx/{txid}/status", get(tx_status))
        .route("/tx/{txid}/merkle-proof", get(tx_merkle_proof))
        .route("/tx/{txid}/merkleblock-proof", get(tx_merkleblock_proof))
        .route("/tx/{txid}/outspend/{vout}", get(tx_outspend))
        .route("/tx/{txid}/outspends", get(tx_outspends))
        .route("/scripthash/{h}", get(sh_stats))
        .route("/scripthash/{h}/txs", get(sh_txs))
        .route("/scripthash/{h}/txs/chain", get(sh_txs_chain))
        .route("/scripthash/{h}/txs/chain/{last}", get(sh_txs_chain_after))
        .route("/scripthash/{h}/txs/mempool", get(sh_txs_mempool))
        .route("/scripthash/{h}/utxo", get(sh_utxo))
        .route("/address/{a}", get(addr_stats))
        .route("/address/{a}/txs", get(addr_txs))
        .route("/address/{a}/txs/chain", get(addr_txs_chain))
        .route("/address/{a}/txs/chain/{last}", get(addr_txs_chain_after))
        .route("/address/{a}/txs/mempool", get(addr_txs_mempool))
        .route("/address/{a}/utxo", get(addr_utxo))
        .route("/mempool", get(mempool_stats))
        .route("/mempool/txids", get(mempool_txids))
        .route("/mempool/recent", get(mempool_recent))
        .route("/fee-estimates", get(fee_estimates))
        .route("/regtest/info", get(ctl_info))
        .route("/regtest/mine", post(ctl_mine))
        .route("/regtest/fund", post(ctl_fund))
        .route("/regtest/reorg", post(ctl_reorg))
        .route("/regtest/drop", post(ctl_drop))
        .route("/regtest/mempool/{txid}", get(ctl_mempool_entry))
        .route("/regtest/min-fee-rate", get(ctl_min_fee_rate).post(ctl_set_min_fee_rate))
        .route("/regtest/fee-estimates", get(ctl_fee_estimates).post(ctl_set_fee_estimates))
        .route("/regtest/max-block-vsize", get(ctl_max_block_vsize).post(ctl_set_max_block_vsize))
        .with_state(shared)
}

type St = State<Arc<Shared>>;

// ---------------------------------------------------------------- JSON shapes

fn script_type(s: &Script) -> &'static str {
    if s.is_p2pkh() {
        "p2pkh"
    } else if s.is_p2sh() {
        "p2sh"
    } else if s.is_p2wpkh() {
        "v0_p2wpkh"
    } else if s.is_p2wsh() {
        "v0_p2wsh"
    } else if s.is_p2tr() {
        "v1_p2tr"
    } else if s.is_op_return() {
        "op_return"
    } else if s.is_p2pk() {
        "p2pk"
    } else if s.is_empty() {
        "empty"
    } else if s.is_multisig() {
        "multisig"
    } else {
        "unknown"
    }
}

fn vout_json(out: &bitcoin::TxOut) -> Value {
    let mut v = json!({
        "scriptpubkey": out.script_pubkey.to_hex_string(),
        "scriptpubkey_asm": out.script_pubkey.to_asm_string(),
        "scriptpubkey_type": script_type(&out.script_pubkey),
        "value": out.value.to_sat(),
    });
    if let Ok(addr) = Address::from_script(&out.script_pubkey, Network::Regtest) {
        v["scriptpubkey_address"] = json!(addr.to_string());
    }
    v
}

fn status_json(s: &ChainState, txid: &Txid) -> Value {
    match s.txs.get(txid).and_then(|r| r.confirmed) {
        Some((hash, height, _)) => {
            let time = s.blocks.get(&hash).map(|b| b.block.header.time).unwrap_or(0);
            json!({
                "confirmed": true,
                "block_height": height,
                "block_hash": hash.to_string(),
                "block_time": time,
            })
        }
        None => json!({ "confirmed": false }),
    }
}

/// Whether the chain currently holds `txid` (confirmed in the active chain or in the mempool).
fn is_live(s: &ChainState, txid: &Txid) -> bool {
    s.mempool.contains_key(txid) || s.txs.get(txid).map(|r| r.confirmed.is_some()).unwrap_or(false)
}

fn tx_json(s: &ChainState, txid: &Txid) -> Option<Value> {
    let rec = s.txs.get(txid)?;
    let tx = &rec.tx;
    let coinbase = tx.is_coinbase();
    let vin: Vec<Value> = tx
        .input
        .iter()
        .map(|i| {
            let prevout = if coinbase {
                Value::Null
            } else {
                s.prevout(&i.previous_output).map(vout_json).unwrap_or(Value::Null)
            };
            let mut v = json!({
                "txid": i.previous_output.txid.to_string(),
                "vout": i.previous_output.vout,
                "prevout": prevout,
                "scriptsig": i.script_sig.to_hex_string(),
                "scriptsig_asm": i.script_sig.to_asm_string(),
                "is_coinbase": coinbase,
                "sequence": i.sequence.0,
            });
            if !i.witness.is_empty() {
                v["witness"] =
                    json!(i.witness.iter().map(|w| w.to_lower_hex_string()).collect::<Vec<_>>());
            }
            v
        })
        .collect();
    let vout: Vec<Value> = tx.output.iter().map(vout_json).collect();
    Some(json!({
        "txid": txid.to_string(),
        "version": tx.version.0,
        "locktime": tx.lock_time.to_consensus_u32(),
        "vin": vin,
        "vout": vout,
        "size": tx.total_size(),
        "weight": tx.weight().to_wu(),
        "fee": rec.fee,
        "status": status_json(s, txid),
    }))
}

fn block_json(s: &ChainState, rec: &BlockRec) -> Value {
    let h = &rec.block.header;
    let hash = h.block_hash();
    let mut v = json!({
        "id": hash.to_string(),
        "height": rec.height,
        "version": h.version.to_consensus(),
        "timestamp": h.time,
        "tx_count": rec.block.txdata.len(),
        "size": rec.size,
        "weight": ChainState::block_weight(rec).to_wu(),
        "merkle_root": h.merkle_root.to_string(),
        "previousblockhash": if rec.height == 0 { Value::Null } else { json!(h.prev_blockhash.to_string()) },
        "mediantime": s.mtp(&hash),
        "nonce": h.nonce,
        "bits": h.bits.to_consensus(),
        "difficulty": h.difficulty_float(),
    });
    if rec.height == 0 {
        if let Some(o) = v.as_object_mut() {
            o.remove("previousblockhash");
        }
    }
    v
}

fn get_block<'a>(s: &'a ChainState, hash: &str) -> ApiResult<&'a BlockRec> {
    let hash = parse_hash(hash)?;
    s.blocks.get(&hash).ok_or_else(|| not_found("Block"))
}

// ---------------------------------------------------------------- blocks

async fn tip_hash(State(sh): St) -> ApiResult<Response> {
    with(&sh, |s| Ok(text(s.tip_hash().to_string())))
}

async fn tip_height(State(sh): St) -> ApiResult<Response> {
    with(&sh, |s| Ok(text(s.tip_height().to_string())))
}

fn blocks_list(s: &ChainState, start: u32) -> Value {
    let start = start.min(s.tip_height());
    let list: Vec<Value> = (0..=start)
        .rev()
        .take(10)
        .filter_map(|h| s.active.get(h as usize))
        .filter_map(|hash| s.blocks.get(hash))
        .map(|rec| block_json(s, rec))
        .collect();
    Value::Array(list)
}

async fn blocks_tip(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| Ok(Json(blocks_list(s, s.tip_height()))))
}

async fn blocks_from(State(sh): St, Path(start): Path<String>) -> ApiResult<Json<Value>> {
    let start: u32 = start.parse().map_err(|_| bad("height"))?;
    with(&sh, |s| Ok(Json(blocks_list(s, start))))
}

async fn block_height(State(sh): St, Path(h): Path<String>) -> ApiResult<Response> {
    let h: usize = h.parse().map_err(|_| bad("height"))?;
    with(&sh, |s| {
        s.active.get(h).map(|hash| text(hash.to_string())).ok_or_else(|| not_found("Block"))
    })
}

async fn block_info(State(sh): St, Path(hash): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| Ok(Json(block_json(s, get_block(s, &hash)?))))
}

async fn block_header(State(sh): St, Path(hash): Path<String>) -> ApiResult<Response> {
    with(&sh, |s| {
        let rec = get_block(s, &hash)?;
        Ok(text(serialize(&rec.block.header).to_lower_hex_string()))
    })
}

async fn block_raw(State(sh): St, Path(hash): Path<String>) -> ApiResult<Response> {
    with(&sh, |s| Ok(octets(serialize(&get_block(s, &hash)?.block))))
}

async fn block_status(State(sh): St, Path(hash): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let rec = get_block(s, &hash)?;
        let id = rec.block.block_hash();
        if s.in_active(&id) {
            let next = s
                .active
                .get(rec.height as usize + 1)
                .map(|h| json!(h.to_string()))
                .unwrap_or(Value::Null);
            Ok(Json(json!({
                "in_best_chain": true,
                "height": rec.height,
                "next_best": next,
            })))
        } else {
            Ok(Json(json!({ "in_best_chain": false })))
        }
    })
}

async fn block_txids(State(sh): St, Path(hash): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let rec = get_block(s, &hash)?;
        let ids: Vec<String> =
            rec.block.txdata.iter().map(|t| t.compute_txid().to_string()).collect();
        Ok(Json(json!(ids)))
    })
}

async fn block_txid_at(
    State(sh): St,
    Path((hash, index)): Path<(String, String)>,
) -> ApiResult<Response> {
    let index: usize = index.parse().map_err(|_| bad("index"))?;
    with(&sh, |s| {
        let rec = get_block(s, &hash)?;
        rec.block
            .txdata
            .get(index)
            .map(|t| text(t.compute_txid().to_string()))
            .ok_or_else(|| not_found("Transaction"))
    })
}

fn block_txs_page(s: &ChainState, hash: &str, start: usize) -> ApiResult<Value> {
    let rec = get_block(s, hash)?;
    let list: Vec<Value> = rec
        .block
        .txdata
        .iter()
        .skip(start)
        .take(25)
        .filter_map(|t| tx_json(s, &t.compute_txid()))
        .collect();
    Ok(Value::Array(list))
}

async fn block_txs(State(sh): St, Path(hash): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| Ok(Json(block_txs_page(s, &hash, 0)?)))
}

async fn block_txs_from(
    State(sh): St,
    Path((hash, start)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let start: usize = start.parse().map_err(|_| bad("start index"))?;
    with(&sh, |s| Ok(Json(block_txs_page(s, &hash, start)?)))
}

// ---------------------------------------------------------------- transactions

async fn post_tx(State(sh): St, body: Bytes) -> ApiResult<Response> {
    let hex = std::str::from_utf8(&body).map_err(|_| bad("body"))?.trim();
    let raw = Vec::<u8>::from_hex(hex).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            r#"sendrawtransaction RPC error: {"code":-22,"message":"TX decode failed"}"#.into(),
        )
    })?;
    let tx: bitcoin::Transaction = deserialize(&raw).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            r#"sendrawtransaction RPC error: {"code":-22,"message":"TX decode failed"}"#.into(),
        )
    })?;
    with(&sh, |s| Ok(text(s.accept(tx)?.to_string())))
}

fn live_tx<'a>(s: &'a ChainState, txid: &str) -> ApiResult<(Txid, &'a bitcoin::Transaction)> {
    let txid = parse_txid(txid)?;
    if !is_live(s, &txid) {
        return Err(not_found("Transaction"));
    }
    let rec = s.txs.get(&txid).ok_or_else(|| not_found("Transaction"))?;
    Ok((txid, &rec.tx))
}

async fn tx_info(State(sh): St, Path(txid): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let (txid, _) = live_tx(s, &txid)?;
        tx_json(s, &txid).map(Json).ok_or_else(|| not_found("Transaction"))
    })
}

async fn tx_hex(State(sh): St, Path(txid): Path<String>) -> ApiResult<Response> {
    with(&sh, |s| {
        let (_, tx) = live_tx(s, &txid)?;
        Ok(text(serialize(tx).to_lower_hex_string()))
    })
}

async fn tx_raw(State(sh): St, Path(txid): Path<String>) -> ApiResult<Response> {
    with(&sh, |s| {
        let (_, tx) = live_tx(s, &txid)?;
        Ok(octets(serialize(tx)))
    })
}

async fn tx_status(State(sh): St, Path(txid): Path<String>) -> ApiResult<Json<Value>> {
    let txid = parse_txid(&txid)?;
    with(&sh, |s| Ok(Json(status_json(s, &txid))))
}

fn confirmed_block<'a>(s: &'a ChainState, txid: &str) -> ApiResult<(Txid, &'a BlockRec, usize)> {
    let txid = parse_txid(txid)?;
    let (hash, _, pos) = s
        .txs
        .get(&txid)
        .and_then(|r| r.confirmed)
        .ok_or_else(|| not_found("Transaction not found or is unconfirmed;"))?;
    let rec = s.blocks.get(&hash).ok_or_else(|| not_found("Block"))?;
    Ok((txid, rec, pos))
}

/// The merkle branch of the transaction at `pos` in `block` (the siblings from the leaf up, as
/// txid-style hex: byte-reversed), as Esplora's `/merkle-proof` and Electrum's
/// `blockchain.transaction.get_merkle` serve it.
pub(crate) fn merkle_branch(block: &bitcoin::Block, pos: usize) -> Vec<String> {
    let mut level: Vec<[u8; 32]> =
        block.txdata.iter().map(|t| t.compute_txid().to_byte_array()).collect();
    let mut idx = pos;
    let mut branch = Vec::new();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            if let Some(last) = level.last().copied() {
                level.push(last);
            }
        }
        let sibling = idx ^ 1;
        if let Some(h) = level.get(sibling) {
            branch.push(Txid::from_byte_array(*h).to_string());
        }
        level = level
            .chunks(2)
            .map(|pair| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&pair[0]);
                buf[32..].copy_from_slice(&pair[pair.len() - 1]);
                bitcoin::hashes::sha256d::Hash::hash(&buf).to_byte_array()
            })
            .collect();
        idx /= 2;
    }
    branch
}

async fn tx_merkle_proof(State(sh): St, Path(txid): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let (_, rec, pos) = confirmed_block(s, &txid)?;
        Ok(Json(json!({
            "block_height": rec.height,
            "merkle": merkle_branch(&rec.block, pos),
            "pos": pos,
        })))
    })
}

async fn tx_merkleblock_proof(State(sh): St, Path(txid): Path<String>) -> ApiResult<Response> {
    with(&sh, |s| {
        let (txid, rec, _) = confirmed_block(s, &txid)?;
        let mb = MerkleBlock::from_block_with_predicate(&rec.block, |t| *t == txid);
        Ok(text(serialize(&mb).to_lower_hex_string()))
    })
}

fn outspend_json(s: &ChainState, op: &OutPoint) -> Value {
    let spend = s.mempool_spends.get(op).or_else(|| s.chain_spends.get(op)).copied();
    match spend {
        Some((txid, vin)) => json!({
            "spent": true,
            "txid": txid.to_string(),
            "vin": vin,
            "status": status_json(s, &txid),
        }),
        None => json!({ "spent": false }),
    }
}

async fn tx_outspend(
    State(sh): St,
    Path((txid, vout)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let vout: u32 = vout.parse().map_err(|_| bad("vout"))?;
    with(&sh, |s| {
        let (txid, _) = live_tx(s, &txid)?;
        Ok(Json(outspend_json(s, &OutPoint::new(txid, vout))))
    })
}

async fn tx_outspends(State(sh): St, Path(txid): Path<String>) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let (txid, tx) = live_tx(s, &txid)?;
        let list: Vec<Value> = (0..tx.output.len())
            .map(|v| outspend_json(s, &OutPoint::new(txid, v as u32)))
            .collect();
        Ok(Json(Value::Array(list)))
    })
}

// ---------------------------------------------------------------- scripthash / address

/// Live history of a script: (mempool newest first, confirmed newest first).
pub(crate) fn history(s: &ChainState, h: &sha256::Hash) -> (Vec<Txid>, Vec<Txid>) {
    let Some(all) = s.script_txs.get(h) else {
        return (Vec::new(), Vec::new());
    };
    let mut mem: Vec<(u64, Txid)> = Vec::new();
    let mut conf: Vec<(u32, usize, Txid)> = Vec::new();
    for txid in all {
        if let Some(e) = s.mempool.get(txid) {
            mem.push((e.seq, *txid));
        } else if let Some((_, height, pos)) = s.txs.get(txid).and_then(|r| r.confirmed) {
            conf.push((height, pos, *txid));
        }
    }
    mem.sort_unstable_by(|a, b| b.cmp(a));
    conf.sort_unstable_by(|a, b| b.cmp(a));
    (mem.into_iter().map(|(_, t)| t).collect(), conf.into_iter().map(|(_, _, t)| t).collect())
}

fn txs_json(s: &ChainState, ids: impl Iterator<Item = Txid>) -> Value {
    Value::Array(ids.filter_map(|t| tx_json(s, &t)).collect())
}

fn sh_txs_impl(s: &ChainState, h: &sha256::Hash) -> Value {
    let (mem, conf) = history(s, h);
    txs_json(s, mem.into_iter().take(50).chain(conf.into_iter().take(25)))
}

fn sh_chain_impl(s: &ChainState, h: &sha256::Hash, last: Option<Txid>) -> Value {
    let (_, conf) = history(s, h);
    let skip = match last {
        Some(l) => conf.iter().position(|t| *t == l).map(|p| p + 1).unwrap_or(conf.len()),
        None => 0,
    };
    txs_json(s, conf.into_iter().skip(skip).take(25))
}

fn sh_mempool_impl(s: &ChainState, h: &sha256::Hash) -> Value {
    let (mem, _) = history(s, h);
    txs_json(s, mem.into_iter().take(50))
}

/// The unspent outputs paying to the script `h` (confirmed ones not spent in the mempool, and
/// mempool ones): (txid, vout, value in sat), mempool first, then newest first.
pub(crate) fn script_utxos(s: &ChainState, h: &sha256::Hash) -> Vec<(Txid, u32, u64)> {
    let (mem, conf) = history(s, h);
    let mut out = Vec::new();
    for txid in mem.iter().chain(conf.iter()) {
        let Some(rec) = s.txs.get(txid) else { continue };
        for (vout, o) in rec.tx.output.iter().enumerate() {
            if script_hash(&o.script_pubkey) != *h {
                continue;
            }
            let op = OutPoint::new(*txid, vout as u32);
            let unspent = if s.mempool.contains_key(txid) {
                !s.mempool_spends.contains_key(&op)
            } else {
                s.utxos.contains_key(&op) && !s.mempool_spends.contains_key(&op)
            };
            if unspent {
                out.push((*txid, vout as u32, o.value.to_sat()));
            }
        }
    }
    out
}

fn sh_utxo_impl(s: &ChainState, h: &sha256::Hash) -> Value {
    let out: Vec<Value> = script_utxos(s, h)
        .into_iter()
        .map(|(txid, vout, value)| {
            json!({
                "txid": txid.to_string(),
                "vout": vout,
                "status": status_json(s, &txid),
                "value": value,
            })
        })
        .collect();
    Value::Array(out)
}

fn sh_stats_impl(s: &ChainState, h: &sha256::Hash) -> (Value, Value) {
    let (mem, conf) = history(s, h);
    let stats = |ids: &[Txid]| {
        let (mut fc, mut fs, mut sc, mut ss) = (0u64, 0u64, 0u64, 0u64);
        for txid in ids {
            let Some(rec) = s.txs.get(txid) else { continue };
            for o in &rec.tx.output {
                if script_hash(&o.script_pubkey) == *h {
                    fc += 1;
                    fs += o.value.to_sat();
                }
            }
            for i in &rec.tx.input {
                if let Some(p) = s.prevout(&i.previous_output) {
                    if script_hash(&p.script_pubkey) == *h {
                        sc += 1;
                        ss += p.value.to_sat();
                    }
                }
            }
        }
        json!({
            "funded_txo_count": fc,
            "funded_txo_sum": fs,
            "spent_txo_count": sc,
            "spent_txo_sum": ss,
            "tx_count": ids.len(),
        })
    };
    (stats(&conf), stats(&mem))
}

async fn sh_stats(State(sh): St, Path(h): Path<String>) -> ApiResult<Json<Value>> {
    let hash = parse_scripthash(&h)?;
    with(&sh, |s| {
        let (c, m) = sh_stats_impl(s, &hash);
        Ok(Json(json!({ "scripthash": h, "chain_stats": c, "mempool_stats": m })))
    })
}

async fn sh_txs(State(sh): St, Path(h): Path<String>) -> ApiResult<Json<Value>> {
    let h = parse_scripthash(&h)?;
    with(&sh, |s| Ok(Json(sh_txs_impl(s, &h))))
}

async fn sh_txs_chain(State(sh): St, Path(h): Path<String>) -> ApiResult<Json<Value>> {
    let h = parse_scripthash(&h)?;
    with(&sh, |s| Ok(Json(sh_chain_impl(s, &h, None))))
}

async fn sh_txs_chain_after(
    State(sh): St,
    Path((h, last)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let h = parse_scripthash(&h)?;
    let last = parse_txid(&last)?;
    with(&sh, |s| Ok(Json(sh_chain_impl(s, &h, Some(last)))))
}

async fn sh_txs_mempool(State(sh): St, Path(h): Path<String>) -> ApiResult<Json<Value>> {
    let h = parse_scripthash(&h)?;
    with(&sh, |s| Ok(Json(sh_mempool_impl(s, &h))))
}

async fn sh_utxo(State(sh): St, Path(h): Path<String>) -> ApiResult<Json<Value>> {
    let h = parse_scripthash(&h)?;
    with(&sh, |s| Ok(Json(sh_utxo_impl(s, &h))))
}

fn addr_hash(a: &str) -> ApiResult<sha256::Hash> {
    Ok(script_hash(&parse_address(a)?))
}

async fn addr_stats(State(sh): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let hash = addr_hash(&a)?;
    with(&sh, |s| {
        let (c, m) = sh_stats_impl(s, &hash);
        Ok(Json(json!({ "address": a, "chain_stats": c, "mempool_stats": m })))
    })
}

async fn addr_txs(State(sh): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let h = addr_hash(&a)?;
    with(&sh, |s| Ok(Json(sh_txs_impl(s, &h))))
}

async fn addr_txs_chain(State(sh): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let h = addr_hash(&a)?;
    with(&sh, |s| Ok(Json(sh_chain_impl(s, &h, None))))
}

async fn addr_txs_chain_after(
    State(sh): St,
    Path((a, last)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let h = addr_hash(&a)?;
    let last = parse_txid(&last)?;
    with(&sh, |s| Ok(Json(sh_chain_impl(s, &h, Some(last)))))
}

async fn addr_txs_mempool(State(sh): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let h = addr_hash(&a)?;
    with(&sh, |s| Ok(Json(sh_mempool_impl(s, &h))))
}

async fn addr_utxo(State(sh): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let h = addr_hash(&a)?;
    with(&sh, |s| Ok(Json(sh_utxo_impl(s, &h))))
}

// ---------------------------------------------------------------- mempool, fees

async fn mempool_stats(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let vsize: u64 = s.mempool.values().map(|e| e.vsize).sum();
        let fee: u64 = s.mempool.values().map(|e| e.fee).sum();
        Ok(Json(json!({
            "count": s.mempool.len(),
            "vsize": vsize,
            "total_fee": fee,
            "fee_histogram": [],
        })))
    })
}

async fn mempool_txids(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let ids: Vec<String> = s.mempool.keys().map(|t| t.to_string()).collect();
        Ok(Json(json!(ids)))
    })
}

async fn mempool_recent(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        let mut e: Vec<(&Txid, &crate::chain::MempoolEntry)> = s.mempool.iter().collect();
        e.sort_unstable_by_key(|x| std::cmp::Reverse(x.1.seq));
        let list: Vec<Value> = e
            .into_iter()
            .take(10)
            .map(|(t, m)| {
                let value: u64 = s
                    .txs
                    .get(t)
                    .map(|r| r.tx.output.iter().map(|o| o.value.to_sat()).sum())
                    .unwrap_or(0);
                json!({ "txid": t.to_string(), "fee": m.fee, "vsize": m.vsize, "value": value })
            })
            .collect();
        Ok(Json(Value::Array(list)))
    })
}

/// What `/fee-estimates` serves: for every target of [`FEE_TARGETS`] (and of the override),
/// the override's rate (a target it does not name takes the rate of the largest named target
/// below it, or of the smallest named one) or else `base_sat_vb`, floored at the mempool
/// minimum fee rate.
pub(crate) fn served_fee_estimates(base_sat_vb: f64, s: &ChainState) -> BTreeMap<u16, f64> {
    let floor = s.min_fee_rate_sat_kvb as f64 / 1000.0;
    let mut targets: BTreeSet<u16> = FEE_TARGETS.into_iter().collect();
    if let Some(curve) = &s.fee_estimates {
        targets.extend(curve.keys().copied());
    }
    targets
        .into_iter()
        .map(|t| {
            let rate = match &s.fee_estimates {
                Some(curve) => curve
                    .range(..=t)
                    .next_back()
                    .or_else(|| curve.iter().next())
                    .map(|(_, r)| *r)
                    .unwrap_or(base_sat_vb),
                None => base_sat_vb,
            };
            (t, rate.max(floor))
        })
        .collect()
}

fn estimates_json(map: &BTreeMap<u16, f64>) -> Value {
    Value::Object(map.iter().map(|(t, r)| (t.to_string(), json!(r))).collect())
}

async fn fee_estimates(State(sh): St) -> ApiResult<Json<Value>> {
    let base = sh.fee_rate_sat_vb;
    with(&sh, |s| Ok(Json(estimates_json(&served_fee_estimates(base, s)))))
}

// ---------------------------------------------------------------- control

async fn ctl_info(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        Ok(Json(json!({
            "height": s.tip_height(),
            "tip": s.tip_hash().to_string(),
            "mempool": s.mempool.len(),
            "min_fee_rate_sat_vb": s.min_fee_rate_sat_kvb as f64 / 1000.0,
            "max_block_vsize": s.max_block_vsize,
            "miner_address": Address::from_script(&s.miner_spk, Network::Regtest)
                .map(|a| a.to_string())
                .unwrap_or_default(),
        })))
    })
}

#[derive(Deserialize)]
struct MineReq {
    blocks: u32,
    address: Option<String>,
}

#[derive(Deserialize)]
struct FundReq {
    address: String,
    amount_sat: u64,
}

#[derive(Deserialize)]
struct ReorgReq {
    depth: u32,
}

async fn blocking<T: Send + 'static>(
    sh: Arc<Shared>,
    f: impl FnOnce(&mut ChainState) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || with(&sh, f))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn ctl_mine(State(sh): St, Json(req): Json<MineReq>) -> ApiResult<Json<Value>> {
    let spk = match &req.address {
        Some(a) => Some(parse_address(a)?),
        None => None,
    };
    let hashes = blocking(sh, move |s| {
        let spk = spk.unwrap_or_else(|| s.miner_spk.clone());
        Ok(s.mine(req.blocks, &spk)?)
    })
    .await?;
    let list: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
    Ok(Json(json!({ "hashes": list })))
}

async fn ctl_fund(State(sh): St, Json(req): Json<FundReq>) -> ApiResult<Json<Value>> {
    let spk = parse_address(&req.address)?;
    let txid = blocking(sh, move |s| Ok(s.fund(&spk, Amount::from_sat(req.amount_sat))?)).await?;
    Ok(Json(json!({ "txid": txid.to_string() })))
}

#[derive(Deserialize)]
struct DropReq {
    txid: String,
    #[serde(default)]
    forever: bool,
}

async fn ctl_drop(State(sh): St, Json(req): Json<DropReq>) -> ApiResult<Json<Value>> {
    let txid = parse_txid(&req.txid)?;
    let forever = req.forever;
    let dropped = blocking(sh, move |s| Ok(s.drop_tx(txid, forever))).await?;
    Ok(Json(json!({ "dropped": dropped })))
}

async fn ctl_reorg(State(sh): St, Json(req): Json<ReorgReq>) -> ApiResult<Json<Value>> {
    let hashes = blocking(sh, move |s| Ok(s.reorg(req.depth)?)).await?;
    let list: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
    Ok(Json(json!({ "hashes": list })))
}

async fn ctl_mempool_entry(State(sh): St, Path(txid): Path<String>) -> ApiResult<Json<Value>> {
    let txid = parse_txid(&txid)?;
    with(&sh, |s| {
        let (fee, vsize) = s.mempool_entry(&txid).ok_or_else(|| not_found("Transaction"))?;
        Ok(Json(json!({
            "txid": txid.to_string(),
            "fee": fee,
            "vsize": vsize,
            "fee_rate_sat_vb": if vsize == 0 { 0.0 } else { fee as f64 / vsize as f64 },
        })))
    })
}

#[derive(Deserialize)]
struct MinFeeRateReq {
    sat_vb: f64,
}

async fn ctl_min_fee_rate(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| Ok(Json(json!({ "sat_vb": s.min_fee_rate_sat_kvb as f64 / 1000.0 }))))
}

async fn ctl_set_min_fee_rate(
    State(sh): St,
    Json(req): Json<MinFeeRateReq>,
) -> ApiResult<Json<Value>> {
    let rate = crate::sat_kvb("sat_vb", req.sat_vb)?;
    let evicted = blocking(sh, move |s| Ok(s.set_min_fee_rate(rate))).await?;
    let list: Vec<String> = evicted.iter().map(|t| t.to_string()).collect();
    Ok(Json(json!({ "sat_vb": rate as f64 / 1000.0, "evicted": list })))
}

fn fee_estimates_json(base: f64, s: &ChainState) -> Value {
    json!({
        "override": s.fee_estimates.as_ref().map(estimates_json),
        "estimates": estimates_json(&served_fee_estimates(base, s)),
    })
}

async fn ctl_fee_estimates(State(sh): St) -> ApiResult<Json<Value>> {
    let base = sh.fee_rate_sat_vb;
    with(&sh, |s| Ok(Json(fee_estimates_json(base, s))))
}

async fn ctl_set_fee_estimates(
    State(sh): St,
    Json(req): Json<Option<BTreeMap<u16, f64>>>,
) -> ApiResult<Json<Value>> {
    if let Some(map) = &req {
        crate::check_fee_estimates(map)?;
    }
    let base = sh.fee_rate_sat_vb;
    with(&sh, |s| {
        s.fee_estimates = req;
        Ok(Json(fee_estimates_json(base, s)))
    })
}

#[derive(Deserialize)]
struct MaxBlockVsizeReq {
    vsize: Option<u64>,
}

async fn ctl_max_block_vsize(State(sh): St) -> ApiResult<Json<Value>> {
    with(&sh, |s| Ok(Json(json!({ "vsize": s.max_block_vsize }))))
}

async fn ctl_set_max_block_vsize(
    State(sh): St,
    Json(req): Json<MaxBlockVsizeReq>,
) -> ApiResult<Json<Value>> {
    with(&sh, |s| {
        s.max_block_vsize = req.vsize;
        Ok(Json(json!({ "vsize": s.max_block_vsize })))
    })
}
