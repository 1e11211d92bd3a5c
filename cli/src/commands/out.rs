//! `looper out`: discover, quote, confirm, take, follow.

use std::time::Instant;

use clap::Args;
use looper_api::{ErrorBody, ErrorCode, InfoResponse, SwapOutRequest};
use serde_json::json;

use super::offers::{claim_fee_rate_of, fetch, Candidate, Quote, CLAIM_VSIZE_VB};
use super::swaps::start_and_follow;
use super::{confirm, parse_sat, Ctx};
use crate::error::{CliError, CliResult};
use crate::output::{duration, key_values, num, print_json_line, sat, short};

/// `looper out`.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// Amount to receive on-chain (before the claim fee), in satoshis.
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub amount: u64,
    /// Take this offer (id from `looper offers`).
    #[arg(long, value_name = "ID", conflicts_with = "best")]
    pub offer: Option<String>,
    /// Take the cheapest offer for the amount (the default), skipping sellers that left one of
    /// this node's swaps unfunded without a word (see `looper offers`).
    #[arg(long)]
    pub best: bool,
    /// Refuse offers whose total cost is above this, in satoshis.
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub max_total_fee: Option<u64>,
    /// Where the claimed coins go (default: a new address of the node's wallet). The node
    /// checks that it is for its network.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub address: Option<String>,
    /// Fee rate for the claim fee estimate, in sat/vB (default: the node's estimate for the
    /// claim's confirmation target if it gives one, else 2).
    #[arg(long, value_name = "SAT_PER_VB", value_parser = parse_sat)]
    pub fee_rate: Option<u64>,
    /// Confirmation target of the claim, in blocks (default: the node's
    /// `fees.claim_conf_target`, 9). It shortens as the claim's deadline nears, and the claim is
    /// replaced with a higher fee when it does not confirm.
    #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u16).range(1..=1008), conflicts_with = "fast")]
    pub conf_target: Option<u16>,
    /// Refuse offers whose prepay (paid before the seller locks, lost if it never does) is
    /// above this, in satoshis (default: the node's `buyer.max_prepay_sat`, 10 000).
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub max_prepay: Option<u64>,
    /// Claim as fast as possible: `--conf-target 2` (costs more).
    #[arg(long)]
    pub fast: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// The quote shown before asking.
pub fn render_quote(c: &Candidate, q: &Quote, conf_target: Option<u16>) -> String {
    let mut out = format!(
        "Loop out {} from offer {} (seller {})\n",
        sat(q.amount_sat),
        c.offer.offer_id,
        short(&c.seller)
    );
    let mut pairs = vec![
        ("total cost", sat(q.total_cost_sat())),
        ("  swap fee", sat(q.swap_fee_sat)),
        ("  funding fee", sat(q.funding_fee_sat)),
        (
            "  claim fee (est.)",
            match conf_target {
                Some(t) => format!(
                    "{} ({CLAIM_VSIZE_VB} vB x {} sat/vB, target {t} blocks)",
                    sat(q.claim_fee_sat),
                    q.fee_rate_sat_vb
                ),
                None => format!(
                    "{} ({CLAIM_VSIZE_VB} vB x {} sat/vB)",
                    sat(q.claim_fee_sat),
                    q.fee_rate_sat_vb
                ),
            },
        ),
        ("you pay (Lightning)", sat(q.pay_sat())),
        ("you receive (on-chain)", sat(q.receive_sat())),
    ];
    if q.prepay_sat > 0 {
        pairs.push(("  of which prepaid", sat(q.prepay_sat)));
    }
    pairs.push(("confirmations", c.offer.min_confirmations.to_string()));
    pairs.push(("timeout", format!("{} blocks", c.offer.timeout_delta)));
    out.push_str(&key_values(&pairs));
    out
}

/// The claim's confirmation target with `--fast`.
pub const FAST_CONF_TARGET: u16 = 2;

/// Runs `looper out`.
pub async fn out(ctx: &Ctx, args: &OutArgs) -> CliResult<()> {
    let client = ctx.client()?;
    let conf_target = if args.fast { Some(FAST_CONF_TARGET) } else { args.conf_target };
    let info: InfoResponse = client.get("/v1/info", "get the node's info").await?;
    let amount = args.amount;
    // The node's ceiling, before any offer is looked up or shown (the node checks it again).
    if let Some(max) = info.max_swap_amount_sat.filter(|max| amount > *max) {
        return Err(above_ceiling(amount, max));
    }
    let (rate, shown_target) = match args.fee_rate {
        Some(rate) => (rate, None),
        None => claim_fee_rate_of(&info, conf_target),
    };
    let list = fetch(&client, amount, rate, looper_protocol::SwapDirection::LoopOut).await?;
    let chosen = match &args.offer {
        Some(id) => list.iter().find(|c| c.offer.offer_id == *id).ok_or_else(|| {
            CliError::failure(
                format!("cannot take offer {id}"),
                format!("no live offer {id} covers {} ({} offers do)", sat(amount), list.len()),
                format!("list them with `looper offers --amount {amount}`"),
            )
        })?,
        // The cheapest offer of a seller that never left one of our swaps unfunded.
        None => list.iter().find(|c| !c.has_no_shows()).ok_or_else(|| {
            if list.is_empty() {
                CliError::failure(
                    format!("cannot loop out {}", sat(amount)),
                    "no live offer covers this amount",
                    "see the ranges on offer with `looper offers`",
                )
            } else {
                CliError::failure(
                    format!("cannot loop out {}", sat(amount)),
                    "every seller offering this amount left one of this node's swaps unfunded",
                    "see their track in `looper offers`, and name one with `--offer ID` to take it anyway",
                )
            }
        })?,
    };
    let quote = chosen.quote.ok_or_else(|| {
        CliError::failure("cannot quote the offer", "it does not cover the amount", "")
    })?;
    let offer_id = chosen.offer.offer_id.clone();
    if let Some(max) = args.max_total_fee {
        if quote.total_cost_sat() > max {
            return Err(CliError::failure(
                format!("cannot take offer {offer_id}"),
                format!(
                    "its total cost {} is above --max-total-fee {}",
                    sat(quote.total_cost_sat()),
                    sat(max)
                ),
                format!("raise --max-total-fee or pick another offer: `looper offers --amount {amount}`"),
            ));
        }
    }
    if ctx.json() {
        let mut q = quote.to_json();
        q["conf_target"] = json!(shown_target);
        print_json_line(&json!({
            "type": "quote", "seller": chosen.seller, "offer_id": offer_id, "quote": q,
        }));
    } else {
        print!("{}", render_quote(chosen, &quote, shown_target));
    }
    confirm("Take this offer?", args.yes)?;

    let start = Instant::now();
    let body = SwapOutRequest {
        offer_id: Some(offer_id.clone()),
        offer: Some(chosen.offer.clone()),
        seller: chosen.seller.clone(),
        amount_sat: amount,
        max_total_fee_sat: args.max_total_fee,
        max_route_cltv: None,
        min_confirmations: None,
        conf_target,
        max_prepay_sat: args.max_prepay,
        address: args.address.clone(),
    };
    let (swap_id, follower) =
        start_and_follow(ctx, &client, "/v1/swaps/out", &body, &offer_id, start).await?;
    let o = &follower.outcome;
    let elapsed = start.elapsed().as_secs();
    let agreed = o.quote.clone().unwrap_or(serde_json::Value::Null);
    let (swap_fee, funding_fee) = if agreed.is_null() {
        (quote.swap_fee_sat, quote.funding_fee_sat)
    } else {
        (num(&agreed, "swap_fee_sat"), num(&agreed, "funding_fee_sat"))
    };
    let claim_fee = o.claim_fee_sat.unwrap_or(quote.claim_fee_sat);
    let total = swap_fee.saturating_add(funding_fee).saturating_add(claim_fee);
    if ctx.json() {
        print_json_line(&json!({
            "type": "result",
            "swap_id": swap_id,
            "status": if o.succeeded { "succeeded" } else { "failed" },
            "state": o.state,
            "claim_txid": o.claim_txid,
            "total_cost_sat": if o.succeeded { Some(total) } else { None },
            "swap_fee_sat": swap_fee,
            "funding_fee_sat": funding_fee,
            "claim_fee_sat": o.claim_fee_sat,
            "elapsed_secs": elapsed,
        }));
    }
    if !o.succeeded {
        return Err(CliError::failure(
            format!("swap {swap_id} did not succeed"),
            format!("it ended in state {}", o.state),
            format!("see `looper swap {swap_id}`; funds locked on-chain are refunded to the seller after the timeout, an unpaid invoice costs nothing"),
        ));
    }
    if !ctx.json() {
        println!(
            "done: claim txid {}, total cost {} (swap fee {} + funding fee {} + claim fee {}), took {}",
            o.claim_txid.clone().unwrap_or_else(|| "-".into()),
            sat(total),
            sat(swap_fee),
            sat(funding_fee),
            sat(claim_fee),
            duration(elapsed)
        );
    }
    Ok(())
}

/// The refusal of an amount above the node's `safety.max_swap_amount_sat`, with the node's error
/// code (`amount_above_limit`, printed on stdout with `--json` as the node's errors are).
fn above_ceiling(amount: u64, max: u64) -> CliError {
    let why =
        format!("{} is above the node's safety.max_swap_amount_sat ({})", sat(amount), sat(max));
    let mut e = CliError::failure(
        format!("cannot loop out {}", sat(amount)),
        why.clone(),
        "swap less, or raise safety.max_swap_amount_sat in the [safety] section of the node's looper.toml and restart it",
    );
    e.api = Some(Box::new(ErrorBody::new(ErrorCode::AmountAboveLimit, why)));
    e
}

/// `--address`: a Bitcoin address (any network here; the node checks its own).
pub(super) fn parse_address(s: &str) -> Result<String, String> {
    let s = s.trim();
    s.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .map(|_| s.to_string())
        .map_err(|e| format!("not a bitcoin address: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ceiling_refusal_is_typed() {
        let e = above_ceiling(2_000_000, 1_000_000);
        assert_eq!(e.code(), Some(&ErrorCode::AmountAboveLimit));
        assert_eq!(e.exit, crate::error::EXIT_FAILURE);
        assert!(
            e.to_string().starts_with(
                "cannot loop out 2,000,000 sat: 2,000,000 sat is above the node's \
                 safety.max_swap_amount_sat (1,000,000 sat) (swap less, or raise"
            ),
            "{e}"
        );
        assert_eq!(e.to_json().unwrap()["error"]["code"], "amount_above_limit");
    }
}
