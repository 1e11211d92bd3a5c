//! Wire messages: round trips, the test vectors in `spec/vectors/messages.json`, limits, and
//! property tests (no input panics the decoder; encode -> decode is the identity).
//!
//! Regenerate the vectors after a deliberate wire change with
//! `LOOPER_WRITE_VECTORS=1 cargo test -p looper-protocol --test messages write_vectors`, then review
//! the diff: the vectors are part of the spec.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use looper_protocol::messages::*;
use looper_protocol::terms::{Quote, QuoteCheckError, QuoteError, MAX_MONEY_SAT};
use looper_protocol::{PaymentHash, Preimage, SwapDirection, SwapId};
use proptest::prelude::*;
use secp256k1::{PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Example values (also the source of the valid vectors).

fn sk(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).unwrap()
}

fn pk(n: u8) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::new(), &sk(n))
}

fn xonly(n: u8) -> XOnlyPublicKey {
    pk(n).x_only_public_key().0
}

fn p2tr(n: u8) -> ScriptBuf {
    let mut b = vec![0x51, 0x20];
    b.extend_from_slice(&xonly(n).serialize());
    ScriptBuf::from_bytes(b)
}

fn nonce(a: u8, b: u8) -> PubNonceBytes {
    let mut out = [0u8; 66];
    out[..33].copy_from_slice(&pk(a).serialize());
    out[33..].copy_from_slice(&pk(b).serialize());
    PubNonceBytes(out)
}

fn swap_id() -> SwapId {
    SwapId([0x5a; 32])
}

fn preimage() -> Preimage {
    Preimage([0x42; 32])
}

fn offer() -> Offer {
    Offer {
        version: 1,
        offer_id: "regtest-main_1".into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 5_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 288,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: pk(9),
        ln_address: Some("127.0.0.1:9735".into()),
        relays: vec!["wss://relay.example.com".into(), "ws://127.0.0.1:7777".into()],
        pow_difficulty: Some(8),
        expires_at: 1_767_225_600,
    }
}

fn offer_with_prepay() -> Offer {
    Offer {
        offer_id: "prepay".into(),
        prepay_sat: Some(2_000),
        ln_address: None,
        pow_difficulty: None,
        relays: vec!["wss://relay.example.com".into()],
        ..offer()
    }
}

fn funding_tx() -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::from_byte_array([0x11; 32]), vout: 1 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut { value: Amount::from_sat(100_000), script_pubkey: p2tr(7) },
            TxOut { value: Amount::from_sat(48_000), script_pubkey: p2tr(8) },
        ],
    }
}

fn spend_tx(value_sat: u64, to: u8, lock_time: u32) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_consensus(lock_time),
        input: vec![TxIn {
            previous_output: OutPoint { txid: funding_tx().compute_txid(), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(value_sat), script_pubkey: p2tr(to) }],
    }
}

fn hex_tx(tx: &Transaction) -> String {
    bitcoin::consensus::encode::serialize_hex(tx)
}

fn accept(quote: Quote, prepay_invoice: Option<String>) -> SwapAccept {
    SwapAccept {
        invoice:
            "lnbcrt1012550n1pjexampleinvoicepp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypq"
                .into(),
        payment_hash: preimage().payment_hash(),
        seller_musig_pubkey: pk(3),
        seller_refund_pubkey: xonly(4),
        timeout_height: 1_288,
        htlc_script_pubkey: p2tr(7),
        htlc_amount_sat: quote.htlc_amount_sat,
        quote,
        prepay_invoice,
    }
}

/// One example of every message (and variants of some), named.
fn examples() -> Vec<(&'static str, Envelope)> {
    let quote = offer().quote(100_000).unwrap();
    let prepay_quote = offer_with_prepay().quote(100_000).unwrap();
    let in_offer = Offer { direction: SwapDirection::LoopIn, ..offer() };
    let in_quote = Quote::compute(&in_offer, 100_000).unwrap();
    let env = |seq, body| Envelope::new(swap_id(), seq, body);
    vec![
        (
            "swap_request",
            env(
                0,
                Message::SwapRequest(SwapRequest {
                    offer_id: "regtest-main_1".into(),
                    direction: SwapDirection::LoopOut,
                    network: Network::Regtest,
                    amount_sat: 100_000,
                    buyer_musig_pubkey: pk(1),
                    buyer_claim_pubkey: xonly(2),
                    max_total_fee_sat: 2_000,
                    prepay_accepted: false,
                }),
            ),
        ),
        ("swap_accept", env(0, Message::SwapAccept(accept(quote, None)))),
        (
            "swap_accept_with_prepay",
            env(
                0,
                Message::SwapAccept(accept(
                    prepay_quote,
                    Some(
                        "lnbcrt20u1pjexampleprepayinvoicepp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqf"
                            .into(),
                    ),
                )),
            ),
        ),
        ("swap_funded", env(1, Message::SwapFunded(SwapFunded::new(&funding_tx(), 0)))),
        (
            "loop_in_request",
            env(
                0,
                Message::LoopInRequest(LoopInRequest {
                    offer_id: "regtest-in_1".into(),
                    direction: SwapDirection::LoopIn,
                    network: Network::Regtest,
                    amount_sat: 100_000,
                    payment_hash: preimage().payment_hash(),
                    locker_musig_pubkey: pk(3),
                    locker_refund_pubkey: xonly(4),
                    max_total_fee_sat: 2_000,
                }),
            ),
        ),
        (
            "loop_in_accept",
            env(
                0,
                Message::LoopInAccept(LoopInAccept {
                    direction: SwapDirection::LoopIn,
                    claimer_musig_pubkey: pk(1),
                    claimer_claim_pubkey: xonly(2),
                    timeout_height: 1_288,
                    htlc_script_pubkey: p2tr(7),
                    htlc_amount_sat: in_quote.htlc_amount_sat,
                    quote: in_quote,
                }),
            ),
        ),
        (
            "loop_in_swap_funded",
            env(
                1,
                Message::SwapFunded(SwapFunded {
                    invoice: Some(
                        "lnbcrt987750n1pjexampleloopininvoicepp5qqqsyqcyq5rqwzqfqqqsyqcyq5rq"
                            .into(),
                    ),
                    ..SwapFunded::new(&funding_tx(), 0)
                }),
            ),
        ),
        (
            "coop_claim_request",
            env(
                1,
                Message::CoopClaimRequest(CoopClaimRequest {
                    tx_hex: hex_tx(&spend_tx(99_778, 2, 0)),
                    buyer_nonce: nonce(11, 12),
                    preimage: Some(Preimage([0x5a; 32])),
                }),
            ),
        ),
        (
            "coop_claim_response",
            env(
                2,
                Message::CoopClaimResponse(CoopClaimResponse {
                    seller_nonce: nonce(13, 14),
                    partial_sig: PartialSigBytes([0x1d; 32]),
                }),
            ),
        ),
        (
            "coop_refund_request",
            env(
                2,
                Message::CoopRefundRequest(CoopRefundRequest {
                    tx_hex: hex_tx(&spend_tx(99_778, 8, 0)),
                    seller_nonce: nonce(15, 16),
                }),
            ),
        ),
        (
            "coop_refund_response",
            env(
                2,
                Message::CoopRefundResponse(CoopRefundResponse {
                    buyer_nonce: nonce(17, 18),
                    partial_sig: PartialSigBytes([0x2e; 32]),
                }),
            ),
        ),
        (
            "swap_abort",
            env(
                3,
                Message::SwapAbort(SwapAbort {
                    reason: AbortReason::FundingTimeout,
                    message: None,
                }),
            ),
        ),
        (
            "swap_abort_with_message",
            env(
                1,
                Message::SwapAbort(SwapAbort {
                    reason: AbortReason::UserRequested,
                    message: Some("changed my mind — sorry".into()),
                }),
            ),
        ),
        (
            "error",
            env(
                1,
                Message::Error(ErrorMessage::new(
                    ErrorCode::InvalidState,
                    "unexpected swap_funded",
                )),
            ),
        ),
        ("error_unsupported_version", env(0, Message::Error(ErrorMessage::unsupported_version(2)))),
    ]
}

fn example(name: &str) -> Value {
    let env = examples().into_iter().find(|(n, _)| *n == name).unwrap().1;
    serde_json::to_value(&env).unwrap()
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v.as_object_mut().unwrap().insert(key.into(), value);
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

// ---------------------------------------------------------------------------------------------
// Vectors.

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/messages.json")
}

fn build_vectors() -> Vec<Value> {
    let mut out = Vec::new();
    let valid = |name: &str, kind: &str, json: Value, note: &str| json!({"name": name, "kind": kind, "valid": true, "note": note, "json": json});
    for (name, env) in examples() {
        out.push(valid(
            name,
            "envelope",
            serde_json::to_value(&env).unwrap(),
            "canonical encoding",
        ));
    }
    out.push(valid("offer", "offer", serde_json::to_value(offer()).unwrap(), "canonical encoding"));
    out.push(valid(
        "offer_with_prepay",
        "offer",
        serde_json::to_value(offer_with_prepay()).unwrap(),
        "optional fields absent: ln_address, pow_difficulty",
    ));
    // Unknown optional fields are ignored; re-encoding drops them.
    let base = example("swap_abort");
    out.push(json!({
        "name": "unknown_optional_field_ignored", "kind": "envelope", "valid": true,
        "note": "fields a later version may add are ignored",
        "json": with(with(base.clone(), "x_future_field", json!({"a": [1, 2]})), "hint", json!("hi")),
        "reencoded": base,
    }));
    out.push(json!({
        "name": "offer_unknown_field_ignored", "kind": "offer", "valid": true,
        "note": "fields a later version may add are ignored",
        "json": with(serde_json::to_value(offer()).unwrap(), "x_future_field", json!(true)),
        "reencoded": serde_json::to_value(offer()).unwrap(),
    }));

    let invalid = |name: &str,
                   kind: &str,
                   json: Value,
                   error: &str,
                   path: Option<&str>,
                   note: &str| {
        let mut v = json!({"name": name, "kind": kind, "valid": false, "error": error, "note": note, "json": json});
        if let Some(p) = path {
            v["path"] = json!(p);
        }
        v
    };
    let raw = |name: &str, raw: &str, error: &str, note: &str| json!({"name": name, "kind": "envelope", "valid": false, "error": error, "note": note, "raw": raw});
    let req = example("swap_request");
    let acc = example("swap_accept");
    let abort = example("swap_abort");
    let in_req = example("loop_in_request");
    let in_acc = example("loop_in_accept");
    out.push(invalid(
        "loop_in_request_without_payment_hash",
        "envelope",
        without(in_req.clone(), "payment_hash"),
        "malformed",
        Some("payment_hash"),
        "direction loop_in: the request carries the taker's hash and refund key",
    ));
    out.push(invalid(
        "loop_out_request_with_loop_in_fields_only",
        "envelope",
        with(in_req.clone(), "direction", json!("loop_out")),
        "malformed",
        Some("buyer_musig_pubkey"),
        "the direction names the fields a swap_request must carry",
    ));
    out.push(invalid(
        "loop_in_accept_without_claim_key",
        "envelope",
        without(in_acc.clone(), "claimer_claim_pubkey"),
        "malformed",
        Some("claimer_claim_pubkey"),
        "",
    ));
    out.push(invalid(
        "swap_accept_direction_loop_out",
        "envelope",
        with(acc.clone(), "direction", json!("loop_out")),
        "malformed",
        Some("direction"),
        "only a loop-in swap_accept names a direction",
    ));
    out.push(invalid(
        "swap_funded_bad_invoice",
        "envelope",
        with(example("swap_funded"), "invoice", json!("lnbc 1")),
        "malformed",
        Some("invoice"),
        "",
    ));
    out.push(invalid(
        "unknown_version",
        "envelope",
        with(with(req.clone(), "v", json!(2)), "future_field", json!(1)),
        "unsupported_version",
        None,
        "v is checked before any other field; reply with error unsupported_version",
    ));
    out.push(invalid(
        "unknown_version_unknown_shape",
        "envelope",
        json!({"v": 7, "swap_id": swap_id().to_string(), "type": "swap_teleport"}),
        "unsupported_version",
        None,
        "a future version may change every other field",
    ));
    out.push(invalid(
        "version_zero",
        "envelope",
        with(req.clone(), "v", json!(0)),
        "unsupported_version",
        None,
        "",
    ));
    out.push(invalid(
        "version_not_integer",
        "envelope",
        with(req.clone(), "v", json!("1")),
        "malformed",
        Some("v"),
        "",
    ));
    out.push(invalid(
        "missing_version",
        "envelope",
        without(req.clone(), "v"),
        "malformed",
        Some("v"),
        "",
    ));
    out.push(invalid(
        "missing_swap_id",
        "envelope",
        without(req.clone(), "swap_id"),
        "malformed",
        Some("swap_id"),
        "",
    ));
    out.push(invalid(
        "short_swap_id",
        "envelope",
        with(req.clone(), "swap_id", json!("5a5a")),
        "malformed",
        Some("swap_id"),
        "",
    ));
    out.push(invalid(
        "missing_seq",
        "envelope",
        without(req.clone(), "seq"),
        "malformed",
        Some("seq"),
        "",
    ));
    out.push(invalid(
        "negative_seq",
        "envelope",
        with(req.clone(), "seq", json!(-1)),
        "malformed",
        Some("seq"),
        "",
    ));
    out.push(invalid(
        "seq_overflow",
        "envelope",
        with(req.clone(), "seq", json!(4_294_967_296u64)),
        "malformed",
        Some("seq"),
        "seq is a u32",
    ));
    out.push(invalid(
        "missing_type",
        "envelope",
        without(req.clone(), "type"),
        "malformed",
        Some("type"),
        "",
    ));
    out.push(invalid(
        "unknown_type",
        "envelope",
        with(req.clone(), "type", json!("swap_teleport")),
        "unknown_type",
        None,
        "new message types need a new version",
    ));
    out.push(invalid(
        "missing_required_field",
        "envelope",
        without(acc.clone(), "invoice"),
        "malformed",
        Some("invoice"),
        "",
    ));
    out.push(invalid(
        "null_required_field",
        "envelope",
        with(acc.clone(), "timeout_height", Value::Null),
        "malformed",
        Some("timeout_height"),
        "",
    ));
    out.push(invalid(
        "amount_as_string",
        "envelope",
        with(req.clone(), "amount_sat", json!("100000")),
        "malformed",
        Some("amount_sat"),
        "amounts are JSON integers",
    ));
    out.push(invalid(
        "amount_negative",
        "envelope",
        with(req.clone(), "amount_sat", json!(-5)),
        "malformed",
        Some("amount_sat"),
        "",
    ));
    out.push(invalid(
        "amount_fractional",
        "envelope",
        with(req.clone(), "amount_sat", json!(100.5)),
        "malformed",
        Some("amount_sat"),
        "",
    ));
    out.push(invalid(
        "bad_hex_payment_hash",
        "envelope",
        with(acc.clone(), "payment_hash", json!("zz".repeat(32))),
        "malformed",
        Some("payment_hash"),
        "",
    ));
    out.push(invalid(
        "odd_hex_tx",
        "envelope",
        with(example("swap_funded"), "tx_hex", json!("02000")),
        "malformed",
        Some("tx_hex"),
        "",
    ));
    out.push(invalid(
        "short_nonce",
        "envelope",
        with(example("coop_claim_request"), "buyer_nonce", json!("02".repeat(65))),
        "malformed",
        Some("buyer_nonce"),
        "a public nonce is 66 bytes",
    ));
    out.push(invalid(
        "long_partial_sig",
        "envelope",
        with(example("coop_claim_response"), "partial_sig", json!("1d".repeat(33))),
        "malformed",
        Some("partial_sig"),
        "a partial signature is 32 bytes",
    ));
    out.push(invalid(
        "pubkey_not_on_curve",
        "envelope",
        with(req.clone(), "buyer_musig_pubkey", json!(format!("02{}", "ff".repeat(32)))),
        "malformed",
        Some("buyer_musig_pubkey"),
        "",
    ));
    out.push(invalid(
        "uncompressed_pubkey_as_xonly",
        "envelope",
        with(req.clone(), "buyer_claim_pubkey", json!(pk(2).to_string())),
        "malformed",
        Some("buyer_claim_pubkey"),
        "x-only keys are 32 bytes",
    ));
    out.push(invalid(
        "unknown_network",
        "envelope",
        with(req.clone(), "network", json!("mainnet")),
        "malformed",
        Some("network"),
        "networks are bitcoin, testnet, testnet4, signet, regtest",
    ));
    out.push(invalid(
        "unknown_direction",
        "envelope",
        with(req.clone(), "direction", json!("sideways")),
        "malformed",
        Some("direction"),
        "",
    ));
    out.push(invalid(
        "bad_offer_id",
        "envelope",
        with(req.clone(), "offer_id", json!("has space")),
        "malformed",
        Some("offer_id"),
        "",
    ));
    out.push(invalid(
        "invoice_too_long",
        "envelope",
        with(acc.clone(), "invoice", json!(format!("lnbcrt{}", "q".repeat(2043)))),
        "malformed",
        Some("invoice"),
        "invoices are at most 2048 characters",
    ));
    out.push(invalid(
        "script_not_p2tr",
        "envelope",
        with(acc.clone(), "htlc_script_pubkey", json!(format!("0014{}", "ab".repeat(20)))),
        "malformed",
        Some("htlc_script_pubkey"),
        "",
    ));
    out.push(invalid(
        "quote_missing_field",
        "envelope",
        with(acc.clone(), "quote", without(acc["quote"].clone(), "swap_fee_sat")),
        "malformed",
        Some("quote"),
        "",
    ));
    out.push(invalid(
        "unknown_abort_reason",
        "envelope",
        with(abort.clone(), "reason", json!("bored")),
        "malformed",
        Some("reason"),
        "",
    ));
    out.push(invalid(
        "abort_message_too_long",
        "envelope",
        with(abort.clone(), "message", json!("é".repeat(257))),
        "malformed",
        Some("message"),
        "free text is at most 256 characters",
    ));
    out.push(invalid(
        "unknown_error_code",
        "envelope",
        with(example("error"), "code", json!("teapot")),
        "malformed",
        Some("code"),
        "",
    ));
    let mut oversized = invalid(
        "oversized",
        "envelope",
        abort.clone(),
        "too_large",
        None,
        "padded with trailing spaces to 65537 bytes: refused before parsing",
    );
    oversized["pad_to_bytes"] = json!(MAX_MESSAGE_BYTES + 1);
    out.push(oversized);
    let mut at_limit = valid(
        "at_size_limit",
        "envelope",
        abort.clone(),
        "padded with trailing spaces to exactly 65536 bytes",
    );
    at_limit["pad_to_bytes"] = json!(MAX_MESSAGE_BYTES);
    out.push(at_limit);
    out.push(invalid(
        "not_an_object",
        "envelope",
        json!([1, "swap_request"]),
        "malformed",
        Some(""),
        "",
    ));
    out.push(raw("not_json", "swap_request please", "malformed", ""));
    out.push(raw("truncated_json", "{\"v\":1,\"type\":\"swap_abort\"", "malformed", ""));
    out.push(raw("empty", "", "malformed", ""));

    let o = serde_json::to_value(offer()).unwrap();
    out.push(invalid(
        "offer_unknown_version",
        "offer",
        with(o.clone(), "v", json!(2)),
        "unsupported_version",
        None,
        "",
    ));
    out.push(invalid(
        "offer_missing_field",
        "offer",
        without(o.clone(), "relays"),
        "malformed",
        Some("relays"),
        "",
    ));
    out.push(invalid(
        "offer_min_above_max",
        "offer",
        with(o.clone(), "min_amount_sat", json!(6_000_000)),
        "invalid_offer",
        None,
        "",
    ));
    out.push(invalid(
        "offer_bad_relay",
        "offer",
        with(o.clone(), "relays", json!(["https://relay.example.com"])),
        "invalid_offer",
        None,
        "relays are ws:// or wss:// URLs",
    ));
    out.push(invalid(
        "offer_timeout_too_short",
        "offer",
        with(o.clone(), "timeout_delta", json!(62)),
        "invalid_offer",
        None,
        "timeout_delta >= claim_margin + min_confirmations + 42",
    ));
    let mut offer_big = invalid(
        "offer_oversized",
        "offer",
        o.clone(),
        "too_large",
        None,
        "padded with trailing spaces to 8193 bytes",
    );
    offer_big["pad_to_bytes"] = json!(MAX_OFFER_BYTES + 1);
    out.push(offer_big);
    out
}

fn vector_input(v: &Value) -> Vec<u8> {
    let mut bytes = match v.get("raw") {
        Some(raw) => raw.as_str().unwrap().as_bytes().to_vec(),
        None => serde_json::to_vec(&v["json"]).unwrap(),
    };
    if let Some(pad) = v.get("pad_to_bytes").and_then(Value::as_u64) {
        let pad = usize::try_from(pad).unwrap();
        assert!(bytes.len() <= pad, "{}: already longer than pad_to_bytes", v["name"]);
        bytes.resize(pad, b' ');
    }
    bytes
}

fn decode_vector(v: &Value) -> Result<Value, DecodeError> {
    let bytes = vector_input(v);
    match v.get("kind").and_then(Value::as_str).unwrap_or("envelope") {
        "envelope" => decode_envelope(&bytes).map(|e| serde_json::to_value(&e).unwrap()),
        "offer" => decode_offer(&bytes).map(|o| serde_json::to_value(&o).unwrap()),
        other => panic!("unknown vector kind {other}"),
    }
}

#[test]
fn write_vectors() {
    if std::env::var_os("LOOPER_WRITE_VECTORS").is_none() {
        return;
    }
    let text = serde_json::to_string_pretty(&build_vectors()).unwrap();
    std::fs::write(vectors_path(), text + "\n").unwrap();
}

#[test]
fn vectors_file_is_current() {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        file,
        Value::Array(build_vectors()),
        "spec/vectors/messages.json differs from the examples in this test; if the wire change \
         is deliberate, regenerate with LOOPER_WRITE_VECTORS=1 and review the diff"
    );
}

#[test]
fn vectors_decode_as_specified() {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() > 40);
    let mut types_seen = std::collections::BTreeSet::new();
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let result = decode_vector(v);
        if v["valid"].as_bool().unwrap() {
            let got = result.unwrap_or_else(|e| panic!("{name}: expected valid, got {e}"));
            let expected = v.get("reencoded").unwrap_or(&v["json"]);
            assert_eq!(&got, expected, "{name}: re-encoding differs");
            if let Some(t) = got.get("type").and_then(Value::as_str) {
                types_seen.insert(t.to_string());
            }
        } else {
            let err = match result {
                Ok(_) => panic!("{name}: expected an error"),
                Err(e) => e,
            };
            assert_eq!(err.kind(), v["error"].as_str().unwrap(), "{name}: {err}");
            if let Some(path) = v.get("path").and_then(Value::as_str) {
                match &err {
                    DecodeError::Malformed { path: p, .. } => assert_eq!(p, path, "{name}: {err}"),
                    other => panic!("{name}: expected malformed at {path}, got {other}"),
                }
            }
            // Every refusal maps to an error message within the limits.
            let reply = err.to_error_message();
            assert!(reply.message.chars().count() <= MAX_TEXT_CHARS);
        }
    }
    let all: std::collections::BTreeSet<String> =
        MESSAGE_TYPES.iter().map(|s| s.to_string()).collect();
    assert_eq!(types_seen, all, "every message type has a valid vector");
}

// ---------------------------------------------------------------------------------------------
// Unit tests.

#[test]
fn round_trip_every_example() {
    for (name, env) in examples() {
        let bytes = encode(&env);
        assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{name}");
        let back = decode_envelope(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, env, "{name}");
        assert_eq!(encode(&back), bytes, "{name}: encoding is stable");
        assert_eq!(back.body.kind_name(), serde_json::to_value(&env).unwrap()["type"], "{name}");
        // The serde impls agree with decode/encode.
        let via_serde: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(via_serde, env, "{name}");
        let body: Message =
            serde_json::from_value(serde_json::to_value(&env.body).unwrap()).unwrap();
        assert_eq!(body, env.body, "{name}");
    }
    let o = offer();
    assert_eq!(decode_offer(&encode_offer(&o)).unwrap(), o);
    let o = offer_with_prepay();
    assert_eq!(decode_offer(&encode_offer(&o)).unwrap(), o);
}

#[test]
fn wire_shape_is_flat() {
    let v = example("swap_abort");
    assert_eq!(
        v,
        json!({"v": 1, "type": "swap_abort", "swap_id": "5a".repeat(32), "seq": 3, "reason": "funding_timeout"})
    );
    let offer = serde_json::to_value(offer()).unwrap();
    assert_eq!(offer["v"], 1);
    assert_eq!(offer["network"], "regtest");
    assert_eq!(offer["direction"], "loop_out");
}

#[test]
fn unsupported_version_reply_names_versions() {
    let bytes = serde_json::to_vec(&with(example("swap_request"), "v", json!(3))).unwrap();
    let err = decode_envelope(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion { version: 3, swap_id: Some(swap_id()) });
    let reply = err.reply(7).unwrap();
    assert_eq!(reply.swap_id, swap_id());
    assert_eq!(reply.seq, 7);
    assert_eq!(reply.version, PROTOCOL_VERSION);
    match reply.body {
        Message::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion);
            assert_eq!(e.supported_versions.as_deref(), Some(SUPPORTED_VERSIONS));
        }
        other => panic!("{other:?}"),
    }
    // A huge version is still "unsupported", not "malformed".
    let bytes = br#"{"v":18446744073709551615,"type":"x"}"#;
    assert_eq!(decode_envelope(bytes).unwrap_err().kind(), "unsupported_version");
    // Without a readable swap id there is nobody to address a reply to.
    assert!(decode_envelope(br#"{"v":2}"#).unwrap_err().reply(0).is_none());
}

#[test]
fn malformed_reply_keeps_swap_id() {
    let bytes = serde_json::to_vec(&without(example("swap_accept"), "invoice")).unwrap();
    let err = decode_envelope(&bytes).unwrap_err();
    let reply = err.reply(0).unwrap();
    assert_eq!(reply.swap_id, swap_id());
    match reply.body {
        Message::Error(e) => {
            assert_eq!(e.code, ErrorCode::Malformed);
            assert!(e.message.contains("invoice"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn largest_funding_tx_fits_in_a_message() {
    let mut tx = funding_tx();
    // Grow the transaction with outputs up to the MAX_TX_BYTES limit.
    while bitcoin::consensus::encode::serialize(&tx).len() + 43 <= MAX_TX_BYTES {
        tx.output.push(TxOut { value: Amount::from_sat(1_000), script_pubkey: p2tr(8) });
    }
    let size = bitcoin::consensus::encode::serialize(&tx).len();
    assert!(size <= MAX_TX_BYTES && size > MAX_TX_BYTES - 50, "{size}");
    let env = Envelope::new(swap_id(), 1, Message::SwapFunded(SwapFunded::new(&tx, 0)));
    let bytes = encode(&env);
    assert!(bytes.len() < MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
    let back = decode_envelope(&bytes).unwrap();
    match back.body {
        Message::SwapFunded(f) => assert_eq!(f.tx().unwrap(), tx),
        other => panic!("{other:?}"),
    }
}

#[test]
fn swap_funded_tx_checks() {
    let f = SwapFunded::new(&funding_tx(), 0);
    assert_eq!(f.tx().unwrap(), funding_tx());
    let wrong_txid = SwapFunded { txid: Txid::from_byte_array([1; 32]), ..f.clone() };
    assert!(matches!(wrong_txid.tx(), Err(MessageError::TxidMismatch { .. })));
    let wrong_vout = SwapFunded { vout: 2, ..f.clone() };
    assert_eq!(wrong_vout.tx(), Err(MessageError::VoutOutOfRange { vout: 2, outputs: 2 }));
    let garbage = SwapFunded { tx_hex: "00".into(), ..f };
    assert!(matches!(garbage.tx(), Err(MessageError::BadTransaction { .. })));
    let claim = CoopClaimRequest {
        tx_hex: hex_tx(&spend_tx(1_000, 2, 0)),
        buyer_nonce: nonce(1, 2),
        preimage: None,
    };
    assert_eq!(claim.tx().unwrap(), spend_tx(1_000, 2, 0));
}

#[test]
fn offer_validation() {
    offer().validate().unwrap();
    offer_with_prepay().validate().unwrap();
    let bad = |f: fn(&mut Offer)| {
        let mut o = offer();
        f(&mut o);
        o.validate().unwrap_err()
    };
    assert_eq!(bad(|o| o.version = 2), OfferError::UnsupportedVersion { version: 2 });
    assert_eq!(bad(|o| o.offer_id = String::new()), OfferError::BadOfferId);
    assert_eq!(bad(|o| o.offer_id = "x".repeat(65)), OfferError::BadOfferId);
    assert_eq!(bad(|o| o.offer_id = "a/b".into()), OfferError::BadOfferId);
    assert_eq!(
        bad(|o| o.min_amount_sat = 6_000_000),
        OfferError::AmountRange { min: 6_000_000, max: 5_000_000 }
    );
    assert_eq!(bad(|o| o.min_amount_sat = 100), OfferError::BelowDust { min: 100, dust: 330 });
    assert_eq!(
        bad(|o| o.max_amount_sat = u64::MAX),
        OfferError::AboveMaxMoney { field: "max_amount_sat" }
    );
    assert!(matches!(bad(|o| o.fee_ppm = 1_000_001), OfferError::FeePpm { .. }));
    assert_eq!(bad(|o| o.prepay_sat = Some(0)), OfferError::ZeroPrepay);
    assert!(matches!(
        bad(|o| o.prepay_sat = Some(10_000_000)),
        OfferError::Quote { source: QuoteError::PrepayTooLarge { .. }, .. }
    ));
    assert!(matches!(bad(|o| o.min_confirmations = 0), OfferError::MinConfirmations { .. }));
    assert_eq!(bad(|o| o.claim_margin = 0), OfferError::ClaimMargin);
    assert_eq!(
        bad(|o| o.timeout_delta = 62),
        OfferError::TimeoutDelta { value: 62, min: 63, max: MAX_TIMEOUT_DELTA }
    );
    assert!(matches!(bad(|o| o.timeout_delta = 2017), OfferError::TimeoutDelta { .. }));
    assert!(matches!(bad(|o| o.invoice_expiry_secs = 59), OfferError::InvoiceExpiry { .. }));
    assert_eq!(bad(|o| o.relays.clear()), OfferError::RelayCount { count: 0, max: MAX_RELAYS });
    assert!(matches!(
        bad(|o| o.relays = vec!["wss://a".into(); 11]),
        OfferError::RelayCount { .. }
    ));
    for url in
        ["https://relay.example.com", "wss://", "wss:///path", "wss://a b", "relay.example.com"]
    {
        let mut o = offer();
        o.relays = vec!["wss://ok.example".into(), url.into()];
        assert!(matches!(o.validate(), Err(OfferError::BadRelay { index: 1, .. })), "{url}");
    }
    assert_eq!(bad(|o| o.ln_address = Some(String::new())), OfferError::BadLnAddress);
    assert!(matches!(bad(|o| o.pow_difficulty = Some(33)), OfferError::PowDifficulty { .. }));
    assert_eq!(bad(|o| o.expires_at = 0), OfferError::ZeroExpiry);
    let mut o = offer();
    o.timeout_delta = 63;
    o.validate().unwrap();
    assert!(!o.is_expired(o.expires_at - 1));
    assert!(o.is_expired(o.expires_at));
}

#[test]
fn quote_check_against_names_the_field() {
    let o = offer();
    let q = o.quote(100_000).unwrap();
    assert_eq!(q.swap_fee_sat, 1_250);
    assert_eq!(q.invoice_amount_sat, 101_550);
    q.check_against(&o, 100_000).unwrap();
    let inflated = Quote { invoice_amount_sat: q.invoice_amount_sat + 1, ..q };
    assert_eq!(
        inflated.check_against(&o, 100_000),
        Err(QuoteCheckError::Mismatch {
            field: "invoice_amount_sat",
            expected: 101_550,
            got: 101_551
        })
    );
    let short_htlc = Quote { htlc_amount_sat: 99_000, ..q };
    assert!(matches!(
        short_htlc.check_against(&o, 100_000),
        Err(QuoteCheckError::Mismatch { field: "htlc_amount_sat", .. })
    ));
    assert!(matches!(
        q.check_against(&o, 1),
        Err(QuoteCheckError::Quote(QuoteError::AmountOutOfRange { .. }))
    ));
    let p = offer_with_prepay().quote(100_000).unwrap();
    assert_eq!(p.prepay_sat, 2_000);
    assert_eq!(p.invoice_amount_sat, 99_550);
    assert_eq!(p.lightning_total_sat(), q.lightning_total_sat());
    assert_eq!(p.total_cost_sat(222), 1_250 + 300 + 222);
}

#[test]
fn hex_byte_types_are_strict() {
    assert!("ab".parse::<PubNonceBytes>().is_err());
    assert!("0".repeat(131).parse::<PubNonceBytes>().is_err());
    assert!("g".repeat(132).parse::<PubNonceBytes>().is_err());
    assert!("0".repeat(132).parse::<PubNonceBytes>().is_ok());
    assert!("1D".repeat(32).parse::<PartialSigBytes>().is_ok());
    assert!("1d".repeat(32).parse::<PaymentHash>().is_ok());
    let s = PartialSigBytes([0xab; 32]);
    assert_eq!(serde_json::to_value(s).unwrap(), json!("ab".repeat(32)));
}

#[test]
fn kinds_are_in_their_ranges() {
    assert!((30_000..40_000).contains(&OFFER_KIND), "offers are addressable events");
    assert!((1_000..10_000).contains(&SWAP_MESSAGE_KIND), "swap rumors are regular events");
    assert_ne!(SWAP_MESSAGE_KIND, 14);
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn arb_pubkey() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_filter_map("valid secret key", |b| {
        SecretKey::from_slice(&b).ok().map(|s| PublicKey::from_secret_key(&Secp256k1::new(), &s))
    })
}

fn arb_xonly() -> impl Strategy<Value = XOnlyPublicKey> {
    arb_pubkey().prop_map(|p| p.x_only_public_key().0)
}

fn arb_network() -> impl Strategy<Value = Network> {
    prop::sample::select(vec![
        Network::Bitcoin,
        Network::Testnet,
        Network::Signet,
        Network::Regtest,
    ])
}

fn arb_direction() -> impl Strategy<Value = SwapDirection> {
    prop::sample::select(vec![SwapDirection::LoopOut, SwapDirection::LoopIn])
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn arb_invoice() -> impl Strategy<Value = String> {
    "lnbc[0-9a-z]{1,400}"
}

fn arb_tx_hex() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 1..300).prop_map(hex::encode)
}

fn arb_nonce() -> impl Strategy<Value = PubNonceBytes> {
    prop::collection::vec(any::<u8>(), 66).prop_map(|v| PubNonceBytes(v.try_into().unwrap()))
}

fn arb_partial_sig() -> impl Strategy<Value = PartialSigBytes> {
    any::<[u8; 32]>().prop_map(PartialSigBytes)
}

fn arb_quote() -> impl Strategy<Value = Quote> {
    any::<[u64; 6]>().prop_map(|a| Quote {
        amount_sat: a[0],
        swap_fee_sat: a[1],
        funding_fee_sat: a[2],
        prepay_sat: a[3],
        invoice_amount_sat: a[4],
        htlc_amount_sat: a[5],
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let request = (
        "[A-Za-z0-9_-]{1,64}",
        arb_direction(),
        arb_network(),
        any::<u64>(),
        arb_pubkey(),
        arb_xonly(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                offer_id,
                direction,
                network,
                amount_sat,
                m,
                c,
                max_total_fee_sat,
                prepay_accepted,
            )| match direction {
                SwapDirection::LoopIn => Message::LoopInRequest(LoopInRequest {
                    offer_id,
                    direction,
                    network,
                    amount_sat,
                    payment_hash: PaymentHash(c.serialize()),
                    locker_musig_pubkey: m,
                    locker_refund_pubkey: c,
                    max_total_fee_sat,
                }),
                _ => Message::SwapRequest(SwapRequest {
                    offer_id,
                    direction,
                    network,
                    amount_sat,
                    buyer_musig_pubkey: m,
                    buyer_claim_pubkey: c,
                    max_total_fee_sat,
                    prepay_accepted,
                }),
            },
        );
    let accept = (
        arb_invoice(),
        any::<[u8; 32]>(),
        arb_pubkey(),
        arb_xonly(),
        any::<u32>(),
        arb_xonly(),
        any::<u64>(),
        arb_quote(),
        prop::option::of(arb_invoice()),
    )
        .prop_map(
            |(invoice, h, m, r, timeout_height, out, htlc_amount_sat, quote, prepay_invoice)| {
                let mut spk = vec![0x51, 0x20];
                spk.extend_from_slice(&out.serialize());
                Message::SwapAccept(SwapAccept {
                    invoice,
                    payment_hash: PaymentHash(h),
                    seller_musig_pubkey: m,
                    seller_refund_pubkey: r,
                    timeout_height,
                    htlc_script_pubkey: ScriptBuf::from_bytes(spk),
                    htlc_amount_sat,
                    quote,
                    prepay_invoice,
                })
            },
        );
    let in_accept =
        (arb_pubkey(), arb_xonly(), any::<u32>(), arb_xonly(), any::<u64>(), arb_quote()).prop_map(
            |(m, c, timeout_height, out, htlc_amount_sat, quote)| {
                let mut spk = vec![0x51, 0x20];
                spk.extend_from_slice(&out.serialize());
                Message::LoopInAccept(LoopInAccept {
                    direction: SwapDirection::LoopIn,
                    claimer_musig_pubkey: m,
                    claimer_claim_pubkey: c,
                    timeout_height,
                    htlc_script_pubkey: ScriptBuf::from_bytes(spk),
                    htlc_amount_sat,
                    quote,
                })
            },
        );
    let funded = (any::<[u8; 32]>(), any::<u32>(), arb_tx_hex(), prop::option::of(arb_invoice()))
        .prop_map(|(t, vout, tx_hex, invoice)| {
            Message::SwapFunded(SwapFunded {
                txid: Txid::from_byte_array(t),
                vout,
                tx_hex,
                invoice,
            })
        });
    prop_oneof![
        request,
        accept,
        in_accept,
        funded,
        (arb_tx_hex(), arb_nonce()).prop_map(|(tx_hex, buyer_nonce)| Message::CoopClaimRequest(
            CoopClaimRequest { tx_hex, buyer_nonce, preimage: None }
        )),
        (arb_nonce(), arb_partial_sig()).prop_map(|(seller_nonce, partial_sig)| {
            Message::CoopClaimResponse(CoopClaimResponse { seller_nonce, partial_sig })
        }),
        (arb_tx_hex(), arb_nonce()).prop_map(|(tx_hex, seller_nonce)| {
            Message::CoopRefundRequest(CoopRefundRequest { tx_hex, seller_nonce })
        }),
        (arb_nonce(), arb_partial_sig()).prop_map(|(buyer_nonce, partial_sig)| {
            Message::CoopRefundResponse(CoopRefundResponse { buyer_nonce, partial_sig })
        }),
        (
            prop::sample::select(vec![
                AbortReason::UserRequested,
                AbortReason::ChecksFailed,
                AbortReason::PaymentFailed,
                AbortReason::TimeoutTooClose,
                AbortReason::FundingTimeout,
                AbortReason::OfferWithdrawn,
                AbortReason::Internal,
            ]),
            prop::option::of(arb_text(MAX_TEXT_CHARS)),
        )
            .prop_map(|(reason, message)| Message::SwapAbort(SwapAbort { reason, message })),
        (
            prop::sample::select(vec![
                ErrorCode::UnsupportedVersion,
                ErrorCode::Malformed,
                ErrorCode::UnknownSwap,
                ErrorCode::UnknownOffer,
                ErrorCode::AmountOutOfRange,
                ErrorCode::RateLimited,
                ErrorCode::InvalidState,
                ErrorCode::BadSignature,
                ErrorCode::InvalidParams,
                ErrorCode::Internal,
            ]),
            arb_text(MAX_TEXT_CHARS),
            prop::option::of(prop::collection::vec(any::<u32>(), 0..=MAX_SUPPORTED_VERSIONS)),
        )
            .prop_map(|(code, message, supported_versions)| {
                Message::Error(ErrorMessage { code, message, supported_versions })
            }),
    ]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (any::<[u8; 32]>(), any::<u32>(), arb_message())
        .prop_map(|(id, seq, body)| Envelope::new(SwapId(id), seq, body))
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[0-9a-fA-F]{0,140}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn prop_round_trip(env in arb_envelope()) {
        let bytes = encode(&env);
        let back = decode_envelope(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&env));
        prop_assert_eq!(encode(&env), bytes);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_envelope(&bytes);
        let _ = decode_offer(&bytes);
    }

    #[test]
    fn prop_json_ish_strings_never_panic(s in r#"[{}\[\]":,0-9a-z_ .\-\\]{0,300}"#) {
        let _ = decode_envelope(s.as_bytes());
        let _ = decode_offer(s.as_bytes());
    }

    /// Replace one field of a valid message or offer with arbitrary JSON: never a panic, and
    /// whatever decodes re-encodes to the same message (decode -> encode -> decode is stable).
    #[test]
    fn prop_mutated_fields_never_panic(
        which in 0usize..64,
        key_pick in 0usize..64,
        extra_key in "[a-z_]{1,12}",
        value in arb_json(),
    ) {
        let mut bases: Vec<(bool, Value)> = examples()
            .into_iter()
            .map(|(_, e)| (true, serde_json::to_value(&e).unwrap()))
            .collect();
        bases.push((false, serde_json::to_value(offer()).unwrap()));
        bases.push((false, serde_json::to_value(offer_with_prepay()).unwrap()));
        let (is_envelope, mut base) = bases[which % bases.len()].clone();
        let obj = base.as_object_mut().unwrap();
        let mut keys: Vec<String> = obj.keys().cloned().collect();
        keys.push(extra_key);
        let key = keys[key_pick % keys.len()].clone();
        obj.insert(key, value);
        let bytes = serde_json::to_vec(&base).unwrap();
        if is_envelope {
            if let Ok(env) = decode_envelope(&bytes) {
                prop_assert_eq!(decode_envelope(&encode(&env)), Ok(env));
            }
        } else if let Ok(offer) = decode_offer(&bytes) {
            prop_assert_eq!(decode_offer(&encode_offer(&offer)), Ok(offer));
        }
    }

    #[test]
    fn prop_quote_arithmetic(
        amount in 0u64..=MAX_MONEY_SAT,
        base in 0u64..=10_000_000,
        ppm in 0u32..=1_000_000,
        funding in 0u64..=10_000_000,
        prepay in 0u64..=1_000_000,
    ) {
        match Quote::from_parts(amount, base, ppm, funding, 0, u64::MAX, prepay) {
            Ok(q) => {
                prop_assert_eq!(q.htlc_amount_sat, amount);
                prop_assert_eq!(
                    u128::from(q.invoice_amount_sat) + u128::from(q.prepay_sat),
                    u128::from(amount) + u128::from(q.swap_fee_sat) + u128::from(funding)
                );
                let ppm_part = q.swap_fee_sat - base;
                // ceil: ppm_part is the smallest integer >= amount * ppm / 1e6.
                prop_assert!(u128::from(ppm_part) * 1_000_000 >= u128::from(amount) * u128::from(ppm));
                prop_assert!(
                    ppm_part == 0
                        || u128::from(ppm_part - 1) * 1_000_000 < u128::from(amount) * u128::from(ppm)
                );
                prop_assert_eq!(q.total_cost_sat(0), q.swap_fee_sat + funding);
            }
            Err(QuoteError::BelowDust { .. }) => prop_assert!(amount < 330),
            Err(QuoteError::PrepayTooLarge { .. }) => prop_assert!(prepay > 0),
            Err(QuoteError::Overflow) => {
                let fee = u128::from(base) + (u128::from(amount) * u128::from(ppm)).div_ceil(1_000_000);
                prop_assert!(u128::from(amount) + fee + u128::from(funding) > u128::from(MAX_MONEY_SAT));
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let deep = "[".repeat(MAX_MESSAGE_BYTES);
    assert_eq!(decode_envelope(deep.as_bytes()).unwrap_err().kind(), "malformed");
    let mut obj = String::from(r#"{"v":1,"x":"#);
    obj.push_str(&"{\"a\":".repeat(7_000));
    assert_eq!(decode_envelope(obj.as_bytes()).unwrap_err().kind(), "malformed");
    let deep_offer = "{\"v\":1,\"x\":".to_string() + &"[".repeat(MAX_OFFER_BYTES - 20);
    assert_eq!(decode_offer(deep_offer.as_bytes()).unwrap_err().kind(), "malformed");
}

/// A loop-in offer's quote: the taker locks the amount, the maker pays it less its fees; an in
/// offer with a prepay has no quote, and a quote computed for the other direction is refused.
#[test]
fn a_loop_in_offer_is_quoted_the_other_way_round() {
    let out = offer();
    let inn = Offer { direction: SwapDirection::LoopIn, ..offer() };
    let q_in = Quote::compute(&inn, 100_000).unwrap();
    let q_out = Quote::compute(&out, 100_000).unwrap();
    assert_eq!((q_in.htlc_amount_sat, q_in.invoice_amount_sat), (100_000, 100_000 - 1_250 - 300));
    assert_eq!((q_out.htlc_amount_sat, q_out.invoice_amount_sat), (100_000, 100_000 + 1_250 + 300));
    assert!(matches!(
        q_out.check_against(&inn, 100_000),
        Err(QuoteCheckError::Mismatch { field: "invoice_amount_sat", .. })
    ));
    let with_prepay = Offer { prepay_sat: Some(1_000), ..inn };
    assert_eq!(Quote::compute(&with_prepay, 100_000), Err(QuoteError::PrepayInLoopIn));
}
