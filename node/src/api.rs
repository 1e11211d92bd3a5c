//! The control API (axum, 127.0.0.1, bearer token from `DATADIR/api.token`). Errors are JSON
//! `{"code": "...", "message": "..."}` with a stable code.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bitcoin::Network;
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::messages::Offer;
use looper_protocol::record::SwapRecord as ProtoRecord;
use looper_protocol::{PaymentHash, SwapId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::nostr::PublicKey as NostrPublicKey;
use crate::seed::ApiToken;
use crate::store::{SwapFilter, SwapRecord};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub engine: Engine,
    /// The bearer token.
    pub token: Arc<ApiToken>,
    /// The node's network.
    pub network: Network,
}

/// A JSON error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> Self {
        Self { status, code, message: message.to_string() }
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e)
    }
    fn bad(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", e)
    }
    fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The router with every route and the token check.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/offers", get(list_offers).post(publish_offer))
        .route("/v1/offers/{id}", delete(withdraw_offer))
        .route("/v1/swaps/out", post(swap_out))
        .route("/v1/swaps", get(list_swaps))
        .route("/v1/swaps/{id}", get(get_swap))
        .route("/v1/swaps/{id}/abort", post(abort_swap))
        .route("/v1/swaps/{id}/events", get(swap_events))
        .route("/v1/wallet/balance", get(wallet_balance))
        .route("/v1/wallet/address", post(wallet_address))
        .route("/v1/ln/info", get(ln_info))
        .route("/v1/ln/channels", get(ln_channels))
        .route("/v1/ln/invoice", post(ln_invoice))
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
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong token")
            .into_response();
    }
    next.run(req).await
}

async fn info(State(s): State<ApiState>) -> ApiResult {
    let tip = s.engine.chain().tip_height().await.map_err(ApiError::internal)?;
    Ok(Json(json!({
        "network": s.network.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "nostr_pubkey": s.engine.transport().public_key().to_hex(),
        "ln_node_id": s.engine.lightning().node_id().to_string(),
        "tip_height": tip,
        "swaps_active": s.engine.swap_ids().await.len(),
    })))
}

async fn list_offers(State(s): State<ApiState>) -> ApiResult {
    let offers = s.engine.store().list_offers().map_err(ApiError::internal)?;
    Ok(Json(json!({"offers": offers.into_iter().map(|(_, v)| v).collect::<Vec<_>>()})))
}

async fn publish_offer(State(s): State<ApiState>, Json(offer): Json<Offer>) -> ApiResult {
    offer.validate().map_err(ApiError::bad)?;
    if offer.network != s.network {
        return Err(ApiError::bad("offer network differs from the node's"));
    }
    s.engine.publish_offer(&offer).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"offer_id": offer.offer_id})))
}

async fn withdraw_offer(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    if !s.engine.withdraw_offer(&id).await.map_err(ApiError::internal)? {
        return Err(ApiError::not_found(format!("no offer {id}")));
    }
    Ok(Json(json!({"withdrawn": id})))
}

#[derive(Deserialize)]
struct SwapOutRequest {
    offer: Offer,
    seller_pubkey: String,
    amount_sat: u64,
    max_total_fee_sat: Option<u64>,
    max_route_cltv: Option<u32>,
    min_confirmations: Option<u32>,
}

async fn swap_out(State(s): State<ApiState>, Json(req): Json<SwapOutRequest>) -> ApiResult {
    let seller = NostrPublicKey::from_hex(&req.seller_pubkey).map_err(ApiError::bad)?;
    let defaults = BuyerPolicy::default();
    let policy = BuyerPolicy {
        max_total_fee_sat: req.max_total_fee_sat.unwrap_or(defaults.max_total_fee_sat),
        max_route_cltv: req.max_route_cltv.unwrap_or(defaults.max_route_cltv),
        min_confirmations: req.min_confirmations.unwrap_or(defaults.min_confirmations),
    };
    let id =
        s.engine.take_offer(req.offer, seller, req.amount_sat, policy).await.map_err(
            |e| match e {
                crate::engine::EngineError::Refused(m) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "offer_refused", m)
                }
                other => ApiError::internal(other),
            },
        )?;
    Ok(Json(json!({"swap_id": id.to_string()})))
}

fn summary(r: &SwapRecord) -> Value {
    json!({
        "swap_id": r.id.to_string(),
        "role": r.role,
        "state": r.state,
        "status": r.status,
        "payment_hash": r.payment_hash.map(|h| h.to_string()),
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

async fn list_swaps(State(s): State<ApiState>) -> ApiResult {
    let swaps = s.engine.store().list_swaps(&SwapFilter::default()).map_err(ApiError::internal)?;
    Ok(Json(json!({"swaps": swaps.iter().map(summary).collect::<Vec<_>>()})))
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

async fn get_swap(State(s): State<ApiState>, Path(key): Path<String>) -> ApiResult {
    let r = find_swap(&s, &key)?;
    let mut v = summary(&r);
    // The protocol record (no keys, no unrevealed preimage: those are never stored).
    if let Ok(rec) = ProtoRecord::from_bytes(&r.data) {
        v["record"] = serde_json::to_value(rec).unwrap_or(Value::Null);
    }
    Ok(Json(v))
}

async fn abort_swap(State(s): State<ApiState>, Path(key): Path<String>) -> ApiResult {
    let r = find_swap(&s, &key)?;
    s.engine.abort(r.id).await.map_err(|e| ApiError::new(StatusCode::CONFLICT, "refused", e))?;
    Ok(Json(json!({"swap_id": r.id.to_string(), "abort": "requested"})))
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<u64>,
    wait_secs: Option<u64>,
}

/// Long poll: the swap's events from `from`; waits up to `wait_secs` (max 60) for new ones.
async fn swap_events(
    State(s): State<ApiState>,
    Path(key): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult {
    let r = find_swap(&s, &key)?;
    let from = q.from.unwrap_or(0);
    let mut sub = s.engine.subscribe();
    let mut events = s.engine.store().swap_events(&r.id, from).map_err(ApiError::internal)?;
    if events.is_empty() {
        let wait = std::time::Duration::from_secs(q.wait_secs.unwrap_or(0).min(60));
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sub.recv()).await {
            if n.swap_id == r.id {
                events = s.engine.store().swap_events(&r.id, from).map_err(ApiError::internal)?;
                break;
            }
        }
    }
    Ok(Json(json!({"swap_id": r.id.to_string(), "events": events})))
}

async fn wallet_balance(State(s): State<ApiState>) -> ApiResult {
    let b = s.engine.wallet().balance().map_err(ApiError::internal)?;
    Ok(Json(json!({
        "confirmed_sat": b.confirmed.to_sat(),
        "trusted_pending_sat": b.trusted_pending.to_sat(),
        "untrusted_pending_sat": b.untrusted_pending.to_sat(),
        "immature_sat": b.immature.to_sat(),
        "total_sat": b.total().to_sat(),
    })))
}

async fn wallet_address(State(s): State<ApiState>) -> ApiResult {
    let a = s.engine.wallet().new_address().map_err(ApiError::internal)?;
    Ok(Json(json!({"address": a.to_string()})))
}

async fn ln_info(State(s): State<ApiState>) -> ApiResult {
    let ln = s.engine.lightning();
    Ok(Json(json!({
        "node_id": ln.node_id().to_string(),
        "channels": ln.channels().len(),
        "onchain_spendable_sat": ln.onchain_spendable_sat(),
    })))
}

async fn ln_channels(State(s): State<ApiState>) -> ApiResult {
    Ok(Json(json!({"channels": s.engine.lightning().channels()})))
}

#[derive(Deserialize)]
struct InvoiceRequest {
    amount_msat: u64,
    description: Option<String>,
    expiry_secs: Option<u32>,
}

async fn ln_invoice(State(s): State<ApiState>, Json(req): Json<InvoiceRequest>) -> ApiResult {
    let invoice = s
        .engine
        .lightning()
        .invoice(
            req.amount_msat,
            req.description.as_deref().unwrap_or(""),
            req.expiry_secs.unwrap_or(3600),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"invoice": invoice})))
}
