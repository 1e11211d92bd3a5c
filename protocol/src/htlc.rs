//! The swap contract: a taproot HTLC (spec `03-transactions.md`, "The HTLC output").
//!
//! ```text
//! internal key  = KeyAgg(locker_musig_key, claimer_musig_key)        (BIP-0327, this fixed order)
//! claim leaf    = OP_SIZE 32 OP_EQUALVERIFY OP_HASH160 <ripemd160(H)> OP_EQUALVERIFY
//!                 <claim_xonly> OP_CHECKSIG
//! refund leaf   = <refund_xonly> OP_CHECKSIGVERIFY <timeout_height> OP_CHECKLOCKTIMEVERIFY
//! output        = P2TR(internal key + BIP-0341 taptweak of the tree {claim, refund})
//! ```
//!
//! The claim leaf is byte-identical to Boltz's reverse-swap claim leaf, so rescue tooling that
//! knows Boltz swaps recognises it. Each side rebuilds the whole output from the agreed
//! parameters and byte-compares it with what the peer sent ([`Htlc::verify_script_pubkey`]).

use bitcoin::opcodes::all::{
    OP_CHECKSIG, OP_CHECKSIGVERIFY, OP_CLTV, OP_EQUALVERIFY, OP_HASH160, OP_SIZE,
};
use bitcoin::secp256k1::{PublicKey, Secp256k1, XOnlyPublicKey};
use bitcoin::taproot::{ControlBlock, LeafVersion, TapNodeHash, TaprootBuilder, TaprootSpendInfo};
use bitcoin::{Address, Network, OutPoint, Script, ScriptBuf, Transaction};
use musig2::KeyAggContext;
use serde::{Deserialize, Serialize};

use crate::types::PaymentHash;

/// Lowest `nLockTime` value that means a unix time instead of a block height.
pub const LOCKTIME_THRESHOLD: u32 = 500_000_000;

/// The first byte of a BIP-0341 annex (the last witness element, when there are two or more).
const TAPROOT_ANNEX_PREFIX: u8 = 0x50;

/// The path a transaction took to spend the HTLC ([`Htlc::spend_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HtlcSpendPath {
    /// The MuSig2 key path: a cooperative claim or refund, co-signed by both.
    KeyPath,
    /// The buyer's claim leaf (reveals the preimage).
    ClaimLeaf,
    /// The seller's refund leaf (after the timeout).
    RefundLeaf,
    /// A script path with a script that is neither leaf (cannot happen for this output).
    Unknown,
}

/// Everything both parties agree on that determines the HTLC output.
///
/// The keys are named by money role, the same in both directions: the **locker** made the
/// preimage, locks the BTC and may refund after the timeout (the seller in a loop out, the taker
/// in a loop in); the **claimer** pays the invoice and claims with the preimage. Records, vectors
/// and backups keep the names of the loop-out roles (`buyer_claim_key`, ...) on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HtlcParams {
    /// `sha256(preimage)`; the claim leaf commits to `ripemd160` of it.
    pub payment_hash: PaymentHash,
    /// The claimer's key in the claim leaf.
    #[serde(rename = "buyer_claim_key")]
    pub claim_key: XOnlyPublicKey,
    /// The locker's key in the refund leaf.
    #[serde(rename = "seller_refund_key")]
    pub refund_key: XOnlyPublicKey,
    /// The locker's MuSig2 key (first in the key aggregation).
    #[serde(rename = "seller_musig_key")]
    pub locker_musig_key: PublicKey,
    /// The claimer's MuSig2 key (second in the key aggregation).
    #[serde(rename = "buyer_musig_key")]
    pub claimer_musig_key: PublicKey,
    /// Absolute block height from which the locker may refund through the refund leaf.
    pub timeout_height: u32,
    /// The network the address is for.
    pub network: Network,
}

/// Why an [`Htlc`] could not be built from its parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HtlcError {
    /// The timeout is a unix timestamp, not a block height.
    #[error("timeout {0} is a unix timestamp (>= 500000000), not a block height")]
    TimeoutIsTimestamp(u32),
    /// The timeout is zero.
    #[error("timeout height must be above zero")]
    ZeroTimeout,
    /// The timeout is not above the current tip.
    #[error("timeout height {timeout_height} is not above the tip {tip_height}")]
    TimeoutPassed {
        /// The HTLC's timeout.
        timeout_height: u32,
        /// The chain tip it was checked against.
        tip_height: u32,
    },
    /// Both MuSig2 keys are the same key.
    #[error("seller and buyer musig keys must differ")]
    DuplicateMusigKey,
    /// BIP-0327 key aggregation or the taproot tweak failed.
    #[error("musig2 key aggregation failed: {0}")]
    KeyAgg(String),
    /// The taproot tree could not be built.
    #[error("taproot tree could not be built")]
    Taproot,
}

/// A part of the HTLC that did not match what the peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HtlcMismatch {
    /// The output script differs.
    #[error("htlc script_pubkey mismatch: expected {expected}, got {got}")]
    ScriptPubkey {
        /// Hex of the script rebuilt from the agreed parameters.
        expected: String,
        /// Hex of the script the peer sent or the chain holds.
        got: String,
    },
    /// The claim leaf differs.
    #[error("htlc claim leaf mismatch")]
    ClaimLeaf,
    /// The refund leaf differs.
    #[error("htlc refund leaf mismatch")]
    RefundLeaf,
    /// The internal (aggregate) key differs.
    #[error("htlc internal key mismatch")]
    InternalKey,
}

/// The HTLC output built from [`HtlcParams`], with everything needed to spend it.
#[derive(Debug, Clone)]
pub struct Htlc {
    params: HtlcParams,
    claim_script: ScriptBuf,
    refund_script: ScriptBuf,
    internal_key: XOnlyPublicKey,
    spend_info: TaprootSpendInfo,
    key_agg: KeyAggContext,
    script_pubkey: ScriptBuf,
}

impl PartialEq for Htlc {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
    }
}

impl Htlc {
    /// Builds the HTLC from its parameters.
    ///
    /// # Errors
    /// A timeout that is zero or a timestamp, identical MuSig2 keys, or a key aggregation failure.
    pub fn new(params: HtlcParams) -> Result<Self, HtlcError> {
        if params.timeout_height == 0 {
            return Err(HtlcError::ZeroTimeout);
        }
        if params.timeout_height >= LOCKTIME_THRESHOLD {
            return Err(HtlcError::TimeoutIsTimestamp(params.timeout_height));
        }
        if params.locker_musig_key == params.claimer_musig_key {
            return Err(HtlcError::DuplicateMusigKey);
        }
        let claim_script = claim_leaf(&params.payment_hash, &params.claim_key);
        let refund_script = refund_leaf(&params.refund_key, params.timeout_height);

        let untweaked = KeyAggContext::new([params.locker_musig_key, params.claimer_musig_key])
            .map_err(|e| HtlcError::KeyAgg(e.to_string()))?;
        let agg: PublicKey = untweaked.aggregated_pubkey();
        let internal_key = agg.x_only_public_key().0;

        let secp = Secp256k1::verification_only();
        let spend_info = TaprootBuilder::new()
            .add_leaf(1, claim_script.clone())
            .and_then(|b| b.add_leaf(1, refund_script.clone()))
            .map_err(|_| HtlcError::Taproot)?
            .finalize(&secp, internal_key)
            .map_err(|_| HtlcError::Taproot)?;
        let merkle_root = spend_info.merkle_root().ok_or(HtlcError::Taproot)?;
        let key_agg = untweaked
            .with_taproot_tweak(merkle_root.as_ref())
            .map_err(|e| HtlcError::KeyAgg(e.to_string()))?;
        let output_key: PublicKey = key_agg.aggregated_pubkey();
        if output_key.x_only_public_key().0 != spend_info.output_key().to_x_only_public_key() {
            // BIP-0327's taproot tweak and BIP-0341's must agree; anything else is a bug.
            return Err(HtlcError::KeyAgg(
                "tweaked key differs from the taproot output key".into(),
            ));
        }
        let script_pubkey = ScriptBuf::new_p2tr_tweaked(spend_info.output_key());
        Ok(Self {
            params,
            claim_script,
            refund_script,
            internal_key,
            spend_info,
            key_agg,
            script_pubkey,
        })
    }

    /// Builds the HTLC and checks that its timeout lies above `tip_height`.
    ///
    /// # Errors
    /// As [`Htlc::new`], and [`HtlcError::TimeoutPassed`].
    pub fn new_at(params: HtlcParams, tip_height: u32) -> Result<Self, HtlcError> {
        if params.timeout_height <= tip_height {
            return Err(HtlcError::TimeoutPassed {
                timeout_height: params.timeout_height,
                tip_height,
            });
        }
        Self::new(params)
    }

    /// The agreed parameters.
    pub fn params(&self) -> &HtlcParams {
        &self.params
    }

    /// The buyer's claim leaf script.
    pub fn claim_script(&self) -> &Script {
        &self.claim_script
    }

    /// The seller's refund leaf script.
    pub fn refund_script(&self) -> &Script {
        &self.refund_script
    }

    /// The untweaked MuSig2 aggregate key (BIP-0341 internal key).
    pub fn internal_key(&self) -> XOnlyPublicKey {
        self.internal_key
    }

    /// The tweaked output key.
    pub fn output_key(&self) -> XOnlyPublicKey {
        self.spend_info.output_key().to_x_only_public_key()
    }

    /// The taproot merkle root of the two leaves.
    pub fn merkle_root(&self) -> Option<TapNodeHash> {
        self.spend_info.merkle_root()
    }

    /// The full taproot spend data.
    pub fn spend_info(&self) -> &TaprootSpendInfo {
        &self.spend_info
    }

    /// The BIP-0327 key aggregation context, tweaked for the key path.
    pub fn key_agg_context(&self) -> &KeyAggContext {
        &self.key_agg
    }

    /// The P2TR output script.
    pub fn script_pubkey(&self) -> &Script {
        &self.script_pubkey
    }

    /// The address of the output on the agreed network.
    pub fn address(&self) -> Address {
        Address::p2tr_tweaked(self.spend_info.output_key(), self.params.network)
    }

    /// The control block proving the claim leaf.
    pub fn claim_control_block(&self) -> Option<ControlBlock> {
        self.spend_info.control_block(&(self.claim_script.clone(), LeafVersion::TapScript))
    }

    /// The control block proving the refund leaf.
    pub fn refund_control_block(&self) -> Option<ControlBlock> {
        self.spend_info.control_block(&(self.refund_script.clone(), LeafVersion::TapScript))
    }

    /// Byte-compares `script_pubkey` with the output rebuilt from the parameters.
    ///
    /// # Errors
    /// [`HtlcMismatch::ScriptPubkey`] naming both scripts.
    pub fn verify_script_pubkey(&self, script_pubkey: &Script) -> Result<(), HtlcMismatch> {
        if script_pubkey.as_bytes() == self.script_pubkey.as_bytes() {
            Ok(())
        } else {
            Err(HtlcMismatch::ScriptPubkey {
                expected: self.script_pubkey.to_hex_string(),
                got: script_pubkey.to_hex_string(),
            })
        }
    }

    /// How `tx` spends the HTLC output at `outpoint`, read from the spending input's witness
    /// (BIP-0341: one element, or two with an annex, is a key-path spend; otherwise the leaf
    /// script stands before the control block). `None` when `tx` does not spend `outpoint`.
    ///
    /// This, not where the outputs pay, tells a claim from a refund: a key-path spend is whatever
    /// the two parties co-signed, a script-path spend names its leaf.
    pub fn spend_path(&self, tx: &Transaction, outpoint: OutPoint) -> Option<HtlcSpendPath> {
        let input = tx.input.iter().find(|i| i.previous_output == outpoint)?;
        let mut elements: Vec<&[u8]> = input.witness.iter().collect();
        if elements.len() >= 2
            && elements.last().and_then(|e| e.first()) == Some(&TAPROOT_ANNEX_PREFIX)
        {
            elements.pop();
        }
        if elements.len() <= 1 {
            return Some(HtlcSpendPath::KeyPath);
        }
        let script = elements.get(elements.len().saturating_sub(2)).copied().unwrap_or_default();
        Some(if script == self.claim_script.as_bytes() {
            HtlcSpendPath::ClaimLeaf
        } else if script == self.refund_script.as_bytes() {
            HtlcSpendPath::RefundLeaf
        } else {
            HtlcSpendPath::Unknown
        })
    }

    /// Byte-compares every part a peer may have sent (leaves, internal key, output script) with
    /// the ones rebuilt from the parameters, and names the first that differs.
    ///
    /// # Errors
    /// The [`HtlcMismatch`] of the first part that differs.
    pub fn verify_parts(
        &self,
        claim_leaf: &Script,
        refund_leaf: &Script,
        internal_key: &XOnlyPublicKey,
        script_pubkey: &Script,
    ) -> Result<(), HtlcMismatch> {
        if claim_leaf.as_bytes() != self.claim_script.as_bytes() {
            return Err(HtlcMismatch::ClaimLeaf);
        }
        if refund_leaf.as_bytes() != self.refund_script.as_bytes() {
            return Err(HtlcMismatch::RefundLeaf);
        }
        if *internal_key != self.internal_key {
            return Err(HtlcMismatch::InternalKey);
        }
        self.verify_script_pubkey(script_pubkey)
    }
}

/// The claim leaf: `OP_SIZE 32 OP_EQUALVERIFY OP_HASH160 <ripemd160(H)> OP_EQUALVERIFY <key> OP_CHECKSIG`.
pub fn claim_leaf(payment_hash: &PaymentHash, claim_key: &XOnlyPublicKey) -> ScriptBuf {
    ScriptBuf::builder()
        .push_opcode(OP_SIZE)
        .push_int(32)
        .push_opcode(OP_EQUALVERIFY)
        .push_opcode(OP_HASH160)
        .push_slice(payment_hash.hash160())
        .push_opcode(OP_EQUALVERIFY)
        .push_x_only_key(claim_key)
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// The refund leaf: `<key> OP_CHECKSIGVERIFY <timeout_height> OP_CHECKLOCKTIMEVERIFY`.
pub fn refund_leaf(refund_key: &XOnlyPublicKey, timeout_height: u32) -> ScriptBuf {
    ScriptBuf::builder()
        .push_x_only_key(refund_key)
        .push_opcode(OP_CHECKSIGVERIFY)
        .push_int(i64::from(timeout_height))
        .push_opcode(OP_CLTV)
        .into_script()
}
