//! Batched claims (spec `03-transactions.md`, "Batched claims"): a buyer with several HTLCs to
//! claim through the claim leaf at the same time spends them in one transaction.
//!
//! A claim leaf input weighs 97.75 vB, the transaction's version, locktime, counts and one P2TR
//! output 54.25 vB more: `n` claims alone take `152 n` vB, batched `54.25 + 97.75 n` (two:
//! 249 vB instead of 304; ten: 1 031 instead of 1 520; [`batch_claim_vbytes`]). The
//! cooperative key-path claim is not batched: its MuSig2 signature commits to the whole
//! transaction, so every seller in a batch would have to sign it and one silent seller would hold
//! all the claims up, while one key-path claim alone (111 vB) is already cheaper than a batched
//! claim-leaf input. Script-path claims are the fallback and every deadline bump, which is when
//! several swaps claim at once (a seller gone silent, a fee spike).
//!
//! The node collects the swaps that ask ([`crate::swap::Action::QueueClaim`]) and each swap's
//! [`ClaimMember`]; [`plan_claims`] lays them out in batches of at most [`MAX_CLAIM_BATCH`], and
//! prices each batch for the earliest deadline in it, over the value of all its HTLCs
//! ([`crate::fees::spend_fee_rate`]), never below what a member's own bump rule asked for, and,
//! replacing claims that are out, above each of their fee rates and their fees together
//! (BIP-125 rules 3, 4 and 6). Swaps whose claims are out in one transaction stay together: a
//! replacement leaving one out would evict its claim from the mempool. A batch in which a
//! member's share of the fee would exceed [`MAX_DEADLINE_FEE_PERCENT`] of its HTLC is split into
//! the claims that were together before. Each swap then signs its input
//! ([`crate::buyer::BuyerSwap::sign_batch_claim`]) and takes the claim with
//! [`crate::swap::Event::ClaimBuilt`].

use std::collections::BTreeMap;

use bitcoin::{FeeRate, ScriptBuf, Transaction, Txid};

use crate::buyer::BuyerSwap;
use crate::fees::INCREMENTAL_RELAY_SAT_VB;
use crate::fees::{rate_of, spend_fee_rate, FeeEstimates, SpendFee, MAX_DEADLINE_FEE_PERCENT};
use crate::shared::internal;
use crate::spend::{HtlcInput, SpendError, SpendTx};
use crate::swap::{Context, Event, SwapError};
use crate::types::SwapId;

/// Most HTLCs one claim spends (every swap of the batch keeps the whole claim in its record, and
/// a record must stay well under what one encrypted backup event carries).
pub const MAX_CLAIM_BATCH: usize = 20;

/// Virtual size of a claim spending `n` HTLCs through the claim leaf to one P2TR output.
pub fn batch_claim_vbytes(n: u64) -> u64 {
    // 605 wu alone; each further input adds 391 wu (41 bytes × 4 + its 227-byte witness).
    (605 + n.saturating_sub(1).saturating_mul(391)).div_ceil(4)
}

/// The claim of a member that is out.
#[derive(Debug, Clone)]
pub struct ClaimOut {
    /// The transaction (a claim of this swap alone or a batch).
    pub tx: Transaction,
    /// The value of all its inputs, in sat.
    pub inputs_sat: u64,
}

impl ClaimOut {
    /// The fee it pays.
    pub fn fee_sat(&self) -> u64 {
        self.inputs_sat.saturating_sub(self.tx.output.iter().map(|o| o.value.to_sat()).sum())
    }
}

/// One swap's HTLC to claim through the claim leaf, as a batch needs it.
#[derive(Debug, Clone)]
pub struct ClaimMember {
    /// The swap.
    pub swap_id: SwapId,
    /// Its HTLC ([`crate::spend::SpendPath::ClaimScript`]).
    pub input: HtlcInput,
    /// Where the swap's claim pays (the batch pays its first member's destination).
    pub destination: ScriptBuf,
    /// The height by which the claim must confirm (the timeout less the safety margin).
    pub deadline_height: u32,
    /// Its confirmation target.
    pub target: u16,
    /// The fee-rate cap outside the urgent window.
    pub cap: FeeRate,
    /// The least rate its own bump rule asks for (`None`: no bump asked).
    pub wanted: Option<FeeRate>,
    /// Its claim that is out, if any.
    pub out: Option<ClaimOut>,
}

/// One batch laid out: the unsigned claim and the swaps whose inputs it spends, in input order.
#[derive(Debug, Clone)]
pub struct ClaimPlan {
    /// The claim, to be signed input by input.
    pub spend: SpendTx,
    /// The swaps, by input index.
    pub members: Vec<SwapId>,
    /// The value of all inputs, in sat.
    pub inputs_sat: u64,
    /// The claims it replaces.
    pub replaces: Vec<Txid>,
}

/// A batch that could not be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim of {} swap(s) not built: {error}", members.len())]
pub struct PlanError {
    /// The swaps it was for.
    pub members: Vec<SwapId>,
    /// Why.
    pub error: SpendError,
}

/// Lays `members` out in batches at tip `tip` (see the module doc): the earliest deadlines
/// first, members whose claims are out together kept together.
pub fn plan_claims(
    members: Vec<ClaimMember>,
    estimates: &FeeEstimates,
    tip: u32,
) -> Vec<Result<ClaimPlan, PlanError>> {
    let mut groups: Vec<Vec<ClaimMember>> = Vec::new();
    let mut by_out: BTreeMap<Txid, usize> = BTreeMap::new();
    for m in members {
        if groups.iter().flatten().any(|g| g.input.outpoint == m.input.outpoint) {
            continue;
        }
        match m.out.as_ref().map(|o| o.tx.compute_txid()) {
            Some(txid) => match by_out.get(&txid) {
                Some(&i) => groups[i].push(m),
                None => {
                    by_out.insert(txid, groups.len());
                    groups.push(vec![m]);
                }
            },
            None => groups.push(vec![m]),
        }
    }
    groups.sort_by_key(|g| g.iter().map(|m| m.deadline_height).min().unwrap_or(u32::MAX));
    let mut batches: Vec<Vec<Vec<ClaimMember>>> = Vec::new();
    for group in groups {
        let fits = batches.last().is_some_and(|b| {
            b.iter().map(Vec::len).sum::<usize>() + group.len() <= MAX_CLAIM_BATCH
        });
        match batches.last_mut() {
            Some(b) if fits => b.push(group),
            _ => batches.push(vec![group]),
        }
    }
    let mut plans = Vec::new();
    for batch in batches {
        let all: Vec<ClaimMember> = batch.iter().flatten().cloned().collect();
        match plan_one(&all, estimates, tip) {
            Ok(plan) if batch.len() > 1 && !fair(&plan, &all) => {
                // Split into the claims that were together before.
                plans.extend(batch.iter().map(|g| plan_one(g, estimates, tip)));
            }
            other => plans.push(other),
        }
    }
    plans
}

/// Whether no member pays more than [`MAX_DEADLINE_FEE_PERCENT`] of its HTLC as its share.
fn fair(plan: &ClaimPlan, members: &[ClaimMember]) -> bool {
    let n = members.len() as u64;
    let share = plan.spend.fee().to_sat().div_ceil(n.max(1));
    members
        .iter()
        .all(|m| share.saturating_mul(100) <= m.input.amount.to_sat() * MAX_DEADLINE_FEE_PERCENT)
}

fn plan_one(
    members: &[ClaimMember],
    estimates: &FeeEstimates,
    tip: u32,
) -> Result<ClaimPlan, PlanError> {
    let fail = |error| PlanError { members: members.iter().map(|m| m.swap_id).collect(), error };
    let first = members.first().ok_or_else(|| fail(SpendError::NoInputs))?;
    let inputs: Vec<HtlcInput> = members.iter().map(|m| m.input.clone()).collect();
    let inputs_sat = inputs
        .iter()
        .try_fold(0u64, |a, i| a.checked_add(i.amount.to_sat()))
        .ok_or_else(|| fail(SpendError::Overflow))?;
    let one = FeeRate::from_sat_per_kwu(250);
    // At 1 sat/vB the fee is the virtual size.
    let vsize = SpendTx::build(inputs.clone(), first.destination.clone(), one)
        .map_err(fail)?
        .fee()
        .to_sat();
    let spend = SpendFee {
        value_sat: inputs_sat,
        vsize,
        target: members.iter().map(|m| m.target).min().unwrap_or(first.target),
        blocks_left: members.iter().map(|m| m.deadline_height.saturating_sub(tip)).min(),
        cap: members.iter().map(|m| m.cap).min().unwrap_or(first.cap),
    };
    let mut rate = spend_fee_rate(estimates, &spend, None).unwrap_or(one);
    for wanted in members.iter().filter_map(|m| m.wanted) {
        rate = rate.max(wanted);
    }
    // Replacing claims that are out: above each one's rate, and their fees together plus the
    // relay increment for our own size.
    let mut outs: BTreeMap<Txid, &ClaimOut> = BTreeMap::new();
    for out in members.iter().filter_map(|m| m.out.as_ref()) {
        outs.insert(out.tx.compute_txid(), out);
    }
    let mut least_fee = 0u64;
    for out in outs.values() {
        let old = rate_of(out.fee_sat(), out.tx.vsize() as u64);
        let above = old.to_sat_per_kwu().saturating_add(INCREMENTAL_RELAY_SAT_VB * 250);
        rate = rate.max(FeeRate::from_sat_per_kwu(above));
        least_fee = least_fee.saturating_add(out.fee_sat());
    }
    if !outs.is_empty() {
        least_fee = least_fee.saturating_add(vsize.saturating_mul(INCREMENTAL_RELAY_SAT_VB));
        let per_vb = least_fee.div_ceil(vsize.max(1));
        rate = rate.max(FeeRate::from_sat_per_kwu(per_vb.saturating_mul(250)));
    }
    let built = SpendTx::build(inputs, first.destination.clone(), rate).map_err(fail)?;
    Ok(ClaimPlan {
        spend: built,
        members: members.iter().map(|m| m.swap_id).collect(),
        inputs_sat,
        replaces: outs.keys().copied().collect(),
    })
}

/// A batch of one: `swap`'s claim alone, laid out as [`plan_claims`] does and signed, as the
/// [`Event::ClaimBuilt`] to feed it, and the claim to broadcast once it is taken. For drivers
/// without a batcher (examples, simulations) answering [`crate::swap::Action::QueueClaim`].
///
/// # Errors
/// Nothing to claim, or the claim cannot be built at this fee rate.
pub fn claim_alone(swap: &BuyerSwap, ctx: &Context) -> Result<(Event, Transaction), SwapError> {
    let member = swap.claim_member(ctx).ok_or_else(|| internal("nothing to claim"))?;
    let mut plan = plan_claims(vec![member], &ctx.fees.estimates, ctx.tip_height)
        .pop()
        .ok_or_else(|| internal("no claim laid out"))?
        .map_err(internal)?;
    swap.sign_batch_claim(&mut plan.spend, 0)?;
    let tx = plan.spend.finalize().map_err(internal)?;
    Ok((Event::ClaimBuilt { tx: tx.clone(), inputs_sat: plan.inputs_sat }, tx))
}
