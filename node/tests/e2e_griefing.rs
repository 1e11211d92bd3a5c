//! Griefing a seller on the regtest harness (issue 15.7): attackers with fresh Nostr keys take
//! the seller's offer, pay the prepay it asks for (through a real Lightning channel) and never pay
//! the swap invoice, while an honest buyer swaps at the same time. The seller must lock nothing
//! before a prepay is in, spend at most what the attackers paid it (funding and refund fees
//! against prepays), and serve the honest buyer. The figures go to `docs/benchmarks.md`
//! ("Griefing").
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod e2e_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use bitcoin::secp256k1::{rand::thread_rng, rand::RngCore, Secp256k1, SecretKey};
use bitcoin::Network;
use looper_node::nostr::{MemoryProcessedEvents, NostrTransport, PublicKey, TransportConfig};
use looper_protocol::messages::{Envelope, Message, SwapRequest};
use looper_protocol::{SwapDirection, SwapId};
use looper_regtest::harness::{report_follow, wait_until, Harness, HarnessConfig, NodeSpec};
use serde_json::{json, Value};

use e2e_common::{scratch, state_of, AMOUNT, MAX_FEE};

/// Attackers, one fresh Nostr key each.
const ATTACKERS: usize = 4;
/// The seller's prepay.
const PREPAY_SAT: u64 = 1_000;
const WAIT: Duration = Duration::from_secs(180);

async fn seller_wallet(h: &Harness) -> Result<u64> {
    h.sync_all().await;
    Ok(h.node("seller")?.api().wallet_balance().await?.total_sat)
}

/// The buyer node's spendable Lightning balance: it pays the honest swap and, for the
/// attackers, their prepays (the seller's own outbound capacity stays under its channel reserve).
async fn buyer_ln_msat(h: &Harness) -> Result<u64> {
    Ok(h.node("buyer")?.api().ln_balance().await?.lightning_outbound_msat)
}

/// One attacker: asks for a swap under a fresh key, pays the prepay through the buyer node's
/// channel (the attacker's money) and then goes silent. Returns the swap id.
async fn attack(h: &Harness, seller: &PublicKey, offer_id: &str) -> Result<SwapId> {
    let keys = nostr_sdk::Keys::generate();
    let config =
        TransportConfig::new(keys.secret_key().to_secret_bytes(), vec![h.relay_url().to_string()]);
    let t = NostrTransport::connect(config, Arc::new(MemoryProcessedEvents::new())).await?;
    let mut incoming = t.incoming().ok_or_else(|| anyhow!("incoming taken"))?;
    let secp = Secp256k1::new();
    let mut secret = [0u8; 32];
    thread_rng().fill_bytes(&mut secret);
    let pk = SecretKey::from_slice(&secret)?.public_key(&secp);
    let mut id = [0u8; 32];
    thread_rng().fill_bytes(&mut id);
    let swap_id = SwapId(id);
    let request = Envelope::new(
        swap_id,
        0,
        Message::SwapRequest(SwapRequest {
            offer_id: offer_id.into(),
            direction: SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: AMOUNT,
            buyer_musig_pubkey: pk,
            buyer_claim_pubkey: pk.x_only_public_key().0,
            max_total_fee_sat: MAX_FEE,
            prepay_accepted: true,
        }),
    );
    t.send(seller, &[], &request).await?;
    let accept = tokio::time::timeout(WAIT, async {
        while let Some(m) = incoming.recv().await {
            if let Ok(Envelope { body: Message::SwapAccept(a), .. }) = m.message {
                return Some(a);
            }
        }
        None
    })
    .await
    .context("no swap_accept for the attacker")?
    .ok_or_else(|| anyhow!("transport closed"))?;
    let prepay = accept.prepay_invoice.ok_or_else(|| anyhow!("no prepay asked"))?;
    let _: Value = h.node("buyer")?.api().post("/v1/ln/pay", &json!({ "invoice": prepay })).await?;
    t.shutdown().await;
    Ok(swap_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_griefing_with_prepays_costs_the_seller_nothing_net() -> Result<()> {
    let s = scratch()?;
    let mut seller = NodeSpec::seller("seller");
    seller.offer.prepay_sat = looper_api::Prepay::Sat(PREPAY_SAT);
    seller.offer.claim_margin = 2;
    seller.offer.timeout_delta = 60;
    let mut c = HarnessConfig::new(&s.dir, env!("CARGO_BIN_EXE_looper-node"));
    c.nodes = vec![seller, NodeSpec::buyer("buyer")];
    c.channel_sat = 10 * AMOUNT + 100_000;
    for n in &mut c.nodes {
        n.buyer_min_claim_margin = Some(2);
    }
    let h = Harness::start(c).await?;
    let offer = h.best_offer("buyer", AMOUNT).await?;
    let seller_pk = PublicKey::from_hex(&offer.seller)?;
    let wallet_before = seller_wallet(&h).await?;
    let ln_before = buyer_ln_msat(&h).await?;

    // 1. The attack: every attacker's HTLC gets funded once its prepay is in.
    let t0 = Instant::now();
    let mut attacks = Vec::new();
    for _ in 0..ATTACKERS {
        attacks.push(attack(&h, &seller_pk, &offer.offer.offer_id).await?);
    }
    let miner = h.start_miner(Duration::from_secs(1));
    let seller = h.node("seller")?.api().clone();
    wait_until("the attackers' htlcs funded", WAIT, || async {
        let mut all = true;
        for id in &attacks {
            all &= seller.swap(&id.to_string()).await.ok()?.state == "Funded";
        }
        all.then_some(())
    })
    .await?;
    let locked_sat = ATTACKERS as u64 * AMOUNT;

    // 2. An honest buyer during the attack.
    let id = h.node("buyer")?.api().swap_out(&offer, AMOUNT, MAX_FEE).await?;
    let mut r = report_follow(h.node("buyer")?, &id, WAIT).await?;
    r.fill_chain_data(&h.chain().esplora_url()).await;
    ensure!(state_of(&h, "buyer", &id).await == "Claimed", "honest swap {r:?}");
    wait_until("seller side of the honest swap", WAIT, || async {
        (state_of(&h, "seller", &id).await == "Claimed").then_some(())
    })
    .await?;

    // 3. The attackers' HTLCs come back to the seller (the refund leaf at the timeout).
    wait_until("the attackers' htlcs refunded", Duration::from_secs(300), || async {
        let mut all = true;
        for id in &attacks {
            all &= state_of(&h, "seller", &id.to_string()).await == "Refunded";
        }
        all.then_some(())
    })
    .await?;
    miner.stop();
    let wallet_after = seller_wallet(&h).await?;
    let ln_after = buyer_ln_msat(&h).await?;

    // What the attack cost the seller on chain: its wallet's loss less the honest swap's HTLC and
    // funding fee; what it cost the attackers: the prepays (what left the buyer node's channel
    // less the honest swap's prepay and invoice).
    let honest_onchain = r.amount_sat + r.funding_fee_paid_sat;
    let seller_spent = wallet_before
        .checked_sub(wallet_after)
        .and_then(|d| d.checked_sub(honest_onchain))
        .ok_or_else(|| {
            anyhow!("wallet {wallet_before} -> {wallet_after}, honest {honest_onchain}")
        })?;
    let honest_msat = (r.amount_sat + r.swap_fee_sat + r.funding_fee_sat) * 1000;
    let attackers_paid = ln_before
        .checked_sub(ln_after)
        .and_then(|d| d.checked_sub(honest_msat))
        .map(|d| d / 1000)
        .ok_or_else(|| anyhow!("buyer channel {ln_before} -> {ln_after} msat"))?;
    ensure!(attackers_paid == ATTACKERS as u64 * PREPAY_SAT, "attackers paid {attackers_paid} sat");
    let ratio = seller_spent as f64 / attackers_paid as f64;
    println!(
        "FIGURES griefing: {ATTACKERS} attackers (fresh keys) x {AMOUNT} sat, prepay {PREPAY_SAT} sat: \
         seller spent {seller_spent} sat on chain (funding + refunds), attackers paid {attackers_paid} sat \
         (ratio {ratio:.2}), capital locked {locked_sat} sat for 60 blocks, honest swaps 1/1 claimed, \
         wall {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    ensure!(ratio <= 1.0, "the seller spent more than the attackers paid: {ratio:.2}");
    h.stop().await;
    Ok(())
}
