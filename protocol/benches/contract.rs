//! Criterion benchmarks of the swap contract: building an HTLC, a full two-party MuSig2
//! cooperative key-path claim, and a script-path claim.
//!
//! Run with `cargo bench -p looper-protocol --bench contract`; figures are in
//! `docs/benchmarks.md`.

// `criterion_group!` generates an undocumented public function; a panic is the failure report.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{rand::thread_rng, Secp256k1};
use bitcoin::{Amount, FeeRate, Network, OutPoint, ScriptBuf, Transaction, Txid};
use criterion::{criterion_group, criterion_main, Criterion};
use looper_protocol::htlc::{Htlc, HtlcParams};
use looper_protocol::keys::SwapKeys;
use looper_protocol::musig::{self, InitiatorSession, Signer};
use looper_protocol::spend::{self, HtlcInput, SpendPath, SpendTx};

struct Fixture {
    seller: SwapKeys,
    buyer: SwapKeys,
    params: HtlcParams,
    htlc: Htlc,
    outpoint: OutPoint,
    amount: Amount,
    destination: ScriptBuf,
    fee_rate: FeeRate,
}

fn fixture() -> Fixture {
    let seller = SwapKeys::derive(&Xpriv::new_master(Network::Regtest, &[1u8; 32]).unwrap(), 0)
        .expect("seller keys");
    let buyer = SwapKeys::derive(&Xpriv::new_master(Network::Regtest, &[2u8; 32]).unwrap(), 0)
        .expect("buyer keys");
    let params = HtlcParams {
        payment_hash: seller.payment_hash(),
        claim_key: buyer.claim_pubkey(),
        refund_key: seller.refund_pubkey(),
        locker_musig_key: seller.musig_pubkey(),
        claimer_musig_key: buyer.musig_pubkey(),
        timeout_height: 800_144,
        network: Network::Regtest,
    };
    let htlc = Htlc::new(params.clone()).expect("htlc");
    let destination =
        ScriptBuf::new_p2tr(&Secp256k1::verification_only(), buyer.claim_pubkey(), None);
    Fixture {
        seller,
        buyer,
        params,
        htlc,
        outpoint: OutPoint { txid: Txid::from_byte_array([7u8; 32]), vout: 1 },
        amount: Amount::from_sat(250_000),
        destination,
        fee_rate: FeeRate::from_sat_per_vb(2).expect("fee rate"),
    }
}

/// The whole cooperative claim as the two nodes run it: the buyer lays out the spend and starts
/// the session, the seller answers as the stateless last signer, the buyer verifies the seller's
/// partial signature, signs, aggregates, checks the result and puts it on the transaction.
fn musig_key_path_claim(f: &Fixture) -> Transaction {
    let mut rng = thread_rng();
    let input = HtlcInput {
        htlc: f.htlc.clone(),
        outpoint: f.outpoint,
        amount: f.amount,
        path: SpendPath::KeyPath,
    };
    let mut tx = SpendTx::build(vec![input], f.destination.clone(), f.fee_rate).expect("layout");
    let sighash = tx.sighash(0).expect("sighash");
    let session = InitiatorSession::new(
        &f.htlc,
        Signer::Claimer,
        f.buyer.musig().secret_key(),
        sighash,
        &mut rng,
    )
    .expect("session");
    let (seller_nonce, seller_partial) = musig::respond(
        &f.htlc,
        Signer::Locker,
        &f.seller.musig().secret_key(),
        &sighash,
        &session.public_nonce(),
        &mut rng,
    )
    .expect("respond");
    let sig = session.finish(&seller_nonce, seller_partial).expect("finish");
    tx.set_key_path_signature(0, &sig).expect("signature");
    tx.finalize().expect("signed")
}

fn script_path_claim(f: &Fixture) -> Transaction {
    spend::claim_script_path(
        &f.htlc,
        f.outpoint,
        f.amount,
        f.seller.preimage(),
        f.buyer.claim(),
        f.destination.clone(),
        f.fee_rate,
    )
    .expect("script-path claim")
}

fn contract(c: &mut Criterion) {
    let f = fixture();
    // Sanity: what is measured produces the transactions the tests check.
    assert_eq!(musig_key_path_claim(&f).vsize(), 111);
    assert_eq!(script_path_claim(&f).input[0].witness.len(), 4);

    c.bench_function("htlc_new", |b| b.iter(|| Htlc::new(black_box(f.params.clone())).unwrap()));
    c.bench_function("musig2_key_path_claim", |b| b.iter(|| musig_key_path_claim(black_box(&f))));
    c.bench_function("script_path_claim", |b| b.iter(|| script_path_claim(black_box(&f))));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = contract
}
criterion_main!(benches);
