//! NIP-59 gift wraps of NIP-44 v2 encrypted swap-message rumors, and NIP-13 proof of work.

use nostr_sdk::prelude::*;

use super::wire::SWAP_MESSAGE_KIND;

/// Error building or opening a gift wrap.
#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    /// Building, signing or encrypting an event failed.
    #[error("building gift wrap: {0}")]
    Build(String),
    /// The gift wrap could not be decrypted or its seal is invalid.
    #[error("opening gift wrap: {0}")]
    Open(String),
    /// The rumor is not a Looper swap message.
    #[error("rumor kind {0} is not the swap-message kind")]
    WrongKind(u16),
    /// The rumor is addressed (`p` tag) to somebody else.
    #[error("rumor is addressed to another key")]
    WrongRecipient,
    /// The seal's author differs from the rumor's author.
    #[error("seal and rumor authors differ")]
    SenderMismatch,
    /// The event is not a gift wrap.
    #[error("event kind {0} is not a gift wrap")]
    NotGiftWrap(u16),
    /// The gift wrap holds an event that is not a seal (kind 13).
    #[error("sealed event kind {0} is not a seal")]
    NotSeal(u16),
}

/// The content of an opened swap-message gift wrap.
#[derive(Debug, Clone)]
pub struct OpenedMessage {
    /// Author of the seal and of the rumor: the peer's node key.
    pub sender: PublicKey,
    /// The rumor's content: the encoded envelope.
    pub content: String,
    /// The rumor's id (computed from its fields).
    pub rumor_id: Option<EventId>,
    /// The rumor's `created_at` (set by the sender, not randomised).
    pub created_at: Timestamp,
}

/// Builds the seal (kind 13, signed by `keys`) of a swap-message rumor for `receiver`.
///
/// The rumor has kind [`SWAP_MESSAGE_KIND`], `content` and a `p` tag of the receiver.
pub async fn build_seal(
    keys: &Keys,
    receiver: &PublicKey,
    content: String,
) -> Result<Event, WrapError> {
    let rumor: UnsignedEvent = EventBuilder::new(Kind::Custom(SWAP_MESSAGE_KIND), content)
        .tag(Tag::public_key(*receiver))
        .build(keys.public_key());
    EventBuilder::seal(keys, receiver, rumor)
        .await
        .map_err(|e| WrapError::Build(e.to_string()))?
        .sign(keys)
        .await
        .map_err(|e| WrapError::Build(e.to_string()))
}

/// Wraps a seal for `receiver` (kind 1059, signed by a fresh ephemeral key) with a `p` tag, a
/// NIP-40 `expiration` and, when `pow` is set, a NIP-13 `nonce` tag mined to that many leading
/// zero bits. Mining is CPU work on the calling thread (use `spawn_blocking` in async code).
pub fn wrap_seal(
    receiver: &PublicKey,
    seal: &Event,
    expiration: Timestamp,
    pow: Option<u8>,
) -> Result<Event, WrapError> {
    let ephemeral = Keys::generate();
    let encrypted =
        nip44::encrypt(ephemeral.secret_key(), receiver, seal.as_json(), nip44::Version::default())
            .map_err(|e| WrapError::Build(e.to_string()))?;
    let mut builder = EventBuilder::new(Kind::GiftWrap, encrypted)
        .tags([Tag::public_key(*receiver), Tag::expiration(expiration)])
        .custom_created_at(Timestamp::tweaked(nip59::RANGE_RANDOM_TIMESTAMP_TWEAK));
    if let Some(d) = pow.filter(|d| *d > 0) {
        builder = builder.pow(d);
    }
    builder.sign_with_keys(&ephemeral).map_err(|e| WrapError::Build(e.to_string()))
}

/// Builds the whole rumor -> seal -> gift wrap stack ([`build_seal`] then [`wrap_seal`]).
pub async fn build_gift_wrap(
    keys: &Keys,
    receiver: &PublicKey,
    content: String,
    expiration: Timestamp,
    pow: Option<u8>,
) -> Result<Event, WrapError> {
    let seal = build_seal(keys, receiver, content).await?;
    wrap_seal(receiver, &seal, expiration, pow)
}

/// Upper bound of the NIP-01 JSON size of a gift wrap whose envelope is `max_content` bytes
/// (JSON escaping may double the content; NIP-44 pads and base64 expands each layer). Capped at
/// the largest gift wrap NIP-44 can produce at all (a 65,535-byte seal).
pub fn max_gift_wrap_bytes(max_content: usize) -> usize {
    fn nip44_b64(plain: usize) -> usize {
        let plain = plain.clamp(1, 65_535);
        let padded = if plain <= 32 {
            32
        } else {
            let next_power = plain.next_power_of_two();
            let chunk = if next_power <= 256 { 32 } else { next_power / 8 };
            chunk * ((plain - 1) / chunk + 1)
        };
        (1 + 32 + 2 + padded + 32).div_ceil(3) * 4
    }
    const EVENT_OVERHEAD: usize = 512;
    let rumor = max_content.saturating_mul(2) + EVENT_OVERHEAD;
    let seal = nip44_b64(rumor) + EVENT_OVERHEAD;
    nip44_b64(seal) + EVENT_OVERHEAD
}

/// Opens a gift wrap addressed to `keys`: decrypts the seal, checks that it is a seal (kind 13:
/// nostr-sdk's `UnwrappedGift` does not) and verifies its signature, decrypts the rumor, and
/// checks the rumor kind, the seal/rumor author equality and the rumor's `p` tag.
pub async fn open_gift_wrap(keys: &Keys, event: &Event) -> Result<OpenedMessage, WrapError> {
    if event.kind != Kind::GiftWrap {
        return Err(WrapError::NotGiftWrap(event.kind.as_u16()));
    }
    let open = |e: &dyn std::fmt::Display| WrapError::Open(e.to_string());
    let seal =
        nip44::decrypt(keys.secret_key(), &event.pubkey, &event.content).map_err(|e| open(&e))?;
    let seal = Event::from_json(seal).map_err(|e| open(&e))?;
    if seal.kind != Kind::Seal {
        return Err(WrapError::NotSeal(seal.kind.as_u16()));
    }
    seal.verify().map_err(|e| open(&e))?;
    let rumor =
        nip44::decrypt(keys.secret_key(), &seal.pubkey, &seal.content).map_err(|e| open(&e))?;
    let rumor = UnsignedEvent::from_json(rumor).map_err(|e| open(&e))?;
    if rumor.pubkey != seal.pubkey {
        return Err(WrapError::SenderMismatch);
    }
    if rumor.kind != Kind::Custom(SWAP_MESSAGE_KIND) {
        return Err(WrapError::WrongKind(rumor.kind.as_u16()));
    }
    let me = keys.public_key();
    if rumor.tags.public_keys().any(|p| *p != me) {
        return Err(WrapError::WrongRecipient);
    }
    Ok(OpenedMessage {
        sender: seal.pubkey,
        content: rumor.content,
        rumor_id: rumor.id,
        created_at: rumor.created_at,
    })
}

/// The NIP-13 work an event carries: the leading zero bits of its id, but no more than the
/// difficulty its `nonce` tag commits to (so a lucky id mined for a lower target does not count).
/// Events without a `nonce` tag carry no work.
pub fn committed_pow(event: &Event) -> u8 {
    let bits = nip13::get_leading_zero_bits(event.id.as_bytes());
    let target = event.tags.iter().find_map(|t| {
        let s = t.as_slice();
        if s.first().map(String::as_str) == Some("nonce") {
            s.get(2).and_then(|d| d.parse::<u8>().ok())
        } else {
            None
        }
    });
    match target {
        Some(t) => bits.min(t),
        None => 0,
    }
}

/// Size of an event in its NIP-01 JSON form, in bytes.
pub fn event_size(event: &Event) -> usize {
    event.as_json().len()
}
