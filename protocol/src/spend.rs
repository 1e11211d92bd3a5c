//! Transactions that spend HTLC outputs (spec `03-transactions.md`, "Spending the HTLC").
//!
//! [`SpendTx::build`] lays out an unsigned transaction spending one or more HTLCs to one
//! destination, with the fee computed from the exact weight of the finished transaction (every
//! witness has a known size: BIP-0340 signatures with `SIGHASH_DEFAULT` are always 64 bytes).
//! Each input is then signed on its own path:
//!
//! | path | witness | vbytes, 1 input to 1 P2TR output |
//! |---|---|---|
//! | key path (MuSig2) | `<sig>` | [`KEY_PATH_SPEND_VBYTES`] = 111 |
//! | claim leaf | `<sig> <preimage> <claim leaf> <control block>` | [`CLAIM_SCRIPT_PATH_VBYTES`] = 152 |
//! | refund leaf | `<sig> <refund leaf> <control block>` | [`REFUND_SCRIPT_PATH_VBYTES`] = 138 |
//!
//! (The refund figure holds for every timeout height from 128 on: the 2- and 3-byte height pushes
//! round to the same virtual size.)

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::{schnorr, Keypair, Message, Secp256k1};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{LeafVersion, TapLeafHash};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, FeeRate, OutPoint, ScriptBuf, Sequence, TapSighash, TapSighashType, Transaction, TxIn,
    TxOut, Witness,
};

use crate::htlc::Htlc;
use crate::musig::verify_key_spend_signature;
use crate::types::Preimage;

/// Virtual size of a key-path spend of one HTLC to one P2TR output.
pub const KEY_PATH_SPEND_VBYTES: u64 = 111;
/// Virtual size of a claim-leaf spend of one HTLC to one P2TR output.
pub const CLAIM_SCRIPT_PATH_VBYTES: u64 = 152;
/// Virtual size of a refund-leaf spend of one HTLC to one P2TR output (3-byte timeout height).
pub const REFUND_SCRIPT_PATH_VBYTES: u64 = 138;

/// How an HTLC input is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpendPath {
    /// Cooperative MuSig2 key path.
    KeyPath,
    /// The buyer's claim leaf (preimage + signature).
    ClaimScript,
    /// The seller's refund leaf (signature after the timeout).
    RefundScript,
}

/// One HTLC output to spend.
#[derive(Debug, Clone)]
pub struct HtlcInput {
    /// The HTLC.
    pub htlc: Htlc,
    /// Where it is on chain.
    pub outpoint: OutPoint,
    /// Its value.
    pub amount: Amount,
    /// How it is spent.
    pub path: SpendPath,
}

/// What went wrong building or signing a spend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpendError {
    /// No inputs were given.
    #[error("a spend needs at least one htlc input")]
    NoInputs,
    /// The same outpoint was given twice.
    #[error("outpoint {0} is spent twice")]
    DuplicateInput(OutPoint),
    /// An input has no value.
    #[error("htlc input {0} has zero value")]
    ZeroAmount(OutPoint),
    /// The fee is as large as the inputs or larger.
    #[error("fee of {fee} exceeds the {input} in the inputs")]
    FeeExceedsInput {
        /// The computed fee.
        fee: Amount,
        /// The inputs' total.
        input: Amount,
    },
    /// What is left after the fee is below the destination's dust limit.
    #[error("output of {amount} after fees is below the dust limit of {dust}")]
    Dust {
        /// The output value that would be left.
        amount: Amount,
        /// The destination's dust limit.
        dust: Amount,
    },
    /// Arithmetic overflow in amounts or fees.
    #[error("amount overflow")]
    Overflow,
    /// The input index is out of range.
    #[error("no input {0}")]
    NoSuchInput(usize),
    /// The input is not laid out for this path.
    #[error("input {index} is laid out for {planned:?}, not {asked:?}")]
    WrongPath {
        /// The input.
        index: usize,
        /// The path it was built for.
        planned: SpendPath,
        /// The path asked for.
        asked: SpendPath,
    },
    /// The preimage does not hash to the HTLC's payment hash.
    #[error("preimage does not match the htlc's payment hash")]
    WrongPreimage,
    /// The signing key is not the one in the leaf.
    #[error("signing key is not the key in the htlc's {0:?} leaf")]
    WrongKey(SpendPath),
    /// A key-path signature does not verify.
    #[error("key-path signature does not verify against the htlc output key")]
    BadSignature,
    /// An input has no witness yet.
    #[error("input {0} is not signed")]
    Unsigned(usize),
    /// The sighash could not be computed.
    #[error("sighash computation failed: {0}")]
    Sighash(String),
    /// The refund leaf is not yet spendable at the given locktime.
    #[error("control block missing for input {0}")]
    ControlBlock(usize),
}

/// An HTLC spend being signed: the unsigned transaction, its prevouts and each input's path.
#[derive(Debug, Clone)]
pub struct SpendTx {
    tx: Transaction,
    inputs: Vec<HtlcInput>,
    prevouts: Vec<TxOut>,
    fee: Amount,
}

fn witness_template(input: &HtlcInput) -> Witness {
    let control_len = 33 + 32; // one sibling leaf
    match input.path {
        SpendPath::KeyPath => Witness::from_slice(&[vec![0u8; 64]]),
        SpendPath::ClaimScript => Witness::from_slice(&[
            vec![0u8; 64],
            vec![0u8; 32],
            input.htlc.claim_script().to_bytes(),
            vec![0u8; control_len],
        ]),
        SpendPath::RefundScript => Witness::from_slice(&[
            vec![0u8; 64],
            input.htlc.refund_script().to_bytes(),
            vec![0u8; control_len],
        ]),
    }
}

impl SpendTx {
    /// Lays out a transaction spending `inputs` to `destination` at `fee_rate`.
    ///
    /// Every input gets sequence `0xfffffffd` (RBF, non-final). With a refund-leaf input the
    /// `nLockTime` is the highest timeout among them, else 0.
    ///
    /// # Errors
    /// No inputs, duplicate or zero-value inputs, a fee at or above the input value, a dust output.
    pub fn build(
        inputs: Vec<HtlcInput>,
        destination: ScriptBuf,
        fee_rate: FeeRate,
    ) -> Result<Self, SpendError> {
        if inputs.is_empty() {
            return Err(SpendError::NoInputs);
        }
        let mut total = Amount::ZERO;
        for (i, input) in inputs.iter().enumerate() {
            if input.amount == Amount::ZERO {
                return Err(SpendError::ZeroAmount(input.outpoint));
            }
            if inputs[..i].iter().any(|o| o.outpoint == input.outpoint) {
                return Err(SpendError::DuplicateInput(input.outpoint));
            }
            total = total.checked_add(input.amount).ok_or(SpendError::Overflow)?;
        }
        let lock = inputs
            .iter()
            .filter(|i| i.path == SpendPath::RefundScript)
            .map(|i| i.htlc.params().timeout_height)
            .max()
            .unwrap_or(0);
        let lock_time = LockTime::from_height(lock).map_err(|_| SpendError::Overflow)?;
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time,
            input: inputs
                .iter()
                .map(|i| TxIn {
                    previous_output: i.outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: witness_template(i),
                })
                .collect(),
            output: vec![TxOut { value: Amount::ZERO, script_pubkey: destination }],
        };
        let fee = fee_rate.fee_vb(tx.vsize() as u64).ok_or(SpendError::Overflow)?;
        if fee >= total {
            return Err(SpendError::FeeExceedsInput { fee, input: total });
        }
        let value = total - fee;
        let dust = tx.output[0].script_pubkey.minimal_non_dust();
        if value < dust {
            return Err(SpendError::Dust { amount: value, dust });
        }
        tx.output[0].value = value;
        for txin in &mut tx.input {
            txin.witness = Witness::new();
        }
        let prevouts = inputs
            .iter()
            .map(|i| TxOut { value: i.amount, script_pubkey: i.htlc.script_pubkey().to_owned() })
            .collect();
        Ok(Self { tx, inputs, prevouts, fee })
    }

    /// Rebuilds a spend around a transaction received from the peer (the responder's side of a
    /// cooperative spend), to compute sighashes. The inputs must list the transaction's inputs in
    /// order.
    ///
    /// # Errors
    /// [`SpendError::NoSuchInput`] when the inputs do not match the transaction's.
    pub fn from_unsigned(tx: Transaction, inputs: Vec<HtlcInput>) -> Result<Self, SpendError> {
        if tx.input.len() != inputs.len() || tx.input.is_empty() {
            return Err(SpendError::NoSuchInput(inputs.len()));
        }
        for (i, (txin, input)) in tx.input.iter().zip(&inputs).enumerate() {
            if txin.previous_output != input.outpoint {
                return Err(SpendError::NoSuchInput(i));
            }
        }
        let total_in = inputs
            .iter()
            .try_fold(Amount::ZERO, |a, i| a.checked_add(i.amount))
            .ok_or(SpendError::Overflow)?;
        let total_out = tx
            .output
            .iter()
            .try_fold(Amount::ZERO, |a, o| a.checked_add(o.value))
            .ok_or(SpendError::Overflow)?;
        let fee = total_in
            .checked_sub(total_out)
            .ok_or(SpendError::FeeExceedsInput { fee: total_out, input: total_in })?;
        let prevouts = inputs
            .iter()
            .map(|i| TxOut { value: i.amount, script_pubkey: i.htlc.script_pubkey().to_owned() })
            .collect();
        Ok(Self { tx, inputs, prevouts, fee })
    }

    /// The transaction as it stands (witnesses filled in so far).
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// The fee it pays.
    pub fn fee(&self) -> Amount {
        self.fee
    }

    /// The outputs it spends, in input order.
    pub fn prevouts(&self) -> &[TxOut] {
        &self.prevouts
    }

    fn input(&self, index: usize, asked: SpendPath) -> Result<&HtlcInput, SpendError> {
        let input = self.inputs.get(index).ok_or(SpendError::NoSuchInput(index))?;
        if input.path != asked {
            return Err(SpendError::WrongPath { index, planned: input.path, asked });
        }
        Ok(input)
    }

    /// The BIP-0341 sighash (`SIGHASH_DEFAULT`) of input `index` on its planned path.
    ///
    /// # Errors
    /// [`SpendError::NoSuchInput`] or [`SpendError::Sighash`].
    pub fn sighash(&self, index: usize) -> Result<TapSighash, SpendError> {
        let input = self.inputs.get(index).ok_or(SpendError::NoSuchInput(index))?;
        let prevouts = Prevouts::All(&self.prevouts);
        let mut cache = SighashCache::new(&self.tx);
        let leaf = match input.path {
            SpendPath::KeyPath => {
                return cache
                    .taproot_key_spend_signature_hash(index, &prevouts, TapSighashType::Default)
                    .map_err(|e| SpendError::Sighash(e.to_string()));
            }
            SpendPath::ClaimScript => input.htlc.claim_script(),
            SpendPath::RefundScript => input.htlc.refund_script(),
        };
        let leaf_hash = TapLeafHash::from_script(leaf, LeafVersion::TapScript);
        cache
            .taproot_script_spend_signature_hash(
                index,
                &prevouts,
                leaf_hash,
                TapSighashType::Default,
            )
            .map_err(|e| SpendError::Sighash(e.to_string()))
    }

    /// Signs input `index` through the claim leaf with the buyer's claim key and the preimage.
    ///
    /// # Errors
    /// Wrong path, a preimage that does not match, a key that is not the leaf's.
    pub fn sign_claim_script(
        &mut self,
        index: usize,
        claim_key: &Keypair,
        preimage: &Preimage,
    ) -> Result<(), SpendError> {
        let input = self.input(index, SpendPath::ClaimScript)?;
        let params = input.htlc.params();
        if preimage.payment_hash() != params.payment_hash {
            return Err(SpendError::WrongPreimage);
        }
        if claim_key.x_only_public_key().0 != params.claim_key {
            return Err(SpendError::WrongKey(SpendPath::ClaimScript));
        }
        let control = input.htlc.claim_control_block().ok_or(SpendError::ControlBlock(index))?;
        let script = input.htlc.claim_script().to_bytes();
        let sig = self.schnorr_sign(index, claim_key)?;
        let witness = Witness::from_slice(&[
            sig.as_ref().to_vec(),
            preimage.0.to_vec(),
            script,
            control.serialize(),
        ]);
        self.set_witness(index, witness)
    }

    /// Signs input `index` through the refund leaf with the seller's refund key.
    ///
    /// # Errors
    /// Wrong path, a key that is not the leaf's.
    pub fn sign_refund_script(
        &mut self,
        index: usize,
        refund_key: &Keypair,
    ) -> Result<(), SpendError> {
        let input = self.input(index, SpendPath::RefundScript)?;
        if refund_key.x_only_public_key().0 != input.htlc.params().refund_key {
            return Err(SpendError::WrongKey(SpendPath::RefundScript));
        }
        let control = input.htlc.refund_control_block().ok_or(SpendError::ControlBlock(index))?;
        let script = input.htlc.refund_script().to_bytes();
        let sig = self.schnorr_sign(index, refund_key)?;
        let witness = Witness::from_slice(&[sig.as_ref().to_vec(), script, control.serialize()]);
        self.set_witness(index, witness)
    }

    /// Puts an aggregated MuSig2 key-path signature on input `index` after verifying it.
    ///
    /// # Errors
    /// Wrong path, or [`SpendError::BadSignature`].
    pub fn set_key_path_signature(
        &mut self,
        index: usize,
        sig: &schnorr::Signature,
    ) -> Result<(), SpendError> {
        let output_key = self.input(index, SpendPath::KeyPath)?.htlc.output_key();
        let sighash = self.sighash(index)?;
        verify_key_spend_signature(sig, &sighash, &output_key)
            .map_err(|_| SpendError::BadSignature)?;
        self.set_witness(index, Witness::from_slice(&[sig.as_ref().to_vec()]))
    }

    fn schnorr_sign(&self, index: usize, key: &Keypair) -> Result<schnorr::Signature, SpendError> {
        let sighash = self.sighash(index)?;
        let msg = Message::from_digest(sighash.to_byte_array());
        Ok(Secp256k1::signing_only().sign_schnorr_no_aux_rand(&msg, key))
    }

    fn set_witness(&mut self, index: usize, witness: Witness) -> Result<(), SpendError> {
        let txin = self.tx.input.get_mut(index).ok_or(SpendError::NoSuchInput(index))?;
        txin.witness = witness;
        Ok(())
    }

    /// The finished transaction once every input is signed.
    ///
    /// # Errors
    /// [`SpendError::Unsigned`] naming the first input without a witness.
    pub fn finalize(self) -> Result<Transaction, SpendError> {
        if let Some(i) = self.tx.input.iter().position(|i| i.witness.is_empty()) {
            return Err(SpendError::Unsigned(i));
        }
        Ok(self.tx)
    }
}

/// Builds and signs a claim of one HTLC through the claim leaf.
///
/// # Errors
/// As [`SpendTx::build`] and [`SpendTx::sign_claim_script`].
pub fn claim_script_path(
    htlc: &Htlc,
    outpoint: OutPoint,
    amount: Amount,
    preimage: &Preimage,
    claim_key: &Keypair,
    destination: ScriptBuf,
    fee_rate: FeeRate,
) -> Result<Transaction, SpendError> {
    let input = HtlcInput { htlc: htlc.clone(), outpoint, amount, path: SpendPath::ClaimScript };
    let mut spend = SpendTx::build(vec![input], destination, fee_rate)?;
    spend.sign_claim_script(0, claim_key, preimage)?;
    spend.finalize()
}

/// Builds and signs a refund of one HTLC through the refund leaf (`nLockTime` = timeout).
///
/// # Errors
/// As [`SpendTx::build`] and [`SpendTx::sign_refund_script`].
pub fn refund_script_path(
    htlc: &Htlc,
    outpoint: OutPoint,
    amount: Amount,
    refund_key: &Keypair,
    destination: ScriptBuf,
    fee_rate: FeeRate,
) -> Result<Transaction, SpendError> {
    let input = HtlcInput { htlc: htlc.clone(), outpoint, amount, path: SpendPath::RefundScript };
    let mut spend = SpendTx::build(vec![input], destination, fee_rate)?;
    spend.sign_refund_script(0, refund_key)?;
    spend.finalize()
}

use bitcoin::hashes::Hash as _;
