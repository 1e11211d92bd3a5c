//! `looper stats`: the operator's view of every swap of the node (`GET /v1/stats`).

use looper_api::{BuyerStats, DirectionStats, OutcomeCounts, SellerStats, StatsResponse};
use looper_protocol::SwapDirection;

use super::Ctx;
use crate::error::CliResult;
use crate::output::{group, key_values, print_json, sat};

/// `GET /v1/stats`.
pub async fn stats(ctx: &Ctx) -> CliResult<()> {
    let client = ctx.client()?;
    let v: StatsResponse = client.get("/v1/stats", "get the swap stats").await?;
    if ctx.json() {
        print_json(&v);
    } else {
        print!("{}", render_stats(&v));
    }
    Ok(())
}

/// The human view of `/v1/stats`: per direction, the seller's (maker's) swaps, then the
/// buyer's (taker's).
pub fn render_stats(v: &StatsResponse) -> String {
    if v.swaps == 0 {
        return "no swaps yet (start one with `looper out --amount SAT`)\n".into();
    }
    let mut out = String::new();
    for (i, d) in v.directions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&render_direction(d));
    }
    if v.unreadable > 0 {
        out.push_str(&format!(
            "\n{} swap(s) whose record does not read are counted above, in no amount\n",
            v.unreadable
        ));
    }
    out
}

fn direction_name(d: SwapDirection) -> &'static str {
    match d {
        SwapDirection::LoopOut => "loop out",
        SwapDirection::LoopIn => "loop in",
    }
}

fn render_direction(d: &DirectionStats) -> String {
    let name = direction_name(d.direction);
    let mut out = String::new();
    out.push_str(&section(&format!("{name}, as seller (maker)"), &d.seller.outcomes, || {
        seller_lines(&d.seller)
    }));
    out.push('\n');
    out.push_str(&section(&format!("{name}, as buyer (taker)"), &d.buyer.outcomes, || {
        buyer_lines(&d.buyer)
    }));
    out
}

/// A titled block of `key: value` lines, indented; one line when the role has no swap.
fn section(
    title: &str,
    outcomes: &OutcomeCounts,
    lines: impl FnOnce() -> Vec<(&'static str, String)>,
) -> String {
    let total = outcomes.pending.saturating_add(outcomes.succeeded).saturating_add(outcomes.failed);
    if total == 0 {
        return format!("{title}: no swaps\n");
    }
    let mut pairs = vec![(
        "swaps",
        format!(
            "{}: {} pending, {} succeeded, {} failed",
            group(total),
            group(outcomes.pending),
            group(outcomes.succeeded),
            group(outcomes.failed)
        ),
    )];
    if !outcomes.by_state.is_empty() {
        let states: Vec<String> =
            outcomes.by_state.iter().map(|(s, n)| format!("{s} {}", group(*n))).collect();
        pairs.push(("finished", states.join(", ")));
    }
    pairs.extend(lines());
    let mut out = format!("{title}:\n");
    for line in key_values(&pairs).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn seller_lines(s: &SellerStats) -> Vec<(&'static str, String)> {
    let unknown = if s.refund_fees_unknown > 0 {
        format!("; {} refund fee(s) unknown, counted 0", group(s.refund_fees_unknown))
    } else {
        String::new()
    };
    let griefing = match s.griefing_loss_sat {
        0 => "0 sat".to_string(),
        loss if loss > 0 => format!(
            "{} (refund fees {} - prepays kept {})",
            sat(loss.unsigned_abs()),
            group(s.onchain_fees_paid_sat),
            group(s.prepays_kept_sat)
        ),
        gain => {
            format!("none: the prepays kept exceed the refund fees by {}", sat(gain.unsigned_abs()))
        }
    };
    let mut lines = vec![
        ("volume", sat(s.volume_sat)),
        ("fees earned", format!("{} (swap + funding fees)", sat(s.fees_earned_sat))),
        ("prepays kept", format!("{} (griefing compensation)", sat(s.prepays_kept_sat))),
        ("on-chain fees paid", format!("{} (refunds{unknown})", sat(s.onchain_fees_paid_sat))),
        ("loss to griefing", griefing),
    ];
    if s.refunded_funding_fees_sat > 0 {
        lines.push((
            "refunded fundings",
            format!(
                "{} quoted funding fees (an estimate: funding fees are not in the records)",
                sat(s.refunded_funding_fees_sat)
            ),
        ));
    }
    lines
}

fn buyer_lines(b: &BuyerStats) -> Vec<(&'static str, String)> {
    vec![
        ("volume", sat(b.volume_sat)),
        ("fees paid", format!("{} (swap + funding fees)", sat(b.fees_paid_sat))),
        ("on-chain fees paid", format!("{} (claims)", sat(b.onchain_fees_paid_sat))),
        ("prepays lost", sat(b.prepays_lost_sat)),
        ("lost", format!("{} (paid, HTLC refunded to the seller)", sat(b.lost_sat))),
        ("total cost", format!("{} (Lightning routing fees not included)", sat(b.total_cost_sat))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsResponse {
        let outcomes = |pending, succeeded, failed, states: &[(&str, u64)]| OutcomeCounts {
            pending,
            succeeded,
            failed,
            by_state: states.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        };
        StatsResponse {
            swaps: 11,
            unreadable: 0,
            directions: vec![DirectionStats {
                direction: SwapDirection::LoopOut,
                buyer: BuyerStats {
                    outcomes: outcomes(1, 1, 3, &[("Aborted", 2), ("Claimed", 1), ("Lost", 1)]),
                    volume_sat: 100_000,
                    fees_paid_sat: 1_550,
                    onchain_fees_paid_sat: 111,
                    prepays_lost_sat: 2_000,
                    lost_sat: 100_550,
                    total_cost_sat: 104_211,
                },
                seller: SellerStats {
                    outcomes: outcomes(1, 1, 4, &[("Aborted", 1), ("Claimed", 1), ("Refunded", 3)]),
                    volume_sat: 100_000,
                    fees_earned_sat: 1_550,
                    prepays_kept_sat: 1_000,
                    onchain_fees_paid_sat: 1_250,
                    refund_fees_unknown: 1,
                    refunded_funding_fees_sat: 900,
                    griefing_loss_sat: 250,
                },
            }],
        }
    }

    #[test]
    fn renders_each_role_of_each_direction() {
        let text = render_stats(&sample());
        assert_eq!(
            text,
            "\
loop out, as seller (maker):
  swaps:               6: 1 pending, 1 succeeded, 4 failed
  finished:            Aborted 1, Claimed 1, Refunded 3
  volume:              100,000 sat
  fees earned:         1,550 sat (swap + funding fees)
  prepays kept:        1,000 sat (griefing compensation)
  on-chain fees paid:  1,250 sat (refunds; 1 refund fee(s) unknown, counted 0)
  loss to griefing:    250 sat (refund fees 1,250 - prepays kept 1,000)
  refunded fundings:   900 sat quoted funding fees (an estimate: funding fees are not in the records)

loop out, as buyer (taker):
  swaps:               5: 1 pending, 1 succeeded, 3 failed
  finished:            Aborted 2, Claimed 1, Lost 1
  volume:              100,000 sat
  fees paid:           1,550 sat (swap + funding fees)
  on-chain fees paid:  111 sat (claims)
  prepays lost:        2,000 sat
  lost:                100,550 sat (paid, HTLC refunded to the seller)
  total cost:          104,211 sat (Lightning routing fees not included)
"
        );
    }

    #[test]
    fn a_net_gain_a_role_without_swaps_and_no_swaps_at_all() {
        let mut v = sample();
        let d = &mut v.directions[0];
        d.seller.griefing_loss_sat = -550;
        d.buyer = BuyerStats::default();
        v.unreadable = 2;
        let text = render_stats(&v);
        assert!(
            text.contains(
                "loss to griefing:    none: the prepays kept exceed the refund fees by 550 sat\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nloop out, as buyer (taker): no swaps\n"), "{text}");
        assert!(text
            .ends_with("2 swap(s) whose record does not read are counted above, in no amount\n"));
        let empty = StatsResponse { swaps: 0, unreadable: 0, directions: Vec::new() };
        assert_eq!(
            render_stats(&empty),
            "no swaps yet (start one with `looper out --amount SAT`)\n"
        );
    }

    #[test]
    fn json_is_the_node_answer() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["swaps"], 11);
        let d = &v["directions"][0];
        assert_eq!(d["direction"], "loop_out");
        assert_eq!(d["seller"]["griefing_loss_sat"], 250);
        assert_eq!(d["seller"]["outcomes"]["by_state"]["Refunded"], 3);
        assert_eq!(d["buyer"]["total_cost_sat"], 104_211);
        let back: StatsResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }
}
