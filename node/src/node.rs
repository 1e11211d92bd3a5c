//! Wiring a node from its [`Config`]: seed, store, wallet, backups (and the restore from them),
//! chain source, ldk-node, Nostr transport, engine and control API ([`LooperNode::start`]), and
//! running it until shutdown ([`LooperNode::run`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use bitcoin::FeeRate;
use looper_api::{OfferContext, OfferTerms};
use looper_protocol::messages::{Offer, OfferError};
use looper_protocol::seller::SellerPolicy;

use crate::backup::{BackupKeys, BackupOptions, Backups, SHUTDOWN_FLUSH_TIMEOUT};
use crate::chain::{
    BitcoindChainSource, BitcoindRpc, ChainSource, ElectrumChainSource, EsploraChainSource,
};
use crate::config::{ChainBackend, Config};
use crate::engine::io::{BdkSwapWallet, OsEntropy, SystemClock};
use crate::engine::{Engine, EngineConfig, EngineParts, FeeSettings};
use crate::lightning::{storage_dir, LdkChain, LdkConfig, LdkLightning, Lightning};
use crate::nostr::{NostrTransport, ProcessedEvents, ProcessedStoreError, TransportConfig};
use crate::seed::{load_or_create_seed, read_mnemonic, ApiToken, NodeKeys, SeedOrigin};
use crate::store::{RedbStore, SwapStore, DB_FILE_NAME};
use crate::wallet::{LooperWallet, WalletSync};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A step of the start failed.
    #[error("cannot {step}: {reason}")]
    Start {
        /// The step ("open the store", ...).
        step: &'static str,
        /// Why (never contains secrets).
        reason: String,
    },
}

fn step<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> NodeError {
    move |e| NodeError::Start { step, reason: e.to_string() }
}

/// [`ProcessedEvents`] over the node's [`SwapStore`].
pub struct StoreProcessedEvents(pub Arc<dyn SwapStore>);

impl ProcessedEvents for StoreProcessedEvents {
    fn mark_processed(&self, id: [u8; 32]) -> Result<bool, ProcessedStoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.0.mark_event_processed(id, now).map_err(|e| ProcessedStoreError(e.to_string()))
    }

    fn is_processed(&self, id: [u8; 32]) -> Result<bool, ProcessedStoreError> {
        self.0.is_event_processed(&id).map_err(|e| ProcessedStoreError(e.to_string()))
    }
}

/// The id of the offer built from the configuration's seller section.
pub const CONFIG_OFFER_ID: &str = "looper";

/// The id of the loop-in offer built from the configuration's `[seller.in]` section.
pub const CONFIG_LOOP_IN_OFFER_ID: &str = "looper-in";

/// The offer built from the configuration's `[seller]` section (`None` when `seller.enabled` is
/// off): amount range, fees, funding fee, prepay, confirmations, timeout delta, claim margin,
/// invoice expiry, our Lightning node id and first routable listen address (none when
/// `seller.publish_lightning_address` is off), our relays. Its `expires_at` is set each time the
/// engine publishes it.
///
/// # Errors
/// The offer's terms do not validate.
pub fn seller_offer(config: &Config, ln_node_id: PublicKey) -> Result<Option<Offer>, OfferError> {
    let s = &config.seller;
    if !s.enabled {
        return Ok(None);
    }
    config_offer(config, &s.terms, ln_node_id, false).map(Some)
}

/// The loop-in offer built from the configuration's `[seller.in]` section (`None` without one):
/// as [`seller_offer`], with `direction: loop_in` and no prepay.
///
/// # Errors
/// The offer's terms do not validate.
pub fn seller_loop_in_offer(
    config: &Config,
    ln_node_id: PublicKey,
) -> Result<Option<Offer>, OfferError> {
    let Some(terms) = &config.seller.loop_in else { return Ok(None) };
    config_offer(config, terms, ln_node_id, true).map(Some)
}

fn config_offer(
    config: &Config,
    terms: &OfferTerms,
    ln_node_id: PublicKey,
    loop_in: bool,
) -> Result<Offer, OfferError> {
    let ln_address = config
        .lightning
        .listen
        .iter()
        .find(|a| config.seller.publish_lightning_address && !a.ip().is_unspecified())
        .map(|a| a.to_string());
    let ctx = OfferContext {
        offer_id: if loop_in { CONFIG_LOOP_IN_OFFER_ID } else { CONFIG_OFFER_ID }.to_string(),
        network: config.network,
        ln_node_id,
        ln_address,
        relays: config.relays.clone(),
        expires_at: u64::MAX,
        // An automatic prepay is priced at the floor until the engine's first fee estimate
        // reprices it (`EngineConfig::auto_prepay`).
        fee_rate_sat_vb: 1,
    };
    let offer = if loop_in { terms.loop_in_offer(ctx) } else { terms.offer(ctx) };
    offer.validate()?;
    Ok(offer)
}

/// What the start logs as warnings about the `proxy` setting: what goes around the proxy.
/// `ldk_env`: the process environment routes ldk-node's HTTP clients through the proxy
/// ([`crate::config::proxy_env_is_set`]). Empty without a proxy.
pub fn proxy_warnings(config: &Config, ldk_env: bool) -> Vec<String> {
    let Some(proxy) = config.proxy else { return Vec::new() };
    let mut warnings = vec![format!(
        "Lightning peer connections do not go through the proxy {proxy} (ldk-node 0.7 cannot use \
         one): channel peers see this node's IP address, and .onion peers cannot be reached"
    )];
    if !ldk_env {
        warnings.push(format!(
            "ldk-node's own chain access (Esplora) does not go through the proxy {proxy} either: \
             ALL_PROXY, HTTPS_PROXY and HTTP_PROXY are not set to {} (looper-node sets them \
             itself; a program embedding the node must set them before it starts)",
            crate::config::proxy_url(proxy)
        ));
    }
    let published = config
        .lightning
        .listen
        .iter()
        .find(|a| config.seller.publish_lightning_address && !a.ip().is_unspecified());
    if let (true, Some(addr)) = (config.seller.enabled, published) {
        warnings.push(format!(
            "the offer publishes this node's Lightning address {addr}: set \
             seller.publish_lightning_address = false to keep it off the relays"
        ));
    }
    warnings
}

/// The chain source of `config` (`[chain]`): the engine's [`ChainSource`], the client the
/// wallet syncs through, and ldk-node's.
async fn chain_source(
    config: &Config,
    fallback: FeeRate,
) -> Result<(Arc<dyn ChainSource>, WalletSync, LdkChain), crate::chain::ChainError> {
    match config.chain_backend() {
        ChainBackend::Esplora(url) => {
            let esplora = EsploraChainSource::with_proxy(&url, fallback, config.proxy)?;
            let sync = WalletSync::Esplora(esplora.client().clone());
            Ok((esplora.into_dyn(), sync, LdkChain::Esplora(url)))
        }
        ChainBackend::Electrum(url) => {
            tracing::info!(%url, "chain source: Electrum");
            let electrum = ElectrumChainSource::connect(&url, fallback).await?;
            let sync = WalletSync::Electrum(Arc::clone(electrum.client()));
            Ok((electrum.into_dyn(), sync, LdkChain::Electrum(url)))
        }
        ChainBackend::Bitcoind { url, auth } => {
            tracing::info!(%url, "chain source: bitcoind JSON-RPC");
            let op = "connect to bitcoind";
            let rpc = BitcoindRpc::new(&url, auth).map_err(|e| {
                crate::chain::ChainError::Request { op: op.into(), source: Box::new(e) }
            })?;
            // ldk-node takes a user and password: the cookie's, as it is now.
            let (user, password) = rpc.credentials().map_err(|e| {
                crate::chain::ChainError::Request { op: op.into(), source: Box::new(e) }
            })?;
            let (host, port) = bitcoind_host_port(&url).ok_or_else(|| {
                crate::chain::ChainError::InvalidResponse {
                    op: op.into(),
                    reason: format!("{url} is not http://HOST:PORT"),
                }
            })?;
            let bitcoind = Arc::new(BitcoindChainSource::new(rpc, fallback));
            bitcoind.check(config.network).await?;
            let chain: Arc<dyn ChainSource> = bitcoind.clone();
            let ldk = LdkChain::BitcoindRpc { host, port, user, password };
            Ok((chain, WalletSync::Bitcoind(bitcoind), ldk))
        }
    }
}

/// The host and port of `http://HOST:PORT` (validated by the configuration).
fn bitcoind_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host.to_string(), port.parse().ok()?))
}

/// A started node.
pub struct LooperNode {
    /// The configuration it runs with.
    pub config: Config,
    /// The engine.
    pub engine: Engine,
    /// The swap wallet (shared with the engine).
    pub wallet: Arc<LooperWallet>,
    /// The Nostr transport (shared with the engine; the API discovers offers through it).
    pub transport: NostrTransport,
    /// The Lightning node.
    pub lightning: Arc<LdkLightning>,
    /// Where the seed file is and whether it was just created.
    pub seed: (std::path::PathBuf, SeedOrigin),
    /// The API token.
    pub token: ApiToken,
    /// The swap-store backups on the relays (and what the restore at start did).
    pub backups: Backups,
    /// The control API's listener, bound before anything else starts (a port in use fails the
    /// start at once, before the Lightning node runs).
    listener: tokio::net::TcpListener,
}

impl std::fmt::Debug for LooperNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LooperNode").field("datadir", &self.config.datadir).finish()
    }
}

impl LooperNode {
    /// Starts every component from `config`. Must run in a multi-threaded tokio runtime.
    ///
    /// # Errors
    /// [`NodeError::Start`] naming the step that failed.
    pub async fn start(config: Config) -> Result<LooperNode, NodeError> {
        if let Some(proxy) = config.proxy {
            tracing::info!(%proxy, "Nostr relays and the Esplora chain source through the proxy");
            let ldk_env = crate::config::proxy_env_is_set(proxy);
            for warning in proxy_warnings(&config, ldk_env) {
                tracing::warn!("{warning}");
            }
        }
        std::fs::create_dir_all(&config.datadir).map_err(step("create the data directory"))?;
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .map_err(step("bind the control API"))?;
        let restore = match &config.restore {
            Some(source) => Some(read_mnemonic(source).map_err(step("read the restore mnemonic"))?),
            None => None,
        };
        let (mnemonic, origin) =
            load_or_create_seed(&config.datadir, restore).map_err(step("load the seed"))?;
        let keys =
            NodeKeys::from_mnemonic(&mnemonic, config.network).map_err(step("derive keys"))?;
        let token =
            ApiToken::load_or_create(&config.datadir).map_err(step("load the API token"))?;
        let store =
            RedbStore::open(&config.datadir.join(DB_FILE_NAME)).map_err(step("open the store"))?;
        let wallet = Arc::new(
            LooperWallet::load_or_create(&store, &keys, config.network, config.max_fee_rate())
                .map_err(step("load the wallet"))?,
        );
        // Backups: restore an emptied store before anything uses it, then wrap it. A restore
        // that cannot reach any relay fails the start (it could reuse a swap key otherwise).
        let backup_keys =
            BackupKeys::from_node_keys(&keys).map_err(step("derive the backup key"))?;
        let backups = Backups::start(
            BackupOptions {
                proxy: config.proxy,
                ..BackupOptions::new(config.relays.clone(), origin == SeedOrigin::Created)
            },
            backup_keys,
            Arc::new(store.clone()),
            Some(Arc::clone(&wallet)),
        )
        .await
        .map_err(step("restore the swaps from the backups"))?;
        let fallback = FeeRate::from_sat_per_vb_u32(
            u32::try_from(config.fees.fallback_fee_rate_sat_vb).unwrap_or(2),
        );
        let (chain, sync_client, ldk_chain) =
            chain_source(&config, fallback).await.map_err(step("reach the chain source"))?;
        let lightning = Arc::new(
            LdkLightning::start_with_chain(
                LdkConfig {
                    network: config.network,
                    esplora_url: config.esplora_url.clone().unwrap_or_default(),
                    storage_dir: storage_dir(&config.datadir),
                    listen: config.lightning.listen.iter().map(|a| a.to_string()).collect(),
                    alias: config.lightning.alias.clone(),
                    sync_interval_secs: config.sync.lightning_secs,
                    rgs_url: config.lightning.rgs_url.clone(),
                    announcement_addresses: config.lightning.announcement_addresses.clone(),
                },
                ldk_chain,
                keys.ldk_seed_bytes().map_err(step("derive the lightning seed"))?,
            )
            .await
            .map_err(step("start the lightning node"))?,
        );
        let store: Arc<dyn SwapStore> = backups.store();
        let nostr_key = keys.nostr_secret_key().map_err(step("derive the nostr key"))?;
        // The engine marks each message processed once it has acted on it (persist before act).
        let transport_config = TransportConfig {
            manual_ack: true,
            request_rate_limit: config.peer_limits.swap_requests(),
            message_rate_limit: config.peer_limits.messages(),
            proxy: config.proxy,
            ..TransportConfig::new(nostr_key.secret_bytes(), config.relays.clone())
        };
        let transport = NostrTransport::connect(
            transport_config,
            Arc::new(StoreProcessedEvents(Arc::clone(&store))),
        )
        .await
        .map_err(step("connect to the nostr relays"))?;
        let wallet_every = u32::try_from(
            config.sync.wallet_secs.checked_div(config.sync.chain_poll_secs.max(1)).unwrap_or(1),
        )
        .unwrap_or(1);
        let engine = Engine::start(EngineParts {
            store,
            wallet: Arc::new(BdkSwapWallet::new(Arc::clone(&wallet), Some(sync_client))),
            chain,
            lightning: Arc::clone(&lightning) as Arc<dyn Lightning>,
            transport: Arc::new(transport.clone()),
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            swap_master: keys.swap_master().map_err(step("derive the swap master key"))?,
            config: EngineConfig {
                seller_policy: SellerPolicy {
                    cooperative_claims: config.seller.cooperative_claims,
                },
                claimer_policy: config.buyer_policy(),
                chain_poll: Duration::from_secs(config.sync.chain_poll_secs.max(1)),
                wallet_sync_every: wallet_every.max(1),
                seller_offer: seller_offer(&config, lightning.node_id())
                    .map_err(step("build the offer from the seller settings"))?,
                loop_in_offer: seller_loop_in_offer(&config, lightning.node_id())
                    .map_err(step("build the loop-in offer from the [seller.in] settings"))?,
                max_concurrent_swaps: config
                    .seller
                    .enabled
                    .then_some(config.seller.max_concurrent_swaps),
                max_unpaid_locked_sat: (config.seller.enabled
                    && config.seller.max_unpaid_locked_sat > 0)
                    .then_some(config.seller.max_unpaid_locked_sat),
                check_liquidity: config.seller.check_liquidity,
                auto_prepay: config.seller.terms.prepay_sat == looper_api::Prepay::Auto,
                blocked_peers: config
                    .seller_blocked_keys()
                    .map_err(step("read seller.blocked_keys"))?,
                fees: FeeSettings {
                    claim_target: config.fees.claim_conf_target,
                    refund_target: config.fees.refund_conf_target,
                    funding_target: config.fees.funding_conf_target,
                },
                publish_ln_address: config.seller.publish_lightning_address,
                ..EngineConfig::default()
            },
        })
        .await
        .map_err(step("start the swap engine"))?;
        let seed_path = config.datadir.join(crate::seed::SEED_FILE_NAME);
        Ok(LooperNode {
            config,
            engine,
            wallet,
            transport,
            lightning,
            seed: (seed_path, origin),
            token,
            backups,
            listener,
        })
    }

    /// Serves the control API and runs the engine until `shutdown` resolves, then stops the
    /// Lightning node. `on_listen` is told the API's address once it is bound.
    ///
    /// # Errors
    /// [`NodeError::Start`] when the API's address cannot be read.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        on_listen: impl FnOnce(SocketAddr),
    ) -> Result<(), NodeError> {
        let listener = self.listener;
        let addr = listener.local_addr().map_err(step("bind the control API"))?;
        on_listen(addr);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut engine_stop = stop_rx.clone();
        let engine_task = tokio::spawn(self.engine.clone().run(async move {
            let _ = engine_stop.wait_for(|s| *s).await;
        }));
        let autoloop = crate::autoloop::Autoloop::new(
            self.engine.clone(),
            self.transport.clone(),
            crate::autoloop::AutoloopSettings {
                network: self.config.network,
                buyer_policy: self.config.buyer_policy(),
                interval: Duration::from_secs(self.config.sync.autoloop_secs.max(1)),
                max_swap_amount_sat: self.config.safety.max_swap_amount_sat,
            },
        );
        let mut autoloop_stop = stop_rx.clone();
        let autoloop_task = tokio::spawn(autoloop.clone().run(async move {
            let _ = autoloop_stop.wait_for(|s| *s).await;
        }));
        let facts = crate::api::NodeFacts {
            ln_listen: self.config.lightning.listen.iter().map(|a| a.to_string()).collect(),
            relays: self.config.relays.clone(),
            buyer_defaults: self.config.buyer_policy(),
            buyer_max_fee_ppm: Some(self.config.buyer.max_total_fee_ppm),
            max_swap_amount_sat: self.config.safety.max_swap_amount_sat,
        };
        let app = crate::api::router_with(
            crate::api::ApiState {
                engine: self.engine.clone(),
                wallet: Arc::clone(&self.wallet),
                nostr: self.transport.clone(),
                token: Arc::new(self.token),
                network: self.config.network,
                autoloop,
            },
            facts,
        );
        let mut api_stop = stop_rx;
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = api_stop.wait_for(|s| *s).await;
        });
        let server_task = tokio::spawn(async move { server.await });
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = engine_task.await;
        let _ = autoloop_task.await;
        // Open event streams and long polls would hold a graceful shutdown: a moment, then cut.
        let abort = server_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), server_task).await.is_err() {
            abort.abort();
        }
        self.backups.shutdown(SHUTDOWN_FLUSH_TIMEOUT).await;
        self.transport.shutdown().await;
        if let Err(e) = self.lightning.stop().await {
            tracing::warn!(error = %e, "lightning node did not stop cleanly");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::Overrides;

    fn config(toml: &str) -> Config {
        let overrides = Overrides {
            network: Some("regtest".into()),
            esplora_url: Some("http://127.0.0.1:3002".into()),
            relays: vec!["ws://127.0.0.1:7777".into()],
            ..Overrides::default()
        };
        Config::from_toml(&overrides, std::path::Path::new("/nonexistent/looper-test"), toml)
            .unwrap()
    }

    fn node_id() -> PublicKey {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let sk = bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap();
        PublicKey::from_secret_key(&secp, &sk)
    }

    const SELLER: &str = "[lightning]\nlisten = [\"192.0.2.1:9735\"]\n[seller]\nenabled = true\n";

    #[test]
    fn the_offer_leaves_the_lightning_address_out_when_told() {
        let offer = seller_offer(&config(SELLER), node_id()).unwrap().unwrap();
        assert_eq!(offer.ln_address.as_deref(), Some("192.0.2.1:9735"));
        let hidden = format!("{SELLER}publish_lightning_address = false\n");
        let offer = seller_offer(&config(&hidden), node_id()).unwrap().unwrap();
        assert_eq!(offer.ln_address, None);
        assert_eq!(offer.ln_node_id, node_id());
        offer.validate().unwrap();
    }

    #[test]
    fn the_loop_in_offer_comes_from_seller_in() {
        assert_eq!(seller_loop_in_offer(&config(SELLER), node_id()).unwrap(), None);
        let only_in =
            "[seller.in]\nmin_amount_sat = 20000\nmax_amount_sat = 500000\nfee_ppm = 3000\n";
        let offer = seller_loop_in_offer(&config(only_in), node_id()).unwrap().unwrap();
        assert_eq!(offer.offer_id, CONFIG_LOOP_IN_OFFER_ID);
        assert_eq!(offer.direction, looper_protocol::SwapDirection::LoopIn);
        assert_eq!(
            (offer.min_amount_sat, offer.max_amount_sat, offer.fee_ppm),
            (20_000, 500_000, 3_000)
        );
        assert_eq!(offer.prepay_sat, None);
        offer.validate().unwrap();
        // Without `seller.enabled` no loop-out offer; with both, two offers of their own ids.
        assert_eq!(seller_offer(&config(only_in), node_id()).unwrap(), None);
        let both = format!("{SELLER}{only_in}");
        let out = seller_offer(&config(&both), node_id()).unwrap().unwrap();
        assert_eq!(
            (out.offer_id.as_str(), out.direction),
            (CONFIG_OFFER_ID, looper_protocol::SwapDirection::LoopOut)
        );
        assert!(seller_loop_in_offer(&config(&both), node_id()).unwrap().is_some());
        let off = "[seller.in]\nenabled = false\nmax_amount_sat = 500000\n";
        assert_eq!(seller_loop_in_offer(&config(off), node_id()).unwrap(), None);
    }

    #[test]
    fn proxy_warnings_say_what_goes_around_it() {
        assert!(proxy_warnings(&config(SELLER), false).is_empty());
        let proxied = format!("proxy = \"socks5h://127.0.0.1:9050\"\n{SELLER}");
        let w = proxy_warnings(&config(&proxied), true);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("Lightning peer connections do not go through the proxy"));
        assert!(w[1].contains("Lightning address 192.0.2.1:9735"), "{w:?}");
        let w = proxy_warnings(&config(&proxied), false);
        assert!(w[1].starts_with("ldk-node's own chain access"), "{w:?}");
        let hidden = format!("{proxied}publish_lightning_address = false\n");
        assert_eq!(proxy_warnings(&config(&hidden), true).len(), 1);
    }
}
