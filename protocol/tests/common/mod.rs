//! Shared fixtures for the protocol's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, missing_docs)]

use bitcoin::bip32::Xpriv;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use bitcoinkernel::{
    verify, PrecomputedTransactionData, ScriptPubkey, Transaction as KTransaction, TxOut as KTxOut,
    VERIFY_ALL,
};
use looper_protocol::htlc::{Htlc, HtlcParams};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::Offer;
use looper_protocol::SwapDirection;

pub fn master(tag: u8) -> Xpriv {
    Xpriv::new_master(Network::Regtest, &[tag; 32]).unwrap()
}

pub struct Pair {
    pub seller: SwapKeys,
    pub buyer: SwapKeys,
    pub htlc: Htlc,
}

/// A seller (seed 1) and a buyer (seed 2) with swap index `index` and the HTLC they agree on.
pub fn pair(index: u32, timeout_height: u32) -> Pair {
    let seller = SwapKeys::derive(&master(1), index).unwrap();
    let buyer = SwapKeys::derive(&master(2), index).unwrap();
    let htlc = Htlc::new(params(&seller, &buyer, timeout_height)).unwrap();
    Pair { seller, buyer, htlc }
}

pub fn params(seller: &SwapKeys, buyer: &SwapKeys, timeout_height: u32) -> HtlcParams {
    HtlcParams {
        payment_hash: seller.payment_hash(),
        claim_key: buyer.claim_pubkey(),
        refund_key: seller.refund_pubkey(),
        locker_musig_key: seller.musig_pubkey(),
        claimer_musig_key: buyer.musig_pubkey(),
        timeout_height,
        network: Network::Regtest,
    }
}

pub fn outpoint(n: u8) -> OutPoint {
    OutPoint { txid: Txid::from_byte_array([n; 32]), vout: u32::from(n) }
}

/// A P2TR destination (the buyer's wallet in the tests).
pub fn destination() -> ScriptBuf {
    let k = SwapKeys::derive(&master(9), 0).unwrap();
    ScriptBuf::new_p2tr(&bitcoin::secp256k1::Secp256k1::new(), k.claim_pubkey(), None)
}

/// Checks every input of `tx` with Bitcoin Core's script interpreter (libbitcoinkernel), all
/// consensus flags, given all spent outputs.
pub fn kernel_verify(tx: &Transaction, spent: &[TxOut]) -> Result<(), String> {
    let ktx = KTransaction::new(&serialize(tx)).map_err(|e| e.to_string())?;
    let outs: Vec<KTxOut> = spent
        .iter()
        .map(|o| {
            let spk = ScriptPubkey::new(o.script_pubkey.as_bytes()).unwrap();
            KTxOut::new(&spk, o.value.to_sat() as i64)
        })
        .collect();
    let data = PrecomputedTransactionData::new(&ktx, &outs).map_err(|e| e.to_string())?;
    for (i, o) in spent.iter().enumerate() {
        let spk = ScriptPubkey::new(o.script_pubkey.as_bytes()).map_err(|e| e.to_string())?;
        verify(&spk, Some(o.value.to_sat() as i64), &ktx, i, Some(VERIFY_ALL), &data)
            .map_err(|e| format!("input {i}: {e}"))?;
    }
    Ok(())
}

pub fn htlc_out(htlc: &Htlc, amount: Amount) -> TxOut {
    TxOut { value: amount, script_pubkey: htlc.script_pubkey().to_owned() }
}

/// The tests' offer: `direction`, 10 000 to 5 000 000 sat, 1 000 sat + 2 500 ppm, 300 sat funding
/// fee, no prepay, 1 confirmation, a 144-block timeout, a 20-block claim margin, expiring at
/// `expires_at`; the maker's Lightning node is the key `[7; 32]`.
pub fn offer(direction: SwapDirection, offer_id: &str, expires_at: u64) -> Offer {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    Offer {
        version: 1,
        offer_id: offer_id.into(),
        network: Network::Regtest,
        direction,
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
        ln_node_id: bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap().public_key(&secp),
        ln_address: None,
        relays: vec!["ws://127.0.0.1:7777".into()],
        pow_difficulty: None,
        expires_at,
    }
}
