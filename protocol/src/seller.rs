//! The seller's side of a loop out (spec `02-swap-flow.md`, "Seller").
//!
//! ```text
//! AwaitingInvoice -> Accepted (-> prepay received) -> Funded -> Paid (point of no return) -> Claimed
//!                        |          |-> RefundingCooperatively -> Refunding -> Refunded
//!                        |          '-> Refunding (timeout) ----------------^
//!                        '-> Aborted
//! ```

use core::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use serde::{Deserialize, Serialize};

use crate::fees::{spend_fee_rate, Outstanding, SpendFee};
use crate::htlc::{Htlc, HtlcParams, HtlcSpendPath};
use crate::keys::SwapKeys;
use crate::messages::{
    AbortReason, CoopClaimRequest, CoopClaimResponse, CoopRefundRequest, ErrorCode, ErrorMessage,
    Message, Offer, SwapAccept, SwapFunded, SwapRequest,
};
use crate::musig::Signer;
use crate::shared::{
    core_accessors, internal, outstanding, spend_is_ours, swap_api, variant_field, Actions,
    CoreRecord, Ephemeral, Live, Rng,
};
use crate::spend::{KEY_PATH_SPEND_VBYTES, REFUND_SCRIPT_PATH_VBYTES};
use crate::swap::{
    Action, Context, Event, Inbox, Notification, Outbox, PaymentStatus, SwapError, TxPurpose,
    COOP_TIMEOUT_SECS, SECS_PER_BLOCK,
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
}

/// The seller's states. Each carries what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SellerState {
    /// Request accepted; the invoice is being created.
    AwaitingInvoice,
    /// `swap_accept` sent; the funding transaction is being built (with a prepay: once it is
    /// received).
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

/// A seller's swap as stored (the `swap` of a [`crate::record::SwapRecord`]): everything but the
/// keys, which derive again from [`SellerRecord::key_index`], and the memory-only MuSig2
/// session. [`SellerSwap::load`] makes it a running swap again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SellerRecord {
    #[serde(flatten)]
    core: CoreRecord,
    /// The buyer's request.
    request: SwapRequest,
    /// The quote.
    quote: Quote,
    /// The HTLC parameters.
    htlc_params: HtlcParams,
    /// Where refunds go.
    refund_destination: ScriptBuf,
    /// Policy.
    policy: SellerPolicy,
    /// The state.
    state: SellerState,
}

impl SellerRecord {
    core_accessors!();

    /// The state.
    pub fn state(&self) -> &SellerState {
        &self.state
    }

    /// When the swap's invoice expires (unix seconds), once it was created: the buyer stops
    /// waiting for the funding then.
    pub fn invoice_expires_at(&self) -> Option<u64> {
        match &self.state {
            SellerState::Accepted { invoice, .. }
            | SellerState::Funded { invoice, .. }
            | SellerState::RefundingCooperatively { invoice, .. } => invoice_expired_at(invoice),
            _ => None,
        }
    }

    /// The buyer's request.
    pub fn request(&self) -> &SwapRequest {
        &self.request
    }

    /// The quote.
    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    /// The HTLC parameters.
    pub fn htlc_params(&self) -> &HtlcParams {
        &self.htlc_params
    }

    /// Where refunds go.
    pub fn refund_destination(&self) -> &ScriptBuf {
        &self.refund_destination
    }

    /// The policy.
    pub fn policy(&self) -> &SellerPolicy {
        &self.policy
    }

    /// The payment hash.
    pub fn payment_hash(&self) -> PaymentHash {
        self.htlc_params.payment_hash
    }

    /// The prepay invoice's payment hash, while the swap waits for it.
    pub fn prepay_hash(&self) -> Option<PaymentHash> {
        match &self.state {
            SellerState::Accepted { prepay: Some(p), .. } => Some(p.payment_hash),
            _ => None,
        }
    }
}

/// One loop out, seller side: its [`SellerRecord`] (read through `Deref`; only the state machine
/// changes it), its keys and the memory-only MuSig2 session of a cooperative refund.
#[derive(Debug, Clone)]
pub struct SellerSwap {
    rec: SellerRecord,
    live: Live,
    htlc: Htlc,
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
    let half_timeout_secs = u64::from(offer.timeout_delta) * SECS_PER_BLOCK / 2;
    u32::try_from(half_timeout_secs.min(u64::from(offer.invoice_expiry_secs)))
        .unwrap_or(offer.invoice_expiry_secs)
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
        if request.offer_id != offer.offer_id {
            return Err(err(ErrorCode::UnknownOffer, format!("no offer {}", request.offer_id)));
        }
        if offer.is_expired(ctx.now_secs) {
            return Err(err(ErrorCode::UnknownOffer, "offer expired"));
        }
        if request.direction != SwapDirection::LoopOut || offer.direction != SwapDirection::LoopOut
        {
            return Err(err(ErrorCode::InvalidParams, "only loop_out is supported"));
        }
        if request.network != offer.network {
            return Err(err(ErrorCode::InvalidParams, "network does not match the offer"));
        }
        let quote = Quote::compute(&offer, request.amount_sat)
            .map_err(|e| err(ErrorCode::AmountOutOfRange, e))?;
        if quote.prepay_sat > 0 && !request.prepay_accepted {
            return Err(err(
                ErrorCode::InvalidParams,
                format!("the offer asks for a prepay of {} sat", quote.prepay_sat),
            ));
        }
        if quote.fee_sat() > request.max_total_fee_sat {
            return Err(err(
                ErrorCode::InvalidParams,
                format!(
                    "fee {} sat exceeds max_total_fee_sat {}",
                    quote.fee_sat(),
                    request.max_total_fee_sat
                ),
            ));
        }
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
        let expiry_secs = invoice_expiry_secs(&offer);
        let amount_msat = quote.invoice_amount_sat.saturating_mul(1000);
        let core = CoreRecord {
            swap_id,
            key_index: keys.index(),
            peer,
            offer,
            created_at: ctx.now_secs,
            inbox: Inbox { next_seq: 1, early: Vec::new() },
            outbox: Outbox::default(),
        };
        let rec = SellerRecord {
            core,
            request,
            quote,
            htlc_params,
            refund_destination,
            policy,
            state: SellerState::AwaitingInvoice,
        };
        let swap = SellerSwap {
            rec,
            live: Live::new(keys),
            htlc,
            claim_check_at_secs: 0,
            invoice_expiry: None,
        };
        let actions = vec![Action::Persist, swap.create_invoice(amount_msat, expiry_secs)];
        Ok((swap, actions))
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
    fn fund_htlc(&self) -> Action {
        Action::FundHtlc {
            script_pubkey: self.htlc.script_pubkey().to_owned(),
            amount_sat: self.rec.quote.htlc_amount_sat,
        }
    }

    /// The HTLC.
    pub fn htlc(&self) -> &Htlc {
        &self.htlc
    }

    /// Loads a stored swap with its keys (derived again from [`SellerRecord::key_index`]); then
    /// [`SellerSwap::resume`] gives the actions to take at start-up.
    ///
    /// # Errors
    /// [`SwapError::WrongKeys`] when the keys are not the ones the swap was made with;
    /// [`SwapError::Internal`] when the record's HTLC does not build.
    pub fn load(record: SellerRecord, keys: SwapKeys) -> Result<Self, SwapError> {
        if keys.index() != record.core.key_index
            || keys.musig_pubkey() != record.htlc_params.locker_musig_key
            || keys.payment_hash() != record.htlc_params.payment_hash
        {
            return Err(SwapError::WrongKeys { key_index: record.core.key_index });
        }
        let htlc = Htlc::new(record.htlc_params.clone()).map_err(internal)?;
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
        let htlc = self.htlc.clone();
        match &self.rec.state {
            SellerState::AwaitingInvoice => {
                actions.push(self.create_invoice(
                    self.rec.quote.invoice_amount_sat.saturating_mul(1000),
                    invoice_expiry_secs(&self.rec.core.offer),
                ));
            }
            SellerState::Accepted { prepay, .. } => {
                actions.push(Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() });
                match prepay {
                    // Received while we were down (or before the record said so): ask.
                    Some(p) if !p.paid => {
                        actions.push(Action::CheckPayment { payment_hash: p.payment_hash });
                    }
                    _ => actions.push(self.fund_htlc()),
                }
            }
            SellerState::Funded { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. } => {
                actions.push(Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() });
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
                actions.push(Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() });
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
                actions.push(Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() });
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
            Event::HtlcSpent { tx, confirmed_height } => self.on_htlc_spent(tx, confirmed_height),
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
                // Reorganised out: rebroadcast every block until it confirms again.
                Some(f) if f.outpoint == outpoint && f.confirmed_height.is_some() => {
                    f.confirmed_height = None;
                    self.live.broadcast_height = 0;
                    Ok(vec![Action::Persist])
                }
                _ => Ok(Vec::new()),
            },
            Event::HtlcChecked { .. } => Ok(Vec::new()),
            Event::UserAbort => match self.rec.state {
                SellerState::AwaitingInvoice | SellerState::Accepted { .. } => {
                    self.abort(AbortReason::UserRequested, None)
                }
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
            SellerState::AwaitingInvoice | SellerState::Accepted { .. } => {}
            _ => {
                return Err(SwapError::Unexpected { event: "abort", state: self.rec.state.name() })
            }
        }
        self.go(SellerState::Aborted { reason, message: message.clone() })?;
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
        let htlc = self.htlc.clone();
        let keys = self.keys();
        let accept = SwapAccept {
            invoice: invoice.clone(),
            payment_hash: self.payment_hash(),
            seller_musig_pubkey: keys.musig_pubkey(),
            seller_refund_pubkey: keys.refund_pubkey(),
            timeout_height: self.rec.htlc_params.timeout_height,
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
            actions.push(self.fund_htlc());
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
            self.fund_htlc(),
        ])
    }

    fn on_funding_built(&mut self, tx: Transaction, vout: u32) -> Actions {
        let SellerState::Accepted { invoice, .. } = &self.rec.state else {
            // Aborted meanwhile, or a duplicate: the transaction is never broadcast.
            return Ok(Vec::new());
        };
        let htlc = self.htlc();
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
        };
        let msg = SwapFunded::new(&funding.tx, vout);
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
        let in_time = ctx.tip_height.saturating_add(self.rec.core.offer.claim_margin)
            <= self.rec.htlc_params.timeout_height;
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

    fn on_htlc_spent(&mut self, tx: Transaction, confirmed_height: Option<u32>) -> Actions {
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
        let Some(ours) =
            spend_is_ours(&self.htlc, &tx, funding.outpoint, HtlcSpendPath::RefundLeaf, |tx| {
                refunding == Some(txid) || tx.output.iter().any(|o| o.script_pubkey == *destination)
            })
        else {
            return Ok(Vec::new());
        };
        let Some(_) = confirmed_height else { return Ok(Vec::new()) };
        let amount_msat = match &self.rec.state {
            SellerState::Paid { amount_msat, .. } => *amount_msat,
            _ => 0,
        };
        let next = if ours {
            SellerState::Refunded { funding, refund_txid: txid }
        } else {
            SellerState::Claimed { funding, claim_txid: txid, amount_msat }
        };
        if next.name() == self.rec.state.name() {
            return Ok(Vec::new());
        }
        self.go(next)?;
        Ok(vec![Action::Persist, self.finished()])
    }

    fn handle_message(&mut self, body: Message, ctx: &Context, rng: &mut impl Rng) -> Actions {
        match body {
            Message::SwapAbort(abort) => {
                let note = Action::Notify(Notification::Aborted {
                    reason: abort.reason,
                    message: abort.message.clone(),
                });
                let mut actions = match self.rec.state {
                    SellerState::AwaitingInvoice | SellerState::Accepted { .. } => {
                        self.go(SellerState::Aborted {
                            reason: abort.reason,
                            message: abort.message,
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
            Message::SwapRequest(_) => Ok(Vec::new()),
            other => Ok(vec![self.rec.core.refuse_unexpected(&other, "buyer")]),
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
            let (htlc, outpoint) = (&self.htlc, funding.outpoint);
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
            &self.htlc,
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
        let timeout = self.rec.htlc_params.timeout_height;
        match &self.rec.state {
            SellerState::Funded { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. } => {
                if ctx.tip_height < timeout {
                    return Err(SwapError::NotNow {
                        reason: format!(
                            "the refund leaf is valid from block {timeout} ({} blocks from now); \
                             the node refunds then, or before cooperatively if the buyer signs",
                            timeout - ctx.tip_height
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
            SellerState::AwaitingInvoice | SellerState::Accepted { .. } => {
                Err(SwapError::NotNow { reason: "nothing is locked yet: abort the swap".into() })
            }
            SellerState::Paid { .. } | SellerState::Claimed { .. } => Err(SwapError::NotNow {
                reason: "the buyer paid: the HTLC is the buyer's to claim".into(),
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
            &self.htlc,
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
        if ctx.tip_height < self.rec.htlc_params.timeout_height {
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
        let expired_unpaid = matches!(self.rec.state, SellerState::Funded { .. })
            && self
                .invoice_expiry()
                .is_some_and(|at| ctx.now_secs >= at.saturating_add(EXPIRED_INVOICE_REFUND_SECS));
        match &self.rec.state {
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
                let mut actions = vec![
                    Action::Persist,
                    Action::Notify(Notification::CooperationFailed {
                        reason: "no cooperative refund from the buyer in time".into(),
                    }),
                ];
                actions.extend(self.handle_tick(ctx, rng)?);
                Ok(actions)
            }
            SellerState::Funded { funding, .. }
                if ctx.tip_height >= self.rec.htlc_params.timeout_height =>
            {
                let funding = funding.clone();
                let rate = self
                    .refund_fee_rate(ctx, REFUND_SCRIPT_PATH_VBYTES, None)
                    .unwrap_or(ctx.fee_rate);
                let (tx, fee_sat) = self.script_refund(&funding, rate)?;
                self.broadcast_refund(funding, tx, fee_sat, TxPurpose::ScriptRefund, ctx)
            }
            SellerState::AwaitingInvoice | SellerState::Accepted { .. }
                if ctx.tip_height.saturating_add(self.rec.core.offer.claim_margin)
                    >= self.rec.htlc_params.timeout_height =>
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
            SellerState::Paid { claim_settled: false, .. }
                if ctx.now_secs >= self.claim_check_at_secs =>
            {
                self.claim_check_at_secs = ctx.now_secs.saturating_add(CLAIM_CHECK_SECS);
                Ok(vec![Action::CheckPayment { payment_hash: self.payment_hash() }])
            }
            _ => Ok(Vec::new()),
        }
    }
}
