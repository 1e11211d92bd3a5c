//! Messages from peers: a known swap's messages are fed to it; a `swap_request` starts a seller
//! swap; everything else is answered with an `error` (never an `error` to an `error`).
//!
//! A message is a swap's when it names the swap, comes from the swap's peer and is addressed to
//! our key in that swap ([`Slot::local`]: the identity as a seller, the swap's own key as a
//! buyer). Answers go out as the key the message was addressed to, so that a buyer swap's key
//! never shows the identity or another swap's key. Only the identity takes swap requests.

use std::sync::Arc;

use looper_protocol::buyer::BuyerSwap;
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{Envelope, ErrorCode, ErrorMessage, LoopInRequest, Message, Offer};
use looper_protocol::seller::SellerSwap;
use looper_protocol::swap::{Event, StateKind};
use looper_protocol::terms::Quote;

use super::offers::FUNDING_FEE_RESERVE_SAT;
use super::swaps::{Machine, Slot, UnpaidLock};
use super::{blocking_store, Engine};
use crate::nostr::{Incoming, PublicKey as NostrPublicKey};

impl Engine {
    /// Handles one message delivered by the transport, then acknowledges it (marks it
    /// processed): a crash before that point has it delivered again after the restart. A
    /// message whose effects could not be persisted is not acknowledged (it comes again).
    pub async fn handle_message(&self, inc: Incoming) {
        let event_id = inc.event_id;
        if !self.handle_incoming(inc).await {
            tracing::warn!(
                "a nostr message was not processed (persisting failed); kept for redelivery"
            );
            return;
        }
        // A durable write (the store's group commit): not on a worker of the runtime.
        if let Err(e) = blocking_store(|| self.inner.transport.ack(&event_id)) {
            tracing::warn!(error = %e, "cannot mark a nostr event processed");
        }
    }

    /// `false` when the engine could not persist what follows from the message.
    async fn handle_incoming(&self, inc: Incoming) -> bool {
        let env = match inc.message {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(sender = %inc.sender, error = %e, "undecodable swap message");
                // Answer when the message names a swap, within the sender's reply budget.
                let Some(reply) = e.reply(0) else { return true };
                if !self.decode_reply_allowed(&inc.sender) {
                    tracing::debug!(sender = %inc.sender, "decode-error reply rate limited");
                    return true;
                }
                let transport = &self.inner.transport;
                if let Err(e) = transport.send(&inc.recipient, &inc.sender, &[], &reply).await {
                    tracing::debug!(error = %e, "cannot send decode-error reply");
                }
                return true;
            }
        };
        let sender = inc.sender.to_hex();
        let id = env.swap_id;
        let (me, to) = (&inc.recipient, &inc.sender);
        let to_identity = *me == self.inner.transport.public_key();
        if !to_identity && env.body.is_request() {
            // A buyer swap's own key sells nothing. No answer: any would tell the key apart.
            tracing::debug!(swap = %id, "swap request to a swap's own key dropped");
            return true;
        }
        match self.inner.swaps.get(&id) {
            Some(slot) if slot.peer == sender && slot.local == *me => {
                self.on_peer_message(&slot, env).await
            }
            Some(slot) => {
                if slot.peer == sender {
                    // The swap's own peer, to another of our keys (another swap's, or the
                    // identity): not that swap's message. Answered as for a swap we do not know,
                    // so that the answer does not link the two keys.
                    tracing::warn!(swap = %id, sender = %sender, "message for a known swap to another of our keys");
                } else {
                    tracing::warn!(swap = %id, sender = %sender, "message from a stranger for a known swap");
                }
                if env.body.is_request() {
                    // A live swap id from another key: never a second swap under that id.
                    self.reply_error(me, to, &env, ErrorCode::InvalidState, "swap id in use").await;
                } else {
                    self.reply_error(me, to, &env, ErrorCode::UnknownSwap, "unknown swap").await;
                }
                true
            }
            None => match &env.body {
                Message::SwapRequest(_) | Message::LoopInRequest(_) => {
                    self.on_request(inc.sender, env).await
                }
                Message::Error(_) => true,
                _ => {
                    // A maker swap that finished (not in memory: no answer, its taker may
                    // still send), or a stranger. A taker swap's key hears only its own swap,
                    // which is in memory while the key is held; the identity hears only maker
                    // swaps (and, from before per-swap keys, finished buyer swaps: no answer
                    // either).
                    let finished_maker_swap = to_identity
                        && blocking_store(|| self.inner.store.get_swap(&id))
                            .ok()
                            .flatten()
                            .is_some();
                    if !finished_maker_swap {
                        self.reply_error(me, to, &env, ErrorCode::UnknownSwap, "unknown swap")
                            .await;
                    }
                    true
                }
            },
        }
    }

    /// A message from the swap's own peer.
    async fn on_peer_message(&self, slot: &Slot, env: Envelope) -> bool {
        let id = env.swap_id;
        if env.body.is_request() {
            // The taker did not get our answer (or asks again after a restart): the same
            // swap_accept (and what followed) again, never a second swap.
            let mut machine = slot.machine.lock().await;
            let resend = match &*machine {
                Machine::Seller(s) if !machine.is_taker() => s.outbox().resend_all(),
                Machine::Buyer(b) if !machine.is_taker() => b.outbox().resend_all(),
                _ => Vec::new(),
            };
            tracing::debug!(swap = %id, "repeated swap_request: answers sent again");
            return self.carry_out(id, slot, &mut machine, resend).await;
        }
        match self.feed_slot(id, slot, Event::Message(env)).await {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(swap = %id, error = %e, "message refused");
                true
            }
        }
    }

    /// Answers `env` from `to` with an `error`, as `from` (the key `env` was addressed to);
    /// never an `error` to an `error`.
    pub(super) async fn reply_error(
        &self,
        from: &NostrPublicKey,
        to: &NostrPublicKey,
        env: &Envelope,
        code: ErrorCode,
        message: &str,
    ) {
        if matches!(env.body, Message::Error(_)) {
            return;
        }
        let reply = Envelope::error_reply(env.swap_id, 0, ErrorMessage::new(code, message));
        if let Err(e) = self.inner.transport.send(from, to, &[], &reply).await {
            tracing::debug!(error = %e, "cannot send error reply");
        }
    }

    /// A `swap_request` (either direction) for a swap id the engine does not hold: a new maker
    /// swap: the seller of a loop out, the claimer of a loop in.
    async fn on_request(&self, sender: NostrPublicKey, env: Envelope) -> bool {
        let (offer_id, amount_sat) = match &env.body {
            Message::SwapRequest(r) => (r.offer_id.clone(), r.amount_sat),
            Message::LoopInRequest(r) => (r.offer_id.clone(), r.amount_sat),
            _ => return true,
        };
        let id = env.swap_id;
        let me = self.inner.transport.public_key();
        if self.is_blocked(&sender) {
            tracing::debug!(swap = %id, sender = %sender, "swap request from a blocked key dropped");
            return true;
        }
        if blocking_store(|| self.inner.store.get_swap(&id)).ok().flatten().is_some() {
            return true; // a finished swap's request again
        }
        let offer = blocking_store(|| self.inner.store.get_offer(&offer_id))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value::<Offer>(v).ok());
        let Some(offer) = offer else {
            self.reply_error(&me, &sender, &env, ErrorCode::UnknownOffer, "no such offer").await;
            return true;
        };
        if !self.has_room(&mut self.inner.swaps.select(|_| true).iter().map(|(_, s)| s)) {
            self.refuse_busy(&sender, &env).await;
            return true;
        }
        // The wallet's and the Lightning node's locks are taken: never on a worker of the runtime.
        let served = blocking_store(|| match &env.body {
            Message::LoopInRequest(r) => self.can_serve_loop_in(&offer, r),
            _ => self.can_serve(&offer, amount_sat),
        });
        if let Err((code, why)) = served {
            tracing::info!(swap = %id, amount_sat, reason = %why, "swap request refused");
            self.reply_error(&me, &sender, &env, code, &why).await;
            return true;
        }
        let keys = match blocking_store(|| self.inner.store.next_swap_index())
            .map_err(|e| e.to_string())
            .and_then(|i| SwapKeys::derive(&self.inner.swap_master, i).map_err(|e| e.to_string()))
        {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot derive swap keys");
                self.reply_error(&me, &sender, &env, ErrorCode::Internal, "internal error").await;
                return true;
            }
        };
        // Where our spend of the HTLC pays: the refund (loop out) or the claim (loop in).
        let destination = match blocking_store(|| self.inner.wallet.new_script()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "no wallet address for the swap");
                self.reply_error(&me, &sender, &env, ErrorCode::Internal, "internal error").await;
                return true;
            }
        };
        let ctx = self.context();
        let peer = sender.to_hex();
        let started = match env.body.clone() {
            Message::LoopInRequest(req) => {
                let policy = self.inner.config.claimer_policy;
                BuyerSwap::from_loop_in_request(
                    id,
                    peer,
                    offer,
                    req,
                    keys,
                    destination,
                    policy,
                    &ctx,
                )
                .map(|(swap, actions)| (Machine::Buyer(swap), actions))
            }
            Message::SwapRequest(req) => {
                let policy = self.inner.config.seller_policy;
                SellerSwap::from_request(id, peer, offer, req, keys, destination, policy, &ctx)
                    .map(|(swap, actions)| (Machine::Seller(swap), actions))
            }
            _ => return true,
        };
        match started {
            Ok((machine, actions)) => {
                let direction = machine.direction();
                let slot = Arc::new(Slot::new(machine, me, false));
                // Locked before anyone else can see it: its first actions run before any other
                // event of this swap.
                let mut machine = slot.machine.lock().await;
                // Checked again as the swap goes in: requests handled at the same time never
                // take more room than there is.
                match self.inner.swaps.insert_if(id, Arc::clone(&slot), |all| self.has_room(all)) {
                    Ok(()) => {}
                    Err(Some(_)) => return true, // the same request, handled concurrently
                    Err(None) => {
                        self.refuse_busy(&sender, &env).await;
                        return true;
                    }
                }
                tracing::info!(swap = %id, amount_sat, ?direction, "new swap request accepted");
                let persisted = self.carry_out(id, &slot, &mut machine, actions).await;
                if !persisted {
                    // Never recorded: forget it, so that the request delivered again (it stays
                    // unacknowledged) starts the swap afresh.
                    self.inner.swaps.remove(&id);
                }
                persisted
            }
            Err(err) => {
                tracing::info!(swap = %id, error = %err.message, "swap request refused");
                let reply = Envelope::error_reply(id, 0, err);
                if let Err(e) = self.inner.transport.send(&me, &sender, &[], &reply).await {
                    tracing::debug!(error = %e, "cannot send error reply");
                }
                true
            }
        }
    }

    /// Maker of a loop in, before answering: the payment hash is not another swap's (paying it
    /// would reveal nothing new: its preimage may be known), and the Lightning node can pay the
    /// invoice (outbound capacity of its ready channels). Otherwise the error code and message
    /// to answer with.
    fn can_serve_loop_in(
        &self,
        offer: &Offer,
        req: &LoopInRequest,
    ) -> Result<(), (ErrorCode, String)> {
        let hash = req.payment_hash;
        let in_use = self.inner.swaps.select(|s| s.view().payment_hash == Some(hash));
        let stored = blocking_store(|| self.inner.store.get_swap_by_payment_hash(&hash));
        if !in_use.is_empty() || !matches!(stored, Ok(None)) {
            return Err((ErrorCode::InvalidParams, "payment hash in use".into()));
        }
        if !self.inner.config.check_liquidity {
            return Ok(());
        }
        // An amount the offer cannot serve is refused by the state machine with its own error.
        let Ok(quote) = Quote::compute(offer, req.amount_sat) else { return Ok(()) };
        let outbound_msat = self.outbound_msat();
        if outbound_msat < quote.invoice_amount_sat.saturating_mul(1000) {
            return Err((
                ErrorCode::AmountOutOfRange,
                format!(
                    "the maker cannot pay {} sat over Lightning now (outbound capacity {} sat)",
                    quote.invoice_amount_sat,
                    outbound_msat / 1000
                ),
            ));
        }
        Ok(())
    }

    /// Seller: fewer swaps in progress among `all` than `max_concurrent_swaps`.
    fn has_room(&self, all: &mut dyn Iterator<Item = &Arc<Slot>>) -> bool {
        let Some(max) = self.inner.config.max_concurrent_swaps else { return true };
        serving(all) < usize::try_from(max).unwrap_or(usize::MAX)
    }

    /// Seller, before anything is locked: the unpaid-capital budget has room for `amount_sat`,
    /// the Lightning node can receive the invoice (inbound capacity of its ready channels), and
    /// the wallet can fund the HTLC besides the swaps accepted and not funded yet. Otherwise the
    /// error code and message to answer with.
    fn can_serve(&self, offer: &Offer, amount_sat: u64) -> Result<(), (ErrorCode, String)> {
        let (unfunded, funded) = self.unpaid_locked();
        let locked = unfunded.saturating_add(funded);
        if let Some(budget) = self.inner.config.max_unpaid_locked_sat {
            if locked.saturating_add(amount_sat) > budget {
                return Err((
                    ErrorCode::RateLimited,
                    format!(
                        "the seller's budget for unpaid swaps is in use ({} of {budget} sat): \
                         try a smaller amount or later",
                        locked
                    ),
                ));
            }
        }
        if !self.inner.config.check_liquidity {
            return Ok(());
        }
        // An amount the offer cannot serve is refused by the state machine with its own error.
        let Ok(quote) = Quote::compute(offer, amount_sat) else { return Ok(()) };
        let inbound_msat: u64 = self
            .inner
            .lightning
            .channels()
            .iter()
            // Ready channels: one whose peer is reconnecting (a restart) is usable again soon.
            .filter(|c| c.ready)
            .map(|c| c.inbound_msat)
            .fold(0, u64::saturating_add);
        if inbound_msat < quote.invoice_amount_sat.saturating_mul(1000) {
            return Err((
                ErrorCode::AmountOutOfRange,
                format!(
                    "the seller cannot receive {} sat over Lightning now (inbound capacity {} sat)",
                    quote.invoice_amount_sat,
                    inbound_msat / 1000
                ),
            ));
        }
        let spendable = self.inner.wallet.spendable_sat().unwrap_or(0);
        let needed = amount_sat.saturating_add(unfunded).saturating_add(FUNDING_FEE_RESERVE_SAT);
        if spendable < needed {
            return Err((
                ErrorCode::AmountOutOfRange,
                format!("the seller cannot fund {amount_sat} sat on chain now"),
            ));
        }
        Ok(())
    }

    /// Seller: the sats of its swaps not paid for yet, `(not funded yet, in HTLCs)`
    /// ([`super::swaps::View::unpaid_lock`]).
    pub(super) fn unpaid_locked(&self) -> (u64, u64) {
        let (mut unfunded, mut funded) = (0u64, 0u64);
        for (_, slot) in self.inner.swaps.select(|_| true) {
            match slot.view().unpaid_lock() {
                Some(UnpaidLock::Unfunded(a)) => unfunded = unfunded.saturating_add(a),
                Some(UnpaidLock::Funded(a)) => funded = funded.saturating_add(a),
                None => {}
            }
        }
        (unfunded, funded)
    }

    async fn refuse_busy(&self, sender: &NostrPublicKey, env: &Envelope) {
        tracing::info!(swap = %env.swap_id, "swap request refused: too many swaps");
        let me = self.inner.transport.public_key();
        self.reply_error(&me, sender, env, ErrorCode::RateLimited, "too many swaps in progress")
            .await;
    }
}

/// Seller swaps still in progress.
fn serving(all: &mut dyn Iterator<Item = &Arc<Slot>>) -> usize {
    all.filter(|s| {
        let v = s.view();
        v.maker && v.kind == StateKind::Pending
    })
    .count()
}
