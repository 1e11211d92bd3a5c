//! The protocol types the transport carries, in one place.
//!
//! TEMPORARY SHIM until `looper_protocol::messages` lands; then this file re-exports from there.

use serde::{Deserialize, Serialize};

/// Kind of the addressable offer event.
pub const OFFER_KIND: u16 = 38_383;
/// Kind of the rumor inside a swap-message gift wrap.
pub const SWAP_MESSAGE_KIND: u16 = 3_383;
/// Largest encoded envelope.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Largest encoded offer.
pub const MAX_OFFER_BYTES: usize = 8 * 1024;

/// An offer (shim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Offer id.
    pub id: String,
    /// Network.
    pub network: String,
    /// Min amount.
    pub min_amount_sat: u64,
    /// Max amount.
    pub max_amount_sat: u64,
    /// Base fee.
    pub fee_base_sat: u64,
    /// Ppm fee.
    pub fee_ppm: u32,
    /// Funding fee.
    pub funding_fee_sat: u64,
    /// Prepay.
    pub prepay_sat: Option<u64>,
    /// PoW.
    pub pow_difficulty: Option<u8>,
    /// Relays.
    pub relays: Vec<String>,
}

/// Envelope (shim).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Swap id.
    pub swap_id: String,
    /// Sequence.
    pub seq: u64,
}

/// Decode error (shim).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes an envelope.
pub fn decode_envelope(s: &str) -> Result<Envelope, DecodeError> {
    serde_json::from_str(s).map_err(|e| DecodeError(e.to_string()))
}

/// Encodes an envelope.
pub fn encode_envelope(e: &Envelope) -> Result<String, DecodeError> {
    serde_json::to_string(e).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes an offer.
pub fn decode_offer(s: &str) -> Result<Offer, DecodeError> {
    serde_json::from_str(s).map_err(|e| DecodeError(e.to_string()))
}

/// Encodes an offer.
pub fn encode_offer(o: &Offer) -> Result<String, DecodeError> {
    serde_json::to_string(o).map_err(|e| DecodeError(e.to_string()))
}

/// Whether this message opens a new swap (rate limited, PoW-checked).
pub fn is_swap_request(e: &Envelope) -> bool {
    e.kind == "swap_request"
}

/// Offer id as the `d` tag.
pub fn offer_id(o: &Offer) -> String {
    o.id.clone()
}

/// Offer network name.
pub fn offer_network(o: &Offer) -> String {
    o.network.clone()
}

/// Total seller cost for `amount_sat` (None when out of range).
pub fn offer_cost(o: &Offer, amount_sat: u64) -> Option<u64> {
    if amount_sat < o.min_amount_sat || amount_sat > o.max_amount_sat {
        return None;
    }
    let ppm = (u128::from(amount_sat) * u128::from(o.fee_ppm)).div_ceil(1_000_000);
    u64::try_from(ppm).ok()?.checked_add(o.fee_base_sat)?.checked_add(o.funding_fee_sat)
}
