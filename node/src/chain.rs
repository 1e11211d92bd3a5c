//! Chain access for the engine: one [`ChainSource`] trait (object-safe, usable as
//! `Arc<dyn ChainSource>`) and its implementations over Esplora ([`EsploraChainSource`]),
//! Electrum ([`ElectrumChainSource`]) and Bitcoin Core's JSON-RPC ([`BitcoindChainSource`], which
//! keeps its own index of the scripts it is asked about), chosen by `[chain] source` in the
//! configuration ([`crate::config::ChainBackend`]).
//!
//! The engine asks only what a swap needs: the tip, a transaction's status, whether an HTLC output
//! was spent and by what (claim or refund: the witness of the spending transaction carries the
//! preimage), the history of an HTLC script, broadcasting (idempotent), and fee rates. The
//! conformance tests implement it over a simulated chain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::{Amount, FeeRate, OutPoint, Script, Transaction, Txid};
use looper_protocol::fees::{FeeEstimates, ESTIMATE_TARGETS};

mod bitcoind;
mod electrum;

pub use bitcoind::{
    BitcoindChainSource, BitcoindRpc, RpcAuth, RpcError as BitcoindRpcError, WalletFeed,
    MEMPOOL_REFRESH, SCAN_WINDOW,
};
pub use electrum::{ElectrumChainSource, ElectrumClient};

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TxStatus {
    /// In the mempool of the chain source.
    Unconfirmed,
    /// In the best chain at `height`.
    Confirmed {
        /// Block height.
        height: u32,
    },
}

impl TxStatus {
    /// Confirmations at tip `tip` (0 when unconfirmed; a block at the tip has 1).
    pub fn confirmations(&self, tip: u32) -> u32 {
        match self {
            TxStatus::Unconfirmed => 0,
            TxStatus::Confirmed { height } => tip.saturating_add(1).saturating_sub(*height),
        }
    }

    /// The confirmation height, if confirmed.
    pub fn height(&self) -> Option<u32> {
        match self {
            TxStatus::Unconfirmed => None,
            TxStatus::Confirmed { height } => Some(*height),
        }
    }
}

/// The transaction that spent an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpend {
    /// The spending transaction.
    pub txid: Txid,
    /// Its input index that spends the output.
    pub vin: u32,
    /// Its status.
    pub status: TxStatus,
}

/// A transaction touching a script, with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTx {
    /// The transaction.
    pub tx: Transaction,
    /// Its status.
    pub status: TxStatus,
}

/// An output found by [`ChainSource::find_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundOutput {
    /// Where it is.
    pub outpoint: OutPoint,
    /// The transaction that created it.
    pub tx: Transaction,
    /// That transaction's status.
    pub status: TxStatus,
}

/// Errors of a chain source. They name the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The chain source could not be reached or answered with an error.
    #[error("chain source failed to {op}")]
    Request {
        /// The operation ("get the tip height", "get transaction TXID", ...).
        op: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The chain source refused a transaction (and does not know it already).
    #[error("transaction {txid} rejected: {reason}")]
    Rejected {
        /// The transaction.
        txid: Txid,
        /// The reason given by the node (e.g. `non-final`, `bad-txns-inputs-missingorspent`).
        reason: String,
    },
    /// The chain source answered something inconsistent.
    #[error("invalid answer from the chain source while trying to {op}: {reason}")]
    InvalidResponse {
        /// The operation.
        op: String,
        /// What is wrong.
        reason: String,
    },
}

/// Read and broadcast access to the Bitcoin chain. Object-safe: use `Arc<dyn ChainSource>`.
#[async_trait]
pub trait ChainSource: Send + Sync {
    /// Height of the best block.
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn tip_height(&self) -> Result<u32, ChainError>;

    /// Status of a transaction; `None` when the source does not know it (never seen, evicted or
    /// reorged out and not in the mempool).
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn tx_status(&self, txid: &Txid) -> Result<Option<TxStatus>, ChainError>;

    /// A transaction by id; `None` when unknown.
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn get_tx(&self, txid: &Txid) -> Result<Option<Transaction>, ChainError>;

    /// What spent `outpoint` (confirmed or in the mempool); `None` if unspent or unknown.
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn output_spend(&self, outpoint: &OutPoint) -> Result<Option<OutputSpend>, ChainError>;

    /// Transactions paying to or spending from `script` (confirmed and mempool), newest first.
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn script_history(&self, script: &Script) -> Result<Vec<HistoryTx>, ChainError>;

    /// The output paying exactly `amount` to `script`, searched in the script's history (oldest
    /// confirmed first, then the mempool); `None` if there is none.
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn find_output(
        &self,
        script: &Script,
        amount: Amount,
    ) -> Result<Option<FoundOutput>, ChainError> {
        let mut history = self.script_history(script).await?;
        // Oldest confirmed first, mempool last.
        history.sort_by_key(|h| h.status.height().unwrap_or(u32::MAX));
        for h in history {
            let txid = h.tx.compute_txid();
            let vout =
                h.tx.output
                    .iter()
                    .position(|o| o.script_pubkey.as_script() == script && o.value == amount);
            if let Some(vout) = vout.and_then(|v| u32::try_from(v).ok()) {
                return Ok(Some(FoundOutput {
                    outpoint: OutPoint { txid, vout },
                    tx: h.tx,
                    status: h.status,
                }));
            }
        }
        Ok(None)
    }

    /// Broadcasts a transaction. Idempotent: a transaction the source already has (mempool or
    /// chain) is success.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] with the node's reason, or [`ChainError::Request`].
    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;

    /// Fee rate estimate to confirm within `target_blocks`, never below 1 sat/vB. Falls back to the
    /// configured fallback when the source has no estimate (regtest).
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError>;

    /// Fee rate estimates for every target of [`ESTIMATE_TARGETS`] (one request where the source
    /// allows it; by default one [`ChainSource::fee_rate`] call per target).
    ///
    /// # Errors
    /// [`ChainError::Request`].
    async fn fee_estimates(&self) -> Result<FeeEstimates, ChainError> {
        let mut rates = Vec::with_capacity(ESTIMATE_TARGETS.len());
        for target in ESTIMATE_TARGETS {
            rates.push(self.fee_rate(target).await?);
        }
        let mut rates = rates.into_iter();
        Ok(FeeEstimates::from_fn(|_| rates.next().unwrap_or(FeeRate::BROADCAST_MIN)))
    }
}

fn request_err(op: impl Into<String>) -> impl FnOnce(esplora_client::Error) -> ChainError {
    let op = op.into();
    move |e| ChainError::Request { op, source: Box::new(e) }
}

/// The most script-history pages fetched (25 confirmed transactions each). HTLC scripts have a
/// handful of transactions; this bounds the work a spammed script can cause.
const MAX_HISTORY_PAGES: usize = 20;

/// [`ChainSource`] over an Esplora HTTP API (esplora-client, async, rustls).
#[derive(Clone)]
pub struct EsploraChainSource {
    client: esplora_client::AsyncClient,
    fallback_fee_rate: FeeRate,
}

impl std::fmt::Debug for EsploraChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsploraChainSource").field("url", &self.client.url()).finish()
    }
}

impl EsploraChainSource {
    /// A client for the Esplora API at `url` (e.g. `https://blockstream.info/api`), with a
    /// 30-second request timeout. `fallback_fee_rate` is used when the server has no estimate.
    ///
    /// # Errors
    /// [`ChainError::Request`] if the HTTP client cannot be built.
    pub fn new(url: &str, fallback_fee_rate: FeeRate) -> Result<EsploraChainSource, ChainError> {
        Self::with_proxy(url, fallback_fee_rate, None)
    }

    /// [`EsploraChainSource::new`] through the SOCKS5 `proxy` when there is one (the node's
    /// `proxy` setting): every request, the wallet's sync included, goes through it, host names
    /// resolved by the proxy (`socks5h`).
    ///
    /// # Errors
    /// [`ChainError::Request`] if the HTTP client cannot be built.
    pub fn with_proxy(
        url: &str,
        fallback_fee_rate: FeeRate,
        proxy: Option<std::net::SocketAddr>,
    ) -> Result<EsploraChainSource, ChainError> {
        let mut builder = esplora_client::Builder::new(url).timeout(30).max_retries(3);
        if let Some(proxy) = proxy {
            builder = builder.proxy(&crate::config::proxy_url(proxy));
        }
        let client = builder.build_async().map_err(request_err("build the HTTP client"))?;
        Ok(EsploraChainSource { client, fallback_fee_rate })
    }

    /// The underlying client, for BDK's full scan and sync ([`crate::wallet::LooperWallet::sync`]).
    pub fn client(&self) -> &esplora_client::AsyncClient {
        &self.client
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// Shares it as a trait object.
    pub fn into_dyn(self) -> Arc<dyn ChainSource> {
        Arc::new(self)
    }

    /// Polls `check` every `interval` until it returns `Some` or `timeout` passes (for tests and
    /// for waiting on a confirmation at start-up).
    ///
    /// # Errors
    /// The first [`ChainError`] of `check`.
    pub async fn poll_until<T, F, Fut>(
        interval: Duration,
        timeout: Duration,
        mut check: F,
    ) -> Result<Option<T>, ChainError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, ChainError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check().await? {
                return Ok(Some(v));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

fn status_of(s: &esplora_client::TxStatus) -> TxStatus {
    match (s.confirmed, s.block_height) {
        (true, Some(height)) => TxStatus::Confirmed { height },
        _ => TxStatus::Unconfirmed,
    }
}

#[async_trait]
impl ChainSource for EsploraChainSource {
    async fn tip_height(&self) -> Result<u32, ChainError> {
        self.client.get_height().await.map_err(request_err("get the tip height"))
    }

    async fn tx_status(&self, txid: &Txid) -> Result<Option<TxStatus>, ChainError> {
        // `/tx/:txid/status` answers `{"confirmed": false}` for an unknown transaction too, so ask
        // for the transaction itself, which is 404 when unknown.
        let info = self
            .client
            .get_tx_info(txid)
            .await
            .map_err(request_err(format!("get the status of transaction {txid}")))?;
        Ok(info.map(|tx| status_of(&tx.status)))
    }

    async fn get_tx(&self, txid: &Txid) -> Result<Option<Transaction>, ChainError> {
        self.client.get_tx(txid).await.map_err(request_err(format!("get transaction {txid}")))
    }

    async fn output_spend(&self, outpoint: &OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        let op = format!("get the spend of output {outpoint}");
        let status = self
            .client
            .get_output_status(&outpoint.txid, u64::from(outpoint.vout))
            .await
            .map_err(request_err(op.clone()))?;
        let Some(status) = status.filter(|s| s.spent) else {
            return Ok(None);
        };
        let (Some(txid), Some(vin)) = (status.txid, status.vin) else {
            return Err(ChainError::InvalidResponse {
                op,
                reason: "spent output without spending txid or input".to_string(),
            });
        };
        let vin = u32::try_from(vin).map_err(|_| ChainError::InvalidResponse {
            op: op.clone(),
            reason: format!("input index {vin} out of range"),
        })?;
        let status = status.status.as_ref().map(status_of).unwrap_or(TxStatus::Unconfirmed);
        Ok(Some(OutputSpend { txid, vin, status }))
    }

    async fn script_history(&self, script: &Script) -> Result<Vec<HistoryTx>, ChainError> {
        let op = "get the history of a script";
        let mut out: Vec<HistoryTx> = Vec::new();
        // First page: up to 50 mempool transactions and the newest 25 confirmed ones.
        let mut page = self.client.scripthash_txs(script, None).await.map_err(request_err(op))?;
        for _ in 0..MAX_HISTORY_PAGES {
            let confirmed_in_page = page.iter().filter(|t| t.status.confirmed).count();
            let last_confirmed = page.iter().rev().find(|t| t.status.confirmed).map(|t| t.txid);
            for t in &page {
                if out.iter().any(|h| h.tx.compute_txid() == t.txid) {
                    continue;
                }
                out.push(HistoryTx { tx: t.to_tx(), status: status_of(&t.status) });
            }
            // Esplora pages confirmed transactions by 25; a shorter page is the last.
            match last_confirmed {
                Some(last) if confirmed_in_page >= 25 => {
                    page = self
                        .client
                        .scripthash_txs(script, Some(last))
                        .await
                        .map_err(request_err(op))?;
                    if page.is_empty() {
                        break;
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let txid = tx.compute_txid();
        match self.client.broadcast(tx).await {
            Ok(()) => Ok(txid),
            Err(e) => {
                // Idempotence: if the source already knows the transaction, it is broadcast.
                if let Ok(Some(_)) = self.tx_status(&txid).await {
                    return Ok(txid);
                }
                match e {
                    esplora_client::Error::HttpResponse { status, message }
                        if (400..500).contains(&status) =>
                    {
                        Err(ChainError::Rejected { txid, reason: message.trim().to_string() })
                    }
                    other => Err(request_err(format!("broadcast transaction {txid}"))(other)),
                }
            }
        }
    }

    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        let estimates =
            self.client.get_fee_estimates().await.map_err(request_err("get fee estimates"))?;
        Ok(self.rate_for(target_blocks, &estimates))
    }

    async fn fee_estimates(&self) -> Result<FeeEstimates, ChainError> {
        let estimates =
            self.client.get_fee_estimates().await.map_err(request_err("get fee estimates"))?;
        Ok(FeeEstimates::from_fn(|target| self.rate_for(target, &estimates)))
    }
}

impl EsploraChainSource {
    /// The rate of Esplora's `estimates` (sat/vB by target) for `target_blocks`, or the fallback.
    fn rate_for(&self, target_blocks: u16, estimates: &HashMap<u16, f64>) -> FeeRate {
        let sat_vb =
            esplora_client::convert_fee_rate(usize::from(target_blocks.max(1)), estimates.clone())
                // No estimate at or below the target: take the nearest above it.
                .filter(|r| r.is_finite() && *r > 0.0);
        match sat_vb {
            Some(r) => {
                // sat/vB -> sat/kwu (1 vB = 4 wu), rounded up, at least 1 sat/vB.
                let kwu = (f64::from(r) * 250.0).ceil().max(250.0);
                FeeRate::from_sat_per_kwu(kwu as u64)
            }
            None => self.fallback_fee_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn confirmations() {
        assert_eq!(TxStatus::Unconfirmed.confirmations(100), 0);
        assert_eq!(TxStatus::Confirmed { height: 100 }.confirmations(100), 1);
        assert_eq!(TxStatus::Confirmed { height: 95 }.confirmations(100), 6);
        // A tip below the block (reorg in progress) gives 0, not an underflow.
        assert_eq!(TxStatus::Confirmed { height: 101 }.confirmations(100), 0);
    }

    #[tokio::test]
    async fn unreachable_source_is_a_typed_error() {
        // A port nothing listens on: bind then drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let src = EsploraChainSource::new(
            &format!("http://127.0.0.1:{port}"),
            FeeRate::from_sat_per_vb_u32(2),
        )
        .unwrap();
        let e = src.tip_height().await.unwrap_err();
        assert!(matches!(e, ChainError::Request { .. }), "{e}");
        assert_eq!(e.to_string(), "chain source failed to get the tip height");
        let dynsrc: Arc<dyn ChainSource> = src.into_dyn();
        assert!(dynsrc.fee_rate(6).await.is_err());
    }

    /// A SOCKS5 proxy on 127.0.0.1 that answers the greeting, records the CONNECT request's
    /// target (`host:port`, the host as the client sent it) and refuses it.
    fn recording_proxy() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let mut head = [0u8; 2];
                if s.read_exact(&mut head).is_err() || head[0] != 5 {
                    continue;
                }
                let mut methods = vec![0u8; usize::from(head[1])];
                let _ = s.read_exact(&mut methods);
                let _ = s.write_all(&[5, 0]);
                let mut req = [0u8; 4];
                if s.read_exact(&mut req).is_err() {
                    continue;
                }
                let host = match req[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        let _ = s.read_exact(&mut ip);
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let mut len = [0u8; 1];
                        let _ = s.read_exact(&mut len);
                        let mut name = vec![0u8; usize::from(len[0])];
                        let _ = s.read_exact(&mut name);
                        String::from_utf8_lossy(&name).into_owned()
                    }
                    _ => continue,
                };
                let mut port = [0u8; 2];
                let _ = s.read_exact(&mut port);
                let _ = tx.send(format!("{host}:{}", u16::from_be_bytes(port)));
                // "Host unreachable".
                let _ = s.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]);
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn requests_go_through_the_proxy_which_resolves_names() {
        let (proxy, seen) = recording_proxy();
        // A name that resolves nowhere: only the proxy may look it up.
        let src = EsploraChainSource::with_proxy(
            "http://esplora.invalid/api",
            FeeRate::from_sat_per_vb_u32(2),
            Some(proxy),
        )
        .unwrap();
        assert!(src.tip_height().await.is_err());
        let target = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(target, "esplora.invalid:80");
    }

    /// Run by [`ldk_node_http_follows_the_proxy_environment`] in a child process whose
    /// environment is [`crate::config::proxy_env`]: an Esplora client built as ldk-node 0.7
    /// builds its own (no proxy of its own) asks the tip of an unresolvable host.
    #[tokio::test]
    #[ignore = "run in a child process by ldk_node_http_follows_the_proxy_environment"]
    async fn child_ldk_style_client() {
        let client =
            esplora_client::Builder::new("http://esplora.invalid/api").build_async().unwrap();
        assert!(client.get_height().await.is_err());
    }

    #[test]
    fn ldk_node_http_follows_the_proxy_environment() {
        let (proxy, seen) = recording_proxy();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "chain::tests::child_ldk_style_client", "--ignored", "--quiet"]);
        for var in ["all_proxy", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy"] {
            cmd.env_remove(var);
        }
        cmd.envs(crate::config::proxy_env(proxy));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "child did not run");
        let target = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(target, "esplora.invalid:80");
    }
}
