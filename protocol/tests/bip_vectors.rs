//! The specifications' own reference vectors, run through the crates Looper builds its contract on:
//!
//! - BIP-0327 (MuSig2) through `musig2` 0.1.2 with its `secp256k1` 0.29 conversions, and Looper's
//!   own decoders and final-signature check (`looper_protocol::musig`);
//! - BIP-0340 (Schnorr signatures) through `secp256k1` 0.29 (`bitcoin::secp256k1`);
//! - BIP-0341 (taproot outputs and key-path signing) through `bitcoin` 0.32 (`TaprootBuilder`,
//!   `SighashCache`).
//!
//! The vectors are read at test time from `protocol/tests/vectors/` (copied unchanged from the
//! bitcoin/bips repository at commit 7fe0b034; its README names each file's source and license).
//! Every test counts the cases it exercised and asserts the total, so a file that is missing cases
//! (or a loop that silently skips some) fails.
//!
//! Not covered: `bip0327/det_sign_vectors.json` (deterministic signing, `DeterministicSign` in
//! BIP-0327) has no implementation in `musig2` 0.1.2 (its `deterministic` module is RFC6979 for
//! single-signer BIP-0340 only), and Looper never signs deterministically, so nothing is asserted
//! about that file.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::key::TapTweak;
use bitcoin::secp256k1::{
    schnorr, Keypair, Message, PublicKey, Secp256k1, SecretKey, XOnlyPublicKey,
};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{LeafVersion, TapLeafHash, TapNodeHash, TapTweakHash, TaprootBuilder};
use bitcoin::{
    Address, Amount, Network, ScriptBuf, TapSighash, TapSighashType, Transaction, TxOut, Witness,
};
use looper_protocol::musig::{
    decode_partial_signature, decode_pub_nonce, verify_key_spend_signature,
};
use musig2::secp::{Point, Scalar};
use musig2::{AggNonce, BinaryEncoding, KeyAggContext, PartialSignature, PubNonce, SecNonce};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// helpers

fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

fn read(rel: &str) -> String {
    let path = vectors_dir().join(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()))
}

fn load(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not json: {e}"))
}

fn hx(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a hex string: {v}"));
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s}: {e}"))
}

fn hx32(v: &Value) -> [u8; 32] {
    hx(v).try_into().unwrap_or_else(|_| panic!("not 32 bytes: {v}"))
}

fn hx66(v: &Value) -> [u8; 66] {
    hx(v).try_into().unwrap_or_else(|_| panic!("not 66 bytes: {v}"))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap_or_else(|| panic!("`{key}` is not an array"))
}

fn idx(v: &Value) -> usize {
    usize::try_from(v.as_u64().unwrap_or_else(|| panic!("not an index: {v}"))).unwrap()
}

fn indices(v: &Value, key: &str) -> Vec<usize> {
    arr(v, key).iter().map(idx).collect()
}

fn bools(v: &Value, key: &str) -> Vec<bool> {
    arr(v, key).iter().map(|b| b.as_bool().unwrap()).collect()
}

fn comment(v: &Value) -> String {
    v["comment"].as_str().unwrap_or("").to_string()
}

/// A BIP-0327 public key as Looper holds it (`bitcoin::secp256k1::PublicKey`).
fn pubkey(bytes: &[u8]) -> Result<PublicKey, bitcoin::secp256k1::Error> {
    PublicKey::from_slice(bytes)
}

/// Parses the keys at `key_indices`, asserting that exactly the contribution of `bad_signer` (if
/// any) is rejected. Returns the parsed keys when all are valid.
fn keys_at(pubkeys: &[Value], key_indices: &[usize], bad_signer: Option<usize>) -> Vec<PublicKey> {
    let mut out = Vec::new();
    for (signer, &i) in key_indices.iter().enumerate() {
        let parsed = pubkey(&hx(&pubkeys[i]));
        if Some(signer) == bad_signer {
            assert!(parsed.is_err(), "pubkey of signer {signer} must be rejected");
        } else {
            out.push(parsed.unwrap_or_else(|e| panic!("pubkey of signer {signer}: {e}")));
        }
    }
    out
}

/// Applies BIP-0327 tweaks (plain or x-only) in order.
fn tweaked(
    ctx: KeyAggContext,
    tweaks: &[Value],
    tweak_indices: &[usize],
    xonly: &[bool],
) -> KeyAggContext {
    assert_eq!(tweak_indices.len(), xonly.len());
    tweak_indices.iter().zip(xonly).fold(ctx, |ctx, (&i, &is_xonly)| {
        let t = Scalar::try_from(hx(&tweaks[i]).as_slice()).expect("valid tweak");
        ctx.with_tweak(t, is_xonly).expect("tweak applies")
    })
}

fn secp_pubkey_to_point(pk: PublicKey) -> Point {
    Point::from(pk)
}

// ---------------------------------------------------------------------------------------------
// BIP-0327

#[test]
fn bip327_key_sort() {
    let v = load("bip0327/key_sort_vectors.json");
    let mut keys: Vec<PublicKey> =
        arr(&v, "pubkeys").iter().map(|k| pubkey(&hx(k)).expect("valid key")).collect();
    let expected: Vec<PublicKey> =
        arr(&v, "sorted_pubkeys").iter().map(|k| pubkey(&hx(k)).expect("valid key")).collect();
    // KeySort is the lexicographic order of the 33-byte encodings: both the byte order and
    // musig2's `Point` order (what `KeyAggContext` users sort with) must give it.
    keys.sort_by_key(|k| k.serialize());
    assert_eq!(keys, expected);
    let mut points: Vec<Point> =
        arr(&v, "pubkeys").iter().map(|k| secp_pubkey_to_point(pubkey(&hx(k)).unwrap())).collect();
    points.sort();
    let expected_points: Vec<Point> = expected.iter().copied().map(Point::from).collect();
    assert_eq!(points, expected_points);
    assert_eq!(arr(&v, "pubkeys").len(), 6);
}

#[test]
fn bip327_key_agg() {
    let v = load("bip0327/key_agg_vectors.json");
    let pubkeys = arr(&v, "pubkeys");
    let tweaks = arr(&v, "tweaks");
    let mut valid = 0;
    for case in arr(&v, "valid_test_cases") {
        let keys = keys_at(pubkeys, &indices(case, "key_indices"), None);
        // Exactly as `Htlc::new` aggregates: secp256k1 keys in, secp256k1 key out.
        let ctx = KeyAggContext::new(keys).expect("aggregation of valid keys");
        let agg: PublicKey = ctx.aggregated_pubkey();
        assert_eq!(agg.x_only_public_key().0.serialize(), hx32(&case["expected"]));
        valid += 1;
    }
    let mut errors = 0;
    for case in arr(&v, "error_test_cases") {
        let err = &case["error"];
        let key_indices = indices(case, "key_indices");
        let tweak_indices = indices(case, "tweak_indices");
        let xonly = bools(case, "is_xonly");
        match (err["type"].as_str(), err["contrib"].as_str()) {
            (Some("invalid_contribution"), Some("pubkey")) => {
                let bad = idx(&err["signer"]);
                let good = keys_at(pubkeys, &key_indices, Some(bad));
                assert_eq!(good.len(), key_indices.len() - 1, "{}", comment(case));
            }
            (Some("value"), _) => {
                let keys = keys_at(pubkeys, &key_indices, None);
                let mut ctx = KeyAggContext::new(keys).expect("aggregation of valid keys");
                let mut failed = false;
                for (&i, &is_xonly) in tweak_indices.iter().zip(&xonly) {
                    // A tweak >= n is not a scalar; a tweak that takes the key to infinity is
                    // rejected by `with_tweak`.
                    let Ok(t) = Scalar::try_from(hx(&tweaks[i]).as_slice()) else {
                        failed = true;
                        break;
                    };
                    match ctx.with_tweak(t, is_xonly) {
                        Ok(c) => ctx = c,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                assert!(failed, "{} must fail", comment(case));
            }
            other => panic!("unknown key_agg error case {other:?}"),
        }
        errors += 1;
    }
    assert_eq!((valid, errors), (4, 5));
}

#[test]
fn bip327_nonce_gen() {
    let v = load("bip0327/nonce_gen_vectors.json");
    let mut n = 0;
    for case in arr(&v, "test_cases") {
        let rand = hx32(&case["rand_"]);
        let pk = pubkey(&hx(&case["pk"])).expect("valid pk");
        let mut builder = if case["sk"].is_null() {
            SecNonce::build_with_pubkey(rand, pk)
        } else {
            let sk = SecretKey::from_slice(&hx(&case["sk"])).expect("valid sk");
            assert_eq!(sk.public_key(&Secp256k1::signing_only()), pk, "sk and pk disagree");
            SecNonce::build_with_seckey(rand, sk)
        };
        if !case["aggpk"].is_null() {
            let x = XOnlyPublicKey::from_slice(&hx(&case["aggpk"])).expect("valid aggpk");
            builder =
                builder.with_aggregated_pubkey(x.public_key(bitcoin::secp256k1::Parity::Even));
        }
        let msg = (!case["msg"].is_null()).then(|| hx(&case["msg"]));
        if let Some(m) = &msg {
            // An empty message is a present, empty message (distinct from no message).
            builder = builder.with_message(m);
        }
        let extra = (!case["extra_in"].is_null()).then(|| hx(&case["extra_in"]));
        if let Some(e) = &extra {
            builder = builder.with_extra_input(e);
        }
        let secnonce = builder.build();
        assert_eq!(
            secnonce.to_bytes().to_vec(),
            hx(&case["expected_secnonce"]),
            "secnonce of case {n}"
        );
        let expected_pub = decode_pub_nonce(&hx66(&case["expected_pubnonce"])).expect("pubnonce");
        assert_eq!(secnonce.public_nonce(), expected_pub, "pubnonce of case {n}");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn bip327_nonce_agg() {
    let v = load("bip0327/nonce_agg_vectors.json");
    let pnonces = arr(&v, "pnonces");
    let mut valid = 0;
    for case in arr(&v, "valid_test_cases") {
        let nonces: Vec<PubNonce> = indices(case, "pnonce_indices")
            .into_iter()
            .map(|i| decode_pub_nonce(&hx66(&pnonces[i])).expect("valid pubnonce"))
            .collect();
        let agg = AggNonce::sum(&nonces);
        assert_eq!(agg.to_bytes().to_vec(), hx(&case["expected"]), "{}", comment(case));
        valid += 1;
    }
    let mut errors = 0;
    for case in arr(&v, "error_test_cases") {
        assert_eq!(case["error"]["contrib"], "pubnonce");
        let bad = idx(&case["error"]["signer"]);
        for (signer, i) in indices(case, "pnonce_indices").into_iter().enumerate() {
            // Looper's decoder is what a peer's nonce goes through.
            let parsed = decode_pub_nonce(&hx66(&pnonces[i]));
            assert_eq!(parsed.is_err(), signer == bad, "{} (signer {signer})", comment(case));
        }
        errors += 1;
    }
    assert_eq!((valid, errors), (2, 3));
}

struct SignVerify {
    sk: SecretKey,
    pubkeys: Vec<Value>,
    secnonces: Vec<Value>,
    pnonces: Vec<Value>,
    aggnonces: Vec<Value>,
    msgs: Vec<Vec<u8>>,
}

#[test]
fn bip327_sign_verify() {
    let v = load("bip0327/sign_verify_vectors.json");
    let sv = SignVerify {
        sk: SecretKey::from_slice(&hx(&v["sk"])).expect("valid sk"),
        pubkeys: arr(&v, "pubkeys").clone(),
        secnonces: arr(&v, "secnonces").clone(),
        pnonces: arr(&v, "pnonces").clone(),
        aggnonces: arr(&v, "aggnonces").clone(),
        msgs: arr(&v, "msgs").iter().map(hx).collect(),
    };
    let secp = Secp256k1::signing_only();
    let our_pk = sv.sk.public_key(&secp);
    let secnonce0 = SecNonce::from_bytes(&hx(&sv.secnonces[0])).expect("secnonce 0");

    let mut valid = 0;
    for case in arr(&v, "valid_test_cases") {
        let keys = keys_at(&sv.pubkeys, &indices(case, "key_indices"), None);
        let signer = idx(&case["signer_index"]);
        assert_eq!(keys[signer], our_pk);
        let ctx = KeyAggContext::new(keys.clone()).expect("aggregation");
        let aggnonce = AggNonce::from_bytes(&hx(&sv.aggnonces[idx(&case["aggnonce_index"])]))
            .expect("aggnonce");
        let nonces: Vec<PubNonce> = indices(case, "nonce_indices")
            .into_iter()
            .map(|i| decode_pub_nonce(&hx66(&sv.pnonces[i])).expect("pubnonce"))
            .collect();
        assert_eq!(AggNonce::sum(&nonces), aggnonce, "aggnonce of {}", comment(case));
        let msg = &sv.msgs[idx(&case["msg_index"])];
        let psig: PartialSignature =
            musig2::sign_partial(&ctx, sv.sk, secnonce0.clone(), &aggnonce, msg).expect("sign");
        let expected = decode_partial_signature(&hx32(&case["expected"])).expect("psig");
        assert_eq!(psig, expected, "partial signature of {}", comment(case));
        musig2::verify_partial(&ctx, psig, &aggnonce, keys[signer], &nonces[signer], msg)
            .expect("valid partial signature verifies");
        valid += 1;
    }

    let mut sign_errors = 0;
    for case in arr(&v, "sign_error_test_cases") {
        let err = &case["error"];
        let key_indices = indices(case, "key_indices");
        match (err["type"].as_str(), err["contrib"].as_str()) {
            (Some("invalid_contribution"), Some("pubkey")) => {
                let bad = idx(&err["signer"]);
                let good = keys_at(&sv.pubkeys, &key_indices, Some(bad));
                assert_eq!(good.len(), key_indices.len() - 1);
            }
            (Some("invalid_contribution"), Some("aggnonce")) => {
                let bytes = hx(&sv.aggnonces[idx(&case["aggnonce_index"])]);
                assert!(AggNonce::from_bytes(&bytes).is_err(), "{}", comment(case));
            }
            (Some("value"), None) => {
                let secnonce_bytes = hx(&sv.secnonces[idx(&case["secnonce_index"])]);
                match SecNonce::from_bytes(&secnonce_bytes) {
                    // A secnonce with a zero scalar (what a wiped, reused nonce looks like).
                    Err(_) => {}
                    Ok(secnonce) => {
                        // Our key is not among the signers.
                        let keys = keys_at(&sv.pubkeys, &key_indices, None);
                        let ctx = KeyAggContext::new(keys).expect("aggregation");
                        let aggnonce =
                            AggNonce::from_bytes(&hx(&sv.aggnonces[idx(&case["aggnonce_index"])]))
                                .expect("aggnonce");
                        let msg = &sv.msgs[idx(&case["msg_index"])];
                        let r: Result<PartialSignature, _> =
                            musig2::sign_partial(&ctx, sv.sk, secnonce, &aggnonce, msg);
                        assert_eq!(r, Err(musig2::errors::SigningError::UnknownKey));
                    }
                }
            }
            other => panic!("unknown sign error case {other:?}"),
        }
        sign_errors += 1;
    }

    let mut verify_fails = 0;
    for case in arr(&v, "verify_fail_test_cases") {
        let keys = keys_at(&sv.pubkeys, &indices(case, "key_indices"), None);
        let signer = idx(&case["signer_index"]);
        let ctx = KeyAggContext::new(keys.clone()).expect("aggregation");
        let nonces: Vec<PubNonce> = indices(case, "nonce_indices")
            .into_iter()
            .map(|i| decode_pub_nonce(&hx66(&sv.pnonces[i])).expect("pubnonce"))
            .collect();
        let aggnonce = AggNonce::sum(&nonces);
        let msg = &sv.msgs[idx(&case["msg_index"])];
        match decode_partial_signature(&hx32(&case["sig"])) {
            // Out of range: rejected when decoded.
            Err(_) => {}
            Ok(psig) => {
                let r = musig2::verify_partial(
                    &ctx,
                    psig,
                    &aggnonce,
                    keys[signer],
                    &nonces[signer],
                    msg,
                );
                assert!(r.is_err(), "{} must not verify", comment(case));
            }
        }
        verify_fails += 1;
    }

    let mut verify_errors = 0;
    for case in arr(&v, "verify_error_test_cases") {
        let err = &case["error"];
        let bad = idx(&err["signer"]);
        decode_partial_signature(&hx32(&case["sig"])).expect("psig itself is valid");
        match err["contrib"].as_str() {
            Some("pubnonce") => {
                for (signer, i) in indices(case, "nonce_indices").into_iter().enumerate() {
                    let parsed = decode_pub_nonce(&hx66(&sv.pnonces[i]));
                    assert_eq!(parsed.is_err(), signer == bad, "{}", comment(case));
                }
            }
            Some("pubkey") => {
                keys_at(&sv.pubkeys, &indices(case, "key_indices"), Some(bad));
            }
            other => panic!("unknown verify error contribution {other:?}"),
        }
        verify_errors += 1;
    }
    assert_eq!((valid, sign_errors, verify_fails, verify_errors), (6, 6, 3, 2));
}

#[test]
fn bip327_tweak() {
    let v = load("bip0327/tweak_vectors.json");
    let sk = SecretKey::from_slice(&hx(&v["sk"])).expect("sk");
    let pubkeys = arr(&v, "pubkeys");
    let tweaks = arr(&v, "tweaks");
    let secnonce = SecNonce::from_bytes(&hx(&v["secnonce"])).expect("secnonce");
    let pnonces: Vec<PubNonce> =
        arr(&v, "pnonces").iter().map(|p| decode_pub_nonce(&hx66(p)).expect("pnonce")).collect();
    let aggnonce = AggNonce::from_bytes(&hx(&v["aggnonce"])).expect("aggnonce");
    let msg = hx(&v["msg"]);

    let mut valid = 0;
    for case in arr(&v, "valid_test_cases") {
        let keys = keys_at(pubkeys, &indices(case, "key_indices"), None);
        let signer = idx(&case["signer_index"]);
        let nonce_indices = indices(case, "nonce_indices");
        let nonces: Vec<&PubNonce> = nonce_indices.iter().map(|&i| &pnonces[i]).collect();
        assert_eq!(AggNonce::sum(nonces.iter().copied()), aggnonce);
        let ctx = tweaked(
            KeyAggContext::new(keys.clone()).expect("aggregation"),
            tweaks,
            &indices(case, "tweak_indices"),
            &bools(case, "is_xonly"),
        );
        let psig: PartialSignature =
            musig2::sign_partial(&ctx, sk, secnonce.clone(), &aggnonce, &msg).expect("sign");
        let expected = decode_partial_signature(&hx32(&case["expected"])).expect("psig");
        assert_eq!(psig, expected, "{}", comment(case));
        musig2::verify_partial(&ctx, psig, &aggnonce, keys[signer], nonces[signer], &msg)
            .expect("tweaked partial signature verifies");
        valid += 1;
    }
    let mut errors = 0;
    for case in arr(&v, "error_test_cases") {
        assert_eq!(case["error"]["type"], "value");
        let bad_tweak_rejected = indices(case, "tweak_indices")
            .into_iter()
            .any(|i| Scalar::try_from(hx(&tweaks[i]).as_slice()).is_err());
        assert!(bad_tweak_rejected, "{}", comment(case));
        errors += 1;
    }
    assert_eq!((valid, errors), (5, 1));
}

#[test]
fn bip327_sig_agg() {
    let v = load("bip0327/sig_agg_vectors.json");
    let pubkeys = arr(&v, "pubkeys");
    let tweaks = arr(&v, "tweaks");
    let pnonces = arr(&v, "pnonces");
    let psigs = arr(&v, "psigs");
    let msg = hx32(&v["msg"]);
    let mut valid = 0;
    for case in arr(&v, "valid_test_cases") {
        let keys = keys_at(pubkeys, &indices(case, "key_indices"), None);
        let nonces: Vec<PubNonce> = indices(case, "nonce_indices")
            .into_iter()
            .map(|i| decode_pub_nonce(&hx66(&pnonces[i])).expect("pnonce"))
            .collect();
        let aggnonce = AggNonce::sum(&nonces);
        assert_eq!(aggnonce.to_bytes().to_vec(), hx(&case["aggnonce"]));
        let ctx = tweaked(
            KeyAggContext::new(keys).expect("aggregation"),
            tweaks,
            &indices(case, "tweak_indices"),
            &bools(case, "is_xonly"),
        );
        let partials: Vec<PartialSignature> = indices(case, "psig_indices")
            .into_iter()
            .map(|i| decode_partial_signature(&hx32(&psigs[i])).expect("psig"))
            .collect();
        // Aggregated into a secp256k1 signature, as `InitiatorSession::finish` does.
        let sig: schnorr::Signature =
            musig2::aggregate_partial_signatures(&ctx, &aggnonce, partials, msg.as_slice())
                .expect("aggregation");
        assert_eq!(sig.as_ref().to_vec(), hx(&case["expected"]));
        let agg_key: PublicKey = ctx.aggregated_pubkey();
        verify_key_spend_signature(
            &sig,
            &TapSighash::from_byte_array(msg),
            &agg_key.x_only_public_key().0,
        )
        .expect("aggregate signature verifies as BIP-0340");
        valid += 1;
    }
    let mut errors = 0;
    for case in arr(&v, "error_test_cases") {
        assert_eq!(case["error"]["contrib"], "psig");
        let bad = idx(&case["error"]["signer"]);
        for (signer, i) in indices(case, "psig_indices").into_iter().enumerate() {
            let parsed = decode_partial_signature(&hx32(&psigs[i]));
            assert_eq!(parsed.is_err(), signer == bad, "{}", comment(case));
        }
        errors += 1;
    }
    assert_eq!((valid, errors), (4, 1));
}

#[test]
fn bip327_det_sign_is_not_implemented() {
    // See the module docs: `musig2` 0.1.2 has no BIP-0327 DeterministicSign, so the file's cases
    // are not run. This only pins that the file is the one we think it is (9 cases), so a newer
    // vector set prompts a look at whether the crate has caught up.
    let v = load("bip0327/det_sign_vectors.json");
    assert_eq!(arr(&v, "valid_test_cases").len() + arr(&v, "error_test_cases").len(), 9);
}

// ---------------------------------------------------------------------------------------------
// BIP-0340

#[test]
fn bip340_schnorr() {
    let csv = read("bip0340/test-vectors.csv");
    let secp = Secp256k1::new();
    let (mut rows, mut signed, mut valid, mut invalid, mut variable_len) = (0, 0, 0, 0, 0);
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        // index,secret key,public key,aux_rand,message,signature,verification result,comment
        let f: Vec<&str> = line.splitn(8, ',').collect();
        assert!(f.len() >= 7, "short row: {line}");
        let index = f[0];
        let dec = |s: &str| hex::decode(s).unwrap_or_else(|e| panic!("row {index}: {e}"));
        let (sk, pk, aux, msg, sig) = (dec(f[1]), dec(f[2]), dec(f[3]), dec(f[4]), dec(f[5]));
        let expect_valid = match f[6] {
            "TRUE" => true,
            "FALSE" => false,
            other => panic!("row {index}: result {other}"),
        };
        let sig_arr: [u8; 64] = sig.as_slice().try_into().expect("64-byte signature");

        if msg.len() == 32 {
            let message = Message::from_digest(msg.as_slice().try_into().unwrap());
            if !sk.is_empty() {
                let kp = Keypair::from_seckey_slice(&secp, &sk).expect("valid secret key");
                assert_eq!(kp.x_only_public_key().0.serialize().to_vec(), pk, "row {index}");
                let aux: [u8; 32] = aux.as_slice().try_into().expect("32-byte aux_rand");
                let made = secp.sign_schnorr_with_aux_rand(&message, &kp, &aux);
                assert_eq!(made.as_ref(), &sig_arr, "signature of row {index}");
                signed += 1;
            }
            let verified = XOnlyPublicKey::from_slice(&pk).ok().is_some_and(|key| {
                let s = schnorr::Signature::from_slice(&sig).expect("64 bytes");
                secp.verify_schnorr(&s, &message, &key).is_ok()
            });
            assert_eq!(verified, expect_valid, "verification of row {index}: {}", f[7]);
        } else {
            // secp256k1 0.29's `Message` is exactly 32 bytes, so rows with other message lengths
            // go through the BIP-0340 implementation in musig2 (the crate that aggregates
            // Looper's key-path signatures).
            variable_len += 1;
            if !sk.is_empty() {
                let seckey = Scalar::try_from(sk.as_slice()).expect("valid secret key");
                let aux: [u8; 32] = aux.as_slice().try_into().expect("32-byte aux_rand");
                let made: [u8; 64] =
                    musig2::sign_solo::<musig2::CompactSignature>(seckey, &msg, aux).serialize();
                assert_eq!(made, sig_arr, "signature of row {index}");
                signed += 1;
            }
        }
        // Every row is also checked by musig2's verifier.
        let musig_verified = <[u8; 32]>::try_from(pk.as_slice())
            .ok()
            .and_then(|x| Point::lift_x(&x).ok())
            .is_some_and(|p| musig2::verify_single(p, sig_arr, &msg).is_ok());
        assert_eq!(musig_verified, expect_valid, "musig2 verification of row {index}");
        if expect_valid {
            valid += 1;
        } else {
            invalid += 1;
        }
        rows += 1;
    }
    assert_eq!((rows, signed, valid, invalid, variable_len), (19, 8, 9, 10, 4));
}

// ---------------------------------------------------------------------------------------------
// BIP-0341

/// Flattens the vectors' nested script tree into `(depth, id, script, version)` leaves in the
/// depth-first, left-to-right order `TaprootBuilder` takes them.
fn leaves(node: &Value, depth: u8, out: &mut Vec<(u8, usize, ScriptBuf, LeafVersion)>) {
    match node {
        Value::Array(children) => {
            for child in children {
                leaves(child, depth + 1, out);
            }
        }
        Value::Object(_) => {
            let version = u8::try_from(node["leafVersion"].as_u64().expect("leafVersion")).unwrap();
            out.push((
                depth,
                idx(&node["id"]),
                ScriptBuf::from_bytes(hx(&node["script"])),
                LeafVersion::from_consensus(version).expect("valid leaf version"),
            ));
        }
        other => panic!("unexpected script tree node {other}"),
    }
}

#[test]
fn bip341_script_pubkey() {
    let v = load("bip0341/wallet-test-vectors.json");
    let secp = Secp256k1::verification_only();
    let (mut cases, mut leaf_count, mut control_blocks) = (0, 0, 0);
    for case in arr(&v, "scriptPubKey") {
        let given = &case["given"];
        let inter = &case["intermediary"];
        let expected = &case["expected"];
        let internal = XOnlyPublicKey::from_slice(&hx(&given["internalPubkey"])).expect("key");

        let mut tree = Vec::new();
        if !given["scriptTree"].is_null() {
            leaves(&given["scriptTree"], 0, &mut tree);
        }
        let spend_info = if tree.is_empty() {
            bitcoin::taproot::TaprootSpendInfo::new_key_spend(&secp, internal, None)
        } else {
            let mut builder = TaprootBuilder::new();
            for (depth, _, script, ver) in &tree {
                builder = builder.add_leaf_with_ver(*depth, script.clone(), *ver).expect("leaf");
            }
            builder.finalize(&secp, internal).expect("complete tree")
        };
        let merkle_root = spend_info.merkle_root();

        // Intermediary values.
        if tree.is_empty() {
            assert!(inter["merkleRoot"].is_null());
        } else {
            let mut by_id = tree.clone();
            by_id.sort_by_key(|l| l.1);
            let hashes = arr(inter, "leafHashes");
            assert_eq!(hashes.len(), by_id.len());
            for ((_, _, script, ver), h) in by_id.iter().zip(hashes) {
                assert_eq!(TapLeafHash::from_script(script, *ver).to_byte_array(), hx32(h));
                leaf_count += 1;
            }
            let root = merkle_root.expect("tree has a root");
            assert_eq!(root.to_byte_array(), hx32(&inter["merkleRoot"]));
        }
        let tweak = TapTweakHash::from_key_and_tweak(internal, merkle_root);
        assert_eq!(tweak.to_byte_array(), hx32(&inter["tweak"]));
        assert_eq!(spend_info.tap_tweak(), tweak);
        let output_key = spend_info.output_key();
        assert_eq!(output_key.to_x_only_public_key().serialize(), hx32(&inter["tweakedPubkey"]));

        // Expected outputs.
        let spk = ScriptBuf::new_p2tr(&secp, internal, merkle_root);
        assert_eq!(spk.as_bytes(), hx(&expected["scriptPubKey"]).as_slice());
        assert_eq!(ScriptBuf::new_p2tr_tweaked(output_key), spk);
        let address = Address::p2tr(&secp, internal, merkle_root, Network::Bitcoin);
        assert_eq!(address.to_string(), expected["bip350Address"].as_str().unwrap());
        assert_eq!(Address::p2tr_tweaked(output_key, Network::Bitcoin), address);
        if tree.is_empty() {
            assert!(expected.get("scriptPathControlBlocks").is_none());
        } else {
            let mut by_id = tree.clone();
            by_id.sort_by_key(|l| l.1);
            let blocks = arr(expected, "scriptPathControlBlocks");
            assert_eq!(blocks.len(), by_id.len());
            for ((_, _, script, ver), cb) in by_id.iter().zip(blocks) {
                let block =
                    spend_info.control_block(&(script.clone(), *ver)).expect("control block");
                assert_eq!(block.serialize(), hx(cb));
                assert!(block.verify_taproot_commitment(
                    &secp,
                    output_key.to_x_only_public_key(),
                    script
                ));
                control_blocks += 1;
            }
        }
        cases += 1;
    }
    assert_eq!((cases, leaf_count, control_blocks), (7, 12, 12));
}

fn sha256_of(data: &[u8]) -> [u8; 32] {
    sha256::Hash::hash(data).to_byte_array()
}

#[test]
fn bip341_key_path_spending() {
    let v = load("bip0341/wallet-test-vectors.json");
    let secp = Secp256k1::new();
    let (mut txs, mut inputs) = (0, 0);
    for case in arr(&v, "keyPathSpending") {
        let given = &case["given"];
        let unsigned: Transaction = deserialize(&hx(&given["rawUnsignedTx"])).expect("tx");
        let prevouts: Vec<TxOut> = arr(given, "utxosSpent")
            .iter()
            .map(|u| TxOut {
                value: Amount::from_sat(u["amountSats"].as_u64().expect("amount")),
                script_pubkey: ScriptBuf::from_bytes(hx(&u["scriptPubKey"])),
            })
            .collect();
        assert_eq!(prevouts.len(), unsigned.input.len());

        // The transaction-wide BIP-0341 hashes.
        let inter = &case["intermediary"];
        let mut e = sha256::Hash::engine();
        unsigned.input.iter().for_each(|i| e.input(&serialize(&i.previous_output)));
        assert_eq!(sha256::Hash::from_engine(e).to_byte_array(), hx32(&inter["hashPrevouts"]));
        let amounts: Vec<u8> =
            prevouts.iter().flat_map(|o| o.value.to_sat().to_le_bytes()).collect();
        assert_eq!(sha256_of(&amounts), hx32(&inter["hashAmounts"]));
        let spks: Vec<u8> = prevouts.iter().flat_map(|o| serialize(&o.script_pubkey)).collect();
        assert_eq!(sha256_of(&spks), hx32(&inter["hashScriptPubkeys"]));
        let seqs: Vec<u8> = unsigned.input.iter().flat_map(|i| serialize(&i.sequence)).collect();
        assert_eq!(sha256_of(&seqs), hx32(&inter["hashSequences"]));
        let outs: Vec<u8> = unsigned.output.iter().flat_map(serialize).collect();
        assert_eq!(sha256_of(&outs), hx32(&inter["hashOutputs"]));

        let mut signed = unsigned.clone();
        let mut cache = SighashCache::new(&unsigned);
        let all = Prevouts::All(&prevouts);
        for input in arr(case, "inputSpending") {
            let g = &input["given"];
            let im = &input["intermediary"];
            let index = idx(&g["txinIndex"]);
            let hash_type = u8::try_from(g["hashType"].as_u64().expect("hashType")).unwrap();
            let sighash_type = TapSighashType::from_consensus_u8(hash_type).expect("hash type");
            let merkle_root = (!g["merkleRoot"].is_null())
                .then(|| TapNodeHash::from_byte_array(hx32(&g["merkleRoot"])));

            let keypair =
                Keypair::from_seckey_slice(&secp, &hx(&g["internalPrivkey"])).expect("sk");
            let internal = keypair.x_only_public_key().0;
            assert_eq!(internal.serialize(), hx32(&im["internalPubkey"]));
            let tweak = TapTweakHash::from_key_and_tweak(internal, merkle_root);
            assert_eq!(tweak.to_byte_array(), hx32(&im["tweak"]));
            let tweaked = keypair.tap_tweak(&secp, merkle_root).to_keypair();
            assert_eq!(tweaked.secret_bytes(), hx32(&im["tweakedPrivkey"]));
            let output_key = tweaked.x_only_public_key().0;
            assert_eq!(
                ScriptBuf::new_p2tr(&secp, internal, merkle_root),
                prevouts[index].script_pubkey,
                "input {index} spends the output of its key"
            );

            let mut sig_msg = Vec::new();
            cache
                .taproot_encode_signing_data_to(&mut sig_msg, index, &all, None, None, sighash_type)
                .expect("signing data");
            assert_eq!(sig_msg, hx(&im["sigMsg"]), "sigMsg of input {index}");
            let sighash =
                cache.taproot_key_spend_signature_hash(index, &all, sighash_type).expect("sighash");
            assert_eq!(sighash.to_byte_array(), hx32(&im["sigHash"]), "sigHash of input {index}");

            // The vectors sign with all-zero aux_rand.
            let msg = Message::from_digest(sighash.to_byte_array());
            let signature = secp.sign_schnorr_with_aux_rand(&msg, &tweaked, &[0u8; 32]);
            secp.verify_schnorr(&signature, &msg, &output_key).expect("verifies");
            let sig = bitcoin::taproot::Signature { signature, sighash_type };
            let witness = arr(&input["expected"], "witness");
            assert_eq!(witness.len(), 1);
            assert_eq!(sig.to_vec(), hx(&witness[0]), "witness of input {index}");
            signed.input[index].witness = Witness::p2tr_key_spend(&sig);
            inputs += 1;
        }

        // Our key-path witnesses are the ones in the fully signed transaction.
        let full: Transaction =
            deserialize(&hx(&case["auxiliary"]["fullySignedTx"])).expect("signed tx");
        // (Its txid differs: a legacy input there carries a scriptSig.)
        assert_eq!(
            (full.version, full.lock_time, &full.output),
            (unsigned.version, unsigned.lock_time, &unsigned.output)
        );
        assert_eq!(full.input.len(), unsigned.input.len());
        for (f, u) in full.input.iter().zip(&unsigned.input) {
            assert_eq!((f.previous_output, f.sequence), (u.previous_output, u.sequence));
        }
        for input in arr(case, "inputSpending") {
            let index = idx(&input["given"]["txinIndex"]);
            assert_eq!(full.input[index].witness, signed.input[index].witness);
        }
        txs += 1;
    }
    assert_eq!((txs, inputs), (1, 7));
}
