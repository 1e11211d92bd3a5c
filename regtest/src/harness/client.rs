//! A typed client of the looper-node control API (JSON over HTTP, bearer token).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::HarnessError;

/// `GET /v1/info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Bitcoin network name.
    #[serde(default)]
    pub network: String,
    /// Chain tip the node sees.
    #[serde(default)]
    pub tip_height: u32,
    /// The node's Nostr public key (hex).
    #[serde(default)]
    pub nostr_pubkey: String,
    /// The node's Lightning node id (hex).
    #[serde(default)]
    pub ln_node_id: String,
}

/// `GET /v1/wallet/balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletBalance {
    /// Confirmed.
    #[serde(default)]
    pub confirmed_sat: u64,
    /// Unconfirmed, our own.
    #[serde(default)]
    pub trusted_pending_sat: u64,
    /// Unconfirmed, from others.
    #[serde(default)]
    pub untrusted_pending_sat: u64,
    /// Everything.
    #[serde(default)]
    pub total_sat: u64,
}

/// `GET /v1/ln/balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LnBalance {
    /// ldk-node's spendable on-chain funds.
    #[serde(default)]
    pub onchain_spendable_sat: u64,
    /// What the node can send over its channels.
    #[serde(default)]
    pub lightning_outbound_msat: u64,
    /// What the node can receive over its channels.
    #[serde(default)]
    pub lightning_inbound_msat: u64,
}

/// One channel of `GET /v1/ln/channels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Channel id (hex).
    #[serde(default)]
    pub channel_id: String,
    /// The peer's node id.
    #[serde(default)]
    pub counterparty: String,
    /// Channel size.
    #[serde(default)]
    pub capacity_sat: u64,
    /// What we can send.
    #[serde(default)]
    pub outbound_msat: u64,
    /// Whether it is usable now.
    #[serde(default)]
    pub usable: bool,
}

/// One offer of `GET /v1/offers/discover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredOffer {
    /// The seller's Nostr public key (hex).
    pub seller: String,
    /// The offer, as the protocol's JSON.
    pub offer: Value,
    /// What the swap costs the buyer at the asked amount.
    #[serde(default)]
    pub cost_sat: u64,
}

/// `GET /v1/swaps/{id}`: the summary and the protocol record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapView {
    /// The swap id.
    #[serde(default)]
    pub swap_id: String,
    /// The state name (`"Requested"`, ..., `"Claimed"`).
    #[serde(default)]
    pub state: String,
    /// `pending`, `succeeded` or `failed`.
    #[serde(default)]
    pub status: String,
    /// The payment hash once known.
    #[serde(default)]
    pub payment_hash: Option<String>,
    /// The protocol record (JSON), if the node sent it.
    #[serde(default)]
    pub record: Value,
}

impl SwapView {
    /// Whether the swap reached a final state (succeeded or failed).
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed")
    }
}

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

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
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
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(HarnessError::Api {
                what,
                status: status.as_u16(),
                code: v["code"].as_str().unwrap_or("").to_string(),
                message: v["message"].as_str().map(String::from).unwrap_or(text),
            });
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
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// [`HarnessError::Http`] or [`HarnessError::Api`].
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, HarnessError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
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
        let v: Value = self.post("/v1/wallet/address", &json!({})).await?;
        field_str(&v, "address")
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
        let v: Value = self.post("/v1/ln/address", &json!({})).await?;
        field_str(&v, "address")
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
        let v: Value = self.get("/v1/ln/channels").await?;
        let list = if v.is_array() { v } else { v["channels"].clone() };
        serde_json::from_value(list).map_err(|e| HarnessError::Http {
            what: "GET /v1/ln/channels".into(),
            reason: e.to_string(),
        })
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
    ) -> Result<Value, HarnessError> {
        self.post(
            "/v1/ln/open",
            &json!({"node_id": node_id, "address": address, "amount_sat": amount_sat, "push_msat": 0}),
        )
        .await
    }

    /// `POST /v1/sync`: syncs the swap wallet and ldk-node now; the node's tip height.
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn sync(&self) -> Result<u32, HarnessError> {
        let v: Value = self.post("/v1/sync", &json!({})).await?;
        Ok(v["tip_height"].as_u64().and_then(|h| u32::try_from(h).ok()).unwrap_or(0))
    }

    /// `POST /v1/offers`: publishes `offer` (the protocol's offer JSON).
    ///
    /// # Errors
    /// As [`ApiClient::post`].
    pub async fn publish_offer(&self, offer: &Value) -> Result<Value, HarnessError> {
        self.post("/v1/offers", offer).await
    }

    /// `GET /v1/offers/discover?amount_sat=N`: offers on the relays, cheapest first.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn discover(&self, amount_sat: u64) -> Result<Vec<DiscoveredOffer>, HarnessError> {
        let v: Value = self.get(&format!("/v1/offers/discover?amount_sat={amount_sat}")).await?;
        let list = if v.is_array() { v } else { v["offers"].clone() };
        serde_json::from_value(list).map_err(|e| HarnessError::Http {
            what: "GET /v1/offers/discover".into(),
            reason: e.to_string(),
        })
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
        let body = json!({
            "offer": offer.offer,
            "offer_id": offer.offer["offer_id"],
            "seller": offer.seller,
            "amount_sat": amount_sat,
            "max_total_fee_sat": max_total_fee_sat,
        });
        let v: Value = self.post("/v1/swaps/out", &body).await?;
        field_str(&v, "swap_id")
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
    pub async fn swaps(&self) -> Result<Vec<SwapView>, HarnessError> {
        let v: Value = self.get("/v1/swaps").await?;
        let list = if v.is_array() { v } else { v["swaps"].clone() };
        serde_json::from_value(list)
            .map_err(|e| HarnessError::Http { what: "GET /v1/swaps".into(), reason: e.to_string() })
    }

    /// `GET /v1/swaps/{id}/events`: the swap's notifications (JSON), oldest first.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub async fn swap_events(&self, id: &str) -> Result<Vec<Value>, HarnessError> {
        let v: Value = self.get(&format!("/v1/swaps/{id}/events")).await?;
        Ok(v["events"]
            .as_array()
            .map(|a| {
                a.iter().map(|e| e.get("event").cloned().unwrap_or_else(|| e.clone())).collect()
            })
            .unwrap_or_default())
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
            return Err(HarnessError::Api {
                what,
                status: status.as_u16(),
                code: String::new(),
                message: truncate(&text, 300),
            });
        }
        let mut out = Vec::new();
        for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
            let v: Value = serde_json::from_str(data.trim()).map_err(|e| HarnessError::Http {
                what: what.clone(),
                reason: format!("bad event ({e}): {}", truncate(data, 300)),
            })?;
            out.push((v["seq"].as_u64().unwrap_or(u64::MAX), v["event"].clone()));
        }
        Ok(out)
    }
}

fn field_str(v: &Value, key: &str) -> Result<String, HarnessError> {
    v[key].as_str().map(String::from).ok_or_else(|| HarnessError::Http {
        what: format!("reading `{key}`"),
        reason: format!("missing in {}", truncate(&v.to_string(), 300)),
    })
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
