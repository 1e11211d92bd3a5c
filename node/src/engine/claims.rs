//! The buyer's claim batcher: the swaps that asked for a script-path claim meanwhile
//! (`QueueClaim`: a cooperative claim given up, or a deadline bump) are claimed together
//! ([`looper_protocol::claims`]). Each batch is laid out, signed by each of its swaps, taken
//! (persisted) by each, and only then broadcast, once. A swap whose claim is out in a batch
//! brings the batch's other swaps along when it is replaced. A batch that could not be built is
//! tried again at the next poll (the swaps ask again at their tick).

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::Txid;
use looper_protocol::claims::{plan_claims, ClaimMember, ClaimPlan};
use looper_protocol::swap::{Event, StateKind, TxPurpose};
use looper_protocol::SwapId;

use super::swaps::{Machine, Slot};
use super::Engine;

impl Engine {
    pub(super) fn queue_claim(&self, id: SwapId) {
        self.lock_misc().claim_queue.insert(id);
    }

    /// Claims every queued swap, in as few transactions as [`plan_claims`] lays out. One flush
    /// runs at a time; a caller that finds one running leaves its queue to it.
    pub async fn flush_claims(&self) {
        loop {
            let Ok(flushing) = self.inner.claim_flush.try_lock() else { return };
            loop {
                let queued = std::mem::take(&mut self.lock_misc().claim_queue);
                if queued.is_empty() {
                    break;
                }
                self.claim_queued(queued).await;
            }
            drop(flushing);
            if self.lock_misc().claim_queue.is_empty() {
                return;
            }
        }
    }

    async fn claim_queued(&self, queued: BTreeSet<SwapId>) {
        let ctx = self.context();
        let mut members: Vec<ClaimMember> = Vec::new();
        let mut outs: BTreeSet<Txid> = BTreeSet::new();
        for id in &queued {
            if let Some(m) = self.claim_member(*id).await {
                outs.extend(m.out.as_ref().map(|o| o.tx.compute_txid()));
                members.push(m);
            }
        }
        if !outs.is_empty() {
            // The other swaps of a batch being replaced come along (left out, their claims
            // would leave the mempool with it).
            let others = self
                .inner
                .swaps
                .select(|s| !s.view().seller && s.view().kind == StateKind::Pending);
            for (id, _) in others {
                if queued.contains(&id) {
                    continue;
                }
                if let Some(m) = self.claim_member(id).await {
                    if m.out.as_ref().is_some_and(|o| outs.contains(&o.tx.compute_txid())) {
                        members.push(m);
                    }
                }
            }
        }
        // A claim that is out stays as it is unless one of its swaps asks for a bump or one
        // of its HTLCs went elsewhere (fewer swaps hold it than it has inputs).
        let mut groups: BTreeMap<Txid, (usize, usize, bool)> = BTreeMap::new();
        for m in &members {
            if let Some(o) = &m.out {
                let g = groups.entry(o.tx.compute_txid()).or_insert((0, o.tx.input.len(), false));
                g.0 += 1;
                g.2 |= m.wanted.is_some();
            }
        }
        members.retain(|m| match &m.out {
            None => true,
            Some(o) => groups
                .get(&o.tx.compute_txid())
                .is_some_and(|(holders, inputs, wanted)| *wanted || holders < inputs),
        });
        if members.is_empty() {
            return;
        }
        let estimates = ctx.fees.estimates;
        for plan in plan_claims(members, &estimates, ctx.tip_height) {
            match plan {
                Ok(plan) => self.claim_with(plan).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the claim; tried again at the next poll");
                }
            }
        }
    }

    async fn claim_member(&self, id: SwapId) -> Option<ClaimMember> {
        let slot = self.inner.swaps.get(&id)?;
        let ctx = self.context();
        let machine = slot.machine.lock().await;
        match &*machine {
            Machine::Buyer(b) => b.claim_member(&ctx),
            _ => None,
        }
    }

    /// Signs `plan` input by input, has each swap take it, and broadcasts it once all did.
    async fn claim_with(&self, mut plan: ClaimPlan) {
        for (index, id) in plan.members.iter().enumerate() {
            let signed = match self.inner.swaps.get(id) {
                Some(slot) => match &*slot.machine.lock().await {
                    Machine::Buyer(b) => {
                        b.sign_batch_claim(&mut plan.spend, index).map_err(|e| e.to_string())
                    }
                    _ => Err("not a loaded buyer swap".into()),
                },
                None => Err("no such swap".into()),
            };
            if let Err(e) = signed {
                tracing::warn!(swap = %id, error = %e, "cannot sign the claim; tried again at the next poll");
                return;
            }
        }
        let tx = match plan.spend.finalize() {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(error = %e, "cannot finish the claim");
                return;
            }
        };
        let txid = tx.compute_txid();
        if plan.members.len() > 1 {
            tracing::info!(swaps = plan.members.len(), %txid, replaces = ?plan.replaces, "claiming several swaps in one transaction");
        }
        let mut all_took = true;
        for id in &plan.members {
            let Some(slot) = self.inner.swaps.get(id) else {
                all_took = false;
                continue;
            };
            let event = Event::ClaimBuilt { tx: tx.clone(), inputs_sat: plan.inputs_sat };
            let took = match self.feed_slot(*id, &slot, event).await {
                Ok(persisted) => persisted && holds(&slot, txid).await,
                Err(e) => {
                    tracing::warn!(swap = %id, error = %e, "claim refused");
                    false
                }
            };
            all_took &= took;
        }
        if !all_took {
            // Not broadcast: a swap that did not take it (ended meanwhile) may have spent its
            // HTLC otherwise. The others ask again at their tick, without it.
            tracing::info!(%txid, "a swap did not take the batch claim; not broadcast");
            return;
        }
        if let Some(first) = plan.members.first() {
            self.broadcast(*first, &tx, TxPurpose::ScriptClaim).await;
        }
    }
}

/// Whether the swap's claim that is out is `txid`.
async fn holds(slot: &Slot, txid: Txid) -> bool {
    match &*slot.machine.lock().await {
        Machine::Buyer(b) => b.claim_txid() == Some(txid),
        _ => false,
    }
}
