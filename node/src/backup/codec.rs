//! The backup event format (spec `04-nostr.md`, "Backups"): the payloads, their JSON, and the
//! NIP-44 encrypted, addressable event that carries one. Pure: no I/O.

use bitcoin::hashes::{sha256, Hash, HashEngine, Hmac, HmacEngine};
use nostr_sdk::nips::nip44;
use nostr_sdk::{Event, EventBuilder, Keys, Kind, PublicKey, SecretKey, Tag, Timestamp};
use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::store::{PaymentHash, SwapId, SwapRecord, SwapRole, SwapStatus};

/// Kind of a backup event: NIP-78 application data, an addressable kind (a newer version of the
/// same `d` tag replaces the older one on the relays).
pub const BACKUP_KIND: u16 = 30078;

/// Version of the backup payload format written by this build.
pub const BACKUP_FORMAT_VERSION: u32 = 1;

/// Largest plaintext NIP-44 v2 encrypts: the largest payload a backup event holds.
pub const MAX_BACKUP_PLAINTEXT_BYTES: usize = 65_535;

/// Largest `content` of a backup event: the base64 NIP-44 v2 payload of the largest plaintext.
pub const MAX_BACKUP_CONTENT_BYTES: usize = 87_472;

/// Largest backup event (NIP-01 JSON) read from a relay; larger ones are dropped unparsed.
pub const MAX_BACKUP_EVENT_BYTES: usize = 90_000;

/// Longest offer id accepted in an offer backup.
const MAX_OFFER_ID_CHARS: usize = 256;

/// Domain separation of the key that makes `d` tags from labels.
const TAG_KEY_CONTEXT: &[u8] = b"looper/backup/d-tag/v1";

/// The node's backup key pair (`NodeKeys::backup_secret_key`) and the key that turns labels into
/// `d` tags. `Debug` shows the public key only.
#[derive(Clone)]
pub struct BackupKeys {
    keys: Keys,
    tag_key: [u8; 32],
}

impl std::fmt::Debug for BackupKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKeys").field("public_key", &self.keys.public_key()).finish()
    }
}

impl BackupKeys {
    /// Keys from the 32-byte backup secret.
    ///
    /// # Errors
    /// [`BackupError::InvalidKey`] when the bytes are not a valid secp256k1 secret key.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Result<BackupKeys, BackupError> {
        let sk = SecretKey::from_slice(secret).map_err(|_| BackupError::InvalidKey)?;
        let mut engine = HmacEngine::<sha256::Hash>::new(secret);
        engine.input(TAG_KEY_CONTEXT);
        let tag_key = Hmac::<sha256::Hash>::from_engine(engine).to_byte_array();
        Ok(BackupKeys { keys: Keys::new(sk), tag_key })
    }

    /// The node's backup keys, derived from its seed.
    ///
    /// # Errors
    /// [`BackupError::InvalidKey`] when the derivation fails (practically impossible).
    pub fn from_node_keys(keys: &crate::seed::NodeKeys) -> Result<BackupKeys, BackupError> {
        let sk = keys.backup_secret_key().map_err(|_| BackupError::InvalidKey)?;
        Self::from_secret_bytes(&sk.secret_bytes())
    }

    /// The backup public key: the author of every backup event (not the node's Nostr identity).
    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// The `d` tag of a label: hex of HMAC-SHA256 under a key derived from the backup secret, so
    /// the tag does not reveal the swap id or the offer id.
    pub fn d_tag(&self, label: &str) -> String {
        let mut engine = HmacEngine::<sha256::Hash>::new(&self.tag_key);
        engine.input(label.as_bytes());
        hex::encode(Hmac::<sha256::Hash>::from_engine(engine).to_byte_array())
    }
}

/// What one backup event holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A swap record, as the store keeps it, and the reserved index mark when it was written.
    Swap {
        /// The record (its `data` is the protocol's versioned JSON).
        record: SwapRecord,
        /// Every swap index below it may have been used (see [`Payload::Index`]).
        reserved_index: u32,
    },
    /// The key-index high-water mark: every swap index below `reserved_index` may have been used.
    /// Published before any index of a new block is handed out.
    Index {
        /// The mark.
        reserved_index: u32,
    },
    /// One of our offers, or its withdrawal (`offer: None`).
    Offer {
        /// The offer id.
        offer_id: String,
        /// The offer JSON as stored; `None` once withdrawn.
        offer: Option<serde_json::Value>,
    },
}

impl Payload {
    /// The label the `d` tag is made from: `swap/<hex swap id>`, `index` or `offer/<offer id>`.
    pub fn label(&self) -> String {
        match self {
            Payload::Swap { record, .. } => format!("swap/{}", record.id),
            Payload::Index { .. } => "index".to_string(),
            Payload::Offer { offer_id, .. } => format!("offer/{offer_id}"),
        }
    }

    /// A short description for logs (no secret: swap ids and offer ids are logged anyway).
    pub fn describe(&self) -> String {
        match self {
            Payload::Swap { record, .. } => format!("swap {}", record.id),
            Payload::Index { reserved_index } => format!("index mark {reserved_index}"),
            Payload::Offer { offer_id, .. } => format!("offer {offer_id}"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    #[serde(flatten)]
    body: Body,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Body {
    Swap { reserved_index: u32, swap: SwapWire },
    Index { reserved_index: u32 },
    Offer { offer_id: String, offer: Option<serde_json::Value> },
}

#[derive(Serialize, Deserialize)]
struct SwapWire {
    id: SwapId,
    role: SwapRole,
    state: String,
    status: SwapStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_hash: Option<PaymentHash>,
    created_at: u64,
    updated_at: u64,
    /// The protocol's record JSON, as a string (the exact bytes the store keeps).
    data: String,
}

/// Why a backup event was not accepted. None carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a backup kind.
    #[error("not a backup event (kind {0})")]
    WrongKind(u16),
    /// Another author than our backup key.
    #[error("backup event by another author")]
    WrongAuthor,
    /// The signature does not verify.
    #[error("backup event signature does not verify")]
    BadSignature,
    /// The content or the plaintext is over its limit.
    #[error("backup event too large ({0} bytes)")]
    TooLarge(usize),
    /// No `d` tag.
    #[error("backup event without a d tag")]
    NoIdentifier,
    /// NIP-44 decryption failed (not ours, or corrupted).
    #[error("backup event does not decrypt")]
    Decrypt,
    /// The plaintext is not a backup payload.
    #[error("backup payload does not decode: {0}")]
    Json(String),
    /// A payload version this build does not read.
    #[error("backup payload version {0} is not supported")]
    UnsupportedVersion(u32),
    /// The payload is not the one the `d` tag names.
    #[error("backup payload does not match its d tag")]
    TagMismatch,
    /// A field is out of range.
    #[error("backup payload field {0} is invalid")]
    Invalid(&'static str),
}

/// The payload's JSON (what gets encrypted).
///
/// # Errors
/// [`BackupError::Encode`] for a record whose data is not UTF-8, [`BackupError::TooLarge`] over
/// [`MAX_BACKUP_PLAINTEXT_BYTES`].
pub fn encode_payload(payload: &Payload) -> Result<Vec<u8>, BackupError> {
    let body = match payload {
        Payload::Swap { record, reserved_index } => {
            let data = String::from_utf8(record.data.clone()).map_err(|_| {
                BackupError::Encode(format!("swap {}: record data is not UTF-8", record.id))
            })?;
            Body::Swap {
                reserved_index: *reserved_index,
                swap: SwapWire {
                    id: record.id,
                    role: record.role,
                    state: record.state.clone(),
                    status: record.status,
                    payment_hash: record.payment_hash,
                    created_at: record.created_at,
                    updated_at: record.updated_at,
                    data,
                },
            }
        }
        Payload::Index { reserved_index } => Body::Index { reserved_index: *reserved_index },
        Payload::Offer { offer_id, offer } => {
            Body::Offer { offer_id: offer_id.clone(), offer: offer.clone() }
        }
    };
    let json = serde_json::to_vec(&Wire { v: BACKUP_FORMAT_VERSION, body })
        .map_err(|e| BackupError::Encode(e.to_string()))?;
    if json.len() > MAX_BACKUP_PLAINTEXT_BYTES {
        return Err(BackupError::TooLarge { size: json.len(), max: MAX_BACKUP_PLAINTEXT_BYTES });
    }
    Ok(json)
}

/// Parses a payload's JSON (decrypted content).
///
/// # Errors
/// [`DecodeError`].
pub fn decode_payload(bytes: &[u8]) -> Result<Payload, DecodeError> {
    if bytes.len() > MAX_BACKUP_PLAINTEXT_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    #[derive(Deserialize)]
    struct Header {
        v: u32,
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if header.v != BACKUP_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(header.v));
    }
    let wire: Wire = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(match wire.body {
        Body::Swap { reserved_index, swap } => Payload::Swap {
            reserved_index,
            record: SwapRecord {
                id: swap.id,
                role: swap.role,
                state: swap.state,
                status: swap.status,
                payment_hash: swap.payment_hash,
                created_at: swap.created_at,
                updated_at: swap.updated_at,
                data: swap.data.into_bytes(),
            },
        },
        Body::Index { reserved_index } => Payload::Index { reserved_index },
        Body::Offer { offer_id, offer } => {
            if offer_id.is_empty() || offer_id.chars().count() > MAX_OFFER_ID_CHARS {
                return Err(DecodeError::Invalid("offer_id"));
            }
            Payload::Offer { offer_id, offer }
        }
    })
}

/// The signed backup event of `payload`: kind [`BACKUP_KIND`], author the backup key, tag
/// `["d", d_tag(label)]`, `content` the NIP-44 v2 encryption of the payload's JSON from the
/// backup key to itself, dated `created_at`.
///
/// # Errors
/// As [`encode_payload`]; [`BackupError::Encode`] when encryption or signing fails.
pub fn encode_event(
    keys: &BackupKeys,
    payload: &Payload,
    created_at: Timestamp,
) -> Result<Event, BackupError> {
    let json = encode_payload(payload)?;
    let content =
        nip44::encrypt(keys.keys.secret_key(), &keys.public_key(), &json, nip44::Version::V2)
            .map_err(|e| BackupError::Encode(format!("encryption: {e}")))?;
    EventBuilder::new(Kind::Custom(BACKUP_KIND), content)
        .tag(Tag::identifier(keys.d_tag(&payload.label())))
        .custom_created_at(created_at)
        .sign_with_keys(&keys.keys)
        .map_err(|e| BackupError::Encode(format!("signing: {e}")))
}

/// Opens a backup event fetched from a relay (hostile input): kind, author and signature are
/// checked, sizes bounded before decrypting and parsing, and the `d` tag must match the payload.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_event(keys: &BackupKeys, event: &Event) -> Result<Payload, DecodeError> {
    if event.kind != Kind::Custom(BACKUP_KIND) {
        return Err(DecodeError::WrongKind(event.kind.as_u16()));
    }
    if event.pubkey != keys.public_key() {
        return Err(DecodeError::WrongAuthor);
    }
    if event.content.len() > MAX_BACKUP_CONTENT_BYTES {
        return Err(DecodeError::TooLarge(event.content.len()));
    }
    event.verify().map_err(|_| DecodeError::BadSignature)?;
    let d = event.tags.identifier().ok_or(DecodeError::NoIdentifier)?.to_string();
    let plain = nip44::decrypt_to_bytes(keys.keys.secret_key(), &keys.public_key(), &event.content)
        .map_err(|_| DecodeError::Decrypt)?;
    let payload = decode_payload(&plain)?;
    if keys.d_tag(&payload.label()) != d {
        return Err(DecodeError::TagMismatch);
    }
    Ok(payload)
}
