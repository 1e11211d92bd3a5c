//! The checks a party makes of the other's terms before it commits anything, and their one
//! error type with stable codes ([`CheckError`]): the claimer's (the loop-out buyer on
//! `swap_accept`, the loop-in maker on `swap_funded`) and the loop-in locker's (on the maker's
//! `swap_accept`). The checks both roles make are the functions here.

use bitcoin::{Network, ScriptBuf};
use serde::{Deserialize, Serialize};

use crate::htlc::{Htlc, HtlcParams};
use crate::messages::{ErrorCode, ErrorMessage, Offer};
use crate::swap::TIMEOUT_SLACK_BLOCKS;
use crate::terms::Quote;
use crate::types::SwapDirection;

/// A check a party makes of the other's terms before it commits anything; each failure has its
/// own stable name, its `code()` (spec `02-swap-flow.md`, "Buyer checks" for the claimer, "Loop
/// in: the locker as taker" for the locker). The claimer's checks (the loop-out buyer's, the
/// loop-in maker's) and the loop-in locker's share one type: the checks both make (quote, fee,
/// HTLC value, timeout range, HTLC script) are the same functions with the same codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "check", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckError {
    /// The seller's quote differs from ours.
    #[error("quote mismatch: {0}")]
    QuoteMismatch(String),
    /// The fee is above the buyer's limit.
    #[error("fee {fee_sat} sat exceeds the limit of {max_sat} sat")]
    FeeTooHigh {
        /// The quote's fee.
        fee_sat: u64,
        /// The limit.
        max_sat: u64,
    },
    /// The invoice does not decode.
    #[error("invoice does not decode: {0}")]
    InvoiceInvalid(String),
    /// The invoice is not signed by the offer's Lightning node.
    #[error("invoice payee is not the offer's lightning node")]
    InvoicePayee,
    /// The invoice is for another network.
    #[error("invoice is for another network")]
    InvoiceNetwork,
    /// The invoice's hash is not the HTLC's.
    #[error("invoice payment hash differs from the htlc's")]
    InvoiceHashMismatch,
    /// The invoice asks for another amount than the quote.
    #[error("invoice amount {invoice_msat} msat differs from the quote's {quote_msat} msat")]
    InvoiceAmountMismatch {
        /// What the invoice asks.
        invoice_msat: u64,
        /// What the quote says.
        quote_msat: u64,
    },
    /// The invoice has expired.
    #[error("invoice expired")]
    InvoiceExpired,
    /// The offer's prepay is above the buyer's limit.
    #[error("prepay of {prepay_sat} sat exceeds the limit of {max_sat} sat")]
    PrepayTooHigh {
        /// The offer's prepay.
        prepay_sat: u64,
        /// The limit ([`crate::buyer::BuyerPolicy::max_prepay_sat`]).
        max_sat: u64,
    },
    /// The prepay invoice is missing, unexpected, or not what the quote says.
    #[error("prepay invoice: {0}")]
    PrepayInvoiceInvalid(String),
    /// The HTLC script differs from the one rebuilt from the agreed terms.
    #[error("htlc script mismatch: {0}")]
    HtlcScriptMismatch(String),
    /// The HTLC value differs from the quote's.
    #[error("htlc amount {got_sat} sat differs from the agreed {expected_sat} sat")]
    HtlcAmountMismatch {
        /// Agreed.
        expected_sat: u64,
        /// Found.
        got_sat: u64,
    },
    /// The timeout is outside what the offer allows.
    #[error("timeout height {timeout_height} is outside [{min}, {max}]")]
    TimeoutOutOfRange {
        /// The timeout.
        timeout_height: u32,
        /// Lowest acceptable.
        min: u32,
        /// Highest acceptable.
        max: u32,
    },
    /// Too few blocks left for a Lightning route.
    #[error("cltv budget of {budget} blocks is below the {needed} a route needs")]
    CltvBudgetTooShort {
        /// Blocks available to the route.
        budget: u32,
        /// Blocks needed.
        needed: u32,
    },
    /// The HTLC was spent before we paid.
    #[error("htlc spent before payment")]
    HtlcSpent,
    /// The offer keeps fewer blocks for the claim than the buyer's own floor.
    #[error("offer's claim margin of {offered} blocks is below this node's floor of {min}")]
    ClaimMarginTooLow {
        /// The offer's `claim_margin`.
        offered: u32,
        /// The buyer's floor ([`crate::buyer::BuyerPolicy::min_claim_margin`]).
        min: u32,
    },
    /// A claim at the highest fee rate the buyer would pay leaves the HTLC at or below dust.
    #[error("a claim at {fee_rate_sat_vb} sat/vB costs {claim_fee_sat} sat: too much of the {htlc_sat} sat htlc")]
    ClaimUnaffordable {
        /// The HTLC value.
        htlc_sat: u64,
        /// The script-path claim fee at that rate.
        claim_fee_sat: u64,
        /// The rate ([`crate::buyer::BuyerPolicy::max_claim_fee_rate_sat_vb`]).
        fee_rate_sat_vb: u64,
    },
    /// Loop-in locker: the offer is not a loop-in offer.
    #[error("the offer is not a loop-in offer")]
    NotLoopIn,
    /// Loop-in locker: the offer is invalid or expired.
    #[error("invalid offer: {0}")]
    InvalidOffer(String),
    /// Loop-in locker: the timeout locks the taker's coins longer than it accepts.
    #[error("a timeout {blocks} blocks away is beyond this node's limit of {max}")]
    TimeoutTooLong {
        /// Blocks from the tip to the timeout (the offer's `timeout_delta` before the request).
        blocks: u32,
        /// The limit ([`crate::seller::LoopInLimits::max_timeout_delta`]).
        max: u32,
    },
}

impl CheckError {
    /// Every check's stable code, as in the spec's tables and the node's API errors: the
    /// claimer's, then the loop-in locker's own.
    pub const CODES: &'static [&'static str] = &[
        "quote_mismatch",
        "fee_too_high",
        "invoice_invalid",
        "invoice_payee",
        "invoice_network",
        "invoice_hash_mismatch",
        "invoice_amount_mismatch",
        "invoice_expired",
        "prepay_too_high",
        "prepay_invoice_invalid",
        "htlc_script_mismatch",
        "htlc_amount_mismatch",
        "timeout_out_of_range",
        "cltv_budget_too_short",
        "htlc_spent",
        "claim_margin_too_low",
        "claim_unaffordable",
        "not_loop_in",
        "invalid_offer",
        "timeout_too_long",
    ];

    /// The check's stable snake_case code (spec `02-swap-flow.md`; the `check` tag of the
    /// serialized error).
    pub fn code(&self) -> &'static str {
        match self {
            CheckError::QuoteMismatch(_) => "quote_mismatch",
            CheckError::FeeTooHigh { .. } => "fee_too_high",
            CheckError::InvoiceInvalid(_) => "invoice_invalid",
            CheckError::InvoicePayee => "invoice_payee",
            CheckError::InvoiceNetwork => "invoice_network",
            CheckError::InvoiceHashMismatch => "invoice_hash_mismatch",
            CheckError::InvoiceAmountMismatch { .. } => "invoice_amount_mismatch",
            CheckError::InvoiceExpired => "invoice_expired",
            CheckError::PrepayTooHigh { .. } => "prepay_too_high",
            CheckError::PrepayInvoiceInvalid(_) => "prepay_invoice_invalid",
            CheckError::HtlcScriptMismatch(_) => "htlc_script_mismatch",
            CheckError::HtlcAmountMismatch { .. } => "htlc_amount_mismatch",
            CheckError::TimeoutOutOfRange { .. } => "timeout_out_of_range",
            CheckError::CltvBudgetTooShort { .. } => "cltv_budget_too_short",
            CheckError::HtlcSpent => "htlc_spent",
            CheckError::ClaimMarginTooLow { .. } => "claim_margin_too_low",
            CheckError::ClaimUnaffordable { .. } => "claim_unaffordable",
            CheckError::NotLoopIn => "not_loop_in",
            CheckError::InvalidOffer(_) => "invalid_offer",
            CheckError::TimeoutTooLong { .. } => "timeout_too_long",
        }
    }
}

/// The taker's own quote for `amount_sat` from the offer, before it asks: computable, and its
/// fee (`swap_fee_sat + funding_fee_sat`) within `max_fee_sat`.
pub(crate) fn own_quote(
    offer: &Offer,
    amount_sat: u64,
    max_fee_sat: u64,
) -> Result<Quote, CheckError> {
    let quote =
        Quote::compute(offer, amount_sat).map_err(|e| CheckError::QuoteMismatch(e.to_string()))?;
    check_fee(&quote, max_fee_sat)?;
    Ok(quote)
}

/// The peer's quote: the one we compute from the offer for `amount_sat`, its fee within
/// `max_fee_sat`.
pub(crate) fn check_quote(
    quote: &Quote,
    offer: &Offer,
    amount_sat: u64,
    max_fee_sat: u64,
) -> Result<(), CheckError> {
    quote.check_against(offer, amount_sat).map_err(|e| CheckError::QuoteMismatch(e.to_string()))?;
    check_fee(quote, max_fee_sat)
}

fn check_fee(quote: &Quote, max_sat: u64) -> Result<(), CheckError> {
    if quote.fee_sat() > max_sat {
        return Err(CheckError::FeeTooHigh { fee_sat: quote.fee_sat(), max_sat });
    }
    Ok(())
}

/// The HTLC value the peer announced (`htlc_sat`) and its quote's are the amount asked; `got_sat`
/// names the one that differs.
pub(crate) fn check_htlc_amount(
    htlc_sat: u64,
    quote: &Quote,
    amount_sat: u64,
) -> Result<(), CheckError> {
    if htlc_sat != quote.htlc_amount_sat || quote.htlc_amount_sat != amount_sat {
        let got_sat = if htlc_sat != amount_sat { htlc_sat } else { quote.htlc_amount_sat };
        return Err(CheckError::HtlcAmountMismatch { expected_sat: amount_sat, got_sat });
    }
    Ok(())
}

/// The timeout height within `[min, tip + offer.timeout_delta + TIMEOUT_SLACK_BLOCKS]` (not
/// later than the offer says, plus the blocks found while the messages travelled); `min` is the
/// role's floor.
pub(crate) fn check_timeout(
    timeout_height: u32,
    min: u32,
    tip_height: u32,
    offer: &Offer,
) -> Result<(), CheckError> {
    let max = tip_height.saturating_add(offer.timeout_delta).saturating_add(TIMEOUT_SLACK_BLOCKS);
    if timeout_height < min || timeout_height > max {
        return Err(CheckError::TimeoutOutOfRange { timeout_height, min, max });
    }
    Ok(())
}

/// The HTLC rebuilt from the agreed parameters (with `tip_height`, a timeout that has not passed
/// yet) pays to the script the peer announced.
pub(crate) fn check_htlc_script(
    params: &HtlcParams,
    script_pubkey: &ScriptBuf,
    tip_height: Option<u32>,
) -> Result<Htlc, CheckError> {
    let mismatch = |e: &dyn std::fmt::Display| CheckError::HtlcScriptMismatch(e.to_string());
    let htlc = match tip_height {
        Some(tip) => Htlc::new_at(params.clone(), tip),
        None => Htlc::new(params.clone()),
    }
    .map_err(|e| mismatch(&e))?;
    htlc.verify_script_pubkey(script_pubkey).map_err(|e| mismatch(&e))?;
    Ok(htlc)
}

/// What a taker's request asks of the maker's offer (both directions' `swap_request`).
pub(crate) struct Asked<'a> {
    /// The offer it names.
    pub offer_id: &'a str,
    /// Its direction.
    pub direction: SwapDirection,
    /// The direction the maker's role serves (a seller's `swap_request`: loop out; a claimer
    /// maker's: loop in); the request and the offer must both be of it.
    pub serves: SwapDirection,
    /// Its network.
    pub network: Network,
    /// The amount.
    pub amount_sat: u64,
    /// The taker's bound on `swap_fee_sat + funding_fee_sat`.
    pub max_total_fee_sat: u64,
    /// Whether the taker accepts the offer's prepay (a loop in has none).
    pub prepay_accepted: bool,
}

/// The maker's admission of a taker's request, the part both directions share: our offer, not
/// expired, of the request's direction and network; the quote for the amount (within the offer's
/// range), its prepay accepted, its fee within the taker's bound. The wire `error` to send back
/// when the request does not fit.
pub(crate) fn admit_request(
    offer: &Offer,
    asked: &Asked<'_>,
    now_secs: u64,
) -> Result<Quote, ErrorMessage> {
    let err = |code: ErrorCode, message: String| ErrorMessage::new(code, message);
    if asked.offer_id != offer.offer_id {
        return Err(err(ErrorCode::UnknownOffer, format!("no offer {}", asked.offer_id)));
    }
    if offer.is_expired(now_secs) {
        return Err(err(ErrorCode::UnknownOffer, "offer expired".into()));
    }
    if asked.direction != asked.serves || offer.direction != asked.serves {
        let only = match asked.serves {
            SwapDirection::LoopOut => "only loop_out is supported",
            SwapDirection::LoopIn => "this offer serves loop_in only",
        };
        return Err(err(ErrorCode::InvalidParams, only.into()));
    }
    if asked.network != offer.network {
        return Err(err(ErrorCode::InvalidParams, "network does not match the offer".into()));
    }
    let quote = Quote::compute(offer, asked.amount_sat)
        .map_err(|e| err(ErrorCode::AmountOutOfRange, e.to_string()))?;
    if quote.prepay_sat > 0 && !asked.prepay_accepted {
        let why = format!("the offer asks for a prepay of {} sat", quote.prepay_sat);
        return Err(err(ErrorCode::InvalidParams, why));
    }
    if quote.fee_sat() > asked.max_total_fee_sat {
        let why = format!(
            "fee {} sat exceeds max_total_fee_sat {}",
            quote.fee_sat(),
            asked.max_total_fee_sat
        );
        return Err(err(ErrorCode::InvalidParams, why));
    }
    Ok(quote)
}
