//! Property tests of the contract: build -> verify round trips, and any single-byte change to a
//! leaf, a key or the output is detected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitcoin::secp256k1::{Keypair, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Network, ScriptBuf};
use looper_protocol::htlc::{Htlc, HtlcMismatch, HtlcParams};
use looper_protocol::PaymentHash;
use proptest::prelude::*;

fn key(bytes: [u8; 32]) -> Option<Keypair> {
    SecretKey::from_slice(&bytes).ok().map(|sk| Keypair::from_secret_key(&Secp256k1::new(), &sk))
}

prop_compose! {
    fn params()(
        k in proptest::array::uniform4(any::<[u8; 32]>()),
        hash in any::<[u8; 32]>(),
        timeout in 1u32..500_000_000,
    ) -> Option<HtlcParams> {
        let (a, b, c, d) = (key(k[0])?, key(k[1])?, key(k[2])?, key(k[3])?);
        if a.public_key() == b.public_key() { return None; }
        Some(HtlcParams {
            payment_hash: PaymentHash(hash),
            claim_key: c.x_only_public_key().0,
            refund_key: d.x_only_public_key().0,
            locker_musig_key: a.public_key(),
            claimer_musig_key: b.public_key(),
            timeout_height: timeout,
            network: Network::Regtest,
        })
    }
}

fn flip(script: &ScriptBuf, at: usize) -> ScriptBuf {
    let mut bytes = script.to_bytes();
    let i = at % bytes.len();
    bytes[i] ^= 0x01;
    ScriptBuf::from_bytes(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn build_then_verify_round_trips(p in params()) {
        let Some(p) = p else { return Ok(()) };
        let htlc = Htlc::new(p.clone()).unwrap();
        let again = Htlc::new(p).unwrap();
        prop_assert!(htlc.verify_script_pubkey(again.script_pubkey()).is_ok());
        prop_assert!(htlc
            .verify_parts(again.claim_script(), again.refund_script(), &again.internal_key(), again.script_pubkey())
            .is_ok());
        prop_assert_eq!(htlc.address().script_pubkey(), htlc.script_pubkey().to_owned());
    }

    #[test]
    fn any_byte_change_is_detected(p in params(), at in any::<usize>()) {
        let Some(p) = p else { return Ok(()) };
        let htlc = Htlc::new(p).unwrap();
        let (claim, refund, ik, spk) = (
            htlc.claim_script().to_owned(),
            htlc.refund_script().to_owned(),
            htlc.internal_key(),
            htlc.script_pubkey().to_owned(),
        );
        prop_assert_eq!(htlc.verify_parts(&flip(&claim, at), &refund, &ik, &spk), Err(HtlcMismatch::ClaimLeaf));
        prop_assert_eq!(htlc.verify_parts(&claim, &flip(&refund, at), &ik, &spk), Err(HtlcMismatch::RefundLeaf));
        let is_spk_mismatch = matches!(htlc.verify_script_pubkey(&flip(&spk, at)), Err(HtlcMismatch::ScriptPubkey { .. }));
        prop_assert!(is_spk_mismatch);
    }

    #[test]
    fn any_parameter_change_moves_the_output(p in params(), which in 0usize..6, bit in 0usize..256) {
        let Some(p) = p else { return Ok(()) };
        let htlc = Htlc::new(p.clone()).unwrap();
        let mut q = p.clone();
        let flip32 = |b: [u8; 32]| { let mut b = b; b[bit / 8] ^= 1 << (bit % 8); b };
        match which {
            0 => q.payment_hash = PaymentHash(flip32(p.payment_hash.0)),
            1 => q.timeout_height = (p.timeout_height ^ (1 << (bit % 28))).clamp(1, 499_999_999),
            2 => match bitcoin::secp256k1::XOnlyPublicKey::from_slice(&flip32(p.claim_key.serialize())) {
                Ok(k) => q.claim_key = k, Err(_) => return Ok(()) },
            3 => match bitcoin::secp256k1::XOnlyPublicKey::from_slice(&flip32(p.refund_key.serialize())) {
                Ok(k) => q.refund_key = k, Err(_) => return Ok(()) },
            4 => { let mut s = p.locker_musig_key.serialize(); s[1 + bit / 8] ^= 1 << (bit % 8);
                match PublicKey::from_slice(&s) { Ok(k) => q.locker_musig_key = k, Err(_) => return Ok(()) } }
            _ => { let mut s = p.claimer_musig_key.serialize(); s[1 + bit / 8] ^= 1 << (bit % 8);
                match PublicKey::from_slice(&s) { Ok(k) => q.claimer_musig_key = k, Err(_) => return Ok(()) } }
        }
        if q == p { return Ok(()) }
        let Ok(other) = Htlc::new(q) else { return Ok(()) };
        prop_assert!(htlc.verify_script_pubkey(other.script_pubkey()).is_err());
    }

    #[test]
    fn musig_key_order_matters(p in params()) {
        let Some(p) = p else { return Ok(()) };
        let mut swapped = p.clone();
        std::mem::swap(&mut swapped.locker_musig_key, &mut swapped.claimer_musig_key);
        let a = Htlc::new(p).unwrap();
        let b = Htlc::new(swapped).unwrap();
        prop_assert_ne!(a.internal_key(), b.internal_key());
    }
}
