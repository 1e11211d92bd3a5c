//! Autoloop: the rules that keep channels balanced by swapping on their own within a fee budget
//! (`GET`/`PUT /v1/autoloop`, `POST /v1/autoloop/dry-run`).
//!
//! A channel's **local share** is its outbound over its outbound plus inbound (what it can send
//! over what it could hold). Above a rule's `high_pct` the node loops out (pays over Lightning,
//! receives on chain: the share falls); below `low_pct` it loops in (locks on chain, is paid over
//! Lightning: the share rises). Each swap aims the share back at the middle of the band, capped
//! by `max_swap_sat`.

use looper_protocol::SwapDirection;
use serde::{Deserialize, Serialize};

/// The label of swaps started by autoloop (`label` in `GET /v1/swaps`).
pub const AUTOLOOP_LABEL: &str = "autoloop";

/// One rule: the band a channel's local share is kept in and the limits of each swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoloopRule {
    /// Below this local share (percent of the channel's balance) the node loops in; 0: never.
    pub low_pct: u8,
    /// Above this local share (percent) the node loops out; 100: never.
    pub high_pct: u8,
    /// Largest swap, sat.
    pub max_swap_sat: u64,
    /// Least time between two autoloop swaps of one channel, seconds.
    pub min_interval_secs: u64,
    /// Most one swap may cost in total (swap fee + on-chain fees), sat.
    pub max_cost_sat: u64,
    /// Most one swap may cost, in parts per million of its amount (the lower of this and
    /// `max_cost_sat` applies).
    pub max_cost_ppm: u32,
}

impl Default for AutoloopRule {
    fn default() -> Self {
        AutoloopRule {
            low_pct: 20,
            high_pct: 80,
            max_swap_sat: 500_000,
            min_interval_secs: 3_600,
            max_cost_sat: 5_000,
            max_cost_ppm: 10_000,
        }
    }
}

impl AutoloopRule {
    /// The cost limit of a swap of `amount_sat`: the lower of `max_cost_sat` and `max_cost_ppm`
    /// of the amount.
    pub fn cost_limit_sat(&self, amount_sat: u64) -> u64 {
        let ppm = u128::from(amount_sat) * u128::from(self.max_cost_ppm) / 1_000_000;
        self.max_cost_sat.min(u64::try_from(ppm).unwrap_or(u64::MAX))
    }

    /// Why the rule is not valid (`None`: it is).
    pub fn problem(&self) -> Option<String> {
        if self.low_pct > 100 || self.high_pct > 100 {
            return Some("low_pct and high_pct are percents (0 to 100)".into());
        }
        if self.low_pct >= self.high_pct {
            return Some(format!(
                "low_pct ({}) must be below high_pct ({})",
                self.low_pct, self.high_pct
            ));
        }
        if self.max_swap_sat == 0 {
            return Some("max_swap_sat must be greater than 0".into());
        }
        None
    }
}

/// A rule for one channel or for every channel with one peer (instead of the node-wide rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoloopOverride {
    /// The channel (its channel id, hex), or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// The peer (its Lightning node id), or absent. A channel's own rule wins over its peer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The rule.
    pub rule: AutoloopRule,
}

/// The fee budget: what autoloop may spend per period, and how many swaps it runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoloopBudget {
    /// Most fees per period (swap fees + on-chain fees + a loop out's routing fee), sat. A swap
    /// in flight counts with its quoted cost until it ends, then with what it cost.
    pub max_fee_sat: u64,
    /// Length of a period, seconds (periods run back to back from the first rules set).
    pub period_secs: u64,
    /// Most autoloop swaps in flight at once.
    pub max_in_flight: u32,
}

impl Default for AutoloopBudget {
    fn default() -> Self {
        AutoloopBudget { max_fee_sat: 20_000, period_secs: 7 * 86_400, max_in_flight: 1 }
    }
}

/// Autoloop's settings (`PUT /v1/autoloop`; kept in the node's store). Off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoloopConfig {
    /// Whether autoloop runs.
    pub enabled: bool,
    /// The node-wide rule.
    pub rule: AutoloopRule,
    /// Rules of single channels or peers.
    pub overrides: Vec<AutoloopOverride>,
    /// The fee budget.
    pub budget: AutoloopBudget,
    /// A seller (maker) with more unexplained failures than this with this node (no-shows of
    /// loop outs, autoloop swaps that failed) is skipped.
    pub max_seller_failures: u32,
}

/// What autoloop does, or would do, with one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoloopAction {
    /// Nothing (see the reason).
    None,
    /// A loop out.
    LoopOut,
    /// A loop in.
    LoopIn,
}

/// The offer autoloop chose for a swap, with its quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoloopChoice {
    /// The maker's Nostr key (hex).
    pub seller: String,
    /// The offer's id.
    pub offer_id: String,
    /// The maker's swap fee, sat.
    pub swap_fee_sat: u64,
    /// The maker's on-chain charge (its funding or claim fee), sat.
    pub maker_onchain_fee_sat: u64,
    /// This node's own on-chain fee, estimated (its claim of a loop out, its funding of a loop
    /// in), sat.
    pub own_onchain_fee_sat: u64,
    /// Everything: the sum of the three, sat.
    pub total_cost_sat: u64,
}

/// One channel's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoloopDecision {
    /// The channel id (hex).
    pub channel_id: String,
    /// The peer's node id.
    pub peer: String,
    /// The channel's capacity, sat.
    pub capacity_sat: u64,
    /// What the node can send over it, sat.
    pub local_sat: u64,
    /// What it can receive over it, sat.
    pub remote_sat: u64,
    /// `local / (local + remote)`, percent (rounded down).
    pub local_pct: u8,
    /// The rule that applies.
    pub rule: AutoloopRule,
    /// What autoloop does.
    pub action: AutoloopAction,
    /// The swap's amount, sat (a loop out or in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// The offer chosen, with its quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<AutoloopChoice>,
    /// Why (one line).
    pub reason: String,
    /// The swap started for it (not in a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_id: Option<String>,
}

/// A plan: what autoloop does now, per channel (`POST /v1/autoloop/dry-run`, and the last run
/// in `GET /v1/autoloop`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoloopPlan {
    /// When, UNIX seconds.
    pub at: u64,
    /// Whether it was a dry run (nothing started).
    pub dry_run: bool,
    /// Why autoloop starts nothing at all now (disabled, budget spent, swaps in flight), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Per channel.
    pub decisions: Vec<AutoloopDecision>,
}

/// One swap autoloop started (its ledger entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoloopSwap {
    /// The swap id (hex).
    pub swap_id: String,
    /// Loop out or loop in.
    pub direction: SwapDirection,
    /// The channel it balances.
    pub channel_id: String,
    /// The maker's Nostr key (hex).
    pub seller: String,
    /// The amount, sat.
    pub amount_sat: u64,
    /// When it started, UNIX seconds.
    pub created_at: u64,
    /// What it counts against the budget, sat: its quoted cost while in flight, what it cost
    /// once ended.
    pub cost_sat: u64,
    /// Pending, succeeded or failed.
    pub status: crate::SwapStatus,
}

/// `GET /v1/autoloop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoloopStatus {
    /// The settings.
    pub config: AutoloopConfig,
    /// Start of the budget's current period, UNIX seconds (0: no rules set yet).
    pub period_start: u64,
    /// Spent in the current period, sat (swaps in flight at their quoted cost).
    pub spent_sat: u64,
    /// Left in the current period, sat.
    pub left_sat: u64,
    /// Autoloop swaps in flight.
    pub in_flight: u32,
    /// Why autoloop starts nothing at all now, if so (`disabled`, the budget spent, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The swaps of the current period (and those still in flight).
    pub swaps: Vec<AutoloopSwap>,
    /// The last run (not dry runs), if any since the node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<AutoloopPlan>,
}
