//! The simulated world the nodes share: a chain (blocks, mempool, reorgs), a Lightning network
//! (hold invoices, payments, their events) and a clock. Everything happens when the driver says
//! so: nothing here runs on its own, so a seeded driver replays a run exactly.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use bitcoin::{FeeRate, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use looper_node::lightning::LightningEvent;
use looper_protocol::{PaymentHash, Preimage};

/// Start height of the simulated chain.
pub const START_HEIGHT: u32 = 1_000;
/// Start time of the simulated clock (Unix seconds).
pub const START_TIME: u64 = 1_800_000_000;

/// A node of the world (index into its per-node tables).
pub type NodeIdx = usize;

/// Where a payment stands, as the payer's Lightning node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayState {
    /// On its way to the payee (not arrived yet).
    InFlight,
    /// Arrived and held by the payee.
    Held,
    /// Settled: the payer learnt the preimage.
    Succeeded,
    /// Failed back.
    Failed,
}

/// One payment (one hash pays at most once: a second `pay` of a hash in flight or done is
/// refused, as LDK does).
#[derive(Debug, Clone)]
pub struct Payment {
    /// Payer.
    pub from: NodeIdx,
    /// Payee.
    pub to: NodeIdx,
    /// Amount, msat.
    pub amount_msat: u64,
    /// Where it stands.
    pub state: PayState,
    /// Height at which the held HTLC times out (failed back if not settled before).
    pub expiry_height: u32,
    /// The preimage, once settled.
    pub preimage: Option<Preimage>,
    /// Times `pay` started a payment for this hash (more than one successful payment = a
    /// double payment).
    pub attempts: u32,
}

/// An invoice issued by a node for a payment hash: a hold invoice, or a plain one that the
/// payee's node settles as soon as the payment arrives.
#[derive(Debug, Clone)]
pub struct Invoice {
    /// Issuer.
    pub payee: NodeIdx,
    /// Amount, msat.
    pub amount_msat: u64,
    /// A plain invoice's preimage (the node made it); `None` for a hold invoice.
    pub preimage: Option<Preimage>,
}

/// The world.
#[derive(Debug)]
pub struct World {
    /// Chain tip height.
    pub tip: u32,
    /// Clock.
    pub now: u64,
    /// Fee-rate estimate.
    pub fee_rate: FeeRate,
    /// Blocks are full of transactions paying this rate (sat/vB of [`sim_vsize`]): one paying
    /// less, alone and with its children in the mempool (CPFP), waits. 0: everything is mined.
    pub mine_min_fee_rate_sat_vb: u64,
    /// Blocks above [`START_HEIGHT`], each its transactions.
    pub blocks: Vec<Vec<Transaction>>,
    /// Unconfirmed transactions.
    pub mempool: Vec<Transaction>,
    /// Every accepted broadcast: (node, txid).
    pub broadcasts: Vec<(NodeIdx, Txid)>,
    /// Broadcasts refused, with why.
    pub refused: Vec<(NodeIdx, String)>,
    /// Nodes whose chain source fails.
    pub chain_down: Vec<bool>,
    /// Per node: the tip reads its chain source answered.
    pub tip_reads: Vec<u64>,
    /// Nodes that crashed and have not restarted: every effect they attempt is dropped.
    pub dead: Vec<bool>,
    /// Lightning node keys.
    pub ln_keys: Vec<SecretKey>,
    /// Invoices by payment hash.
    pub invoices: BTreeMap<PaymentHash, Invoice>,
    /// Payments by payment hash.
    pub payments: BTreeMap<PaymentHash, Payment>,
    /// Lightning events per node not yet acknowledged: (sequence, event).
    pub ln_events: Vec<VecDeque<(u64, LightningEvent)>>,
    /// Lightning events per node already acknowledged (for replays).
    pub ln_acked: Vec<Vec<LightningEvent>>,
    /// Payments that arrive only from this height on (a slow route), per hash.
    pub slow_until: BTreeMap<PaymentHash, u32>,
    /// Blocks each node waits before settling a payment it was asked to (a malicious seller's
    /// late settlement; 0: at once).
    pub settle_delay: Vec<u32>,
    /// Seconds the clock moves per block (600 on a real chain; less makes long waits short).
    pub block_secs: u64,
    /// Blocks each node's payments spend in flight before they reach the payee (a slow route).
    pub payment_delay: Vec<u32>,
    /// Per node: what its (one, simulated) channel can receive, msat.
    pub ln_inbound_msat: Vec<u64>,
    /// Each node's Lightning outbound capacity (what a loop-in maker checks it can pay).
    pub ln_outbound_msat: Vec<u64>,
    /// Settlements held back: (hash, preimage, height from which it settles).
    pub deferred: Vec<(PaymentHash, Preimage, u32)>,
    next_seq: u64,
    /// Free-form log of what happened (printed when a run fails).
    pub log: Vec<String>,
}

/// The world, shared by the nodes' fakes and the driver.
pub type SharedWorld = Arc<Mutex<World>>;

/// Locks the world (a poisoned lock is taken over: the world is plain data).
pub fn lock(world: &SharedWorld) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl World {
    /// A world for `nodes` nodes, each funded with `funds` (one output each to its wallet
    /// script in the first block).
    pub fn shared(nodes: usize, wallet_scripts: &[ScriptBuf], funds: u64) -> SharedWorld {
        let ln_keys =
            (0..nodes).map(|i| key(u8::try_from(i).unwrap_or(0).wrapping_add(11))).collect();
        let coinbase = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![],
            output: wallet_scripts
                .iter()
                .map(|s| TxOut {
                    value: bitcoin::Amount::from_sat(funds),
                    script_pubkey: s.clone(),
                })
                .collect(),
        };
        Arc::new(Mutex::new(World {
            tip: START_HEIGHT,
            now: START_TIME,
            fee_rate: FeeRate::from_sat_per_vb_u32(2),
            mine_min_fee_rate_sat_vb: 0,
            blocks: Vec::new(),
            mempool: vec![coinbase],
            broadcasts: Vec::new(),
            refused: Vec::new(),
            chain_down: vec![false; nodes],
            dead: vec![false; nodes],
            ln_keys,
            invoices: BTreeMap::new(),
            payments: BTreeMap::new(),
            ln_events: vec![VecDeque::new(); nodes],
            ln_acked: vec![Vec::new(); nodes],
            slow_until: BTreeMap::new(),
            settle_delay: vec![0; nodes],
            tip_reads: vec![0; nodes],
            block_secs: 600,
            payment_delay: vec![0; nodes],
            ln_inbound_msat: vec![1_000_000_000_000; nodes],
            ln_outbound_msat: vec![1_000_000_000_000; nodes],
            deferred: Vec::new(),
            next_seq: 0,
            log: Vec::new(),
        }))
    }

    /// A node's Lightning node id.
    pub fn ln_node_id(&self, node: NodeIdx) -> PublicKey {
        let key = self.ln_keys.get(node).copied().unwrap_or_else(|| key(1));
        key.public_key(&Secp256k1::new())
    }

    /// Every transaction with its confirmation height (mempool: `None`).
    pub fn all(&self) -> impl Iterator<Item = (&Transaction, Option<u32>)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                let h = START_HEIGHT + 1 + u32::try_from(i).unwrap_or(0);
                b.iter().map(move |t| (t, Some(h)))
            })
            .chain(self.mempool.iter().map(|t| (t, None)))
    }

    /// The fee of `tx` (its inputs from the chain or the mempool), if every input is known.
    pub fn fee_of(&self, tx: &Transaction) -> Option<u64> {
        let mut inputs = 0u64;
        for i in &tx.input {
            inputs = inputs.checked_add(self.output(i.previous_output)?.value.to_sat())?;
        }
        inputs.checked_sub(tx.output.iter().map(|o| o.value.to_sat()).sum())
    }

    /// The next block's transactions and those left waiting: all of the mempool, unless
    /// [`World::mine_min_fee_rate_sat_vb`] is set: then a transaction goes in when it, or it
    /// with its mempool children, pays that rate (the children go in with it), in mempool order.
    fn block_template(&mut self) -> (Vec<Transaction>, Vec<Transaction>) {
        let min = self.mine_min_fee_rate_sat_vb;
        let pool = std::mem::take(&mut self.mempool);
        if min == 0 {
            return (pool, Vec::new());
        }
        self.mempool = pool.clone();
        let mut chosen: Vec<Txid> = Vec::new();
        for tx in &pool {
            let txid = tx.compute_txid();
            let children: Vec<&Transaction> = pool
                .iter()
                .filter(|c| c.input.iter().any(|i| i.previous_output.txid == txid))
                .collect();
            let (mut fee, mut vsize) = (self.fee_of(tx).unwrap_or(0), sim_vsize(tx));
            let own_ok = fee >= min.saturating_mul(vsize);
            for c in &children {
                fee += self.fee_of(c).unwrap_or(0);
                vsize += sim_vsize(c);
            }
            let parents_in = tx.input.iter().all(|i| {
                !pool.iter().any(|p| p.compute_txid() == i.previous_output.txid)
                    || chosen.contains(&i.previous_output.txid)
            });
            // The world's own coins (no known inputs) are always mined.
            let own_coins = self.fee_of(tx).is_none();
            if own_coins || (parents_in && (own_ok || fee >= min.saturating_mul(vsize))) {
                chosen.push(txid);
                chosen.extend(children.iter().map(|c| c.compute_txid()));
            }
        }
        self.mempool.clear();
        pool.into_iter().partition(|t| chosen.contains(&t.compute_txid()))
    }

    /// The transaction spending `op`, if any.
    pub fn spender_of(&self, op: OutPoint) -> Option<(Transaction, Option<u32>)> {
        self.all()
            .find(|(t, _)| t.input.iter().any(|i| i.previous_output == op))
            .map(|(t, h)| (t.clone(), h))
    }

    /// The output `op`, if its transaction is in the chain or the mempool.
    pub fn output(&self, op: OutPoint) -> Option<TxOut> {
        self.all()
            .find(|(t, _)| t.compute_txid() == op.txid)
            .and_then(|(t, _)| t.output.get(op.vout as usize).cloned())
    }

    /// Accepts `tx` into the mempool unless it conflicts, misses inputs or is not final.
    pub fn broadcast(&mut self, node: NodeIdx, tx: Transaction) -> Result<Txid, String> {
        let txid = tx.compute_txid();
        if self.all().any(|(t, _)| t.compute_txid() == txid) {
            return Ok(txid);
        }
        let reason = if tx.input.iter().any(|i| self.spender_of(i.previous_output).is_some()) {
            Some("conflict")
        } else if !tx.input.iter().all(|i| self.output(i.previous_output).is_some()) {
            Some("missing inputs")
        } else if tx.lock_time.is_block_height() && tx.lock_time.to_consensus_u32() > self.tip {
            Some("non-final")
        } else {
            None
        };
        if let Some(r) = reason {
            self.log.push(format!("node {node} broadcast of {txid} refused: {r}"));
            self.refused.push((node, format!("{txid}: {r}")));
            return Err(r.to_string());
        }
        self.log.push(format!("node {node} broadcast {txid}"));
        self.broadcasts.push((node, txid));
        self.mempool.push(tx);
        Ok(txid)
    }

    /// Mines one block with the whole mempool; time moves 10 minutes; held HTLCs past their
    /// expiry fail back; slow payments due arrive.
    pub fn mine(&mut self) {
        self.tip += 1;
        self.now += self.block_secs;
        let (txs, waiting) = self.block_template();
        self.mempool = waiting;
        self.blocks.push(txs);
        self.log.push(format!("mined {}", self.tip));
        let expired: Vec<PaymentHash> = self
            .payments
            .iter()
            .filter(|(_, p)| {
                matches!(p.state, PayState::Held | PayState::InFlight)
                    && p.expiry_height <= self.tip
            })
            .map(|(h, _)| *h)
            .collect();
        let tip = self.tip;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.deferred).into_iter().partition(|(_, _, at)| *at <= tip);
        self.deferred = later;
        for (hash, preimage, _) in due {
            self.log.push(format!("late settlement of {hash}"));
            if let Err(e) = self.settle_payment(hash, preimage) {
                self.log.push(format!("late settlement of {hash} failed: {e}"));
            }
        }
        for h in expired {
            self.log.push(format!("payment {h} timed out on its route"));
            self.fail_payment(h, "htlc expired");
        }
    }

    /// Removes the last block; its transactions go back to the mempool (a reorg of depth one).
    pub fn reorg(&mut self) {
        if let Some(txs) = self.blocks.pop() {
            self.tip -= 1;
            let mut back = txs;
            back.append(&mut self.mempool);
            self.mempool = back;
            self.log.push(format!("reorg to {}", self.tip));
        }
    }

    /// Drops `txid` and what spends it from the mempool.
    pub fn drop_from_mempool(&mut self, txid: Txid) {
        let before = self.mempool.len();
        self.mempool.retain(|t| {
            t.compute_txid() != txid && !t.input.iter().any(|i| i.previous_output.txid == txid)
        });
        if self.mempool.len() != before {
            self.log.push(format!("dropped {txid} from the mempool"));
        }
    }

    /// Queues a Lightning event for `node`.
    pub fn push_ln_event(&mut self, node: NodeIdx, event: LightningEvent) {
        self.next_seq += 1;
        if let Some(q) = self.ln_events.get_mut(node) {
            q.push_back((self.next_seq, event));
        }
    }

    /// Moves in-flight payments that may arrive to their payee (held there).
    pub fn deliver_payments(&mut self) {
        let due: Vec<PaymentHash> = self
            .payments
            .iter()
            .filter(|(h, p)| {
                p.state == PayState::InFlight
                    && self.slow_until.get(h).is_none_or(|until| *until <= self.tip)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let Some(p) = self.payments.get_mut(&h) else { continue };
            p.state = PayState::Held;
            let (to, amount_msat) = (p.to, p.amount_msat);
            let plain = self.invoices.get(&h).and_then(|i| i.preimage.clone());
            if let Some(preimage) = plain {
                // A plain invoice: the payee's node claims it at once.
                let _ = self.settle_payment(h, preimage);
                continue;
            }
            self.log.push(format!("payment {h} held by node {to}"));
            self.push_ln_event(
                to,
                LightningEvent::PaymentClaimable { payment_hash: h, amount_msat },
            );
        }
    }

    /// Fails a payment back: the payer learns it failed.
    pub fn fail_payment(&mut self, hash: PaymentHash, reason: &str) {
        let Some(p) = self.payments.get_mut(&hash) else { return };
        if matches!(p.state, PayState::Succeeded | PayState::Failed) {
            return;
        }
        p.state = PayState::Failed;
        let from = p.from;
        self.push_ln_event(
            from,
            LightningEvent::PaymentFailed { payment_hash: Some(hash), reason: reason.into() },
        );
    }

    /// Settles a held payment with its preimage.
    pub fn settle_payment(&mut self, hash: PaymentHash, preimage: Preimage) -> Result<(), String> {
        if sha256::Hash::hash(&preimage.0).to_byte_array() != hash.0 {
            return Err("wrong preimage".into());
        }
        let Some(p) = self.payments.get_mut(&hash) else { return Err("no payment".into()) };
        if p.state != PayState::Held {
            return Err(format!("payment is {:?}", p.state));
        }
        p.state = PayState::Succeeded;
        p.preimage = Some(preimage.clone());
        let (from, to, amount_msat) = (p.from, p.to, p.amount_msat);
        self.log.push(format!("payment {hash} settled"));
        self.push_ln_event(
            from,
            LightningEvent::PaymentSucceeded {
                payment_hash: hash,
                preimage,
                fee_paid_msat: Some(0),
            },
        );
        self.push_ln_event(to, LightningEvent::PaymentClaimed { payment_hash: hash, amount_msat });
        Ok(())
    }

    /// Unspent outputs paying `script`.
    pub fn unspent(&self, scripts: &[ScriptBuf]) -> Vec<(OutPoint, TxOut)> {
        let mut out = Vec::new();
        for (t, _) in self.all() {
            let txid = t.compute_txid();
            for (vout, o) in t.output.iter().enumerate() {
                if !scripts.contains(&o.script_pubkey) {
                    continue;
                }
                let op = OutPoint { txid, vout: u32::try_from(vout).unwrap_or(u32::MAX) };
                if self.spender_of(op).is_none() {
                    out.push((op, o.clone()));
                }
            }
        }
        out
    }
}

/// A fixed test key from a tag (any tag below the curve order is valid).
pub fn key(tag: u8) -> SecretKey {
    SecretKey::from_slice(&[tag; 32])
        .unwrap_or_else(|_| SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng()))
}

/// The size the world prices a transaction at: its vsize with a key-path witness on each input
/// (the simulated transactions carry none).
pub fn sim_vsize(tx: &Transaction) -> u64 {
    (tx.vsize() as u64).saturating_add(17u64.saturating_mul(tx.input.len() as u64))
}
