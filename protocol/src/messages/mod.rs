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

mod decoder;
mod limits;
mod offer;
mod swap_messages;

pub use decoder::*;
pub use limits::*;
pub use offer::*;
pub use swap_messages::*;
