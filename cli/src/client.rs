//! The HTTP client of the node's control API (`/v1/...`, bearer token) and the mapping of every
//! failure to one [`CliError`] line; plus finding the node: `--rpc-url`/`--token-file`, or the
//! data dir (`DATADIR/api.token`, `DATADIR/looper.toml`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use looper_api::{ErrorBody, ErrorCode, SwapEvents};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{CliError, CliResult};

/// Name of the token file in the data dir (written by `looper-node` at start).
pub const API_TOKEN_FILE_NAME: &str = "api.token";
/// Name of the node's configuration file in the data dir.
pub const CONFIG_FILE_NAME: &str = "looper.toml";
/// Name of the node's seed file in the data dir (it tells an older node's shared data dir).
const SEED_FILE_NAME: &str = "seed";
/// The directory under `$HOME` that holds the per-network data dirs (`looper-node`'s
/// `DATADIR_PARENT_NAME`).
const DATADIR_PARENT_NAME: &str = ".looper";
/// Timeout of an ordinary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the node is and how to authenticate, from the global flags.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--datadir` / `LOOPER_DATADIR`.
    pub datadir: Option<PathBuf>,
    /// `--rpc-url` / `LOOPER_RPC_URL`.
    pub rpc_url: Option<String>,
    /// `--token-file` / `LOOPER_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--network` / `LOOPER_NETWORK`: picks the default data dir and API port.
    pub network: Option<String>,
}

/// Default control API port per network, as `looper-node` uses it (`node/src/config.rs`).
pub fn default_api_port(network: &str) -> Option<u16> {
    match network.trim().to_ascii_lowercase().as_str() {
        "mainnet" | "bitcoin" | "main" => Some(8839),
        "testnet" | "testnet3" | "test" => Some(18839),
        "testnet4" => Some(48839),
        "signet" => Some(38839),
        "regtest" => Some(28839),
        _ => None,
    }
}

/// The name of a network's data dir under `$HOME/.looper`, as `looper-node` names it
/// (`network_dir_name` in `node/src/config.rs`).
pub fn network_dir_name(network: &str) -> Option<&'static str> {
    match network.trim().to_ascii_lowercase().as_str() {
        "mainnet" | "bitcoin" | "main" => Some("bitcoin"),
        "testnet" | "testnet3" | "test" => Some("testnet"),
        "testnet4" => Some("testnet4"),
        "signet" => Some("signet"),
        "regtest" => Some("regtest"),
        _ => None,
    }
}

/// The node's default data dir under `home`, as `looper-node` picks it: `home/.looper/NETWORK`,
/// or an older node's `home/.looper` while it holds a seed, `home/.looper/NETWORK` none, and its
/// `looper.toml` names no other network. The network: `network`, else the one the older data
/// dir's `looper.toml` names, else mainnet.
///
/// # Errors
/// A usage error for an unknown network; a failure when the older `looper.toml` is unreadable.
pub fn default_datadir(home: &Path, network: Option<&str>) -> CliResult<PathBuf> {
    let legacy = home.join(DATADIR_PARENT_NAME);
    let legacy_in_use = legacy.join(SEED_FILE_NAME).is_file();
    let legacy_network = if legacy_in_use { read_node_config(&legacy)?.0 } else { None };
    let network = network.map(str::to_string).or(legacy_network.clone());
    let network = network.as_deref().unwrap_or("mainnet");
    let name = network_dir_name(network).ok_or_else(|| {
        CliError::usage(
            "cannot find the node's data directory",
            format!("unknown network {network:?}"),
            "use mainnet, testnet, testnet4, signet or regtest",
        )
    })?;
    let path = legacy.join(name);
    let same_network = legacy_network.as_deref().is_none_or(|n| network_dir_name(n) == Some(name));
    if legacy_in_use && same_network && !path.join(SEED_FILE_NAME).exists() {
        return Ok(legacy);
    }
    Ok(path)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// `network` and `api.listen` of `DATADIR/looper.toml`, when the file exists.
fn read_node_config(datadir: &Path) -> CliResult<(Option<String>, Option<String>)> {
    let path = datadir.join(CONFIG_FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) => {
            return Err(CliError::failure(
                format!("cannot read {}", path.display()),
                e.to_string(),
                "pass --rpc-url URL to name the node's API address",
            ))
        }
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        CliError::failure(
            format!("cannot read {}", path.display()),
            e.message().to_string(),
            "fix the file or pass --rpc-url URL",
        )
    })?;
    let network = table.get("network").and_then(|v| v.as_str()).map(String::from);
    let listen =
        table.get("api").and_then(|a| a.get("listen")).and_then(|v| v.as_str()).map(String::from);
    Ok((network, listen))
}

/// Resolves the API base URL (no trailing slash) and the token file.
///
/// Order: `--rpc-url`, else `api.listen` of `DATADIR/looper.toml`, else `127.0.0.1` and the
/// default port of the network (`--network`, else `network` of `looper.toml`, else mainnet).
/// The token: `--token-file`, else `DATADIR/api.token`. `DATADIR` defaults to
/// [`default_datadir`] under `$HOME`.
///
/// # Errors
/// A usage error for a malformed URL or network, a failure when `looper.toml` is unreadable.
pub fn resolve(opts: &ConnectOptions) -> CliResult<(String, PathBuf)> {
    resolve_in(opts, home().as_deref())
}

/// [`resolve`] with `home` standing for `$HOME`.
fn resolve_in(opts: &ConnectOptions, home: Option<&Path>) -> CliResult<(String, PathBuf)> {
    let need_datadir = || match (&opts.datadir, home) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(home)) => default_datadir(home, opts.network.as_deref()),
        (None, None) => Err(CliError::usage(
            "cannot find the node",
            "no --datadir, no LOOPER_DATADIR and no $HOME",
            "pass --datadir DIR or --rpc-url URL --token-file FILE",
        )),
    };
    let url = match &opts.rpc_url {
        Some(url) => url.trim().trim_end_matches('/').to_string(),
        None => {
            let dir = need_datadir()?;
            let (file_network, listen) = read_node_config(&dir)?;
            match listen {
                Some(listen) if listen.trim().ends_with(":0") => {
                    return Err(CliError::usage(
                        "cannot find the node's API address",
                        format!(
                            "{} sets api.listen = {listen:?} (a port chosen at start)",
                            dir.join(CONFIG_FILE_NAME).display()
                        ),
                        "pass --rpc-url with the address looper-node printed",
                    ))
                }
                Some(listen) => format!("http://{}", listen.trim()),
                None => {
                    let network =
                        opts.network.clone().or(file_network).unwrap_or_else(|| "mainnet".into());
                    let port = default_api_port(&network).ok_or_else(|| {
                        CliError::usage(
                            "cannot find the node's API address",
                            format!("unknown network {network:?}"),
                            "use mainnet, testnet, testnet4, signet or regtest",
                        )
                    })?;
                    format!("http://127.0.0.1:{port}")
                }
            }
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len()
    {
        return Err(CliError::usage(
            "invalid --rpc-url",
            format!("{url:?} is not an http:// or https:// URL"),
            "for example --rpc-url http://127.0.0.1:28839",
        ));
    }
    let token_file = match &opts.token_file {
        Some(f) => f.clone(),
        None => need_datadir()?.join(API_TOKEN_FILE_NAME),
    };
    Ok((url, token_file))
}

/// Reads the token (trimmed) from `path`.
///
/// # Errors
/// A failure naming the file; the token itself is never shown.
pub fn read_token(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        CliError::failure(
            format!("cannot read the API token {}", path.display()),
            why,
            "looper-node writes it into its data dir at start: pass --datadir DIR of the running node, or --token-file FILE",
        )
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(CliError::failure(
            format!("cannot read the API token {}", path.display()),
            "the file is empty",
            "restart looper-node to write a new token, or pass --token-file FILE",
        ));
    }
    Ok(token)
}

/// When the token is missing from a default per-network data dir: the advice naming the networks
/// whose data dirs under `$HOME/.looper` hold a token.
fn other_networks(opts: &ConnectOptions, token_file: &Path) -> Option<String> {
    if opts.datadir.is_some() || opts.token_file.is_some() || token_file.exists() {
        return None;
    }
    let parent = home()?.join(DATADIR_PARENT_NAME);
    let found: Vec<&str> = ["bitcoin", "testnet", "testnet4", "signet", "regtest"]
        .into_iter()
        .filter(|n| parent.join(n).join(API_TOKEN_FILE_NAME).is_file())
        .collect();
    match found.as_slice() {
        [] => None,
        [one] => Some(format!(
            "the data dirs are per network: a node's token is in {}; pass --network {one} (or set LOOPER_NETWORK)",
            parent.join(one).display()
        )),
        many => Some(format!(
            "the data dirs are per network: nodes' tokens are in {} ({}); pass --network NETWORK (or set LOOPER_NETWORK)",
            parent.display(),
            many.join(", ")
        )),
    }
}

/// A client of one node's control API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:28839`) with `token`.
    ///
    /// # Errors
    /// A failure when the HTTP client cannot be built (TLS backend).
    pub fn new(base: String, token: String) -> CliResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::failure("cannot set up the HTTP client", e.to_string(), ""))?;
        Ok(Self { base, token, http })
    }

    /// Connects with the global options: resolves the address and reads the token.
    ///
    /// # Errors
    /// As [`resolve`] and [`read_token`].
    pub fn connect(opts: &ConnectOptions) -> CliResult<Self> {
        let (url, token_file) = resolve(opts)?;
        let token =
            read_token(&token_file).map_err(|e| match other_networks(opts, &token_file) {
                Some(hint) => e.with_todo(hint),
                None => e,
            })?;
        Self::new(url, token)
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`; `what` names the action for the error line ("list the swaps").
    ///
    /// # Errors
    /// See [`Client::send`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> CliResult<T> {
        self.send(Method::GET, path, None::<&()>, what, REQUEST_TIMEOUT).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// See [`Client::send`].
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        what: &str,
    ) -> CliResult<T> {
        self.send(Method::POST, path, Some(body), what, REQUEST_TIMEOUT).await
    }

    /// `DELETE path`.
    ///
    /// # Errors
    /// See [`Client::send`].
    pub async fn delete<T: DeserializeOwned>(&self, path: &str, what: &str) -> CliResult<T> {
        self.send(Method::DELETE, path, None::<&()>, what, REQUEST_TIMEOUT).await
    }

    /// `GET /v1/swaps/{key}/events?from=N&wait_secs=W` (long poll).
    ///
    /// # Errors
    /// See [`Client::send`].
    pub async fn swap_events(&self, key: &str, from: u64, wait_secs: u64) -> CliResult<SwapEvents> {
        // The query of `EventsQuery`.
        let path = format!("/v1/swaps/{}/events?from={from}&wait_secs={wait_secs}", encode(key));
        self.send(
            Method::GET,
            &path,
            None::<&()>,
            "follow the swap",
            Duration::from_secs(wait_secs + 30),
        )
        .await
    }

    /// Sends one request and maps every failure to a [`CliError`]:
    /// unreachable node, timeout, refused token (401), unknown endpoint, the node's JSON error
    /// (read as an [`ErrorBody`]: its stable code and message), or an answer that is not the
    /// expected type.
    ///
    /// # Errors
    /// One [`CliError`] (exit code 1) per failure.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        what: &str,
        timeout: Duration,
    ) -> CliResult<T> {
        let url = format!("{}{}", self.base, path);
        let mut req =
            self.http.request(method.clone(), &url).bearer_auth(&self.token).timeout(timeout);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e, what))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(&e, what))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                CliError::failure(
                    format!("cannot {what}"),
                    format!("the node's answer is not what this looper expects: {e}"),
                    "is --rpc-url the looper-node control API, of the version of this looper?",
                )
            });
        }
        let api: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let mut err = match (status.as_u16(), &api) {
            (401, _) => CliError::failure(
                "the node refused the API token (401)",
                api.as_ref()
                    .map_or_else(|| "missing or wrong token".into(), |e| e.message.clone()),
                "use the api.token of the node you reach: --datadir DIR of that node, or --token-file FILE",
            ),
            (404 | 405, None) => CliError::failure(
                format!("cannot {what}"),
                format!("the node at {} has no endpoint {method} {}", self.base, strip_query(path)),
                "upgrade looper-node to the version of this looper",
            ),
            (404, Some(e)) if e.message == "no such route" => CliError::failure(
                format!("cannot {what}"),
                format!("the node at {} has no endpoint {method} {}", self.base, strip_query(path)),
                "upgrade looper-node to the version of this looper",
            ),
            (_, Some(e)) => {
                CliError::failure(format!("cannot {what}"), e.message.clone(), hint_for(&e.code))
            }
            (s, None) => CliError::failure(
                format!("cannot {what}"),
                format!("the node answered HTTP {s}{}", snippet(&text)),
                "see the node's log",
            ),
        };
        err.api = api.map(Box::new);
        err.status = Some(status.as_u16());
        Err(err)
    }

    fn transport_error(&self, e: &reqwest::Error, what: &str) -> CliError {
        if e.is_connect() {
            return CliError::failure(
                format!("cannot reach looper-node at {}", self.base),
                root_cause(e),
                "is looper-node running? start it with `looper-node --datadir DIR`",
            );
        }
        if e.is_timeout() {
            return CliError::failure(
                format!("cannot {what}"),
                format!("looper-node at {} did not answer in time", self.base),
                "it may be busy or stuck: check its log and retry",
            );
        }
        CliError::failure(
            format!("cannot {what}"),
            format!("request to {} failed: {}", self.base, root_cause(e)),
            "check --rpc-url and that looper-node is running",
        )
    }
}

/// The advice for a node error code.
fn hint_for(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "check the id: `looper swaps` and `looper offer list` list them",
        ErrorCode::BadRequest => "check the values given",
        ErrorCode::UnknownOffer => "list the live offers with `looper offers --amount SAT`",
        ErrorCode::Conflict => "see the swap's state with `looper swap ID`",
        ErrorCode::InsufficientFunds => {
            "fund the wallet: `looper wallet address`, then `looper wallet balance`"
        }
        ErrorCode::ChainError => {
            "the node cannot reach its chain source (Esplora): check its log and retry"
        }
        ErrorCode::LightningError => {
            "check the Lightning node: `looper ln info`, `looper ln channels`"
        }
        ErrorCode::Unauthorized => "pass the right --token-file",
        ErrorCode::AmountAboveLimit => {
            "swap less, or raise safety.max_swap_amount_sat in the [safety] section of the node's looper.toml and restart it"
        }
        // A buyer check refused the offer: advice by check.
        ErrorCode::Refused(check) => match check.as_str() {
            "fee_too_high" => {
                "raise --max-total-fee, or pick a cheaper offer: `looper offers --amount SAT`"
            }
            "claim_margin_too_low" => {
                "the seller's offer keeps too few blocks for your claim: pick another offer"
            }
            "claim_unaffordable" => {
                "the claim would cost most of the amount at the node's fee cap: swap a larger amount"
            }
            _ => "pick another offer: `looper offers --amount SAT`",
        },
        _ => "see the node's log",
    }
}

/// The innermost error message, lower-case ("connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
            std::io::ErrorKind::TimedOut => return "connection timed out".into(),
            _ => {}
        }
    }
    let text = cur.to_string();
    // "Connection refused (os error 111)" -> "connection refused"
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
        None => "unknown error".into(),
    }
}

fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return String::new();
    }
    let short: String = t.chars().take(120).collect();
    format!(": {short}")
}

/// Percent-encodes a path segment (ids and hashes are hex; anything else is escaped).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_match_the_node() {
        assert_eq!(default_api_port("regtest"), Some(28839));
        assert_eq!(default_api_port("mainnet"), Some(8839));
        assert_eq!(default_api_port("bitcoin"), Some(8839));
        assert_eq!(default_api_port("signet"), Some(38839));
        assert_eq!(default_api_port("testnet4"), Some(48839));
        assert_eq!(default_api_port("moon"), None);
    }

    #[test]
    fn resolve_from_datadir() {
        let dir = std::env::temp_dir().join(format!("looper-cli-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = ConnectOptions { datadir: Some(dir.clone()), ..Default::default() };
        let (url, token) = resolve(&opts).unwrap();
        assert_eq!(url, "http://127.0.0.1:8839");
        assert_eq!(token, dir.join("api.token"));
        std::fs::write(dir.join(CONFIG_FILE_NAME), "network = \"regtest\"\n").unwrap();
        assert_eq!(resolve(&opts).unwrap().0, "http://127.0.0.1:28839");
        std::fs::write(dir.join(CONFIG_FILE_NAME), "[api]\nlisten = \"127.0.0.1:1234\"\n").unwrap();
        assert_eq!(resolve(&opts).unwrap().0, "http://127.0.0.1:1234");
        let opts = ConnectOptions { rpc_url: Some("ftp://x".into()), ..opts };
        assert_eq!(resolve(&opts).unwrap_err().exit, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_datadir_per_network() {
        let home = std::env::temp_dir().join(format!("looper-cli-home-{}", std::process::id()));
        let old = home.join(".looper");
        std::fs::create_dir_all(&old).unwrap();
        let dir = |n: Option<&str>| default_datadir(&home, n).unwrap();
        assert_eq!(dir(None), old.join("bitcoin"));
        assert_eq!(dir(Some("mainnet")), old.join("bitcoin"));
        assert_eq!(dir(Some("signet")), old.join("signet"));
        assert_eq!(dir(Some("testnet4")), old.join("testnet4"));
        assert_eq!(default_datadir(&home, Some("moon")).unwrap_err().exit, 2);
        // An older node's data dir with a seed stays in use, as the node does; its looper.toml
        // gives the network.
        std::fs::write(old.join("seed"), "words").unwrap();
        assert_eq!(dir(Some("signet")), old);
        std::fs::write(old.join(CONFIG_FILE_NAME), "network = \"signet\"\n").unwrap();
        assert_eq!(dir(None), old);
        assert_eq!(dir(Some("regtest")), old.join("regtest"));
        std::fs::create_dir_all(old.join("signet")).unwrap();
        std::fs::write(old.join("signet").join("seed"), "words").unwrap();
        assert_eq!(dir(Some("signet")), old.join("signet"));
        // resolve: the token and the port of that dir.
        let opts = ConnectOptions { network: Some("regtest".into()), ..Default::default() };
        let (url, token) = resolve_in(&opts, Some(&home)).unwrap();
        assert_eq!(url, "http://127.0.0.1:28839");
        assert_eq!(token, old.join("regtest").join(API_TOKEN_FILE_NAME));
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn encodes_segments() {
        assert_eq!(encode("ab12"), "ab12");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
