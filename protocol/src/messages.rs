//! Wire messages: the [`Offer`] a seller publishes and the swap messages buyer and seller exchange.
//!
//! Normative text: `spec/01-messages.md`. Every swap message travels as one JSON object, the
//! [`Envelope`]:
//!
//! ```json
//! {"v":1,"type":"swap_abort","swap_id":"<64 hex>","seq":3,"reason":"user_requested"}
//! ```
//!
//! Decoding ([`decode_envelope`], [`decode_offer`]) is strict and never panics: the size limit is
//! checked before parsing, the version (`v`) before anything else, then every required field's
//! type, hex and length; unknown fields are ignored so that later versions can add optional fields.
//!
//! ```
//! use looper_protocol::messages::*;
//! use looper_protocol::SwapId;
//!
//! let env = Envelope::new(
//!     SwapId([7; 32]),
//!     3,
//!     Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
//! );
//! let bytes = encode(&env);
//! assert_eq!(decode_envelope(&bytes), Ok(env));
//!
//! // A peer speaking a future version gets an `error` naming the versions we speak.
//! let reply = decode_envelope(br#"{"v":9,"type":"swap_new_thing"}"#).map_err(|e| e.to_error_message());
//! assert_eq!(reply.err().and_then(|m| m.supported_versions), Some(SUPPORTED_VERSIONS.to_vec()));
//! ```

use core::fmt;

use bitcoin::{Network, ScriptBuf, Transaction, Txid};
use secp256k1::{PublicKey, XOnlyPublicKey};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::terms::{Quote, QuoteError, DUST_LIMIT_SAT, MAX_MONEY_SAT};
use crate::types::{PaymentHash, Preimage, SwapDirection, SwapId};

/// The protocol version this implementation writes in `v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this implementation reads. A message with another `v` is refused with an
/// [`ErrorCode::UnsupportedVersion`] error that lists these.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// Largest encoded swap message, in bytes, checked before parsing. Sized for `swap_funded`, which
/// carries the raw funding transaction (up to [`MAX_TX_BYTES`]). Bounded by Nostr: NIP-44 encrypts at
/// most 65,535 bytes and a message is encrypted twice (rumor in seal in gift wrap), which leaves room
/// for about 40,600 bytes of envelope (`spec/04-nostr.md`).
pub const MAX_MESSAGE_BYTES: usize = 40_000;

/// Largest encoded offer (the content of the offer event), in bytes, checked before parsing.
pub const MAX_OFFER_BYTES: usize = 8 * 1024;

/// Largest raw transaction a message may carry (`tx_hex` is at most twice this many characters).
pub const MAX_TX_BYTES: usize = 19_000;

/// Largest BOLT11 invoice, in characters.
pub const MAX_INVOICE_CHARS: usize = 2048;

/// Largest free-text field (`swap_abort.message`, `error.message`), in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// Longest `offer_id`, in characters (`[A-Za-z0-9_-]`, at least one).
pub const MAX_OFFER_ID_CHARS: usize = 64;

/// Most relays an offer may list.
pub const MAX_RELAYS: usize = 10;

/// Longest relay URL or Lightning node address, in characters.
pub const MAX_URL_CHARS: usize = 256;

/// Most versions an `error` may list in `supported_versions`.
pub const MAX_SUPPORTED_VERSIONS: usize = 16;

/// Nostr kind of the offer event: an addressable event (NIP-01 range 30000-39999, `d` tag = offer
/// id, so a new version of an offer replaces the old one on relays).
///
/// 35667 spells "LOOP" on a phone keypad (L=5, O=6, O=6, P=7) after the addressable prefix 3. It is
/// in neither the kind table of the NIPs `README.md` nor `nostr-protocol/registry-of-kinds`
/// (`schema.yaml`), whose nearest entries are 35128 (named nsite manifest, NIP-5A) and 37516
/// (geocache listing, NIP-CC). In particular it is not 38383, the NIP-69 peer-to-peer order kind,
/// whose orders carry a different content format.
pub const OFFER_KIND: u16 = 35_667;

/// Nostr kind of the inner rumor of a swap message (NIP-59 gift wrap, NIP-44 v2 encryption).
///
/// A regular (stored) kind below 10000, so relays keep the gift wrap and a peer that was offline
/// replays what it missed; not kind 14 (NIP-17 direct message), so chat clients do not show swap
/// traffic. 8667 ("LOOP" on a keypad with the prefix 8) is in neither the NIPs `README.md` kind
/// table nor the registry of kinds; it stays clear of the NIP-90 job ranges 5000-7000, NIP-43's
/// 8000-8001 and NIP-29's 9000-9030.
pub const SWAP_MESSAGE_KIND: u16 = 8_667;

/// Smallest Lightning CLTV budget, in blocks, that an offer must leave the buyer: LDK's
/// `MIN_FINAL_CLTV_EXPIRY_DELTA` (42), the final delta of every invoice an ldk-node seller issues.
/// A smaller budget could never route a payment.
pub const MIN_CLTV_BUDGET_BLOCKS: u32 = 42;

/// Largest `timeout_delta` an offer may set: two weeks of blocks, the longest the seller's coins may
/// be locked.
pub const MAX_TIMEOUT_DELTA: u32 = 2016;

/// Largest `min_confirmations` an offer may demand (one day of blocks).
pub const MAX_MIN_CONFIRMATIONS: u32 = 144;

/// Shortest invoice expiry an offer may set, in seconds.
pub const MIN_INVOICE_EXPIRY_SECS: u32 = 60;

/// Longest invoice expiry an offer may set, in seconds (one day).
pub const MAX_INVOICE_EXPIRY_SECS: u32 = 86_400;

/// Largest NIP-13 proof-of-work difficulty (leading zero bits) an offer may demand.
pub const MAX_POW_DIFFICULTY: u8 = 32;

/// Largest `fee_ppm`: 100 % of the amount.
pub const MAX_FEE_PPM: u32 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Field decoding with paths.

/// A field that failed to decode or check: its JSON path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldError {
    path: String,
    reason: String,
}

impl FieldError {
    fn new(path: impl Into<String>, reason: impl fmt::Display) -> Self {
        FieldError { path: path.into(), reason: truncate(&reason.to_string(), MAX_TEXT_CHARS) }
    }
}

/// Decodes the field `key` of `map`. A missing key reads as JSON `null`, which only `Option`
/// fields accept.
fn field<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
) -> Result<T, FieldError> {
    match map.get(key) {
        Some(v) => T::deserialize(v).map_err(|e| FieldError::new(key, e)),
        None => {
            T::deserialize(&Value::Null).map_err(|_| FieldError::new(key, "missing required field"))
        }
    }
}

/// The first `max` characters of `s`.
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn check_text(path: &str, s: &str, max: usize) -> Result<(), FieldError> {
    let n = s.chars().count();
    if n > max {
        return Err(FieldError::new(path, format!("{n} characters exceed the limit of {max}")));
    }
    Ok(())
}

fn check_invoice(path: &str, s: &str) -> Result<(), FieldError> {
    check_text(path, s, MAX_INVOICE_CHARS)?;
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(FieldError::new(path, "not a bech32 BOLT11 invoice"));
    }
    Ok(())
}

fn check_tx_hex(path: &str, s: &str) -> Result<(), FieldError> {
    if s.len() > 2 * MAX_TX_BYTES {
        return Err(FieldError::new(
            path,
            format!("{} hex characters exceed the limit of {}", s.len(), 2 * MAX_TX_BYTES),
        ));
    }
    if s.is_empty() || s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FieldError::new(path, "not an even-length hex string"));
    }
    Ok(())
}

/// `true` when `s` is a valid offer id: 1 to [`MAX_OFFER_ID_CHARS`] characters of `[A-Za-z0-9_-]`.
pub fn is_valid_offer_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_OFFER_ID_CHARS
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Defines a wire struct: each field with its JSON key; derives serde with those keys and a
/// `from_map` that decodes field by field, so errors name the field.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty => $key:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            $( $(#[$fmeta])* #[serde(rename = $key)] pub $field: $ty, )*
        }

        impl $name {
            #[allow(dead_code)]
            fn from_map(map: &Map<String, Value>) -> Result<Self, FieldError> {
                Ok(Self { $( $field: field(map, $key)?, )* })
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Fixed-size byte strings.

macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl core::str::FromStr for $name {
            type Err = ParseHexBytesError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || ParseHexBytesError { expected: $len, len: s.len() };
                if s.len() != 2 * $len {
                    return Err(err());
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(D::Error::custom)
            }
        }
    };
}

/// A hex string did not decode to the expected number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {} hex characters ({expected} bytes), got {len} characters or bad hex", 2 * .expected)]
pub struct ParseHexBytesError {
    /// Expected length in bytes.
    pub expected: usize,
    /// Length of the rejected string, in characters.
    pub len: usize,
}

hex_bytes!(
    /// A BIP-0327 MuSig2 public nonce (two compressed points, 66 bytes), hex on the wire. The
    /// `musig` module converts it; this type only guarantees the length.
    PubNonceBytes,
    66
);
hex_bytes!(
    /// A BIP-0327 MuSig2 partial signature (a scalar, 32 bytes), hex on the wire.
    PartialSigBytes,
    32
);

// ---------------------------------------------------------------------------------------------
// Codes.

/// Why a party abandons a swap (`swap_abort.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// The user asked to cancel.
    UserRequested,
    /// One of the checks before moving money failed (amount, script, hash, invoice...).
    ChecksFailed,
    /// The buyer's Lightning payment failed.
    PaymentFailed,
    /// Too few blocks are left before `timeout_height` to go on safely.
    TimeoutTooClose,
    /// The seller did not fund (or the funding did not confirm) in time.
    FundingTimeout,
    /// The seller withdrew the offer before funding.
    OfferWithdrawn,
    /// An internal error of the sender.
    Internal,
}

impl AbortReason {
    /// The wire name (`user_requested`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::UserRequested => "user_requested",
            AbortReason::ChecksFailed => "checks_failed",
            AbortReason::PaymentFailed => "payment_failed",
            AbortReason::TimeoutTooClose => "timeout_too_close",
            AbortReason::FundingTimeout => "funding_timeout",
            AbortReason::OfferWithdrawn => "offer_withdrawn",
            AbortReason::Internal => "internal",
        }
    }
}

/// The code of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The message's `v` is not spoken; `supported_versions` lists the versions that are.
    UnsupportedVersion,
    /// The message could not be decoded (size, JSON, missing field, type, hex, length).
    Malformed,
    /// No swap with this `swap_id` is known.
    UnknownSwap,
    /// No offer with this `offer_id` is known (or it expired).
    UnknownOffer,
    /// The amount is outside the offer's limits.
    AmountOutOfRange,
    /// Too many requests from this sender.
    RateLimited,
    /// The message is not acceptable in the swap's current state.
    InvalidState,
    /// A partial signature or nonce did not verify.
    BadSignature,
    /// Well-formed but unacceptable parameters (network, direction, keys, fee cap...).
    InvalidParams,
    /// An internal error of the sender.
    Internal,
}

impl ErrorCode {
    /// The wire name (`unsupported_version`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownSwap => "unknown_swap",
            ErrorCode::UnknownOffer => "unknown_offer",
            ErrorCode::AmountOutOfRange => "amount_out_of_range",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::Internal => "internal",
        }
    }
}

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

fn check_relay_url(url: &str) -> Result<(), &'static str> {
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

// ---------------------------------------------------------------------------------------------
// Swap messages.

wire_struct! {
    /// Buyer -> seller: take an offer for `amount_sat`. The buyer chooses the envelope's `swap_id`
    /// (32 random bytes). The buyer's Nostr key is the sender of the gift wrap, not a field.
    pub struct SwapRequest {
        /// The offer taken.
        pub offer_id: String => "offer_id",
        /// Must equal the offer's direction.
        pub direction: SwapDirection => "direction",
        /// Must equal the offer's network.
        pub network: Network => "network",
        /// The swap amount: the value of the HTLC output.
        pub amount_sat: u64 => "amount_sat",
        /// The buyer's MuSig2 key for the HTLC's internal key (second in key aggregation).
        pub buyer_musig_pubkey: PublicKey => "buyer_musig_pubkey",
        /// The buyer's key in the claim leaf.
        pub buyer_claim_pubkey: XOnlyPublicKey => "buyer_claim_pubkey",
        /// The most the buyer accepts as `swap_fee_sat + funding_fee_sat`.
        pub max_total_fee_sat: u64 => "max_total_fee_sat",
        /// The buyer accepts to pay the offer's prepay (must be true when the offer has one).
        pub prepay_accepted: bool => "prepay_accepted",
    }
}

wire_struct! {
    /// Seller -> buyer: the swap is accepted; the invoice, the keys and the contract.
    pub struct SwapAccept {
        /// BOLT11 invoice for `quote.invoice_amount_sat`, hash `payment_hash` (at most 2048 chars).
        pub invoice: String => "invoice",
        /// `sha256(preimage)`; the seller made the preimage.
        pub payment_hash: PaymentHash => "payment_hash",
        /// The seller's MuSig2 key (first in key aggregation).
        pub seller_musig_pubkey: PublicKey => "seller_musig_pubkey",
        /// The seller's key in the refund leaf.
        pub seller_refund_pubkey: XOnlyPublicKey => "seller_refund_pubkey",
        /// Absolute block height of the refund leaf's `OP_CHECKLOCKTIMEVERIFY`.
        pub timeout_height: u32 => "timeout_height",
        /// The HTLC output's scriptPubKey (P2TR, 34 bytes), hex.
        pub htlc_script_pubkey: ScriptBuf => "htlc_script_pubkey",
        /// Value of the HTLC output, in satoshis (equals `quote.htlc_amount_sat`).
        pub htlc_amount_sat: u64 => "htlc_amount_sat",
        /// The fee breakdown.
        pub quote: Quote => "quote",
        /// Invoice for `quote.prepay_sat`, present exactly when the quote has a prepay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub prepay_invoice: Option<String> => "prepay_invoice",
    }
}

wire_struct! {
    /// Seller -> buyer: the HTLC is funded (broadcast, perhaps not yet confirmed).
    pub struct SwapFunded {
        /// Id of the funding transaction.
        pub txid: Txid => "txid",
        /// Index of the HTLC output in it.
        pub vout: u32 => "vout",
        /// The raw funding transaction, hex (at most [`MAX_TX_BYTES`] bytes).
        pub tx_hex: String => "tx_hex",
    }
}

wire_struct! {
    /// Buyer -> seller: please co-sign this key-path claim (after the invoice is paid).
    pub struct CoopClaimRequest {
        /// The unsigned claim transaction, hex: one input spending the HTLC.
        pub tx_hex: String => "tx_hex",
        /// The buyer's MuSig2 public nonce for this signing session.
        pub buyer_nonce: PubNonceBytes => "buyer_nonce",
        /// The preimage the buyer's payment revealed: proof that the seller's Lightning claim
        /// went out, so the seller may co-sign before its own node reports the claim settled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub preimage: Option<Preimage> => "preimage",
    }
}

wire_struct! {
    /// Seller -> buyer: the seller's half of the cooperative claim signature.
    pub struct CoopClaimResponse {
        /// The seller's MuSig2 public nonce.
        pub seller_nonce: PubNonceBytes => "seller_nonce",
        /// The seller's partial signature.
        pub partial_sig: PartialSigBytes => "partial_sig",
    }
}

wire_struct! {
    /// Seller -> buyer: please co-sign this key-path refund (only while no payment is in flight).
    pub struct CoopRefundRequest {
        /// The unsigned refund transaction, hex: one input spending the HTLC.
        pub tx_hex: String => "tx_hex",
        /// The seller's MuSig2 public nonce for this signing session.
        pub seller_nonce: PubNonceBytes => "seller_nonce",
    }
}

wire_struct! {
    /// Buyer -> seller: the buyer's half of the cooperative refund signature.
    pub struct CoopRefundResponse {
        /// The buyer's MuSig2 public nonce.
        pub buyer_nonce: PubNonceBytes => "buyer_nonce",
        /// The buyer's partial signature.
        pub partial_sig: PartialSigBytes => "partial_sig",
    }
}

wire_struct! {
    /// Either party: the sender abandons the swap.
    pub struct SwapAbort {
        /// Why.
        pub reason: AbortReason => "reason",
        /// Free text for the user (at most 256 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub message: Option<String> => "message",
    }
}

wire_struct! {
    /// Either party: the previous message was refused.
    pub struct ErrorMessage {
        /// What went wrong.
        pub code: ErrorCode => "code",
        /// Free text (at most 256 characters; never a secret).
        pub message: String => "message",
        /// The versions the sender speaks; present with [`ErrorCode::UnsupportedVersion`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub supported_versions: Option<Vec<u32>> => "supported_versions",
    }
}

impl ErrorMessage {
    /// An error with `code` and `message` truncated to [`MAX_TEXT_CHARS`].
    pub fn new(code: ErrorCode, message: impl fmt::Display) -> Self {
        ErrorMessage {
            code,
            message: truncate(&message.to_string(), MAX_TEXT_CHARS),
            supported_versions: None,
        }
    }

    /// The `unsupported_version` error listing [`SUPPORTED_VERSIONS`].
    pub fn unsupported_version(version: u64) -> Self {
        ErrorMessage {
            supported_versions: Some(SUPPORTED_VERSIONS.to_vec()),
            ..ErrorMessage::new(
                ErrorCode::UnsupportedVersion,
                format_args!("protocol version {version} is not supported"),
            )
        }
    }
}

/// Why a transaction carried in a message is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// `tx_hex` is not a consensus-encoded transaction.
    #[error("tx_hex is not a valid transaction: {reason}")]
    BadTransaction {
        /// The decoder's message.
        reason: String,
    },
    /// The transaction's id is not the announced `txid`.
    #[error("transaction id {got} differs from the announced txid {expected}")]
    TxidMismatch {
        /// `txid` from the message.
        expected: Txid,
        /// Id of the decoded transaction.
        got: Txid,
    },
    /// `vout` is not an output of the transaction.
    #[error("vout {vout} is out of range, the transaction has {outputs} outputs")]
    VoutOutOfRange {
        /// `vout` from the message.
        vout: u32,
        /// Number of outputs.
        outputs: usize,
    },
}

fn decode_tx(tx_hex: &str) -> Result<Transaction, MessageError> {
    if tx_hex.len() > 2 * MAX_TX_BYTES {
        return Err(MessageError::BadTransaction { reason: "too large".into() });
    }
    bitcoin::consensus::encode::deserialize_hex::<Transaction>(tx_hex).map_err(|e| {
        MessageError::BadTransaction { reason: truncate(&e.to_string(), MAX_TEXT_CHARS) }
    })
}

impl SwapFunded {
    /// Builds the message from the funding transaction.
    pub fn new(tx: &Transaction, vout: u32) -> Self {
        SwapFunded {
            txid: tx.compute_txid(),
            vout,
            tx_hex: bitcoin::consensus::encode::serialize_hex(tx),
        }
    }

    /// Decodes `tx_hex` and checks that its id is `txid` and that `vout` is one of its outputs.
    ///
    /// # Errors
    /// [`MessageError`] naming the check that failed.
    pub fn tx(&self) -> Result<Transaction, MessageError> {
        let tx = decode_tx(&self.tx_hex)?;
        let got = tx.compute_txid();
        if got != self.txid {
            return Err(MessageError::TxidMismatch { expected: self.txid, got });
        }
        if usize::try_from(self.vout).map_or(true, |v| v >= tx.output.len()) {
            return Err(MessageError::VoutOutOfRange { vout: self.vout, outputs: tx.output.len() });
        }
        Ok(tx)
    }
}

impl CoopClaimRequest {
    /// Decodes the unsigned claim transaction.
    ///
    /// # Errors
    /// [`MessageError::BadTransaction`].
    pub fn tx(&self) -> Result<Transaction, MessageError> {
        decode_tx(&self.tx_hex)
    }
}

impl CoopRefundRequest {
    /// Decodes the unsigned refund transaction.
    ///
    /// # Errors
    /// [`MessageError::BadTransaction`].
    pub fn tx(&self) -> Result<Transaction, MessageError> {
        decode_tx(&self.tx_hex)
    }
}

/// A swap message body; the `type` tag on the wire is the variant's snake_case name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// `swap_request`, buyer -> seller.
    SwapRequest(SwapRequest),
    /// `swap_accept`, seller -> buyer.
    SwapAccept(SwapAccept),
    /// `swap_funded`, seller -> buyer.
    SwapFunded(SwapFunded),
    /// `coop_claim_request`, buyer -> seller.
    CoopClaimRequest(CoopClaimRequest),
    /// `coop_claim_response`, seller -> buyer.
    CoopClaimResponse(CoopClaimResponse),
    /// `coop_refund_request`, seller -> buyer.
    CoopRefundRequest(CoopRefundRequest),
    /// `coop_refund_response`, buyer -> seller.
    CoopRefundResponse(CoopRefundResponse),
    /// `swap_abort`, either party.
    SwapAbort(SwapAbort),
    /// `error`, either party.
    Error(ErrorMessage),
}

/// Every message type name, in protocol order.
pub const MESSAGE_TYPES: &[&str] = &[
    "swap_request",
    "swap_accept",
    "swap_funded",
    "coop_claim_request",
    "coop_claim_response",
    "coop_refund_request",
    "coop_refund_response",
    "swap_abort",
    "error",
];

impl Message {
    /// The wire `type` of this message.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::SwapRequest(_) => "swap_request",
            Message::SwapAccept(_) => "swap_accept",
            Message::SwapFunded(_) => "swap_funded",
            Message::CoopClaimRequest(_) => "coop_claim_request",
            Message::CoopClaimResponse(_) => "coop_claim_response",
            Message::CoopRefundRequest(_) => "coop_refund_request",
            Message::CoopRefundResponse(_) => "coop_refund_response",
            Message::SwapAbort(_) => "swap_abort",
            Message::Error(_) => "error",
        }
    }

    /// Decodes the body of type `type_name` from the envelope's object. `Ok(None)`: unknown type.
    fn from_map(type_name: &str, map: &Map<String, Value>) -> Result<Option<Message>, FieldError> {
        Ok(Some(match type_name {
            "swap_request" => Message::SwapRequest(SwapRequest::from_map(map)?),
            "swap_accept" => Message::SwapAccept(SwapAccept::from_map(map)?),
            "swap_funded" => Message::SwapFunded(SwapFunded::from_map(map)?),
            "coop_claim_request" => Message::CoopClaimRequest(CoopClaimRequest::from_map(map)?),
            "coop_claim_response" => Message::CoopClaimResponse(CoopClaimResponse::from_map(map)?),
            "coop_refund_request" => Message::CoopRefundRequest(CoopRefundRequest::from_map(map)?),
            "coop_refund_response" => {
                Message::CoopRefundResponse(CoopRefundResponse::from_map(map)?)
            }
            "swap_abort" => Message::SwapAbort(SwapAbort::from_map(map)?),
            "error" => Message::Error(ErrorMessage::from_map(map)?),
            _ => return Ok(None),
        }))
    }

    /// The length and format limits that types alone do not enforce.
    fn check_limits(&self) -> Result<(), FieldError> {
        match self {
            Message::SwapRequest(m) => {
                if !is_valid_offer_id(&m.offer_id) {
                    return Err(FieldError::new(
                        "offer_id",
                        "must be 1 to 64 characters of [A-Za-z0-9_-]",
                    ));
                }
            }
            Message::SwapAccept(m) => {
                check_invoice("invoice", &m.invoice)?;
                if let Some(p) = &m.prepay_invoice {
                    check_invoice("prepay_invoice", p)?;
                }
                if !m.htlc_script_pubkey.is_p2tr() {
                    return Err(FieldError::new(
                        "htlc_script_pubkey",
                        "not a P2TR scriptPubKey (OP_1 <32 bytes>)",
                    ));
                }
            }
            Message::SwapFunded(m) => check_tx_hex("tx_hex", &m.tx_hex)?,
            Message::CoopClaimRequest(m) => check_tx_hex("tx_hex", &m.tx_hex)?,
            Message::CoopRefundRequest(m) => check_tx_hex("tx_hex", &m.tx_hex)?,
            Message::CoopClaimResponse(_) | Message::CoopRefundResponse(_) => {}
            Message::SwapAbort(m) => {
                if let Some(text) = &m.message {
                    check_text("message", text, MAX_TEXT_CHARS)?;
                }
            }
            Message::Error(m) => {
                check_text("message", &m.message, MAX_TEXT_CHARS)?;
                if let Some(v) = &m.supported_versions {
                    if v.len() > MAX_SUPPORTED_VERSIONS {
                        return Err(FieldError::new(
                            "supported_versions",
                            format!("more than {MAX_SUPPORTED_VERSIONS} versions"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Message {
    /// A body with its `type` tag, as [`Message`] serializes (for records that store a body alone);
    /// same field checks as [`decode_envelope`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let map = value.as_object().ok_or_else(|| D::Error::custom("not a JSON object"))?;
        let err = |e: FieldError| D::Error::custom(format_args!("at `{}`: {}", e.path, e.reason));
        let type_name: String = field(map, "type").map_err(err)?;
        let body = Message::from_map(&type_name, map).map_err(err)?.ok_or_else(|| {
            D::Error::custom(format_args!("unknown message type `{}`", truncate(&type_name, 64)))
        })?;
        body.check_limits().map_err(err)?;
        Ok(body)
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope.

/// One swap message on the wire: version, swap id, the sender's sequence number and the body,
/// all in one flat JSON object (`{"v":1,"type":...,"swap_id":...,"seq":...,<body fields>}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Protocol version (`v` on the wire).
    pub version: u32,
    /// The swap this message belongs to.
    pub swap_id: SwapId,
    /// The sender's sequence number in this swap: 0 for its first message, +1 for each new one; a
    /// resent message keeps its number.
    pub seq: u32,
    /// The message.
    pub body: Message,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    swap_id: &'a SwapId,
    seq: u32,
    #[serde(flatten)]
    body: &'a Message,
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EnvelopeRef { v: self.version, swap_id: &self.swap_id, seq: self.seq, body: &self.body }
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    /// Same rules as [`decode_envelope`] except the byte-size limit.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Envelope::from_value(&value).map_err(D::Error::custom)
    }
}

impl Envelope {
    /// A message of the current [`PROTOCOL_VERSION`].
    pub fn new(swap_id: SwapId, seq: u32, body: Message) -> Self {
        Envelope { version: PROTOCOL_VERSION, swap_id, seq, body }
    }

    /// An `error` reply for `swap_id`, sent with the replier's own `seq`.
    pub fn error_reply(swap_id: SwapId, seq: u32, error: ErrorMessage) -> Self {
        Envelope::new(swap_id, seq, Message::Error(error))
    }

    /// Decodes an already parsed JSON value (no size limit; see [`decode_envelope`]).
    ///
    /// # Errors
    /// As [`decode_envelope`], except [`DecodeError::TooLarge`].
    pub fn from_value(value: &Value) -> Result<Envelope, DecodeError> {
        let map = value.as_object().ok_or_else(|| DecodeError::Malformed {
            path: String::new(),
            reason: "not a JSON object".into(),
            swap_id: None,
        })?;
        // The swap id is read best-effort first, only to address a reply; it is checked below.
        let loose_id =
            map.get("swap_id").and_then(Value::as_str).and_then(|s| s.parse::<SwapId>().ok());
        let version = check_version(map, loose_id)?;
        let malformed = |e: FieldError| DecodeError::Malformed {
            path: e.path,
            reason: e.reason,
            swap_id: loose_id,
        };
        let swap_id: SwapId = field(map, "swap_id").map_err(malformed)?;
        let seq: u32 = field(map, "seq").map_err(malformed)?;
        let type_name: String = field(map, "type").map_err(malformed)?;
        let body = Message::from_map(&type_name, map).map_err(malformed)?.ok_or_else(|| {
            DecodeError::UnknownType { type_name: truncate(&type_name, 64), swap_id: Some(swap_id) }
        })?;
        body.check_limits().map_err(malformed)?;
        Ok(Envelope { version, swap_id, seq, body })
    }
}

/// ` at `path`` for a field, nothing for the whole input.
fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

/// Reads and checks `v`, before any other field.
fn check_version(map: &Map<String, Value>, swap_id: Option<SwapId>) -> Result<u32, DecodeError> {
    let malformed =
        |reason: &str| DecodeError::Malformed { path: "v".into(), reason: reason.into(), swap_id };
    let v = map.get("v").ok_or_else(|| malformed("missing required field"))?;
    let v = v.as_u64().ok_or_else(|| malformed("expected a non-negative integer"))?;
    match u32::try_from(v) {
        Ok(version) if SUPPORTED_VERSIONS.contains(&version) => Ok(version),
        _ => Err(DecodeError::UnsupportedVersion { version: v, swap_id }),
    }
}

/// Why bytes did not decode to a message or an offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than the limit; not parsed at all.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `v` is not a version we speak.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The peer's `v`.
        version: u64,
        /// The swap id, when the message had a readable one (to address the reply).
        swap_id: Option<SwapId>,
    },
    /// `type` is not a message type of this version.
    #[error("unknown message type `{type_name}`")]
    UnknownType {
        /// The peer's `type` (at most 64 characters of it).
        type_name: String,
        /// The message's swap id.
        swap_id: Option<SwapId>,
    },
    /// Not JSON, not an object, or a field is missing, of the wrong type, bad hex, the wrong
    /// length or over its limit.
    #[error("malformed message{}: {reason}", at_path(path))]
    Malformed {
        /// The field (`""` for the whole input).
        path: String,
        /// What is wrong.
        reason: String,
        /// The swap id, when the message had a readable one.
        swap_id: Option<SwapId>,
    },
    /// An offer decoded but its terms are invalid.
    #[error("invalid offer")]
    InvalidOffer(#[from] OfferError),
}

impl DecodeError {
    /// A short stable name of the variant: `too_large`, `unsupported_version`, `unknown_type`,
    /// `malformed`, `invalid_offer` (used by the test vectors).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::UnknownType { .. } => "unknown_type",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::InvalidOffer(_) => "invalid_offer",
        }
    }

    /// The swap the refused message belonged to, when it could be read.
    pub fn swap_id(&self) -> Option<SwapId> {
        match self {
            DecodeError::UnsupportedVersion { swap_id, .. }
            | DecodeError::UnknownType { swap_id, .. }
            | DecodeError::Malformed { swap_id, .. } => *swap_id,
            DecodeError::TooLarge { .. } | DecodeError::InvalidOffer(_) => None,
        }
    }

    /// The `error` body to send back.
    pub fn to_error_message(&self) -> ErrorMessage {
        match self {
            DecodeError::UnsupportedVersion { version, .. } => {
                ErrorMessage::unsupported_version(*version)
            }
            DecodeError::InvalidOffer(e) => ErrorMessage::new(ErrorCode::InvalidParams, e),
            DecodeError::TooLarge { .. }
            | DecodeError::UnknownType { .. }
            | DecodeError::Malformed { .. } => ErrorMessage::new(ErrorCode::Malformed, self),
        }
    }

    /// The whole reply (with the replier's `seq`), when the refused message's swap id is known.
    pub fn reply(&self, seq: u32) -> Option<Envelope> {
        self.swap_id().map(|id| Envelope::error_reply(id, seq, self.to_error_message()))
    }
}

fn parse_json(bytes: &[u8], max: usize) -> Result<Value, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { size: bytes.len(), max });
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed {
        path: String::new(),
        reason: truncate(&format!("not JSON: {e}"), MAX_TEXT_CHARS),
        swap_id: None,
    })
}

/// Decodes one swap message.
///
/// Order of checks: size ([`MAX_MESSAGE_BYTES`]), JSON object, `v` (unknown ->
/// [`DecodeError::UnsupportedVersion`]), `swap_id`, `seq`, `type`, then the body's fields and
/// limits. Unknown fields are ignored.
///
/// # Errors
/// [`DecodeError`]; answer with [`DecodeError::reply`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    Envelope::from_value(&parse_json(bytes, MAX_MESSAGE_BYTES)?)
}

/// Encodes a swap message as compact JSON.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    // Serializing these types into JSON cannot fail: every map key is a string and every value
    // is plain data.
    serde_json::to_vec(envelope).unwrap_or_default()
}

/// Decodes and validates an offer (the content of an offer event).
///
/// Order of checks: size ([`MAX_OFFER_BYTES`]), JSON object, `v`, the fields, then
/// [`Offer::validate`]. Unknown fields are ignored. The caller checks expiry against its clock.
///
/// # Errors
/// [`DecodeError`]; an offer that decodes but fails [`Offer::validate`] gives
/// [`DecodeError::InvalidOffer`].
pub fn decode_offer(bytes: &[u8]) -> Result<Offer, DecodeError> {
    let value = parse_json(bytes, MAX_OFFER_BYTES)?;
    let map = value.as_object().ok_or_else(|| DecodeError::Malformed {
        path: String::new(),
        reason: "not a JSON object".into(),
        swap_id: None,
    })?;
    check_version(map, None)?;
    let offer = Offer::from_map(map).map_err(|e| DecodeError::Malformed {
        path: e.path,
        reason: e.reason,
        swap_id: None,
    })?;
    offer.validate()?;
    Ok(offer)
}

/// Encodes an offer as compact JSON (the offer event's content).
pub fn encode_offer(offer: &Offer) -> Vec<u8> {
    // As in `encode`: cannot fail for these types.
    serde_json::to_vec(offer).unwrap_or_default()
}
