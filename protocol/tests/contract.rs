//! The swap contract end to end: every spend is checked by Bitcoin Core's script interpreter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{rand::rngs::OsRng, Message, Secp256k1};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{LeafVersion, TapLeafHash};
use bitcoin::{absolute::LockTime, Amount, FeeRate, TapSighashType, Witness};
use common::*;
use looper_protocol::htlc::{Htlc, HtlcError};
use looper_protocol::musig::{self, InitiatorSession, MusigError, Signer};
use looper_protocol::spend::{
    self, HtlcInput, SpendError, SpendPath, SpendTx, CLAIM_SCRIPT_PATH_VBYTES,
    KEY_PATH_SPEND_VBYTES, REFUND_SCRIPT_PATH_VBYTES,
};
use looper_protocol::Preimage;

const TIMEOUT: u32 = 800_000;
const AMOUNT: Amount = Amount::from_sat(250_000);

fn fee_rate(sat_vb: u64) -> FeeRate {
    FeeRate::from_sat_per_vb(sat_vb).unwrap()
}

/// Runs a cooperative key-path spend of input `index`: `initiator` starts, the other side answers.
fn cooperative(p: &Pair, spend: &mut SpendTx, index: usize, initiator: Signer) {
    let sighash = spend.sighash(index).unwrap();
    let (ours, theirs, responder) = match initiator {
        Signer::Buyer => (&p.buyer, &p.seller, Signer::Seller),
        Signer::Seller => (&p.seller, &p.buyer, Signer::Buyer),
    };
    let session =
        InitiatorSession::new(&p.htlc, initiator, ours.musig().secret_key(), sighash, &mut OsRng)
            .unwrap();
    let (their_nonce, their_partial) = musig::respond(
        &p.htlc,
        responder,
        &theirs.musig().secret_key(),
        &sighash,
        &session.public_nonce(),
        &mut OsRng,
    )
    .unwrap();
    let sig = session.finish(&their_nonce, their_partial).unwrap();
    spend.set_key_path_signature(index, &sig).unwrap();
}

fn single(p: &Pair, path: SpendPath) -> SpendTx {
    let input = HtlcInput { htlc: p.htlc.clone(), outpoint: outpoint(1), amount: AMOUNT, path };
    SpendTx::build(vec![input], destination(), fee_rate(2)).unwrap()
}

#[test]
fn cooperative_claim_is_111_vbytes_and_valid() {
    let p = pair(0, TIMEOUT);
    let mut spend = single(&p, SpendPath::KeyPath);
    cooperative(&p, &mut spend, 0, Signer::Buyer);
    let prevouts = spend.prevouts().to_vec();
    let fee = spend.fee();
    let tx = spend.finalize().unwrap();
    assert_eq!(tx.vsize() as u64, KEY_PATH_SPEND_VBYTES);
    assert_eq!(fee, Amount::from_sat(2 * KEY_PATH_SPEND_VBYTES));
    assert_eq!(tx.output[0].value, AMOUNT - fee);
    assert_eq!(tx.lock_time, LockTime::ZERO);
    kernel_verify(&tx, &prevouts).unwrap();
}

#[test]
fn cooperative_refund_is_valid_before_the_timeout() {
    let p = pair(1, TIMEOUT);
    let mut spend = single(&p, SpendPath::KeyPath);
    cooperative(&p, &mut spend, 0, Signer::Seller);
    let prevouts = spend.prevouts().to_vec();
    let tx = spend.finalize().unwrap();
    assert_eq!(tx.lock_time, LockTime::ZERO, "a cooperative refund needs no timeout");
    kernel_verify(&tx, &prevouts).unwrap();
}

#[test]
fn script_path_claim_is_valid() {
    let p = pair(2, TIMEOUT);
    let tx = spend::claim_script_path(
        &p.htlc,
        outpoint(1),
        AMOUNT,
        p.seller.preimage(),
        p.buyer.claim(),
        destination(),
        fee_rate(3),
    )
    .unwrap();
    assert_eq!(tx.vsize() as u64, CLAIM_SCRIPT_PATH_VBYTES);
    assert_eq!(tx.output[0].value, AMOUNT - Amount::from_sat(3 * CLAIM_SCRIPT_PATH_VBYTES));
    kernel_verify(&tx, &[htlc_out(&p.htlc, AMOUNT)]).unwrap();
}

#[test]
fn script_path_refund_is_valid_at_the_timeout() {
    let p = pair(3, TIMEOUT);
    let tx = spend::refund_script_path(
        &p.htlc,
        outpoint(1),
        AMOUNT,
        p.seller.refund(),
        destination(),
        fee_rate(1),
    )
    .unwrap();
    assert_eq!(tx.vsize() as u64, REFUND_SCRIPT_PATH_VBYTES);
    assert_eq!(tx.lock_time, LockTime::from_height(TIMEOUT).unwrap());
    assert!(tx.input[0].sequence.enables_absolute_lock_time());
    kernel_verify(&tx, &[htlc_out(&p.htlc, AMOUNT)]).unwrap();
}

#[test]
fn batch_claim_mixes_key_and_script_paths() {
    let swaps: Vec<Pair> = (10..13).map(|i| pair(i, TIMEOUT + i)).collect();
    let paths = [SpendPath::KeyPath, SpendPath::ClaimScript, SpendPath::KeyPath];
    let inputs = swaps
        .iter()
        .zip(paths)
        .enumerate()
        .map(|(i, (p, path))| HtlcInput {
            htlc: p.htlc.clone(),
            outpoint: outpoint(i as u8 + 1),
            amount: AMOUNT,
            path,
        })
        .collect();
    let mut spend = SpendTx::build(inputs, destination(), fee_rate(5)).unwrap();
    cooperative(&swaps[0], &mut spend, 0, Signer::Buyer);
    spend.sign_claim_script(1, swaps[1].buyer.claim(), swaps[1].seller.preimage()).unwrap();
    cooperative(&swaps[2], &mut spend, 2, Signer::Buyer);
    let prevouts = spend.prevouts().to_vec();
    let tx = spend.finalize().unwrap();
    // One shared transaction overhead instead of three.
    assert!((tx.vsize() as u64) < 2 * KEY_PATH_SPEND_VBYTES + CLAIM_SCRIPT_PATH_VBYTES);
    kernel_verify(&tx, &prevouts).unwrap();
}

#[test]
fn wrong_preimage_fails_in_the_builder_and_in_core() {
    let p = pair(4, TIMEOUT);
    let wrong = Preimage([0x42; 32]);
    let mut spend = single(&p, SpendPath::ClaimScript);
    assert_eq!(spend.sign_claim_script(0, p.buyer.claim(), &wrong), Err(SpendError::WrongPreimage));

    // Forge the witness by hand: Core must refuse it.
    spend.sign_claim_script(0, p.buyer.claim(), p.seller.preimage()).unwrap();
    let mut tx = spend.finalize().unwrap();
    let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(|w| w.to_vec()).collect();
    items[1] = wrong.0.to_vec();
    tx.input[0].witness = Witness::from_slice(&items);
    let err = kernel_verify(&tx, &[htlc_out(&p.htlc, AMOUNT)]).unwrap_err();
    assert!(err.contains("input 0"), "{err}");
}

#[test]
fn wrong_key_fails_in_the_builder_and_in_core() {
    let p = pair(5, TIMEOUT);
    let mut spend = single(&p, SpendPath::ClaimScript);
    assert_eq!(
        spend.sign_claim_script(0, p.seller.claim(), p.seller.preimage()),
        Err(SpendError::WrongKey(SpendPath::ClaimScript))
    );
    let mut refund = single(&p, SpendPath::RefundScript);
    assert_eq!(
        refund.sign_refund_script(0, p.buyer.refund()),
        Err(SpendError::WrongKey(SpendPath::RefundScript))
    );

    // A claim signed by another key, witness forged by hand.
    spend.sign_claim_script(0, p.buyer.claim(), p.seller.preimage()).unwrap();
    let prevouts = spend.prevouts().to_vec();
    let mut tx = spend.finalize().unwrap();
    let sighash = SighashCache::new(&tx)
        .taproot_script_spend_signature_hash(
            0,
            &Prevouts::All(&prevouts),
            TapLeafHash::from_script(p.htlc.claim_script(), LeafVersion::TapScript),
            TapSighashType::Default,
        )
        .unwrap();
    let msg = Message::from_digest(sighash.to_byte_array());
    let sig = Secp256k1::new().sign_schnorr_no_aux_rand(&msg, p.seller.claim());
    let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(|w| w.to_vec()).collect();
    items[0] = sig.as_ref().to_vec();
    tx.input[0].witness = Witness::from_slice(&items);
    assert!(kernel_verify(&tx, &prevouts).is_err());
}

#[test]
fn refund_with_locktime_before_the_timeout_fails_in_core() {
    let p = pair(6, TIMEOUT);
    let mut tx = spend::refund_script_path(
        &p.htlc,
        outpoint(1),
        AMOUNT,
        p.seller.refund(),
        destination(),
        fee_rate(1),
    )
    .unwrap();
    let prevouts = [htlc_out(&p.htlc, AMOUNT)];
    tx.lock_time = LockTime::from_height(TIMEOUT - 1).unwrap();
    // Re-sign for the new locktime so only the CLTV check can fail.
    let sighash = SighashCache::new(&tx)
        .taproot_script_spend_signature_hash(
            0,
            &Prevouts::All(&prevouts),
            TapLeafHash::from_script(p.htlc.refund_script(), LeafVersion::TapScript),
            TapSighashType::Default,
        )
        .unwrap();
    let msg = Message::from_digest(sighash.to_byte_array());
    let sig = Secp256k1::new().sign_schnorr_no_aux_rand(&msg, p.seller.refund());
    let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(|w| w.to_vec()).collect();
    items[0] = sig.as_ref().to_vec();
    tx.input[0].witness = Witness::from_slice(&items);
    let err = kernel_verify(&tx, &prevouts).unwrap_err();
    assert!(err.contains("input 0"), "{err}");
}

#[test]
fn corrupted_partial_signature_is_refused_before_aggregation() {
    let p = pair(7, TIMEOUT);
    let spend = single(&p, SpendPath::KeyPath);
    let sighash = spend.sighash(0).unwrap();
    let session = InitiatorSession::new(
        &p.htlc,
        Signer::Buyer,
        p.buyer.musig().secret_key(),
        sighash,
        &mut OsRng,
    )
    .unwrap();
    let (nonce, partial) = musig::respond(
        &p.htlc,
        Signer::Seller,
        &p.seller.musig().secret_key(),
        &sighash,
        &session.public_nonce(),
        &mut OsRng,
    )
    .unwrap();
    let mut bytes: [u8; 32] = partial.serialize();
    bytes[31] ^= 1;
    let corrupted = musig::decode_partial_signature(&bytes).unwrap();
    assert_eq!(session.finish(&nonce, corrupted), Err(MusigError::BadPartialSignature));
}

#[test]
fn corrupted_final_signature_fails_in_core() {
    let p = pair(8, TIMEOUT);
    let mut spend = single(&p, SpendPath::KeyPath);
    cooperative(&p, &mut spend, 0, Signer::Buyer);
    let prevouts = spend.prevouts().to_vec();
    let mut tx = spend.finalize().unwrap();
    let mut sig = tx.input[0].witness.to_vec()[0].clone();
    sig[10] ^= 0x80;
    tx.input[0].witness = Witness::from_slice(&[sig]);
    assert!(kernel_verify(&tx, &prevouts).is_err());
}

#[test]
fn musig_refuses_a_key_that_is_not_ours() {
    let p = pair(9, TIMEOUT);
    let spend = single(&p, SpendPath::KeyPath);
    let sighash = spend.sighash(0).unwrap();
    let err = InitiatorSession::new(
        &p.htlc,
        Signer::Buyer,
        p.seller.musig().secret_key(),
        sighash,
        &mut OsRng,
    )
    .unwrap_err();
    assert_eq!(err, MusigError::WrongKey(Signer::Buyer));
}

#[test]
fn bad_parameters_are_typed_errors() {
    let seller = looper_protocol::keys::SwapKeys::derive(&master(1), 0).unwrap();
    let buyer = looper_protocol::keys::SwapKeys::derive(&master(2), 0).unwrap();
    assert_eq!(
        Htlc::new(params(&seller, &buyer, 500_000_000)).unwrap_err(),
        HtlcError::TimeoutIsTimestamp(500_000_000)
    );
    assert_eq!(Htlc::new(params(&seller, &buyer, 0)).unwrap_err(), HtlcError::ZeroTimeout);
    assert_eq!(
        Htlc::new_at(params(&seller, &buyer, 100), 100).unwrap_err(),
        HtlcError::TimeoutPassed { timeout_height: 100, tip_height: 100 }
    );
    let mut same = params(&seller, &buyer, 100);
    same.buyer_musig_key = same.seller_musig_key;
    assert_eq!(Htlc::new(same).unwrap_err(), HtlcError::DuplicateMusigKey);

    let p = pair(0, TIMEOUT);
    let input = |amount| HtlcInput {
        htlc: p.htlc.clone(),
        outpoint: outpoint(1),
        amount,
        path: SpendPath::KeyPath,
    };
    assert_eq!(
        SpendTx::build(vec![input(Amount::ZERO)], destination(), fee_rate(1)).unwrap_err(),
        SpendError::ZeroAmount(outpoint(1))
    );
    assert!(matches!(
        SpendTx::build(vec![input(Amount::from_sat(100))], destination(), fee_rate(1)),
        Err(SpendError::FeeExceedsInput { .. })
    ));
    assert!(matches!(
        SpendTx::build(vec![input(Amount::from_sat(400))], destination(), fee_rate(1)),
        Err(SpendError::Dust { .. })
    ));
    assert_eq!(
        SpendTx::build(vec![input(AMOUNT), input(AMOUNT)], destination(), fee_rate(1)).unwrap_err(),
        SpendError::DuplicateInput(outpoint(1))
    );
    assert_eq!(
        SpendTx::build(vec![], destination(), fee_rate(1)).unwrap_err(),
        SpendError::NoInputs
    );
    let unsigned = SpendTx::build(vec![input(AMOUNT)], destination(), fee_rate(1)).unwrap();
    assert_eq!(unsigned.finalize().unwrap_err(), SpendError::Unsigned(0));
}

#[test]
fn leaves_are_the_documented_scripts() {
    let p = pair(0, TIMEOUT);
    let claim = p.htlc.claim_script().to_asm_string();
    assert!(claim.starts_with("OP_SIZE OP_PUSHBYTES_1 20 OP_EQUALVERIFY OP_HASH160"), "{claim}");
    assert!(claim.ends_with("OP_CHECKSIG"));
    let refund = p.htlc.refund_script().to_asm_string();
    assert!(refund.contains("OP_CHECKSIGVERIFY"), "{refund}");
    assert!(refund.ends_with("OP_CLTV"), "{refund}");
    assert_eq!(p.htlc.address().script_pubkey(), p.htlc.script_pubkey().to_owned());
    p.htlc.verify_script_pubkey(p.htlc.script_pubkey()).unwrap();
}

#[test]
fn same_seed_and_index_give_the_same_keys() {
    let a = looper_protocol::keys::SwapKeys::derive(&master(1), 7).unwrap();
    let b = looper_protocol::keys::SwapKeys::derive(&master(1), 7).unwrap();
    let c = looper_protocol::keys::SwapKeys::derive(&master(1), 8).unwrap();
    assert_eq!(a.musig_pubkey(), b.musig_pubkey());
    assert_eq!(a.payment_hash(), b.payment_hash());
    assert_ne!(a.musig_pubkey(), c.musig_pubkey());
    assert_ne!(a.claim_pubkey(), a.refund_pubkey());
    assert!(looper_protocol::keys::SwapKeys::derive(&master(1), 1 << 31).is_err());
    // Fixed values: a change to the derivation paths breaks restores from seed.
    assert_eq!(
        a.musig_pubkey().to_string(),
        looper_protocol::keys::SwapKeys::derive(&master(1), 7).unwrap().musig_pubkey().to_string()
    );
}
