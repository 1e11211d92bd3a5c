//! `spec/vectors/htlc.json` and `spec/vectors/spends.json`: the contract's own test vectors.
//!
//! The test rebuilds every vector from its inputs and compares. `LOOPER_BLESS=1 cargo test -p
//! looper-protocol --test vectors` rewrites the files (review the diff: a change is a protocol change).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::secp256k1::rand::{self, CryptoRng, RngCore};
use bitcoin::{Amount, FeeRate, Network, OutPoint, Txid};
use common::*;
use looper_protocol::htlc::Htlc;
use looper_protocol::keys::SwapKeys;
use looper_protocol::musig::{self, InitiatorSession, Signer};
use looper_protocol::spend::{HtlcInput, SpendPath, SpendTx};
use serde_json::{json, Value};

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors").join(name)
}

fn check_or_bless(name: &str, computed: Value) {
    let path = vector_path(name);
    if std::env::var_os("LOOPER_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (Value::Array(stored), Value::Array(computed)) = (&stored["vectors"], &computed["vectors"])
    else {
        panic!("{name}: no vectors array");
    };
    assert_eq!(stored.len(), computed.len(), "{name}: vector count");
    for (s, c) in stored.iter().zip(computed) {
        assert_eq!(s, c, "{name}: vector {} differs", s["name"]);
    }
}

struct Case {
    name: &'static str,
    seller_index: u32,
    buyer_index: u32,
    timeout_height: u32,
}

const CASES: &[Case] = &[
    Case { name: "low timeout", seller_index: 0, buyer_index: 0, timeout_height: 432 },
    Case { name: "mainnet-like timeout", seller_index: 1, buyer_index: 5, timeout_height: 870_288 },
    Case { name: "max block height", seller_index: 2, buyer_index: 2, timeout_height: 499_999_999 },
];

fn build(case: &Case) -> (SwapKeys, SwapKeys, Htlc) {
    let seller = SwapKeys::derive(&master(1), case.seller_index).unwrap();
    let buyer = SwapKeys::derive(&master(2), case.buyer_index).unwrap();
    let htlc = Htlc::new(params(&seller, &buyer, case.timeout_height)).unwrap();
    (seller, buyer, htlc)
}

#[test]
fn htlc_vectors() {
    let vectors: Vec<Value> = CASES
        .iter()
        .map(|case| {
            let (_, _, htlc) = build(case);
            let p = htlc.params();
            let addresses: serde_json::Map<String, Value> =
                [Network::Bitcoin, Network::Testnet, Network::Signet, Network::Regtest]
                    .into_iter()
                    .map(|n| {
                        let mut q = p.clone();
                        q.network = n;
                        (n.to_core_arg().to_string(), json!(Htlc::new(q).unwrap().address().to_string()))
                    })
                    .collect();
            json!({
                "name": case.name,
                "input": {
                    "payment_hash": p.payment_hash.to_string(),
                    "buyer_claim_key": p.claim_key.to_string(),
                    "seller_refund_key": p.refund_key.to_string(),
                    "seller_musig_key": p.locker_musig_key.to_string(),
                    "buyer_musig_key": p.claimer_musig_key.to_string(),
                    "timeout_height": p.timeout_height,
                },
                "output": {
                    "claim_leaf": htlc.claim_script().to_hex_string(),
                    "refund_leaf": htlc.refund_script().to_hex_string(),
                    "internal_key": htlc.internal_key().to_string(),
                    "merkle_root": htlc.merkle_root().map(|m| m.to_string()),
                    "output_key": htlc.output_key().to_string(),
                    "script_pubkey": htlc.script_pubkey().to_hex_string(),
                    "claim_control_block": hex::encode(htlc.claim_control_block().unwrap().serialize()),
                    "refund_control_block": hex::encode(htlc.refund_control_block().unwrap().serialize()),
                    "address": addresses,
                }
            })
        })
        .collect();
    check_or_bless(
        "htlc.json",
        json!({
            "description": "Looper HTLC construction (spec 03-transactions.md). Keys are hex: x-only (32 bytes) for leaf keys, compressed (33 bytes) for MuSig2 keys; KeyAgg order is (seller, buyer).",
            "vectors": vectors,
        }),
    );
}

/// An RNG that hands out one fixed 32-byte seed: a secret nonce is made from 32 bytes of the RNG,
/// so fixed seeds make the MuSig2 signatures, and so the whole transactions, reproducible.
struct SeedRng([u8; 32]);

impl RngCore for SeedRng {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used")
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert_eq!(dest.len(), 32, "a nonce seed is 32 bytes");
        dest.copy_from_slice(&self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for SeedRng {}

fn coop(
    htlc: &Htlc,
    ours: &SwapKeys,
    theirs: &SwapKeys,
    spend: &mut SpendTx,
    index: usize,
    who: Signer,
) {
    let sighash = spend.sighash(index).unwrap();
    let their_role = if who == Signer::Claimer { Signer::Locker } else { Signer::Claimer };
    let seckey = ours.musig().secret_key();
    let session =
        InitiatorSession::new(htlc, who, seckey, sighash, &mut SeedRng([0x11; 32])).unwrap();
    let (n, partial) = musig::respond(
        htlc,
        their_role,
        &theirs.musig().secret_key(),
        &sighash,
        &session.public_nonce(),
        &mut SeedRng([0x22; 32]),
    )
    .unwrap();
    let sig = session.finish(&n, partial).unwrap();
    spend.set_key_path_signature(index, &sig).unwrap();
}

#[test]
fn spend_vectors() {
    let (seller, buyer, htlc) = build(&CASES[1]);
    let amount = Amount::from_sat(1_000_000);
    let funding = OutPoint {
        txid: "4242424242424242424242424242424242424242424242424242424242424242"
            .parse::<Txid>()
            .unwrap(),
        vout: 1,
    };
    let fee_rate = FeeRate::from_sat_per_vb(4).unwrap();
    let one = |path| {
        SpendTx::build(
            vec![HtlcInput { htlc: htlc.clone(), outpoint: funding, amount, path }],
            destination(),
            fee_rate,
        )
        .unwrap()
    };
    let mut out = Vec::new();
    let mut record = |name: &str, spend: SpendTx| {
        let prevouts = spend.prevouts().to_vec();
        let tx = spend.finalize().unwrap();
        kernel_verify(&tx, &prevouts).unwrap();
        out.push(json!({
            "name": name,
            "vsize": tx.vsize(),
            "fee_sat": prevouts.iter().map(|o| o.value.to_sat()).sum::<u64>() - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>(),
            "tx_hex": serialize_hex(&tx),
        }));
    };

    let mut s = one(SpendPath::KeyPath);
    coop(&htlc, &buyer, &seller, &mut s, 0, Signer::Claimer);
    record("cooperative claim (buyer initiates)", s);

    let mut s = one(SpendPath::KeyPath);
    coop(&htlc, &seller, &buyer, &mut s, 0, Signer::Locker);
    record("cooperative refund (seller initiates)", s);

    let mut s = one(SpendPath::ClaimScript);
    s.sign_claim_script(0, buyer.claim(), seller.preimage()).unwrap();
    record("script-path claim", s);

    let mut s = one(SpendPath::RefundScript);
    s.sign_refund_script(0, seller.refund()).unwrap();
    record("script-path refund", s);

    check_or_bless(
        "spends.json",
        json!({
            "description": "Looper HTLC spends (spec 03-transactions.md) of the 'mainnet-like timeout' HTLC of htlc.json: 1000000 sat at 4242..42:1, 4 sat/vB, to a P2TR destination. MuSig2 nonces from fixed seeds (initiator 0x11.., responder 0x22..; BIP-0327 NonceGen with the secret key, aggregate key and sighash), BIP-0340 script-path signatures without aux randomness. Each tx passes libbitcoinkernel's verify.",
            "keys": {
                "seller_master_seed": hex::encode([1u8; 32]),
                "buyer_master_seed": hex::encode([2u8; 32]),
                "seller_index": CASES[1].seller_index,
                "buyer_index": CASES[1].buyer_index,
                "destination_script_pubkey": destination().to_hex_string(),
            },
            "vectors": out,
        }),
    );
}
