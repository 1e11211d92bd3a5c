//! Two-party MuSig2 (BIP-0327) signing of an HTLC's key path (spec `03-transactions.md`,
//! "Cooperative spends").
//!
//! One round trip: the *initiator* (the buyer for a claim, the seller for a refund) sends its
//! public nonce with the transaction; the *responder* is the stateless last signer of BIP-0327:
//! it makes its nonce only once it has the initiator's, signs at once and forgets its secret
//! nonce. The initiator then verifies the responder's partial signature, signs, aggregates and
//! verifies the final signature against the HTLC's output key.
//!
//! Secret nonces are never `Clone`, never serialized, and consumed by value when signing, so a
//! nonce cannot be used twice:
//!
//! ```compile_fail
//! # use looper_protocol::musig::SecretNonce;
//! fn twice(n: SecretNonce) { let a = n; let b = n; }
//! ```

use bitcoin::secp256k1::{
    rand::{CryptoRng, RngCore},
    schnorr, Keypair, Message, PublicKey, Secp256k1, SecretKey,
};
use bitcoin::TapSighash;
use musig2::{AggNonce, KeyAggContext, PartialSignature, PubNonce, SecNonce};

use crate::htlc::Htlc;

/// The two signers of an HTLC's key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The locker: made the preimage, locked the BTC, refunds (first key in the aggregation; the
    /// seller of a loop out).
    Locker,
    /// The claimer: pays the invoice, claims (second key in the aggregation; the buyer of a loop
    /// out).
    Claimer,
}

/// What went wrong in a MuSig2 signing session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MusigError {
    /// Our secret key does not belong to the HTLC's MuSig2 key for our role.
    #[error("signing key is not the htlc's {0:?} musig key")]
    WrongKey(Signer),
    /// A public nonce could not be decoded.
    #[error("invalid public nonce")]
    InvalidNonce,
    /// A partial signature could not be decoded.
    #[error("invalid partial signature encoding")]
    InvalidPartialSignature,
    /// The peer's partial signature does not verify.
    #[error("peer's partial signature does not verify")]
    BadPartialSignature,
    /// Signing failed.
    #[error("musig2 signing failed: {0}")]
    Signing(String),
    /// The aggregated signature does not verify against the HTLC's output key.
    #[error("aggregated signature does not verify against the htlc output key")]
    BadAggregateSignature,
}

/// A MuSig2 secret nonce: held in memory for one signing session, consumed by signing.
///
/// Deliberately neither `Clone` nor `Serialize`: it must never be written anywhere or used twice.
pub struct SecretNonce(SecNonce);

impl core::fmt::Debug for SecretNonce {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretNonce(..)")
    }
}

impl SecretNonce {
    /// Makes a fresh nonce for signing `sighash` with `seckey` under `key_agg`, seeded from `rng`
    /// (the node passes the OS RNG) and bound to the key, the aggregate key and the message as
    /// BIP-0327 `NonceGen` recommends.
    pub fn generate<R: RngCore + CryptoRng>(
        rng: &mut R,
        seckey: &SecretKey,
        key_agg: &KeyAggContext,
        sighash: &TapSighash,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let agg: PublicKey = key_agg.aggregated_pubkey();
        let msg: &[u8; 32] = sighash.as_ref();
        Self(SecNonce::generate(seed, *seckey, agg, msg, b""))
    }

    /// The public nonce to send to the peer.
    pub fn public_nonce(&self) -> PubNonce {
        self.0.public_nonce()
    }
}

fn our_key_check(htlc: &Htlc, who: Signer, seckey: &SecretKey) -> Result<PublicKey, MusigError> {
    let secp = Secp256k1::signing_only();
    let pk = seckey.public_key(&secp);
    let expected = match who {
        Signer::Locker => htlc.params().locker_musig_key,
        Signer::Claimer => htlc.params().claimer_musig_key,
    };
    if pk == expected {
        Ok(pk)
    } else {
        Err(MusigError::WrongKey(who))
    }
}

fn their_key(htlc: &Htlc, us: Signer) -> PublicKey {
    match us {
        Signer::Locker => htlc.params().claimer_musig_key,
        Signer::Claimer => htlc.params().locker_musig_key,
    }
}

/// Decodes a 66-byte public nonce.
///
/// # Errors
/// [`MusigError::InvalidNonce`] when the bytes are not two valid points.
pub fn decode_pub_nonce(bytes: &[u8; 66]) -> Result<PubNonce, MusigError> {
    PubNonce::from_bytes(bytes).map_err(|_| MusigError::InvalidNonce)
}

/// Decodes a 32-byte partial signature.
///
/// # Errors
/// [`MusigError::InvalidPartialSignature`] when the bytes are not a scalar below the curve order.
pub fn decode_partial_signature(bytes: &[u8; 32]) -> Result<PartialSignature, MusigError> {
    PartialSignature::from_slice(bytes).map_err(|_| MusigError::InvalidPartialSignature)
}

/// The initiator's side of a cooperative key-path spend of one HTLC input.
#[derive(Debug)]
pub struct InitiatorSession {
    who: Signer,
    seckey: SecretKey,
    our_pubkey: PublicKey,
    their_pubkey: PublicKey,
    key_agg: KeyAggContext,
    sighash: TapSighash,
    output_key: bitcoin::secp256k1::XOnlyPublicKey,
    secnonce: SecretNonce,
}

impl InitiatorSession {
    /// Starts a session: checks our key, makes a fresh secret nonce from `rng`.
    ///
    /// # Errors
    /// [`MusigError::WrongKey`] when `seckey` is not our MuSig2 key in `htlc`.
    pub fn new<R: RngCore + CryptoRng>(
        htlc: &Htlc,
        who: Signer,
        seckey: SecretKey,
        sighash: TapSighash,
        rng: &mut R,
    ) -> Result<Self, MusigError> {
        let secnonce = SecretNonce::generate(rng, &seckey, htlc.key_agg_context(), &sighash);
        let our_pubkey = our_key_check(htlc, who, &seckey)?;
        Ok(Self {
            who,
            seckey,
            our_pubkey,
            their_pubkey: their_key(htlc, who),
            key_agg: htlc.key_agg_context().clone(),
            sighash,
            output_key: htlc.output_key(),
            secnonce,
        })
    }

    /// Our public nonce, sent to the responder with the transaction.
    pub fn public_nonce(&self) -> PubNonce {
        self.secnonce.public_nonce()
    }

    /// The sighash being signed.
    pub fn sighash(&self) -> TapSighash {
        self.sighash
    }

    /// Checks the responder's partial signature without using the session, so that an answer to
    /// an older request (a resent message after a restart) can be ignored while the session
    /// waits for the answer to its own request.
    ///
    /// # Errors
    /// [`MusigError::BadPartialSignature`].
    pub fn verify_peer(
        &self,
        their_nonce: &PubNonce,
        their_partial: PartialSignature,
    ) -> Result<(), MusigError> {
        let agg_nonce = aggregate_nonces(self.who, &self.secnonce.public_nonce(), their_nonce);
        let msg: &[u8; 32] = self.sighash.as_ref();
        musig2::verify_partial(
            &self.key_agg,
            their_partial,
            &agg_nonce,
            self.their_pubkey,
            their_nonce,
            msg,
        )
        .map_err(|_| MusigError::BadPartialSignature)
    }

    /// Finishes with the responder's nonce and partial signature: verifies their partial
    /// signature, signs (consuming the secret nonce), aggregates, and verifies the final
    /// signature against the HTLC's output key.
    ///
    /// # Errors
    /// [`MusigError::BadPartialSignature`], [`MusigError::Signing`] or
    /// [`MusigError::BadAggregateSignature`].
    pub fn finish(
        self,
        their_nonce: &PubNonce,
        their_partial: PartialSignature,
    ) -> Result<schnorr::Signature, MusigError> {
        self.verify_peer(their_nonce, their_partial)?;
        let our_nonce = self.secnonce.public_nonce();
        let agg_nonce = aggregate_nonces(self.who, &our_nonce, their_nonce);
        let msg: &[u8; 32] = self.sighash.as_ref();
        let ours: PartialSignature =
            musig2::sign_partial(&self.key_agg, self.seckey, self.secnonce.0, &agg_nonce, msg)
                .map_err(|e| MusigError::Signing(e.to_string()))?;
        let partials = match self.who {
            Signer::Locker => [ours, their_partial],
            Signer::Claimer => [their_partial, ours],
        };
        let sig: schnorr::Signature =
            musig2::aggregate_partial_signatures(&self.key_agg, &agg_nonce, partials, msg)
                .map_err(|_| MusigError::BadAggregateSignature)?;
        verify_key_spend_signature(&sig, &self.sighash, &self.output_key)?;
        let _ = self.our_pubkey;
        Ok(sig)
    }
}

/// The responder's side: the stateless last signer. Makes a fresh nonce, signs at once and drops
/// the secret nonce before returning.
///
/// # Errors
/// [`MusigError::WrongKey`] or [`MusigError::Signing`].
pub fn respond<R: RngCore + CryptoRng>(
    htlc: &Htlc,
    who: Signer,
    seckey: &SecretKey,
    sighash: &TapSighash,
    their_nonce: &PubNonce,
    rng: &mut R,
) -> Result<(PubNonce, PartialSignature), MusigError> {
    let secnonce = SecretNonce::generate(rng, seckey, htlc.key_agg_context(), sighash);
    our_key_check(htlc, who, seckey)?;
    let our_nonce = secnonce.public_nonce();
    let agg_nonce = aggregate_nonces(who, &our_nonce, their_nonce);
    let msg: &[u8; 32] = sighash.as_ref();
    let partial: PartialSignature =
        musig2::sign_partial(htlc.key_agg_context(), *seckey, secnonce.0, &agg_nonce, msg)
            .map_err(|e| MusigError::Signing(e.to_string()))?;
    Ok((our_nonce, partial))
}

/// Nonces are aggregated in key order (seller, buyer); the sum is order-independent, but a fixed
/// order keeps the code obvious.
fn aggregate_nonces(us: Signer, ours: &PubNonce, theirs: &PubNonce) -> AggNonce {
    match us {
        Signer::Locker => AggNonce::sum([ours, theirs]),
        Signer::Claimer => AggNonce::sum([theirs, ours]),
    }
}

/// Verifies a BIP-0340 signature of a key-path sighash against an output key.
///
/// # Errors
/// [`MusigError::BadAggregateSignature`] when it does not verify.
pub fn verify_key_spend_signature(
    sig: &schnorr::Signature,
    sighash: &TapSighash,
    output_key: &bitcoin::secp256k1::XOnlyPublicKey,
) -> Result<(), MusigError> {
    let secp = Secp256k1::verification_only();
    let msg = Message::from_digest(sighash.to_byte_array());
    secp.verify_schnorr(sig, &msg, output_key).map_err(|_| MusigError::BadAggregateSignature)
}

/// A keypair from a secret key (helper for callers holding [`SecretKey`]s).
pub fn keypair(seckey: &SecretKey) -> Keypair {
    Keypair::from_secret_key(&Secp256k1::signing_only(), seckey)
}

use bitcoin::hashes::Hash as _;
