//! The chain side: one poll reads the tip and fee rate, then each pending swap's watched
//! scripts, and feeds the changes (an HTLC output seen or confirmed, its spend, its
//! disappearance), then a `Tick`. Chain queries are made without holding any swap's lock.

use bitcoin::{FeeRate, OutPoint, ScriptBuf};
use looper_protocol::fees::{FeeEstimates, Fees};
use looper_protocol::swap::{Context, Event, HtlcStatus, PaymentStatus, StateKind};
use looper_protocol::{PaymentHash, Preimage, SwapId};

use super::swaps::{Seen, SeenValue, Slot};
use super::{Engine, FeeSettings};
use crate::chain::ChainSource;
use crate::engine::io::SwapWallet;

impl Engine {
    /// One chain poll: new tip and fee rate, each watched script's output and spend, swaps
    /// whose resume failed tried again, then a tick for every pending swap and the queued
    /// fundings. When the chain source fails, time still passes: the tick goes out with the tip
    /// last seen.
    pub async fn poll(&self) {
        let tip = match self.inner.chain.tip_height().await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "chain poll failed; the swaps' clock keeps moving");
                None
            }
        };
        let estimates = read_estimates(&*self.inner.chain).await;
        let sync_now = {
            let mut polls = self.lock_misc();
            polls.polls = polls.polls.wrapping_add(1);
            polls.polls % self.inner.config.wallet_sync_every.max(1) == 0
        };
        if sync_now {
            // Not while a funding is between being recorded and broadcast: a sync then does not
            // find it in the mempool and marks it evicted, and its coins could be spent twice.
            let flushing = self.inner.funding_flush.lock().await;
            if let Err(e) = self.inner.wallet.sync().await {
                tracing::debug!(error = %e, "wallet sync failed");
            }
            drop(flushing);
            if self.lock_misc().offer_unfunded {
                // Funds may have arrived: the refresh publishes the offer again if they did.
                self.refresh_served_offer().await;
            } else if self.lock_misc().in_offer_unpayable {
                // Likewise for the loop-in offer and the channels' outbound capacity.
                self.refresh_loop_in_offer().await;
            }
        }
        if let Some(tip) = tip {
            {
                let mut ctx = self.lock_ctx();
                ctx.tip_height = tip;
                apply_fees(&mut ctx, estimates, &self.inner.config.fees, &*self.inner.wallet);
            }
            if self.reprice_served_prepay() {
                self.refresh_served_offer().await;
            }
            // Buyer swaps that ended stop listening to their own keys.
            self.release_swap_keys().await;
            for (id, slot) in self.inner.swaps.select(Slot::needs_resume) {
                self.resume_one(id, &slot).await;
            }
            let watched = self
                .inner
                .swaps
                .select(|s| s.view().kind == StateKind::Pending && !s.watch().scripts.is_empty());
            for (id, slot) in watched {
                self.check_chain(id, &slot).await;
            }
        }
        self.retry_broadcasts().await;
        self.bump_fundings().await;
        self.tick_pending().await;
        self.flush_queues().await;
    }

    /// Feeds a tick to every pending swap.
    async fn tick_pending(&self) {
        for (id, slot) in self.inner.swaps.select(|s| s.view().kind == StateKind::Pending) {
            if let Err(e) = self.feed_slot(id, &slot, Event::Tick).await {
                tracing::debug!(swap = %id, error = %e, "tick refused");
            }
        }
    }

    async fn check_chain(&self, id: SwapId, slot: &Slot) {
        let scripts = slot.watch().scripts.clone();
        for spk in scripts {
            let history = match self.inner.chain.script_history(&spk).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(swap = %id, error = %e, "script history failed");
                    continue;
                }
            };
            let mut events: Vec<(Seen, Option<SeenValue>, Event)> = Vec::new();
            let mut outputs: Vec<OutPoint> = Vec::new();
            for h in &history {
                let txid = h.tx.compute_txid();
                for (vout, o) in h.tx.output.iter().enumerate() {
                    if o.script_pubkey != spk {
                        continue;
                    }
                    let Ok(vout) = u32::try_from(vout) else { continue };
                    let outpoint = OutPoint { txid, vout };
                    outputs.push(outpoint);
                    events.push((
                        Seen::Output(outpoint),
                        Some((txid, h.status.height())),
                        Event::HtlcOutput {
                            outpoint,
                            value_sat: o.value.to_sat(),
                            script_pubkey: spk.clone(),
                            confirmed_height: h.status.height(),
                        },
                    ));
                }
            }
            let mut gone: Vec<OutPoint> = Vec::new();
            let mut spend_gone: Vec<(OutPoint, bitcoin::Txid)> = Vec::new();
            {
                let mut watch = slot.watch();
                for op in &outputs {
                    let spender = history
                        .iter()
                        .find(|h| h.tx.input.iter().any(|i| i.previous_output == *op));
                    match spender {
                        Some(h) => events.push((
                            Seen::Spend(*op),
                            Some((h.tx.compute_txid(), h.status.height())),
                            Event::HtlcSpent {
                                tx: h.tx.clone(),
                                confirmed_height: h.status.height(),
                            },
                        )),
                        // A spend seen before is gone (reorganised out and dropped): forget it,
                        // so that the next spend is reported, and tell the swap (its spend goes
                        // out again if it was ours).
                        None => {
                            if let Some((txid, _)) = watch.seen.remove(&Seen::Spend(*op)) {
                                spend_gone.push((*op, txid));
                            }
                        }
                    }
                }
                // Outputs of this script seen before that are in neither the chain nor the
                // mempool any more (reorganised out and dropped, or double-spent).
                for key in watch.seen.keys() {
                    if let Seen::Output(op) = key {
                        if !outputs.contains(op) {
                            gone.push(*op);
                        }
                    }
                }
                for op in &gone {
                    watch.seen.remove(&Seen::Output(*op));
                    watch.seen.remove(&Seen::Spend(*op));
                }
                // Only changes are fed.
                events.retain(|(key, val, _)| {
                    let changed = watch.seen.get(key) != val.as_ref();
                    if let (true, Some(val)) = (changed, val) {
                        watch.seen.insert(*key, *val);
                    }
                    changed
                });
            }
            for outpoint in gone {
                tracing::warn!(swap = %id, %outpoint, "htlc output left the chain");
                if let Err(e) = self.feed_slot(id, slot, Event::HtlcGone { outpoint }).await {
                    tracing::debug!(swap = %id, error = %e, "chain event refused");
                }
            }
            for (outpoint, txid) in spend_gone {
                tracing::warn!(swap = %id, %outpoint, %txid, "htlc spend left the chain");
                let event = Event::HtlcSpendGone { outpoint, txid };
                let fed = self.feed_slot(id, slot, event).await;
                if !matches!(fed, Ok(true)) {
                    if let Err(e) = fed {
                        tracing::debug!(swap = %id, error = %e, "chain event refused");
                    }
                    // Not taken: remembered, so that the next poll finds it gone again.
                    slot.watch().seen.insert(Seen::Spend(outpoint), (txid, None));
                }
            }
            for (key, _, event) in events {
                let fed = self.feed_slot(id, slot, event).await;
                if !matches!(fed, Ok(true)) {
                    if let Err(e) = fed {
                        tracing::debug!(swap = %id, error = %e, "chain event refused");
                    }
                    // Not taken (refused, or its state not persisted): forgotten, so that the
                    // next poll feeds it again instead of the swap never hearing of it.
                    slot.watch().seen.remove(&key);
                }
            }
        }
    }

    /// What the Lightning node knows now of the payment for `hash`.
    pub(super) fn payment_status(&self, hash: PaymentHash) -> PaymentStatus {
        match self.inner.lightning.payment(hash) {
            None => PaymentStatus::Unknown,
            Some(p) => match p.status.as_str() {
                "pending" => PaymentStatus::Pending,
                "succeeded" => PaymentStatus::Succeeded {
                    preimage: p.preimage.as_deref().and_then(|h| h.parse::<Preimage>().ok()),
                },
                _ => PaymentStatus::Failed,
            },
        }
    }

    /// The HTLC output as the chain source sees it now (`None`: the source failed).
    pub(super) async fn htlc_status(
        &self,
        outpoint: OutPoint,
        spk: &ScriptBuf,
    ) -> Option<HtlcStatus> {
        let history = match self.inner.chain.script_history(spk).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%outpoint, error = %e, "cannot check the htlc before paying");
                return None;
            }
        };
        let Some(h) = history.iter().find(|h| h.tx.compute_txid() == outpoint.txid) else {
            return Some(HtlcStatus::Missing);
        };
        let value_sat = h.tx.output.get(outpoint.vout as usize)?.value.to_sat();
        if history.iter().any(|h| h.tx.input.iter().any(|i| i.previous_output == outpoint)) {
            return Some(HtlcStatus::Spent);
        }
        Some(HtlcStatus::Unspent { value_sat, confirmed_height: h.status.height() })
    }
}

/// The fee rates of the swaps' transactions from the chain's estimates (`None`: the source
/// failed; the last ones stay, or a flat 2 sat/vB before any): the funding rate (its target's
/// estimate under the wallet's cap) into `ctx.fee_rate`, the uncapped estimates with the cap and
/// the claim and refund targets into `ctx.fees`.
pub(super) fn apply_fees(
    ctx: &mut Context,
    estimates: Option<FeeEstimates>,
    settings: &FeeSettings,
    wallet: &dyn SwapWallet,
) {
    let estimates = match estimates {
        Some(e) => e,
        None if ctx.fees.estimates != FeeEstimates::flat(FeeRate::ZERO) => ctx.fees.estimates,
        None => FeeEstimates::flat(FeeRate::from_sat_per_vb_u32(2)),
    };
    let max_rate = wallet.max_fee_rate();
    ctx.fee_rate = estimates.rate_for(settings.funding_target).min(max_rate);
    ctx.fees = Fees {
        estimates,
        max_rate,
        claim_target: settings.claim_target,
        refund_target: settings.refund_target,
    };
}

/// The chain's fee estimates, `None` (logged) when the source fails.
pub(super) async fn read_estimates(chain: &dyn ChainSource) -> Option<FeeEstimates> {
    match chain.fee_estimates().await {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::debug!(error = %e, "fee estimates unavailable");
            None
        }
    }
}
