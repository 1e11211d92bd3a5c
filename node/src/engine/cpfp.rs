//! Seller: a funding transaction that waits in the mempool while the fee rate rises is lifted by
//! a child spending its change back to the wallet (CPFP). The funding's txid stays the same, so
//! the HTLC outpoints every buyer of its batch was told stay valid (a replacement of the funding
//! would move them). Spec `03-transactions.md`, "Fees and replacement".

use std::collections::BTreeMap;

use bitcoin::{FeeRate, Transaction, Txid};

use super::Engine;

/// A child is replaced only when the target rate rose by this share (percent) of the rate it
/// pays: each replacement costs a new transaction's fee.
const CPFP_RAISE_PERCENT: u64 = 25;

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
        let mut parents: BTreeMap<Txid, Transaction> = BTreeMap::new();
        for (_, slot) in self.inner.swaps.select(|s| s.view().seller) {
            if let Some(tx) = slot.machine.lock().await.unconfirmed_funding() {
                parents.insert(tx.compute_txid(), tx.clone());
            }
        }
        let ctx = self.context();
        let target = ctx.fee_rate;
        let mut bumps = std::mem::take(&mut self.lock_misc().funding_bumps);
        bumps.retain(|txid, _| parents.contains_key(txid));
        for (txid, parent) in parents {
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
