//! The operator's view: what each swap amounts to ([`SwapFigures`]: its amount, what it cost the
//! buyer or earned the seller) and the sums over every stored swap ([`stats`], answered by
//! `GET /v1/stats`). Pure functions over the store's swap records (the protocol's versioned
//! record in [`SwapRecord::data`]) and their event logs (the engine's notifications, tagged by
//! `event`); [`from_store`] and [`figures_in`] only read the store.
//!
//! Where each number comes from:
//!
//! - amounts and charges: the quote in the record (a buyer's swap not accepted yet: the quote
//!   computed from its offer and amount, as the buyer checks it);
//! - the buyer's claim fee: its `Claimed` state (the HTLC's value minus what landed in the
//!   wallet);
//! - the seller's refund fee: the event log's `broadcast` / `replaced` notification of the refund
//!   that confirmed (the `Refunded` state's txid);
//! - prepays: a `prepaid` notification in the log, or a state that the seller reaches only once
//!   the prepay is in (the HTLC funded).
//!
//! Not in the records, so in no number: the seller's funding fees (a record holds the funding
//! transaction, not the values of its inputs; [`looper_api::SellerStats::refunded_funding_fees_sat`]
//! gives the quoted funding fees of the refunded swaps as an estimate) and Lightning routing fees.
//! A store restored from backups holds no event logs: its refunds' fees are unknown (counted in
//! [`looper_api::SellerStats::refund_fees_unknown`]) and a buyer's prepay shows only when its
//! state proves it was paid.

use looper_api::{BuyerStats, DirectionStats, OutcomeCounts, SellerStats, StatsResponse};
use looper_protocol::buyer::{BuyerRecord, BuyerState};
use looper_protocol::record::SwapRecord as ProtoRecord;
use looper_protocol::seller::{SellerRecord, SellerState};
use looper_protocol::swap::StateKind;
use looper_protocol::terms::Quote;
use looper_protocol::SwapDirection;
use serde_json::Value;

use crate::store::{
    StoreError, SwapEvent, SwapFilter, SwapRecord, SwapRole, SwapStatus, SwapStore,
};

/// What one swap amounts to, read from its record and event log ([`figures`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapFigures {
    /// Which way the money moves (the offer's direction).
    pub direction: SwapDirection,
    /// Our side.
    pub role: SwapRole,
    /// Pending, succeeded or failed (the record's state).
    pub kind: StateKind,
    /// The swap amount: the HTLC's value (the quote's `amount_sat`).
    pub amount_sat: u64,
    /// The quote, when known (always for a seller; a buyer's once accepted, or computed from its
    /// offer before).
    pub quote: Option<Quote>,
    /// The prepay that went through (the buyer paid it, the seller received it); 0 when there
    /// is none, or not yet, or nothing shows it was paid.
    pub prepay_sat: u64,
    /// The on-chain fee of our spend of the HTLC that confirmed: the buyer's claim (`Claimed`),
    /// the seller's refund (`Refunded`); 0 otherwise, and when not known.
    pub onchain_fee_sat: u64,
    /// The seller's swap ended `Refunded`.
    pub refunded: bool,
    /// A `Refunded` swap whose refund fee is not in its event log.
    pub onchain_fee_unknown: bool,
    /// A buyer's swap that ended `Lost`: the main invoice it paid (its prepay is in
    /// [`SwapFigures::prepay_sat`]).
    pub lost_sat: u64,
}

impl SwapFigures {
    /// The seller's charges of the quote: swap fee + funding fee.
    fn fee_sat(&self) -> Option<u64> {
        self.quote.map(|q| q.fee_sat())
    }

    /// Buyer: what the swap costs, as [`looper_api::SwapSummary::cost_sat`] says (succeeded:
    /// charges + claim fee; pending: the quote's charges; failed: the prepay paid + what a `Lost`
    /// swap paid). `None` for a seller, or a buyer's swap without a quote.
    pub fn cost_sat(&self) -> Option<u64> {
        if self.role != SwapRole::Buyer {
            return None;
        }
        match self.kind {
            StateKind::Succeeded => self.fee_sat().map(|f| f.saturating_add(self.onchain_fee_sat)),
            StateKind::Pending => self.fee_sat(),
            StateKind::Failed => Some(self.prepay_sat.saturating_add(self.lost_sat)),
        }
    }

    /// Seller: the fee the swap earns, as [`looper_api::SwapSummary::earned_sat`] says
    /// (succeeded or pending: the quote's charges; failed: the prepay kept). `None` for a buyer.
    pub fn earned_sat(&self) -> Option<u64> {
        if self.role != SwapRole::Seller {
            return None;
        }
        match self.kind {
            StateKind::Succeeded | StateKind::Pending => self.fee_sat(),
            StateKind::Failed => Some(self.prepay_sat),
        }
    }
}

/// What a swap's event log tells.
#[derive(Debug, Default)]
struct LogFacts {
    /// The amount of a `prepaid` notification.
    prepaid_sat: Option<u64>,
    /// The refunds broadcast (`broadcast` and `replaced` of a `*_refund` purpose): txid and fee,
    /// in order.
    refunds: Vec<(String, u64)>,
}

fn read_log(events: &[SwapEvent]) -> LogFacts {
    let mut facts = LogFacts::default();
    for e in events {
        let tag = e.event.get("event").and_then(Value::as_str);
        let u64_of = |key: &str| e.event.get(key).and_then(Value::as_u64);
        match tag {
            Some("prepaid") => facts.prepaid_sat = u64_of("amount_sat").or(facts.prepaid_sat),
            Some("broadcast" | "replaced") => {
                let purpose = e.event.get("purpose").and_then(Value::as_str).unwrap_or("");
                let txid = e.event.get("txid").and_then(Value::as_str);
                if let (true, Some(txid), Some(fee)) =
                    (purpose.ends_with("_refund"), txid, u64_of("fee_sat"))
                {
                    facts.refunds.push((txid.to_string(), fee));
                }
            }
            _ => {}
        }
    }
    facts
}

/// What one swap amounts to, from its protocol record and its event log (oldest first).
pub fn figures(record: &ProtoRecord, events: &[SwapEvent]) -> SwapFigures {
    let log = read_log(events);
    match record {
        ProtoRecord::Buyer(b) => buyer_figures(b, &log),
        ProtoRecord::Seller(s) => seller_figures(s, &log),
    }
}

fn buyer_figures(b: &BuyerRecord, log: &LogFacts) -> SwapFigures {
    let terms = b.terms();
    let quote = terms.map(|t| t.quote).or_else(|| Quote::compute(b.offer(), b.amount_sat()).ok());
    let state = b.state();
    // The seller funds only once the prepay is in: a funded swap's prepay was paid.
    let past_prepay = matches!(
        state,
        BuyerState::Accepted { announced: Some(_), .. }
            | BuyerState::Funded { .. }
            | BuyerState::Paying { .. }
            | BuyerState::Claiming { .. }
            | BuyerState::ClaimBroadcast { .. }
            | BuyerState::Claimed { .. }
            | BuyerState::Lost { .. }
            | BuyerState::Aborted { htlc: Some(_), .. }
    );
    let agreed_prepay = terms.and_then(|t| t.prepay.as_ref()).map(|p| p.amount_msat / 1000);
    let prepay_sat = match (log.prepaid_sat, agreed_prepay) {
        (Some(paid), _) => paid,
        (None, Some(agreed)) if past_prepay => agreed,
        _ => 0,
    };
    let (onchain_fee_sat, lost_sat) = match state {
        BuyerState::Claimed { terms, received_sat, .. } => {
            (terms.quote.htlc_amount_sat.saturating_sub(*received_sat), 0)
        }
        BuyerState::Lost { terms, .. } => (0, terms.invoice_amount_msat / 1000),
        _ => (0, 0),
    };
    SwapFigures {
        direction: b.offer().direction,
        role: SwapRole::Buyer,
        kind: b.kind(),
        amount_sat: quote.map_or(b.amount_sat(), |q| q.amount_sat),
        quote,
        prepay_sat,
        onchain_fee_sat,
        refunded: false,
        onchain_fee_unknown: false,
        lost_sat,
    }
}

fn seller_figures(s: &SellerRecord, log: &LogFacts) -> SwapFigures {
    let quote = *s.quote();
    let state = s.state();
    // The seller funds only once the prepay is in.
    let received = matches!(
        state,
        SellerState::Accepted { prepay: Some(p), .. } if p.paid
    ) || matches!(
        state,
        SellerState::Funded { .. }
            | SellerState::Paid { .. }
            | SellerState::Claimed { .. }
            | SellerState::RefundingCooperatively { .. }
            | SellerState::Refunding { .. }
            | SellerState::Refunded { .. }
    );
    let prepay_sat = match log.prepaid_sat {
        Some(paid) => paid,
        None if received => quote.prepay_sat,
        None => 0,
    };
    let (refunded, onchain_fee) = match state {
        SellerState::Refunded { refund_txid, .. } => {
            let txid = refund_txid.to_string();
            // The confirmed version's fee; else the last refund broadcast.
            let fee = log
                .refunds
                .iter()
                .rev()
                .find(|(t, _)| *t == txid)
                .or(log.refunds.last())
                .map(|(_, fee)| *fee);
            (true, fee)
        }
        _ => (false, Some(0)),
    };
    SwapFigures {
        direction: s.offer().direction,
        role: SwapRole::Seller,
        kind: s.kind(),
        amount_sat: quote.amount_sat,
        quote: Some(quote),
        prepay_sat,
        onchain_fee_sat: onchain_fee.unwrap_or(0),
        refunded,
        onchain_fee_unknown: onchain_fee.is_none(),
        lost_sat: 0,
    }
}

/// The figures of a stored swap: its record decoded, its event log read. `None` when the record
/// does not read.
///
/// # Errors
/// [`StoreError`] when the event log cannot be read.
pub fn figures_in(
    store: &dyn SwapStore,
    record: &SwapRecord,
) -> Result<Option<SwapFigures>, StoreError> {
    let Ok(proto) = ProtoRecord::from_bytes(&record.data) else { return Ok(None) };
    let events = store.swap_events(&record.id, 0)?;
    Ok(Some(figures(&proto, &events)))
}

/// The stats of every stored swap (each record with its event log).
///
/// # Errors
/// [`StoreError`] when the swaps or an event log cannot be read.
pub fn from_store(store: &dyn SwapStore) -> Result<StatsResponse, StoreError> {
    let records = store.list_swaps(&SwapFilter::default())?;
    let mut logs = Vec::with_capacity(records.len());
    for r in &records {
        logs.push(store.swap_events(&r.id, 0)?);
    }
    Ok(stats(records.iter().zip(logs.iter().map(Vec::as_slice))))
}

/// The stats of `swaps` (each stored record with its event log, oldest event first): counts by
/// outcome from the store's status and state name, amounts from the decoded records (see the
/// module documentation and [`StatsResponse`]).
pub fn stats<'a>(
    swaps: impl IntoIterator<Item = (&'a SwapRecord, &'a [SwapEvent])>,
) -> StatsResponse {
    let mut out =
        StatsResponse { swaps: 0, unreadable: 0, directions: vec![empty(SwapDirection::LoopOut)] };
    for (record, events) in swaps {
        out.swaps = out.swaps.saturating_add(1);
        let f = ProtoRecord::from_bytes(&record.data).ok().map(|p| figures(&p, events));
        if f.is_none() {
            out.unreadable = out.unreadable.saturating_add(1);
        }
        let direction = f.as_ref().map_or(SwapDirection::LoopOut, |f| f.direction);
        let d = direction_entry(&mut out.directions, direction);
        match record.role {
            SwapRole::Buyer => {
                count(&mut d.buyer.outcomes, record);
                if let Some(f) = &f {
                    add_buyer(&mut d.buyer, f);
                }
            }
            SwapRole::Seller => {
                count(&mut d.seller.outcomes, record);
                if let Some(f) = &f {
                    add_seller(&mut d.seller, f);
                }
            }
        }
    }
    for d in &mut out.directions {
        let b = &mut d.buyer;
        b.total_cost_sat = b
            .fees_paid_sat
            .saturating_add(b.onchain_fees_paid_sat)
            .saturating_add(b.prepays_lost_sat)
            .saturating_add(b.lost_sat);
        let s = &mut d.seller;
        s.griefing_loss_sat =
            signed(s.onchain_fees_paid_sat).saturating_sub(signed(s.prepays_kept_sat));
    }
    out
}

fn empty(direction: SwapDirection) -> DirectionStats {
    DirectionStats { direction, buyer: BuyerStats::default(), seller: SellerStats::default() }
}

fn direction_entry(all: &mut Vec<DirectionStats>, direction: SwapDirection) -> &mut DirectionStats {
    let i = match all.iter().position(|d| d.direction == direction) {
        Some(i) => i,
        None => {
            all.push(empty(direction));
            all.len() - 1
        }
    };
    &mut all[i]
}

fn count(c: &mut OutcomeCounts, record: &SwapRecord) {
    let n = match record.status {
        SwapStatus::Pending => &mut c.pending,
        SwapStatus::Succeeded => &mut c.succeeded,
        SwapStatus::Failed => &mut c.failed,
    };
    *n = n.saturating_add(1);
    if record.status != SwapStatus::Pending {
        let n = c.by_state.entry(record.state.clone()).or_default();
        *n = n.saturating_add(1);
    }
}

fn add_buyer(b: &mut BuyerStats, f: &SwapFigures) {
    match f.kind {
        StateKind::Succeeded => {
            b.volume_sat = b.volume_sat.saturating_add(f.amount_sat);
            b.fees_paid_sat = b.fees_paid_sat.saturating_add(f.fee_sat().unwrap_or(0));
            b.onchain_fees_paid_sat = b.onchain_fees_paid_sat.saturating_add(f.onchain_fee_sat);
        }
        StateKind::Failed => {
            b.prepays_lost_sat = b.prepays_lost_sat.saturating_add(f.prepay_sat);
            b.lost_sat = b.lost_sat.saturating_add(f.lost_sat);
        }
        StateKind::Pending => {}
    }
}

fn add_seller(s: &mut SellerStats, f: &SwapFigures) {
    match f.kind {
        StateKind::Succeeded => {
            s.volume_sat = s.volume_sat.saturating_add(f.amount_sat);
            s.fees_earned_sat = s.fees_earned_sat.saturating_add(f.fee_sat().unwrap_or(0));
        }
        StateKind::Failed => {
            s.prepays_kept_sat = s.prepays_kept_sat.saturating_add(f.prepay_sat);
            if f.refunded {
                s.onchain_fees_paid_sat = s.onchain_fees_paid_sat.saturating_add(f.onchain_fee_sat);
                s.refund_fees_unknown =
                    s.refund_fees_unknown.saturating_add(u64::from(f.onchain_fee_unknown));
                let funding = f.quote.map_or(0, |q| q.funding_fee_sat);
                s.refunded_funding_fees_sat = s.refunded_funding_fees_sat.saturating_add(funding);
            }
        }
        StateKind::Pending => {}
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::str::FromStr;

    use bitcoin::bip32::Xpriv;
    use bitcoin::secp256k1::Secp256k1;
    use bitcoin::{Network, OutPoint, ScriptBuf, Txid};
    use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerSwap};
    use looper_protocol::keys::SwapKeys;
    use looper_protocol::messages::{Offer, SwapRequest};
    use looper_protocol::seller::{SellerPolicy, SellerSwap};
    use looper_protocol::swap::{Context, Notification, TxPurpose};
    use looper_protocol::SwapId;
    use serde_json::json;

    use super::*;
    use crate::store::MemoryStore;

    /// The swap amount of every test swap, and what its offer charges for it.
    const AMOUNT: u64 = 100_000;
    const SWAP_FEE: u64 = 1_000 + 250; // base + ceil(100_000 * 2_500 / 1e6)
    const FUNDING_FEE: u64 = 300;
    const PREPAY: u64 = 1_000;

    fn keys(seed: u8, index: u32) -> SwapKeys {
        SwapKeys::derive(&Xpriv::new_master(Network::Regtest, &[seed; 32]).unwrap(), index).unwrap()
    }

    fn offer(prepay: Option<u64>) -> Offer {
        let mut v = json!({
            "v": 1, "offer_id": "o", "network": "regtest", "direction": "loop_out",
            "min_amount_sat": 10_000, "max_amount_sat": 1_000_000, "fee_base_sat": 1_000,
            "fee_ppm": 2_500, "funding_fee_sat": FUNDING_FEE, "min_confirmations": 1,
            "timeout_delta": 288, "claim_margin": 20, "invoice_expiry_secs": 3600,
            "ln_node_id": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "relays": ["ws://127.0.0.1:1"], "expires_at": 4_000_000_000u64
        });
        if let Some(p) = prepay {
            v["prepay_sat"] = json!(p);
        }
        serde_json::from_value(v).unwrap()
    }

    fn ctx() -> Context {
        Context::new(1_700_000_000, 500, bitcoin::FeeRate::from_sat_per_vb_u32(2))
    }

    fn p2tr(seed: u8) -> ScriptBuf {
        ScriptBuf::new_p2tr(&Secp256k1::new(), keys(seed, 0).claim_pubkey(), None)
    }

    /// A seller's record (`AwaitingInvoice`) of a swap of [`AMOUNT`] under `offer(prepay)`.
    fn seller(prepay: Option<u64>) -> ProtoRecord {
        let (s, b) = (keys(1, 7), keys(2, 3));
        let request = SwapRequest {
            offer_id: "o".into(),
            direction: SwapDirection::LoopOut,
            network: Network::Regtest,
            amount_sat: AMOUNT,
            buyer_musig_pubkey: b.musig_pubkey(),
            buyer_claim_pubkey: b.claim_pubkey(),
            max_total_fee_sat: 10_000,
            prepay_accepted: prepay.is_some(),
        };
        let (swap, _) = SellerSwap::from_request(
            SwapId([7; 32]),
            "11".repeat(32),
            offer(prepay),
            request,
            s,
            p2tr(8),
            SellerPolicy::default(),
            &ctx(),
        )
        .unwrap();
        ProtoRecord::from(&swap)
    }

    /// A buyer's record (`Requested`) of a swap of [`AMOUNT`] under `offer(prepay)`.
    fn buyer(prepay: Option<u64>) -> ProtoRecord {
        let start = BuyerStart {
            swap_id: SwapId([8; 32]),
            peer: "22".repeat(32),
            offer: offer(prepay),
            amount_sat: AMOUNT,
            policy: BuyerPolicy::default(),
            claim_destination: p2tr(9),
            keys: keys(2, 3),
        };
        ProtoRecord::from(&BuyerSwap::start(start, &ctx()).unwrap().0)
    }

    /// The terms a buyer accepted, with the prepay when the quote has one.
    fn terms(prepay: Option<u64>) -> Value {
        let ProtoRecord::Seller(s) = seller(prepay) else { unreachable!() };
        let q = s.quote();
        let mut t = json!({
            "invoice": "lnbcrt1", "invoice_amount_msat": q.invoice_amount_sat * 1000,
            "invoice_expires_at": 1_700_003_600u64, "min_final_cltv": 80,
            "quote": q, "htlc_params": s.htlc_params(),
        });
        if let Some(p) = prepay {
            t["prepay"] = json!({"invoice": "lnbcrt1p", "payment_hash": "33".repeat(32),
                                 "amount_msat": p * 1000});
        }
        t
    }

    /// `record` with its state replaced by `state` (through its JSON form).
    fn with_state(record: &ProtoRecord, state: Value) -> ProtoRecord {
        let mut v: Value = serde_json::from_slice(&record.to_bytes().unwrap()).unwrap();
        v["swap"]["state"] = state;
        ProtoRecord::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn txid(byte: &str) -> Txid {
        Txid::from_str(&byte.repeat(32)).unwrap()
    }

    fn funding() -> Value {
        let tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: Vec::new(),
            output: Vec::new(),
        };
        let outpoint = OutPoint::from_str(&format!("{}:1", "ab".repeat(32))).unwrap();
        json!({"outpoint": outpoint, "tx": tx, "confirmed_height": 510})
    }

    /// The store's record of `proto`, with id `n` (the engine's metadata: role, state, status).
    fn stored(proto: &ProtoRecord, n: u8) -> SwapRecord {
        SwapRecord {
            id: SwapId([n; 32]),
            role: match proto {
                ProtoRecord::Buyer(_) => SwapRole::Buyer,
                ProtoRecord::Seller(_) => SwapRole::Seller,
            },
            state: proto.state_name().to_string(),
            status: match proto.kind() {
                StateKind::Pending => SwapStatus::Pending,
                StateKind::Succeeded => SwapStatus::Succeeded,
                StateKind::Failed => SwapStatus::Failed,
            },
            payment_hash: None,
            created_at: u64::from(n),
            updated_at: u64::from(n),
            data: proto.to_bytes().unwrap(),
        }
    }

    /// An event log of the notifications, as the engine stores them.
    fn log(notes: Vec<Notification>) -> Vec<SwapEvent> {
        notes
            .into_iter()
            .enumerate()
            .map(|(i, n)| SwapEvent { seq: i as u64, event: serde_json::to_value(n).unwrap() })
            .collect()
    }

    fn finished(state: &str, kind: StateKind) -> Notification {
        Notification::Finished { state: state.into(), kind }
    }

    fn refund(txid_byte: &str, purpose: TxPurpose, fee_sat: u64) -> Notification {
        Notification::Broadcast { txid: txid(txid_byte), purpose, fee_sat, vsize: 111 }
    }

    /// Seller swaps: claimed (with a prepay), refunded after a prepay (the refund replaced once),
    /// refunded without a prepay, refunded with no event log, aborted, pending.
    fn seller_swaps() -> Vec<(SwapRecord, Vec<SwapEvent>)> {
        let with = seller(Some(PREPAY));
        let without = seller(None);
        let claimed = with_state(
            &with,
            json!({"state": "claimed", "funding": funding(), "claim_txid": txid("c1"),
                   "amount_msat": (AMOUNT + SWAP_FEE + FUNDING_FEE - PREPAY) * 1000}),
        );
        let claimed_log = log(vec![
            Notification::Prepaid { amount_sat: PREPAY },
            finished("Claimed", StateKind::Succeeded),
        ]);
        // Griefed: the buyer prepaid, never paid the invoice; the refund went out at 300 sat and
        // was replaced by one paying 450 sat, which confirmed.
        let griefed = with_state(
            &with,
            json!({"state": "refunded", "funding": funding(), "refund_txid": txid("e2")}),
        );
        let griefed_log = log(vec![
            Notification::Prepaid { amount_sat: PREPAY },
            refund("e1", TxPurpose::CooperativeRefund, 300),
            Notification::Replaced {
                txid: txid("e2"),
                replaces: txid("e1"),
                purpose: TxPurpose::ScriptRefund,
                fee_sat: 450,
                vsize: 150,
            },
            finished("Refunded", StateKind::Failed),
        ]);
        let refunded = with_state(
            &without,
            json!({"state": "refunded", "funding": funding(), "refund_txid": txid("f1")}),
        );
        let refunded_log = log(vec![refund("f1", TxPurpose::ScriptRefund, 800)]);
        let restored = with_state(
            &without,
            json!({"state": "refunded", "funding": funding(), "refund_txid": txid("f2")}),
        );
        let aborted = with_state(
            &with,
            json!({"state": "aborted", "reason": "payment_failed", "message": null}),
        );
        let pending = with_state(
            &without,
            json!({"state": "funded", "invoice": "lnbcrt1", "funding": funding()}),
        );
        vec![
            (stored(&claimed, 1), claimed_log),
            (stored(&griefed, 2), griefed_log),
            (stored(&refunded, 3), refunded_log),
            (stored(&restored, 4), Vec::new()),
            (stored(&aborted, 5), Vec::new()),
            (stored(&pending, 6), Vec::new()),
        ]
    }

    /// Buyer swaps: claimed, a no-show after the prepay, aborted when the prepay failed, lost,
    /// requested.
    fn buyer_swaps() -> Vec<(SwapRecord, Vec<SwapEvent>)> {
        let b = buyer(Some(PREPAY));
        let t = terms(Some(PREPAY));
        let claimed = with_state(
            &b,
            json!({"state": "claimed", "terms": t, "claim_txid": txid("c2"),
                   "received_sat": AMOUNT - 111}),
        );
        let no_show = with_state(
            &b,
            json!({"state": "aborted", "reason": "funding_timeout", "check": null,
                   "message": null, "terms": t, "htlc": null}),
        );
        let no_show_log = log(vec![Notification::Prepaid { amount_sat: PREPAY }]);
        let unpaid = with_state(
            &b,
            json!({"state": "aborted", "reason": "payment_failed", "check": null,
                   "message": "the prepay could not be paid", "terms": t, "htlc": null}),
        );
        let lost = with_state(&b, json!({"state": "lost", "terms": t, "spend_txid": txid("d1")}));
        vec![
            (stored(&claimed, 11), Vec::new()),
            (stored(&no_show, 12), no_show_log),
            (stored(&unpaid, 13), Vec::new()),
            (stored(&lost, 14), Vec::new()),
            (stored(&b, 15), Vec::new()),
        ]
    }

    fn stats_of(swaps: &[(SwapRecord, Vec<SwapEvent>)]) -> StatsResponse {
        stats(swaps.iter().map(|(r, e)| (r, e.as_slice())))
    }

    /// Per swap: what the table of `looper swaps` shows (amount, cost, earned).
    fn per_swap(swaps: &[(SwapRecord, Vec<SwapEvent>)]) -> Vec<(u64, Option<u64>, Option<u64>)> {
        swaps
            .iter()
            .map(|(r, e)| {
                let f = figures(&ProtoRecord::from_bytes(&r.data).unwrap(), e);
                (f.amount_sat, f.cost_sat(), f.earned_sat())
            })
            .collect()
    }

    #[test]
    fn seller_fees_prepays_and_griefing() {
        let swaps = seller_swaps();
        let s = stats_of(&swaps);
        assert_eq!((s.swaps, s.unreadable), (6, 0));
        assert_eq!(s.directions.len(), 1);
        let d = &s.directions[0];
        assert_eq!(d.direction, SwapDirection::LoopOut);
        assert_eq!(d.buyer, BuyerStats::default());
        let seller = &d.seller;
        assert_eq!(
            (seller.outcomes.pending, seller.outcomes.succeeded, seller.outcomes.failed),
            (1, 1, 4)
        );
        let by_state: Vec<_> =
            seller.outcomes.by_state.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(by_state, [("Aborted", 1), ("Claimed", 1), ("Refunded", 3)]);
        assert_eq!(seller.volume_sat, AMOUNT);
        assert_eq!(seller.fees_earned_sat, SWAP_FEE + FUNDING_FEE);
        // The griefed swap's prepay (the aborted one never received its prepay).
        assert_eq!(seller.prepays_kept_sat, PREPAY);
        // The confirmed replacement (450), not the first refund (300); plus 800; the refund
        // with no log counts 0 and is flagged.
        assert_eq!(seller.onchain_fees_paid_sat, 450 + 800);
        assert_eq!(seller.refund_fees_unknown, 1);
        assert_eq!(seller.refunded_funding_fees_sat, 3 * FUNDING_FEE);
        assert_eq!(seller.griefing_loss_sat, 450 + 800 - 1_000);

        // Per swap: what the table of `looper swaps` shows.
        let per = per_swap(&swaps);
        let fee = SWAP_FEE + FUNDING_FEE;
        assert_eq!(
            per,
            [
                (AMOUNT, None, Some(fee)),    // claimed
                (AMOUNT, None, Some(PREPAY)), // griefed: the prepay kept
                (AMOUNT, None, Some(0)),      // refunded, no prepay
                (AMOUNT, None, Some(0)),      // refunded, no log
                (AMOUNT, None, Some(0)),      // aborted before the prepay
                (AMOUNT, None, Some(fee)),    // pending: per its quote
            ]
        );
    }

    #[test]
    fn a_prepay_kept_above_the_refund_fees_is_a_net_gain() {
        let swaps = seller_swaps();
        // Only the griefed swap: its prepay (1000) covers its refund (450).
        let s = stats_of(&swaps[1..2]);
        let seller = &s.directions[0].seller;
        assert_eq!((seller.prepays_kept_sat, seller.onchain_fees_paid_sat), (PREPAY, 450));
        assert_eq!(seller.griefing_loss_sat, 450 - 1_000);
        assert_eq!(seller.fees_earned_sat, 0);
    }

    #[test]
    fn buyer_costs_prepays_and_losses() {
        let swaps = buyer_swaps();
        let s = stats_of(&swaps);
        let d = &s.directions[0];
        assert_eq!(d.seller, SellerStats::default());
        let b = &d.buyer;
        assert_eq!((b.outcomes.pending, b.outcomes.succeeded, b.outcomes.failed), (1, 1, 3));
        let by_state: Vec<_> = b.outcomes.by_state.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(by_state, [("Aborted", 2), ("Claimed", 1), ("Lost", 1)]);
        assert_eq!(b.volume_sat, AMOUNT);
        // The prepay is part of the charges, not on top of them.
        assert_eq!(b.fees_paid_sat, SWAP_FEE + FUNDING_FEE);
        assert_eq!(b.onchain_fees_paid_sat, 111);
        // The no-show's prepay (its log says it was paid) and the lost swap's (it was funded);
        // not the one whose prepay failed.
        assert_eq!(b.prepays_lost_sat, 2 * PREPAY);
        let invoice = AMOUNT + SWAP_FEE + FUNDING_FEE - PREPAY;
        assert_eq!(b.lost_sat, invoice);
        assert_eq!(b.total_cost_sat, SWAP_FEE + FUNDING_FEE + 111 + 2 * PREPAY + invoice);

        let per = per_swap(&swaps);
        let fee = SWAP_FEE + FUNDING_FEE;
        assert_eq!(
            per,
            [
                (AMOUNT, Some(fee + 111), None),        // claimed
                (AMOUNT, Some(PREPAY), None),           // no-show: the prepay
                (AMOUNT, Some(0), None),                // prepay failed: nothing
                (AMOUNT, Some(PREPAY + invoice), None), // lost: everything paid
                (AMOUNT, Some(fee), None),              // requested: per its quote
            ]
        );
    }

    #[test]
    fn unreadable_records_count_without_amounts() {
        let mut swaps = buyer_swaps();
        let mut bad = swaps[0].0.clone();
        bad.id = SwapId([99; 32]);
        bad.data = b"not a record".to_vec();
        swaps.push((bad, Vec::new()));
        let s = stats_of(&swaps);
        assert_eq!((s.swaps, s.unreadable), (6, 1));
        let b = &s.directions[0].buyer;
        assert_eq!(b.outcomes.succeeded, 2, "counted by the store's status");
        assert_eq!(b.volume_sat, AMOUNT, "but in no amount");
        // No swap at all: the loop-out entry with zeros.
        let none = stats(std::iter::empty());
        assert_eq!((none.swaps, none.directions.len()), (0, 1));
        assert_eq!(none.directions[0].direction, SwapDirection::LoopOut);
    }

    #[test]
    fn from_the_store_with_the_event_logs() {
        let store = MemoryStore::new();
        let mut all = seller_swaps();
        all.extend(buyer_swaps());
        for (record, events) in &all {
            store.put_swap(record).unwrap();
            for e in events {
                store.append_swap_event(&record.id, &e.event).unwrap();
            }
        }
        let from_store = from_store(&store).unwrap();
        // The store lists newest first: the sums do not depend on the order.
        assert_eq!(from_store, stats_of(&all));
        assert_eq!(from_store.swaps, 11);
        let griefed = &all[1].0;
        let f = figures_in(&store, griefed).unwrap().unwrap();
        assert_eq!((f.prepay_sat, f.onchain_fee_sat, f.refunded), (PREPAY, 450, true));
        let mut bad = griefed.clone();
        bad.data = b"{}".to_vec();
        assert_eq!(figures_in(&store, &bad).unwrap(), None);
    }
}
