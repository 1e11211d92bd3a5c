//! Seller: a funding transaction that waits in the mempool while the fee rate rises is lifted by
//! a child spending its change back to the wallet (CPFP). The funding's txid stays the same, so
//! the HTLC outpoints every buyer of its batch was told stay valid (a replacement of the funding
//! would move them). Spec `03-transactions.md`, "Fees and replacement".

use std::collections::BTreeMap;

use bitcoin::{FeeRate, Transaction, Txid};

use looper_protocol::swap::StateKind;

use super::Engine;

/// A child is replaced only when the target rate rose by this share (percent) of the rate it
/// pays: each replacement costs a new transaction's fee.
const CPFP_RAISE_PERCENT: u64 = 25;

/// Seconds per block the funding's deadline is counted in.
const BLOCK_SECS: u64 = 600;

/// What the engine knows of one waiting funding.
#[derive(Debug, Clone)]
pub(super) struct FundingBump {
    /// The tip when the engine first saw it waiting: a child only after a block came without it.
    first_tip: u32,
    /// The child out now, and the rate of the pair.
    child: Option<(Transaction, FeeRate)>,
}

impl Engine {
    /// Seller, at every chain poll: each funding of its swaps that is still unconfirmed a block
    /// after it was first seen waiting, and pays less than the funding target's rate now, gets a
    /// child that lifts it (a higher one when the rate rose by [`CPFP_RAISE_PERCENT`]); the child
    /// is rebroadcast, after its parent, at every poll while the parent waits.
    pub(super) async fn bump_fundings(&self) {
        // Each waiting funding, with the earliest time a buyer of its batch stops waiting.
        let mut parents: BTreeMap<Txid, (Transaction, Option<u64>)> = BTreeMap::new();
        for (_, slot) in
            self.inner.swaps.select(|s| s.view().seller && s.view().kind == StateKind::Pending)
        {
            if let Some((tx, deadline)) = slot.machine.lock().await.unconfirmed_funding() {
                let entry = parents.entry(tx.compute_txid()).or_insert((tx.clone(), deadline));
                entry.1 = match (entry.1, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let ctx = self.context();
        let mut bumps = std::mem::take(&mut self.lock_misc().funding_bumps);
        bumps.retain(|txid, _| parents.contains_key(txid));
        for (txid, (parent, deadline)) in parents {
            let target = funding_rate(&ctx, deadline);
            let bump =
                bumps.entry(txid).or_insert(FundingBump { first_tip: ctx.tip_height, child: None });
            if ctx.tip_height <= bump.first_tip {
                continue;
            }
            let raise = match &bump.child {
                None => true,
                Some((_, rate)) => {
                    target.to_sat_per_kwu().saturating_mul(100)
                        >= rate.to_sat_per_kwu().saturating_mul(100 + CPFP_RAISE_PERCENT)
                }
            };
            if raise {
                let replaces = bump.child.as_ref().map(|(tx, _)| tx);
                match self.inner.wallet.cpfp(&parent, replaces, target).await {
                    Ok(Some(child)) => {
                        tracing::info!(
                            funding = %txid,
                            child = %child.tx.compute_txid(),
                            fee_sat = child.fee.to_sat(),
                            package_sat_per_vb = child.package_rate.to_sat_per_vb_ceil(),
                            "funding waits in the mempool: a child pays for it"
                        );
                        bump.child = Some((child.tx, child.package_rate));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(funding = %txid, error = %e, "cannot build a child for the funding")
                    }
                }
            }
            if let Some((child, _)) = &bump.child {
                // The parent first: a node that dropped it would refuse the child.
                if let Err(e) = self.inner.chain.broadcast(&parent).await {
                    tracing::debug!(funding = %txid, error = %e, "funding rebroadcast refused");
                }
                if let Err(e) = self.inner.chain.broadcast(child).await {
                    tracing::debug!(funding = %txid, error = %e, "funding child broadcast refused");
                }
            }
        }
        self.lock_misc().funding_bumps = bumps;
    }
}

/// The rate a waiting funding is lifted to: the funding target's estimate, or a nearer target's
/// when the buyers' wait (`deadline`, unix seconds) ends sooner: half the blocks left, so that it
/// confirms with time to spare (at least the next block's); under the wallet's cap.
fn funding_rate(ctx: &looper_protocol::swap::Context, deadline: Option<u64>) -> FeeRate {
    let Some(deadline) = deadline else { return ctx.fee_rate };
    let blocks_left = deadline.saturating_sub(ctx.now_secs) / BLOCK_SECS;
    let target = u16::try_from(blocks_left / 2).unwrap_or(u16::MAX).max(1);
    let nearer = ctx.fees.estimates.rate_for(target).min(ctx.fees.max_rate);
    nearer.max(ctx.fee_rate)
}

#[cfg(test)]
mod tests {
    use looper_protocol::fees::{FeeEstimates, Fees};
    use looper_protocol::swap::Context;

    use super::*;

    #[test]
    fn the_funding_rate_tightens_as_the_buyers_wait_ends() {
        let mut ctx = Context::new(1_000_000, 100, FeeRate::from_sat_per_vb_u32(3));
        let estimates = FeeEstimates::from_fn(|target| match target {
            1 => FeeRate::from_sat_per_vb_u32(40),
            2..=5 => FeeRate::from_sat_per_vb_u32(10),
            _ => FeeRate::from_sat_per_vb_u32(3),
        });
        ctx.fees = Fees { estimates, max_rate: FeeRate::from_sat_per_vb_u32(100), ..ctx.fees };
        let at = |ctx: &Context, secs_left: u64| {
            funding_rate(ctx, Some(1_000_000 + secs_left)).to_sat_per_vb_ceil()
        };
        assert_eq!(funding_rate(&ctx, None).to_sat_per_vb_ceil(), 3, "no deadline: the target's");
        assert_eq!(at(&ctx, 3_600 * 4), 3, "hours left: the funding target's");
        assert_eq!(at(&ctx, 3_600), 10, "an hour left: three blocks");
        assert_eq!(at(&ctx, 600), 40, "minutes left: the next block");
        // Never above the cap.
        ctx.fees.max_rate = FeeRate::from_sat_per_vb_u32(20);
        assert_eq!(at(&ctx, 0), 20);
    }
}
