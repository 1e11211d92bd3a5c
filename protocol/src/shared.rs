//! The core the buyer's and the seller's state machines share (like LDK's `ChannelContext`,
//! shared by its channel phases): the persisted fields every swap has ([`CoreRecord`]), what a
//! loaded swap holds beside its record ([`Live`]: its keys, the memory-only MuSig2 session of the
//! cooperative spend it initiated, the rebroadcast height) and the steps both roles take the
//! same way (numbered sends, aborts, cooperative signing, broadcasts, transitions).

pub(crate) use bitcoin::secp256k1::rand::{CryptoRng, RngCore};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use musig2::BinaryEncoding;
use serde::{Deserialize, Serialize};

use crate::fees::Outstanding;
use crate::htlc::{Htlc, HtlcSpendPath};
use crate::keys::SwapKeys;
use crate::messages::{
    AbortReason, Envelope, ErrorCode, ErrorMessage, Message, Offer, PartialSigBytes, PubNonceBytes,
    SwapAbort,
};
use crate::musig::{self, InitiatorSession, Signer};
use crate::spend::{HtlcInput, SpendPath, SpendTx};
use crate::swap::{
    Action, Inbox, Notification, Outbox, StateKind, SwapError, Transition, TxPurpose,
};
use crate::types::SwapId;

/// A role's state enum: its name and kind, and the transition table it moves along.
pub(crate) trait SwapState {
    /// The role's transition table.
    const TRANSITIONS: &'static [Transition];
    /// The state's name, as in the table.
    fn state_name(&self) -> &'static str;
    /// Pending, succeeded or failed.
    fn state_kind(&self) -> StateKind;
}

/// Implements `name()`, `kind()` and [`SwapState`] for a role's state enum from the lists of its
/// pending, succeeded and failed variants (each variant is named once, in one list).
macro_rules! swap_states {
    (
        $state:ident, $table:expr;
        pending: [$($pending:ident),* $(,)?],
        succeeded: [$($succeeded:ident),* $(,)?],
        failed: [$($failed:ident),* $(,)?] $(,)?
    ) => {
        impl $state {
            /// The state's name, as in the transition table and the spec.
            pub fn name(&self) -> &'static str {
                match self {
                    $($state::$pending { .. } => stringify!($pending),)*
                    $($state::$succeeded { .. } => stringify!($succeeded),)*
                    $($state::$failed { .. } => stringify!($failed),)*
                }
            }

            /// Pending, succeeded or failed.
            pub fn kind(&self) -> $crate::swap::StateKind {
                match self {
                    $($state::$pending { .. } => $crate::swap::StateKind::Pending,)*
                    $($state::$succeeded { .. } => $crate::swap::StateKind::Succeeded,)*
                    $($state::$failed { .. } => $crate::swap::StateKind::Failed,)*
                }
            }
        }

        impl $crate::shared::SwapState for $state {
            const TRANSITIONS: &'static [$crate::swap::Transition] = $table;
            fn state_name(&self) -> &'static str {
                self.name()
            }
            fn state_kind(&self) -> $crate::swap::StateKind {
                self.kind()
            }
        }
    };
}
pub(crate) use swap_states;

/// `Some` of the field `$field` of `$value` when its variant is one of `$variant`s (each has that
/// field), else `None`.
macro_rules! variant_field {
    ($value:expr, $state:ident, $field:ident, [$($variant:ident),+ $(,)?]) => {
        match $value {
            $($state::$variant { $field, .. })|+ => Some($field),
            _ => None,
        }
    };
}
pub(crate) use variant_field;

/// Read accessors of the fields in a record's [`CoreRecord`] (`self.core`), for both roles'
/// records.
macro_rules! core_accessors {
    () => {
        /// The swap id (chosen by the buyer).
        pub fn swap_id(&self) -> $crate::types::SwapId {
            self.core.swap_id
        }

        /// The swap-key index (the keys derive from the seed with it).
        pub fn key_index(&self) -> u32 {
            self.core.key_index
        }

        /// The peer (Nostr public key, hex).
        pub fn peer(&self) -> &str {
            &self.core.peer
        }

        /// The offer taken.
        pub fn offer(&self) -> &$crate::messages::Offer {
            &self.core.offer
        }

        /// When the swap started (unix seconds).
        pub fn created_at(&self) -> u64 {
            self.core.created_at
        }

        /// The peer's messages, in order.
        pub fn inbox(&self) -> &$crate::swap::Inbox {
            &self.core.inbox
        }

        /// Our messages, numbered (a resumed swap re-sends them).
        pub fn outbox(&self) -> &$crate::swap::Outbox {
            &self.core.outbox
        }

        /// Pending, succeeded or failed.
        pub fn kind(&self) -> $crate::swap::StateKind {
            self.state.kind()
        }
    };
}
pub(crate) use core_accessors;

/// What a swap's private steps return.
pub(crate) type Actions = Result<Vec<Action>, SwapError>;

/// The randomness the state machines take (the node passes the OS RNG).
pub(crate) trait Rng: RngCore + CryptoRng {}

impl<T: RngCore + CryptoRng> Rng for T {}

/// The driver-facing API both roles share, written once: `Deref` to the record, the record back
/// as a [`crate::record::SwapRecord`], [`Event`](crate::swap::Event) dispatch (in-order
/// messages, persisted first) and `resume`. Each role provides `handle_message`, `handle_tick`,
/// `handle_event` (every other event) and `resume_role` (its part of `resume`, after the
/// re-sent messages it is given).
macro_rules! swap_api {
    ($swap:ident, $record:ident, $state:ident) => {
        impl core::ops::Deref for $swap {
            type Target = $record;

            fn deref(&self) -> &$record {
                &self.rec
            }
        }

        impl From<&$swap> for $crate::record::SwapRecord {
            fn from(swap: &$swap) -> Self {
                swap.rec.clone().into()
            }
        }

        impl $swap {
            /// The stored part of the swap (also readable through `Deref`).
            pub fn record(&self) -> &$record {
                &self.rec
            }

            /// Actions to take after loading the record at start-up: re-send our messages,
            /// re-broadcast our transactions, re-ask for what was in flight, then what a
            /// [`Event::Tick`](crate::swap::Event::Tick) gives.
            ///
            /// # Errors
            /// [`SwapError`](crate::swap::SwapError) when a transaction to send again cannot be
            /// built; the swap is then as loaded.
            pub fn resume<
                R: bitcoin::secp256k1::rand::RngCore + bitcoin::secp256k1::rand::CryptoRng,
            >(
                &mut self,
                ctx: &$crate::swap::Context,
                rng: &mut R,
            ) -> Result<Vec<$crate::swap::Action>, $crate::swap::SwapError> {
                let sent = self.rec.core.outbox.resend_all();
                let mut actions = self.resume_role(sent, ctx, rng)?;
                actions.extend(self.handle_tick(ctx, rng)?);
                Ok(actions)
            }

            /// Feeds one event.
            ///
            /// # Errors
            /// [`SwapError`](crate::swap::SwapError) when the event does not fit; the state is
            /// then unchanged.
            pub fn handle<
                R: bitcoin::secp256k1::rand::RngCore + bitcoin::secp256k1::rand::CryptoRng,
            >(
                &mut self,
                event: $crate::swap::Event,
                ctx: &$crate::swap::Context,
                rng: &mut R,
            ) -> Result<Vec<$crate::swap::Action>, $crate::swap::SwapError> {
                match event {
                    $crate::swap::Event::Message(env) => {
                        let mut actions = Vec::new();
                        for env in self.rec.core.accept(env)? {
                            actions.extend(self.handle_message(env.body, ctx, rng)?);
                        }
                        Ok($crate::shared::persist_first(actions))
                    }
                    $crate::swap::Event::Tick => self.handle_tick(ctx, rng),
                    other => self.handle_event(other, ctx, rng),
                }
            }

            fn keys(&self) -> &$crate::keys::SwapKeys {
                &self.live.keys
            }

            fn go(&mut self, to: $state) -> Result<(), $crate::swap::SwapError> {
                $crate::shared::go(&mut self.rec.state, to)
            }

            fn finished(&self) -> $crate::swap::Action {
                $crate::shared::finished(&self.rec.state)
            }
        }
    };
}
pub(crate) use swap_api;

/// Moves `state` to `to` when the role's table has that transition.
pub(crate) fn go<S: SwapState>(state: &mut S, to: S) -> Result<(), SwapError> {
    check_transition(S::TRANSITIONS, state.state_name(), to.state_name())?;
    *state = to;
    Ok(())
}

/// The [`Notification::Finished`] of a final state.
pub(crate) fn finished<S: SwapState>(state: &S) -> Action {
    Action::Notify(Notification::Finished {
        state: state.state_name().to_string(),
        kind: state.state_kind(),
    })
}

/// Checks a transition against a table.
pub(crate) fn check_transition(
    table: &[Transition],
    from: &'static str,
    to: &'static str,
) -> Result<(), SwapError> {
    if from == to || table.iter().any(|(f, t, _)| *f == from && *t == to) {
        Ok(())
    } else {
        Err(SwapError::InvalidTransition { from, to })
    }
}

/// A step that failed inside the protocol (a cryptographic or transaction-building step).
pub(crate) fn internal(e: impl core::fmt::Display) -> SwapError {
    SwapError::Internal(e.to_string())
}

/// Puts [`Action::Persist`] first when there are actions (handling a message always changes the
/// record: at least the inbox).
pub(crate) fn persist_first(mut actions: Vec<Action>) -> Vec<Action> {
    if !actions.is_empty() && actions.first() != Some(&Action::Persist) {
        actions.insert(0, Action::Persist);
    }
    actions
}

/// Memory-only data of a swap (a MuSig2 session with its secret nonce): never serialized, and a
/// clone of the swap starts without it.
pub(crate) struct Ephemeral<T>(pub(crate) Option<T>);

impl<T> Default for Ephemeral<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Clone for Ephemeral<T> {
    fn clone(&self) -> Self {
        Self(None)
    }
}

impl<T> core::fmt::Debug for Ephemeral<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.0.is_some() { "Ephemeral(Some(..))" } else { "Ephemeral(None)" })
    }
}

/// The persisted fields every swap has, flattened into each role's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CoreRecord {
    /// The swap id (chosen by the buyer).
    pub(crate) swap_id: SwapId,
    /// The swap-key index (the keys derive from the seed with it).
    pub(crate) key_index: u32,
    /// The peer (Nostr public key, hex).
    pub(crate) peer: String,
    /// The offer taken.
    pub(crate) offer: Offer,
    /// When the swap started (unix seconds).
    pub(crate) created_at: u64,
    /// The peer's messages, in order.
    pub(crate) inbox: Inbox,
    /// Our messages.
    pub(crate) outbox: Outbox,
}

impl CoreRecord {
    /// The core of a swap started now (`ctx.now_secs`) with `keys`: by the taker (`answering:
    /// false`: it sends the request), or by the maker answering the request (`answering: true`:
    /// the request was the peer's message 0).
    pub(crate) fn start(
        swap_id: SwapId,
        keys: &crate::keys::SwapKeys,
        peer: String,
        offer: Offer,
        now_secs: u64,
        answering: bool,
    ) -> Self {
        CoreRecord {
            swap_id,
            key_index: keys.index(),
            peer,
            offer,
            created_at: now_secs,
            inbox: if answering {
                Inbox { next_seq: 1, early: Vec::new() }
            } else {
                Inbox::default()
            },
            outbox: Outbox::default(),
        }
    }

    /// Numbers and records a message, returning the action that sends it.
    pub(crate) fn send(&mut self, body: Message) -> Action {
        self.outbox.send(self.swap_id, body)
    }

    /// Sends an `error` message.
    pub(crate) fn send_error(
        &mut self,
        code: ErrorCode,
        message: impl core::fmt::Display,
    ) -> Action {
        self.send(Message::Error(ErrorMessage::new(code, message)))
    }

    /// Answers a message the peer's role never sends.
    pub(crate) fn refuse_unexpected(&mut self, body: &Message, from: &str) -> Action {
        let text = format!("{} is not expected from the {from}", body.kind_name());
        self.send_error(ErrorCode::InvalidState, text)
    }

    /// Checks that `env` belongs to this swap and returns the messages now ready, in order.
    pub(crate) fn accept(&mut self, env: Envelope) -> Result<Vec<Envelope>, SwapError> {
        self.inbox.accept_for(self.swap_id, env)
    }

    /// The actions of an abort once the state is `Aborted`: persist, tell the peer, tell the
    /// user (`finished` is the final state's [`Notification::Finished`]).
    pub(crate) fn abort_actions(
        &mut self,
        reason: AbortReason,
        message: Option<String>,
        finished: Action,
    ) -> Vec<Action> {
        let send = self.send(Message::SwapAbort(SwapAbort { reason, message: message.clone() }));
        vec![
            Action::Persist,
            send,
            Action::Notify(Notification::Aborted { reason, message }),
            finished,
        ]
    }
}

/// What a loaded swap holds beside its record: never serialized.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// The swap's keys (given at load).
    pub(crate) keys: SwapKeys,
    /// The cooperative spend we initiated (buyer: claim, seller: refund), waiting for the
    /// peer's partial signature.
    pub(crate) coop: Ephemeral<(InitiatorSession, SpendTx)>,
    /// Tip height of the last broadcast of our transaction (rebroadcast once per block until
    /// confirmed; 0: just broadcast).
    pub(crate) broadcast_height: u32,
}

/// The HTLC's key-path input.
fn key_path_input(htlc: &Htlc, outpoint: OutPoint, amount_sat: u64) -> HtlcInput {
    HtlcInput {
        htlc: htlc.clone(),
        outpoint,
        amount: Amount::from_sat(amount_sat),
        path: SpendPath::KeyPath,
    }
}

impl Live {
    pub(crate) fn new(keys: SwapKeys) -> Self {
        Self { keys, coop: Ephemeral(None), broadcast_height: 0 }
    }

    /// Starts a cooperative key-path spend of the HTLC to `destination` as `who`, with a fresh
    /// secret nonce from `rng` kept in memory only. Returns the transaction (hex) and our
    /// public nonce for the request.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_coop<R: RngCore + CryptoRng>(
        &mut self,
        htlc: &Htlc,
        who: Signer,
        outpoint: OutPoint,
        amount_sat: u64,
        destination: ScriptBuf,
        fee_rate: FeeRate,
        rng: &mut R,
    ) -> Result<(String, PubNonceBytes), SwapError> {
        let input = key_path_input(htlc, outpoint, amount_sat);
        let spend = SpendTx::build(vec![input], destination, fee_rate).map_err(internal)?;
        let sighash = spend.sighash(0).map_err(internal)?;
        let seckey = self.keys.musig().secret_key();
        let session = InitiatorSession::new(htlc, who, seckey, sighash, rng).map_err(internal)?;
        let tx_hex = bitcoin::consensus::encode::serialize_hex(spend.tx());
        let nonce = PubNonceBytes(session.public_nonce().to_bytes());
        self.coop = Ephemeral(Some((session, spend)));
        Ok((tx_hex, nonce))
    }

    /// The peer's answer to our cooperative spend: `None` when there is no session or the answer
    /// does not verify against it (an answer to an earlier request, resent after a restart with
    /// a nonce that is gone: ignored while the session waits for its own). Otherwise the
    /// session is used up: the spend with its key-path signature set, or why it failed.
    pub(crate) fn finish_coop(
        &mut self,
        their_nonce: &PubNonceBytes,
        their_partial: &PartialSigBytes,
    ) -> Option<Result<SpendTx, String>> {
        let decode = || {
            musig::decode_pub_nonce(&their_nonce.0)
                .and_then(|n| Ok((n, musig::decode_partial_signature(&their_partial.0)?)))
        };
        if let (Ok((n, p)), Some((session, _))) = (decode(), self.coop.0.as_ref()) {
            if session.verify_peer(&n, p).is_err() {
                return None;
            }
        }
        let (session, mut spend) = self.coop.0.take()?;
        let signed = decode()
            .and_then(|(n, p)| session.finish(&n, p))
            .map_err(|e| e.to_string())
            .and_then(|sig| spend.set_key_path_signature(0, &sig).map_err(|e| e.to_string()));
        Some(signed.map(|()| spend))
    }

    /// Co-signs the peer's cooperative key-path spend `tx` of the HTLC as `who` (the stateless
    /// responder: a fresh nonce from `rng`, used at once and dropped). `what` names the spend
    /// in the error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cosign<R: RngCore + CryptoRng>(
        &self,
        htlc: &Htlc,
        who: Signer,
        tx: Transaction,
        outpoint: OutPoint,
        amount_sat: u64,
        their_nonce: &PubNonceBytes,
        what: &str,
        rng: &mut R,
    ) -> Result<(PubNonceBytes, PartialSigBytes), String> {
        if tx.input.len() != 1 {
            return Err(format!("a cooperative {what} spends exactly the htlc"));
        }
        let input = key_path_input(htlc, outpoint, amount_sat);
        let spend = SpendTx::from_unsigned(tx, vec![input]).map_err(|e| e.to_string())?;
        let sighash = spend.sighash(0).map_err(|e| e.to_string())?;
        let their_nonce = musig::decode_pub_nonce(&their_nonce.0).map_err(|e| e.to_string())?;
        let seckey = self.keys.musig().secret_key();
        let (nonce, partial) = musig::respond(htlc, who, &seckey, &sighash, &their_nonce, rng)
            .map_err(|e| e.to_string())?;
        Ok((PubNonceBytes(nonce.to_bytes()), PartialSigBytes(partial.serialize())))
    }

    /// The actions broadcasting our claim or refund at tip `tip_height` (the state already
    /// moved): persist, broadcast, tell the user; rebroadcast from the next block on.
    pub(crate) fn broadcast(
        &mut self,
        tx: Transaction,
        purpose: TxPurpose,
        fee_sat: u64,
        tip_height: u32,
    ) -> Vec<Action> {
        self.broadcast_height = tip_height;
        let note = Action::Notify(Notification::broadcast(&tx, purpose, fee_sat));
        vec![Action::Persist, Action::Broadcast { tx, purpose }, note]
    }

    /// The actions broadcasting `tx` at tip `tip_height`, which replaces `replaces` (the state
    /// already moved and holds `tx`): persist, broadcast, tell the user.
    pub(crate) fn replace(
        &mut self,
        tx: Transaction,
        replaces: bitcoin::Txid,
        purpose: TxPurpose,
        fee_sat: u64,
        tip_height: u32,
    ) -> Vec<Action> {
        self.broadcast_height = tip_height;
        let note = Action::Notify(Notification::Replaced {
            txid: tx.compute_txid(),
            replaces,
            purpose,
            fee_sat,
            vsize: tx.vsize() as u64,
        });
        vec![Action::Persist, Action::Broadcast { tx, purpose }, note]
    }

    /// A [`Action::Broadcast`] of `tx` when the tip moved past the last broadcast (once per
    /// block). With no broadcast since a restart it only records the tip (resuming broadcasts).
    pub(crate) fn rebroadcast(
        &mut self,
        tip_height: u32,
        tx: &Transaction,
        purpose: TxPurpose,
    ) -> Vec<Action> {
        if self.broadcast_height == 0 {
            self.broadcast_height = tip_height;
            return Vec::new();
        }
        if tip_height <= self.broadcast_height {
            return Vec::new();
        }
        self.broadcast_height = tip_height;
        vec![Action::Broadcast { tx: tx.clone(), purpose }]
    }
}

/// The fee `tx` pays spending `value_sat` (the HTLC).
pub(crate) fn spend_fee(tx: &Transaction, value_sat: u64) -> u64 {
    value_sat.saturating_sub(tx.output.iter().map(|o| o.value.to_sat()).sum())
}

/// How the version of our spend that is out stands, for [`crate::fees::spend_fee_rate`]: the
/// rate `tx` pays and the blocks found since it went out at `sent_height`.
pub(crate) fn outstanding(
    tx: &Transaction,
    value_sat: u64,
    sent_height: u32,
    tip: u32,
) -> Outstanding {
    Outstanding {
        rate: crate::fees::rate_of(spend_fee(tx, value_sat), tx.vsize() as u64),
        stuck_blocks: tip.saturating_sub(sent_height),
    }
}

/// Whether `tx`, seen spending the HTLC at `outpoint`, is ours: a spend through `our_leaf`, or a
/// key-path spend for which `our_key_path` says so. `None` when `tx` does not spend the HTLC.
pub(crate) fn spend_is_ours(
    htlc: &Htlc,
    tx: &Transaction,
    outpoint: OutPoint,
    our_leaf: HtlcSpendPath,
    our_key_path: impl FnOnce(&Transaction) -> bool,
) -> Option<bool> {
    let path = htlc.spend_path(tx, outpoint)?;
    Some(if path == our_leaf { true } else { path == HtlcSpendPath::KeyPath && our_key_path(tx) })
}
