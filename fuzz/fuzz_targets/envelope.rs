//! Every swap message a peer can send: `decode_envelope` on arbitrary bytes (spec
//! `01-messages.md`), then, for what decodes, the decoders that run on its fields later (funding,
//! claim and refund transactions, MuSig2 nonces and partial signatures).
//!
//! Checks: never a panic; what decodes re-encodes to bytes that decode to the same envelope, whose
//! encoding is stable (rust-lightning `msg_targets` style); the `Deserialize` impls (used for stored
//! records) agree with `decode_envelope`; a refused message yields a reply exactly when it names a
//! swap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use looper_protocol::messages::{decode_envelope, encode, Envelope, Message, MAX_MESSAGE_BYTES};
use looper_protocol::musig::{decode_partial_signature, decode_pub_nonce};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_envelope(data);
    if data.len() <= MAX_MESSAGE_BYTES {
        let via_serde = serde_json::from_slice::<Envelope>(data).ok();
        assert_eq!(via_serde, decoded.clone().ok(), "Deserialize disagrees with decode_envelope");
    }
    let env = match decoded {
        Ok(env) => env,
        Err(e) => {
            let _ = e.to_string();
            assert_eq!(e.reply(7).is_some(), e.swap_id().is_some());
            let _ = e.to_error_message();
            return;
        }
    };
    let bytes = encode(&env);
    let again = decode_envelope(&bytes).expect("an encoded envelope decodes");
    assert_eq!(again, env, "decode(encode(m)) != m");
    assert_eq!(encode(&again), bytes, "encoding is not stable");

    // The body alone, as records store it.
    let body_json = serde_json::to_vec(&env.body).expect("a message serializes");
    let body: Message = serde_json::from_slice(&body_json).expect("a serialized body reads back");
    assert_eq!(body, env.body);

    // The field decoders that run when the message is handled.
    match &env.body {
        Message::SwapFunded(m) => {
            if let Ok(tx) = m.tx() {
                assert_eq!(tx.compute_txid(), m.txid);
                assert!((m.vout as usize) < tx.output.len());
            }
        }
        Message::CoopClaimRequest(m) => {
            let _ = m.tx();
            let _ = decode_pub_nonce(&m.buyer_nonce.0);
        }
        Message::CoopRefundRequest(m) => {
            let _ = m.tx();
            let _ = decode_pub_nonce(&m.seller_nonce.0);
        }
        Message::CoopClaimResponse(m) => {
            let _ = decode_pub_nonce(&m.seller_nonce.0);
            let _ = decode_partial_signature(&m.partial_sig.0);
        }
        Message::CoopRefundResponse(m) => {
            let _ = decode_pub_nonce(&m.buyer_nonce.0);
            let _ = decode_partial_signature(&m.partial_sig.0);
        }
        Message::SwapAccept(m) => {
            let _ = m.invoice.parse::<lightning_invoice::Bolt11Invoice>();
        }
        _ => {}
    }
});
