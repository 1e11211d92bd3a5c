//! The control API (axum, 127.0.0.1, bearer token from `DATADIR/api.token`).
//!
//! The request, answer and error types are [`looper_api`]'s, shared with the `looper` CLI and the
//! regtest harness; every handler answers one of them. Every route is listed in [`ROUTES`]
//! (method, path), which builds the router and is checked against the committed OpenAPI document
//! (`node/openapi.yaml`) by `node/tests/api_openapi.rs`. Errors are an [`ErrorBody`]
//! `{"code": "...", "message": "..."}` with a stable snake_case [`ErrorCode`] (a buyer check that
//! refuses an offer answers its own code, e.g. `fee_too_high`) and a one-line message that never
//! carries a secret.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Extension, Json, Router};
use bitcoin::address::NetworkUnchecked;
use bitcoin::hashes::Hash;
use bitcoin::{Address, Amount, FeeRate, Network, ScriptBuf};
use ldk_node::lightning_invoice::Bolt11Invoice;
use looper_api::{
    AbortResponse, AddressResponse, AutoloopConfig, AutoloopPlan, AutoloopStatus, BlockRequest,
    BlockedKey, BlockedList, Channel, ChannelList, CloseRequest, CloseResponse, ConnectRequest,
    DisconnectResponse, DiscoverQuery, DiscoveredOffer, ErrorBody, ErrorCode, EventsQuery,
    InfoResponse, InvoiceRequest, InvoiceResponse, LnBalance, LnInfo, LnWithdrawRequest,
    OfferIdResponse, OfferList, OpenRequest, OpenResponse, PayRequest, PayResponse,
    PaymentDirection, PaymentInfo, PaymentStatus, Peer, PeerList, ScriptSpendResponse,
    SellerHistory, SendRequest, SendResponse, StatsResponse, SwapDetail, SwapEvents, SwapExport,
    SwapInRequest, SwapList, SwapOutRequest, SwapOutResponse, SwapSummary, SyncResponse,
    UnblockResponse, WalletBalance, WithdrawResponse,
};
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::messages::Offer;
use looper_protocol::record::SwapRecord as ProtoRecord;
use looper_protocol::seller::LoopInLimits;
use looper_protocol::{PaymentHash, Preimage, SwapDirection, SwapId};

use crate::engine::{BlockListError, BlockedPeer, Engine, EngineError};
use crate::lightning::{ChannelRef, LightningError, PayOutcome, WithdrawAmount};
use crate::nostr::{NostrTransport, OfferFilter, PublicKey as NostrPublicKey};
use crate::seed::ApiToken;
use crate::stats::{self, SwapFigures};
use crate::store::{StoreError, SwapFilter, SwapRecord, SwapRole, SwapStore};
use crate::wallet::{LooperWallet, WalletError};

pub use looper_api::{API_VERSION, DEFAULT_MAX_TOTAL_CLTV_EXPIRY_DELTA, ROUTES};

/// Confirmation target (blocks) of the fee rate used by `POST /v1/wallet/send` by default.
pub const SEND_FEE_TARGET_BLOCKS: u16 = 6;

/// What the handlers share. The node ([`crate::node::LooperNode`]) hands the API its own handles
/// on the wallet and the Nostr transport, shared with the engine.
#[derive(Clone)]
pub struct ApiState {
    /// The engine: swaps, offers, the store, the chain source and the Lightning node.
    pub engine: Engine,
    /// The swap wallet (`/v1/wallet/...`).
    pub wallet: Arc<LooperWallet>,
    /// The node's Nostr transport: its public key (`GET /v1/info`) and offer discovery.
    pub nostr: NostrTransport,
    /// The bearer token.
    pub token: Arc<ApiToken>,
    /// The node's network.
    pub network: Network,
    /// Autoloop (`/v1/autoloop`).
    pub autoloop: crate::autoloop::Autoloop,
}

/// Facts about the node the engine does not hold, shown by `GET /v1/info`.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// The Lightning node's listening addresses ("127.0.0.1:9735").
    pub ln_listen: Vec<String>,
    /// The Nostr relays the node uses.
    pub relays: Vec<String>,
    /// The buyer's limits from the configuration (`[buyer]`), the defaults of `POST /v1/swaps/out`.
    pub buyer_defaults: BuyerPolicy,
    /// `[buyer] max_total_fee_ppm`: the fee limit in parts per million of the amount (the lower of
    /// this and `buyer_defaults.max_total_fee_sat` applies).
    pub buyer_max_fee_ppm: Option<u32>,
    /// `[safety] max_swap_amount_sat`: a swap (`POST /v1/swaps/out`) or an offer's maximum
    /// (`POST /v1/offers`) above it is refused with `amount_above_limit`; `None`: no ceiling.
    pub max_swap_amount_sat: Option<u64>,
}

impl NodeFacts {
    /// Refuses `amount_sat` (of the request's `field`) above the swap ceiling.
    fn check_ceiling(&self, field: &str, amount_sat: u64) -> Result<(), ApiError> {
        match self.max_swap_amount_sat {
            Some(max) if amount_sat > max => Err(ApiError::new(
                ErrorCode::AmountAboveLimit,
                format!(
                    "{field}: {amount_sat} sat is above this node's safety.max_swap_amount_sat \
                     ({max} sat); raise it in the [safety] section of looper.toml to swap more"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// An error answer: an HTTP status and an [`ErrorBody`] whose [`ErrorCode`] is one of
/// `unauthorized` (401), `bad_request` (400, the message names the field), `not_found` (404),
/// `unknown_offer` (404), `insufficient_funds` (400), the code of the taker's check that refuses
/// an offer (422: `fee_too_high`, `claim_margin_too_low`, `not_loop_in`, ...,
/// [`CheckError::CODES`](looper_protocol::checks::CheckError::CODES)),
/// `amount_above_limit` (422, above `safety.max_swap_amount_sat`), `conflict` (409; also a
/// cooperative close whose peer is away, a disconnect of a peer with channels),
/// `lightning_error` (502), `chain_error` (502), `internal` (500).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, body: ErrorBody::new(code, message) }
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, e)
    }
    fn bad(field: &str, e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::BadRequest, format!("{field}: {e}"))
    }
    fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }
    fn chain(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::ChainError, e)
    }
    fn lightning(e: LightningError) -> Self {
        match e {
            LightningError::Invalid { what, reason } => Self::bad(what, reason),
            LightningError::UnknownChannel(_) => Self::not_found(e),
            LightningError::PeerNotConnected(_) => Self::new(ErrorCode::Conflict, e),
            LightningError::InsufficientFunds(_) => Self::new(ErrorCode::InsufficientFunds, e),
            other => Self::new(ErrorCode::LightningError, other),
        }
    }
    fn wallet(e: WalletError) -> Self {
        match e {
            WalletError::CreateTx(inner) => match *inner {
                bdk_wallet::error::CreateTxError::CoinSelection(ref f) => {
                    Self::new(ErrorCode::InsufficientFunds, format!("insufficient funds: {f}"))
                }
                bdk_wallet::error::CreateTxError::OutputBelowDustLimit(_) => {
                    Self::bad("amount_sat", "below the dust limit")
                }
                other => Self::internal(format!("cannot build the transaction: {other}")),
            },
            WalletError::WrongNetwork { .. } => Self::bad("address", e),
            WalletError::Broadcast(c) => Self::chain(format!("broadcast failed: {c}")),
            WalletError::Sync(_) | WalletError::CannotConnect(_) => Self::chain(e),
            other => Self::internal(other),
        }
    }
    fn engine(e: EngineError) -> Self {
        match e {
            EngineError::Chain(c) => Self::chain(c),
            EngineError::Wallet(w) => Self::wallet(w),
            // The check's own code (`fee_too_high`, `claim_margin_too_low`, ...).
            EngineError::Refused(check) => Self::new(ErrorCode::from(&check), check),
            EngineError::UnknownSwap(id) => Self::not_found(format!("no active swap {id}")),
            other => Self::internal(other),
        }
    }
    fn autoloop(e: crate::autoloop::AutoloopError) -> Self {
        use crate::autoloop::AutoloopError;
        match e {
            AutoloopError::Invalid(reason) => Self::new(ErrorCode::BadRequest, reason),
            AutoloopError::Engine(e) => Self::engine(e),
            other => Self::internal(other),
        }
    }
    fn block_list(e: BlockListError) -> Self {
        match e {
            BlockListError::FromConfig(_) => Self::new(ErrorCode::Conflict, e),
            BlockListError::BadNote(reason) => Self::bad("note", reason),
            BlockListError::Store(s) => Self::internal(s),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type Typed<T> = Result<Json<T>, ApiError>;

fn body<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    r.map(|Json(v)| v).map_err(|e| ApiError::bad("body", e.body_text()))
}

fn positive(field: &str, v: u64) -> Result<u64, ApiError> {
    if v == 0 {
        return Err(ApiError::bad(field, "must be greater than 0"));
    }
    Ok(v)
}

fn method_router(method: &str, path: &str) -> Option<MethodRouter<ApiState>> {
    Some(match (method, path) {
        ("GET", "/v1/info") => get(info),
        ("GET", "/v1/offers") => get(list_offers),
        ("POST", "/v1/offers") => post(publish_offer),
        ("DELETE", "/v1/offers/{id}") => delete(withdraw_offer),
        ("GET", "/v1/offers/discover") => get(discover_offers),
        ("GET", "/v1/seller/blocked") => get(list_blocked),
        ("POST", "/v1/seller/blocked") => post(block_key),
        ("DELETE", "/v1/seller/blocked/{key}") => delete(unblock_key),
        ("POST", "/v1/swaps/out") => post(swap_out),
        ("POST", "/v1/swaps/in") => post(swap_in),
        ("GET", "/v1/swaps") => get(list_swaps),
        ("GET", "/v1/swaps/{id}") => get(get_swap),
        ("POST", "/v1/swaps/{id}/abort") => post(abort_swap),
        ("POST", "/v1/swaps/{id}/claim") => post(claim_swap),
        ("POST", "/v1/swaps/{id}/refund") => post(refund_swap),
        ("GET", "/v1/swaps/{id}/events") => get(swap_events),
        ("GET", "/v1/swaps/{id}/export") => get(export_swap),
        ("GET", "/v1/stats") => get(swap_stats),
        ("GET", "/v1/wallet/balance") => get(wallet_balance),
        ("POST", "/v1/wallet/address") => post(wallet_address),
        ("POST", "/v1/wallet/send") => post(wallet_send),
        ("GET", "/v1/ln/info") => get(ln_info),
        ("GET", "/v1/ln/balance") => get(ln_balance),
        ("GET", "/v1/ln/channels") => get(ln_channels),
        ("POST", "/v1/ln/address") => post(ln_address),
        ("POST", "/v1/ln/open") => post(ln_open),
        ("POST", "/v1/ln/invoice") => post(ln_invoice),
        ("POST", "/v1/ln/pay") => post(ln_pay),
        ("GET", "/v1/ln/payments/{hash}") => get(ln_payment),
        ("GET", "/v1/ln/peers") => get(ln_peers),
        ("POST", "/v1/ln/peers") => post(ln_connect),
        ("DELETE", "/v1/ln/peers/{node_id}") => delete(ln_disconnect),
        ("POST", "/v1/ln/channels/{id}/close") => post(ln_close),
        ("POST", "/v1/ln/withdraw") => post(ln_withdraw),
        ("POST", "/v1/sync") => post(sync),
        ("GET", "/v1/autoloop") => get(autoloop_status),
        ("PUT", "/v1/autoloop") => put(autoloop_set),
        ("POST", "/v1/autoloop/dry-run") => post(autoloop_dry_run),
        _ => return None,
    })
}

/// The router with every route of [`ROUTES`] and the token check; `GET /v1/info` shows no
/// Lightning listening addresses (see [`router_with`]).
pub fn router(state: ApiState) -> Router {
    router_with(state, NodeFacts::default())
}

/// The router with every route of [`ROUTES`], the token check, and `facts` for `GET /v1/info`.
pub fn router_with(state: ApiState, facts: NodeFacts) -> Router {
    let mut r = Router::new();
    for (method, path) in ROUTES {
        if let Some(m) = method_router(method, path) {
            r = r.route(path, m);
        }
    }
    r.fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                body: ErrorBody::new(ErrorCode::BadRequest, "method not allowed"),
            }
        })
        .layer(Extension(Arc::new(facts)))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

async fn auth(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !state.token.matches(presented) {
        return ApiError::new(ErrorCode::Unauthorized, "missing or wrong token").into_response();
    }
    next.run(req).await
}

async fn info(
    State(s): State<ApiState>,
    Extension(facts): Extension<Arc<NodeFacts>>,
) -> Typed<InfoResponse> {
    let tip = s.engine.chain().tip_height().await.map_err(ApiError::chain)?;
    let open = s.engine.store().list_swaps(&SwapFilter::pending()).map_err(ApiError::internal)?;
    let estimates = s.engine.chain().fee_estimates().await.map_err(ApiError::chain)?;
    let claim_target = s.engine.fee_settings().claim_target;
    let fee_rate = estimates.rate_for(claim_target);
    let fee_estimates_sat_vb = looper_protocol::fees::ESTIMATE_TARGETS
        .iter()
        .map(|t| (t.to_string(), estimates.rate_for(*t).to_sat_per_vb_ceil()))
        .collect();
    Ok(Json(InfoResponse {
        network: s.network,
        api_version: API_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        tip_height: tip,
        nostr_pubkey: s.nostr.public_key().to_hex(),
        ln_node_id: s.engine.lightning().node_id().to_string(),
        ln_listen: facts.ln_listen.clone(),
        open_swaps: open.len() as u64,
        relays: facts.relays.clone(),
        fee_rate_sat_vb: fee_rate.to_sat_per_vb_ceil(),
        fee_estimates_sat_vb,
        claim_conf_target: claim_target,
        max_swap_amount_sat: facts.max_swap_amount_sat,
    }))
}

async fn list_offers(State(s): State<ApiState>) -> Typed<OfferList> {
    let offers = s.engine.store().list_offers().map_err(ApiError::internal)?;
    let offers = offers
        .into_iter()
        .map(|(id, v)| {
            serde_json::from_value::<Offer>(v)
                .map_err(|e| ApiError::internal(format!("stored offer {id} does not read: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(OfferList { offers }))
}

async fn publish_offer(
    State(s): State<ApiState>,
    Extension(facts): Extension<Arc<NodeFacts>>,
    offer: Result<Json<Offer>, JsonRejection>,
) -> Typed<OfferIdResponse> {
    let offer = body(offer)?;
    offer.validate().map_err(|e| ApiError::bad("offer", e))?;
    facts.check_ceiling("max_amount_sat", offer.max_amount_sat)?;
    if offer.network != s.network {
        return Err(ApiError::bad("network", "offer network differs from the node's"));
    }
    s.engine.publish_offer(&offer).await.map_err(ApiError::engine)?;
    Ok(Json(OfferIdResponse { offer_id: offer.offer_id }))
}

async fn withdraw_offer(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Typed<WithdrawResponse> {
    if !s.engine.withdraw_offer(&id).await.map_err(ApiError::engine)? {
        return Err(ApiError::not_found(format!("no offer {id}")));
    }
    Ok(Json(WithdrawResponse { withdrawn: id }))
}

async fn discover_offers(
    State(s): State<ApiState>,
    q: Result<Query<DiscoverQuery>, QueryRejection>,
) -> Typed<Vec<DiscoveredOffer>> {
    let Query(q) = q.map_err(|e| ApiError::bad("amount_sat", e.body_text()))?;
    let amount_sat = positive("amount_sat", q.amount_sat)?;
    let filter =
        OfferFilter { network: s.network, amount_sat, sellers: Vec::new(), direction: q.direction };
    let found = s
        .nostr
        .discover_offers(&filter)
        .await
        .map_err(|e| ApiError::internal(format!("offer discovery failed: {e}")))?;
    let tracks = s
        .engine
        .seller_tracks()
        .map_err(|e| ApiError::internal(format!("cannot read the swap history: {e}")))?;
    Ok(Json(
        found
            .into_iter()
            .map(|d| {
                let seller = d.seller.to_hex();
                let t = tracks.get(&seller).copied().unwrap_or_default();
                DiscoveredOffer {
                    seller,
                    offer: d.offer,
                    cost_sat: d.cost_sat,
                    expires_at: d.expires_at.as_secs(),
                    history: SellerHistory {
                        completed: t.completed,
                        no_shows: t.no_shows,
                        prepaid_lost_sat: t.prepaid_lost_sat,
                    },
                }
            })
            .collect(),
    ))
}

/// A Nostr key of the block list's routes: 64 hex characters or `npub1...`.
fn nostr_key(text: &str) -> Result<NostrPublicKey, ApiError> {
    crate::config::parse_nostr_key(text).ok_or_else(|| {
        ApiError::bad("key", "not a Nostr public key (expected 64 hex characters or npub1...)")
    })
}

fn blocked_key(p: BlockedPeer) -> Result<BlockedKey, ApiError> {
    use nostr_sdk::ToBech32;
    let npub = p.key.to_bech32().map_err(ApiError::internal)?;
    Ok(BlockedKey {
        key: p.key.to_hex(),
        npub,
        source: p.source,
        note: p.note,
        added_at: p.added_at,
    })
}

async fn list_blocked(State(s): State<ApiState>) -> Typed<BlockedList> {
    let peers = s.engine.blocked_peers().map_err(ApiError::block_list)?;
    let blocked = peers.into_iter().map(blocked_key).collect::<Result<_, _>>()?;
    Ok(Json(BlockedList { blocked }))
}

async fn block_key(
    State(s): State<ApiState>,
    req: Result<Json<BlockRequest>, JsonRejection>,
) -> Typed<BlockedKey> {
    let req = body(req)?;
    let key = nostr_key(&req.key)?;
    let peer = s.engine.block_peer(key, req.note.as_deref()).map_err(ApiError::block_list)?;
    Ok(Json(blocked_key(peer)?))
}

async fn unblock_key(State(s): State<ApiState>, Path(key): Path<String>) -> Typed<UnblockResponse> {
    let key = nostr_key(&key)?;
    let removed = s.engine.unblock_peer(&key).map_err(ApiError::block_list)?;
    Ok(Json(UnblockResponse { key: key.to_hex(), removed }))
}

async fn swap_out(
    State(s): State<ApiState>,
    Extension(facts): Extension<Arc<NodeFacts>>,
    req: Result<Json<SwapOutRequest>, JsonRejection>,
) -> Typed<SwapOutResponse> {
    let req = body(req)?;
    let seller = NostrPublicKey::from_hex(&req.seller).map_err(|e| ApiError::bad("seller", e))?;
    let amount_sat = positive("amount_sat", req.amount_sat)?;
    // Before anything is looked up or sent.
    facts.check_ceiling("amount_sat", amount_sat)?;
    let destination = address_script(&s, "address", req.address.as_deref())?;
    check_conf_target(req.conf_target)?;
    let offer =
        resolve_offer(&s, req.offer, req.offer_id, seller, amount_sat, SwapDirection::LoopOut)
            .await?;
    let defaults = facts.buyer_defaults;
    let policy = BuyerPolicy {
        max_total_fee_sat: req.max_total_fee_sat.unwrap_or(fee_limit(&facts, amount_sat)),
        max_route_cltv: req.max_route_cltv.unwrap_or(defaults.max_route_cltv),
        min_confirmations: req.min_confirmations.unwrap_or(defaults.min_confirmations),
        claim_conf_target: req.conf_target.or(defaults.claim_conf_target),
        max_prepay_sat: req.max_prepay_sat.unwrap_or(defaults.max_prepay_sat),
        ..defaults
    };
    let id = s
        .engine
        .take_offer_to(offer, seller, amount_sat, policy, destination)
        .await
        .map_err(ApiError::engine)?;
    Ok(Json(SwapOutResponse { swap_id: id.to_string() }))
}

/// The script of the optional address `text` (field `field`), checked for the node's network.
fn address_script(
    s: &ApiState,
    field: &str,
    text: Option<&str>,
) -> Result<Option<ScriptBuf>, ApiError> {
    let Some(text) = text.map(str::trim) else { return Ok(None) };
    let address =
        Address::<NetworkUnchecked>::from_str(text).map_err(|e| ApiError::bad(field, e))?;
    if !address.is_valid_for_network(s.network) {
        return Err(ApiError::bad(field, format!("not a {} address", s.network)));
    }
    Ok(Some(address.assume_checked().script_pubkey()))
}

/// The offer a swap takes: the inline `offer` (checked as strictly as one read from a relay), or
/// `offer_id` of `maker` looked up on the relays for `amount_sat` in `direction`.
async fn resolve_offer(
    s: &ApiState,
    offer: Option<Offer>,
    offer_id: Option<String>,
    maker: NostrPublicKey,
    amount_sat: u64,
    direction: SwapDirection,
) -> Result<Offer, ApiError> {
    let offer = match (offer, offer_id) {
        (Some(offer), id) => {
            if id.as_ref().is_some_and(|id| *id != offer.offer_id) {
                return Err(ApiError::bad("offer_id", "differs from offer.offer_id"));
            }
            offer.validate().map_err(|e| ApiError::bad("offer", e))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if offer.is_expired(now) {
                return Err(ApiError::bad("offer", "offer expired"));
            }
            offer
        }
        (None, Some(id)) => {
            let filter =
                OfferFilter { network: s.network, amount_sat, sellers: vec![maker], direction };
            let found = s
                .nostr
                .discover_offers(&filter)
                .await
                .map_err(|e| ApiError::internal(format!("offer discovery failed: {e}")))?;
            found.into_iter().find(|d| d.offer.offer_id == id).map(|d| d.offer).ok_or_else(
                || {
                    ApiError::new(
                        ErrorCode::UnknownOffer,
                        format!("no valid offer {id} of this maker for {amount_sat} sat"),
                    )
                },
            )?
        }
        (None, None) => return Err(ApiError::bad("offer_id", "missing")),
    };
    if offer.network != s.network {
        return Err(ApiError::bad("offer", "offer network differs from the node's"));
    }
    if offer.direction != direction {
        return Err(ApiError::bad(
            "offer",
            match direction {
                SwapDirection::LoopIn => "not a loop-in offer (take it with POST /v1/swaps/out)",
                _ => "not a loop-out offer (take it with POST /v1/swaps/in)",
            },
        ));
    }
    Ok(offer)
}

/// `POST /v1/swaps/in`: loop in as taker (this node locks, the maker pays).
async fn swap_in(
    State(s): State<ApiState>,
    Extension(facts): Extension<Arc<NodeFacts>>,
    req: Result<Json<SwapInRequest>, JsonRejection>,
) -> Typed<SwapOutResponse> {
    let req = body(req)?;
    let maker = NostrPublicKey::from_hex(&req.maker).map_err(|e| ApiError::bad("maker", e))?;
    let amount_sat = positive("amount_sat", req.amount_sat)?;
    facts.check_ceiling("amount_sat", amount_sat)?;
    let refund = address_script(&s, "refund_address", req.refund_address.as_deref())?;
    check_conf_target(req.conf_target)?;
    let offer =
        resolve_offer(&s, req.offer, req.offer_id, maker, amount_sat, SwapDirection::LoopIn)
            .await?;
    let limits = LoopInLimits {
        max_total_fee_sat: req.max_total_fee_sat.unwrap_or(fee_limit(&facts, amount_sat)),
        funding_conf_target: req.conf_target,
        ..LoopInLimits::default()
    };
    let id = s
        .engine
        .take_loop_in_offer(offer, maker, amount_sat, limits, refund)
        .await
        .map_err(ApiError::engine)?;
    Ok(Json(SwapOutResponse { swap_id: id.to_string() }))
}

/// A request's `conf_target`, when given: 1 to [`crate::config::MAX_CONF_TARGET`] blocks.
fn check_conf_target(target: Option<u16>) -> Result<(), ApiError> {
    let max = crate::config::MAX_CONF_TARGET;
    if target.is_some_and(|t| !(1..=max).contains(&t)) {
        return Err(ApiError::bad("conf_target", format!("must be between 1 and {max} blocks")));
    }
    Ok(())
}

/// The node's default fee limit for a swap of `amount_sat`: the lower of `[buyer]
/// max_total_fee_sat` and `max_total_fee_ppm` of the amount.
fn fee_limit(facts: &NodeFacts, amount_sat: u64) -> u64 {
    let ppm_limit = facts.buyer_max_fee_ppm.map_or(u64::MAX, |ppm| {
        u64::try_from(u128::from(amount_sat) * u128::from(ppm) / 1_000_000).unwrap_or(u64::MAX)
    });
    facts.buyer_defaults.max_total_fee_sat.min(ppm_limit)
}

/// Runs `f` on the store on a blocking thread (it reads every swap, or every swap's events).
async fn read_store<T: Send + 'static>(
    s: &ApiState,
    f: impl FnOnce(&dyn SwapStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(s.engine.store());
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// A stored swap as the API lists it, with its amounts when its record reads (`figures`).
fn summary(r: &SwapRecord, figures: Option<&SwapFigures>, label: Option<String>) -> SwapSummary {
    use crate::store::{SwapRole, SwapStatus};
    SwapSummary {
        swap_id: r.id.to_string(),
        direction: figures.map_or(looper_protocol::SwapDirection::LoopOut, |f| f.direction),
        role: match r.role {
            SwapRole::Buyer => looper_api::SwapRole::Buyer,
            SwapRole::Seller => looper_api::SwapRole::Seller,
        },
        state: r.state.clone(),
        status: match r.status {
            SwapStatus::Pending => looper_api::SwapStatus::Pending,
            SwapStatus::Succeeded => looper_api::SwapStatus::Succeeded,
            SwapStatus::Failed => looper_api::SwapStatus::Failed,
        },
        payment_hash: r.payment_hash.map(|h| h.to_string()),
        created_at: r.created_at,
        updated_at: r.updated_at,
        amount_sat: figures.map(|f| f.amount_sat),
        cost_sat: figures.and_then(SwapFigures::cost_sat),
        earned_sat: figures.and_then(SwapFigures::earned_sat),
        label,
    }
}

/// The label a swap's stored label shows (`"autoloop"` for autoloop's ledger entries).
fn label_name(label: &serde_json::Value) -> Option<String> {
    label.get("label").and_then(serde_json::Value::as_str).map(str::to_string)
}

async fn list_swaps(State(s): State<ApiState>) -> Typed<SwapList> {
    let swaps = read_store(&s, |store| {
        let records = store.list_swaps(&SwapFilter::default())?;
        let labels: std::collections::BTreeMap<SwapId, String> = store
            .swap_labels()?
            .into_iter()
            .filter_map(|(id, l)| label_name(&l).map(|n| (id, n)))
            .collect();
        records
            .iter()
            .map(|r| {
                let label = labels.get(&r.id).cloned();
                Ok(summary(r, stats::figures_in(store, r)?.as_ref(), label))
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })
    .await?;
    Ok(Json(SwapList { swaps }))
}

/// `GET /v1/stats`: the sums over every stored swap ([`crate::stats`]).
async fn swap_stats(State(s): State<ApiState>) -> Typed<StatsResponse> {
    Ok(Json(read_store(&s, stats::from_store).await?))
}

fn find_swap(s: &ApiState, key: &str) -> Result<SwapRecord, ApiError> {
    let store = s.engine.store();
    if let Ok(id) = key.parse::<SwapId>() {
        if let Some(r) = store.get_swap(&id).map_err(ApiError::internal)? {
            return Ok(r);
        }
    }
    if let Ok(hash) = key.parse::<PaymentHash>() {
        if let Some(r) = store.get_swap_by_payment_hash(&hash).map_err(ApiError::internal)? {
            return Ok(r);
        }
    }
    Err(ApiError::not_found(format!("no swap {key}")))
}

async fn get_swap(State(s): State<ApiState>, Path(key): Path<String>) -> Typed<SwapDetail> {
    let r = find_swap(&s, &key)?;
    // The protocol record (no keys, no unrevealed preimage: those are never stored).
    let record = ProtoRecord::from_bytes(&r.data)
        .ok()
        .and_then(|rec| serde_json::to_value(rec).ok())
        .unwrap_or_default();
    let figures = stats::figures_in(s.engine.store().as_ref(), &r).map_err(ApiError::internal)?;
    let label = s
        .engine
        .store()
        .swap_labels()
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|(id, _)| *id == r.id)
        .and_then(|(_, l)| label_name(&l));
    Ok(Json(SwapDetail::new(summary(&r, figures.as_ref(), label), record)))
}

async fn abort_swap(State(s): State<ApiState>, Path(key): Path<String>) -> Typed<AbortResponse> {
    let r = find_swap(&s, &key)?;
    s.engine.abort(r.id).await.map_err(|e| match e {
        EngineError::Swap(m) => ApiError::new(ErrorCode::Conflict, m),
        other => ApiError::engine(other),
    })?;
    Ok(Json(AbortResponse {
        swap_id: r.id.to_string(),
        abort: AbortResponse::REQUESTED.to_string(),
    }))
}

/// `POST /v1/swaps/{id}/claim`: the buyer's claim leaf now (recovery: `looper swap claim`).
async fn claim_swap(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Typed<ScriptSpendResponse> {
    script_spend(&s, &key, SwapRole::Buyer).await
}

/// `POST /v1/swaps/{id}/refund`: the seller's refund leaf as soon as the timeout allows
/// (recovery: `looper swap refund`).
async fn refund_swap(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Typed<ScriptSpendResponse> {
    script_spend(&s, &key, SwapRole::Seller).await
}

async fn script_spend(s: &ApiState, key: &str, role: SwapRole) -> Typed<ScriptSpendResponse> {
    let r = find_swap(s, key)?;
    let spend = if role == SwapRole::Buyer { "claim" } else { "refund" };
    if r.role != role {
        let other = if role == SwapRole::Buyer { "refund" } else { "claim" };
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("swap {} is not ours to {spend} (we {other} it)", r.id),
        ));
    }
    s.engine.script_spend(r.id).await.map_err(|e| match e {
        EngineError::Swap(m) => ApiError::new(ErrorCode::Conflict, m),
        EngineError::UnknownSwap(_) => {
            ApiError::new(ErrorCode::Conflict, format!("swap {} is over ({})", r.id, r.state))
        }
        other => ApiError::engine(other),
    })?;
    let state = find_swap(s, key)?.state;
    Ok(Json(ScriptSpendResponse { swap_id: r.id.to_string(), spend: spend.into(), state }))
}

/// `GET /v1/swaps/{id}/export`: what a claim (buyer) or refund (seller) by hand needs
/// ([`crate::export`]). It holds the preimage when the node knows it: the seller's derives from the
/// swap's keys, the buyer's is the one its succeeded payment returned (or its record holds).
async fn export_swap(State(s): State<ApiState>, Path(key): Path<String>) -> Typed<SwapExport> {
    let r = find_swap(&s, &key)?;
    let record = ProtoRecord::from_bytes(&r.data).map_err(|e| {
        ApiError::internal(format!("the record of swap {} does not read: {e}", r.id))
    })?;
    let (keys, paid) = match &record {
        ProtoRecord::Seller(_) => {
            (Some(s.engine.swap_keys(record.key_index()).map_err(ApiError::engine)?), None)
        }
        ProtoRecord::Buyer(b) => {
            let paid = b
                .payment_hash()
                .and_then(|h| s.engine.lightning().payment(h))
                .filter(|p| p.direction == "outbound" && p.status == "succeeded")
                .and_then(|p| p.preimage)
                .and_then(|hex| hex.parse::<Preimage>().ok());
            (None, paid)
        }
    };
    let export = crate::export::export_swap(&record, s.network, keys.as_ref(), paid)
        .map_err(|e| ApiError::internal(format!("cannot export swap {}: {e}", r.id)))?;
    Ok(Json(export))
}

/// The swap's events from `from`. With `Accept: text/event-stream`, a Server-Sent Events stream:
/// every stored event from `from`, then each new one as it happens (`id` = its `seq`, `event:
/// swap_event`, `data` = the [`SwapEvent`](crate::store::SwapEvent) JSON), ending after the
/// swap's `finished` event. Otherwise a long poll: the events from `from`, waiting up to
/// `wait_secs` (max 60) for new ones when there are none.
async fn swap_events(
    State(s): State<ApiState>,
    Path(key): Path<String>,
    headers: axum::http::HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let r = find_swap(&s, &key)?;
    let from = q.from.unwrap_or(0);
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        return Ok(event_stream(s.engine.clone(), r.id, from).into_response());
    }
    let mut sub = s.engine.subscribe();
    let mut events = s.engine.store().swap_events(&r.id, from).map_err(ApiError::internal)?;
    if events.is_empty() {
        let wait = std::time::Duration::from_secs(
            q.wait_secs.unwrap_or(0).min(looper_api::MAX_EVENTS_WAIT_SECS),
        );
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sub.recv()).await {
            if n.swap_id == r.id {
                events = s.engine.store().swap_events(&r.id, from).map_err(ApiError::internal)?;
                break;
            }
        }
    }
    Ok(Json(SwapEvents {
        swap_id: r.id.to_string(),
        events: events.into_iter().map(event).collect(),
    })
    .into_response())
}

/// A stored event as the API shows it.
fn event(e: crate::store::SwapEvent) -> looper_api::SwapEvent {
    looper_api::SwapEvent { seq: e.seq, event: e.event }
}

/// How often an idle event stream looks at the store anyway (a missed wake-up costs this much).
const EVENT_STREAM_REFETCH: std::time::Duration = std::time::Duration::from_secs(5);

/// The SSE stream of [`swap_events`].
fn event_stream(
    engine: Engine,
    id: SwapId,
    from: u64,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    struct St {
        engine: Engine,
        sub: tokio::sync::broadcast::Receiver<crate::engine::SwapNotification>,
        next: u64,
        queue: std::collections::VecDeque<crate::store::SwapEvent>,
        done: bool,
    }
    let sub = engine.subscribe();
    let st = St { engine, sub, next: from, queue: Default::default(), done: false };
    let stream = futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                st.next = e.seq.saturating_add(1);
                let e = event(e);
                st.done = e.kind() == Some("finished");
                let data = serde_json::to_string(&e).unwrap_or_default();
                let ev = SseEvent::default().id(e.seq.to_string()).event("swap_event").data(data);
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            match st.engine.store().swap_events(&id, st.next) {
                Ok(events) if !events.is_empty() => {
                    st.queue.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(swap = %id, error = %e, "event stream cannot read the store");
                    return None;
                }
            }
            // Wait for this swap's next notification (or look again after a while).
            let deadline = tokio::time::Instant::now() + EVENT_STREAM_REFETCH;
            loop {
                match tokio::time::timeout_at(deadline, st.sub.recv()).await {
                    Ok(Ok(n)) if n.swap_id != id => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                    // This swap's notification, a lag (look in the store), or the timeout.
                    _ => break,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn wallet_balance(State(s): State<ApiState>) -> Typed<WalletBalance> {
    let b = s.wallet.balance().map_err(ApiError::wallet)?;
    Ok(Json(WalletBalance {
        confirmed_sat: b.confirmed.to_sat(),
        trusted_pending_sat: b.trusted_pending.to_sat(),
        untrusted_pending_sat: b.untrusted_pending.to_sat(),
        immature_sat: b.immature.to_sat(),
        total_sat: b.total().to_sat(),
    }))
}

async fn wallet_address(State(s): State<ApiState>) -> Typed<AddressResponse> {
    let a = s.wallet.new_address().map_err(ApiError::wallet)?;
    Ok(Json(AddressResponse { address: a.to_string() }))
}

async fn wallet_send(
    State(s): State<ApiState>,
    req: Result<Json<SendRequest>, JsonRejection>,
) -> Typed<SendResponse> {
    let req = body(req)?;
    let address = Address::<NetworkUnchecked>::from_str(req.address.trim())
        .map_err(|e| ApiError::bad("address", e))?;
    if !address.is_valid_for_network(s.network) {
        return Err(ApiError::bad("address", format!("not a {} address", s.network)));
    }
    let amount = Amount::from_sat(positive("amount_sat", req.amount_sat)?);
    let fee_rate = match req.fee_rate_sat_vb {
        Some(r) => FeeRate::from_sat_per_vb(positive("fee_rate_sat_vb", r)?)
            .ok_or_else(|| ApiError::bad("fee_rate_sat_vb", "too large"))?,
        None => s.engine.chain().fee_rate(SEND_FEE_TARGET_BLOCKS).await.map_err(ApiError::chain)?,
    };
    let txid = s
        .wallet
        .send(s.engine.chain().as_ref(), address, amount, fee_rate)
        .await
        .map_err(ApiError::wallet)?;
    Ok(Json(SendResponse { txid: txid.to_string() }))
}

async fn ln_info(State(s): State<ApiState>) -> Typed<LnInfo> {
    let ln = s.engine.lightning();
    Ok(Json(LnInfo {
        node_id: ln.node_id().to_string(),
        channels: ln.channels().len() as u64,
        onchain_spendable_sat: ln.onchain_spendable_sat(),
    }))
}

async fn ln_balance(State(s): State<ApiState>) -> Typed<LnBalance> {
    let ln = s.engine.lightning();
    let channels = ln.channels();
    Ok(Json(LnBalance {
        onchain_spendable_sat: ln.onchain_spendable_sat(),
        lightning_outbound_msat: channels.iter().map(|c| c.outbound_msat).sum(),
        lightning_inbound_msat: channels.iter().map(|c| c.inbound_msat).sum(),
    }))
}

async fn ln_channels(State(s): State<ApiState>) -> Typed<ChannelList> {
    let channels = s
        .engine
        .lightning()
        .channels()
        .into_iter()
        .map(|c| Channel {
            channel_id: c.channel_id,
            counterparty: c.counterparty,
            capacity_sat: c.capacity_sat,
            outbound_msat: c.outbound_msat,
            inbound_msat: c.inbound_msat,
            ready: c.ready,
            usable: c.usable,
        })
        .collect();
    Ok(Json(ChannelList { channels }))
}

async fn ln_address(State(s): State<ApiState>) -> Typed<AddressResponse> {
    let a = s.engine.lightning().onchain_address().await.map_err(ApiError::lightning)?;
    Ok(Json(AddressResponse { address: a.to_string() }))
}

async fn ln_open(
    State(s): State<ApiState>,
    req: Result<Json<OpenRequest>, JsonRejection>,
) -> Typed<OpenResponse> {
    let req = body(req)?;
    let node_id = bitcoin::secp256k1::PublicKey::from_str(req.node_id.trim())
        .map_err(|e| ApiError::bad("node_id", e))?;
    let amount_sat = positive("amount_sat", req.amount_sat)?;
    if req.address.trim().is_empty() {
        return Err(ApiError::bad("address", "missing"));
    }
    if req.push_msat > amount_sat.saturating_mul(1000) {
        return Err(ApiError::bad("push_msat", "exceeds the channel amount"));
    }
    let push = (req.push_msat > 0).then_some(req.push_msat);
    let id = s
        .engine
        .lightning()
        .open_channel(node_id, req.address.trim(), amount_sat, push)
        .await
        .map_err(ApiError::lightning)?;
    Ok(Json(OpenResponse { user_channel_id: id.to_string() }))
}

async fn ln_invoice(
    State(s): State<ApiState>,
    req: Result<Json<InvoiceRequest>, JsonRejection>,
) -> Typed<InvoiceResponse> {
    let req = body(req)?;
    let amount_msat = positive("amount_msat", req.amount_msat)?;
    let invoice = s
        .engine
        .lightning()
        .invoice(
            amount_msat,
            req.description.as_deref().unwrap_or(""),
            req.expiry_secs.unwrap_or(looper_api::DEFAULT_INVOICE_EXPIRY_SECS),
        )
        .await
        .map_err(ApiError::lightning)?;
    Ok(Json(InvoiceResponse { invoice }))
}

async fn ln_pay(
    State(s): State<ApiState>,
    req: Result<Json<PayRequest>, JsonRejection>,
) -> Typed<PayResponse> {
    let req = body(req)?;
    let invoice =
        Bolt11Invoice::from_str(req.invoice.trim()).map_err(|e| ApiError::bad("invoice", e))?;
    if invoice.network() != s.network {
        return Err(ApiError::bad("invoice", format!("not a {} invoice", s.network)));
    }
    if invoice.amount_milli_satoshis().is_none() {
        return Err(ApiError::bad("invoice", "invoices without an amount are not supported"));
    }
    if invoice.is_expired() {
        return Err(ApiError::bad("invoice", "expired"));
    }
    let cltv = req.max_route_cltv.unwrap_or(DEFAULT_MAX_TOTAL_CLTV_EXPIRY_DELTA);
    if cltv == 0 {
        return Err(ApiError::bad("max_route_cltv", "must be greater than 0"));
    }
    let payment_hash = PaymentHash(invoice.payment_hash().to_byte_array()).to_string();
    let outcome =
        s.engine.lightning().pay(&invoice.to_string(), cltv).await.map_err(ApiError::lightning)?;
    let (status, preimage) = match outcome {
        PayOutcome::Started | PayOutcome::AlreadyPending => (PaymentStatus::Pending, None),
        PayOutcome::AlreadySucceeded(p) => (PaymentStatus::Succeeded, Some(p.to_hex())),
    };
    Ok(Json(PayResponse { payment_hash, status, preimage }))
}

/// `GET /v1/ln/payments/{hash}`: what the Lightning node knows of a payment, sent or received
/// (a swap's invoice payment, or one made with `POST /v1/ln/pay`).
async fn ln_payment(State(s): State<ApiState>, Path(hash): Path<String>) -> Typed<PaymentInfo> {
    let hash = hash
        .parse::<PaymentHash>()
        .map_err(|_| ApiError::bad("payment_hash", "expected 64 hex characters"))?;
    let p = s
        .engine
        .lightning()
        .payment(hash)
        .ok_or_else(|| ApiError::not_found(format!("no payment {hash}")))?;
    let direction = match p.direction.as_str() {
        "inbound" => PaymentDirection::Inbound,
        "outbound" => PaymentDirection::Outbound,
        other => return Err(ApiError::internal(format!("unknown payment direction {other:?}"))),
    };
    let status = match p.status.as_str() {
        "pending" => PaymentStatus::Pending,
        "succeeded" => PaymentStatus::Succeeded,
        "failed" => PaymentStatus::Failed,
        other => return Err(ApiError::internal(format!("unknown payment status {other:?}"))),
    };
    Ok(Json(PaymentInfo {
        payment_hash: p.payment_hash,
        direction,
        status,
        amount_msat: p.amount_msat,
        fee_paid_msat: p.fee_paid_msat,
        preimage: p.preimage,
        updated_at: p.updated_at,
    }))
}

/// A Lightning node id (hex) of the request's `field`.
fn node_id(field: &str, text: &str) -> Result<bitcoin::secp256k1::PublicKey, ApiError> {
    bitcoin::secp256k1::PublicKey::from_str(text.trim()).map_err(|_| {
        ApiError::bad(field, format!("{:?} is not a node id (66 hex characters)", text.trim()))
    })
}

/// The peer of `POST /v1/ln/peers`: its node id and its address (`host:port`), from `node_id`
/// and `address` or from `node_id` written `NODE_ID@HOST:PORT`.
fn connect_target(
    req: &ConnectRequest,
) -> Result<(bitcoin::secp256k1::PublicKey, String), ApiError> {
    let address = req.address.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let (id, address) = match (req.node_id.trim().split_once('@'), address) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "address",
                "given twice (in node_id as NODE_ID@HOST:PORT and in address)",
            ))
        }
        (Some((id, at)), None) => (id, at.trim()),
        (None, Some(a)) => (req.node_id.trim(), a),
        (None, None) => {
            return Err(ApiError::bad(
                "address",
                "missing (give node_id as NODE_ID@HOST:PORT, or address)",
            ))
        }
    };
    let id = node_id("node_id", id)?;
    if address.is_empty() {
        return Err(ApiError::bad("address", "missing after the @ of node_id"));
    }
    Ok((id, address.to_string()))
}

/// A checked `POST /v1/ln/withdraw`: where to, how much, at what fee rate.
#[derive(Debug)]
struct Withdrawal {
    address: Address,
    amount: WithdrawAmount,
    fee_rate: Option<FeeRate>,
}

/// Checks a `POST /v1/ln/withdraw` for a node on `network`.
fn withdrawal(req: &LnWithdrawRequest, network: Network) -> Result<Withdrawal, ApiError> {
    let address = Address::<NetworkUnchecked>::from_str(req.address.trim())
        .map_err(|e| ApiError::bad("address", e))?;
    if !address.is_valid_for_network(network) {
        return Err(ApiError::bad("address", format!("not a {network} address")));
    }
    let address = address.assume_checked();
    let amount = match (req.amount_sat, req.all) {
        (Some(_), true) => {
            return Err(ApiError::bad("amount_sat", "give amount_sat or all: true, not both"))
        }
        (None, false) => {
            return Err(ApiError::bad("amount_sat", "missing (or all: true to send everything)"))
        }
        (None, true) => WithdrawAmount::All,
        (Some(sat), false) => {
            let dust = address.script_pubkey().minimal_non_dust().to_sat();
            if sat < dust {
                return Err(ApiError::bad(
                    "amount_sat",
                    format!("{sat} sat is below the address's dust limit ({dust} sat)"),
                ));
            }
            WithdrawAmount::Sat(sat)
        }
    };
    let fee_rate = match req.fee_rate_sat_vb {
        Some(r) => Some(
            FeeRate::from_sat_per_vb(positive("fee_rate_sat_vb", r)?)
                .ok_or_else(|| ApiError::bad("fee_rate_sat_vb", "too large"))?,
        ),
        None => None,
    };
    Ok(Withdrawal { address, amount, fee_rate })
}

/// A peer as the API shows it, with its channel count.
fn peer_entry(p: crate::lightning::PeerInfo, channels: &[crate::lightning::ChannelInfo]) -> Peer {
    let id = p.node_id.to_string();
    let count = channels.iter().filter(|c| c.counterparty == id).count() as u64;
    Peer {
        node_id: id,
        address: p.address,
        connected: p.connected,
        persisted: p.persisted,
        channels: count,
    }
}

/// `GET /v1/ln/peers`: the peers connected or remembered, ordered by node id.
async fn ln_peers(State(s): State<ApiState>) -> Typed<PeerList> {
    let ln = s.engine.lightning();
    let channels = ln.channels();
    let mut peers: Vec<Peer> = ln.peers().into_iter().map(|p| peer_entry(p, &channels)).collect();
    peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(Json(PeerList { peers }))
}

/// `POST /v1/ln/peers`: connects (waiting for the handshake) and answers the peer's entry.
async fn ln_connect(
    State(s): State<ApiState>,
    req: Result<Json<ConnectRequest>, JsonRejection>,
) -> Typed<Peer> {
    let req = body(req)?;
    let (id, address) = connect_target(&req)?;
    let ln = s.engine.lightning();
    if id == ln.node_id() {
        return Err(ApiError::bad("node_id", "this is the node's own id"));
    }
    ln.connect_peer(id, &address, req.persist).await.map_err(ApiError::lightning)?;
    let channels = ln.channels();
    let peer = ln
        .peers()
        .into_iter()
        .find(|p| p.node_id == id)
        .map(|p| peer_entry(p, &channels))
        // Connected and gone again at once: say what is known.
        .unwrap_or(Peer {
            node_id: id.to_string(),
            address,
            connected: false,
            persisted: req.persist,
            channels: 0,
        });
    Ok(Json(peer))
}

/// `DELETE /v1/ln/peers/{node_id}`: disconnects and forgets a peer the node has no channel with.
async fn ln_disconnect(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Typed<DisconnectResponse> {
    let id = node_id("node_id", &id)?;
    let ln = s.engine.lightning();
    let open = ln.channels().iter().filter(|c| c.counterparty == id.to_string()).count();
    if open > 0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the node has {open} channel(s) with {id}: disconnected, they would stay unusable; \
                 close them first (POST /v1/ln/channels/{{id}}/close)"
            ),
        ));
    }
    let known = ln.peers().iter().any(|p| p.node_id == id);
    if known {
        ln.disconnect_peer(id).await.map_err(ApiError::lightning)?;
    }
    Ok(Json(DisconnectResponse { node_id: id.to_string(), disconnected: known }))
}

/// `POST /v1/ln/channels/{id}/close`: starts a cooperative close, or a force close.
async fn ln_close(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    req: Result<Json<CloseRequest>, JsonRejection>,
) -> Typed<CloseResponse> {
    let req = body(req)?;
    let channel = id.parse::<ChannelRef>().map_err(ApiError::lightning)?;
    let closing = s
        .engine
        .lightning()
        .close_channel(channel, req.force)
        .await
        .map_err(ApiError::lightning)?;
    tracing::info!(
        channel = %closing.channel_id,
        peer = %closing.counterparty,
        force = req.force,
        "lightning channel close requested through the API"
    );
    Ok(Json(CloseResponse {
        channel_id: closing.channel_id,
        user_channel_id: closing.user_channel_id.to_string(),
        counterparty: closing.counterparty.to_string(),
        force: req.force,
        to_self_delay_blocks: closing.to_self_delay_blocks,
    }))
}

/// `POST /v1/ln/withdraw`: sends from the Lightning node's own on-chain wallet.
async fn ln_withdraw(
    State(s): State<ApiState>,
    req: Result<Json<LnWithdrawRequest>, JsonRejection>,
) -> Typed<SendResponse> {
    let req = body(req)?;
    let w = withdrawal(&req, s.network)?;
    let txid = s
        .engine
        .lightning()
        .withdraw(w.address, w.amount, w.fee_rate)
        .await
        .map_err(ApiError::lightning)?;
    Ok(Json(SendResponse { txid: txid.to_string() }))
}

/// `GET /v1/autoloop`: rules, budget, swaps in flight, the last run.
async fn autoloop_status(State(s): State<ApiState>) -> Typed<AutoloopStatus> {
    Ok(Json(s.autoloop.status().await.map_err(ApiError::autoloop)?))
}

/// `PUT /v1/autoloop`: new rules (kept in the store).
async fn autoloop_set(
    State(s): State<ApiState>,
    req: Result<Json<AutoloopConfig>, JsonRejection>,
) -> Typed<AutoloopStatus> {
    let config = body(req)?;
    Ok(Json(s.autoloop.set_config(config).await.map_err(ApiError::autoloop)?))
}

/// `POST /v1/autoloop/dry-run`: what autoloop would do now and why; changes nothing.
async fn autoloop_dry_run(State(s): State<ApiState>) -> Typed<AutoloopPlan> {
    Ok(Json(s.autoloop.dry_run().await.map_err(ApiError::autoloop)?))
}

async fn sync(State(s): State<ApiState>) -> Typed<SyncResponse> {
    s.engine.sync_wallet().await.map_err(ApiError::engine)?;
    s.engine.lightning().sync().await.map_err(ApiError::lightning)?;
    let tip = s.engine.chain().tip_height().await.map_err(ApiError::chain)?;
    Ok(Json(SyncResponse { tip_height: tip }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_is_unique() {
        for (i, (m, p)) in ROUTES.iter().enumerate() {
            assert!(method_router(m, p).is_some(), "{m} {p} has no handler");
            assert!(!ROUTES[..i].contains(&(*m, *p)), "{m} {p} twice");
        }
    }

    const NODE: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";

    /// The error's code and message.
    fn err<T: std::fmt::Debug>(r: Result<T, ApiError>) -> (ErrorCode, String) {
        let e = r.unwrap_err();
        (e.body.code, e.body.message)
    }

    #[test]
    fn a_peer_to_connect_is_node_id_at_address_or_both_fields() {
        let req = |node_id: &str, address: Option<&str>| ConnectRequest {
            node_id: node_id.into(),
            address: address.map(Into::into),
            persist: false,
        };
        let (id, at) = connect_target(&req(&format!(" {NODE}@127.0.0.1:9735 "), None)).unwrap();
        assert_eq!((id.to_string().as_str(), at.as_str()), (NODE, "127.0.0.1:9735"));
        let (id, at) = connect_target(&req(NODE, Some(" [::1]:9735 "))).unwrap();
        assert_eq!((id.to_string().as_str(), at.as_str()), (NODE, "[::1]:9735"));
        for (r, field, why) in [
            (req(NODE, None), "address", "missing"),
            (req(NODE, Some(" ")), "address", "missing"),
            (req(&format!("{NODE}@a:1"), Some("a:1")), "address", "given twice"),
            (req(&format!("{NODE}@"), None), "address", "missing after the @"),
            (req("02zz@127.0.0.1:9735", None), "node_id", "not a node id"),
            (req(&NODE[2..], Some("a:1")), "node_id", "not a node id"),
        ] {
            let (code, msg) = err(connect_target(&r));
            assert_eq!(code, ErrorCode::BadRequest, "{r:?}");
            assert!(msg.starts_with(&format!("{field}: ")) && msg.contains(why), "{r:?}: {msg}");
        }
    }

    #[test]
    fn a_withdrawal_names_one_amount_and_an_address_of_the_network() {
        let regtest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        let req = |address: &str, amount_sat: Option<u64>, all: bool, fee: Option<u64>| {
            LnWithdrawRequest { address: address.into(), amount_sat, all, fee_rate_sat_vb: fee }
        };
        let w = withdrawal(&req(regtest, Some(50_000), false, Some(3)), Network::Regtest).unwrap();
        assert_eq!(w.amount, WithdrawAmount::Sat(50_000));
        assert_eq!(w.address.to_string(), regtest);
        assert_eq!(w.fee_rate, FeeRate::from_sat_per_vb(3));
        let w = withdrawal(&req(&format!(" {regtest} "), None, true, None), Network::Regtest);
        let w = w.unwrap();
        assert_eq!((w.amount, w.fee_rate), (WithdrawAmount::All, None));
        let mainnet = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
        for (r, field, why) in [
            (req(mainnet, Some(50_000), false, None), "address", "not a regtest address"),
            (req("nope", Some(50_000), false, None), "address", ""),
            (req(regtest, Some(50_000), true, None), "amount_sat", "not both"),
            (req(regtest, None, false, None), "amount_sat", "missing"),
            (req(regtest, Some(0), false, None), "amount_sat", "dust limit (294 sat)"),
            (req(regtest, Some(293), false, None), "amount_sat", "below"),
            (req(regtest, None, true, Some(0)), "fee_rate_sat_vb", "greater than 0"),
            (req(regtest, None, true, Some(u64::MAX)), "fee_rate_sat_vb", "too large"),
        ] {
            let (code, msg) = err(withdrawal(&r, Network::Regtest));
            assert_eq!(code, ErrorCode::BadRequest, "{r:?}");
            assert!(msg.starts_with(&format!("{field}: ")) && msg.contains(why), "{r:?}: {msg}");
        }
        assert!(withdrawal(&req(regtest, Some(294), false, None), Network::Regtest).is_ok());
        // A mainnet node takes the mainnet address and refuses the regtest one.
        assert!(withdrawal(&req(mainnet, Some(1_000), false, None), Network::Bitcoin).is_ok());
        let (_, msg) = err(withdrawal(&req(regtest, Some(1_000), false, None), Network::Bitcoin));
        assert_eq!(msg, "address: not a bitcoin address");
    }

    #[test]
    fn lightning_errors_keep_their_code() {
        let pk = NODE.parse().unwrap();
        for (e, code) in [
            (LightningError::UnknownChannel("7".into()), ErrorCode::NotFound),
            (LightningError::PeerNotConnected(pk), ErrorCode::Conflict),
            (LightningError::InsufficientFunds("x".into()), ErrorCode::InsufficientFunds),
            (
                LightningError::Invalid { what: "address", reason: "x".into() },
                ErrorCode::BadRequest,
            ),
            (LightningError::Node { op: "close", reason: "x".into() }, ErrorCode::LightningError),
            (LightningError::Unsupported("close channels"), ErrorCode::LightningError),
        ] {
            assert_eq!(ApiError::lightning(e).body.code, code);
        }
        let (code, msg) = err("zz".parse::<ChannelRef>().map_err(ApiError::lightning));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.starts_with("channel id: "), "{msg}");
    }

    #[test]
    fn error_messages_are_one_line() {
        let e = ApiError::bad("x", "a\nb");
        assert_eq!(e.body.message, "x: a b");
        assert_eq!(e.body.code, ErrorCode::BadRequest);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
