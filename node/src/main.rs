//! `looper-node`: the Looper daemon. `looper-node --datadir DIR [--config FILE] ...`; see
//! `looper-node --help`.
//!
//! The command line (and the `LOOPER_*` variables clap reads for it) is parsed here into the
//! library's plain [`Overrides`]; loading and validating the configuration is the library's
//! ([`Config::load`]).

use std::path::PathBuf;

use clap::Parser;
use looper_node::config::{Config, Overrides, RestoreSource};
use looper_node::node::LooperNode;
use looper_node::seed::SeedOrigin;

/// Command-line arguments of `looper-node`. Every flag can also be given as the environment
/// variable named in its help (`LOOPER_*`); a flag on the command line wins over the variable.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "looper-node",
    version,
    about = "Looper daemon: peer-to-peer Lightning <-> on-chain swaps over Nostr"
)]
struct Args {
    /// Data directory (seed, wallet and swap database, Lightning storage, API token).
    /// Default: `$HOME/.looper/NETWORK`, one per network (bitcoin, testnet, testnet4, signet,
    /// regtest); an older `$HOME/.looper` holding a seed is still used until it is moved (the
    /// node logs how).
    #[arg(long, env = "LOOPER_DATADIR", value_name = "DIR")]
    datadir: Option<PathBuf>,

    /// Configuration file. Default: `DATADIR/looper.toml` (optional there); a file named here must
    /// exist.
    #[arg(long, env = "LOOPER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Bitcoin network: mainnet (or bitcoin), testnet, testnet4, signet, regtest.
    #[arg(long, env = "LOOPER_NETWORK", value_name = "NETWORK")]
    network: Option<String>,

    /// Esplora HTTP API base URL, e.g. `https://blockstream.info/api`.
    #[arg(long, env = "LOOPER_ESPLORA_URL", value_name = "URL")]
    esplora_url: Option<String>,

    /// Chain source of the swap engine, the wallet and the Lightning node: `esplora` (default,
    /// at --esplora-url), `electrum` (at --electrum-url) or `bitcoind` (at --bitcoind-rpc-url).
    #[arg(long, env = "LOOPER_CHAIN_SOURCE", value_name = "SOURCE")]
    chain_source: Option<String>,

    /// Electrum server URL, `tcp://HOST:PORT` or `ssl://HOST:PORT` (with --chain-source
    /// electrum).
    #[arg(long, env = "LOOPER_ELECTRUM_URL", value_name = "URL")]
    electrum_url: Option<String>,

    /// bitcoind's JSON-RPC URL, `http://HOST:PORT` (with --chain-source bitcoind; default
    /// http://127.0.0.1 and the network's RPC port).
    #[arg(long, env = "LOOPER_BITCOIND_RPC_URL", value_name = "URL")]
    bitcoind_rpc_url: Option<String>,

    /// bitcoind's cookie file, e.g. `~/.bitcoin/.cookie` (or --bitcoind-rpc-user and
    /// --bitcoind-rpc-password).
    #[arg(long, env = "LOOPER_BITCOIND_RPC_COOKIE", value_name = "FILE")]
    bitcoind_rpc_cookie: Option<PathBuf>,

    /// bitcoind's RPC user.
    #[arg(long, env = "LOOPER_BITCOIND_RPC_USER", value_name = "USER")]
    bitcoind_rpc_user: Option<String>,

    /// bitcoind's RPC password (prefer LOOPER_BITCOIND_RPC_PASSWORD or the configuration file:
    /// a command line is visible to other users).
    #[arg(
        long,
        env = "LOOPER_BITCOIND_RPC_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    bitcoind_rpc_password: Option<String>,

    /// Nostr relay URL (repeat the flag for several; the variable takes a comma-separated list).
    /// Replaces the relays of the configuration file.
    #[arg(long = "relay", env = "LOOPER_RELAYS", value_name = "URL", value_delimiter = ',')]
    relays: Vec<String>,

    /// SOCKS5 proxy for the Nostr relays and the Esplora chain source, e.g. Tor's
    /// `socks5h://127.0.0.1:9050` (the proxy resolves host names). Lightning peer connections do
    /// not use it (ldk-node cannot).
    #[arg(long, env = "LOOPER_PROXY", value_name = "URL")]
    proxy: Option<String>,

    /// Lightning peer-to-peer listen address (repeatable; the variable takes a comma-separated
    /// list). Replaces the addresses of the configuration file.
    #[arg(
        long = "ln-listen",
        env = "LOOPER_LN_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    ln_listen: Vec<String>,

    /// Control API listen address (loopback only, e.g. `127.0.0.1:8839`; port 0 picks a free
    /// port).
    #[arg(long, env = "LOOPER_API_LISTEN", value_name = "ADDR")]
    api_listen: Option<String>,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "LOOPER_LOG_JSON")]
    log_json: bool,

    /// Restore the node from a BIP-39 mnemonic read from FILE (`-` reads standard input) instead of
    /// creating a new seed. Refused when the data dir already holds a seed.
    #[arg(long, env = "LOOPER_RESTORE", value_name = "FILE")]
    restore: Option<PathBuf>,

    /// Print the effective configuration (defaults, file, environment and flags merged and
    /// validated) as JSON and exit, without starting anything.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    /// The library's overrides: the flags and variables, as given.
    fn overrides(&self) -> Overrides {
        Overrides {
            datadir: self.datadir.clone(),
            config: self.config.clone(),
            network: self.network.clone(),
            esplora_url: self.esplora_url.clone(),
            chain_source: self.chain_source.clone(),
            electrum_url: self.electrum_url.clone(),
            bitcoind_rpc_url: self.bitcoind_rpc_url.clone(),
            bitcoind_rpc_cookie: self.bitcoind_rpc_cookie.clone(),
            bitcoind_rpc_user: self.bitcoind_rpc_user.clone(),
            bitcoind_rpc_password: self.bitcoind_rpc_password.clone(),
            relays: self.relays.clone(),
            proxy: self.proxy.clone(),
            ln_listen: self.ln_listen.clone(),
            api_listen: self.api_listen.clone(),
            log_json: self.log_json,
            restore: self.restore.as_ref().map(|p| {
                if p.as_os_str() == "-" {
                    RestoreSource::Stdin
                } else {
                    RestoreSource::File(p.clone())
                }
            }),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = match Config::load(&args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("looper-node: {e}");
            std::process::exit(2);
        }
    };
    if args.print_config {
        for notice in &config.notices {
            eprintln!("looper-node: {notice}");
        }
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    // ldk-node has no proxy setting; its HTTP clients (chain source, gossip) read these variables.
    // Set while the process has a single thread, before the runtime and ldk-node start.
    if let Some(proxy) = config.proxy {
        for (name, value) in looper_node::config::proxy_env(proxy) {
            std::env::set_var(name, value);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,ldk_node=warn,nostr_relay_pool=warn".into());
    {
        use tracing_subscriber::prelude::*;
        // nostr-relay-pool's dumps of whole relay messages (a peer's oversize events) stay out.
        let no_dumps =
            tracing_subscriber::filter::filter_fn(|m| !looper_node::nostr::is_relay_dump(m));
        let layer = if config.log_json {
            tracing_subscriber::fmt::layer().json().boxed()
        } else {
            tracing_subscriber::fmt::layer().boxed()
        };
        tracing_subscriber::registry().with(filter).with(layer.with_filter(no_dumps)).init();
    }
    for notice in &config.notices {
        tracing::warn!("{notice}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let node = LooperNode::start(config).await?;
        let (seed_path, origin) = &node.seed;
        match origin {
            SeedOrigin::Created => println!(
                "created a new seed at {} - back it up: it is the only way to recover funds",
                seed_path.display()
            ),
            SeedOrigin::Restored => println!("restored the seed into {}", seed_path.display()),
            SeedOrigin::Loaded => println!("seed: {}", seed_path.display()),
        }
        let token_path = node.config.datadir.join(looper_node::seed::API_TOKEN_FILE_NAME);
        node.run(
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            move |addr| {
                println!("control API on http://{addr} (token in {})", token_path.display());
            },
        )
        .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(flags: &[&str]) -> Overrides {
        let mut v = vec!["looper-node"];
        v.extend_from_slice(flags);
        Args::try_parse_from(v).unwrap().overrides()
    }

    #[test]
    fn flags_become_overrides() {
        let o = parse(&[
            "--datadir",
            "/d",
            "--config",
            "/c.toml",
            "--network",
            "regtest",
            "--esplora-url",
            "http://e",
            "--chain-source",
            "electrum",
            "--electrum-url",
            "tcp://127.0.0.1:50001",
            "--relay",
            "ws://a",
            "--relay",
            "ws://b",
            "--proxy",
            "socks5h://127.0.0.1:9050",
            "--ln-listen",
            "127.0.0.1:1",
            "--api-listen",
            "127.0.0.1:2",
            "--log-json",
            "--restore",
            "-",
        ]);
        assert_eq!(
            o,
            Overrides {
                datadir: Some("/d".into()),
                config: Some("/c.toml".into()),
                network: Some("regtest".into()),
                esplora_url: Some("http://e".into()),
                chain_source: Some("electrum".into()),
                electrum_url: Some("tcp://127.0.0.1:50001".into()),
                bitcoind_rpc_url: None,
                bitcoind_rpc_cookie: None,
                bitcoind_rpc_user: None,
                bitcoind_rpc_password: None,
                relays: vec!["ws://a".into(), "ws://b".into()],
                proxy: Some("socks5h://127.0.0.1:9050".into()),
                ln_listen: vec!["127.0.0.1:1".into()],
                api_listen: Some("127.0.0.1:2".into()),
                log_json: true,
                restore: Some(RestoreSource::Stdin),
            }
        );
        let o = parse(&[
            "--bitcoind-rpc-url",
            "http://127.0.0.1:8332",
            "--bitcoind-rpc-cookie",
            "/b/.cookie",
            "--bitcoind-rpc-user",
            "u",
            "--bitcoind-rpc-password",
            "p",
        ]);
        assert_eq!(o.bitcoind_rpc_url.as_deref(), Some("http://127.0.0.1:8332"));
        assert_eq!(o.bitcoind_rpc_cookie, Some("/b/.cookie".into()));
        assert_eq!(
            (o.bitcoind_rpc_user.as_deref(), o.bitcoind_rpc_password.as_deref()),
            (Some("u"), Some("p"))
        );
        let o = parse(&["--restore", "/words.txt"]);
        assert_eq!(o.restore, Some(RestoreSource::File("/words.txt".into())));
    }

    #[test]
    fn cli_is_consistent() {
        <Args as clap::CommandFactory>::command().debug_assert();
    }
}
