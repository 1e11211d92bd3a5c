//! The protocol types the transport carries, gathered in one place.

pub use looper_protocol::messages::{
    decode_envelope, decode_offer, encode, encode_offer, DecodeError, Envelope, Message, Offer,
    MAX_MESSAGE_BYTES, MAX_OFFER_BYTES, OFFER_KIND, SWAP_MESSAGE_KIND,
};

/// The envelope as the rumor's content (compact JSON, UTF-8).
pub fn envelope_content(envelope: &Envelope) -> String {
    String::from_utf8_lossy(&encode(envelope)).into_owned()
}

/// The offer as the offer event's content (compact JSON, UTF-8).
pub fn offer_content(offer: &Offer) -> String {
    String::from_utf8_lossy(&encode_offer(offer)).into_owned()
}

/// Whether this message opens a new swap (rate limited and checked for proof of work).
pub fn is_swap_request(envelope: &Envelope) -> bool {
    envelope.body.is_request()
}

/// The offer a swap request (either direction) takes.
pub fn requested_offer_id(envelope: &Envelope) -> Option<&str> {
    envelope.body.requested_offer_id()
}

/// The network's name as used in the offer's `n` tag (`bitcoin`, `testnet`, `signet`, `regtest`).
pub fn network_name(network: bitcoin::Network) -> String {
    network.to_string()
}

/// The seller's cost for `amount_sat` under `offer` (swap fee + funding fee, the part that differs
/// between offers; the buyer's claim fee is the same for all). `None` outside the offer's range.
pub fn offer_cost(offer: &Offer, amount_sat: u64) -> Option<u64> {
    offer.quote(amount_sat).ok().map(|q| q.total_cost_sat(0))
}
