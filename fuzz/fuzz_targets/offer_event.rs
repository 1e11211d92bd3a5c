//! The offer event as a buyer's node receives it from a relay: NIP-01 event JSON parsed by
//! nostr-sdk, then looper-node's `parse_offer_event` and `select_offers` (spec `04-nostr.md`,
//! "Offers").
//!
//! Checks: never a panic; an accepted offer is valid, unexpired, of the wanted network and
//! direction, its `d` tag is its id, and its cost is the quote's for the wanted amount;
//! `select_offers` keeps only such offers, cheapest first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use looper_node::nostr::{parse_offer_event, select_offers, OfferFilter, Timestamp};
use looper_protocol::messages::OFFER_KIND;
use looper_protocol::SwapDirection;
use nostr_sdk::{Event, JsonUtil, Kind};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::from_json(data) else { return };
    // The relay pool verifies signatures before anything else; the fuzzer cannot sign, so the
    // checks below run on unverified events too (a superset of what reaches them).
    let _ = event.verify();
    let now = Timestamp::from_secs(1_767_225_600);
    for (network, amount_sat, direction) in [
        (bitcoin::Network::Regtest, 100_000, SwapDirection::LoopOut),
        (bitcoin::Network::Bitcoin, 1_000_000, SwapDirection::LoopOut),
        (bitcoin::Network::Regtest, u64::MAX, SwapDirection::LoopOut),
        (bitcoin::Network::Regtest, 100_000, SwapDirection::LoopIn),
    ] {
        let filter = OfferFilter { network, amount_sat, sellers: Vec::new(), direction };
        match parse_offer_event(&event, &filter, now) {
            Ok(found) => {
                assert_eq!(event.kind, Kind::Custom(OFFER_KIND));
                assert_eq!(found.offer.validate(), Ok(()));
                assert_eq!(found.offer.network, network);
                assert_eq!(found.offer.direction, direction);
                assert!(!found.offer.is_expired(now.as_secs()));
                assert!(found.expires_at > now);
                assert_eq!(event.tags.identifier(), Some(found.offer.offer_id.as_str()));
                let quote =
                    found.offer.quote(amount_sat).expect("an accepted offer quotes the amount");
                assert_eq!(found.cost_sat, quote.total_cost_sat(0));
                assert_eq!(found.seller, event.pubkey);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let only_other = OfferFilter {
            network,
            amount_sat,
            direction,
            sellers: vec![nostr_sdk::Keys::parse(
                "0000000000000000000000000000000000000000000000000000000000000001",
            )
            .expect("a valid key")
            .public_key()],
        };
        if event.pubkey != only_other.sellers[0] {
            assert!(parse_offer_event(&event, &only_other, now).is_err());
        }
        let selected = select_offers([&event, &event], &filter, now);
        assert!(selected.len() <= 1);
        if let Some(s) = selected.first() {
            assert_eq!(Some(s), parse_offer_event(&event, &filter, now).ok().as_ref());
        }
    }
});
