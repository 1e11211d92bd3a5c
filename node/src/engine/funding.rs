//! The seller's funding batcher: the `FundHtlc`s queued meanwhile are paid by one transaction,
//! and each swap is fed its `FundingBuilt` (with its own output index). The wallet records the
//! transaction when it is built; one flush runs at a time, so a funding is broadcast before the
//! next one is built (on its change). A transaction no swap took is forgotten again.

use bitcoin::{Amount, ScriptBuf, Transaction};
use looper_protocol::swap::{Event, StateKind, TxPurpose};
use looper_protocol::SwapId;

use super::Engine;

/// Most HTLCs one funding transaction pays. Every seller record keeps its funding transaction,
/// and a record must stay well under what one encrypted backup event carries (NIP-44: 64 KiB):
/// 50 outputs keep a funding near 3 kB.
pub const MAX_FUNDING_OUTPUTS: usize = 50;

/// A queued `FundHtlc`.
#[derive(Debug, Clone)]
pub(super) struct FundingRequest {
    /// The swap.
    id: SwapId,
    /// The HTLC's script.
    script: ScriptBuf,
    /// The HTLC's value.
    amount_sat: u64,
    /// The swap's own confirmation target (`None`: the node's): only fundings of one target
    /// share a transaction.
    conf_target: Option<u16>,
}

impl Engine {
    /// The queued fundings ([`Engine::flush_funding`]), then the queued claims
    /// ([`Engine::flush_claims`]).
    pub async fn flush_queues(&self) {
        self.flush_funding().await;
        self.flush_claims().await;
    }

    pub(super) fn queue_funding(
        &self,
        id: SwapId,
        script: ScriptBuf,
        amount_sat: u64,
        conf_target: Option<u16>,
    ) {
        self.lock_misc().funding_queue.push(FundingRequest { id, script, amount_sat, conf_target });
    }

    /// Funds every queued `FundHtlc` in one transaction and feeds each swap its
    /// `FundingBuilt`. When the batch cannot be built, each swap is tried alone.
    ///
    /// One flush runs at a time (the wallet's rule: build, broadcast and record one funding after
    /// the other). Concurrent flushes built fundings on the change of fundings not broadcast
    /// yet, which the chain refuses as orphans, and a wallet sync meanwhile dropped such an
    /// unbroadcast funding and let a later one spend its coins again: fundings that never
    /// confirm. A caller that finds a flush running returns at once and leaves what it queued to
    /// that flush, which goes on while the queue is not empty and looks again after letting go.
    pub async fn flush_funding(&self) {
        loop {
            let Ok(flushing) = self.inner.funding_flush.try_lock() else { return };
            while !self.lock_misc().funding_queue.is_empty() {
                self.flush_queued().await;
            }
            drop(flushing);
            if self.lock_misc().funding_queue.is_empty() {
                return;
            }
        }
    }

    /// One batch of [`Engine::flush_funding`]: what is queued now with the confirmation target
    /// of the first in the queue, up to [`MAX_FUNDING_OUTPUTS`] (the rest stays queued, in order,
    /// for the next batches).
    async fn flush_queued(&self) {
        let (queued, target) = next_batch(&mut self.lock_misc().funding_queue);
        // Only swaps still waiting for their funding (an abort meanwhile drops its output).
        let mut waiting = Vec::with_capacity(queued.len());
        for item in queued {
            let Some(slot) = self.inner.swaps.get(&item.id) else { continue };
            if slot.machine.lock().await.awaits_funding() {
                waiting.push(item);
            }
        }
        // A funding built before a crash (recorded by the wallet, maybe broadcast for another
        // swap of its batch) is taken as it is: funding the same HTLC twice would strand one
        // output that no swap watches.
        let mut fresh = Vec::with_capacity(waiting.len());
        for item in waiting {
            let id = &item.id;
            let found = super::blocking_store(|| {
                self.inner.wallet.find_funding(&item.script, Amount::from_sat(item.amount_sat))
            });
            match found {
                Ok(Some((tx, vout))) => {
                    tracing::info!(swap = %id, txid = %tx.compute_txid(), "taking the funding built before a restart");
                    self.fund_one(*id, Event::FundingBuilt { tx, vout }).await;
                }
                Ok(None) => fresh.push(item),
                Err(e) => {
                    tracing::warn!(swap = %id, error = %e, "cannot look for an earlier funding; not funding now");
                }
            }
        }
        let waiting = fresh;
        if waiting.is_empty() {
            return;
        }
        if let Err(e) = self.inner.wallet.sync().await {
            tracing::debug!(error = %e, "wallet sync before funding failed");
        }
        let rate = {
            let ctx = self.context();
            // A swap's own target: its estimate under the wallet's cap, as the node's.
            target.map_or(ctx.fee_rate, |t| ctx.fees.estimates.rate_for(t).min(ctx.fees.max_rate))
        };
        match self.build(&waiting, rate).await {
            Ok((tx, vouts)) => {
                if waiting.len() > 1 {
                    tracing::info!(swaps = waiting.len(), txid = %tx.compute_txid(), "funding several swaps in one transaction");
                }
                let mut taken = false;
                for (item, vout) in waiting.iter().zip(vouts) {
                    let event = Event::FundingBuilt { tx: tx.clone(), vout };
                    taken |= self.fund_one(item.id, event).await;
                }
                self.forget_unless(taken, &tx);
            }
            Err(e) if waiting.len() > 1 => {
                tracing::warn!(swaps = waiting.len(), error = %e, "batch funding failed; funding each swap alone");
                for item in &waiting {
                    match self.build(std::slice::from_ref(item), rate).await {
                        Ok((tx, vouts)) => {
                            let taken = match vouts.first() {
                                Some(vout) => {
                                    let event = Event::FundingBuilt { tx: tx.clone(), vout: *vout };
                                    self.fund_one(item.id, event).await
                                }
                                None => false,
                            };
                            self.forget_unless(taken, &tx);
                        }
                        Err(e) => {
                            self.fund_one(item.id, Event::FundingFailed { reason: e }).await;
                        }
                    }
                }
            }
            Err(e) => {
                for item in &waiting {
                    self.fund_one(item.id, Event::FundingFailed { reason: e.clone() }).await;
                }
            }
        }
    }

    async fn build(
        &self,
        batch: &[FundingRequest],
        rate: bitcoin::FeeRate,
    ) -> Result<(Transaction, Vec<u32>), String> {
        let outputs: Vec<(ScriptBuf, Amount)> =
            batch.iter().map(|r| (r.script.clone(), Amount::from_sat(r.amount_sat))).collect();
        let f = self.inner.wallet.fund(&outputs, rate).await.map_err(|e| e.to_string())?;
        if f.vouts.len() != batch.len() {
            self.forget_unless(false, &f.tx);
            return Err("the funding transaction lacks an output".into());
        }
        Ok((f.tx, f.vouts))
    }

    /// Feeds a funding result; `true` when the swap took (persisted) it.
    async fn fund_one(&self, id: SwapId, event: Event) -> bool {
        match self.feed(id, event).await {
            Ok(persisted) => persisted,
            Err(e) => {
                tracing::warn!(swap = %id, error = %e, "funding refused");
                false
            }
        }
    }

    fn forget_unless(&self, taken: bool, tx: &Transaction) {
        if taken {
            return;
        }
        tracing::info!(txid = %tx.compute_txid(), "no swap took the funding transaction: forgotten");
        if let Err(e) = self.inner.wallet.forget(tx) {
            tracing::warn!(error = %e, "cannot forget the funding transaction");
        }
    }

    /// Broadcasts a swap's transaction and records it in the wallet (a claim or refund pays it).
    /// A failed broadcast is kept and tried again at every chain poll
    /// ([`Engine::retry_broadcasts`]) until it succeeds, the swap ends, or the swap broadcasts
    /// another transaction for the same purpose (a replacement).
    pub(super) async fn broadcast(&self, id: SwapId, tx: &Transaction, purpose: TxPurpose) {
        let failed = self.try_broadcast(id, tx, purpose, false).await;
        if failed && purpose == TxPurpose::ScriptClaim && tx.input.len() > 1 {
            // A claim of several swaps the chain refuses may spend an HTLC that is gone (a
            // swap of the batch lost it): the next flush builds it again without that one
            // (and leaves it as it is when every swap of the batch still holds it).
            self.queue_claim(id);
        }
        let mut misc = self.lock_misc();
        if failed {
            misc.retry_broadcasts.insert((id, purpose), tx.clone());
        } else {
            misc.retry_broadcasts.remove(&(id, purpose));
        }
    }

    /// Tries the failed broadcasts again (at each chain poll).
    pub(super) async fn retry_broadcasts(&self) {
        let due: Vec<((SwapId, TxPurpose), Transaction)> =
            self.lock_misc().retry_broadcasts.iter().map(|(k, t)| (*k, t.clone())).collect();
        for ((id, purpose), tx) in due {
            let pending =
                self.inner.swaps.get(&id).is_some_and(|s| s.view().kind == StateKind::Pending);
            let failed = pending && self.try_broadcast(id, &tx, purpose, true).await;
            let mut misc = self.lock_misc();
            // Unless a newer transaction took its place meanwhile.
            if !failed && misc.retry_broadcasts.get(&(id, purpose)) == Some(&tx) {
                misc.retry_broadcasts.remove(&(id, purpose));
            }
        }
    }

    /// One broadcast; whether it failed (a source that already has it is success).
    async fn try_broadcast(
        &self,
        id: SwapId,
        tx: &Transaction,
        purpose: TxPurpose,
        retry: bool,
    ) -> bool {
        match self.inner.chain.broadcast(tx).await {
            Ok(txid) => {
                tracing::info!(swap = %id, %txid, purpose = ?purpose, retry, "broadcast");
                if purpose != TxPurpose::Funding {
                    if let Err(e) = self.inner.wallet.apply_unconfirmed(tx) {
                        tracing::warn!(swap = %id, error = %e, "wallet did not record the transaction");
                    }
                }
                false
            }
            Err(e) if retry => {
                tracing::debug!(swap = %id, purpose = ?purpose, error = %e, "broadcast failed again");
                true
            }
            Err(e) => {
                tracing::warn!(
                    swap = %id,
                    purpose = ?purpose,
                    error = %e,
                    "broadcast failed; tried again at every chain poll"
                );
                true
            }
        }
    }
}

/// Takes the next batch out of `queue`: the requests of the first one's confirmation target, up
/// to [`MAX_FUNDING_OUTPUTS`], in queue order; the rest stays queued in order. Returns the batch
/// and its target.
fn next_batch(queue: &mut Vec<FundingRequest>) -> (Vec<FundingRequest>, Option<u16>) {
    let target = queue.first().and_then(|r| r.conf_target);
    let (mut batch, mut rest) = (Vec::new(), Vec::new());
    for r in queue.drain(..) {
        if r.conf_target == target && batch.len() < MAX_FUNDING_OUTPUTS {
            batch.push(r);
        } else {
            rest.push(r);
        }
    }
    *queue = rest;
    (batch, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u8, conf_target: Option<u16>) -> FundingRequest {
        FundingRequest {
            id: SwapId([n; 32]),
            script: ScriptBuf::new(),
            amount_sat: 10_000,
            conf_target,
        }
    }

    fn ids(batch: &[FundingRequest]) -> Vec<u8> {
        batch.iter().map(|r| r.id.0[0]).collect()
    }

    #[test]
    fn a_batch_holds_one_confirmation_target() {
        let mut queue =
            vec![request(1, None), request(2, Some(2)), request(3, None), request(4, Some(2))];
        let (batch, target) = next_batch(&mut queue);
        assert_eq!((ids(&batch), target), (vec![1, 3], None));
        let (batch, target) = next_batch(&mut queue);
        assert_eq!((ids(&batch), target), (vec![2, 4], Some(2)));
        assert!(queue.is_empty());
        assert_eq!(next_batch(&mut queue).0.len(), 0);
    }

    #[test]
    fn a_batch_holds_at_most_the_most_outputs() {
        let mut queue: Vec<_> = (0..60).map(|n| request(n, None)).collect();
        let (batch, _) = next_batch(&mut queue);
        assert_eq!(batch.len(), MAX_FUNDING_OUTPUTS);
        assert_eq!(ids(&queue), (50..60).collect::<Vec<u8>>());
    }
}
