//! The locker's side of a swap (spec `02-swap-flow.md`, "Seller" and "Loop in: the locker as
//! taker"): the party that makes the preimage, issues the invoice, locks the HTLC and refunds it
//! after the timeout. In a loop out the locker is the maker (the seller answering a
//! `swap_request`, [`SellerSwap::from_request`]); in a loop in it is the taker
//! ([`SellerSwap::start_loop_in`]: it sends the request and checks the maker's `swap_accept`).
//! From the funding on both run the same states.
//!
//! ```text
//! (loop in) Requested --.
//!                        v
//! (loop out)      AwaitingInvoice -> Accepted (-> prepay received) -> Funded -> Paid (point of no return) -> Claimed
//!                        |               |          |-> RefundingCooperatively -> Refunding -> Refunded
//!                        |               |          '-> Refunding (timeout) ----------------^
//!                        '---------------'-> Aborted
//! ```

use core::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use serde::{Deserialize, Serialize};

use crate::checks::{
    admit_request, check_htlc_amount, check_htlc_script, check_quote, check_timeout, own_quote,
    Asked,
};
use crate::fees::{spend_fee_rate, Outstanding, SpendFee};
use crate::htlc::{Htlc, HtlcParams, HtlcSpendPath};
use crate::keys::SwapKeys;
use crate::messages::{
    AbortReason, CoopClaimRequest, CoopClaimResponse, CoopRefundRequest, ErrorCode, ErrorMessage,
    LoopInAccept, LoopInRequest, Message, Offer, SwapAccept, SwapFunded, SwapRequest,
    MAX_TEXT_CHARS, MAX_TIMEOUT_DELTA, MIN_CLTV_BUDGET_BLOCKS,
};
use crate::musig::Signer;
use crate::shared::{
    core_accessors, internal, outstanding, spend_is_ours, swap_api, variant_field, Actions,
    CoreRecord, Ephemeral, Live, Rng,
};
use crate::spend::{KEY_PATH_SPEND_VBYTES, REFUND_SCRIPT_PATH_VBYTES};
use crate::swap::{
    Action, ConfirmedSpend, Context, Event, Notification, PaymentStatus, StateKind, SwapError,
    TxPurpose, COOP_TIMEOUT_SECS, REQUEST_TIMEOUT_SECS, SECS_PER_BLOCK,
};
use crate::terms::Quote;
use crate::types::{PaymentHash, SwapDirection, SwapId};

/// Most co-signing answers a seller gives per swap (each with a fresh nonce).
pub const MAX_COOP_SIGNATURES: u32 = 8;

/// Cooperative refunds a seller asks of an aborted buyer before it waits for the timeout.
pub const MAX_COOP_REFUND_ATTEMPTS: u32 = 10;

/// Seconds between two cooperative refund requests.
pub const COOP_REFUND_RETRY_SECS: u64 = 60;

/// Seconds after the invoice expired, unpaid, at which the seller asks the buyer for a
/// cooperative refund on its own (a payment sent just before the expiry has had time to arrive).
pub const EXPIRED_INVOICE_REFUND_SECS: u64 = 120;

/// Seconds between two looks at a claim that has not settled yet (`Paid`).
pub const CLAIM_CHECK_SECS: u64 = 30;

/// Seconds a prepay invoice stays payable (at most the main invoice's expiry): the buyer pays it
/// right after `swap_accept`, so a few minutes cover a route found on the second try.
pub const PREPAY_EXPIRY_SECS: u32 = 600;

/// The prepay of a swap whose offer asks for one (spec `02-swap-flow.md`, "Prepay"): a plain
/// invoice the seller's Lightning node settles at once; the seller funds only once it is paid
/// and keeps it whatever happens next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    /// The BOLT11 prepay invoice.
    pub invoice: String,
    /// Its payment hash (the Lightning node's, not the swap's).
    pub payment_hash: PaymentHash,
    /// When it expires (unix seconds): unpaid by then, the swap ends with nothing locked.
    pub expires_at_secs: u64,
    /// Received.
    pub paid: bool,
}

/// Where the HTLC is on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funding {
    /// The HTLC outpoint.
    pub outpoint: OutPoint,
    /// The funding transaction.
    pub tx: Transaction,
    /// Height of its block, once confirmed.
    pub confirmed_height: Option<u32>,
    /// A spend of the HTLC seen confirmed, not yet
    /// [`ANTI_REORG_DEPTH`](crate::swap::ANTI_REORG_DEPTH) deep (the claimer's claim, or our
    /// refund). The swap ends `Claimed` or `Refunded` once it is; forgotten when it leaves the
    /// chain (spec `02-swap-flow.md`, "Final at depth").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<ConfirmedSpend>,
}

/// The seller's (the locker's) states. Each carries what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SellerState {
    /// Loop in, as taker: `swap_request` sent; waiting for the maker's `swap_accept`. Nothing is
    /// locked and there is no HTLC yet.
    Requested,
    /// Request accepted (loop out: we accepted the buyer's; loop in: the maker's `swap_accept`
    /// passed our checks); the invoice is being created.
    AwaitingInvoice,
    /// The invoice exists (loop out: `swap_accept` sent); the funding transaction is being built
    /// (with a prepay: once it is received).
    Accepted {
        /// The BOLT11 invoice.
        invoice: String,
        /// The prepay, when the offer asks for one.
        #[serde(default)]
        prepay: Option<Prepay>,
    },
    /// The HTLC is funded; waiting for the payment.
    Funded {
        /// The invoice.
        invoice: String,
        /// The HTLC.
        funding: Funding,
        /// Cooperative refunds asked of the buyer so far (more than 0: the swap is being
        /// refunded; asked again every [`COOP_REFUND_RETRY_SECS`] up to
        /// [`MAX_COOP_REFUND_ATTEMPTS`] times, then the refund leaf at the timeout).
        #[serde(default)]
        refund_attempts: u32,
        /// When the next cooperative refund is asked (unix seconds).
        #[serde(default)]
        refund_retry_at_secs: u64,
    },
    /// The payment is being claimed: the preimage is out. Point of no return.
    Paid {
        /// The HTLC.
        funding: Funding,
        /// What was received.
        amount_msat: u64,
        /// Co-signatures given.
        coop_signatures: u32,
        /// The invoice (back to `Funded` with it if the claim never settles).
        #[serde(default)]
        invoice: String,
        /// The Lightning node reported the claim settled (`PaymentClaimed`): only then (or for a
        /// request that carries the preimage) does the seller co-sign a key-path claim.
        #[serde(default)]
        claim_settled: bool,
    },
    /// The buyer claimed the HTLC (confirmed).
    Claimed {
        /// The HTLC.
        funding: Funding,
        /// The buyer's claim.
        claim_txid: Txid,
        /// What was received.
        amount_msat: u64,
    },
    /// A cooperative refund was asked of the buyer.
    RefundingCooperatively {
        /// The invoice (still failing any payment).
        invoice: String,
        /// The HTLC.
        funding: Funding,
        /// Until when we wait for the buyer's partial signature.
        deadline_secs: u64,
        /// Cooperative refunds asked so far, this one included.
        #[serde(default)]
        attempts: u32,
    },
    /// A refund is broadcast.
    Refunding {
        /// The HTLC.
        funding: Funding,
        /// The refund (the latest replacement).
        refund_tx: Transaction,
        /// Which path.
        purpose: TxPurpose,
        /// The tip height when this version went out (a replacement is considered once a block
        /// came without it).
        #[serde(default)]
        sent_height: u32,
    },
    /// The refund confirmed.
    Refunded {
        /// The HTLC.
        funding: Funding,
        /// The refund.
        refund_txid: Txid,
    },
    /// Ended before any money moved.
    Aborted {
        /// Why.
        reason: AbortReason,
        /// Details.
        message: Option<String>,
        /// Loop in: the check of the maker's `swap_accept` that failed, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<LockerCheckError>,
    },
}

impl SellerState {
    fn funding(&self) -> Option<&Funding> {
        variant_field!(
            self,
            SellerState,
            funding,
            [Funded, Paid, Claimed, RefundingCooperatively, Refunding, Refunded]
        )
    }

    fn funding_mut(&mut self) -> Option<&mut Funding> {
        variant_field!(
            self,
            SellerState,
            funding,
            [Funded, Paid, Claimed, RefundingCooperatively, Refunding, Refunded]
        )
    }
}

pub use crate::transitions::SELLER_TRANSITIONS;

/// The seller's policy for a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerPolicy {
    /// Answer `coop_claim_request`s (switched off only to test the script path).
    pub cooperative_claims: bool,
}

impl Default for SellerPolicy {
    fn default() -> Self {
        Self { cooperative_claims: true }
    }
}

/// The taker's limits when it locks (a loop in, [`SellerSwap::start_loop_in`]): what it accepts
/// of a maker's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopInLimits {
    /// Most the taker pays as `swap_fee_sat + funding_fee_sat` (taken from the invoice the maker
    /// pays).
    pub max_total_fee_sat: u64,
    /// Most blocks from the tip to `timeout_height` the taker accepts: how long its coins stay
    /// locked, at worst, when the maker never pays.
    pub max_timeout_delta: u32,
    /// Confirmation target (blocks) of this swap's funding transaction; `None`: the node's
    /// funding target ([`Action::FundHtlc::conf_target`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding_conf_target: Option<u16>,
    /// How long the taker waits for the maker's `swap_accept` (from the swap's creation) before
    /// it gives up ([`REQUEST_TIMEOUT_SECS`] by default).
    #[serde(
        default = "crate::swap::default_request_timeout",
        skip_serializing_if = "crate::swap::is_default_request_timeout"
    )]
    pub request_timeout_secs: u64,
}

impl Default for LoopInLimits {
    fn default() -> Self {
        Self {
            max_total_fee_sat: u64::MAX,
            max_timeout_delta: MAX_TIMEOUT_DELTA,
            funding_conf_target: None,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
        }
    }
}

/// The request a seller's swap was made from. Stored as the request itself: its `direction`
/// tells which (records of a loop out read as before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum SellerRequest {
    /// Loop out, as maker: the buyer's `swap_request` we answered.
    LoopOut(SwapRequest),
    /// Loop in, as taker: the `swap_request` we sent to the maker.
    LoopIn(LoopInRequest),
}

impl<'de> Deserialize<'de> for SellerRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        let direction = value.get("direction").cloned().unwrap_or(serde_json::Value::Null);
        let direction: SwapDirection =
            serde_json::from_value(direction).map_err(D::Error::custom)?;
        match direction {
            SwapDirection::LoopOut => {
                serde_json::from_value(value).map(SellerRequest::LoopOut).map_err(D::Error::custom)
            }
            SwapDirection::LoopIn => {
                serde_json::from_value(value).map(SellerRequest::LoopIn).map_err(D::Error::custom)
            }
        }
    }
}

impl SellerRequest {
    /// Which way the swap moves money.
    pub fn direction(&self) -> SwapDirection {
        match self {
            SellerRequest::LoopOut(_) => SwapDirection::LoopOut,
            SellerRequest::LoopIn(_) => SwapDirection::LoopIn,
        }
    }

    /// The swap amount: the value of the HTLC output.
    pub fn amount_sat(&self) -> u64 {
        match self {
            SellerRequest::LoopOut(r) => r.amount_sat,
            SellerRequest::LoopIn(r) => r.amount_sat,
        }
    }

    /// The offer taken.
    pub fn offer_id(&self) -> &str {
        match self {
            SellerRequest::LoopOut(r) => &r.offer_id,
            SellerRequest::LoopIn(r) => &r.offer_id,
        }
    }

    /// The taker's bound on `swap_fee_sat + funding_fee_sat`.
    pub fn max_total_fee_sat(&self) -> u64 {
        match self {
            SellerRequest::LoopOut(r) => r.max_total_fee_sat,
            SellerRequest::LoopIn(r) => r.max_total_fee_sat,
        }
    }
}

/// The checks the taker makes, as locker of a loop in, before it asks and on the maker's
/// `swap_accept` (spec `02-swap-flow.md`, "Loop in: the locker as taker"): the
/// [`CheckError`](crate::checks::CheckError) both roles share (kept under this name for its users). A failure on `swap_accept` is answered
/// with `swap_abort` `checks_failed`: nothing is locked yet.
pub use crate::checks::CheckError as LockerCheckError;

/// Everything a taker needs to start a loop in as the locker ([`SellerSwap::start_loop_in`]).
#[derive(Debug, Clone)]
pub struct LockerStart {
    /// A fresh random swap id.
    pub swap_id: SwapId,
    /// The maker (Nostr public key, hex).
    pub peer: String,
    /// The maker's loop-in offer.
    pub offer: Offer,
    /// The amount to lock.
    pub amount_sat: u64,
    /// What the taker accepts of the maker's terms.
    pub limits: LoopInLimits,
    /// How the swap behaves once funded (co-signing the maker's claim).
    pub policy: SellerPolicy,
    /// Where refunds go.
    pub refund_destination: ScriptBuf,
    /// Our keys for this swap (the preimage is theirs).
    pub keys: SwapKeys,
}

/// A seller's swap as stored (the `swap` of a [`crate::record::SwapRecord`]): everything but the
/// keys, which derive again from [`SellerRecord::key_index`], and the memory-only MuSig2
/// session. [`SellerSwap::load`] makes it a running swap again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SellerRecord {
    #[serde(flatten)]
    core: CoreRecord,
    /// The request: the buyer's (loop out) or ours (loop in).
    request: SellerRequest,
    /// The quote.
    quote: Quote,
    /// The HTLC parameters (absent only in a loop in's `Requested` and its end without an
    /// accepted contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    htlc_params: Option<HtlcParams>,
    /// Where refunds go.
    refund_destination: ScriptBuf,
    /// Policy.
    policy: SellerPolicy,
    /// Loop in: the taker's limits on the maker's terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<LoopInLimits>,
    /// The state.
    state: SellerState,
}

impl SellerRecord {
    core_accessors!();

    /// The state.
    pub fn state(&self) -> &SellerState {
        &self.state
    }

    /// When the swap's invoice expires (unix seconds), once it was created: the claimer (the
    /// buyer in a loop out, the maker in a loop in) stops waiting for the funding then.
    pub fn invoice_expires_at(&self) -> Option<u64> {
        match &self.state {
            SellerState::Accepted { invoice, .. }
            | SellerState::Funded { invoice, .. }
            | SellerState::RefundingCooperatively { invoice, .. } => invoice_expired_at(invoice),
            _ => None,
        }
    }

    /// The request the swap was made from: the buyer's (loop out) or ours (loop in).
    pub fn request(&self) -> &SellerRequest {
        &self.request
    }

    /// Which way the swap moves money: loop out (we are the maker) or loop in (the taker).
    pub fn direction(&self) -> SwapDirection {
        self.request.direction()
    }

    /// The swap amount: the value of the HTLC output.
    pub fn amount_sat(&self) -> u64 {
        self.request.amount_sat()
    }

    /// Loop in: the taker's limits on the maker's terms.
    pub fn loop_in_limits(&self) -> Option<&LoopInLimits> {
        self.limits.as_ref()
    }

    /// The quote.
    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    /// The HTLC parameters, once agreed (a loop in has none while `Requested`).
    pub fn htlc_params(&self) -> Option<&HtlcParams> {
        self.htlc_params.as_ref()
    }

    /// The HTLC's `timeout_height`, once agreed.
    pub fn timeout_height(&self) -> Option<u32> {
        self.htlc_params.as_ref().map(|p| p.timeout_height)
    }

    /// Where refunds go.
    pub fn refund_destination(&self) -> &ScriptBuf {
        &self.refund_destination
    }

    /// The policy.
    pub fn policy(&self) -> &SellerPolicy {
        &self.policy
    }

    /// The payment hash (ours: we made the preimage).
    pub fn payment_hash(&self) -> PaymentHash {
        match (&self.request, &self.htlc_params) {
            (SellerRequest::LoopIn(r), _) => r.payment_hash,
            (_, Some(p)) => p.payment_hash,
            // Never: a loop out has its HTLC from the start (a record without it does not load).
            (SellerRequest::LoopOut(_), None) => PaymentHash([0; 32]),
        }
    }

    /// The prepay invoice's payment hash, while the swap waits for it.
    pub fn prepay_hash(&self) -> Option<PaymentHash> {
        match &self.state {
            SellerState::Accepted { prepay: Some(p), .. } => Some(p.payment_hash),
            _ => None,
        }
    }
}

/// One swap, locker side (the seller of a loop out, the taker of a loop in): its
/// [`SellerRecord`] (read through `Deref`; only the state machine changes it), its keys and the
/// memory-only MuSig2 session of a cooperative refund.
#[derive(Debug, Clone)]
pub struct SellerSwap {
    rec: SellerRecord,
    live: Live,
    /// The HTLC, once agreed (a loop in has none while `Requested`).
    htlc: Option<Htlc>,
    /// When an unsettled claim is looked at next (`Paid`; unix seconds).
    claim_check_at_secs: u64,
    /// The invoice's expiry, decoded once ([`SellerSwap::invoice_expiry`]): every tick of a
    /// funded swap looks at it, and decoding a BOLT11 invoice recovers its signer's key.
    invoice_expiry: Option<u64>,
}

swap_api!(SellerSwap, SellerRecord, SellerState);

/// When a BOLT11 invoice expires (unix seconds); `None` if it does not decode.
fn invoice_expired_at(invoice: &str) -> Option<u64> {
    let decoded = lightning_invoice::Bolt11Invoice::from_str(invoice).ok()?;
    decoded.expires_at().map(|d| d.as_secs())
}

/// Invoice expiry: the offer's, but at most half the time to the timeout.
fn invoice_expiry_secs(offer: &Offer) -> u32 {
    invoice_expiry_secs_within(offer, offer.timeout_delta)
}

/// Invoice expiry with `blocks_left` to the timeout: the offer's, but at most half that time.
fn invoice_expiry_secs_within(offer: &Offer, blocks_left: u32) -> u32 {
    let half_timeout_secs = u64::from(blocks_left) * SECS_PER_BLOCK / 2;
    u32::try_from(half_timeout_secs.min(u64::from(offer.invoice_expiry_secs)))
        .unwrap_or(offer.invoice_expiry_secs)
}

/// The error of a step that needs the HTLC before one was agreed (a bug: never panics).
fn no_htlc() -> SwapError {
    SwapError::Internal("the swap has no htlc yet".into())
}

fn err(code: ErrorCode, message: impl core::fmt::Display) -> ErrorMessage {
    ErrorMessage::new(code, message)
}

impl SellerSwap {
    /// Takes a `swap_request`: checks it against our offer and, when it fits, starts the swap.
    ///
    /// # Errors
    /// The `error` to send back when the request does not fit the offer.
    #[allow(clippy::too_many_arguments)]
    pub fn from_request(
        swap_id: SwapId,
        peer: String,
        offer: Offer,
        request: SwapRequest,
        keys: SwapKeys,
        refund_destination: ScriptBuf,
        policy: SellerPolicy,
        ctx: &Context,
    ) -> Result<(Self, Vec<Action>), ErrorMessage> {
        let asked = Asked {
            offer_id: &request.offer_id,
            direction: request.direction,
            serves: SwapDirection::LoopOut,
            network: request.network,
            amount_sat: request.amount_sat,
            max_total_fee_sat: request.max_total_fee_sat,
            prepay_accepted: request.prepay_accepted,
        };
        let quote = admit_request(&offer, &asked, ctx.now_secs)?;
        let timeout_height = ctx
            .tip_height
            .checked_add(offer.timeout_delta)
            .ok_or_else(|| err(ErrorCode::Internal, "timeout overflow"))?;
        let htlc_params = HtlcParams {
            payment_hash: keys.payment_hash(),
            claim_key: request.buyer_claim_pubkey,
            refund_key: keys.refund_pubkey(),
            locker_musig_key: keys.musig_pubkey(),
            claimer_musig_key: request.buyer_musig_pubkey,
            timeout_height,
            network: offer.network,
        };
        let htlc = Htlc::new_at(htlc_params.clone(), ctx.tip_height)
            .map_err(|e| err(ErrorCode::InvalidParams, e))?;
        let request = SellerRequest::LoopOut(request);
        let expiry_secs = invoice_expiry_secs(&offer);
        let amount_msat = quote.invoice_amount_sat.saturating_mul(1000);
        let core = CoreRecord::start(swap_id, &keys, peer, offer, ctx.now_secs, true);
        let rec = SellerRecord {
            core,
            request,
            quote,
            htlc_params: Some(htlc_params),
            refund_destination,
            policy,
            limits: None,
            state: SellerState::AwaitingInvoice,
        };
        let swap = SellerSwap {
            rec,
            live: Live::new(keys),
            htlc: Some(htlc),
            claim_check_at_secs: 0,
            invoice_expiry: None,
        };
        // Not persisted yet: nothing the peer can see exists until the invoice is made, and the
        // record is first written with it, before the answer goes out (`Accepted`). A crash in
        // between leaves no record and the request unacknowledged: it is delivered again and
        // starts afresh (another index, another hash; the invoice made for this one is never
        // sent to anyone). One durable write less per request (`docs/benchmarks.md`).
        let actions = vec![swap.create_invoice(amount_msat, expiry_secs)];
        Ok((swap, actions))
    }

    /// Starts a loop in as the taker, who locks: checks the maker's loop-in offer against our
    /// limits, computes the quote and sends `swap_request` (`Requested`). The maker answers with
    /// `swap_accept` (its keys and the contract), which the swap checks before it asks for the
    /// invoice and funds.
    ///
    /// # Errors
    /// [`LockerCheckError`] when the offer cannot serve the amount within the limits; nothing is
    /// sent.
    pub fn start_loop_in(
        start: LockerStart,
        ctx: &Context,
    ) -> Result<(Self, Vec<Action>), LockerCheckError> {
        let LockerStart {
            swap_id,
            peer,
            offer,
            amount_sat,
            limits,
            policy,
            refund_destination,
            keys,
        } = start;
        if offer.direction != SwapDirection::LoopIn {
            return Err(LockerCheckError::NotLoopIn);
        }
        offer.validate().map_err(|e| LockerCheckError::InvalidOffer(e.to_string()))?;
        if offer.is_expired(ctx.now_secs) {
            return Err(LockerCheckError::InvalidOffer("the offer expired".into()));
        }
        let quote = own_quote(&offer, amount_sat, limits.max_total_fee_sat)?;
        if offer.timeout_delta > limits.max_timeout_delta {
            return Err(LockerCheckError::TimeoutTooLong {
                blocks: offer.timeout_delta,
                max: limits.max_timeout_delta,
            });
        }
        let request = LoopInRequest {
            offer_id: offer.offer_id.clone(),
            direction: SwapDirection::LoopIn,
            network: offer.network,
            amount_sat,
            payment_hash: keys.payment_hash(),
            locker_musig_pubkey: keys.musig_pubkey(),
            locker_refund_pubkey: keys.refund_pubkey(),
            max_total_fee_sat: limits.max_total_fee_sat.min(quote.fee_sat()),
        };
        let core = CoreRecord::start(swap_id, &keys, peer, offer, ctx.now_secs, false);
        let rec = SellerRecord {
            core,
            request: SellerRequest::LoopIn(request.clone()),
            quote,
            htlc_params: None,
            refund_destination,
            policy,
            limits: Some(limits),
            state: SellerState::Requested,
        };
        let mut swap = SellerSwap {
            rec,
            live: Live::new(keys),
            htlc: None,
            claim_check_at_secs: 0,
            invoice_expiry: None,
        };
        let send = swap.rec.core.send(Message::LoopInRequest(request));
        Ok((swap, vec![Action::Persist, send]))
    }

    /// Whether we are the taker of a loop in.
    fn loop_in(&self) -> bool {
        self.rec.direction() == SwapDirection::LoopIn
    }

    /// The peer (the claimer) as messages and errors name it: the buyer of a loop out, the maker
    /// of a loop in.
    fn claimer(&self) -> &'static str {
        if self.loop_in() {
            "maker"
        } else {
            "buyer"
        }
    }

    /// The HTLC's timeout, `u32::MAX` before one is agreed (nothing is locked then).
    fn timeout(&self) -> u32 {
        self.rec.timeout_height().unwrap_or(u32::MAX)
    }

    /// The HTLC, which every state from `AwaitingInvoice` on has.
    fn contract(&self) -> Result<&Htlc, SwapError> {
        self.htlc.as_ref().ok_or_else(no_htlc)
    }

    /// The invoice to ask the Lightning node for, of `quote.invoice_amount_sat`: in a loop out
    /// with the expiry computed from the offer's `timeout_delta` (as when the swap was accepted),
    /// in a loop in from the blocks left to the agreed timeout now.
    fn ask_invoice(&self, ctx: &Context) -> Action {
        let amount_msat = self.rec.quote.invoice_amount_sat.saturating_mul(1000);
        let offer = &self.rec.core.offer;
        let expiry_secs = if self.loop_in() {
            invoice_expiry_secs_within(offer, self.timeout().saturating_sub(ctx.tip_height))
        } else {
            invoice_expiry_secs(offer)
        };
        self.create_invoice(amount_msat, expiry_secs)
    }

    /// The taker's checks of the maker's `swap_accept` (spec `02-swap-flow.md`, "Loop in: the
    /// locker as taker"), in order; passed, the HTLC parameters and the HTLC they build.
    fn check_loop_in_accept(
        &self,
        accept: &LoopInAccept,
        ctx: &Context,
    ) -> Result<(HtlcParams, Htlc), LockerCheckError> {
        let offer = &self.rec.core.offer;
        let amount_sat = self.rec.amount_sat();
        let limits = self.rec.limits.unwrap_or_default();
        let quote = &accept.quote;
        let max_fee = limits.max_total_fee_sat.min(self.rec.request.max_total_fee_sat());
        check_quote(quote, offer, amount_sat, max_fee)?;
        check_htlc_amount(accept.htlc_amount_sat, quote, amount_sat)?;
        // Not later than the offer says (plus the blocks found while the messages travelled):
        // our coins would stay locked longer. Earlier only shortens our lock, as a maker whose
        // chain view lags sets it; the floor is the offer's own (`01-messages.md`): room for
        // the confirmations and the claimer's payment, so that the swap can complete.
        let min = ctx
            .tip_height
            .saturating_add(offer.claim_margin)
            .saturating_add(offer.min_confirmations)
            .saturating_add(MIN_CLTV_BUDGET_BLOCKS);
        check_timeout(accept.timeout_height, min, ctx.tip_height, offer)?;
        let blocks = accept.timeout_height.saturating_sub(ctx.tip_height);
        if blocks > limits.max_timeout_delta {
            return Err(LockerCheckError::TimeoutTooLong { blocks, max: limits.max_timeout_delta });
        }
        let keys = self.keys();
        let params = HtlcParams {
            payment_hash: keys.payment_hash(),
            claim_key: accept.claimer_claim_pubkey,
            refund_key: keys.refund_pubkey(),
            locker_musig_key: keys.musig_pubkey(),
            claimer_musig_key: accept.claimer_musig_pubkey,
            timeout_height: accept.timeout_height,
            network: offer.network,
        };
        let htlc = check_htlc_script(&params, &accept.htlc_script_pubkey, Some(ctx.tip_height))?;
        Ok((params, htlc))
    }

    /// Loop in: the maker's `swap_accept`. In `Requested` it is checked: passed, the contract is
    /// ours too and the invoice is asked for; failed, the swap ends (`swap_abort`
    /// `checks_failed`, nothing locked). Elsewhere (a maker answering our request again) it is
    /// ignored.
    fn on_loop_in_accept(&mut self, accept: LoopInAccept, ctx: &Context) -> Actions {
        if self.rec.state != SellerState::Requested {
            return Ok(Vec::new());
        }
        match self.check_loop_in_accept(&accept, ctx) {
            Ok((params, htlc)) => {
                let note = Action::Notify(Notification::Accepted {
                    quote: self.rec.quote,
                    timeout_height: params.timeout_height,
                });
                self.go(SellerState::AwaitingInvoice)?;
                self.rec.htlc_params = Some(params);
                self.htlc = Some(htlc);
                Ok(vec![Action::Persist, note, self.ask_invoice(ctx)])
            }
            Err(check) => {
                let reason = AbortReason::ChecksFailed;
                let text: String = check.to_string().chars().take(MAX_TEXT_CHARS).collect();
                self.go(SellerState::Aborted {
                    reason,
                    message: Some(text.clone()),
                    check: Some(check),
                })?;
                let finished = self.finished();
                Ok(self.rec.core.abort_actions(reason, Some(text), finished))
            }
        }
    }

    /// The invoices to ask the Lightning node for: the hold invoice and, when the quote has one,
    /// the prepay's.
    fn create_invoice(&self, amount_msat: u64, expiry_secs: u32) -> Action {
        let prepay_sat = self.rec.quote.prepay_sat;
        Action::CreateInvoice {
            payment_hash: self.payment_hash(),
            amount_msat,
            expiry_secs,
            description: format!("looper swap {}", self.rec.core.swap_id),
            prepay_msat: (prepay_sat > 0).then(|| prepay_sat.saturating_mul(1000)),
            prepay_expiry_secs: PREPAY_EXPIRY_SECS.min(expiry_secs),
        }
    }

    /// The funding order, once nothing (no unpaid prepay) holds it back.
    fn fund_htlc(&self) -> Result<Action, SwapError> {
        Ok(Action::FundHtlc {
            script_pubkey: self.contract()?.script_pubkey().to_owned(),
            amount_sat: self.rec.quote.htlc_amount_sat,
            conf_target: self.rec.limits.and_then(|l| l.funding_conf_target),
        })
    }

    /// The HTLC, once agreed (a loop in has none while `Requested`).
    pub fn htlc(&self) -> Option<&Htlc> {
        self.htlc.as_ref()
    }

    /// Loads a stored swap with its keys (derived again from [`SellerRecord::key_index`]); then
    /// [`SellerSwap::resume`] gives the actions to take at start-up.
    ///
    /// # Errors
    /// [`SwapError::WrongKeys`] when the keys are not the ones the swap was made with;
    /// [`SwapError::Internal`] when the record's HTLC does not build.
    pub fn load(record: SellerRecord, keys: SwapKeys) -> Result<Self, SwapError> {
        let (musig_key, payment_hash) = match (&record.htlc_params, &record.request) {
            (Some(p), _) => (p.locker_musig_key, p.payment_hash),
            (None, SellerRequest::LoopIn(r)) => (r.locker_musig_pubkey, r.payment_hash),
            (None, SellerRequest::LoopOut(_)) => {
                return Err(SwapError::Internal("a loop-out record without its htlc".into()))
            }
        };
        if keys.index() != record.core.key_index
            || keys.musig_pubkey() != musig_key
            || keys.payment_hash() != payment_hash
            || keys.payment_hash() != record.payment_hash()
        {
            return Err(SwapError::WrongKeys { key_index: record.core.key_index });
        }
        let htlc = record.htlc_params.clone().map(Htlc::new).transpose().map_err(internal)?;
        Ok(SellerSwap {
            rec: record,
            live: Live::new(keys),
            htlc,
            claim_check_at_secs: 0,
            invoice_expiry: None,
        })
    }

    /// The seller's part of [`SellerSwap::resume`], after the re-sent messages `sent`.
    fn resume_role(&mut self, sent: Vec<Action>, ctx: &Context, rng: &mut impl Rng) -> Actions {
        let mut actions = sent;
        // A spend recorded as confirmed is forgotten: the chain reports it again at the next
        // look if it is still there (one that left while the node was down is never reported
        // gone). The refund that is out goes out again below.
        if self.recorded_spend().is_some() {
            self.forget_spend(None, ctx, false);
        }
        let watch = || -> Result<Action, SwapError> {
            Ok(Action::WatchHtlc { script_pubkey: self.contract()?.script_pubkey().to_owned() })
        };
        match &self.rec.state {
            // Loop in: our request went out again with the messages above.
            SellerState::Requested => {}
            SellerState::AwaitingInvoice => actions.push(self.ask_invoice(ctx)),
            SellerState::Accepted { prepay, .. } => {
                actions.push(watch()?);
                match prepay {
                    // Received while we were down (or before the record said so): ask.
                    Some(p) if !p.paid => {
                        actions.push(Action::CheckPayment { payment_hash: p.payment_hash });
                    }
                    _ => actions.push(self.fund_htlc()?),
                }
            }
            SellerState::Funded { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. } => {
                actions.push(watch()?);
                if funding.confirmed_height.is_none() {
                    actions.push(Action::Broadcast {
                        tx: funding.tx.clone(),
                        purpose: TxPurpose::Funding,
                    });
                }
                if let SellerState::RefundingCooperatively { invoice, funding, attempts, .. } =
                    &self.rec.state
                {
                    // The session's nonce died with the process: ask again with a fresh one (the
                    // buyer, aborted, answers every request; each signing has its own nonces).
                    let to = SellerState::Funded {
                        invoice: invoice.clone(),
                        funding: funding.clone(),
                        refund_attempts: *attempts,
                        refund_retry_at_secs: 0,
                    };
                    self.go(to)?;
                    actions.insert(0, Action::Persist);
                    actions.extend(self.start_coop_refund(ctx, rng)?);
                }
            }
            SellerState::Paid { amount_msat, claim_settled, .. } => {
                // The claim may not have happened before the restart; claiming is idempotent.
                actions.push(watch()?);
                if !claim_settled {
                    actions.push(Action::ClaimPayment {
                        payment_hash: self.payment_hash(),
                        preimage: self.keys().preimage().clone(),
                        amount_msat: *amount_msat,
                    });
                    actions.push(Action::CheckPayment { payment_hash: self.payment_hash() });
                }
            }
            SellerState::Refunding { refund_tx, purpose, .. } => {
                actions.push(watch()?);
                actions.push(Action::Broadcast { tx: refund_tx.clone(), purpose: *purpose });
            }
            SellerState::Claimed { .. }
            | SellerState::Refunded { .. }
            | SellerState::Aborted { .. } => {}
        }
        Ok(actions)
    }

    /// Every event but messages and ticks ([`SellerSwap::handle`]).
    fn handle_event(&mut self, event: Event, ctx: &Context, rng: &mut impl Rng) -> Actions {
        match event {
            Event::Message(_) | Event::Tick => Ok(Vec::new()), // dispatched by `handle`
            Event::InvoiceCreated { invoice, prepay_invoice } => {
                self.on_invoice(invoice, prepay_invoice, ctx)
            }
            Event::FundingBuilt { tx, vout } => self.on_funding_built(tx, vout),
            Event::FundingFailed { reason } => self.abort(AbortReason::Internal, Some(reason)),
            Event::HtlcOutput { outpoint, confirmed_height, .. } => {
                match self.rec.state.funding_mut() {
                    Some(f) if f.outpoint == outpoint && f.confirmed_height != confirmed_height => {
                        f.confirmed_height = confirmed_height;
                        Ok(vec![Action::Persist])
                    }
                    _ => Ok(Vec::new()),
                }
            }
            Event::HtlcSpent { tx, confirmed_height } => {
                self.on_htlc_spent(tx, confirmed_height, ctx)
            }
            Event::HtlcSpendGone { outpoint, txid } => {
                if self.rec.state.funding().is_none_or(|f| f.outpoint != outpoint) {
                    return Ok(Vec::new());
                }
                Ok(self.forget_spend(Some(txid), ctx, true))
            }
            Event::PaymentClaimable { payment_hash, amount_msat } => {
                self.on_payment_claimable(payment_hash, amount_msat, ctx)
            }
            Event::PaymentClaimed { payment_hash } => {
                if Some(payment_hash) == self.rec.prepay_hash() {
                    return self.on_prepay_received();
                }
                if payment_hash != self.payment_hash() {
                    return Ok(Vec::new());
                }
                self.on_claim_settled()
            }
            Event::PaymentStatus { payment_hash, status } => {
                if Some(payment_hash) == self.rec.prepay_hash() {
                    return match status {
                        PaymentStatus::Succeeded { .. } => self.on_prepay_received(),
                        _ => Ok(Vec::new()), // not yet: the tick ends it at its expiry
                    };
                }
                if payment_hash != self.payment_hash() {
                    return Ok(Vec::new());
                }
                self.on_payment_status(status)
            }
            Event::HtlcGone { outpoint } => match self.rec.state.funding_mut() {
                // Reorganised out: rebroadcast every block until it confirms again (and its
                // spend with it).
                Some(f)
                    if f.outpoint == outpoint
                        && (f.confirmed_height.is_some() || f.spent.is_some()) =>
                {
                    f.confirmed_height = None;
                    f.spent = None;
                    self.live.broadcast_height = 0;
                    Ok(vec![Action::Persist])
                }
                _ => Ok(Vec::new()),
            },
            Event::HtlcChecked { .. } => Ok(Vec::new()),
            Event::UserAbort => match self.rec.state {
                // Nothing is locked yet: the swap just ends (a funding built meanwhile is never
                // broadcast).
                SellerState::Requested
                | SellerState::AwaitingInvoice
                | SellerState::Accepted { .. } => self.abort(AbortReason::UserRequested, None),
                SellerState::Funded { .. } => self.start_coop_refund(ctx, rng),
                _ => {
                    Err(SwapError::Unexpected { event: "user_abort", state: self.rec.state.name() })
                }
            },
            Event::UserScriptSpend => self.on_user_refund(ctx),
            Event::PaymentSucceeded { .. }
            | Event::PaymentFailed { .. }
            | Event::PaymentNotSent { .. } => {
                Err(SwapError::Unexpected { event: "payment_result", state: self.rec.state.name() })
            }
            Event::ClaimBuilt { .. } => {
                Err(SwapError::Unexpected { event: "claim_built", state: self.rec.state.name() })
            }
        }
    }

    fn abort(&mut self, reason: AbortReason, message: Option<String>) -> Actions {
        match self.rec.state {
            SellerState::Requested
            | SellerState::AwaitingInvoice
            | SellerState::Accepted { .. } => {}
            _ => {
                return Err(SwapError::Unexpected { event: "abort", state: self.rec.state.name() })
            }
        }
        self.go(SellerState::Aborted { reason, message: message.clone(), check: None })?;
        let finished = self.finished();
        Ok(self.rec.core.abort_actions(reason, message, finished))
    }

    fn on_invoice(
        &mut self,
        invoice: String,
        prepay_invoice: Option<String>,
        ctx: &Context,
    ) -> Actions {
        if self.rec.state != SellerState::AwaitingInvoice {
            return Ok(Vec::new());
        }
        let prepay = match (self.rec.quote.prepay_sat, prepay_invoice) {
            (0, _) => None,
            (_, None) => return Err(SwapError::Internal("no prepay invoice".into())),
            (_, Some(p)) => {
                let decoded = lightning_invoice::Bolt11Invoice::from_str(&p).map_err(internal)?;
                let expires_at_secs = decoded
                    .expires_at()
                    .map(|d| d.as_secs())
                    .unwrap_or_else(|| ctx.now_secs.saturating_add(PREPAY_EXPIRY_SECS.into()));
                Some(Prepay {
                    payment_hash: PaymentHash(decoded.payment_hash().to_byte_array()),
                    invoice: p,
                    expires_at_secs,
                    paid: false,
                })
            }
        };
        let htlc = self.contract()?.clone();
        if self.loop_in() {
            // The maker asked nothing of us: no swap_accept; the invoice goes with swap_funded.
            self.go(SellerState::Accepted { invoice, prepay })?;
            return Ok(vec![
                Action::Persist,
                Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() },
                self.fund_htlc()?,
            ]);
        }
        let keys = self.keys();
        let accept = SwapAccept {
            invoice: invoice.clone(),
            payment_hash: self.payment_hash(),
            seller_musig_pubkey: keys.musig_pubkey(),
            seller_refund_pubkey: keys.refund_pubkey(),
            timeout_height: self.timeout(),
            htlc_script_pubkey: htlc.script_pubkey().to_owned(),
            htlc_amount_sat: self.rec.quote.htlc_amount_sat,
            quote: self.rec.quote,
            prepay_invoice: prepay.as_ref().map(|p| p.invoice.clone()),
        };
        let wait_for_prepay = prepay.is_some();
        self.go(SellerState::Accepted { invoice, prepay })?;
        let send = self.rec.core.send(Message::SwapAccept(accept));
        let mut actions = vec![
            Action::Persist,
            send,
            Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() },
        ];
        if !wait_for_prepay {
            actions.push(self.fund_htlc()?);
        }
        Ok(actions)
    }

    /// The prepay arrived (the Lightning node settled it): the seller keeps it and funds now.
    fn on_prepay_received(&mut self) -> Actions {
        let SellerState::Accepted { invoice, prepay: Some(p) } = &self.rec.state else {
            return Ok(Vec::new());
        };
        if p.paid {
            return Ok(Vec::new());
        }
        let to = SellerState::Accepted {
            invoice: invoice.clone(),
            prepay: Some(Prepay { paid: true, ..p.clone() }),
        };
        self.go(to)?;
        Ok(vec![
            Action::Persist,
            Action::Notify(Notification::Prepaid { amount_sat: self.rec.quote.prepay_sat }),
            self.fund_htlc()?,
        ])
    }

    fn on_funding_built(&mut self, tx: Transaction, vout: u32) -> Actions {
        let SellerState::Accepted { invoice, .. } = &self.rec.state else {
            // Aborted meanwhile, or a duplicate: the transaction is never broadcast.
            return Ok(Vec::new());
        };
        let htlc = self.contract()?;
        let ok = tx.output.get(vout as usize).is_some_and(|o| {
            o.script_pubkey == *htlc.script_pubkey()
                && o.value == Amount::from_sat(self.rec.quote.htlc_amount_sat)
        });
        if !ok {
            return Err(SwapError::Internal("funding transaction does not pay the htlc".into()));
        }
        let funding = Funding {
            outpoint: OutPoint { txid: tx.compute_txid(), vout },
            tx,
            confirmed_height: None,
            spent: None,
        };
        let msg = self.swap_funded(&funding.tx, vout, invoice);
        let txid = funding.outpoint.txid;
        let tx = funding.tx.clone();
        self.go(SellerState::Funded {
            invoice: invoice.clone(),
            funding,
            refund_attempts: 0,
            refund_retry_at_secs: 0,
        })?;
        self.live.broadcast_height = 0;
        let send = self.rec.core.send(Message::SwapFunded(msg));
        Ok(vec![
            Action::Persist,
            Action::Broadcast { tx, purpose: TxPurpose::Funding },
            send,
            Action::Notify(Notification::FundingSeen {
                txid,
                confirmations: 0,
                required: self.rec.core.offer.min_confirmations,
            }),
        ])
    }

    /// The `swap_funded` announcing `tx`: in a loop in it carries our invoice (the maker pays it
    /// once the HTLC confirms); a loop out's `swap_accept` carried it.
    fn swap_funded(&self, tx: &Transaction, vout: u32, invoice: &str) -> SwapFunded {
        let mut msg = SwapFunded::new(tx, vout);
        if self.loop_in() {
            msg.invoice = Some(invoice.to_owned());
        }
        msg
    }

    fn on_payment_claimable(
        &mut self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        ctx: &Context,
    ) -> Actions {
        if payment_hash != self.payment_hash() {
            return Ok(Vec::new());
        }
        let preimage = self.keys().preimage().clone();
        let enough = amount_msat >= self.rec.quote.invoice_amount_sat.saturating_mul(1000);
        // The safety rule: claim only while the buyer can still claim on chain.
        let in_time =
            ctx.tip_height.saturating_add(self.rec.core.offer.claim_margin) <= self.timeout();
        match &self.rec.state {
            SellerState::Funded { funding, invoice, .. } if enough && in_time => {
                let (funding, invoice) = (funding.clone(), invoice.clone());
                self.go(SellerState::Paid {
                    funding,
                    amount_msat,
                    coop_signatures: 0,
                    invoice,
                    claim_settled: false,
                })?;
                self.claim_check_at_secs = ctx.now_secs.saturating_add(CLAIM_CHECK_SECS);
                Ok(vec![
                    Action::Persist,
                    Action::ClaimPayment { payment_hash, preimage, amount_msat },
                    Action::Notify(Notification::Paid),
                ])
            }
            // Already claimed: claiming again is idempotent.
            SellerState::Paid { .. } | SellerState::Claimed { .. } => {
                Ok(vec![Action::ClaimPayment { payment_hash, preimage, amount_msat }])
            }
            _ => Ok(vec![Action::FailPayment { payment_hash }]),
        }
    }

    /// The Lightning node reports the claim settled: co-signing the buyer's key-path claim is
    /// safe from now on.
    fn on_claim_settled(&mut self) -> Actions {
        match &mut self.rec.state {
            SellerState::Paid { claim_settled, .. } if !*claim_settled => {
                *claim_settled = true;
                Ok(vec![Action::Persist])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// What the Lightning node knows of the payment to our invoice, asked while a claim has
    /// not settled: settled, still being claimed (claim again: idempotent), or gone (failed back,
    /// never claimed): then the preimage never went out and the swap is refundable again.
    fn on_payment_status(&mut self, status: PaymentStatus) -> Actions {
        let SellerState::Paid { funding, amount_msat, invoice, claim_settled, .. } =
            &self.rec.state
        else {
            return Ok(Vec::new());
        };
        if *claim_settled {
            return Ok(Vec::new());
        }
        match status {
            PaymentStatus::Succeeded { .. } => self.on_claim_settled(),
            PaymentStatus::Pending => Ok(vec![Action::ClaimPayment {
                payment_hash: self.payment_hash(),
                preimage: self.keys().preimage().clone(),
                amount_msat: *amount_msat,
            }]),
            PaymentStatus::Failed | PaymentStatus::Unknown => {
                let to = SellerState::Funded {
                    invoice: invoice.clone(),
                    funding: funding.clone(),
                    refund_attempts: 0,
                    refund_retry_at_secs: 0,
                };
                self.go(to)?;
                Ok(vec![
                    Action::Persist,
                    Action::Notify(Notification::Stalled {
                        reason: "the payment's claim never settled: refundable again".into(),
                    }),
                ])
            }
        }
    }

    /// A spend of the HTLC as the chain shows it (spec `02-swap-flow.md`, "Final at depth").
    /// Confirmed, it is recorded ([`Funding::spent`]; our refund becomes the refund that is out,
    /// to go out again should it leave the chain) and the swap ends `Refunded` (ours) or
    /// `Claimed` (the claimer's) once it is [`ANTI_REORG_DEPTH`](crate::swap::ANTI_REORG_DEPTH)
    /// deep. In the mempool, a spend recorded as confirmed left the chain (a reorg): it is
    /// forgotten.
    fn on_htlc_spent(
        &mut self,
        tx: Transaction,
        confirmed_height: Option<u32>,
        ctx: &Context,
    ) -> Actions {
        if self.kind() != StateKind::Pending {
            return Ok(Vec::new());
        }
        let Some(funding) = self.rec.state.funding().cloned() else { return Ok(Vec::new()) };
        let txid = tx.compute_txid();
        // The witness names the path: the refund leaf is ours, the claim leaf the buyer's. A
        // key-path spend is one both signed: our refund (paying our refund destination; we are
        // its aggregator) or the buyer's claim.
        let refunding = match &self.rec.state {
            SellerState::Refunding { refund_tx, .. } => Some(refund_tx.compute_txid()),
            _ => None,
        };
        let destination = &self.rec.refund_destination;
        let Some(htlc) = self.htlc.as_ref() else { return Ok(Vec::new()) };
        let Some(path) = htlc.spend_path(&tx, funding.outpoint) else { return Ok(Vec::new()) };
        let Some(ours) =
            spend_is_ours(htlc, &tx, funding.outpoint, HtlcSpendPath::RefundLeaf, |tx| {
                refunding == Some(txid) || tx.output.iter().any(|o| o.script_pubkey == *destination)
            })
        else {
            return Ok(Vec::new());
        };
        let Some(height) = confirmed_height else {
            return Ok(self.forget_spend(None, ctx, false));
        };
        let mut changed = false;
        if let SellerState::Refunding { refund_tx, purpose, .. } = &mut self.rec.state {
            if ours && refund_tx.compute_txid() != txid {
                // An earlier version than the latest: the one to send again if it leaves.
                *refund_tx = tx.clone();
                *purpose = if path == HtlcSpendPath::RefundLeaf {
                    TxPurpose::ScriptRefund
                } else {
                    TxPurpose::CooperativeRefund
                };
                changed = true;
            }
        }
        let spend = ConfirmedSpend { txid, height, ours };
        if let Some(f) = self.rec.state.funding_mut() {
            if f.spent != Some(spend) {
                f.spent = Some(spend);
                changed = true;
            }
        }
        let mut actions = if changed { vec![Action::Persist] } else { Vec::new() };
        actions.extend(self.finish_at_depth(ctx)?);
        Ok(actions)
    }

    /// The spend of the HTLC recorded as confirmed, while the swap is pending.
    fn recorded_spend(&self) -> Option<ConfirmedSpend> {
        if self.kind() != StateKind::Pending {
            return None;
        }
        self.rec.state.funding().and_then(|f| f.spent)
    }

    /// `Refunded` (our refund) or `Claimed` (the claimer's claim) once the recorded spend is
    /// [`ANTI_REORG_DEPTH`](crate::swap::ANTI_REORG_DEPTH) deep; nothing before.
    fn finish_at_depth(&mut self, ctx: &Context) -> Actions {
        let Some(spend) = self.recorded_spend().filter(|s| s.is_final(ctx.tip_height)) else {
            return Ok(Vec::new());
        };
        let Some(funding) = self.rec.state.funding().cloned() else { return Ok(Vec::new()) };
        let amount_msat = match &self.rec.state {
            SellerState::Paid { amount_msat, .. } => *amount_msat,
            _ => 0,
        };
        let next = if spend.ours {
            SellerState::Refunded { funding, refund_txid: spend.txid }
        } else {
            SellerState::Claimed { funding, claim_txid: spend.txid, amount_msat }
        };
        self.live.coop = Ephemeral(None);
        self.go(next)?;
        Ok(vec![Action::Persist, self.finished()])
    }

    /// The recorded spend (`txid`, or any with `None`) left the chain: forgotten. The refund that
    /// is out counts as sent now (the fee rule replaces it if a block comes without it) and,
    /// with `rebroadcast`, goes out again at once (it was dropped with its block), after its
    /// funding if that is out of the chain too.
    fn forget_spend(
        &mut self,
        txid: Option<Txid>,
        ctx: &Context,
        rebroadcast: bool,
    ) -> Vec<Action> {
        if self.kind() != StateKind::Pending {
            return Vec::new();
        }
        let Some(f) = self.rec.state.funding_mut() else { return Vec::new() };
        match f.spent {
            Some(s) if txid.is_none_or(|t| t == s.txid) => f.spent = None,
            _ => return Vec::new(),
        }
        let mut actions = vec![Action::Persist];
        if let SellerState::Refunding { funding, refund_tx, purpose, sent_height } =
            &mut self.rec.state
        {
            *sent_height = ctx.tip_height;
            self.live.broadcast_height = ctx.tip_height;
            if rebroadcast {
                if funding.confirmed_height.is_none() {
                    let tx = funding.tx.clone();
                    actions.push(Action::Broadcast { tx, purpose: TxPurpose::Funding });
                }
                actions.push(Action::Broadcast { tx: refund_tx.clone(), purpose: *purpose });
            }
        }
        actions
    }

    fn handle_message(&mut self, body: Message, ctx: &Context, rng: &mut impl Rng) -> Actions {
        match body {
            Message::SwapAbort(abort) => {
                let note = Action::Notify(Notification::Aborted {
                    reason: abort.reason,
                    message: abort.message.clone(),
                });
                let mut actions = match self.rec.state {
                    SellerState::Requested
                    | SellerState::AwaitingInvoice
                    | SellerState::Accepted { .. } => {
                        self.go(SellerState::Aborted {
                            reason: abort.reason,
                            message: abort.message,
                            check: None,
                        })?;
                        vec![Action::Persist, self.finished()]
                    }
                    SellerState::Funded { .. } => self.start_coop_refund(ctx, rng)?,
                    _ => Vec::new(),
                };
                actions.push(note);
                Ok(actions)
            }
            Message::CoopClaimRequest(req) => self.on_coop_claim_request(req, rng),
            Message::CoopRefundResponse(resp) => {
                let SellerState::RefundingCooperatively { invoice, funding, attempts, .. } =
                    &self.rec.state
                else {
                    return Ok(Vec::new());
                };
                let (invoice, funding, attempts) = (invoice.clone(), funding.clone(), *attempts);
                let Some(signed) = self.live.finish_coop(&resp.buyer_nonce, &resp.partial_sig)
                else {
                    return Ok(Vec::new());
                };
                let signed = signed.and_then(|spend| {
                    let fee_sat = spend.fee().to_sat();
                    spend.finalize().map(|tx| (tx, fee_sat)).map_err(|e| e.to_string())
                });
                match signed {
                    Ok((tx, fee_sat)) => self.broadcast_refund(
                        funding,
                        tx,
                        fee_sat,
                        TxPurpose::CooperativeRefund,
                        ctx,
                    ),
                    Err(reason) => {
                        self.go(SellerState::Funded {
                            invoice,
                            funding,
                            refund_attempts: attempts,
                            refund_retry_at_secs: ctx
                                .now_secs
                                .saturating_add(COOP_REFUND_RETRY_SECS),
                        })?;
                        Ok(vec![
                            Action::Persist,
                            Action::Notify(Notification::CooperationFailed { reason }),
                        ])
                    }
                }
            }
            Message::Error(error)
                if self.loop_in()
                    && matches!(
                        self.rec.state,
                        SellerState::Requested
                            | SellerState::AwaitingInvoice
                            | SellerState::Accepted { .. }
                    ) =>
            {
                // Loop in, before the funding: the maker refused our request (or no longer knows
                // the swap it accepted); nothing is locked, so nothing will be (a funding built
                // meanwhile is never broadcast).
                let message = format!("{}: {}", error.code.as_str(), error.message);
                let message: String = message.chars().take(MAX_TEXT_CHARS).collect();
                let note = Action::Notify(Notification::PeerError { error });
                self.go(SellerState::Aborted {
                    reason: AbortReason::Internal,
                    message: Some(message),
                    check: None,
                })?;
                Ok(vec![Action::Persist, note, self.finished()])
            }
            Message::Error(error) => {
                let note = Action::Notify(Notification::PeerError { error });
                // The buyer refuses the cooperative refund (it cannot or will not sign): stop
                // asking; the refund leaf opens at the timeout.
                let gave_up = match &mut self.rec.state {
                    SellerState::Funded { refund_attempts, .. } if *refund_attempts > 0 => {
                        *refund_attempts = MAX_COOP_REFUND_ATTEMPTS;
                        true
                    }
                    SellerState::RefundingCooperatively { attempts, .. } => {
                        *attempts = MAX_COOP_REFUND_ATTEMPTS;
                        true
                    }
                    _ => false,
                };
                Ok(if gave_up { vec![Action::Persist, note] } else { vec![note] })
            }
            Message::LoopInAccept(accept) if self.loop_in() => self.on_loop_in_accept(accept, ctx),
            Message::SwapRequest(_) if !self.loop_in() => Ok(Vec::new()),
            other => {
                let from = self.claimer();
                Ok(vec![self.rec.core.refuse_unexpected(&other, from)])
            }
        }
    }

    fn on_coop_claim_request(&mut self, req: CoopClaimRequest, rng: &mut impl Rng) -> Actions {
        let SellerState::Paid { funding, amount_msat, coop_signatures, invoice, claim_settled } =
            &self.rec.state
        else {
            let send =
                self.rec.core.send_error(ErrorCode::InvalidState, "not paid: no cooperative claim");
            return Ok(vec![send]);
        };
        if !self.rec.policy.cooperative_claims || *coop_signatures >= MAX_COOP_SIGNATURES {
            return Ok(Vec::new());
        }
        // Co-sign only once the Lightning claim settled, or for a buyer that shows the preimage
        // (it has it only because our claim went out): a claim that never settles must leave
        // the HTLC refundable.
        let shown = req.preimage.as_ref().is_some_and(|p| p.payment_hash() == self.payment_hash());
        if !*claim_settled && !shown {
            let send =
                self.rec.core.send_error(ErrorCode::InvalidState, "payment claim not settled yet");
            return Ok(vec![send]);
        }
        let (funding, amount_msat, count, invoice, settled) =
            (funding.clone(), *amount_msat, *coop_signatures, invoice.clone(), *claim_settled);
        let answer = req.tx().map_err(|e| e.to_string()).and_then(|tx| {
            let amount_sat = self.rec.quote.htlc_amount_sat;
            let (htlc, outpoint) = (self.htlc.as_ref().ok_or("no htlc yet")?, funding.outpoint);
            let who = Signer::Locker;
            self.live.cosign(htlc, who, tx, outpoint, amount_sat, &req.buyer_nonce, "claim", rng)
        });
        match answer {
            Ok((seller_nonce, partial_sig)) => {
                self.rec.state = SellerState::Paid {
                    funding,
                    amount_msat,
                    coop_signatures: count.saturating_add(1),
                    invoice,
                    claim_settled: settled,
                };
                let response = CoopClaimResponse { seller_nonce, partial_sig };
                let send = self.rec.core.send(Message::CoopClaimResponse(response));
                Ok(vec![Action::Persist, send])
            }
            Err(reason) => {
                let send = self.rec.core.send_error(ErrorCode::InvalidParams, reason);
                Ok(vec![Action::Persist, send])
            }
        }
    }

    fn start_coop_refund(&mut self, ctx: &Context, rng: &mut impl Rng) -> Actions {
        let SellerState::Funded { invoice, funding, refund_attempts, .. } = &self.rec.state else {
            return Ok(Vec::new());
        };
        let (invoice, funding, attempts) =
            (invoice.clone(), funding.clone(), refund_attempts.saturating_add(1));
        let (amount_sat, destination) =
            (self.rec.quote.htlc_amount_sat, self.rec.refund_destination.clone());
        let rate = self.refund_fee_rate(ctx, KEY_PATH_SPEND_VBYTES, None).unwrap_or(ctx.fee_rate);
        let (tx_hex, seller_nonce) = self.live.start_coop(
            self.htlc.as_ref().ok_or_else(no_htlc)?,
            Signer::Locker,
            funding.outpoint,
            amount_sat,
            destination,
            rate,
            rng,
        )?;
        let request = CoopRefundRequest { tx_hex, seller_nonce };
        self.go(SellerState::RefundingCooperatively {
            invoice,
            funding,
            deadline_secs: ctx.now_secs.saturating_add(COOP_TIMEOUT_SECS),
            attempts,
        })?;
        let send = self.rec.core.send(Message::CoopRefundRequest(request));
        Ok(vec![Action::Persist, send])
    }

    /// [`Event::UserScriptSpend`]: the refund leaf now when the timeout has come (without
    /// waiting on a cooperative refund asked of the buyer); a refund that is out goes out again.
    fn on_user_refund(&mut self, ctx: &Context) -> Actions {
        let timeout = self.timeout();
        match &self.rec.state {
            SellerState::Funded { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. } => {
                if ctx.tip_height < timeout {
                    return Err(SwapError::NotNow {
                        reason: format!(
                            "the refund leaf is valid from block {timeout} ({} blocks from now); \
                             the node refunds then, or before cooperatively if the {} signs",
                            timeout - ctx.tip_height,
                            self.claimer()
                        ),
                    });
                }
                let funding = funding.clone();
                self.live.coop = Ephemeral(None);
                let rate = self
                    .refund_fee_rate(ctx, REFUND_SCRIPT_PATH_VBYTES, None)
                    .unwrap_or(ctx.fee_rate);
                let (tx, fee_sat) = self.script_refund(&funding, rate)?;
                self.broadcast_refund(funding, tx, fee_sat, TxPurpose::ScriptRefund, ctx)
            }
            SellerState::Refunding { funding, refund_tx, purpose, .. } => {
                let mut actions = Vec::new();
                if funding.confirmed_height.is_none() {
                    let tx = funding.tx.clone();
                    actions.push(Action::Broadcast { tx, purpose: TxPurpose::Funding });
                }
                actions.push(Action::Broadcast { tx: refund_tx.clone(), purpose: *purpose });
                Ok(actions)
            }
            SellerState::Requested
            | SellerState::AwaitingInvoice
            | SellerState::Accepted { .. } => {
                Err(SwapError::NotNow { reason: "nothing is locked yet: abort the swap".into() })
            }
            SellerState::Paid { .. } | SellerState::Claimed { .. } => Err(SwapError::NotNow {
                reason: format!("the {0} paid: the HTLC is the {0}'s to claim", self.claimer()),
            }),
            _ => Err(SwapError::NotNow { reason: "the swap is over".into() }),
        }
    }

    fn broadcast_refund(
        &mut self,
        funding: Funding,
        refund_tx: Transaction,
        fee_sat: u64,
        purpose: TxPurpose,
        ctx: &Context,
    ) -> Actions {
        let sent_height = ctx.tip_height;
        self.go(SellerState::Refunding {
            funding,
            refund_tx: refund_tx.clone(),
            purpose,
            sent_height,
        })?;
        Ok(self.live.broadcast(refund_tx, purpose, fee_sat, ctx.tip_height))
    }

    /// The fee rate of a refund of `vsize` built now (`outstanding: None`) or replacing the one
    /// that is out; `None`: keep it. A refund has no deadline (only the seller can take the
    /// HTLC back): its rate follows the estimate for the refund target under the node's cap.
    fn refund_fee_rate(
        &self,
        ctx: &Context,
        vsize: u64,
        outstanding: Option<Outstanding>,
    ) -> Option<FeeRate> {
        let spend = SpendFee {
            value_sat: self.rec.quote.htlc_amount_sat,
            vsize,
            target: ctx.fees.refund_target,
            blocks_left: None,
            cap: ctx.fees.max_rate,
        };
        spend_fee_rate(&ctx.fees.estimates, &spend, outstanding)
    }

    /// The script-path refund at `rate` (valid from the timeout on).
    fn script_refund(
        &self,
        funding: &Funding,
        rate: FeeRate,
    ) -> Result<(Transaction, u64), SwapError> {
        let keys = self.keys();
        let tx = crate::spend::refund_script_path(
            self.contract()?,
            funding.outpoint,
            Amount::from_sat(self.rec.quote.htlc_amount_sat),
            keys.refund(),
            self.rec.refund_destination.clone(),
            rate,
        )
        .map_err(internal)?;
        let fee_sat = crate::shared::spend_fee(&tx, self.rec.quote.htlc_amount_sat);
        Ok((tx, fee_sat))
    }

    /// In `Refunding`, at a tick from the timeout on: when a block came without our refund and
    /// the fee rule asks for more, a script-path refund paying more replaces it (a cooperative
    /// one too). Before the timeout a cooperative refund is only rebroadcast. Persisted before
    /// it is broadcast. `None`: keep the refund that is out.
    fn bump_refund(&mut self, ctx: &Context) -> Option<Actions> {
        let SellerState::Refunding { funding, refund_tx, sent_height, .. } = &self.rec.state else {
            return None;
        };
        if ctx.tip_height < self.timeout() {
            return None;
        }
        let value_sat = self.rec.quote.htlc_amount_sat;
        let out = outstanding(refund_tx, value_sat, *sent_height, ctx.tip_height);
        let rate = self.refund_fee_rate(ctx, REFUND_SCRIPT_PATH_VBYTES, Some(out))?;
        let replaces = refund_tx.compute_txid();
        let funding = funding.clone();
        let result = self.script_refund(&funding, rate).map(|(tx, fee_sat)| {
            if let SellerState::Refunding { refund_tx, purpose, sent_height, .. } =
                &mut self.rec.state
            {
                *refund_tx = tx.clone();
                *purpose = TxPurpose::ScriptRefund;
                *sent_height = ctx.tip_height;
            }
            self.live.replace(tx, replaces, TxPurpose::ScriptRefund, fee_sat, ctx.tip_height)
        });
        Some(result)
    }

    /// When the invoice expires (unix seconds), decoded once it exists (the swap's one invoice
    /// never changes).
    fn invoice_expiry(&mut self) -> Option<u64> {
        if self.invoice_expiry.is_none() {
            self.invoice_expiry = self.rec.invoice_expires_at();
        }
        self.invoice_expiry
    }

    fn handle_tick(&mut self, ctx: &Context, rng: &mut impl Rng) -> Actions {
        if self.recorded_spend().is_some() {
            // A spend of the HTLC is in the chain: nothing to broadcast or replace (a payment's
            // claim is still looked after); the swap ends once it is final.
            let mut actions = self.finish_at_depth(ctx)?;
            if actions.is_empty() && matches!(self.rec.state, SellerState::Paid { .. }) {
                actions = self.tick_state(ctx, rng)?;
            }
            return Ok(actions);
        }
        self.tick_state(ctx, rng)
    }

    fn tick_state(&mut self, ctx: &Context, rng: &mut impl Rng) -> Actions {
        let expired_unpaid = matches!(self.rec.state, SellerState::Funded { .. })
            && self
                .invoice_expiry()
                .is_some_and(|at| ctx.now_secs >= at.saturating_add(EXPIRED_INVOICE_REFUND_SECS));
        match &self.rec.state {
            SellerState::Requested
                if ctx.now_secs
                    >= self.rec.core.created_at.saturating_add(
                        self.rec.limits.unwrap_or_default().request_timeout_secs,
                    ) =>
            {
                // Loop in: the maker never answered; nothing was locked.
                self.abort(AbortReason::FundingTimeout, Some("no swap_accept in time".into()))
            }
            SellerState::RefundingCooperatively { invoice, funding, deadline_secs, attempts }
                if ctx.now_secs >= *deadline_secs =>
            {
                let to = SellerState::Funded {
                    invoice: invoice.clone(),
                    funding: funding.clone(),
                    refund_attempts: *attempts,
                    refund_retry_at_secs: ctx.now_secs.saturating_add(COOP_REFUND_RETRY_SECS),
                };
                self.live.coop = Ephemeral(None);
                self.go(to)?;
                let reason = format!("no cooperative refund from the {} in time", self.claimer());
                let mut actions = vec![
                    Action::Persist,
                    Action::Notify(Notification::CooperationFailed { reason }),
                ];
                actions.extend(self.handle_tick(ctx, rng)?);
                Ok(actions)
            }
            SellerState::Funded { funding, .. } if ctx.tip_height >= self.timeout() => {
                let funding = funding.clone();
                let rate = self
                    .refund_fee_rate(ctx, REFUND_SCRIPT_PATH_VBYTES, None)
                    .unwrap_or(ctx.fee_rate);
                let (tx, fee_sat) = self.script_refund(&funding, rate)?;
                self.broadcast_refund(funding, tx, fee_sat, TxPurpose::ScriptRefund, ctx)
            }
            SellerState::AwaitingInvoice | SellerState::Accepted { .. }
                if ctx.tip_height.saturating_add(self.rec.core.offer.claim_margin)
                    >= self.timeout() =>
            {
                self.abort(AbortReason::TimeoutTooClose, Some("funding never happened".into()))
            }
            SellerState::Accepted { prepay: Some(p), .. }
                if !p.paid && ctx.now_secs >= p.expires_at_secs =>
            {
                // Nothing was locked: the swap just ends.
                self.abort(
                    AbortReason::PaymentFailed,
                    Some("the prepay was not paid before its invoice expired".into()),
                )
            }
            SellerState::Funded { refund_attempts: 0, .. } if expired_unpaid => {
                // The invoice expired unpaid: the coins need not wait for the timeout. A buyer
                // that is there signs (it never does once it has paid); a silent one leaves the
                // refund leaf at the timeout.
                self.start_coop_refund(ctx, rng)
            }
            SellerState::Funded { refund_attempts, refund_retry_at_secs, .. }
                if *refund_attempts > 0
                    && *refund_attempts < MAX_COOP_REFUND_ATTEMPTS
                    && ctx.now_secs >= *refund_retry_at_secs =>
            {
                // The buyer aborted but did not answer in time: ask again, after the last request
                // (if it was lost, it holds up the buyer's in-order inbox; the buyer drops a
                // message it has seen).
                let mut actions: Vec<Action> = self
                    .rec
                    .core
                    .outbox
                    .sent
                    .last()
                    .cloned()
                    .map(Action::Send)
                    .into_iter()
                    .collect();
                actions.extend(self.start_coop_refund(ctx, rng)?);
                Ok(actions)
            }
            SellerState::Funded { funding, .. } if funding.confirmed_height.is_none() => {
                Ok(self.live.rebroadcast(ctx.tip_height, &funding.tx, TxPurpose::Funding))
            }
            SellerState::Refunding { funding, refund_tx, purpose, .. } => {
                // A funding that never reached the chain (its broadcasts failed) goes out again
                // before the refund that spends it: without it the refund is refused forever.
                let parent = (funding.confirmed_height.is_none()).then(|| Action::Broadcast {
                    tx: funding.tx.clone(),
                    purpose: TxPurpose::Funding,
                });
                let (refund_tx, purpose) = (refund_tx.clone(), *purpose);
                // A replacement that cannot be built (dust at that rate) leaves the refund
                // that is out.
                let refund = match self.bump_refund(ctx) {
                    Some(Ok(bumped)) => bumped,
                    _ => self.live.rebroadcast(ctx.tip_height, &refund_tx, purpose),
                };
                if refund.is_empty() {
                    return Ok(refund);
                }
                Ok(parent.into_iter().chain(refund).collect())
            }
            SellerState::Paid { funding, claim_settled, .. } => {
                let mut actions = Vec::new();
                // Paid for: a funding reorganised out and dropped goes out again every block
                // until it confirms (the claimer's claim spends it; only a double spend, the
                // residual risk its confirmations bought, may take it away).
                if funding.confirmed_height.is_none() {
                    actions.extend(self.live.rebroadcast(
                        ctx.tip_height,
                        &funding.tx,
                        TxPurpose::Funding,
                    ));
                }
                if !*claim_settled && ctx.now_secs >= self.claim_check_at_secs {
                    self.claim_check_at_secs = ctx.now_secs.saturating_add(CLAIM_CHECK_SECS);
                    actions.push(Action::CheckPayment { payment_hash: self.payment_hash() });
                }
                Ok(actions)
            }
            _ => Ok(Vec::new()),
        }
    }
}
