//! The seller's offer as a buyer reads it: `decode_offer` on arbitrary bytes, then
//! `Offer::validate` and quotes (spec `01-messages.md`, "The offer" and "The quote").
//!
//! Checks: never a panic; a decoded offer is valid and round-trips through `encode_offer`; for
//! every amount in `[min_amount_sat, max_amount_sat]` (the ends, the middle and one the input
//! picks) the quote computes, keeps its invariants (`invoice + prepay == amount + swap fee +
//! funding fee`, `htlc == amount`) and passes `check_against`; amounts outside the range are
//! refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use looper_protocol::messages::{decode_offer, encode_offer};
use looper_protocol::terms::QuoteError;

fuzz_target!(|data: &[u8]| {
    let offer = match decode_offer(data) {
        Ok(o) => o,
        Err(e) => {
            let _ = e.to_string();
            let _ = e.to_error_message();
            assert!(e.swap_id().is_none());
            return;
        }
    };
    assert_eq!(offer.validate(), Ok(()), "a decoded offer is valid");
    let bytes = encode_offer(&offer);
    assert_eq!(decode_offer(&bytes).as_ref(), Ok(&offer), "decode(encode(offer)) != offer");
    let _ = offer.is_expired(0);

    let (min, max) = (offer.min_amount_sat, offer.max_amount_sat);
    let picked = data.iter().fold(0u64, |acc, b| acc.rotate_left(8) ^ u64::from(*b));
    let span = max - min;
    let inside = [min, max, min + span / 2, min + picked % span.saturating_add(1)];
    for amount in inside {
        let q = offer.quote(amount).expect("every amount in the offer's range has a quote");
        assert_eq!(q.htlc_amount_sat, amount);
        assert_eq!(q.amount_sat, amount);
        assert_eq!(
            u128::from(q.invoice_amount_sat) + u128::from(q.prepay_sat),
            u128::from(amount) + u128::from(q.swap_fee_sat) + u128::from(q.funding_fee_sat),
        );
        assert_eq!(q.funding_fee_sat, offer.funding_fee_sat);
        assert_eq!(q.prepay_sat, offer.prepay_sat.unwrap_or(0));
        assert!(q.swap_fee_sat >= offer.fee_base_sat);
        q.check_against(&offer, amount).expect("a quote matches its own computation");
        let b = q.breakdown(111);
        assert_eq!(b.paid_sat - b.received_sat, b.total_cost_sat);
    }
    for amount in [min.wrapping_sub(1), max.wrapping_add(1)] {
        if amount < min || amount > max {
            assert!(matches!(offer.quote(amount), Err(QuoteError::AmountOutOfRange { .. })));
        }
    }
});
