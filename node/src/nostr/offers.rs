//! Offer events: building, parsing, validating and ranking.

use nostr_sdk::prelude::*;

use super::wire::{self, Offer, MAX_OFFER_BYTES, OFFER_KIND};
use bitcoin::Network;
use looper_protocol::SwapDirection;

/// The single-letter tag carrying the offer's network (`["n", "regtest"]`), so relays can filter.
pub const NETWORK_TAG: Alphabet = Alphabet::N;

/// What a buyer asks for when discovering offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferFilter {
    /// The network the buyer swaps on.
    pub network: Network,
    /// Swap amount in satoshis: offers whose range excludes it are dropped.
    pub amount_sat: u64,
    /// Only offers from these sellers (empty: any seller).
    pub sellers: Vec<PublicKey>,
    /// Only offers of this direction (a taker of a loop out cannot take a loop-in offer).
    pub direction: SwapDirection,
}

/// A valid offer found on a relay.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredOffer {
    /// The seller's Nostr key (author of the offer event, the key to send swap messages to).
    pub seller: PublicKey,
    /// The decoded offer.
    pub offer: Offer,
    /// Id of the offer event.
    pub event_id: EventId,
    /// `created_at` of the offer event.
    pub created_at: Timestamp,
    /// The offer's NIP-40 expiration.
    pub expires_at: Timestamp,
    /// The seller's cost for the asked amount (swap fee + funding fee), used for ranking.
    pub cost_sat: u64,
}

/// Why an offer event was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferRejection {
    /// Not the offer kind.
    #[error("event kind {0} is not the offer kind")]
    WrongKind(u16),
    /// Content over [`MAX_OFFER_BYTES`].
    #[error("offer content is {0} bytes, over the limit")]
    Oversize(usize),
    /// No NIP-40 `expiration` tag.
    #[error("offer has no expiration tag")]
    NoExpiration,
    /// Expired (by its `expiration` tag or its `expires_at`).
    #[error("offer expired")]
    Expired,
    /// No `d` tag, or it differs from the offer id.
    #[error("offer d tag missing or different from the offer id")]
    BadIdentifier,
    /// Content does not decode as an offer.
    #[error("malformed offer: {0}")]
    Malformed(String),
    /// Another network.
    #[error("offer is for network {0}")]
    WrongNetwork(Network),
    /// The amount is outside the offer's range (or the quote overflows).
    #[error("amount outside the offer's range")]
    AmountOutOfRange,
    /// Not from one of the wanted sellers.
    #[error("seller not wanted")]
    OtherSeller,
    /// The other direction.
    #[error("offer is for the other direction")]
    WrongDirection,
}

/// The offer event (to be signed by the seller's node key): content = the offer with
/// `expires_at` set to `expiration`, tags `d` = offer id, `expiration` (NIP-40), `n` = network.
pub fn offer_event_builder(
    offer: &Offer,
    expiration: Timestamp,
    created_at: Timestamp,
) -> EventBuilder {
    let mut offer = offer.clone();
    offer.expires_at = expiration.as_secs();
    EventBuilder::new(Kind::Custom(OFFER_KIND), wire::offer_content(&offer))
        .tags([
            Tag::identifier(offer.offer_id.clone()),
            Tag::expiration(expiration),
            Tag::custom(
                TagKind::SingleLetter(SingleLetterTag::lowercase(NETWORK_TAG)),
                [wire::network_name(offer.network)],
            ),
        ])
        .custom_created_at(created_at)
}

/// The replacement published when an offer is withdrawn: same `d` tag, empty content, short expiry.
pub fn withdrawn_event_builder(
    offer_id: &str,
    expiration: Timestamp,
    created_at: Timestamp,
) -> EventBuilder {
    EventBuilder::new(Kind::Custom(OFFER_KIND), "")
        .tags([Tag::identifier(offer_id), Tag::expiration(expiration)])
        .custom_created_at(created_at)
}

/// The relay filter for offers on `network`.
pub fn offer_relay_filter(filter: &OfferFilter) -> Filter {
    let mut f = Filter::new()
        .kind(Kind::Custom(OFFER_KIND))
        .custom_tag(SingleLetterTag::lowercase(NETWORK_TAG), wire::network_name(filter.network));
    if !filter.sellers.is_empty() {
        f = f.authors(filter.sellers.iter().copied());
    }
    f
}

/// Validates one offer event against `filter` at time `now`. The event's signature must already
/// be verified (the relay pool does that for every event it delivers).
pub fn parse_offer_event(
    event: &Event,
    filter: &OfferFilter,
    now: Timestamp,
) -> Result<DiscoveredOffer, OfferRejection> {
    if event.kind != Kind::Custom(OFFER_KIND) {
        return Err(OfferRejection::WrongKind(event.kind.as_u16()));
    }
    if !filter.sellers.is_empty() && !filter.sellers.contains(&event.pubkey) {
        return Err(OfferRejection::OtherSeller);
    }
    if event.content.len() > MAX_OFFER_BYTES {
        return Err(OfferRejection::Oversize(event.content.len()));
    }
    let expires_at = *event.tags.expiration().ok_or(OfferRejection::NoExpiration)?;
    if expires_at <= now {
        return Err(OfferRejection::Expired);
    }
    let offer = wire::decode_offer(event.content.as_bytes())
        .map_err(|e| OfferRejection::Malformed(e.to_string()))?;
    if offer.is_expired(now.as_secs()) {
        return Err(OfferRejection::Expired);
    }
    if event.tags.identifier() != Some(offer.offer_id.as_str()) {
        return Err(OfferRejection::BadIdentifier);
    }
    if offer.network != filter.network {
        return Err(OfferRejection::WrongNetwork(offer.network));
    }
    if offer.direction != filter.direction {
        return Err(OfferRejection::WrongDirection);
    }
    let cost_sat =
        wire::offer_cost(&offer, filter.amount_sat).ok_or(OfferRejection::AmountOutOfRange)?;
    Ok(DiscoveredOffer {
        seller: event.pubkey,
        offer,
        event_id: event.id,
        created_at: event.created_at,
        expires_at,
        cost_sat,
    })
}

/// Validates `events`, keeps the newest version of each `(seller, d)` and ranks the valid
/// offers by cost for the asked amount (cheapest first; ties: newest first, then event id).
pub fn select_offers<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    filter: &OfferFilter,
    now: Timestamp,
) -> Vec<DiscoveredOffer> {
    use std::collections::HashMap;
    // Newest version per address first, so a withdrawn (empty) replacement hides older versions.
    let mut newest: HashMap<(PublicKey, String), &Event> = HashMap::new();
    for event in events {
        if event.kind != Kind::Custom(OFFER_KIND) {
            continue;
        }
        let d = event.tags.identifier().unwrap_or_default().to_string();
        let key = (event.pubkey, d);
        match newest.get(&key) {
            Some(prev)
                if (prev.created_at, std::cmp::Reverse(prev.id))
                    >= (event.created_at, std::cmp::Reverse(event.id)) => {}
            _ => {
                newest.insert(key, event);
            }
        }
    }
    let mut out: Vec<DiscoveredOffer> = newest
        .values()
        .filter_map(|e| match parse_offer_event(e, filter, now) {
            Ok(o) => Some(o),
            Err(reason) => {
                tracing::debug!(event_id = %e.id, %reason, "offer dropped");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.cost_sat
            .cmp(&b.cost_sat)
            .then(b.created_at.cmp(&a.created_at))
            .then(a.event_id.cmp(&b.event_id))
    });
    out
}
