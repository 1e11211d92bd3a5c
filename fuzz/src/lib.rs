//! Shared fixtures of Looper's fuzz targets (`fuzz_targets/*.rs`; see `docs/fuzzing.md`).
//!
//! Fuzz targets are test code: a panic is the finding, so `unwrap` and `expect` are used freely on
//! what the fixtures themselves build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pair;

use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use bitcoin::{FeeRate, Network, ScriptBuf};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::Offer;
use looper_protocol::swap::Context;
use looper_protocol::{PaymentHash, SwapDirection, SwapId};

/// Tip height at the start of every swap the targets drive.
pub const START_HEIGHT: u32 = 1_000;
/// Unix time at the start of every swap the targets drive.
pub const START_TIME: u64 = 1_800_000_000;
/// The amount the buyer asks for.
pub const AMOUNT_SAT: u64 = 200_000;

/// The seller's Lightning node key (the offer's `ln_node_id`).
pub fn ln_secret() -> SecretKey {
    SecretKey::from_slice(&[7; 32]).unwrap()
}

/// A key that is not the seller's Lightning key.
pub fn other_secret() -> SecretKey {
    SecretKey::from_slice(&[8; 32]).unwrap()
}

/// The public key of `secret`.
pub fn public(secret: &SecretKey) -> PublicKey {
    secret.public_key(&Secp256k1::new())
}

/// A swap master key from a one-byte seed (seller 1, buyer 2).
pub fn master(tag: u8) -> Xpriv {
    Xpriv::new_master(Network::Regtest, &[tag; 32]).unwrap()
}

/// A P2TR script of a key derived from seed `tag` (wallet destinations).
pub fn p2tr(tag: u8) -> ScriptBuf {
    let k = SwapKeys::derive(&master(tag), 0).unwrap();
    ScriptBuf::new_p2tr(&Secp256k1::new(), k.claim_pubkey(), None)
}

/// The seller's offer: regtest, 10 000 to 5 000 000 sat, timeout delta 144, claim margin 20.
pub fn offer() -> Offer {
    Offer {
        version: 1,
        offer_id: "fuzz".into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 5_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: public(&ln_secret()),
        ln_address: None,
        relays: vec!["ws://127.0.0.1:7777".into()],
        pow_difficulty: None,
        expires_at: START_TIME + 86_400,
    }
}

/// The context at the start: [`START_TIME`], [`START_HEIGHT`], 2 sat/vB.
pub fn start_context() -> Context {
    Context::new(START_TIME, START_HEIGHT, FeeRate::from_sat_per_vb(2).unwrap())
}

/// The buyer's limits in every target.
pub fn buyer_policy() -> BuyerPolicy {
    BuyerPolicy {
        max_total_fee_sat: 50_000,
        max_route_cltv: 500,
        min_confirmations: 1,
        ..BuyerPolicy::default()
    }
}

/// A buyer that has just sent its `swap_request` (swap id `0xab..`, keys of seed 2, index 0).
pub fn start_buyer(ctx: &Context) -> (BuyerSwap, Vec<looper_protocol::swap::Action>) {
    let start = BuyerStart {
        swap_id: SwapId([0xab; 32]),
        peer: "seller".into(),
        offer: offer(),
        amount_sat: AMOUNT_SAT,
        policy: buyer_policy(),
        claim_destination: p2tr(20),
        keys: SwapKeys::derive(&master(2), 0).unwrap(),
    };
    BuyerSwap::start(start, ctx).unwrap()
}

/// What an invoice says; [`make_invoice`] builds and signs it.
#[derive(Debug, Clone)]
pub struct InvoiceSpec {
    /// Its network.
    pub currency: Currency,
    /// Its payment hash.
    pub payment_hash: PaymentHash,
    /// Its amount, if any.
    pub amount_msat: Option<u64>,
    /// Its creation time (unix seconds).
    pub created_at: u64,
    /// Its expiry, in seconds.
    pub expiry_secs: u64,
    /// Its `min_final_cltv_expiry_delta`.
    pub min_final_cltv: u64,
    /// Its description.
    pub description: String,
    /// The key that signs it.
    pub signer: SecretKey,
    /// Also state the payee in a `n` field.
    pub explicit_payee: Option<PublicKey>,
}

/// Builds and signs a BOLT11 invoice; `None` when lightning-invoice refuses the fields.
pub fn make_invoice(spec: &InvoiceSpec) -> Option<String> {
    let secp = Secp256k1::new();
    let builder = InvoiceBuilder::new(spec.currency.clone())
        .description(spec.description.clone())
        .payment_hash(sha256::Hash::from_byte_array(spec.payment_hash.0))
        .payment_secret(PaymentSecret([42; 32]))
        .duration_since_epoch(Duration::from_secs(spec.created_at))
        .min_final_cltv_expiry_delta(spec.min_final_cltv)
        .expiry_time(Duration::from_secs(spec.expiry_secs));
    let builder = match spec.explicit_payee {
        Some(p) => builder.payee_pub_key(p),
        None => builder,
    };
    let signed = match spec.amount_msat {
        Some(a) => builder
            .amount_milli_satoshis(a)
            .build_signed(|h| secp.sign_ecdsa_recoverable(h, &spec.signer)),
        None => builder.build_signed(|h| secp.sign_ecdsa_recoverable(h, &spec.signer)),
    };
    signed.ok().map(|i| i.to_string())
}

/// Runs a future that never waits on I/O (nostr-sdk's signer API is async) to completion.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().build().unwrap();
    }
    RT.with(|rt| rt.block_on(f))
}
