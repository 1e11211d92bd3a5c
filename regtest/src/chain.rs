//! Chain state: block building, the mempool, the UTXO set and the indexes behind the Esplora API.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::absolute::LockTime;
use bitcoin::blockdata::block::{Header, Version as BlockVersion};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, CompressedPublicKey, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Weight, Witness,
};
use bitcoinkernel as bk;
use bitcoinkernel::prelude::*;

use crate::error::{Error, Result};
use crate::kernel::Kernel;

/// Blocks a coinbase output must wait before it can be spent.
pub const COINBASE_MATURITY: u32 = 100;
/// Regtest proof-of-work limit in compact form.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Regtest halving interval.
const HALVING_INTERVAL: u32 = 150;
const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Weight kept free for the coinbase when filling a block.
const COINBASE_WEIGHT_RESERVE: u64 = 4000;
const LOCKTIME_THRESHOLD: u32 = 500_000_000;
/// BIP-125 rule 5: the most mempool transactions one replacement may evict (Bitcoin Core's
/// `MAX_REPLACEMENT_CANDIDATES`).
pub const MAX_REPLACEMENT_CANDIDATES: u64 = 100;
/// Incremental relay fee rate (sat/kvB) a replacement pays for its own size (Bitcoin Core's
/// `DEFAULT_INCREMENTAL_RELAY_FEE`, BIP-125 rule 4).
pub const INCREMENTAL_RELAY_FEE_SAT_KVB: u64 = 1000;

/// A confirmed, unspent output.
#[derive(Debug, Clone)]
pub(crate) struct Coin {
    pub txout: TxOut,
    pub height: u32,
    pub coinbase: bool,
}

/// A block the chain knows (active or stale).
pub(crate) struct BlockRec {
    pub block: Block,
    pub height: u32,
    pub size: usize,
    pub weight: u64,
    /// Coins spent by this block, recorded when it was connected.
    pub undo: Vec<(OutPoint, Coin)>,
}

/// A transaction the chain has seen.
pub(crate) struct TxRec {
    pub tx: Transaction,
    /// (block hash, height, position) while confirmed in the active chain.
    pub confirmed: Option<(BlockHash, u32, usize)>,
    pub fee: u64,
}

/// A mempool entry.
pub(crate) struct MempoolEntry {
    pub seq: u64,
    pub fee: u64,
    pub vsize: u64,
    /// When it entered the mempool (Unix seconds) and the tip height then (Bitcoin Core's
    /// `getmempoolentry` `time` and `height`).
    pub time: u64,
    pub height: u32,
}

/// The full state of one regtest chain.
pub(crate) struct ChainState {
    pub kernel: Kernel,
    pub blocks: HashMap<BlockHash, BlockRec>,
    /// Active chain, index = height.
    pub active: Vec<BlockHash>,
    pub txs: HashMap<Txid, TxRec>,
    pub utxos: HashMap<OutPoint, Coin>,
    pub chain_spends: HashMap<OutPoint, (Txid, u32)>,
    pub mempool: HashMap<Txid, MempoolEntry>,
    pub mempool_spends: HashMap<OutPoint, (Txid, u32)>,
    pub script_txs: HashMap<sha256::Hash, Vec<Txid>>,
    indexed: HashSet<Txid>,
    /// Transactions dropped because the kernel rejected a block containing them.
    pub dropped: HashMap<Txid, String>,
    /// Transactions the harness declared double-spent ([`ChainState::drop_tx`] with `forever`):
    /// refused from then on, as if a conflicting transaction had confirmed.
    pub banned: std::collections::HashSet<Txid>,
    mempool_seq: u64,
    extra_nonce: u64,
    pub miner_key: SecretKey,
    pub miner_spk: ScriptBuf,
    /// Mempool minimum fee rate in sat/kvB (0: off); see [`ChainState::set_min_fee_rate`].
    pub min_fee_rate_sat_kvb: u64,
    /// Most vsize of mempool transactions one block takes (`None`: the consensus weight limit
    /// only).
    pub max_block_vsize: Option<u64>,
    /// Per-target override of `/fee-estimates` (sat/vB), floored at the minimum fee rate.
    pub fee_estimates: Option<BTreeMap<u16, f64>>,
}

/// Bitcoin Core's `CFeeRate(fee, size)`: sat/kvB, truncated.
pub(crate) fn fee_rate_sat_kvb(fee: u64, vsize: u64) -> u64 {
    fee.saturating_mul(1000).checked_div(vsize).unwrap_or(0)
}

/// Bitcoin Core's `CFeeRate::GetFee`: the fee for `vsize` at `rate_sat_kvb`, rounded up.
pub(crate) fn fee_at(rate_sat_kvb: u64, vsize: u64) -> u64 {
    rate_sat_kvb.saturating_mul(vsize).div_ceil(1000)
}

/// Bitcoin Core's `CFeeRate::ToString`: `0.00002000 BTC/kvB`.
fn format_fee_rate(rate_sat_kvb: u64) -> String {
    format!("{}.{:08} BTC/kvB", rate_sat_kvb / 100_000_000, rate_sat_kvb % 100_000_000)
}

/// Whether `a_fee / a_vsize` is below `b_fee / b_vsize` (exact, no rounding).
fn rate_lt(a_fee: u64, a_vsize: u64, b_fee: u64, b_vsize: u64) -> bool {
    u128::from(a_fee) * u128::from(b_vsize) < u128::from(b_fee) * u128::from(a_vsize)
}

/// A candidate package in block selection: a transaction with its not yet selected mempool
/// ancestors, ordered by fee rate, then by arrival.
struct Candidate {
    fee: u64,
    vsize: u64,
    seq: u64,
    idx: usize,
    version: u64,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        let a = u128::from(self.fee) * u128::from(other.vsize.max(1));
        let b = u128::from(other.fee) * u128::from(self.vsize.max(1));
        a.cmp(&b)
            .then_with(|| other.seq.cmp(&self.seq))
            .then_with(|| other.idx.cmp(&self.idx))
            .then_with(|| self.version.cmp(&other.version))
    }
}

/// Hash used by Esplora's `/scripthash/` endpoints: SHA256 of the script, in natural order.
pub fn script_hash(script: &bitcoin::Script) -> sha256::Hash {
    sha256::Hash::hash(script.as_bytes())
}

/// Block subsidy at `height` on regtest.
pub fn subsidy(height: u32) -> u64 {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        0
    } else {
        (50 * 100_000_000u64) >> halvings
    }
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

fn format_money(sat: u64) -> String {
    let s = format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000);
    let s = s.trim_end_matches('0');
    let s = s.strip_suffix('.').map(|x| format!("{x}.00")).unwrap_or(s.to_string());
    if s.ends_with('.') {
        format!("{s}00")
    } else {
        s
    }
}

fn reject(txid: Txid, reason: impl Into<String>) -> Error {
    Error::TxRejected { txid, reason: reason.into() }
}

/// Mirrors Core's `CheckTransaction` to name the reason when the kernel's `check()` fails.
fn check_transaction_reason(tx: &Transaction) -> String {
    if tx.input.is_empty() {
        return "bad-txns-vin-empty".into();
    }
    if tx.output.is_empty() {
        return "bad-txns-vout-empty".into();
    }
    let stripped = tx.base_size() * 4;
    if stripped > MAX_BLOCK_WEIGHT as usize {
        return "bad-txns-oversize".into();
    }
    let mut total: u64 = 0;
    for o in &tx.output {
        if o.value > Amount::MAX_MONEY {
            return "bad-txns-vout-toolarge".into();
        }
        total = total.saturating_add(o.value.to_sat());
        if total > Amount::MAX_MONEY.to_sat() {
            return "bad-txns-txouttotal-toolarge".into();
        }
    }
    let mut seen = HashSet::new();
    for i in &tx.input {
        if !seen.insert(i.previous_output) {
            return "bad-txns-inputs-duplicate".into();
        }
    }
    if tx.is_coinbase() {
        let len = tx.input.first().map(|i| i.script_sig.len()).unwrap_or(0);
        if !(2..=100).contains(&len) {
            return "bad-cb-length".into();
        }
    } else if tx.input.iter().any(|i| i.previous_output.is_null()) {
        return "bad-txns-prevout-null".into();
    }
    "bad-txns-check-failed".into()
}

impl ChainState {
    /// Opens the kernel under `datadir`, rebuilds the indexes from the active chain, and
    /// mines `premine` blocks to the miner key when the chain is fresh.
    pub fn open(datadir: &std::path::Path, premine: u32) -> Result<Self> {
        let kernel = Kernel::open(datadir)?;
        let seed = sha256::Hash::hash(b"looper-regtest miner key v1");
        let miner_key = SecretKey::from_slice(seed.as_byte_array())
            .map_err(|e| Error::Kernel(format!("miner key: {e}")))?;
        let secp = Secp256k1::signing_only();
        let pk = CompressedPublicKey(miner_key.public_key(&secp));
        let miner_spk = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
        let mut state = ChainState {
            kernel,
            blocks: HashMap::new(),
            active: Vec::new(),
            txs: HashMap::new(),
            utxos: HashMap::new(),
            chain_spends: HashMap::new(),
            mempool: HashMap::new(),
            mempool_spends: HashMap::new(),
            script_txs: HashMap::new(),
            indexed: HashSet::new(),
            dropped: HashMap::new(),
            banned: std::collections::HashSet::new(),
            mempool_seq: 0,
            extra_nonce: 0,
            miner_key,
            miner_spk,
            min_fee_rate_sat_kvb: 0,
            max_block_vsize: None,
            fee_estimates: None,
        };
        let (tip, _) = state.kernel.tip();
        for h in 0..=tip {
            let block = state.kernel.read_block_at(h)?;
            let hash = block.block_hash();
            state.insert_block(block, h);
            state.connect(hash)?;
        }
        state.extra_nonce = u64::from(tip) + 1;
        if tip == 0 && premine > 0 {
            let spk = state.miner_spk.clone();
            state.mine(premine, &spk)?;
        }
        Ok(state)
    }

    /// Height of the active tip.
    pub fn tip_height(&self) -> u32 {
        u32::try_from(self.active.len().saturating_sub(1)).unwrap_or(0)
    }

    /// Hash of the active tip.
    pub fn tip_hash(&self) -> BlockHash {
        self.active.last().copied().unwrap_or_else(BlockHash::all_zeros)
    }

    /// A mark that differs whenever the active chain or the mempool changed since it was taken
    /// (the tip, the mempool's arrival counter and its size): the Electrum server compares it to
    /// know when to recompute its subscriptions' notifications.
    pub fn change_mark(&self) -> (BlockHash, u64, usize) {
        (self.tip_hash(), self.mempool_seq, self.mempool.len())
    }

    /// Whether `hash` is in the active chain.
    pub fn in_active(&self, hash: &BlockHash) -> bool {
        self.blocks
            .get(hash)
            .map(|b| self.active.get(b.height as usize) == Some(hash))
            .unwrap_or(false)
    }

    /// Median time past of the block `hash` (median of it and its 10 ancestors).
    pub fn mtp(&self, hash: &BlockHash) -> u32 {
        let mut times = Vec::with_capacity(11);
        let mut cur = Some(*hash);
        while let Some(h) = cur {
            if times.len() == 11 {
                break;
            }
            match self.blocks.get(&h) {
                Some(rec) => {
                    times.push(rec.block.header.time);
                    cur =
                        if rec.height == 0 { None } else { Some(rec.block.header.prev_blockhash) };
                }
                None => break,
            }
        }
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or(0)
    }

    fn insert_block(&mut self, block: Block, height: u32) {
        let hash = block.block_hash();
        let size = block.total_size();
        let weight = block.weight().to_wu();
        self.blocks.entry(hash).or_insert(BlockRec {
            block,
            height,
            size,
            weight,
            undo: Vec::new(),
        });
    }

    fn index_tx(&mut self, tx: &Transaction) {
        let txid = tx.compute_txid();
        if !self.indexed.insert(txid) {
            return;
        }
        let mut hashes: Vec<sha256::Hash> = Vec::new();
        for o in &tx.output {
            hashes.push(script_hash(&o.script_pubkey));
        }
        for i in &tx.input {
            if let Some(prev) = self.prevout(&i.previous_output) {
                hashes.push(script_hash(&prev.script_pubkey));
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        for h in hashes {
            self.script_txs.entry(h).or_default().push(txid);
        }
    }

    /// The output spent by `outpoint`, from any transaction the chain has seen.
    pub fn prevout(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.txs.get(&outpoint.txid).and_then(|t| t.tx.output.get(outpoint.vout as usize))
    }

    fn fee_of(&self, tx: &Transaction) -> u64 {
        if tx.is_coinbase() {
            return 0;
        }
        let inv: u64 = tx
            .input
            .iter()
            .filter_map(|i| self.prevout(&i.previous_output))
            .map(|o| o.value.to_sat())
            .sum();
        let outv: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        inv.saturating_sub(outv)
    }

    /// Connects the block `hash` (already in `blocks`) on top of the active tip.
    fn connect(&mut self, hash: BlockHash) -> Result<()> {
        let (height, txdata) = match self.blocks.get(&hash) {
            Some(rec) => (rec.height, rec.block.txdata.clone()),
            None => return Err(Error::Kernel(format!("unknown block {hash}"))),
        };
        let mut undo = Vec::new();
        for (pos, tx) in txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            let fee = if let Some(rec) = self.txs.get(&txid) { rec.fee } else { self.fee_of(tx) };
            self.txs
                .entry(txid)
                .and_modify(|r| r.confirmed = Some((hash, height, pos)))
                .or_insert(TxRec { tx: tx.clone(), confirmed: Some((hash, height, pos)), fee });
            self.index_tx(tx);
            // Leave the mempool; evict conflicting mempool transactions.
            self.remove_from_mempool(&txid, false);
            if !tx.is_coinbase() {
                for (vin, input) in tx.input.iter().enumerate() {
                    let op = input.previous_output;
                    if let Some((other, _)) = self.mempool_spends.get(&op).copied() {
                        if other != txid {
                            self.remove_from_mempool(&other, true);
                        }
                    }
                    if let Some(coin) = self.utxos.remove(&op) {
                        undo.push((op, coin));
                    }
                    self.chain_spends.insert(op, (txid, u32::try_from(vin).unwrap_or(u32::MAX)));
                }
            }
            if height > 0 {
                for (vout, out) in tx.output.iter().enumerate() {
                    if out.script_pubkey.is_op_return() {
                        continue;
                    }
                    self.utxos.insert(
                        OutPoint::new(txid, u32::try_from(vout).unwrap_or(u32::MAX)),
                        Coin { txout: out.clone(), height, coinbase: tx.is_coinbase() },
                    );
                }
            }
        }
        if let Some(rec) = self.blocks.get_mut(&hash) {
            rec.undo = undo;
        }
        if self.active.len() != height as usize {
            return Err(Error::Kernel(format!(
                "connecting block at height {height} onto chain of length {}",
                self.active.len()
            )));
        }
        self.active.push(hash);
        Ok(())
    }

    /// Disconnects the active tip; returns its non-coinbase transactions.
    fn disconnect_tip(&mut self) -> Vec<Transaction> {
        let Some(hash) = self.active.pop() else {
            return Vec::new();
        };
        let (txdata, undo) = match self.blocks.get_mut(&hash) {
            Some(rec) => (rec.block.txdata.clone(), std::mem::take(&mut rec.undo)),
            None => return Vec::new(),
        };
        for tx in txdata.iter().rev() {
            let txid = tx.compute_txid();
            for vout in 0..tx.output.len() {
                self.utxos.remove(&OutPoint::new(txid, u32::try_from(vout).unwrap_or(u32::MAX)));
            }
            for input in &tx.input {
                self.chain_spends.remove(&input.previous_output);
            }
            if let Some(rec) = self.txs.get_mut(&txid) {
                rec.confirmed = None;
            }
        }
        for (op, coin) in undo {
            self.utxos.insert(op, coin);
        }
        txdata.into_iter().filter(|t| !t.is_coinbase()).collect()
    }

    /// Brings the indexes in line with the kernel's active chain (handles reorgs).
    fn sync_from_kernel(&mut self) -> Result<()> {
        let (tip_h, _) = self.kernel.tip();
        let mut fork = std::cmp::min(tip_h, self.tip_height()) as usize;
        loop {
            let ours = self.active.get(fork).copied();
            let theirs = self.kernel.hash_at(fork as u32);
            if ours.is_some() && ours == theirs {
                break;
            }
            if fork == 0 {
                return Err(Error::Kernel("genesis mismatch".into()));
            }
            fork -= 1;
        }
        let mut returned = Vec::new();
        let reorg = self.active.len() > fork + 1;
        while self.active.len() > fork + 1 {
            let mut txs = self.disconnect_tip();
            txs.append(&mut returned);
            returned = txs;
        }
        for h in (fork as u32 + 1)..=tip_h {
            let hash = self
                .kernel
                .hash_at(h)
                .ok_or_else(|| Error::Kernel(format!("no block at height {h}")))?;
            if !self.blocks.contains_key(&hash) {
                let block = self.kernel.read_block_at(h)?;
                self.insert_block(block, h);
            }
            self.connect(hash)?;
        }
        if reorg {
            // Re-validate the mempool against the new chain: returned transactions first.
            let mut old: Vec<(u64, Txid)> = self.mempool.iter().map(|(t, e)| (e.seq, *t)).collect();
            old.sort_unstable();
            let old_txs: Vec<Transaction> =
                old.iter().filter_map(|(_, t)| self.txs.get(t).map(|r| r.tx.clone())).collect();
            self.mempool.clear();
            self.mempool_spends.clear();
            for tx in returned.into_iter().chain(old_txs) {
                let txid = tx.compute_txid();
                if let Err(e) = self.accept(tx) {
                    tracing::debug!("transaction {txid} left the mempool after a reorg: {e}");
                }
            }
        }
        Ok(())
    }

    /// Removes `txid` from the mempool (and, when `descendants`, every mempool transaction
    /// spending its outputs).
    fn remove_from_mempool(&mut self, txid: &Txid, descendants: bool) {
        if self.mempool.remove(txid).is_none() {
            return;
        }
        let Some(tx) = self.txs.get(txid).map(|r| r.tx.clone()) else {
            return;
        };
        for input in &tx.input {
            if self.mempool_spends.get(&input.previous_output).map(|s| s.0) == Some(*txid) {
                self.mempool_spends.remove(&input.previous_output);
            }
        }
        if descendants {
            for vout in 0..tx.output.len() {
                let op = OutPoint::new(*txid, u32::try_from(vout).unwrap_or(u32::MAX));
                if let Some((child, _)) = self.mempool_spends.get(&op).copied() {
                    self.remove_from_mempool(&child, true);
                }
            }
        }
    }

    /// Drops `txid` (and its descendants) from the mempool, as a node's mempool may (eviction,
    /// expiry, a restart). With `forever` the transaction is refused from then on, as if its
    /// input had been double-spent. Returns whether it was in the mempool; a confirmed
    /// transaction is left alone (reorganise it out first).
    pub fn drop_tx(&mut self, txid: Txid, forever: bool) -> bool {
        if forever {
            self.banned.insert(txid);
        }
        let was = self.mempool.contains_key(&txid);
        self.remove_from_mempool(&txid, true);
        was
    }

    /// In-mempool transactions spending outputs of `txid`.
    fn mempool_children(&self, txid: &Txid) -> Vec<Txid> {
        let outputs = self.txs.get(txid).map(|r| r.tx.output.len()).unwrap_or(0);
        let mut children = Vec::new();
        for vout in 0..outputs {
            let op = OutPoint::new(*txid, u32::try_from(vout).unwrap_or(u32::MAX));
            if let Some((child, _)) = self.mempool_spends.get(&op) {
                if !children.contains(child) {
                    children.push(*child);
                }
            }
        }
        children
    }

    /// `txid` and its mempool descendants, in arrival order (parents before children).
    fn mempool_descendants(&self, txid: &Txid) -> Vec<Txid> {
        let mut seen = HashSet::new();
        let mut stack = vec![*txid];
        while let Some(t) = stack.pop() {
            if !self.mempool.contains_key(&t) || !seen.insert(t) {
                continue;
            }
            stack.extend(self.mempool_children(&t));
        }
        let mut all: Vec<Txid> = seen.into_iter().collect();
        all.sort_by_key(|t| self.mempool.get(t).map(|e| e.seq).unwrap_or(0));
        all
    }

    /// The mempool ancestors of `tx` (itself excluded).
    fn mempool_ancestors(&self, tx: &Transaction) -> HashSet<Txid> {
        let mut seen = HashSet::new();
        let mut stack: Vec<Txid> = tx.input.iter().map(|i| i.previous_output.txid).collect();
        while let Some(t) = stack.pop() {
            if !self.mempool.contains_key(&t) || !seen.insert(t) {
                continue;
            }
            if let Some(rec) = self.txs.get(&t) {
                stack.extend(rec.tx.input.iter().map(|i| i.previous_output.txid));
            }
        }
        seen
    }

    /// Removes `txid` and its mempool descendants; returns their txids (arrival order).
    fn evict(&mut self, txid: &Txid) -> Vec<Txid> {
        let all = self.mempool_descendants(txid);
        for t in &all {
            self.remove_from_mempool(t, false);
        }
        all
    }

    /// Fee and vsize of a mempool transaction.
    pub fn mempool_entry(&self, txid: &Txid) -> Option<(u64, u64)> {
        self.mempool.get(txid).map(|e| (e.fee, e.vsize))
    }

    /// Sets the mempool minimum fee rate (sat/kvB; 0 turns it off) and evicts what falls below
    /// it, as Bitcoin Core's `TrimToSize` does when its mempool fills up: repeatedly the
    /// transaction with the lowest descendant score (the higher of its own fee rate and the fee
    /// rate of it with its mempool descendants, so a parent whose child pays for it stays), with
    /// its descendants, while that score is below the minimum. Returns the evicted txids.
    pub fn set_min_fee_rate(&mut self, rate_sat_kvb: u64) -> Vec<Txid> {
        self.min_fee_rate_sat_kvb = rate_sat_kvb;
        let mut evicted = Vec::new();
        if rate_sat_kvb == 0 {
            return evicted;
        }
        loop {
            // (fee, vsize, seq, txid) of the lowest score below the minimum.
            let mut worst: Option<(u64, u64, u64, Txid)> = None;
            for (txid, e) in &self.mempool {
                let (desc_fee, desc_vsize) = self
                    .mempool_descendants(txid)
                    .iter()
                    .filter_map(|t| self.mempool.get(t))
                    .fold((0u64, 0u64), |(f, v), d| (f + d.fee, v + d.vsize));
                let (fee, vsize) = if rate_lt(e.fee, e.vsize, desc_fee, desc_vsize) {
                    (desc_fee, desc_vsize)
                } else {
                    (e.fee, e.vsize)
                };
                if fee >= fee_at(rate_sat_kvb, vsize) {
                    continue;
                }
                let lower = match worst {
                    None => true,
                    Some((wf, wv, wseq, _)) => {
                        rate_lt(fee, vsize, wf, wv)
                            || (!rate_lt(wf, wv, fee, vsize) && e.seq < wseq)
                    }
                };
                if lower {
                    worst = Some((fee, vsize, e.seq, *txid));
                }
            }
            let Some((_, _, _, txid)) = worst else {
                break;
            };
            let gone = self.evict(&txid);
            tracing::debug!(
                "mempool minimum fee rate {}: evicted {gone:?}",
                format_fee_rate(rate_sat_kvb)
            );
            evicted.extend(gone);
        }
        evicted
    }

    /// Mempool acceptance (see the crate docs for the rules). Returns the txid.
    pub fn accept(&mut self, tx: Transaction) -> Result<Txid> {
        let txid = tx.compute_txid();
        if self.banned.contains(&txid) {
            return Err(reject(txid, "bad-txns-inputs-missingorspent (double-spent)"));
        }
        let raw = bitcoin::consensus::serialize(&tx);
        let ktx = bk::Transaction::new(&raw)
            .map_err(|e| reject(txid, format!("TX decode failed ({e})")))?;
        if let bk::TxCheckResult::Invalid(_) = ktx.check() {
            return Err(reject(txid, check_transaction_reason(&tx)));
        }
        if tx.is_coinbase() {
            return Err(reject(txid, "coinbase"));
        }
        let next_height = self.tip_height() + 1;
        let tip_mtp = self.mtp(&self.tip_hash());
        if !is_final(&tx, next_height, tip_mtp) {
            return Err(reject(txid, "non-final"));
        }
        if self.mempool.contains_key(&txid) {
            return Err(reject(txid, "txn-already-in-mempool"));
        }
        // Mempool transactions spending the same outputs: candidates for replacement (full-RBF,
        // no BIP-125 signalling needed, as Bitcoin Core 28+ by default).
        let conflicts: BTreeSet<Txid> = tx
            .input
            .iter()
            .filter_map(|i| self.mempool_spends.get(&i.previous_output).map(|s| s.0))
            .collect();
        // Inputs: confirmed UTXOs or outputs of mempool transactions.
        let mut spent: Vec<(TxOut, Option<u32>, bool)> = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            let op = input.previous_output;
            if let Some(coin) = self.utxos.get(&op) {
                spent.push((coin.txout.clone(), Some(coin.height), coin.coinbase));
            } else if self.mempool.contains_key(&op.txid) {
                match self.prevout(&op) {
                    Some(out) => spent.push((out.clone(), None, false)),
                    None => return Err(reject(txid, "bad-txns-inputs-missingorspent")),
                }
            } else {
                let known = self.txs.get(&txid).map(|r| r.confirmed.is_some()).unwrap_or(false);
                let reason =
                    if known { "txn-already-known" } else { "bad-txns-inputs-missingorspent" };
                return Err(reject(txid, reason));
            }
        }
        if !self.sequence_locks_ok(&tx, &spent, next_height) {
            return Err(reject(txid, "non-BIP68-final"));
        }
        let mut value_in: u64 = 0;
        for (out, height, coinbase) in &spent {
            if *coinbase {
                let h = height.unwrap_or(next_height);
                let depth = next_height.saturating_sub(h);
                if depth < COINBASE_MATURITY {
                    return Err(reject(
                        txid,
                        format!(
                            "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth {depth}"
                        ),
                    ));
                }
            }
            value_in = value_in.saturating_add(out.value.to_sat());
        }
        if value_in > Amount::MAX_MONEY.to_sat() {
            return Err(reject(txid, "bad-txns-inputvalues-outofrange"));
        }
        let value_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        if value_in < value_out {
            return Err(reject(
                txid,
                format!(
                    "bad-txns-in-belowout, value in ({}) < value out ({})",
                    format_money(value_in),
                    format_money(value_out)
                ),
            ));
        }
        let fee = value_in - value_out;
        let vsize = tx.vsize() as u64;
        // The mempool's minimum fee rate (Core's `CheckFeeRate`).
        let min_fee = fee_at(self.min_fee_rate_sat_kvb, vsize);
        if min_fee > 0 && fee < min_fee {
            return Err(reject(txid, format!("mempool min fee not met, {fee} < {min_fee}")));
        }
        let replaced = if conflicts.is_empty() {
            Vec::new()
        } else {
            self.replacement_checks(&tx, txid, &conflicts, fee, vsize)?
        };
        // Scripts: Bitcoin Core's interpreter through the kernel, given all spent outputs.
        let mut kouts = Vec::with_capacity(spent.len());
        for (out, _, _) in &spent {
            let spk = bk::ScriptPubkey::new(out.script_pubkey.as_bytes())
                .map_err(|e| Error::Kernel(format!("script: {e}")))?;
            let amount = i64::try_from(out.value.to_sat()).unwrap_or(i64::MAX);
            kouts.push(bk::TxOut::new(&spk, amount));
        }
        let txdata = bk::PrecomputedTransactionData::new(&ktx, &kouts)
            .map_err(|e| Error::Kernel(format!("precomputed data: {e}")))?;
        for (i, kout) in kouts.iter().enumerate() {
            let res = bk::verify(
                &kout.script_pubkey(),
                Some(kout.value()),
                &ktx,
                i,
                Some(bk::VERIFY_ALL),
                &txdata,
            );
            if res.is_err() {
                // The kernel's verify reports failure without the interpreter's error code, so
                // the parenthesised detail is generic; the prefix and the debug part follow
                // Core (the same kernel reports `block-script-verify-flag-failed` in blocks).
                let wtxid = tx.compute_wtxid();
                let op = tx.input.get(i).map(|x| x.previous_output).unwrap_or_default();
                return Err(reject(
                    txid,
                    format!(
                        "mempool-script-verify-flag-failed (script verification failed), input {i} of {txid} (wtxid {wtxid}), spending {op}"
                    ),
                ));
            }
        }
        // Accept: the replaced transactions (and their descendants) leave first.
        for old in &replaced {
            self.remove_from_mempool(old, false);
        }
        if !replaced.is_empty() {
            tracing::debug!("{txid} replaced {replaced:?}");
        }
        for (vin, input) in tx.input.iter().enumerate() {
            self.mempool_spends
                .insert(input.previous_output, (txid, u32::try_from(vin).unwrap_or(u32::MAX)));
        }
        self.mempool_seq += 1;
        let entry = MempoolEntry {
            seq: self.mempool_seq,
            fee,
            vsize,
            time: u64::from(now_secs()),
            height: self.tip_height(),
        };
        self.mempool.insert(txid, entry);
        self.txs.entry(txid).and_modify(|r| r.fee = fee).or_insert(TxRec {
            tx: tx.clone(),
            confirmed: None,
            fee,
        });
        self.index_tx(&tx);
        self.dropped.remove(&txid);
        Ok(txid)
    }

    /// BIP-125 replacement checks in Bitcoin Core's order and wording (`PreChecks`'
    /// `EntriesAndTxidsDisjoint`, then `ReplacementChecks`: rules 6, 5, 2, then 3 and 4).
    /// Returns every transaction the replacement evicts (the direct conflicts and their
    /// descendants), in arrival order.
    fn replacement_checks(
        &self,
        tx: &Transaction,
        txid: Txid,
        conflicts: &BTreeSet<Txid>,
        fee: u64,
        vsize: u64,
    ) -> Result<Vec<Txid>> {
        // A transaction may not spend an output of a transaction it replaces.
        let ancestors = self.mempool_ancestors(tx);
        if let Some(c) = conflicts.iter().find(|c| ancestors.contains(*c)) {
            return Err(reject(
                txid,
                format!(
                    "bad-txns-spends-conflicting-tx, {txid} spends conflicting transaction {c}"
                ),
            ));
        }
        // Rule 6: a higher fee rate than every direct conflict.
        let new_rate = fee_rate_sat_kvb(fee, vsize);
        for c in conflicts {
            let Some(e) = self.mempool.get(c) else { continue };
            let old_rate = fee_rate_sat_kvb(e.fee, e.vsize);
            if new_rate <= old_rate {
                return Err(reject(
                    txid,
                    format!(
                        "insufficient fee, rejecting replacement {txid}; new feerate {} <= old feerate {}",
                        format_fee_rate(new_rate),
                        format_fee_rate(old_rate)
                    ),
                ));
            }
        }
        // Rule 5: at most 100 evictions (counted as Core does: each direct conflict with its
        // descendants).
        let mut count: u64 = 0;
        let mut all: Vec<Txid> = Vec::new();
        for c in conflicts {
            let desc = self.mempool_descendants(c);
            count += desc.len() as u64;
            if count > MAX_REPLACEMENT_CANDIDATES {
                return Err(reject(
                    txid,
                    format!(
                        "too many potential replacements, rejecting replacement {txid}; too many potential replacements ({count} > {MAX_REPLACEMENT_CANDIDATES})"
                    ),
                ));
            }
            for d in desc {
                if !all.contains(&d) {
                    all.push(d);
                }
            }
        }
        all.sort_by_key(|t| self.mempool.get(t).map(|e| e.seq).unwrap_or(0));
        // Rule 2: no unconfirmed input the direct conflicts did not spend from.
        let parents_of_conflicts: HashSet<Txid> = conflicts
            .iter()
            .filter_map(|c| self.txs.get(c))
            .flat_map(|r| r.tx.input.iter().map(|i| i.previous_output.txid))
            .collect();
        for (j, input) in tx.input.iter().enumerate() {
            let parent = input.previous_output.txid;
            if !parents_of_conflicts.contains(&parent) && self.mempool.contains_key(&parent) {
                return Err(reject(
                    txid,
                    format!(
                        "replacement-adds-unconfirmed, replacement {txid} adds unconfirmed input, idx {j}"
                    ),
                ));
            }
        }
        // Rules 3 and 4: pay for everything evicted, plus the incremental relay fee for itself.
        let original: u64 = all.iter().filter_map(|t| self.mempool.get(t)).map(|e| e.fee).sum();
        if fee < original {
            return Err(reject(
                txid,
                format!(
                    "insufficient fee, rejecting replacement {txid}, less fees than conflicting txs; {} < {}",
                    format_money(fee),
                    format_money(original)
                ),
            ));
        }
        let additional = fee - original;
        let relay = fee_at(INCREMENTAL_RELAY_FEE_SAT_KVB, vsize);
        if additional < relay {
            return Err(reject(
                txid,
                format!(
                    "insufficient fee, rejecting replacement {txid}, not enough additional fees to relay; {} < {}",
                    format_money(additional),
                    format_money(relay)
                ),
            ));
        }
        Ok(all)
    }

    /// BIP-68 relative lock-times for a transaction in the next block.
    fn sequence_locks_ok(
        &self,
        tx: &Transaction,
        spent: &[(TxOut, Option<u32>, bool)],
        next_height: u32,
    ) -> bool {
        if tx.version.0 < 2 {
            return true;
        }
        let mut min_height: i64 = -1;
        let mut min_time: i64 = -1;
        for (input, (_, coin_height, _)) in tx.input.iter().zip(spent) {
            let seq = input.sequence.0;
            if seq & (1 << 31) != 0 {
                continue;
            }
            let coin_height = coin_height.unwrap_or(next_height);
            let value = i64::from(seq & 0xffff);
            if seq & (1 << 22) != 0 {
                let base = coin_height.saturating_sub(1);
                let coin_time =
                    self.active.get(base as usize).map(|h| i64::from(self.mtp(h))).unwrap_or(0);
                min_time = min_time.max(coin_time + (value << 9) - 1);
            } else {
                min_height = min_height.max(i64::from(coin_height) + value - 1);
            }
        }
        let tip_mtp = i64::from(self.mtp(&self.tip_hash()));
        min_height < i64::from(next_height) && min_time < tip_mtp
    }

    /// Builds a block on `prev` (at `height`) paying the coinbase to `spk`.
    fn build_block(
        &mut self,
        prev: BlockHash,
        height: u32,
        spk: &ScriptBuf,
        txs: Vec<Transaction>,
        fees: u64,
    ) -> Result<Block> {
        self.extra_nonce += 1;
        let mut extra = PushBytesBuf::new();
        extra
            .extend_from_slice(&self.extra_nonce.to_le_bytes())
            .map_err(|e| Error::Kernel(format!("coinbase script: {e}")))?;
        let script_sig = Builder::new().push_int(i64::from(height)).push_slice(extra).into_script();
        let mut witness = Witness::new();
        witness.push([0u8; 32]);
        let coinbase = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig,
                sequence: Sequence::MAX,
                witness,
            }],
            output: vec![TxOut {
                value: Amount::from_sat(subsidy(height) + fees),
                script_pubkey: spk.clone(),
            }],
        };
        let mut txdata = Vec::with_capacity(txs.len() + 1);
        txdata.push(coinbase);
        txdata.extend(txs);
        let time = std::cmp::max(now_secs(), self.mtp(&prev) + 1);
        let mut block = Block {
            header: Header {
                version: BlockVersion::from_consensus(0x2000_0000),
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: 0,
            },
            txdata,
        };
        // Witness commitment (BIP-141), always present.
        let witness_root =
            block.witness_root().ok_or_else(|| Error::Kernel("witness root".into()))?;
        let commitment = Block::compute_witness_commitment(&witness_root, &[0u8; 32]);
        let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        script.extend_from_slice(commitment.as_byte_array());
        if let Some(cb) = block.txdata.first_mut() {
            cb.output
                .push(TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(script) });
        }
        block.header.merkle_root =
            block.compute_merkle_root().ok_or_else(|| Error::Kernel("merkle root".into()))?;
        let target = block.header.target();
        while !target.is_met_by(block.header.block_hash()) {
            block.header.nonce = block.header.nonce.wrapping_add(1);
            if block.header.nonce == 0 {
                block.header.time += 1;
            }
        }
        Ok(block)
    }

    /// Mempool transactions for the next block and their fees: ancestor-aware greedy by fee
    /// rate (the package of a transaction and its unselected mempool ancestors with the highest
    /// fee rate first, ties by arrival; parents always before children), within the consensus
    /// weight limit and [`ChainState::max_block_vsize`]. A package that does not fit is
    /// skipped and smaller ones may still fill the space. `priority` transactions (with their
    /// ancestors) go first, whatever their fee rate and the vsize limit.
    fn select_txs(&self, priority: &[Txid]) -> (Vec<Transaction>, u64) {
        // The mempool as a graph, by index.
        let ids: Vec<Txid> = self.mempool.keys().copied().collect();
        let index: HashMap<Txid, usize> = ids.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        let n = ids.len();
        let mut fee = vec![0u64; n];
        let mut vsize = vec![0u64; n];
        let mut weight = vec![0u64; n];
        let mut seq = vec![0u64; n];
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, txid) in ids.iter().enumerate() {
            if let Some(e) = self.mempool.get(txid) {
                fee[i] = e.fee;
                vsize[i] = e.vsize;
                seq[i] = e.seq;
            }
            if let Some(rec) = self.txs.get(txid) {
                weight[i] = rec.tx.weight().to_wu();
                for input in &rec.tx.input {
                    if let Some(&p) = index.get(&input.previous_output.txid) {
                        if !parents[i].contains(&p) {
                            parents[i].push(p);
                        }
                    }
                }
            }
        }
        // Ancestor sets (memoised depth-first) and their inverse.
        let mut ancestors: Vec<Option<BTreeSet<usize>>> = vec![None; n];
        for start in 0..n {
            let mut stack = vec![(start, false)];
            while let Some((i, expanded)) = stack.pop() {
                if ancestors[i].is_some() {
                    continue;
                }
                if expanded {
                    let mut set = BTreeSet::new();
                    for &p in &parents[i] {
                        set.insert(p);
                        if let Some(a) = &ancestors[p] {
                            set.extend(a.iter().copied());
                        }
                    }
                    ancestors[i] = Some(set);
                } else {
                    stack.push((i, true));
                    for &p in &parents[i] {
                        if ancestors[p].is_none() {
                            stack.push((p, false));
                        }
                    }
                }
            }
        }
        let ancestors: Vec<BTreeSet<usize>> =
            ancestors.into_iter().map(Option::unwrap_or_default).collect();
        let mut descendants: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, anc) in ancestors.iter().enumerate() {
            for &a in anc {
                descendants[a].push(i);
            }
        }
        // Package (ancestors not yet selected + itself) fee, vsize and weight.
        let mut pkg_fee = fee.clone();
        let mut pkg_vsize = vsize.clone();
        let mut pkg_weight = weight.clone();
        for i in 0..n {
            for &a in &ancestors[i] {
                pkg_fee[i] += fee[a];
                pkg_vsize[i] += vsize[a];
                pkg_weight[i] += weight[a];
            }
        }
        let mut selected = vec![false; n];
        let mut order: Vec<usize> = Vec::new();
        let mut used_weight = COINBASE_WEIGHT_RESERVE;
        let mut used_vsize = 0u64;
        let max_vsize = self.max_block_vsize.unwrap_or(u64::MAX);
        let mut version = vec![0u64; n];
        let mut heap: BinaryHeap<Candidate> = (0..n)
            .map(|i| Candidate {
                fee: pkg_fee[i],
                vsize: pkg_vsize[i],
                seq: seq[i],
                idx: i,
                version: 0,
            })
            .collect();
        let forced: Vec<usize> = priority.iter().filter_map(|t| index.get(t).copied()).collect();
        let mut forced = forced.into_iter();
        loop {
            let (i, is_forced) = if let Some(i) = forced.next() {
                (i, true)
            } else {
                match heap.pop() {
                    Some(c) if c.version == version[c.idx] => (c.idx, false),
                    Some(_) => continue,
                    None => break,
                }
            };
            if selected[i] {
                continue;
            }
            if used_weight + pkg_weight[i] > MAX_BLOCK_WEIGHT
                || (!is_forced && used_vsize.saturating_add(pkg_vsize[i]) > max_vsize)
            {
                // Does not fit; its descendants' packages contain it and will be tried alone.
                continue;
            }
            used_weight += pkg_weight[i];
            used_vsize += pkg_vsize[i];
            // Ancestors first: an ancestor has fewer ancestors than its descendants.
            let mut package: Vec<usize> =
                ancestors[i].iter().copied().filter(|a| !selected[*a]).collect();
            package.push(i);
            package.sort_by_key(|p| (ancestors[*p].len(), seq[*p]));
            for p in package {
                selected[p] = true;
                order.push(p);
                for &d in &descendants[p] {
                    if selected[d] {
                        continue;
                    }
                    pkg_fee[d] -= fee[p];
                    pkg_vsize[d] -= vsize[p];
                    pkg_weight[d] -= weight[p];
                    version[d] += 1;
                    heap.push(Candidate {
                        fee: pkg_fee[d],
                        vsize: pkg_vsize[d],
                        seq: seq[d],
                        idx: d,
                        version: version[d],
                    });
                }
            }
        }
        let mut fees = 0;
        let mut out = Vec::with_capacity(order.len());
        for i in order {
            if let Some(rec) = self.txs.get(&ids[i]) {
                fees += fee[i];
                out.push(rec.tx.clone());
            }
        }
        (out, fees)
    }

    /// Mines one block on the tip with the mempool; drops transactions that make the kernel
    /// reject the block and rebuilds it without them.
    fn mine_one(&mut self, spk: &ScriptBuf) -> Result<BlockHash> {
        self.mine_one_with(spk, &[])
    }

    /// [`ChainState::mine_one`], with `priority` transactions selected first.
    fn mine_one_with(&mut self, spk: &ScriptBuf, priority: &[Txid]) -> Result<BlockHash> {
        loop {
            let (txs, fees) = self.select_txs(priority);
            let txids: Vec<Txid> = txs.iter().map(|t| t.compute_txid()).collect();
            let prev = self.tip_hash();
            let height = self.tip_height() + 1;
            let block = self.build_block(prev, height, spk, txs, fees)?;
            let hash = block.block_hash();
            match self.kernel.submit(&block)? {
                Ok(()) => {
                    self.insert_block(block, height);
                    self.sync_from_kernel()?;
                    if self.tip_hash() != hash {
                        return Err(Error::BlockRejected(format!(
                            "block {hash} was stored but did not become the tip"
                        )));
                    }
                    return Ok(hash);
                }
                Err(rejection) => {
                    if txids.is_empty() {
                        return Err(Error::BlockRejected(rejection.reason));
                    }
                    let culprits: Vec<Txid> = txids
                        .iter()
                        .filter(|t| {
                            let s = t.to_string();
                            rejection.log.iter().any(|l| l.contains(&s))
                        })
                        .copied()
                        .collect();
                    let drop = if culprits.is_empty() { txids } else { culprits };
                    for txid in drop {
                        tracing::warn!(
                            "dropping transaction {txid}: block rejected: {}",
                            rejection.reason
                        );
                        self.remove_from_mempool(&txid, true);
                        self.dropped.insert(txid, rejection.reason.clone());
                    }
                }
            }
        }
    }

    /// Mines `n` blocks paying to `spk`.
    pub fn mine(&mut self, n: u32, spk: &ScriptBuf) -> Result<Vec<BlockHash>> {
        (0..n).map(|_| self.mine_one(spk)).collect()
    }

    /// Replaces the last `depth` blocks with `depth + 1` new (coinbase-only) blocks, so the
    /// kernel reorganises onto the longer branch. The disconnected transactions return to the
    /// mempool when still valid.
    pub fn reorg(&mut self, depth: u32) -> Result<Vec<BlockHash>> {
        let tip = self.tip_height();
        if depth == 0 || depth > tip {
            return Err(Error::InvalidRequest(format!("reorg depth {depth} must be in 1..={tip}")));
        }
        let fork = tip - depth;
        let mut prev = self.active[fork as usize];
        let spk = self.miner_spk.clone();
        let mut hashes = Vec::new();
        for i in 0..=depth {
            let height = fork + 1 + i;
            let block = self.build_block(prev, height, &spk, Vec::new(), 0)?;
            let hash = block.block_hash();
            if let Err(r) = self.kernel.submit(&block)? {
                return Err(Error::BlockRejected(r.reason));
            }
            self.insert_block(block, height);
            hashes.push(hash);
            prev = hash;
        }
        self.sync_from_kernel()?;
        if self.tip_hash() != prev {
            return Err(Error::BlockRejected("competing branch did not become the tip".into()));
        }
        Ok(hashes)
    }

    /// Outputs of the miner key spendable in the next block.
    fn spendable_miner_coins(&self) -> Vec<(OutPoint, Coin)> {
        let next = self.tip_height() + 1;
        let mut coins: Vec<(OutPoint, Coin)> = self
            .utxos
            .iter()
            .filter(|(op, c)| {
                c.txout.script_pubkey == self.miner_spk
                    && !self.mempool_spends.contains_key(op)
                    && (!c.coinbase || next.saturating_sub(c.height) >= COINBASE_MATURITY)
            })
            .map(|(op, c)| (*op, c.clone()))
            .collect();
        coins.sort_by(|a, b| b.1.txout.value.cmp(&a.1.txout.value).then(a.0.cmp(&b.0)));
        coins
    }

    /// Sends `amount` from matured miner funds to `spk` and mines it; returns the txid.
    pub fn fund(&mut self, spk: &ScriptBuf, amount: Amount) -> Result<Txid> {
        if amount < Amount::from_sat(330) {
            return Err(Error::InvalidRequest("amount below dust".into()));
        }
        let miner = self.miner_spk.clone();
        let mut extra_blocks = 0u32;
        let (inputs, total, fee) = loop {
            let coins = self.spendable_miner_coins();
            let mut picked = Vec::new();
            let mut total = 0u64;
            let mut fee = 0u64;
            for (op, c) in coins.iter() {
                picked.push((*op, c.txout.clone()));
                total += c.txout.value.to_sat();
                // 2 sat/vB over an estimate above the real vsize, and at least the
                // mempool's minimum fee rate.
                let estimate = 11 + 68 * picked.len() as u64 + 31 * 2 + 10;
                fee = (2 * estimate).max(fee_at(self.min_fee_rate_sat_kvb, estimate));
                if total >= amount.to_sat() + fee {
                    break;
                }
            }
            if total >= amount.to_sat() + fee && !picked.is_empty() {
                break (picked, total, fee);
            }
            if extra_blocks >= 1000 {
                return Err(Error::InsufficientFunds {
                    needed: amount.to_sat() + fee,
                    available: total,
                });
            }
            // Mature more coinbases.
            self.mine_one(&miner)?;
            extra_blocks += 1;
        };
        let change = total - amount.to_sat() - fee;
        let mut outputs = vec![TxOut { value: amount, script_pubkey: spk.clone() }];
        if change >= 1000 {
            outputs.push(TxOut { value: Amount::from_sat(change), script_pubkey: miner.clone() });
        }
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        sign_p2wpkh(&mut tx, &self.miner_key, &inputs)?;
        let txid = self.accept(tx)?;
        // Confirmed in the next block whatever the mempool holds (a congested chain included).
        self.mine_one_with(&miner, &[txid])?;
        Ok(txid)
    }

    /// Total weight of a block (for the Esplora API).
    pub fn block_weight(rec: &BlockRec) -> Weight {
        Weight::from_wu(rec.weight)
    }
}

/// Core's `IsFinalTx` for a transaction in a block at `height` whose parent has MTP `mtp`.
pub fn is_final(tx: &Transaction, height: u32, mtp: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let limit = if lock < LOCKTIME_THRESHOLD { height } else { mtp };
    if lock < limit {
        return true;
    }
    tx.input.iter().all(|i| i.sequence == Sequence::MAX)
}

/// Signs every input of `tx` as P2WPKH with `key` (`prevouts` in input order).
pub fn sign_p2wpkh(
    tx: &mut Transaction,
    key: &SecretKey,
    prevouts: &[(OutPoint, TxOut)],
) -> Result<()> {
    let secp = Secp256k1::signing_only();
    let pk = bitcoin::PublicKey::new(key.public_key(&secp));
    let mut sigs = Vec::with_capacity(prevouts.len());
    {
        let mut cache = SighashCache::new(&*tx);
        for (i, (_, out)) in prevouts.iter().enumerate() {
            let sighash = cache
                .p2wpkh_signature_hash(i, &out.script_pubkey, out.value, EcdsaSighashType::All)
                .map_err(|e| Error::Kernel(format!("sighash: {e}")))?;
            let msg = Message::from_digest(sighash.to_byte_array());
            let sig = secp.sign_ecdsa(&msg, key);
            sigs.push(bitcoin::ecdsa::Signature::sighash_all(sig));
        }
    }
    for (input, sig) in tx.input.iter_mut().zip(sigs) {
        input.witness = Witness::p2wpkh(&sig, &pk.inner);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("looper-regtest-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Puts `tx` in the mempool without any check (to exercise the kernel's block validation).
    fn force_mempool(s: &mut ChainState, tx: Transaction) -> Txid {
        let txid = tx.compute_txid();
        for (vin, i) in tx.input.iter().enumerate() {
            s.mempool_spends.insert(i.previous_output, (txid, vin as u32));
        }
        s.mempool_seq += 1;
        s.mempool.insert(
            txid,
            MempoolEntry {
                seq: s.mempool_seq,
                fee: 0,
                vsize: tx.vsize() as u64,
                time: 0,
                height: 0,
            },
        );
        s.txs.insert(txid, TxRec { tx, confirmed: None, fee: 0 });
        txid
    }

    #[test]
    fn kernel_rejects_block_with_bad_signature_and_chain_rebuilds_it() {
        let dir = tempdir("badblock");
        let mut s = ChainState::open(&dir, 101).unwrap();
        assert_eq!(s.tip_height(), 101);
        // Genesis and the premined blocks are the kernel's.
        assert_eq!(s.kernel.tip().1, s.tip_hash());

        let (op, coin) = s.spendable_miner_coins().into_iter().next().unwrap();
        let good_spk = s.miner_spk.clone();
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: coin.txout.value - Amount::from_sat(1000),
                script_pubkey: good_spk.clone(),
            }],
        };
        let key = s.miner_key;
        sign_p2wpkh(&mut tx, &key, &[(op, coin.txout.clone())]).unwrap();
        let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(|w| w.to_vec()).collect();
        items[0][12] ^= 0x01;
        tx.input[0].witness = Witness::from_slice(&items);
        let bad = force_mempool(&mut s, tx);

        let hashes = s.mine(1, &good_spk).unwrap();
        assert_eq!(s.tip_height(), 102);
        assert_eq!(s.kernel.tip().1, hashes[0]);
        let block = &s.blocks[&hashes[0]].block;
        assert_eq!(block.txdata.len(), 1, "the bad transaction was left out");
        let reason = s.dropped.get(&bad).cloned().unwrap();
        eprintln!("kernel reject reason: {reason}");
        assert!(reason.contains("script-verify-flag-failed"), "{reason}");
        assert!(!s.mempool.contains_key(&bad));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn final_and_subsidy_rules() {
        assert_eq!(subsidy(0), 5_000_000_000);
        assert_eq!(subsidy(150), 2_500_000_000);
        assert_eq!(format_money(100_000_000), "1.00");
        assert_eq!(format_money(1_050_000), "0.0105");
    }
}
