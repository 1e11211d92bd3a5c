//! [`ChainSource`] over an Electrum server (electrum-client 0.24, the client ldk-node and
//! bdk_electrum use), and the connection the BDK wallet syncs through
//! ([`crate::wallet::LooperWallet::sync_with`]).
//!
//! Electrum serves scripts, not transactions: a transaction's status is read from the history
//! of one of its output scripts (as BDK and LDK do), what spent an output from the history of
//! that output's script (the server indexes the scripts a transaction spends from too). The
//! client is blocking: every call runs on tokio's blocking pool, never on the runtime's workers.
//! One connection serves the engine and the wallet's sync; electrum-client reconnects on its own
//! after an I/O error (its retries).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bdk_electrum::BdkElectrumClient;
use bitcoin::{FeeRate, OutPoint, Script, ScriptBuf, Transaction, Txid};
use electrum_client::{ElectrumApi, GetHistoryRes};
use looper_protocol::fees::{FeeEstimates, ESTIMATE_TARGETS};

use super::{ChainError, ChainSource, HistoryTx, OutputSpend, TxStatus};

/// The most transactions of one script's history fetched (the newest): HTLC scripts have a
/// handful; this bounds the work a spammed script can cause (as the Esplora source's pages).
const MAX_HISTORY_TXS: usize = 550;

/// Seconds a request may take before electrum-client gives up on the connection.
const TIMEOUT_SECS: u8 = 30;

/// Reconnections electrum-client tries after an I/O error before the call fails (at least one,
/// or a broken connection would never be replaced).
const RETRIES: u8 = 2;

/// The blocking Electrum client with BDK's caches (transactions, headers, anchors).
pub type ElectrumClient = BdkElectrumClient<electrum_client::Client>;

/// [`ChainSource`] over an Electrum server; also the wallet's sync connection.
#[derive(Clone)]
pub struct ElectrumChainSource {
    client: Arc<ElectrumClient>,
    url: String,
    fallback_fee_rate: FeeRate,
}

impl std::fmt::Debug for ElectrumChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectrumChainSource").field("url", &self.url).finish()
    }
}

fn request_err(op: impl Into<String>) -> impl FnOnce(electrum_client::Error) -> ChainError {
    let op = op.into();
    move |e| ChainError::Request { op, source: Box::new(e) }
}

/// The message of an Electrum error object (`{"code": .., "message": ".."}`), else its JSON.
fn protocol_message(error: &serde_json::Value) -> String {
    match error.get("message").and_then(serde_json::Value::as_str) {
        Some(m) => m.trim().to_string(),
        None => error.to_string(),
    }
}

/// A transaction's status from a history entry: heights 0 and -1 are the mempool.
fn status_of(entry: &GetHistoryRes) -> TxStatus {
    match u32::try_from(entry.height) {
        Ok(height) if height > 0 => TxStatus::Confirmed { height },
        _ => TxStatus::Unconfirmed,
    }
}

/// The script whose history shows `tx`: its first output that is not `OP_RETURN` (servers may
/// not index those), else its first output.
fn watch_script(tx: &Transaction) -> Option<ScriptBuf> {
    tx.output
        .iter()
        .find(|o| !o.script_pubkey.is_op_return())
        .or_else(|| tx.output.first())
        .map(|o| o.script_pubkey.clone())
}

/// A transaction by id; `None` when the server does not know it (a protocol error, as
/// electrs and ElectrumX answer for an unknown transaction).
fn get_tx(
    client: &electrum_client::Client,
    txid: &Txid,
) -> Result<Option<Transaction>, electrum_client::Error> {
    match client.transaction_get(txid) {
        Ok(tx) => Ok(Some(tx)),
        Err(electrum_client::Error::Protocol(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn tx_status(
    client: &electrum_client::Client,
    txid: &Txid,
) -> Result<Option<TxStatus>, electrum_client::Error> {
    let Some(tx) = get_tx(client, txid)? else {
        return Ok(None);
    };
    let Some(script) = watch_script(&tx) else {
        return Ok(None);
    };
    let history = client.script_get_history(&script)?;
    Ok(history.iter().find(|h| h.tx_hash == *txid).map(status_of))
}

impl ElectrumChainSource {
    /// Connects to the Electrum server at `url` (`tcp://HOST:PORT` or `ssl://HOST:PORT`; TLS
    /// certificates are checked against the web's roots, as ldk-node's client does).
    /// `fallback_fee_rate` is used when the server has no estimate.
    ///
    /// # Errors
    /// [`ChainError::Request`] when the server cannot be reached.
    pub async fn connect(
        url: &str,
        fallback_fee_rate: FeeRate,
    ) -> Result<ElectrumChainSource, ChainError> {
        let config = electrum_client::ConfigBuilder::new()
            .timeout(Some(TIMEOUT_SECS))
            .retry(RETRIES)
            .build();
        let target = url.to_string();
        let client = tokio::task::spawn_blocking(move || {
            electrum_client::Client::from_config(&target, config)
        })
        .await
        .map_err(|e| ChainError::Request {
            op: format!("connect to the Electrum server {url}"),
            source: Box::new(e),
        })?
        .map_err(request_err(format!("connect to the Electrum server {url}")))?;
        Ok(ElectrumChainSource {
            client: Arc::new(BdkElectrumClient::new(client)),
            url: url.to_string(),
            fallback_fee_rate,
        })
    }

    /// The client with BDK's caches, for the wallet's full scan and sync.
    pub fn client(&self) -> &Arc<ElectrumClient> {
        &self.client
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Shares it as a trait object.
    pub fn into_dyn(self) -> Arc<dyn ChainSource> {
        Arc::new(self)
    }

    /// Runs `f` with the client on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: String,
        f: impl FnOnce(&ElectrumClient) -> Result<T, electrum_client::Error> + Send + 'static,
    ) -> Result<T, ChainError> {
        let client = Arc::clone(&self.client);
        match tokio::task::spawn_blocking(move || f(&client)).await {
            Ok(result) => result.map_err(request_err(op)),
            Err(e) => Err(ChainError::Request { op, source: Box::new(e) }),
        }
    }
}

/// A rate in BTC/kvB (Electrum's and Bitcoin Core's unit) as a fee rate, rounded up, at least
/// 1 sat/vB; `fallback` when the server has none (`-1`).
fn rate_of(btc_kvb: f64, fallback: FeeRate) -> FeeRate {
    if !btc_kvb.is_finite() || btc_kvb <= 0.0 {
        return fallback;
    }
    // BTC/kvB -> whole sat/kvB (Bitcoin Core's unit; rounding drops the float's noise) ->
    // sat/kwu (1 vB = 4 wu), rounded up.
    let sat_kvb = (btc_kvb * 1e8).round().min(1e15);
    let kwu = (sat_kvb / 4.0).ceil().max(250.0);
    FeeRate::from_sat_per_kwu(kwu as u64)
}

#[async_trait]
impl ChainSource for ElectrumChainSource {
    async fn tip_height(&self) -> Result<u32, ChainError> {
        let height = self
            .blocking("get the tip height".into(), |c| {
                let tip = c.inner.block_headers_subscribe()?;
                // The subscription queues a notification per new tip: drop them, the next call
                // asks again.
                while c.inner.block_headers_pop()?.is_some() {}
                Ok(tip.height)
            })
            .await?;
        u32::try_from(height).map_err(|_| ChainError::InvalidResponse {
            op: "get the tip height".into(),
            reason: format!("height {height} out of range"),
        })
    }

    async fn tx_status(&self, txid: &Txid) -> Result<Option<TxStatus>, ChainError> {
        let txid = *txid;
        self.blocking(format!("get the status of transaction {txid}"), move |c| {
            tx_status(&c.inner, &txid)
        })
        .await
    }

    async fn get_tx(&self, txid: &Txid) -> Result<Option<Transaction>, ChainError> {
        let txid = *txid;
        self.blocking(format!("get transaction {txid}"), move |c| get_tx(&c.inner, &txid)).await
    }

    async fn output_spend(&self, outpoint: &OutPoint) -> Result<Option<OutputSpend>, ChainError> {
        let outpoint = *outpoint;
        self.blocking(format!("get the spend of output {outpoint}"), move |c| {
            let Some(funding) = get_tx(&c.inner, &outpoint.txid)? else {
                return Ok(None);
            };
            let Some(out) = funding.output.get(outpoint.vout as usize) else {
                return Ok(None);
            };
            let history = c.inner.script_get_history(&out.script_pubkey)?;
            let mut found: Option<OutputSpend> = None;
            for entry in history.iter().filter(|h| h.tx_hash != outpoint.txid) {
                // Gone since the history was read (replaced, evicted): not a spend.
                let Some(tx) = get_tx(&c.inner, &entry.tx_hash)? else { continue };
                let Some(vin) = tx.input.iter().position(|i| i.previous_output == outpoint) else {
                    continue;
                };
                let spend = OutputSpend {
                    txid: entry.tx_hash,
                    vin: u32::try_from(vin).unwrap_or(u32::MAX),
                    status: status_of(entry),
                };
                // A confirmed spend wins over a mempool one.
                if spend.status.height().is_some() {
                    return Ok(Some(spend));
                }
                found.get_or_insert(spend);
            }
            Ok(found)
        })
        .await
    }

    async fn script_history(&self, script: &Script) -> Result<Vec<HistoryTx>, ChainError> {
        let script = script.to_owned();
        self.blocking("get the history of a script".into(), move |c| {
            let mut history = c.inner.script_get_history(&script)?;
            // Newest first: the mempool, then confirmed from the highest block.
            history.sort_by_key(|h| {
                std::cmp::Reverse(if h.height <= 0 { i32::MAX } else { h.height })
            });
            history.truncate(MAX_HISTORY_TXS);
            let mut out: Vec<HistoryTx> = Vec::with_capacity(history.len());
            for entry in &history {
                if out.iter().any(|h| h.tx.compute_txid() == entry.tx_hash) {
                    continue;
                }
                // Transactions never change: BDK's cache serves those seen before.
                match c.fetch_tx(entry.tx_hash) {
                    Ok(tx) => out.push(HistoryTx { tx: (*tx).clone(), status: status_of(entry) }),
                    // Gone since the history was read.
                    Err(electrum_client::Error::Protocol(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let txid = tx.compute_txid();
        let owned = tx.clone();
        let sent = self
            .blocking(format!("broadcast transaction {txid}"), move |c| {
                match c.inner.transaction_broadcast(&owned) {
                    Ok(_) => Ok(None),
                    // Idempotence: a transaction the server already has is broadcast.
                    Err(e) => match tx_status(&c.inner, &txid) {
                        Ok(Some(_)) => Ok(None),
                        _ => match e {
                            electrum_client::Error::Protocol(v) => Ok(Some(protocol_message(&v))),
                            other => Err(other),
                        },
                    },
                }
            })
            .await?;
        match sent {
            None => Ok(txid),
            Some(reason) => Err(ChainError::Rejected { txid, reason }),
        }
    }

    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        let target = usize::from(target_blocks.max(1));
        let btc_kvb = self
            .blocking("get a fee estimate".into(), move |c| c.inner.estimate_fee(target))
            .await?;
        Ok(rate_of(btc_kvb, self.fallback_fee_rate))
    }

    async fn fee_estimates(&self) -> Result<FeeEstimates, ChainError> {
        let targets: Vec<usize> = ESTIMATE_TARGETS.iter().map(|t| usize::from(*t)).collect();
        let rates = self
            .blocking("get fee estimates".into(), move |c| c.inner.batch_estimate_fee(targets))
            .await?;
        if rates.len() != ESTIMATE_TARGETS.len() {
            return Err(ChainError::InvalidResponse {
                op: "get fee estimates".into(),
                reason: format!("{} estimates for {} targets", rates.len(), ESTIMATE_TARGETS.len()),
            });
        }
        let by_target: HashMap<u16, f64> = ESTIMATE_TARGETS.into_iter().zip(rates).collect();
        Ok(FeeEstimates::from_fn(|target| {
            rate_of(by_target.get(&target).copied().unwrap_or(-1.0), self.fallback_fee_rate)
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn unreachable_server_is_a_typed_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = ElectrumChainSource::connect(
            &format!("tcp://127.0.0.1:{port}"),
            FeeRate::from_sat_per_vb_u32(2),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ChainError::Request { .. }), "{e}");
        assert!(e.to_string().contains("connect to the Electrum server tcp://127.0.0.1:"), "{e}");
    }

    #[test]
    fn electrum_rates_convert_to_fee_rates() {
        let fallback = FeeRate::from_sat_per_vb_u32(3);
        assert_eq!(rate_of(-1.0, fallback), fallback);
        assert_eq!(rate_of(f64::NAN, fallback), fallback);
        assert_eq!(rate_of(0.00001, fallback), FeeRate::from_sat_per_vb_u32(1));
        assert_eq!(rate_of(0.0002, fallback), FeeRate::from_sat_per_vb_u32(20));
        assert_eq!(rate_of(0.000001, fallback), FeeRate::from_sat_per_vb_u32(1), "floor 1 sat/vB");
    }
}
