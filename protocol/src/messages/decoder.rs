//! Strict decoding: fields with their JSON paths, the size and version checks, the envelope
//! framing and the encode/decode entry points.

use core::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::limits::*;
use super::offer::*;
use super::swap_messages::*;
use crate::types::SwapId;

// ---------------------------------------------------------------------------------------------
// Field decoding with paths.

/// A field that failed to decode or check: its JSON path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    pub(super) path: String,
    pub(super) reason: String,
}

impl FieldError {
    pub(super) fn new(path: impl Into<String>, reason: impl fmt::Display) -> Self {
        FieldError { path: path.into(), reason: truncate(&reason.to_string(), MAX_TEXT_CHARS) }
    }
}

/// Decodes the field `key` of `map`. A missing key reads as JSON `null`, which only `Option`
/// fields accept.
pub(super) fn field<T: serde::de::DeserializeOwned>(
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
pub(super) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub(super) fn check_text(path: &str, s: &str, max: usize) -> Result<(), FieldError> {
    let n = s.chars().count();
    if n > max {
        return Err(FieldError::new(path, format!("{n} characters exceed the limit of {max}")));
    }
    Ok(())
}

pub(super) fn check_invoice(path: &str, s: &str) -> Result<(), FieldError> {
    check_text(path, s, MAX_INVOICE_CHARS)?;
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(FieldError::new(path, "not a bech32 BOLT11 invoice"));
    }
    Ok(())
}

pub(super) fn check_tx_hex(path: &str, s: &str) -> Result<(), FieldError> {
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
            pub(super) fn from_map(map: &Map<String, Value>) -> Result<Self, FieldError> {
                Ok(Self { $( $field: field(map, $key)?, )* })
            }
        }
    };
}
pub(super) use wire_struct;

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
pub(super) struct EnvelopeRef<'a> {
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
pub(super) fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

/// Reads and checks `v`, before any other field.
pub(super) fn check_version(
    map: &Map<String, Value>,
    swap_id: Option<SwapId>,
) -> Result<u32, DecodeError> {
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

pub(super) fn parse_json(bytes: &[u8], max: usize) -> Result<Value, DecodeError> {
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
