//! Protocol versions, Nostr kinds and the size and range limits of every message.

/// The protocol version this implementation writes in `v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this implementation reads. A message with another `v` is refused with an
/// [`ErrorCode::UnsupportedVersion`](super::ErrorCode::UnsupportedVersion) error that lists these.
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
