//! The API's error body and its stable codes.

use std::fmt;

use looper_protocol::checks::CheckError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The code of a taker's check that refused an offer: one of [`CheckError::CODES`], the checks
/// both roles share (`fee_too_high`, `claim_margin_too_low`, ...; spec `02-swap-flow.md`, "Buyer
/// checks"; for a loop in also `not_loop_in`, `timeout_too_long`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuyerCheckCode(&'static str);

impl BuyerCheckCode {
    /// The check's code when `code` is one of [`CheckError::CODES`].
    pub fn new(code: &str) -> Option<Self> {
        Self::all().find(|c| c.0 == code)
    }

    /// Every code: the claimer's, then the loop-in locker's own.
    fn all() -> impl Iterator<Item = BuyerCheckCode> {
        CheckError::CODES.iter().map(|c| BuyerCheckCode(c))
    }

    /// The code of `check`.
    pub fn of(check: &CheckError) -> Self {
        BuyerCheckCode(check.code())
    }

    /// The snake_case code.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for BuyerCheckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The stable code of an API error (`{"code": "...", "message": "..."}`), serialized as its
/// snake_case name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `unauthorized` (401): missing or wrong token.
    Unauthorized,
    /// `bad_request` (400): invalid input; the message names the field.
    BadRequest,
    /// `not_found` (404): no such swap, offer, payment or route.
    NotFound,
    /// `unknown_offer` (404): no such discoverable offer of that seller for that amount.
    UnknownOffer,
    /// `insufficient_funds` (400): the wallet cannot pay for it.
    InsufficientFunds,
    /// `conflict` (409): the swap refuses the request in its state, or the request conflicts with
    /// the configuration (unblocking a key of `seller.blocked_keys`).
    Conflict,
    /// `lightning_error` (502): the Lightning node failed.
    LightningError,
    /// `chain_error` (502): the chain source failed.
    ChainError,
    /// `internal` (500).
    Internal,
    /// `amount_above_limit` (422): the amount (of a swap, or an offer's maximum) is above the
    /// node's `safety.max_swap_amount_sat` (1 000 000 sat by default on mainnet); nothing was
    /// sent.
    AmountAboveLimit,
    /// A buyer check refused the offer (422); the check's own code.
    Refused(BuyerCheckCode),
    /// A code this version does not know (a newer node).
    Unknown(String),
}

impl ErrorCode {
    /// Every code but [`ErrorCode::Refused`] and [`ErrorCode::Unknown`].
    pub const FIXED: &'static [ErrorCode] = &[
        ErrorCode::Unauthorized,
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::UnknownOffer,
        ErrorCode::InsufficientFunds,
        ErrorCode::Conflict,
        ErrorCode::LightningError,
        ErrorCode::ChainError,
        ErrorCode::Internal,
        ErrorCode::AmountAboveLimit,
    ];

    /// Every code a node of this version answers: [`ErrorCode::FIXED`], then one
    /// [`ErrorCode::Refused`] per buyer check.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        Self::FIXED.iter().cloned().chain(BuyerCheckCode::all().map(ErrorCode::Refused))
    }

    /// The code read from its name; [`ErrorCode::Unknown`] when it is none of ours.
    pub fn parse(code: &str) -> ErrorCode {
        if let Some(fixed) = Self::FIXED.iter().find(|c| c.as_str() == code) {
            return fixed.clone();
        }
        match BuyerCheckCode::new(code) {
            Some(check) => ErrorCode::Refused(check),
            None => ErrorCode::Unknown(code.to_string()),
        }
    }

    /// The snake_case name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownOffer => "unknown_offer",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::Conflict => "conflict",
            ErrorCode::LightningError => "lightning_error",
            ErrorCode::ChainError => "chain_error",
            ErrorCode::Internal => "internal",
            ErrorCode::AmountAboveLimit => "amount_above_limit",
            ErrorCode::Refused(check) => check.as_str(),
            ErrorCode::Unknown(code) => code,
        }
    }

    /// The HTTP status the node answers with this code.
    pub fn status(&self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::BadRequest | ErrorCode::InsufficientFunds => 400,
            ErrorCode::NotFound | ErrorCode::UnknownOffer => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Refused(_) | ErrorCode::AmountAboveLimit => 422,
            ErrorCode::LightningError | ErrorCode::ChainError => 502,
            ErrorCode::Internal | ErrorCode::Unknown(_) => 500,
        }
    }
}

impl From<&CheckError> for ErrorCode {
    fn from(check: &CheckError) -> Self {
        ErrorCode::Refused(BuyerCheckCode::of(check))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Ok(ErrorCode::parse(&code))
    }
}

/// The body of every error answer: a stable [`ErrorCode`] and a one-line message that never
/// carries a secret. `Display` shows `message (code)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    pub code: ErrorCode,
    /// One-line human-readable message.
    pub message: String,
}

impl ErrorBody {
    /// An error body; the message is folded onto one line.
    pub fn new(code: ErrorCode, message: impl fmt::Display) -> Self {
        let message = message.to_string().lines().collect::<Vec<_>>().join(" ");
        ErrorBody { code, message }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in ErrorCode::all() {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::all().count(), 10 + CheckError::CODES.len());
        for code in ["not_loop_in", "timeout_too_long", "timeout_out_of_range"] {
            assert!(matches!(ErrorCode::parse(code), ErrorCode::Refused(_)), "{code}");
        }
        assert_eq!(ErrorCode::parse("amount_above_limit").status(), 422);
        assert_eq!(ErrorCode::parse("fee_too_high").status(), 422);
        assert_eq!(ErrorCode::parse("brand_new"), ErrorCode::Unknown("brand_new".into()));
    }

    #[test]
    fn body_is_one_line() {
        let b = ErrorBody::new(ErrorCode::BadRequest, "x: a\nb");
        assert_eq!(b.message, "x: a b");
        assert_eq!(b.to_string(), "x: a b (bad_request)");
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v, serde_json::json!({"code": "bad_request", "message": "x: a b"}));
    }
}
