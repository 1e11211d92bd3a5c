//! End to end on the regtest harness: one buyer starts many swaps at once with one seller (the
//! engine handles their messages concurrently). Every swap is claimed, the seller's fundings are
//! batched and none of them is refused by the chain (concurrent funding flushes once built
//! fundings on the change of fundings not broadcast yet: orphans, and fundings that never
//! confirmed). The buyer's requests all come from one Nostr key, so both nodes raise their
//! per-sender limits (`[peer_limits]`, which this also exercises).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::time::Duration;

use anyhow::{ensure, Result};
use looper_regtest::harness::{wait_until, Harness, HarnessConfig, NodeSpec, PeerLimits};

use e2e_common::scratch;

/// Buyers, each with its channel to the seller.
const BUYERS: usize = 2;
/// Swaps each buyer starts at once (more than the default per-sender burst of 5 requests).
const SWAPS: usize = 10;
/// Small swaps, so that all of them fit in the channel's in-flight limit at once.
const AMOUNT: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_many_swaps_at_once_are_funded_in_order_and_claimed() -> Result<()> {
    let scratch = scratch()?;
    let mut c = HarnessConfig::new(&scratch.dir, env!("CARGO_BIN_EXE_looper-node"));
    let limits = Some(PeerLimits::for_swaps_at_once(SWAPS as u32));
    let mut seller = NodeSpec::seller("seller");
    seller.peer_limits = limits;
    c.nodes = vec![seller];
    for i in 0..BUYERS {
        let mut buyer = NodeSpec::buyer(format!("buyer{i}"));
        buyer.peer_limits = limits;
        // A claim of a 20 000 sat swap is unaffordable at the default cap of 200 sat/vB.
        buyer.max_fee_rate_sat_vb = Some(50);
        c.nodes.push(buyer);
    }
    c.channel_sat = AMOUNT * SWAPS as u64 * 10 + 100_000;
    let harness = Harness::start(c).await?;
    let h = &harness;
    let mut offers = Vec::new();
    for i in 0..BUYERS {
        offers.push(h.best_offer(&format!("buyer{i}"), AMOUNT).await?);
    }
    let _miner = h.start_miner(Duration::from_secs(1));
    let mut calls = tokio::task::JoinSet::new();
    for (i, offer) in offers.iter().enumerate() {
        for _ in 0..SWAPS {
            let (api, offer) = (h.node(&format!("buyer{i}"))?.api().clone(), offer.clone());
            calls.spawn(async move { api.swap_out(&offer, AMOUNT, AMOUNT / 10).await });
        }
    }
    let mut ids = Vec::new();
    while let Some(r) = calls.join_next().await {
        ids.push(r??);
    }
    let ids = &ids;
    let states = wait_until("every swap final", Duration::from_secs(240), || async move {
        let mut done = Vec::new();
        for i in 0..BUYERS {
            let list = h.node(&format!("buyer{i}")).ok()?.api().swaps().await.ok()?;
            done.extend(
                list.iter()
                    .filter(|s| ids.contains(&s.swap_id) && s.status.is_final())
                    .map(|s| s.state.clone()),
            );
        }
        (done.len() == BUYERS * SWAPS).then_some(done)
    })
    .await?;
    ensure!(states.iter().all(|s| s == "Claimed"), "final states {states:?}");
    let log = strip_ansi(&std::fs::read_to_string(h.node("seller")?.log_file())?);
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("broadcast failed") && l.contains("purpose=Funding"))
        .collect();
    ensure!(refused.is_empty(), "fundings refused by the chain: {refused:#?}");
    let fundings = log.lines().filter(|l| l.contains("purpose=Funding")).count();
    ensure!(
        fundings >= BUYERS * SWAPS,
        "{fundings} funding broadcasts for {} swaps",
        BUYERS * SWAPS
    );
    harness.stop().await;
    Ok(())
}

/// The text without its terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
