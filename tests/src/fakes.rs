//! The engine's I/O over the simulated [`World`](crate::world::World): chain source, Lightning
//! node, wallet, clock, entropy, an in-memory message wire, and a store that can crash (a
//! fault-injection mock: it stops the node right after a chosen commit).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::{
    absolute::LockTime, transaction::Version, Amount, FeeRate, OutPoint, Script, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret};
use looper_node::chain::{ChainError, ChainSource, HistoryTx, OutputSpend, TxStatus};
use looper_node::engine::io::{Clock, Entropy, SwapTransport, SwapWallet};
use looper_node::lightning::{
    ChannelInfo, Lightning, LightningDelivery, LightningError, PayOutcome, PaymentInfo,
};
use looper_node::nostr::{
    EventId, Incoming, Keys as NostrKeys, PublicKey as NostrKey, TransportError,
};
use looper_node::store::{
    MemoryStore, RestoreState, StoreError, SwapEvent, SwapFilter, SwapRecord, SwapStore,
};
use looper_node::wallet::{CpfpTx, FundingTx, WalletError};
use looper_protocol::messages::{Envelope, Offer};
use looper_protocol::{PaymentHash, Preimage};
use tokio::sync::{mpsc, oneshot};

use crate::world::{lock, sim_vsize, Invoice, NodeIdx, PayState, Payment, SharedWorld};

fn down(op: &str) -> ChainError {
    ChainError::InvalidResponse { op: op.into(), reason: "simulated chain source down".into() }
}

/// A node's chain source (fails while the world says its chain is down).
pub struct SimChain {
    /// The world.
    pub world: SharedWorld,
    /// Whose.
    pub node: NodeIdx,
}

impl SimChain {
    fn check(&self, op: &str) -> Result<(), ChainError> {
        if lock(&self.world).chain_down.get(self.node).copied().unwrap_or(false) {
            return Err(down(op));
        }
        Ok(())
    }
}

fn status(h: Option<u32>) -> TxStatus {
    match h {
        Some(height) => TxStatus::Confirmed { height },
        None => TxStatus::Unconfirmed,
    }
}

#[async_trait]
impl ChainSource for SimChain {
    async fn tip_height(&self) -> Result<u32, ChainError> {
        // A network round trip's worth of waiting: other tasks run meanwhile.
        tokio::task::yield_now().await;
        self.check("read the tip")?;
        let mut w = lock(&self.world);
        if let Some(reads) = w.tip_reads.get_mut(self.node) {
            *reads += 1;
        }
        Ok(w.tip)
    }

    async fn tx_status(&self, txid: &Txid) -> Result<Option<TxStatus>, ChainError> {
        self.check("read a transaction")?;
        let w = lock(&self.world);
        let found = w.all().find(|(t, _)| t.compute_txid() == *txid).map(|(_, h)| status(h));
        Ok(found)
    }

    async fn get_tx(&self, txid: &Txid) -> Result<Option<Transaction>, ChainError> {
        self.check("read a transaction")?;
        let w = lock(&self.world);
        let found = w.all().find(|(t, _)| t.compute_txid() == *txid).map(|(t, _)| t.clone());
        Ok(found)
    }

    async fn output_spend(&self, outpoint: &OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        self.check("read a spend")?;
        let w = lock(&self.world);
        Ok(w.spender_of(*outpoint).map(|(t, h)| {
            let vin = t
                .input
                .iter()
                .position(|i| i.previous_output == *outpoint)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0);
            OutputSpend { txid: t.compute_txid(), vin, status: status(h) }
        }))
    }

    async fn script_history(&self, script: &Script) -> Result<Vec<HistoryTx>, ChainError> {
        self.check("read a script's history")?;
        let w = lock(&self.world);
        let paying: Vec<Txid> = w
            .all()
            .filter(|(t, _)| t.output.iter().any(|o| o.script_pubkey.as_script() == script))
            .map(|(t, _)| t.compute_txid())
            .collect();
        Ok(w.all()
            .filter(|(t, _)| {
                t.output.iter().any(|o| o.script_pubkey.as_script() == script)
                    || t.input.iter().any(|i| paying.contains(&i.previous_output.txid))
            })
            .map(|(t, h)| HistoryTx { tx: t.clone(), status: status(h) })
            .collect())
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.check("broadcast")?;
        let mut w = lock(&self.world);
        if w.dead.get(self.node).copied().unwrap_or(false) {
            return Err(down("broadcast (node is down)"));
        }
        let txid = tx.compute_txid();
        w.broadcast(self.node, tx.clone()).map_err(|reason| ChainError::Rejected { txid, reason })
    }

    async fn fee_rate(&self, _target_blocks: u16) -> Result<FeeRate, ChainError> {
        self.check("read the fee rate")?;
        Ok(lock(&self.world).fee_rate)
    }
}

/// A node's Lightning node: hold invoices and payments over the world's network. Events are
/// queued in the world; the driver delivers them ([`deliver_ln_event`]) or, in run mode, pumps
/// them into the channel of [`Lightning::take_events`] ([`SimLightning::pump`]).
pub struct SimLightning {
    /// The world.
    pub world: SharedWorld,
    /// Whose.
    pub node: NodeIdx,
    events: Mutex<Option<mpsc::Sender<LightningDelivery>>>,
    /// Fault-injection mock: what the node does to the invoices it issues.
    pub tamper: Mutex<Option<InvoiceTamper>>,
    /// Fault-injection mock: the node never sends a payment (a claimer that never pays).
    pub refuse_payments: std::sync::atomic::AtomicBool,
}

/// How a dishonest seller's Lightning node tampers with its invoices (fault-injection mock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceTamper {
    /// Commits to another payment hash.
    Hash,
    /// Asks 1 sat more.
    Amount,
    /// Already expired.
    Expired,
    /// Signed by another node.
    Payee,
}

impl SimLightning {
    /// The Lightning node of `node`.
    pub fn new(world: SharedWorld, node: NodeIdx) -> SimLightning {
        SimLightning {
            world,
            node,
            events: Mutex::new(None),
            tamper: Mutex::new(None),
            refuse_payments: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn alive(&self) -> Result<(), LightningError> {
        if lock(&self.world).dead.get(self.node).copied().unwrap_or(false) {
            return Err(LightningError::Task("node is down".into()));
        }
        Ok(())
    }

    /// Run mode: sends the queued events into the engine's channel (each acknowledged event is
    /// removed from the queue by the next pump; an unacknowledged one comes again).
    pub async fn pump(&self, acks: &mut Vec<(u64, oneshot::Receiver<()>)>) {
        let Some(tx) = self.events.lock().ok().and_then(|g| g.clone()) else { return };
        // Acknowledged deliveries leave the queue.
        let mut done = Vec::new();
        acks.retain_mut(|(seq, rx)| match rx.try_recv() {
            Ok(()) => {
                done.push(*seq);
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
        let pending: Vec<(u64, looper_node::lightning::LightningEvent)> = {
            let mut w = lock(&self.world);
            let node = self.node;
            for seq in done {
                ack_ln_event(&mut w, node, seq);
            }
            w.ln_events.get(node).map(|q| q.iter().cloned().collect()).unwrap_or_default()
        };
        for (seq, event) in pending {
            if acks.iter().any(|(s, _)| *s == seq) {
                continue;
            }
            let (ack, rx) = oneshot::channel();
            if tx.send(LightningDelivery::new(event, Some(ack))).await.is_ok() {
                acks.push((seq, rx));
            }
        }
    }
}

fn ack_ln_event(w: &mut crate::world::World, node: NodeIdx, seq: u64) {
    if w.dead.get(node).copied().unwrap_or(false) {
        return;
    }
    let Some(q) = w.ln_events.get_mut(node) else { return };
    if let Some(pos) = q.iter().position(|(s, _)| *s == seq) {
        if let Some((_, ev)) = q.remove(pos) {
            if let Some(acked) = w.ln_acked.get_mut(node) {
                acked.push(ev);
            }
        }
    }
}

/// Test-bed mode: hands `node`'s oldest queued Lightning event (or, with `replay`, an already
/// acknowledged one again) to `deliver`, and removes it from the queue when it was acknowledged.
pub async fn deliver_ln_event<F, Fut>(
    world: &SharedWorld,
    node: NodeIdx,
    pick: usize,
    replay: bool,
    deliver: F,
) -> bool
where
    F: FnOnce(LightningDelivery) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let item = {
        let w = lock(world);
        if replay {
            w.ln_acked
                .get(node)
                .and_then(|a| a.get(pick % a.len().max(1)))
                .cloned()
                .map(|e| (None, e))
        } else {
            w.ln_events
                .get(node)
                .and_then(|q| q.get(pick % q.len().max(1)))
                .cloned()
                .map(|(s, e)| (Some(s), e))
        }
    };
    let Some((seq, event)) = item else { return false };
    let (ack, mut rx) = oneshot::channel();
    deliver(LightningDelivery::new(event, Some(ack))).await;
    if let (Some(seq), Ok(())) = (seq, rx.try_recv()) {
        ack_ln_event(&mut lock(world), node, seq);
    }
    true
}

fn invalid(what: &'static str, reason: impl Into<String>) -> LightningError {
    LightningError::Invalid { what, reason: reason.into() }
}

#[async_trait]
impl Lightning for SimLightning {
    fn node_id(&self) -> PublicKey {
        lock(&self.world).ln_node_id(self.node)
    }

    fn take_events(&self) -> Option<mpsc::Receiver<LightningDelivery>> {
        let (tx, rx) = mpsc::channel(64);
        let mut slot = self.events.lock().ok()?;
        // Once per engine: a restarted engine takes them again when the last one's are gone
        // (what was delivered to it and not acknowledged comes again, as after a crash).
        if slot.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        *slot = Some(tx);
        Some(rx)
    }

    async fn receive_for_hash(
        &self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        expiry_secs: u32,
        _description: &str,
    ) -> Result<String, LightningError> {
        self.alive()?;
        let tamper = self.tamper.lock().ok().and_then(|t| *t);
        let mut w = lock(&self.world);
        w.invoices.insert(payment_hash, Invoice { payee: self.node, amount_msat, preimage: None });
        let (mut hash, mut amount, mut expiry, mut created) =
            (payment_hash, amount_msat, u64::from(expiry_secs), w.now);
        let mut key = w.ln_keys.get(self.node).copied().unwrap_or_else(|| crate::world::key(1));
        match tamper {
            Some(InvoiceTamper::Hash) => hash = PaymentHash([0x99; 32]),
            Some(InvoiceTamper::Amount) => amount += 1_000,
            Some(InvoiceTamper::Expired) => {
                expiry = 10;
                created -= 100;
            }
            Some(InvoiceTamper::Payee) => key = crate::world::key(8),
            None => {}
        }
        let secp = Secp256k1::new();
        InvoiceBuilder::new(Currency::Regtest)
            .description("looper test bed".into())
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .payment_secret(PaymentSecret([42; 32]))
            .duration_since_epoch(Duration::from_secs(created))
            .min_final_cltv_expiry_delta(42)
            .amount_milli_satoshis(amount)
            .expiry_time(Duration::from_secs(expiry))
            .build_signed(|h| secp.sign_ecdsa_recoverable(h, &key))
            .map(|i| i.to_string())
            .map_err(|e| invalid("invoice", e.to_string()))
    }

    async fn claim_for_hash(
        &self,
        payment_hash: PaymentHash,
        _amount_msat: u64,
        preimage: &Preimage,
    ) -> Result<(), LightningError> {
        self.alive()?;
        let mut w = lock(&self.world);
        let delay = w.settle_delay.get(self.node).copied().unwrap_or(0);
        if delay > 0 {
            let at = w.tip + delay;
            w.deferred.push((payment_hash, preimage.clone(), at));
            return Ok(());
        }
        w.settle_payment(payment_hash, preimage.clone())
            .map_err(|e| LightningError::Node { op: "claim", reason: e })
    }

    async fn fail_for_hash(&self, payment_hash: PaymentHash) -> Result<(), LightningError> {
        self.alive()?;
        let mut w = lock(&self.world);
        if w.payments.get(&payment_hash).is_some_and(|p| p.state == PayState::Held) {
            w.fail_payment(payment_hash, "failed back by the payee");
        }
        Ok(())
    }

    async fn pay(
        &self,
        invoice: &str,
        max_total_cltv_expiry_delta: u32,
    ) -> Result<PayOutcome, LightningError> {
        self.alive()?;
        if self.refuse_payments.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LightningError::Node { op: "pay", reason: "no route".into() });
        }
        let inv =
            Bolt11Invoice::from_str(invoice).map_err(|e| invalid("invoice", e.to_string()))?;
        let hash = PaymentHash(inv.payment_hash().to_byte_array());
        let amount_msat =
            inv.amount_milli_satoshis().ok_or_else(|| invalid("invoice", "no amount"))?;
        let mut w = lock(&self.world);
        if let Some(p) = w.payments.get(&hash) {
            match p.state {
                PayState::InFlight | PayState::Held => return Ok(PayOutcome::AlreadyPending),
                PayState::Succeeded => {
                    return p
                        .preimage
                        .clone()
                        .map(PayOutcome::AlreadySucceeded)
                        .ok_or_else(|| invalid("payment", "succeeded without preimage"))
                }
                PayState::Failed => {}
            }
        }
        let payee = w.invoices.get(&hash).map(|i| i.payee);
        let Some(payee) = payee.filter(|p| w.ln_node_id(*p) == inv.recover_payee_pub_key()) else {
            return Err(LightningError::Node { op: "pay", reason: "no route".into() });
        };
        let tip = w.tip;
        let delay = w.payment_delay.get(self.node).copied().unwrap_or(0);
        if delay > 0 {
            w.slow_until.insert(hash, tip + delay);
        }
        let attempts = w.payments.get(&hash).map_or(0, |p| p.attempts);
        w.log.push(format!("node {} pays {hash} ({amount_msat} msat)", self.node));
        w.payments.insert(
            hash,
            Payment {
                from: self.node,
                to: payee,
                amount_msat,
                state: PayState::InFlight,
                expiry_height: tip + max_total_cltv_expiry_delta.min(144),
                preimage: None,
                attempts: attempts + 1,
            },
        );
        Ok(PayOutcome::Started)
    }

    fn payment(&self, payment_hash: PaymentHash) -> Option<PaymentInfo> {
        let w = lock(&self.world);
        let p = w.payments.get(&payment_hash).filter(|p| p.from == self.node)?;
        let outbound = p.from == self.node;
        let status = match p.state {
            PayState::InFlight | PayState::Held => "pending",
            PayState::Succeeded => "succeeded",
            PayState::Failed => "failed",
        };
        Some(PaymentInfo {
            payment_hash: payment_hash.to_string(),
            direction: if outbound { "outbound" } else { "inbound" }.into(),
            status: status.into(),
            amount_msat: Some(p.amount_msat),
            fee_paid_msat: None,
            // As ldk-node: the preimage of outbound payments only.
            preimage: p.preimage.as_ref().filter(|_| outbound).map(|x| x.0.to_lower_hex_string()),
            updated_at: w.now,
        })
    }

    async fn invoice(
        &self,
        amount_msat: u64,
        _description: &str,
        expiry_secs: u32,
    ) -> Result<String, LightningError> {
        self.alive()?;
        let mut w = lock(&self.world);
        // The node makes the preimage; distinct per invoice.
        let n = w.invoices.len() as u64;
        let seed = [self.node.to_le_bytes().as_slice(), &n.to_le_bytes(), b"plain"].concat();
        let preimage = Preimage(sha256::Hash::hash(&seed).to_byte_array());
        let hash = PaymentHash(sha256::Hash::hash(&preimage.0).to_byte_array());
        w.invoices
            .insert(hash, Invoice { payee: self.node, amount_msat, preimage: Some(preimage) });
        let key = w.ln_keys.get(self.node).copied().unwrap_or_else(|| crate::world::key(1));
        let secp = Secp256k1::new();
        InvoiceBuilder::new(Currency::Regtest)
            .description("looper test bed prepay".into())
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .payment_secret(PaymentSecret([43; 32]))
            .duration_since_epoch(Duration::from_secs(w.now))
            .min_final_cltv_expiry_delta(18)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(u64::from(expiry_secs)))
            .build_signed(|h| secp.sign_ecdsa_recoverable(h, &key))
            .map(|i| i.to_string())
            .map_err(|e| invalid("invoice", e.to_string()))
    }

    async fn open_channel(
        &self,
        _: PublicKey,
        _: &str,
        _: u64,
        _: Option<u64>,
    ) -> Result<u128, LightningError> {
        Err(invalid("request", "not simulated"))
    }

    fn channels(&self) -> Vec<ChannelInfo> {
        // One channel standing for the node's Lightning liquidity (payments themselves are not
        // limited by it in this world).
        let w = lock(&self.world);
        let inbound_msat = w.ln_inbound_msat.get(self.node).copied().unwrap_or(0);
        let outbound_msat = w.ln_outbound_msat.get(self.node).copied().unwrap_or(0);
        vec![ChannelInfo {
            channel_id: format!("sim-{}", self.node),
            counterparty: String::new(),
            capacity_sat: inbound_msat / 1000,
            outbound_msat,
            inbound_msat,
            ready: true,
            usable: true,
        }]
    }

    async fn onchain_address(&self) -> Result<bitcoin::Address, LightningError> {
        Err(invalid("request", "not simulated"))
    }

    fn onchain_spendable_sat(&self) -> u64 {
        0
    }

    async fn sync(&self) -> Result<(), LightningError> {
        Ok(())
    }

    async fn stop(&self) -> Result<(), LightningError> {
        Ok(())
    }
}

/// A node's on-chain wallet: the world's unspent outputs to its scripts.
pub struct SimWallet {
    /// The world.
    pub world: SharedWorld,
    /// Whose.
    pub node: NodeIdx,
    /// The wallet's scripts (the first one was funded by the world).
    pub scripts: Mutex<Vec<ScriptBuf>>,
    /// Fault-injection mock: a dishonest seller's wallet pays this much less into each HTLC.
    pub shortchange_sat: AtomicU64,
    /// Fault-injection mock: the wallet refuses to fund anything (a seller that never funds).
    pub refuse_funding: std::sync::atomic::AtomicBool,
    /// Transactions built and recorded but not (yet) seen by the chain: their inputs are spent.
    pending: Mutex<Vec<Transaction>>,
}

/// The script of a node's `n`th wallet address.
pub fn wallet_script(node: NodeIdx, n: u32) -> ScriptBuf {
    let mut data = [0u8; 32];
    data[0] = 0x77;
    data[1] = u8::try_from(node).unwrap_or(0xff);
    data[2..6].copy_from_slice(&n.to_le_bytes());
    let program = bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V1, &data);
    program.map(|p| ScriptBuf::new_witness_program(&p)).unwrap_or_default()
}

impl SimWallet {
    /// The wallet of `node`, funded by the world through [`wallet_script`]`(node, 0)`.
    pub fn new(world: SharedWorld, node: NodeIdx) -> SimWallet {
        SimWallet {
            world,
            node,
            scripts: Mutex::new(vec![wallet_script(node, 0)]),
            shortchange_sat: AtomicU64::new(0),
            refuse_funding: std::sync::atomic::AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
        }
    }

    fn scripts(&self) -> Vec<ScriptBuf> {
        self.scripts.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether `script` is one of the wallet's.
    pub fn owns(&self, script: &ScriptBuf) -> bool {
        self.scripts().contains(script)
    }

    /// What the wallet holds (confirmed and unconfirmed), in sat.
    pub fn balance_sat(&self) -> u64 {
        let scripts = self.scripts();
        lock(&self.world).unspent(&scripts).iter().map(|(_, o)| o.value.to_sat()).sum()
    }
}

fn unavailable(reason: &str) -> WalletError {
    WalletError::Unavailable { reason: reason.into() }
}

#[async_trait]
impl SwapWallet for SimWallet {
    fn new_script(&self) -> Result<ScriptBuf, WalletError> {
        let mut scripts = self.scripts.lock().map_err(|_| unavailable("poisoned"))?;
        let n = u32::try_from(scripts.len()).unwrap_or(u32::MAX);
        let s = wallet_script(self.node, n);
        scripts.push(s.clone());
        Ok(s)
    }

    fn spendable_sat(&self) -> Result<u64, WalletError> {
        Ok(self.balance_sat())
    }

    async fn sync(&self) -> Result<(), WalletError> {
        Ok(())
    }

    async fn fund(
        &self,
        outputs: &[(ScriptBuf, Amount)],
        fee_rate: FeeRate,
    ) -> Result<FundingTx, WalletError> {
        if self.refuse_funding.load(Ordering::Relaxed) {
            return Err(unavailable("mock: this wallet never funds"));
        }
        let scripts = self.scripts();
        let w = lock(&self.world);
        let mut pending = self.pending.lock().map_err(|_| unavailable("poisoned"))?;
        let reserved: Vec<OutPoint> =
            pending.iter().flat_map(|t| t.input.iter().map(|i| i.previous_output)).collect();
        let short = self.shortchange_sat.load(Ordering::Relaxed);
        let mut tx_out: Vec<TxOut> = outputs
            .iter()
            .map(|(s, a)| TxOut {
                value: Amount::from_sat(a.to_sat().saturating_sub(short)),
                script_pubkey: s.clone(),
            })
            .collect();
        let need: u64 = tx_out.iter().map(|o| o.value.to_sat()).sum();
        let fee = 200 * fee_rate.to_sat_per_vb_ceil();
        let mut input = Vec::new();
        let mut have = 0u64;
        for (op, o) in w.unspent(&scripts) {
            if reserved.contains(&op) {
                continue;
            }
            if have >= need + fee {
                break;
            }
            have += o.value.to_sat();
            input.push(TxIn {
                previous_output: op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            });
        }
        if have < need + fee {
            return Err(unavailable("insufficient funds"));
        }
        let change = have - need - fee;
        let vouts = (0..outputs.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        if change > 0 {
            tx_out.push(TxOut {
                value: Amount::from_sat(change),
                script_pubkey: scripts.first().cloned().unwrap_or_default(),
            });
        }
        let tx =
            Transaction { version: Version::TWO, lock_time: LockTime::ZERO, input, output: tx_out };
        pending.push(tx.clone());
        Ok(FundingTx { tx, vouts, fee: Amount::from_sat(fee), fee_rate })
    }

    fn find_funding(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> Result<Option<(Transaction, u32)>, WalletError> {
        let pending = self.pending.lock().map_err(|_| unavailable("poisoned"))?.clone();
        for tx in &pending {
            let found =
                tx.output.iter().position(|o| &o.script_pubkey == script && o.value == amount);
            if let Some(vout) = found.and_then(|v| u32::try_from(v).ok()) {
                return Ok(Some((tx.clone(), vout)));
            }
        }
        Ok(None)
    }

    fn forget(&self, tx: &Transaction) -> Result<(), WalletError> {
        let mut pending = self.pending.lock().map_err(|_| unavailable("poisoned"))?;
        pending.retain(|t| t.compute_txid() != tx.compute_txid());
        Ok(())
    }

    fn apply_unconfirmed(&self, _tx: &Transaction) -> Result<(), WalletError> {
        Ok(())
    }

    fn max_fee_rate(&self) -> FeeRate {
        FeeRate::from_sat_per_vb_u32(200)
    }

    async fn cpfp(
        &self,
        parent: &Transaction,
        replaces: Option<&Transaction>,
        package_rate: FeeRate,
    ) -> Result<Option<CpfpTx>, WalletError> {
        let scripts = self.scripts();
        let w = lock(&self.world);
        let Some(vout) = parent.output.iter().position(|o| scripts.contains(&o.script_pubkey))
        else {
            return Ok(None);
        };
        let Some(parent_fee) = w.fee_of(parent) else { return Ok(None) };
        let rate = package_rate.to_sat_per_vb_ceil();
        let parent_vsize = sim_vsize(parent);
        if parent_fee >= rate * parent_vsize {
            return Ok(None);
        }
        let value = parent.output[vout].value.to_sat();
        let mut child = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: parent.compute_txid(),
                    vout: u32::try_from(vout).unwrap_or(0),
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::ZERO,
                script_pubkey: scripts.first().cloned().unwrap_or_default(),
            }],
        };
        let total_vsize = parent_vsize + sim_vsize(&child);
        let fee = (rate * total_vsize).saturating_sub(parent_fee);
        if value < fee + 330 {
            return Ok(None);
        }
        child.output[0].value = Amount::from_sat(value - fee);
        let mut pending = self.pending.lock().map_err(|_| unavailable("poisoned"))?;
        if let Some(old) = replaces {
            pending.retain(|t| t.compute_txid() != old.compute_txid());
        }
        pending.push(child.clone());
        let package = FeeRate::from_sat_per_kwu((parent_fee + fee) * 250 / total_vsize);
        Ok(Some(CpfpTx { tx: child, fee: Amount::from_sat(fee), package_rate: package }))
    }
}

/// The world's clock.
pub struct SimClock(pub SharedWorld);

impl Clock for SimClock {
    fn now_secs(&self) -> u64 {
        lock(&self.0).now
    }
}

/// Seeded randomness for the test bed (never for a node: its nonces would be predictable).
pub struct SeededEntropy(Mutex<bitcoin::secp256k1::rand::rngs::StdRng>);

impl SeededEntropy {
    /// From a seed.
    pub fn new(seed: u64) -> SeededEntropy {
        use bitcoin::secp256k1::rand::SeedableRng;
        SeededEntropy(Mutex::new(bitcoin::secp256k1::rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        use bitcoin::secp256k1::rand::RngCore;
        if let Ok(mut rng) = self.0.lock() {
            rng.fill_bytes(dest);
        }
    }
}

/// A message on the in-memory wire.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Unique id (the gift wrap's).
    pub id: [u8; 32],
    /// Sender.
    pub from: NodeIdx,
    /// Recipient.
    pub to: NodeIdx,
    /// The key it was sent as (the sender's identity or one of its swap keys).
    pub from_key: NostrKey,
    /// The key it was sent to.
    pub to_key: NostrKey,
    /// The message.
    pub envelope: Envelope,
}

/// The in-memory wire between the nodes (the test bed's relays): messages in flight, and per
/// node those delivered but not acknowledged (delivered again at a refetch or a restart).
#[derive(Debug, Default)]
pub struct Wire {
    /// Sent, not delivered yet.
    pub in_flight: Vec<Packet>,
    /// Delivered, not acknowledged, per node.
    pub unacked: Vec<Vec<Packet>>,
    /// Delivered and acknowledged (for replays).
    pub delivered: Vec<Packet>,
    /// Each node's Nostr identity.
    pub keys: Vec<NostrKey>,
    /// Every swap key a node ever held ([`SwapTransport::add_key`]), and whose it is (the relays
    /// take messages to a key its node gave back, which never reads them).
    pub swap_keys: std::collections::BTreeMap<NostrKey, NodeIdx>,
    /// The swap keys held now.
    pub held: std::collections::BTreeSet<NostrKey>,
    /// Messages a node sent as a key it did not hold (an invariant violation of the test bed).
    pub violations: Vec<String>,
    /// Offers published, per node.
    pub offers: Vec<Vec<Offer>>,
    next: u64,
}

impl Wire {
    /// A wire between nodes with these keys.
    pub fn new(keys: Vec<NostrKey>) -> Wire {
        let n = keys.len();
        Wire { unacked: vec![Vec::new(); n], offers: vec![Vec::new(); n], keys, ..Wire::default() }
    }

    /// A new packet id.
    pub fn next_id(&mut self) -> [u8; 32] {
        self.next += 1;
        let h = sha256::Hash::hash(&self.next.to_le_bytes());
        h.to_byte_array()
    }

    /// Whose key `key` is (an identity or a swap key).
    pub fn owner(&self, key: &NostrKey) -> Option<NodeIdx> {
        self.keys.iter().position(|k| k == key).or_else(|| self.swap_keys.get(key).copied())
    }

    /// A node restarts: its transport holds none of its swap keys until its engine adds them
    /// again.
    pub fn forget_swap_keys(&mut self, node: NodeIdx) {
        let swap_keys = &self.swap_keys;
        self.held.retain(|k| swap_keys.get(k) != Some(&node));
    }

    /// The message as the recipient's transport hands it over; `None` when it is addressed to a
    /// swap key its node does not hold (now), which it does not read.
    pub fn incoming(&self, p: &Packet) -> Option<Incoming> {
        if self.swap_keys.contains_key(&p.to_key) && !self.held.contains(&p.to_key) {
            return None;
        }
        Some(Incoming {
            sender: p.from_key,
            recipient: p.to_key,
            event_id: EventId::from_byte_array(p.id),
            relay: nostr_sdk::RelayUrl::parse("ws://127.0.0.1:1").ok()?,
            created_at: nostr_sdk::Timestamp::from(0),
            pow_bits: 0,
            message: Ok(p.envelope.clone()),
        })
    }
}

/// The shared wire.
pub type SharedWire = Arc<Mutex<Wire>>;

/// A node's transport over the [`Wire`].
pub struct SimTransport {
    /// The wire.
    pub wire: SharedWire,
    /// The world (a dead node sends nothing).
    pub world: SharedWorld,
    /// Whose.
    pub node: NodeIdx,
}

fn wire_lock(wire: &SharedWire) -> std::sync::MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl SwapTransport for SimTransport {
    fn public_key(&self) -> NostrKey {
        wire_lock(&self.wire)
            .keys
            .get(self.node)
            .copied()
            .unwrap_or_else(|| nostr_sdk::Keys::generate().public_key())
    }

    async fn add_key(&self, keys: &NostrKeys) -> Result<(), TransportError> {
        let mut wire = wire_lock(&self.wire);
        let key = keys.public_key();
        wire.swap_keys.insert(key, self.node);
        wire.held.insert(key);
        Ok(())
    }

    async fn remove_key(&self, key: &NostrKey) {
        let mut wire = wire_lock(&self.wire);
        if wire.swap_keys.get(key) == Some(&self.node) {
            wire.held.remove(key);
        }
    }

    fn incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        None
    }

    fn ack(&self, event_id: &EventId) -> Result<bool, TransportError> {
        if lock(&self.world).dead.get(self.node).copied().unwrap_or(false) {
            return Ok(false);
        }
        let mut wire = wire_lock(&self.wire);
        let Some(unacked) = wire.unacked.get_mut(self.node) else { return Ok(false) };
        let Some(pos) = unacked.iter().position(|p| p.id == event_id.to_bytes()) else {
            return Ok(false);
        };
        let p = unacked.remove(pos);
        wire.delivered.push(p);
        Ok(true)
    }

    async fn send(
        &self,
        from: &NostrKey,
        peer: &NostrKey,
        _relays: &[String],
        envelope: &Envelope,
    ) -> Result<(), TransportError> {
        if lock(&self.world).dead.get(self.node).copied().unwrap_or(false) {
            return Err(TransportError::Shutdown);
        }
        let mut wire = wire_lock(&self.wire);
        let ours = wire.keys.get(self.node) == Some(from) || wire.held.contains(from);
        if !ours || wire.owner(from) != Some(self.node) {
            let what = format!(
                "VIOLATION node {} sent {} of swap {} as a key it does not hold",
                self.node,
                envelope.body.kind_name(),
                envelope.swap_id
            );
            wire.violations.push(what);
            return Err(TransportError::UnknownKey(*from));
        }
        let Some(to) = wire.owner(peer) else {
            return Err(TransportError::NoRelays);
        };
        let id = wire.next_id();
        wire.in_flight.push(Packet {
            id,
            from: self.node,
            to,
            from_key: *from,
            to_key: *peer,
            envelope: envelope.clone(),
        });
        Ok(())
    }

    async fn publish_offer(&self, offer: &Offer) -> Result<(), TransportError> {
        let mut wire = wire_lock(&self.wire);
        if let Some(o) = wire.offers.get_mut(self.node) {
            o.retain(|x| x.offer_id != offer.offer_id);
            o.push(offer.clone());
        }
        Ok(())
    }

    async fn withdraw_offer(&self, offer_id: &str) -> Result<(), TransportError> {
        let mut wire = wire_lock(&self.wire);
        if let Some(o) = wire.offers.get_mut(self.node) {
            o.retain(|x| x.offer_id != offer_id);
        }
        Ok(())
    }
}

/// A store that crashes its node right after a chosen commit (a fault-injection mock over the
/// in-memory store): from then on every write is dropped, as a dead process writes nothing.
pub struct CrashingStore {
    /// The store that survives the crash.
    pub inner: Arc<MemoryStore>,
    /// The world (where the node is marked dead).
    pub world: SharedWorld,
    /// Whose.
    pub node: NodeIdx,
    /// Swap commits left before the crash (`None`: never).
    pub crash_after: Mutex<Option<u32>>,
    /// Swap commits made, for the driver.
    pub commits: AtomicU64,
}

impl CrashingStore {
    fn dead(&self) -> bool {
        lock(&self.world).dead.get(self.node).copied().unwrap_or(false)
    }
}

impl SwapStore for CrashingStore {
    fn put_swap(&self, record: &SwapRecord) -> Result<(), StoreError> {
        if self.dead() {
            return Ok(());
        }
        self.inner.put_swap(record)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        let mut crash = self.crash_after.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(left) = crash.as_mut() {
            if *left == 0 {
                *crash = None;
                let mut w = lock(&self.world);
                w.log.push(format!("node {} crashes after committing {}", self.node, record.state));
                if let Some(d) = w.dead.get_mut(self.node) {
                    *d = true;
                }
            } else {
                *left -= 1;
            }
        }
        Ok(())
    }
    fn get_swap(&self, id: &looper_protocol::SwapId) -> Result<Option<SwapRecord>, StoreError> {
        self.inner.get_swap(id)
    }
    fn get_swap_by_payment_hash(&self, h: &PaymentHash) -> Result<Option<SwapRecord>, StoreError> {
        self.inner.get_swap_by_payment_hash(h)
    }
    fn list_swaps(&self, f: &SwapFilter) -> Result<Vec<SwapRecord>, StoreError> {
        self.inner.list_swaps(f)
    }
    fn put_offer(&self, id: &str, offer: &serde_json::Value) -> Result<(), StoreError> {
        if self.dead() {
            return Ok(());
        }
        self.inner.put_offer(id, offer)
    }
    fn get_offer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.get_offer(id)
    }
    fn list_offers(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.inner.list_offers()
    }
    fn delete_offer(&self, id: &str) -> Result<bool, StoreError> {
        if self.dead() {
            return Ok(false);
        }
        self.inner.delete_offer(id)
    }
    fn next_swap_index(&self) -> Result<u32, StoreError> {
        self.inner.next_swap_index()
    }
    fn peek_swap_index(&self) -> Result<u32, StoreError> {
        self.inner.peek_swap_index()
    }
    fn raise_swap_index(&self, at_least: u32) -> Result<u32, StoreError> {
        self.inner.raise_swap_index(at_least)
    }
    fn restore_state(&self) -> Result<RestoreState, StoreError> {
        self.inner.restore_state()
    }
    fn set_restore_state(&self, state: RestoreState) -> Result<(), StoreError> {
        self.inner.set_restore_state(state)
    }
    fn mark_event_processed(&self, id: [u8; 32], seen_at: u64) -> Result<bool, StoreError> {
        self.inner.mark_event_processed(id, seen_at)
    }
    fn is_event_processed(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.is_event_processed(id)
    }
    fn prune_processed_events(&self, before: u64) -> Result<usize, StoreError> {
        self.inner.prune_processed_events(before)
    }
    fn append_swap_event(
        &self,
        id: &looper_protocol::SwapId,
        event: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        if self.dead() {
            return Ok(0);
        }
        self.inner.append_swap_event(id, event)
    }
    fn swap_events(
        &self,
        id: &looper_protocol::SwapId,
        from: u64,
    ) -> Result<Vec<SwapEvent>, StoreError> {
        self.inner.swap_events(id, from)
    }
    fn block_key(&self, key: &str, note: Option<&str>, at: u64) -> Result<bool, StoreError> {
        if self.dead() {
            return Ok(false);
        }
        self.inner.block_key(key, note, at)
    }
    fn unblock_key(&self, key: &str) -> Result<bool, StoreError> {
        if self.dead() {
            return Ok(false);
        }
        self.inner.unblock_key(key)
    }
    fn blocked_keys(&self) -> Result<Vec<looper_node::store::BlockEntry>, StoreError> {
        self.inner.blocked_keys()
    }
    fn put_swap_label(
        &self,
        id: &looper_protocol::SwapId,
        label: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inner.put_swap_label(id, label)
    }
    fn swap_labels(&self) -> Result<Vec<(looper_protocol::SwapId, serde_json::Value)>, StoreError> {
        self.inner.swap_labels()
    }
    fn put_setting(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.put_setting(name, value)
    }
    fn setting(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.setting(name)
    }
}
