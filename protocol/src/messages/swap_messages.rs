//! The swap messages buyer and seller exchange, their codes and fixed-size byte strings.

use core::fmt;

use bitcoin::{Network, ScriptBuf, Transaction, Txid};
use secp256k1::{PublicKey, XOnlyPublicKey};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::decoder::*;
use super::limits::*;
use crate::terms::Quote;
use crate::types::{PaymentHash, Preimage, SwapDirection};

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
    /// Taker (locker) -> maker (claimer): take a loop-in offer for `amount_sat` (wire type
    /// `swap_request` with `direction: loop_in`). The taker made the preimage and will lock the
    /// BTC; the maker pays the taker's invoice once the lock confirms.
    pub struct LoopInRequest {
        /// The offer taken.
        pub offer_id: String => "offer_id",
        /// Always [`SwapDirection::LoopIn`] (checked by the decoder).
        pub direction: SwapDirection => "direction",
        /// Must equal the offer's network.
        pub network: Network => "network",
        /// The swap amount: the value of the HTLC output the taker locks.
        pub amount_sat: u64 => "amount_sat",
        /// `sha256(preimage)`; the taker made the preimage from its seed.
        pub payment_hash: PaymentHash => "payment_hash",
        /// The taker's MuSig2 key (the locker's: first in key aggregation).
        pub locker_musig_pubkey: PublicKey => "locker_musig_pubkey",
        /// The taker's key in the refund leaf.
        pub locker_refund_pubkey: XOnlyPublicKey => "locker_refund_pubkey",
        /// The most the taker accepts as `swap_fee_sat + funding_fee_sat` (the maker's fee and
        /// its claim's on-chain cost, taken from the invoice amount).
        pub max_total_fee_sat: u64 => "max_total_fee_sat",
    }
}

wire_struct! {
    /// Maker (claimer) -> taker (locker): the loop in is accepted (wire type `swap_accept` with
    /// `direction: loop_in`): the maker's keys and the contract. No invoice: the taker issues it
    /// with `swap_funded`.
    pub struct LoopInAccept {
        /// Always [`SwapDirection::LoopIn`] (checked by the decoder).
        pub direction: SwapDirection => "direction",
        /// The maker's MuSig2 key (the claimer's: second in key aggregation).
        pub claimer_musig_pubkey: PublicKey => "claimer_musig_pubkey",
        /// The maker's key in the claim leaf.
        pub claimer_claim_pubkey: XOnlyPublicKey => "claimer_claim_pubkey",
        /// Absolute block height of the refund leaf's `OP_CHECKLOCKTIMEVERIFY`.
        pub timeout_height: u32 => "timeout_height",
        /// The HTLC output's scriptPubKey (P2TR, 34 bytes), hex.
        pub htlc_script_pubkey: ScriptBuf => "htlc_script_pubkey",
        /// Value of the HTLC output, in satoshis (equals `quote.htlc_amount_sat`).
        pub htlc_amount_sat: u64 => "htlc_amount_sat",
        /// The fee breakdown.
        pub quote: Quote => "quote",
    }
}

wire_struct! {
    /// Locker -> claimer: the HTLC is funded (broadcast, perhaps not yet confirmed).
    pub struct SwapFunded {
        /// Id of the funding transaction.
        pub txid: Txid => "txid",
        /// Index of the HTLC output in it.
        pub vout: u32 => "vout",
        /// The raw funding transaction, hex (at most [`MAX_TX_BYTES`] bytes).
        pub tx_hex: String => "tx_hex",
        /// Loop in: the taker's BOLT11 invoice for the swap's hash, of `quote.invoice_amount_sat`
        /// (required in a loop in, absent in a loop out, where `swap_accept` carried it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub invoice: Option<String> => "invoice",
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

pub(super) fn decode_tx(tx_hex: &str) -> Result<Transaction, MessageError> {
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
            invoice: None,
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
    /// `swap_request`, buyer -> seller (loop out).
    SwapRequest(SwapRequest),
    /// `swap_accept`, seller -> buyer (loop out).
    SwapAccept(SwapAccept),
    /// `swap_request` with `direction: loop_in`, taker (locker) -> maker (claimer).
    #[serde(rename = "swap_request")]
    LoopInRequest(LoopInRequest),
    /// `swap_accept` with `direction: loop_in`, maker (claimer) -> taker (locker).
    #[serde(rename = "swap_accept")]
    LoopInAccept(LoopInAccept),
    /// `swap_funded`, locker -> claimer.
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
    /// Whether this message asks for a new swap (a `swap_request` of either direction).
    pub fn is_request(&self) -> bool {
        matches!(self, Message::SwapRequest(_) | Message::LoopInRequest(_))
    }

    /// The offer a `swap_request` (either direction) takes.
    pub fn requested_offer_id(&self) -> Option<&str> {
        match self {
            Message::SwapRequest(r) => Some(&r.offer_id),
            Message::LoopInRequest(r) => Some(&r.offer_id),
            _ => None,
        }
    }

    /// The wire `type` of this message.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::SwapRequest(_) | Message::LoopInRequest(_) => "swap_request",
            Message::SwapAccept(_) | Message::LoopInAccept(_) => "swap_accept",
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
    pub(super) fn from_map(
        type_name: &str,
        map: &Map<String, Value>,
    ) -> Result<Option<Message>, FieldError> {
        Ok(Some(match type_name {
            // One wire type per step; the direction picks the fields it must carry.
            "swap_request" => match direction(map)? {
                SwapDirection::LoopOut => Message::SwapRequest(SwapRequest::from_map(map)?),
                SwapDirection::LoopIn => Message::LoopInRequest(LoopInRequest::from_map(map)?),
            },
            "swap_accept" => match map.get("direction") {
                None => Message::SwapAccept(SwapAccept::from_map(map)?),
                Some(_) => match direction(map)? {
                    SwapDirection::LoopIn => Message::LoopInAccept(LoopInAccept::from_map(map)?),
                    SwapDirection::LoopOut => {
                        return Err(FieldError::new(
                            "direction",
                            "a loop-out swap_accept carries no direction",
                        ))
                    }
                },
            },
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
    pub(super) fn check_limits(&self) -> Result<(), FieldError> {
        match self {
            Message::SwapRequest(m) => {
                if !is_valid_offer_id(&m.offer_id) {
                    return Err(FieldError::new(
                        "offer_id",
                        "must be 1 to 64 characters of [A-Za-z0-9_-]",
                    ));
                }
            }
            Message::LoopInRequest(m) => {
                if !is_valid_offer_id(&m.offer_id) {
                    return Err(FieldError::new(
                        "offer_id",
                        "must be 1 to 64 characters of [A-Za-z0-9_-]",
                    ));
                }
            }
            Message::LoopInAccept(m) => check_p2tr("htlc_script_pubkey", &m.htlc_script_pubkey)?,
            Message::SwapAccept(m) => {
                check_invoice("invoice", &m.invoice)?;
                if let Some(p) = &m.prepay_invoice {
                    check_invoice("prepay_invoice", p)?;
                }
                check_p2tr("htlc_script_pubkey", &m.htlc_script_pubkey)?;
            }
            Message::SwapFunded(m) => {
                check_tx_hex("tx_hex", &m.tx_hex)?;
                if let Some(invoice) = &m.invoice {
                    check_invoice("invoice", invoice)?;
                }
            }
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

/// The `direction` of a `swap_request` or `swap_accept`.
fn direction(map: &Map<String, Value>) -> Result<SwapDirection, FieldError> {
    field(map, "direction")
}

fn check_p2tr(path: &str, script: &ScriptBuf) -> Result<(), FieldError> {
    if !script.is_p2tr() {
        return Err(FieldError::new(path, "not a P2TR scriptPubKey (OP_1 <32 bytes>)"));
    }
    Ok(())
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
