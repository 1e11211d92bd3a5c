//! A swap's export, for a claim or a refund by hand (`GET /v1/swaps/{id}/export`,
//! `docs/recovery.md`): the HTLC rebuilt from the stored protocol record, its two leaves with
//! their control blocks, this node's keys by BIP-32 path, where the node's own spend pays, and the
//! preimage when the node knows it. Read only: nothing here touches the store or the engine.

use bitcoin::hashes::Hash;
use bitcoin::hex::DisplayHex;
use bitcoin::taproot::{ControlBlock, LeafVersion, TapLeafHash};
use bitcoin::{Address, Network, OutPoint, Script, XOnlyPublicKey};
use looper_api::{
    ExportedDestination, ExportedHtlc, ExportedKey, ExportedLeaf, SpendLeaf, SwapExport, SwapRole,
    SwapStatus,
};
use looper_protocol::buyer::BuyerState;
use looper_protocol::htlc::{Htlc, HtlcError, HtlcParams};
use looper_protocol::keys::{SwapKeys, LOOPER_PURPOSE};
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::SellerState;
use looper_protocol::swap::StateKind;
use looper_protocol::{PaymentHash, Preimage};

/// Why a swap cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The record's HTLC parameters do not build an HTLC.
    #[error("the swap's HTLC does not build from its record: {0}")]
    Htlc(#[from] HtlcError),
    /// The HTLC has no control block for a leaf (cannot happen for a built HTLC).
    #[error("the swap's HTLC has no control block for its {0} leaf")]
    ControlBlock(&'static str),
    /// The keys handed over are not the swap's.
    #[error("the keys given are for key index {given}, the swap's is {swap}")]
    WrongKeys {
        /// The keys' index.
        given: u32,
        /// The record's key index.
        swap: u32,
    },
}

/// The export of `record`, a swap of this node on `network`.
///
/// `keys`: the swap's keys (derived from the seed with the record's key index), which give the
/// seller's preimage; `paid_preimage`: the preimage the buyer's Lightning node learnt when its
/// payment succeeded. A preimage is exported only when it hashes to the swap's payment hash.
///
/// # Errors
/// [`ExportError`]: keys of another swap, or an HTLC that does not build.
pub fn export_swap(
    record: &SwapRecord,
    network: Network,
    keys: Option<&SwapKeys>,
    paid_preimage: Option<Preimage>,
) -> Result<SwapExport, ExportError> {
    let key_index = record.key_index();
    if let Some(k) = keys.filter(|k| k.index() != key_index) {
        return Err(ExportError::WrongKeys { given: k.index(), swap: key_index });
    }
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    let path = |k: u32| format!("m/{LOOPER_PURPOSE}'/{coin}'/0'/{key_index}'/{k}'");
    let (role, params, amount_sat, funding, preimage, key, destination) = match record {
        SwapRecord::Buyer(b) => {
            let (funding, preimage) = match b.state() {
                BuyerState::Funded { htlc, .. } | BuyerState::Paying { htlc, .. } => {
                    (Some((htlc.outpoint, htlc.confirmed_height)), None)
                }
                BuyerState::Claiming { htlc, preimage, .. }
                | BuyerState::ClaimBroadcast { htlc, preimage, .. } => {
                    (Some((htlc.outpoint, htlc.confirmed_height)), Some(preimage.clone()))
                }
                BuyerState::Aborted { htlc, .. } => {
                    (htlc.as_ref().map(|h| (h.outpoint, h.confirmed_height)), None)
                }
                _ => (None, None),
            };
            let key = ExportedKey {
                leaf: SpendLeaf::Claim,
                key_index,
                derivation_path: path(1),
                pubkey: b.claim_pubkey().to_string(),
                musig_derivation_path: path(0),
                musig_pubkey: b.musig_pubkey().to_string(),
            };
            (
                SwapRole::Buyer,
                b.terms().map(|t| t.htlc_params.clone()),
                b.terms().map(|t| t.quote.htlc_amount_sat),
                funding,
                preimage.or(paid_preimage),
                key,
                b.claim_destination(),
            )
        }
        SwapRecord::Seller(s) => {
            let funding = match s.state() {
                SellerState::Funded { funding, .. }
                | SellerState::Paid { funding, .. }
                | SellerState::Claimed { funding, .. }
                | SellerState::RefundingCooperatively { funding, .. }
                | SellerState::Refunding { funding, .. }
                | SellerState::Refunded { funding, .. } => {
                    Some((funding.outpoint, funding.confirmed_height))
                }
                _ => None,
            };
            // A loop in still asking has no contract yet.
            let p = s.htlc_params();
            let key = ExportedKey {
                leaf: SpendLeaf::Refund,
                key_index,
                derivation_path: path(2),
                pubkey: p.map(|p| p.refund_key.to_string()).unwrap_or_default(),
                musig_derivation_path: path(0),
                musig_pubkey: p.map(|p| p.locker_musig_key.to_string()).unwrap_or_default(),
            };
            (
                SwapRole::Seller,
                p.cloned(),
                Some(s.quote().htlc_amount_sat),
                funding,
                keys.map(|k| k.preimage().clone()),
                key,
                s.refund_destination(),
            )
        }
    };
    let payment_hash: Option<PaymentHash> = params.as_ref().map(|p| p.payment_hash);
    let preimage = preimage.filter(|p| Some(p.payment_hash()) == payment_hash);
    let htlc = match params {
        Some(params) => Some(exported_htlc(params, amount_sat.unwrap_or(0), funding)?),
        None => None,
    };
    Ok(SwapExport {
        swap_id: record.swap_id().to_string(),
        network,
        role,
        state: record.state_name().to_string(),
        status: match record.kind() {
            StateKind::Pending => SwapStatus::Pending,
            StateKind::Succeeded => SwapStatus::Succeeded,
            StateKind::Failed => SwapStatus::Failed,
        },
        payment_hash: payment_hash.map(|h| h.to_string()),
        preimage: preimage.map(|p| p.to_hex()),
        htlc,
        key,
        destination: ExportedDestination {
            script_pubkey: destination.to_hex_string(),
            address: Address::from_script(destination, network).ok().map(|a| a.to_string()),
        },
    })
}

/// The HTLC built from `params`, with its outpoint once funded.
fn exported_htlc(
    params: HtlcParams,
    amount_sat: u64,
    funding: Option<(OutPoint, Option<u32>)>,
) -> Result<ExportedHtlc, ExportError> {
    let htlc = Htlc::new(params)?;
    let p = htlc.params();
    let leaf = |script: &Script,
                control: Option<ControlBlock>,
                key: &XOnlyPublicKey,
                name: &'static str| {
        let control = control.ok_or(ExportError::ControlBlock(name))?;
        Ok::<_, ExportError>(ExportedLeaf {
            script: script.to_hex_string(),
            control_block: control.serialize().to_lower_hex_string(),
            leaf_hash: TapLeafHash::from_script(script, LeafVersion::TapScript)
                .to_byte_array()
                .to_lower_hex_string(),
            pubkey: key.to_string(),
        })
    };
    Ok(ExportedHtlc {
        address: htlc.address().to_string(),
        script_pubkey: htlc.script_pubkey().to_hex_string(),
        amount_sat,
        outpoint: funding.map(|(o, _)| o.to_string()),
        confirmed_height: funding.and_then(|(_, h)| h),
        output_key: htlc.output_key().to_string(),
        internal_key: htlc.internal_key().to_string(),
        seller_musig_pubkey: p.locker_musig_key.to_string(),
        buyer_musig_pubkey: p.claimer_musig_key.to_string(),
        merkle_root: htlc
            .merkle_root()
            .map(|r| r.to_byte_array().to_lower_hex_string())
            .unwrap_or_default(),
        timeout_height: p.timeout_height,
        claim_leaf: leaf(htlc.claim_script(), htlc.claim_control_block(), &p.claim_key, "claim")?,
        refund_leaf: leaf(
            htlc.refund_script(),
            htlc.refund_control_block(),
            &p.refund_key,
            "refund",
        )?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::str::FromStr;

    use bitcoin::bip32::Xpriv;
    use bitcoin::hashes::sha256;
    use bitcoin::hex::FromHex;
    use bitcoin::secp256k1::Secp256k1;
    use bitcoin::taproot::TaprootBuilder;
    use bitcoin::ScriptBuf;
    use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerSwap};
    use looper_protocol::messages::{Offer, SwapRequest};
    use looper_protocol::seller::{SellerPolicy, SellerSwap};
    use looper_protocol::swap::Context;
    use looper_protocol::{SwapDirection, SwapId};
    use serde_json::json;

    use super::*;

    const TIP: u32 = 500;

    fn keys(seed: u8, index: u32) -> SwapKeys {
        SwapKeys::derive(&Xpriv::new_master(Network::Regtest, &[seed; 32]).unwrap(), index).unwrap()
    }

    fn offer() -> Offer {
        serde_json::from_value(json!({
            "v": 1, "offer_id": "o", "network": "regtest", "direction": "loop_out",
            "min_amount_sat": 10_000, "max_amount_sat": 1_000_000, "fee_base_sat": 1_000,
            "fee_ppm": 2_500, "funding_fee_sat": 300, "min_confirmations": 1,
            "timeout_delta": 288, "claim_margin": 20, "invoice_expiry_secs": 3600,
            "ln_node_id": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "relays": ["ws://127.0.0.1:1"], "expires_at": 4_000_000_000u64
        }))
        .unwrap()
    }

    fn ctx() -> Context {
        Context::new(1_700_000_000, TIP, bitcoin::FeeRate::from_sat_per_vb_u32(2))
    }

    /// A P2TR script of a key of seed `seed`.
    fn p2tr(seed: u8) -> ScriptBuf {
        ScriptBuf::new_p2tr(&Secp256k1::new(), keys(seed, 0).claim_pubkey(), None)
    }

    /// The seller's record (state `AwaitingInvoice`) of a swap with the buyer's keys `buyer`.
    fn seller_record(seller: &SwapKeys, buyer: &SwapKeys) -> SwapRecord {
        let request = SwapRequest {
            offer_id: "o".into(),
            direction: SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: 100_000,
            buyer_musig_pubkey: buyer.musig_pubkey(),
            buyer_claim_pubkey: buyer.claim_pubkey(),
            max_total_fee_sat: 10_000,
            prepay_accepted: false,
        };
        let (swap, _) = SellerSwap::from_request(
            SwapId([7; 32]),
            "11".repeat(32),
            offer(),
            request,
            seller.clone(),
            p2tr(8),
            SellerPolicy::default(),
            &ctx(),
        )
        .unwrap();
        SwapRecord::from(&swap)
    }

    /// `record` with its state replaced by `state` (through its JSON form).
    fn with_state(record: &SwapRecord, state: serde_json::Value) -> SwapRecord {
        let mut v: serde_json::Value = serde_json::from_slice(&record.to_bytes().unwrap()).unwrap();
        v["swap"]["state"] = state;
        SwapRecord::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn outpoint() -> OutPoint {
        OutPoint::from_str(&format!("{}:1", "ab".repeat(32))).unwrap()
    }

    /// Checks that the export's leaves and control blocks rebuild its output key and script, with
    /// bitcoin's taproot code alone.
    fn check_rebuilds(h: &ExportedHtlc) {
        let secp = Secp256k1::verification_only();
        let internal = XOnlyPublicKey::from_str(&h.internal_key).unwrap();
        let claim = ScriptBuf::from_hex(&h.claim_leaf.script).unwrap();
        let refund = ScriptBuf::from_hex(&h.refund_leaf.script).unwrap();
        let info = TaprootBuilder::new()
            .add_leaf(1, claim.clone())
            .unwrap()
            .add_leaf(1, refund.clone())
            .unwrap()
            .finalize(&secp, internal)
            .unwrap();
        let output_key = info.output_key().to_x_only_public_key();
        assert_eq!(output_key.to_string(), h.output_key);
        assert_eq!(ScriptBuf::new_p2tr_tweaked(info.output_key()).to_hex_string(), h.script_pubkey);
        assert_eq!(
            info.merkle_root().unwrap().to_byte_array().to_lower_hex_string(),
            h.merkle_root
        );
        for (leaf, script) in [(&h.claim_leaf, &claim), (&h.refund_leaf, &refund)] {
            let bytes = Vec::<u8>::from_hex(&leaf.control_block).unwrap();
            assert_eq!(bytes.len(), 65);
            let control = ControlBlock::decode(&bytes).unwrap();
            assert_eq!(control.internal_key, internal);
            assert!(control.verify_taproot_commitment(&secp, output_key, script));
            let leaf_hash = TapLeafHash::from_script(script, LeafVersion::TapScript);
            assert_eq!(leaf_hash.to_byte_array().to_lower_hex_string(), leaf.leaf_hash);
        }
        // The keys in the leaves.
        assert!(h.claim_leaf.script.contains(&h.claim_leaf.pubkey));
        assert!(h.refund_leaf.script.starts_with(&format!("20{}", h.refund_leaf.pubkey)));
    }

    fn hashes_to(preimage: &str, payment_hash: &str) -> bool {
        let bytes = Vec::<u8>::from_hex(preimage).unwrap();
        sha256::Hash::hash(&bytes).to_byte_array().to_lower_hex_string() == payment_hash
    }

    #[test]
    fn seller_export_rebuilds_the_htlc_and_holds_the_preimage() {
        let (seller, buyer) = (keys(1, 7), keys(2, 3));
        let record = seller_record(&seller, &buyer);
        let e = export_swap(&record, Network::Regtest, Some(&seller), None).unwrap();
        assert_eq!(
            (e.role, e.status, e.network),
            (SwapRole::Seller, SwapStatus::Pending, Network::Regtest)
        );
        assert_eq!(e.swap_id, "07".repeat(32));
        let h = e.htlc.clone().unwrap();
        check_rebuilds(&h);
        assert_eq!(h.timeout_height, TIP + 288);
        assert_eq!(h.amount_sat, 100_000);
        assert_eq!(h.outpoint, None);
        assert!(h.address.starts_with("bcrt1p"), "{}", h.address);
        assert_eq!(h.seller_musig_pubkey, seller.musig_pubkey().to_string());
        assert_eq!(h.buyer_musig_pubkey, buyer.musig_pubkey().to_string());
        assert_eq!(h.refund_leaf.pubkey, seller.refund_pubkey().to_string());
        assert_eq!(h.claim_leaf.pubkey, buyer.claim_pubkey().to_string());
        // The preimage (the seller made it) hashes to the payment hash.
        let (preimage, hash) = (e.preimage.clone().unwrap(), e.payment_hash.clone().unwrap());
        assert!(hashes_to(&preimage, &hash));
        assert_eq!(hash, seller.payment_hash().to_string());
        // The refund key by path, not by secret.
        assert_eq!(e.key.leaf, SpendLeaf::Refund);
        assert_eq!(e.key.derivation_path, "m/10147'/1'/0'/7'/2'");
        assert_eq!(e.key.musig_derivation_path, "m/10147'/1'/0'/7'/0'");
        assert_eq!(e.key.pubkey, seller.refund_pubkey().to_string());
        assert_eq!(e.destination.script_pubkey, p2tr(8).to_hex_string());
        assert!(e.destination.address.as_deref().is_some_and(|a| a.starts_with("bcrt1p")));
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains(&seller.refund().secret_key().display_secret().to_string()));
        // Mainnet keys sit under coin 0.
        let main = export_swap(&record, Network::Bitcoin, Some(&seller), None).unwrap();
        assert_eq!(main.key.derivation_path, "m/10147'/0'/0'/7'/2'");
        // Without the keys, no preimage; with another swap's keys, an error.
        assert_eq!(export_swap(&record, Network::Regtest, None, None).unwrap().preimage, None);
        let e2 = export_swap(&record, Network::Regtest, Some(&keys(1, 8)), None).unwrap_err();
        assert_eq!(e2, ExportError::WrongKeys { given: 8, swap: 7 });

        // Funded: the outpoint and its height.
        let tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: Vec::new(),
            output: Vec::new(),
        };
        let funded = with_state(
            &record,
            json!({"state": "funded", "invoice": "lnbcrt1", "funding": {
                "outpoint": outpoint(), "tx": tx, "confirmed_height": 510}}),
        );
        let f = export_swap(&funded, Network::Regtest, Some(&seller), None).unwrap();
        assert_eq!(f.state, "Funded");
        let fh = f.htlc.unwrap();
        assert_eq!(fh.outpoint, Some(outpoint().to_string()));
        assert_eq!(fh.confirmed_height, Some(510));
        assert_eq!(fh.output_key, h.output_key);
    }

    #[test]
    fn buyer_export_has_the_preimage_once_paid() {
        let (seller, buyer) = (keys(1, 7), keys(2, 3));
        let start = BuyerStart {
            swap_id: SwapId([7; 32]),
            peer: "22".repeat(32),
            offer: offer(),
            amount_sat: 100_000,
            policy: BuyerPolicy::default(),
            claim_destination: p2tr(9),
            keys: buyer.clone(),
        };
        let (swap, _) = BuyerSwap::start(start, &ctx()).unwrap();
        let record = SwapRecord::from(&swap);
        // Requested: no HTLC, no payment hash yet, so no preimage whatever is given.
        let e =
            export_swap(&record, Network::Regtest, None, Some(seller.preimage().clone())).unwrap();
        assert_eq!((e.role, e.state.as_str()), (SwapRole::Buyer, "Requested"));
        assert_eq!((e.htlc, e.payment_hash, e.preimage), (None, None, None));
        assert_eq!(e.key.leaf, SpendLeaf::Claim);
        assert_eq!(e.key.derivation_path, "m/10147'/1'/0'/3'/1'");
        assert_eq!(e.key.pubkey, buyer.claim_pubkey().to_string());
        assert_eq!(e.key.musig_pubkey, buyer.musig_pubkey().to_string());
        assert_eq!(e.destination.script_pubkey, p2tr(9).to_hex_string());

        // The terms the seller's record holds, as the buyer would have accepted them.
        let SwapRecord::Seller(s) = seller_record(&seller, &buyer) else { unreachable!() };
        let terms = json!({
            "invoice": "lnbcrt1", "invoice_amount_msat": 101_550_000u64,
            "invoice_expires_at": 1_700_003_600u64, "min_final_cltv": 80,
            "quote": s.quote(), "htlc_params": s.htlc_params(),
        });
        let htlc_out = json!({"outpoint": outpoint(), "confirmed_height": 510});
        let funded =
            with_state(&record, json!({"state": "funded", "terms": terms, "htlc": htlc_out}));
        let e = export_swap(&funded, Network::Regtest, None, None).unwrap();
        let h = e.htlc.clone().unwrap();
        check_rebuilds(&h);
        assert_eq!(h.outpoint, Some(outpoint().to_string()));
        assert_eq!(e.payment_hash, Some(seller.payment_hash().to_string()));
        assert_eq!(e.preimage, None);
        // The paid preimage is exported once it hashes to the payment hash.
        let paid =
            export_swap(&funded, Network::Regtest, None, Some(seller.preimage().clone())).unwrap();
        assert!(hashes_to(&paid.preimage.unwrap(), &paid.payment_hash.unwrap()));
        let wrong =
            export_swap(&funded, Network::Regtest, None, Some(buyer.preimage().clone())).unwrap();
        assert_eq!(wrong.preimage, None);
        // Claiming: the record's own preimage.
        let claiming = with_state(
            &record,
            json!({"state": "claiming", "terms": terms, "htlc": htlc_out,
                   "preimage": seller.preimage().to_hex(), "coop_deadline_secs": 0,
                   "coop_attempts": 1}),
        );
        let c = export_swap(&claiming, Network::Regtest, None, None).unwrap();
        assert_eq!(c.preimage, Some(seller.preimage().to_hex()));
        // Both sides export the same HTLC.
        let se = export_swap(&SwapRecord::Seller(s), Network::Regtest, None, None).unwrap();
        let sh = se.htlc.unwrap();
        assert_eq!(
            (sh.output_key, sh.claim_leaf, sh.refund_leaf),
            (h.output_key, h.claim_leaf, h.refund_leaf)
        );
    }
}
