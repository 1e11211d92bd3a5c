//! The node's configuration: `looper.toml` in the data dir (or another file), under the values
//! the command line or the environment set ([`Overrides`]; parsing them is the `looper-node`
//! binary's business), over the built-in defaults. This module is plain data, loading and
//! validation.
//!
//! Precedence, highest first: flag, environment variable, configuration file, built-in default.
//!
//! ```
//! # use looper_node::config::{Config, Overrides};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let overrides = Overrides {
//!     datadir: Some(dir.path().to_path_buf()),
//!     network: Some("regtest".into()),
//!     esplora_url: Some("http://127.0.0.1:3002".into()),
//!     relays: vec!["ws://127.0.0.1:7777".into()],
//!     ..Overrides::default()
//! };
//! let config = Config::load(&overrides)?;
//! assert_eq!(config.network, bitcoin::Network::Regtest);
//! assert_eq!(config.api.listen.port(), 28839);
//! # Ok(()) }
//! ```
//!
//! A bad value is refused with one [`ConfigError`] naming the key and the reason, for example
//! `invalid configuration: seller.fee_ppm: must be <= 100000`.
//!
//! The `[seller]` section holds the offer's terms ([`OfferTerms`], named as the offer's wire
//! fields: `timeout_delta`, `claim_margin`, ...; the older `timeout_delta_blocks` and
//! `claim_margin_blocks` are still read) and the seller's own settings. The defaults of the swap
//! parameters are the "Numbers to start from" of the protocol design (timeout delta 288 blocks,
//! claim margin 20 blocks, 1 confirmation, invoice expiry one hour).
//!
//! The `[seller.in]` section, when present, holds the terms of a loop-in offer served besides
//! ([`SellerConfig::loop_in`]): the same [`OfferTerms`] keys but `prepay_sat` (a loop-in offer has
//! no prepay), and `enabled` (default on). It does not need `seller.enabled`, which governs the
//! loop-out offer.
//!
//! The `[peer_limits]` section bounds what one Nostr key may send this node: new swap requests
//! (`swap_request_burst` at once, refilled at `swap_requests_per_minute`; default 5 and 10) and
//! swap messages of any kind (`message_burst`, `messages_per_minute`; default 60 and 120).
//! Messages over the limit are dropped unanswered. Keep the defaults on a public node; a test bed
//! whose few buyers run many swaps each under one key raises them.
//!
//! The data dir defaults to one per network: `$HOME/.looper/NETWORK`, NETWORK being the network's
//! name as the node prints it (`bitcoin`, `testnet`, `testnet4`, `signet`, `regtest`;
//! [`network_dir_name`]). An older node's `$HOME/.looper` that holds a seed (and no other
//! network in its `looper.toml`) is still used while `$HOME/.looper/NETWORK` holds none; the node
//! then logs how to move it ([`Config::notices`]). `--datadir`, `LOOPER_DATADIR` are used as given.
//!
//! `proxy` (`--proxy`, `LOOPER_PROXY`) names a SOCKS5 proxy, for example Tor's
//! `socks5h://127.0.0.1:9050`: the Nostr relays (swap messages, offers, backups) and the Esplora
//! chain source (the node's own client and, through `ALL_PROXY` that `looper-node` sets for
//! itself, ldk-node's) are reached through it, host names resolved by the proxy. Lightning peer
//! connections are not: ldk-node 0.7 cannot use a proxy, so they go out directly (the node warns
//! at start). `[seller] publish_lightning_address = false` leaves the Lightning node's address out
//! of the offers this node publishes (the node id stays: it is the invoices' payee); a buyer then
//! pays over a channel or route it already has (the invoices carry route hints to the seller's
//! private channels), or gets the address some other way. A sample for Tor:
//!
//! ```toml
//! network = "signet"
//! proxy = "socks5h://127.0.0.1:9050"
//!
//! [seller]
//! publish_lightning_address = false
//! ```
//!
//! The `[chain]` section chooses where the node reads the chain from: its swap engine, its
//! on-chain wallet and ldk-node alike. `source = "esplora"` (the default) reads the Esplora HTTP
//! API at `esplora_url` (a public one by default on every network but regtest);
//! `source = "electrum"` reads the Electrum server at `electrum_url` (`tcp://HOST:PORT` or
//! `ssl://HOST:PORT`, certificates checked; no default: name your own, e.g. your electrs or
//! Fulcrum); `source = "bitcoind"` reads Bitcoin Core's JSON-RPC at `bitcoind_rpc_url`
//! (`http://HOST:PORT`; default `http://127.0.0.1:` and the network's RPC port,
//! [`default_bitcoind_rpc_port`]) with its cookie file (`bitcoind_rpc_cookie`, e.g.
//! `~/.bitcoin/.cookie`) or `bitcoind_rpc_user` and `bitcoind_rpc_password`. bitcoind needs
//! `-blockfilterindex=1` to find the HTLCs' transactions quickly (without it every block of the
//! last weeks is read once; see [`crate::chain::BitcoindChainSource`]) and `-txindex=1` helps.
//! Flags and environment: `--chain-source` (`LOOPER_CHAIN_SOURCE`), `--electrum-url`
//! (`LOOPER_ELECTRUM_URL`), `--esplora-url` (`LOOPER_ESPLORA_URL`), `--bitcoind-rpc-url`,
//! `--bitcoind-rpc-cookie`, `--bitcoind-rpc-user`, `--bitcoind-rpc-password`
//! (`LOOPER_BITCOIND_RPC_URL`, ..._COOKIE, ..._USER, ..._PASSWORD; prefer the environment or the
//! file for the password). ldk-node 0.7's Electrum and bitcoind clients cannot use a proxy, so
//! both are refused together with `proxy`.
//!
//! ```toml
//! [chain]
//! source = "electrum"
//! electrum_url = "ssl://electrum.example.org:50002"
//! ```
//!
//! ```toml
//! [chain]
//! source = "bitcoind"
//! bitcoind_rpc_url = "http://127.0.0.1:8332"
//! bitcoind_rpc_cookie = "/home/me/.bitcoin/.cookie"
//! ```
//!
//! The `[lightning]` section configures the embedded ldk-node: `listen` (its peer-to-peer
//! addresses), `alias` (at most 32 bytes; needs `listen`), `announcement_addresses` (the
//! addresses announced to the network when they differ from `listen`, e.g. a public IP, a DNS
//! name or a Tor onion service with its port; needs `alias` and `listen`: only a node that
//! announces itself has any use for them) and `rgs_url`, a rapid gossip sync server the node
//! downloads the network graph from instead of learning it from its peers' gossip (default: none,
//! peer-to-peer gossip). A node with few channels routes better and starts faster with one, e.g.
//! LDK's public servers `https://rapidsync.lightningdevkit.org/snapshot` (mainnet) and
//! `https://rapidsync.lightningdevkit.org/testnet/snapshot` (testnet3), or, on the Mutinynet
//! signet only, `https://rgs.mutinynet.com/snapshot`; trusting the server with the graph (not
//! with funds: a wrong graph costs failed routes).
//!
//! ```toml
//! [lightning]
//! listen = ["0.0.0.0:9735"]
//! alias = "my-looper"
//! announcement_addresses = ["203.0.113.5:9735", "looper.example.org:9735"]
//! rgs_url = "https://rapidsync.lightningdevkit.org/snapshot"
//! ```
//!
//! The `[safety]` section's `max_swap_amount_sat` is the largest swap the node takes
//! (`POST /v1/swaps/out`) or offers (`seller.max_amount_sat`, offers published through the API):
//! 1 000 000 sat by default on mainnet ([`DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT`]), none elsewhere;
//! set it higher to swap more, `0` for no ceiling.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bitcoin::Network;
use looper_api::OfferTerms;
use serde::{Deserialize, Serialize};

use crate::nostr::{RateLimit, TransportConfig};

/// Name of the configuration file looked up in the data dir when no other file is named.
pub const CONFIG_FILE_NAME: &str = "looper.toml";

/// Largest accepted `fee_ppm` (10 %).
pub const MAX_FEE_PPM: u32 = 100_000;

/// Smallest `seller.timeout_delta` accepted outside regtest (the protocol's floor for offers).
pub const MIN_TIMEOUT_DELTA_BLOCKS: u32 = 144;

/// Largest `seller.timeout_delta` accepted: the protocol's largest offer timeout (two weeks of
/// blocks).
pub const MAX_TIMEOUT_DELTA_BLOCKS: u32 = looper_protocol::messages::MAX_TIMEOUT_DELTA;

/// Largest confirmation target accepted (a week of blocks).
pub const MAX_CONF_TARGET: u16 = 1008;

/// Largest `fees.max_fee_rate_sat_vb` accepted: a guard against typos that would burn money.
pub const MAX_FEE_RATE_CAP_SAT_VB: u64 = 10_000;

/// Default `safety.max_swap_amount_sat` on mainnet (0.01 BTC); other networks have no ceiling.
pub const DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT: u64 = 1_000_000;

/// Name of the directory under `$HOME` that holds the per-network data dirs (and, from older
/// versions, a data dir of its own).
pub const DATADIR_PARENT_NAME: &str = ".looper";

/// What the command line and the environment set over the configuration file (the `looper-node`
/// binary fills it from its flags and `LOOPER_*` variables). Every field left empty keeps the
/// file's value, else the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Data directory (seed, wallet and swap database, Lightning storage, API token).
    /// Default: `$HOME/.looper/NETWORK` ([`default_datadir`]).
    pub datadir: Option<PathBuf>,
    /// Configuration file. Default: `DATADIR/looper.toml` (optional there); a file named here
    /// must exist.
    pub config: Option<PathBuf>,
    /// Bitcoin network name: mainnet (or bitcoin), testnet, testnet4, signet, regtest.
    pub network: Option<String>,
    /// Esplora HTTP API base URL.
    pub esplora_url: Option<String>,
    /// Chain source (`chain.source`): `esplora`, `electrum` or `bitcoind`.
    pub chain_source: Option<String>,
    /// Electrum server URL (`chain.electrum_url`).
    pub electrum_url: Option<String>,
    /// bitcoind's JSON-RPC URL (`chain.bitcoind_rpc_url`).
    pub bitcoind_rpc_url: Option<String>,
    /// bitcoind's cookie file (`chain.bitcoind_rpc_cookie`).
    pub bitcoind_rpc_cookie: Option<PathBuf>,
    /// bitcoind's RPC user (`chain.bitcoind_rpc_user`).
    pub bitcoind_rpc_user: Option<String>,
    /// bitcoind's RPC password (`chain.bitcoind_rpc_password`).
    pub bitcoind_rpc_password: Option<String>,
    /// Nostr relay URLs; replace the file's when not empty.
    pub relays: Vec<String>,
    /// SOCKS5 proxy for the relays and the chain source (`socks5h://IP:PORT`, [`parse_proxy`]).
    pub proxy: Option<String>,
    /// Lightning listen addresses; replace the file's when not empty.
    pub ln_listen: Vec<String>,
    /// Control API listen address.
    pub api_listen: Option<String>,
    /// Log as JSON lines (or the file's `log_json`).
    pub log_json: bool,
    /// Restore the node from a mnemonic instead of creating a new seed.
    pub restore: Option<RestoreSource>,
}

/// Where a `--restore` mnemonic comes from. Reading it is left to the caller
/// ([`crate::seed::read_mnemonic`]), so that loading the configuration never consumes stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// Read the mnemonic from standard input (`--restore -`).
    Stdin,
    /// Read the mnemonic from this file.
    File(PathBuf),
}

/// The effective configuration of a node, after merging defaults, file, environment and flags,
/// and validating every value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The data directory (absolute or as given).
    pub datadir: PathBuf,
    /// The configuration file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Bitcoin network.
    pub network: Network,
    /// Esplora HTTP API base URL (no trailing slash): the chain source when `chain.source` is
    /// `esplora` (the default; then always set). `None` with another source and no URL given.
    pub esplora_url: Option<String>,
    /// The `[chain]` section: which chain source the engine, the wallet and ldk-node use
    /// ([`Config::chain_backend`]).
    pub chain: ChainConfig,
    /// Nostr relays for offers and swap messages (at least one).
    pub relays: Vec<String>,
    /// SOCKS5 proxy (`proxy` in `looper.toml`, `--proxy`, `LOOPER_PROXY`) through which the
    /// relays and the Esplora chain source are reached; `None`: direct connections. Lightning
    /// peer connections never use it (ldk-node 0.7 has no proxy support).
    pub proxy: Option<SocketAddr>,
    /// Lightning settings.
    pub lightning: LightningConfig,
    /// Control API settings.
    pub api: ApiConfig,
    /// Seller (maker) settings: what this node offers.
    pub seller: SellerConfig,
    /// Buyer (taker) settings: what this node accepts when it takes an offer.
    pub buyer: BuyerConfig,
    /// On-chain fee settings.
    pub fees: FeeConfig,
    /// Background sync intervals.
    pub sync: SyncConfig,
    /// Per-sender limits on incoming Nostr swap traffic.
    pub peer_limits: PeerLimits,
    /// Safety limits.
    pub safety: SafetyConfig,
    /// Log as JSON lines.
    pub log_json: bool,
    /// Restore from a mnemonic instead of creating a seed (`--restore`).
    #[serde(skip)]
    pub restore: Option<RestoreSource>,
    /// One-line notices for the log about how the configuration was found (an older data dir in
    /// use, a configuration file no longer read).
    #[serde(skip)]
    pub notices: Vec<String>,
}

/// Which chain source the node reads the chain from (`[chain] source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainSourceKind {
    /// An Esplora HTTP API (`esplora_url`).
    #[default]
    Esplora,
    /// An Electrum server (`chain.electrum_url`).
    Electrum,
    /// Bitcoin Core's JSON-RPC (`chain.bitcoind_rpc_url`).
    Bitcoind,
}

impl FromStr for ChainSourceKind {
    type Err = String;

    /// `esplora`, `electrum` or `bitcoind` (any case); the error is a sentence for
    /// [`ConfigError::Invalid`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "esplora" => Ok(ChainSourceKind::Esplora),
            "electrum" => Ok(ChainSourceKind::Electrum),
            "bitcoind" => Ok(ChainSourceKind::Bitcoind),
            _ => Err(format!(
                "unknown chain source {s:?} (expected \"esplora\", \"electrum\" or \"bitcoind\")"
            )),
        }
    }
}

impl ChainSourceKind {
    /// The name in `looper.toml`.
    pub fn name(self) -> &'static str {
        match self {
            ChainSourceKind::Esplora => "esplora",
            ChainSourceKind::Electrum => "electrum",
            ChainSourceKind::Bitcoind => "bitcoind",
        }
    }
}

/// The `[chain]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainConfig {
    /// The chain source (default: Esplora).
    pub source: ChainSourceKind,
    /// The Electrum server (`tcp://HOST:PORT` or `ssl://HOST:PORT`); required with
    /// `source = "electrum"`, refused otherwise.
    pub electrum_url: Option<String>,
    /// bitcoind's JSON-RPC (`http://HOST:PORT`); with `source = "bitcoind"` (default
    /// `http://127.0.0.1:` and [`default_bitcoind_rpc_port`]), refused otherwise.
    pub bitcoind_rpc_url: Option<String>,
    /// bitcoind's cookie file; or `bitcoind_rpc_user` and `bitcoind_rpc_password`.
    pub bitcoind_rpc_cookie: Option<PathBuf>,
    /// bitcoind's RPC user (with `bitcoind_rpc_password`).
    pub bitcoind_rpc_user: Option<String>,
    /// bitcoind's RPC password (never printed).
    #[serde(serialize_with = "hidden")]
    pub bitcoind_rpc_password: Option<String>,
}

/// Prints a secret setting as whether it is set.
fn hidden<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("(set)"),
        None => s.serialize_none(),
    }
}

/// The chain source as the node uses it: the kind and its server ([`Config::chain_backend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBackend {
    /// The Esplora HTTP API at this base URL.
    Esplora(String),
    /// The Electrum server at this URL.
    Electrum(String),
    /// bitcoind's JSON-RPC.
    Bitcoind {
        /// Its URL (`http://HOST:PORT`).
        url: String,
        /// The cookie file, or a user and password.
        auth: crate::chain::RpcAuth,
    },
}

/// bitcoind's default JSON-RPC port per network.
pub fn default_bitcoind_rpc_port(network: Network) -> u16 {
    match network {
        Network::Bitcoin => 8332,
        Network::Testnet => 18332,
        Network::Testnet4 => 48332,
        Network::Signet => 38332,
        Network::Regtest => 18443,
    }
}

/// Safety limits (`[safety]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SafetyConfig {
    /// The largest swap amount this node takes (`POST /v1/swaps/out`, `looper out`) or offers
    /// (`seller.max_amount_sat`, `POST /v1/offers`), in satoshis; `None`: no ceiling. The file's
    /// `max_swap_amount_sat` (0 there: no ceiling); default
    /// [`DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT`] on mainnet, none on the test networks.
    pub max_swap_amount_sat: Option<u64>,
}

impl SafetyConfig {
    /// The defaults of `network`.
    pub fn default_for(network: Network) -> Self {
        SafetyConfig {
            max_swap_amount_sat: (network == Network::Bitcoin)
                .then_some(DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT),
        }
    }
}

/// Lightning settings (`[lightning]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LightningConfig {
    /// Peer-to-peer listen addresses. Default: `0.0.0.0:9735` on mainnet, 19735 testnet,
    /// 39735 signet, 29735 regtest. An empty list does not listen.
    pub listen: Vec<SocketAddr>,
    /// Node alias announced with public channels (at most 32 bytes; needs `listen`).
    pub alias: Option<String>,
    /// Addresses announced to the network instead of `listen` (`host:port`: an IP address, a DNS
    /// name or a Tor v3 onion, with the port; at most [`MAX_ANNOUNCEMENT_ADDRESSES`]). Need
    /// `alias` and `listen`. Default: none (the listening addresses are announced).
    pub announcement_addresses: Vec<String>,
    /// Rapid gossip sync server (`https://...`, no trailing slash) the network graph is
    /// downloaded from. Default: none, the graph comes from the peers' gossip.
    pub rgs_url: Option<String>,
}

/// Most `lightning.announcement_addresses` (ldk-node's limit).
pub const MAX_ANNOUNCEMENT_ADDRESSES: usize = 100;

/// Control API settings (`[api]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiConfig {
    /// Listen address; must be a loopback address. Default port: 8839 mainnet, 18839 testnet,
    /// 48839 testnet4, 38839 signet, 28839 regtest. Port 0 picks a free port.
    pub listen: SocketAddr,
}

/// Seller (maker) settings (`[seller]`): the terms of the offer this node publishes (the
/// section's [`OfferTerms`] keys) and how it serves buyers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SellerConfig {
    /// Publish offers and serve buyers.
    pub enabled: bool,
    /// The offer's terms; in `looper.toml` their keys sit directly in `[seller]`.
    #[serde(flatten)]
    pub terms: OfferTerms,
    /// Swaps served at the same time; further requests are refused.
    pub max_concurrent_swaps: u32,
    /// Co-sign the buyer's cooperative (key-path) claim. Default on; switched off only to exercise
    /// the buyer's script-path claim (tests, test harnesses).
    pub cooperative_claims: bool,
    /// Most satoshis locked at once in HTLCs the buyer has not paid for yet (accepted, funded,
    /// being refunded); a request that would go over it is refused (`rate_limited`) and the offer
    /// advertises at most what is left. 0: no cap but the wallet's balance.
    pub max_unpaid_locked_sat: u64,
    /// Nostr keys (hex or npub) whose swap requests are dropped unanswered.
    pub blocked_keys: Vec<String>,
    /// Refuse a request the node's Lightning channels cannot receive or its wallet cannot fund
    /// (`amount_out_of_range`, nothing locked). Default on; off only for test beds whose seller
    /// has no channel.
    pub check_liquidity: bool,
    /// Put the Lightning node's address (`ln_address`, its first routable listen address) in the
    /// offers this node publishes. Default on; off keeps the node's IP address off the relays
    /// (with a `proxy`, for example): the offer still names the node id, and a buyer pays over a
    /// channel or route it already has (the invoice's route hints lead to the seller's private
    /// channels) or opens a channel to an address it got some other way.
    pub publish_lightning_address: bool,
    /// The terms of the loop-in offer this node publishes besides (`[seller.in]`, the
    /// [`OfferTerms`] keys but the prepay): it pays the taker's invoice over Lightning and claims
    /// the taker's lock. `None` (no section, or `enabled = false` in it): no loop-in offer.
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub loop_in: Option<OfferTerms>,
}

/// The `[seller]` keys that are not offer terms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SellerOptions {
    enabled: bool,
    max_concurrent_swaps: u32,
    cooperative_claims: bool,
    max_unpaid_locked_sat: u64,
    blocked_keys: Vec<String>,
    check_liquidity: bool,
    publish_lightning_address: bool,
}

impl SellerOptions {
    const KEYS: &'static [&'static str] = &[
        "enabled",
        "max_concurrent_swaps",
        "cooperative_claims",
        "max_unpaid_locked_sat",
        "blocked_keys",
        "check_liquidity",
        "publish_lightning_address",
    ];
}

impl Default for SellerOptions {
    fn default() -> Self {
        let d = SellerConfig::default();
        SellerOptions {
            enabled: d.enabled,
            max_concurrent_swaps: d.max_concurrent_swaps,
            cooperative_claims: d.cooperative_claims,
            max_unpaid_locked_sat: d.max_unpaid_locked_sat,
            blocked_keys: d.blocked_keys,
            check_liquidity: d.check_liquidity,
            publish_lightning_address: d.publish_lightning_address,
        }
    }
}

/// Buyer (taker) settings (`[buyer]`): limits applied when taking an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuyerConfig {
    /// Largest total cost of a swap accepted (swap fee + funding fee + prepay + claim fee).
    pub max_total_fee_sat: u64,
    /// Largest total cost accepted, in parts per million of the amount (whichever limit is lower
    /// applies).
    pub max_total_fee_ppm: u32,
    /// Most blocks a swap payment's Lightning route may lock it for (its total CLTV expiry
    /// delta), as the protocol's buyer policy names it (`max_route_cltv_blocks` is read too).
    #[serde(alias = "max_route_cltv_blocks")]
    pub max_route_cltv: u32,
    /// Confirmations of the HTLC funding output demanded before paying, whatever the offer says.
    pub min_confirmations: u32,
    /// The buyer's own floor for an offer's `claim_margin` (blocks kept for the claim after a
    /// payment resolves): offers below it are refused, whatever the seller says
    /// (`min_claim_margin_blocks` is read too).
    #[serde(alias = "min_claim_margin_blocks")]
    pub min_claim_margin: u32,
    /// Most the node prepays a seller before it locks (`looper out --max-prepay` overrides it):
    /// an offer asking more is refused. A prepay is part of the quoted total, but lost if the
    /// seller never funds.
    pub max_prepay_sat: u64,
}

/// On-chain fee settings (`[fees]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeeConfig {
    /// Cap on every fee rate this node pays, in sat/vB (funding, claim, refund, wallet sends),
    /// except a claim close to its deadline, which may pay up to most of the HTLC rather than
    /// lose it (spec `03-cooperative-spend.md`, "Fees and replacement").
    pub max_fee_rate_sat_vb: u64,
    /// Fee rate used when the chain source has no estimate (regtest), in sat/vB.
    pub fallback_fee_rate_sat_vb: u64,
    /// Confirmation target of claims, in blocks (`looper out --conf-target` overrides it per
    /// swap); it shortens as the claim's deadline nears.
    pub claim_conf_target: u16,
    /// Confirmation target of refunds, in blocks.
    pub refund_conf_target: u16,
    /// Confirmation target of HTLC fundings, in blocks.
    pub funding_conf_target: u16,
}

/// Background sync intervals (`[sync]`), in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// On-chain wallet sync interval.
    pub wallet_secs: u64,
    /// Lightning wallet sync interval (ldk-node's background sync).
    pub lightning_secs: u64,
    /// Chain poll interval for open swaps (tip, funding, claim, refund).
    pub chain_poll_secs: u64,
    /// Fee-rate estimate refresh interval.
    pub fee_rate_secs: u64,
    /// How often autoloop looks at the channels while it is enabled (`looper autoloop set`).
    pub autoloop_secs: u64,
}

/// Per-sender limits on incoming Nostr swap traffic (`[peer_limits]`): token buckets keyed by
/// the sender's Nostr key; what exceeds them is dropped unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerLimits {
    /// New swap requests one sender may send back to back.
    pub swap_request_burst: u32,
    /// New swap requests per minute one sender gets back after its burst.
    pub swap_requests_per_minute: u32,
    /// Swap messages (of any kind, undecodable ones included) one sender may send back to back.
    pub message_burst: u32,
    /// Swap messages per minute one sender gets back after its burst.
    pub messages_per_minute: u32,
}

impl PeerLimits {
    /// The limit on new swap requests.
    pub fn swap_requests(&self) -> RateLimit {
        RateLimit::new(self.swap_request_burst, self.swap_requests_per_minute)
    }

    /// The limit on all swap messages.
    pub fn messages(&self) -> RateLimit {
        RateLimit::new(self.message_burst, self.messages_per_minute)
    }
}

impl Default for PeerLimits {
    /// The Nostr transport's own defaults (`TransportConfig::new`).
    fn default() -> Self {
        let t = TransportConfig::new([0; 32], Vec::new());
        PeerLimits {
            swap_request_burst: t.request_rate_limit.burst,
            swap_requests_per_minute: t.request_rate_limit.per_minute,
            message_burst: t.message_rate_limit.burst,
            messages_per_minute: t.message_rate_limit.per_minute,
        }
    }
}

/// Largest value of a `[peer_limits]` key.
pub const MAX_PEER_LIMIT: u32 = 1_000_000;

impl Default for SellerConfig {
    fn default() -> Self {
        SellerConfig {
            enabled: false,
            terms: OfferTerms::default(),
            max_concurrent_swaps: 20,
            cooperative_claims: true,
            max_unpaid_locked_sat: 0,
            blocked_keys: Vec::new(),
            check_liquidity: true,
            publish_lightning_address: true,
            loop_in: None,
        }
    }
}

impl Default for BuyerConfig {
    fn default() -> Self {
        BuyerConfig {
            max_total_fee_sat: 100_000,
            max_total_fee_ppm: 20_000,
            max_route_cltv: 288,
            min_confirmations: 1,
            min_claim_margin: looper_protocol::buyer::DEFAULT_MIN_CLAIM_MARGIN,
            max_prepay_sat: looper_protocol::buyer::DEFAULT_MAX_PREPAY_SAT,
        }
    }
}

impl Default for FeeConfig {
    fn default() -> Self {
        FeeConfig {
            max_fee_rate_sat_vb: 200,
            fallback_fee_rate_sat_vb: 2,
            claim_conf_target: 9,
            refund_conf_target: 9,
            funding_conf_target: 6,
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            wallet_secs: 30,
            lightning_secs: 30,
            chain_poll_secs: 10,
            fee_rate_secs: 600,
            autoloop_secs: 60,
        }
    }
}

impl LightningConfig {
    fn default_for(network: Network) -> Self {
        LightningConfig {
            listen: vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                default_ln_port(network),
            )],
            alias: None,
            announcement_addresses: Vec::new(),
            rgs_url: None,
        }
    }
}

/// Default Lightning listen port per network.
pub fn default_ln_port(network: Network) -> u16 {
    match network {
        Network::Bitcoin => 9735,
        Network::Testnet | Network::Testnet4 => 19735,
        Network::Signet => 39735,
        Network::Regtest => 29735,
    }
}

/// Default control API port per network (listening on 127.0.0.1).
pub fn default_api_port(network: Network) -> u16 {
    match network {
        Network::Bitcoin => 8839,
        Network::Testnet => 18839,
        Network::Testnet4 => 48839,
        Network::Signet => 38839,
        Network::Regtest => 28839,
    }
}

/// Default Esplora URL per network (`None` on regtest: there is no public one).
pub fn default_esplora_url(network: Network) -> Option<&'static str> {
    match network {
        Network::Bitcoin => Some("https://blockstream.info/api"),
        Network::Testnet => Some("https://blockstream.info/testnet/api"),
        Network::Testnet4 => Some("https://mempool.space/testnet4/api"),
        Network::Signet => Some("https://mempool.space/signet/api"),
        Network::Regtest => None,
    }
}

/// Default Nostr relays per network (none on regtest: tests run their own).
pub fn default_relays(network: Network) -> Vec<String> {
    match network {
        Network::Regtest => Vec::new(),
        _ => ["wss://relay.damus.io", "wss://nos.lol", "wss://relay.primal.net"]
            .into_iter()
            .map(String::from)
            .collect(),
    }
}

/// Parses a network name: `mainnet` or `bitcoin`, `testnet` (or `testnet3`), `testnet4`, `signet`,
/// `regtest`.
pub fn parse_network(s: &str) -> Option<Network> {
    match s.trim().to_ascii_lowercase().as_str() {
        "mainnet" | "bitcoin" | "main" => Some(Network::Bitcoin),
        "testnet" | "testnet3" | "test" => Some(Network::Testnet),
        "testnet4" => Some(Network::Testnet4),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// Parses a SOCKS5 proxy setting: `socks5h://IP:PORT` (host names resolved by the proxy, as Tor
/// needs), `socks5://IP:PORT` (read the same way: the node always lets the proxy resolve names) or
/// a bare `IP:PORT`; `localhost` stands for 127.0.0.1. The proxy must be named by its IP address
/// (the relay client connects to a socket address).
///
/// # Errors
/// Why the text is not such a proxy, as a sentence for [`ConfigError::Invalid`].
pub fn parse_proxy(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let rest = if let Some(scheme_end) = lower.find("://") {
        match &lower[..scheme_end] {
            "socks5" | "socks5h" => &t[scheme_end + 3..],
            other => {
                return Err(format!(
                    "{t:?}: the {other}:// scheme is not supported: give a SOCKS5 proxy, \
                     socks5h://IP:PORT (Tor's is socks5h://127.0.0.1:9050)"
                ))
            }
        }
    } else {
        t
    };
    let rest = rest.trim_end_matches('/');
    let rest = match rest.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => rest.to_string(),
    };
    let addr = rest.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{t:?} is not a SOCKS5 proxy address of the form socks5h://IP:PORT (Tor's is \
             socks5h://127.0.0.1:9050)"
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("{t:?}: the proxy's port must not be 0"));
    }
    Ok(addr)
}

/// The proxy URL given to HTTP clients for `proxy` ([`Config::proxy`]): `socks5h://IP:PORT`, so
/// that the proxy resolves host names (nothing is looked up around it, and Tor reaches `.onion`
/// hosts).
pub fn proxy_url(proxy: SocketAddr) -> String {
    format!("socks5h://{proxy}")
}

/// The environment variables that route a process's HTTP clients through `proxy`: `ALL_PROXY`,
/// `HTTPS_PROXY` and `HTTP_PROXY`, each [`proxy_url`]. ldk-node 0.7 has no proxy setting, but
/// the HTTP clients it builds (its Esplora chain source, rapid gossip sync, scores) take their
/// proxy from these variables, as every reqwest client without one of its own does:
/// `looper-node` sets them for itself before anything starts (variables already set to another
/// value are replaced; `NO_PROXY` is left as it is).
pub fn proxy_env(proxy: SocketAddr) -> [(&'static str, String); 3] {
    let url = proxy_url(proxy);
    [("ALL_PROXY", url.clone()), ("HTTPS_PROXY", url.clone()), ("HTTP_PROXY", url)]
}

/// Whether this process's environment holds [`proxy_env`] for `proxy` (ldk-node's HTTP clients
/// then go through the proxy).
pub fn proxy_env_is_set(proxy: SocketAddr) -> bool {
    proxy_env(proxy).iter().all(|(name, value)| std::env::var(name).is_ok_and(|v| v == *value))
}

/// Parses a Nostr public key given as 64 hex characters (x-only) or as an `npub1...`: the keys of
/// `seller.blocked_keys` and of the block list's API (`/v1/seller/blocked`).
pub fn parse_nostr_key(s: &str) -> Option<crate::nostr::PublicKey> {
    crate::nostr::PublicKey::parse(s.trim()).ok()
}

/// Errors of [`Config::load`]. Each names the file or the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `--datadir`, no `LOOPER_DATADIR` and no `$HOME` to default to.
    #[error("no data directory: pass --datadir or set LOOPER_DATADIR (no $HOME to default to)")]
    NoDatadir,
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("invalid configuration file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (it names the key and the line).
        message: String,
    },
    /// A value is out of range or inconsistent with another one.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The key, as it is written in `looper.toml` (`seller.fee_ppm`).
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// The file layout of `looper.toml`: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    network: Option<String>,
    esplora_url: Option<String>,
    #[serde(default)]
    chain: FileChain,
    relays: Option<Vec<String>>,
    proxy: Option<String>,
    log_json: Option<bool>,
    lightning: Option<FileLightning>,
    api: Option<FileApi>,
    /// Read as a table: its keys go to [`OfferTerms`] or [`SellerOptions`] ([`seller_section`]).
    seller: Option<toml::Table>,
    #[serde(default)]
    buyer: BuyerConfig,
    #[serde(default)]
    fees: FeeConfig,
    #[serde(default)]
    sync: SyncConfig,
    #[serde(default)]
    peer_limits: PeerLimits,
    #[serde(default)]
    safety: FileSafety,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileChain {
    source: Option<String>,
    electrum_url: Option<String>,
    bitcoind_rpc_url: Option<String>,
    bitcoind_rpc_cookie: Option<PathBuf>,
    bitcoind_rpc_user: Option<String>,
    bitcoind_rpc_password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSafety {
    max_swap_amount_sat: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLightning {
    listen: Option<Vec<String>>,
    alias: Option<String>,
    announcement_addresses: Option<Vec<String>>,
    rgs_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    listen: Option<String>,
}

impl Config {
    /// The claimer's limits of `[buyer]` (and the fee-rate cap of `[fees]`): a loop out's
    /// defaults (`POST /v1/swaps/out` overrides them per swap) and a loop in's as maker.
    pub fn buyer_policy(&self) -> looper_protocol::buyer::BuyerPolicy {
        looper_protocol::buyer::BuyerPolicy {
            max_total_fee_sat: self.buyer.max_total_fee_sat,
            max_route_cltv: self.buyer.max_route_cltv,
            min_confirmations: self.buyer.min_confirmations,
            min_claim_margin: self.buyer.min_claim_margin,
            // Claims are never priced above the node's fee-rate cap.
            max_claim_fee_rate_sat_vb: self.fees.max_fee_rate_sat_vb,
            claim_conf_target: None,
            max_prepay_sat: self.buyer.max_prepay_sat,
            request_timeout_secs: looper_protocol::swap::REQUEST_TIMEOUT_SECS,
        }
    }

    /// Builds the configuration from the overrides (the command line and the environment), the
    /// configuration file and the defaults, then validates it.
    ///
    /// The file is `args.config` if given (it must exist), else `DATADIR/looper.toml` if it exists.
    /// Without `args.datadir`, the data dir is [`default_datadir`] under `$HOME`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key and the reason.
    pub fn load(args: &Overrides) -> Result<Config, ConfigError> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        Self::load_with_home(args, home.as_deref())
    }

    /// [`Config::load`] with `home` standing for `$HOME` (`None`: no home directory).
    ///
    /// # Errors
    /// As [`Config::load`]; [`ConfigError::NoDatadir`] without `args.datadir` and `home`.
    pub fn load_with_home(args: &Overrides, home: Option<&Path>) -> Result<Config, ConfigError> {
        let explicit = match &args.config {
            Some(path) => Some((read_file(path)?, path.clone())),
            None => None,
        };
        let (datadir, notices) = match &args.datadir {
            Some(dir) => (dir.clone(), Vec::new()),
            None => {
                let home = home.ok_or(ConfigError::NoDatadir)?;
                let explicit_network = explicit.as_ref().and_then(|(f, _)| f.network.clone());
                let chosen = default_datadir(
                    home,
                    args.network.clone().or(explicit_network),
                    args.config.is_none(),
                )?;
                (chosen.path, chosen.notice.into_iter().collect())
            }
        };
        let (file, config_file) = match explicit {
            Some((file, path)) => (file, Some(path)),
            None => {
                let path = datadir.join(CONFIG_FILE_NAME);
                if path.exists() {
                    (read_file(&path)?, Some(path))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        let mut config = Self::merge(args, datadir, config_file, file)?;
        config.notices = notices;
        Ok(config)
    }

    /// Builds the configuration from overrides and the text of a configuration file (for tests
    /// and for callers that keep the file elsewhere).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(
        args: &Overrides,
        datadir: &Path,
        toml_text: &str,
    ) -> Result<Config, ConfigError> {
        let path = datadir.join(CONFIG_FILE_NAME);
        let file = parse_file(&path, toml_text)?;
        Self::merge(args, datadir.to_path_buf(), Some(path), file)
    }

    fn merge(
        args: &Overrides,
        datadir: PathBuf,
        config_file: Option<PathBuf>,
        file: FileConfig,
    ) -> Result<Config, ConfigError> {
        let network = network_setting(args.network.clone().or(file.network))?;

        let mut chain = ChainConfig {
            source: match args.chain_source.clone().or(file.chain.source) {
                Some(text) => text.parse().map_err(|reason| invalid("chain.source", reason))?,
                None => ChainSourceKind::default(),
            },
            electrum_url: args
                .electrum_url
                .clone()
                .or(file.chain.electrum_url)
                .map(|u| u.trim().to_string()),
            bitcoind_rpc_url: args
                .bitcoind_rpc_url
                .clone()
                .or(file.chain.bitcoind_rpc_url)
                .map(|u| u.trim().trim_end_matches('/').to_string()),
            bitcoind_rpc_cookie: args
                .bitcoind_rpc_cookie
                .clone()
                .or(file.chain.bitcoind_rpc_cookie),
            bitcoind_rpc_user: args.bitcoind_rpc_user.clone().or(file.chain.bitcoind_rpc_user),
            bitcoind_rpc_password: args
                .bitcoind_rpc_password
                .clone()
                .or(file.chain.bitcoind_rpc_password),
        };
        if chain.source == ChainSourceKind::Bitcoind && chain.bitcoind_rpc_url.is_none() {
            chain.bitcoind_rpc_url =
                Some(format!("http://127.0.0.1:{}", default_bitcoind_rpc_port(network)));
        }
        let esplora_url = match args.esplora_url.clone().or(file.esplora_url) {
            Some(url) => Some(url),
            // The public default only when Esplora is the source.
            None if chain.source == ChainSourceKind::Esplora => Some(
                default_esplora_url(network)
                    .ok_or_else(|| {
                        invalid("esplora_url", "required on regtest (no public default)")
                    })?
                    .to_string(),
            ),
            None => None,
        };
        let esplora_url = esplora_url.map(|esplora_url| {
            let url = esplora_url.trim();
            let trimmed = url.trim_end_matches('/');
            // Keep "http://" intact so that validation names the real problem (no host).
            if trimmed.ends_with(':') { url } else { trimmed }.to_string()
        });

        let relays = if !args.relays.is_empty() {
            args.relays.clone()
        } else {
            file.relays.unwrap_or_else(|| default_relays(network))
        };

        let proxy = match args.proxy.clone().or(file.proxy) {
            Some(text) => Some(parse_proxy(&text).map_err(|reason| invalid("proxy", reason))?),
            None => None,
        };

        let file_ln = file.lightning.unwrap_or_default();
        let mut lightning = LightningConfig::default_for(network);
        let listen_text =
            if !args.ln_listen.is_empty() { Some(args.ln_listen.clone()) } else { file_ln.listen };
        if let Some(list) = listen_text {
            lightning.listen = list
                .iter()
                .map(|s| {
                    s.trim().parse::<SocketAddr>().map_err(|_| {
                        invalid(
                            "lightning.listen",
                            format!("{s:?} is not an address of the form IP:PORT"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        lightning.alias = file_ln.alias;
        lightning.announcement_addresses = file_ln
            .announcement_addresses
            .unwrap_or_default()
            .iter()
            .map(|a| a.trim().to_string())
            .collect();
        // ldk-node appends "/TIMESTAMP" to the URL; "https://" stays whole, for validation to
        // name the real problem.
        lightning.rgs_url = file_ln.rgs_url.map(|u| {
            let url = u.trim();
            let trimmed = url.trim_end_matches('/');
            if trimmed.ends_with(':') { url } else { trimmed }.to_string()
        });

        let api_text = args.api_listen.clone().or(file.api.and_then(|api| api.listen));
        let api_listen = match api_text {
            Some(s) => s.trim().parse::<SocketAddr>().map_err(|_| {
                invalid("api.listen", format!("{s:?} is not an address of the form IP:PORT"))
            })?,
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), default_api_port(network)),
        };

        let restore = args.restore.clone();
        let seller = match file.seller {
            Some(table) => seller_section(config_file.as_deref().unwrap_or(Path::new("")), table)?,
            None => SellerConfig::default(),
        };
        let safety = match file.safety.max_swap_amount_sat {
            Some(0) => SafetyConfig { max_swap_amount_sat: None },
            Some(max) => SafetyConfig { max_swap_amount_sat: Some(max) },
            None => SafetyConfig::default_for(network),
        };

        let config = Config {
            datadir,
            config_file,
            network,
            esplora_url,
            chain,
            relays,
            proxy,
            lightning,
            api: ApiConfig { listen: api_listen },
            seller,
            buyer: file.buyer,
            fees: file.fees,
            sync: file.sync,
            peer_limits: file.peer_limits,
            safety,
            log_json: args.log_json || file.log_json.unwrap_or(false),
            restore,
            notices: Vec::new(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the first problem found is returned.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_chain()?;
        if self.relays.is_empty() {
            return Err(invalid("relays", "at least one relay is required (--relay URL)"));
        }
        for relay in &self.relays {
            validate_url("relays", relay, &["ws://", "wss://"])?;
        }
        self.validate_lightning()?;
        if !self.api.listen.ip().is_loopback() {
            return Err(invalid(
                "api.listen",
                format!(
                    "{} is not a loopback address (the control API only listens on 127.0.0.1 or ::1)",
                    self.api.listen
                ),
            ));
        }
        self.validate_safety()?;
        self.validate_seller()?;
        self.validate_buyer()?;
        self.validate_fees()?;
        self.validate_sync()?;
        self.validate_peer_limits()
    }

    /// The chain source with its server's URL (validation made sure the chosen one is set).
    pub fn chain_backend(&self) -> ChainBackend {
        match self.chain.source {
            ChainSourceKind::Esplora => {
                ChainBackend::Esplora(self.esplora_url.clone().unwrap_or_default())
            }
            ChainSourceKind::Electrum => {
                ChainBackend::Electrum(self.chain.electrum_url.clone().unwrap_or_default())
            }
            ChainSourceKind::Bitcoind => ChainBackend::Bitcoind {
                url: self.chain.bitcoind_rpc_url.clone().unwrap_or_default(),
                auth: match &self.chain.bitcoind_rpc_cookie {
                    Some(path) => crate::chain::RpcAuth::Cookie(path.clone()),
                    None => crate::chain::RpcAuth::UserPassword {
                        user: self.chain.bitcoind_rpc_user.clone().unwrap_or_default(),
                        password: self.chain.bitcoind_rpc_password.clone().unwrap_or_default(),
                    },
                },
            },
        }
    }

    fn validate_chain(&self) -> Result<(), ConfigError> {
        match &self.esplora_url {
            Some(url) => validate_url("esplora_url", url, &["http://", "https://"])?,
            None if self.chain.source == ChainSourceKind::Esplora => {
                return Err(invalid("esplora_url", "required with chain.source = \"esplora\""))
            }
            None => {}
        }
        let source = self.chain.source;
        // A setting of another source than the chosen one is a mistake: say so.
        let unused = [
            ("chain.electrum_url", self.chain.electrum_url.is_some(), ChainSourceKind::Electrum),
            (
                "chain.bitcoind_rpc_cookie",
                self.chain.bitcoind_rpc_cookie.is_some(),
                ChainSourceKind::Bitcoind,
            ),
            (
                "chain.bitcoind_rpc_user",
                self.chain.bitcoind_rpc_user.is_some(),
                ChainSourceKind::Bitcoind,
            ),
            (
                "chain.bitcoind_rpc_password",
                self.chain.bitcoind_rpc_password.is_some(),
                ChainSourceKind::Bitcoind,
            ),
            (
                "chain.bitcoind_rpc_url",
                self.chain.bitcoind_rpc_url.is_some(),
                ChainSourceKind::Bitcoind,
            ),
        ];
        for (key, set, wanted) in unused {
            if set && source != wanted {
                return Err(invalid(
                    key,
                    format!(
                        "set while chain.source is \"{}\": set chain.source = \"{}\" \
                         (--chain-source {}) to use it",
                        source.name(),
                        wanted.name(),
                        wanted.name()
                    ),
                ));
            }
        }
        match source {
            ChainSourceKind::Esplora => {}
            ChainSourceKind::Electrum => {
                match &self.chain.electrum_url {
                    None => return Err(invalid(
                        "chain.electrum_url",
                        "required with chain.source = \"electrum\" (e.g. tcp://127.0.0.1:50001 or \
                         ssl://electrum.example.org:50002; --electrum-url, LOOPER_ELECTRUM_URL)",
                    )),
                    Some(url) => validate_electrum_url(url)?,
                }
            }
            ChainSourceKind::Bitcoind => {
                validate_bitcoind_url(self.chain.bitcoind_rpc_url.as_deref().unwrap_or_default())?;
                let c = &self.chain;
                match (&c.bitcoind_rpc_cookie, &c.bitcoind_rpc_user, &c.bitcoind_rpc_password) {
                    (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                    (None, None, None) => return Err(invalid(
                        "chain.bitcoind_rpc_cookie",
                        "bitcoind needs credentials: its cookie file (e.g. ~/.bitcoin/.cookie; \
                             --bitcoind-rpc-cookie) or chain.bitcoind_rpc_user and \
                             chain.bitcoind_rpc_password",
                    )),
                    (Some(_), _, _) => {
                        return Err(invalid(
                            "chain.bitcoind_rpc_cookie",
                            "give the cookie file or a user and password, not both",
                        ))
                    }
                    (None, Some(_), None) => {
                        return Err(invalid(
                            "chain.bitcoind_rpc_password",
                            "required with chain.bitcoind_rpc_user",
                        ))
                    }
                    (None, None, Some(_)) => {
                        return Err(invalid(
                            "chain.bitcoind_rpc_user",
                            "required with chain.bitcoind_rpc_password",
                        ))
                    }
                }
            }
        }
        if let (ChainSourceKind::Electrum | ChainSourceKind::Bitcoind, Some(proxy)) =
            (source, self.proxy)
        {
            return Err(invalid(
                "chain.source",
                format!(
                    "\"{}\" cannot be used with proxy {proxy}: ldk-node 0.7's {} client has no \
                     proxy setting and would connect directly (use \"esplora\" through the proxy)",
                    source.name(),
                    if source == ChainSourceKind::Electrum { "Electrum" } else { "bitcoind RPC" },
                ),
            ));
        }
        Ok(())
    }

    fn validate_lightning(&self) -> Result<(), ConfigError> {
        let ln = &self.lightning;
        if let Some(alias) = &ln.alias {
            if alias.len() > 32 {
                return Err(invalid("lightning.alias", "must be at most 32 bytes"));
            }
            if ln.listen.is_empty() {
                return Err(invalid(
                    "lightning.alias",
                    "needs lightning.listen (a node announced with an alias must accept \
                     connections)",
                ));
            }
        }
        if !ln.announcement_addresses.is_empty() {
            if ln.announcement_addresses.len() > MAX_ANNOUNCEMENT_ADDRESSES {
                return Err(invalid(
                    "lightning.announcement_addresses",
                    format!("at most {MAX_ANNOUNCEMENT_ADDRESSES} addresses"),
                ));
            }
            for a in &ln.announcement_addresses {
                if ldk_node::lightning::ln::msgs::SocketAddress::from_str(a).is_err() {
                    return Err(invalid(
                        "lightning.announcement_addresses",
                        format!(
                            "{a:?} is not an address of the form HOST:PORT (an IP address, a \
                             DNS name or a Tor v3 onion, with the port)"
                        ),
                    ));
                }
            }
            if ln.alias.is_none() {
                return Err(invalid(
                    "lightning.announcement_addresses",
                    "needs lightning.alias (the node is announced with its alias)",
                ));
            }
            if ln.listen.is_empty() {
                return Err(invalid(
                    "lightning.announcement_addresses",
                    "needs lightning.listen (an announced node must accept connections)",
                ));
            }
        }
        if let Some(url) = &ln.rgs_url {
            validate_url("lightning.rgs_url", url, &["https://", "http://"])?;
        }
        Ok(())
    }

    fn validate_seller(&self) -> Result<(), ConfigError> {
        let s = &self.seller;
        self.validate_terms(&s.terms, false)?;
        if let Some(t) = &s.loop_in {
            self.validate_terms(t, true)?;
        }
        if s.max_concurrent_swaps == 0 {
            return Err(invalid("seller.max_concurrent_swaps", "must be >= 1"));
        }
        if s.max_unpaid_locked_sat != 0 && s.max_unpaid_locked_sat < s.terms.min_amount_sat {
            return Err(invalid(
                "seller.max_unpaid_locked_sat",
                "must be 0 (no cap) or >= seller.min_amount_sat",
            ));
        }
        self.seller_blocked_keys()?;
        Ok(())
    }

    /// The offer terms of `[seller]`, or of `[seller.in]` (`loop_in`).
    fn validate_terms(&self, t: &OfferTerms, loop_in: bool) -> Result<(), ConfigError> {
        // The key `name` of the section, as written in looper.toml.
        macro_rules! key {
            ($name:literal) => {
                if loop_in {
                    concat!("seller.in.", $name)
                } else {
                    concat!("seller.", $name)
                }
            };
        }
        let section = if loop_in { "seller.in" } else { "seller" };
        if loop_in && !matches!(t.prepay_sat, looper_api::Prepay::Sat(0)) {
            // The maker of a loop in locks nothing before the taker has (`[seller.in]` reads
            // as no prepay when it names none).
            return Err(invalid(key!("prepay_sat"), "a loop-in offer has no prepay: leave it out"));
        }
        if t.min_amount_sat < looper_protocol::terms::DUST_LIMIT_SAT {
            return Err(invalid(
                key!("min_amount_sat"),
                format!(
                    "must be >= {} (the dust limit of the HTLC output)",
                    looper_protocol::terms::DUST_LIMIT_SAT
                ),
            ));
        }
        if t.max_amount_sat > looper_protocol::terms::MAX_MONEY_SAT {
            return Err(invalid(
                key!("max_amount_sat"),
                "must be <= 2100000000000000 (21 million BTC)",
            ));
        }
        if t.max_amount_sat < t.min_amount_sat {
            return Err(invalid(
                key!("max_amount_sat"),
                format!("must be >= {section}.min_amount_sat ({})", t.min_amount_sat),
            ));
        }
        if t.fee_ppm > MAX_FEE_PPM {
            return Err(invalid(key!("fee_ppm"), format!("must be <= {MAX_FEE_PPM}")));
        }
        if t.fee_base_sat > t.min_amount_sat {
            return Err(invalid(
                key!("fee_base_sat"),
                format!("must be <= {section}.min_amount_sat"),
            ));
        }
        if t.min_confirmations == 0 || t.min_confirmations > 100 {
            return Err(invalid(key!("min_confirmations"), "must be between 1 and 100"));
        }
        if t.timeout_delta > MAX_TIMEOUT_DELTA_BLOCKS {
            return Err(invalid(
                key!("timeout_delta"),
                format!("must be <= {MAX_TIMEOUT_DELTA_BLOCKS}"),
            ));
        }
        if self.network != Network::Regtest && t.timeout_delta < MIN_TIMEOUT_DELTA_BLOCKS {
            return Err(invalid(
                key!("timeout_delta"),
                format!("must be >= {MIN_TIMEOUT_DELTA_BLOCKS} outside regtest"),
            ));
        }
        if t.claim_margin == 0 {
            return Err(invalid(key!("claim_margin"), "must be >= 1"));
        }
        // The protocol's rule for offers (`Offer::validate`): room for the claim margin, the
        // confirmations and a Lightning route's minimum CLTV budget.
        let needed = t
            .claim_margin
            .saturating_add(t.min_confirmations)
            .saturating_add(looper_protocol::messages::MIN_CLTV_BUDGET_BLOCKS);
        if t.timeout_delta < needed {
            return Err(invalid(
                key!("timeout_delta"),
                format!(
                    "must be >= {section}.claim_margin + {section}.min_confirmations + 42 (>= {needed})"
                ),
            ));
        }
        if matches!(t.prepay_sat, looper_api::Prepay::Sat(sat) if sat > t.min_amount_sat) {
            return Err(invalid(
                key!("prepay_sat"),
                format!("must be <= {section}.min_amount_sat"),
            ));
        }
        if !(60..=86_400).contains(&t.invoice_expiry_secs) {
            return Err(invalid(key!("invoice_expiry_secs"), "must be between 60 and 86400"));
        }
        if t.pow_difficulty > looper_protocol::messages::MAX_POW_DIFFICULTY {
            return Err(invalid(
                key!("pow_difficulty"),
                format!("must be <= {}", looper_protocol::messages::MAX_POW_DIFFICULTY),
            ));
        }
        Ok(())
    }

    fn validate_safety(&self) -> Result<(), ConfigError> {
        let dust = looper_protocol::terms::DUST_LIMIT_SAT;
        let Some(max) = self.safety.max_swap_amount_sat else { return Ok(()) };
        if max < dust {
            return Err(invalid(
                "safety.max_swap_amount_sat",
                format!("must be 0 (no ceiling) or >= {dust} (the dust limit of the HTLC output)"),
            ));
        }
        let default =
            if self.network == Network::Bitcoin && max == DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT {
                ", the mainnet default"
            } else {
                ""
            };
        let offers = [
            (self.seller.enabled.then_some(&self.seller.terms), "seller.max_amount_sat"),
            (self.seller.loop_in.as_ref(), "seller.in.max_amount_sat"),
        ];
        for (terms, key) in offers {
            if let Some(t) = terms.filter(|t| t.max_amount_sat > max) {
                return Err(invalid(
                    key,
                    format!(
                        "{} is above safety.max_swap_amount_sat ({max}{default}): lower {key}, or \
                         raise safety.max_swap_amount_sat in [safety] (0: no ceiling)",
                        t.max_amount_sat
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_buyer(&self) -> Result<(), ConfigError> {
        let b = &self.buyer;
        if b.max_total_fee_ppm > MAX_FEE_PPM {
            return Err(invalid("buyer.max_total_fee_ppm", format!("must be <= {MAX_FEE_PPM}")));
        }
        if b.max_route_cltv < 18 || b.max_route_cltv > 2016 {
            return Err(invalid("buyer.max_route_cltv", "must be between 18 and 2016"));
        }
        if b.min_confirmations > 100 {
            return Err(invalid("buyer.min_confirmations", "must be <= 100"));
        }
        if b.min_claim_margin == 0 || b.min_claim_margin > 1000 {
            return Err(invalid("buyer.min_claim_margin", "must be between 1 and 1000"));
        }
        Ok(())
    }

    fn validate_fees(&self) -> Result<(), ConfigError> {
        let f = &self.fees;
        if f.max_fee_rate_sat_vb == 0 || f.max_fee_rate_sat_vb > MAX_FEE_RATE_CAP_SAT_VB {
            return Err(invalid(
                "fees.max_fee_rate_sat_vb",
                format!("must be between 1 and {MAX_FEE_RATE_CAP_SAT_VB}"),
            ));
        }
        if f.fallback_fee_rate_sat_vb == 0 || f.fallback_fee_rate_sat_vb > f.max_fee_rate_sat_vb {
            return Err(invalid(
                "fees.fallback_fee_rate_sat_vb",
                "must be between 1 and fees.max_fee_rate_sat_vb",
            ));
        }
        for (key, target) in [
            ("fees.claim_conf_target", f.claim_conf_target),
            ("fees.refund_conf_target", f.refund_conf_target),
            ("fees.funding_conf_target", f.funding_conf_target),
        ] {
            if !(1..=MAX_CONF_TARGET).contains(&target) {
                return Err(invalid(
                    key,
                    format!("must be between 1 and {MAX_CONF_TARGET} blocks"),
                ));
            }
        }
        Ok(())
    }

    fn validate_sync(&self) -> Result<(), ConfigError> {
        let s = &self.sync;
        for (key, value) in [
            ("sync.wallet_secs", s.wallet_secs),
            ("sync.lightning_secs", s.lightning_secs),
            ("sync.chain_poll_secs", s.chain_poll_secs),
            ("sync.fee_rate_secs", s.fee_rate_secs),
            ("sync.autoloop_secs", s.autoloop_secs),
        ] {
            if value == 0 || value > 86_400 {
                return Err(invalid(key, "must be between 1 and 86400 seconds"));
            }
        }
        Ok(())
    }

    fn validate_peer_limits(&self) -> Result<(), ConfigError> {
        let l = &self.peer_limits;
        for (key, value) in [
            ("peer_limits.swap_request_burst", l.swap_request_burst),
            ("peer_limits.swap_requests_per_minute", l.swap_requests_per_minute),
            ("peer_limits.message_burst", l.message_burst),
            ("peer_limits.messages_per_minute", l.messages_per_minute),
        ] {
            if value == 0 || value > MAX_PEER_LIMIT {
                return Err(invalid(key, format!("must be between 1 and {MAX_PEER_LIMIT}")));
            }
        }
        Ok(())
    }

    /// `seller.blocked_keys` as Nostr keys in hex (each given as hex or npub).
    ///
    /// # Errors
    /// A key that does not parse.
    pub fn seller_blocked_keys(&self) -> Result<Vec<String>, ConfigError> {
        self.seller
            .blocked_keys
            .iter()
            .map(|k| {
                parse_nostr_key(k)
                    .map(|pk| pk.to_hex())
                    .ok_or_else(|| invalid("seller.blocked_keys", format!("not a Nostr key: {k}")))
            })
            .collect()
    }

    /// The fee-rate cap as a [`bitcoin::FeeRate`].
    pub fn max_fee_rate(&self) -> bitcoin::FeeRate {
        bitcoin::FeeRate::from_sat_per_vb(self.fees.max_fee_rate_sat_vb)
            .unwrap_or(bitcoin::FeeRate::MAX)
    }

    /// The fallback fee rate as a [`bitcoin::FeeRate`].
    pub fn fallback_fee_rate(&self) -> bitcoin::FeeRate {
        bitcoin::FeeRate::from_sat_per_vb(self.fees.fallback_fee_rate_sat_vb)
            .unwrap_or(bitcoin::FeeRate::BROADCAST_MIN)
    }

    /// `DATADIR/seed`: the BIP-39 mnemonic.
    pub fn seed_path(&self) -> PathBuf {
        self.datadir.join(crate::seed::SEED_FILE_NAME)
    }

    /// `DATADIR/looper.redb`: wallet changesets, swaps, offers, key index, Nostr ids.
    pub fn db_path(&self) -> PathBuf {
        self.datadir.join(crate::store::DB_FILE_NAME)
    }

    /// `DATADIR/ldk`: ldk-node's storage.
    pub fn ldk_dir(&self) -> PathBuf {
        self.datadir.join("ldk")
    }

    /// `DATADIR/api.token`: the control API token.
    pub fn api_token_path(&self) -> PathBuf {
        self.datadir.join(crate::seed::API_TOKEN_FILE_NAME)
    }
}

fn validate_url(key: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        return Err(invalid(key, format!("{url:?} must start with {}", schemes.join(" or "))));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
        return Err(invalid(key, format!("{url:?} has no valid host")));
    }
    Ok(())
}

/// Checks an Electrum server URL: `tcp://HOST:PORT` or `ssl://HOST:PORT` (electrum-client's
/// forms), nothing after the port.
fn validate_electrum_url(url: &str) -> Result<(), ConfigError> {
    let key = "chain.electrum_url";
    let form = "an Electrum server URL of the form tcp://HOST:PORT or ssl://HOST:PORT";
    let Some(rest) = ["tcp://", "ssl://"].iter().find_map(|s| url.strip_prefix(s)) else {
        return Err(invalid(key, format!("{url:?} is not {form}")));
    };
    validate_host_port(key, form, url, rest)
}

/// Checks the `HOST:PORT` that is `rest` of `url` (a host name, an IPv4 or a bracketed IPv6
/// address, nothing after the port), for setting `key` of the given `form`.
fn validate_host_port(
    key: &'static str,
    form: &str,
    url: &str,
    rest: &str,
) -> Result<(), ConfigError> {
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(invalid(key, format!("{url:?} has no port: it is not {form}")));
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let host_ok = !host.is_empty()
        && !host.contains(['/', '@', '?', '#'])
        && !host.chars().any(char::is_whitespace);
    if !host_ok {
        return Err(invalid(key, format!("{url:?} has no valid host: it is not {form}")));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid(key, format!("{url:?} has no valid port: it is not {form}"))),
    }
}

/// Checks bitcoind's JSON-RPC URL: `http://HOST:PORT` (ldk-node's client speaks plain HTTP to a
/// host and port).
fn validate_bitcoind_url(url: &str) -> Result<(), ConfigError> {
    let key = "chain.bitcoind_rpc_url";
    let form = "bitcoind's JSON-RPC URL of the form http://HOST:PORT";
    if url.starts_with("https://") {
        return Err(invalid(
            key,
            format!("{url:?}: bitcoind's RPC is plain HTTP (http://HOST:PORT)"),
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(invalid(key, format!("{url:?} is not {form}")));
    };
    validate_host_port(key, form, url, rest)
}

/// Reads a network setting (`None`: not set anywhere).
fn network_setting(text: Option<String>) -> Result<Network, ConfigError> {
    let text = text.ok_or_else(|| {
        invalid(
            "network",
            "not set (use --network, LOOPER_NETWORK or `network = \"...\"` in looper.toml)",
        )
    })?;
    parse_network(&text).ok_or_else(|| {
        invalid(
            "network",
            format!(
                "unknown network {text:?} (expected mainnet, testnet, testnet4, signet or regtest)"
            ),
        )
    })
}

/// The name of a network's default data dir under `$HOME/.looper`: the network's name as the node
/// prints it (`bitcoin` for mainnet, `testnet`, `testnet4`, `signet`, `regtest`).
pub fn network_dir_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bitcoin",
        Network::Testnet => "testnet",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

/// The data dir [`default_datadir`] chose, and what to tell the user about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultDatadir {
    /// The data dir.
    pub path: PathBuf,
    /// A one-line notice for the log: an older data dir in use and how to move it, or a
    /// configuration file that is no longer read.
    pub notice: Option<String>,
}

/// The default data dir under `home`: `home/.looper/NETWORK` ([`network_dir_name`]).
///
/// Backward compatibility: older versions used `home/.looper` for every network. While that
/// directory holds a seed and `home/.looper/NETWORK` holds none, it stays in use (unless its
/// `looper.toml` names another network) and the notice says how to move it; files are never
/// moved. The network is `network` (the flag, the environment or `--config`'s file), else the one
/// the older data dir's `looper.toml` names. `old_config_is_default`: no `--config` was given, so
/// an older `home/.looper/looper.toml` left behind deserves a notice.
///
/// # Errors
/// [`ConfigError::Invalid`] when no network is set anywhere or it is unknown; the older data dir's
/// `looper.toml` cannot be read.
pub fn default_datadir(
    home: &Path,
    network: Option<String>,
    old_config_is_default: bool,
) -> Result<DefaultDatadir, ConfigError> {
    let legacy = home.join(DATADIR_PARENT_NAME);
    let legacy_config = legacy.join(CONFIG_FILE_NAME);
    let legacy_in_use = legacy.join(crate::seed::SEED_FILE_NAME).is_file();
    let legacy_network = if legacy_in_use && legacy_config.is_file() {
        read_file(&legacy_config)?.network
    } else {
        None
    };
    let network = network_setting(network.or_else(|| legacy_network.clone()))?;
    let path = legacy.join(network_dir_name(network));
    let same_network = legacy_network.as_deref().is_none_or(|n| parse_network(n) == Some(network));
    if legacy_in_use && same_network && !path.join(crate::seed::SEED_FILE_NAME).exists() {
        let (old, new) = (legacy.display(), path.display());
        let notice = format!(
            "using {old}, the data dir of an older version: the default is now {new} (one per \
             network); to move it, stop the node, then `mv {old} {old}.old && mkdir {old} && \
             mv {old}.old {new}` (or pass --datadir {old} to keep it where it is)"
        );
        return Ok(DefaultDatadir { path: legacy, notice: Some(notice) });
    }
    let notice = (old_config_is_default
        && !legacy_in_use
        && legacy_config.is_file()
        && !path.join(CONFIG_FILE_NAME).exists())
    .then(|| {
        format!(
            "{} is not read: the default data dir is now {} (one per network); move the file \
             there, or pass --config FILE",
            legacy_config.display(),
            path.display()
        )
    });
    Ok(DefaultDatadir { path, notice })
}

/// The `[seller]` section: its [`OfferTerms`] keys (current names or older aliases) and the
/// seller's own options; an unknown key or a value of the wrong type is refused naming the key.
fn seller_section(path: &Path, mut table: toml::Table) -> Result<SellerConfig, ConfigError> {
    let parse = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
    let loop_in = match table.remove("in") {
        None => None,
        Some(toml::Value::Table(t)) => loop_in_section(path, t)?,
        Some(_) => return Err(parse("[seller]: `in` must be a table: [seller.in]".into())),
    };
    if let Some(key) =
        table.keys().find(|k| !OfferTerms::is_key(k) && !SellerOptions::KEYS.contains(&k.as_str()))
    {
        let mut known: Vec<&str> = OfferTerms::KEYS.to_vec();
        known.extend_from_slice(SellerOptions::KEYS);
        return Err(parse(format!(
            "unknown key `{key}` in [seller], expected one of: {}",
            known.join(", ")
        )));
    }
    let (terms, options): (toml::Table, toml::Table) =
        table.into_iter().partition(|(k, _)| OfferTerms::is_key(k));
    let terms = OfferTerms::deserialize(terms)
        .map_err(|e| parse(format!("[seller]: {}", e.to_string().trim_end())))?;
    let options = SellerOptions::deserialize(options)
        .map_err(|e| parse(format!("[seller]: {}", e.to_string().trim_end())))?;
    Ok(SellerConfig {
        enabled: options.enabled,
        terms,
        max_concurrent_swaps: options.max_concurrent_swaps,
        cooperative_claims: options.cooperative_claims,
        max_unpaid_locked_sat: options.max_unpaid_locked_sat,
        blocked_keys: options.blocked_keys,
        check_liquidity: options.check_liquidity,
        publish_lightning_address: options.publish_lightning_address,
        loop_in,
    })
}

/// The `[seller.in]` section: the loop-in offer's [`OfferTerms`] keys and `enabled` (default
/// on: the section is there to publish the offer).
fn loop_in_section(path: &Path, mut table: toml::Table) -> Result<Option<OfferTerms>, ConfigError> {
    let parse = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
    let enabled = match table.remove("enabled") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(v) => {
            return Err(parse(format!(
                "[seller.in]: enabled: invalid type: {}, expected a boolean",
                v.type_str()
            )))
        }
    };
    if let Some(key) = table.keys().find(|k| !OfferTerms::is_key(k)) {
        return Err(parse(format!(
            "unknown key `{key}` in [seller.in], expected one of: enabled, {}",
            OfferTerms::KEYS.join(", ")
        )));
    }
    // No prepay unless named (and then refused by the validation, saying why).
    table.entry("prepay_sat").or_insert(toml::Value::Integer(0));
    let terms = OfferTerms::deserialize(table)
        .map_err(|e| parse(format!("[seller.in]: {}", e.to_string().trim_end())))?;
    Ok(enabled.then_some(terms))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse_file(path, &text)
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The overrides the `looper-node` flags in `flags` would set (the binary's own parsing is
    /// tested in `main.rs`).
    fn overrides(flags: &[&str]) -> Overrides {
        let mut o = Overrides::default();
        let mut it = flags.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().map(|v| v.to_string()).unwrap();
            match *flag {
                "--datadir" => o.datadir = Some(value().into()),
                "--config" => o.config = Some(value().into()),
                "--network" => o.network = Some(value()),
                "--esplora-url" => o.esplora_url = Some(value()),
                "--chain-source" => o.chain_source = Some(value()),
                "--electrum-url" => o.electrum_url = Some(value()),
                "--bitcoind-rpc-url" => o.bitcoind_rpc_url = Some(value()),
                "--bitcoind-rpc-cookie" => o.bitcoind_rpc_cookie = Some(value().into()),
                "--bitcoind-rpc-user" => o.bitcoind_rpc_user = Some(value()),
                "--bitcoind-rpc-password" => o.bitcoind_rpc_password = Some(value()),
                "--relay" => o.relays.push(value()),
                "--proxy" => o.proxy = Some(value()),
                "--ln-listen" => o.ln_listen.push(value()),
                "--api-listen" => o.api_listen = Some(value()),
                "--log-json" => o.log_json = true,
                "--restore" => {
                    let v = value();
                    o.restore = Some(if v == "-" {
                        RestoreSource::Stdin
                    } else {
                        RestoreSource::File(v.into())
                    });
                }
                other => panic!("unknown flag {other}"),
            }
        }
        o
    }

    fn args(extra: &[&str]) -> Overrides {
        let mut v = vec!["--datadir", "/nonexistent/looper-test"];
        v.extend_from_slice(extra);
        overrides(&v)
    }

    fn regtest(extra: &[&str]) -> Overrides {
        let mut v = vec![
            "--network",
            "regtest",
            "--esplora-url",
            "http://127.0.0.1:3002",
            "--relay",
            "ws://127.0.0.1:7777",
        ];
        v.extend_from_slice(extra);
        args(&v)
    }

    fn load_toml(a: &Overrides, text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(a, Path::new("/nonexistent/looper-test"), text)
    }

    fn err_text(a: &Overrides, text: &str) -> String {
        load_toml(a, text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_regtest() {
        let c = Config::load(&regtest(&[])).unwrap();
        assert_eq!(c.network, Network::Regtest);
        assert_eq!(c.api.listen, "127.0.0.1:28839".parse().unwrap());
        assert_eq!(c.lightning.listen, vec!["0.0.0.0:29735".parse().unwrap()]);
        assert_eq!(c.seller, SellerConfig::default());
        assert_eq!(c.seller.terms.timeout_delta, 288);
        assert_eq!(c.seller.terms.claim_margin, 20);
        assert_eq!(c.seller.terms.min_confirmations, 1);
        assert_eq!(c.seller.terms.invoice_expiry_secs, 3600);
        assert!(c.config_file.is_none());
        assert!(!c.log_json);
        assert_eq!(c.restore, None);
        assert_eq!(c.db_path(), Path::new("/nonexistent/looper-test/looper.redb"));
    }

    #[test]
    fn defaults_mainnet() {
        let c = Config::load(&args(&["--network", "mainnet"])).unwrap();
        assert_eq!(c.network, Network::Bitcoin);
        assert_eq!(c.esplora_url.as_deref(), Some("https://blockstream.info/api"));
        assert_eq!(c.api.listen.port(), 8839);
        assert_eq!(c.relays.len(), 3);
        assert_eq!(c.max_fee_rate().to_sat_per_vb_ceil(), 200);
    }

    #[test]
    fn full_file() {
        let text = r#"
network = "regtest"
esplora_url = "http://127.0.0.1:3002/"
relays = ["ws://127.0.0.1:1", "wss://relay.example"]
log_json = true

[lightning]
listen = ["127.0.0.1:9999"]
alias = "looper"
announcement_addresses = ["203.0.113.5:9735", "looper.example.org:9735"]
rgs_url = "https://rapidsync.lightningdevkit.org/snapshot/"

[api]
listen = "127.0.0.1:0"

[seller]
enabled = true
min_amount_sat = 10000
max_amount_sat = 500000
fee_base_sat = 10
fee_ppm = 1000
funding_fee_sat = 500
min_confirmations = 2
timeout_delta = 60
claim_margin = 6
prepay_sat = 100
max_concurrent_swaps = 3
invoice_expiry_secs = 600

[buyer]
max_total_fee_sat = 5000
max_total_fee_ppm = 3000
max_route_cltv = 40
min_confirmations = 3

[fees]
max_fee_rate_sat_vb = 50
fallback_fee_rate_sat_vb = 1

[sync]
wallet_secs = 1
lightning_secs = 2
chain_poll_secs = 3
fee_rate_secs = 4
autoloop_secs = 5

[peer_limits]
swap_request_burst = 100
swap_requests_per_minute = 600
message_burst = 300
messages_per_minute = 1200
"#;
        let c = load_toml(&args(&[]), text).unwrap();
        assert_eq!(c.esplora_url.as_deref(), Some("http://127.0.0.1:3002"));
        assert_eq!(c.relays, vec!["ws://127.0.0.1:1", "wss://relay.example"]);
        assert!(c.log_json);
        assert_eq!(c.lightning.listen, vec!["127.0.0.1:9999".parse().unwrap()]);
        assert_eq!(c.lightning.alias.as_deref(), Some("looper"));
        assert_eq!(
            c.lightning.announcement_addresses,
            vec!["203.0.113.5:9735", "looper.example.org:9735"]
        );
        // Without the trailing slash: ldk-node appends "/TIMESTAMP".
        assert_eq!(
            c.lightning.rgs_url.as_deref(),
            Some("https://rapidsync.lightningdevkit.org/snapshot")
        );
        assert_eq!(c.api.listen.port(), 0);
        assert!(c.seller.enabled);
        assert_eq!(c.seller.terms.timeout_delta, 60);
        assert_eq!(c.seller.terms.prepay_sat, looper_api::Prepay::Sat(100));
        // The default prepay is automatic; "auto" says so explicitly; anything else is refused.
        assert_eq!(SellerConfig::default().terms.prepay_sat, looper_api::Prepay::Auto);
        let auto = load_toml(&regtest(&[]), "[seller]\nprepay_sat = \"auto\"\n").unwrap();
        assert_eq!(auto.seller.terms.prepay_sat, looper_api::Prepay::Auto);
        let e = err_text(&regtest(&[]), "[seller]\nprepay_sat = \"lots\"\n");
        assert!(e.contains("prepay_sat") || e.contains("auto"), "{e}");
        assert_eq!(c.buyer.max_route_cltv, 40);
        assert_eq!(c.buyer.min_confirmations, 3);
        assert_eq!(c.fees.max_fee_rate_sat_vb, 50);
        assert_eq!(c.sync.fee_rate_secs, 4);
        assert_eq!(c.sync.autoloop_secs, 5);
        assert_eq!(load_toml(&regtest(&[]), "").unwrap().sync.autoloop_secs, 60);
        assert_eq!(c.peer_limits.swap_requests(), RateLimit::new(100, 600));
        assert_eq!(c.peer_limits.messages(), RateLimit::new(300, 1200));
    }

    #[test]
    fn peer_limits_default_to_the_transports() {
        let c = load_toml(&regtest(&[]), "").unwrap();
        let t = TransportConfig::new([0; 32], Vec::new());
        assert_eq!(c.peer_limits.swap_requests(), t.request_rate_limit);
        assert_eq!(c.peer_limits.messages(), t.message_rate_limit);
        assert_eq!(c.peer_limits.swap_requests(), RateLimit::new(5, 10));
        let c = load_toml(&regtest(&[]), "[peer_limits]\nswap_request_burst = 50\n").unwrap();
        assert_eq!(c.peer_limits.swap_requests(), RateLimit::new(50, 10));
        assert_eq!(c.peer_limits.messages(), t.message_rate_limit);
    }

    #[test]
    fn chain_section() {
        // Esplora by default, at the given URL.
        let c = load_toml(&regtest(&[]), "").unwrap();
        assert_eq!(c.chain, ChainConfig::default());
        assert_eq!(c.chain_backend(), ChainBackend::Esplora("http://127.0.0.1:3002".into()));
        // Electrum from the file, no Esplora URL needed (regtest has no public default).
        let no_esplora = args(&["--network", "regtest", "--relay", "ws://127.0.0.1:7777"]);
        let text = "[chain]\nsource = \"electrum\"\nelectrum_url = \"tcp://127.0.0.1:50001\"\n";
        let c = load_toml(&no_esplora, text).unwrap();
        assert_eq!(c.chain.source, ChainSourceKind::Electrum);
        assert_eq!(c.esplora_url, None);
        assert_eq!(c.chain_backend(), ChainBackend::Electrum("tcp://127.0.0.1:50001".into()));
        let printed = serde_json::to_value(&c).unwrap();
        assert_eq!(printed["chain"]["source"], "electrum");
        assert_eq!(printed["chain"]["electrum_url"], "tcp://127.0.0.1:50001");
        // On mainnet, electrum keeps no public Esplora default either.
        let c = load_toml(&args(&["--network", "mainnet"]), text).unwrap();
        assert_eq!(c.esplora_url, None);
        // Flags (and the environment, through them) over the file.
        let c = load_toml(
            &regtest(&["--chain-source", "Electrum", "--electrum-url", "ssl://e.example:50002"]),
            "[chain]\nsource = \"esplora\"\n",
        )
        .unwrap();
        assert_eq!(c.chain_backend(), ChainBackend::Electrum("ssl://e.example:50002".into()));
        // An Esplora URL given with Electrum stays (unused).
        assert_eq!(c.esplora_url.as_deref(), Some("http://127.0.0.1:3002"));
        let c = load_toml(&regtest(&["--chain-source", "esplora"]), text).unwrap_err();
        assert!(c.to_string().contains("chain.electrum_url: set while chain.source"), "{c}");
        // Refused, naming the key.
        for (over, text, why) in [
            (
                regtest(&[]),
                "[chain]\nsource = \"neutrino\"\n",
                "chain.source: unknown chain source",
            ),
            (regtest(&[]), "[chain]\nsource = \"electrum\"\n", "chain.electrum_url: required"),
            (
                regtest(&[]),
                "[chain]\nelectrum_url = \"tcp://h:1\"\n",
                "chain.electrum_url: set while",
            ),
            (no_esplora.clone(), "", "esplora_url: required on regtest"),
            (
                regtest(&["--proxy", "socks5h://127.0.0.1:9050"]),
                text,
                "chain.source: \"electrum\" cannot be used with proxy 127.0.0.1:9050",
            ),
            (regtest(&[]), "[chain]\nsource = \"electrum\"\nurl = \"x\"\n", "unknown field `url`"),
        ] {
            let e = err_text(&over, text);
            assert!(e.contains(why), "{text}: {e}");
        }
        for url in [
            "http://127.0.0.1:50001",
            "127.0.0.1:50001",
            "tcp://127.0.0.1",
            "tcp://:50001",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:port",
            "ssl://user@host:50002",
            "tcp://host/path:1",
        ] {
            let e = err_text(&regtest(&["--chain-source", "electrum", "--electrum-url", url]), "");
            assert!(e.starts_with("invalid configuration: chain.electrum_url: "), "{url}: {e}");
            assert!(e.contains("tcp://HOST:PORT or ssl://HOST:PORT"), "{url}: {e}");
        }
        for url in
            ["tcp://127.0.0.1:50001", "ssl://electrum.example.org:50002", "tcp://[::1]:60401"]
        {
            let c = load_toml(&regtest(&["--chain-source", "electrum", "--electrum-url", url]), "");
            assert!(c.is_ok(), "{url}: {c:?}");
        }
    }

    #[test]
    fn bitcoind_chain_settings() {
        let no_esplora = args(&["--network", "regtest", "--relay", "ws://127.0.0.1:7777"]);
        // The cookie, the default URL of the network.
        let text = "[chain]\nsource = \"bitcoind\"\nbitcoind_rpc_cookie = \"/b/.cookie\"\n";
        let c = load_toml(&no_esplora, text).unwrap();
        assert_eq!(c.esplora_url, None);
        assert_eq!(
            c.chain_backend(),
            ChainBackend::Bitcoind {
                url: "http://127.0.0.1:18443".into(),
                auth: crate::chain::RpcAuth::Cookie("/b/.cookie".into()),
            }
        );
        let c = load_toml(&args(&["--network", "signet"]), text).unwrap();
        assert_eq!(c.chain.bitcoind_rpc_url.as_deref(), Some("http://127.0.0.1:38332"));
        // User and password from flags; the password is never printed.
        let c = load_toml(
            &no_esplora.clone().tap(|o| {
                o.chain_source = Some("bitcoind".into());
                o.bitcoind_rpc_url = Some("http://10.0.0.5:8332/".into());
                o.bitcoind_rpc_user = Some("looper".into());
                o.bitcoind_rpc_password = Some("hunter2".into());
            }),
            "",
        )
        .unwrap();
        assert_eq!(
            c.chain_backend(),
            ChainBackend::Bitcoind {
                url: "http://10.0.0.5:8332".into(),
                auth: crate::chain::RpcAuth::UserPassword {
                    user: "looper".into(),
                    password: "hunter2".into()
                },
            }
        );
        let printed = serde_json::to_string(&c).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains(r#""bitcoind_rpc_password":"(set)""#), "{printed}");
        // Refused, naming the key.
        let bitcoind = "[chain]\nsource = \"bitcoind\"\n";
        for (over, text, why) in [
            (no_esplora.clone(), bitcoind, "chain.bitcoind_rpc_cookie: bitcoind needs credentials"),
            (
                no_esplora.clone(),
                "[chain]\nsource = \"bitcoind\"\nbitcoind_rpc_cookie = \"/c\"\nbitcoind_rpc_user = \"u\"\n",
                "chain.bitcoind_rpc_cookie: give the cookie file or a user and password, not both",
            ),
            (
                no_esplora.clone(),
                "[chain]\nsource = \"bitcoind\"\nbitcoind_rpc_user = \"u\"\n",
                "chain.bitcoind_rpc_password: required with chain.bitcoind_rpc_user",
            ),
            (
                no_esplora.clone(),
                "[chain]\nsource = \"bitcoind\"\nbitcoind_rpc_password = \"p\"\n",
                "chain.bitcoind_rpc_user: required with chain.bitcoind_rpc_password",
            ),
            (
                regtest(&[]),
                "[chain]\nbitcoind_rpc_cookie = \"/c\"\n",
                "chain.bitcoind_rpc_cookie: set while chain.source is \"esplora\": set chain.source = \"bitcoind\"",
            ),
            (
                no_esplora.clone(),
                "[chain]\nsource = \"electrum\"\nelectrum_url = \"tcp://h:1\"\nbitcoind_rpc_url = \"http://h:1\"\n",
                "chain.bitcoind_rpc_url: set while chain.source is \"electrum\"",
            ),
            (
                regtest(&["--proxy", "socks5h://127.0.0.1:9050"]),
                "[chain]\nsource = \"bitcoind\"\nbitcoind_rpc_cookie = \"/c\"\n",
                "chain.source: \"bitcoind\" cannot be used with proxy 127.0.0.1:9050",
            ),
        ] {
            let e = err_text(&over, text);
            assert!(e.contains(why), "{text}: {e}");
        }
        for url in [
            "https://127.0.0.1:8332",
            "127.0.0.1:8332",
            "http://127.0.0.1",
            "http://:8332",
            "http://u:p@host:8332",
            "http://host/wallet:1",
        ] {
            let e = err_text(
                &no_esplora.clone().tap(|o| {
                    o.chain_source = Some("bitcoind".into());
                    o.bitcoind_rpc_url = Some(url.into());
                    o.bitcoind_rpc_cookie = Some("/c".into());
                }),
                "",
            );
            assert!(e.starts_with("invalid configuration: chain.bitcoind_rpc_url: "), "{url}: {e}");
        }
    }

    /// Changes a value in place and hands it back (for overrides in table tests).
    trait Tap: Sized {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }
    impl Tap for Overrides {}

    #[test]
    fn proxy_setting() {
        // None by default; the file's, then the flag's (or the environment's).
        assert_eq!(load_toml(&regtest(&[]), "").unwrap().proxy, None);
        let tor: SocketAddr = "127.0.0.1:9050".parse().unwrap();
        let c = load_toml(&regtest(&[]), "proxy = \"socks5h://127.0.0.1:9050\"\n").unwrap();
        assert_eq!(c.proxy, Some(tor));
        let c = load_toml(
            &regtest(&["--proxy", "socks5://10.0.0.2:1080"]),
            "proxy = \"socks5h://127.0.0.1:9050\"\n",
        )
        .unwrap();
        assert_eq!(c.proxy, Some("10.0.0.2:1080".parse().unwrap()));
        // The printed configuration names it.
        let printed = serde_json::to_value(&c).unwrap();
        assert_eq!(printed["proxy"], "10.0.0.2:1080");
        // Accepted forms.
        for (text, addr) in [
            ("socks5h://127.0.0.1:9050", "127.0.0.1:9050"),
            ("SOCKS5H://127.0.0.1:9050/", "127.0.0.1:9050"),
            ("socks5://127.0.0.1:9150", "127.0.0.1:9150"),
            ("127.0.0.1:9050", "127.0.0.1:9050"),
            (" socks5h://localhost:9050 ", "127.0.0.1:9050"),
            ("socks5h://[::1]:9050", "[::1]:9050"),
        ] {
            assert_eq!(parse_proxy(text), Ok(addr.parse().unwrap()), "{text}");
        }
        assert_eq!(proxy_url(tor), "socks5h://127.0.0.1:9050");
        // Refused, naming the key.
        for (text, why) in [
            ("http://127.0.0.1:8080", "the http:// scheme is not supported"),
            ("socks4://127.0.0.1:9050", "the socks4:// scheme is not supported"),
            ("socks5h://tor.example:9050", "is not a SOCKS5 proxy address"),
            ("socks5h://127.0.0.1", "is not a SOCKS5 proxy address"),
            ("socks5h://user:pw@127.0.0.1:9050", "is not a SOCKS5 proxy address"),
            ("", "is not a SOCKS5 proxy address"),
            ("socks5h://127.0.0.1:0", "port must not be 0"),
        ] {
            let e = err_text(&regtest(&["--proxy", text]), "");
            assert!(e.starts_with("invalid configuration: proxy: "), "{text}: {e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn publish_lightning_address_setting() {
        assert!(load_toml(&regtest(&[]), "").unwrap().seller.publish_lightning_address);
        let c = load_toml(&regtest(&[]), "[seller]\npublish_lightning_address = false\n").unwrap();
        assert!(!c.seller.publish_lightning_address);
        let e = err_text(&regtest(&[]), "[seller]\npublish_lightning_address = \"no\"\n");
        assert!(e.contains("publish_lightning_address"), "{e}");
    }

    #[test]
    fn older_key_names_still_load() {
        let text = "[seller]\ntimeout_delta_blocks = 60\nclaim_margin_blocks = 6\n\
                    [buyer]\nmax_route_cltv_blocks = 40\nmin_claim_margin_blocks = 7\n";
        let c = load_toml(&regtest(&[]), text).unwrap();
        assert_eq!(c.seller.terms.timeout_delta, 60);
        assert_eq!(c.seller.terms.claim_margin, 6);
        assert_eq!(c.buyer.max_route_cltv, 40);
        assert_eq!(c.buyer.min_claim_margin, 7);
    }

    #[test]
    fn partial_section_keeps_other_defaults() {
        let c = load_toml(&regtest(&[]), "[seller]\nfee_ppm = 42\n").unwrap();
        assert_eq!(c.seller.terms.fee_ppm, 42);
        assert_eq!(c.seller.terms.timeout_delta, 288);
    }

    #[test]
    fn flags_override_file() {
        let text = r#"
network = "signet"
esplora_url = "http://file.example"
relays = ["ws://file.example"]
[lightning]
listen = ["127.0.0.1:1111"]
[api]
listen = "127.0.0.1:2222"
"#;
        let a = args(&[
            "--network",
            "regtest",
            "--esplora-url",
            "http://flag.example",
            "--relay",
            "ws://flag1.example",
            "--relay",
            "ws://flag2.example",
            "--ln-listen",
            "127.0.0.1:3333",
            "--api-listen",
            "127.0.0.1:4444",
            "--log-json",
            "--restore",
            "-",
        ]);
        let c = load_toml(&a, text).unwrap();
        assert_eq!(c.network, Network::Regtest);
        assert_eq!(c.esplora_url.as_deref(), Some("http://flag.example"));
        assert_eq!(c.relays, vec!["ws://flag1.example", "ws://flag2.example"]);
        assert_eq!(c.lightning.listen, vec!["127.0.0.1:3333".parse().unwrap()]);
        assert_eq!(c.api.listen.port(), 4444);
        assert!(c.log_json);
        assert_eq!(c.restore, Some(RestoreSource::Stdin));

        // Without flags the file wins over the defaults.
        let c = load_toml(&args(&[]), text).unwrap();
        assert_eq!(c.network, Network::Signet);
        assert_eq!(c.esplora_url.as_deref(), Some("http://file.example"));
        assert_eq!(c.relays, vec!["ws://file.example"]);
        assert_eq!(c.api.listen.port(), 2222);
    }

    #[test]
    fn config_file_in_datadir_and_explicit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE_NAME),
            "network = \"regtest\"\nesplora_url = \"http://a.example\"\nrelays = [\"ws://a.example\"]\n",
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        let c = Config::load(&overrides(&["--datadir", d])).unwrap();
        assert_eq!(c.esplora_url.as_deref(), Some("http://a.example"));
        assert_eq!(c.config_file, Some(dir.path().join(CONFIG_FILE_NAME)));

        let other = dir.path().join("other.toml");
        std::fs::write(
            &other,
            "network = \"regtest\"\nesplora_url = \"http://b.example\"\nrelays = [\"ws://b.example\"]\n",
        )
        .unwrap();
        let c = Config::load(&overrides(&["--datadir", d, "--config", other.to_str().unwrap()]))
            .unwrap();
        assert_eq!(c.esplora_url.as_deref(), Some("http://b.example"));

        let missing = dir.path().join("missing.toml");
        let e = Config::load(&overrides(&["--datadir", d, "--config", missing.to_str().unwrap()]))
            .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.toml"), "{e}");
    }

    #[test]
    fn restore_file() {
        let c = Config::load(&regtest(&["--restore", "/tmp/words.txt"])).unwrap();
        assert_eq!(c.restore, Some(RestoreSource::File(PathBuf::from("/tmp/words.txt"))));
    }

    #[test]
    fn error_missing_network() {
        let e = Config::load(&args(&[])).unwrap_err().to_string();
        assert!(e.starts_with("invalid configuration: network: not set"), "{e}");
    }

    #[test]
    fn error_unknown_network() {
        let e = Config::load(&args(&["--network", "moonnet"])).unwrap_err().to_string();
        assert!(e.contains("network: unknown network \"moonnet\""), "{e}");
    }

    #[test]
    fn error_regtest_needs_esplora() {
        let e = Config::load(&args(&["--network", "regtest", "--relay", "ws://a"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("esplora_url: required on regtest"), "{e}");
    }

    #[test]
    fn error_regtest_needs_relay() {
        let e =
            Config::load(&args(&["--network", "regtest", "--esplora-url", "http://127.0.0.1:1"]))
                .unwrap_err()
                .to_string();
        assert!(e.contains("relays: at least one relay"), "{e}");
    }

    #[test]
    fn error_bad_urls() {
        let with = |esplora: &str, relay: &str| {
            Config::load(&args(&[
                "--network",
                "regtest",
                "--esplora-url",
                esplora,
                "--relay",
                relay,
            ]))
            .unwrap_err()
            .to_string()
        };
        let e = with("ftp://x", "ws://a");
        assert!(e.contains("esplora_url: \"ftp://x\" must start with http:// or https://"), "{e}");
        let e = with("http://a", "http://x");
        assert!(e.contains("relays: \"http://x\" must start with ws:// or wss://"), "{e}");
        let e = with("http://", "ws://a");
        assert!(e.contains("esplora_url: \"http://\" has no valid host"), "{e}");
    }

    #[test]
    fn error_bad_addresses() {
        let e = Config::load(&regtest(&["--api-listen", "localhost"])).unwrap_err().to_string();
        assert!(e.contains("api.listen: \"localhost\" is not an address"), "{e}");
        let e = Config::load(&regtest(&["--api-listen", "0.0.0.0:1"])).unwrap_err().to_string();
        assert!(e.contains("api.listen: 0.0.0.0:1 is not a loopback address"), "{e}");
        let e = Config::load(&regtest(&["--ln-listen", "nope"])).unwrap_err().to_string();
        assert!(e.contains("lightning.listen: \"nope\" is not an address"), "{e}");
        let e = err_text(
            &regtest(&[]),
            "[lightning]\nalias = \"0123456789012345678901234567890123\"\n",
        );
        assert!(e.contains("lightning.alias: must be at most 32 bytes"), "{e}");
    }

    #[test]
    fn lightning_gossip_and_announcement() {
        // Defaults: peer-to-peer gossip, the listening addresses announced.
        let c = Config::load(&regtest(&[])).unwrap();
        assert_eq!(
            (c.lightning.rgs_url.as_deref(), c.lightning.announcement_addresses.len()),
            (None, 0)
        );
        let onion =
            "aebagbafaydqqcikbmga2dqpcaireeyuculbogazdinryhi6d4qcmeqd.onion:9735".to_string();
        let text = format!(
            "[lightning]\nalias = \"a\"\nannouncement_addresses = [\" [2001:db8::1]:9735 \", \"{onion}\"]\n"
        );
        let c = load_toml(&regtest(&[]), &text).unwrap();
        assert_eq!(
            c.lightning.announcement_addresses,
            vec!["[2001:db8::1]:9735".to_string(), onion]
        );
        let key = "lightning.announcement_addresses";
        for (toml, want) in [
            (
                "alias = \"a\"\nannouncement_addresses = [\"nope\"]",
                format!("{key}: \"nope\" is not an address of the form HOST:PORT"),
            ),
            (
                "alias = \"a\"\nannouncement_addresses = [\"1.2.3.4\"]",
                format!("{key}: \"1.2.3.4\" is not an address"),
            ),
            (
                "announcement_addresses = [\"1.2.3.4:9735\"]",
                format!("{key}: needs lightning.alias"),
            ),
            (
                "alias = \"a\"\nlisten = []\nannouncement_addresses = [\"1.2.3.4:9735\"]",
                "lightning.alias: needs lightning.listen".to_string(),
            ),
            (
                "listen = []\nannouncement_addresses = [\"1.2.3.4:9735\"]",
                format!("{key}: needs lightning.alias"),
            ),
            (
                "rgs_url = \"ftp://rgs.example\"",
                "lightning.rgs_url: \"ftp://rgs.example\" must start with https:// or http://"
                    .to_string(),
            ),
            (
                "rgs_url = \"https://\"",
                "lightning.rgs_url: \"https://\" has no valid host".to_string(),
            ),
            ("rgs_urll = \"https://x\"", "rgs_urll".to_string()),
        ] {
            let e = err_text(&regtest(&[]), &format!("[lightning]\n{toml}\n"));
            assert!(e.contains(&want), "{toml}: {e}");
        }
        let many: Vec<String> = (0..=MAX_ANNOUNCEMENT_ADDRESSES)
            .map(|i| format!("\"10.0.0.1:{}\"", 1000 + i))
            .collect();
        let e = err_text(
            &regtest(&[]),
            &format!("[lightning]\nalias = \"a\"\nannouncement_addresses = [{}]\n", many.join(",")),
        );
        assert!(
            e.contains(&format!("{key}: at most {MAX_ANNOUNCEMENT_ADDRESSES} addresses")),
            "{e}"
        );
        let c = load_toml(
            &regtest(&[]),
            "[lightning]\nrgs_url = \" http://127.0.0.1:8011/snapshot// \"\n",
        )
        .unwrap();
        assert_eq!(c.lightning.rgs_url.as_deref(), Some("http://127.0.0.1:8011/snapshot"));
    }

    #[test]
    fn error_syntax_and_unknown_keys() {
        let e = err_text(&regtest(&[]), "network = ");
        assert!(e.starts_with("invalid configuration file"), "{e}");
        let e = err_text(&regtest(&[]), "[seller]\nfe_ppm = 1\n");
        assert!(e.contains("fe_ppm"), "{e}");
        let e = err_text(&regtest(&[]), "netwrk = \"regtest\"\n");
        assert!(e.contains("netwrk"), "{e}");
        let e = err_text(&regtest(&[]), "[seller]\nfee_ppm = \"many\"\n");
        assert!(e.contains("fee_ppm"), "{e}");
        let e = err_text(&regtest(&[]), "[seller]\nfee_ppm = -1\n");
        assert!(e.contains("fee_ppm"), "{e}");
    }

    #[test]
    fn error_seller_values() {
        let cases: &[(&str, &str)] = &[
            ("fee_ppm = 100001", "seller.fee_ppm: must be <= 100000"),
            ("min_amount_sat = 100", "seller.min_amount_sat: must be >= 330 (the dust limit of the HTLC output)"),
            (
                "max_amount_sat = 2100000000000001",
                "seller.max_amount_sat: must be <= 2100000000000000 (21 million BTC)",
            ),
            (
                "min_amount_sat = 5000\nmax_amount_sat = 4000",
                "seller.max_amount_sat: must be >= seller.min_amount_sat (5000)",
            ),
            (
                "min_amount_sat = 5000\nfee_base_sat = 5001",
                "seller.fee_base_sat: must be <= seller.min_amount_sat",
            ),
            ("min_confirmations = 0", "seller.min_confirmations: must be between 1 and 100"),
            ("timeout_delta = 5000", "seller.timeout_delta: must be <= 2016"),
            ("claim_margin = 0", "seller.claim_margin: must be >= 1"),
            (
                "timeout_delta = 21",
                "seller.timeout_delta: must be >= seller.claim_margin + seller.min_confirmations + 42 (>= 63)",
            ),
            ("prepay_sat = 100001", "seller.prepay_sat: must be <= seller.min_amount_sat"),
            ("max_concurrent_swaps = 0", "seller.max_concurrent_swaps: must be >= 1"),
            ("invoice_expiry_secs = 10", "seller.invoice_expiry_secs: must be between 60 and 86400"),
            ("pow_difficulty = 33", "seller.pow_difficulty: must be <= 32"),
            (
                "max_unpaid_locked_sat = 5",
                "seller.max_unpaid_locked_sat: must be 0 (no cap) or >= seller.min_amount_sat",
            ),
            ("blocked_keys = [\"nope\"]", "seller.blocked_keys: not a Nostr key: nope"),
        ];
        for (body, expected) in cases {
            let e = err_text(&regtest(&[]), &format!("[seller]\n{body}\n"));
            assert_eq!(e, format!("invalid configuration: {expected}"), "for {body}");
        }
        // Below 144 blocks is fine on regtest, refused elsewhere.
        load_toml(&regtest(&[]), "[seller]\ntimeout_delta = 70\n").unwrap();
        let e = err_text(&args(&["--network", "signet"]), "[seller]\ntimeout_delta = 70\n");
        assert!(e.contains("seller.timeout_delta: must be >= 144 outside regtest"), "{e}");
    }

    #[test]
    fn seller_in_section() {
        let c = load_toml(&regtest(&[]), "[seller.in]\nmax_amount_sat = 300000\nfee_ppm = 2500\n")
            .unwrap();
        let t = c.seller.loop_in.unwrap();
        assert_eq!((t.max_amount_sat, t.fee_ppm), (300_000, 2_500));
        assert_eq!(t.min_amount_sat, OfferTerms::default().min_amount_sat, "defaults fill in");
        assert!(!c.seller.enabled, "[seller.in] leaves the loop-out offer off");
        let off = load_toml(&regtest(&[]), "[seller.in]\nenabled = false\nfee_ppm = 1\n").unwrap();
        assert_eq!(off.seller.loop_in, None);
        let cases: &[(&str, &str)] = &[
            ("fee_ppm = 100001", "invalid configuration: seller.in.fee_ppm: must be <= 100000"),
            (
                "min_amount_sat = 5000\nmax_amount_sat = 4000",
                "invalid configuration: seller.in.max_amount_sat: must be >= seller.in.min_amount_sat (5000)",
            ),
            (
                "timeout_delta = 21",
                "invalid configuration: seller.in.timeout_delta: must be >= seller.in.claim_margin + seller.in.min_confirmations + 42 (>= 63)",
            ),
            (
                "prepay_sat = 1000",
                "invalid configuration: seller.in.prepay_sat: a loop-in offer has no prepay: leave it out",
            ),
        ];
        for (body, expected) in cases {
            let e = err_text(&regtest(&[]), &format!("[seller.in]\n{body}\n"));
            assert_eq!(e, *expected, "for {body}");
        }
        let e = err_text(&regtest(&[]), "[seller.in]\nmax_concurrent_swaps = 3\n");
        assert!(e.contains("unknown key `max_concurrent_swaps` in [seller.in]"), "{e}");
        let e = err_text(&regtest(&[]), "[seller.in]\nenabled = 1\n");
        assert!(e.contains("[seller.in]: enabled"), "{e}");
        let e = err_text(&regtest(&[]), "[seller]\nin = 3\n");
        assert!(e.contains("[seller.in]"), "{e}");
        // The mainnet-style ceiling holds for the loop-in offer too.
        let e = err_text(
            &regtest(&[]),
            "[safety]\nmax_swap_amount_sat = 100000\n[seller.in]\nmax_amount_sat = 200000\n",
        );
        assert!(
            e.contains("seller.in.max_amount_sat: 200000 is above safety.max_swap_amount_sat"),
            "{e}"
        );
    }

    #[test]
    fn error_buyer_fees_sync_values() {
        let cases: &[(&str, &str)] = &[
            ("[buyer]\nmax_total_fee_ppm = 200000", "buyer.max_total_fee_ppm: must be <= 100000"),
            ("[buyer]\nmax_route_cltv = 5", "buyer.max_route_cltv: must be between 18 and 2016"),
            ("[buyer]\nmin_confirmations = 101", "buyer.min_confirmations: must be <= 100"),
            (
                "[fees]\nmax_fee_rate_sat_vb = 0",
                "fees.max_fee_rate_sat_vb: must be between 1 and 10000",
            ),
            (
                "[fees]\nmax_fee_rate_sat_vb = 5\nfallback_fee_rate_sat_vb = 6",
                "fees.fallback_fee_rate_sat_vb: must be between 1 and fees.max_fee_rate_sat_vb",
            ),
            ("[sync]\nwallet_secs = 0", "sync.wallet_secs: must be between 1 and 86400 seconds"),
            (
                "[peer_limits]\nswap_request_burst = 0",
                "peer_limits.swap_request_burst: must be between 1 and 1000000",
            ),
            (
                "[peer_limits]\nmessages_per_minute = 1000001",
                "peer_limits.messages_per_minute: must be between 1 and 1000000",
            ),
            (
                "[sync]\nchain_poll_secs = 100000",
                "sync.chain_poll_secs: must be between 1 and 86400 seconds",
            ),
        ];
        for (body, expected) in cases {
            let e = err_text(&regtest(&[]), body);
            assert_eq!(e, format!("invalid configuration: {expected}"), "for {body}");
        }
    }

    /// [`Config::load_with_home`] without `--datadir`, under `home`.
    fn load_home(home: &Path, flags: &[&str]) -> Result<Config, ConfigError> {
        Config::load_with_home(&overrides(flags), Some(home))
    }

    #[test]
    fn default_datadir_is_per_network() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        for (net, dir) in [
            ("mainnet", "bitcoin"),
            ("bitcoin", "bitcoin"),
            ("testnet", "testnet"),
            ("testnet4", "testnet4"),
            ("signet", "signet"),
        ] {
            let c = load_home(h, &["--network", net]).unwrap();
            assert_eq!(c.datadir, h.join(".looper").join(dir), "{net}");
            assert!(c.notices.is_empty(), "{net}: {:?}", c.notices);
        }
        let reg = ["--esplora-url", "http://127.0.0.1:3002", "--relay", "ws://127.0.0.1:7777"];
        let c = load_home(h, &[&["--network", "regtest"][..], &reg].concat()).unwrap();
        assert_eq!(c.datadir, h.join(".looper/regtest"));
        assert_eq!(c.datadir, h.join(".looper").join(network_dir_name(c.network)));
        // The per-network dir's looper.toml is the configuration file.
        std::fs::create_dir_all(h.join(".looper/signet")).unwrap();
        std::fs::write(h.join(".looper/signet/looper.toml"), "esplora_url = \"http://e.example\"")
            .unwrap();
        let c = load_home(h, &["--network", "signet"]).unwrap();
        assert_eq!(c.esplora_url.as_deref(), Some("http://e.example"));
        assert_eq!(c.config_file, Some(h.join(".looper/signet/looper.toml")));
        // --datadir (or LOOPER_DATADIR) is used as given.
        let c = Config::load_with_home(&args(&["--network", "signet"]), Some(h)).unwrap();
        assert_eq!(c.datadir, Path::new("/nonexistent/looper-test"));
        // No home, no network.
        let e = Config::load_with_home(&overrides(&["--network", "signet"]), None).unwrap_err();
        assert!(matches!(e, ConfigError::NoDatadir), "{e}");
        let e = load_home(h, &[]).unwrap_err().to_string();
        assert!(e.starts_with("invalid configuration: network: not set"), "{e}");
        let e = load_home(h, &["--network", "moonnet"]).unwrap_err().to_string();
        assert!(e.contains("network: unknown network \"moonnet\""), "{e}");
    }

    #[test]
    fn older_datadir_with_a_seed_stays_in_use() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let old = h.join(".looper");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("seed"), "words").unwrap();
        let c = load_home(h, &["--network", "signet"]).unwrap();
        assert_eq!(c.datadir, old);
        assert_eq!(c.notices.len(), 1, "{:?}", c.notices);
        let o = old.display();
        let expected = format!(
            "using {o}, the data dir of an older version: the default is now {o}/signet (one per \
             network); to move it, stop the node, then `mv {o} {o}.old && mkdir {o} && mv {o}.old \
             {o}/signet` (or pass --datadir {o} to keep it where it is)"
        );
        assert_eq!(c.notices[0], expected);
        // Its looper.toml gives the network when nothing else does, and is the configuration file.
        std::fs::write(old.join("looper.toml"), "network = \"signet\"\n").unwrap();
        let c = load_home(h, &[]).unwrap();
        assert_eq!((c.network, &c.datadir), (Network::Signet, &old));
        assert_eq!(c.config_file, Some(old.join("looper.toml")));
        // Another network than its looper.toml's gets its own dir.
        let c = load_home(h, &["--network", "testnet"]).unwrap();
        assert_eq!(c.datadir, old.join("testnet"));
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        // Once the per-network dir holds a seed, it is used.
        std::fs::create_dir_all(old.join("signet")).unwrap();
        std::fs::write(old.join("signet/seed"), "words").unwrap();
        let c = load_home(h, &["--network", "signet"]).unwrap();
        assert_eq!(c.datadir, old.join("signet"));
        assert!(c.notices.is_empty(), "{:?}", c.notices);
    }

    #[test]
    fn older_config_file_alone_is_not_read_and_says_so() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::create_dir_all(h.join(".looper")).unwrap();
        std::fs::write(h.join(".looper/looper.toml"), "esplora_url = \"http://old.example\"\n")
            .unwrap();
        let c = load_home(h, &["--network", "signet"]).unwrap();
        assert_eq!(c.datadir, h.join(".looper/signet"));
        assert_ne!(c.esplora_url.as_deref(), Some("http://old.example"));
        assert_eq!(c.notices.len(), 1, "{:?}", c.notices);
        assert!(c.notices[0].contains("looper.toml is not read"), "{:?}", c.notices);
        // Not when the configuration file is named.
        let other = h.join("other.toml");
        std::fs::write(&other, "").unwrap();
        let c =
            load_home(h, &["--network", "signet", "--config", other.to_str().unwrap()]).unwrap();
        assert!(c.notices.is_empty(), "{:?}", c.notices);
    }

    #[test]
    fn mainnet_swap_ceiling() {
        let main = args(&["--network", "mainnet"]);
        let c = Config::load(&main).unwrap();
        assert_eq!(c.safety.max_swap_amount_sat, Some(DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT));
        assert_eq!(DEFAULT_MAINNET_MAX_SWAP_AMOUNT_SAT, 1_000_000);
        for net in ["testnet", "testnet4", "signet"] {
            let c = Config::load(&args(&["--network", net])).unwrap();
            assert_eq!(c.safety.max_swap_amount_sat, None, "{net}");
        }
        assert_eq!(Config::load(&regtest(&[])).unwrap().safety.max_swap_amount_sat, None);
        // Raised, removed, or set on another network.
        let c = load_toml(&main, "[safety]\nmax_swap_amount_sat = 5000000\n").unwrap();
        assert_eq!(c.safety.max_swap_amount_sat, Some(5_000_000));
        let c = load_toml(&main, "[safety]\nmax_swap_amount_sat = 0\n").unwrap();
        assert_eq!(c.safety.max_swap_amount_sat, None);
        let c = load_toml(&regtest(&[]), "[safety]\nmax_swap_amount_sat = 200000\n").unwrap();
        assert_eq!(c.safety.max_swap_amount_sat, Some(200_000));
        assert_eq!(
            err_text(&main, "[safety]\nmax_swap_amount_sat = 100\n"),
            "invalid configuration: safety.max_swap_amount_sat: must be 0 (no ceiling) or >= 330 \
             (the dust limit of the HTLC output)"
        );
        let e = err_text(&main, "[safety]\nmax_amount_sat = 1\n");
        assert!(e.starts_with("invalid configuration file") && e.contains("max_amount_sat"), "{e}");
    }

    #[test]
    fn mainnet_seller_offer_within_the_ceiling() {
        let main = args(&["--network", "mainnet"]);
        // The default terms (up to 10 000 000 sat) are refused on mainnet once selling is on.
        assert_eq!(
            err_text(&main, "[seller]\nenabled = true\n"),
            "invalid configuration: seller.max_amount_sat: 10000000 is above \
             safety.max_swap_amount_sat (1000000, the mainnet default): lower \
             seller.max_amount_sat, or raise safety.max_swap_amount_sat in [safety] (0: no ceiling)"
        );
        let e = err_text(
            &main,
            "[seller]\nenabled = true\nmax_amount_sat = 900000\n[safety]\nmax_swap_amount_sat = 800000\n",
        );
        assert!(e.contains("900000 is above safety.max_swap_amount_sat (800000):"), "{e}");
        // Not selling, within the ceiling, the ceiling raised or removed, another network.
        load_toml(&main, "[seller]\nmax_amount_sat = 5000000\n").unwrap();
        load_toml(&main, "[seller]\nenabled = true\nmax_amount_sat = 1000000\n").unwrap();
        load_toml(&main, "[seller]\nenabled = true\n[safety]\nmax_swap_amount_sat = 10000000\n")
            .unwrap();
        load_toml(&main, "[seller]\nenabled = true\n[safety]\nmax_swap_amount_sat = 0\n").unwrap();
        load_toml(&args(&["--network", "signet"]), "[seller]\nenabled = true\n").unwrap();
    }
}
