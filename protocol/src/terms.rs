//! Terms and fees: the quote a seller gives for one swap, computed from its [`Offer`].
//!
//! Normative text: `spec/01-messages.md`, section "The quote". The quote is computed by both sides
//! from the offer and the amount with the same checked integer arithmetic; the buyer recomputes the
//! seller's quote ([`Quote::check_against`]) and refuses the swap on any difference.
//!
//! Who pays what:
//! - the seller pays the on-chain funding fee and recovers it as `funding_fee_sat` in the quote;
//! - the buyer pays the swap fee (`fee_base_sat + ceil(amount_sat * fee_ppm / 1_000_000)`);
//! - the buyer pays the claim fee out of the HTLC output (`htlc_amount_sat == amount_sat`);
//! - an optional prepay is paid through a separate invoice before the seller locks; it counts toward
//!   the total, so the main invoice is smaller by the same amount.
//!
//! ```
//! # use looper_protocol::terms::{Quote, QuoteError};
//! # fn main() -> Result<(), QuoteError> {
//! let q = Quote::from_parts(100_000, 1_000, 2_500, 300, 10_000, 1_000_000, 0)?;
//! assert_eq!(q.swap_fee_sat, 1_000 + 250); // base + ceil(100_000 * 2_500 / 1e6)
//! assert_eq!(q.invoice_amount_sat, 100_000 + 1_250 + 300);
//! assert_eq!(q.total_cost_sat(150), 1_250 + 300 + 150);
//! # Ok(()) }
//! ```

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::messages::Offer;
use crate::types::SwapDirection;

/// Smallest swap amount, in satoshis: the dust limit of a P2TR output (Bitcoin Core's
/// `GetDustThreshold` for a witness v1 output at the default dust relay fee of 3 sat/vB: 330 sat).
///
/// The HTLC output pays `amount_sat`, so a smaller amount could not be relayed at all. Offers should
/// set `min_amount_sat` well above this: the buyer pays the claim fee (111 vB cooperative, ~151 vB
/// script path) out of the same output.
pub const DUST_LIMIT_SAT: u64 = 330;

/// Largest amount any field may carry: 21 million BTC in satoshis (`bitcoin::Amount::MAX_MONEY`).
pub const MAX_MONEY_SAT: u64 = 21_000_000 * 100_000_000;

/// One million: `fee_ppm` is in parts per million of `amount_sat`.
const PPM: u64 = 1_000_000;

/// The fee breakdown of one swap, agreed in `swap_accept`. All amounts are in satoshis.
///
/// Invariants (checked by [`Quote::compute`] and [`Quote::check_against`]):
/// `invoice_amount_sat + prepay_sat == amount_sat + swap_fee_sat + funding_fee_sat` and
/// `htlc_amount_sat == amount_sat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quote {
    /// The swap amount the buyer asked for; the value of the HTLC output.
    pub amount_sat: u64,
    /// The seller's fee: `fee_base_sat + ceil(amount_sat * fee_ppm / 1_000_000)`.
    pub swap_fee_sat: u64,
    /// The seller's on-chain funding cost, charged to the buyer (the offer's `funding_fee_sat`).
    pub funding_fee_sat: u64,
    /// Paid by the buyer through a separate prepay invoice before the seller locks; 0 when none.
    pub prepay_sat: u64,
    /// Amount of the main (hold) invoice: `amount + swap_fee + funding_fee - prepay`.
    pub invoice_amount_sat: u64,
    /// Value of the HTLC output the seller locks: equal to `amount_sat`.
    pub htlc_amount_sat: u64,
}

/// Why a quote cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The amount is outside the offer's limits.
    #[error("amount {amount} sat is outside the offer's range [{min}, {max}] sat")]
    AmountOutOfRange {
        /// The offer's `min_amount_sat`.
        min: u64,
        /// The offer's `max_amount_sat`.
        max: u64,
        /// The amount asked for.
        amount: u64,
    },
    /// The amount is below the P2TR dust limit ([`DUST_LIMIT_SAT`]).
    #[error("amount {amount} sat is below the dust limit of {dust} sat")]
    BelowDust {
        /// The amount asked for.
        amount: u64,
        /// [`DUST_LIMIT_SAT`].
        dust: u64,
    },
    /// The prepay is larger than the total the buyer owes.
    #[error("prepay of {prepay} sat exceeds the total of {total} sat")]
    PrepayTooLarge {
        /// The offer's `prepay_sat`.
        prepay: u64,
        /// `amount + swap_fee + funding_fee`.
        total: u64,
    },
    /// An intermediate value overflowed or went above [`MAX_MONEY_SAT`].
    #[error("fee arithmetic overflowed")]
    Overflow,
    /// Loop in: the fees leave nothing (or less than the dust limit) to pay over Lightning.
    #[error("fees of {fees} sat leave less than {dust} sat of the {amount} sat to pay")]
    FeesExceedAmount {
        /// `swap_fee + funding_fee`.
        fees: u64,
        /// The amount asked for.
        amount: u64,
        /// [`DUST_LIMIT_SAT`].
        dust: u64,
    },
    /// Loop in: an offer asks for a prepay (the maker locks nothing before the taker does, so
    /// there is nothing to deter).
    #[error("a loop-in offer has no prepay")]
    PrepayInLoopIn,
}

/// The seller's quote differs from the buyer's own computation. The buyer refuses the swap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteCheckError {
    /// The buyer could not compute a quote from the offer for this amount at all.
    #[error("cannot compute the expected quote")]
    Quote(#[from] QuoteError),
    /// One field of the quote differs from the expected value.
    #[error("quote field `{field}` is {got} sat, expected {expected} sat")]
    Mismatch {
        /// The field name, as on the wire (`swap_fee_sat`, ...).
        field: &'static str,
        /// The value the buyer computed.
        expected: u64,
        /// The value the seller sent.
        got: u64,
    },
}

impl Quote {
    /// Computes the quote for `amount_sat` under `offer`'s terms.
    ///
    /// # Errors
    /// [`QuoteError::AmountOutOfRange`] outside `[min_amount_sat, max_amount_sat]`,
    /// [`QuoteError::BelowDust`] below [`DUST_LIMIT_SAT`], [`QuoteError::PrepayTooLarge`] and
    /// [`QuoteError::Overflow`].
    pub fn compute(offer: &Offer, amount_sat: u64) -> Result<Quote, QuoteError> {
        let prepay_sat = offer.prepay_sat.unwrap_or(0);
        let loop_in = offer.direction == SwapDirection::LoopIn;
        if loop_in && prepay_sat > 0 {
            return Err(QuoteError::PrepayInLoopIn);
        }
        let quote = Self::from_parts(
            amount_sat,
            offer.fee_base_sat,
            offer.fee_ppm,
            offer.funding_fee_sat,
            offer.min_amount_sat,
            offer.max_amount_sat,
            prepay_sat,
        )?;
        if loop_in {
            quote.into_loop_in()
        } else {
            Ok(quote)
        }
    }

    /// Computes a quote from the raw terms (what [`Quote::compute`] takes from the offer).
    ///
    /// Arguments: `amount_sat, fee_base_sat, fee_ppm, funding_fee_sat, min_amount_sat,
    /// max_amount_sat, prepay_sat`.
    ///
    /// # Errors
    /// As [`Quote::compute`].
    pub fn from_parts(
        amount_sat: u64,
        fee_base_sat: u64,
        fee_ppm: u32,
        funding_fee_sat: u64,
        min_amount_sat: u64,
        max_amount_sat: u64,
        prepay_sat: u64,
    ) -> Result<Quote, QuoteError> {
        if amount_sat < min_amount_sat || amount_sat > max_amount_sat {
            return Err(QuoteError::AmountOutOfRange {
                min: min_amount_sat,
                max: max_amount_sat,
                amount: amount_sat,
            });
        }
        if amount_sat < DUST_LIMIT_SAT {
            return Err(QuoteError::BelowDust { amount: amount_sat, dust: DUST_LIMIT_SAT });
        }
        let ppm_part = u128::from(amount_sat)
            .checked_mul(u128::from(fee_ppm))
            .map(|x| x.div_ceil(u128::from(PPM)))
            .and_then(|x| u64::try_from(x).ok())
            .ok_or(QuoteError::Overflow)?;
        let swap_fee_sat = fee_base_sat.checked_add(ppm_part).ok_or(QuoteError::Overflow)?;
        let total = amount_sat
            .checked_add(swap_fee_sat)
            .and_then(|x| x.checked_add(funding_fee_sat))
            .filter(|x| *x <= MAX_MONEY_SAT)
            .ok_or(QuoteError::Overflow)?;
        let invoice_amount_sat = total
            .checked_sub(prepay_sat)
            .ok_or(QuoteError::PrepayTooLarge { prepay: prepay_sat, total })?;
        Ok(Quote {
            amount_sat,
            swap_fee_sat,
            funding_fee_sat,
            prepay_sat,
            invoice_amount_sat,
            htlc_amount_sat: amount_sat,
        })
    }

    /// The quote of a loop in (spec `01-messages.md`, "The quote"): the taker locks `amount_sat`
    /// (`htlc_amount_sat`), the maker pays the taker's invoice for
    /// `amount_sat - swap_fee_sat - funding_fee_sat` over Lightning, `funding_fee_sat` being the
    /// maker's on-chain cost (its claim of the HTLC); no prepay.
    ///
    /// Arguments: `amount_sat, fee_base_sat, fee_ppm, funding_fee_sat, min_amount_sat,
    /// max_amount_sat`.
    ///
    /// # Errors
    /// As [`Quote::from_parts`], and [`QuoteError::FeesExceedAmount`] when less than
    /// [`DUST_LIMIT_SAT`] would be left to pay.
    pub fn loop_in_from_parts(
        amount_sat: u64,
        fee_base_sat: u64,
        fee_ppm: u32,
        funding_fee_sat: u64,
        min_amount_sat: u64,
        max_amount_sat: u64,
    ) -> Result<Quote, QuoteError> {
        Self::from_parts(
            amount_sat,
            fee_base_sat,
            fee_ppm,
            funding_fee_sat,
            min_amount_sat,
            max_amount_sat,
            0,
        )?
        .into_loop_in()
    }

    /// The loop-in reading of a loop-out quote without prepay: the taker locks `amount_sat` and
    /// is paid the amount less the fees.
    fn into_loop_in(mut self) -> Result<Quote, QuoteError> {
        let (fees, amount) = (self.fee_sat(), self.amount_sat);
        self.invoice_amount_sat =
            amount
                .checked_sub(fees)
                .filter(|left| *left >= DUST_LIMIT_SAT)
                .ok_or(QuoteError::FeesExceedAmount { fees, amount, dust: DUST_LIMIT_SAT })?;
        Ok(self)
    }

    /// The seller's part of the cost: `swap_fee_sat + funding_fee_sat` (saturating). This is what
    /// `swap_request.max_total_fee_sat` bounds.
    pub fn fee_sat(&self) -> u64 {
        self.swap_fee_sat.saturating_add(self.funding_fee_sat)
    }

    /// Everything the buyer pays over Lightning: `invoice_amount_sat + prepay_sat` (saturating).
    pub fn lightning_total_sat(&self) -> u64 {
        self.invoice_amount_sat.saturating_add(self.prepay_sat)
    }

    /// The one number to show the buyer: what it pays in excess of what lands in its wallet,
    /// `swap_fee + funding_fee + claim_fee` (saturating), which equals
    /// `invoice + prepay - (htlc_amount - claim_fee)`.
    pub fn total_cost_sat(&self, claim_fee_sat: u64) -> u64 {
        self.fee_sat().saturating_add(claim_fee_sat)
    }

    /// The total cost with its parts, for display.
    pub fn breakdown(&self, claim_fee_sat: u64) -> QuoteBreakdown {
        QuoteBreakdown {
            swap_fee_sat: self.swap_fee_sat,
            funding_fee_sat: self.funding_fee_sat,
            claim_fee_sat,
            total_cost_sat: self.total_cost_sat(claim_fee_sat),
            received_sat: self.htlc_amount_sat.saturating_sub(claim_fee_sat),
            paid_sat: self.lightning_total_sat(),
        }
    }

    /// Checks that this quote (sent by the seller) equals the buyer's own computation from `offer`
    /// for `amount_sat`, field by field.
    ///
    /// # Errors
    /// [`QuoteCheckError::Quote`] when no quote can be computed, [`QuoteCheckError::Mismatch`]
    /// naming the first field that differs.
    pub fn check_against(&self, offer: &Offer, amount_sat: u64) -> Result<(), QuoteCheckError> {
        let expected = Quote::compute(offer, amount_sat)?;
        let fields = [
            ("amount_sat", expected.amount_sat, self.amount_sat),
            ("swap_fee_sat", expected.swap_fee_sat, self.swap_fee_sat),
            ("funding_fee_sat", expected.funding_fee_sat, self.funding_fee_sat),
            ("prepay_sat", expected.prepay_sat, self.prepay_sat),
            ("invoice_amount_sat", expected.invoice_amount_sat, self.invoice_amount_sat),
            ("htlc_amount_sat", expected.htlc_amount_sat, self.htlc_amount_sat),
        ];
        for (field, expected, got) in fields {
            if expected != got {
                return Err(QuoteCheckError::Mismatch { field, expected, got });
            }
        }
        Ok(())
    }
}

/// The buyer's total cost with its parts. `Display` renders one line, e.g.
/// `total cost 1700 sat = swap fee 1250 + funding fee 300 + claim fee 150 (pay 101550 sat, receive 99850 sat)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteBreakdown {
    /// The seller's swap fee.
    pub swap_fee_sat: u64,
    /// The seller's funding fee share.
    pub funding_fee_sat: u64,
    /// The buyer's own claim transaction fee.
    pub claim_fee_sat: u64,
    /// `swap_fee + funding_fee + claim_fee`.
    pub total_cost_sat: u64,
    /// What lands in the buyer's wallet: `htlc_amount - claim_fee`.
    pub received_sat: u64,
    /// What the buyer pays over Lightning: `invoice_amount + prepay`.
    pub paid_sat: u64,
}

impl fmt::Display for QuoteBreakdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total cost {} sat = swap fee {} + funding fee {} + claim fee {} (pay {} sat, receive {} sat)",
            self.total_cost_sat,
            self.swap_fee_sat,
            self.funding_fee_sat,
            self.claim_fee_sat,
            self.paid_sat,
            self.received_sat
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_rounds_up() {
        let q = Quote::from_parts(1_000_001, 0, 1, 0, 0, u64::MAX, 0).unwrap();
        assert_eq!(q.swap_fee_sat, 2);
        let q = Quote::from_parts(1_000_000, 0, 1, 0, 0, u64::MAX, 0).unwrap();
        assert_eq!(q.swap_fee_sat, 1);
        let q = Quote::from_parts(1_000, 5, 0, 0, 0, u64::MAX, 0).unwrap();
        assert_eq!(q.swap_fee_sat, 5);
    }

    #[test]
    fn limits_and_overflow() {
        assert_eq!(
            Quote::from_parts(99, 0, 0, 0, 100, 200, 0),
            Err(QuoteError::AmountOutOfRange { min: 100, max: 200, amount: 99 })
        );
        assert!(matches!(
            Quote::from_parts(201, 0, 0, 0, 100, 200, 0),
            Err(QuoteError::AmountOutOfRange { .. })
        ));
        assert!(matches!(
            Quote::from_parts(329, 0, 0, 0, 0, 1000, 0),
            Err(QuoteError::BelowDust { .. })
        ));
        assert_eq!(
            Quote::from_parts(u64::MAX, u64::MAX, u32::MAX, u64::MAX, 0, u64::MAX, 0),
            Err(QuoteError::Overflow)
        );
        assert_eq!(
            Quote::from_parts(MAX_MONEY_SAT, 1, 0, 0, 0, u64::MAX, 0),
            Err(QuoteError::Overflow)
        );
        assert_eq!(
            Quote::from_parts(1_000, 10, 0, 10, 0, u64::MAX, 1_021),
            Err(QuoteError::PrepayTooLarge { prepay: 1_021, total: 1_020 })
        );
    }

    #[test]
    fn loop_in_pays_the_amount_less_the_fees() {
        let q = Quote::loop_in_from_parts(100_000, 1_000, 2_500, 300, 10_000, 1_000_000).unwrap();
        assert_eq!(q.htlc_amount_sat, 100_000, "the taker locks the amount");
        assert_eq!(q.invoice_amount_sat + q.swap_fee_sat + q.funding_fee_sat, 100_000);
        assert_eq!(q.invoice_amount_sat, 100_000 - 1_250 - 300);
        assert_eq!(q.prepay_sat, 0);
        assert_eq!(
            Quote::loop_in_from_parts(2_000, 1_500, 0, 200, 0, u64::MAX),
            Err(QuoteError::FeesExceedAmount { fees: 1_700, amount: 2_000, dust: DUST_LIMIT_SAT })
        );
        assert!(Quote::loop_in_from_parts(2_030, 1_500, 0, 200, 0, u64::MAX).is_ok());
        assert!(matches!(
            Quote::loop_in_from_parts(99, 0, 0, 0, 100, 200),
            Err(QuoteError::AmountOutOfRange { .. })
        ));
    }

    #[test]
    fn prepay_counts_toward_total() {
        let q = Quote::from_parts(100_000, 1_000, 2_500, 300, 10_000, 1_000_000, 500).unwrap();
        assert_eq!(q.invoice_amount_sat + q.prepay_sat, 100_000 + 1_250 + 300);
        assert_eq!(q.htlc_amount_sat, 100_000);
        assert_eq!(q.total_cost_sat(150), 1_700);
        let b = q.breakdown(150);
        assert_eq!(b.paid_sat - b.received_sat, b.total_cost_sat);
        assert_eq!(
            b.to_string(),
            "total cost 1700 sat = swap fee 1250 + funding fee 300 + claim fee 150 (pay 101550 sat, receive 99850 sat)"
        );
    }
}
