//! A node of the simulated world: the real [`Engine`] over the world's fakes, restartable from
//! its store after a crash.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::Network;
use looper_node::engine::io::SwapTransport;
use looper_node::engine::{Engine, EngineConfig, EngineError, EngineParts};
use looper_node::store::MemoryStore;

use crate::fakes::{CrashingStore, SeededEntropy, SimChain, SimClock, SimLightning, SimWallet};
use crate::world::{lock, NodeIdx, SharedWorld};

/// One node: its engine and the fakes it runs over (kept across restarts).
pub struct SimNode {
    /// Index in the world.
    pub idx: NodeIdx,
    /// The running engine (replaced by [`SimNode::restart`]).
    pub engine: Engine,
    /// Its store (survives crashes).
    pub store: Arc<CrashingStore>,
    /// Its wallet.
    pub wallet: Arc<SimWallet>,
    /// Its Lightning node.
    pub lightning: Arc<SimLightning>,
    /// Its transport.
    pub transport: Arc<dyn SwapTransport>,
    /// Times it was restarted.
    pub restarts: u32,
    world: SharedWorld,
    master: Xpriv,
    config: EngineConfig,
    seed: u64,
}

/// The seed-derived swap master key of node `idx`.
///
/// # Errors
/// BIP-32 refuses the seed (never for these seeds).
pub fn master(idx: NodeIdx) -> Result<Xpriv, EngineError> {
    let tag = u8::try_from(idx).unwrap_or(0).wrapping_add(1);
    Xpriv::new_master(Network::Regtest, &[tag; 32]).map_err(|e| EngineError::Keys(e.to_string()))
}

/// The seller's offer of the simulated runs: 10,000-5,000,000 sat, 1,000 sat + 2,500 ppm, 300 sat
/// funding fee, 1 confirmation, 144 blocks to the timeout, 20 blocks of claim margin.
pub fn sim_offer(
    offer_id: &str,
    ln_node_id: bitcoin::secp256k1::PublicKey,
    relays: Vec<String>,
    expires_at: u64,
) -> looper_protocol::messages::Offer {
    looper_protocol::messages::Offer {
        version: 1,
        offer_id: offer_id.into(),
        network: Network::Regtest,
        direction: looper_protocol::SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 5_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id,
        ln_address: None,
        relays,
        pow_difficulty: None,
        expires_at,
    }
}

/// Engine settings for the simulation: no served offer unless given, fast polls.
pub fn sim_config() -> EngineConfig {
    EngineConfig {
        chain_poll: Duration::from_millis(50),
        wallet_sync_every: 1,
        ..EngineConfig::default()
    }
}

impl SimNode {
    /// Starts node `idx` over the world with `transport`.
    ///
    /// # Errors
    /// The engine does not start.
    pub async fn start(
        world: &SharedWorld,
        idx: NodeIdx,
        transport: Arc<dyn SwapTransport>,
        config: EngineConfig,
        seed: u64,
    ) -> Result<SimNode, EngineError> {
        let store = Arc::new(CrashingStore {
            inner: Arc::new(MemoryStore::new()),
            world: Arc::clone(world),
            node: idx,
            crash_after: Mutex::new(None),
            commits: AtomicU64::new(0),
        });
        let wallet = Arc::new(SimWallet::new(Arc::clone(world), idx));
        let lightning = Arc::new(SimLightning::new(Arc::clone(world), idx));
        let master = master(idx)?;
        let engine = Self::engine(
            world, idx, &store, &wallet, &lightning, &transport, master, &config, seed,
        )
        .await?;
        Ok(SimNode {
            idx,
            engine,
            store,
            wallet,
            lightning,
            transport,
            restarts: 0,
            world: Arc::clone(world),
            master,
            config,
            seed,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn engine(
        world: &SharedWorld,
        idx: NodeIdx,
        store: &Arc<CrashingStore>,
        wallet: &Arc<SimWallet>,
        lightning: &Arc<SimLightning>,
        transport: &Arc<dyn SwapTransport>,
        master: Xpriv,
        config: &EngineConfig,
        seed: u64,
    ) -> Result<Engine, EngineError> {
        Engine::start(EngineParts {
            store: Arc::clone(store) as _,
            wallet: Arc::clone(wallet) as _,
            chain: Arc::new(SimChain { world: Arc::clone(world), node: idx }),
            lightning: Arc::clone(lightning) as _,
            transport: Arc::clone(transport),
            clock: Arc::new(SimClock(Arc::clone(world))),
            entropy: Arc::new(SeededEntropy::new(seed)),
            swap_master: master,
            config: config.clone(),
        })
        .await
    }

    /// Whether the node crashed (and was not restarted yet).
    pub fn is_dead(&self) -> bool {
        lock(&self.world).dead.get(self.idx).copied().unwrap_or(false)
    }

    /// Restarts the node: a new engine from the same store, wallet, Lightning node and
    /// transport (as a process restart finds them on disk).
    ///
    /// # Errors
    /// The engine does not start (e.g. its chain source is down): the node stays dead.
    pub async fn restart(&mut self) -> Result<(), EngineError> {
        if let Some(d) = lock(&self.world).dead.get_mut(self.idx) {
            *d = false;
        }
        self.restarts += 1;
        let seed = self.seed.wrapping_add(u64::from(self.restarts) << 32);
        match Self::engine(
            &self.world,
            self.idx,
            &self.store,
            &self.wallet,
            &self.lightning,
            &self.transport,
            self.master,
            &self.config,
            seed,
        )
        .await
        {
            Ok(engine) => {
                self.engine = engine;
                lock(&self.world).log.push(format!("node {} restarted", self.idx));
                Ok(())
            }
            Err(e) => {
                if let Some(d) = lock(&self.world).dead.get_mut(self.idx) {
                    *d = true;
                }
                Err(e)
            }
        }
    }
}
