//! A swap message as a node receives it from a relay (spec `04-nostr.md`, "Swap messages", the
//! receiver's steps): the size check before parsing, NIP-01 event JSON, kind and `p` tag, the
//! NIP-59 unwrap (`looper_node::nostr::open_gift_wrap`: NIP-44 v2 decryption of the seal, its
//! signature, decryption of the rumor and the rumor checks), the rumor content's size, the NIP-13
//! work the gift wrap commits to, and `decode_envelope`.
//!
//! The first byte picks what the rest is:
//! - `0`: a whole gift wrap event (the corpus holds `spec/vectors/nostr.json`'s, which opens with
//!   the vector's recipient key; most mutations break its encryption, so the other modes build the
//!   outer layers themselves);
//! - `1`: a flags byte, then a rumor's JSON, which the target seals (signed by the sender, or by
//!   another key) and wraps (for us or another recipient, with or without a `p` tag and proof of
//!   work claims) before receiving it;
//! - `2`: a seal's JSON, which the target wraps for us.
//!
//! Checks: never a panic; the unwrap accepts exactly the rumors that spec step 5 accepts (kind
//! 8667, author = seal author, every `p` tag ours) and returns their content unchanged, with the
//! sender = the seal's author; the committed work never exceeds the id's leading zero bits nor
//! the difficulty the `nonce` tag commits to.
#![no_main]

use bitcoin::secp256k1::rand::rngs::StdRng;
use bitcoin::secp256k1::rand::SeedableRng;
use libfuzzer_sys::fuzz_target;
use looper_fuzz::block_on;
use looper_node::nostr::wire::{
    decode_envelope, is_swap_request, requested_offer_id, MAX_MESSAGE_BYTES, SWAP_MESSAGE_KIND,
};
use looper_node::nostr::{
    committed_pow, event_size, max_gift_wrap_bytes, open_gift_wrap, WrapError,
};
use nostr_sdk::nips::nip44;
use nostr_sdk::prelude::*;

/// `spec/vectors/nostr.json`: the gift wrap's recipient (us) and sender.
const RECIPIENT_SECRET: &str = "5c0c523f52a5b6fad39ed2403092df8cebc36318b39383bca6c00808626fab3a";
const SENDER_SECRET: &str = "a2d3b1c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const OTHER_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000003";
const EPHEMERAL_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000004";

struct K {
    me: Keys,
    sender: Keys,
    other: Keys,
    ephemeral: Keys,
}

fn keys() -> &'static K {
    static KEYS: std::sync::OnceLock<K> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| K {
        me: Keys::parse(RECIPIENT_SECRET).unwrap(),
        sender: Keys::parse(SENDER_SECRET).unwrap(),
        other: Keys::parse(OTHER_SECRET).unwrap(),
        ephemeral: Keys::parse(EPHEMERAL_SECRET).unwrap(),
    })
}

fn encrypt(from: &Keys, to: &PublicKey, plain: &[u8]) -> Option<String> {
    let mut rng = StdRng::seed_from_u64(0);
    nip44::encrypt_with_rng(&mut rng, from.secret_key(), to, plain, nip44::Version::V2).ok()
}

fn sign(builder: EventBuilder, keys: &Keys) -> Event {
    let mut rng = StdRng::seed_from_u64(1);
    builder
        .custom_created_at(Timestamp::from_secs(1_795_460_869))
        .build(keys.public_key())
        .sign_with_ctx(nostr_sdk::SECP256K1, &mut rng, keys)
        .unwrap()
}

/// Wraps `seal_json` into a gift wrap as `flags` say.
fn wrap(seal_json: &[u8], flags: u8) -> Option<Event> {
    let k = keys();
    let recipient = if flags & 0b0100 == 0 { k.me.public_key() } else { k.other.public_key() };
    let content = encrypt(&k.ephemeral, &recipient, seal_json)?;
    let kind = if flags & 0b1000 == 0 { Kind::GiftWrap } else { Kind::TextNote };
    let mut tags =
        vec![Tag::public_key(recipient), Tag::expiration(Timestamp::from_secs(4_102_444_800))];
    let difficulty = (flags >> 5) * 4;
    if difficulty > 0 {
        tags.push(Tag::parse(["nonce", "0", &difficulty.to_string()]).unwrap());
    }
    Some(sign(EventBuilder::new(kind, content).tags(tags), &k.ephemeral))
}

/// The receiver's steps; returns the opened rumor content when the message is delivered.
fn receive(event: &Event) -> Option<Result<String, WrapError>> {
    let me = keys().me.public_key();
    let for_us = event.kind == Kind::GiftWrap && event.tags.public_keys().any(|p| *p == me);
    if event_size(event) > max_gift_wrap_bytes(MAX_MESSAGE_BYTES) {
        return None;
    }
    // Signature: verified by the relay pool (spec step 2); the target goes on either way so the
    // unwrap sees events a fuzzer cannot sign.
    let _ = event.verify();
    let opened = block_on(open_gift_wrap(&keys().me, event));
    if !for_us {
        if event.kind != Kind::GiftWrap {
            assert!(matches!(opened, Err(WrapError::NotGiftWrap(_))));
        }
        return None;
    }
    let pow = committed_pow(event);
    assert!(pow <= nostr_sdk::nips::nip13::get_leading_zero_bits(event.id.as_bytes()));
    let opened = match opened {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    if opened.content.len() <= MAX_MESSAGE_BYTES {
        if let Ok(env) = decode_envelope(opened.content.as_bytes()) {
            if is_swap_request(&env) {
                assert!(requested_offer_id(&env).is_some());
            }
        }
    }
    Some(Ok(opened.content))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let k = keys();
    match mode % 3 {
        0 => {
            if rest.len() > max_gift_wrap_bytes(MAX_MESSAGE_BYTES) {
                return; // Dropped by the relay connection before parsing.
            }
            let Ok(event) = Event::from_json(rest) else { return };
            if let Some(Ok(content)) = receive(&event) {
                let _ = content;
            }
        }
        1 => {
            let Some((&flags, rumor_json)) = rest.split_first() else { return };
            let seal_keys = if flags & 0b0001 == 0 { &k.sender } else { &k.other };
            let seal_to =
                if flags & 0b0010 == 0 { k.me.public_key() } else { k.other.public_key() };
            let Some(sealed) = encrypt(seal_keys, &seal_to, rumor_json) else { return };
            let seal = sign(EventBuilder::new(Kind::Seal, sealed), seal_keys);
            let Some(gift) = wrap(seal.as_json().as_bytes(), flags) else { return };
            assert!(
                committed_pow(&gift) <= (flags >> 5) * 4,
                "more work than the nonce tag commits to"
            );
            let Some(result) = receive(&gift) else {
                assert!(flags & 0b1100 != 0, "an honest gift wrap for us was dropped");
                return;
            };
            let rumor = UnsignedEvent::from_json(rumor_json);
            // NIP-44 plaintext is UTF-8 text (serde_json alone would skip bad bytes in an
            // unknown field).
            let expected_ok = flags & 0b0010 == 0
                && std::str::from_utf8(rumor_json).is_ok()
                && rumor.as_ref().is_ok_and(|r| {
                    r.pubkey == seal_keys.public_key()
                        && r.kind == Kind::Custom(SWAP_MESSAGE_KIND)
                        && r.tags.public_keys().all(|p| *p == k.me.public_key())
                });
            match result {
                Ok(content) => {
                    assert!(expected_ok, "the unwrap accepted a rumor that step 5 refuses");
                    let rumor = rumor.unwrap();
                    assert_eq!(content, rumor.content, "the rumor content changed on the way");
                    let opened = block_on(open_gift_wrap(&k.me, &gift)).unwrap();
                    assert_eq!(opened.sender, seal_keys.public_key());
                    assert_eq!(opened.created_at, rumor.created_at);
                }
                Err(e) => {
                    assert!(!expected_ok, "the unwrap refused an honest rumor: {e}");
                    // A rumor that is not UTF-8 fails at decryption first, whatever it says.
                    let text = std::str::from_utf8(rumor_json).is_ok();
                    if let Ok(r) = &rumor {
                        if text && flags & 0b0010 == 0 && r.pubkey != seal_keys.public_key() {
                            assert!(matches!(e, WrapError::SenderMismatch), "{e}");
                        }
                    }
                }
            }
        }
        _ => {
            let Some(gift) = wrap(rest, 0) else { return };
            if let Some(Ok(_)) = receive(&gift) {
                // Only a seal signed by its author opens; the fuzzer would have to forge one.
                let seal = Event::from_json(rest).expect("an opened seal parses");
                assert!(seal.verify().is_ok(), "a seal with a bad signature opened");
            }
        }
    }
});
