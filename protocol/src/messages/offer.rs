//! The offer a seller publishes and its checks.

use bitcoin::Network;
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::decoder::*;
use super::limits::*;
use crate::terms::{Quote, QuoteError, DUST_LIMIT_SAT, MAX_MONEY_SAT};
use crate::types::SwapDirection;

// ---------------------------------------------------------------------------------------------
// Offer.

wire_struct! {
    /// The content of a seller's offer event (kind [`OFFER_KIND`]): the terms of every swap taken
    /// from it. See `spec/01-messages.md`, "The offer".
    pub struct Offer {
        /// Protocol version of the offer ([`PROTOCOL_VERSION`]).
        pub version: u32 => "v",
        /// The offer's id, also the event's `d` tag: 1 to 64 characters of `[A-Za-z0-9_-]`.
        pub offer_id: String => "offer_id",
        /// The Bitcoin network of the HTLC and of the Lightning invoices.
        pub network: Network => "network",
        /// Which way the swap moves money.
        pub direction: SwapDirection => "direction",
        /// Smallest swap amount, in satoshis (at least [`DUST_LIMIT_SAT`]).
        pub min_amount_sat: u64 => "min_amount_sat",
        /// Largest swap amount, in satoshis.
        pub max_amount_sat: u64 => "max_amount_sat",
        /// Fixed part of the swap fee, in satoshis.
        pub fee_base_sat: u64 => "fee_base_sat",
        /// Proportional part of the swap fee, in parts per million of the amount (rounded up).
        pub fee_ppm: u32 => "fee_ppm",
        /// The seller's on-chain funding cost charged per swap, in satoshis.
        pub funding_fee_sat: u64 => "funding_fee_sat",
        /// Prepay the buyer sends through a separate invoice before the seller locks; counts toward
        /// the total. Absent when none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub prepay_sat: Option<u64> => "prepay_sat",
        /// Confirmations of the funding transaction before the buyer pays (at least 1).
        pub min_confirmations: u32 => "min_confirmations",
        /// Blocks from the tip at `swap_accept` to `timeout_height`.
        pub timeout_delta: u32 => "timeout_delta",
        /// Blocks before `timeout_height` under which the preimage must no longer be revealed.
        pub claim_margin: u32 => "claim_margin",
        /// Expiry of the seller's invoices, in seconds.
        pub invoice_expiry_secs: u32 => "invoice_expiry_secs",
        /// The seller's Lightning node id.
        pub ln_node_id: PublicKey => "ln_node_id",
        /// The seller's Lightning node address (`host:port`), so the buyer may connect or open a
        /// channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ln_address: Option<String> => "ln_address",
        /// Relays (`wss://` or `ws://`) where the seller reads swap messages, 1 to [`MAX_RELAYS`].
        pub relays: Vec<String> => "relays",
        /// NIP-13 difficulty the first `swap_request`'s gift wrap must carry. Absent when none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pow_difficulty: Option<u8> => "pow_difficulty",
        /// Unix time (seconds) after which the offer is void (mirrors the NIP-40 `expiration` tag).
        pub expires_at: u64 => "expires_at",
    }
}

/// Why an offer is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The offer's version is not spoken.
    #[error("unsupported offer version {version}")]
    UnsupportedVersion {
        /// The offer's `v`.
        version: u32,
    },
    /// The offer id is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("offer_id must be 1 to 64 characters of [A-Za-z0-9_-]")]
    BadOfferId,
    /// `min_amount_sat > max_amount_sat`.
    #[error("min_amount_sat {min} is above max_amount_sat {max}")]
    AmountRange {
        /// `min_amount_sat`.
        min: u64,
        /// `max_amount_sat`.
        max: u64,
    },
    /// `min_amount_sat` is below the dust limit.
    #[error("min_amount_sat {min} is below the dust limit of {dust} sat")]
    BelowDust {
        /// `min_amount_sat`.
        min: u64,
        /// [`DUST_LIMIT_SAT`].
        dust: u64,
    },
    /// An amount is above 21 million BTC.
    #[error("{field} is above 21 million BTC")]
    AboveMaxMoney {
        /// The field name.
        field: &'static str,
    },
    /// `fee_ppm` is above [`MAX_FEE_PPM`].
    #[error("fee_ppm {fee_ppm} is above {max}")]
    FeePpm {
        /// `fee_ppm`.
        fee_ppm: u32,
        /// [`MAX_FEE_PPM`].
        max: u32,
    },
    /// `prepay_sat` is present but zero.
    #[error("prepay_sat must be absent or positive")]
    ZeroPrepay,
    /// The quote at `min_amount_sat` or `max_amount_sat` cannot be computed.
    #[error("no quote at {amount} sat")]
    Quote {
        /// The amount tried.
        amount: u64,
        /// Why.
        #[source]
        source: QuoteError,
    },
    /// `min_confirmations` is 0 or above [`MAX_MIN_CONFIRMATIONS`].
    #[error("min_confirmations {value} is outside [1, {max}]")]
    MinConfirmations {
        /// `min_confirmations`.
        value: u32,
        /// [`MAX_MIN_CONFIRMATIONS`].
        max: u32,
    },
    /// `claim_margin` is 0.
    #[error("claim_margin must be at least 1 block")]
    ClaimMargin,
    /// `timeout_delta` leaves less than [`MIN_CLTV_BUDGET_BLOCKS`] for the payment, or is above
    /// [`MAX_TIMEOUT_DELTA`].
    #[error("timeout_delta {value} is outside [{min}, {max}] (claim_margin + min_confirmations + {budget})", budget = MIN_CLTV_BUDGET_BLOCKS)]
    TimeoutDelta {
        /// `timeout_delta`.
        value: u32,
        /// `claim_margin + min_confirmations + MIN_CLTV_BUDGET_BLOCKS`.
        min: u64,
        /// [`MAX_TIMEOUT_DELTA`].
        max: u32,
    },
    /// `invoice_expiry_secs` is outside the allowed range.
    #[error("invoice_expiry_secs {value} is outside [{min}, {max}]")]
    InvoiceExpiry {
        /// `invoice_expiry_secs`.
        value: u32,
        /// [`MIN_INVOICE_EXPIRY_SECS`].
        min: u32,
        /// [`MAX_INVOICE_EXPIRY_SECS`].
        max: u32,
    },
    /// `relays` is empty or longer than [`MAX_RELAYS`].
    #[error("relays lists {count} relays, expected 1 to {max}")]
    RelayCount {
        /// Number of relays.
        count: usize,
        /// [`MAX_RELAYS`].
        max: usize,
    },
    /// One relay is not a `ws://` or `wss://` URL.
    #[error("relays[{index}] is not a ws:// or wss:// URL: {reason}")]
    BadRelay {
        /// Index in `relays`.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `ln_address` is empty, too long or contains whitespace or control characters.
    #[error("ln_address must be 1 to 256 printable characters without whitespace")]
    BadLnAddress,
    /// `pow_difficulty` is above [`MAX_POW_DIFFICULTY`].
    #[error("pow_difficulty {value} is above {max}")]
    PowDifficulty {
        /// `pow_difficulty`.
        value: u8,
        /// [`MAX_POW_DIFFICULTY`].
        max: u8,
    },
    /// `expires_at` is 0.
    #[error("expires_at must be a unix time")]
    ZeroExpiry,
}

pub(super) fn check_relay_url(url: &str) -> Result<(), &'static str> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err("too long");
    }
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or("scheme must be ws:// or wss://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Err("no host");
    }
    Ok(())
}

impl Offer {
    /// Checks the offer's terms on their own (not against the clock: see [`Offer::is_expired`]).
    ///
    /// # Errors
    /// The first [`OfferError`] found, in field order.
    pub fn validate(&self) -> Result<(), OfferError> {
        if !SUPPORTED_VERSIONS.contains(&self.version) {
            return Err(OfferError::UnsupportedVersion { version: self.version });
        }
        if !is_valid_offer_id(&self.offer_id) {
            return Err(OfferError::BadOfferId);
        }
        if self.min_amount_sat > self.max_amount_sat {
            return Err(OfferError::AmountRange {
                min: self.min_amount_sat,
                max: self.max_amount_sat,
            });
        }
        if self.min_amount_sat < DUST_LIMIT_SAT {
            return Err(OfferError::BelowDust { min: self.min_amount_sat, dust: DUST_LIMIT_SAT });
        }
        for (field, v) in [
            ("max_amount_sat", self.max_amount_sat),
            ("fee_base_sat", self.fee_base_sat),
            ("funding_fee_sat", self.funding_fee_sat),
            ("prepay_sat", self.prepay_sat.unwrap_or(0)),
        ] {
            if v > MAX_MONEY_SAT {
                return Err(OfferError::AboveMaxMoney { field });
            }
        }
        if self.fee_ppm > MAX_FEE_PPM {
            return Err(OfferError::FeePpm { fee_ppm: self.fee_ppm, max: MAX_FEE_PPM });
        }
        if self.prepay_sat == Some(0) {
            return Err(OfferError::ZeroPrepay);
        }
        for amount in [self.min_amount_sat, self.max_amount_sat] {
            Quote::compute(self, amount).map_err(|source| OfferError::Quote { amount, source })?;
        }
        if self.min_confirmations == 0 || self.min_confirmations > MAX_MIN_CONFIRMATIONS {
            return Err(OfferError::MinConfirmations {
                value: self.min_confirmations,
                max: MAX_MIN_CONFIRMATIONS,
            });
        }
        if self.claim_margin == 0 {
            return Err(OfferError::ClaimMargin);
        }
        let min_delta = u64::from(self.claim_margin)
            + u64::from(self.min_confirmations)
            + u64::from(MIN_CLTV_BUDGET_BLOCKS);
        if u64::from(self.timeout_delta) < min_delta || self.timeout_delta > MAX_TIMEOUT_DELTA {
            return Err(OfferError::TimeoutDelta {
                value: self.timeout_delta,
                min: min_delta,
                max: MAX_TIMEOUT_DELTA,
            });
        }
        if !(MIN_INVOICE_EXPIRY_SECS..=MAX_INVOICE_EXPIRY_SECS).contains(&self.invoice_expiry_secs)
        {
            return Err(OfferError::InvoiceExpiry {
                value: self.invoice_expiry_secs,
                min: MIN_INVOICE_EXPIRY_SECS,
                max: MAX_INVOICE_EXPIRY_SECS,
            });
        }
        if let Some(addr) = &self.ln_address {
            if addr.is_empty()
                || addr.chars().count() > MAX_URL_CHARS
                || addr.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(OfferError::BadLnAddress);
            }
        }
        if self.relays.is_empty() || self.relays.len() > MAX_RELAYS {
            return Err(OfferError::RelayCount { count: self.relays.len(), max: MAX_RELAYS });
        }
        for (index, url) in self.relays.iter().enumerate() {
            check_relay_url(url).map_err(|reason| OfferError::BadRelay { index, reason })?;
        }
        if let Some(value) = self.pow_difficulty {
            if value > MAX_POW_DIFFICULTY {
                return Err(OfferError::PowDifficulty { value, max: MAX_POW_DIFFICULTY });
            }
        }
        if self.expires_at == 0 {
            return Err(OfferError::ZeroExpiry);
        }
        Ok(())
    }

    /// `true` when the offer has expired at unix time `now_secs`.
    pub fn is_expired(&self, now_secs: u64) -> bool {
        now_secs >= self.expires_at
    }

    /// The quote for `amount_sat` under this offer ([`Quote::compute`]).
    ///
    /// # Errors
    /// See [`Quote::compute`].
    pub fn quote(&self, amount_sat: u64) -> Result<Quote, QuoteError> {
        Quote::compute(self, amount_sat)
    }
}
