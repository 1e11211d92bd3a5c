//! # looper-api
//!
//! The control API of `looper-node`, as types: every request body, query and answer of the
//! `/v1` routes ([`ROUTES`]), the error body with its stable [`ErrorCode`], and the terms of an
//! offer ([`OfferTerms`]), shared by the node (which serves them), the `looper` CLI and the
//! regtest harness's client (which read them). It depends on serde, bitcoin and
//! `looper-protocol` only (no async runtime, no HTTP), so clients stay light.
//!
//! The OpenAPI document `node/openapi.yaml` is written by hand and checked against these types by
//! `node/tests/api_openapi.rs`: every answer type's serialized fields (with every optional field
//! set, and with none) must be exactly the properties of its schema, with the schema's types, and
//! every route of [`ROUTES`] must be documented.
//!
//! ```
//! use looper_api::{ErrorBody, ErrorCode, SyncResponse};
//! let ok: SyncResponse = serde_json::from_str(r#"{"tip_height": 812}"#)?;
//! assert_eq!(ok.tip_height, 812);
//! let err: ErrorBody =
//!     serde_json::from_str(r#"{"code": "fee_too_high", "message": "fee 5000 sat above 3000 sat"}"#)?;
//! assert!(matches!(err.code, ErrorCode::Refused(ref check) if check.as_str() == "fee_too_high"));
//! assert_eq!(err.code.status(), 422);
//! # Ok::<(), serde_json::Error>(())
//! ```
#![deny(missing_docs)]

mod autoloop;
mod error;
mod terms;

use bitcoin::Network;
use looper_protocol::messages::Offer;
use looper_protocol::SwapDirection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use autoloop::{
    AutoloopAction, AutoloopBudget, AutoloopChoice, AutoloopConfig, AutoloopDecision,
    AutoloopOverride, AutoloopPlan, AutoloopRule, AutoloopStatus, AutoloopSwap, AUTOLOOP_LABEL,
};
pub use error::{BuyerCheckCode, ErrorBody, ErrorCode};
pub use terms::{OfferContext, OfferTerms, Prepay, PrepayParseError, AUTO_PREPAY_FUNDING_VBYTES};

/// Version of the control API's request and answer shapes (`GET /v1/info` → `api_version`).
pub const API_VERSION: u32 = 1;

/// Every route of the API as `(method, path)`, paths in axum/OpenAPI template syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/info"),
    ("GET", "/v1/offers"),
    ("POST", "/v1/offers"),
    ("DELETE", "/v1/offers/{id}"),
    ("GET", "/v1/offers/discover"),
    ("GET", "/v1/seller/blocked"),
    ("POST", "/v1/seller/blocked"),
    ("DELETE", "/v1/seller/blocked/{key}"),
    ("POST", "/v1/swaps/out"),
    ("POST", "/v1/swaps/in"),
    ("GET", "/v1/swaps"),
    ("GET", "/v1/swaps/{id}"),
    ("POST", "/v1/swaps/{id}/abort"),
    ("POST", "/v1/swaps/{id}/claim"),
    ("POST", "/v1/swaps/{id}/refund"),
    ("GET", "/v1/swaps/{id}/events"),
    ("GET", "/v1/swaps/{id}/export"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/wallet/balance"),
    ("POST", "/v1/wallet/address"),
    ("POST", "/v1/wallet/send"),
    ("GET", "/v1/ln/info"),
    ("GET", "/v1/ln/balance"),
    ("GET", "/v1/ln/channels"),
    ("POST", "/v1/ln/address"),
    ("POST", "/v1/ln/open"),
    ("POST", "/v1/ln/invoice"),
    ("POST", "/v1/ln/pay"),
    ("GET", "/v1/ln/payments/{hash}"),
    ("GET", "/v1/ln/peers"),
    ("POST", "/v1/ln/peers"),
    ("DELETE", "/v1/ln/peers/{node_id}"),
    ("POST", "/v1/ln/channels/{id}/close"),
    ("POST", "/v1/ln/withdraw"),
    ("POST", "/v1/sync"),
    ("GET", "/v1/autoloop"),
    ("PUT", "/v1/autoloop"),
    ("POST", "/v1/autoloop/dry-run"),
];

/// Default cap on a payment route's total CLTV expiry delta (`POST /v1/ln/pay`; LDK's default).
pub const DEFAULT_MAX_TOTAL_CLTV_EXPIRY_DELTA: u32 = 1008;

/// Default expiry of `POST /v1/ln/invoice`, seconds.
pub const DEFAULT_INVOICE_EXPIRY_SECS: u32 = 3600;

/// Longest `wait_secs` of `GET /v1/swaps/{id}/events`.
pub const MAX_EVENTS_WAIT_SECS: u64 = 60;

// ---------------------------------------------------------------------------------------------
// Node

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// The node's network ("bitcoin", "testnet", "testnet4", "signet", "regtest").
    pub network: Network,
    /// [`API_VERSION`].
    pub api_version: u32,
    /// The daemon's version.
    pub version: String,
    /// Height of the chain source's best block.
    pub tip_height: u32,
    /// The node's Nostr public key (x-only, hex): the `seller` others name in `POST /v1/swaps/out`.
    pub nostr_pubkey: String,
    /// The Lightning node id (hex).
    pub ln_node_id: String,
    /// The Lightning node's listening addresses.
    pub ln_listen: Vec<String>,
    /// Swaps not finished yet (stored as pending).
    pub open_swaps: u64,
    /// The Nostr relays the node uses.
    pub relays: Vec<String>,
    /// The fee rate a claim would use now at the node's claim target (sat/vB, rounded up).
    pub fee_rate_sat_vb: u64,
    /// The chain's fee-rate estimates now, by confirmation target in blocks (sat/vB, rounded
    /// up; keys are the targets as strings).
    #[serde(default)]
    pub fee_estimates_sat_vb: std::collections::BTreeMap<String, u64>,
    /// The node's claim confirmation target in blocks (`fees.claim_conf_target`).
    #[serde(default)]
    pub claim_conf_target: u16,
    /// The largest swap amount the node takes or offers (`safety.max_swap_amount_sat`; 1 000 000
    /// sat by default on mainnet); absent: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_swap_amount_sat: Option<u64>,
}

/// Answer of `POST /v1/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Height of the chain source's best block after the sync.
    pub tip_height: u32,
}

// ---------------------------------------------------------------------------------------------
// Offers

/// `GET /v1/offers`: the offers this node (as seller) publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferList {
    /// The offers, as published.
    pub offers: Vec<Offer>,
}

/// Answer of `POST /v1/offers` (whose body is the protocol's [`Offer`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferIdResponse {
    /// The published offer's id.
    pub offer_id: String,
}

/// Answer of `DELETE /v1/offers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawResponse {
    /// The withdrawn offer's id.
    pub withdrawn: String,
}

/// Query of `GET /v1/offers/discover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverQuery {
    /// The swap amount the offers must cover (at least 1).
    pub amount_sat: u64,
    /// The offers' direction (default `loop_out`).
    #[serde(default = "loop_out")]
    pub direction: SwapDirection,
}

fn loop_out() -> SwapDirection {
    SwapDirection::LoopOut
}

/// One entry of `GET /v1/offers/discover` (a JSON array of these, cheapest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredOffer {
    /// The seller's Nostr public key (hex): the `seller` of `POST /v1/swaps/out`.
    pub seller: String,
    /// The offer as published.
    pub offer: Offer,
    /// What the seller charges for the asked amount (swap fee + funding fee).
    pub cost_sat: u64,
    /// When the offer event expires (UNIX seconds).
    pub expires_at: u64,
    /// What this node saw of the seller as a buyer (nothing when it never swapped with it).
    #[serde(default)]
    pub history: SellerHistory,
}

/// What a buyer node saw of one seller in its own swaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerHistory {
    /// Swaps claimed.
    pub completed: u32,
    /// Swaps the seller accepted and never funded, without a word (`looper out` skips such
    /// sellers unless the offer is named).
    pub no_shows: u32,
    /// Prepays lost to those no-shows, sat.
    pub prepaid_lost_sat: u64,
}

// ---------------------------------------------------------------------------------------------
// Seller block list

/// Longest note of a blocked key (`POST /v1/seller/blocked`), in characters.
pub const MAX_BLOCK_NOTE_CHARS: usize = 200;

/// Where a key of the seller's block list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSource {
    /// `seller.blocked_keys` of the configuration (removed only there).
    Config,
    /// Blocked through the API (`POST /v1/seller/blocked`), kept in the node's store.
    Api,
}

impl std::fmt::Display for BlockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockSource::Config => "config",
            BlockSource::Api => "api",
        })
    }
}

/// One key of the seller's block list: its swap requests are dropped unanswered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedKey {
    /// The Nostr public key (x-only, hex).
    pub key: String,
    /// The same key as an `npub1...`.
    pub npub: String,
    /// Configuration or API.
    pub source: BlockSource,
    /// The note given when it was blocked through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was blocked through the API (UNIX seconds); absent for a key of the configuration
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_at: Option<u64>,
}

/// `GET /v1/seller/blocked`: the effective block list (configuration and API), ordered by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedList {
    /// The blocked keys.
    pub blocked: Vec<BlockedKey>,
}

/// Body of `POST /v1/seller/blocked` (answered with the [`BlockedKey`]; blocking a key already
/// blocked changes nothing and answers its entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// The Nostr public key: 64 hex characters (x-only) or `npub1...`.
    pub key: String,
    /// Why (one line, at most [`MAX_BLOCK_NOTE_CHARS`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Answer of `DELETE /v1/seller/blocked/{key}` (a key of the configuration is refused with
/// `409 conflict`: it is removed from `seller.blocked_keys` only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnblockResponse {
    /// The key (x-only, hex).
    pub key: String,
    /// Whether it was on the block list (`false`: nothing to do).
    pub removed: bool,
}

// ---------------------------------------------------------------------------------------------
// Swaps

/// Body of `POST /v1/swaps/out`: take `offer_id` of `seller` (looked up on the relays), or the
/// given `offer`. The limits left out default to the node's `[buyer]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapOutRequest {
    /// The offer's id (looked up on the relays when `offer` is absent; must equal
    /// `offer.offer_id` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// The offer itself (as `GET /v1/offers/discover` listed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Offer>,
    /// The seller's Nostr public key (hex); `seller_pubkey` is accepted too.
    #[serde(alias = "seller_pubkey")]
    pub seller: String,
    /// The swap amount (what the HTLC pays, before the claim fee).
    pub amount_sat: u64,
    /// Most the buyer pays in swap and funding fees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_fee_sat: Option<u64>,
    /// Most blocks the Lightning route may lock the payment for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_route_cltv: Option<u32>,
    /// Confirmations demanded before paying (the offer's count applies if higher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confirmations: Option<u32>,
    /// The claim's confirmation target in blocks (default: the node's
    /// `fees.claim_conf_target`; 1 to 1008).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf_target: Option<u16>,
    /// Most the buyer prepays before the seller locks (default: the node's
    /// `buyer.max_prepay_sat`); an offer asking more is refused (`prepay_too_high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prepay_sat: Option<u64>,
    /// Where the claim pays to (default: a new address of the node's swap wallet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Answer of `POST /v1/swaps/out` and `POST /v1/swaps/in`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapOutResponse {
    /// The new swap's id (hex).
    pub swap_id: String,
}

/// Body of `POST /v1/swaps/in`: lock `amount_sat` on chain for Lightning funds, taking the
/// loop-in offer `offer_id` of `maker` (looked up on the relays), or the given `offer`. This node
/// makes the preimage, issues the invoice and funds the HTLC from its wallet once the maker
/// accepted; the maker pays once the funding confirms. The limits left out default to the
/// node's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapInRequest {
    /// The offer's id (looked up on the relays when `offer` is absent; must equal
    /// `offer.offer_id` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// The offer itself (as `GET /v1/offers/discover?direction=loop_in` listed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Offer>,
    /// The maker's Nostr public key (hex); `seller` is accepted too.
    #[serde(alias = "seller")]
    pub maker: String,
    /// The swap amount: what this node locks in the HTLC (the invoice it is paid is that less
    /// the maker's fees).
    pub amount_sat: u64,
    /// Most this node pays the maker in fees (`swap_fee_sat + funding_fee_sat` of the quote;
    /// default: the node's `[buyer]` fee limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_fee_sat: Option<u64>,
    /// Where a refund pays to (default: a new address of the node's swap wallet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_address: Option<String>,
    /// Confirmation target (blocks, 1 to 1008) of this swap's funding transaction (default: the
    /// node's `fees.funding_conf_target`); such a funding is not batched with other targets'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf_target: Option<u16>,
}

/// Our side of a swap, by what we do with the money (the names of loop out, where the buyer is
/// the taker and the seller the maker; in a loop in the maker is the buyer and the taker the
/// seller: see [`SwapSummary::direction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapRole {
    /// The claimer: pays Lightning, receives on-chain.
    Buyer,
    /// The locker: locks on-chain, receives Lightning.
    Seller,
}

impl SwapRole {
    /// Whether this side asked for the swap (the taker) in `direction`: the buyer of a loop out,
    /// the seller (locker) of a loop in.
    pub fn is_taker(self, direction: SwapDirection) -> bool {
        (self == SwapRole::Buyer) == (direction == SwapDirection::LoopOut)
    }
}

/// Where a swap stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapStatus {
    /// Still running.
    Pending,
    /// Finished as intended (claimed).
    Succeeded,
    /// Finished without the exchange (refunded, aborted, failed).
    Failed,
}

impl SwapStatus {
    /// Whether the swap is over (succeeded or failed).
    pub fn is_final(self) -> bool {
        self != SwapStatus::Pending
    }
}

impl std::fmt::Display for SwapStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwapStatus::Pending => "pending",
            SwapStatus::Succeeded => "succeeded",
            SwapStatus::Failed => "failed",
        })
    }
}

impl std::fmt::Display for SwapRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwapRole::Buyer => "buyer",
            SwapRole::Seller => "seller",
        })
    }
}

/// One swap of `GET /v1/swaps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapSummary {
    /// The swap id (hex).
    pub swap_id: String,
    /// Loop out or loop in (records of nodes before loop in: loop out).
    #[serde(default = "loop_out")]
    pub direction: SwapDirection,
    /// Our side.
    pub role: SwapRole,
    /// The state machine's state name (`"Requested"`, ..., `"Claimed"`).
    pub state: String,
    /// Pending, succeeded or failed.
    pub status: SwapStatus,
    /// The payment hash (hex), once known.
    pub payment_hash: Option<String>,
    /// Creation time, UNIX seconds.
    pub created_at: u64,
    /// Time of the last transition, UNIX seconds.
    pub updated_at: u64,
    /// The swap amount: the HTLC's value (the quote's `amount_sat`; a buyer's swap not accepted
    /// yet: the amount it asked for). Absent when the swap's record does not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// Buyer only: what the swap costs this node, in sat. Succeeded: swap fee + funding fee +
    /// the claim's on-chain fee. Pending: swap fee + funding fee of its quote (what it will pay
    /// at least; the claim fee is not known yet). Failed: what it lost: the prepay, if it was
    /// paid, plus the invoice paid for a swap that ended `Lost`. Lightning routing fees are not
    /// included. Absent for a seller, or when the record does not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_sat: Option<u64>,
    /// Seller only: the fee this swap earns this node, in sat. Succeeded: swap fee + funding
    /// fee charged. Pending: the same, per its quote (not earned yet). Failed: the prepay kept
    /// (0 without one); the refund's on-chain fee is not subtracted (see `GET /v1/stats`).
    /// Absent for a buyer, or when the record does not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earned_sat: Option<u64>,
    /// What started the swap when not the operator: `"autoloop"` ([`AUTOLOOP_LABEL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `GET /v1/swaps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapList {
    /// Every swap.
    pub swaps: Vec<SwapSummary>,
}

/// `GET /v1/swaps/{id}`: the [`SwapSummary`] fields and the protocol's swap record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapDetail {
    /// The swap id (hex).
    pub swap_id: String,
    /// As [`SwapSummary::direction`].
    #[serde(default = "loop_out")]
    pub direction: SwapDirection,
    /// Our side.
    pub role: SwapRole,
    /// The state machine's state name (`"Requested"`, ..., `"Claimed"`).
    pub state: String,
    /// Pending, succeeded or failed.
    pub status: SwapStatus,
    /// The payment hash (hex), once known.
    pub payment_hash: Option<String>,
    /// Creation time, UNIX seconds.
    pub created_at: u64,
    /// Time of the last transition, UNIX seconds.
    pub updated_at: u64,
    /// As [`SwapSummary::amount_sat`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// As [`SwapSummary::cost_sat`] (buyer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_sat: Option<u64>,
    /// As [`SwapSummary::earned_sat`] (seller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earned_sat: Option<u64>,
    /// As [`SwapSummary::label`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The protocol's swap record (its versioned JSON; no keys, no unrevealed preimage); `null`
    /// (absent) when it could not be read.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub record: Value,
}

impl SwapDetail {
    /// The summary's fields with `record`.
    pub fn new(summary: SwapSummary, record: Value) -> Self {
        let SwapSummary {
            swap_id,
            direction,
            role,
            state,
            status,
            payment_hash,
            created_at,
            updated_at,
            amount_sat,
            cost_sat,
            earned_sat,
            label,
        } = summary;
        SwapDetail {
            swap_id,
            direction,
            role,
            state,
            status,
            payment_hash,
            created_at,
            updated_at,
            amount_sat,
            cost_sat,
            earned_sat,
            label,
            record,
        }
    }

    /// The summary's fields.
    pub fn summary(&self) -> SwapSummary {
        SwapSummary {
            swap_id: self.swap_id.clone(),
            direction: self.direction,
            role: self.role,
            state: self.state.clone(),
            status: self.status,
            payment_hash: self.payment_hash.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            amount_sat: self.amount_sat,
            cost_sat: self.cost_sat,
            earned_sat: self.earned_sat,
            label: self.label.clone(),
        }
    }

    /// Whether the swap is over (succeeded or failed).
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

/// `GET /v1/swaps/{id}/export`: what another tool needs to spend the swap's HTLC by hand through
/// this node's leaf (the buyer's claim leaf, the seller's refund leaf after the timeout;
/// `docs/recovery.md`). Hex throughout. **Secret** while the swap is open: it holds the preimage
/// when this node knows it. Keys are named by their BIP-32 path below the node's seed, never
/// given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapExport {
    /// The swap id.
    pub swap_id: String,
    /// The node's network.
    pub network: Network,
    /// Our side: the buyer claims, the seller refunds.
    pub role: SwapRole,
    /// The state machine's state name.
    pub state: String,
    /// Pending, succeeded or failed.
    pub status: SwapStatus,
    /// `sha256(preimage)`, once agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_hash: Option<String>,
    /// The preimage, when this node knows it: the seller always (it made it), the buyer once its
    /// payment succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preimage: Option<String>,
    /// The HTLC, once its parameters are agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htlc: Option<ExportedHtlc>,
    /// This node's keys of the swap.
    pub key: ExportedKey,
    /// Where this node's claim (buyer) or refund (seller) pays.
    pub destination: ExportedDestination,
}

/// The HTLC output of a [`SwapExport`] (spec `03-transactions.md`, "The HTLC output").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedHtlc {
    /// The P2TR address.
    pub address: String,
    /// The output script (`5120` ‖ output key).
    pub script_pubkey: String,
    /// The agreed value of the output.
    pub amount_sat: u64,
    /// `txid:vout` of the output, once this node saw it funded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outpoint: Option<String>,
    /// Height of the funding's block, once confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_height: Option<u32>,
    /// The taproot output key (x-only).
    pub output_key: String,
    /// The internal key (x-only): the MuSig2 aggregate (BIP-0327 KeyAgg of the seller's, then
    /// the buyer's MuSig2 key).
    pub internal_key: String,
    /// The seller's MuSig2 key (compressed), first in the aggregation.
    pub seller_musig_pubkey: String,
    /// The buyer's MuSig2 key (compressed), second in the aggregation.
    pub buyer_musig_pubkey: String,
    /// The taproot merkle root of the two leaves.
    pub merkle_root: String,
    /// The refund leaf's absolute block height: a refund's `nLockTime`.
    pub timeout_height: u32,
    /// The buyer's claim leaf.
    pub claim_leaf: ExportedLeaf,
    /// The seller's refund leaf.
    pub refund_leaf: ExportedLeaf,
}

/// One leaf of an [`ExportedHtlc`] (leaf version `0xc0`, tapscript).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedLeaf {
    /// The leaf script.
    pub script: String,
    /// The control block proving it (65 bytes: `c0|parity`, internal key, the other leaf's hash).
    pub control_block: String,
    /// Its BIP-0341 leaf hash (what a script-path signature commits to).
    pub leaf_hash: String,
    /// The key that signs for it (x-only).
    pub pubkey: String,
}

/// The leaf a node spends alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendLeaf {
    /// The buyer's claim leaf (signature and preimage).
    Claim,
    /// The seller's refund leaf (signature, after the timeout).
    Refund,
}

/// This node's keys of a swap, by BIP-32 path below the node's seed (`DATADIR/seed`, a BIP-39
/// mnemonic with an empty passphrase; spec `03-transactions.md`, "Key derivation").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedKey {
    /// The leaf this node spends alone.
    pub leaf: SpendLeaf,
    /// The swap's key index.
    pub key_index: u32,
    /// The path of the key that signs for [`ExportedKey::leaf`] (`m/10147'/coin'/0'/i'/1'` for
    /// the claim key, `.../2'` for the refund key).
    pub derivation_path: String,
    /// That key (x-only).
    pub pubkey: String,
    /// The path of this node's MuSig2 key (`m/10147'/coin'/0'/i'/0'`), for the cooperative key
    /// path (which needs the peer).
    pub musig_derivation_path: String,
    /// This node's MuSig2 key (compressed).
    pub musig_pubkey: String,
}

/// Where a [`SwapExport`]'s claim or refund pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedDestination {
    /// The output script.
    pub script_pubkey: String,
    /// Its address on the node's network, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Answer of `POST /v1/swaps/{id}/abort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortResponse {
    /// The swap id (hex).
    pub swap_id: String,
    /// Always [`AbortResponse::REQUESTED`].
    pub abort: String,
}

impl AbortResponse {
    /// The value of `abort`.
    pub const REQUESTED: &'static str = "requested";
}

/// Answer of `POST /v1/swaps/{id}/claim` (a buyer's swap: the claim leaf now) and
/// `POST /v1/swaps/{id}/refund` (a seller's swap: the refund leaf, the timeout having come).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptSpendResponse {
    /// The swap id (hex).
    pub swap_id: String,
    /// `claim` or `refund`.
    pub spend: String,
    /// The swap's state after the request (`claim_broadcast`, `refunding`, ...).
    pub state: String,
}

/// Query of `GET /v1/swaps/{id}/events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsQuery {
    /// First `seq` wanted (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// How long to wait for a new event when there is none (default 0, at most
    /// [`MAX_EVENTS_WAIT_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u64>,
}

/// One event of a swap's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapEvent {
    /// Position in the swap's log, from 0, without gaps.
    pub seq: u64,
    /// The engine's notification, tagged by `event` (`accepted`, `funding_seen`, ...,
    /// `finished`), with the time it was logged ([`EVENT_TIME`]); its shape is the engine's.
    pub event: Value,
}

/// The field of every swap event (beside `event`) that tells when the node logged it, in UNIX
/// milliseconds by the node's clock. Events logged before it was added have none.
pub const EVENT_TIME: &str = "at_ms";

impl SwapEvent {
    /// The event's tag (`"finished"`, ...), if it has one.
    pub fn kind(&self) -> Option<&str> {
        self.event.get("event").and_then(Value::as_str)
    }

    /// When the node logged the event ([`EVENT_TIME`]), UNIX milliseconds.
    pub fn at_ms(&self) -> Option<u64> {
        self.event.get(EVENT_TIME).and_then(Value::as_u64)
    }
}

/// `GET /v1/swaps/{id}/events` (long poll).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapEvents {
    /// The swap id (hex).
    pub swap_id: String,
    /// The events from `from`, oldest first.
    pub events: Vec<SwapEvent>,
}

// ---------------------------------------------------------------------------------------------
// Stats

/// `GET /v1/stats`: the operator's view of every swap this node stored, per direction and role.
/// Amounts are sums over swaps, in sat, computed from the stored swap records and their event
/// logs (nothing is asked of the chain or the Lightning node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// Swaps in the store, every direction, role and outcome.
    pub swaps: u64,
    /// Swaps whose record does not read: counted by outcome (under `loop_out`, the only direction
    /// the node runs, and their role) but in no amount.
    pub unreadable: u64,
    /// Per direction (`loop_out` always, first; `loop_in` once the node runs it).
    pub directions: Vec<DirectionStats>,
}

/// The swaps of one direction, by our role in them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Which way the money moves (`loop_out`: the buyer pays Lightning, receives on chain).
    pub direction: looper_protocol::SwapDirection,
    /// The swaps this node took (the taker, who pays Lightning in a loop out).
    pub buyer: BuyerStats,
    /// The swaps this node made (the maker, who locks on chain in a loop out).
    pub seller: SellerStats,
}

/// How many swaps stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Still running.
    pub pending: u64,
    /// Finished as intended (claimed).
    pub succeeded: u64,
    /// Finished without the exchange (refunded, aborted, lost).
    pub failed: u64,
    /// The finished swaps (succeeded or failed) by final state name (`Claimed`, `Refunded`,
    /// `Aborted`, `Lost`).
    pub by_state: std::collections::BTreeMap<String, u64>,
}

/// The swaps this node took as the buyer. Lightning routing fees are in none of these numbers
/// (the swap records do not hold them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerStats {
    /// The swaps by outcome.
    pub outcomes: OutcomeCounts,
    /// Sum of the amounts (the HTLC's value, the quote's `amount_sat`) of the succeeded swaps.
    pub volume_sat: u64,
    /// Sum over the succeeded swaps of the seller's charges: swap fee + funding fee. A prepay is
    /// part of that total (the main invoice is smaller by it), so it is not added again.
    pub fees_paid_sat: u64,
    /// Sum of the on-chain fees of the claims of the succeeded swaps (the HTLC's value minus what
    /// landed in the wallet).
    pub onchain_fees_paid_sat: u64,
    /// Sum of the prepays paid for swaps that failed (the seller never funded, or the swap was
    /// lost): gone without a swap.
    pub prepays_lost_sat: u64,
    /// Sum of the main invoices paid for swaps that ended `Lost` (paid, and the HTLC went back to
    /// the seller); their prepays are in `prepays_lost_sat`.
    pub lost_sat: u64,
    /// `fees_paid_sat + onchain_fees_paid_sat + prepays_lost_sat + lost_sat`: everything the
    /// swaps cost beyond the amounts received.
    pub total_cost_sat: u64,
}

/// The swaps this node made as the seller. The funding transactions' fees are in none of these
/// numbers: a record holds its funding transaction but not the values of its inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerStats {
    /// The swaps by outcome.
    pub outcomes: OutcomeCounts,
    /// Sum of the amounts (the HTLC's value, the quote's `amount_sat`) of the succeeded swaps.
    pub volume_sat: u64,
    /// Sum over the succeeded swaps of what the buyer was charged beyond the amount: swap fee +
    /// funding fee (the funding fee recovers the seller's funding cost, whose actual value is
    /// not in the records).
    pub fees_earned_sat: u64,
    /// Sum of the prepays received for swaps that failed (refunded or aborted after the prepay):
    /// the seller keeps them, as compensation for griefing.
    pub prepays_kept_sat: u64,
    /// Sum of the on-chain fees of the refunds of the refunded swaps (the fee of the confirmed
    /// refund, from the swap's event log). Funding fees are not included (see the type's doc).
    pub onchain_fees_paid_sat: u64,
    /// Refunded swaps whose refund fee is not in their event log (a store restored from backups
    /// holds no event logs): they count 0 in `onchain_fees_paid_sat`.
    pub refund_fees_unknown: u64,
    /// Sum of the funding fees quoted (the offer's `funding_fee_sat`) of the refunded swaps:
    /// what their funding would have been charged, an estimate of the funding cost they lost.
    /// Not part of `griefing_loss_sat`.
    pub refunded_funding_fees_sat: u64,
    /// `onchain_fees_paid_sat - prepays_kept_sat`: the refunds' fees not covered by the prepays
    /// kept. Positive: a net loss to griefing; negative: the prepays kept more than covered the
    /// refunds (a signed number, the only one of the stats).
    pub griefing_loss_sat: i64,
}

// ---------------------------------------------------------------------------------------------
// Wallet

/// `GET /v1/wallet/balance`: the swap wallet, as of its last sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletBalance {
    /// Confirmed.
    pub confirmed_sat: u64,
    /// Unconfirmed, our own change.
    pub trusted_pending_sat: u64,
    /// Unconfirmed, from others.
    pub untrusted_pending_sat: u64,
    /// Coinbase outputs not mature yet.
    pub immature_sat: u64,
    /// Everything.
    pub total_sat: u64,
}

/// An on-chain address (`POST /v1/wallet/address`, `POST /v1/ln/address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressResponse {
    /// The address.
    pub address: String,
}

/// Body of `POST /v1/wallet/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// An address of the node's network.
    pub address: String,
    /// The amount (at least 1).
    pub amount_sat: u64,
    /// The fee rate, sat/vB (default: the chain source's 6-block estimate, capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_rate_sat_vb: Option<u64>,
}

/// Answer of `POST /v1/wallet/send` and `POST /v1/ln/withdraw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// The broadcast transaction's id.
    pub txid: String,
}

// ---------------------------------------------------------------------------------------------
// Lightning

/// `GET /v1/ln/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LnInfo {
    /// The Lightning node id (hex).
    pub node_id: String,
    /// How many channels it has.
    pub channels: u64,
    /// Spendable balance of the Lightning node's own on-chain wallet.
    pub onchain_spendable_sat: u64,
}

/// `GET /v1/ln/balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LnBalance {
    /// Spendable balance of the Lightning node's own on-chain wallet.
    pub onchain_spendable_sat: u64,
    /// What the node can send over its channels.
    pub lightning_outbound_msat: u64,
    /// What the node can receive over its channels.
    pub lightning_inbound_msat: u64,
}

/// One channel of `GET /v1/ln/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Channel id (hex).
    pub channel_id: String,
    /// The peer's node id.
    pub counterparty: String,
    /// Channel size.
    pub capacity_sat: u64,
    /// What we can send.
    pub outbound_msat: u64,
    /// What we can receive.
    pub inbound_msat: u64,
    /// Whether the channel is ready (funding confirmed).
    pub ready: bool,
    /// Whether it is usable now (ready and the peer connected).
    pub usable: bool,
}

/// `GET /v1/ln/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelList {
    /// The channels.
    pub channels: Vec<Channel>,
}

/// Body of `POST /v1/ln/open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The peer's node id (hex).
    pub node_id: String,
    /// The peer's address, `host:port`.
    pub address: String,
    /// Channel size (at least 1).
    pub amount_sat: u64,
    /// Pushed to the peer at opening.
    #[serde(default)]
    pub push_msat: u64,
}

/// Answer of `POST /v1/ln/open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenResponse {
    /// The new channel's user channel id (a decimal number the node chose), which
    /// `POST /v1/ln/channels/{id}/close` takes as well as the channel id `GET /v1/ln/channels`
    /// lists.
    pub user_channel_id: String,
}

/// Body of `POST /v1/ln/invoice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRequest {
    /// The amount (at least 1).
    pub amount_msat: u64,
    /// Its description (default: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its expiry (default: [`DEFAULT_INVOICE_EXPIRY_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_secs: Option<u32>,
}

/// Answer of `POST /v1/ln/invoice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceResponse {
    /// The BOLT11 invoice.
    pub invoice: String,
}

/// Body of `POST /v1/ln/pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequest {
    /// The BOLT11 invoice (with an amount, of the node's network).
    pub invoice: String,
    /// Cap on the route's total CLTV expiry delta, in blocks (default:
    /// [`DEFAULT_MAX_TOTAL_CLTV_EXPIRY_DELTA`]); the same name as the buyer's
    /// `buyer.max_route_cltv` (`max_total_cltv_expiry_delta`, LDK's name, is still read).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "max_total_cltv_expiry_delta"
    )]
    pub max_route_cltv: Option<u32>,
}

/// Where a Lightning payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Under way.
    Pending,
    /// Settled.
    Succeeded,
    /// Failed for good.
    Failed,
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        })
    }
}

/// Which way a Lightning payment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentDirection {
    /// Received.
    Inbound,
    /// Sent.
    Outbound,
}

impl std::fmt::Display for PaymentDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PaymentDirection::Inbound => "inbound",
            PaymentDirection::Outbound => "outbound",
        })
    }
}

/// Answer of `POST /v1/ln/pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayResponse {
    /// The invoice's payment hash (hex).
    pub payment_hash: String,
    /// Pending (under way), succeeded or failed.
    pub status: PaymentStatus,
    /// The preimage, once the payment succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preimage: Option<String>,
}

/// `GET /v1/ln/payments/{hash}`: what the Lightning node knows of a payment, sent or received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    /// Its payment hash (hex).
    pub payment_hash: String,
    /// Inbound or outbound.
    pub direction: PaymentDirection,
    /// Pending, succeeded or failed.
    pub status: PaymentStatus,
    /// What it pays (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_msat: Option<u64>,
    /// Routing fee paid (outbound, once known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_paid_msat: Option<u64>,
    /// The preimage: only for an outbound payment that succeeded (the payer's proof of payment;
    /// an inbound preimage is the node's and is never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preimage: Option<String>,
    /// Last change (UNIX seconds).
    pub updated_at: u64,
}

// ---------------------------------------------------------------------------------------------
// Lightning peers, closing channels, withdrawing

/// One peer of `GET /v1/ln/peers` (also the answer of `POST /v1/ln/peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's node id (hex).
    pub node_id: String,
    /// Its address, `host:port` (the connected one, else the one remembered).
    pub address: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Whether the node remembers it and reconnects to it (after a restart too): a peer
    /// connected with `persist`, or one the node has a channel with.
    pub persisted: bool,
    /// How many channels the node has with it (open or being opened).
    pub channels: u64,
}

/// `GET /v1/ln/peers`: the peers connected or remembered, ordered by node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The peers.
    pub peers: Vec<Peer>,
}

/// Body of `POST /v1/ln/peers`: connect to a peer (answered with its [`Peer`] entry once the
/// connection is up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The peer's node id (hex), or `NODE_ID@HOST:PORT` (then `address` is left out).
    pub node_id: String,
    /// The peer's address, `host:port` (required unless `node_id` carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Remember the peer and reconnect to it, after restarts too (default: false; a peer the node
    /// opens a channel to is remembered anyway).
    #[serde(default)]
    pub persist: bool,
}

/// Answer of `DELETE /v1/ln/peers/{node_id}` (a peer the node has channels with is refused with
/// `409 conflict`: the channels would stay unusable; close them first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectResponse {
    /// The peer's node id (hex).
    pub node_id: String,
    /// Whether the node knew the peer (connected or remembered); it is now disconnected and
    /// forgotten. `false`: nothing to do.
    pub disconnected: bool,
}

/// Body of `POST /v1/ln/channels/{id}/close`; `{id}` is the channel id (64 hex characters, as
/// `GET /v1/ln/channels` lists it) or the user channel id (decimal, as `POST /v1/ln/open`
/// answers it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    /// Force-close: broadcast the node's latest commitment transaction without the peer (which
    /// may be offline). The node's funds then come back to its on-chain wallet only
    /// [`CloseResponse::to_self_delay_blocks`] blocks after that transaction confirms (the
    /// `to_self_delay` the peer set, 144 blocks by default, up to 2016), and the closing costs
    /// more fees. Default: false, a cooperative close, which needs the peer connected and pays
    /// the funds out as soon as the closing transaction confirms.
    #[serde(default)]
    pub force: bool,
}

/// Answer of `POST /v1/ln/channels/{id}/close`: the close was started (the channel leaves
/// `GET /v1/ln/channels` once it is closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseResponse {
    /// The channel id (hex).
    pub channel_id: String,
    /// The user channel id (decimal).
    pub user_channel_id: String,
    /// The peer's node id (hex).
    pub counterparty: String,
    /// Whether it was force-closed.
    pub force: bool,
    /// Force close only: how many blocks after the commitment transaction confirms the node's
    /// own funds stay locked (the channel's `to_self_delay`) before they are swept to the
    /// on-chain wallet. Absent for a cooperative close, or when the channel never had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_self_delay_blocks: Option<u16>,
}

/// Body of `POST /v1/ln/withdraw`: send from the Lightning node's own on-chain wallet (the one
/// `POST /v1/ln/address` funds and closed channels pay back to). Exactly one of `amount_sat`
/// and `all: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LnWithdrawRequest {
    /// An address of the node's network.
    pub address: String,
    /// The amount (at least the address's dust limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// Send everything spendable (less the fee), keeping the reserve that open anchor channels
    /// need for their closing fees.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// The fee rate, sat/vB (default: the Lightning node's own estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_rate_sat_vb: Option<u64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn the_route_cltv_cap_has_one_name_and_reads_the_old_one() {
        let new: PayRequest =
            serde_json::from_str(r#"{"invoice":"lnbcrt1","max_route_cltv":500}"#).unwrap();
        let old: PayRequest =
            serde_json::from_str(r#"{"invoice":"lnbcrt1","max_total_cltv_expiry_delta":500}"#)
                .unwrap();
        assert_eq!(new, old);
        assert_eq!(new.max_route_cltv, Some(500));
        assert!(serde_json::to_string(&new).unwrap().contains("\"max_route_cltv\":500"));
    }

    #[test]
    fn network_serializes_as_the_node_names_it() {
        for n in [
            Network::Bitcoin,
            Network::Testnet,
            Network::Testnet4,
            Network::Signet,
            Network::Regtest,
        ] {
            assert_eq!(serde_json::to_value(n).unwrap(), Value::String(n.to_string()));
        }
    }

    #[test]
    fn swap_detail_is_flat() {
        let summary = SwapSummary {
            swap_id: "ab".into(),
            direction: SwapDirection::LoopOut,
            role: SwapRole::Buyer,
            state: "Claimed".into(),
            status: SwapStatus::Succeeded,
            payment_hash: None,
            created_at: 1,
            updated_at: 2,
            amount_sat: Some(100_000),
            cost_sat: Some(1_661),
            earned_sat: None,
            label: None,
        };
        let d = SwapDetail::new(summary.clone(), serde_json::json!({"v": 1}));
        assert_eq!(d.summary(), summary);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["swap_id"], "ab");
        assert_eq!((&v["amount_sat"], &v["cost_sat"]), (&json!(100_000), &json!(1_661)));
        assert!(v.get("earned_sat").is_none(), "{v}");
        assert_eq!(v["role"], "buyer");
        assert_eq!(v["payment_hash"], Value::Null);
        assert_eq!(v["record"]["v"], 1);
        assert_eq!(serde_json::from_value::<SwapDetail>(v).unwrap(), d);
    }

    #[test]
    fn a_summary_without_amounts_still_reads() {
        // An older node's answer: no direction, amount, cost or earned fee.
        let v = json!({"swap_id": "ab", "role": "seller", "state": "Claimed",
            "status": "succeeded", "payment_hash": null, "created_at": 1, "updated_at": 2});
        let s: SwapSummary = serde_json::from_value(v.clone()).unwrap();
        assert_eq!((s.amount_sat, s.cost_sat, s.earned_sat), (None, None, None));
        assert_eq!(s.direction, SwapDirection::LoopOut);
        let mut again = v;
        again["direction"] = json!("loop_out");
        assert_eq!(serde_json::to_value(&s).unwrap(), again);
    }

    #[test]
    fn stats_serialize_with_the_direction_and_a_signed_griefing_loss() {
        let seller = SellerStats { griefing_loss_sat: -300, ..SellerStats::default() };
        let stats = StatsResponse {
            swaps: 0,
            unreadable: 0,
            directions: vec![DirectionStats {
                direction: looper_protocol::SwapDirection::LoopOut,
                buyer: BuyerStats::default(),
                seller,
            }],
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(v["directions"][0]["direction"], "loop_out");
        assert_eq!(v["directions"][0]["seller"]["griefing_loss_sat"], -300);
        assert_eq!(v["directions"][0]["buyer"]["outcomes"]["by_state"], json!({}));
        assert_eq!(serde_json::from_value::<StatsResponse>(v).unwrap(), stats);
    }

    #[test]
    fn lightning_requests_read_with_their_defaults() {
        let c: ConnectRequest = serde_json::from_str(r#"{"node_id": "02ab@h:1"}"#).unwrap();
        assert_eq!((c.address, c.persist), (None, false));
        let close: CloseRequest = serde_json::from_str("{}").unwrap();
        assert!(!close.force);
        let w: LnWithdrawRequest =
            serde_json::from_str(r#"{"address": "bcrt1q", "amount_sat": 1000}"#).unwrap();
        assert_eq!((w.amount_sat, w.all, w.fee_rate_sat_vb), (Some(1000), false, None));
        // `all` is written only when set.
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            json!({"address": "bcrt1q", "amount_sat": 1000})
        );
        let all = LnWithdrawRequest { amount_sat: None, all: true, ..w };
        assert_eq!(serde_json::to_value(&all).unwrap(), json!({"address": "bcrt1q", "all": true}));
    }

    #[test]
    fn swap_out_request_accepts_seller_pubkey() {
        let r: SwapOutRequest =
            serde_json::from_str(r#"{"seller_pubkey": "ab", "amount_sat": 5, "offer_id": "o"}"#)
                .unwrap();
        assert_eq!(r.seller, "ab");
        assert_eq!(r.offer_id.as_deref(), Some("o"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, serde_json::json!({"seller": "ab", "amount_sat": 5, "offer_id": "o"}));
    }
}
