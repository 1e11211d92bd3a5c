//! `looper in`: discover loop-in offers, quote, confirm, take, follow. This node locks on-chain
//! BTC and is paid over Lightning (its inbound liquidity: outbound capacity to spend later).

use std::time::Instant;

use clap::Args;
use looper_api::{InfoResponse, SwapInRequest};
use looper_protocol::SwapDirection;
use serde_json::json;

use super::offers::{estimate_for, fetch, Candidate, Quote, FUNDING_VSIZE_VB};
use super::out::parse_address;
use super::swaps::start_and_follow;
use super::{confirm, parse_sat, Ctx};
use crate::error::{CliError, CliResult};
use crate::output::{duration, key_values, print_json_line, sat, short};

/// `looper in`.
#[derive(Debug, Args)]
pub struct InArgs {
    /// Amount to lock on-chain, in satoshis (you are paid that less the maker's fees over
    /// Lightning).
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub amount: u64,
    /// Take this offer (id from `looper offers --in`).
    #[arg(long, value_name = "ID")]
    pub offer: Option<String>,
    /// Refuse offers whose fees (swap fee + the maker's on-chain fee) are above this, in
    /// satoshis.
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub max_total_fee: Option<u64>,
    /// Where a refund goes if the maker never pays (default: a new address of the node's
    /// wallet).
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub refund_address: Option<String>,
    /// Fee rate for the funding fee estimate, in sat/vB (default: the node's estimate for the
    /// funding's confirmation target).
    #[arg(long, value_name = "SAT_PER_VB", value_parser = parse_sat)]
    pub fee_rate: Option<u64>,
    /// Confirmation target of this swap's funding transaction, in blocks (default: the node's
    /// `fees.funding_conf_target`, 6). A funding of its own target is not batched with the
    /// node's other fundings.
    #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u16).range(1..=1008))]
    pub conf_target: Option<u16>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// The quote shown before asking; `conf_target`: the funding's own target the estimate is for.
pub fn render_quote(c: &Candidate, q: &Quote, conf_target: Option<u16>) -> String {
    let mut out = format!(
        "Loop in {} to offer {} (maker {})\n",
        sat(q.amount_sat),
        c.offer.offer_id,
        short(&c.seller)
    );
    let pairs = vec![
        ("total cost", sat(q.total_cost_sat())),
        ("  swap fee", sat(q.swap_fee_sat)),
        ("  maker's on-chain fee", sat(q.funding_fee_sat)),
        (
            "  funding fee (est.)",
            format!(
                "{} ({FUNDING_VSIZE_VB} vB x {} sat/vB{})",
                sat(q.claim_fee_sat),
                q.fee_rate_sat_vb,
                conf_target.map(|t| format!(", target {t} blocks")).unwrap_or_default()
            ),
        ),
        ("you lock (on-chain)", sat(q.pay_sat())),
        ("you receive (Lightning)", sat(q.receive_sat())),
        ("confirmations", c.offer.min_confirmations.to_string()),
        ("refund after", format!("{} blocks if the maker never pays", c.offer.timeout_delta)),
    ];
    out.push_str(&key_values(&pairs));
    out
}

/// Runs `looper in`.
pub async fn loop_in(ctx: &Ctx, args: &InArgs) -> CliResult<()> {
    let client = ctx.client()?;
    let info: InfoResponse = client.get("/v1/info", "get the node's info").await?;
    let amount = args.amount;
    if let Some(max) = info.max_swap_amount_sat.filter(|max| amount > *max) {
        return Err(CliError::failure(
            format!("cannot loop in {}", sat(amount)),
            format!("it is above the node's safety.max_swap_amount_sat ({})", sat(max)),
            "swap less, or raise safety.max_swap_amount_sat in the node's looper.toml",
        ));
    }
    let estimate = args.conf_target.and_then(|t| estimate_for(&info, t));
    let rate = args.fee_rate.or(estimate).unwrap_or(info.fee_rate_sat_vb).max(1);
    // The target the estimate is for (none when --fee-rate set the rate).
    let shown_target = args.conf_target.filter(|_| args.fee_rate.is_none());
    let list = fetch(&client, amount, rate, SwapDirection::LoopIn).await?;
    let chosen = match &args.offer {
        Some(id) => list.iter().find(|c| c.offer.offer_id == *id).ok_or_else(|| {
            CliError::failure(
                format!("cannot take offer {id}"),
                format!("no live loop-in offer {id} covers {} ({} do)", sat(amount), list.len()),
                format!("list them with `looper offers --in --amount {amount}`"),
            )
        })?,
        None => list.first().ok_or_else(|| {
            CliError::failure(
                format!("cannot loop in {}", sat(amount)),
                "no live loop-in offer covers this amount",
                "see the ranges on offer with `looper offers --in --amount SAT`",
            )
        })?,
    };
    let quote = chosen.quote.ok_or_else(|| {
        CliError::failure("cannot quote the offer", "it does not cover the amount", "")
    })?;
    let offer_id = chosen.offer.offer_id.clone();
    let fees = quote.swap_fee_sat.saturating_add(quote.funding_fee_sat);
    if let Some(max) = args.max_total_fee.filter(|max| fees > *max) {
        return Err(CliError::failure(
            format!("cannot take offer {offer_id}"),
            format!("its fees {} are above --max-total-fee {}", sat(fees), sat(max)),
            format!("raise --max-total-fee or pick another offer: `looper offers --in --amount {amount}`"),
        ));
    }
    if ctx.json() {
        let mut q = quote.to_json();
        if let Some(t) = shown_target {
            q["conf_target"] = json!(t);
        }
        print_json_line(&json!({
            "type": "quote", "maker": chosen.seller, "offer_id": offer_id, "quote": q,
        }));
    } else {
        print!("{}", render_quote(chosen, &quote, shown_target));
    }
    confirm("Take this offer?", args.yes)?;

    let start = Instant::now();
    let body = SwapInRequest {
        offer_id: Some(offer_id.clone()),
        offer: Some(chosen.offer.clone()),
        maker: chosen.seller.clone(),
        amount_sat: amount,
        max_total_fee_sat: args.max_total_fee.or(Some(fees)),
        refund_address: args.refund_address.clone(),
        conf_target: args.conf_target,
    };
    let (swap_id, follower) =
        start_and_follow(ctx, &client, "/v1/swaps/in", &body, &offer_id, start).await?;
    let o = &follower.outcome;
    let elapsed = start.elapsed().as_secs();
    if ctx.json() {
        print_json_line(&json!({
            "type": "result",
            "swap_id": swap_id,
            "status": if o.succeeded { "succeeded" } else { "failed" },
            "state": o.state,
            "received_sat": if o.succeeded { Some(quote.receive_sat()) } else { None },
            "swap_fee_sat": quote.swap_fee_sat,
            "funding_fee_sat": quote.funding_fee_sat,
            "elapsed_secs": elapsed,
        }));
    }
    if !o.succeeded {
        return Err(CliError::failure(
            format!("swap {swap_id} did not succeed"),
            format!("it ended in state {}", o.state),
            format!("see `looper swap {swap_id}`; a lock the maker did not pay for is refunded to this node's wallet"),
        ));
    }
    if !ctx.json() {
        println!(
            "done: received {} over Lightning for {} locked (swap fee {} + maker's on-chain fee {}), took {}",
            sat(quote.receive_sat()),
            sat(amount),
            sat(quote.swap_fee_sat),
            sat(quote.funding_fee_sat),
            duration(elapsed)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use looper_api::{OfferContext, OfferTerms};

    use super::*;
    use crate::commands::offers::quote;

    #[test]
    fn the_quote_names_the_fundings_own_target() {
        let offer = OfferTerms::default().loop_in_offer(OfferContext {
            offer_id: "in".into(),
            network: bitcoin::Network::Regtest,
            ln_node_id: "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
                .parse()
                .unwrap(),
            ln_address: None,
            relays: vec!["ws://r".into()],
            expires_at: 1,
            fee_rate_sat_vb: 2,
        });
        let q = quote(&offer, 100_000, 25).unwrap();
        let c = Candidate {
            seller: "ab".repeat(32),
            offer,
            quote: Some(q),
            history: Default::default(),
        };
        let with = render_quote(&c, &q, Some(1));
        assert!(with.contains("x 25 sat/vB, target 1 blocks)"), "{with}");
        let without = render_quote(&c, &q, None);
        assert!(without.contains("x 25 sat/vB)"), "{without}");
    }
}
