//! The node's real engines (buyer and seller, in run mode) run whole swaps over their real Nostr
//! transports and nostr-relay-builder's relay on 127.0.0.1; the chain and Lightning are the
//! simulated world's. Hostile clients and the state-machine scenarios' faults (fault-injection
//! mocks of the seller's invoice, wallet and wire) beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bitcoin::Network;
use looper_conformance::fakes::InvoiceTamper;
use looper_conformance::pair::{
    buyer_swap_key, transport, transport_with, Pair, PairOptions, SELLER,
};
use looper_conformance::world::lock;
use looper_node::engine::BlockSource;
use looper_node::nostr::wire::{self, Envelope};
use looper_node::nostr::{Incoming, SendOptions};
use looper_node::store::SwapStore;
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::messages::{AbortReason, ErrorCode, Message, SwapAbort, SUPPORTED_VERSIONS};
use looper_protocol::seller::SellerPolicy;
use looper_protocol::swap::TxPurpose;
use nostr_relay_builder::prelude::{Keys, LocalRelay, RelayBuilder};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
const CLAIMED: &[&str] = &["Claimed"];

async fn start_relay() -> Result<(LocalRelay, String)> {
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    let url = relay.url().await.to_string();
    Ok((relay, url))
}

async fn setup(f: impl FnOnce(&mut PairOptions)) -> Result<(LocalRelay, String, Pair)> {
    let (relay, url) = start_relay().await?;
    let mut o = PairOptions::new(vec![url.clone()]);
    f(&mut o);
    let pair = Pair::start(o).await?;
    Ok((relay, url, pair))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_claim_over_the_relay() -> Result<()> {
    let started = Instant::now();
    let (relay, _, p) = setup(|_| {}).await?;
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let (bs, ss) = (p.buyer_t.stats().await, p.seller_t.stats().await);
    println!(
        "FIGURES: wall {:.2} s, websocket bytes sent buyer {} seller {}, received buyer {} seller {}",
        started.elapsed().as_secs_f64(),
        bs.bytes_sent,
        ss.bytes_sent,
        bs.bytes_received,
        ss.bytes_received
    );
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

/// A whole loop in between two engines over the real local relay: the buyer (the claimer, the
/// maker) publishes a loop-in offer, the seller (the locker, the taker) finds it on the relay and
/// takes it, locks, is paid its invoice (the amount less the fees) and co-signs the buyer's
/// key-path claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_in_over_the_relay() -> Result<()> {
    let (relay, _, p) = setup(|o| o.loop_in = true).await?;
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let quote = looper_protocol::terms::Quote::compute(&p.offer, 200_000).unwrap();
    assert_eq!(p.offer.direction, looper_protocol::SwapDirection::LoopIn);
    assert_eq!(p.settled_msat(), quote.invoice_amount_sat * 1000, "paid the amount less the fees");
    assert!(quote.invoice_amount_sat < 200_000);
    // The seller (the taker) locked; the buyer (the maker) claimed to its own wallet.
    let records = p.buyer.store.inner.list_swaps(&Default::default())?;
    assert_eq!(records.len(), 1);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_uncooperative_script_claim() -> Result<()> {
    let (relay, _, p) =
        setup(|o| o.seller_policy = SellerPolicy { cooperative_claims: false }).await?;
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptClaim]);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_aborts_cooperative_refund() -> Result<()> {
    // The buyer waits for 50 confirmations before paying: it aborts while the HTLC is funded
    // and unpaid.
    let (relay, _, p) = setup(|o| {
        o.buyer_policy = BuyerPolicy { min_confirmations: 50, ..BuyerPolicy::default() };
    })
    .await?;
    p.wait_for(&["Funded"], &["Funded"], WAIT).await?;
    p.buyer.engine.abort(p.swap_id).await.ok();
    p.wait_for(&[], &["Refunded"], WAIT).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeRefund]);
    assert_eq!(p.settled_msat(), 0);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_vanishes_refund_after_timeout() -> Result<()> {
    let (relay, _, mut p) = setup(|o| o.block_interval = Duration::from_millis(60)).await?;
    p.wait_for(&[], &["Accepted", "Funded"], WAIT).await?;
    p.stop_buyer();
    p.wait_for(&[], &["Refunded"], Duration::from_secs(60)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptRefund]);
    assert_eq!(p.settled_msat(), 0);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepaid_swap_over_the_relay_through_the_real_engines() -> Result<()> {
    // The seller funds only once the prepay is in; the buyer pays the rest through the hold
    // invoice: the same total as without a prepay.
    let (relay, _, p) = setup(|o| o.prepay_sat = Some(1_500)).await?;
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let quote = looper_protocol::terms::Quote::compute(&p.offer, 200_000)?;
    assert_eq!(quote.prepay_sat, 1_500);
    assert_eq!(p.settled_msat(), (quote.invoice_amount_sat + quote.prepay_sat) * 1000);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_prepay_follows_the_fee_rate() -> Result<()> {
    // The default offer (`seller.prepay_sat = "auto"`): the prepay is the seller's funding and
    // refund at the chain's fee rate (2 sat/vB in the world), the swap pays it as part of the
    // total; a fee spike reprices the served offer on the relays.
    let per_vb =
        looper_api::AUTO_PREPAY_FUNDING_VBYTES + looper_protocol::spend::REFUND_SCRIPT_PATH_VBYTES;
    let (relay, _, p) = setup(|o| o.auto_prepay = true).await?;
    assert_eq!(p.offer.prepay_sat, Some(2 * per_vb), "the first version, priced at 2 sat/vB");
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    let quote = looper_protocol::terms::Quote::compute(&p.offer, 200_000)?;
    assert_eq!(p.settled_msat(), (quote.invoice_amount_sat + quote.prepay_sat) * 1000);

    looper_conformance::world::lock(&p.world).fee_rate = bitcoin::FeeRate::from_sat_per_vb_u32(10);
    let want = looper_node::nostr::OfferFilter {
        network: Network::Regtest,
        amount_sat: 200_000,
        sellers: vec![],
        direction: looper_protocol::SwapDirection::LoopOut,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let found = p.buyer_t.discover_offers(&want).await?;
        if found.iter().any(|f| f.offer.prepay_sat == Some(10 * per_vb)) {
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "offer not repriced: {:?}",
                found.first().map(|f| f.offer.prepay_sat)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_funding_stuck_in_a_spike_is_lifted_by_a_child() -> Result<()> {
    // Blocks are full of transactions paying 20 sat/vB; the seller funds at the 2 sat/vB of the
    // estimate, then the estimate rises to 25: a block later its engine spends the funding's
    // change in a child that lifts the pair over 20, both are mined, and the swap completes.
    let (relay, _, p) = setup(|o| o.mine_min_fee_rate_sat_vb = 20).await?;
    p.wait_for(&[], &["Funded"], WAIT).await?;
    looper_conformance::world::lock(&p.world).fee_rate = bitcoin::FeeRate::from_sat_per_vb_u32(25);
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    let (rate, funding_alone_ok, together) = {
        let w = looper_conformance::world::lock(&p.world);
        let funding = w
            .blocks
            .iter()
            .flatten()
            .find(|t| t.output.iter().any(|o| o.value.to_sat() == 200_000))
            .cloned()
            .ok_or_else(|| anyhow!("no funding mined"))?;
        let txid = funding.compute_txid();
        let block = |id: bitcoin::Txid| {
            w.blocks.iter().position(|b| b.iter().any(|t| t.compute_txid() == id))
        };
        let child = w
            .blocks
            .iter()
            .flatten()
            .find(|t| t.input.iter().any(|i| i.previous_output.txid == txid) && t.output.len() == 1)
            .cloned()
            .ok_or_else(|| anyhow!("no child of the funding mined"))?;
        let fee = |t: &bitcoin::Transaction| w.fee_of(t).unwrap_or(0);
        let vsize = looper_conformance::world::sim_vsize;
        let rate = (fee(&funding) + fee(&child)) / (vsize(&funding) + vsize(&child));
        (rate, fee(&funding) < 20 * vsize(&funding), block(txid) == block(child.compute_txid()))
    };
    assert!(together, "parent and child mined together");
    assert!(rate >= 20, "package rate {rate}");
    assert!(funding_alone_ok, "the funding alone paid too little to be mined");
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_that_prepays_and_vanishes_pays_the_seller_its_refund() -> Result<()> {
    let (relay, _, mut p) = setup(|o| {
        o.prepay_sat = Some(1_500);
        o.block_interval = Duration::from_millis(60);
    })
    .await?;
    p.wait_for(&[], &["Funded"], WAIT).await?;
    p.stop_buyer();
    p.wait_for(&[], &["Refunded"], Duration::from_secs(60)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::ScriptRefund]);
    assert_eq!(p.settled_msat(), 1_500 * 1000, "the prepay alone, kept by the seller");
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

/// The buyer's swap as stored.
fn buyer_state(p: &looper_conformance::pair::Pair) -> Option<looper_protocol::buyer::BuyerState> {
    let rec = p.buyer.store.inner.get_swap(&p.swap_id).ok().flatten()?;
    match looper_protocol::record::SwapRecord::from_bytes(&rec.data).ok()? {
        looper_protocol::record::SwapRecord::Buyer(b) => Some(b.state().clone()),
        _ => None,
    }
}

/// The buyer's swap ended refused by the seller: its abort message.
async fn refusal(p: &looper_conformance::pair::Pair) -> Result<String> {
    p.wait_for(&["Aborted"], &[], WAIT).await?;
    match buyer_state(p) {
        Some(looper_protocol::buyer::BuyerState::Aborted { message, .. }) => {
            Ok(message.unwrap_or_default())
        }
        other => Err(anyhow!("buyer not aborted: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seller_refuses_what_it_cannot_serve_before_locking_anything() -> Result<()> {
    // Over the budget for unpaid HTLCs (200 000 sat asked, 150 000 allowed).
    let (relay, _, p) = setup(|o| o.seller_max_unpaid_locked_sat = Some(150_000)).await?;
    let why = refusal(&p).await?;
    assert!(why.starts_with("rate_limited") && why.contains("budget"), "{why}");
    assert!(p.purposes().is_empty());
    p.shutdown().await;
    relay.shutdown();
    // Not enough inbound Lightning capacity for the invoice.
    let (relay, _, p) = setup(|o| o.seller_inbound_msat = Some(100_000_000)).await?;
    let why = refusal(&p).await?;
    assert!(why.starts_with("amount_out_of_range") && why.contains("Lightning"), "{why}");
    assert!(p.purposes().is_empty());
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_of_work_offer_is_taken_with_the_work_it_asks_for() -> Result<()> {
    // The buyer's engine mines the offer's difficulty on its swap request; the seller's transport
    // counts nothing short of it.
    let (relay, _, p) = setup(|o| o.pow_difficulty = Some(12)).await?;
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    let st = p.seller_t.stats().await;
    assert_eq!(st.insufficient_pow, 0, "{st:?}");
    // The buyer's swap events say so (`looper out` prints them): started, then done.
    let events = p.buyer.store.inner.swap_events(&p.swap_id, 0)?;
    let pow: Vec<_> =
        events.iter().filter(|e| e.event["event"] == "proof_of_work").map(|e| &e.event).collect();
    assert_eq!(pow.len(), 2, "{events:?}");
    assert_eq!(pow[0]["bits"], 12);
    assert!(pow[0].get("millis").is_none() && pow[1]["millis"].is_u64(), "{pow:?}");
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_of_work_seller_drops_unmined_wraps_before_decrypting() -> Result<()> {
    // The seller serves only a 12-bit offer and buys nothing: every gift wrap to it must carry
    // the work. The honest buyer mines all its messages (request, cooperative claim) and swaps;
    // an attacker's unmined messages are dropped unread, and mined ones are read and answered.
    let (relay, url, p) = setup(|o| o.pow_difficulty = Some(12)).await?;
    p.wait_for(CLAIMED, CLAIMED, WAIT).await?;
    let seller_pk = p.seller_t.public_key();
    let before = p.seller_t.stats().await;
    assert_eq!(before.insufficient_pow, 0, "the honest buyer mined every message: {before:?}");

    let attacker = transport(&[url]).await?;
    let mut arx = attacker.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let junk = Envelope::new(
        p.swap_id,
        9,
        Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
    );
    for _ in 0..5 {
        attacker.send(&seller_pk, &[], &junk).await?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let st = p.seller_t.stats().await;
        if st.insufficient_pow >= 5 {
            assert_eq!(st.invalid, before.invalid, "nothing was opened: {st:?}");
            assert_eq!(st.delivered, before.delivered, "nothing reached the engine: {st:?}");
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("unmined wraps not dropped: {st:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With the work, the same message is read (and answered: not the attacker's swap).
    let mined = SendOptions { pow: Some(12), ..SendOptions::default() };
    attacker.send_with(&seller_pk, &[], &junk, mined).await?;
    let reply = await_reply(&mut arx, "the mined message").await?;
    assert_eq!(error_of(&reply)?.code, ErrorCode::UnknownSwap);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_that_prepays_and_never_funds_is_remembered_as_a_no_show() -> Result<()> {
    // The seller takes the prepay, never funds and goes quiet: the buyer gives up when the
    // timeout comes too close, and its node remembers the seller (the CLI's `--best` skips it).
    let (relay, _, p) = setup(|o| {
        o.prepay_sat = Some(1_000);
        o.mock_seller_vanishes_after_accept = true;
        o.block_interval = Duration::from_millis(60);
    })
    .await?;
    p.wait_for(&["Aborted"], &[], Duration::from_secs(60)).await?;
    let tracks = p.buyer.engine.seller_tracks()?;
    let seller = p.seller_t.public_key().to_hex();
    let t = tracks.get(&seller).copied().unwrap_or_default();
    assert_eq!((t.completed, t.no_shows, t.prepaid_lost_sat), (0, 1, 1_000), "{tracks:?}");
    assert!(p.purposes().is_empty());
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_key_gets_nothing() -> Result<()> {
    let (relay, _, p) = setup(|o| o.seller_blocks_buyer = true).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = buyer_state(&p).map(|s| s.name());
    assert_eq!(state, Some("Requested"), "no answer to a blocked key");
    assert!(p.seller.engine.swap_ids().await.is_empty(), "no seller swap");
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_blocked_at_runtime_gets_nothing_until_unblocked() -> Result<()> {
    let (relay, _, mut p) = setup(|o| o.seller_blocks_buyer_at_runtime = true).await?;
    // The buyer talks to the seller with its swap's own key: that is the key the seller sees,
    // and blocks.
    let buyer = buyer_swap_key(0)?;
    // Blocked through the engine, as `POST /v1/seller/blocked` does: in memory and in the store.
    assert!(p.seller.engine.is_blocked(&buyer));
    let listed = p.seller.engine.blocked_peers()?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].key, listed[0].source), (buyer, BlockSource::Api));
    assert_eq!(listed[0].note.as_deref(), Some("blocked at runtime"));
    assert_eq!(p.seller.store.inner.blocked_keys()?.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(buyer_state(&p).map(|s| s.name()), Some("Requested"), "no answer to a blocked key");
    assert!(p.seller.engine.swap_ids().await.is_empty(), "no seller swap");

    // Unblocked: the buyer's request, sent again by its restarted node from the same key, is
    // served to the end.
    assert!(p.seller.engine.unblock_peer(&buyer)?);
    assert!(!p.seller.engine.unblock_peer(&buyer)?, "unblocking twice changes nothing");
    assert!(!p.seller.engine.is_blocked(&buyer));
    assert!(p.seller.store.inner.blocked_keys()?.is_empty());
    p.restart_buyer().await?;
    p.wait_for(CLAIMED, CLAIMED, Duration::from_secs(60)).await?;

    // Blocked again, the key stays blocked across a restart (loaded from the store).
    p.seller.engine.block_peer(buyer, None)?;
    p.seller.restart().await?;
    assert!(p.seller.engine.is_blocked(&buyer), "the block list is loaded at start");
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

/// Waits (bounded) until `swap` is in one of `states` on both nodes.
async fn wait_swap(p: &Pair, swap: looper_protocol::SwapId, states: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = p.buyer.engine.swap_state(swap).await.map(|s| s.0);
        let s = p.seller.engine.swap_state(swap).await.map(|s| s.0);
        let done = |x: &Option<String>| x.as_deref().is_some_and(|x| states.contains(&x));
        if done(&b) && done(&s) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "swap {swap}: buyer {b:?}, seller {s:?}; log {:?}",
                p.log_tail(30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takers_that_come_together_share_one_read_of_the_chain() -> Result<()> {
    // Twenty offers taken at once: each taker's checks run against the chain as it is now, but
    // a read that started after a call came serves it (a few reads, not twenty: the first, and
    // one for everyone who came while the one before was under way). The buyer's
    // engine polls the chain once an hour here, so that only the takers read the tip.
    let (relay, url, p) = setup(|o| {
        o.mock_payment_delay_blocks = 100;
        o.buyer_chain_poll = Some(Duration::from_secs(3_600));
    })
    .await?;
    let seller = p.seller_t.public_key();
    // The engine's first poll (at its start) is over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = lock(&p.world).tip_reads[p.buyer.idx];
    let mut takes = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (engine, offer) = (p.buyer.engine.clone(), p.offer.clone());
        takes.spawn(async move {
            engine.take_offer(offer, seller, 150_000, BuyerPolicy::default()).await
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(taken) = takes.join_next().await {
        ids.insert(taken??);
    }
    assert_eq!(ids.len(), 20);
    let reads = lock(&p.world).tip_reads[p.buyer.idx] - before;
    // Two when every taker came before the first read ended; a slow scheduler can spread them
    // over a few more, never one each.
    assert!((1..=5).contains(&reads), "{reads} tip reads for 20 takers at once");
    // One that comes after them reads again.
    p.buyer.engine.take_offer(p.offer.clone(), seller, 150_000, BuyerPolicy::default()).await?;
    assert_eq!(lock(&p.world).tip_reads[p.buyer.idx] - before, reads + 1);
    drop((relay, url));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_swap_of_a_buyer_talks_with_a_key_of_its_own() -> Result<()> {
    // One buyer, two swaps with one seller: the seller sees two keys, neither the buyer's
    // identity, each derived from the seed by the swap's key index; a message of the seller to
    // one swap's key about the other swap is refused; both swaps complete; the keys are given
    // back once the swaps ended. The buyer's payments are held in flight (100 blocks, well
    // within their expiry) until the refusal came, so that neither swap ends, and gives its key
    // back, before the misaddressed message reaches it.
    let (relay, url, p) = setup(|o| o.mock_payment_delay_blocks = 100).await?;
    let seller = p.seller_t.public_key();
    let first = p.swap_id;
    let second =
        p.buyer.engine.take_offer(p.offer.clone(), seller, 150_000, BuyerPolicy::default()).await?;
    wait_swap(&p, first, &["Accepted", "Funded", "Paying"]).await?;
    wait_swap(&p, second, &["Accepted", "Funded", "Paying"]).await?;

    let identity = p.buyer_t.public_key();
    let mut keys = Vec::new();
    for id in [first, second] {
        let buyer_side = p.buyer.engine.swap_record(id).await.ok_or(anyhow!("no buyer swap"))?;
        let seller_side = p.seller.engine.swap_record(id).await.ok_or(anyhow!("no seller swap"))?;
        let looper_protocol::record::SwapRecord::Seller(s) = seller_side else {
            return Err(anyhow!("not a seller swap"));
        };
        let key = buyer_swap_key(buyer_side.key_index())?;
        assert_eq!(s.peer(), key.to_hex(), "the seller sees the swap's own key");
        assert_ne!(key, identity, "never the buyer's identity");
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1], "one key per swap");
    let mut held = p.buyer_t.swap_keys();
    held.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(held, want, "the buyer's transport listens to both swaps' keys");

    // The seller (its identity, the peer of both swaps) writes to the first swap's key about
    // the second swap: not the second swap's message. The buyer answers from the first swap's
    // key as it would about a swap it does not know.
    let spy = transport_with(p.seller_keys(), std::slice::from_ref(&url)).await?;
    let mut srx = spy.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let abort = Envelope::new(
        second,
        1,
        Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
    );
    spy.send(&keys[0], &[], &abort).await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, srx.recv()).await {
            Ok(Some(m)) => m,
            _ => return Err(anyhow!("no refusal of the misaddressed message")),
        };
        let refusal = m.sender == keys[0]
            && m.message.as_ref().is_ok_and(|e| e.swap_id == second)
            && error_of(&m).is_ok_and(|e| e.code == ErrorCode::UnknownSwap);
        if refusal {
            break;
        }
    }
    // The payments arrive now.
    {
        let mut w = looper_conformance::world::lock(&p.world);
        w.payment_delay.fill(0);
        w.slow_until.clear();
    }

    wait_swap(&p, first, CLAIMED).await?;
    wait_swap(&p, second, CLAIMED).await?;
    for id in [first, second] {
        let events = p.buyer.store.inner.swap_events(&id, 0)?;
        assert!(
            events.iter().any(|e| e.event["purpose"] == "cooperative_claim"),
            "swap {id} claimed cooperatively: {events:?}"
        );
    }
    // Both swaps ended: the buyer's transport stops listening to their keys.
    let deadline = Instant::now() + WAIT;
    while !p.buyer_t.swap_keys().is_empty() {
        if Instant::now() > deadline {
            return Err(anyhow!("keys still held: {:?}", p.buyer_t.swap_keys()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spy.shutdown().await;
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_buyer_hears_its_seller_on_the_swap_key() -> Result<()> {
    // The buyer's process ends once the seller accepted; the seller funds and tells it while it
    // is away. The buyer comes back with a new transport and no processed events (as a node
    // restored from its seed and backups): its engine listens to the swap's key again, reads
    // what the seller sent there meanwhile, and the cooperative claim's round trip goes through
    // that key.
    let (relay, _, mut p) = setup(|o| {
        o.buyer_policy = BuyerPolicy { min_confirmations: 3, ..BuyerPolicy::default() };
    })
    .await?;
    p.wait_for(&["Accepted", "Funded"], &[], WAIT).await?;
    let key = buyer_swap_key(0)?;
    assert_eq!(p.buyer_t.swap_keys(), vec![key]);
    p.kill_buyer().await;
    p.wait_for(&[], &["Funded"], WAIT).await?;
    p.restart_buyer().await?;
    assert_eq!(p.buyer_t.swap_keys(), vec![key], "the resumed swap listens to its key again");
    p.wait_for(CLAIMED, CLAIMED, Duration::from_secs(60)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let st = p.buyer_t.stats().await;
    assert!(st.delivered > 0, "the new transport delivered the seller's answers: {st:?}");
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

async fn await_reply(arx: &mut mpsc::Receiver<Incoming>, what: &str) -> Result<Incoming> {
    match tokio::time::timeout(WAIT, arx.recv()).await {
        Ok(Some(m)) => Ok(m),
        _ => Err(anyhow!("no reply to {what}")),
    }
}

fn error_of(m: &Incoming) -> Result<looper_protocol::messages::ErrorMessage> {
    match &m.message {
        Ok(Envelope { body: Message::Error(e), .. }) => Ok(e.clone()),
        other => Err(anyhow!("expected an error, got {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_client_beside_an_honest_swap() -> Result<()> {
    // The honest swap waits at the payment until the attacker is done.
    let (relay, url, p) = setup(|o| o.mock_payment_delay_blocks = 40).await?;
    p.wait_for(&[], &["Accepted", "Funded"], WAIT).await?;
    let honest_id = p.swap_id;
    let attacker = transport(&[url]).await?;
    let mut arx = attacker.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let seller_pk = p.seller_t.public_key();
    let template = wire::envelope_content(&Envelope::new(
        honest_id,
        1,
        Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
    ));
    let mut value: serde_json::Value = serde_json::from_str(&template)?;

    // 1. Malformed: a readable swap id, but the body is wrong.
    let mut malformed = value.clone();
    malformed["reason"] = serde_json::json!(42);
    attacker.send_raw(&seller_pk, &[], malformed.to_string(), SendOptions::default()).await?;
    let e = error_of(&await_reply(&mut arx, "the malformed message").await?)?;
    assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");

    // 2. Unknown version.
    value["v"] = serde_json::json!(99);
    attacker.send_raw(&seller_pk, &[], value.to_string(), SendOptions::default()).await?;
    let e = error_of(&await_reply(&mut arx, "the unknown version").await?)?;
    assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{e:?}");
    assert_eq!(e.supported_versions, Some(SUPPORTED_VERSIONS.to_vec()));

    // 3. A well-formed abort of the honest buyer's swap, from the attacker: unknown_swap.
    let abort = Envelope::new(
        honest_id,
        7,
        Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, message: None }),
    );
    attacker.send(&seller_pk, &[], &abort).await?;
    let reply = await_reply(&mut arx, "the foreign abort").await?;
    assert_eq!(error_of(&reply)?.code, ErrorCode::UnknownSwap);
    assert_eq!(reply.message.as_ref().map(|m| m.swap_id).ok(), Some(honest_id));

    // 4. The honest swap's id in a swap_request of the attacker: never a second swap.
    let request = flood_request(0, honest_id);
    attacker.send(&seller_pk, &[], &request).await?;
    let e = error_of(&await_reply(&mut arx, "the stolen swap id").await?)?;
    assert_eq!(e.code, ErrorCode::InvalidState, "{e:?}");

    // 5. An `error` is never answered with an `error` (no ping-pong between two nodes).
    let error = Envelope::error_reply(
        honest_id,
        8,
        looper_protocol::messages::ErrorMessage::new(ErrorCode::Internal, "hostile"),
    );
    attacker.send(&seller_pk, &[], &error).await?;
    let unknown = looper_protocol::SwapId([0xee; 32]);
    attacker.send(&seller_pk, &[], &Envelope::error_reply(unknown, 0, error_of_msg())).await?;
    let quiet = tokio::time::timeout(Duration::from_secs(2), arx.recv()).await;
    assert!(quiet.is_err(), "an error was answered: {quiet:?}");

    // 6. A swap_request repeated by its own sender gets the same swap_accept, not a second swap.
    let own = flood_request(0, looper_protocol::SwapId([0x5a; 32]));
    attacker.send(&seller_pk, &[], &own).await?;
    let first = await_reply(&mut arx, "the attacker's own request").await?;
    let Ok(first) = first.message else { return Err(anyhow!("undecodable answer")) };
    assert!(matches!(first.body, Message::SwapAccept(_)), "{first:?}");
    attacker.send(&seller_pk, &[], &own).await?;
    // What follows the accept (its swap_funded) comes too: look for the accept among them.
    let mut accepts = 1;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(3), arx.recv()).await {
        if let Ok(env) = &m.message {
            if matches!(env.body, Message::SwapAccept(_)) {
                assert_eq!(*env, first, "the original swap_accept again");
                accepts += 1;
            }
        }
    }
    assert_eq!(accepts, 2, "the repeated request got the original swap_accept");

    // The honest swap completes.
    p.wait_for(CLAIMED, CLAIMED, Duration::from_secs(60)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    attacker.shutdown().await;
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

fn error_of_msg() -> looper_protocol::messages::ErrorMessage {
    looper_protocol::messages::ErrorMessage::new(ErrorCode::Internal, "hostile")
}

fn flood_request(i: u8, id: looper_protocol::SwapId) -> Envelope {
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    let secp = Secp256k1::new();
    let pk = SecretKey::from_slice(&[1; 32]).unwrap().public_key(&secp);
    let id = if id.0 == [0; 32] { looper_protocol::SwapId([i; 32]) } else { id };
    Envelope::new(
        id,
        0,
        Message::SwapRequest(looper_protocol::messages::SwapRequest {
            offer_id: "conformance".into(),
            direction: looper_protocol::SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: 100_000,
            buyer_musig_pubkey: pk,
            buyer_claim_pubkey: pk.x_only_public_key().0,
            max_total_fee_sat: 50_000,
            prepay_accepted: false,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_oversize_and_flood_are_ignored() -> Result<()> {
    use nostr_sdk::{Client, Filter, Kind};
    let (relay, url, p) = setup(|o| o.mock_payment_delay_blocks = 40).await?;
    p.wait_for(&[], &["Accepted", "Funded"], WAIT).await?;
    let seller_pk = p.seller_t.public_key();

    // Replayed old messages: a raw client republishes every gift wrap addressed to the seller.
    let raw = Client::new(Keys::generate());
    raw.add_relay(&url).await?;
    raw.connect().await;
    raw.wait_for_connection(Duration::from_secs(5)).await;
    let old = raw
        .fetch_events(Filter::new().kind(Kind::GiftWrap).pubkey(seller_pk), Duration::from_secs(5))
        .await?;
    assert!(!old.is_empty(), "the buyer's request is on the relay");
    for ev in old.iter() {
        let _ = raw.send_event(ev).await;
    }

    // Oversized content and a flood of requests from another key.
    let attacker = transport(std::slice::from_ref(&url)).await?;
    let mut arx = attacker.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let oversize_sent = attacker
        .send_raw(&seller_pk, &[], "x".repeat(200_000), SendOptions::default())
        .await
        .is_ok();
    for i in 1..=12u8 {
        attacker.send(&seller_pk, &[], &flood_request(i, looper_protocol::SwapId([0; 32]))).await?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let st = p.seller_t.stats().await;
        if st.rate_limited > 0 && (!oversize_sent || st.oversize > 0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("flood/oversize never accounted: {st:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What got through the rate limit is served as any request (the seller has the funds):
    // every answer goes to the attacker, none to the honest buyer.
    let mut answers = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), arx.recv()).await {
        answers += 1;
    }
    assert!(answers <= 12);
    p.wait_for(CLAIMED, CLAIMED, Duration::from_secs(60)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    let st = p.seller_t.stats().await;
    println!("seller transport after the abuse: {st:?}, {answers} answers to the attacker");
    raw.shutdown().await;
    attacker.shutdown().await;
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_mid_swap() -> Result<()> {
    // A slower world clock (1 s per block): the cooperative claim's 30 s window must outlast
    // the relay's restart and the clients' reconnection on a loaded machine.
    let (relay, url, p) = setup(|o| {
        o.mock_payment_delay_blocks = 10;
        o.block_secs = 1;
    })
    .await?;
    p.wait_for(&[], &["Accepted", "Funded"], WAIT).await?;
    let port: u16 = url.trim_end_matches('/').rsplit(':').next().unwrap().parse()?;
    relay.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay = LocalRelay::new(RelayBuilder::default().port(port).rate_limit(
        nostr_relay_builder::builder::RateLimit { max_reqs: 500, notes_per_minute: 100_000 },
    ));
    relay.run().await?;
    p.wait_for(CLAIMED, CLAIMED, Duration::from_secs(60)).await?;
    assert_eq!(p.purposes(), vec![TxPurpose::Funding, TxPurpose::CooperativeClaim]);
    p.shutdown().await;
    relay.shutdown();
    Ok(())
}

/// One scenario of the protocol simulation with its fault injected through the pair's mocks, and
/// the end states it must reach (buyer, seller; empty: any).
struct Scenario {
    name: &'static str,
    options: fn(&mut PairOptions),
    buyer_end: &'static [&'static str],
    seller_end: &'static [&'static str],
    purposes: Option<&'static [TxPurpose]>,
    /// If the buyer must refuse: words one of which its `aborted` event names.
    refusal: Option<&'static [&'static str]>,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "late_payment_never_settles_and_is_refunded",
            options: |o| o.mock_payment_delay_blocks = 130,
            buyer_end: &["Aborted"],
            seller_end: &["Refunded"],
            purposes: None,
            refusal: None,
        },
        Scenario {
            name: "wrong_htlc_amount_is_refused",
            options: |o| o.mock_short_funding_sat = 1_000,
            buyer_end: &["Aborted"],
            seller_end: &[],
            purposes: None,
            refusal: Some(&["htlc", "timeout_too_close"]),
        },
        Scenario {
            name: "wrong_htlc_script_is_refused",
            options: |o| o.mock_wrong_htlc_script = true,
            buyer_end: &["Aborted"],
            seller_end: &["Refunded"],
            purposes: None,
            refusal: Some(&["script"]),
        },
        Scenario {
            name: "wrong_invoice_hash_is_refused",
            options: |o| o.mock_invoice = Some(InvoiceTamper::Hash),
            buyer_end: &["Aborted"],
            seller_end: &["Refunded", "Aborted"],
            purposes: None,
            refusal: Some(&["hash"]),
        },
        Scenario {
            name: "expired_invoice_is_refused",
            options: |o| o.mock_invoice = Some(InvoiceTamper::Expired),
            buyer_end: &["Aborted"],
            seller_end: &["Refunded", "Aborted"],
            purposes: None,
            refusal: Some(&["expired"]),
        },
        Scenario {
            name: "invoice_above_the_quote_is_refused",
            options: |o| o.mock_invoice = Some(InvoiceTamper::Amount),
            buyer_end: &["Aborted"],
            seller_end: &["Refunded", "Aborted"],
            purposes: None,
            refusal: Some(&["amount"]),
        },
        Scenario {
            name: "invoice_from_another_node_is_refused",
            options: |o| o.mock_invoice = Some(InvoiceTamper::Payee),
            buyer_end: &["Aborted"],
            seller_end: &["Refunded", "Aborted"],
            purposes: None,
            refusal: Some(&["payee"]),
        },
        Scenario {
            name: "cltv_budget_too_short_is_refused",
            options: |o| {
                o.buyer_policy = BuyerPolicy { max_route_cltv: 30, ..BuyerPolicy::default() }
            },
            buyer_end: &["Aborted"],
            seller_end: &["Refunded", "Aborted"],
            purposes: None,
            refusal: Some(&["cltv"]),
        },
        Scenario {
            name: "duplicated_messages_change_nothing",
            options: |o| o.mock_duplicate = true,
            buyer_end: CLAIMED,
            seller_end: CLAIMED,
            purposes: Some(&[TxPurpose::Funding, TxPurpose::CooperativeClaim]),
            refusal: None,
        },
        Scenario {
            name: "reordered_messages_change_nothing",
            options: |o| o.mock_reorder = true,
            buyer_end: CLAIMED,
            seller_end: CLAIMED,
            purposes: None,
            refusal: None,
        },
        Scenario {
            name: "duplicated_and_reordered_messages_change_nothing",
            options: |o| {
                o.mock_duplicate = true;
                o.mock_reorder = true;
            },
            buyer_end: CLAIMED,
            seller_end: CLAIMED,
            purposes: None,
            refusal: None,
        },
    ]
}

async fn run_scenario(sc: &Scenario) -> Result<String> {
    let (relay, _, p) = setup(|o| {
        o.block_interval = Duration::from_millis(60);
        (sc.options)(o)
    })
    .await?;
    let result = async {
        p.wait_for(sc.buyer_end, sc.seller_end, Duration::from_secs(60)).await?;
        if let Some(want) = sc.purposes {
            let got = p.purposes();
            if got != want {
                return Err(anyhow!("transactions {got:?}, expected {want:?}"));
            }
        }
        if let Some(words) = sc.refusal {
            let events = p.buyer.store.inner.swap_events(&p.swap_id, 0)?;
            let aborted = events.iter().find(|e| e.event["event"] == "aborted");
            let text = aborted.map(|e| e.event.to_string()).unwrap_or_default();
            if !words.iter().any(|w| text.to_lowercase().contains(w)) {
                return Err(anyhow!("the buyer's abort names none of {words:?}: {text}"));
            }
            if p.settled_msat() != 0 {
                return Err(anyhow!("a refused swap was paid"));
            }
        }
        Ok(format!(
            "buyer {:?}, seller {:?}, {:?}",
            p.state(0).await,
            p.state(SELLER).await,
            p.purposes()
        ))
    }
    .await;
    p.shutdown().await;
    relay.shutdown();
    result
}

/// The protocol simulation's scenarios over the relay, each with its own relay and nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_scenarios_over_the_relay() -> Result<()> {
    let mut failures = Vec::new();
    for sc in scenarios() {
        let started = Instant::now();
        match run_scenario(&sc).await {
            Ok(summary) => {
                println!(
                    "SCENARIO {} ok in {:.2} s: {summary}",
                    sc.name,
                    started.elapsed().as_secs_f64()
                )
            }
            Err(e) => {
                println!("SCENARIO {} FAILED: {e:#}", sc.name);
                failures.push(sc.name);
            }
        }
    }
    assert!(failures.is_empty(), "failed scenarios: {failures:?}");
    Ok(())
}
