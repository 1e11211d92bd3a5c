//! The node seed and every key derived from it, the API token, and the secret-file helper.
//!
//! One BIP-39 mnemonic per node (24 words when created here; 12 to 24 accepted on `--restore`),
//! stored as text in `DATADIR/seed` with mode 0600. The BIP-39 seed (empty passphrase) gives the
//! BIP-32 master key, and every consumer gets its own hardened branch (`coin` is 0 on mainnet and 1
//! on every other network):
//!
//! | use | path | accessor |
//! |---|---|---|
//! | on-chain wallet (BIP-0086 taproot) | `m/86'/coin'/0'/{0,1}/*` | [`NodeKeys::wallet_descriptors`] |
//! | swap keys and preimages (`looper_protocol::keys`) | `m/10147'/coin'/0'` | [`NodeKeys::swap_master`] |
//! | the Nostr key of swap `i` as a taker (spec `04-nostr.md`, "Keys") | `m/10147'/coin'/0'/i'/1237'` | [`swap_nostr_secret_key`], [`NodeKeys::swap_nostr_secret_key`] |
//! | ldk-node entropy | `m/10147'/coin'/2'` | [`NodeKeys::ldk_seed_bytes`] |
//! | swap-record backups (their own Nostr key, see `crate::backup`) | `m/10147'/coin'/3'` | [`NodeKeys::backup_secret_key`] |
//! | Nostr identity (NIP-06) | `m/44'/1237'/0'/0/0` | [`NodeKeys::nostr_secret_key`] |
//!
//! `10147` is Looper's purpose number (an unassigned BIP-43 purpose). Restoring from the mnemonic
//! alone therefore gives back the wallet, the Lightning node's keys, the Nostr identity and every
//! swap key (with the persisted swap index, or by scanning).
//!
//! A swap's Nostr key as a taker sits in that swap's own branch below the swap master, at `1237'`
//! (NIP-06's coin type), far from the protocol's per-swap children (`0'` to `3'`,
//! `looper_protocol::keys`, which reserves it): the engine, which holds the swap master, derives it
//! from the swap's key index, so a node restored from its seed speaks to its counterparties with
//! the same keys again. It is never the identity's, nor any other swap's.
//!
//! Nothing here logs or formats a secret: `Debug` of every type holding one is redacted.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv};
use bitcoin::secp256k1::{Secp256k1, SecretKey, Signing};
use bitcoin::{Network, NetworkKind};
use rand::RngCore;

/// File name of the mnemonic in the data dir.
pub const SEED_FILE_NAME: &str = "seed";

/// File name of the control API token in the data dir.
pub const API_TOKEN_FILE_NAME: &str = "api.token";

/// BIP-43 purpose of Looper's own branches (swap keys, ldk-node entropy).
pub const LOOPER_PURPOSE: u32 = 10147;

/// Child of a swap's branch (`swap master/i'`) that holds the swap's Nostr key as a taker:
/// `1237'` (hardened; NIP-06's coin type). See [`swap_nostr_secret_key`].
pub const SWAP_NOSTR_KEY_CHILD: u32 = 1237;

/// The Nostr secret key of swap `index` as a taker: `swap_master/index'/1237'`, i.e.
/// `m/10147'/coin'/0'/index'/1237'` of the seed. A buyer seals every message of that swap with it
/// and reads the seller's answers gift-wrapped to it, so that a seller cannot link a buyer's swaps
/// to each other or to its identity (spec `04-nostr.md`, "Keys"). Deterministic: the swap record
/// keeps its key index, and a node restored from its seed derives the same key again.
/// Convert with `nostr_sdk::SecretKey::from_slice(&key.secret_bytes())`.
///
/// # Errors
/// [`SeedError::Derivation`] for an index of 2^31 or more (no hardened child), as
/// `looper_protocol::keys::SwapKeys::derive`.
pub fn swap_nostr_secret_key(swap_master: &Xpriv, index: u32) -> Result<SecretKey, SeedError> {
    let path = [NodeKeys::hardened(index)?, NodeKeys::hardened(SWAP_NOSTR_KEY_CHILD)?];
    swap_master.derive_priv(&Secp256k1::signing_only(), &path).map(|x| x.private_key).map_err(
        |source| SeedError::Derivation {
            path: format!("{index}'/{SWAP_NOSTR_KEY_CHILD}' below the swap master"),
            source,
        },
    )
}

/// Mode of every secret file: read and write for the owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Errors of the seed, key and secret-file functions. None of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A file could not be read, written, renamed or synced.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("cannot write", "cannot read", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--restore` was given but the data dir already holds a seed.
    #[error("refusing to restore: a seed already exists at {} (move it away first)", path.display())]
    SeedExists {
        /// The existing seed file.
        path: PathBuf,
    },
    /// The mnemonic (from the seed file or `--restore`) is not a valid BIP-39 English mnemonic.
    #[error("invalid BIP-39 mnemonic in {origin}")]
    InvalidMnemonic {
        /// Where it came from (a file path or "standard input").
        origin: String,
        /// What is wrong (word count, unknown word index, checksum; never the words).
        #[source]
        source: bip39::Error,
    },
    /// The API token file does not hold 64 hex characters.
    #[error("invalid API token in {} (expected 64 hex characters; delete it to create a new one)", path.display())]
    InvalidToken {
        /// The token file.
        path: PathBuf,
    },
    /// A BIP-32 derivation failed (practically impossible: an invalid child key).
    #[error("key derivation failed at {path}")]
    Derivation {
        /// The derivation path.
        path: String,
        /// The BIP-32 error.
        #[source]
        source: bitcoin::bip32::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SeedError + 'a {
    move |source| SeedError::Io { action, path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically with mode 0600, replacing any existing file.
///
/// The bytes go to a temporary file in the same directory, created with mode 0600 (never wider,
/// not chmod-ed afterwards), synced, then renamed over `path`; the directory is synced too. A
/// reader therefore sees either the old or the new complete file.
///
/// # Errors
/// [`SeedError::Io`] naming the file.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), SeedError> {
    let tmp = write_temp(path, bytes)?;
    let renamed = std::fs::rename(&tmp, path).map_err(io_err("cannot rename into", path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed?;
    sync_parent(path)
}

/// Like [`write_secret_file`] but refuses to replace an existing file: the temporary file is
/// hard-linked to `path`, which fails atomically when `path` exists.
///
/// Returns `false` (and writes nothing) when `path` already exists.
///
/// # Errors
/// [`SeedError::Io`] naming the file.
pub fn write_new_secret_file(path: &Path, bytes: &[u8]) -> Result<bool, SeedError> {
    let tmp = write_temp(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("cannot create", path)(e)),
    }
}

fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, SeedError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(io_err("cannot create directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secret".to_string());
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::rngs::OsRng.next_u64()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .open(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        file.sync_all().map_err(io_err("cannot sync", &tmp))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_parent(path: &Path) -> Result<(), SeedError> {
    let dir = parent_dir(path);
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot sync directory", dir))
}

fn read_secret_file(path: &Path) -> Result<Option<String>, SeedError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot open", path)(e)),
    };
    if let Ok(meta) = file.metadata() {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "secret file is readable by other users; chmod 600 it"
            );
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err("cannot read", path))?;
    Ok(Some(text))
}

/// A BIP-39 mnemonic. `Debug` never shows the words; [`Mnemonic::phrase`] is the only way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Mnemonic(bip39::Mnemonic);

impl Mnemonic {
    /// A new random 24-word mnemonic from 32 bytes of the OS random number generator.
    ///
    /// # Errors
    /// None in practice (32 bytes is a valid BIP-39 entropy length); typed for totality.
    pub fn generate() -> Result<Mnemonic, SeedError> {
        let mut entropy = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut entropy);
        bip39::Mnemonic::from_entropy(&entropy).map(Mnemonic).map_err(|source| {
            SeedError::InvalidMnemonic { origin: "the generator".to_string(), source }
        })
    }

    /// Parses an English mnemonic of 12 to 24 words (whitespace and case are normalised).
    /// `origin` names where it came from, for the error message.
    ///
    /// # Errors
    /// [`SeedError::InvalidMnemonic`]; the error never contains the words.
    pub fn parse(text: &str, origin: &str) -> Result<Mnemonic, SeedError> {
        let normalized =
            text.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ");
        bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized)
            .map(Mnemonic)
            .map_err(|source| SeedError::InvalidMnemonic { origin: origin.to_string(), source })
    }

    /// The words separated by single spaces. Handle with care: this is the node's master secret.
    pub fn phrase(&self) -> String {
        self.0.to_string()
    }

    /// Number of words.
    pub fn word_count(&self) -> usize {
        self.0.word_count()
    }

    /// The 64-byte BIP-39 seed (empty passphrase).
    fn to_seed(&self) -> [u8; 64] {
        self.0.to_seed("")
    }
}

impl fmt::Debug for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mnemonic({} words, redacted)", self.word_count())
    }
}

/// How [`load_or_create_seed`] obtained the seed, so the binary can tell the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOrigin {
    /// An existing seed file was read.
    Loaded,
    /// A new mnemonic was generated and written (tell the user to back up the file).
    Created,
    /// The `--restore` mnemonic was written.
    Restored,
}

/// Loads `DATADIR/seed`, or creates it on first start: from `restore` when given (refused if a
/// seed already exists), else a new random 24-word mnemonic. The file is created with mode 0600
/// and never overwritten.
///
/// # Errors
/// [`SeedError`] for I/O, an invalid mnemonic in the file, or a restore over an existing seed.
pub fn load_or_create_seed(
    datadir: &Path,
    restore: Option<Mnemonic>,
) -> Result<(Mnemonic, SeedOrigin), SeedError> {
    let path = datadir.join(SEED_FILE_NAME);
    match restore {
        Some(mnemonic) => {
            let text = format!("{}\n", mnemonic.phrase());
            if write_new_secret_file(&path, text.as_bytes())? {
                Ok((mnemonic, SeedOrigin::Restored))
            } else {
                Err(SeedError::SeedExists { path })
            }
        }
        None => {
            if let Some(text) = read_secret_file(&path)? {
                let origin = path.display().to_string();
                return Ok((Mnemonic::parse(&text, &origin)?, SeedOrigin::Loaded));
            }
            let mnemonic = Mnemonic::generate()?;
            let text = format!("{}\n", mnemonic.phrase());
            if write_new_secret_file(&path, text.as_bytes())? {
                Ok((mnemonic, SeedOrigin::Created))
            } else {
                // Another process created it between our read and our write: use theirs.
                let text = read_secret_file(&path)?.unwrap_or_default();
                let origin = path.display().to_string();
                Ok((Mnemonic::parse(&text, &origin)?, SeedOrigin::Loaded))
            }
        }
    }
}

/// Reads a `--restore` mnemonic from a file or standard input.
///
/// # Errors
/// [`SeedError::Io`] or [`SeedError::InvalidMnemonic`].
pub fn read_mnemonic(source: &crate::config::RestoreSource) -> Result<Mnemonic, SeedError> {
    match source {
        crate::config::RestoreSource::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(io_err("cannot read", Path::new("<stdin>")))?;
            Mnemonic::parse(&text, "standard input")
        }
        crate::config::RestoreSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(io_err("cannot read", path))?;
            Mnemonic::parse(&text, &path.display().to_string())
        }
    }
}

/// BIP-0086 output descriptors of the on-chain wallet, with private keys. `Debug` is redacted.
#[derive(Clone)]
pub struct WalletDescriptors {
    /// `tr([fp/86'/coin'/0']xprv/0/*)`: receive addresses.
    pub external: String,
    /// `tr([fp/86'/coin'/0']xprv/1/*)`: change addresses.
    pub internal: String,
}

impl fmt::Debug for WalletDescriptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WalletDescriptors(redacted)")
    }
}

/// Every key of the node, derived from its mnemonic. `Debug` is redacted.
#[derive(Clone)]
pub struct NodeKeys {
    master: Xpriv,
    network: Network,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("network", &self.network)
            .field("master", &"redacted")
            .finish()
    }
}

impl NodeKeys {
    /// Derives the master key from the mnemonic (BIP-39 seed with an empty passphrase).
    ///
    /// # Errors
    /// [`SeedError::Derivation`] (practically impossible).
    pub fn from_mnemonic(mnemonic: &Mnemonic, network: Network) -> Result<NodeKeys, SeedError> {
        let seed = mnemonic.to_seed();
        let master = Xpriv::new_master(NetworkKind::from(network), &seed)
            .map_err(|source| SeedError::Derivation { path: "m".to_string(), source })?;
        Ok(NodeKeys { master, network })
    }

    /// The network the keys are for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// BIP-44 coin type: 0 on mainnet, 1 on every test network.
    pub fn coin_type(&self) -> u32 {
        match self.network {
            Network::Bitcoin => 0,
            _ => 1,
        }
    }

    /// The BIP-32 master key (root of every branch).
    pub fn master(&self) -> &Xpriv {
        &self.master
    }

    /// Fingerprint of the master key (safe to show).
    pub fn fingerprint(&self) -> bitcoin::bip32::Fingerprint {
        self.master.fingerprint(&Secp256k1::signing_only())
    }

    fn derive<C: Signing>(
        &self,
        secp: &Secp256k1<C>,
        path: &[ChildNumber],
    ) -> Result<Xpriv, SeedError> {
        self.master.derive_priv(secp, &path).map_err(|source| SeedError::Derivation {
            path: DerivationPath::from(path.to_vec()).to_string(),
            source,
        })
    }

    fn hardened(index: u32) -> Result<ChildNumber, SeedError> {
        ChildNumber::from_hardened_idx(index)
            .map_err(|source| SeedError::Derivation { path: format!("{index}'"), source })
    }

    fn normal(index: u32) -> Result<ChildNumber, SeedError> {
        ChildNumber::from_normal_idx(index)
            .map_err(|source| SeedError::Derivation { path: index.to_string(), source })
    }

    /// The swap master key `m/10147'/coin'/0'`, handed to `looper_protocol::keys`, which derives
    /// per-swap keys and preimages from it by swap index.
    ///
    /// # Errors
    /// [`SeedError::Derivation`] (practically impossible).
    pub fn swap_master(&self) -> Result<Xpriv, SeedError> {
        let secp = Secp256k1::signing_only();
        self.derive(
            &secp,
            &[
                Self::hardened(LOOPER_PURPOSE)?,
                Self::hardened(self.coin_type())?,
                Self::hardened(0)?,
            ],
        )
    }

    /// The Nostr secret key of swap `index` as a taker ([`swap_nostr_secret_key`] of
    /// [`NodeKeys::swap_master`]).
    ///
    /// # Errors
    /// [`SeedError::Derivation`] for an index of 2^31 or more.
    pub fn swap_nostr_secret_key(&self, index: u32) -> Result<SecretKey, SeedError> {
        swap_nostr_secret_key(&self.swap_master()?, index)
    }

    /// 64 bytes of entropy for ldk-node (`Builder::set_entropy_seed_bytes`): the secret key and
    /// the chain code of `m/10147'/coin'/2'`.
    ///
    /// # Errors
    /// [`SeedError::Derivation`] (practically impossible).
    pub fn ldk_seed_bytes(&self) -> Result<[u8; 64], SeedError> {
        let secp = Secp256k1::signing_only();
        let xpriv = self.derive(
            &secp,
            &[
                Self::hardened(LOOPER_PURPOSE)?,
                Self::hardened(self.coin_type())?,
                Self::hardened(2)?,
            ],
        )?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&xpriv.private_key.secret_bytes());
        out[32..].copy_from_slice(xpriv.chain_code.as_bytes());
        Ok(out)
    }

    /// The key of the node's encrypted swap-record backups (`crate::backup`): the secret key of
    /// `m/10147'/coin'/3'`. It signs the backup events and encrypts them to itself (NIP-44); it is
    /// not the node's public Nostr identity, so the backups are not linked to the node's offers
    /// and messages. Per network, like the swap keys the backups describe.
    ///
    /// # Errors
    /// [`SeedError::Derivation`] (practically impossible).
    pub fn backup_secret_key(&self) -> Result<SecretKey, SeedError> {
        let secp = Secp256k1::signing_only();
        let xpriv = self.derive(
            &secp,
            &[
                Self::hardened(LOOPER_PURPOSE)?,
                Self::hardened(self.coin_type())?,
                Self::hardened(3)?,
            ],
        )?;
        Ok(xpriv.private_key)
    }

    /// The Nostr identity secret key, by NIP-06 (`m/44'/1237'/0'/0/0`, the same on every
    /// network). Convert with `nostr_sdk::SecretKey::from_slice(&key.secret_bytes())`.
    ///
    /// # Errors
    /// [`SeedError::Derivation`] (practically impossible).
    pub fn nostr_secret_key(&self) -> Result<SecretKey, SeedError> {
        let secp = Secp256k1::signing_only();
        let xpriv = self.derive(
            &secp,
            &[
                Self::hardened(44)?,
                Self::hardened(1237)?,
                Self::hardened(0)?,
                Self::normal(0)?,
                Self::normal(0)?,
            ],
        )?;
        Ok(xpriv.private_key)
    }

    /// BIP-0086 descriptors of the on-chain wallet: the account key `m/86'/coin'/0'` with its
    /// origin, receive branch `/0/*` and change branch `/1/*`.
    ///
    /// # Errors
    /// [`SeedError::Derivation`] (practically impossible).
    pub fn wallet_descriptors(&self) -> Result<WalletDescriptors, SeedError> {
        let secp = Secp256k1::signing_only();
        let coin = self.coin_type();
        let account =
            self.derive(&secp, &[Self::hardened(86)?, Self::hardened(coin)?, Self::hardened(0)?])?;
        let fp = self.master.fingerprint(&secp);
        let origin = format!("[{fp}/86'/{coin}'/0']{account}");
        Ok(WalletDescriptors {
            external: format!("tr({origin}/0/*)"),
            internal: format!("tr({origin}/1/*)"),
        })
    }
}

/// The control API token: 32 random bytes, hex in `DATADIR/api.token` (mode 0600), like
/// bitcoind's cookie. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(redacted)")
    }
}

impl ApiToken {
    /// Reads `DATADIR/api.token`, or creates it with a new random token.
    ///
    /// # Errors
    /// [`SeedError::Io`] or [`SeedError::InvalidToken`] for a file that is not 64 hex characters.
    pub fn load_or_create(datadir: &Path) -> Result<ApiToken, SeedError> {
        let path = datadir.join(API_TOKEN_FILE_NAME);
        if let Some(text) = read_secret_file(&path)? {
            return Self::parse(text.trim()).ok_or(SeedError::InvalidToken { path });
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        if write_new_secret_file(&path, token.as_bytes())? {
            Ok(ApiToken(token))
        } else {
            let text = read_secret_file(&path)?.unwrap_or_default();
            Self::parse(text.trim()).ok_or(SeedError::InvalidToken { path })
        }
    }

    /// Replaces the token with a new random one (atomically) and returns it.
    ///
    /// # Errors
    /// [`SeedError::Io`].
    pub fn rotate(datadir: &Path) -> Result<ApiToken, SeedError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        write_secret_file(&datadir.join(API_TOKEN_FILE_NAME), token.as_bytes())?;
        Ok(ApiToken(token))
    }

    fn parse(text: &str) -> Option<ApiToken> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| ApiToken(text.to_ascii_lowercase()))
    }

    /// The token text, for the `Authorization: Bearer` header. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares a presented token in constant time (independent of where the first difference
    /// is).
    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::str::FromStr;

    const LDK_SEED_REGTEST: &str = "c5bdf3237229d9c691f431c537b90eaebb416ae56c1acb636707a04a9c227b157d654c29a12cd04e4955c704f57e1fb2c66e70f90ed61d5c9ed713a692cae23e";
    const SWAP_MASTER_REGTEST: &str = "tprv8ggMxL8bAtEVsXF5vbLJzv4NtTU75A8QULFZfhHE9BgLmeupwU6c46cHmkFmAfdtv2YKsatAXEjAgea57otFrrnfbzj1eFjY5txSzLrwhPA";
    const SWAP_NOSTR_KEY_0_REGTEST: &str =
        "cbe68817dffb02d3531c94a448373fe592dc88362afa27b8aec648f7624ce7a2";
    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn nip06_vector() {
        // NIP-06 test vector 1.
        let m = Mnemonic::parse(
            "leader monkey parrot ring guide accident before fence cannon height naive bean",
            "test",
        )
        .unwrap();
        let keys = NodeKeys::from_mnemonic(&m, Network::Bitcoin).unwrap();
        assert_eq!(
            hex::encode(keys.nostr_secret_key().unwrap().secret_bytes()),
            "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a"
        );
        // The Nostr key does not depend on the network.
        let keys = NodeKeys::from_mnemonic(&m, Network::Regtest).unwrap();
        assert_eq!(
            hex::encode(keys.nostr_secret_key().unwrap().secret_bytes()),
            "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a"
        );
    }

    #[test]
    fn bip86_vector() {
        // BIP-0086 test vector: first receive address of m/86'/0'/0'/0/0.
        use bitcoin::key::Secp256k1;
        let m = Mnemonic::parse(ABANDON, "test").unwrap();
        let keys = NodeKeys::from_mnemonic(&m, Network::Bitcoin).unwrap();
        let d = keys.wallet_descriptors().unwrap();
        assert!(d.external.starts_with("tr([73c5da0a/86'/0'/0']xprv"), "fingerprint");
        assert!(d.external.ends_with("/0/*)"));
        assert!(d.internal.ends_with("/1/*)"));
        // Derive the address by hand from the account key in the descriptor.
        let secp = Secp256k1::new();
        let account = keys
            .master()
            .derive_priv(&secp, &DerivationPath::from_str("m/86'/0'/0'/0/0").unwrap())
            .unwrap();
        let (xonly, _) = account.private_key.x_only_public_key(&secp);
        let addr = bitcoin::Address::p2tr(&secp, xonly, None, Network::Bitcoin);
        assert_eq!(
            addr.to_string(),
            "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
        );
        assert!(format!("{d:?}").contains("redacted"));
        assert!(!format!("{d:?}").contains("xprv"));
    }

    #[test]
    fn fixed_keys() {
        let m = Mnemonic::parse(ABANDON, "test").unwrap();
        let main = NodeKeys::from_mnemonic(&m, Network::Bitcoin).unwrap();
        let reg = NodeKeys::from_mnemonic(&m, Network::Regtest).unwrap();
        assert_eq!(main.coin_type(), 0);
        assert_eq!(reg.coin_type(), 1);
        assert_eq!(main.fingerprint().to_string(), "73c5da0a");

        let ldk_main = main.ldk_seed_bytes().unwrap();
        let ldk_reg = reg.ldk_seed_bytes().unwrap();
        assert_ne!(ldk_main, ldk_reg);
        assert_eq!(hex::encode(ldk_reg), LDK_SEED_REGTEST);
        let swap_reg = reg.swap_master().unwrap();
        assert_eq!(swap_reg.to_string(), SWAP_MASTER_REGTEST);
        assert_ne!(main.swap_master().unwrap().private_key, swap_reg.private_key);
        // Branches are independent of each other.
        assert_ne!(&ldk_reg[..32], &swap_reg.private_key.secret_bytes()[..]);
        let backup_reg = reg.backup_secret_key().unwrap();
        assert_ne!(backup_reg, swap_reg.private_key);
        assert_ne!(backup_reg, reg.nostr_secret_key().unwrap());
        assert_ne!(&ldk_reg[..32], &backup_reg.secret_bytes()[..]);
        assert_ne!(backup_reg, main.backup_secret_key().unwrap());
        // Same mnemonic, same keys.
        let again =
            NodeKeys::from_mnemonic(&Mnemonic::parse(ABANDON, "x").unwrap(), Network::Regtest)
                .unwrap();
        assert_eq!(again.ldk_seed_bytes().unwrap(), ldk_reg);
        assert_eq!(again.swap_master().unwrap(), swap_reg);
        assert_eq!(
            again.wallet_descriptors().unwrap().external,
            reg.wallet_descriptors().unwrap().external
        );
        assert!(reg
            .wallet_descriptors()
            .unwrap()
            .external
            .starts_with("tr([73c5da0a/86'/1'/0']tprv"));
        let dbg = format!("{reg:?} {m:?}");
        assert!(!dbg.contains("prv") && !dbg.contains("abandon"), "{dbg}");
    }

    #[test]
    fn swap_nostr_keys() {
        let m = Mnemonic::parse(ABANDON, "test").unwrap();
        let reg = NodeKeys::from_mnemonic(&m, Network::Regtest).unwrap();
        let master = reg.swap_master().unwrap();
        // Fixed vector: m/10147'/1'/0'/0'/1237' of the "abandon ... about" mnemonic.
        let first = swap_nostr_secret_key(&master, 0).unwrap();
        assert_eq!(hex::encode(first.secret_bytes()), SWAP_NOSTR_KEY_0_REGTEST);
        let by_path = reg
            .master()
            .derive_priv(
                &Secp256k1::signing_only(),
                &DerivationPath::from_str("m/10147'/1'/0'/0'/1237'").unwrap(),
            )
            .unwrap();
        assert_eq!(first, by_path.private_key);
        assert_eq!(reg.swap_nostr_secret_key(0).unwrap(), first);
        // Deterministic: the same seed (a restored node) gives the same key for the same index.
        let again =
            NodeKeys::from_mnemonic(&Mnemonic::parse(ABANDON, "x").unwrap(), Network::Regtest)
                .unwrap();
        assert_eq!(again.swap_nostr_secret_key(0).unwrap(), first);
        // One per index, none of them the identity, the backup key or a key of the swap itself.
        let identity = reg.nostr_secret_key().unwrap();
        let backup = reg.backup_secret_key().unwrap();
        let mut seen = std::collections::HashSet::new();
        for index in [0, 1, 2, 7, 100, (1 << 31) - 1] {
            let k = swap_nostr_secret_key(&master, index).unwrap();
            assert!(seen.insert(k.secret_bytes()), "index {index} repeats a key");
            assert_ne!(k, identity);
            assert_ne!(k, backup);
            let swap = looper_protocol::keys::SwapKeys::derive(&master, index).unwrap();
            for other in [swap.musig(), swap.claim(), swap.refund()] {
                assert_ne!(k, other.secret_key(), "index {index}");
            }
        }
        // Per network, like the swap keys.
        let main = NodeKeys::from_mnemonic(&m, Network::Bitcoin).unwrap();
        assert_ne!(main.swap_nostr_secret_key(0).unwrap(), first);
        // No hardened child for 2^31.
        assert!(matches!(
            swap_nostr_secret_key(&master, 1 << 31),
            Err(SeedError::Derivation { .. })
        ));
    }

    #[test]
    fn mnemonic_parse_normalises_and_rejects() {
        let upper = ABANDON.to_uppercase().replace(' ', "  \n");
        assert_eq!(Mnemonic::parse(&upper, "t").unwrap(), Mnemonic::parse(ABANDON, "t").unwrap());
        let e = Mnemonic::parse(&ABANDON.replace("about", "abandon"), "the file")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid BIP-39 mnemonic in the file");
        let e = Mnemonic::parse("correct horse battery staple", "x").unwrap_err();
        assert!(matches!(e, SeedError::InvalidMnemonic { .. }));
    }

    #[test]
    fn seed_created_loaded_restored() {
        let dir = tempfile::tempdir().unwrap();
        let (m1, origin) = load_or_create_seed(dir.path(), None).unwrap();
        assert_eq!(origin, SeedOrigin::Created);
        assert_eq!(m1.word_count(), 24);
        let path = dir.path().join(SEED_FILE_NAME);
        assert_eq!(mode(&path), 0o600);
        let (m2, origin) = load_or_create_seed(dir.path(), None).unwrap();
        assert_eq!(origin, SeedOrigin::Loaded);
        assert_eq!(m1, m2);

        // Restore refuses to overwrite.
        let restore = Mnemonic::parse(ABANDON, "t").unwrap();
        let e = load_or_create_seed(dir.path(), Some(restore.clone())).unwrap_err();
        assert!(matches!(e, SeedError::SeedExists { .. }), "{e}");
        assert_eq!(load_or_create_seed(dir.path(), None).unwrap().0, m1);

        // Restore into an empty dir.
        let dir2 = tempfile::tempdir().unwrap();
        let sub = dir2.path().join("nested");
        let (m3, origin) = load_or_create_seed(&sub, Some(restore.clone())).unwrap();
        assert_eq!(origin, SeedOrigin::Restored);
        assert_eq!(m3, restore);
        assert_eq!(mode(&sub.join(SEED_FILE_NAME)), 0o600);
        assert_eq!(load_or_create_seed(&sub, None).unwrap(), (restore, SeedOrigin::Loaded));
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 1);
    }

    #[test]
    fn read_mnemonic_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("words");
        std::fs::write(&p, format!("{ABANDON}\n")).unwrap();
        let m = read_mnemonic(&crate::config::RestoreSource::File(p)).unwrap();
        assert_eq!(m.word_count(), 12);
    }

    #[test]
    fn secret_file_modes_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        write_secret_file(&p, b"one").unwrap();
        assert_eq!(mode(&p), 0o600);
        write_secret_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        assert!(!write_new_secret_file(&p, b"three").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn api_token() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = ApiToken::load_or_create(dir.path()).unwrap();
        assert_eq!(t1.expose().len(), 64);
        assert_eq!(mode(&dir.path().join(API_TOKEN_FILE_NAME)), 0o600);
        let t2 = ApiToken::load_or_create(dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert!(t1.matches(t2.expose()));
        assert!(!t1.matches(&t2.expose()[1..]));
        assert!(!t1.matches(&"0".repeat(64)));
        assert_eq!(format!("{t1:?}"), "ApiToken(redacted)");
        let t3 = ApiToken::rotate(dir.path()).unwrap();
        assert_ne!(t1, t3);
        assert_eq!(ApiToken::load_or_create(dir.path()).unwrap(), t3);
        std::fs::write(dir.path().join(API_TOKEN_FILE_NAME), "nope").unwrap();
        assert!(matches!(
            ApiToken::load_or_create(dir.path()),
            Err(SeedError::InvalidToken { .. })
        ));
    }
}
