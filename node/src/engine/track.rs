//! The buyer's memory of the sellers it dealt with (issue 15.5): per seller key, the swaps that
//! completed and the **no-shows**, swaps the seller accepted and then never funded before the
//! invoice expired (or the timeout came too close) without a word. A no-show after a prepay cost
//! the buyer that prepay. Computed from the buyer's own swap records, so it survives restarts and
//! restores with them.

use std::collections::BTreeMap;

use looper_protocol::buyer::BuyerState;
use looper_protocol::messages::AbortReason;
use looper_protocol::record::SwapRecord as ProtoRecord;

use super::{blocking_store, Engine, EngineError};
use crate::store::{SwapFilter, SwapRole};

/// What this node, as a buyer, saw of one seller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SellerTrack {
    /// Swaps claimed.
    pub completed: u32,
    /// Swaps the seller accepted and never funded, without explaining why (no `swap_abort` or
    /// `error` from it).
    pub no_shows: u32,
    /// Prepays paid to it for those no-shows, sat.
    pub prepaid_lost_sat: u64,
}

impl Engine {
    /// Per seller key (hex), what this node saw as a buyer (only sellers it swapped with).
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn seller_tracks(&self) -> Result<BTreeMap<String, SellerTrack>, EngineError> {
        let filter = SwapFilter { role: Some(SwapRole::Buyer), ..SwapFilter::default() };
        let records = blocking_store(|| self.inner.store.list_swaps(&filter))?;
        let mut out: BTreeMap<String, SellerTrack> = BTreeMap::new();
        for rec in records {
            let Ok(ProtoRecord::Buyer(b)) = ProtoRecord::from_bytes(&rec.data) else { continue };
            let track = out.entry(b.peer().to_string()).or_default();
            match b.state() {
                BuyerState::Claimed { .. } => track.completed = track.completed.saturating_add(1),
                BuyerState::Aborted {
                    reason: AbortReason::FundingTimeout | AbortReason::TimeoutTooClose,
                    terms: Some(terms),
                    htlc: None,
                    ..
                } => {
                    track.no_shows = track.no_shows.saturating_add(1);
                    let prepaid = terms.prepay.as_ref().map_or(0, |p| p.amount_msat / 1000);
                    track.prepaid_lost_sat = track.prepaid_lost_sat.saturating_add(prepaid);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
