//! Fee rates for the swap's own spends (claims and refunds), and when to replace one that does
//! not confirm (spec `03-cooperative-spend.md`, "Fees and replacement").
//!
//! The node passes the chain's estimates by confirmation target ([`FeeEstimates`], uncapped) and
//! its settings ([`Fees`]) in every [`Context`](crate::swap::Context); the state machines ask
//! [`spend_fee_rate`] for the rate of a spend they build now, or of the replacement of one that
//! has been waiting for `stuck_blocks` blocks.
//!
//! The rule, for a spend with a deadline (the buyer's claim must confirm before the seller's
//! refund becomes valid at the timeout):
//!
//! * the deadline is the timeout minus [`DEADLINE_SAFETY_BLOCKS`]; the confirmation target is
//!   the configured one, shortened to half the blocks left, at least 1;
//! * the rate is the estimate for that target; a replacement pays at least the rate it replaces
//!   plus the incremental relay fee (BIP-125 rules 3, 4 and 6), and when the spend is still
//!   unconfirmed within [`URGENT_BLOCKS`] of the deadline, twice the rate it replaces;
//! * the rate is capped by the configured maximum, except within [`URGENT_BLOCKS`] of the
//!   deadline, where the cap rises to a share of the spent value that grows to
//!   [`MAX_DEADLINE_FEE_PERCENT`] at the deadline: paid to miners rather than lost to the refund.
//!
//! A spend without a deadline (a refund: only its owner can take the HTLC back) keeps the
//! configured cap and is replaced when the estimate for its target rose above what it pays, or,
//! stuck for twice its target, with a quarter more.

use bitcoin::FeeRate;

/// Blocks kept between a claim's deadline and the timeout (the refund is valid in the block
/// after the timeout height; the claim must be mined before, with a margin for reorgs).
pub const DEADLINE_SAFETY_BLOCKS: u32 = 2;
/// Blocks before the deadline from which a claim that has not confirmed doubles its rate at each
/// block and may pay more than the configured cap.
pub const URGENT_BLOCKS: u32 = 6;
/// The share of the spent value a spend may pay at its deadline, in percent.
pub const MAX_DEADLINE_FEE_PERCENT: u64 = 80;
/// The incremental relay fee rate a replacement adds at least (Bitcoin Core's default), sat/vB.
pub const INCREMENTAL_RELAY_SAT_VB: u64 = 1;
/// The default confirmation target of claims and refunds, in blocks (Loop's sweep target).
pub const DEFAULT_SPEND_TARGET: u16 = 9;
/// The confirmation targets a [`FeeEstimates`] holds a rate for.
pub const ESTIMATE_TARGETS: [u16; 8] = [1, 2, 3, 6, 9, 12, 25, 144];

/// The chain's fee-rate estimates by confirmation target, uncapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeEstimates {
    rates: [FeeRate; ESTIMATE_TARGETS.len()],
}

impl FeeEstimates {
    /// The same rate for every target.
    pub fn flat(rate: FeeRate) -> Self {
        Self { rates: [rate; ESTIMATE_TARGETS.len()] }
    }

    /// Estimates from `rate_for(target)` for each of [`ESTIMATE_TARGETS`]; a shorter target never
    /// gets a lower rate than a longer one.
    pub fn from_fn(mut rate_for: impl FnMut(u16) -> FeeRate) -> Self {
        let mut rates = [FeeRate::ZERO; ESTIMATE_TARGETS.len()];
        for (rate, target) in rates.iter_mut().zip(ESTIMATE_TARGETS) {
            *rate = rate_for(target);
        }
        for i in (0..rates.len().saturating_sub(1)).rev() {
            rates[i] = rates[i].max(rates[i + 1]);
        }
        Self { rates }
    }

    /// The rate to confirm within `target` blocks: the estimate of the longest listed target
    /// that is not longer (target 0 counts as 1).
    pub fn rate_for(&self, target: u16) -> FeeRate {
        let index = ESTIMATE_TARGETS.iter().rposition(|t| *t <= target.max(1)).unwrap_or(0);
        self.rates[index]
    }
}

/// What the node tells the state machines about fees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// The chain's estimates, uncapped.
    pub estimates: FeeEstimates,
    /// The node's cap on fee rates (outside a deadline's urgent window).
    pub max_rate: FeeRate,
    /// Confirmation target of claims, unless the swap sets its own.
    pub claim_target: u16,
    /// Confirmation target of refunds.
    pub refund_target: u16,
}

impl Fees {
    /// `rate` for every target, the default targets, and `rate` as the cap.
    pub fn flat(rate: FeeRate) -> Self {
        Self {
            estimates: FeeEstimates::flat(rate),
            max_rate: rate,
            claim_target: DEFAULT_SPEND_TARGET,
            refund_target: DEFAULT_SPEND_TARGET,
        }
    }
}

/// A spend to price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendFee {
    /// The value it spends (the HTLC), in sat.
    pub value_sat: u64,
    /// Its virtual size.
    pub vsize: u64,
    /// Its confirmation target.
    pub target: u16,
    /// Blocks left to its deadline (`None`: no deadline).
    pub blocks_left: Option<u32>,
    /// The cap outside the urgent window.
    pub cap: FeeRate,
}

/// The version of the spend that is out, for a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outstanding {
    /// The rate it pays.
    pub rate: FeeRate,
    /// Blocks found since it went out without confirming it.
    pub stuck_blocks: u32,
}

/// The fee rate of `spend` built now (`outstanding: None`), or of the replacement of the version
/// that is out; `None` when that version should stay (no block found since it went out, or the
/// rule asks for no more than it pays).
pub fn spend_fee_rate(
    estimates: &FeeEstimates,
    spend: &SpendFee,
    outstanding: Option<Outstanding>,
) -> Option<FeeRate> {
    let urgent = spend.blocks_left.is_some_and(|l| l <= URGENT_BLOCKS);
    let target = match spend.blocks_left {
        Some(left) => spend.target.min(u16::try_from((left / 2).max(1)).unwrap_or(u16::MAX)),
        None => spend.target,
    };
    let floor = FeeRate::from_sat_per_kwu(INCREMENTAL_RELAY_SAT_VB.saturating_mul(250));
    let estimate = estimates.rate_for(target).max(floor);
    let cap = match spend.blocks_left {
        Some(left) if urgent => spend.cap.max(deadline_cap(spend.value_sat, spend.vsize, left)),
        _ => spend.cap,
    }
    .max(floor);
    let Some(out) = outstanding else { return Some(estimate.min(cap)) };
    if out.stuck_blocks == 0 {
        return None;
    }
    let least = add(out.rate, floor);
    let want = if urgent {
        estimate.max(scale(out.rate, 2, 1))
    } else if u32::from(target).saturating_mul(2) <= out.stuck_blocks {
        estimate.max(scale(out.rate, 5, 4))
    } else {
        estimate
    };
    let rate = want.max(least).min(cap);
    (want >= least && rate >= least).then_some(rate)
}

/// The highest rate allowed `blocks_left` blocks before the deadline, inside the urgent window:
/// a share of `value_sat` rising linearly to [`MAX_DEADLINE_FEE_PERCENT`] at the deadline.
fn deadline_cap(value_sat: u64, vsize: u64, blocks_left: u32) -> FeeRate {
    let window = u64::from(URGENT_BLOCKS) + 1;
    let into = window - u64::from(blocks_left.min(URGENT_BLOCKS));
    let fee =
        value_sat.saturating_mul(MAX_DEADLINE_FEE_PERCENT).saturating_mul(into) / (100 * window);
    FeeRate::from_sat_per_kwu(fee.saturating_mul(250) / vsize.max(1))
}

fn add(a: FeeRate, b: FeeRate) -> FeeRate {
    FeeRate::from_sat_per_kwu(a.to_sat_per_kwu().saturating_add(b.to_sat_per_kwu()))
}

fn scale(rate: FeeRate, num: u64, den: u64) -> FeeRate {
    FeeRate::from_sat_per_kwu(rate.to_sat_per_kwu().saturating_mul(num) / den.max(1))
}

/// The rate `fee_sat` pays for `vsize` vbytes.
pub fn rate_of(fee_sat: u64, vsize: u64) -> FeeRate {
    FeeRate::from_sat_per_kwu(fee_sat.saturating_mul(250) / vsize.max(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn vb(n: u64) -> FeeRate {
        FeeRate::from_sat_per_kwu(n * 250)
    }

    fn claim(blocks_left: u32) -> SpendFee {
        SpendFee {
            value_sat: 100_000,
            vsize: 152,
            target: 9,
            blocks_left: Some(blocks_left),
            cap: vb(200),
        }
    }

    #[test]
    fn estimates_pick_the_target_at_or_below() {
        let e = FeeEstimates::from_fn(|t| vb(u64::from(200 / t.min(200))));
        assert_eq!(e.rate_for(0), vb(200));
        assert_eq!(e.rate_for(1), vb(200));
        assert_eq!(e.rate_for(5), vb(66));
        assert_eq!(e.rate_for(6), vb(33));
        assert_eq!(e.rate_for(1000), vb(1));
        // Never lower for a shorter target.
        let odd = FeeEstimates::from_fn(|t| if t == 2 { vb(1) } else { vb(10) });
        assert_eq!(odd.rate_for(2), vb(10));
    }

    #[test]
    fn fresh_claim_uses_the_target_then_shortens_it() {
        let e = FeeEstimates::from_fn(|t| vb(60 / u64::from(t.min(60))));
        assert_eq!(spend_fee_rate(&e, &claim(40), None), Some(e.rate_for(9)));
        assert_eq!(spend_fee_rate(&e, &claim(8), None), Some(e.rate_for(4)));
        assert_eq!(spend_fee_rate(&e, &claim(1), None), Some(e.rate_for(1)));
    }

    #[test]
    fn no_replacement_before_a_block_nor_below_the_increment() {
        let e = FeeEstimates::flat(vb(10));
        let out = Outstanding { rate: vb(10), stuck_blocks: 0 };
        assert_eq!(spend_fee_rate(&e, &claim(40), Some(out)), None);
        let out = Outstanding { rate: vb(10), stuck_blocks: 1 };
        assert_eq!(spend_fee_rate(&e, &claim(40), Some(out)), None);
        let higher = FeeEstimates::flat(vb(30));
        assert_eq!(spend_fee_rate(&higher, &claim(40), Some(out)), Some(vb(30)));
        let slightly = FeeEstimates::flat(FeeRate::from_sat_per_kwu(2_600));
        assert_eq!(spend_fee_rate(&slightly, &claim(40), Some(out)), None);
    }

    #[test]
    fn urgent_claims_double_and_pass_the_cap_up_to_most_of_the_value() {
        let e = FeeEstimates::flat(vb(150));
        let mut rate = vb(150);
        let mut left = URGENT_BLOCKS;
        loop {
            let out = Outstanding { rate, stuck_blocks: 1 };
            // None: the cap has not risen above the rate yet.
            if let Some(next) = spend_fee_rate(&e, &claim(left), Some(out)) {
                assert!(next > rate);
                let fee = next.fee_vb(152).unwrap().to_sat();
                assert!(fee <= 80_000, "{fee}");
                rate = next;
            }
            if left == 0 {
                break;
            }
            left -= 1;
        }
        assert!(rate > vb(200), "the cap does not stop a claim at its deadline");
        assert!(rate.fee_vb(152).unwrap().to_sat() > 50_000);
        // At the deadline, the cap is most of the value.
        let out = Outstanding { rate, stuck_blocks: 1 };
        let at_cap = spend_fee_rate(&e, &claim(0), Some(out));
        assert!(at_cap.is_none() || at_cap.unwrap().fee_vb(152).unwrap().to_sat() <= 80_000);
    }

    #[test]
    fn refunds_follow_the_estimate_and_creep_when_stuck() {
        let refund =
            SpendFee { value_sat: 100_000, vsize: 138, target: 6, blocks_left: None, cap: vb(100) };
        let e = FeeEstimates::flat(vb(5));
        let out = Outstanding { rate: vb(5), stuck_blocks: 3 };
        assert_eq!(spend_fee_rate(&e, &refund, Some(out)), None);
        let out = Outstanding { rate: vb(8), stuck_blocks: 12 };
        assert_eq!(spend_fee_rate(&e, &refund, Some(out)), Some(vb(10)));
        let spike = FeeEstimates::flat(vb(500));
        let out = Outstanding { rate: vb(8), stuck_blocks: 1 };
        assert_eq!(spend_fee_rate(&spike, &refund, Some(out)), Some(vb(100)), "capped");
        let out = Outstanding { rate: vb(100), stuck_blocks: 1 };
        assert_eq!(spend_fee_rate(&spike, &refund, Some(out)), None, "at the cap already");
    }
}
