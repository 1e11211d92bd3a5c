//! The seller's offers: the one served from the configuration is republished with a fresh
//! expiry, follows what the wallet can fund, and is taken off the relays while it cannot; the
//! configuration's loop-in offer likewise follows what the channels can pay.

use looper_api::Prepay;
use looper_protocol::messages::Offer;

use super::{blocking_store, Engine, EngineError, Served};

/// Sats kept back from an offer's maximum for the funding transaction's fee.
pub(super) const FUNDING_FEE_RESERVE_SAT: u64 = 2_000;

/// An automatic prepay is repriced when the fee rate moves it by at least this share (percent)
/// of the published one: each new price is a new version of the offer, and a buyer who took the
/// previous one is refused (`quote_mismatch`).
pub(super) const AUTO_PREPAY_REPRICE_PERCENT: u64 = 25;

impl Engine {
    /// Seller: remembers `offer` (served from now on) and publishes it; without its
    /// `ln_address` when [`EngineConfig::publish_ln_address`](super::EngineConfig) is off.
    ///
    /// # Errors
    /// Store or transport errors.
    pub async fn publish_offer(&self, offer: &Offer) -> Result<(), EngineError> {
        let offer = published_form(offer, self.inner.config.publish_ln_address);
        let offer = offer.as_ref();
        let value = serde_json::to_value(offer).map_err(|e| EngineError::Record {
            id: offer.offer_id.clone(),
            reason: e.to_string(),
        })?;
        blocking_store(|| self.inner.store.put_offer(&offer.offer_id, &value))?;
        self.inner
            .transport
            .publish_offer(offer)
            .await
            .map_err(|e| EngineError::Transport(e.to_string()))?;
        Ok(())
    }

    /// Seller: withdraws an offer (no new swaps from it). Returns whether it existed.
    ///
    /// # Errors
    /// Store or transport errors.
    pub async fn withdraw_offer(&self, offer_id: &str) -> Result<bool, EngineError> {
        {
            let mut misc = self.lock_misc();
            if misc.served_offer.as_ref().is_some_and(|o| o.offer_id == offer_id) {
                misc.served_offer = None;
            }
            if misc.served_in_offer.as_ref().is_some_and(|o| o.offer_id == offer_id) {
                misc.served_in_offer = None;
            }
        }
        let existed = blocking_store(|| self.inner.store.delete_offer(offer_id))?;
        self.inner
            .transport
            .withdraw_offer(offer_id)
            .await
            .map_err(|e| EngineError::Transport(e.to_string()))?;
        Ok(existed)
    }

    /// Seller: publishes the configuration's offer again (if still served) with a new
    /// `expires_at`. Called when [`Engine::run`] starts and every
    /// [`EngineConfig::offer_refresh`](super::EngineConfig::offer_refresh).
    ///
    /// The offer follows what the wallet can fund: its `max_amount_sat` is lowered to the
    /// spendable balance (less a fee reserve), and it is withdrawn from the relays while the
    /// wallet cannot fund even `min_amount_sat` (and published again once it can).
    pub async fn refresh_served_offer(&self) {
        self.refresh_loop_in_offer().await;
        self.reprice_served_prepay();
        let Some(mut offer) = self.lock_misc().served_offer.clone() else { return };
        offer.expires_at =
            self.inner.clock.now_secs().saturating_add(self.inner.config.offer_ttl.as_secs());
        let spendable = match self.inner.wallet.spendable_sat() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the wallet balance for the offer");
                return;
            }
        };
        // What the unpaid-capital budget leaves counts as what the wallet can fund.
        let spendable = match self.inner.config.max_unpaid_locked_sat {
            Some(budget) => {
                let (unfunded, funded) = self.unpaid_locked();
                let locked = unfunded.saturating_add(funded);
                let left = budget.saturating_sub(locked).saturating_add(FUNDING_FEE_RESERVE_SAT);
                spendable.min(left)
            }
            None => spendable,
        };
        let fundable = fundable_offer(offer, spendable);
        let why =
            format!("the wallet cannot fund the offer ({spendable} sat spendable): withdrawn");
        self.publish_served(Served::Out, fundable, &why).await;
    }

    /// Publishes the configuration's offer `which` as far as the node can serve it (`servable`),
    /// or, when it cannot (`None`), takes it off the relays once, saying `why`, until it can
    /// again.
    async fn publish_served(&self, which: Served, servable: Option<Offer>, why: &str) {
        let Some(offer) = servable else {
            let id = {
                let mut misc = self.lock_misc();
                let (offer, off) = misc.served(which);
                let id = offer.as_ref().map(|o| o.offer_id.clone());
                if std::mem::replace(off, true) {
                    return;
                }
                id
            };
            tracing::info!("{why}");
            if let Some(id) = id {
                if let Err(e) = self.inner.transport.withdraw_offer(&id).await {
                    tracing::warn!(offer = %id, error = %e, "cannot withdraw the offer");
                }
            }
            return;
        };
        *self.lock_misc().served(which).1 = false;
        match self.publish_offer(&offer).await {
            Ok(()) => tracing::info!(offer = %offer.offer_id, "offer published"),
            Err(e) => {
                tracing::warn!(offer = %offer.offer_id, error = %e, "cannot publish the offer")
            }
        }
    }
}

impl Engine {
    /// Maker of loop ins: publishes the configuration's loop-in offer again (if still served)
    /// with a new `expires_at` (at each [`Engine::refresh_served_offer`]). It follows what the
    /// node can pay over Lightning: its `max_amount_sat` is lowered to the ready channels'
    /// outbound capacity (the invoice it pays is the amount less its fees), and it is withdrawn
    /// from the relays while that cannot cover `min_amount_sat` (published again once it can).
    pub async fn refresh_loop_in_offer(&self) {
        let Some(mut offer) = self.lock_misc().served_in_offer.clone() else { return };
        offer.expires_at =
            self.inner.clock.now_secs().saturating_add(self.inner.config.offer_ttl.as_secs());
        let outbound_sat = self.outbound_msat() / 1000;
        let payable = if self.inner.config.check_liquidity {
            payable_offer(offer, outbound_sat)
        } else {
            Some(offer)
        };
        let why = format!(
            "the channels cannot pay the loop-in offer ({outbound_sat} sat outbound): withdrawn"
        );
        self.publish_served(Served::In, payable, &why).await;
    }

    /// What the node's ready channels can send now, in msat.
    pub(super) fn outbound_msat(&self) -> u64 {
        self.inner
            .lightning
            .channels()
            .iter()
            .filter(|c| c.ready)
            .map(|c| c.outbound_msat)
            .fold(0, u64::saturating_add)
    }

    /// Seller: the automatic prepay ([`EngineConfig::auto_prepay`](super::EngineConfig)) at the
    /// current fee rates: the funding's and the refund's, whichever is higher.
    fn auto_prepay_sat(&self, min_amount_sat: u64) -> Option<u64> {
        let ctx = self.context();
        let refund_rate =
            ctx.fees.estimates.rate_for(ctx.fees.refund_target).min(ctx.fees.max_rate);
        let rate = ctx.fee_rate.max(refund_rate).to_sat_per_vb_ceil();
        Prepay::Auto.resolve(rate, min_amount_sat)
    }

    /// Seller: moves the served offer's automatic prepay to the current fee rates when they
    /// moved it by [`AUTO_PREPAY_REPRICE_PERCENT`] or more. Returns whether it changed (the
    /// offer is then to be published again).
    pub(super) fn reprice_served_prepay(&self) -> bool {
        if !self.inner.config.auto_prepay {
            return false;
        }
        let Some(min_amount) = self.lock_misc().served_offer.as_ref().map(|o| o.min_amount_sat)
        else {
            return false;
        };
        let fresh = self.auto_prepay_sat(min_amount);
        let mut misc = self.lock_misc();
        let Some(offer) = misc.served_offer.as_mut() else { return false };
        let moved = match (offer.prepay_sat, fresh) {
            (Some(old), Some(new)) => {
                old.abs_diff(new).saturating_mul(100)
                    >= old.saturating_mul(AUTO_PREPAY_REPRICE_PERCENT)
            }
            (old, new) => old != new,
        };
        if moved {
            tracing::info!(
                from_sat = offer.prepay_sat.unwrap_or(0),
                to_sat = fresh.unwrap_or(0),
                "automatic prepay repriced at the current fee rate"
            );
            offer.prepay_sat = fresh;
        }
        moved
    }
}

/// `offer` as this node publishes it: without its `ln_address` unless `publish_ln_address`
/// (`seller.publish_lightning_address`).
fn published_form(offer: &Offer, publish_ln_address: bool) -> std::borrow::Cow<'_, Offer> {
    match &offer.ln_address {
        Some(_) if !publish_ln_address => {
            tracing::debug!(
                offer = %offer.offer_id,
                "Lightning address left out of the offer (seller.publish_lightning_address)"
            );
            std::borrow::Cow::Owned(Offer { ln_address: None, ..offer.clone() })
        }
        _ => std::borrow::Cow::Borrowed(offer),
    }
}

/// The offer as far as `spendable_sat` can fund it: `max_amount_sat` lowered to what the wallet
/// holds (less [`FUNDING_FEE_RESERVE_SAT`]); `None` when it cannot fund `min_amount_sat`.
fn fundable_offer(mut offer: Offer, spendable_sat: u64) -> Option<Offer> {
    let fundable = spendable_sat.saturating_sub(FUNDING_FEE_RESERVE_SAT);
    if fundable < offer.min_amount_sat {
        return None;
    }
    offer.max_amount_sat = offer.max_amount_sat.min(fundable);
    Some(offer)
}

/// The loop-in offer as far as `outbound_sat` can pay it: `max_amount_sat` lowered to the
/// outbound capacity (the invoice, the amount less the maker's fees, then fits); `None` when it
/// cannot cover `min_amount_sat`.
fn payable_offer(mut offer: Offer, outbound_sat: u64) -> Option<Offer> {
    if outbound_sat < offer.min_amount_sat {
        return None;
    }
    offer.max_amount_sat = offer.max_amount_sat.min(outbound_sat);
    Some(offer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn offer(min: u64, max: u64) -> Offer {
        let json = serde_json::json!({
            "v": 1, "offer_id": "t", "network": "regtest", "direction": "loop_out",
            "min_amount_sat": min, "max_amount_sat": max, "fee_base_sat": 0, "fee_ppm": 0,
            "funding_fee_sat": 0, "min_confirmations": 1, "timeout_delta": 144,
            "claim_margin": 20, "invoice_expiry_secs": 3600,
            "ln_node_id": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", "relays": [], "expires_at": 1
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_lightning_address_is_published_only_when_allowed() {
        let mut o = offer(10_000, 100_000);
        o.ln_address = Some("192.0.2.1:9735".into());
        assert_eq!(published_form(&o, true).ln_address.as_deref(), Some("192.0.2.1:9735"));
        let hidden = published_form(&o, false).into_owned();
        assert_eq!(hidden.ln_address, None);
        assert_eq!(hidden, Offer { ln_address: None, ..o.clone() }, "nothing else changes");
        let none = offer(10_000, 100_000);
        assert!(matches!(published_form(&none, false), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn the_loop_in_offer_follows_the_channels() {
        assert!(payable_offer(offer(10_000, 100_000), 9_999).is_none());
        assert_eq!(payable_offer(offer(10_000, 100_000), 50_000).unwrap().max_amount_sat, 50_000);
        assert_eq!(payable_offer(offer(10_000, 100_000), 900_000).unwrap().max_amount_sat, 100_000);
    }

    #[test]
    fn offer_follows_the_wallet() {
        assert!(fundable_offer(offer(10_000, 100_000), 11_000).is_none());
        assert_eq!(fundable_offer(offer(10_000, 100_000), 52_000).unwrap().max_amount_sat, 50_000);
        assert_eq!(
            fundable_offer(offer(10_000, 100_000), 10_000_000).unwrap().max_amount_sat,
            100_000
        );
    }
}
