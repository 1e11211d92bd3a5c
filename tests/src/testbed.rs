//! The deterministic test bed: two real engines (a buyer and a seller) over the simulated world
//! and an in-memory wire, driven by a seeded scheduler that chooses, step by step, what happens
//! next: a message delivered (possibly duplicated, reordered, replayed or tampered with by a
//! malicious peer), a Lightning event delivered or replayed, a payment arriving, a block, a
//! reorg, time passing, a chain source failing, a node crashing right after a commit and
//! restarting from its store. After each step and at the end, the invariants are checked; a
//! failing seed is reported with the run's trace and replays exactly.
//!
//! Both directions run: in a loop out the buyer takes the seller's offer; in a loop in the seller
//! (the locker, the taker) takes the buyer's loop-in offer (`Engine::take_loop_in_offer`) and the
//! buyer's engine serves the request as maker. The nodes keep their money roles whichever way:
//! [`BUYER`] pays over Lightning and claims, [`SELLER`] locks and refunds.

use std::sync::{Arc, Mutex};

use bitcoin::secp256k1::rand::rngs::StdRng;
use bitcoin::secp256k1::rand::{Rng, SeedableRng};
use bitcoin::OutPoint;
use looper_node::engine::io::SwapTransport;
use looper_node::store::{SwapFilter, SwapStore};
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::messages::{Message, Offer};
use looper_protocol::seller::LoopInLimits;
use looper_protocol::swap::ANTI_REORG_DEPTH;
use looper_protocol::SwapId;
use nostr_sdk::Keys;

use crate::fakes::{
    deliver_ln_event, wallet_script, InvoiceTamper, Packet, SharedWire, SimTransport, Wire,
};
use crate::node::{sim_config, sim_offer, SimNode};
use crate::world::{lock, PayState, SharedWorld, World};

/// The buyer's (the claimer's) node index: the taker of a loop out, the maker of a loop in.
pub const BUYER: usize = 0;
/// The seller's (the locker's) node index: the maker of a loop out, the taker of a loop in.
pub const SELLER: usize = 1;

/// How the malicious party (if any) deviates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malice {
    /// Public keys in its messages replaced by other valid keys.
    WrongKeys,
    /// Its cooperative signatures (claim or refund responses) never sent.
    WithholdSignatures,
    /// Its old messages sent again, often.
    Replays,
    /// Seller: settles the Lightning payment only long after it learnt the preimage.
    LateSettlement,
    /// Seller: pays 1,000 sat less into the HTLC than agreed.
    ShortFunding,
    /// Seller: its invoice commits to another hash.
    InvoiceHash,
    /// Seller: its invoice asks more than agreed.
    InvoiceAmount,
    /// Seller: its invoice is signed by another node.
    InvoicePayee,
    /// Seller: funds, then double-spends the funding before it confirms.
    DoubleSpendFunding,
    /// Seller: its wallet never funds an HTLC.
    NeverFunds,
    /// Buyer: its Lightning node never pays.
    NeverPays,
}

/// What a run is made of.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The scheduler's seed.
    pub seed: u64,
    /// Random steps before the settling phase.
    pub steps: u32,
    /// Swaps the buyer starts.
    pub swaps: u32,
    /// The deviating party and how.
    pub malice: Option<(usize, Malice)>,
    /// Crashes allowed.
    pub crashes: bool,
    /// Loop in (the seller takes the buyer's loop-in offer) rather than loop out.
    pub loop_in: bool,
}

impl Scenario {
    /// The scenario as one word (`seed:steps:swaps:crashes:who-malice:direction`, the direction
    /// `out` or `in`), for [`Scenario::parse`] and the `LOOPER_SCENARIO` variable of
    /// `tests/tests/testbed.rs`.
    pub fn repro(&self) -> String {
        let malice = match self.malice {
            Some((who, m)) => format!("{}-{m:?}", if who == BUYER { "buyer" } else { "seller" }),
            None => "honest".into(),
        };
        let direction = if self.loop_in { "in" } else { "out" };
        format!("{}:{}:{}:{}:{malice}:{direction}", self.seed, self.steps, self.swaps, self.crashes)
    }

    /// Reads [`Scenario::repro`]'s form back.
    pub fn parse(s: &str) -> Option<Scenario> {
        let mut it = s.split(':');
        let seed = it.next()?.parse().ok()?;
        let steps = it.next()?.parse().ok()?;
        let swaps = it.next()?.parse().ok()?;
        let crashes = it.next()?.parse().ok()?;
        let malice = match it.next()? {
            "honest" => None,
            m => {
                let (who, kind) = m.split_once('-')?;
                let who = if who == "buyer" { BUYER } else { SELLER };
                let kind = Malice::ALL.iter().copied().find(|k| format!("{k:?}") == kind)?;
                Some((who, kind))
            }
        };
        // Without a direction: a loop out (the form before loop in).
        let loop_in = match it.next() {
            None | Some("out") => false,
            Some("in") => true,
            Some(_) => return None,
        };
        Some(Scenario { seed, steps, swaps, malice, crashes, loop_in })
    }
}

impl Malice {
    /// Every kind.
    pub const ALL: [Malice; 11] = [
        Malice::WrongKeys,
        Malice::WithholdSignatures,
        Malice::Replays,
        Malice::LateSettlement,
        Malice::ShortFunding,
        Malice::InvoiceHash,
        Malice::InvoiceAmount,
        Malice::InvoicePayee,
        Malice::DoubleSpendFunding,
        Malice::NeverFunds,
        Malice::NeverPays,
    ];

    /// What a malicious seller (the locker, whichever direction) does.
    pub const SELLER: [Malice; 10] = [
        Malice::WrongKeys,
        Malice::WithholdSignatures,
        Malice::Replays,
        Malice::LateSettlement,
        Malice::ShortFunding,
        Malice::InvoiceHash,
        Malice::InvoiceAmount,
        Malice::InvoicePayee,
        Malice::DoubleSpendFunding,
        Malice::NeverFunds,
    ];

    /// What a malicious buyer (the claimer, whichever direction) does.
    pub const BUYER: [Malice; 4] =
        [Malice::WrongKeys, Malice::WithholdSignatures, Malice::Replays, Malice::NeverPays];
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    /// Swaps that ended with the buyer's claim.
    pub claimed: u32,
    /// Swaps that ended refunded (or never funded).
    pub refunded: u32,
    /// Swaps the buyer paid and lost to a seller that double-spent its funding afterwards
    /// ([`Malice::DoubleSpendFunding`] only: the residual risk of paying after
    /// `min_confirmations`, spec `00-introduction.md`).
    pub lost: u32,
    /// Crashes injected.
    pub crashes: u32,
    /// Steps taken.
    pub steps: u32,
    /// The world's log of the run (equal for equal scenarios: runs replay exactly).
    pub log: Vec<String>,
    /// Most outputs of one transaction the seller broadcast (its largest funding batch + change).
    pub max_seller_tx_outputs: usize,
    /// Most HTLCs one transaction of the buyer's claimed (its largest claim batch).
    pub max_buyer_claim_inputs: usize,
}

/// Why a run failed (with the trace to reproduce it).
#[derive(Debug)]
pub struct Failure {
    /// The scenario (its [`Scenario::repro`] reruns it).
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// What broke.
    pub what: String,
    /// The last lines of the run's trace.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.what)?;
        writeln!(
            f,
            "  rerun: LOOPER_SCENARIO={} cargo test -p looper-conformance --test testbed one_scenario -- --nocapture",
            self.scenario.repro()
        )?;
        for l in &self.trace {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

struct Bed {
    sc: Scenario,
    rng: StdRng,
    world: SharedWorld,
    wire: SharedWire,
    nodes: Vec<SimNode>,
    offer: Offer,
    started: Vec<SwapId>,
    crashes: u32,
    trace: Vec<String>,
    /// What the maker accepted, per swap: payment hash and HTLC script.
    accepts: std::collections::BTreeMap<SwapId, (looper_protocol::PaymentHash, bitcoin::ScriptBuf)>,
    /// Loop in: the payment hash each of the taker's requests named.
    requested: std::collections::BTreeMap<SwapId, looper_protocol::PaymentHash>,
    /// Chain faults' own randomness (the scheduler's sequence stays that of the seed).
    fault_rng: StdRng,
    /// The highest tip so far (a reorg's depth counts from it).
    high_tip: u32,
}

fn fail(bed: &Bed, what: impl Into<String>) -> Failure {
    let mut trace: Vec<String> =
        lock(&bed.world).log.iter().filter(|l| !l.starts_with("mined")).cloned().collect();
    trace.extend(bed.trace.iter().cloned());
    trace.dedup();
    let keep = trace.len().saturating_sub(120);
    Failure { scenario: bed.sc, seed: bed.sc.seed, what: what.into(), trace: trace.split_off(keep) }
}

/// Runs one scenario to its end.
///
/// # Errors
/// The first invariant broken, with the trace.
pub async fn run(sc: Scenario) -> Result<Outcome, Failure> {
    let mut bed = Bed::new(sc).await.map_err(|e| Failure {
        scenario: sc,
        seed: sc.seed,
        what: e,
        trace: vec![],
    })?;
    bed.start_swaps().await;
    if bed.started.len() < usize::try_from(sc.swaps).unwrap_or(usize::MAX) {
        return Err(fail(&bed, format!("{} of {} swaps started", bed.started.len(), sc.swaps)));
    }
    let mut steps = 0;
    while steps < sc.steps {
        steps += 1;
        bed.step().await;
        bed.check_now()?;
    }
    bed.settle().await?;
    let (claimed, refunded, lost) = bed.check_end()?;
    if bed.sc.malice.is_none_or(|(who, _)| who != bed.roles().0) {
        bed.check_keys()?;
    }
    let w = lock(&bed.world);
    let seller_txids: Vec<_> =
        w.broadcasts.iter().filter(|(n, _)| *n == SELLER).map(|(_, t)| *t).collect();
    let max_seller_tx_outputs = w
        .all()
        .filter(|(t, _)| seller_txids.contains(&t.compute_txid()))
        .map(|(t, _)| t.output.len())
        .max()
        .unwrap_or(0);
    let buyer_txids: Vec<_> =
        w.broadcasts.iter().filter(|(n, _)| *n == BUYER).map(|(_, t)| *t).collect();
    let max_buyer_claim_inputs = w
        .all()
        .filter(|(t, _)| buyer_txids.contains(&t.compute_txid()))
        .map(|(t, _)| t.input.len())
        .max()
        .unwrap_or(0);
    Ok(Outcome {
        claimed,
        refunded,
        lost,
        crashes: bed.crashes,
        steps,
        log: w.log.clone(),
        max_seller_tx_outputs,
        max_buyer_claim_inputs,
    })
}

impl Bed {
    async fn new(sc: Scenario) -> Result<Bed, String> {
        let scripts = [wallet_script(BUYER, 0), wallet_script(SELLER, 0)];
        let world = World::shared(2, &scripts, 50_000_000);
        lock(&world).mine();
        let keys: Vec<Keys> = (0..2u8)
            .map(|i| {
                let sk =
                    nostr_sdk::SecretKey::from_slice(&[i + 21; 32]).map_err(|e| e.to_string())?;
                Ok(Keys::new(sk))
            })
            .collect::<Result<_, String>>()?;
        let wire: SharedWire =
            Arc::new(Mutex::new(Wire::new(keys.iter().map(Keys::public_key).collect())));
        let mut nodes = Vec::new();
        for idx in [BUYER, SELLER] {
            let transport: Arc<dyn SwapTransport> = Arc::new(SimTransport {
                wire: Arc::clone(&wire),
                world: Arc::clone(&world),
                node: idx,
            });
            let seed = sc.seed.wrapping_mul(31).wrapping_add(idx as u64);
            let node = SimNode::start(&world, idx, transport, sim_config(), seed)
                .await
                .map_err(|e| e.to_string())?;
            nodes.push(node);
        }
        let maker = if sc.loop_in { BUYER } else { SELLER };
        let ln_node_id = lock(&world).ln_node_id(maker);
        let mut offer = sim_offer("bed", ln_node_id, vec![], u64::MAX / 2);
        if sc.loop_in {
            offer.offer_id = "bed-in".into();
            offer.direction = looper_protocol::SwapDirection::LoopIn;
            // The locker checks the offer as published (its relay list included).
            offer.relays = vec!["ws://127.0.0.1:1".into()];
        }
        let mut bed = Bed {
            sc,
            rng: StdRng::seed_from_u64(sc.seed),
            world,
            wire,
            nodes,
            offer: offer.clone(),
            started: Vec::new(),
            crashes: 0,
            trace: Vec::new(),
            accepts: std::collections::BTreeMap::new(),
            requested: std::collections::BTreeMap::new(),
            fault_rng: StdRng::seed_from_u64(sc.seed ^ 0x5eed_fa17),
            high_tip: 0,
        };
        bed.nodes[maker].engine.publish_offer(&offer).await.map_err(|e| e.to_string())?;
        bed.arm_malice();
        Ok(bed)
    }

    fn arm_malice(&mut self) {
        let Some((who, m)) = self.sc.malice else { return };
        let node = &self.nodes[who];
        let tamper = match m {
            Malice::InvoiceHash => Some(InvoiceTamper::Hash),
            Malice::InvoiceAmount => Some(InvoiceTamper::Amount),
            Malice::InvoicePayee => Some(InvoiceTamper::Payee),
            _ => None,
        };
        if let Ok(mut t) = node.lightning.tamper.lock() {
            *t = tamper;
        }
        if m == Malice::LateSettlement {
            if let Some(d) = lock(&self.world).settle_delay.get_mut(who) {
                *d = 30;
            }
        }
        if m == Malice::ShortFunding {
            node.wallet.shortchange_sat.store(1_000, std::sync::atomic::Ordering::Relaxed);
        }
        if m == Malice::NeverFunds {
            node.wallet.refuse_funding.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if m == Malice::NeverPays {
            node.lightning.refuse_payments.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn log(&mut self, line: String) {
        lock(&self.world).log.push(line);
    }

    async fn start_swaps(&mut self) {
        let (taker, maker) = self.roles();
        let maker_pk = lock_wire(&self.wire).keys[maker];
        // The bed's clock runs 600 s a block and a message may wait blocks for its delivery: a
        // taker here waits for the answer to its request for days, not the default 15 minutes.
        let request_timeout_secs = 7 * 24 * 3_600;
        for i in 0..self.sc.swaps {
            let amount = 100_000 + u64::from(i) * 10_000;
            let engine = &self.nodes[taker].engine;
            let taken = if self.sc.loop_in {
                let limits = LoopInLimits {
                    max_total_fee_sat: 50_000,
                    max_timeout_delta: 200,
                    request_timeout_secs,
                    ..LoopInLimits::default()
                };
                engine.take_loop_in_offer(self.offer.clone(), maker_pk, amount, limits, None).await
            } else {
                let policy = BuyerPolicy { request_timeout_secs, ..BuyerPolicy::default() };
                engine.take_offer(self.offer.clone(), maker_pk, amount, policy).await
            };
            match taken {
                Ok(id) => self.started.push(id),
                Err(e) => self.log(format!("taking the offer refused: {e}")),
            }
        }
    }

    /// The taker's and the maker's node indices.
    fn roles(&self) -> (usize, usize) {
        if self.sc.loop_in {
            (SELLER, BUYER)
        } else {
            (BUYER, SELLER)
        }
    }

    /// One random step.
    async fn step(&mut self) {
        // Restart dead nodes now and then.
        for idx in [BUYER, SELLER] {
            if self.nodes[idx].is_dead() && self.rng.gen_bool(0.3) {
                if let Err(e) = self.restart(idx).await {
                    self.log(format!("node {idx} restart failed: {e}"));
                }
            }
        }
        let choice = self.rng.gen_range(0..100);
        match choice {
            0..=29 => self.deliver_packet(false).await,
            30..=33 => self.deliver_packet(true).await,
            34..=37 => self.refetch().await,
            38..=40 => self.replay_packet().await,
            41..=54 => self.deliver_ln(false).await,
            55..=56 => self.deliver_ln(true).await,
            57..=61 => {
                lock(&self.world).deliver_payments();
            }
            62..=69 => self.mine().await,
            70..=79 => self.poll_random().await,
            80..=84 => {
                let secs = self.rng.gen_range(10..400);
                lock(&self.world).now += secs;
            }
            85..=87 => {
                let idx = self.rng.gen_range(0..2);
                let mut w = lock(&self.world);
                let was = w.chain_down[idx];
                w.chain_down[idx] = !was;
                w.log.push(format!(
                    "chain source of node {idx} {}",
                    if was { "back" } else { "down" }
                ));
            }
            88..=92 if self.sc.crashes => {
                let idx = self.rng.gen_range(0..2);
                if !self.nodes[idx].is_dead() {
                    let after = self.rng.gen_range(0..3);
                    if let Ok(mut c) = self.nodes[idx].store.crash_after.lock() {
                        if c.is_none() {
                            *c = Some(after);
                            self.crashes += 1;
                        }
                    }
                }
            }
            93 => self.reorg(),
            94..=95 => self.malicious_extra().await,
            _ => self.poll_random().await,
        }
    }

    /// A reorg of one block. Half of the time the mempool then drops the HTLC spends (claims,
    /// refunds) that came back from it: nobody but their owner sends them again (spec
    /// `02-swap-flow.md`, "Final at depth"). Not for a reorg as deep as
    /// [`ANTI_REORG_DEPTH`] below the highest tip: that deep, a spend is final.
    fn reorg(&mut self) {
        let drop = self.fault_rng.gen_bool(0.5);
        let scripts: Vec<bitcoin::ScriptBuf> =
            self.accepts.values().map(|(_, spk)| spk.clone()).collect();
        let mut w = lock(&self.world);
        self.high_tip = self.high_tip.max(w.tip);
        let block = w.blocks.last().cloned().unwrap_or_default();
        w.reorg();
        if !drop || self.high_tip.saturating_sub(w.tip) >= ANTI_REORG_DEPTH {
            return;
        }
        for tx in block {
            let spends_htlc = tx.input.iter().any(|i| {
                w.output(i.previous_output).is_some_and(|o| scripts.contains(&o.script_pubkey))
            });
            if spends_htlc {
                w.drop_from_mempool(tx.compute_txid());
            }
        }
    }

    async fn malicious_extra(&mut self) {
        let Some((who, m)) = self.sc.malice else { return };
        match m {
            Malice::Replays => self.replay_from(who).await,
            Malice::DoubleSpendFunding if who == SELLER => {
                // The seller's funding still in the mempool is replaced by a spend to itself.
                let mut w = lock(&self.world);
                let funding = w
                    .mempool
                    .iter()
                    .find(|t| {
                        w.broadcasts.iter().any(|(n, id)| *n == SELLER && *id == t.compute_txid())
                            && t.output.len() > 1
                    })
                    .cloned();
                if let Some(f) = funding {
                    w.drop_from_mempool(f.compute_txid());
                    let mut ds = f.clone();
                    ds.output.truncate(1);
                    ds.output[0].script_pubkey = wallet_script(SELLER, 999);
                    w.mempool.push(ds);
                    w.log.push("seller double-spent its funding".into());
                }
            }
            _ => {}
        }
    }

    async fn deliver(&mut self, p: Packet) {
        let to = p.to;
        match (p.from, &p.envelope.body) {
            (SELLER, Message::SwapAccept(a)) => {
                self.accepts
                    .insert(p.envelope.swap_id, (a.payment_hash, a.htlc_script_pubkey.clone()));
            }
            (SELLER, Message::LoopInRequest(r)) => {
                self.requested.entry(p.envelope.swap_id).or_insert(r.payment_hash);
            }
            (BUYER, Message::LoopInAccept(a)) => {
                if let Some(hash) = self.requested.get(&p.envelope.swap_id) {
                    self.accepts.insert(p.envelope.swap_id, (*hash, a.htlc_script_pubkey.clone()));
                }
            }
            _ => {}
        }
        let p = self.tamper(p);
        let Some(p) = p else { return };
        let incoming = {
            let mut wire = lock_wire(&self.wire);
            let inc = wire.incoming(&p);
            if let Some(u) = wire.unacked.get_mut(to) {
                u.push(p.clone());
            }
            inc
        };
        self.check_signature_given(&p);
        if self.nodes[to].is_dead() {
            return; // stays unacknowledged: delivered after the restart
        }
        if let Some(inc) = incoming {
            self.nodes[to].engine.handle_message(inc).await;
        }
    }

    /// What a malicious sender does to its message on the way.
    fn tamper(&mut self, mut p: Packet) -> Option<Packet> {
        let Some((who, m)) = self.sc.malice else { return Some(p) };
        if p.from != who {
            return Some(p);
        }
        match m {
            Malice::WithholdSignatures => {
                if matches!(
                    p.envelope.body,
                    Message::CoopClaimResponse(_) | Message::CoopRefundResponse(_)
                ) {
                    self.log("malicious peer withholds its signature".into());
                    return None;
                }
                Some(p)
            }
            Malice::WrongKeys if self.rng.gen_bool(0.5) => {
                let Ok(mut v) = serde_json::to_value(&p.envelope) else { return Some(p) };
                replace_keys(&mut v);
                if let Ok(env) = serde_json::from_value(v) {
                    self.log("malicious peer swapped the keys in a message".into());
                    p.envelope = env;
                }
                Some(p)
            }
            _ => Some(p),
        }
    }

    /// A cooperative refund signature from the buyer while its payment may still settle, or a
    /// cooperative claim signature from the seller before it is paid: an invariant violation.
    fn check_signature_given(&mut self, p: &Packet) {
        let Message::CoopRefundResponse(_) = &p.envelope.body else { return };
        if p.from != BUYER || self.sc.malice.is_some_and(|(who, _)| who == BUYER) {
            return;
        }
        let Some((hash, _)) = self.accepts.get(&p.envelope.swap_id) else { return };
        let w = lock(&self.world);
        let paying = w.payments.get(hash).is_some_and(|pay| {
            matches!(pay.state, PayState::InFlight | PayState::Held | PayState::Succeeded)
        });
        drop(w);
        if paying {
            self.trace.push(format!(
                "VIOLATION buyer signed a cooperative refund of swap {} with its payment in flight or done",
                p.envelope.swap_id
            ));
        }
    }

    async fn deliver_packet(&mut self, duplicate: bool) {
        let p = {
            let mut wire = lock_wire(&self.wire);
            if wire.in_flight.is_empty() {
                None
            } else {
                let i = self.rng.gen_range(0..wire.in_flight.len());
                if duplicate {
                    let mut copy = wire.in_flight[i].clone();
                    copy.id = wire.next_id();
                    Some(copy)
                } else {
                    Some(wire.in_flight.remove(i))
                }
            }
        };
        if let Some(p) = p {
            self.deliver(p).await;
        }
    }

    /// The relay hands over again what a node has not acknowledged.
    async fn refetch(&mut self) {
        let idx = self.rng.gen_range(0..2);
        if self.nodes[idx].is_dead() {
            return;
        }
        let p = {
            let wire = lock_wire(&self.wire);
            let u = &wire.unacked[idx];
            if u.is_empty() {
                None
            } else {
                Some(u[self.rng.gen_range(0..u.len())].clone())
            }
        };
        if let Some(p) = p {
            let inc = lock_wire(&self.wire).incoming(&p);
            if let Some(inc) = inc {
                self.nodes[idx].engine.handle_message(inc).await;
            }
        }
    }

    async fn replay_packet(&mut self) {
        let from = self.rng.gen_range(0..2);
        self.replay_from(from).await;
    }

    /// An old message of `from` comes again (re-wrapped: a new id).
    async fn replay_from(&mut self, from: usize) {
        let p = {
            let mut wire = lock_wire(&self.wire);
            let old: Vec<Packet> =
                wire.delivered.iter().filter(|p| p.from == from).cloned().collect();
            if old.is_empty() {
                None
            } else {
                let mut p = old[self.rng.gen_range(0..old.len())].clone();
                p.id = wire.next_id();
                Some(p)
            }
        };
        if let Some(p) = p {
            self.log(format!("replay of an old message from node {from}"));
            self.deliver(p).await;
        }
    }

    async fn deliver_ln(&mut self, replay: bool) {
        let idx = self.rng.gen_range(0..2);
        if self.nodes[idx].is_dead() {
            return;
        }
        let pick = self.rng.gen_range(0..4usize);
        let engine = self.nodes[idx].engine.clone();
        deliver_ln_event(&self.world, idx, pick, replay, |d| async move {
            engine.handle_lightning(d).await;
        })
        .await;
    }

    async fn mine(&mut self) {
        lock(&self.world).mine();
    }

    /// The messages in flight delivered in order, up to 50 (a round's worth).
    async fn deliver_in_flight(&mut self) {
        for _ in 0..50 {
            let next = {
                let mut wire = lock_wire(&self.wire);
                (!wire.in_flight.is_empty()).then(|| wire.in_flight.remove(0))
            };
            let Some(p) = next else { break };
            self.deliver(p).await;
        }
    }

    /// Node `idx`'s Lightning events delivered in order, up to 20 (a round's worth).
    async fn drain_lightning(&self, idx: usize) {
        for _ in 0..20 {
            let engine = self.nodes[idx].engine.clone();
            let any = deliver_ln_event(&self.world, idx, 0, false, |d| async move {
                engine.handle_lightning(d).await;
            })
            .await;
            if !any {
                break;
            }
        }
    }

    async fn poll_random(&mut self) {
        let idx = self.rng.gen_range(0..2);
        if !self.nodes[idx].is_dead() {
            self.nodes[idx].engine.poll().await;
        }
    }

    /// Everything delivered, faults off, blocks mined until every swap has ended.
    async fn settle(&mut self) -> Result<(), Failure> {
        {
            let mut w = lock(&self.world);
            w.chain_down = vec![false; 2];
            w.log.push("settling".into());
        }
        for idx in [BUYER, SELLER] {
            if let Ok(mut c) = self.nodes[idx].store.crash_after.lock() {
                *c = None;
            }
            if self.nodes[idx].is_dead() {
                self.restart(idx).await.map_err(|e| fail(self, format!("restart: {e}")))?;
            }
        }
        for round in 0..400 {
            self.deliver_in_flight().await;
            for idx in [BUYER, SELLER] {
                // Unacknowledged messages come again (a relay refetch).
                let unacked = lock_wire(&self.wire).unacked[idx].clone();
                for p in unacked {
                    let inc = lock_wire(&self.wire).incoming(&p);
                    if let Some(inc) = inc {
                        self.nodes[idx].engine.handle_message(inc).await;
                    }
                }
                self.drain_lightning(idx).await;
            }
            lock(&self.world).deliver_payments();
            for idx in [BUYER, SELLER] {
                self.nodes[idx].engine.poll().await;
            }
            self.check_now()?;
            let quiet = lock_wire(&self.wire).in_flight.is_empty();
            if quiet && self.all_ended(round < 300) {
                self.log(format!("settled after {round} rounds"));
                return Ok(());
            }
            lock(&self.world).mine();
        }
        let mut pending = Vec::new();
        for idx in [BUYER, SELLER] {
            for r in
                self.nodes[idx].store.inner.list_swaps(&SwapFilter::pending()).unwrap_or_default()
            {
                pending.push(format!("node {idx} swap {} in {}", r.id, r.state));
                if std::env::var_os("LOOPER_TESTBED_DUMP_STUCK").is_some() {
                    let v = String::from_utf8_lossy(&r.data);
                    eprintln!("STUCK {}", v.chars().take(6000).collect::<String>());
                }
            }
        }
        Err(fail(
            self,
            format!("swaps still pending after 400 blocks of settling: {}", pending.join("; ")),
        ))
    }

    /// Every node's swaps have ended (with `!strict`, every honest node's: a malicious node may
    /// strand its own).
    fn all_ended(&self, strict: bool) -> bool {
        let honest = |idx: &usize| strict || self.sc.malice.is_none_or(|(who, _)| who != *idx);
        [BUYER, SELLER].iter().filter(|i| honest(i)).all(|&idx| {
            self.nodes[idx]
                .store
                .inner
                .list_swaps(&SwapFilter::pending())
                .map(|v| v.is_empty())
                .unwrap_or(false)
        })
    }

    /// Restarts node `idx` as a new process: its transport holds none of its swap keys until
    /// the engine's resume adds them again.
    async fn restart(&mut self, idx: usize) -> Result<(), looper_node::engine::EngineError> {
        lock_wire(&self.wire).forget_swap_keys(idx);
        self.nodes[idx].restart().await
    }

    fn check_now(&self) -> Result<(), Failure> {
        if let Some(v) = self.trace.iter().find(|l| l.starts_with("VIOLATION")) {
            return Err(fail(self, v.clone()));
        }
        if let Some(v) = lock_wire(&self.wire).violations.first().cloned() {
            return Err(fail(self, v));
        }
        Ok(())
    }

    /// The maker saw each of the taker's swaps come from a key of that swap only: never the
    /// taker's identity, never a key of another swap (spec `04-nostr.md`, "Keys").
    fn check_keys(&self) -> Result<(), Failure> {
        use looper_protocol::record::SwapRecord;
        let (taker, maker) = self.roles();
        let taker_key = lock_wire(&self.wire).keys[taker].to_hex();
        let records = self.nodes[maker].store.inner.list_swaps(&SwapFilter::default());
        let mut peers = std::collections::BTreeSet::new();
        for r in records.unwrap_or_default() {
            let peer = match SwapRecord::from_bytes(&r.data) {
                Ok(SwapRecord::Seller(s)) => s.peer().to_string(),
                Ok(SwapRecord::Buyer(b)) => b.peer().to_string(),
                _ => continue,
            };
            if peer == taker_key {
                return Err(fail(
                    self,
                    format!("swap {}: the taker's identity reached the maker", r.id),
                ));
            }
            if !peers.insert(peer) {
                return Err(fail(self, format!("swap {}: a taker key of another swap", r.id)));
            }
        }
        Ok(())
    }

    /// End of run: nobody honest lost money, but for a buyer that paid a seller who then
    /// double-spent its funding: that buyer's swap must have ended `Lost` with the invoice it
    /// paid as its loss ([`Bed::check_lost_to_double_spend`]).
    fn check_end(&self) -> Result<(u32, u32, u32), Failure> {
        let w = lock(&self.world);
        let mut claimed = 0;
        let mut refunded = 0;
        let mut lost = 0;
        for (id, (hash, htlc_spk)) in &self.accepts {
            let paid = w.payments.get(hash).is_some_and(|p| p.state == PayState::Succeeded);
            let mut to_buyer = false;
            let mut htlc_unspent = false;
            for (t, h) in w.all() {
                let txid = t.compute_txid();
                for (vout, o) in t.output.iter().enumerate() {
                    if &o.script_pubkey != htlc_spk {
                        continue;
                    }
                    let op = OutPoint { txid, vout: u32::try_from(vout).unwrap_or(u32::MAX) };
                    match w.spender_of(op) {
                        Some((spend, sh)) => {
                            let buyer_got = spend
                                .output
                                .iter()
                                .any(|so| self.nodes[BUYER].wallet.owns(&so.script_pubkey));
                            if buyer_got && sh.is_some() {
                                to_buyer = true;
                            }
                        }
                        None if h.is_some() => htlc_unspent = true,
                        None => {}
                    }
                }
            }
            let honest_buyer = self.sc.malice.is_none_or(|(who, _)| who != BUYER);
            let honest_seller = self.sc.malice.is_none_or(|(who, _)| who != SELLER);
            let double_spent = self.sc.malice == Some((SELLER, Malice::DoubleSpendFunding));
            if paid && !to_buyer && honest_buyer && double_spent {
                let paid_msat = w.payments.get(hash).map_or(0, |p| p.amount_msat);
                if let Err(what) = self.check_lost_to_double_spend(*id, htlc_spk, paid_msat, &w) {
                    drop(w);
                    return Err(fail(self, format!("swap {id}: {what}")));
                }
                lost += 1;
                continue;
            }
            if paid && !to_buyer && honest_buyer {
                drop(w);
                return Err(fail(
                    self,
                    format!("swap {}: the buyer paid but did not get the coins", id),
                ));
            }
            if to_buyer && !paid && honest_seller {
                drop(w);
                return Err(fail(
                    self,
                    format!("swap {}: the buyer got the coins without paying", id),
                ));
            }
            if htlc_unspent && honest_seller {
                drop(w);
                return Err(fail(
                    self,
                    format!("swap {}: its HTLC is still unspent at the end", id),
                ));
            }
            if to_buyer {
                claimed += 1;
            } else {
                refunded += 1;
            }
        }
        Ok((claimed, refunded, lost))
    }

    /// A buyer that paid and did not get the coins, in a run where the seller double-spends its
    /// fundings: no transaction paying the HTLC's script is confirmed (its funding was
    /// double-spent), and the buyer's swap ended `Lost` (`funding_gone`) with the payment as its
    /// loss in the node's figures.
    fn check_lost_to_double_spend(
        &self,
        id: SwapId,
        htlc_spk: &bitcoin::ScriptBuf,
        paid_msat: u64,
        w: &World,
    ) -> Result<(), String> {
        use looper_protocol::buyer::BuyerState;
        use looper_protocol::record::SwapRecord;
        let funded = w
            .all()
            .any(|(t, h)| h.is_some() && t.output.iter().any(|o| &o.script_pubkey == htlc_spk));
        if funded {
            return Err("the buyer paid but did not get the coins of a funded HTLC".into());
        }
        let records = self.nodes[BUYER].store.inner.list_swaps(&SwapFilter::default());
        let record = records
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.id == id)
            .ok_or("the buyer has no record of it")?;
        let proto = SwapRecord::from_bytes(&record.data).map_err(|e| e.to_string())?;
        let SwapRecord::Buyer(b) = &proto else { return Err("not a buyer record".into()) };
        let BuyerState::Lost { funding_gone: true, .. } = b.state() else {
            return Err(format!(
                "the buyer paid, its funding was double-spent, and it ended {}, not lost",
                record.state
            ));
        };
        let figures = looper_node::stats::figures(&proto, &[]);
        if figures.lost_sat * 1000 != paid_msat {
            return Err(format!("lost {} sat, paid {paid_msat} msat", figures.lost_sat));
        }
        Ok(())
    }
}

fn lock_wire(wire: &SharedWire) -> std::sync::MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Replaces every compressed public key (66 hex characters starting with 02 or 03) in a JSON
/// value by another valid key.
fn replace_keys(v: &mut serde_json::Value) {
    const OTHER: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
    match v {
        serde_json::Value::String(s)
            if s.len() == 66 && (s.starts_with("02") || s.starts_with("03")) && s != OTHER =>
        {
            *s = OTHER.to_string();
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(replace_keys),
        serde_json::Value::Object(o) => o.values_mut().for_each(replace_keys),
        _ => {}
    }
}

/// A scripted chain fault on one honest swap ([`drill`]; spec `02-swap-flow.md`, "Final at
/// depth").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drill {
    /// The buyer's claim, confirmed once, is reorganised out and the mempool drops it.
    ClaimDropped,
    /// The seller's refund (the buyer's node never pays), confirmed once, likewise.
    RefundDropped,
    /// The buyer's claim, confirmed once, is reorganised out and the new chain holds the
    /// seller's refund of the HTLC in its place (a seller that refunds after being paid: the
    /// buyer is the honest party).
    RefundReplacesClaim,
}

/// What a [`drill`] saw.
#[derive(Debug)]
pub struct DrillOutcome {
    /// The buyer's final state.
    pub buyer: String,
    /// The seller's final state (`None`: still pending, the adversary of
    /// [`Drill::RefundReplacesClaim`]).
    pub seller: Option<String>,
    /// The spend that decided, and the height of its block.
    pub decided_by: (bitcoin::Txid, u32),
    /// The tip at which each node's swap ended (buyer, seller).
    pub ended_at: (Option<u32>, Option<u32>),
    /// The spend that left was sent again by its owner.
    pub sent_again: bool,
}

/// Runs one honest swap (loop in or out) over the test bed's world without random faults until
/// the spend `d` is about is confirmed once, plays the fault, then mines until the swap ends.
///
/// # Errors
/// What did not happen as the rule says, with the trace.
pub async fn drill(d: Drill, loop_in: bool) -> Result<DrillOutcome, Failure> {
    let malice = (d == Drill::RefundDropped).then_some((BUYER, Malice::NeverPays));
    let sc = Scenario { seed: 1, steps: 0, swaps: 1, malice, crashes: false, loop_in };
    let mut bed = Bed::new(sc).await.map_err(|e| Failure {
        scenario: sc,
        seed: sc.seed,
        what: e,
        trace: vec![],
    })?;
    bed.arm_malice();
    bed.start_swaps().await;
    let Some(&id) = bed.started.first() else { return Err(fail(&bed, "no swap started")) };
    let spend = match d {
        Drill::RefundDropped => SELLER,
        _ => BUYER,
    };
    // Until the spend is in the block just mined, seen by both nodes.
    let mut spend_tx = None;
    for _ in 0..400 {
        bed.quiet_round().await;
        lock(&bed.world).mine();
        spend_tx = bed.htlc_spend_in_last_block(spend);
        if spend_tx.is_some() {
            break;
        }
    }
    let Some(tx) = spend_tx else { return Err(fail(&bed, "the spend never confirmed")) };
    let txid = tx.compute_txid();
    for idx in [BUYER, SELLER] {
        bed.nodes[idx].engine.poll().await;
    }
    let watchers: &[usize] = if d == Drill::RefundDropped { &[SELLER] } else { &[BUYER, SELLER] };
    if watchers.iter().any(|idx| bed.ended(*idx, id).is_some()) {
        return Err(fail(&bed, "a swap ended at the spend's first confirmation"));
    }
    let broadcasts = lock(&bed.world).broadcasts.len();
    {
        let mut w = lock(&bed.world);
        w.reorg();
        w.drop_from_mempool(txid);
    }
    if d == Drill::RefundReplacesClaim {
        let refund = bed.sellers_refund(id)?;
        let mut w = lock(&bed.world);
        w.log.push(format!("the new chain holds the seller's refund {}", refund.compute_txid()));
        w.mempool.push(refund);
        w.mine();
    }
    for idx in [BUYER, SELLER] {
        bed.nodes[idx].engine.poll().await;
    }
    let sent_again = {
        let w = lock(&bed.world);
        w.broadcasts[broadcasts..].iter().any(|(n, t)| *n == spend && *t == txid)
            && w.mempool.iter().any(|t| t.compute_txid() == txid)
    };
    let mut ended_at = (None, None);
    for _ in 0..400 {
        bed.quiet_round().await;
        let tip = lock(&bed.world).tip;
        if ended_at.0.is_none() && bed.ended(BUYER, id).is_some() {
            ended_at.0 = Some(tip);
        }
        if ended_at.1.is_none() && bed.ended(SELLER, id).is_some() {
            ended_at.1 = Some(tip);
        }
        let seller_done = ended_at.1.is_some() || d == Drill::RefundReplacesClaim;
        if ended_at.0.is_some() && seller_done {
            break;
        }
        lock(&bed.world).mine();
    }
    let Some(buyer) = bed.ended(BUYER, id) else { return Err(fail(&bed, "the buyer never ended")) };
    let decided_by = {
        let w = lock(&bed.world);
        let spk = bed.accepts.get(&id).map(|(_, spk)| spk.clone()).unwrap_or_default();
        let found = w
            .all()
            .filter(|(t, h)| {
                h.is_some()
                    && t.input.iter().any(|i| {
                        w.output(i.previous_output).is_some_and(|o| o.script_pubkey == spk)
                    })
            })
            .map(|(t, h)| (t.compute_txid(), h.unwrap_or(0)))
            .next();
        found
    };
    let Some(decided_by) = decided_by else { return Err(fail(&bed, "no spend confirmed")) };
    Ok(DrillOutcome { buyer, seller: bed.ended(SELLER, id), decided_by, ended_at, sent_again })
}

impl Bed {
    /// Messages, Lightning events and payments delivered, both nodes polled (no block).
    async fn quiet_round(&mut self) {
        self.deliver_in_flight().await;
        for idx in [BUYER, SELLER] {
            self.drain_lightning(idx).await;
        }
        lock(&self.world).deliver_payments();
        for idx in [BUYER, SELLER] {
            self.nodes[idx].engine.poll().await;
        }
    }

    /// A spend of an accepted HTLC in the last block, broadcast by node `by`.
    fn htlc_spend_in_last_block(&self, by: usize) -> Option<bitcoin::Transaction> {
        let w = lock(&self.world);
        let scripts: Vec<_> = self.accepts.values().map(|(_, spk)| spk.clone()).collect();
        w.blocks.last()?.iter().find_map(|t| {
            let spends = t.input.iter().any(|i| {
                w.output(i.previous_output).is_some_and(|o| scripts.contains(&o.script_pubkey))
            });
            let txid = t.compute_txid();
            let mine = w.broadcasts.iter().any(|(n, id)| *n == by && *id == txid);
            (spends && mine).then(|| t.clone())
        })
    }

    /// The final state of node `idx`'s swap `id`, once it ended.
    fn ended(&self, idx: usize, id: SwapId) -> Option<String> {
        let records = self.nodes[idx].store.inner.list_swaps(&SwapFilter::default()).ok()?;
        let r = records.into_iter().find(|r| r.id == id)?;
        (r.status != looper_node::store::SwapStatus::Pending).then_some(r.state)
    }

    /// The seller's refund of swap `id` through the refund leaf (its lock time is not checked
    /// in a block the drill makes).
    fn sellers_refund(&self, id: SwapId) -> Result<bitcoin::Transaction, Failure> {
        use looper_protocol::keys::SwapKeys;
        use looper_protocol::record::SwapRecord;
        use looper_protocol::seller::SellerState;
        let records = self.nodes[SELLER].store.inner.list_swaps(&SwapFilter::default());
        let record = records
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| fail(self, "no seller record"))?;
        let Ok(SwapRecord::Seller(s)) = SwapRecord::from_bytes(&record.data) else {
            return Err(fail(self, "not a seller record"));
        };
        let funding = match s.state() {
            SellerState::Paid { funding, .. } => funding.clone(),
            other => return Err(fail(self, format!("seller in {}", other.name()))),
        };
        let master = crate::node::master(SELLER).map_err(|e| fail(self, e.to_string()))?;
        let keys =
            SwapKeys::derive(&master, s.key_index()).map_err(|e| fail(self, e.to_string()))?;
        let params = s.htlc_params().cloned().ok_or_else(|| fail(self, "no htlc"))?;
        let htlc =
            looper_protocol::htlc::Htlc::new(params).map_err(|e| fail(self, e.to_string()))?;
        let rate = bitcoin::FeeRate::from_sat_per_vb(5).unwrap_or(bitcoin::FeeRate::ZERO);
        looper_protocol::spend::refund_script_path(
            &htlc,
            funding.outpoint,
            bitcoin::Amount::from_sat(s.quote().htlc_amount_sat),
            keys.refund(),
            wallet_script(SELLER, 7),
            rate,
        )
        .map_err(|e| fail(self, e.to_string()))
    }
}
