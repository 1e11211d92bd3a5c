//! The claimer's side of a swap (spec `02-swap-flow.md`, "Buyer"): the party that pays over
//! Lightning and claims the HTLC with the preimage its payment revealed. In a loop out it is the
//! taker (the buyer, [`BuyerSwap::start`]); in a loop in the maker, which answers a taker's
//! request ([`BuyerSwap::from_loop_in_request`]) and waits for the taker's lock and invoice. From
//! `Accepted` on both directions run the same states.
//!
//! ```text
//! loop out: Requested --.
//!                       +--> Accepted -> Funded -> Paying (point of no return) -> Claiming -> ClaimBroadcast -> Claimed
//! loop in:  Accepting --'         |          |
//!     '------------'--------------'----------'--> Aborted (nothing paid; answers the locker's cooperative refund)
//! ```

use core::str::FromStr;
use core::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{PublicKey, XOnlyPublicKey};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use lightning_invoice::Bolt11Invoice;
use serde::{Deserialize, Serialize};

use crate::checks::{
    admit_request, check_htlc_amount, check_htlc_script, check_quote, check_timeout, own_quote,
    Asked,
};
use crate::claims::{ClaimMember, ClaimOut};
use crate::fees::{spend_fee_rate, Outstanding, SpendFee, DEADLINE_SAFETY_BLOCKS};
use crate::htlc::{Htlc, HtlcParams, HtlcSpendPath};
use crate::keys::SwapKeys;
use crate::messages::{
    AbortReason, CoopClaimRequest, CoopRefundRequest, CoopRefundResponse, ErrorCode, ErrorMessage,
    LoopInAccept, LoopInRequest, Message, Offer, SwapAccept, SwapFunded, SwapRequest,
    MIN_CLTV_BUDGET_BLOCKS,
};
use crate::musig::Signer;
use crate::shared::{
    core_accessors, internal, outstanding, persist_first, spend_is_ours, swap_api, variant_field,
    Actions, CoreRecord, Ephemeral, Live, Rng,
};
use crate::spend::{
    HtlcInput, SpendPath, SpendTx, CLAIM_SCRIPT_PATH_VBYTES, KEY_PATH_SPEND_VBYTES,
};
use crate::swap::{
    confirmations, Action, ConfirmedSpend, Context, Event, HtlcStatus, Notification, PaymentStatus,
    StateKind, SwapError, TxPurpose, COOP_TIMEOUT_SECS, DEFAULT_CLAIM_MARGIN, REQUEST_TIMEOUT_SECS,
};
use crate::terms::{Quote, DUST_LIMIT_SAT};
use crate::types::{PaymentHash, Preimage, SwapDirection, SwapId};

/// Cooperative claim attempts before the buyer claims through the script path.
pub const MAX_COOP_ATTEMPTS: u32 = 2;

/// Payment attempts before the buyer gives up (a failed payment left nothing in flight, so it is
/// safe to try again while the timing checks still hold: a peer reconnecting, a route not yet
/// usable).
pub const MAX_PAYMENT_ATTEMPTS: u32 = 3;

/// Seconds between a failed payment and the next attempt.
pub const PAYMENT_RETRY_SECS: u64 = 10;

/// Payment attempts the Lightning node could not even start (no usable channel yet, no route right
/// now: nothing was sent, see [`Event::PaymentNotSent`]) before the buyer gives up. They do not
/// count against [`MAX_PAYMENT_ATTEMPTS`]; with [`PAYMENT_RETRY_SECS`] between them they cover a
/// few minutes, enough for a restarted node's peers to reconnect.
pub const MAX_UNSENT_PAYMENT_ATTEMPTS: u32 = 30;

/// The buyer's (the claimer's) checks: the [`CheckError`](crate::checks::CheckError) both roles
/// share (kept under this name for its users).
pub use crate::checks::CheckError as BuyerCheckError;

/// What the buyer agreed to in `swap_accept`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// The invoice.
    pub invoice: String,
    /// Its amount.
    pub invoice_amount_msat: u64,
    /// When it expires (unix seconds).
    pub invoice_expires_at: u64,
    /// The invoice's final CLTV delta.
    pub min_final_cltv: u32,
    /// The quote.
    pub quote: Quote,
    /// The HTLC parameters.
    pub htlc_params: HtlcParams,
    /// The prepay, when the offer asks for one.
    #[serde(default)]
    pub prepay: Option<PrepayTerms>,
}

/// The seller's prepay invoice, checked: paid right after `swap_accept`, before the seller funds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayTerms {
    /// BOLT11.
    pub invoice: String,
    /// Its payment hash.
    pub payment_hash: PaymentHash,
    /// Its amount (the quote's `prepay_sat`).
    pub amount_msat: u64,
}

/// Loop in: what the maker (the claimer) agreed in its `swap_accept`, before the taker's invoice
/// (which comes with `swap_funded`) completes the [`Terms`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopInTerms {
    /// The quote (the maker pays `invoice_amount_sat` for an HTLC of `htlc_amount_sat`).
    pub quote: Quote,
    /// The HTLC parameters: the taker's hash, MuSig2 and refund keys, ours, the timeout.
    pub htlc_params: HtlcParams,
}

/// Where the HTLC is on chain, as our chain source sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HtlcOutput {
    /// Outpoint.
    pub outpoint: OutPoint,
    /// Confirmed at.
    pub confirmed_height: Option<u32>,
    /// After the payment: the tip height when the output left the chain (its funding
    /// reorganised out and dropped, or its input double-spent); `None` while it is on chain as
    /// far as we know. Cleared when it comes back; still out the required confirmations past
    /// the timeout, the swap ends [`BuyerState::Lost`] (spec `02-swap-flow.md`, "Residual risk:
    /// a funding double-spent after the payment").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<u32>,
    /// After the payment: a spend of the HTLC seen confirmed, not yet [`ANTI_REORG_DEPTH`](crate::swap::ANTI_REORG_DEPTH)
    /// deep (our claim, or the seller's refund). The swap ends `Claimed` or `Lost` once it is;
    /// forgotten when it leaves the chain (spec `02-swap-flow.md`, "Final at depth").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<ConfirmedSpend>,
}

/// The buyer's states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BuyerState {
    /// `swap_request` sent.
    Requested,
    /// Loop in: the maker answered the taker's request with `swap_accept` and waits for
    /// `swap_funded` with the taker's invoice (nothing is paid without it). It watches the
    /// HTLC's script meanwhile.
    Accepting {
        /// What the maker agreed.
        offered: LoopInTerms,
        /// The maker stops waiting for `swap_funded` at this time (unix seconds): the
        /// acceptance plus the offer's `invoice_expiry_secs`.
        funding_deadline_secs: u64,
        /// The HTLC output, when the chain showed it before `swap_funded` (agreed script and
        /// value): it moves the swap on to `Funded` once the invoice passes its checks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        htlc: Option<HtlcOutput>,
    },
    /// Terms checked; waiting for the HTLC.
    Accepted {
        /// The terms.
        terms: Terms,
        /// The outpoint the seller announced (checked against the chain later).
        announced: Option<OutPoint>,
    },
    /// The HTLC is on chain with the agreed script and value.
    Funded {
        /// The terms.
        terms: Terms,
        /// The HTLC.
        htlc: HtlcOutput,
        /// Payment attempts that failed for good so far.
        #[serde(default)]
        payment_attempts: u32,
        /// Payment attempts the Lightning node could not start so far.
        #[serde(default)]
        unsent_attempts: u32,
        /// No new attempt before this time (unix seconds).
        #[serde(default)]
        retry_at_secs: u64,
        /// The last payment attempt's number (0: none yet); the next one is numbered above it.
        #[serde(default)]
        attempt: u32,
    },
    /// The invoice is being paid: the point of no return.
    Paying {
        /// The terms.
        terms: Terms,
        /// The HTLC.
        htlc: HtlcOutput,
        /// The route's CLTV budget.
        max_cltv: u32,
        /// Which attempt this is (1 for the first).
        #[serde(default)]
        payment_attempts: u32,
        /// Payment attempts the Lightning node could not start so far.
        #[serde(default)]
        unsent_attempts: u32,
        /// This attempt's number ([`Action::PayInvoice`]`::attempt`): a failure reported for
        /// another attempt is ignored.
        #[serde(default)]
        attempt: u32,
    },
    /// Paid; claiming the HTLC.
    Claiming {
        /// The terms.
        terms: Terms,
        /// The HTLC.
        htlc: HtlcOutput,
        /// The preimage.
        preimage: Preimage,
        /// When the current cooperative attempt gives up.
        coop_deadline_secs: u64,
        /// Cooperative attempts made.
        coop_attempts: u32,
    },
    /// The claim is broadcast.
    ClaimBroadcast {
        /// The terms.
        terms: Terms,
        /// The HTLC.
        htlc: HtlcOutput,
        /// The preimage.
        preimage: Preimage,
        /// The claim (the latest replacement).
        claim_tx: Transaction,
        /// Its path.
        purpose: TxPurpose,
        /// The tip height when this version went out (a replacement is considered once a block
        /// came without it).
        #[serde(default)]
        sent_height: u32,
        /// For a claim of several swaps ([`crate::claims`]): the value of all its inputs, in
        /// sat (its fee is that less its output). `None`: it spends this swap's HTLC alone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_inputs_sat: Option<u64>,
    },
    /// The claim confirmed.
    Claimed {
        /// The terms.
        terms: Terms,
        /// The claim.
        claim_txid: Txid,
        /// What landed in the wallet.
        received_sat: u64,
    },
    /// Ended without paying; still answers the seller's cooperative refund.
    Aborted {
        /// Why.
        reason: AbortReason,
        /// The failed check, if that was the reason.
        check: Option<BuyerCheckError>,
        /// Details.
        message: Option<String>,
        /// The terms, if accepted.
        terms: Option<Terms>,
        /// The HTLC, if seen.
        htlc: Option<HtlcOutput>,
        /// Loop in, aborted in `Accepting` (no invoice, so no [`Terms`]): what the maker had
        /// agreed, to co-sign the taker's cooperative refund of a late lock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offered: Option<Box<LoopInTerms>>,
    },
    /// Paid, but the HTLC went back to the seller (only a dishonest seller or a claim that came
    /// too late leads here), or its funding left the chain for good after the payment (the
    /// seller double-spent it: the residual risk of paying after `min_confirmations`). The loss
    /// is the invoice paid (`terms.invoice_amount_msat`).
    Lost {
        /// The terms.
        terms: Terms,
        /// The seller's spend; with `funding_gone`, the funding transaction that left the chain.
        spend_txid: Txid,
        /// The HTLC's funding left the chain after the payment and was still out the required
        /// confirmations past the timeout (nothing of it was ever claimable again).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        funding_gone: bool,
    },
}

impl BuyerState {
    /// Whether the buyer has started paying (past the point of no return).
    pub fn has_paid(&self) -> bool {
        matches!(
            self,
            BuyerState::Paying { .. }
                | BuyerState::Claiming { .. }
                | BuyerState::ClaimBroadcast { .. }
                | BuyerState::Claimed { .. }
                | BuyerState::Lost { .. }
        )
    }

    fn terms(&self) -> Option<&Terms> {
        match self {
            BuyerState::Aborted { terms, .. } => terms.as_ref(),
            other => variant_field!(
                other,
                BuyerState,
                terms,
                [Accepted, Funded, Paying, Claiming, ClaimBroadcast, Claimed, Lost]
            ),
        }
    }

    /// The HTLC's parameters: the terms', or in a loop in before the invoice, the maker's offer.
    fn htlc_params(&self) -> Option<&HtlcParams> {
        self.terms().map(|t| &t.htlc_params).or_else(|| self.offered().map(|o| &o.htlc_params))
    }

    /// The quote: the terms', or in a loop in before the invoice, the maker's offer.
    fn quote(&self) -> Option<&Quote> {
        self.terms().map(|t| &t.quote).or_else(|| self.offered().map(|o| &o.quote))
    }

    /// Loop in, before the invoice: what the maker agreed.
    fn offered(&self) -> Option<&LoopInTerms> {
        match self {
            BuyerState::Accepting { offered, .. } => Some(offered),
            BuyerState::Aborted { offered, .. } => offered.as_deref(),
            _ => None,
        }
    }

    fn htlc_output(&self) -> Option<&HtlcOutput> {
        match self {
            BuyerState::Aborted { htlc, .. } | BuyerState::Accepting { htlc, .. } => htlc.as_ref(),
            other => {
                variant_field!(other, BuyerState, htlc, [Funded, Paying, Claiming, ClaimBroadcast])
            }
        }
    }
}

pub use crate::transitions::BUYER_TRANSITIONS;

/// The buyer's limits for one swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerPolicy {
    /// Most the buyer pays in swap and funding fees.
    pub max_total_fee_sat: u64,
    /// Most blocks a route may lock the payment for.
    pub max_route_cltv: u32,
    /// Confirmations the buyer wants, at least (the offer's count applies if higher).
    pub min_confirmations: u32,
    /// The buyer's own floor for the blocks kept for its claim after a payment resolves: an
    /// offer whose `claim_margin` is lower is refused, whatever the seller says (spec
    /// `02-swap-flow.md`, "Buyer checks").
    #[serde(default = "default_min_claim_margin")]
    pub min_claim_margin: u32,
    /// The highest fee rate the buyer would pay for its claim, in sat/vB: a swap whose HTLC a
    /// script-path claim at this rate would leave at or below dust is refused.
    #[serde(default = "default_max_claim_fee_rate")]
    pub max_claim_fee_rate_sat_vb: u64,
    /// The claim's confirmation target in blocks (`None`: the node's, [`crate::fees::Fees::claim_target`]).
    /// It shortens as the deadline nears ([`crate::fees`]).
    #[serde(default)]
    pub claim_conf_target: Option<u16>,
    /// Most the buyer prepays (paid before the seller locks; lost if the seller never funds):
    /// an offer asking more is refused.
    #[serde(default = "default_max_prepay")]
    pub max_prepay_sat: u64,
    /// How long the buyer waits for the seller's `swap_accept` (from the swap's creation)
    /// before it gives up ([`REQUEST_TIMEOUT_SECS`] by default).
    #[serde(
        default = "crate::swap::default_request_timeout",
        skip_serializing_if = "crate::swap::is_default_request_timeout"
    )]
    pub request_timeout_secs: u64,
}

/// Default of [`BuyerPolicy::max_prepay_sat`].
pub const DEFAULT_MAX_PREPAY_SAT: u64 = 10_000;

fn default_max_prepay() -> u64 {
    DEFAULT_MAX_PREPAY_SAT
}

/// Default of [`BuyerPolicy::min_claim_margin`]: [`DEFAULT_CLAIM_MARGIN`] blocks.
pub const DEFAULT_MIN_CLAIM_MARGIN: u32 = DEFAULT_CLAIM_MARGIN;

/// Default of [`BuyerPolicy::max_claim_fee_rate_sat_vb`].
pub const DEFAULT_MAX_CLAIM_FEE_RATE_SAT_VB: u64 = 200;

fn default_min_claim_margin() -> u32 {
    DEFAULT_MIN_CLAIM_MARGIN
}

fn default_max_claim_fee_rate() -> u64 {
    DEFAULT_MAX_CLAIM_FEE_RATE_SAT_VB
}

impl Default for BuyerPolicy {
    fn default() -> Self {
        Self {
            max_total_fee_sat: u64::MAX,
            max_route_cltv: 2016,
            min_confirmations: 1,
            min_claim_margin: DEFAULT_MIN_CLAIM_MARGIN,
            max_claim_fee_rate_sat_vb: DEFAULT_MAX_CLAIM_FEE_RATE_SAT_VB,
            claim_conf_target: None,
            max_prepay_sat: DEFAULT_MAX_PREPAY_SAT,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
        }
    }
}

/// The script-path claim fee of an HTLC of `htlc_sat` at `fee_rate_sat_vb`, checked against
/// dust.
///
/// # Errors
/// [`BuyerCheckError::ClaimUnaffordable`] when the claim would leave `DUST_LIMIT_SAT` or less.
pub fn check_claim_affordable(htlc_sat: u64, fee_rate_sat_vb: u64) -> Result<(), BuyerCheckError> {
    let claim_fee_sat = CLAIM_SCRIPT_PATH_VBYTES.saturating_mul(fee_rate_sat_vb);
    if htlc_sat.saturating_sub(claim_fee_sat) <= DUST_LIMIT_SAT {
        return Err(BuyerCheckError::ClaimUnaffordable {
            htlc_sat,
            claim_fee_sat,
            fee_rate_sat_vb,
        });
    }
    Ok(())
}

/// The invoice's terms, in either direction: for the HTLC's hash, for exactly the quote's
/// `invoice_amount_sat`, not expired. Its amount in msat when they hold.
fn check_invoice_terms(
    invoice: &Bolt11Invoice,
    payment_hash: &PaymentHash,
    quote: &Quote,
    ctx: &Context,
) -> Result<u64, BuyerCheckError> {
    if invoice.payment_hash().to_byte_array() != payment_hash.0 {
        return Err(BuyerCheckError::InvoiceHashMismatch);
    }
    let quote_msat = quote.invoice_amount_sat.saturating_mul(1000);
    let invoice_msat = invoice.amount_milli_satoshis().unwrap_or(0);
    if invoice_msat != quote_msat {
        return Err(BuyerCheckError::InvoiceAmountMismatch { invoice_msat, quote_msat });
    }
    if invoice.would_expire(Duration::from_secs(ctx.now_secs)) {
        return Err(BuyerCheckError::InvoiceExpired);
    }
    Ok(invoice_msat)
}

/// A buyer's swap as stored (the `swap` of a [`crate::record::SwapRecord`]): everything but the
/// keys, which derive again from [`BuyerRecord::key_index`], and what lives in memory only (the
/// MuSig2 session of a cooperative claim). [`BuyerSwap::load`] makes it a running swap again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuyerRecord {
    #[serde(flatten)]
    core: CoreRecord,
    /// The amount asked for.
    amount_sat: u64,
    /// Our limits.
    policy: BuyerPolicy,
    /// Where the claim pays to.
    claim_destination: ScriptBuf,
    /// Our MuSig2 key (to check the keys on load).
    musig_pubkey: PublicKey,
    /// Our claim key.
    claim_pubkey: XOnlyPublicKey,
    /// The state.
    state: BuyerState,
    /// See [`BuyerRecord::lightning_state_lost`].
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    lightning_state_lost: bool,
}

impl BuyerRecord {
    core_accessors!();

    /// The state.
    pub fn state(&self) -> &BuyerState {
        &self.state
    }

    /// The amount asked for.
    pub fn amount_sat(&self) -> u64 {
        self.amount_sat
    }

    /// Our limits.
    pub fn policy(&self) -> &BuyerPolicy {
        &self.policy
    }

    /// Where the claim pays to.
    pub fn claim_destination(&self) -> &ScriptBuf {
        &self.claim_destination
    }

    /// Our MuSig2 public key.
    pub fn musig_pubkey(&self) -> PublicKey {
        self.musig_pubkey
    }

    /// Our claim public key.
    pub fn claim_pubkey(&self) -> XOnlyPublicKey {
        self.claim_pubkey
    }

    /// The record was restored from a backup onto a Lightning node that lost its payments
    /// ([`BuyerRecord::mark_lightning_state_lost`]): "no payment known for the hash" then proves
    /// nothing, so it counts as "maybe in flight": no refund signature, no new attempt.
    pub fn lightning_state_lost(&self) -> bool {
        self.lightning_state_lost
    }

    /// Marks a record restored from a backup onto a Lightning node that no longer knows the
    /// payments made before (its data was lost): from then on the node's "unknown" answer for
    /// the hash counts as a payment that may be in flight, so the buyer never co-signs a refund
    /// nor starts another attempt; it claims if the payment turns out to have succeeded and
    /// otherwise waits for the seller's refund after the timeout.
    pub fn mark_lightning_state_lost(&mut self) {
        self.lightning_state_lost = true;
    }

    /// The payment hash, once accepted (in a loop in from the start: the taker's, which the node
    /// keeps unique among its swaps).
    pub fn payment_hash(&self) -> Option<PaymentHash> {
        self.state.htlc_params().map(|p| p.payment_hash)
    }

    /// Which way the swap moves money: the direction of the offer taken (loop out: we are the
    /// taker; loop in: we are the maker).
    pub fn direction(&self) -> SwapDirection {
        self.core.offer.direction
    }

    /// The HTLC's parameters, once agreed (loop out: accepted; loop in: from the start).
    pub fn htlc_params(&self) -> Option<&HtlcParams> {
        self.state.htlc_params()
    }

    /// The quote, once agreed (loop out: accepted; loop in: from the start).
    pub fn quote(&self) -> Option<&Quote> {
        self.state.quote()
    }

    /// The prepay invoice's payment hash, once accepted with a prepay.
    pub fn prepay_hash(&self) -> Option<PaymentHash> {
        self.state.terms().and_then(|t| t.prepay.as_ref()).map(|p| p.payment_hash)
    }

    /// The agreed terms, once accepted.
    pub fn terms(&self) -> Option<&Terms> {
        self.state.terms()
    }
}

/// One swap, claimer side (the buyer of a loop out, the maker of a loop in): its [`BuyerRecord`]
/// (read through `Deref`; only the state machine changes it), its keys and what lives in memory
/// only.
#[derive(Debug, Clone)]
pub struct BuyerSwap {
    rec: BuyerRecord,
    live: Live,
    /// A `coop_refund_request` waiting for the Lightning node's word that no payment for the
    /// hash can still succeed ([`Action::CheckPayment`]).
    pending_refund: Ephemeral<CoopRefundRequest>,
    /// A [`Action::CheckHtlc`] right before paying is outstanding.
    verifying_htlc: bool,
    /// A [`Notification::Stalled`] was sent for the current trouble (sent once, not every tick).
    stall_reported: bool,
}

swap_api!(BuyerSwap, BuyerRecord, BuyerState);

/// Everything a buyer needs to start a swap.
#[derive(Debug, Clone)]
pub struct BuyerStart {
    /// A fresh random swap id.
    pub swap_id: SwapId,
    /// The seller.
    pub peer: String,
    /// The offer.
    pub offer: Offer,
    /// The amount.
    pub amount_sat: u64,
    /// Limits.
    pub policy: BuyerPolicy,
    /// Where the claim pays.
    pub claim_destination: ScriptBuf,
    /// Our keys for this swap.
    pub keys: SwapKeys,
}

impl BuyerSwap {
    /// Starts a swap: computes the quote, checks it against the policy, sends `swap_request`.
    ///
    /// # Errors
    /// [`BuyerCheckError`] when the offer cannot serve the amount within the policy.
    pub fn start(start: BuyerStart, ctx: &Context) -> Result<(Self, Vec<Action>), BuyerCheckError> {
        let quote = own_quote(&start.offer, start.amount_sat, start.policy.max_total_fee_sat)?;
        if quote.prepay_sat > start.policy.max_prepay_sat {
            return Err(BuyerCheckError::PrepayTooHigh {
                prepay_sat: quote.prepay_sat,
                max_sat: start.policy.max_prepay_sat,
            });
        }
        if start.offer.claim_margin < start.policy.min_claim_margin {
            return Err(BuyerCheckError::ClaimMarginTooLow {
                offered: start.offer.claim_margin,
                min: start.policy.min_claim_margin,
            });
        }
        check_claim_affordable(quote.htlc_amount_sat, start.policy.max_claim_fee_rate_sat_vb)?;
        let request = SwapRequest {
            offer_id: start.offer.offer_id.clone(),
            direction: SwapDirection::LoopOut,
            network: start.offer.network,
            amount_sat: start.amount_sat,
            buyer_musig_pubkey: start.keys.musig_pubkey(),
            buyer_claim_pubkey: start.keys.claim_pubkey(),
            max_total_fee_sat: start.policy.max_total_fee_sat.min(quote.fee_sat()),
            prepay_accepted: quote.prepay_sat > 0,
        };
        let core = CoreRecord::start(
            start.swap_id,
            &start.keys,
            start.peer,
            start.offer,
            ctx.now_secs,
            false,
        );
        let rec = BuyerRecord {
            core,
            amount_sat: start.amount_sat,
            policy: start.policy,
            claim_destination: start.claim_destination,
            musig_pubkey: start.keys.musig_pubkey(),
            claim_pubkey: start.keys.claim_pubkey(),
            state: BuyerState::Requested,
            lightning_state_lost: false,
        };
        let mut swap = BuyerSwap::with_keys(rec, start.keys);
        let send = swap.rec.core.send(Message::SwapRequest(request));
        Ok((swap, vec![Action::Persist, send]))
    }

    /// Loop in, as the maker: takes a taker's `swap_request` (direction `loop_in`) for our
    /// loop-in `offer`, checks it against the offer and our `policy` and, when it fits, starts the
    /// swap in `Accepting`: persists, sends `swap_accept` and watches the HTLC's script at once
    /// (so the lock is seen even if `swap_funded` is lost).
    ///
    /// The checks, in order (spec `02-swap-flow.md`, "Loop in: the claimer as maker"): the offer
    /// id and expiry (`unknown_offer`); offer and request both `loop_in` and on the offer's
    /// network (`invalid_params`); a quote for the amount (`amount_out_of_range`); its fee within
    /// the taker's `max_total_fee_sat` (`invalid_params`); the offer's `claim_margin` not below our
    /// own floor (`internal`: our configuration); our own claim affordable at our highest claim
    /// fee rate (`amount_out_of_range`); an HTLC that builds from the taker's keys and ours, with
    /// `timeout_height = tip + offer.timeout_delta` (`invalid_params`, e.g. the taker named our
    /// own MuSig2 key).
    ///
    /// Not checked here, the node's part: that `request.payment_hash` is not the hash of another
    /// of its swaps (two swaps on one hash would let one payment's preimage open both HTLCs), and
    /// its own limits (rate, liquidity to pay `quote.invoice_amount_sat`).
    ///
    /// # Errors
    /// The `error` to send back when the request does not fit; nothing is kept.
    #[allow(clippy::too_many_arguments)]
    pub fn from_loop_in_request(
        swap_id: SwapId,
        peer: String,
        offer: Offer,
        request: LoopInRequest,
        keys: SwapKeys,
        claim_destination: ScriptBuf,
        policy: BuyerPolicy,
        ctx: &Context,
    ) -> Result<(Self, Vec<Action>), ErrorMessage> {
        fn err(code: ErrorCode, message: impl core::fmt::Display) -> ErrorMessage {
            ErrorMessage::new(code, message)
        }
        let asked = Asked {
            offer_id: &request.offer_id,
            direction: request.direction,
            serves: SwapDirection::LoopIn,
            network: request.network,
            amount_sat: request.amount_sat,
            max_total_fee_sat: request.max_total_fee_sat,
            prepay_accepted: false,
        };
        let quote = admit_request(&offer, &asked, ctx.now_secs)?;
        if offer.claim_margin < policy.min_claim_margin {
            return Err(err(
                ErrorCode::Internal,
                BuyerCheckError::ClaimMarginTooLow {
                    offered: offer.claim_margin,
                    min: policy.min_claim_margin,
                },
            ));
        }
        check_claim_affordable(quote.htlc_amount_sat, policy.max_claim_fee_rate_sat_vb)
            .map_err(|e| err(ErrorCode::AmountOutOfRange, e))?;
        let timeout_height = ctx
            .tip_height
            .checked_add(offer.timeout_delta)
            .ok_or_else(|| err(ErrorCode::Internal, "timeout overflow"))?;
        let htlc_params = HtlcParams {
            payment_hash: request.payment_hash,
            claim_key: keys.claim_pubkey(),
            refund_key: request.locker_refund_pubkey,
            locker_musig_key: request.locker_musig_pubkey,
            claimer_musig_key: keys.musig_pubkey(),
            timeout_height,
            network: offer.network,
        };
        let htlc = Htlc::new_at(htlc_params.clone(), ctx.tip_height)
            .map_err(|e| err(ErrorCode::InvalidParams, e))?;
        let accept = LoopInAccept {
            direction: SwapDirection::LoopIn,
            claimer_musig_pubkey: keys.musig_pubkey(),
            claimer_claim_pubkey: keys.claim_pubkey(),
            timeout_height,
            htlc_script_pubkey: htlc.script_pubkey().to_owned(),
            htlc_amount_sat: quote.htlc_amount_sat,
            quote,
        };
        let funding_deadline_secs =
            ctx.now_secs.saturating_add(u64::from(offer.invoice_expiry_secs));
        let core = CoreRecord::start(swap_id, &keys, peer, offer, ctx.now_secs, true);
        let rec = BuyerRecord {
            core,
            amount_sat: request.amount_sat,
            policy,
            claim_destination,
            musig_pubkey: keys.musig_pubkey(),
            claim_pubkey: keys.claim_pubkey(),
            state: BuyerState::Accepting {
                offered: LoopInTerms { quote, htlc_params },
                funding_deadline_secs,
                htlc: None,
            },
            lightning_state_lost: false,
        };
        let mut swap = BuyerSwap::with_keys(rec, keys);
        let send = swap.rec.core.send(Message::LoopInAccept(accept));
        let actions = vec![
            Action::Persist,
            send,
            Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() },
            Action::Notify(Notification::Accepted { quote, timeout_height }),
        ];
        Ok((swap, actions))
    }

    fn with_keys(rec: BuyerRecord, keys: SwapKeys) -> Self {
        BuyerSwap {
            rec,
            live: Live::new(keys),
            pending_refund: Ephemeral(None),
            verifying_htlc: false,
            stall_reported: false,
        }
    }

    /// Loads a stored swap with its keys (derived again from [`BuyerRecord::key_index`]); then
    /// [`BuyerSwap::resume`] gives the actions to take at start-up.
    ///
    /// # Errors
    /// [`SwapError::WrongKeys`] when the keys are not the ones the swap was made with.
    pub fn load(record: BuyerRecord, keys: SwapKeys) -> Result<Self, SwapError> {
        if keys.index() != record.core.key_index
            || keys.musig_pubkey() != record.musig_pubkey
            || keys.claim_pubkey() != record.claim_pubkey
        {
            return Err(SwapError::WrongKeys { key_index: record.core.key_index });
        }
        Ok(BuyerSwap::with_keys(record, keys))
    }

    /// What the peer is, in texts we send: the seller of a loop out, the taker of a loop in.
    fn peer_role(&self) -> &'static str {
        match self.rec.direction() {
            SwapDirection::LoopIn => "taker",
            _ => "seller",
        }
    }

    /// The blocks kept for the claim after a payment resolves: the offer's margin, never below
    /// the buyer's own floor.
    fn claim_margin(&self) -> u32 {
        self.rec.core.offer.claim_margin.max(self.rec.policy.min_claim_margin)
    }

    /// The fee rate of a claim of `vsize` built now (`outstanding: None`) or replacing the one
    /// that is out; `None`: keep it. The deadline is the timeout minus
    /// [`DEADLINE_SAFETY_BLOCKS`] ([`crate::fees`]).
    fn claim_fee_rate(
        &self,
        ctx: &Context,
        vsize: u64,
        outstanding: Option<Outstanding>,
    ) -> Option<FeeRate> {
        let terms = self.rec.state.terms()?;
        let deadline = terms.htlc_params.timeout_height.saturating_sub(DEADLINE_SAFETY_BLOCKS);
        let spend = SpendFee {
            value_sat: terms.quote.htlc_amount_sat,
            vsize,
            target: self.rec.policy.claim_conf_target.unwrap_or(ctx.fees.claim_target),
            blocks_left: Some(deadline.saturating_sub(ctx.tip_height)),
            cap: FeeRate::from_sat_per_vb(self.rec.policy.max_claim_fee_rate_sat_vb)
                .unwrap_or(FeeRate::MAX),
        };
        spend_fee_rate(&ctx.fees.estimates, &spend, outstanding)
    }

    fn htlc(&self) -> Result<Htlc, SwapError> {
        let params = self
            .rec
            .state
            .htlc_params()
            .ok_or_else(|| SwapError::Internal("no terms yet".into()))?;
        Htlc::new(params.clone()).map_err(internal)
    }

    /// The buyer's part of [`BuyerSwap::resume`], after the re-sent messages `sent`.
    fn resume_role(&mut self, sent: Vec<Action>, ctx: &Context, rng: &mut impl Rng) -> Actions {
        let mut actions = sent;
        if let Some(params) = self.rec.state.htlc_params() {
            if self.kind() == StateKind::Pending
                || matches!(self.rec.state, BuyerState::Aborted { .. })
            {
                let htlc = Htlc::new(params.clone()).map_err(internal)?;
                actions.push(Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() });
            }
        }
        // A spend recorded as confirmed is forgotten (a refund seen while paying too): the chain
        // reports it again at the next look if it is still there (one that left while the node
        // was down is never reported gone). The claim that is out goes out again below.
        self.forget_spend(None, ctx, false);
        match &self.rec.state {
            BuyerState::Funded { terms, .. } if self.rec.lightning_state_lost => {
                // A stale backup may show `Funded` for a swap that was paid: ask first.
                actions.push(Action::CheckPayment { payment_hash: terms.htlc_params.payment_hash });
            }
            BuyerState::Paying { terms, .. } => {
                // Never pay again blindly: the attempt may be in flight, and its CLTV budget was
                // computed from an old tip. Ask the node; a new attempt (if any) reruns every
                // pre-payment check from the current tip.
                actions.push(Action::CheckPayment { payment_hash: terms.htlc_params.payment_hash });
            }
            BuyerState::Claiming { .. } => {
                // The nonce died with the process: a new session with a fresh one.
                actions.extend(self.start_claim(ctx, rng)?);
            }
            BuyerState::ClaimBroadcast { claim_tx, purpose, .. } => {
                actions.push(Action::Broadcast { tx: claim_tx.clone(), purpose: *purpose });
            }
            BuyerState::Accepted { terms: Terms { prepay: Some(p), .. }, announced: None } => {
                // Paid, in flight or not yet sent before the restart: paying is idempotent.
                actions.push(Action::PayPrepay {
                    invoice: p.invoice.clone(),
                    amount_msat: p.amount_msat,
                });
            }
            _ => {}
        }
        Ok(actions)
    }

    /// Every event but messages and ticks ([`BuyerSwap::handle`]).
    fn handle_event(&mut self, event: Event, ctx: &Context, rng: &mut impl Rng) -> Actions {
        match event {
            Event::Message(_) | Event::Tick => Ok(Vec::new()), // dispatched by `handle`
            Event::HtlcOutput { outpoint, value_sat, script_pubkey, confirmed_height } => {
                self.on_htlc_output(outpoint, value_sat, script_pubkey, confirmed_height, ctx)
            }
            Event::HtlcSpent { tx, confirmed_height } => {
                self.on_htlc_spent(tx, confirmed_height, ctx)
            }
            Event::HtlcSpendGone { outpoint, txid } => self.on_spend_gone(outpoint, txid, ctx),
            Event::PaymentSucceeded { preimage } => {
                if let Some(p) =
                    self.prepay_terms().filter(|p| p.payment_hash == preimage.payment_hash())
                {
                    let amount_sat = p.amount_msat / 1000;
                    return Ok(vec![Action::Notify(Notification::Prepaid { amount_sat })]);
                }
                self.on_payment_succeeded(preimage, ctx, rng)
            }
            Event::PaymentFailed { attempt, reason } => {
                if self.current_attempt() != Some(attempt) {
                    return Ok(Vec::new()); // another attempt's failure (stale, replayed)
                }
                self.on_payment_failed(ctx, reason, false)
            }
            Event::PaymentNotSent { attempt, reason } => {
                if self.current_attempt() != Some(attempt) {
                    return Ok(Vec::new());
                }
                self.on_payment_failed(ctx, reason, true)
            }
            Event::PaymentStatus { payment_hash, status } => {
                if self.prepay_terms().is_some_and(|p| p.payment_hash == payment_hash) {
                    return self.on_prepay_status(status);
                }
                if Some(payment_hash) != self.payment_hash() {
                    return Ok(Vec::new());
                }
                // Its answers may send (a refund's signature or refusal): persisted first.
                self.on_payment_status(status, ctx, rng).map(persist_first)
            }
            Event::HtlcChecked { outpoint, status } => self.on_htlc_checked(outpoint, status, ctx),
            Event::ClaimBuilt { tx, inputs_sat } => self.on_claim_built(tx, inputs_sat, ctx),
            Event::UserScriptSpend => self.on_user_claim(ctx),
            Event::HtlcGone { outpoint } => self.on_htlc_gone(outpoint, ctx),
            Event::UserAbort => match self.rec.state {
                BuyerState::Requested
                | BuyerState::Accepting { .. }
                | BuyerState::Accepted { .. }
                | BuyerState::Funded { .. } => self.abort(AbortReason::UserRequested, None, None),
                _ => {
                    Err(SwapError::Unexpected { event: "user_abort", state: self.rec.state.name() })
                }
            },
            Event::FundingBuilt { .. }
            | Event::FundingFailed { .. }
            | Event::InvoiceCreated { .. }
            | Event::PaymentClaimable { .. }
            | Event::PaymentClaimed { .. } => {
                Err(SwapError::Unexpected { event: "seller_event", state: self.rec.state.name() })
            }
        }
    }

    /// In `Paying`, the payment failed for good (`unsent`: it was never sent). With attempts
    /// left: back to `Funded`, the next attempt after [`PAYMENT_RETRY_SECS`] and the checks
    /// again (an unsent attempt does not count as a failed one); else abort.
    fn on_payment_failed(&mut self, ctx: &Context, reason: String, unsent: bool) -> Actions {
        let BuyerState::Paying { terms, htlc, payment_attempts, unsent_attempts, attempt, .. } =
            &self.rec.state
        else {
            return Ok(Vec::new());
        };
        if htlc.spent.is_some() {
            // The seller refunded and the payment failed: nothing lost, nothing to retry.
            return self.abort(
                AbortReason::PaymentFailed,
                Some(BuyerCheckError::HtlcSpent),
                Some(reason),
            );
        }
        let attempt = *attempt;
        let (payment_attempts, unsent_attempts, attempts_left) = if unsent {
            let unsent = *unsent_attempts;
            (
                payment_attempts.saturating_sub(1),
                unsent.saturating_add(1),
                unsent < MAX_UNSENT_PAYMENT_ATTEMPTS,
            )
        } else {
            (*payment_attempts, *unsent_attempts, *payment_attempts < MAX_PAYMENT_ATTEMPTS)
        };
        if !attempts_left {
            return self.abort(AbortReason::PaymentFailed, None, Some(reason));
        }
        let (terms, htlc) = (terms.clone(), htlc.clone());
        self.go(BuyerState::Funded {
            terms,
            htlc,
            payment_attempts,
            unsent_attempts,
            retry_at_secs: ctx.now_secs.saturating_add(PAYMENT_RETRY_SECS),
            attempt,
        })?;
        Ok(vec![
            Action::Persist,
            Action::Notify(Notification::PaymentFailed { reason, retrying: true }),
        ])
    }

    /// Aborts before paying: tells the peer (the locker, which refunds cooperatively).
    fn abort(
        &mut self,
        reason: AbortReason,
        check: Option<BuyerCheckError>,
        message: Option<String>,
    ) -> Actions {
        let terms = self.rec.state.terms().cloned();
        let htlc = self.rec.state.htlc_output().cloned().or(match &self.rec.state {
            // Keep the announced outpoint: the seller's cooperative refund needs it.
            BuyerState::Accepted { announced: Some(o), .. } => Some(HtlcOutput {
                outpoint: *o,
                confirmed_height: None,
                gone_since: None,
                spent: None,
            }),
            _ => None,
        });
        let offered =
            if terms.is_none() { self.rec.state.offered().cloned().map(Box::new) } else { None };
        let text = message.clone().or_else(|| check.as_ref().map(|c| c.to_string()));
        let text =
            text.map(|t| t.chars().take(crate::messages::MAX_TEXT_CHARS).collect::<String>());
        let message = text.clone();
        self.go(BuyerState::Aborted { reason, check, message, terms, htlc, offered })?;
        self.live.coop = Ephemeral(None);
        let finished = self.finished();
        Ok(self.rec.core.abort_actions(reason, text, finished))
    }

    fn check_accept(&self, accept: &SwapAccept, ctx: &Context) -> Result<Terms, BuyerCheckError> {
        let (quote, offer) = (&accept.quote, &self.rec.core.offer);
        check_quote(quote, offer, self.rec.amount_sat, self.rec.policy.max_total_fee_sat)?;
        let prepay = self.check_prepay(accept, ctx)?;
        let invoice = Bolt11Invoice::from_str(&accept.invoice)
            .map_err(|e| BuyerCheckError::InvoiceInvalid(e.to_string()))?;
        if invoice.network() != self.rec.core.offer.network {
            return Err(BuyerCheckError::InvoiceNetwork);
        }
        if invoice.recover_payee_pub_key() != self.rec.core.offer.ln_node_id {
            return Err(BuyerCheckError::InvoicePayee);
        }
        let invoice_msat = check_invoice_terms(&invoice, &accept.payment_hash, quote, ctx)?;
        if self.rec.core.offer.claim_margin < self.rec.policy.min_claim_margin {
            return Err(BuyerCheckError::ClaimMarginTooLow {
                offered: self.rec.core.offer.claim_margin,
                min: self.rec.policy.min_claim_margin,
            });
        }
        check_claim_affordable(quote.htlc_amount_sat, self.rec.policy.max_claim_fee_rate_sat_vb)?;
        let min = ctx
            .tip_height
            .saturating_add(self.claim_margin())
            .saturating_add(MIN_CLTV_BUDGET_BLOCKS);
        check_timeout(accept.timeout_height, min, ctx.tip_height, offer)?;
        check_htlc_amount(accept.htlc_amount_sat, quote, self.rec.amount_sat)?;
        let htlc_params = HtlcParams {
            payment_hash: accept.payment_hash,
            claim_key: self.rec.claim_pubkey,
            refund_key: accept.seller_refund_pubkey,
            locker_musig_key: accept.seller_musig_pubkey,
            claimer_musig_key: self.rec.musig_pubkey,
            timeout_height: accept.timeout_height,
            network: self.rec.core.offer.network,
        };
        check_htlc_script(&htlc_params, &accept.htlc_script_pubkey, None)?;
        let expires_at = invoice.expires_at().map(|d| d.as_secs()).unwrap_or(u64::MAX);
        Ok(Terms {
            invoice: accept.invoice.clone(),
            invoice_amount_msat: invoice_msat,
            invoice_expires_at: expires_at,
            min_final_cltv: u32::try_from(invoice.min_final_cltv_expiry_delta())
                .unwrap_or(u32::MAX),
            quote: *quote,
            htlc_params,
            prepay,
        })
    }

    /// The prepay invoice against the quote: present exactly when the quote has a prepay, within
    /// the buyer's limit, for the quote's amount, from the offer's node, on its network, unexpired,
    /// and for another hash than the swap's (paying it must not reveal the swap's preimage).
    fn check_prepay(
        &self,
        accept: &SwapAccept,
        ctx: &Context,
    ) -> Result<Option<PrepayTerms>, BuyerCheckError> {
        let bad = |why: &str| BuyerCheckError::PrepayInvoiceInvalid(why.to_string());
        let prepay_sat = accept.quote.prepay_sat;
        let Some(text) = &accept.prepay_invoice else {
            return if prepay_sat == 0 { Ok(None) } else { Err(bad("missing")) };
        };
        if prepay_sat == 0 {
            return Err(bad("the quote has no prepay"));
        }
        if prepay_sat > self.rec.policy.max_prepay_sat {
            return Err(BuyerCheckError::PrepayTooHigh {
                prepay_sat,
                max_sat: self.rec.policy.max_prepay_sat,
            });
        }
        let invoice = Bolt11Invoice::from_str(text).map_err(|_| bad("does not decode"))?;
        if invoice.network() != self.rec.core.offer.network {
            return Err(bad("another network"));
        }
        if invoice.recover_payee_pub_key() != self.rec.core.offer.ln_node_id {
            return Err(bad("not from the offer's lightning node"));
        }
        let amount_msat = prepay_sat.saturating_mul(1000);
        if invoice.amount_milli_satoshis() != Some(amount_msat) {
            return Err(bad("amount differs from the quote's prepay"));
        }
        if invoice.would_expire(Duration::from_secs(ctx.now_secs)) {
            return Err(bad("expired"));
        }
        let payment_hash = PaymentHash(invoice.payment_hash().to_byte_array());
        if payment_hash == accept.payment_hash {
            return Err(bad("same payment hash as the swap's invoice"));
        }
        Ok(Some(PrepayTerms { invoice: text.clone(), payment_hash, amount_msat }))
    }

    fn handle_message(&mut self, body: Message, ctx: &Context, _rng: &mut impl Rng) -> Actions {
        match body {
            Message::SwapAccept(accept) => {
                if self.rec.state != BuyerState::Requested {
                    return Ok(Vec::new());
                }
                match self.check_accept(&accept, ctx) {
                    Ok(terms) => {
                        let htlc = Htlc::new(terms.htlc_params.clone()).map_err(internal)?;
                        let note = Action::Notify(Notification::Accepted {
                            quote: terms.quote,
                            timeout_height: terms.htlc_params.timeout_height,
                        });
                        let prepay = terms.prepay.as_ref().map(|p| Action::PayPrepay {
                            invoice: p.invoice.clone(),
                            amount_msat: p.amount_msat,
                        });
                        self.go(BuyerState::Accepted { terms, announced: None })?;
                        let mut actions = vec![
                            Action::Persist,
                            Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() },
                            note,
                        ];
                        actions.extend(prepay);
                        Ok(actions)
                    }
                    Err(check) => self.abort(AbortReason::ChecksFailed, Some(check), None),
                }
            }
            Message::SwapFunded(funded) => {
                if matches!(self.rec.state, BuyerState::Accepting { .. }) {
                    return self.on_loop_in_funded(funded, ctx);
                }
                self.on_swap_funded(funded)
            }
            Message::CoopClaimResponse(resp) => {
                let BuyerState::Claiming { .. } = &self.rec.state else { return Ok(Vec::new()) };
                let Some(signed) = self.live.finish_coop(&resp.seller_nonce, &resp.partial_sig)
                else {
                    return Ok(Vec::new());
                };
                match signed {
                    Ok(spend) => self.broadcast_claim(spend, TxPurpose::CooperativeClaim, ctx),
                    Err(reason) => {
                        let mut actions =
                            vec![Action::Notify(Notification::CooperationFailed { reason })];
                        actions.extend(self.script_claim(ctx)?);
                        Ok(actions)
                    }
                }
            }
            Message::CoopRefundRequest(req) => self.on_coop_refund_request(req),
            Message::SwapAbort(abort) => {
                let note = Action::Notify(Notification::Aborted {
                    reason: abort.reason,
                    message: abort.message.clone(),
                });
                if self.rec.state.has_paid() || matches!(self.rec.state, BuyerState::Aborted { .. })
                {
                    return Ok(vec![note]);
                }
                let terms = self.rec.state.terms().cloned();
                let htlc = self.rec.state.htlc_output().cloned();
                let offered = self.rec.state.offered().cloned().map(Box::new);
                self.go(BuyerState::Aborted {
                    reason: abort.reason,
                    check: None,
                    message: abort.message,
                    terms,
                    htlc,
                    offered,
                })?;
                Ok(vec![Action::Persist, note, self.finished()])
            }
            Message::Error(error) => {
                let note = Action::Notify(Notification::PeerError { error: error.clone() });
                // Before any HTLC: the peer refused our `swap_request` (loop out) or our
                // `swap_accept` (loop in); the swap ends. A loop-in maker keeps what it agreed,
                // to co-sign a cooperative refund should the taker have locked anyway.
                if matches!(self.rec.state, BuyerState::Requested | BuyerState::Accepting { .. }) {
                    let htlc = self.rec.state.htlc_output().cloned();
                    let offered = self.rec.state.offered().cloned().map(Box::new);
                    self.go(BuyerState::Aborted {
                        reason: AbortReason::Internal,
                        check: None,
                        message: Some(format!("{}: {}", error.code.as_str(), error.message)),
                        terms: None,
                        htlc,
                        offered,
                    })?;
                    return Ok(vec![Action::Persist, note, self.finished()]);
                }
                Ok(vec![note])
            }
            other => {
                let peer = self.peer_role();
                Ok(vec![self.rec.core.refuse_unexpected(&other, peer)])
            }
        }
    }

    /// Loop in: the taker's `swap_funded` in `Accepting`, with its invoice. The invoice's checks
    /// ([`BuyerSwap::check_loop_in_invoice`]), then the funding's of [`BuyerSwap::on_swap_funded`]
    /// (the announced output pays the agreed value to the HTLC's script). Passed: `Accepted` with
    /// the complete [`Terms`] and the announced outpoint, and from there as in a loop out (the
    /// payment waits for the HTLC's confirmations on our own chain view; an output already seen
    /// moves the swap on to `Funded` at once). Failed: `swap_abort` with `checks_failed`, nothing
    /// paid.
    fn on_loop_in_funded(&mut self, funded: SwapFunded, ctx: &Context) -> Actions {
        let BuyerState::Accepting { offered, htlc: seen, .. } = &self.rec.state else {
            return Ok(Vec::new());
        };
        let (offered, seen) = (offered.clone(), seen.clone());
        let terms = match self.check_loop_in_invoice(funded.invoice.as_deref(), &offered, ctx) {
            Ok(terms) => terms,
            Err(check) => return self.abort(AbortReason::ChecksFailed, Some(check), None),
        };
        if let Err(reason) = self.check_funding_tx(&funded, offered.quote.htlc_amount_sat) {
            return self.abort(
                AbortReason::ChecksFailed,
                Some(BuyerCheckError::HtlcScriptMismatch(reason)),
                None,
            );
        }
        let announced = OutPoint { txid: funded.txid, vout: funded.vout };
        self.go(BuyerState::Accepted { terms, announced: Some(announced) })?;
        let mut actions = vec![Action::Persist];
        if let Some(seen) = seen {
            let (amount_sat, script) = (offered.quote.htlc_amount_sat, self.htlc()?);
            let script_pubkey = script.script_pubkey().to_owned();
            let (outpoint, confirmed_height) = (seen.outpoint, seen.confirmed_height);
            actions.extend(self.on_htlc_output(
                outpoint,
                amount_sat,
                script_pubkey,
                confirmed_height,
                ctx,
            )?);
        }
        Ok(actions)
    }

    /// Loop in: the taker's invoice against what the maker agreed: present, decodes as BOLT11,
    /// for the offer's network, for the HTLC's hash, for exactly `quote.invoice_amount_sat`, not
    /// expired. Its payee is whichever node the taker names: the hash binds the invoice to the
    /// HTLC (paying it reveals the preimage that opens the claim leaf, whoever is paid), so
    /// unlike a loop out there is no offer's node to compare it with.
    fn check_loop_in_invoice(
        &self,
        invoice: Option<&str>,
        offered: &LoopInTerms,
        ctx: &Context,
    ) -> Result<Terms, BuyerCheckError> {
        let text = invoice.ok_or_else(|| {
            BuyerCheckError::InvoiceInvalid("missing: a loop-in swap_funded carries it".into())
        })?;
        let invoice = Bolt11Invoice::from_str(text)
            .map_err(|e| BuyerCheckError::InvoiceInvalid(e.to_string()))?;
        if invoice.network() != self.rec.core.offer.network {
            return Err(BuyerCheckError::InvoiceNetwork);
        }
        let hash = &offered.htlc_params.payment_hash;
        let invoice_msat = check_invoice_terms(&invoice, hash, &offered.quote, ctx)?;
        let expires_at = invoice.expires_at().map(|d| d.as_secs()).unwrap_or(u64::MAX);
        Ok(Terms {
            invoice: text.to_string(),
            invoice_amount_msat: invoice_msat,
            invoice_expires_at: expires_at,
            min_final_cltv: u32::try_from(invoice.min_final_cltv_expiry_delta())
                .unwrap_or(u32::MAX),
            quote: offered.quote,
            htlc_params: offered.htlc_params.clone(),
            prepay: None,
        })
    }

    /// `swap_funded`'s transaction: it decodes, its id is `txid`, and output `vout` pays
    /// `amount_sat` to the HTLC's script.
    fn check_funding_tx(&self, funded: &SwapFunded, amount_sat: u64) -> Result<(), String> {
        let htlc = self.htlc().map_err(|e| e.to_string())?;
        let tx = funded.tx().map_err(|e| e.to_string())?;
        let out = tx.output.get(funded.vout as usize).ok_or("no such output")?;
        if out.script_pubkey != *htlc.script_pubkey() {
            return Err("funding output script differs from the htlc".to_string());
        }
        if out.value != Amount::from_sat(amount_sat) {
            return Err(format!(
                "funding output pays {} sat, agreed {}",
                out.value.to_sat(),
                amount_sat
            ));
        }
        Ok(())
    }

    fn on_swap_funded(&mut self, funded: SwapFunded) -> Actions {
        let BuyerState::Accepted { terms, announced: None } = &self.rec.state else {
            return Ok(Vec::new());
        };
        let terms = terms.clone();
        self.htlc()?;
        match self.check_funding_tx(&funded, terms.quote.htlc_amount_sat) {
            Ok(()) => {
                self.rec.state = BuyerState::Accepted {
                    terms,
                    announced: Some(OutPoint { txid: funded.txid, vout: funded.vout }),
                };
                Ok(vec![Action::Persist])
            }
            Err(reason) => self.abort(
                AbortReason::ChecksFailed,
                Some(BuyerCheckError::HtlcScriptMismatch(reason)),
                None,
            ),
        }
    }

    fn on_htlc_output(
        &mut self,
        outpoint: OutPoint,
        value_sat: u64,
        script_pubkey: ScriptBuf,
        confirmed_height: Option<u32>,
        ctx: &Context,
    ) -> Actions {
        if let BuyerState::Accepting { .. } = &self.rec.state {
            return self.on_early_htlc_output(outpoint, value_sat, script_pubkey, confirmed_height);
        }
        let (terms, current) = match &self.rec.state {
            BuyerState::Accepted { terms, .. } => (terms.clone(), None),
            BuyerState::Funded { terms, htlc, .. } => (terms.clone(), Some(htlc.clone())),
            BuyerState::Paying { .. }
            | BuyerState::Claiming { .. }
            | BuyerState::ClaimBroadcast { .. } => return self.on_htlc_back(outpoint),
            _ => return Ok(Vec::new()),
        };
        let htlc = self.htlc()?;
        if script_pubkey != *htlc.script_pubkey() {
            return Ok(Vec::new());
        }
        if let Some(cur) = &current {
            if cur.outpoint != outpoint {
                return Ok(Vec::new());
            }
        }
        if value_sat != terms.quote.htlc_amount_sat {
            return self.abort(
                AbortReason::ChecksFailed,
                Some(BuyerCheckError::HtlcAmountMismatch {
                    expected_sat: terms.quote.htlc_amount_sat,
                    got_sat: value_sat,
                }),
                None,
            );
        }
        let (payment_attempts, unsent_attempts, retry_at_secs, attempt) = match &self.rec.state {
            BuyerState::Funded {
                payment_attempts,
                unsent_attempts,
                retry_at_secs,
                attempt,
                ..
            } => (*payment_attempts, *unsent_attempts, *retry_at_secs, *attempt),
            _ => (0, 0, 0, 0),
        };
        let output = HtlcOutput { outpoint, confirmed_height, gone_since: None, spent: None };
        let changed = current.as_ref() != Some(&output);
        let mut actions = Vec::new();
        if changed {
            let required = self.required_confirmations();
            let note = Action::Notify(Notification::FundingSeen {
                txid: outpoint.txid,
                confirmations: confirmations(confirmed_height, ctx.tip_height),
                required,
            });
            self.go(BuyerState::Funded {
                terms,
                htlc: output,
                payment_attempts,
                unsent_attempts,
                retry_at_secs,
                attempt,
            })?;
            actions.push(Action::Persist);
            actions.push(note);
        }
        actions.extend(self.maybe_pay(ctx)?);
        Ok(actions)
    }

    /// Loop in, in `Accepting`: the HTLC output seen on chain before the taker's `swap_funded`.
    /// Remembered (the swap moves on to `Funded` once the invoice passes its checks: nothing is
    /// paid without it); another value than the agreed one fails the swap, as in `Accepted`.
    fn on_early_htlc_output(
        &mut self,
        outpoint: OutPoint,
        value_sat: u64,
        script_pubkey: ScriptBuf,
        confirmed_height: Option<u32>,
    ) -> Actions {
        let BuyerState::Accepting { offered, htlc, .. } = &self.rec.state else {
            return Ok(Vec::new());
        };
        let expected_sat = offered.quote.htlc_amount_sat;
        if script_pubkey != *self.htlc()?.script_pubkey() {
            return Ok(Vec::new());
        }
        if htlc.as_ref().is_some_and(|h| h.outpoint != outpoint) {
            return Ok(Vec::new());
        }
        if value_sat != expected_sat {
            return self.abort(
                AbortReason::ChecksFailed,
                Some(BuyerCheckError::HtlcAmountMismatch { expected_sat, got_sat: value_sat }),
                None,
            );
        }
        let output = HtlcOutput { outpoint, confirmed_height, gone_since: None, spent: None };
        let BuyerState::Accepting { htlc, .. } = &mut self.rec.state else {
            return Ok(Vec::new());
        };
        if htlc.as_ref() == Some(&output) {
            return Ok(Vec::new());
        }
        *htlc = Some(output);
        Ok(vec![Action::Persist])
    }

    fn required_confirmations(&self) -> u32 {
        self.rec.core.offer.min_confirmations.max(self.rec.policy.min_confirmations).max(1)
    }

    /// In `Funded`: once confirmed enough and every pre-payment check holds, looks the HTLC up
    /// on chain once more ([`Action::CheckHtlc`]); the payment starts when the answer
    /// ([`Event::HtlcChecked`]) confirms it ([`BuyerSwap::pay_if_ready`] with `verified`).
    fn maybe_pay(&mut self, ctx: &Context) -> Actions {
        self.pay_if_ready(ctx, false)
    }

    /// The pre-payment checks, from the current tip (spec `02-swap-flow.md`, "Buyer checks"):
    /// invoice not expired, `tip + budget + claim_margin <= timeout` with a budget a route can
    /// use, the claim affordable, the confirmations. Aborts when a check can no longer pass;
    /// waits when it may pass later. With every check passing: asks for the chain check first
    /// (`verified == false`), or pays (`verified == true`).
    fn pay_if_ready(&mut self, ctx: &Context, verified: bool) -> Actions {
        let BuyerState::Funded {
            terms,
            htlc,
            payment_attempts,
            unsent_attempts,
            retry_at_secs,
            attempt,
        } = &self.rec.state
        else {
            return Ok(Vec::new());
        };
        let (terms, htlc, attempts, unsent_attempts, retry_at, attempt) = (
            terms.clone(),
            htlc.clone(),
            *payment_attempts,
            *unsent_attempts,
            *retry_at_secs,
            *attempt,
        );
        if ctx.now_secs >= terms.invoice_expires_at {
            return self.abort(
                AbortReason::ChecksFailed,
                Some(BuyerCheckError::InvoiceExpired),
                None,
            );
        }
        let timeout = terms.htlc_params.timeout_height;
        let available = timeout.saturating_sub(ctx.tip_height).saturating_sub(self.claim_margin());
        let needed = MIN_CLTV_BUDGET_BLOCKS.max(terms.min_final_cltv);
        let budget = available.min(self.rec.policy.max_route_cltv);
        if budget < needed {
            return self.abort(
                AbortReason::TimeoutTooClose,
                Some(BuyerCheckError::CltvBudgetTooShort { budget, needed }),
                None,
            );
        }
        if let Err(check) = check_claim_affordable(
            terms.quote.htlc_amount_sat,
            self.rec.policy.max_claim_fee_rate_sat_vb,
        ) {
            return self.abort(AbortReason::ChecksFailed, Some(check), None);
        }
        if confirmations(htlc.confirmed_height, ctx.tip_height) < self.required_confirmations()
            || ctx.now_secs < retry_at
            || self.pending_refund.0.is_some()
            || self.rec.lightning_state_lost
        {
            return Ok(Vec::new());
        }
        if !verified {
            if self.verifying_htlc {
                return Ok(Vec::new());
            }
            self.verifying_htlc = true;
            let script_pubkey = self.htlc()?.script_pubkey().to_owned();
            return Ok(vec![Action::CheckHtlc { outpoint: htlc.outpoint, script_pubkey }]);
        }
        let attempt = attempt.saturating_add(1);
        let action = Action::PayInvoice {
            invoice: terms.invoice.clone(),
            amount_msat: terms.invoice_amount_msat,
            max_total_cltv_expiry_delta: budget,
            attempt,
        };
        let payment_attempts = attempts.saturating_add(1);
        self.go(BuyerState::Paying {
            terms,
            htlc,
            max_cltv: budget,
            payment_attempts,
            unsent_attempts,
            attempt,
        })?;
        Ok(vec![Action::Persist, action, Action::Notify(Notification::Paying { max_cltv: budget })])
    }

    /// The prepay, when the agreed terms have one.
    fn prepay_terms(&self) -> Option<&PrepayTerms> {
        self.rec.state.terms().and_then(|t| t.prepay.as_ref())
    }

    /// What the Lightning node says of the prepay after a send error or a failure event: one
    /// that failed (or never went out) ends a swap that is still waiting for its HTLC (the seller,
    /// unpaid, does not fund; if it did, it gets its cooperative refund).
    fn on_prepay_status(&mut self, status: PaymentStatus) -> Actions {
        match (status, &self.rec.state) {
            (PaymentStatus::Failed | PaymentStatus::Unknown, BuyerState::Accepted { .. }) => self
                .abort(
                    AbortReason::PaymentFailed,
                    None,
                    Some("the prepay could not be paid".into()),
                ),
            (PaymentStatus::Succeeded { .. }, _) => {
                let amount_sat = self.prepay_terms().map_or(0, |p| p.amount_msat / 1000);
                Ok(vec![Action::Notify(Notification::Prepaid { amount_sat })])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The attempt in flight, in `Paying`.
    fn current_attempt(&self) -> Option<u32> {
        match &self.rec.state {
            BuyerState::Paying { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// The chain's answer right before paying.
    fn on_htlc_checked(
        &mut self,
        outpoint: OutPoint,
        status: HtlcStatus,
        ctx: &Context,
    ) -> Actions {
        if matches!(self.rec.state, BuyerState::Claiming { .. } | BuyerState::ClaimBroadcast { .. })
        {
            return self.on_paid_htlc_checked(outpoint, status, ctx);
        }
        let BuyerState::Funded { htlc, .. } = &self.rec.state else {
            self.verifying_htlc = false;
            return Ok(Vec::new());
        };
        if htlc.outpoint != outpoint {
            return Ok(Vec::new());
        }
        self.verifying_htlc = false;
        match status {
            HtlcStatus::Missing => self.on_htlc_gone(outpoint, ctx),
            HtlcStatus::Spent => {
                self.abort(AbortReason::ChecksFailed, Some(BuyerCheckError::HtlcSpent), None)
            }
            HtlcStatus::Unspent { value_sat, confirmed_height } => {
                let expected_sat =
                    self.rec.state.terms().map(|t| t.quote.htlc_amount_sat).unwrap_or(0);
                if value_sat != expected_sat {
                    return self.abort(
                        AbortReason::ChecksFailed,
                        Some(BuyerCheckError::HtlcAmountMismatch {
                            expected_sat,
                            got_sat: value_sat,
                        }),
                        None,
                    );
                }
                let mut actions = Vec::new();
                if let BuyerState::Funded { htlc, .. } = &mut self.rec.state {
                    if htlc.confirmed_height != confirmed_height {
                        htlc.confirmed_height = confirmed_height;
                        actions.push(Action::Persist);
                    }
                }
                actions.extend(self.pay_if_ready(ctx, true)?);
                Ok(actions)
            }
        }
    }

    /// The HTLC output left the chain (reorg, double spend). Before paying: wait for it again
    /// (`Accepted`; the usual deadlines abort the swap if it never comes back). After paying:
    /// keep watching, the claim is rebroadcast every block and confirms once the HTLC is back;
    /// the height it left at is recorded (`HtlcOutput::gone_since`), and an output still out
    /// past the timeout ends the swap `Lost` ([`BuyerSwap::on_paid_htlc_checked`]).
    fn on_htlc_gone(&mut self, outpoint: OutPoint, ctx: &Context) -> Actions {
        let Some(output) = self.rec.state.htlc_output() else { return Ok(Vec::new()) };
        if output.outpoint != outpoint {
            return Ok(Vec::new());
        }
        let note = Action::Notify(Notification::FundingGone { txid: outpoint.txid });
        match &mut self.rec.state {
            BuyerState::Accepting { htlc, .. } => {
                *htlc = None;
                Ok(vec![Action::Persist, note])
            }
            BuyerState::Funded { terms, .. } => {
                let terms = terms.clone();
                self.verifying_htlc = false;
                self.go(BuyerState::Accepted { terms, announced: None })?;
                Ok(vec![Action::Persist, note])
            }
            BuyerState::Paying { htlc, .. }
            | BuyerState::Claiming { htlc, .. }
            | BuyerState::ClaimBroadcast { htlc, .. }
                if htlc.gone_since.is_none() =>
            {
                htlc.gone_since = Some(ctx.tip_height);
                htlc.spent = None;
                Ok(vec![Action::Persist, note])
            }
            _ => Ok(vec![note]),
        }
    }

    /// After paying, the HTLC output back on chain: it is claimable again (the claim that is
    /// out confirms with it).
    fn on_htlc_back(&mut self, outpoint: OutPoint) -> Actions {
        match &mut self.rec.state {
            BuyerState::Paying { htlc, .. }
            | BuyerState::Claiming { htlc, .. }
            | BuyerState::ClaimBroadcast { htlc, .. }
                if htlc.outpoint == outpoint && htlc.gone_since.is_some() =>
            {
                htlc.gone_since = None;
                Ok(vec![Action::Persist])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The deadline of a paid swap's HTLC: the timeout plus the required confirmations
    /// ([`BuyerSwap::required_confirmations`], the depth the buyer trusted before paying), in
    /// `Claiming` and `ClaimBroadcast`.
    fn gone_deadline(&self) -> Option<(u32, &HtlcOutput)> {
        match &self.rec.state {
            BuyerState::Claiming { terms, htlc, .. }
            | BuyerState::ClaimBroadcast { terms, htlc, .. } => {
                let depth = self.required_confirmations();
                Some((terms.htlc_params.timeout_height.saturating_add(depth), htlc))
            }
            _ => None,
        }
    }

    /// Past the deadline ([`BuyerSwap::gone_deadline`]) with the HTLC neither claimed nor
    /// refunded: the chain is asked at every tick whether the output is still there
    /// ([`Action::CheckHtlc`], answered in [`BuyerSwap::on_paid_htlc_checked`]). Asked rather
    /// than waited for: a node that restarted after the funding left never hears it leave.
    fn check_htlc_past_timeout(&self, ctx: &Context) -> Option<Action> {
        let (deadline, htlc) = self.gone_deadline()?;
        if ctx.tip_height < deadline {
            return None;
        }
        let script_pubkey = self.htlc().ok()?.script_pubkey().to_owned();
        Some(Action::CheckHtlc { outpoint: htlc.outpoint, script_pubkey })
    }

    /// The chain's answer about the HTLC of a paid swap past its deadline. Back (unspent): its
    /// departure is forgotten, the claim that is out confirms with it. Missing: the departure is
    /// recorded (`HtlcOutput::gone_since`) if it was not; missing at a later block than the
    /// one it was recorded at, the funding is gone for good: no block up to the timeout holds
    /// it, deeper than any reorg the swap allows for, and from the timeout on the seller may take
    /// the HTLC back the moment it reappears. Only a seller that double-spent its funding after
    /// being paid gets here (a funding that was only reorganised out is broadcast again by the
    /// seller, and comes back). The swap ends `Lost`, the invoice paid being the loss.
    fn on_paid_htlc_checked(
        &mut self,
        outpoint: OutPoint,
        status: HtlcStatus,
        ctx: &Context,
    ) -> Actions {
        let Some((deadline, htlc)) = self.gone_deadline() else { return Ok(Vec::new()) };
        if htlc.outpoint != outpoint {
            return Ok(Vec::new());
        }
        match status {
            HtlcStatus::Unspent { .. } => self.on_htlc_back(outpoint),
            HtlcStatus::Spent => Ok(Vec::new()), // the spend comes as `Event::HtlcSpent`
            HtlcStatus::Missing => {
                let gone_before = htlc.gone_since.is_some_and(|h| h < ctx.tip_height);
                if !gone_before || ctx.tip_height < deadline {
                    return self.on_htlc_gone(outpoint, ctx);
                }
                let Some(terms) = self.rec.state.terms().cloned() else { return Ok(Vec::new()) };
                let (txid, lost_sat) = (outpoint.txid, terms.invoice_amount_msat / 1000);
                self.go(BuyerState::Lost { terms, spend_txid: txid, funding_gone: true })?;
                self.live.coop = Ephemeral(None);
                Ok(vec![
                    Action::Persist,
                    Action::Notify(Notification::FundingLost { txid, lost_sat }),
                    self.finished(),
                ])
            }
        }
    }

    /// What the Lightning node knows of our payment for the hash: after a restart in `Paying`,
    /// before answering a cooperative refund, and for payment failures the node cannot tie to an
    /// attempt.
    fn on_payment_status(
        &mut self,
        status: PaymentStatus,
        ctx: &Context,
        rng: &mut impl Rng,
    ) -> Actions {
        let status = match status {
            PaymentStatus::Unknown if self.rec.lightning_state_lost => PaymentStatus::Pending,
            other => other,
        };
        match status {
            PaymentStatus::Succeeded { preimage: Some(preimage) } => {
                self.on_payment_succeeded(preimage, ctx, rng)
            }
            PaymentStatus::Succeeded { preimage: None } | PaymentStatus::Pending => {
                // In flight (or done): never a refund signature, never a second attempt.
                let mut actions = self.refuse_pending_refund("a payment for the hash is in flight");
                if let BuyerState::Funded {
                    terms,
                    htlc,
                    payment_attempts,
                    unsent_attempts,
                    attempt,
                    ..
                } = &self.rec.state
                {
                    let to = BuyerState::Paying {
                        terms: terms.clone(),
                        htlc: htlc.clone(),
                        max_cltv: 0,
                        payment_attempts: *payment_attempts,
                        unsent_attempts: *unsent_attempts,
                        attempt: *attempt,
                    };
                    self.go(to)?;
                    actions.insert(0, Action::Persist);
                }
                Ok(actions)
            }
            PaymentStatus::Failed | PaymentStatus::Unknown => {
                if self.current_attempt().is_some() {
                    // Nothing in flight: the current attempt failed (or, unknown to the node,
                    // never went out before a crash).
                    let unsent = status == PaymentStatus::Unknown;
                    return self.on_payment_failed(ctx, "payment not in flight".into(), unsent);
                }
                match self.pending_refund.0.take() {
                    Some(req) => self.answer_refund(req, rng),
                    None => Ok(Vec::new()),
                }
            }
        }
    }

    fn refuse_pending_refund(&mut self, why: &str) -> Vec<Action> {
        if self.pending_refund.0.take().is_none() {
            return Vec::new();
        }
        vec![self.rec.core.send_error(ErrorCode::InvalidState, why)]
    }

    fn on_payment_succeeded(
        &mut self,
        preimage: Preimage,
        ctx: &Context,
        rng: &mut impl Rng,
    ) -> Actions {
        // Whatever the state says, a payment that succeeded leads to the claim: the HTLC is ours
        // (also after a stale failure moved the swap back to `Funded` or `Aborted`).
        let (terms, htlc) = match &self.rec.state {
            BuyerState::Paying { terms, htlc, .. } | BuyerState::Funded { terms, htlc, .. } => {
                (terms.clone(), htlc.clone())
            }
            BuyerState::Aborted { terms: Some(terms), htlc: Some(htlc), .. } => {
                (terms.clone(), htlc.clone())
            }
            _ => return Ok(Vec::new()),
        };
        if preimage.payment_hash() != terms.htlc_params.payment_hash {
            return Err(SwapError::Internal("preimage does not match the payment hash".into()));
        }
        let mut actions = self.refuse_pending_refund("the invoice is paid");
        self.verifying_htlc = false;
        self.go(BuyerState::Claiming {
            terms,
            htlc,
            preimage,
            coop_deadline_secs: 0,
            coop_attempts: 0,
        })?;
        actions.insert(0, Action::Persist);
        actions.push(Action::Notify(Notification::Paid));
        if self.paid_spend().is_some() {
            // Paid after the seller's refund confirmed (a dishonest seller, or a Lightning HTLC
            // that outlived its CLTV budget): nothing to claim while the refund is in the chain.
            // Lost once it is final; should a reorg take it out, the HTLC is claimed after all.
            actions.extend(self.finish_at_depth(ctx)?);
            return Ok(actions);
        }
        actions.extend(self.try_start_claim(ctx, rng));
        Ok(actions)
    }

    /// The actions of `result`, or for an error one [`Notification::Stalled`] (once per
    /// trouble); the swap stays where it is and is tried again at the next tick.
    fn stall_on_error(&mut self, result: Actions) -> Vec<Action> {
        match result {
            Ok(actions) => {
                self.stall_reported = false;
                actions
            }
            Err(e) => {
                if self.stall_reported {
                    return Vec::new();
                }
                self.stall_reported = true;
                vec![Action::Notify(Notification::Stalled { reason: format!("claim: {e}") })]
            }
        }
    }

    /// [`BuyerSwap::start_claim`], where a failure (a claim that cannot be built at this fee
    /// rate) leaves the swap in `Claiming` to be tried again at the next tick, reported once.
    fn try_start_claim(&mut self, ctx: &Context, rng: &mut impl Rng) -> Vec<Action> {
        let result = self.start_claim(ctx, rng);
        if result.is_err() {
            self.live.coop = Ephemeral(None);
        }
        self.stall_on_error(result)
    }

    /// Starts a cooperative claim (or the script path when attempts are used up).
    fn start_claim(&mut self, ctx: &Context, rng: &mut impl Rng) -> Actions {
        let BuyerState::Claiming { terms, htlc, preimage, coop_attempts, .. } = &self.rec.state
        else {
            return Ok(Vec::new());
        };
        if *coop_attempts >= MAX_COOP_ATTEMPTS {
            return self.script_claim(ctx);
        }
        let (terms, output, preimage, attempts) =
            (terms.clone(), htlc.clone(), preimage.clone(), *coop_attempts);
        let rate = self.claim_fee_rate(ctx, KEY_PATH_SPEND_VBYTES, None).unwrap_or(ctx.fee_rate);
        let (tx_hex, buyer_nonce) = self.live.start_coop(
            &self.htlc()?,
            Signer::Claimer,
            output.outpoint,
            terms.quote.htlc_amount_sat,
            self.rec.claim_destination.clone(),
            rate,
            rng,
        )?;
        let request = CoopClaimRequest { tx_hex, buyer_nonce, preimage: Some(preimage.clone()) };
        self.rec.state = BuyerState::Claiming {
            terms,
            htlc: output,
            preimage,
            coop_deadline_secs: ctx.now_secs.saturating_add(COOP_TIMEOUT_SECS),
            coop_attempts: attempts.saturating_add(1),
        };
        let send = self.rec.core.send(Message::CoopClaimRequest(request));
        Ok(vec![Action::Persist, send])
    }

    fn script_claim(&mut self, ctx: &Context) -> Actions {
        let BuyerState::Claiming { .. } = &self.rec.state else {
            return Ok(Vec::new());
        };
        self.live.coop = Ephemeral(None);
        if ctx.batch_claims {
            // Built by the node with the other claims due now ([`crate::claims`]).
            return Ok(vec![Action::QueueClaim]);
        }
        let rate = self.claim_fee_rate(ctx, CLAIM_SCRIPT_PATH_VBYTES, None).unwrap_or(ctx.fee_rate);
        let spend = self.signed_script_claim(rate)?;
        self.broadcast_claim(spend, TxPurpose::ScriptClaim, ctx)
    }

    /// The script-path claim at `rate`, signed.
    fn signed_script_claim(&self, rate: FeeRate) -> Result<SpendTx, SwapError> {
        let (Some(terms), Some(output)) = (self.rec.state.terms(), self.rec.state.htlc_output())
        else {
            return Err(SwapError::Internal("no htlc to claim".into()));
        };
        let preimage = match &self.rec.state {
            BuyerState::Claiming { preimage, .. } | BuyerState::ClaimBroadcast { preimage, .. } => {
                preimage.clone()
            }
            _ => return Err(SwapError::Internal("no preimage to claim with".into())),
        };
        let input = HtlcInput {
            htlc: self.htlc()?,
            outpoint: output.outpoint,
            amount: Amount::from_sat(terms.quote.htlc_amount_sat),
            path: SpendPath::ClaimScript,
        };
        let mut spend = SpendTx::build(vec![input], self.rec.claim_destination.clone(), rate)
            .map_err(internal)?;
        let claim_key = *self.keys().claim();
        spend.sign_claim_script(0, &claim_key, &preimage).map_err(internal)?;
        Ok(spend)
    }

    fn broadcast_claim(&mut self, spend: SpendTx, purpose: TxPurpose, ctx: &Context) -> Actions {
        let BuyerState::Claiming { .. } = &self.rec.state else {
            return Ok(Vec::new());
        };
        let fee_sat = spend.fee().to_sat();
        let tx = spend.finalize().map_err(internal)?;
        self.enter_claim_broadcast(&tx, purpose, None, ctx)?;
        Ok(self.live.broadcast(tx, purpose, fee_sat, ctx.tip_height))
    }

    /// `Claiming` -> `ClaimBroadcast`, with `tx` the claim that is out.
    fn enter_claim_broadcast(
        &mut self,
        tx: &Transaction,
        purpose: TxPurpose,
        batch_inputs_sat: Option<u64>,
        ctx: &Context,
    ) -> Result<(), SwapError> {
        let BuyerState::Claiming { terms, htlc, preimage, .. } = &self.rec.state else {
            return Err(internal("no claim in progress"));
        };
        let (terms, htlc, preimage) = (terms.clone(), htlc.clone(), preimage.clone());
        self.go(BuyerState::ClaimBroadcast {
            terms,
            htlc,
            preimage,
            claim_tx: tx.clone(),
            purpose,
            sent_height: ctx.tip_height,
            batch_inputs_sat,
        })
    }

    /// In `ClaimBroadcast`, at a tick: when a block came without our claim and the fee rule
    /// asks for more ([`crate::fees`]), a script-path claim paying more replaces it (the
    /// cooperative one too: a new MuSig2 round would wait on the seller when time is short).
    /// Persisted before it is broadcast. `None`: keep the claim that is out.
    fn bump_claim(&mut self, ctx: &Context) -> Option<Actions> {
        let rate = self.wanted_bump(ctx)?;
        if ctx.batch_claims {
            // Replaced by the node's next claim batch, with the claims that are out with ours.
            return Some(Ok(vec![Action::QueueClaim]));
        }
        let BuyerState::ClaimBroadcast { claim_tx, .. } = &self.rec.state else {
            return None;
        };
        let replaces = claim_tx.compute_txid();
        let result = self.signed_script_claim(rate).and_then(|spend| {
            let fee_sat = spend.fee().to_sat();
            let tx = spend.finalize().map_err(internal)?;
            if let BuyerState::ClaimBroadcast { claim_tx, purpose, sent_height, .. } =
                &mut self.rec.state
            {
                *claim_tx = tx.clone();
                *purpose = TxPurpose::ScriptClaim;
                *sent_height = ctx.tip_height;
            }
            Ok(self.live.replace(tx, replaces, TxPurpose::ScriptClaim, fee_sat, ctx.tip_height))
        });
        Some(result)
    }

    /// In `ClaimBroadcast`: the rate a replacement of the claim that is out must pay now, by the
    /// fee rule ([`crate::fees`]); `None`: keep it. For a claim of several swaps, the rate and
    /// size are the whole claim's, the value this swap's HTLC and its share of the size.
    fn wanted_bump(&self, ctx: &Context) -> Option<FeeRate> {
        let BuyerState::ClaimBroadcast { terms, claim_tx, sent_height, batch_inputs_sat, .. } =
            &self.rec.state
        else {
            return None;
        };
        let value_sat = terms.quote.htlc_amount_sat;
        let (spent_sat, inputs) = match batch_inputs_sat {
            Some(total) => (*total, claim_tx.input.len().max(1) as u64),
            None => (value_sat, 1),
        };
        let out = outstanding(claim_tx, spent_sat, *sent_height, ctx.tip_height);
        let vsize = (claim_tx.vsize() as u64).div_ceil(inputs).max(CLAIM_SCRIPT_PATH_VBYTES / 2);
        self.claim_fee_rate(
            ctx,
            if inputs == 1 { CLAIM_SCRIPT_PATH_VBYTES } else { vsize },
            Some(out),
        )
    }

    /// What the node needs to claim this swap's HTLC through the claim leaf in a batch
    /// ([`crate::claims`]): in `Claiming` and `ClaimBroadcast`, `None` otherwise.
    pub fn claim_member(&self, ctx: &Context) -> Option<ClaimMember> {
        if self.paid_spend().is_some() {
            return None; // claimed (or refunded) in the chain: nothing to build
        }
        let (terms, htlc, out) = match &self.rec.state {
            BuyerState::Claiming { terms, htlc, .. } => (terms, htlc, None),
            BuyerState::ClaimBroadcast { terms, htlc, claim_tx, batch_inputs_sat, .. } => {
                let inputs_sat = batch_inputs_sat.unwrap_or(terms.quote.htlc_amount_sat);
                (terms, htlc, Some(ClaimOut { tx: claim_tx.clone(), inputs_sat }))
            }
            _ => return None,
        };
        let input = HtlcInput {
            htlc: self.htlc().ok()?,
            outpoint: htlc.outpoint,
            amount: Amount::from_sat(terms.quote.htlc_amount_sat),
            path: SpendPath::ClaimScript,
        };
        Some(ClaimMember {
            swap_id: self.rec.core.swap_id,
            input,
            destination: self.rec.claim_destination.clone(),
            deadline_height: terms
                .htlc_params
                .timeout_height
                .saturating_sub(DEADLINE_SAFETY_BLOCKS),
            target: self.rec.policy.claim_conf_target.unwrap_or(ctx.fees.claim_target),
            cap: FeeRate::from_sat_per_vb(self.rec.policy.max_claim_fee_rate_sat_vb)
                .unwrap_or(FeeRate::MAX),
            wanted: self.wanted_bump(ctx),
            out,
        })
    }

    /// Signs input `index` of a claim the node laid out ([`crate::claims::plan_claims`]), which
    /// must spend this swap's HTLC through the claim leaf.
    ///
    /// # Errors
    /// Not in `Claiming` or `ClaimBroadcast`, or input `index` is not this swap's HTLC.
    pub fn sign_batch_claim(&self, spend: &mut SpendTx, index: usize) -> Result<(), SwapError> {
        let (Some(output), Some(preimage)) = (self.rec.state.htlc_output(), self.preimage()) else {
            return Err(SwapError::Internal("no htlc to claim".into()));
        };
        let txin = spend.tx().input.get(index).ok_or_else(|| internal("no such input"))?;
        if txin.previous_output != output.outpoint {
            return Err(internal("the input is not this swap's htlc"));
        }
        spend.sign_claim_script(index, self.keys().claim(), preimage).map_err(internal)
    }

    /// [`Event::UserScriptSpend`]: the claim leaf now, without waiting on the seller's partial
    /// signature; a claim that is out goes out again.
    fn on_user_claim(&mut self, ctx: &Context) -> Actions {
        match &mut self.rec.state {
            BuyerState::Claiming { coop_attempts, .. } => {
                *coop_attempts = (*coop_attempts).max(MAX_COOP_ATTEMPTS);
                let mut actions = vec![
                    Action::Persist,
                    Action::Notify(Notification::CooperationFailed {
                        reason: "the user asked for the claim leaf".into(),
                    }),
                ];
                actions.extend(self.script_claim(ctx)?);
                Ok(actions)
            }
            BuyerState::ClaimBroadcast { claim_tx, purpose, .. } => {
                Ok(vec![Action::Broadcast { tx: claim_tx.clone(), purpose: *purpose }])
            }
            BuyerState::Claimed { .. } | BuyerState::Lost { .. } => {
                Err(SwapError::NotNow { reason: "the swap is over".into() })
            }
            _ => Err(SwapError::NotNow {
                reason: "nothing to claim: the invoice is not paid (abort the swap instead)".into(),
            }),
        }
    }

    /// The txid of the claim that is out (`ClaimBroadcast`).
    pub fn claim_txid(&self) -> Option<Txid> {
        match &self.rec.state {
            BuyerState::ClaimBroadcast { claim_tx, .. } => Some(claim_tx.compute_txid()),
            _ => None,
        }
    }

    fn preimage(&self) -> Option<&Preimage> {
        match &self.rec.state {
            BuyerState::Claiming { preimage, .. } | BuyerState::ClaimBroadcast { preimage, .. } => {
                Some(preimage)
            }
            _ => None,
        }
    }

    /// [`Event::ClaimBuilt`]: a claim through the claim leaf that spends this swap's HTLC
    /// (alone or with others) becomes the claim that is out. Persisted; the node broadcasts it
    /// once every swap of the batch has taken it.
    fn on_claim_built(&mut self, tx: Transaction, inputs_sat: u64, ctx: &Context) -> Actions {
        let Some(output) = self.rec.state.htlc_output().cloned() else { return Ok(Vec::new()) };
        if self.htlc()?.spend_path(&tx, output.outpoint) != Some(HtlcSpendPath::ClaimLeaf) {
            return Err(SwapError::Internal(
                "the claim does not spend our htlc's claim leaf".into(),
            ));
        }
        let inputs = tx.input.len() as u64;
        let out_sat: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        let fee_share = inputs_sat.saturating_sub(out_sat).div_ceil(inputs.max(1));
        let batch_inputs_sat = (inputs > 1).then_some(inputs_sat);
        let purpose = TxPurpose::ScriptClaim;
        self.live.coop = Ephemeral(None);
        let note = match &mut self.rec.state {
            BuyerState::ClaimBroadcast {
                claim_tx,
                purpose: p,
                sent_height,
                batch_inputs_sat: b,
                ..
            } => {
                let replaces = claim_tx.compute_txid();
                if replaces == tx.compute_txid() {
                    return Ok(Vec::new());
                }
                *claim_tx = tx.clone();
                *p = purpose;
                *sent_height = ctx.tip_height;
                *b = batch_inputs_sat;
                Notification::Replaced {
                    txid: tx.compute_txid(),
                    replaces,
                    purpose,
                    fee_sat: fee_share,
                    vsize: tx.vsize() as u64,
                }
            }
            BuyerState::Claiming { .. } => {
                self.enter_claim_broadcast(&tx, purpose, batch_inputs_sat, ctx)?;
                Notification::broadcast(&tx, purpose, fee_share)
            }
            _ => return Ok(Vec::new()),
        };
        self.live.broadcast_height = ctx.tip_height;
        Ok(vec![Action::Persist, Action::Notify(note)])
    }

    /// A `coop_refund_request`: never after paying; before, only once the Lightning node says no
    /// payment for the hash can still succeed (the answer to [`Action::CheckPayment`] signs, in
    /// [`BuyerSwap::answer_refund`]).
    fn on_coop_refund_request(&mut self, req: CoopRefundRequest) -> Actions {
        if self.rec.state.has_paid() {
            let send =
                self.rec.core.send_error(ErrorCode::InvalidState, "payment in flight or done");
            return Ok(vec![send]);
        }
        let Some(payment_hash) = self.payment_hash() else {
            // Aborted before accepting: there are no agreed terms to sign for.
            return Ok(vec![self.no_refund_to_sign()]);
        };
        self.pending_refund = Ephemeral(Some(req));
        Ok(vec![Action::CheckPayment { payment_hash }])
    }

    /// The `error` answering a `coop_refund_request` for which the buyer knows no HTLC (it
    /// aborted before accepting or before the funding was announced): the seller stops asking.
    fn no_refund_to_sign(&mut self) -> Action {
        self.rec.core.send_error(ErrorCode::InvalidState, "no agreed htlc to co-sign a refund for")
    }

    /// Signs the seller's cooperative refund: the node said no payment for the hash is in flight
    /// or done. Aborts first (persisted before the answer): signing a refund means never paying.
    fn answer_refund(&mut self, req: CoopRefundRequest, rng: &mut impl Rng) -> Actions {
        if self.rec.state.has_paid() {
            return Ok(Vec::new());
        }
        let announced = match &self.rec.state {
            BuyerState::Accepted { announced: Some(o), .. } => Some(HtlcOutput {
                outpoint: *o,
                confirmed_height: None,
                gone_since: None,
                spent: None,
            }),
            _ => None,
        };
        // Loop in, before the invoice (`Accepting`, or aborted there): the HTLC may have been
        // locked without our seeing it (a late lock after our `funding_timeout`). The refund
        // then names it: it spends an output of the HTLC's script, whose key path we co-sign,
        // for the agreed value (the signature commits to both; another output or value makes
        // it invalid). We never pay in these states, so the refund takes nothing from us.
        let early = self.rec.state.offered().and_then(|_| {
            let tx = req.tx().ok()?;
            let input = tx.input.first().filter(|_| tx.input.len() == 1)?;
            Some(HtlcOutput {
                outpoint: input.previous_output,
                confirmed_height: None,
                gone_since: None,
                spent: None,
            })
        });
        let (Some(output), Some(quote)) = (
            self.rec.state.htlc_output().cloned().or(announced).or(early),
            self.rec.state.quote().copied(),
        ) else {
            return Ok(vec![self.no_refund_to_sign()]);
        };
        let htlc = self.htlc()?;
        let answer = req.tx().map_err(|e| e.to_string()).and_then(|tx| {
            let (amount_sat, outpoint) = (quote.htlc_amount_sat, output.outpoint);
            let who = Signer::Claimer;
            self.live.cosign(&htlc, who, tx, outpoint, amount_sat, &req.seller_nonce, "refund", rng)
        });
        let mut actions = Vec::new();
        if matches!(self.rec.state, BuyerState::Aborted { .. }) {
            // Our last message again before the answer: were it lost (our `swap_abort`), the
            // answer would wait behind it in the seller's in-order inbox forever. The seller
            // drops a message it has seen.
            actions.extend(self.rec.core.outbox.sent.last().cloned().map(Action::Send));
        } else {
            let why = format!("{} refunds", self.peer_role());
            actions.extend(self.abort(AbortReason::UserRequested, None, Some(why))?);
        }
        let send = match answer {
            Ok((buyer_nonce, partial_sig)) => {
                let response = CoopRefundResponse { buyer_nonce, partial_sig };
                self.rec.core.send(Message::CoopRefundResponse(response))
            }
            Err(reason) => self.rec.core.send_error(ErrorCode::InvalidParams, reason),
        };
        actions.push(Action::Persist);
        actions.push(send);
        Ok(actions)
    }

    fn on_htlc_spent(
        &mut self,
        tx: Transaction,
        confirmed_height: Option<u32>,
        ctx: &Context,
    ) -> Actions {
        let Some(output) = self.rec.state.htlc_output().cloned() else { return Ok(Vec::new()) };
        // The witness names the path: a claim leaf spend is the buyer's claim, a refund leaf
        // spend the seller's refund. A key-path spend is one the buyer signed: its claim (paying
        // the claim destination) or a cooperative refund it co-signed.
        let destination = &self.rec.claim_destination;
        let Some(ours) =
            spend_is_ours(&self.htlc()?, &tx, output.outpoint, HtlcSpendPath::ClaimLeaf, |tx| {
                tx.output.iter().any(|o| o.script_pubkey == *destination)
            })
        else {
            return Ok(Vec::new());
        };
        let txid = tx.compute_txid();
        match &self.rec.state {
            BuyerState::Claiming { .. } | BuyerState::ClaimBroadcast { .. } => {
                self.on_paid_htlc_spent(&tx, ours, confirmed_height, ctx)
            }
            BuyerState::Funded { .. } => {
                self.abort(AbortReason::ChecksFailed, Some(BuyerCheckError::HtlcSpent), None)
            }
            BuyerState::Paying { terms, .. } if !ours && confirmed_height.is_some() => {
                // Refunded while we wait for a payment whose fate is unknown. Lost only if it
                // succeeded: the payment's outcome decides ([`Self::on_payment_failed`],
                // [`Self::on_payment_succeeded`]). A restored node whose Lightning state is gone
                // will never learn it, and calls it lost.
                if self.rec.lightning_state_lost {
                    let terms = terms.clone();
                    self.go(BuyerState::Lost { terms, spend_txid: txid, funding_gone: false })?;
                    return Ok(vec![Action::Persist, self.finished()]);
                }
                let spend =
                    confirmed_height.map(|height| ConfirmedSpend { txid, height, ours: false });
                match &mut self.rec.state {
                    BuyerState::Paying { htlc, .. } if htlc.spent != spend => {
                        htlc.spent = spend;
                        Ok(vec![Action::Persist])
                    }
                    _ => Ok(Vec::new()),
                }
            }
            BuyerState::Paying { .. } if confirmed_height.is_none() => {
                // The refund recorded as confirmed is back in the mempool (a reorg): forgotten
                // until it confirms again.
                Ok(self.forget_spend(Some(txid), ctx, false))
            }
            _ => Ok(vec![]),
        }
    }

    /// After paying (`Claiming`, `ClaimBroadcast`): a spend of the HTLC as the chain shows it
    /// (spec `02-swap-flow.md`, "Final at depth"). Confirmed, it is recorded
    /// ([`HtlcOutput::spent`]; ours becomes the claim that is out, to go out again should it
    /// leave the chain) and the swap ends `Claimed` (ours) or `Lost` (the seller's refund) once
    /// it is [`ANTI_REORG_DEPTH`](crate::swap::ANTI_REORG_DEPTH) deep. In the mempool, a spend recorded as confirmed left the
    /// chain (a reorg): it is forgotten.
    fn on_paid_htlc_spent(
        &mut self,
        tx: &Transaction,
        ours: bool,
        confirmed_height: Option<u32>,
        ctx: &Context,
    ) -> Actions {
        let Some(height) = confirmed_height else {
            return Ok(self.forget_spend(None, ctx, false));
        };
        let txid = tx.compute_txid();
        let mut changed = false;
        if ours {
            changed = self.adopt_claim(tx, ctx)?;
        }
        let spend = ConfirmedSpend { txid, height, ours };
        if let Some(htlc) = self.paid_htlc_mut() {
            if htlc.spent != Some(spend) {
                htlc.spent = Some(spend);
                htlc.gone_since = None;
                changed = true;
            }
        }
        self.live.coop = Ephemeral(None);
        let mut actions = if changed { vec![Action::Persist] } else { Vec::new() };
        actions.extend(self.finish_at_depth(ctx)?);
        Ok(actions)
    }

    /// Our claim `tx`, seen confirmed, becomes the claim that is out: from `Claiming` (a claim
    /// broadcast before a restart) to `ClaimBroadcast`; in `ClaimBroadcast`, an earlier version
    /// than the latest. Whether the state changed.
    fn adopt_claim(&mut self, tx: &Transaction, ctx: &Context) -> Result<bool, SwapError> {
        let Some(output) = self.rec.state.htlc_output() else { return Ok(false) };
        let purpose = match self.htlc()?.spend_path(tx, output.outpoint) {
            Some(HtlcSpendPath::ClaimLeaf) => TxPurpose::ScriptClaim,
            _ => TxPurpose::CooperativeClaim,
        };
        let txid = tx.compute_txid();
        match &mut self.rec.state {
            BuyerState::Claiming { .. } => {
                self.enter_claim_broadcast(tx, purpose, None, ctx)?;
                Ok(true)
            }
            BuyerState::ClaimBroadcast { claim_tx, purpose: p, batch_inputs_sat, .. }
                if claim_tx.compute_txid() != txid =>
            {
                if tx.input.len() != claim_tx.input.len() || tx.input.len() < 2 {
                    *batch_inputs_sat = None;
                }
                *claim_tx = tx.clone();
                *p = purpose;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The HTLC of a swap that paid or is paying (`Paying`, `Claiming`, `ClaimBroadcast`): where
    /// a confirmed spend of it is recorded until it is final.
    fn paid_htlc_mut(&mut self) -> Option<&mut HtlcOutput> {
        match &mut self.rec.state {
            BuyerState::Paying { htlc, .. }
            | BuyerState::Claiming { htlc, .. }
            | BuyerState::ClaimBroadcast { htlc, .. } => Some(htlc),
            _ => None,
        }
    }

    /// The spend of the HTLC recorded as confirmed (`Claiming`, `ClaimBroadcast`).
    fn paid_spend(&self) -> Option<ConfirmedSpend> {
        match &self.rec.state {
            BuyerState::Claiming { htlc, .. } | BuyerState::ClaimBroadcast { htlc, .. } => {
                htlc.spent
            }
            _ => None,
        }
    }

    /// The recorded spend (`txid`, or any with `None`) left the chain: forgotten. The claim that
    /// is out counts as sent now (the fee rule replaces it if a block comes without it) and,
    /// with `rebroadcast`, goes out again at once (it was dropped with its block).
    fn forget_spend(
        &mut self,
        txid: Option<Txid>,
        ctx: &Context,
        rebroadcast: bool,
    ) -> Vec<Action> {
        let Some(htlc) = self.paid_htlc_mut() else { return Vec::new() };
        match htlc.spent {
            Some(s) if txid.is_none_or(|t| t == s.txid) => htlc.spent = None,
            _ => return Vec::new(),
        }
        let mut actions = vec![Action::Persist];
        if let BuyerState::ClaimBroadcast { claim_tx, purpose, sent_height, .. } =
            &mut self.rec.state
        {
            *sent_height = ctx.tip_height;
            self.live.broadcast_height = ctx.tip_height;
            if rebroadcast {
                actions.push(Action::Broadcast { tx: claim_tx.clone(), purpose: *purpose });
            }
        }
        actions
    }

    /// [`Event::HtlcSpendGone`]: the recorded spend left the chain and the mempool.
    fn on_spend_gone(&mut self, outpoint: OutPoint, txid: Txid, ctx: &Context) -> Actions {
        if self.rec.state.htlc_output().is_none_or(|h| h.outpoint != outpoint) {
            return Ok(Vec::new());
        }
        Ok(self.forget_spend(Some(txid), ctx, true))
    }

    /// `Claimed` (our claim) or `Lost` (the seller's refund) once the recorded spend is
    /// [`ANTI_REORG_DEPTH`](crate::swap::ANTI_REORG_DEPTH) deep; nothing before.
    fn finish_at_depth(&mut self, ctx: &Context) -> Actions {
        let Some(spend) = self.paid_spend().filter(|s| s.is_final(ctx.tip_height)) else {
            return Ok(Vec::new());
        };
        let Some(terms) = self.rec.state.terms().cloned() else { return Ok(Vec::new()) };
        self.live.coop = Ephemeral(None);
        if spend.ours {
            let received_sat = match &self.rec.state {
                BuyerState::ClaimBroadcast { claim_tx, .. } => self.received_by(claim_tx),
                _ => 0,
            };
            self.go(BuyerState::Claimed { terms, claim_txid: spend.txid, received_sat })?;
        } else {
            self.go(BuyerState::Lost { terms, spend_txid: spend.txid, funding_gone: false })?;
        }
        Ok(vec![Action::Persist, self.finished()])
    }

    /// What our claim `tx` brought this swap: what it pays our destination, or for a claim of
    /// several swaps, our HTLC less an equal share of its fee.
    fn received_by(&self, tx: &Transaction) -> u64 {
        if let BuyerState::ClaimBroadcast {
            terms, claim_tx, batch_inputs_sat: Some(total), ..
        } = &self.rec.state
        {
            if claim_tx.compute_txid() == tx.compute_txid() {
                let out_sat: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
                let share = total.saturating_sub(out_sat).div_ceil(tx.input.len().max(1) as u64);
                return terms.quote.htlc_amount_sat.saturating_sub(share);
            }
        }
        tx.output
            .iter()
            .filter(|o| o.script_pubkey == self.rec.claim_destination)
            .map(|o| o.value.to_sat())
            .sum()
    }

    fn handle_tick(&mut self, ctx: &Context, rng: &mut impl Rng) -> Actions {
        if self.paid_spend().is_some() {
            // A spend of the HTLC is in the chain: nothing to send, broadcast or replace; the
            // swap ends once it is final.
            return self.finish_at_depth(ctx);
        }
        let check = self.check_htlc_past_timeout(ctx);
        let mut actions = self.tick_state(ctx, rng)?;
        actions.extend(check);
        Ok(actions)
    }

    fn tick_state(&mut self, ctx: &Context, rng: &mut impl Rng) -> Actions {
        match &self.rec.state {
            BuyerState::Requested
                if ctx.now_secs
                    >= self
                        .rec
                        .core
                        .created_at
                        .saturating_add(self.rec.policy.request_timeout_secs) =>
            {
                let why = "no swap_accept in time";
                self.abort(AbortReason::FundingTimeout, None, Some(why.into()))
            }
            BuyerState::Accepting { offered, funding_deadline_secs, .. } => {
                // Loop in: a taker that never funds costs us a message, not a wait without end.
                let timeout = offered.htlc_params.timeout_height;
                let too_late = ctx
                    .tip_height
                    .saturating_add(self.claim_margin())
                    .saturating_add(MIN_CLTV_BUDGET_BLOCKS)
                    >= timeout;
                if too_late || ctx.now_secs >= *funding_deadline_secs {
                    let why = if too_late {
                        "too few blocks left before the timeout to pay safely"
                    } else {
                        "no swap_funded in time"
                    };
                    return self.abort(AbortReason::FundingTimeout, None, Some(why.into()));
                }
                Ok(Vec::new())
            }
            BuyerState::Accepted { terms, .. } => {
                if ctx.now_secs >= terms.invoice_expires_at {
                    return self.abort(
                        AbortReason::FundingTimeout,
                        Some(BuyerCheckError::InvoiceExpired),
                        None,
                    );
                }
                let last = terms
                    .htlc_params
                    .timeout_height
                    .saturating_sub(self.claim_margin())
                    .saturating_sub(MIN_CLTV_BUDGET_BLOCKS.max(terms.min_final_cltv));
                if ctx.tip_height > last {
                    return self.abort(AbortReason::TimeoutTooClose, None, None);
                }
                Ok(Vec::new())
            }
            BuyerState::Funded { .. } => self.maybe_pay(ctx),
            BuyerState::Claiming { coop_deadline_secs, .. } => {
                let deadline = *coop_deadline_secs;
                if self.live.coop.0.is_none() {
                    return Ok(self.try_start_claim(ctx, rng));
                }
                if ctx.now_secs >= deadline {
                    let mut actions = vec![Action::Notify(Notification::CooperationFailed {
                        reason: "no partial signature from the seller in time".into(),
                    })];
                    if let BuyerState::Claiming { coop_attempts, .. } = &mut self.rec.state {
                        // The script path from now on (asked again at each tick until built).
                        *coop_attempts = (*coop_attempts).max(MAX_COOP_ATTEMPTS);
                    }
                    let claim = self.script_claim(ctx);
                    actions.extend(self.stall_on_error(claim));
                    return Ok(actions);
                }
                Ok(Vec::new())
            }
            BuyerState::ClaimBroadcast { claim_tx, purpose, .. } => {
                let (claim_tx, purpose) = (claim_tx.clone(), *purpose);
                match self.bump_claim(ctx) {
                    Some(Ok(bumped)) => return Ok(bumped),
                    Some(Err(e)) => {
                        // The claim that is out stays out (rebroadcast below).
                        let mut actions = self.stall_on_error(Err(e));
                        actions.extend(self.live.rebroadcast(ctx.tip_height, &claim_tx, purpose));
                        return Ok(actions);
                    }
                    None => {}
                }
                // Once per block until it confirms: a dropped claim, or one whose HTLC was
                // reorganised out and came back, goes out again.
                Ok(self.live.rebroadcast(ctx.tip_height, &claim_tx, purpose))
            }
            _ => Ok(Vec::new()),
        }
    }
}
