//! # looper-protocol
//!
//! The Looper swap protocol without I/O: the swap messages, the taproot HTLC contract, the MuSig2
//! cooperative spends, key derivation, fees and the buyer and seller state machines.
//!
//! The normative text is `spec/` at the root of the repository; names here are the spec's names.
#![deny(missing_docs)]

pub mod buyer;
pub mod diagrams;
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
