//! Nostr transport: offers as addressable events, swap messages as NIP-59 gift wraps.
//!
//! Normative text: `spec/04-nostr.md`. The engine uses [`NostrTransport`]:
//!
//! - [`NostrTransport::connect`] with a [`TransportConfig`] (node key, relays, limits) and a
//!   [`ProcessedEvents`] store (the node's redb store; [`MemoryProcessedEvents`] in tests);
//! - offers: [`NostrTransport::publish_offer`], [`NostrTransport::withdraw_offer`],
//!   [`NostrTransport::refresh_offers`] / [`NostrTransport::spawn_refresher`],
//!   [`NostrTransport::discover_offers`];
//! - swap messages: [`NostrTransport::send`] / [`NostrTransport::send_with`], and
//!   [`NostrTransport::incoming`] for the decoded messages addressed to this node: to its
//!   identity, or to a swap's own key held with [`NostrTransport::add_key`] (a buyer talks to
//!   each seller with a key of that swap only, spec `04-nostr.md`, "Keys").

mod offers;
mod processed;
mod ratelimit;
mod transport;
pub(crate) use transport::{connection_mode, send_until_accepted};
pub mod wire;
mod wrap;

pub use nostr_sdk::{EventId, Keys, PublicKey, Timestamp};
pub use offers::{
    offer_event_builder, offer_relay_filter, parse_offer_event, select_offers, DiscoveredOffer,
    OfferFilter, OfferRejection, NETWORK_TAG,
};
pub use processed::{MemoryProcessedEvents, ProcessedEvents, ProcessedStoreError};
pub use ratelimit::{RateLimit, RateLimiter};
pub use transport::{
    Incoming, NostrTransport, RefreshHandle, SendOptions, SendReport, TransportConfig,
    TransportError, TransportStats, MAX_KEYS_PER_FILTER,
};
pub use wrap::{
    build_gift_wrap, build_seal, committed_pow, event_size, max_gift_wrap_bytes, open_gift_wrap,
    wrap_seal, OpenedMessage, WrapError,
};

/// The tracing target under which nostr-relay-pool logs whole relay messages it cannot handle
/// (an event over its size limits, at ERROR, with the message's full text in a `msg` field).
pub const RELAY_DUMP_TARGET: &str = "nostr_relay_pool";

/// Whether a log callsite is one of nostr-relay-pool's dumps of a whole relay message (a `msg`
/// field): `looper-node` leaves them out of its logs, where a peer could otherwise write
/// megabytes at every refetch. The transport logs an oversize gift wrap as one short line.
pub fn is_relay_dump(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with(RELAY_DUMP_TARGET) && meta.fields().field("msg").is_some()
}
