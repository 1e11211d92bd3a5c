//! `looper autoloop status|set|dry-run`: rules that keep the channels balanced by swapping on
//! their own within a fee budget (`/v1/autoloop`).

use clap::{Args, Subcommand};
use looper_api::{
    AutoloopAction, AutoloopConfig, AutoloopOverride, AutoloopPlan, AutoloopRule, AutoloopStatus,
};
use reqwest::Method;

use super::{parse_sat, Ctx};
use crate::error::{CliError, CliResult};
use crate::output::{date, group, key_values, print_json, short, table, Align};

/// Autoloop commands.
#[derive(Debug, Subcommand)]
pub enum AutoloopCommand {
    /// Rules, budget (spent, left), swaps in flight, why nothing is started if so, the last run.
    #[command(after_help = "Example:\n  looper autoloop status")]
    Status,
    /// Change the rules (node-wide, or of one channel or peer) and the budget; the rest stays.
    #[command(
        after_help = "Examples:\n  looper autoloop set --enable --low 20 --high 80 --max-swap 500000 --budget 20000\n  looper autoloop set --channel 3f1c... --high 70\n  looper autoloop set --peer 02ab... --remove\n  looper autoloop set --disable"
    )]
    Set(SetArgs),
    /// What autoloop would do now and why, per channel (balance, rule, chosen offer, quote);
    /// starts nothing.
    #[command(after_help = "Example:\n  looper autoloop dry-run")]
    DryRun,
}

/// `looper autoloop set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Turn autoloop on.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Turn autoloop off.
    #[arg(long)]
    pub disable: bool,
    /// The rule of this channel (its id) instead of the node-wide rule.
    #[arg(long, value_name = "CHANNEL_ID", conflicts_with = "peer")]
    pub channel: Option<String>,
    /// The rule of every channel with this peer (its node id) instead of the node-wide rule.
    #[arg(long, value_name = "NODE_ID")]
    pub peer: Option<String>,
    /// Remove the rule of --channel or --peer (the node-wide rule applies again).
    #[arg(long)]
    pub remove: bool,
    /// Loop in below this local share of a channel, percent (0: never).
    #[arg(long, value_name = "PCT")]
    pub low: Option<u8>,
    /// Loop out above this local share, percent (100: never).
    #[arg(long, value_name = "PCT")]
    pub high: Option<u8>,
    /// Largest swap.
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub max_swap: Option<u64>,
    /// Least time between two autoloop swaps of one channel, seconds.
    #[arg(long, value_name = "SECS")]
    pub min_interval: Option<u64>,
    /// Most one swap may cost in total (swap fee + on-chain fees).
    #[arg(long, value_name = "SAT")]
    pub max_cost: Option<u64>,
    /// Most one swap may cost, in ppm of its amount (the lower limit applies).
    #[arg(long, value_name = "PPM")]
    pub max_cost_ppm: Option<u32>,
    /// Most fees per budget period.
    #[arg(long, value_name = "SAT")]
    pub budget: Option<u64>,
    /// Length of a budget period, seconds.
    #[arg(long, value_name = "SECS")]
    pub budget_period: Option<u64>,
    /// Most autoloop swaps in flight at once.
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Skip sellers with more unexplained failures than this with this node.
    #[arg(long, value_name = "N")]
    pub max_seller_failures: Option<u32>,
}

/// `looper autoloop ...`.
pub async fn autoloop(ctx: &Ctx, cmd: AutoloopCommand) -> CliResult<()> {
    let client = ctx.client()?;
    match cmd {
        AutoloopCommand::Status => {
            let v: AutoloopStatus = client.get("/v1/autoloop", "read autoloop's status").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!("{}", render_status(&v));
            }
        }
        AutoloopCommand::Set(args) => {
            let now: AutoloopStatus = client.get("/v1/autoloop", "read autoloop's rules").await?;
            let config = apply(now.config, &args)?;
            let v: AutoloopStatus = client
                .send(
                    Method::PUT,
                    "/v1/autoloop",
                    Some(&config),
                    "set autoloop's rules",
                    std::time::Duration::from_secs(30),
                )
                .await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!("{}", render_status(&v));
            }
        }
        AutoloopCommand::DryRun => {
            let v: AutoloopPlan = client
                .send(
                    Method::POST,
                    "/v1/autoloop/dry-run",
                    None::<&()>,
                    "plan autoloop's next run",
                    std::time::Duration::from_secs(60),
                )
                .await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!("{}", render_plan(&v));
            }
        }
    }
    Ok(())
}

/// The settings `args` make of `config`.
fn apply(mut config: AutoloopConfig, args: &SetArgs) -> CliResult<AutoloopConfig> {
    if args.enable {
        config.enabled = true;
    }
    if args.disable {
        config.enabled = false;
    }
    let b = &mut config.budget;
    b.max_fee_sat = args.budget.unwrap_or(b.max_fee_sat);
    b.period_secs = args.budget_period.unwrap_or(b.period_secs);
    b.max_in_flight = args.max_in_flight.unwrap_or(b.max_in_flight);
    config.max_seller_failures = args.max_seller_failures.unwrap_or(config.max_seller_failures);
    let target = |o: &AutoloopOverride| match (&args.channel, &args.peer) {
        (Some(c), _) => o.channel_id.as_ref() == Some(c),
        (_, Some(p)) => o.peer.as_ref() == Some(p),
        _ => false,
    };
    if args.channel.is_none() && args.peer.is_none() {
        if args.remove {
            return Err(CliError::usage(
                "cannot remove the node-wide rule",
                "--remove needs --channel or --peer",
                "turn autoloop off with --disable",
            ));
        }
        config.rule = edit(config.rule, args);
        return Ok(config);
    }
    let existing = config.overrides.iter().position(target);
    if args.remove {
        if let Some(i) = existing {
            config.overrides.remove(i);
        }
        return Ok(config);
    }
    match existing.and_then(|i| config.overrides.get_mut(i)) {
        Some(o) => o.rule = edit(o.rule, args),
        None => {
            let rule = edit(config.rule, args);
            config.overrides.push(AutoloopOverride {
                channel_id: args.channel.clone(),
                peer: args.peer.clone(),
                rule,
            });
        }
    }
    Ok(config)
}

fn edit(mut rule: AutoloopRule, args: &SetArgs) -> AutoloopRule {
    rule.low_pct = args.low.unwrap_or(rule.low_pct);
    rule.high_pct = args.high.unwrap_or(rule.high_pct);
    rule.max_swap_sat = args.max_swap.unwrap_or(rule.max_swap_sat);
    rule.min_interval_secs = args.min_interval.unwrap_or(rule.min_interval_secs);
    rule.max_cost_sat = args.max_cost.unwrap_or(rule.max_cost_sat);
    rule.max_cost_ppm = args.max_cost_ppm.unwrap_or(rule.max_cost_ppm);
    rule
}

fn rule_text(r: &AutoloopRule) -> String {
    format!(
        "keep local share in [{}%, {}%], swaps up to {} sat, at most every {} s, cost at most {} \
         sat or {} ppm",
        r.low_pct,
        r.high_pct,
        group(r.max_swap_sat),
        r.min_interval_secs,
        group(r.max_cost_sat),
        r.max_cost_ppm
    )
}

/// The human text of `GET /v1/autoloop`.
pub fn render_status(v: &AutoloopStatus) -> String {
    let c = &v.config;
    let mut pairs = vec![
        ("autoloop", if c.enabled { "enabled".to_string() } else { "disabled".to_string() }),
        ("rule", rule_text(&c.rule)),
    ];
    let overrides: Vec<String> = c
        .overrides
        .iter()
        .map(|o| {
            let who = match (&o.channel_id, &o.peer) {
                (Some(ch), _) => format!("channel {}", short(ch)),
                (_, Some(p)) => format!("peer {}", short(p)),
                _ => "?".into(),
            };
            format!("{who}: {}", rule_text(&o.rule))
        })
        .collect();
    for o in &overrides {
        pairs.push(("rule of", o.clone()));
    }
    pairs.push((
        "budget",
        format!(
            "{} of {} sat spent, {} left (period of {} s from {}), {} swap(s) in flight (max {})",
            group(v.spent_sat),
            group(c.budget.max_fee_sat),
            group(v.left_sat),
            c.budget.period_secs,
            if v.period_start == 0 { "-".into() } else { date(v.period_start) },
            v.in_flight,
            c.budget.max_in_flight
        ),
    ));
    if let Some(why) = &v.stopped {
        pairs.push(("stopped", why.clone()));
    }
    let mut out = key_values(&pairs);
    if !v.swaps.is_empty() {
        let rows: Vec<Vec<String>> = v
            .swaps
            .iter()
            .map(|s| {
                vec![
                    s.swap_id.clone(),
                    match s.direction {
                        looper_protocol::SwapDirection::LoopIn => "in".into(),
                        _ => "out".into(),
                    },
                    short(&s.channel_id),
                    s.status.to_string(),
                    group(s.amount_sat),
                    group(s.cost_sat),
                    date(s.created_at),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                ("SWAP", Align::Left),
                ("DIR", Align::Left),
                ("CHANNEL", Align::Left),
                ("STATUS", Align::Left),
                ("AMOUNT (sat)", Align::Right),
                ("COST (sat)", Align::Right),
                ("CREATED (unix)", Align::Right),
            ],
            &rows,
        ));
    }
    if let Some(run) = &v.last_run {
        out.push_str("\nlast run:\n");
        out.push_str(&render_plan(run));
    }
    out
}

/// The human text of a plan: one block per channel.
pub fn render_plan(v: &AutoloopPlan) -> String {
    let mut out = String::new();
    if let Some(why) = &v.stopped {
        out.push_str(&format!("autoloop starts nothing now: {why}\n"));
    }
    if v.decisions.is_empty() {
        out.push_str("no channels\n");
    }
    for d in &v.decisions {
        let action = match d.action {
            AutoloopAction::None => "nothing",
            AutoloopAction::LoopOut => "loop out",
            AutoloopAction::LoopIn => "loop in",
        };
        let mut pairs = vec![
            (
                "balance",
                format!(
                    "{} local / {} remote sat ({}% local, capacity {} sat)",
                    group(d.local_sat),
                    group(d.remote_sat),
                    d.local_pct,
                    group(d.capacity_sat)
                ),
            ),
            ("rule", rule_text(&d.rule)),
            ("action", action.to_string()),
        ];
        if let Some(a) = d.amount_sat {
            pairs.push(("amount", format!("{} sat", group(a))));
        }
        if let Some(c) = &d.choice {
            pairs.push(("offer", format!("{} of seller {}", c.offer_id, short(&c.seller))));
            pairs.push((
                "quote",
                format!(
                    "swap fee {} + maker on-chain {} + own on-chain {} = {} sat",
                    group(c.swap_fee_sat),
                    group(c.maker_onchain_fee_sat),
                    group(c.own_onchain_fee_sat),
                    group(c.total_cost_sat)
                ),
            ));
        }
        pairs.push(("why", d.reason.clone()));
        if let Some(id) = &d.swap_id {
            pairs.push(("swap", id.clone()));
        }
        out.push_str(&format!("channel {} (peer {})\n", d.channel_id, short(&d.peer)));
        for line in key_values(&pairs).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args() -> SetArgs {
        SetArgs {
            enable: false,
            disable: false,
            channel: None,
            peer: None,
            remove: false,
            low: None,
            high: None,
            max_swap: None,
            min_interval: None,
            max_cost: None,
            max_cost_ppm: None,
            budget: None,
            budget_period: None,
            max_in_flight: None,
            max_seller_failures: None,
        }
    }

    #[test]
    fn set_changes_only_what_is_named() {
        let c = apply(
            AutoloopConfig::default(),
            &SetArgs { enable: true, high: Some(70), budget: Some(9_000), ..args() },
        )
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.rule.high_pct, 70);
        assert_eq!(c.rule.low_pct, AutoloopRule::default().low_pct);
        assert_eq!(c.budget.max_fee_sat, 9_000);
        // A channel's rule starts from the node-wide one, then is edited in place.
        let c = apply(c, &SetArgs { channel: Some("c1".into()), low: Some(5), ..args() }).unwrap();
        assert_eq!(c.overrides.len(), 1);
        assert_eq!((c.overrides[0].rule.low_pct, c.overrides[0].rule.high_pct), (5, 70));
        let c =
            apply(c, &SetArgs { channel: Some("c1".into()), high: Some(90), ..args() }).unwrap();
        assert_eq!(c.overrides.len(), 1);
        assert_eq!((c.overrides[0].rule.low_pct, c.overrides[0].rule.high_pct), (5, 90));
        let c = apply(c, &SetArgs { channel: Some("c1".into()), remove: true, ..args() }).unwrap();
        assert!(c.overrides.is_empty());
        assert!(apply(c, &SetArgs { remove: true, ..args() }).is_err());
    }

    #[test]
    fn a_plan_reads() {
        let plan = AutoloopPlan {
            at: 1,
            dry_run: true,
            stopped: Some("autoloop is disabled".into()),
            decisions: vec![looper_api::AutoloopDecision {
                channel_id: "c1".into(),
                peer: "02abcdef0123".into(),
                capacity_sat: 2_000_000,
                local_sat: 1_700_000,
                remote_sat: 280_000,
                local_pct: 85,
                rule: AutoloopRule::default(),
                action: AutoloopAction::None,
                amount_sat: Some(500_000),
                choice: Some(looper_api::AutoloopChoice {
                    seller: "ab".repeat(32),
                    offer_id: "o1".into(),
                    swap_fee_sat: 2_250,
                    maker_onchain_fee_sat: 300,
                    own_onchain_fee_sat: 111,
                    total_cost_sat: 2_661,
                }),
                reason: "would loop out, but autoloop is disabled".into(),
                swap_id: None,
            }],
        };
        let text = render_plan(&plan);
        assert!(text.starts_with("autoloop starts nothing now: autoloop is disabled\n"), "{text}");
        assert!(text.contains("1,700,000 local / 280,000 remote sat (85% local"), "{text}");
        assert!(text.contains("= 2,661 sat"), "{text}");
        assert!(text.contains("why"), "{text}");
    }
}
