//! The committed OpenAPI document (`node/openapi.yaml`) against the control API:
//!
//! - `routes_match_openapi`: the document's (method, path) set is exactly [`api::ROUTES`];
//! - `api_types_match_schemas`: every request and answer type of `looper_api` against its schema,
//!   both ways: samples validate (required properties present, no undocumented property, types)
//!   and use every documented property; every route's answer and body schema is one of these
//!   types; the error code enum is exactly `looper_api::ErrorCode::all()`;
//! - `live_api_matches_openapi` (regtest chain, one node): every route refuses a request without
//!   the token with `401 unauthorized`; the live answers of the GET and body-less POST routes, of
//!   `wallet/send`, `offers`, `offers/discover`, the seller's block list (`seller/blocked`), the
//!   Lightning peers, a withdrawal from the Lightning node's wallet (`ln/withdraw`), and the
//!   errors of invalid inputs (peers, closing an unknown channel, withdrawals) validate against
//!   the document, with the documented status and stable code.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::{Amount, FeeRate, Network};
use looper_node::api::{self, ApiState, NodeFacts};
use looper_node::chain::EsploraChainSource;
use looper_node::engine::io::{BdkSwapWallet, OsEntropy, SystemClock};
use looper_node::engine::{Engine, EngineConfig, EngineParts};
use looper_node::lightning::{LdkConfig, LdkLightning, Lightning};
use looper_node::nostr::{MemoryProcessedEvents, NostrTransport, TransportConfig};
use looper_node::seed::{ApiToken, Mnemonic, NodeKeys};
use looper_node::store::RedbStore;
use looper_node::wallet::LooperWallet;
use looper_protocol::messages::Offer;
use looper_protocol::seller::SellerPolicy;
use looper_protocol::SwapDirection;
use looper_regtest::RegtestChain;
use nostr_relay_builder::prelude::*;
use serde_json::{json, Value};

const OPENAPI: &str = include_str!("../openapi.yaml");

/// The live node's `safety.max_swap_amount_sat`.
const MAX_SWAP_AMOUNT_SAT: u64 = 1_000_000;

fn doc() -> Value {
    serde_norway::from_str(OPENAPI).expect("openapi.yaml parses")
}

/// Resolves a local `$ref` ("#/components/...").
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("local ref");
            let target = doc.pointer(ptr).unwrap_or_else(|| panic!("dangling ref {r}"));
            resolve(doc, target)
        }
        None => v,
    }
}

/// Validates `value` against `schema` (the subset of OpenAPI 3.0 the document uses: `$ref`,
/// `allOf`, `type`, `required`, `properties` (closed: no undocumented property), `items`,
/// `enum`, `nullable`). Returns the errors with their JSON paths.
fn validate(doc: &Value, schema: &Value, value: &Value, path: &str, errs: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        // Closed over the union of the parts' properties.
        let mut props = BTreeSet::new();
        for part in all {
            let part = resolve(doc, part);
            let mut open = part.clone();
            if let Some(p) = part.get("properties").and_then(Value::as_object) {
                props.extend(p.keys().cloned());
            }
            open.as_object_mut().unwrap().insert("x-open".into(), json!(true));
            validate(doc, &open, value, path, errs);
        }
        if let Some(obj) = value.as_object() {
            for k in obj.keys().filter(|k| !props.contains(*k)) {
                errs.push(format!("{path}: undocumented property {k}"));
            }
        }
        return;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errs.push(format!("{path}: {value} not in {e:?}"));
        }
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errs.push(format!("{path}: {value} is not {}", ty.unwrap_or("?")));
        return;
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errs.push(format!("{path}: missing required property {r}"));
            }
        }
        if let Some(props) = props {
            for (k, v) in obj {
                match props.get(k) {
                    Some(s) => validate(doc, s, v, &format!("{path}.{k}"), errs),
                    None if schema.get("x-open").is_none() => {
                        errs.push(format!("{path}: undocumented property {k}"))
                    }
                    None => {}
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{path}[{i}]"), errs);
        }
    }
}

fn check_schema(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut errs = Vec::new();
    validate(doc, schema, value, "$", &mut errs);
    assert!(errs.is_empty(), "{what}: {value} does not match its schema: {errs:#?}");
}

/// The schema of the answer `status` of `method path`.
fn response_schema(doc: &Value, method: &str, path: &str, status: u16) -> Result<Value> {
    let op = doc
        .pointer(&format!("/paths/{}/{}", path.replace('/', "~1"), method.to_lowercase()))
        .ok_or_else(|| anyhow!("{method} {path} not documented"))?;
    let resp = op
        .get("responses")
        .and_then(|r| r.get(status.to_string()))
        .ok_or_else(|| anyhow!("{method} {path} does not document status {status}"))?;
    let resp = resolve(doc, resp);
    resp.pointer("/content/application~1json/schema")
        .cloned()
        .ok_or_else(|| anyhow!("{method} {path} {status}: no JSON schema"))
}

#[test]
fn routes_match_openapi() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> =
        api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(routed.len(), api::ROUTES.len(), "duplicate route");
    assert_eq!(documented, routed, "openapi.yaml paths differ from api::ROUTES");
    // Every operation documents 200 (with a JSON schema) and 401.
    for (m, p) in api::ROUTES {
        response_schema(&doc, m, p, 200).unwrap();
        response_schema(&doc, m, p, 401).unwrap();
    }
}

/// Every buyer check's code (an API error code when a check refuses an offer) is in the error
/// schema's enum.
#[test]
fn buyer_check_codes_are_documented() {
    let doc = doc();
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
    let codes: Vec<&str> =
        codes.as_array().expect("error code enum").iter().filter_map(Value::as_str).collect();
    for code in looper_protocol::buyer::BuyerCheckError::CODES {
        assert!(codes.contains(code), "{code} missing from the Error schema's code enum");
    }
}

fn sample_offer() -> Offer {
    Offer {
        version: 1,
        offer_id: "o1".into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 1_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: Some(1_000),
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
            .parse()
            .unwrap(),
        ln_address: Some("127.0.0.1:9735".into()),
        relays: vec!["ws://127.0.0.1:7777".into()],
        pow_difficulty: Some(8),
        expires_at: 1_900_000_000,
    }
}

/// The properties a schema documents (the union over `allOf` parts).
fn documented_properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut props = BTreeSet::new();
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            props.extend(documented_properties(doc, part));
        }
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        props.extend(p.keys().cloned());
    }
    props
}

/// Checks the samples of one type against schema `name`: each validates (types, required
/// properties, nothing undocumented), and together they use every documented property (the
/// "full" sample sets every optional field), so the type and the schema have the same fields.
fn check_type<T: serde::Serialize>(doc: &Value, name: &str, samples: &[T], seen: &mut Vec<String>) {
    let schema = json!({"$ref": format!("#/components/schemas/{name}")});
    let mut used = BTreeSet::new();
    for sample in samples {
        let v = serde_json::to_value(sample).unwrap();
        check_schema(doc, &schema, &v, name);
        used.extend(
            v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        );
    }
    let documented = documented_properties(doc, &schema);
    assert_eq!(used, documented, "{name}: the type's fields differ from the schema's properties");
    seen.push(name.to_string());
}

/// The schema names a route's 200 answer (or request body) refers to, directly or as array items.
fn referenced(schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        out.insert(r.rsplit('/').next().unwrap().to_string());
    }
    if let Some(items) = schema.get("items") {
        referenced(items, out);
    }
}

fn sample_summary() -> looper_api::SwapSummary {
    looper_api::SwapSummary {
        swap_id: "00".repeat(32),
        direction: looper_protocol::SwapDirection::LoopOut,
        role: looper_api::SwapRole::Buyer,
        state: "Claimed".into(),
        status: looper_api::SwapStatus::Succeeded,
        payment_hash: Some("11".repeat(32)),
        created_at: 1_800_000_000,
        updated_at: 1_800_000_100,
        amount_sat: Some(100_000),
        cost_sat: Some(1_661),
        earned_sat: None,
        label: Some("autoloop".into()),
    }
}

/// A seller's swap: the fee it earned instead of a cost.
fn sample_seller_summary() -> looper_api::SwapSummary {
    looper_api::SwapSummary {
        role: looper_api::SwapRole::Seller,
        cost_sat: None,
        earned_sat: Some(1_550),
        ..sample_summary()
    }
}

fn sample_channel() -> looper_api::Channel {
    looper_api::Channel {
        channel_id: "c".into(),
        counterparty: "02".repeat(33),
        capacity_sat: 1,
        outbound_msat: 2,
        inbound_msat: 3,
        ready: true,
        usable: false,
    }
}

/// Every answer and request type of `looper_api` against its schema in both directions, and
/// every route's answer and request schema covered by one of them.
#[test]
fn api_types_match_schemas() {
    use looper_api as a;
    let doc = doc();
    let mut seen = Vec::new();
    let seen = &mut seen;
    let info = a::InfoResponse {
        network: Network::Regtest,
        api_version: a::API_VERSION,
        version: "0.1.0".into(),
        tip_height: 101,
        nostr_pubkey: "ab".repeat(32),
        ln_node_id: "02".repeat(33),
        ln_listen: vec!["127.0.0.1:9735".into()],
        open_swaps: 0,
        relays: vec!["ws://127.0.0.1:7777".into()],
        fee_rate_sat_vb: 2,
        fee_estimates_sat_vb: [("1".to_string(), 5), ("9".to_string(), 2)].into(),
        claim_conf_target: 9,
        max_swap_amount_sat: None,
    };
    let mainnet = a::InfoResponse {
        network: Network::Bitcoin,
        max_swap_amount_sat: Some(1_000_000),
        ..info.clone()
    };
    check_type(&doc, "Info", &[info, mainnet], seen);
    let mut minimal = sample_offer();
    minimal.prepay_sat = None;
    minimal.ln_address = None;
    minimal.pow_difficulty = None;
    check_type(&doc, "Offer", &[sample_offer(), minimal], seen);
    check_type(&doc, "OfferList", &[a::OfferList { offers: vec![sample_offer()] }], seen);
    check_type(&doc, "OfferIdResponse", &[a::OfferIdResponse { offer_id: "o1".into() }], seen);
    check_type(&doc, "WithdrawResponse", &[a::WithdrawResponse { withdrawn: "o1".into() }], seen);
    check_type(
        &doc,
        "DiscoveredOffer",
        &[a::DiscoveredOffer {
            seller: "ab".repeat(32),
            offer: sample_offer(),
            cost_sat: 1_550,
            expires_at: 1_900_000_000,
            history: a::SellerHistory { completed: 3, no_shows: 1, prepaid_lost_sat: 1_000 },
        }],
        seen,
    );
    check_type(
        &doc,
        "SwapOutRequest",
        &[a::SwapOutRequest {
            offer_id: Some("o1".into()),
            offer: Some(sample_offer()),
            seller: "ab".repeat(32),
            amount_sat: 50_000,
            max_total_fee_sat: Some(3_000),
            max_route_cltv: Some(200),
            min_confirmations: Some(2),
            conf_target: Some(6),
            max_prepay_sat: Some(2_000),
            address: Some("bcrt1q".into()),
        }],
        seen,
    );
    check_type(
        &doc,
        "SwapInRequest",
        &[a::SwapInRequest {
            offer_id: Some("in1".into()),
            offer: Some(sample_offer()),
            maker: "ab".repeat(32),
            amount_sat: 50_000,
            max_total_fee_sat: Some(3_000),
            refund_address: Some("bcrt1q".into()),
            conf_target: Some(3),
        }],
        seen,
    );
    check_type(&doc, "SwapOutResponse", &[a::SwapOutResponse { swap_id: "00".repeat(32) }], seen);
    // An unpaid swap whose record does not read: no payment hash, no amounts.
    let mut unpaid = sample_summary();
    unpaid.payment_hash = None;
    (unpaid.amount_sat, unpaid.cost_sat) = (None, None);
    let samples = [sample_summary(), sample_seller_summary(), unpaid.clone()];
    check_type(&doc, "SwapSummary", &samples, seen);
    check_type(&doc, "SwapList", &[a::SwapList { swaps: samples.to_vec() }], seen);
    check_type(
        &doc,
        "SwapDetail",
        &[
            a::SwapDetail::new(sample_summary(), json!({"v": 1})),
            a::SwapDetail::new(sample_seller_summary(), json!({"v": 1})),
            a::SwapDetail::new(unpaid, Value::Null),
        ],
        seen,
    );
    let outcomes = a::OutcomeCounts {
        pending: 1,
        succeeded: 2,
        failed: 3,
        by_state: [("Claimed".to_string(), 2), ("Refunded".to_string(), 3)].into(),
    };
    check_type(&doc, "OutcomeCounts", std::slice::from_ref(&outcomes), seen);
    let buyer = a::BuyerStats {
        outcomes: outcomes.clone(),
        volume_sat: 200_000,
        fees_paid_sat: 3_100,
        onchain_fees_paid_sat: 222,
        prepays_lost_sat: 1_000,
        lost_sat: 0,
        total_cost_sat: 4_322,
    };
    check_type(&doc, "BuyerStats", std::slice::from_ref(&buyer), seen);
    let seller = a::SellerStats {
        outcomes,
        volume_sat: 200_000,
        fees_earned_sat: 3_100,
        prepays_kept_sat: 1_000,
        onchain_fees_paid_sat: 450,
        refund_fees_unknown: 1,
        refunded_funding_fees_sat: 900,
        griefing_loss_sat: -550,
    };
    check_type(&doc, "SellerStats", std::slice::from_ref(&seller), seen);
    let direction = a::DirectionStats { direction: SwapDirection::LoopOut, buyer, seller };
    check_type(&doc, "DirectionStats", std::slice::from_ref(&direction), seen);
    check_type(
        &doc,
        "Stats",
        &[a::StatsResponse { swaps: 12, unreadable: 0, directions: vec![direction] }],
        seen,
    );
    check_type(
        &doc,
        "ScriptSpendResponse",
        &[a::ScriptSpendResponse {
            swap_id: "00".repeat(32),
            spend: "claim".into(),
            state: "claim_broadcast".into(),
        }],
        seen,
    );
    check_type(
        &doc,
        "AbortResponse",
        &[a::AbortResponse { swap_id: "00".repeat(32), abort: a::AbortResponse::REQUESTED.into() }],
        seen,
    );
    let event = a::SwapEvent { seq: 3, event: json!({"event": "paid"}) };
    check_type(&doc, "SwapEvent", std::slice::from_ref(&event), seen);
    check_type(
        &doc,
        "SwapEvents",
        &[a::SwapEvents { swap_id: "00".repeat(32), events: vec![event] }],
        seen,
    );
    check_type(
        &doc,
        "WalletBalance",
        &[a::WalletBalance {
            confirmed_sat: 1,
            trusted_pending_sat: 2,
            untrusted_pending_sat: 3,
            immature_sat: 4,
            total_sat: 10,
        }],
        seen,
    );
    check_type(&doc, "AddressResponse", &[a::AddressResponse { address: "bcrt1q".into() }], seen);
    check_type(
        &doc,
        "SendRequest",
        &[a::SendRequest { address: "bcrt1q".into(), amount_sat: 1, fee_rate_sat_vb: Some(2) }],
        seen,
    );
    check_type(&doc, "SendResponse", &[a::SendResponse { txid: "00".repeat(32) }], seen);
    check_type(
        &doc,
        "LnInfo",
        &[a::LnInfo { node_id: "02".repeat(33), channels: 1, onchain_spendable_sat: 5 }],
        seen,
    );
    check_type(
        &doc,
        "LnBalance",
        &[a::LnBalance {
            onchain_spendable_sat: 1,
            lightning_outbound_msat: 2,
            lightning_inbound_msat: 3,
        }],
        seen,
    );
    check_type(&doc, "Channel", &[sample_channel()], seen);
    check_type(&doc, "ChannelList", &[a::ChannelList { channels: vec![sample_channel()] }], seen);
    check_type(
        &doc,
        "OpenRequest",
        &[a::OpenRequest {
            node_id: "02".repeat(33),
            address: "127.0.0.1:9735".into(),
            amount_sat: 1,
            push_msat: 0,
        }],
        seen,
    );
    check_type(&doc, "OpenResponse", &[a::OpenResponse { user_channel_id: "cid".into() }], seen);
    check_type(
        &doc,
        "InvoiceRequest",
        &[a::InvoiceRequest {
            amount_msat: 1_000,
            description: Some("d".into()),
            expiry_secs: Some(60),
        }],
        seen,
    );
    check_type(&doc, "InvoiceResponse", &[a::InvoiceResponse { invoice: "lnbcrt1".into() }], seen);
    check_type(
        &doc,
        "PayRequest",
        &[a::PayRequest { invoice: "lnbcrt1".into(), max_route_cltv: Some(500) }],
        seen,
    );
    check_type(
        &doc,
        "PayResponse",
        &[
            a::PayResponse {
                payment_hash: "22".repeat(32),
                status: a::PaymentStatus::Succeeded,
                preimage: Some("11".repeat(32)),
            },
            a::PayResponse {
                payment_hash: "22".repeat(32),
                status: a::PaymentStatus::Pending,
                preimage: None,
            },
        ],
        seen,
    );
    check_type(
        &doc,
        "PaymentInfo",
        &[a::PaymentInfo {
            payment_hash: "ab".repeat(32),
            direction: a::PaymentDirection::Outbound,
            status: a::PaymentStatus::Succeeded,
            amount_msat: Some(1_000),
            fee_paid_msat: Some(0),
            preimage: Some("cd".repeat(32)),
            updated_at: 1_800_000_000,
        }],
        seen,
    );
    let peer = a::Peer {
        node_id: "02".repeat(33),
        address: "127.0.0.1:9735".into(),
        connected: true,
        persisted: false,
        channels: 1,
    };
    check_type(&doc, "Peer", std::slice::from_ref(&peer), seen);
    check_type(&doc, "PeerList", &[a::PeerList { peers: vec![peer] }], seen);
    check_type(
        &doc,
        "ConnectRequest",
        &[
            a::ConnectRequest {
                node_id: "02".repeat(33),
                address: Some("127.0.0.1:9735".into()),
                persist: true,
            },
            a::ConnectRequest {
                node_id: format!("{}@127.0.0.1:9735", "02".repeat(33)),
                address: None,
                persist: false,
            },
        ],
        seen,
    );
    check_type(
        &doc,
        "DisconnectResponse",
        &[a::DisconnectResponse { node_id: "02".repeat(33), disconnected: true }],
        seen,
    );
    check_type(&doc, "CloseRequest", &[a::CloseRequest { force: true }], seen);
    let closing = a::CloseResponse {
        channel_id: "ab".repeat(32),
        user_channel_id: "7".into(),
        counterparty: "02".repeat(33),
        force: true,
        to_self_delay_blocks: Some(144),
    };
    let cooperative =
        a::CloseResponse { force: false, to_self_delay_blocks: None, ..closing.clone() };
    check_type(&doc, "CloseResponse", &[closing, cooperative], seen);
    check_type(
        &doc,
        "LnWithdrawRequest",
        &[
            a::LnWithdrawRequest {
                address: "bcrt1q".into(),
                amount_sat: Some(50_000),
                all: false,
                fee_rate_sat_vb: Some(2),
            },
            a::LnWithdrawRequest {
                address: "bcrt1q".into(),
                amount_sat: None,
                all: true,
                fee_rate_sat_vb: None,
            },
        ],
        seen,
    );
    check_type(&doc, "SyncResponse", &[a::SyncResponse { tip_height: 7 }], seen);
    let blocked = a::BlockedKey {
        key: "ab".repeat(32),
        npub: "npub1".into(),
        source: a::BlockSource::Api,
        note: Some("spam".into()),
        added_at: Some(1_800_000_000),
    };
    let from_config = a::BlockedKey {
        source: a::BlockSource::Config,
        note: None,
        added_at: None,
        ..blocked.clone()
    };
    check_type(&doc, "BlockedKey", &[blocked.clone(), from_config.clone()], seen);
    check_type(
        &doc,
        "BlockedList",
        &[a::BlockedList { blocked: vec![from_config, blocked] }],
        seen,
    );
    check_type(
        &doc,
        "BlockRequest",
        &[
            a::BlockRequest { key: "npub1".into(), note: Some("spam".into()) },
            a::BlockRequest { key: "ab".repeat(32), note: None },
        ],
        seen,
    );
    check_type(
        &doc,
        "UnblockResponse",
        &[a::UnblockResponse { key: "ab".repeat(32), removed: true }],
        seen,
    );
    let leaf = a::ExportedLeaf {
        script: "20ab".into(),
        control_block: "c0".into(),
        leaf_hash: "11".repeat(32),
        pubkey: "ab".repeat(32),
    };
    check_type(&doc, "ExportedLeaf", std::slice::from_ref(&leaf), seen);
    let htlc = a::ExportedHtlc {
        address: "bcrt1p".into(),
        script_pubkey: "5120".into(),
        amount_sat: 100_000,
        outpoint: Some(format!("{}:0", "00".repeat(32))),
        confirmed_height: Some(101),
        output_key: "ab".repeat(32),
        internal_key: "cd".repeat(32),
        seller_musig_pubkey: "02".repeat(33),
        buyer_musig_pubkey: "03".repeat(33),
        merkle_root: "ef".repeat(32),
        timeout_height: 389,
        claim_leaf: leaf.clone(),
        refund_leaf: leaf,
    };
    let unfunded = a::ExportedHtlc { outpoint: None, confirmed_height: None, ..htlc.clone() };
    check_type(&doc, "ExportedHtlc", &[htlc.clone(), unfunded], seen);
    let key = a::ExportedKey {
        leaf: a::SpendLeaf::Claim,
        key_index: 3,
        derivation_path: "m/10147'/1'/0'/3'/1'".into(),
        pubkey: "ab".repeat(32),
        musig_derivation_path: "m/10147'/1'/0'/3'/0'".into(),
        musig_pubkey: "02".repeat(33),
    };
    check_type(&doc, "ExportedKey", std::slice::from_ref(&key), seen);
    let destination =
        a::ExportedDestination { script_pubkey: "5120".into(), address: Some("bcrt1p".into()) };
    let bare = a::ExportedDestination { address: None, ..destination.clone() };
    check_type(&doc, "ExportedDestination", &[destination.clone(), bare], seen);
    let export = a::SwapExport {
        swap_id: "00".repeat(32),
        network: Network::Regtest,
        role: a::SwapRole::Buyer,
        state: "Claiming".into(),
        status: a::SwapStatus::Pending,
        payment_hash: Some("11".repeat(32)),
        preimage: Some("22".repeat(32)),
        htlc: Some(htlc),
        key: a::ExportedKey { leaf: a::SpendLeaf::Refund, ..key },
        destination,
    };
    let requested = a::SwapExport {
        state: "Requested".into(),
        payment_hash: None,
        preimage: None,
        htlc: None,
        ..export.clone()
    };
    check_type(&doc, "SwapExport", &[export, requested], seen);
    let rule = a::AutoloopRule::default();
    check_type(&doc, "AutoloopRule", &[rule], seen);
    let by_channel = a::AutoloopOverride { channel_id: Some("cc".repeat(32)), peer: None, rule };
    let by_peer = a::AutoloopOverride { channel_id: None, peer: Some("02".repeat(33)), rule };
    check_type(&doc, "AutoloopOverride", &[by_channel.clone(), by_peer], seen);
    check_type(&doc, "AutoloopBudget", &[a::AutoloopBudget::default()], seen);
    let config = a::AutoloopConfig { overrides: vec![by_channel], ..a::AutoloopConfig::default() };
    check_type(&doc, "AutoloopConfig", std::slice::from_ref(&config), seen);
    let choice = a::AutoloopChoice {
        seller: "ab".repeat(32),
        offer_id: "o1".into(),
        swap_fee_sat: 1_250,
        maker_onchain_fee_sat: 300,
        own_onchain_fee_sat: 111,
        total_cost_sat: 1_661,
    };
    check_type(&doc, "AutoloopChoice", std::slice::from_ref(&choice), seen);
    let started = a::AutoloopDecision {
        channel_id: "cc".repeat(32),
        peer: "02".repeat(33),
        capacity_sat: 2_000_000,
        local_sat: 1_700_000,
        remote_sat: 280_000,
        local_pct: 85,
        rule,
        action: a::AutoloopAction::LoopOut,
        amount_sat: Some(500_000),
        choice: Some(choice),
        reason: "loop out 500000 sat".into(),
        swap_id: Some("00".repeat(32)),
    };
    let idle = a::AutoloopDecision {
        action: a::AutoloopAction::None,
        amount_sat: None,
        choice: None,
        swap_id: None,
        reason: "local share 50% within [20%, 80%]".into(),
        ..started.clone()
    };
    check_type(&doc, "AutoloopDecision", &[started.clone(), idle], seen);
    let run = a::AutoloopPlan {
        at: 1_800_000_000,
        dry_run: false,
        stopped: None,
        decisions: vec![started],
    };
    let dry = a::AutoloopPlan {
        dry_run: true,
        stopped: Some("autoloop is disabled".into()),
        ..run.clone()
    };
    check_type(&doc, "AutoloopPlan", &[run.clone(), dry], seen);
    let swap = a::AutoloopSwap {
        swap_id: "00".repeat(32),
        direction: looper_protocol::SwapDirection::LoopIn,
        channel_id: "cc".repeat(32),
        seller: "ab".repeat(32),
        amount_sat: 500_000,
        created_at: 1_800_000_000,
        cost_sat: 1_661,
        status: a::SwapStatus::Pending,
    };
    check_type(&doc, "AutoloopSwap", std::slice::from_ref(&swap), seen);
    let status = a::AutoloopStatus {
        config,
        period_start: 1_800_000_000,
        spent_sat: 1_661,
        left_sat: 18_339,
        in_flight: 1,
        stopped: Some("1 autoloop swap(s) in flight (max_in_flight 1)".into()),
        swaps: vec![swap],
        last_run: Some(run),
    };
    let fresh =
        a::AutoloopStatus { stopped: None, last_run: None, swaps: Vec::new(), ..status.clone() };
    check_type(&doc, "AutoloopStatus", &[status, fresh], seen);
    check_type(
        &doc,
        "Error",
        &a::ErrorCode::all().map(|c| a::ErrorBody::new(c, "m")).collect::<Vec<_>>(),
        seen,
    );

    // Every answer (and request body) of every route is one of the types checked above.
    let mut wanted = BTreeSet::new();
    for (m, p) in a::ROUTES {
        referenced(&response_schema(&doc, m, p, 200).unwrap(), &mut wanted);
        let op = doc.pointer(&format!("/paths/{}/{}", p.replace('/', "~1"), m.to_lowercase()));
        if let Some(body) =
            op.and_then(|op| op.pointer("/requestBody/content/application~1json/schema"))
        {
            referenced(body, &mut wanted);
        }
    }
    for name in &wanted {
        assert!(
            seen.contains(name),
            "schema {name} is used by a route but checked against no type"
        );
    }

    // The error codes: exactly the ones the node answers.
    let codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["code"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let ours: BTreeSet<String> = a::ErrorCode::all().map(|c| c.to_string()).collect();
    assert_eq!(codes, ours, "the Error schema's code enum differs from looper_api::ErrorCode");

    // The validator itself rejects what it should.
    let mut errs = Vec::new();
    let bad = json!({"tip_height": "x", "extra": 1});
    validate(&doc, &json!({"$ref": "#/components/schemas/SyncResponse"}), &bad, "$", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
    errs.clear();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/SyncResponse"}),
        &json!({}),
        "$",
        &mut errs,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
}

// ---------------------------------------------------------------------------------------------
// Live: one node on the regtest chain.

/// A minimal HTTP/1.1 client (no HTTP client crate needed): status and parsed JSON body.
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let ctype = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{ctype}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_string(&mut buf))
        .await
        .context("HTTP timeout")??;
    let status: u16 = buf.split(' ').nth(1).unwrap_or("0").parse()?;
    let text = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(text).with_context(|| format!("{method} {path}: {buf}"))?;
    Ok((status, json))
}

struct Live {
    doc: Value,
    addr: std::net::SocketAddr,
    token: String,
}

impl Live {
    /// Calls with the token; asserts the status and that the body matches the documented schema.
    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Result<Value> {
        let (got, v) = call(self.addr, method, path, Some(&self.token), body.as_ref()).await?;
        if got != status {
            bail!("{method} {path}: status {got}, expected {status}: {v}");
        }
        let template = api::ROUTES
            .iter()
            .find(|(m, p)| *m == method && matches(p, path.split('?').next().unwrap_or(path)))
            .map(|(_, p)| *p)
            .ok_or_else(|| anyhow!("no route for {method} {path}"))?;
        let schema = response_schema(&self.doc, method, template, status)?;
        check_schema(&self.doc, &schema, &v, &format!("{method} {path} {status}"));
        Ok(v)
    }

    /// Expects an error answer with `code` whose message mentions `needle`.
    async fn error(
        &self,
        method: &str,
        path: &str,
        body: Value,
        status: u16,
        code: &str,
        needle: &str,
    ) -> Result<()> {
        let body = (!body.is_null()).then_some(body);
        let v = self.expect(method, path, body, status).await?;
        assert_eq!(v["code"], code, "{method} {path}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{method} {path}: message {msg:?} lacks {needle:?}");
        assert!(!msg.contains('\n'), "multi-line message {msg:?}");
        assert!(!msg.contains(&self.token), "token in message");
        Ok(())
    }
}

fn matches(template: &str, path: &str) -> bool {
    let t: Vec<_> = template.split('/').collect();
    let p: Vec<_> = path.split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_api_matches_openapi() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let chain = Arc::new(RegtestChain::start(dir.join("chain"))?);
    let relay = LocalRelay::new(RelayBuilder::default());
    relay.run().await?;
    let relay_url = relay.url().await.to_string();

    // One node: store, wallet, ldk-node, Nostr transport, engine.
    let node_dir = dir.join("node");
    std::fs::create_dir_all(&node_dir)?;
    let keys = NodeKeys::from_mnemonic(&Mnemonic::generate()?, Network::Regtest)?;
    let store = RedbStore::open(&node_dir.join("looper.redb"))?;
    let wallet = Arc::new(LooperWallet::load_or_create(
        store.database(),
        &keys,
        Network::Regtest,
        FeeRate::from_sat_per_vb_u32(50),
    )?);
    let esplora = EsploraChainSource::new(&chain.esplora_url(), FeeRate::from_sat_per_vb_u32(2))?;
    let sync_client = esplora.client().clone();
    let listen =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    let ln = Arc::new(
        LdkLightning::start(
            LdkConfig {
                network: Network::Regtest,
                esplora_url: chain.esplora_url(),
                storage_dir: node_dir.join("ldk"),
                listen: vec![listen.clone()],
                alias: None,
                sync_interval_secs: 2,
                rgs_url: None,
                announcement_addresses: Vec::new(),
            },
            keys.ldk_seed_bytes()?,
        )
        .await?,
    );
    let mut tc =
        TransportConfig::new(keys.nostr_secret_key()?.secret_bytes(), vec![relay_url.clone()]);
    tc.retry_interval = Duration::from_secs(1);
    tc.fetch_timeout = Duration::from_secs(5);
    let transport = NostrTransport::connect(tc, Arc::new(MemoryProcessedEvents::new())).await?;
    // A key of the configuration's block list (`seller.blocked_keys`).
    let config_blocked = Keys::generate().public_key();
    let engine = Engine::start(EngineParts {
        store: Arc::new(store),
        wallet: Arc::new(BdkSwapWallet::new(Arc::clone(&wallet), Some(sync_client))),
        chain: esplora.into_dyn(),
        lightning: ln.clone() as Arc<dyn Lightning>,
        transport: Arc::new(transport.clone()),
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
        swap_master: keys.swap_master()?,
        config: EngineConfig {
            seller_policy: SellerPolicy::default(),
            chain_poll: Duration::from_secs(1),
            wallet_sync_every: 2,
            blocked_peers: vec![config_blocked.to_hex()],
            ..EngineConfig::default()
        },
    })
    .await?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.clone().run(async move {
        let _ = rx.await;
    }));

    let token = ApiToken::load_or_create(&node_dir)?;
    let app = api::router_with(
        ApiState {
            engine: engine.clone(),
            wallet: Arc::clone(&wallet),
            nostr: transport.clone(),
            token: Arc::new(token.clone()),
            network: Network::Regtest,
            autoloop: looper_node::autoloop::Autoloop::new(
                engine.clone(),
                transport.clone(),
                looper_node::autoloop::AutoloopSettings {
                    network: Network::Regtest,
                    buyer_policy: Default::default(),
                    interval: std::time::Duration::from_secs(60),
                    max_swap_amount_sat: None,
                },
            ),
        },
        NodeFacts {
            ln_listen: vec![listen.clone()],
            // A ceiling above the swaps below (`safety.max_swap_amount_sat`).
            max_swap_amount_sat: Some(MAX_SWAP_AMOUNT_SAT),
            ..NodeFacts::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let live = Live { doc: doc(), addr, token: token.expose().to_string() };

    // 1. Every route refuses a request without (or with a wrong) token.
    for (m, p) in api::ROUTES {
        let path = p
            .replace("{id}", &"00".repeat(32))
            .replace("{key}", &"00".repeat(32))
            .replace("{node_id}", &"02".repeat(33));
        for t in [None, Some("wrong")] {
            let (status, v) = call(addr, m, &path, t, Some(&json!({}))).await?;
            assert_eq!(status, 401, "{m} {path}: {v}");
            check_schema(&live.doc, &response_schema(&live.doc, m, p, 401)?, &v, "401");
            assert_eq!(v["code"], "unauthorized");
        }
    }
    // Unknown routes: JSON 404.
    let (status, v) = call(addr, "GET", "/v1/nope", Some(&live.token), None).await?;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")), "{v}");

    // 2. Live answers of the reading routes.
    let info = live.expect("GET", "/v1/info", None, 200).await?;
    assert_eq!(info["network"], "regtest");
    assert_eq!(info["api_version"], api::API_VERSION);
    assert_eq!(info["ln_listen"], json!([listen]));
    assert_eq!(info["ln_node_id"], ln.node_id().to_string());
    assert_eq!(info["tip_height"], chain.tip_height()?);
    assert_eq!(info["open_swaps"], 0);
    assert_eq!(info["max_swap_amount_sat"], MAX_SWAP_AMOUNT_SAT);
    for path in ["/v1/offers", "/v1/swaps", "/v1/wallet/balance", "/v1/ln/info", "/v1/ln/balance"] {
        live.expect("GET", path, None, 200).await?;
    }
    let stats = live.expect("GET", "/v1/stats", None, 200).await?;
    assert_eq!(stats["swaps"], 0, "{stats}");
    // Autoloop: off by default; rules set (partial: the rest defaults) and read back; a dry run
    // of a node without channels; invalid rules refused.
    let st = live.expect("GET", "/v1/autoloop", None, 200).await?;
    assert_eq!(
        (&st["config"]["enabled"], &st["stopped"]),
        (&json!(false), &json!("autoloop is disabled"))
    );
    let st =
        live.expect("PUT", "/v1/autoloop", Some(json!({"rule": {"high_pct": 70}})), 200).await?;
    assert_eq!(st["config"]["rule"]["high_pct"], 70);
    assert_eq!(st["config"]["rule"]["low_pct"], 20);
    assert!(st["period_start"].as_u64().unwrap() > 0, "{st}");
    let plan = live.expect("POST", "/v1/autoloop/dry-run", None, 200).await?;
    assert_eq!((&plan["dry_run"], &plan["decisions"]), (&json!(true), &json!([])));
    live.error(
        "PUT",
        "/v1/autoloop",
        json!({"rule": {"low_pct": 90}}),
        400,
        "bad_request",
        "low_pct",
    )
    .await?;
    live.error("PUT", "/v1/autoloop", json!({"bogus": 1}), 400, "bad_request", "bogus").await?;
    live.expect("GET", "/v1/ln/channels", None, 200).await?;
    let ln_addr = live.expect("POST", "/v1/ln/address", None, 200).await?;
    assert!(ln_addr["address"].as_str().unwrap().starts_with("bcrt1"));
    let invoice =
        live.expect("POST", "/v1/ln/invoice", Some(json!({"amount_msat": 5_000_000})), 200).await?;
    assert!(invoice["invoice"].as_str().unwrap().starts_with("lnbcrt"));
    let parsed: ldk_node::lightning_invoice::Bolt11Invoice =
        invoice["invoice"].as_str().unwrap().parse().unwrap();
    let hash = parsed.payment_hash().to_string();
    let payment = live.expect("GET", &format!("/v1/ln/payments/{hash}"), None, 200).await?;
    assert_eq!(payment["payment_hash"], hash.as_str());
    assert_eq!(payment["direction"], "inbound");
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["amount_msat"], 5_000_000);
    assert!(payment.get("preimage").is_none(), "an inbound preimage is never shown");

    // 3. Fund the swap wallet and the Lightning node's, sync through the API, send.
    let a = live.expect("POST", "/v1/wallet/address", None, 200).await?;
    let a = looper_regtest::parse_address(a["address"].as_str().unwrap())?;
    chain.fund_address(&a, Amount::from_sat(500_000))?;
    let ln_funding = looper_regtest::parse_address(ln_addr["address"].as_str().unwrap())?;
    chain.fund_address(&ln_funding, Amount::from_sat(300_000))?;
    chain.mine(1)?;
    let tip = chain.tip_height()?;
    let synced = wait_for("wallets funded through POST /v1/sync", || async {
        let s = live.expect("POST", "/v1/sync", None, 200).await.ok()?;
        let b = live.expect("GET", "/v1/wallet/balance", None, 200).await.ok()?;
        let l = live.expect("GET", "/v1/ln/balance", None, 200).await.ok()?;
        (b["confirmed_sat"] == 500_000 && l["onchain_spendable_sat"] == 300_000).then_some(s)
    })
    .await?;
    assert!(synced["tip_height"].as_u64().unwrap() >= u64::from(tip));
    let (_, dest) = looper_regtest::test_key("api-send")?;
    let sent = live
        .expect(
            "POST",
            "/v1/wallet/send",
            Some(json!({"address": dest.to_string(), "amount_sat": 100_000, "fee_rate_sat_vb": 2})),
            200,
        )
        .await?;
    let txid: bitcoin::Txid = sent["txid"].as_str().unwrap().parse()?;
    assert!(chain.in_mempool(&txid)?, "sent transaction not in the mempool");

    // 4. Invalid inputs: 400 naming the field; insufficient funds.
    let dest = dest.to_string();
    let send = "/v1/wallet/send";
    live.error(
        "POST",
        send,
        json!({"address": "nope", "amount_sat": 1}),
        400,
        "bad_request",
        "address",
    )
    .await?;
    // A mainnet address on regtest.
    let mainnet = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    live.error(
        "POST",
        send,
        json!({"address": mainnet, "amount_sat": 1000}),
        400,
        "bad_request",
        "address",
    )
    .await?;
    live.error(
        "POST",
        send,
        json!({"address": dest, "amount_sat": 0}),
        400,
        "bad_request",
        "amount_sat",
    )
    .await?;
    live.error(
        "POST",
        send,
        json!({"address": dest, "amount_sat": 1000, "fee_rate_sat_vb": 0}),
        400,
        "bad_request",
        "fee_rate_sat_vb",
    )
    .await?;
    live.error("POST", send, json!({"amount_sat": 1000}), 400, "bad_request", "address").await?;
    live.error(
        "POST",
        send,
        json!({"address": dest, "amount_sat": 50_000_000}),
        400,
        "insufficient_funds",
        "insufficient",
    )
    .await?;
    live.error(
        "POST",
        "/v1/ln/pay",
        json!({"invoice": "lnbcrt1garbage"}),
        400,
        "bad_request",
        "invoice",
    )
    .await?;
    let unknown = format!("/v1/ln/payments/{}", "00".repeat(32));
    live.error("GET", &unknown, json!(null), 404, "not_found", "no payment").await?;
    live.error("GET", "/v1/ln/payments/zz", json!(null), 400, "bad_request", "payment_hash")
        .await?;
    live.error(
        "POST",
        "/v1/ln/open",
        json!({"node_id": "02zz", "address": "127.0.0.1:1", "amount_sat": 100_000}),
        400,
        "bad_request",
        "node_id",
    )
    .await?;
    let peer = ln.node_id().to_string();
    live.error(
        "POST",
        "/v1/ln/open",
        json!({"node_id": peer, "address": "127.0.0.1:1", "amount_sat": 0}),
        400,
        "bad_request",
        "amount_sat",
    )
    .await?;
    // Lightning peers, closing, withdrawing: the answers and the errors of invalid inputs.
    let peers = live.expect("GET", "/v1/ln/peers", None, 200).await?;
    assert_eq!(peers, json!({"peers": []}));
    let stranger = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";
    let gone = live.expect("DELETE", &format!("/v1/ln/peers/{stranger}"), None, 200).await?;
    assert_eq!(gone, json!({"node_id": stranger, "disconnected": false}));
    live.error("DELETE", "/v1/ln/peers/02zz", json!(null), 400, "bad_request", "node_id").await?;
    let lnpeers = "/v1/ln/peers";
    live.error("POST", lnpeers, json!({"node_id": stranger}), 400, "bad_request", "address")
        .await?;
    live.error(
        "POST",
        lnpeers,
        json!({"node_id": "02zz@127.0.0.1:1"}),
        400,
        "bad_request",
        "node_id",
    )
    .await?;
    let own = format!("{}@{listen}", ln.node_id());
    live.error("POST", lnpeers, json!({"node_id": own}), 400, "bad_request", "own id").await?;
    let at = format!("{stranger}@nope");
    live.error("POST", lnpeers, json!({"node_id": at}), 400, "bad_request", "address").await?;
    // Nothing listens there: the Lightning node's error.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let at = format!("{stranger}@127.0.0.1:{closed_port}");
    live.error("POST", lnpeers, json!({"node_id": at}), 502, "lightning_error", "connect").await?;
    let close = format!("/v1/ln/channels/{}/close", "ab".repeat(32));
    live.error("POST", &close, json!({"force": true}), 404, "not_found", "no channel").await?;
    live.error("POST", "/v1/ln/channels/7/close", json!({}), 404, "not_found", "no channel 7")
        .await?;
    live.error("POST", "/v1/ln/channels/zz/close", json!({}), 400, "bad_request", "channel id")
        .await?;
    let withdraw = "/v1/ln/withdraw";
    let body = json!({"address": mainnet, "amount_sat": 10_000});
    live.error("POST", withdraw, body, 400, "bad_request", "not a regtest address").await?;
    let body = json!({"address": dest, "amount_sat": 10_000, "all": true});
    live.error("POST", withdraw, body, 400, "bad_request", "not both").await?;
    live.error("POST", withdraw, json!({"address": dest}), 400, "bad_request", "amount_sat")
        .await?;
    let body = json!({"address": dest, "amount_sat": 100});
    live.error("POST", withdraw, body, 400, "bad_request", "dust").await?;
    let body = json!({"address": dest, "amount_sat": 10_000_000});
    live.error("POST", withdraw, body, 400, "insufficient_funds", "spendable").await?;
    // A real withdrawal from the Lightning node's wallet.
    let body = json!({"address": dest, "amount_sat": 100_000, "fee_rate_sat_vb": 2});
    let sent = live.expect("POST", withdraw, Some(body), 200).await?;
    let ln_txid: bitcoin::Txid = sent["txid"].as_str().unwrap().parse()?;
    wait_for("the withdrawal in the mempool", || async {
        chain.in_mempool(&ln_txid).ok()?.then_some(())
    })
    .await?;

    live.error(
        "GET",
        "/v1/offers/discover?amount_sat=0",
        json!(null),
        400,
        "bad_request",
        "amount_sat",
    )
    .await?;
    live.error("GET", "/v1/offers/discover", json!(null), 400, "bad_request", "amount_sat").await?;
    live.error(
        "GET",
        &format!("/v1/swaps/{}", "00".repeat(32)),
        json!(null),
        404,
        "not_found",
        "no swap",
    )
    .await?;

    live.error(
        "GET",
        &format!("/v1/swaps/{}/export", "00".repeat(32)),
        json!(null),
        404,
        "not_found",
        "no swap",
    )
    .await?;
    for spend in ["claim", "refund"] {
        let path = format!("/v1/swaps/{}/{spend}", "00".repeat(32));
        live.error("POST", &path, json!({}), 404, "not_found", "no swap").await?;
    }

    // 5. Offers: publish one, discover it (cheapest first), take an unknown id.
    let mut offer = sample_offer();
    offer.ln_node_id = ln.node_id();
    offer.relays = vec![relay_url.clone()];
    offer.ln_address = None;
    offer.pow_difficulty = None;
    offer.prepay_sat = None;
    offer.expires_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3_600;
    let published =
        live.expect("POST", "/v1/offers", Some(serde_json::to_value(&offer)?), 200).await?;
    assert_eq!(published["offer_id"], "o1");
    let listed = live.expect("GET", "/v1/offers", None, 200).await?;
    assert_eq!(listed["offers"][0]["offer_id"], "o1");
    let found = wait_for("the published offer discovered", || async {
        let v = live.expect("GET", "/v1/offers/discover?amount_sat=50000", None, 200).await.ok()?;
        (!v.as_array()?.is_empty()).then_some(v)
    })
    .await?;
    let nostr = transport.public_key().to_hex();
    assert_eq!(found[0]["seller"], nostr);
    assert_eq!(found[0]["offer"]["offer_id"], "o1");
    assert_eq!(found[0]["cost_sat"], 1_000 + 50_000 * 2_500 / 1_000_000 + 300);
    live.error(
        "POST",
        "/v1/swaps/out",
        json!({"offer_id": "nope", "seller": nostr, "amount_sat": 50_000}),
        404,
        "unknown_offer",
        "nope",
    )
    .await?;
    live.error(
        "POST",
        "/v1/swaps/out",
        json!({"offer_id": "o1", "seller": "xyz", "amount_sat": 50_000}),
        400,
        "bad_request",
        "seller",
    )
    .await?;
    // An inline offer is checked as strictly as one from a relay: expired, or invalid.
    let mut stale = offer.clone();
    stale.expires_at = 1;
    live.error(
        "POST",
        "/v1/swaps/out",
        json!({"offer": stale, "seller": nostr, "amount_sat": 50_000}),
        400,
        "bad_request",
        "offer expired",
    )
    .await?;
    let mut invalid = offer.clone();
    invalid.min_amount_sat = invalid.max_amount_sat + 1;
    live.error(
        "POST",
        "/v1/swaps/out",
        json!({"offer": invalid, "seller": nostr, "amount_sat": 50_000}),
        400,
        "bad_request",
        "offer",
    )
    .await?;
    // Above the node's swap ceiling: refused before the offer is looked at (even an unknown one).
    live.error(
        "POST",
        "/v1/swaps/out",
        json!({"offer_id": "nope", "seller": nostr, "amount_sat": MAX_SWAP_AMOUNT_SAT + 1}),
        422,
        "amount_above_limit",
        "safety.max_swap_amount_sat",
    )
    .await?;
    let mut big = offer.clone();
    big.offer_id = "big".into();
    big.max_amount_sat = MAX_SWAP_AMOUNT_SAT + 1;
    live.error(
        "POST",
        "/v1/offers",
        serde_json::to_value(&big)?,
        422,
        "amount_above_limit",
        "max_amount_sat",
    )
    .await?;
    // A buyer check's refusal carries the check's own code.
    let mut thin = offer.clone();
    thin.claim_margin = 1;
    live.error(
        "POST",
        "/v1/swaps/out",
        json!({"offer": thin, "seller": nostr, "amount_sat": 50_000}),
        422,
        "claim_margin_too_low",
        "claim margin",
    )
    .await?;
    live.error("DELETE", "/v1/offers/zzz", json!(null), 404, "not_found", "zzz").await?;
    live.expect("DELETE", "/v1/offers/o1", None, 200).await?;

    // 6. The seller's block list: the configuration's key, one blocked through the API (as npub,
    // then again as hex: unchanged), bad keys and notes, unblocking.
    let list = live.expect("GET", "/v1/seller/blocked", None, 200).await?;
    assert_eq!(list["blocked"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["blocked"][0]["key"], config_blocked.to_hex());
    assert_eq!(list["blocked"][0]["source"], "config");
    let spammer = Keys::generate().public_key();
    let (hex, npub) = (spammer.to_hex(), spammer.to_bech32()?);
    let body = json!({"key": npub, "note": "spam"});
    let entry = live.expect("POST", "/v1/seller/blocked", Some(body), 200).await?;
    assert_eq!((&entry["key"], &entry["npub"]), (&json!(hex), &json!(npub)), "{entry}");
    assert_eq!((&entry["source"], &entry["note"]), (&json!("api"), &json!("spam")), "{entry}");
    let again = live.expect("POST", "/v1/seller/blocked", Some(json!({"key": hex})), 200).await?;
    assert_eq!(again, entry, "blocking again changes nothing");
    let list = live.expect("GET", "/v1/seller/blocked", None, 200).await?;
    assert_eq!(list["blocked"].as_array().map(Vec::len), Some(2), "{list}");
    let blocked = "/v1/seller/blocked";
    live.error("POST", blocked, json!({"key": "nope"}), 400, "bad_request", "key").await?;
    let long = "x".repeat(looper_api::MAX_BLOCK_NOTE_CHARS + 1);
    live.error("POST", blocked, json!({"key": hex, "note": long}), 400, "bad_request", "note")
        .await?;
    live.error("DELETE", "/v1/seller/blocked/zz", json!(null), 400, "bad_request", "key").await?;
    let config_path = format!("/v1/seller/blocked/{}", config_blocked.to_hex());
    live.error("DELETE", &config_path, json!(null), 409, "conflict", "seller.blocked_keys").await?;
    let gone = live.expect("DELETE", &format!("/v1/seller/blocked/{npub}"), None, 200).await?;
    assert_eq!(gone, json!({"key": hex, "removed": true}));
    let gone = live.expect("DELETE", &format!("/v1/seller/blocked/{hex}"), None, 200).await?;
    assert_eq!(gone["removed"], false);
    assert!(!engine.is_blocked(&spammer) && engine.is_blocked(&config_blocked));
    eprintln!(
        "live API checked: {} routes refuse without token; sent {txid}; discovered {} offer(s)",
        api::ROUTES.len(),
        found.as_array().map_or(0, Vec::len)
    );

    server.abort();
    let _ = stop.send(());
    let _ = task.await;
    transport.shutdown().await;
    ln.stop().await?;
    relay.shutdown();
    drop(chain);
    Ok(())
}
