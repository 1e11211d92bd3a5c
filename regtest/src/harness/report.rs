//! Following a loop out through the buyer's API and reporting it.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{HarnessError, NodeHandle};

/// The buyer's states of a loop out, in order.
pub const BUYER_STATES: [&str; 7] =
    ["Requested", "Accepted", "Funded", "Paying", "Claiming", "ClaimBroadcast", "Claimed"];

/// One timed phase of a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// What it covers.
    pub name: &'static str,
    /// How long it took.
    pub duration: Duration,
}

/// What one swap cost and how long it took, followed on the claimer (the buyer of a loop out,
/// the maker of a loop in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopOutReport {
    /// The swap id.
    pub swap_id: String,
    /// A loop in (the taker locked, the maker paid and claimed).
    pub loop_in: bool,
    /// Swap amount (the HTLC value).
    pub amount_sat: u64,
    /// The seller's swap fee.
    pub swap_fee_sat: u64,
    /// The funding fee charged in the quote.
    pub funding_fee_sat: u64,
    /// The buyer's claim transaction fee.
    pub claim_fee_sat: u64,
    /// The funding transaction.
    pub funding_txid: String,
    /// Its virtual size.
    pub funding_vsize: u64,
    /// The fee the seller really paid for it.
    pub funding_fee_paid_sat: u64,
    /// Its outputs (HTLCs and change).
    pub funding_outputs: usize,
    /// The claim transaction.
    pub claim_txid: String,
    /// Its virtual size (111 vB on the cooperative key path).
    pub claim_vsize: u64,
    /// Its path (`cooperative_claim`, `script_claim`).
    pub claim_purpose: String,
    /// Discovering the offer on the relay (before the request).
    pub discover: Duration,
    /// The phases from the request on.
    pub phases: Vec<Phase>,
    /// From the request to the claim broadcast.
    pub to_claim_broadcast: Duration,
    /// From the request to the claim confirmed.
    pub total: Duration,
}

impl LoopOutReport {
    /// The buyer's total cost: swap fee + funding fee + claim fee.
    pub fn total_cost_sat(&self) -> u64 {
        self.swap_fee_sat + self.funding_fee_sat + self.claim_fee_sat
    }

    /// The duration of the phase named `name`.
    pub fn phase(&self, name: &str) -> Option<Duration> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.duration)
    }

    /// The funding transaction's vbytes attributed to this swap (its size over its swap
    /// outputs: all outputs but the change).
    pub fn funding_share_vsize(&self) -> u64 {
        let swaps = self.funding_outputs.saturating_sub(1).max(1) as u64;
        self.funding_vsize.div_ceil(swaps)
    }

    /// Fills the funding transaction's size, fee and outputs from the Esplora API.
    pub async fn fill_chain_data(&mut self, esplora_url: &str) {
        if self.funding_txid.is_empty() {
            return;
        }
        let url = format!("{esplora_url}/tx/{}", self.funding_txid);
        let Ok(resp) = reqwest::get(&url).await else { return };
        let Ok(v) = resp.json::<Value>().await else { return };
        self.funding_vsize = v["weight"].as_u64().unwrap_or(0).div_ceil(4);
        self.funding_fee_paid_sat = v["fee"].as_u64().unwrap_or(0);
        self.funding_outputs = v["vout"].as_array().map(Vec::len).unwrap_or(0);
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

impl fmt::Display for LoopOutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.loop_in {
            writeln!(f, "loop in {}", self.swap_id)?;
            writeln!(f, "  amount          {} sat locked by the taker", self.amount_sat)?;
            writeln!(
                f,
                "  fees            swap {} + maker's on-chain {} + taker's funding {} = taker's cost {} sat; paid {} sat over Lightning",
                self.swap_fee_sat,
                self.funding_fee_sat,
                self.funding_fee_paid_sat,
                self.swap_fee_sat + self.funding_fee_sat + self.funding_fee_paid_sat,
                self.amount_sat.saturating_sub(self.swap_fee_sat + self.funding_fee_sat)
            )?;
            writeln!(f, "  maker's claim   fee {} sat", self.claim_fee_sat)?;
        } else {
            writeln!(f, "loop out {}", self.swap_id)?;
            writeln!(f, "  amount          {} sat", self.amount_sat)?;
            writeln!(
                f,
                "  fees            swap {} + funding {} + claim {} = total cost {} sat",
                self.swap_fee_sat,
                self.funding_fee_sat,
                self.claim_fee_sat,
                self.total_cost_sat()
            )?;
        }
        writeln!(
            f,
            "  funding tx      {} ({} vB, {} outputs, locker paid {} sat)",
            self.funding_txid, self.funding_vsize, self.funding_outputs, self.funding_fee_paid_sat
        )?;
        writeln!(
            f,
            "  claim tx        {} ({} vB, {})",
            self.claim_txid, self.claim_vsize, self.claim_purpose
        )?;
        writeln!(
            f,
            "  on chain        {} vB for this swap (funding share {} + claim {}; key-path minimum claim 111)",
            self.funding_share_vsize() + self.claim_vsize,
            self.funding_share_vsize(),
            self.claim_vsize
        )?;
        writeln!(f, "  time            offer discovery {}", secs(self.discover))?;
        for p in &self.phases {
            writeln!(f, "                  {:<40} {}", p.name, secs(p.duration))?;
        }
        writeln!(
            f,
            "                  {:<40} {}",
            "request -> claim broadcast",
            secs(self.to_claim_broadcast)
        )?;
        write!(f, "                  {:<40} {}", "request -> claim confirmed", secs(self.total))
    }
}

/// Follows swap `swap_id` on `node` (the buyer) from `start` until it is final, polling every
/// 100 ms; the report of a `Claimed` swap.
///
/// # Errors
/// [`HarnessError::SwapFailed`] when it ends otherwise; [`HarnessError::Timeout`].
pub async fn follow(
    node: &NodeHandle,
    swap_id: &str,
    start: Instant,
    timeout: Duration,
) -> Result<LoopOutReport, HarnessError> {
    let mut seen: [Option<Duration>; BUYER_STATES.len()] = [None; BUYER_STATES.len()];
    seen[0] = Some(Duration::ZERO);
    let deadline = Instant::now() + timeout;
    let view = loop {
        if let Ok(view) = node.api().swap(swap_id).await {
            if let Some(i) = BUYER_STATES.iter().position(|s| *s == view.state) {
                let now = start.elapsed();
                for slot in seen.iter_mut().take(i + 1) {
                    slot.get_or_insert(now);
                }
            }
            if view.is_final() {
                break view;
            }
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout(format!("swap {swap_id} to finish")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = node.api().swap_events(swap_id).await.unwrap_or_default();
    if view.state != "Claimed" {
        return Err(HarnessError::SwapFailed {
            swap_id: swap_id.into(),
            state: view.state,
            detail: Value::Array(events).to_string(),
        });
    }
    let loop_in = view.direction == looper_protocol::SwapDirection::LoopIn;
    let mut r = LoopOutReport { swap_id: swap_id.into(), loop_in, ..LoopOutReport::default() };
    for e in &events {
        match e["event"].as_str() {
            Some("accepted") => {
                let q = &e["quote"];
                r.amount_sat = q["amount_sat"].as_u64().unwrap_or(0);
                r.swap_fee_sat = q["swap_fee_sat"].as_u64().unwrap_or(0);
                r.funding_fee_sat = q["funding_fee_sat"].as_u64().unwrap_or(0);
            }
            Some("funding_seen") => {
                r.funding_txid = e["txid"].as_str().unwrap_or("").into();
            }
            Some("broadcast") => {
                r.claim_txid = e["txid"].as_str().unwrap_or("").into();
                r.claim_fee_sat = e["fee_sat"].as_u64().unwrap_or(0);
                r.claim_vsize = e["vsize"].as_u64().unwrap_or(0);
                r.claim_purpose = e["purpose"].as_str().unwrap_or("").into();
            }
            _ => {}
        }
    }
    if r.claim_txid.is_empty() {
        // A node killed between broadcasting its claim and recording the notification: the
        // record's final state still has the claim.
        let state = &view.record["swap"]["state"];
        r.claim_txid = state["claim_txid"].as_str().unwrap_or("").into();
        let received = state["received_sat"].as_u64().unwrap_or(r.amount_sat);
        r.claim_fee_sat = r.amount_sat.saturating_sub(received);
    }
    let at = |i: usize| seen.get(i).copied().flatten().unwrap_or_default();
    let span = |a: usize, b: usize| at(b).saturating_sub(at(a));
    let (first, second) = if loop_in {
        ("request -> locked, swap_funded checked", "swap_funded -> funding confirmed")
    } else {
        ("request -> accepted (nostr round trip)", "accepted -> funded and confirmed")
    };
    r.phases = vec![
        Phase { name: first, duration: span(0, 1) },
        Phase { name: second, duration: span(1, 2) },
        Phase { name: "payment (lightning)", duration: span(2, 4) },
        Phase { name: "claim (musig2 co-sign, broadcast)", duration: span(4, 5) },
        Phase { name: "claim broadcast -> confirmed", duration: span(5, 6) },
    ];
    r.to_claim_broadcast = at(5);
    r.total = at(6);
    Ok(r)
}
