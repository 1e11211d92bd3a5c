//! The planner: what autoloop does now, per channel, from the rules, the channels' balances, the
//! budget's state, the offers on the market and the sellers' records. No I/O: the runner
//! ([`super::Autoloop`]) gathers the inputs and carries the decisions out.

use std::collections::{BTreeMap, BTreeSet};

use looper_api::{
    AutoloopAction, AutoloopChoice, AutoloopConfig, AutoloopDecision, AutoloopPlan, AutoloopRule,
};
use looper_protocol::messages::Offer;
use looper_protocol::terms::Quote;
use looper_protocol::SwapDirection;

/// One channel as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// Channel id (hex).
    pub channel_id: String,
    /// The peer's node id.
    pub peer: String,
    /// Capacity, sat.
    pub capacity_sat: u64,
    /// What we can send, sat.
    pub local_sat: u64,
    /// What we can receive, sat.
    pub remote_sat: u64,
    /// Usable now (ready, peer connected).
    pub usable: bool,
}

impl ChannelState {
    /// `local / (local + remote)` in percent, rounded down (0 for an empty channel).
    pub fn local_pct(&self) -> u8 {
        let total = self.local_sat.saturating_add(self.remote_sat);
        if total == 0 {
            return 0;
        }
        u8::try_from(u128::from(self.local_sat) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// An offer on the market.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The maker's Nostr key (hex).
    pub seller: String,
    /// Its offer.
    pub offer: Offer,
}

/// The budget's state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetState {
    /// Spent in the current period (swaps in flight at their quoted cost), sat.
    pub spent_sat: u64,
    /// Autoloop swaps in flight.
    pub in_flight: u32,
    /// When the current period ends, UNIX seconds.
    pub period_end: u64,
}

/// This node's own on-chain fee of a swap, estimated from the current fee rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnFees {
    /// A loop out's claim (key path), sat.
    pub loop_out_claim_sat: u64,
    /// A loop in's funding, sat.
    pub loop_in_funding_sat: u64,
}

impl OwnFees {
    /// The estimate for `direction`.
    pub fn for_direction(&self, direction: SwapDirection) -> u64 {
        match direction {
            SwapDirection::LoopIn => self.loop_in_funding_sat,
            _ => self.loop_out_claim_sat,
        }
    }
}

/// Everything the planner reads.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The settings.
    pub config: &'a AutoloopConfig,
    /// The node's channels.
    pub channels: &'a [ChannelState],
    /// The budget's state.
    pub budget: BudgetState,
    /// When the last autoloop swap of each channel started (channel id -> UNIX seconds).
    pub last_swap_at: &'a BTreeMap<String, u64>,
    /// Channels with an autoloop swap in flight.
    pub busy_channels: &'a BTreeSet<String>,
    /// Offers of either direction (the planner keeps those that fit).
    pub offers: &'a [Candidate],
    /// Unexplained failures per seller key (hex).
    pub seller_failures: &'a BTreeMap<String, u32>,
    /// This node's own on-chain fees.
    pub own_fees: OwnFees,
    /// Now, UNIX seconds.
    pub now: u64,
    /// The node's ceiling on one swap (`safety.max_swap_amount_sat`; `None`: none): no rule
    /// swaps more.
    pub max_swap_amount_sat: Option<u64>,
}

/// The rule of `channel`: its own, else its peer's, else the node-wide one.
pub fn rule_for(config: &AutoloopConfig, channel: &ChannelState) -> AutoloopRule {
    let by_channel =
        config.overrides.iter().find(|o| o.channel_id.as_deref() == Some(&channel.channel_id));
    let by_peer = || config.overrides.iter().find(|o| o.peer.as_deref() == Some(&channel.peer));
    by_channel.or_else(by_peer).map_or(config.rule, |o| o.rule)
}

/// What a channel needs under `rule`: a swap's direction and amount (aimed at the middle of the
/// band, capped by `max_swap_sat`), or why nothing.
pub fn need(rule: &AutoloopRule, channel: &ChannelState) -> Result<(SwapDirection, u64), String> {
    let pct = channel.local_pct();
    let total = u128::from(channel.local_sat.saturating_add(channel.remote_sat));
    if total == 0 {
        return Err("the channel has no balance".into());
    }
    let mid = u128::from(rule.low_pct) + u128::from(rule.high_pct);
    let target = u64::try_from(total * mid / 200).unwrap_or(u64::MAX);
    if rule.high_pct < 100 && pct > rule.high_pct {
        let amount = channel.local_sat.saturating_sub(target).min(rule.max_swap_sat);
        return Ok((SwapDirection::LoopOut, amount));
    }
    if rule.low_pct > 0 && pct < rule.low_pct {
        let amount = target.saturating_sub(channel.local_sat).min(rule.max_swap_sat);
        return Ok((SwapDirection::LoopIn, amount));
    }
    Err(format!("local share {pct}% within [{}%, {}%]", rule.low_pct, rule.high_pct))
}

/// Why autoloop starts nothing at all now, if so.
pub fn stopped(config: &AutoloopConfig, budget: &BudgetState) -> Option<String> {
    if !config.enabled {
        return Some("autoloop is disabled".into());
    }
    let max = config.budget.max_fee_sat;
    if budget.spent_sat >= max {
        return Some(format!(
            "budget spent: {} of {max} sat this period (the next starts at {})",
            budget.spent_sat, budget.period_end
        ));
    }
    if budget.in_flight >= config.budget.max_in_flight {
        return Some(format!(
            "{} autoloop swap(s) in flight (max_in_flight {})",
            budget.in_flight, config.budget.max_in_flight
        ));
    }
    None
}

/// The cheapest offer for a swap of `amount_sat` in `direction` within `limit_sat` (total cost),
/// skipping sellers with more failures than allowed; else why none.
pub fn choose(
    input: &PlanInput<'_>,
    direction: SwapDirection,
    amount_sat: u64,
    limit_sat: u64,
) -> Result<(Candidate, AutoloopChoice), String> {
    let own = input.own_fees.for_direction(direction);
    let mut fitting = 0usize;
    let mut skipped = 0usize;
    let mut cheapest_over: Option<u64> = None;
    let mut best: Option<(Candidate, AutoloopChoice)> = None;
    for c in input.offers.iter().filter(|c| c.offer.direction == direction) {
        let Ok(quote) = Quote::compute(&c.offer, amount_sat) else { continue };
        if c.offer.is_expired(input.now) {
            continue;
        }
        fitting += 1;
        let failures = input.seller_failures.get(&c.seller).copied().unwrap_or(0);
        if failures > input.config.max_seller_failures {
            skipped += 1;
            continue;
        }
        let total = quote.fee_sat().saturating_add(own);
        if total > limit_sat {
            cheapest_over = Some(cheapest_over.map_or(total, |t| t.min(total)));
            continue;
        }
        let choice = AutoloopChoice {
            seller: c.seller.clone(),
            offer_id: c.offer.offer_id.clone(),
            swap_fee_sat: quote.swap_fee_sat,
            maker_onchain_fee_sat: quote.funding_fee_sat,
            own_onchain_fee_sat: own,
            total_cost_sat: total,
        };
        let better = best.as_ref().is_none_or(|(b, bc)| {
            (total, &c.seller, &c.offer.offer_id)
                < (bc.total_cost_sat, &b.seller, &b.offer.offer_id)
        });
        if better {
            best = Some((c.clone(), choice));
        }
    }
    best.ok_or_else(|| {
        let what = match direction {
            SwapDirection::LoopIn => "loop-in",
            _ => "loop-out",
        };
        match (fitting, cheapest_over) {
            (0, _) => format!("no {what} offer for {amount_sat} sat"),
            (_, Some(over)) => format!(
                "no {what} offer within the cost limit of {limit_sat} sat (cheapest {over} sat{})",
                skipped_note(skipped)
            ),
            _ => {
                format!("every {what} offer's seller has failed this node{}", skipped_note(skipped))
            }
        }
    })
}

fn skipped_note(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!("; {skipped} skipped for their sellers' failures")
    }
}

/// What autoloop does now, per channel (ordered by channel id), with the offers chosen. A
/// decision whose action is not [`AutoloopAction::None`] is a swap to start; the budget and the
/// swaps in flight are counted across channels.
pub fn plan(input: &PlanInput<'_>, dry_run: bool) -> (AutoloopPlan, Vec<Option<Candidate>>) {
    let config = input.config;
    let stopped = stopped(config, &input.budget);
    let mut left = config.budget.max_fee_sat.saturating_sub(input.budget.spent_sat);
    let mut in_flight = input.budget.in_flight;
    let mut channels: Vec<&ChannelState> = input.channels.iter().collect();
    channels.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
    let mut decisions = Vec::new();
    let mut chosen = Vec::new();
    let mut budget_blocked = None;
    for ch in channels {
        let rule = rule_for(config, ch);
        let mut d = AutoloopDecision {
            channel_id: ch.channel_id.clone(),
            peer: ch.peer.clone(),
            capacity_sat: ch.capacity_sat,
            local_sat: ch.local_sat,
            remote_sat: ch.remote_sat,
            local_pct: ch.local_pct(),
            rule,
            action: AutoloopAction::None,
            amount_sat: None,
            choice: None,
            reason: String::new(),
            swap_id: None,
        };
        let (offer, reason) = decide(input, ch, &rule, &mut d, &mut left, &mut in_flight);
        d.reason = reason;
        if stopped.is_some() && d.action != AutoloopAction::None {
            d.reason = format!("would {}, but {}", d.reason, stopped.as_deref().unwrap_or(""));
            d.action = AutoloopAction::None;
        }
        if d.reason.ends_with("left in the budget") {
            budget_blocked = d.choice.as_ref().map(|c| c.total_cost_sat);
        }
        chosen.push(offer.filter(|_| d.action != AutoloopAction::None));
        decisions.push(d);
    }
    // A budget with something left, but less than any swap wanted now: spent all the same.
    let started = chosen.iter().any(Option::is_some);
    let stopped = match (stopped, budget_blocked) {
        (None, Some(cost)) if !started => Some(format!(
            "budget spent: {} of {} sat this period, the {} sat left are less than the next \
             swap's {cost} sat (the next period starts at {})",
            input.budget.spent_sat,
            config.budget.max_fee_sat,
            config.budget.max_fee_sat.saturating_sub(input.budget.spent_sat),
            input.budget.period_end
        )),
        (stopped, _) => stopped,
    };
    (AutoloopPlan { at: input.now, dry_run, stopped, decisions }, chosen)
}

/// One channel's decision: fills `d`'s amount, choice and action; returns the offer and the
/// reason.
fn decide(
    input: &PlanInput<'_>,
    ch: &ChannelState,
    rule: &AutoloopRule,
    d: &mut AutoloopDecision,
    left: &mut u64,
    in_flight: &mut u32,
) -> (Option<Candidate>, String) {
    if let Some(problem) = rule.problem() {
        return (None, format!("invalid rule: {problem}"));
    }
    if !ch.usable {
        return (None, "channel not usable now".into());
    }
    let (direction, amount) = match need(rule, ch) {
        Ok(n) => n,
        Err(why) => return (None, why),
    };
    let amount = input.max_swap_amount_sat.map_or(amount, |max| amount.min(max));
    let verb = match direction {
        SwapDirection::LoopIn => "loop in",
        _ => "loop out",
    };
    let pct = ch.local_pct();
    let side = match direction {
        SwapDirection::LoopIn => format!("below {}%", rule.low_pct),
        _ => format!("above {}%", rule.high_pct),
    };
    d.amount_sat = Some(amount);
    if input.busy_channels.contains(&ch.channel_id) {
        return (None, format!("local share {pct}% {side}: an autoloop swap is in flight for it"));
    }
    if let Some(last) = input.last_swap_at.get(&ch.channel_id) {
        let since = input.now.saturating_sub(*last);
        if since < rule.min_interval_secs {
            return (
                None,
                format!(
                    "local share {pct}% {side}: last autoloop swap {since} s ago \
                     (min_interval_secs {})",
                    rule.min_interval_secs
                ),
            );
        }
    }
    let limit = rule.cost_limit_sat(amount);
    let (offer, choice) = match choose(input, direction, amount, limit) {
        Ok(c) => c,
        Err(why) => return (None, format!("local share {pct}% {side}: {why}")),
    };
    let cost = choice.total_cost_sat;
    let what = format!(
        "{verb} {amount} sat (local share {pct}% {side}) with {}'s offer {} for {cost} sat",
        short(&choice.seller),
        choice.offer_id
    );
    d.choice = Some(choice);
    if cost > *left {
        return (None, format!("{what}: above the {} sat left in the budget", *left));
    }
    if *in_flight >= input.config.budget.max_in_flight {
        return (None, format!("{what}: max_in_flight swaps already running"));
    }
    *left -= cost;
    *in_flight += 1;
    d.action = match direction {
        SwapDirection::LoopIn => AutoloopAction::LoopIn,
        _ => AutoloopAction::LoopOut,
    };
    (Some(offer), what)
}

/// The first 8 characters of a key, for reasons.
fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use looper_api::{AutoloopBudget, AutoloopOverride};

    fn offer(id: &str, direction: SwapDirection, fee_base: u64, fee_ppm: u32) -> Offer {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let sk = bitcoin::secp256k1::SecretKey::from_slice(&[3; 32]).unwrap();
        Offer {
            version: 1,
            offer_id: id.into(),
            network: bitcoin::Network::Regtest,
            direction,
            min_amount_sat: 10_000,
            max_amount_sat: 1_000_000,
            fee_base_sat: fee_base,
            fee_ppm,
            funding_fee_sat: 300,
            prepay_sat: None,
            min_confirmations: 1,
            timeout_delta: 144,
            claim_margin: 20,
            invoice_expiry_secs: 3600,
            ln_node_id: bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &sk),
            ln_address: None,
            relays: vec!["ws://127.0.0.1:1".into()],
            pow_difficulty: None,
            expires_at: 2_000_000_000,
        }
    }

    fn cand(seller: &str, o: Offer) -> Candidate {
        Candidate { seller: seller.into(), offer: o }
    }

    fn channel(id: &str, local: u64, remote: u64) -> ChannelState {
        ChannelState {
            channel_id: id.into(),
            peer: format!("peer-{id}"),
            capacity_sat: local + remote + 20_000,
            local_sat: local,
            remote_sat: remote,
            usable: true,
        }
    }

    fn config() -> AutoloopConfig {
        AutoloopConfig {
            enabled: true,
            rule: AutoloopRule {
                low_pct: 20,
                high_pct: 80,
                max_swap_sat: 300_000,
                min_interval_secs: 600,
                max_cost_sat: 5_000,
                max_cost_ppm: 20_000,
            },
            overrides: Vec::new(),
            budget: AutoloopBudget { max_fee_sat: 10_000, period_secs: 86_400, max_in_flight: 2 },
            max_seller_failures: 0,
        }
    }

    struct World {
        config: AutoloopConfig,
        channels: Vec<ChannelState>,
        budget: BudgetState,
        last: BTreeMap<String, u64>,
        busy: BTreeSet<String>,
        offers: Vec<Candidate>,
        failures: BTreeMap<String, u32>,
        ceiling: Option<u64>,
    }

    impl World {
        fn new(channels: Vec<ChannelState>) -> World {
            World {
                config: config(),
                channels,
                budget: BudgetState { period_end: 1_000_086_400, ..BudgetState::default() },
                last: BTreeMap::new(),
                busy: BTreeSet::new(),
                offers: vec![
                    cand("aa", offer("out-a", SwapDirection::LoopOut, 1_000, 2_500)),
                    cand("bb", offer("out-b", SwapDirection::LoopOut, 500, 2_000)),
                    cand("cc", offer("in-c", SwapDirection::LoopIn, 800, 2_000)),
                ],
                failures: BTreeMap::new(),
                ceiling: None,
            }
        }

        fn plan(&self) -> AutoloopPlan {
            let input = PlanInput {
                config: &self.config,
                channels: &self.channels,
                budget: self.budget,
                last_swap_at: &self.last,
                busy_channels: &self.busy,
                offers: &self.offers,
                seller_failures: &self.failures,
                own_fees: OwnFees { loop_out_claim_sat: 111, loop_in_funding_sat: 154 },
                now: 1_000_000_000,
                max_swap_amount_sat: self.ceiling,
            };
            let (plan, chosen) = plan(&input, true);
            for (d, c) in plan.decisions.iter().zip(&chosen) {
                assert_eq!(d.action != AutoloopAction::None, c.is_some(), "{d:?}");
            }
            plan
        }
    }

    #[test]
    fn within_the_band_nothing_happens() {
        let w = World::new(vec![channel("c1", 500_000, 500_000), channel("c2", 200_000, 800_000)]);
        let p = w.plan();
        assert_eq!(p.stopped, None);
        assert!(p.decisions.iter().all(|d| d.action == AutoloopAction::None), "{p:?}");
        assert_eq!(p.decisions[0].local_pct, 50);
        assert!(p.decisions[0].reason.contains("within [20%, 80%]"), "{}", p.decisions[0].reason);
        // Exactly at a threshold is inside.
        assert_eq!(p.decisions[1].local_pct, 20);
    }

    #[test]
    fn above_high_loops_out_to_the_middle_with_the_cheapest_offer() {
        let w = World::new(vec![channel("c1", 850_000, 150_000)]);
        let d = &w.plan().decisions[0];
        assert_eq!(d.action, AutoloopAction::LoopOut);
        // Aimed at 50%: 350 000, capped at max_swap_sat.
        assert_eq!(d.amount_sat, Some(300_000));
        let c = d.choice.as_ref().unwrap();
        // bb: 500 + 600 + 300 funding + 111 claim = 1511 < aa's 1000 + 750 + 300 + 111.
        assert_eq!((c.seller.as_str(), c.offer_id.as_str()), ("bb", "out-b"));
        assert_eq!(c.total_cost_sat, 500 + 600 + 300 + 111);
        assert_eq!(c.own_onchain_fee_sat, 111);
    }

    #[test]
    fn the_nodes_swap_ceiling_caps_every_rule() {
        let mut w = World::new(vec![channel("c1", 100_000, 900_000)]);
        w.ceiling = Some(120_000);
        let d = &w.plan().decisions[0];
        assert_eq!(d.action, AutoloopAction::LoopIn);
        assert_eq!(d.amount_sat, Some(120_000), "the rule's 300 000 capped by the ceiling");
    }

    #[test]
    fn below_low_loops_in() {
        let w = World::new(vec![channel("c1", 100_000, 900_000)]);
        let d = &w.plan().decisions[0];
        assert_eq!(d.action, AutoloopAction::LoopIn);
        assert_eq!(d.amount_sat, Some(300_000));
        let c = d.choice.as_ref().unwrap();
        assert_eq!(c.offer_id, "in-c");
        assert_eq!(c.total_cost_sat, 800 + 600 + 300 + 154);
        // Below the cap, the amount is what brings it to the middle (50%).
        let mut w = World::new(vec![channel("c1", 250_000, 750_000), channel("c2", 550_000, 0)]);
        w.config.rule.max_swap_sat = 1_000_000;
        w.config.budget.max_in_flight = 5;
        w.config.rule.low_pct = 30;
        // 25% local, band [30%, 80%]: to 55%.
        assert_eq!(w.plan().decisions[0].amount_sat, Some(300_000));
        w.config.rule.high_pct = 90;
        // 100% local, band [30%, 90%]: to 60%.
        assert_eq!(w.plan().decisions[1].amount_sat, Some(220_000));
    }

    #[test]
    fn a_per_channel_rule_beats_a_per_peer_rule_beats_the_node_rule() {
        let mut w =
            World::new(vec![channel("c1", 700_000, 300_000), channel("c2", 700_000, 300_000)]);
        let tight = AutoloopRule {
            high_pct: 60,
            max_swap_sat: 50_000,
            max_cost_ppm: 50_000,
            ..w.config.rule
        };
        let loose = AutoloopRule { high_pct: 90, ..w.config.rule };
        w.config.overrides = vec![
            AutoloopOverride { channel_id: None, peer: Some("peer-c1".into()), rule: tight },
            AutoloopOverride { channel_id: Some("c2".into()), peer: None, rule: loose },
            AutoloopOverride { channel_id: None, peer: Some("peer-c2".into()), rule: tight },
        ];
        let p = w.plan();
        assert_eq!(p.decisions[0].action, AutoloopAction::LoopOut);
        assert_eq!(p.decisions[0].amount_sat, Some(50_000));
        assert_eq!(p.decisions[0].rule, tight);
        assert_eq!(p.decisions[1].action, AutoloopAction::None);
        assert_eq!(p.decisions[1].rule, loose);
    }

    #[test]
    fn disabled_plans_but_starts_nothing() {
        let mut w = World::new(vec![channel("c1", 900_000, 100_000)]);
        w.config.enabled = false;
        let p = w.plan();
        assert_eq!(p.stopped.as_deref(), Some("autoloop is disabled"));
        let d = &p.decisions[0];
        assert_eq!(d.action, AutoloopAction::None);
        assert!(d.choice.is_some());
        assert!(d.reason.starts_with("would loop out 300000 sat"), "{}", d.reason);
        assert!(d.reason.ends_with("but autoloop is disabled"), "{}", d.reason);
    }

    #[test]
    fn the_budget_stops_swaps_and_counts_across_channels() {
        let mut w = World::new(vec![channel("c1", 900_000, 100_000)]);
        w.budget.spent_sat = 10_000;
        let p = w.plan();
        assert!(p.stopped.as_deref().unwrap().starts_with("budget spent: 10000 of 10000 sat"));
        assert_eq!(p.decisions[0].action, AutoloopAction::None);
        // Some left, but less than the quote.
        w.budget.spent_sat = 9_000;
        let p = w.plan();
        assert!(p.decisions[0].reason.ends_with("above the 1000 sat left in the budget"));
        assert_eq!(
            p.stopped.as_deref(),
            Some(
                "budget spent: 9000 of 10000 sat this period, the 1000 sat left are less than \
                 the next swap's 1511 sat (the next period starts at 1000086400)"
            )
        );
        // Two channels, room for one.
        let mut w =
            World::new(vec![channel("c1", 900_000, 100_000), channel("c2", 900_000, 100_000)]);
        w.budget.spent_sat = 8_000;
        let p = w.plan();
        assert_eq!(p.decisions[0].action, AutoloopAction::LoopOut);
        assert_eq!(p.decisions[1].action, AutoloopAction::None);
        assert!(p.decisions[1].reason.contains("left in the budget"), "{}", p.decisions[1].reason);
    }

    #[test]
    fn max_in_flight_holds_across_channels() {
        let mut w = World::new(vec![
            channel("c1", 900_000, 100_000),
            channel("c2", 900_000, 100_000),
            channel("c3", 900_000, 100_000),
        ]);
        w.config.budget.max_fee_sat = 100_000;
        w.budget.in_flight = 1;
        let p = w.plan();
        let actions: Vec<_> = p.decisions.iter().map(|d| d.action).collect();
        assert_eq!(actions, [AutoloopAction::LoopOut, AutoloopAction::None, AutoloopAction::None]);
        assert!(p.decisions[1].reason.ends_with("max_in_flight swaps already running"));
        w.budget.in_flight = 2;
        let p = w.plan();
        assert!(p.stopped.unwrap().contains("in flight (max_in_flight 2)"));
    }

    #[test]
    fn min_interval_and_busy_channels_wait() {
        let mut w =
            World::new(vec![channel("c1", 900_000, 100_000), channel("c2", 900_000, 100_000)]);
        w.last.insert("c1".into(), 1_000_000_000 - 599);
        w.busy.insert("c2".into());
        let p = w.plan();
        assert_eq!(p.decisions[0].action, AutoloopAction::None);
        assert!(
            p.decisions[0].reason.contains("last autoloop swap 599 s ago"),
            "{:?}",
            p.decisions[0]
        );
        assert!(p.decisions[1].reason.contains("in flight for it"), "{:?}", p.decisions[1]);
        w.last.insert("c1".into(), 1_000_000_000 - 600);
        assert_eq!(w.plan().decisions[0].action, AutoloopAction::LoopOut);
    }

    #[test]
    fn the_cost_limit_is_the_lower_of_sat_and_ppm() {
        let rule = AutoloopRule { max_cost_sat: 5_000, max_cost_ppm: 5_000, ..config().rule };
        assert_eq!(rule.cost_limit_sat(300_000), 1_500);
        assert_eq!(rule.cost_limit_sat(2_000_000), 5_000);
        let mut w = World::new(vec![channel("c1", 900_000, 100_000)]);
        w.config.rule.max_cost_ppm = 5_000; // 1 500 sat for 300 000: bb costs 1 511.
        let d = &w.plan().decisions[0];
        assert_eq!(d.action, AutoloopAction::None);
        assert!(
            d.reason
                .contains("no loop-out offer within the cost limit of 1500 sat (cheapest 1511 sat"),
            "{}",
            d.reason
        );
        w.config.rule.max_cost_ppm = 5_040; // 1 512 sat.
        assert_eq!(w.plan().decisions[0].action, AutoloopAction::LoopOut);
    }

    #[test]
    fn sellers_with_failures_are_skipped() {
        let mut w = World::new(vec![channel("c1", 900_000, 100_000)]);
        w.failures.insert("bb".into(), 1);
        let d = &w.plan().decisions[0];
        assert_eq!(d.choice.as_ref().unwrap().seller, "aa");
        w.failures.insert("aa".into(), 2);
        let d = &w.plan().decisions[0];
        assert_eq!(d.action, AutoloopAction::None);
        assert!(d.reason.contains("every loop-out offer's seller has failed"), "{}", d.reason);
        assert!(d.reason.contains("2 skipped"), "{}", d.reason);
        // Allowed: up to max_seller_failures.
        w.config.max_seller_failures = 1;
        assert_eq!(w.plan().decisions[0].choice.as_ref().unwrap().seller, "bb");
    }

    #[test]
    fn offers_out_of_range_or_expired_do_not_count() {
        let mut w = World::new(vec![channel("c1", 900_000, 100_000)]);
        w.offers[1].offer.max_amount_sat = 100_000;
        w.offers[0].offer.expires_at = 999_999_999;
        let d = &w.plan().decisions[0];
        assert_eq!(d.action, AutoloopAction::None);
        assert_eq!(d.reason, "local share 90% above 80%: no loop-out offer for 300000 sat");
    }

    #[test]
    fn unusable_or_empty_channels_and_bad_rules_are_left_alone() {
        let mut c = channel("c1", 900_000, 100_000);
        c.usable = false;
        let mut w = World::new(vec![c, channel("c2", 0, 0)]);
        let p = w.plan();
        assert_eq!(p.decisions[0].reason, "channel not usable now");
        assert_eq!(p.decisions[1].reason, "the channel has no balance");
        w.config.rule.low_pct = 90;
        let p = w.plan();
        assert!(p.decisions[1].reason.starts_with("invalid rule: low_pct (90) must be below"));
    }

    #[test]
    fn zero_low_or_hundred_high_never_swap_that_way() {
        let mut w = World::new(vec![channel("c1", 0, 1_000_000), channel("c2", 1_000_000, 0)]);
        w.config.rule.low_pct = 0;
        w.config.rule.high_pct = 100;
        let p = w.plan();
        assert!(p.decisions.iter().all(|d| d.action == AutoloopAction::None), "{p:?}");
    }
}
