//! Per-swap keys and preimages derived from the node's seed (spec `03-transactions.md`, "Key
//! derivation").
//!
//! The node hands this module its *swap master* key, the BIP-32 key at `m/10147'/<coin>'/0'`
//! of its seed (`coin` 0 on mainnet, 1 elsewhere). Swap `i` uses:
//!
//! | key | path below the swap master |
//! |---|---|
//! | MuSig2 key | `i'/0'` |
//! | claim key (buyer) | `i'/1'` |
//! | refund key (seller) | `i'/2'` |
//! | preimage (seller) | `sha256("looper/preimage" ‖ secret key at i'/3')` |
//! | (reserved: the node's Nostr key of the swap as a taker, `looper-node`) | `i'/1237'` |
//!
//! so a node restored from its seed alone finds every swap's keys by walking `i` upwards.

use bitcoin::bip32::{ChildNumber, Xpriv};
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{Keypair, PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};

use crate::types::{PaymentHash, Preimage};

/// BIP-32 purpose index of Looper's swap keys (`m/10147'/...`).
pub const LOOPER_PURPOSE: u32 = 10147;

/// Why keys could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The swap index is 2^31 or more (no room for a hardened child).
    #[error("swap index {0} is out of range (must be below 2^31)")]
    IndexOutOfRange(u32),
    /// BIP-32 derivation failed.
    #[error("bip32 derivation failed")]
    Derivation,
}

/// The keys of one swap.
#[derive(Clone)]
pub struct SwapKeys {
    index: u32,
    musig: Keypair,
    claim: Keypair,
    refund: Keypair,
    preimage: Preimage,
}

impl core::fmt::Debug for SwapKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SwapKeys").field("index", &self.index).finish_non_exhaustive()
    }
}

impl SwapKeys {
    /// Derives swap `index`'s keys from the swap master key.
    ///
    /// # Errors
    /// [`KeyError::IndexOutOfRange`] for an index of 2^31 or more.
    pub fn derive(swap_master: &Xpriv, index: u32) -> Result<Self, KeyError> {
        let secp = Secp256k1::new();
        let swap =
            ChildNumber::from_hardened_idx(index).map_err(|_| KeyError::IndexOutOfRange(index))?;
        let child = |k: u32| -> Result<SecretKey, KeyError> {
            let k = ChildNumber::from_hardened_idx(k).map_err(|_| KeyError::Derivation)?;
            swap_master
                .derive_priv(&secp, &[swap, k])
                .map(|x| x.private_key)
                .map_err(|_| KeyError::Derivation)
        };
        let kp = |k| child(k).map(|sk| Keypair::from_secret_key(&secp, &sk));
        let mut engine = sha256::Hash::engine();
        engine.input(b"looper/preimage");
        engine.input(&child(3)?.secret_bytes());
        let preimage = Preimage(sha256::Hash::from_engine(engine).to_byte_array());
        Ok(Self { index, musig: kp(0)?, claim: kp(1)?, refund: kp(2)?, preimage })
    }

    /// The swap index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The MuSig2 keypair.
    pub fn musig(&self) -> &Keypair {
        &self.musig
    }

    /// The MuSig2 public key (what goes into the key aggregation).
    pub fn musig_pubkey(&self) -> PublicKey {
        self.musig.public_key()
    }

    /// The buyer's claim-leaf keypair.
    pub fn claim(&self) -> &Keypair {
        &self.claim
    }

    /// The x-only claim key.
    pub fn claim_pubkey(&self) -> XOnlyPublicKey {
        self.claim.x_only_public_key().0
    }

    /// The seller's refund-leaf keypair.
    pub fn refund(&self) -> &Keypair {
        &self.refund
    }

    /// The x-only refund key.
    pub fn refund_pubkey(&self) -> XOnlyPublicKey {
        self.refund.x_only_public_key().0
    }

    /// The seller's preimage for this swap.
    pub fn preimage(&self) -> &Preimage {
        &self.preimage
    }

    /// `sha256` of the preimage.
    pub fn payment_hash(&self) -> PaymentHash {
        self.preimage.payment_hash()
    }
}
