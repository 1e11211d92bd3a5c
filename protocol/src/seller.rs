//! The seller's side of a loop out (spec `02-swap-flow.md`, "Seller").
//!
//! ```text
//! AwaitingInvoice -> Accepted -> Funded -> Paid (point of no return) -> Claimed
//!                        |          |-> RefundingCooperatively -> Refunding -> Refunded
//!                        |          '-> Refunding (timeout) ----------------^
//!                        '-> Aborted
//! ```

use bitcoin::secp256k1::rand::{CryptoRng, RngCore};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, Txid};
use serde::{Deserialize, Serialize};

use crate::htlc::{Htlc, HtlcParams, HtlcSpendPath};
use crate::keys::SwapKeys;
use crate::messages::{
    AbortReason, CoopClaimRequest, CoopClaimResponse, CoopRefundRequest, ErrorCode, ErrorMessage,
    Message, Offer, PartialSigBytes, PubNonceBytes, SwapAbort, SwapAccept, SwapFunded, SwapRequest,
};
use crate::musig::{self, InitiatorSession, Signer};
use crate::spend::{HtlcInput, SpendPath, SpendTx};
use musig2::BinaryEncoding;

use crate::swap::{
    check_transition, persist_first, rebroadcast, Action, Context, Ephemeral, Event, Inbox,
    Notification, Outbox, PaymentStatus, StateKind, SwapError, Transition, TxPurpose,
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

/// Seconds between two looks at a claim that has not settled yet (`Paid`).
pub const CLAIM_CHECK_SECS: u64 = 30;

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
pub enum SellerState {
    /// Request accepted; the invoice is being created.
    AwaitingInvoice,
    /// `swap_accept` sent; the funding transaction is being built.
    Accepted {
        /// The BOLT11 invoice.
        invoice: String,
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
        /// The refund.
        refund_tx: Transaction,
        /// Which path.
        purpose: TxPurpose,
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
    /// The state's name, as in the transition table and the spec.
    pub fn name(&self) -> &'static str {
        match self {
            SellerState::AwaitingInvoice => "AwaitingInvoice",
            SellerState::Accepted { .. } => "Accepted",
            SellerState::Funded { .. } => "Funded",
            SellerState::Paid { .. } => "Paid",
            SellerState::Claimed { .. } => "Claimed",
            SellerState::RefundingCooperatively { .. } => "RefundingCooperatively",
            SellerState::Refunding { .. } => "Refunding",
            SellerState::Refunded { .. } => "Refunded",
            SellerState::Aborted { .. } => "Aborted",
        }
    }

    /// Pending, succeeded or failed.
    pub fn kind(&self) -> StateKind {
        match self {
            SellerState::Claimed { .. } => StateKind::Succeeded,
            SellerState::Refunded { .. } | SellerState::Aborted { .. } => StateKind::Failed,
            _ => StateKind::Pending,
        }
    }

    fn funding(&self) -> Option<&Funding> {
        match self {
            SellerState::Funded { funding, .. }
            | SellerState::Paid { funding, .. }
            | SellerState::Claimed { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. }
            | SellerState::Refunding { funding, .. }
            | SellerState::Refunded { funding, .. } => Some(funding),
            _ => None,
        }
    }

    fn funding_mut(&mut self) -> Option<&mut Funding> {
        match self {
            SellerState::Funded { funding, .. }
            | SellerState::Paid { funding, .. }
            | SellerState::Claimed { funding, .. }
            | SellerState::RefundingCooperatively { funding, .. }
            | SellerState::Refunding { funding, .. }
            | SellerState::Refunded { funding, .. } => Some(funding),
            _ => None,
        }
    }
}

/// The seller's transition table (the diagrams in `spec/diagrams/` are generated from it).
pub const SELLER_TRANSITIONS: &[Transition] = &[
    ("AwaitingInvoice", "Accepted", "invoice created / send swap_accept, fund"),
    ("AwaitingInvoice", "Aborted", "swap_abort"),
    ("Accepted", "Funded", "funding built / persist, broadcast, send swap_funded"),
    ("Accepted", "Aborted", "swap_abort or funding failed"),
    ("Funded", "Paid", "payment claimable in time / claim it"),
    ("Funded", "RefundingCooperatively", "swap_abort / send coop_refund_request"),
    ("Funded", "Refunding", "tip >= timeout / refund leaf"),
    ("Funded", "Claimed", "htlc claimed (preimage leaked)"),
    ("RefundingCooperatively", "Refunding", "coop_refund_response / broadcast"),
    ("RefundingCooperatively", "Funded", "no answer in 30 s or bad signature"),
    ("Paid", "Claimed", "claim confirmed"),
    ("Paid", "Funded", "the claim never settled (payment failed back) / refundable again"),
    ("Refunding", "Refunded", "refund confirmed"),
    ("Refunding", "Claimed", "buyer's claim confirmed first"),
];

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

/// One loop out, seller side. Serializes to its record; the keys are derived again from
/// `key_index` on restore and never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SellerSwap {
    /// The swap id (chosen by the buyer).
    pub swap_id: SwapId,
    /// The swap-key index (the keys derive from the seed with it).
    pub key_index: u32,
    /// The buyer (Nostr public key, hex).
    pub peer: String,
    /// The offer taken.
    pub offer: Offer,
    /// The buyer's request.
    pub request: SwapRequest,
    /// The quote.
    pub quote: Quote,
    /// The HTLC parameters.
    pub htlc_params: HtlcParams,
    /// Where refunds go.
    pub refund_destination: ScriptBuf,
    /// Policy.
    pub policy: SellerPolicy,
    /// When the request came (unix seconds).
    pub created_at: u64,
    /// The buyer's messages, in order.
    pub inbox: Inbox,
    /// Our messages.
    pub outbox: Outbox,
    /// The state.
    pub state: SellerState,
    #[serde(skip)]
    keys: Option<SwapKeys>,
    #[serde(skip)]
    htlc: Option<Htlc>,
    #[serde(skip)]
    refund_session: Ephemeral<(InitiatorSession, SpendTx)>,
    /// Tip height of the last broadcast of the funding or refund (rebroadcast once per block
    /// until confirmed).
    #[serde(skip)]
    broadcast_height: u32,
    /// When an unsettled claim is looked at next (`Paid`; unix seconds).
    #[serde(skip)]
    claim_check_at_secs: u64,
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
        if quote.prepay_sat > 0 {
            return Err(err(ErrorCode::InvalidParams, "prepay offers are not served yet"));
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
            buyer_claim_key: request.buyer_claim_pubkey,
            seller_refund_key: keys.refund_pubkey(),
            seller_musig_key: keys.musig_pubkey(),
            buyer_musig_key: request.buyer_musig_pubkey,
            timeout_height,
            network: offer.network,
        };
        let htlc = Htlc::new_at(htlc_params.clone(), ctx.tip_height)
            .map_err(|e| err(ErrorCode::InvalidParams, e))?;
        let expiry_secs = invoice_expiry_secs(&offer);
        let amount_msat = quote.invoice_amount_sat.saturating_mul(1000);
        let swap = SellerSwap {
            swap_id,
            key_index: keys.index(),
            peer,
            offer,
            request,
            quote,
            htlc_params,
            refund_destination,
            policy,
            created_at: ctx.now_secs,
            inbox: Inbox { next_seq: 1, early: Vec::new() },
            outbox: Outbox::default(),
            state: SellerState::AwaitingInvoice,
            keys: Some(keys),
            htlc: Some(htlc),
            refund_session: Ephemeral(None),
            broadcast_height: 0,
            claim_check_at_secs: 0,
        };
        let actions = vec![
            Action::Persist,
            Action::CreateInvoice {
                payment_hash: swap.htlc_params.payment_hash,
                amount_msat,
                expiry_secs,
                description: format!("looper swap {}", swap.swap_id),
            },
        ];
        Ok((swap, actions))
    }

    /// Re-attaches the keys after loading the record, checking they are this swap's.
    ///
    /// # Errors
    /// [`SwapError::Internal`] when the keys are not the ones the swap was made with.
    pub fn attach_keys(&mut self, keys: SwapKeys) -> Result<(), SwapError> {
        if keys.index() != self.key_index
            || keys.musig_pubkey() != self.htlc_params.seller_musig_key
            || keys.payment_hash() != self.htlc_params.payment_hash
        {
            return Err(SwapError::Internal("keys do not belong to this swap".into()));
        }
        self.htlc = Some(
            Htlc::new(self.htlc_params.clone()).map_err(|e| SwapError::Internal(e.to_string()))?,
        );
        self.keys = Some(keys);
        Ok(())
    }

    /// The HTLC.
    ///
    /// # Errors
    /// When the keys were not attached after a restore.
    pub fn htlc(&self) -> Result<&Htlc, SwapError> {
        self.htlc.as_ref().ok_or_else(|| SwapError::Internal("keys not attached".into()))
    }

    fn keys(&self) -> Result<&SwapKeys, SwapError> {
        self.keys.as_ref().ok_or_else(|| SwapError::Internal("keys not attached".into()))
    }

    /// The payment hash.
    pub fn payment_hash(&self) -> PaymentHash {
        self.htlc_params.payment_hash
    }

    /// Pending, succeeded or failed.
    pub fn kind(&self) -> StateKind {
        self.state.kind()
    }

    fn go(&mut self, to: SellerState) -> Result<(), SwapError> {
        check_transition(SELLER_TRANSITIONS, self.state.name(), to.name())?;
        self.state = to;
        Ok(())
    }

    fn finished(&self) -> Action {
        Action::Notify(Notification::Finished {
            state: self.state.name().to_string(),
            kind: self.state.kind(),
        })
    }

    /// Actions to take after loading the record at start-up: re-send our messages, re-broadcast
    /// our transactions, re-ask for what was in flight.
    ///
    /// # Errors
    /// When the keys are not attached.
    pub fn resume<R: RngCore + CryptoRng>(
        &mut self,
        ctx: &Context,
        rng: &mut R,
    ) -> Result<Vec<Action>, SwapError> {
        let htlc = self.htlc()?.clone();
        let mut actions = self.outbox.resend_all();
        match &self.state {
            SellerState::AwaitingInvoice => {
                actions.push(Action::CreateInvoice {
                    payment_hash: self.payment_hash(),
                    amount_msat: self.quote.invoice_amount_sat.saturating_mul(1000),
                    expiry_secs: invoice_expiry_secs(&self.offer),
                    description: format!("looper swap {}", self.swap_id),
                });
            }
            SellerState::Accepted { .. } => {
                actions.push(Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() });
                actions.push(Action::FundHtlc {
                    script_pubkey: htlc.script_pubkey().to_owned(),
                    amount_sat: self.quote.htlc_amount_sat,
                });
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
                    &self.state
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
                        preimage: self.keys()?.preimage().clone(),
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
        actions.extend(self.handle_tick(ctx, rng)?);
        Ok(actions)
    }

    /// Feeds one event.
    ///
    /// # Errors
    /// [`SwapError`] when the event does not fit; the state is then unchanged.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        event: Event,
        ctx: &Context,
        rng: &mut R,
    ) -> Result<Vec<Action>, SwapError> {
        match event {
            Event::Message(env) => {
                let mut actions = Vec::new();
                for env in self.inbox.accept_for(self.swap_id, env)? {
                    actions.extend(self.handle_message(env.body, ctx, rng)?);
                }
                Ok(persist_first(actions))
            }
            Event::Tick => self.handle_tick(ctx, rng),
            Event::InvoiceCreated { invoice } => self.on_invoice(invoice),
            Event::FundingBuilt { tx, vout } => self.on_funding_built(tx, vout),
            Event::FundingFailed { reason } => self.abort(AbortReason::Internal, Some(reason)),
            Event::HtlcOutput { outpoint, confirmed_height, .. } => {
                match self.state.funding_mut() {
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
                if payment_hash != self.payment_hash() {
                    return Ok(Vec::new());
                }
                self.on_claim_settled()
            }
            Event::PaymentStatus { payment_hash, status } => {
                if payment_hash != self.payment_hash() {
                    return Ok(Vec::new());
                }
                self.on_payment_status(status)
            }
            Event::HtlcGone { outpoint } => match self.state.funding_mut() {
                // Reorganised out: rebroadcast every block until it confirms again.
                Some(f) if f.outpoint == outpoint && f.confirmed_height.is_some() => {
                    f.confirmed_height = None;
                    self.broadcast_height = 0;
                    Ok(vec![Action::Persist])
                }
                _ => Ok(Vec::new()),
            },
            Event::HtlcChecked { .. } => Ok(Vec::new()),
            Event::UserAbort => match self.state {
                SellerState::AwaitingInvoice | SellerState::Accepted { .. } => {
                    self.abort(AbortReason::UserRequested, None)
                }
                SellerState::Funded { .. } => self.start_coop_refund(ctx, rng),
                _ => Err(SwapError::Unexpected { event: "user_abort", state: self.state.name() }),
            },
            Event::PaymentSucceeded { .. }
            | Event::PaymentFailed { .. }
            | Event::PaymentNotSent { .. } => {
                Err(SwapError::Unexpected { event: "payment_result", state: self.state.name() })
            }
        }
    }

    fn abort(
        &mut self,
        reason: AbortReason,
        message: Option<String>,
    ) -> Result<Vec<Action>, SwapError> {
        match self.state {
            SellerState::AwaitingInvoice | SellerState::Accepted { .. } => {}
            _ => return Err(SwapError::Unexpected { event: "abort", state: self.state.name() }),
        }
        self.go(SellerState::Aborted { reason, message: message.clone() })?;
        let send = self
            .outbox
            .send(self.swap_id, Message::SwapAbort(SwapAbort { reason, message: message.clone() }));
        Ok(vec![
            Action::Persist,
            send,
            Action::Notify(Notification::Aborted { reason, message }),
            self.finished(),
        ])
    }

    fn on_invoice(&mut self, invoice: String) -> Result<Vec<Action>, SwapError> {
        if self.state != SellerState::AwaitingInvoice {
            return Ok(Vec::new());
        }
        let htlc = self.htlc()?.clone();
        let keys = self.keys()?;
        let accept = SwapAccept {
            invoice: invoice.clone(),
            payment_hash: self.payment_hash(),
            seller_musig_pubkey: keys.musig_pubkey(),
            seller_refund_pubkey: keys.refund_pubkey(),
            timeout_height: self.htlc_params.timeout_height,
            htlc_script_pubkey: htlc.script_pubkey().to_owned(),
            htlc_amount_sat: self.quote.htlc_amount_sat,
            quote: self.quote,
            prepay_invoice: None,
        };
        self.go(SellerState::Accepted { invoice })?;
        let send = self.outbox.send(self.swap_id, Message::SwapAccept(accept));
        Ok(vec![
            Action::Persist,
            send,
            Action::WatchHtlc { script_pubkey: htlc.script_pubkey().to_owned() },
            Action::FundHtlc {
                script_pubkey: htlc.script_pubkey().to_owned(),
                amount_sat: self.quote.htlc_amount_sat,
            },
        ])
    }

    fn on_funding_built(&mut self, tx: Transaction, vout: u32) -> Result<Vec<Action>, SwapError> {
        let SellerState::Accepted { invoice } = &self.state else {
            // Aborted meanwhile, or a duplicate: the transaction is never broadcast.
            return Ok(Vec::new());
        };
        let htlc = self.htlc()?;
        let ok = tx.output.get(vout as usize).is_some_and(|o| {
            o.script_pubkey == *htlc.script_pubkey()
                && o.value == Amount::from_sat(self.quote.htlc_amount_sat)
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
        self.broadcast_height = 0;
        let send = self.outbox.send(self.swap_id, Message::SwapFunded(msg));
        Ok(vec![
            Action::Persist,
            Action::Broadcast { tx, purpose: TxPurpose::Funding },
            send,
            Action::Notify(Notification::FundingSeen {
                txid,
                confirmations: 0,
                required: self.offer.min_confirmations,
            }),
        ])
    }

    fn on_payment_claimable(
        &mut self,
        payment_hash: PaymentHash,
        amount_msat: u64,
        ctx: &Context,
    ) -> Result<Vec<Action>, SwapError> {
        if payment_hash != self.payment_hash() {
            return Ok(Vec::new());
        }
        let preimage = self.keys()?.preimage().clone();
        let enough = amount_msat >= self.quote.invoice_amount_sat.saturating_mul(1000);
        // The safety rule: claim only while the buyer can still claim on chain.
        let in_time = ctx.tip_height.saturating_add(self.offer.claim_margin)
            <= self.htlc_params.timeout_height;
        match &self.state {
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
    fn on_claim_settled(&mut self) -> Result<Vec<Action>, SwapError> {
        match &mut self.state {
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
    fn on_payment_status(&mut self, status: PaymentStatus) -> Result<Vec<Action>, SwapError> {
        let SellerState::Paid { funding, amount_msat, invoice, claim_settled, .. } = &self.state
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
                preimage: self.keys()?.preimage().clone(),
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

    fn on_htlc_spent(
        &mut self,
        tx: Transaction,
        confirmed_height: Option<u32>,
    ) -> Result<Vec<Action>, SwapError> {
        let Some(funding) = self.state.funding().cloned() else { return Ok(Vec::new()) };
        let Some(path) = self.htlc()?.spend_path(&tx, funding.outpoint) else {
            return Ok(Vec::new());
        };
        let Some(_) = confirmed_height else { return Ok(Vec::new()) };
        let txid = tx.compute_txid();
        // The witness names the path: the refund leaf is ours, the claim leaf the buyer's. A
        // key-path spend is one both signed: our refund (paying our refund destination; we are
        // its aggregator) or the buyer's claim.
        let ours = match path {
            HtlcSpendPath::RefundLeaf => true,
            HtlcSpendPath::KeyPath => {
                matches!(&self.state, SellerState::Refunding { refund_tx, .. } if refund_tx.compute_txid() == txid)
                    || tx.output.iter().any(|o| o.script_pubkey == self.refund_destination)
            }
            _ => false,
        };
        let amount_msat = match &self.state {
            SellerState::Paid { amount_msat, .. } => *amount_msat,
            _ => 0,
        };
        let next = if ours {
            SellerState::Refunded { funding, refund_txid: txid }
        } else {
            SellerState::Claimed { funding, claim_txid: txid, amount_msat }
        };
        if next.name() == self.state.name() {
            return Ok(Vec::new());
        }
        self.go(next)?;
        Ok(vec![Action::Persist, self.finished()])
    }

    fn handle_message<R: RngCore + CryptoRng>(
        &mut self,
        body: Message,
        ctx: &Context,
        rng: &mut R,
    ) -> Result<Vec<Action>, SwapError> {
        match body {
            Message::SwapAbort(abort) => {
                let note = Action::Notify(Notification::Aborted {
                    reason: abort.reason,
                    message: abort.message.clone(),
                });
                let mut actions = match self.state {
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
                    &self.state
                else {
                    return Ok(Vec::new());
                };
                let (invoice, funding, attempts) = (invoice.clone(), funding.clone(), *attempts);
                // An answer that does not verify may answer an earlier request (resent after a
                // restart, with a nonce that is gone): ignore it and wait for ours until the
                // deadline.
                let answer = musig::decode_pub_nonce(&resp.buyer_nonce.0)
                    .and_then(|n| Ok((n, musig::decode_partial_signature(&resp.partial_sig.0)?)));
                if let (Ok((n, p)), Some((session, _))) = (&answer, self.refund_session.0.as_ref())
                {
                    if session.verify_peer(n, *p).is_err() {
                        return Ok(Vec::new());
                    }
                }
                let Some((session, mut spend)) = self.refund_session.0.take() else {
                    return Ok(Vec::new());
                };
                let signed = musig::decode_pub_nonce(&resp.buyer_nonce.0)
                    .and_then(|n| Ok((n, musig::decode_partial_signature(&resp.partial_sig.0)?)))
                    .and_then(|(n, p)| session.finish(&n, p))
                    .map_err(|e| e.to_string())
                    .and_then(|sig| {
                        spend.set_key_path_signature(0, &sig).map_err(|e| e.to_string())
                    })
                    .and_then(|()| spend.clone().finalize().map_err(|e| e.to_string()));
                match signed {
                    Ok(tx) => self.broadcast_refund(
                        funding,
                        tx,
                        spend.fee().to_sat(),
                        TxPurpose::CooperativeRefund,
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
                let gave_up = match &mut self.state {
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
            other => {
                let send = self.outbox.send(
                    self.swap_id,
                    Message::Error(err(
                        ErrorCode::InvalidState,
                        format!("{} is not expected from the buyer", other.kind_name()),
                    )),
                );
                Ok(vec![send])
            }
        }
    }

    fn on_coop_claim_request<R: RngCore + CryptoRng>(
        &mut self,
        req: CoopClaimRequest,
        rng: &mut R,
    ) -> Result<Vec<Action>, SwapError> {
        let SellerState::Paid { funding, amount_msat, coop_signatures, invoice, claim_settled } =
            &self.state
        else {
            let send = self.outbox.send(
                self.swap_id,
                Message::Error(err(ErrorCode::InvalidState, "not paid: no cooperative claim")),
            );
            return Ok(vec![send]);
        };
        if !self.policy.cooperative_claims || *coop_signatures >= MAX_COOP_SIGNATURES {
            return Ok(Vec::new());
        }
        // Co-sign only once the Lightning claim settled, or for a buyer that shows the preimage
        // (it has it only because our claim went out): a claim that never settles must leave
        // the HTLC refundable.
        let shown = req.preimage.as_ref().is_some_and(|p| p.payment_hash() == self.payment_hash());
        if !*claim_settled && !shown {
            let send = self.outbox.send(
                self.swap_id,
                Message::Error(err(ErrorCode::InvalidState, "payment claim not settled yet")),
            );
            return Ok(vec![send]);
        }
        let (funding, amount_msat, count, invoice, settled) =
            (funding.clone(), *amount_msat, *coop_signatures, invoice.clone(), *claim_settled);
        let answer = (|| -> Result<(PubNonceBytes, PartialSigBytes), String> {
            let tx = req.tx().map_err(|e| e.to_string())?;
            if tx.input.len() != 1 {
                return Err("a cooperative claim spends exactly the htlc".into());
            }
            let htlc = self.htlc().map_err(|e| e.to_string())?.clone();
            let input = HtlcInput {
                htlc: htlc.clone(),
                outpoint: funding.outpoint,
                amount: Amount::from_sat(self.quote.htlc_amount_sat),
                path: SpendPath::KeyPath,
            };
            let spend = SpendTx::from_unsigned(tx, vec![input]).map_err(|e| e.to_string())?;
            let sighash = spend.sighash(0).map_err(|e| e.to_string())?;
            let their_nonce =
                musig::decode_pub_nonce(&req.buyer_nonce.0).map_err(|e| e.to_string())?;
            let seckey = self.keys().map_err(|e| e.to_string())?.musig().secret_key();
            let (nonce, partial) =
                musig::respond(&htlc, Signer::Seller, &seckey, &sighash, &their_nonce, rng)
                    .map_err(|e| e.to_string())?;
            Ok((PubNonceBytes(nonce.to_bytes()), PartialSigBytes(partial.serialize())))
        })();
        match answer {
            Ok((seller_nonce, partial_sig)) => {
                self.state = SellerState::Paid {
                    funding,
                    amount_msat,
                    coop_signatures: count.saturating_add(1),
                    invoice,
                    claim_settled: settled,
                };
                let send = self.outbox.send(
                    self.swap_id,
                    Message::CoopClaimResponse(CoopClaimResponse { seller_nonce, partial_sig }),
                );
                Ok(vec![Action::Persist, send])
            }
            Err(reason) => {
                let send = self
                    .outbox
                    .send(self.swap_id, Message::Error(err(ErrorCode::InvalidParams, reason)));
                Ok(vec![Action::Persist, send])
            }
        }
    }

    fn start_coop_refund<R: RngCore + CryptoRng>(
        &mut self,
        ctx: &Context,
        rng: &mut R,
    ) -> Result<Vec<Action>, SwapError> {
        let SellerState::Funded { invoice, funding, refund_attempts, .. } = &self.state else {
            return Ok(Vec::new());
        };
        let (invoice, funding, attempts) =
            (invoice.clone(), funding.clone(), refund_attempts.saturating_add(1));
        let htlc = self.htlc()?.clone();
        let input = HtlcInput {
            htlc: htlc.clone(),
            outpoint: funding.outpoint,
            amount: Amount::from_sat(self.quote.htlc_amount_sat),
            path: SpendPath::KeyPath,
        };
        let spend = SpendTx::build(vec![input], self.refund_destination.clone(), ctx.fee_rate)
            .map_err(|e| SwapError::Internal(e.to_string()))?;
        let sighash = spend.sighash(0).map_err(|e| SwapError::Internal(e.to_string()))?;
        let seckey = self.keys()?.musig().secret_key();
        let session = InitiatorSession::new(&htlc, Signer::Seller, seckey, sighash, rng)
            .map_err(|e| SwapError::Internal(e.to_string()))?;
        let request = CoopRefundRequest {
            tx_hex: bitcoin::consensus::encode::serialize_hex(spend.tx()),
            seller_nonce: PubNonceBytes(session.public_nonce().to_bytes()),
        };
        self.refund_session = Ephemeral(Some((session, spend)));
        self.go(SellerState::RefundingCooperatively {
            invoice,
            funding,
            deadline_secs: ctx.now_secs.saturating_add(COOP_TIMEOUT_SECS),
            attempts,
        })?;
        let send = self.outbox.send(self.swap_id, Message::CoopRefundRequest(request));
        Ok(vec![Action::Persist, send])
    }

    fn broadcast_refund(
        &mut self,
        funding: Funding,
        refund_tx: Transaction,
        fee_sat: u64,
        purpose: TxPurpose,
    ) -> Result<Vec<Action>, SwapError> {
        let notify = Action::Notify(Notification::broadcast(&refund_tx, purpose, fee_sat));
        self.go(SellerState::Refunding { funding, refund_tx: refund_tx.clone(), purpose })?;
        self.broadcast_height = 0;
        Ok(vec![Action::Persist, Action::Broadcast { tx: refund_tx, purpose }, notify])
    }

    fn handle_tick<R: RngCore + CryptoRng>(
        &mut self,
        ctx: &Context,
        rng: &mut R,
    ) -> Result<Vec<Action>, SwapError> {
        match &self.state {
            SellerState::RefundingCooperatively { invoice, funding, deadline_secs, attempts }
                if ctx.now_secs >= *deadline_secs =>
            {
                let to = SellerState::Funded {
                    invoice: invoice.clone(),
                    funding: funding.clone(),
                    refund_attempts: *attempts,
                    refund_retry_at_secs: ctx.now_secs.saturating_add(COOP_REFUND_RETRY_SECS),
                };
                self.refund_session = Ephemeral(None);
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
                if ctx.tip_height >= self.htlc_params.timeout_height =>
            {
                let funding = funding.clone();
                let htlc = self.htlc()?.clone();
                let keys = self.keys()?;
                let tx = crate::spend::refund_script_path(
                    &htlc,
                    funding.outpoint,
                    Amount::from_sat(self.quote.htlc_amount_sat),
                    keys.refund(),
                    self.refund_destination.clone(),
                    ctx.fee_rate,
                )
                .map_err(|e| SwapError::Internal(e.to_string()))?;
                let fee_sat = self
                    .quote
                    .htlc_amount_sat
                    .saturating_sub(tx.output.iter().map(|o| o.value.to_sat()).sum());
                self.broadcast_refund(funding, tx, fee_sat, TxPurpose::ScriptRefund)
            }
            SellerState::AwaitingInvoice | SellerState::Accepted { .. }
                if ctx.tip_height.saturating_add(self.offer.claim_margin)
                    >= self.htlc_params.timeout_height =>
            {
                self.abort(AbortReason::TimeoutTooClose, Some("funding never happened".into()))
            }
            SellerState::Funded { refund_attempts, refund_retry_at_secs, .. }
                if *refund_attempts > 0
                    && *refund_attempts < MAX_COOP_REFUND_ATTEMPTS
                    && ctx.now_secs >= *refund_retry_at_secs =>
            {
                // The buyer aborted but did not answer in time: ask again, after the last request
                // (if it was lost, it holds up the buyer's in-order inbox; the buyer drops a
                // message it has seen).
                let mut actions: Vec<Action> =
                    self.outbox.sent.last().cloned().map(Action::Send).into_iter().collect();
                actions.extend(self.start_coop_refund(ctx, rng)?);
                Ok(actions)
            }
            SellerState::Funded { funding, .. } if funding.confirmed_height.is_none() => {
                let tx = funding.tx.clone();
                Ok(rebroadcast(&mut self.broadcast_height, ctx.tip_height, tx, TxPurpose::Funding))
            }
            SellerState::Refunding { funding, refund_tx, purpose } => {
                let (tx, purpose) = (refund_tx.clone(), *purpose);
                // A funding that never reached the chain (its broadcasts failed) goes out again
                // before the refund that spends it: without it the refund is refused forever.
                let parent = (funding.confirmed_height.is_none()).then(|| Action::Broadcast {
                    tx: funding.tx.clone(),
                    purpose: TxPurpose::Funding,
                });
                let refund = rebroadcast(&mut self.broadcast_height, ctx.tip_height, tx, purpose);
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
