//! What the buyer and seller state machines share: the events they are fed, the actions they
//! return, the in-order inbox, and the rules of spec `02-swap-flow.md`.
//!
//! A swap is a value. The node feeds it [`Event`]s with the current [`Context`] (time and tip
//! height are only ever arguments) and carries out the returned [`Action`]s in order. Every
//! transition starts its actions with [`Action::Persist`]: the node commits the swap's record
//! before it sends, broadcasts or pays anything.

use bitcoin::{OutPoint, ScriptBuf, Transaction, Txid};
use serde::{Deserialize, Serialize};

use crate::fees::Fees;
use crate::messages::{AbortReason, Envelope, ErrorMessage, Message, PROTOCOL_VERSION};
use crate::terms::Quote;
use crate::types::{PaymentHash, Preimage, SwapId};

/// The minimum blocks a buyer keeps for its claim after a payment resolves (`claim_margin`).
pub const DEFAULT_CLAIM_MARGIN: u32 = 20;
/// How long the buyer waits for the seller's partial signature before the script path.
pub const COOP_TIMEOUT_SECS: u64 = 30;
/// How long a taker waits in `Requested` for the maker's `swap_accept` (from the swap's
/// creation) by default (`BuyerPolicy::request_timeout_secs`,
/// `LoopInLimits::request_timeout_secs`) before it gives up: aborts with `funding_timeout` (nothing was locked or paid yet).
/// A maker that never answers (offline, or dropping the taker's requests) then costs the taker a
/// wait, not a swap pending for ever (which holds a slot of the node's swaps in flight).
pub const REQUEST_TIMEOUT_SECS: u64 = 900;

/// [`REQUEST_TIMEOUT_SECS`], for records written before the takers' limits named one.
pub(crate) fn default_request_timeout() -> u64 {
    REQUEST_TIMEOUT_SECS
}

/// Records keep the default unwritten (they read as they did before it existed).
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
pub(crate) fn is_default_request_timeout(secs: &u64) -> bool {
    *secs == REQUEST_TIMEOUT_SECS
}
/// How many early (out-of-order) messages a swap buffers.
pub const MAX_EARLY_MESSAGES: usize = 16;
/// Blocks the buyer allows a timeout to exceed `tip + offer.timeout_delta` (blocks found while the
/// messages travelled).
pub const TIMEOUT_SLACK_BLOCKS: u32 = 6;
/// Seconds per block used to bound invoice expiry by the time left to the timeout.
pub const SECS_PER_BLOCK: u64 = 600;
/// Target in blocks for claim and refund fees (the default of [`Fees`]'s targets).
pub const CLAIM_FEE_TARGET_BLOCKS: u16 = crate::fees::DEFAULT_SPEND_TARGET;
/// Confirmations at which a spend of the HTLC (a claim or a refund, ours or the peer's) is final
/// (spec `02-swap-flow.md`, "Final at depth"): until then the swap keeps watching the HTLC, a
/// spend of ours that leaves the chain goes out again and a spend of the peer's that replaces it
/// after a reorg decides the outcome. LDK's `ANTI_REORG_DELAY`: no reorg this deep has happened
/// on mainnet since 2013.
pub const ANTI_REORG_DEPTH: u32 = 6;

/// Time and chain tip, passed to every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Unix time in seconds.
    pub now_secs: u64,
    /// Height of the best block.
    pub tip_height: u32,
    /// Fee rate for fundings built now (the node's estimate for its funding target, capped by
    /// its configuration).
    pub fee_rate: bitcoin::FeeRate,
    /// The estimates, cap and targets claims and refunds are priced with
    /// ([`crate::fees::spend_fee_rate`]).
    pub fees: Fees,
    /// Buyer: the node batches script-path claims ([`crate::claims`]): a swap asks with
    /// [`Action::QueueClaim`] instead of building its claim alone. Off in [`Context::new`].
    pub batch_claims: bool,
}

impl Context {
    /// A context where every estimate and the cap are `fee_rate`, with the default targets.
    pub fn new(now_secs: u64, tip_height: u32, fee_rate: bitcoin::FeeRate) -> Self {
        Self { now_secs, tip_height, fee_rate, fees: Fees::flat(fee_rate), batch_claims: false }
    }
}

/// Coarse outcome of a state, as Loop and PeerSwap show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Still running.
    Pending,
    /// Finished as intended.
    Succeeded,
    /// Finished without the exchange (refunded, aborted, refused).
    Failed,
}

/// Everything that can happen to a swap.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // transient values, moved once
pub enum Event {
    /// A message from the peer (the node has checked that it comes from the swap's peer).
    Message(Envelope),
    /// Time passed or the tip moved (the [`Context`] says to what).
    Tick,
    /// The HTLC output as the node's chain source sees it.
    HtlcOutput {
        /// Where it is.
        outpoint: OutPoint,
        /// Its value.
        value_sat: u64,
        /// Its script.
        script_pubkey: ScriptBuf,
        /// Height of the block that holds it, if confirmed.
        confirmed_height: Option<u32>,
    },
    /// A transaction spending the HTLC output was seen.
    HtlcSpent {
        /// The spending transaction.
        tx: Transaction,
        /// Height of the block that holds it, if confirmed.
        confirmed_height: Option<u32>,
    },
    /// Seller: the wallet built (not yet broadcast) the funding transaction asked for by
    /// [`Action::FundHtlc`].
    FundingBuilt {
        /// The signed funding transaction.
        tx: Transaction,
        /// The HTLC output's index in it.
        vout: u32,
    },
    /// Buyer: the claim the node built for [`Action::QueueClaim`], signed by every swap whose
    /// HTLC it spends (through the claim leaf). The node broadcasts it once every swap of the
    /// batch has taken (persisted) it.
    ClaimBuilt {
        /// The signed claim.
        tx: Transaction,
        /// The value of all its inputs, in sat (its fee is that less its outputs).
        inputs_sat: u64,
    },
    /// Seller: the wallet could not fund the HTLC.
    FundingFailed {
        /// Why (shown to the user; never contains secrets).
        reason: String,
    },
    /// Seller: the invoices asked for by [`Action::CreateInvoice`].
    InvoiceCreated {
        /// BOLT11: the hold invoice for the swap's hash.
        invoice: String,
        /// BOLT11: the plain (auto-settled) prepay invoice, when one was asked for.
        prepay_invoice: Option<String>,
    },
    /// Seller: a payment for the swap's hash is held, waiting for [`Action::ClaimPayment`] or
    /// [`Action::FailPayment`].
    PaymentClaimable {
        /// Its hash.
        payment_hash: PaymentHash,
        /// What it pays.
        amount_msat: u64,
    },
    /// Seller: the payment was claimed (for the prepay's hash: the prepay was received).
    PaymentClaimed {
        /// Its hash.
        payment_hash: PaymentHash,
    },
    /// Buyer: the payment succeeded.
    PaymentSucceeded {
        /// The preimage it revealed.
        preimage: Preimage,
    },
    /// Buyer: payment attempt `attempt` failed for good (it was sent; nothing of it is in flight
    /// any more). A failure of another attempt than the current one is ignored.
    PaymentFailed {
        /// The attempt ([`Action::PayInvoice::attempt`]) that failed.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// Buyer: the Lightning node could not start payment attempt `attempt` (no usable channel
    /// yet, no route right now): nothing was sent.
    PaymentNotSent {
        /// The attempt ([`Action::PayInvoice::attempt`]) that was not sent.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// What the Lightning node knows now of our payment for the swap's hash (outbound for the
    /// buyer, inbound for the seller): the answer to [`Action::CheckPayment`], and how the node
    /// reports a payment failure it cannot tie to one attempt.
    PaymentStatus {
        /// The hash.
        payment_hash: PaymentHash,
        /// What the node knows.
        status: PaymentStatus,
    },
    /// The answer to [`Action::CheckHtlc`]: the HTLC output as the chain source sees it now.
    HtlcChecked {
        /// The outpoint asked about.
        outpoint: OutPoint,
        /// What the chain says.
        status: HtlcStatus,
    },
    /// An HTLC output reported before is in neither the chain nor the mempool any more (its
    /// block was reorganised out and the transaction dropped, or its input double-spent).
    HtlcGone {
        /// The outpoint.
        outpoint: OutPoint,
    },
    /// A spend of the HTLC output reported before ([`Event::HtlcSpent`]) is in neither the chain
    /// nor the mempool any more (its block was reorganised out and the transaction dropped): the
    /// output is unspent again.
    HtlcSpendGone {
        /// The HTLC outpoint.
        outpoint: OutPoint,
        /// The spend that left.
        txid: Txid,
    },
    /// The user asks to abort.
    UserAbort,
    /// The user asks for our own script-path spend of the HTLC as soon as the chain allows
    /// (`looper swap claim` for the buyer, `looper swap refund` for the seller): no more waiting
    /// on the peer's cooperation, and a spend that is out goes out again now. Refused (with
    /// [`SwapError::NotNow`]) when there is nothing of ours to spend yet.
    UserScriptSpend,
}

/// What a Lightning node knows of a payment (by its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentStatus {
    /// Nothing: never sent (buyer), never received (seller).
    Unknown,
    /// In flight: an attempt may still succeed (buyer), held or being claimed (seller).
    Pending,
    /// Failed: nothing in flight any more.
    Failed,
    /// Succeeded (buyer: with the preimage it revealed; seller: claimed).
    Succeeded {
        /// The preimage (buyer).
        preimage: Option<Preimage>,
    },
}

/// The HTLC output as the chain source sees it now ([`Event::HtlcChecked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HtlcStatus {
    /// Not in the chain or the mempool.
    Missing,
    /// There and unspent.
    Unspent {
        /// Its value.
        value_sat: u64,
        /// Height of the block that holds it, if confirmed.
        confirmed_height: Option<u32>,
    },
    /// There, and spent (confirmed or not).
    Spent,
}

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxPurpose {
    /// Locks the seller's BTC in the HTLC.
    Funding,
    /// Buyer's claim on the MuSig2 key path.
    CooperativeClaim,
    /// Buyer's claim through the claim leaf.
    ScriptClaim,
    /// Seller's refund on the MuSig2 key path.
    CooperativeRefund,
    /// Seller's refund through the refund leaf.
    ScriptRefund,
}

/// What the node must do, in order.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // transient values, moved once
pub enum Action {
    /// Commit the swap's record (its [`crate::record`]) before anything that follows.
    Persist,
    /// Send a message to the peer.
    Send(Envelope),
    /// Seller: create a hold invoice for `payment_hash` and, with `prepay_msat`, a plain invoice
    /// for the prepay that the Lightning node settles at once (answer with
    /// [`Event::InvoiceCreated`] once both exist).
    CreateInvoice {
        /// The hash.
        payment_hash: PaymentHash,
        /// The amount.
        amount_msat: u64,
        /// Expiry in seconds.
        expiry_secs: u32,
        /// Description.
        description: String,
        /// The prepay's amount, when the swap has one.
        prepay_msat: Option<u64>,
        /// The prepay invoice's expiry in seconds.
        prepay_expiry_secs: u32,
    },
    /// Seller: build a transaction paying `amount_sat` to `script_pubkey` (answer with
    /// [`Event::FundingBuilt`]); the node may batch several swaps' outputs in one transaction.
    FundHtlc {
        /// The HTLC's script.
        script_pubkey: ScriptBuf,
        /// Its value.
        amount_sat: u64,
        /// Confirmation target (blocks) the swap asks for its funding (a loop in's
        /// `--conf-target`); `None`: the node's funding target. Fundings of different targets
        /// are not batched together.
        conf_target: Option<u16>,
    },
    /// Buyer (with [`Context::batch_claims`]): claim the HTLC through the claim leaf in the
    /// node's next claim batch, replacing the claim that is out, if any ([`crate::claims`]:
    /// the node asks the swap for its [`crate::claims::ClaimMember`], has it sign its input and
    /// answers with [`Event::ClaimBuilt`]).
    QueueClaim,
    /// Broadcast a transaction (idempotent: it may already be known).
    Broadcast {
        /// The transaction.
        tx: Transaction,
        /// What it is for.
        purpose: TxPurpose,
    },
    /// Watch the HTLC's script for its output and its spend (answer with [`Event::HtlcOutput`]
    /// and [`Event::HtlcSpent`]).
    WatchHtlc {
        /// The HTLC's script.
        script_pubkey: ScriptBuf,
    },
    /// Buyer: pay a BOLT11 invoice with a cap on the route's total CLTV. Answered with
    /// [`Event::PaymentFailed`] or [`Event::PaymentNotSent`] for this `attempt` when the node
    /// knows at once, later with [`Event::PaymentSucceeded`] or [`Event::PaymentStatus`].
    PayInvoice {
        /// BOLT11.
        invoice: String,
        /// The amount (already checked against the quote).
        amount_msat: u64,
        /// `max_total_cltv_expiry_delta` for the route.
        max_total_cltv_expiry_delta: u32,
        /// Which attempt this is (1, 2, ...: never reused within a swap).
        attempt: u32,
    },
    /// Buyer: pay the seller's prepay invoice (idempotent: a prepay paid or in flight is not
    /// paid again). Success comes as [`Event::PaymentSucceeded`] with the prepay's preimage, a
    /// failure as [`Event::PaymentStatus`] for the prepay's hash.
    PayPrepay {
        /// BOLT11 (already checked against the quote).
        invoice: String,
        /// The amount.
        amount_msat: u64,
    },
    /// Ask the Lightning node what it knows of our payment for `payment_hash` (answer with
    /// [`Event::PaymentStatus`]).
    CheckPayment {
        /// The hash.
        payment_hash: PaymentHash,
    },
    /// Buyer: look the HTLC output up on chain now, not from a cache (answer with
    /// [`Event::HtlcChecked`]); asked right before paying.
    CheckHtlc {
        /// The HTLC outpoint.
        outpoint: OutPoint,
        /// Its script.
        script_pubkey: ScriptBuf,
    },
    /// Seller: claim the held payment.
    ClaimPayment {
        /// Its hash.
        payment_hash: PaymentHash,
        /// The preimage.
        preimage: Preimage,
        /// What it pays.
        amount_msat: u64,
    },
    /// Seller: fail the held payment back.
    FailPayment {
        /// Its hash.
        payment_hash: PaymentHash,
    },
    /// Tell the user.
    Notify(Notification),
}

/// Progress the user sees (`looper swap monitor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Notification {
    /// The seller accepted; the quote.
    Accepted {
        /// The agreed quote.
        quote: Quote,
        /// The timeout height.
        timeout_height: u32,
    },
    /// The HTLC was funded.
    FundingSeen {
        /// The funding transaction.
        txid: Txid,
        /// Confirmations so far.
        confirmations: u32,
        /// Confirmations required.
        required: u32,
    },
    /// The buyer's node mines the NIP-13 proof of work the offer asks of the swap request
    /// (emitted by the node, not the state machine: once when it starts, once when done).
    ProofOfWork {
        /// The difficulty, leading zero bits.
        bits: u8,
        /// How long it took, milliseconds (`None`: started, not done yet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        millis: Option<u64>,
    },
    /// The prepay went through (buyer: paid; seller: received): the seller funds now.
    Prepaid {
        /// Its amount.
        amount_sat: u64,
    },
    /// The buyer is paying the invoice.
    Paying {
        /// The route's CLTV budget.
        max_cltv: u32,
    },
    /// The payment went through (preimage known to both).
    Paid,
    /// The payment failed; nothing is in flight.
    PaymentFailed {
        /// Why.
        reason: String,
        /// Whether the buyer tries again.
        retrying: bool,
    },
    /// The HTLC's funding transaction left the chain (reorganised out, its input double-spent):
    /// the buyer waits for it again before paying.
    FundingGone {
        /// The funding transaction.
        txid: Txid,
    },
    /// Buyer, after paying: the HTLC's funding transaction left the chain and stayed out past
    /// the timeout (the seller double-spent it): the invoice paid is lost, the swap ends `Lost`.
    FundingLost {
        /// The funding transaction.
        txid: Txid,
        /// What the buyer paid and lost, in sat.
        lost_sat: u64,
    },
    /// A claim or refund transaction was broadcast.
    Broadcast {
        /// Its id.
        txid: Txid,
        /// What it is.
        purpose: TxPurpose,
        /// Its fee.
        fee_sat: u64,
        /// Its size.
        vsize: u64,
    },
    /// A claim or refund that did not confirm was replaced by one paying a higher fee rate
    /// (BIP-125; the replacement is persisted before it is broadcast).
    Replaced {
        /// The replacement's id.
        txid: Txid,
        /// The transaction it replaces.
        replaces: Txid,
        /// What it is.
        purpose: TxPurpose,
        /// Its fee.
        fee_sat: u64,
        /// Its size.
        vsize: u64,
    },
    /// The cooperative path failed; falling back to the script path.
    CooperationFailed {
        /// Why.
        reason: String,
    },
    /// The swap finished.
    Finished {
        /// The final state's name.
        state: String,
        /// Succeeded or failed.
        kind: StateKind,
    },
    /// The peer or this side aborted.
    Aborted {
        /// The reason.
        reason: AbortReason,
        /// Details.
        message: Option<String>,
    },
    /// Something keeps the swap from moving on (a claim that cannot be built, a record that
    /// does not resume); it is tried again.
    Stalled {
        /// Why (never contains secrets).
        reason: String,
    },
    /// The peer reported an error.
    PeerError {
        /// What it said.
        error: ErrorMessage,
    },
}

/// Errors a state machine returns without changing state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SwapError {
    /// The event does not fit the state.
    #[error("{event} is not expected in state {state}")]
    Unexpected {
        /// The event.
        event: &'static str,
        /// The state.
        state: &'static str,
    },
    /// The message belongs to another swap.
    #[error("message for swap {got} reached swap {expected}")]
    WrongSwap {
        /// This swap.
        expected: SwapId,
        /// The message's swap.
        got: SwapId,
    },
    /// A transition missing from the transition table (a bug; never panics).
    #[error("transition {from} -> {to} is not in the transition table")]
    InvalidTransition {
        /// From.
        from: &'static str,
        /// To.
        to: &'static str,
    },
    /// The keys given to load a record are not the ones the swap was made with.
    #[error("keys of index {key_index} do not belong to this swap")]
    WrongKeys {
        /// The record's key index.
        key_index: u32,
    },
    /// A cryptographic or transaction-building step failed.
    #[error("{0}")]
    Internal(String),
    /// A user's request that cannot be carried out in this state (the reason says why, and
    /// when it can).
    #[error("{reason}")]
    NotNow {
        /// Why, for the user.
        reason: String,
    },
}

/// The peer's messages, delivered in sequence order: duplicates are dropped, early messages
/// buffered (up to [`MAX_EARLY_MESSAGES`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    /// The next sequence number expected from the peer.
    pub next_seq: u32,
    /// Messages that arrived before their turn.
    #[serde(default)]
    pub early: Vec<Envelope>,
}

impl Inbox {
    /// Takes a message and returns those now ready, in order.
    pub(crate) fn accept(&mut self, env: Envelope) -> Vec<Envelope> {
        if env.seq < self.next_seq || self.early.iter().any(|e| e.seq == env.seq) {
            return Vec::new();
        }
        if env.seq > self.next_seq {
            if self.early.len() < MAX_EARLY_MESSAGES {
                self.early.push(env);
            }
            return Vec::new();
        }
        let mut ready = vec![env];
        self.next_seq = self.next_seq.saturating_add(1);
        while let Some(pos) = self.early.iter().position(|e| e.seq == self.next_seq) {
            ready.push(self.early.swap_remove(pos));
            self.next_seq = self.next_seq.saturating_add(1);
        }
        ready
    }
}

impl Inbox {
    /// Checks that `env` belongs to `swap_id` and returns the messages now ready, in order.
    ///
    /// # Errors
    /// [`SwapError::WrongSwap`] for another swap's message.
    pub(crate) fn accept_for(
        &mut self,
        swap_id: SwapId,
        env: Envelope,
    ) -> Result<Vec<Envelope>, SwapError> {
        if env.swap_id != swap_id {
            return Err(SwapError::WrongSwap { expected: swap_id, got: env.swap_id });
        }
        Ok(self.accept(env))
    }
}

impl Notification {
    /// The notification for a claim or refund being broadcast.
    pub fn broadcast(tx: &Transaction, purpose: TxPurpose, fee_sat: u64) -> Self {
        Notification::Broadcast {
            txid: tx.compute_txid(),
            purpose,
            fee_sat,
            vsize: tx.vsize() as u64,
        }
    }
}

/// Our sent messages, numbered; kept so that a resumed swap re-sends them with their numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    /// Every message sent, in order (`seq` = index).
    pub sent: Vec<Envelope>,
}

impl Outbox {
    /// Numbers and records a new message, returning the action that sends it.
    pub(crate) fn send(&mut self, swap_id: SwapId, body: Message) -> Action {
        let seq = u32::try_from(self.sent.len()).unwrap_or(u32::MAX);
        let env = Envelope { version: PROTOCOL_VERSION, swap_id, seq, body };
        self.sent.push(env.clone());
        Action::Send(env)
    }

    /// Actions re-sending everything (the peer drops what it has seen).
    pub fn resend_all(&self) -> Vec<Action> {
        self.sent.iter().cloned().map(Action::Send).collect()
    }
}

/// One row of a transition table: from, to, and what causes it.
pub type Transition = (&'static str, &'static str, &'static str);

/// Renders a transition table as a Mermaid state diagram.
pub fn mermaid(title: &str, table: &[Transition], initial: &str, finals: &[&str]) -> String {
    let mut out = format!("```mermaid\n---\ntitle: {title}\n---\nstateDiagram-v2\n");
    out.push_str(&format!("    [*] --> {initial}\n"));
    for (from, to, why) in table {
        out.push_str(&format!("    {from} --> {to}: {why}\n"));
    }
    for f in finals {
        out.push_str(&format!("    {f} --> [*]\n"));
    }
    out.push_str("```\n");
    out
}

/// A spend of the HTLC seen confirmed and not yet [`ANTI_REORG_DEPTH`] deep: the swap's outcome
/// once it is final (spec `02-swap-flow.md`, "Final at depth"). Forgotten when it leaves the
/// chain, and when a swap is loaded (the chain reports it again at the next look).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedSpend {
    /// The spending transaction.
    pub txid: Txid,
    /// Height of the block that holds it.
    pub height: u32,
    /// Ours (the buyer's claim, the seller's refund) or the peer's.
    pub ours: bool,
}

impl ConfirmedSpend {
    /// Whether the spend is [`ANTI_REORG_DEPTH`] deep with the tip at `tip`.
    pub fn is_final(&self, tip: u32) -> bool {
        confirmations(Some(self.height), tip) >= ANTI_REORG_DEPTH
    }
}

/// Number of confirmations of a transaction confirmed at `height` with the tip at `tip`.
pub fn confirmations(height: Option<u32>, tip: u32) -> u32 {
    match height {
        Some(h) if tip >= h => tip - h + 1,
        _ => 0,
    }
}
