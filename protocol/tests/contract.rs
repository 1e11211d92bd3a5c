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
        Signer::Claimer => (&p.buyer, &p.seller, Signer::Locker),
        Signer::Locker => (&p.seller, &p.buyer, Signer::Claimer),
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
    cooperative(&p, &mut spend, 0, Signer::Claimer);
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
    cooperative(&p, &mut spend, 0, Signer::Locker);
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
    cooperative(&swaps[0], &mut spend, 0, Signer::Claimer);
    spend.sign_claim_script(1, swaps[1].buyer.claim(), swaps[1].seller.preimage()).unwrap();
    cooperative(&swaps[2], &mut spend, 2, Signer::Claimer);
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
        Signer::Claimer,
        p.buyer.musig().secret_key(),
        sighash,
        &mut OsRng,
    )
    .unwrap();
    let (nonce, partial) = musig::respond(
        &p.htlc,
        Signer::Locker,
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
    cooperative(&p, &mut spend, 0, Signer::Claimer);
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
        Signer::Claimer,
        p.seller.musig().secret_key(),
        sighash,
        &mut OsRng,
    )
    .unwrap_err();
    assert_eq!(err, MusigError::WrongKey(Signer::Claimer));
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
    same.claimer_musig_key = same.locker_musig_key;
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

mod batched_claims {
    use super::*;
    use looper_protocol::claims::{
        batch_claim_vbytes, plan_claims, ClaimMember, ClaimOut, MAX_CLAIM_BATCH,
    };
    use looper_protocol::fees::FeeEstimates;
    use looper_protocol::SwapId;

    fn member(p: &Pair, n: u8, amount: Amount, deadline: u32) -> ClaimMember {
        ClaimMember {
            swap_id: SwapId([n; 32]),
            input: HtlcInput {
                htlc: p.htlc.clone(),
                outpoint: outpoint(n),
                amount,
                path: SpendPath::ClaimScript,
            },
            destination: destination(),
            deadline_height: deadline,
            target: 9,
            cap: fee_rate(200),
            wanted: None,
            out: None,
        }
    }

    fn flat(sat_vb: u64) -> FeeEstimates {
        FeeEstimates::flat(fee_rate(sat_vb))
    }

    #[test]
    fn the_size_formula_matches_built_claims() {
        let swaps: Vec<Pair> = (20..26).map(|i| pair(i, TIMEOUT)).collect();
        for n in 1..=swaps.len() {
            let members =
                swaps[..n].iter().enumerate().map(|(i, p)| member(p, i as u8 + 1, AMOUNT, TIMEOUT));
            let plan =
                plan_claims(members.collect(), &flat(1), TIMEOUT - 100).pop().unwrap().unwrap();
            let mut spend = plan.spend;
            for (i, p) in swaps[..n].iter().enumerate() {
                spend.sign_claim_script(i, p.buyer.claim(), p.seller.preimage()).unwrap();
            }
            let tx = spend.finalize().unwrap();
            eprintln!("n={n} weight={} vsize={}", tx.weight().to_wu(), tx.vsize());
            assert_eq!(tx.vsize() as u64, batch_claim_vbytes(n as u64), "{n} claims");
        }
        assert_eq!(batch_claim_vbytes(1), CLAIM_SCRIPT_PATH_VBYTES);
    }

    #[test]
    fn claims_due_together_go_out_in_one_transaction_valid_in_core() {
        let swaps: Vec<Pair> = (30..33).map(|i| pair(i, TIMEOUT)).collect();
        let members: Vec<ClaimMember> = swaps
            .iter()
            .enumerate()
            .map(|(i, p)| member(p, i as u8 + 1, AMOUNT, TIMEOUT - 2))
            .collect();
        let mut plans = plan_claims(members, &flat(5), TIMEOUT - 100);
        assert_eq!(plans.len(), 1);
        let plan = plans.pop().unwrap().unwrap();
        assert_eq!(plan.members.len(), 3);
        assert_eq!(plan.inputs_sat, 3 * AMOUNT.to_sat());
        let mut spend = plan.spend;
        for (i, p) in swaps.iter().enumerate() {
            spend.sign_claim_script(i, p.buyer.claim(), p.seller.preimage()).unwrap();
        }
        let prevouts = spend.prevouts().to_vec();
        let tx = spend.finalize().unwrap();
        kernel_verify(&tx, &prevouts).unwrap();
        // 5 sat/vB for the batch's size, cheaper than three claims alone.
        let fee = plan.inputs_sat - tx.output[0].value.to_sat();
        assert_eq!(fee, 5 * batch_claim_vbytes(3));
        assert!(fee < 3 * 5 * CLAIM_SCRIPT_PATH_VBYTES);
    }

    #[test]
    fn the_earliest_deadline_prices_the_batch() {
        let swaps: Vec<Pair> = (40..42).map(|i| pair(i, TIMEOUT)).collect();
        // A rising curve: 50 sat/vB for the next block, 5 for 9 blocks.
        let estimates = FeeEstimates::from_fn(|t| if t <= 2 { fee_rate(50) } else { fee_rate(5) });
        let tip = TIMEOUT - 100;
        let far = member(&swaps[0], 1, AMOUNT, TIMEOUT);
        let alone = plan_claims(vec![far.clone()], &estimates, tip).pop().unwrap().unwrap();
        let near = member(&swaps[1], 2, AMOUNT, tip + 3);
        let both = plan_claims(vec![far, near], &estimates, tip).pop().unwrap().unwrap();
        let rate = |p: &looper_protocol::claims::ClaimPlan| {
            p.spend.fee().to_sat() / p.spend.tx().input.len() as u64
        };
        assert!(rate(&both) > 2 * rate(&alone), "the near deadline sets the rate");
        // The earliest deadline comes first, and the rate a member's bump asked is kept.
        assert_eq!(both.members[0], SwapId([2; 32]));
    }

    #[test]
    fn a_replacement_pays_more_than_the_claims_it_replaces_and_keeps_them_together() {
        let swaps: Vec<Pair> = (50..53).map(|i| pair(i, TIMEOUT)).collect();
        let tip = TIMEOUT - 100;
        // Two swaps claimed together at 5 sat/vB.
        let first: Vec<ClaimMember> =
            (0..2).map(|i| member(&swaps[i], i as u8 + 1, AMOUNT, TIMEOUT)).collect();
        let plan = plan_claims(first.clone(), &flat(5), tip).pop().unwrap().unwrap();
        let mut spend = plan.spend;
        for (i, p) in swaps[..2].iter().enumerate() {
            spend.sign_claim_script(i, p.buyer.claim(), p.seller.preimage()).unwrap();
        }
        let out = ClaimOut { tx: spend.finalize().unwrap(), inputs_sat: plan.inputs_sat };
        let old_fee = out.fee_sat();
        // The first asks for a bump at 8 sat/vB; a third swap joins; the second comes along.
        let mut bumped = first;
        for m in &mut bumped {
            m.out = Some(out.clone());
        }
        bumped[0].wanted = Some(fee_rate(8));
        bumped.push(member(&swaps[2], 3, AMOUNT, TIMEOUT));
        let mut plans = plan_claims(bumped, &flat(2), tip);
        assert_eq!(plans.len(), 1);
        let plan = plans.pop().unwrap().unwrap();
        assert_eq!(plan.members.len(), 3);
        assert_eq!(plan.replaces, vec![out.tx.compute_txid()]);
        let fee = plan.spend.fee().to_sat();
        let vsize = batch_claim_vbytes(3);
        assert!(fee >= 8 * vsize, "the bump's rate");
        assert!(fee >= old_fee + vsize, "BIP-125: more than the replaced fee plus relay");
    }

    #[test]
    fn a_small_htlc_is_not_made_to_pay_for_a_large_ones_deadline() {
        let swaps: Vec<Pair> = (60..62).map(|i| pair(i, TIMEOUT)).collect();
        let tip = TIMEOUT - 5;
        // Urgent: the large claim may pay up to most of its value.
        let mut large = member(&swaps[0], 1, Amount::from_sat(5_000_000), TIMEOUT - 2);
        large.wanted = Some(fee_rate(3_000));
        let small = member(&swaps[1], 2, Amount::from_sat(20_000), TIMEOUT);
        let plans = plan_claims(vec![large, small], &flat(10), tip);
        assert_eq!(plans.len(), 2, "split: the small one's share would exceed its limit");
        for plan in plans {
            let plan = plan.unwrap();
            assert_eq!(plan.members.len(), 1);
        }
    }

    #[test]
    fn batches_hold_at_most_the_maximum() {
        let p = pair(70, TIMEOUT);
        let members =
            (0..(MAX_CLAIM_BATCH + 3) as u8).map(|i| member(&p, i + 1, AMOUNT, TIMEOUT)).collect();
        let plans = plan_claims(members, &flat(2), TIMEOUT - 100);
        let sizes: Vec<usize> = plans.into_iter().map(|p| p.unwrap().members.len()).collect();
        assert_eq!(sizes, vec![MAX_CLAIM_BATCH, 3]);
    }
}
