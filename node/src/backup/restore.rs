//! Restoring from the backups: the fetched events become a [`RestorePlan`] (pure: newest version
//! per record, the next safe swap index, the wallet scripts to watch), which is then written to
//! the store ([`apply_plan`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::ScriptBuf;
use looper_protocol::record::SwapRecord as ProtoRecord;
use nostr_sdk::Event;

use super::codec::{decode_event, BackupKeys, Payload};
use super::relays::BackupRelays;
use super::BackupError;
use crate::store::{RestoreState, SwapRecord, SwapRole, SwapStatus, SwapStore, MAX_SWAP_INDEX};
use crate::wallet::LooperWallet;

/// Addresses of each wallet keychain searched for the restored swaps' claim and refund
/// destinations, beyond two per restored swap.
const WALLET_SEARCH_MARGIN: u32 = 1_000;

/// A swap record found in the backups.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredSwap {
    /// The record, as the store keeps it.
    pub record: SwapRecord,
    /// Its swap-key index.
    pub key_index: u32,
    /// The wallet script its coins come back to: the seller's refund destination, the buyer's
    /// claim destination.
    pub wallet_script: ScriptBuf,
}

/// What a restore writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestorePlan {
    /// The newest version of every swap record that decodes.
    pub swaps: Vec<RestoredSwap>,
    /// Our offers (withdrawn ones left out).
    pub offers: Vec<(String, serde_json::Value)>,
    /// The highest index mark found (in index events and in swap records).
    pub index_mark: u32,
    /// The next swap index after the restore: above the mark and above every restored swap's
    /// key index.
    pub next_index: u32,
    /// Events or records skipped because they did not decode.
    pub skipped: usize,
}

impl RestorePlan {
    /// The plan from fetched backup events (hostile input: each is checked by
    /// [`decode_event`]; what does not decode is skipped with a warning).
    pub fn from_events(keys: &BackupKeys, events: &[Event]) -> RestorePlan {
        let mut plan = RestorePlan::default();
        // Newest version per label: by created_at, then by the record's updated_at.
        let mut newest: HashMap<String, (u64, u64, Payload)> = HashMap::new();
        for event in events {
            let payload = match decode_event(keys, event) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e, "skipping a backup event");
                    plan.skipped += 1;
                    continue;
                }
            };
            let created_at = event.created_at.as_secs();
            let updated_at = match &payload {
                Payload::Swap { record, reserved_index } => {
                    plan.index_mark = plan.index_mark.max(*reserved_index);
                    record.updated_at
                }
                Payload::Index { reserved_index } => {
                    plan.index_mark = plan.index_mark.max(*reserved_index);
                    0
                }
                Payload::Offer { .. } => 0,
            };
            let label = payload.label();
            let keep =
                newest.get(&label).is_none_or(|(c, u, _)| (created_at, updated_at) > (*c, *u));
            if keep {
                newest.insert(label, (created_at, updated_at, payload));
            }
        }
        let mut highest_key: Option<u32> = None;
        let mut entries: Vec<(String, (u64, u64, Payload))> = newest.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, (_, _, payload)) in entries {
            match payload {
                Payload::Swap { record, .. } => match restored_swap(record) {
                    Ok(swap) => {
                        highest_key =
                            Some(highest_key.map_or(swap.key_index, |h| h.max(swap.key_index)));
                        plan.swaps.push(swap);
                    }
                    Err((id, reason)) => {
                        tracing::warn!(swap = %id, error = %reason, "skipping a backed-up swap record");
                        plan.skipped += 1;
                    }
                },
                Payload::Offer { offer_id, offer: Some(offer) } => {
                    plan.offers.push((offer_id, offer))
                }
                Payload::Offer { offer: None, .. } | Payload::Index { .. } => {}
            }
        }
        let after_keys = highest_key.map_or(0, |k| k.saturating_add(1));
        plan.next_index = plan.index_mark.max(after_keys).min(MAX_SWAP_INDEX.saturating_add(1));
        plan.swaps
            .sort_by(|a, b| a.key_index.cmp(&b.key_index).then(a.record.id.cmp(&b.record.id)));
        plan
    }

    /// How many restored swaps are still open (pending).
    pub fn open_swaps(&self) -> usize {
        self.swaps.iter().filter(|s| s.record.status == SwapStatus::Pending).count()
    }
}

/// Checks a backed-up record against its protocol data: the data must decode, name the same
/// swap and role; the key index and wallet script come from it.
fn restored_swap(mut record: SwapRecord) -> Result<RestoredSwap, (crate::store::SwapId, String)> {
    let id = record.id;
    let mut proto = ProtoRecord::from_bytes(&record.data).map_err(|e| (id, e.to_string()))?;
    if let ProtoRecord::Buyer(b) = &mut proto {
        // The Lightning node restored with this store lost its payments, and the backup may be
        // older than the last payment attempt: the buyer must not read "no payment known" as
        // "nothing in flight" (no second payment, no refund signature).
        if b.kind() == looper_protocol::swap::StateKind::Pending && !b.lightning_state_lost() {
            b.mark_lightning_state_lost();
            record.data = proto.to_bytes().map_err(|e| (id, e.to_string()))?;
        }
    }
    if proto.swap_id() != id {
        return Err((id, "the record's data is for another swap".to_string()));
    }
    let wallet_script = match (&proto, record.role) {
        (ProtoRecord::Seller(s), SwapRole::Seller) => s.refund_destination().clone(),
        (ProtoRecord::Buyer(b), SwapRole::Buyer) => b.claim_destination().clone(),
        _ => return Err((id, "the record's role differs from its data".to_string())),
    };
    Ok(RestoredSwap { key_index: proto.key_index(), wallet_script, record })
}

/// Writes `plan` into `store` (normally empty): the restore state goes to in progress, the next
/// swap index is raised, every record and offer is written, the wallet reveals the restored
/// swaps' scripts, and the restore state becomes complete. A crash in between leaves the state in
/// progress, so the next start restores again.
///
/// # Errors
/// Store or wallet errors.
pub fn apply_plan(
    store: &dyn SwapStore,
    wallet: Option<&LooperWallet>,
    plan: &RestorePlan,
) -> Result<(), BackupError> {
    store.set_restore_state(RestoreState::InProgress)?;
    store.raise_swap_index(plan.next_index)?;
    for swap in &plan.swaps {
        store.put_swap(&swap.record)?;
    }
    for (id, offer) in &plan.offers {
        store.put_offer(id, offer)?;
    }
    if let Some(wallet) = wallet {
        let scripts: Vec<ScriptBuf> = plan.swaps.iter().map(|s| s.wallet_script.clone()).collect();
        let limit = u32::try_from(scripts.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(2)
            .saturating_add(WALLET_SEARCH_MARGIN);
        let found = wallet.reveal_scripts(&scripts, limit)?;
        tracing::info!(
            scripts = scripts.len(),
            found,
            "wallet addresses of the restored swaps revealed"
        );
    }
    store.set_restore_state(RestoreState::Complete)?;
    Ok(())
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Backup events fetched (all relays, distinct).
    pub events: usize,
    /// Relays that answered completely.
    pub relays_answered: usize,
    /// Relays that did not.
    pub relays_failed: usize,
    /// Swap records restored.
    pub swaps: usize,
    /// Of which still open.
    pub open_swaps: usize,
    /// Offers restored.
    pub offers: usize,
    /// Events or records skipped.
    pub skipped: usize,
    /// The next swap index.
    pub next_index: u32,
    /// A relay held more than the fetch limits.
    pub truncated: bool,
}

/// Fetches the backups of `keys` from `relays` and writes them into `store` (and reveals the
/// wallet scripts). `timeout` bounds each relay's connection and each page of the fetch.
///
/// # Errors
/// [`BackupError::NoRelayAnswered`] when no relay answered: nothing is written and the restore
/// runs again at the next start; store or wallet errors.
pub async fn restore_from_relays(
    relays: &BackupRelays,
    keys: &BackupKeys,
    store: Arc<dyn SwapStore>,
    wallet: Option<Arc<LooperWallet>>,
    timeout: Duration,
) -> Result<RestoreReport, BackupError> {
    tracing::info!(
        relays = relays.relays().len(),
        backup_key = %keys.public_key(),
        timeout_secs = timeout.as_secs(),
        "empty swap store with an existing seed: restoring the swaps from the backups on the relays"
    );
    let fetched = relays.fetch(keys.public_key(), timeout).await?;
    tracing::info!(
        events = fetched.events.len(),
        relays_answered = fetched.relays_answered,
        relays_failed = fetched.relays_failed,
        "backups fetched"
    );
    if fetched.truncated {
        tracing::warn!("a relay holds more backups than a restore reads; the oldest were left out");
    }
    let keys = keys.clone();
    let event_count = fetched.events.len();
    let events = fetched.events;
    let plan = tokio::task::spawn_blocking(move || RestorePlan::from_events(&keys, &events))
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?;
    let report = RestoreReport {
        events: event_count,
        relays_answered: fetched.relays_answered,
        relays_failed: fetched.relays_failed,
        swaps: plan.swaps.len(),
        open_swaps: plan.open_swaps(),
        offers: plan.offers.len(),
        skipped: plan.skipped,
        next_index: plan.next_index,
        truncated: fetched.truncated,
    };
    tokio::task::spawn_blocking(move || apply_plan(&*store, wallet.as_deref(), &plan))
        .await
        .map_err(|e| BackupError::Task(e.to_string()))??;
    tracing::info!(
        swaps = report.swaps,
        open = report.open_swaps,
        offers = report.offers,
        skipped = report.skipped,
        next_swap_index = report.next_index,
        "swaps restored from the backups"
    );
    Ok(report)
}
