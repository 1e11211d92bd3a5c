//! # looper-protocol
//!
//! The Looper swap protocol without I/O: the swap messages, the taproot HTLC contract, the MuSig2
//! cooperative spends, key derivation, fees and the buyer and seller state machines.
//!
//! The normative text is `spec/` at the root of the repository; names here are the spec's names.
//!
//! # Driving a swap
//!
//! A swap is a value without I/O. [`buyer::BuyerSwap::start`] (a buyer taking an offer),
//! [`seller::SellerSwap::from_request`] (a seller answering a `swap_request`) or
//! [`seller::SellerSwap::start_loop_in`] (a taker locking in a loop in) creates one; the
//! driver then feeds it [`swap::Event`]s with a [`swap::Context`] (time, tip height, fee rate are
//! only ever arguments) and a fresh RNG, and carries out the returned [`swap::Action`]s in order:
//!
//! - [`swap::Action::Persist`]: store the swap's record (`SwapRecord::from(&swap).to_bytes()`)
//!   before anything that follows;
//! - [`swap::Action::Send`]: send the message to the peer, whose driver feeds it as
//!   [`swap::Event::Message`];
//! - the chain and Lightning actions (`FundHtlc`, `Broadcast`, `WatchHtlc`, `CheckHtlc`,
//!   `PayInvoice`, `CreateInvoice`, `ClaimPayment`, ...), each answered later by its event.
//!
//! The swap's fields are read through accessors (`swap.state()`, `swap.outbox()`,
//! `swap.offer()`, ... on its [`buyer::BuyerRecord`] / [`seller::SellerRecord`], reached through
//! `Deref`); only the state machine changes them.
//!
//! At start-up the driver reads each stored record with [`record::SwapRecord::from_bytes`]
//! (no keys needed to list it), derives its keys from the seed with
//! [`record::SwapRecord::key_index`] ([`keys::SwapKeys::derive`]), loads it with
//! [`record::SwapRecord::load`] (or `BuyerSwap::load` / `SellerSwap::load`) and carries out what
//! `resume` returns. Keys and MuSig2 secret nonces are never in a record.
//!
//! `examples/loop_out.rs` (`cargo run -p looper-protocol --example loop_out`) drives a whole swap
//! between a buyer and a seller state machine, with the messages passed by hand and the chain
//! and Lightning simulated in a few lines.
//!
//! # Stability of the public enums
//!
//! Errors, notifications, states, wire enums (`Message`, `ErrorCode`, `AbortReason`) and the
//! like are `#[non_exhaustive]`: a new variant is not a breaking change, so matches on them need a
//! wildcard arm. [`swap::Action`] and [`swap::Event`] are deliberately exhaustive: a driver must
//! carry out every action and may be fed every event, so a new one must break drivers' builds
//! rather than be ignored by a wildcard. So are the closed sets of the protocol: the two roles
//! ([`record::SwapRecord`], [`record::Swap`], [`musig::Signer`]), the direction
//! ([`SwapDirection`]) and a state's [`swap::StateKind`] (pending, succeeded, failed).
//!
//! # Randomness
//!
//! Every MuSig2 secret nonce comes fresh from the RNG passed in, is used once and is never
//! persisted; there is no way to give one from outside. Reproducible tests pass a seeded RNG.
#![deny(missing_docs)]

pub mod buyer;
pub mod checks;
pub mod claims;
pub mod diagrams;
pub mod fees;
pub mod htlc;
pub mod keys;
pub mod messages;
pub mod musig;
pub mod record;
pub mod seller;
mod shared;
pub mod spend;
pub mod swap;
pub mod terms;
mod transitions;
pub mod types;

pub use types::{PaymentHash, Preimage, SwapDirection, SwapId};
