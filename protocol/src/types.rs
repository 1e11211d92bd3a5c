//! Small value types shared by the whole protocol: swap ids, payment hashes, preimages.

use core::fmt;
use core::str::FromStr;

use bitcoin::hashes::{sha256, Hash};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Error returned when a hex string does not decode to a 32-byte value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex characters (32 bytes), got {len} characters")]
pub struct ParseBytes32Error {
    /// Length of the rejected string, in characters.
    pub len: usize,
}

fn parse_32(s: &str) -> Result<[u8; 32], ParseBytes32Error> {
    let err = || ParseBytes32Error { len: s.len() };
    if s.len() != 64 {
        return Err(err());
    }
    let bytes = hex::decode(s).map_err(|_| err())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| err())
}

macro_rules! bytes32_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The 32 bytes.
            pub fn to_byte_array(self) -> [u8; 32] {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseBytes32Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_32(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

bytes32_type!(
    /// A swap's identifier: 32 random bytes chosen by the buyer in `swap_request`, hex on the wire.
    SwapId
);
bytes32_type!(
    /// `sha256(preimage)`: the hash the Lightning invoice and the HTLC's claim leaf commit to.
    PaymentHash
);

impl PaymentHash {
    /// `ripemd160` of the payment hash, as it stands in the claim leaf (`OP_HASH160` of the preimage).
    pub fn hash160(&self) -> [u8; 20] {
        bitcoin::hashes::ripemd160::Hash::hash(&self.0).to_byte_array()
    }
}

/// The secret whose hash is the [`PaymentHash`]. Its `Debug` and `Display` never show the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Preimage(pub [u8; 32]);

impl Preimage {
    /// `sha256(preimage)`.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(sha256::Hash::hash(&self.0).to_byte_array())
    }

    /// Hex of the preimage, for the places that must reveal it (the wire after payment, the witness).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Preimage(..)")
    }
}

impl FromStr for Preimage {
    type Err = ParseBytes32Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_32(s).map(Self)
    }
}

impl Serialize for Preimage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Preimage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which way the money moves. Both directions use the same contract with the roles mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapDirection {
    /// The buyer pays Lightning and receives on-chain BTC.
    LoopOut,
    /// The buyer pays on-chain BTC and receives Lightning (reserved; not yet run).
    LoopIn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preimage_debug_hides_bytes() {
        let p = Preimage([7u8; 32]);
        assert_eq!(format!("{p:?}"), "Preimage(..)");
        assert_eq!(p.payment_hash(), Preimage([7u8; 32]).payment_hash());
    }

    #[test]
    fn bytes32_rejects_bad_hex() {
        assert!("ab".parse::<SwapId>().is_err());
        assert!("zz".repeat(32).parse::<SwapId>().is_err());
        let id: SwapId = "11".repeat(32).parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{}\"", "11".repeat(32)));
    }
}
