//! A typed client of the looper-node control API (JSON over HTTP, bearer token), over the
//! [`looper_api`] types the node answers.

use std::time::Duration;

use looper_api::{
    AddressResponse, ChannelList, OfferIdResponse, OpenRequest, OpenResponse, SwapEvent,
    SwapEvents, SwapInRequest, SwapList, SwapOutRequest, SwapOutResponse, SwapSummary,
    SyncResponse,
};
use looper_protocol::messages::Offer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use looper_api::{
    Channel, DiscoveredOffer, ErrorBody, InfoResponse as NodeInfo, LnBalance,
    SwapDetail as SwapView, WalletBalance,
};

use super::HarnessError;

/// A client of one node's control API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:PORT`) with `token`.
    ///
    /// # Errors
    /// [`HarnessError::Http`] when the HTTP client cannot be built.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Result<Self, HarnessError> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(120)).build().map_err(|e| {
                HarnessError::Http { what: "build the http client".into(), reason: e.to_string() }
            })?;
        Ok(Self { base: base.into(), token: token.into(), http })
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, HarnessError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("{method} {path}");
        let resp = req
            .send()
            .await
            .map_err(|e| HarnessError::Http { what: what.clone(), reason: e.to_string() })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| HarnessError::Http { what: what.clone(), reason: e.to_string() })?;
        if !status.is_success() {
            return Err(api_error(what, status.as_u16(), &text));
        }
        serde_json::from_str(&text).map_err(|e| HarnessError::Http {
            what,
            reason: format!("unexpected answer ({e}): {}", truncate(&text, 300)),
        })
    }

    /// `GET path` as JSON.
    ///
    /// # Errors
    /// [`HarnessError::Http`] or [`HarnessError::Api`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, HarnessError> {
        self.send(reqwest::Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// [`HarnessError::Http`] or [`HarnessError::Api`].
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, HarnessError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    ///
    /// # Errors
    /// [`HarnessError::Http`] or [`HarnessError::Api`].
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, HarnessError> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Pays `amount_sat` to `to` over Lightning (an invoice of `to`, paid by this node) and waits
    /// for the payment to succeed: moves a channel's balance. A payment refused or failed is
    /// tried again with a new invoice for up to a minute.
    ///
    /// # Errors
    /// As [`ApiClient::post`]; [`HarnessError::Http`] when the payments keep failing,
    /// [`HarnessError::Timeout`] when one does not end within the minute.
    pub async fn push_payment(&self, to: &ApiClient, amount_sat: u64) -> Result<(), HarnessError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let retry = || std::time::Instant::now() < deadline;
        // The channel refuses a payment while the previous one's HTLC is still being removed
        // (what may be in flight is capped): tried again, with a new invoice, for a while.
        'attempt: loop {
            let invoice: looper_api::InvoiceResponse = to
                .post(
                    "/v1/ln/invoice",
                    &looper_api::InvoiceRequest {
                        amount_msat: amount_sat * 1000,
                        description: Some("push".into()),
                        expiry_secs: None,
                    },
                )
                .await?;
            let body = serde_json::json!({ "invoice": invoice.invoice });
            let paid: looper_api::PayResponse = match self.post("/v1/ln/pay", &body).await {
                Ok(p) => p,
                Err(HarnessError::Api { .. }) if retry() => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue 'attempt;
                }
                Err(e) => return Err(e),
            };
            let path = format!("/v1/ln/payments/{}", paid.payment_hash);
            loop {
                let p: looper_api::PaymentInfo = self.get(&path).await?;
                match p.status {
                    looper_api::PaymentStatus::Succeeded => return Ok(()),
                    looper_api::PaymentStatus::Failed if retry() => {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue 'attempt;
                    }
                    looper_api::PaymentStatus::Failed => {
                        return Err(HarnessError::Http {
                            what: format!("pay {amount_sat} sat"),
                            reason: "the payment failed".into(),
                        })
                    }
                    _ if !retry() => {
                        return Err(HarnessError::Timeout(format!("a payment of {amount_sat} sat")))
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        }
    }

    /// `GET /v1/info`.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn info(&self) -> Result<NodeInfo, HarnessError> {
        self.get("/v1/info").await
    }

    /// `POST /v1/wallet/address`: a fresh address of the swap wallet.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn wallet_address(&self) -> Result<String, HarnessError> {
        let v: AddressResponse = self.post("/v1/wallet/address", &serde_json::json!({})).await?;
        Ok(v.address)
    }

    /// `GET /v1/wallet/balance`.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn wallet_balance(&self) -> Result<WalletBalance, HarnessError> {
        self.get("/v1/wallet/balance").await
    }

    /// `POST /v1/ln/address`: a fresh address of ldk-node's on-chain wallet.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn ln_address(&self) -> Result<String, HarnessError> {
        let v: AddressResponse = self.post("/v1/ln/address", &serde_json::json!({})).await?;
        Ok(v.address)
    }

    /// `GET /v1/ln/balance`.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn ln_balance(&self) -> Result<LnBalance, HarnessError> {
        self.get("/v1/ln/balance").await
    }

    /// `GET /v1/ln/channels`.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn ln_channels(&self) -> Result<Vec<Channel>, HarnessError> {
        let v: ChannelList = self.get("/v1/ln/channels").await?;
        Ok(v.channels)
    }

    /// `POST /v1/ln/open`: opens a channel of `amount_sat` to `node_id` at `address`.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn ln_open(
        &self,
        node_id: &str,
        address: &str,
        amount_sat: u64,
    ) -> Result<OpenResponse, HarnessError> {
        let body = OpenRequest {
            node_id: node_id.to_string(),
            address: address.to_string(),
            amount_sat,
            push_msat: 0,
        };
        self.post("/v1/ln/open", &body).await
    }

    /// `POST /v1/sync`: syncs the swap wallet and ldk-node now; the node's tip height.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn sync(&self) -> Result<u32, HarnessError> {
        let v: SyncResponse = self.post("/v1/sync", &serde_json::json!({})).await?;
        Ok(v.tip_height)
    }

    /// `POST /v1/offers`: publishes `offer`; its id.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn publish_offer(&self, offer: &Offer) -> Result<String, HarnessError> {
        let v: OfferIdResponse = self.post("/v1/offers", offer).await?;
        Ok(v.offer_id)
    }

    /// `GET /v1/offers/discover?amount_sat=N`: offers on the relays, cheapest first.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn discover(&self, amount_sat: u64) -> Result<Vec<DiscoveredOffer>, HarnessError> {
        self.get(&format!("/v1/offers/discover?amount_sat={amount_sat}")).await
    }

    /// `GET /v1/offers/discover?amount_sat=N&direction=loop_in`: loop-in offers, cheapest
    /// first.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn discover_loop_in(
        &self,
        amount_sat: u64,
    ) -> Result<Vec<DiscoveredOffer>, HarnessError> {
        self.get(&format!("/v1/offers/discover?amount_sat={amount_sat}&direction=loop_in")).await
    }

    /// `POST /v1/swaps/in`: takes the loop-in `offer` for `amount_sat` (this node locks); the
    /// swap id.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn swap_in(
        &self,
        offer: &DiscoveredOffer,
        amount_sat: u64,
        max_total_fee_sat: u64,
    ) -> Result<String, HarnessError> {
        self.swap_in_at(offer, amount_sat, max_total_fee_sat, None).await
    }

    /// [`ApiClient::swap_in`] with the funding's own confirmation target (`conf_target`).
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn swap_in_at(
        &self,
        offer: &DiscoveredOffer,
        amount_sat: u64,
        max_total_fee_sat: u64,
        conf_target: Option<u16>,
    ) -> Result<String, HarnessError> {
        let body = SwapInRequest {
            offer_id: Some(offer.offer.offer_id.clone()),
            offer: Some(offer.offer.clone()),
            maker: offer.seller.clone(),
            amount_sat,
            max_total_fee_sat: Some(max_total_fee_sat),
            refund_address: None,
            conf_target,
        };
        let v: SwapOutResponse = self.post("/v1/swaps/in", &body).await?;
        Ok(v.swap_id)
    }

    /// `POST /v1/swaps/out`: takes `offer` of `seller` for `amount_sat`; the swap id.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn swap_out(
        &self,
        offer: &DiscoveredOffer,
        amount_sat: u64,
        max_total_fee_sat: u64,
    ) -> Result<String, HarnessError> {
        let body = SwapOutRequest {
            offer_id: Some(offer.offer.offer_id.clone()),
            offer: Some(offer.offer.clone()),
            seller: offer.seller.clone(),
            amount_sat,
            max_total_fee_sat: Some(max_total_fee_sat),
            max_route_cltv: None,
            min_confirmations: None,
            conf_target: None,
            max_prepay_sat: None,
            address: None,
        };
        let v: SwapOutResponse = self.post("/v1/swaps/out", &body).await?;
        Ok(v.swap_id)
    }

    /// `GET /v1/swaps/{id}` (id or payment hash).
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn swap(&self, id: &str) -> Result<SwapView, HarnessError> {
        self.get(&format!("/v1/swaps/{id}")).await
    }

    /// `GET /v1/swaps`: every swap's summary.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn swaps(&self) -> Result<Vec<SwapSummary>, HarnessError> {
        let v: SwapList = self.get("/v1/swaps").await?;
        Ok(v.swaps)
    }

    /// `GET /v1/swaps/{id}/events`: the swap's notifications (JSON), oldest first.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn swap_events(&self, id: &str) -> Result<Vec<Value>, HarnessError> {
        let v: SwapEvents = self.get(&format!("/v1/swaps/{id}/events")).await?;
        Ok(v.events.into_iter().map(|e| e.event).collect())
    }

    /// `GET /v1/swaps/{id}/events` as a Server-Sent Events stream, read until the node ends it
    /// (after the swap's `finished` event): the notifications (JSON), oldest first, and their
    /// `seq` numbers (the SSE ids).
    ///
    /// # Errors
    /// [`HarnessError::Http`] or [`HarnessError::Api`], or an event that does not parse.
    pub async fn swap_event_stream(&self, id: &str) -> Result<Vec<(u64, Value)>, HarnessError> {
        let what = format!("GET /v1/swaps/{id}/events (event stream)");
        let http =
            |e: reqwest::Error| HarnessError::Http { what: what.clone(), reason: e.to_string() };
        let resp = self
            .http
            .get(format!("{}/v1/swaps/{id}/events", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(http)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http)?;
        if !status.is_success() {
            return Err(api_error(what, status.as_u16(), &text));
        }
        let mut out = Vec::new();
        for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
            let e: SwapEvent =
                serde_json::from_str(data.trim()).map_err(|e| HarnessError::Http {
                    what: what.clone(),
                    reason: format!("bad event ({e}): {}", truncate(data, 300)),
                })?;
            out.push((e.seq, e.event));
        }
        Ok(out)
    }
}

/// The node's error answer, read as its [`ErrorBody`] (an `internal` one carrying the text when
/// the body is not one).
fn api_error(what: String, status: u16, text: &str) -> HarnessError {
    let error = serde_json::from_str::<ErrorBody>(text)
        .unwrap_or_else(|_| ErrorBody::new(looper_api::ErrorCode::Internal, truncate(text, 300)));
    HarnessError::Api { what, status, error }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
