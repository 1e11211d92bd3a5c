//! Autoloop (issue 18): rules that keep the node's channels balanced by swapping on their own,
//! within a fee budget, each time with the cheapest offer on the market.
//!
//! - [`plan`]: the planner, without I/O: per channel, its balance against its rule, the swap it
//!   needs and the offer chosen, or why nothing (band, interval, budget, swaps in flight, no offer
//!   within the cost limit, sellers that failed this node).
//! - [`Autoloop`]: the runner. Every [`AutoloopSettings::interval`] while enabled it reads the
//!   channels from the Lightning node, the offers from the relays and the ledger from the store,
//!   runs the planner and starts the swaps it decided through the engine's taker paths. Each swap
//!   is labelled before it starts: its ledger entry ([`LedgerEntry`], the swap's label in the
//!   store) is committed under the new swap's id before the swap's first message goes out, so a
//!   crash never leaves an autoloop swap outside the budget. When a swap ends its entry gets
//!   what it cost.
//!
//! Rules and the budget's anchor are kept in the store (setting [`SETTING`]); the budget's spent
//! part is the sum of the ledger's entries of the current period, so a restart keeps both.
//! Autoloop is off by default.
//!
//! What a swap costs (the budget's unit): the maker's swap fee and on-chain charge (its quote)
//! plus this node's own on-chain fee (a loop out's claim, a loop in's funding; estimated at the
//! current fee rate while in flight; a failed swap costs the prepay and what was lost, or a loop
//! in's funding and refund fees), plus a loop out's Lightning routing fee once it ended (not
//! known before: not in the quote a swap is chosen by).
//!
//! Limits: a swap is not pinned to its channel (ldk-node picks the route of a loop out's payment
//! and the maker's route of a loop in's), so on a node with several channels to different peers
//! a swap may move another channel's balance; the next run sees the result.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bitcoin::Network;
use looper_api::{
    AutoloopAction, AutoloopConfig, AutoloopPlan, AutoloopStatus, AutoloopSwap, SwapStatus,
    AUTOLOOP_LABEL,
};
use looper_protocol::buyer::BuyerPolicy;
use looper_protocol::seller::LoopInLimits;
use looper_protocol::swap::StateKind;
use looper_protocol::{SwapDirection, SwapId};
use serde::{Deserialize, Serialize};

use self::plan::{BudgetState, Candidate, ChannelState, OwnFees, PlanInput};
use crate::engine::{Engine, EngineError};
use crate::lightning::Lightning;
use crate::nostr::{NostrTransport, OfferFilter, PublicKey as NostrPublicKey};
use crate::stats;
use crate::store::{StoreError, SwapStore};

/// The store setting that holds autoloop's rules ([`Stored`]).
pub const SETTING: &str = "autoloop";

/// Virtual size of a loop out's key-path claim, vB.
const CLAIM_VBYTES: u64 = 111;
/// Virtual size of a loop in's funding (one input, the HTLC and change), vB.
const FUNDING_VBYTES: u64 = 154;
/// A ledger entry whose swap never got a record within this long was refused before it started.
const NEVER_STARTED_SECS: u64 = 600;

/// Errors of autoloop.
#[derive(Debug, thiserror::Error)]
pub enum AutoloopError {
    /// The settings are not valid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stored value does not decode.
    #[error("stored autoloop {what} does not decode: {reason}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Settings of the runner that come from the node's configuration.
#[derive(Debug, Clone)]
pub struct AutoloopSettings {
    /// The node's network (offers of another are ignored).
    pub network: Network,
    /// The buyer's limits of `[buyer]`: a loop out's policy, its fee limit set per swap.
    pub buyer_policy: BuyerPolicy,
    /// How often autoloop runs while enabled (`[sync] autoloop_secs`).
    pub interval: Duration,
    /// The node's ceiling on one swap (`safety.max_swap_amount_sat`; `None`: none): autoloop
    /// never swaps more, whatever its rules say.
    pub max_swap_amount_sat: Option<u64>,
}

/// What the store keeps under [`SETTING`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    /// The settings.
    pub config: AutoloopConfig,
    /// When the rules were first set, UNIX seconds: budget periods run back to back from here.
    pub anchor: u64,
}

/// One swap autoloop started: its label in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Always [`AUTOLOOP_LABEL`].
    pub label: String,
    /// Loop out or loop in.
    pub direction: SwapDirection,
    /// The channel it balances.
    pub channel_id: String,
    /// The maker's Nostr key (hex).
    pub seller: String,
    /// The offer taken.
    pub offer_id: String,
    /// The amount, sat.
    pub amount_sat: u64,
    /// The cost quoted at the start (what it counts while in flight), sat.
    pub quoted_cost_sat: u64,
    /// This node's own on-chain fee as estimated at the start, sat.
    pub own_fee_sat: u64,
    /// When it started, UNIX seconds.
    pub created_at: u64,
    /// Pending until the swap ends.
    pub status: SwapStatus,
    /// What it cost, once ended, sat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_sat: Option<u64>,
    /// The swap never started (refused before its first commit): not a failure of the seller.
    #[serde(default)]
    pub never_started: bool,
}

impl LedgerEntry {
    /// What it counts against the budget.
    pub fn budget_cost(&self) -> u64 {
        self.cost_sat.unwrap_or(self.quoted_cost_sat)
    }
}

/// The label of `id` when it is an autoloop ledger entry.
pub fn entry_of(label: &serde_json::Value) -> Option<LedgerEntry> {
    let entry: LedgerEntry = serde_json::from_value(label.clone()).ok()?;
    (entry.label == AUTOLOOP_LABEL).then_some(entry)
}

/// The budget's state at `now`: the current period and the entries that count in it.
pub fn budget_state(
    stored: &Stored,
    entries: &[(SwapId, LedgerEntry)],
    now: u64,
) -> (u64, BudgetState) {
    let period = stored.config.budget.period_secs.max(1);
    let anchor = stored.anchor.min(now);
    let start = anchor + (now - anchor) / period * period;
    let mut budget =
        BudgetState { period_end: start.saturating_add(period), ..BudgetState::default() };
    for (_, e) in entries {
        let pending = e.status == SwapStatus::Pending;
        if pending {
            budget.in_flight = budget.in_flight.saturating_add(1);
        }
        if pending || (e.created_at >= start && e.created_at < budget.period_end) {
            budget.spent_sat = budget.spent_sat.saturating_add(e.budget_cost());
        }
    }
    (start, budget)
}

/// The runner (cheap to clone).
#[derive(Clone)]
pub struct Autoloop {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Autoloop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoloop").finish_non_exhaustive()
    }
}

struct Inner {
    engine: Engine,
    nostr: NostrTransport,
    settings: AutoloopSettings,
    last_run: StdMutex<Option<AutoloopPlan>>,
    /// Held by a run (a real one or a dry one), so that two never decide at once.
    running: tokio::sync::Mutex<()>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn SwapStore>,
    f: impl FnOnce(&dyn SwapStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, AutoloopError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| AutoloopError::Invalid(format!("store task failed: {e}")))?
        .map_err(AutoloopError::Store)
}

impl Autoloop {
    /// The runner over `engine` (swaps, store, Lightning node) and `nostr` (offer discovery).
    pub fn new(engine: Engine, nostr: NostrTransport, settings: AutoloopSettings) -> Autoloop {
        Autoloop {
            inner: Arc::new(Inner {
                engine,
                nostr,
                settings,
                last_run: StdMutex::new(None),
                running: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn store(&self) -> &Arc<dyn SwapStore> {
        self.inner.engine.store()
    }

    /// The stored settings (the defaults, disabled, when none were set).
    ///
    /// # Errors
    /// The store cannot be read or its value does not decode.
    pub async fn stored(&self) -> Result<Stored, AutoloopError> {
        let value = blocking(self.store(), |s| s.setting(SETTING)).await?;
        match value {
            None => Ok(Stored::default()),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| AutoloopError::Corrupt { what: "settings", reason: e.to_string() }),
        }
    }

    /// Checks and stores new settings; the budget's anchor is set the first time.
    ///
    /// # Errors
    /// [`AutoloopError::Invalid`] for invalid settings; store errors.
    pub async fn set_config(
        &self,
        config: AutoloopConfig,
    ) -> Result<AutoloopStatus, AutoloopError> {
        check(&config)?;
        let mut stored = self.stored().await?;
        if stored.anchor == 0 {
            stored.anchor = now_secs();
        }
        stored.config = config;
        let value = serde_json::to_value(&stored)
            .map_err(|e| AutoloopError::Invalid(format!("cannot encode the settings: {e}")))?;
        blocking(self.store(), move |s| s.put_setting(SETTING, &value)).await?;
        tracing::info!(enabled = stored.config.enabled, "autoloop settings changed");
        self.status().await
    }

    /// The ledger: every autoloop swap, ended ones brought up to date (and stored so).
    async fn ledger(&self) -> Result<Vec<(SwapId, LedgerEntry)>, AutoloopError> {
        let now = now_secs();
        let lightning = Arc::clone(self.inner.engine.lightning());
        blocking(self.store(), move |store| {
            let mut out = Vec::new();
            for (id, label) in store.swap_labels()? {
                let Some(mut entry) = entry_of(&label) else { continue };
                if entry.status == SwapStatus::Pending
                    && settle(store, &*lightning, &id, &mut entry, now)?
                {
                    if let Ok(v) = serde_json::to_value(&entry) {
                        store.put_swap_label(&id, &v)?;
                    }
                    tracing::info!(swap = %id, status = ?entry.status, cost_sat = ?entry.cost_sat,
                        "autoloop swap ended");
                }
                out.push((id, entry));
            }
            Ok(out)
        })
        .await
    }

    /// `GET /v1/autoloop`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn status(&self) -> Result<AutoloopStatus, AutoloopError> {
        let stored = self.stored().await?;
        let ledger = self.ledger().await?;
        let now = now_secs();
        let (start, budget) = budget_state(&stored, &ledger, now);
        let swaps = ledger
            .iter()
            .filter(|(_, e)| e.status == SwapStatus::Pending || e.created_at >= start)
            .filter(|(_, e)| !e.never_started)
            .map(|(id, e)| AutoloopSwap {
                swap_id: id.to_string(),
                direction: e.direction,
                channel_id: e.channel_id.clone(),
                seller: e.seller.clone(),
                amount_sat: e.amount_sat,
                created_at: e.created_at,
                cost_sat: e.budget_cost(),
                status: e.status,
            })
            .collect();
        let last_run = self.inner.last_run.lock().map(|g| g.clone()).unwrap_or(None);
        // Without a reason of its own now, the last run's (a budget too small for the swap it
        // wanted) while in this period.
        let stopped = plan::stopped(&stored.config, &budget).or_else(|| {
            last_run.as_ref().filter(|r| r.at >= start).and_then(|r| r.stopped.clone())
        });
        Ok(AutoloopStatus {
            period_start: if stored.anchor == 0 { 0 } else { start },
            spent_sat: budget.spent_sat,
            left_sat: stored.config.budget.max_fee_sat.saturating_sub(budget.spent_sat),
            in_flight: budget.in_flight,
            stopped,
            config: stored.config,
            swaps,
            last_run,
        })
    }

    /// `POST /v1/autoloop/dry-run`: what a run would do now, and why; nothing is started or
    /// stored.
    ///
    /// # Errors
    /// Store errors.
    pub async fn dry_run(&self) -> Result<AutoloopPlan, AutoloopError> {
        let _running = self.inner.running.lock().await;
        self.decide(true).await.map(|(plan, _, _)| plan)
    }

    /// One run: plans and starts the swaps decided. Returns the plan, with the swaps' ids.
    ///
    /// # Errors
    /// Store errors.
    pub async fn run_once(&self) -> Result<AutoloopPlan, AutoloopError> {
        let _running = self.inner.running.lock().await;
        let (mut plan, chosen, stored) = self.decide(false).await?;
        if !stored.config.enabled {
            return Ok(plan);
        }
        for (d, offer) in plan.decisions.iter_mut().zip(chosen) {
            let (Some(offer), Some(choice), Some(amount)) = (offer, d.choice.clone(), d.amount_sat)
            else {
                continue;
            };
            let direction = match d.action {
                AutoloopAction::LoopIn => SwapDirection::LoopIn,
                AutoloopAction::LoopOut => SwapDirection::LoopOut,
                AutoloopAction::None => continue,
            };
            let entry = LedgerEntry {
                label: AUTOLOOP_LABEL.into(),
                direction,
                channel_id: d.channel_id.clone(),
                seller: choice.seller.clone(),
                offer_id: choice.offer_id.clone(),
                amount_sat: amount,
                quoted_cost_sat: choice.total_cost_sat,
                own_fee_sat: choice.own_onchain_fee_sat,
                created_at: now_secs(),
                status: SwapStatus::Pending,
                cost_sat: None,
                never_started: false,
            };
            let fee_limit =
                d.rule.cost_limit_sat(amount).saturating_sub(choice.own_onchain_fee_sat);
            match self.start(&offer, &entry, fee_limit).await {
                Ok(id) => {
                    tracing::info!(swap = %id, channel = %d.channel_id, amount_sat = amount,
                        cost_sat = choice.total_cost_sat, "autoloop started a swap: {}", d.reason);
                    d.swap_id = Some(id.to_string());
                }
                Err((id, e)) => {
                    tracing::warn!(channel = %d.channel_id, error = %e, "autoloop swap refused");
                    d.reason = format!("{}: refused: {e}", d.reason);
                    d.action = AutoloopAction::None;
                    if let Some(id) = id {
                        let failed = LedgerEntry {
                            status: SwapStatus::Failed,
                            cost_sat: Some(0),
                            never_started: true,
                            ..entry
                        };
                        if let Ok(v) = serde_json::to_value(&failed) {
                            let put = blocking(self.store(), move |s| s.put_swap_label(&id, &v));
                            if let Err(e) = put.await {
                                tracing::warn!(error = %e, "cannot mark the refused swap");
                            }
                        }
                    }
                }
            }
        }
        if let Ok(mut last) = self.inner.last_run.lock() {
            // Said once when it starts holding (the budget spent, swaps in flight).
            let before = last.as_ref().and_then(|p| p.stopped.clone());
            if let Some(why) = plan.stopped.as_ref().filter(|w| before.as_ref() != Some(*w)) {
                tracing::info!("autoloop starts nothing: {why}");
            }
            *last = Some(plan.clone());
        }
        Ok(plan)
    }

    /// Starts one swap with its ledger entry as label. On an error, the swap's id when its label
    /// may have been stored.
    async fn start(
        &self,
        offer: &Candidate,
        entry: &LedgerEntry,
        fee_limit: u64,
    ) -> Result<SwapId, (Option<SwapId>, String)> {
        let maker = NostrPublicKey::from_hex(&offer.seller).map_err(|e| (None, e.to_string()))?;
        let label = serde_json::to_value(entry).map_err(|e| (None, e.to_string()))?;
        let engine = &self.inner.engine;
        let before: BTreeSet<SwapId> = self.labelled_ids().await;
        let started = match entry.direction {
            SwapDirection::LoopIn => {
                let limits =
                    LoopInLimits { max_total_fee_sat: fee_limit, ..LoopInLimits::default() };
                engine
                    .take_loop_in_offer_labelled(
                        offer.offer.clone(),
                        maker,
                        entry.amount_sat,
                        limits,
                        None,
                        Some(label),
                    )
                    .await
            }
            _ => {
                let policy = BuyerPolicy {
                    max_total_fee_sat: fee_limit,
                    ..self.inner.settings.buyer_policy
                };
                engine
                    .take_offer_labelled(
                        offer.offer.clone(),
                        maker,
                        entry.amount_sat,
                        policy,
                        None,
                        Some(label),
                    )
                    .await
            }
        };
        match started {
            Ok(id) => Ok(id),
            Err(e) => {
                // The label written for the refused swap, if it got that far.
                let after = self.labelled_ids().await;
                let id = after.difference(&before).next().copied();
                Err((id, e.to_string()))
            }
        }
    }

    async fn labelled_ids(&self) -> BTreeSet<SwapId> {
        blocking(self.store(), |s| s.swap_labels())
            .await
            .map(|l| l.into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default()
    }

    /// Gathers the inputs and runs the planner.
    async fn decide(
        &self,
        dry_run: bool,
    ) -> Result<(AutoloopPlan, Vec<Option<Candidate>>, Stored), AutoloopError> {
        let stored = self.stored().await?;
        let ledger = self.ledger().await?;
        let now = now_secs();
        let (_, budget) = budget_state(&stored, &ledger, now);
        let engine = &self.inner.engine;
        let channels: Vec<ChannelState> = engine
            .lightning()
            .channels()
            .into_iter()
            .map(|c| ChannelState {
                channel_id: c.channel_id,
                peer: c.counterparty,
                capacity_sat: c.capacity_sat,
                local_sat: c.outbound_msat / 1000,
                remote_sat: c.inbound_msat / 1000,
                usable: c.usable,
            })
            .collect();
        let mut last_swap_at: BTreeMap<String, u64> = BTreeMap::new();
        let mut busy = BTreeSet::new();
        let mut failures: BTreeMap<String, u32> = BTreeMap::new();
        for (_, e) in &ledger {
            let last = last_swap_at.entry(e.channel_id.clone()).or_default();
            *last = (*last).max(e.created_at);
            if e.status == SwapStatus::Pending {
                busy.insert(e.channel_id.clone());
            }
            if e.status == SwapStatus::Failed && !e.never_started {
                *failures.entry(e.seller.clone()).or_default() += 1;
            }
        }
        // The buyer's own memory of no-shows (loop outs taken by hand too); autoloop's failed
        // loop outs are no-shows there already when they were.
        match engine.seller_tracks() {
            Ok(tracks) => {
                for (seller, t) in tracks {
                    let f = failures.entry(seller).or_default();
                    *f = (*f).max(t.no_shows);
                }
            }
            Err(e) => tracing::warn!(error = %e, "autoloop cannot read the sellers' tracks"),
        }
        let (claim_rate, funding_rate) = engine.fee_rates();
        let own_fees = OwnFees {
            loop_out_claim_sat: claim_rate.to_sat_per_vb_ceil().saturating_mul(CLAIM_VBYTES),
            loop_in_funding_sat: funding_rate.to_sat_per_vb_ceil().saturating_mul(FUNDING_VBYTES),
        };
        // The offers for each swap the channels need.
        let mut wanted = BTreeSet::new();
        for ch in &channels {
            let rule = plan::rule_for(&stored.config, ch);
            if let Ok((direction, amount)) = plan::need(&rule, ch) {
                if ch.usable && amount > 0 {
                    wanted.insert((direction == SwapDirection::LoopIn, amount));
                }
            }
        }
        let me = self.inner.nostr.public_key().to_hex();
        let mut offers: Vec<Candidate> = Vec::new();
        for (loop_in, amount) in wanted {
            let direction = if loop_in { SwapDirection::LoopIn } else { SwapDirection::LoopOut };
            let filter = OfferFilter {
                network: self.inner.settings.network,
                amount_sat: amount,
                sellers: Vec::new(),
                direction,
            };
            match self.inner.nostr.discover_offers(&filter).await {
                Ok(found) => {
                    for d in found {
                        let seller = d.seller.to_hex();
                        let known = offers
                            .iter()
                            .any(|c| c.seller == seller && c.offer.offer_id == d.offer.offer_id);
                        if seller != me && !known {
                            offers.push(Candidate { seller, offer: d.offer });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "autoloop cannot discover offers"),
            }
        }
        let input = PlanInput {
            config: &stored.config,
            channels: &channels,
            budget,
            last_swap_at: &last_swap_at,
            busy_channels: &busy,
            offers: &offers,
            seller_failures: &failures,
            own_fees,
            now,
            max_swap_amount_sat: self.inner.settings.max_swap_amount_sat,
        };
        let (plan, chosen) = plan::plan(&input, dry_run);
        Ok((plan, chosen, stored))
    }

    /// Runs every [`AutoloopSettings::interval`] until `shutdown` resolves (a run only does
    /// something while autoloop is enabled).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let mut ticker =
            tokio::time::interval(self.inner.settings.interval.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {
                    match self.stored().await {
                        Ok(s) if !s.config.enabled => continue,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "autoloop cannot read its settings");
                            continue;
                        }
                    }
                    if let Err(e) = self.run_once().await {
                        tracing::warn!(error = %e, "autoloop run failed");
                    }
                }
            }
        }
    }
}

/// Checks settings.
fn check(config: &AutoloopConfig) -> Result<(), AutoloopError> {
    let invalid = |what: String| Err(AutoloopError::Invalid(what));
    if let Some(p) = config.rule.problem() {
        return invalid(format!("rule: {p}"));
    }
    for (i, o) in config.overrides.iter().enumerate() {
        if o.channel_id.is_some() == o.peer.is_some() {
            return invalid(format!("overrides[{i}]: name one of channel_id and peer"));
        }
        if let Some(p) = o.rule.problem() {
            return invalid(format!("overrides[{i}].rule: {p}"));
        }
    }
    if config.budget.period_secs == 0 {
        return invalid("budget.period_secs must be greater than 0".into());
    }
    Ok(())
}

/// Brings a pending entry up to date from its swap's record (and a loop out's routing fee from
/// the Lightning node); `true` when it ended.
fn settle(
    store: &dyn SwapStore,
    lightning: &dyn Lightning,
    id: &SwapId,
    entry: &mut LedgerEntry,
    now: u64,
) -> Result<bool, StoreError> {
    let Some(record) = store.get_swap(id)? else {
        if now.saturating_sub(entry.created_at) > NEVER_STARTED_SECS {
            entry.status = SwapStatus::Failed;
            entry.cost_sat = Some(0);
            entry.never_started = true;
            return Ok(true);
        }
        return Ok(false);
    };
    let Some(figures) = stats::figures_in(store, &record)? else { return Ok(false) };
    let quote_fee = figures.quote.map_or(0, |q| q.fee_sat());
    // What a loop out's payment paid the route (a loop in's maker pays its own).
    let routing = record
        .payment_hash
        .and_then(|h| lightning.payment(h))
        .filter(|p| p.direction == "outbound")
        .and_then(|p| p.fee_paid_msat)
        .map_or(0, |msat| msat.div_ceil(1000));
    let (status, cost) = match (figures.kind, entry.direction) {
        (StateKind::Pending, _) => return Ok(false),
        (StateKind::Succeeded, SwapDirection::LoopIn) => {
            (SwapStatus::Succeeded, quote_fee.saturating_add(entry.own_fee_sat))
        }
        (StateKind::Failed, SwapDirection::LoopIn) => {
            let funded = figures.refunded;
            let own = if funded { entry.own_fee_sat } else { 0 };
            (SwapStatus::Failed, own.saturating_add(figures.onchain_fee_sat))
        }
        (StateKind::Succeeded, _) => {
            (SwapStatus::Succeeded, figures.cost_sat().unwrap_or(quote_fee).saturating_add(routing))
        }
        (StateKind::Failed, _) => {
            (SwapStatus::Failed, figures.cost_sat().unwrap_or(0).saturating_add(routing))
        }
    };
    entry.status = status;
    entry.cost_sat = Some(cost);
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn entry(created_at: u64, status: SwapStatus, cost: Option<u64>) -> LedgerEntry {
        LedgerEntry {
            label: AUTOLOOP_LABEL.into(),
            direction: SwapDirection::LoopOut,
            channel_id: "c1".into(),
            seller: "aa".into(),
            offer_id: "o".into(),
            amount_sat: 100_000,
            quoted_cost_sat: 1_500,
            own_fee_sat: 111,
            created_at,
            status,
            cost_sat: cost,
            never_started: false,
        }
    }

    #[test]
    fn the_budget_counts_this_period_and_what_is_in_flight() {
        let mut stored = Stored { anchor: 1_000, ..Stored::default() };
        stored.config.budget.period_secs = 100;
        let entries = vec![
            (SwapId([1; 32]), entry(1_050, SwapStatus::Succeeded, Some(1_700))),
            (SwapId([2; 32]), entry(1_150, SwapStatus::Failed, Some(300))),
            (SwapId([3; 32]), entry(1_090, SwapStatus::Pending, None)),
            (SwapId([4; 32]), entry(1_160, SwapStatus::Succeeded, Some(1_600))),
        ];
        let (start, b) = budget_state(&stored, &entries, 1_170);
        assert_eq!(start, 1_100);
        assert_eq!(b.period_end, 1_200);
        // 300 + 1 600 this period, and the swap still in flight at its quote.
        assert_eq!(b.spent_sat, 300 + 1_600 + 1_500);
        assert_eq!(b.in_flight, 1);
        let (start, b) = budget_state(&stored, &entries, 1_099);
        assert_eq!(start, 1_000);
        assert_eq!(b.spent_sat, 1_700 + 1_500);
    }

    #[test]
    fn labels_of_others_are_not_ledger_entries() {
        let e = entry(1, SwapStatus::Pending, None);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(entry_of(&v), Some(e.clone()));
        let mut other = v.clone();
        other["label"] = "manual".into();
        assert_eq!(entry_of(&other), None);
        assert_eq!(entry_of(&serde_json::json!({"label": "autoloop"})), None);
    }

    #[test]
    fn settings_are_checked() {
        let mut c = AutoloopConfig::default();
        assert!(check(&c).is_ok());
        c.rule.low_pct = 80;
        assert!(check(&c).unwrap_err().to_string().starts_with("rule: low_pct (80)"));
        c.rule.low_pct = 20;
        c.overrides.push(looper_api::AutoloopOverride {
            channel_id: None,
            peer: None,
            rule: c.rule,
        });
        assert!(check(&c).unwrap_err().to_string().contains("name one of channel_id and peer"));
        c.overrides.clear();
        c.budget.period_secs = 0;
        assert!(check(&c).is_err());
    }
}
