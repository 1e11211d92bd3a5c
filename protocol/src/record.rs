//! Versioned swap records: what the node stores for each swap, and restores at start-up.
//!
//! A record is JSON: `{"version":1,"role":"buyer"|"seller","swap":{...}}`. Keys and secret nonces
//! are never in it: keys derive again from the seed with `key_index`; a nonce lost in a restart is
//! replaced by a fresh one. Version 1 is the first; a later version adds a migration here and a
//! test that opens a version-1 record.
//!
//! A record is data: [`SwapRecord::from_bytes`] reads it without keys (its id, state and key
//! index are there to list it and to derive its keys); [`SwapRecord::load`] (or
//! [`BuyerSwap::load`], [`SellerSwap::load`]) makes it a running swap with its keys. A running
//! swap gives its record back with `SwapRecord::from(&swap)`.

use serde::{Deserialize, Serialize};

use crate::buyer::{BuyerRecord, BuyerSwap};
use crate::keys::SwapKeys;
use crate::seller::{SellerRecord, SellerSwap};
use crate::swap::{StateKind, SwapError};
use crate::types::SwapId;

/// The record format version this code writes.
pub const RECORD_VERSION: u32 = 1;

/// One stored swap. A swap has exactly the two roles of the protocol, so this enum is
/// exhaustive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "role", content = "swap", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // both variants are large; records are few and short-lived
pub enum SwapRecord {
    /// We are the buyer.
    Buyer(BuyerRecord),
    /// We are the seller.
    Seller(SellerRecord),
}

/// A loaded swap of either role ([`SwapRecord::load`]).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // both variants are large; swaps are few
pub enum Swap {
    /// We are the buyer.
    Buyer(BuyerSwap),
    /// We are the seller.
    Seller(SellerSwap),
}

#[derive(Serialize, Deserialize)]
struct Versioned {
    version: u32,
    #[serde(flatten)]
    record: SwapRecord,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A version this code does not know.
    #[error(
        "swap record version {0} is not supported (this build reads version {RECORD_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// Not a record.
    #[error("swap record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

impl SwapRecord {
    /// Encodes the record.
    ///
    /// # Errors
    /// Only if serialization fails (it does not for well-formed swaps).
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        Ok(serde_json::to_vec(&Versioned { version: RECORD_VERSION, record: self.clone() })?)
    }

    /// Decodes a record, migrating older versions.
    ///
    /// # Errors
    /// An unknown version or bytes that do not decode.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        #[derive(Deserialize)]
        struct Header {
            version: u32,
        }
        let header: Header = serde_json::from_slice(bytes)?;
        match header.version {
            RECORD_VERSION => Ok(serde_json::from_slice::<Versioned>(bytes)?.record),
            v => Err(RecordError::UnsupportedVersion(v)),
        }
    }

    /// Makes the record a running swap with its keys (derived from [`SwapRecord::key_index`]);
    /// then the swap's `resume` gives the actions to take at start-up.
    ///
    /// # Errors
    /// [`SwapError::WrongKeys`] when the keys are not the swap's.
    pub fn load(self, keys: SwapKeys) -> Result<Swap, SwapError> {
        Ok(match self {
            SwapRecord::Buyer(r) => Swap::Buyer(BuyerSwap::load(r, keys)?),
            SwapRecord::Seller(r) => Swap::Seller(SellerSwap::load(r, keys)?),
        })
    }

    /// The swap id.
    pub fn swap_id(&self) -> SwapId {
        match self {
            SwapRecord::Buyer(s) => s.swap_id(),
            SwapRecord::Seller(s) => s.swap_id(),
        }
    }

    /// The state's name.
    pub fn state_name(&self) -> &'static str {
        match self {
            SwapRecord::Buyer(s) => s.state().name(),
            SwapRecord::Seller(s) => s.state().name(),
        }
    }

    /// Pending, succeeded or failed.
    pub fn kind(&self) -> StateKind {
        match self {
            SwapRecord::Buyer(s) => s.kind(),
            SwapRecord::Seller(s) => s.kind(),
        }
    }

    /// The key index.
    pub fn key_index(&self) -> u32 {
        match self {
            SwapRecord::Buyer(s) => s.key_index(),
            SwapRecord::Seller(s) => s.key_index(),
        }
    }
}

impl From<BuyerRecord> for SwapRecord {
    fn from(record: BuyerRecord) -> Self {
        SwapRecord::Buyer(record)
    }
}

impl From<SellerRecord> for SwapRecord {
    fn from(record: SellerRecord) -> Self {
        SwapRecord::Seller(record)
    }
}

impl From<&Swap> for SwapRecord {
    fn from(swap: &Swap) -> Self {
        match swap {
            Swap::Buyer(b) => SwapRecord::from(b),
            Swap::Seller(s) => SwapRecord::from(s),
        }
    }
}
