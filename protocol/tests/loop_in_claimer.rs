//! Loop in, the claimer as maker (spec `02-swap-flow.md`, "Loop in: the claimer as maker"): the
//! maker's `BuyerSwap` driven by hand, the test playing the taker (the locker) with its own
//! `SwapKeys`, the HTLC it rebuilds itself, a funding transaction, a real BOLT11 invoice and its
//! half of the MuSig2 signatures. Every spend is checked by Bitcoin Core's interpreter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::rand::rngs::StdRng;
use bitcoin::secp256k1::rand::SeedableRng;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, FeeRate, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use looper_protocol::buyer::{BuyerCheckError, BuyerPolicy, BuyerState, BuyerSwap};
use looper_protocol::htlc::{Htlc, HtlcParams, HtlcSpendPath};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{
    decode_envelope, encode, AbortReason, CoopClaimResponse, CoopRefundRequest, Envelope,
    ErrorCode, ErrorMessage, LoopInAccept, LoopInRequest, Message, Offer, PartialSigBytes,
    PubNonceBytes, SwapAbort, SwapFunded, MIN_CLTV_BUDGET_BLOCKS,
};
use looper_protocol::musig::{self, InitiatorSession, Signer};
use looper_protocol::record::{Swap, SwapRecord};
use looper_protocol::spend::{HtlcInput, SpendPath, SpendTx};
use looper_protocol::swap::{
    Action, Context, Event, HtlcStatus, Notification, PaymentStatus, StateKind, TxPurpose,
    ANTI_REORG_DEPTH, COOP_TIMEOUT_SECS,
};
use looper_protocol::terms::Quote;
use looper_protocol::{PaymentHash, SwapDirection, SwapId};
use musig2::BinaryEncoding;

use common::{destination, htlc_out, kernel_verify, master};

const START_HEIGHT: u32 = 1_000;
const START_TIME: u64 = 1_800_000_000;
const AMOUNT_SAT: u64 = 200_000;
const SWAP_ID: SwapId = SwapId([0xcd; 32]);

fn offer() -> Offer {
    common::offer(SwapDirection::LoopIn, "in", START_TIME + 86_400)
}

fn policy() -> BuyerPolicy {
    BuyerPolicy { max_route_cltv: 500, min_confirmations: 1, ..BuyerPolicy::default() }
}

fn context() -> Context {
    Context::new(START_TIME, START_HEIGHT, FeeRate::from_sat_per_vb(2).unwrap())
}

/// The maker (the claimer): seed 2, as the buyer of the loop-out tests.
fn maker_keys() -> SwapKeys {
    SwapKeys::derive(&master(2), 0).unwrap()
}

/// The taker (the locker): seed 1; its preimage is the swap's.
fn taker_keys() -> SwapKeys {
    SwapKeys::derive(&master(1), 0).unwrap()
}

/// The taker's Lightning node (the invoice's payee: any node, the hash binds it).
fn taker_ln_secret() -> SecretKey {
    SecretKey::from_slice(&[5; 32]).unwrap()
}

fn request(taker: &SwapKeys) -> LoopInRequest {
    LoopInRequest {
        offer_id: "in".into(),
        direction: SwapDirection::LoopIn,
        network: Network::Regtest,
        amount_sat: AMOUNT_SAT,
        payment_hash: taker.payment_hash(),
        locker_musig_pubkey: taker.musig_pubkey(),
        locker_refund_pubkey: taker.refund_pubkey(),
        max_total_fee_sat: 50_000,
    }
}

fn admit(
    offer: Offer,
    request: LoopInRequest,
    policy: BuyerPolicy,
    ctx: &Context,
) -> Result<(BuyerSwap, Vec<Action>), ErrorMessage> {
    BuyerSwap::from_loop_in_request(
        SWAP_ID,
        "taker".into(),
        offer,
        request,
        maker_keys(),
        destination(),
        policy,
        ctx,
    )
}

fn invoice(
    hash: PaymentHash,
    amount_msat: u64,
    created: u64,
    expiry_secs: u64,
    currency: Currency,
) -> String {
    let secp = Secp256k1::new();
    InvoiceBuilder::new(currency)
        .description("loop in".into())
        .payment_hash(sha256::Hash::from_byte_array(hash.0))
        .payment_secret(PaymentSecret([42; 32]))
        .duration_since_epoch(Duration::from_secs(created))
        .min_final_cltv_expiry_delta(42)
        .amount_milli_satoshis(amount_msat)
        .expiry_time(Duration::from_secs(expiry_secs))
        .build_signed(|h| secp.sign_ecdsa_recoverable(h, &taker_ln_secret()))
        .unwrap()
        .to_string()
}

/// The taker's funding: a change output, then the HTLC (vout 1).
fn funding_tx(script_pubkey: &bitcoin::Script, value_sat: u64) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: common::outpoint(7),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut { value: Amount::from_sat(50_000), script_pubkey: destination() },
            TxOut { value: Amount::from_sat(value_sat), script_pubkey: script_pubkey.to_owned() },
        ],
    }
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(env) => Some(env.body.clone()),
            _ => None,
        })
        .collect()
}

fn pays(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::PayInvoice { .. }))
}

/// A running loop in: the maker's swap and what the test's taker holds.
struct Run {
    maker: BuyerSwap,
    ctx: Context,
    rng: StdRng,
    taker: SwapKeys,
    accept: LoopInAccept,
    /// The HTLC as the taker rebuilds it from the accept.
    htlc: Htlc,
    funding: Transaction,
    /// The taker's next `seq` (its `swap_request` was 0).
    seq: u32,
    /// Every action the maker returned, in order.
    log: Vec<Action>,
}

impl Run {
    fn new() -> Self {
        Self::with(offer(), policy())
    }

    fn with(offer: Offer, policy: BuyerPolicy) -> Self {
        let ctx = context();
        let taker = taker_keys();
        let (maker, actions) = admit(offer, request(&taker), policy, &ctx).unwrap();
        let [Message::LoopInAccept(accept)] = &sent(&actions)[..] else {
            panic!("one swap_accept: {actions:?}")
        };
        let accept = accept.clone();
        // The taker rebuilds the HTLC from its own keys and the maker's, independently.
        let htlc = Htlc::new(HtlcParams {
            payment_hash: taker.payment_hash(),
            claim_key: accept.claimer_claim_pubkey,
            refund_key: taker.refund_pubkey(),
            locker_musig_key: taker.musig_pubkey(),
            claimer_musig_key: accept.claimer_musig_pubkey,
            timeout_height: accept.timeout_height,
            network: Network::Regtest,
        })
        .unwrap();
        assert_eq!(*htlc.script_pubkey(), accept.htlc_script_pubkey, "the script rebuilt matches");
        let funding = funding_tx(htlc.script_pubkey(), accept.htlc_amount_sat);
        Run {
            maker,
            ctx,
            rng: StdRng::seed_from_u64(3),
            taker,
            accept,
            htlc,
            funding,
            seq: 1,
            log: actions,
        }
    }

    fn quote(&self) -> Quote {
        self.accept.quote
    }

    fn invoice_msat(&self) -> u64 {
        self.quote().invoice_amount_sat * 1000
    }

    fn good_invoice(&self) -> String {
        invoice(
            self.taker.payment_hash(),
            self.invoice_msat(),
            self.ctx.now_secs,
            3_600,
            Currency::Regtest,
        )
    }

    fn outpoint(&self) -> OutPoint {
        OutPoint { txid: self.funding.compute_txid(), vout: 1 }
    }

    fn swap_funded(&self, invoice: Option<String>) -> Message {
        Message::SwapFunded(SwapFunded { invoice, ..SwapFunded::new(&self.funding, 1) })
    }

    fn envelope(&mut self, body: Message) -> Envelope {
        let env = Envelope::new(SWAP_ID, self.seq, body);
        self.seq += 1;
        // Over the wire and back: real encoding, strict decoding.
        decode_envelope(&encode(&env)).unwrap()
    }

    fn feed(&mut self, event: Event) -> Vec<Action> {
        let ctx = self.ctx;
        let actions = self.maker.handle(event, &ctx, &mut self.rng).unwrap();
        // The record is committed before anything goes out: a message, a transaction, a payment.
        let acts = |a: &Action| {
            matches!(a, Action::Send(_) | Action::Broadcast { .. } | Action::PayInvoice { .. })
        };
        if let Some(first) = actions.iter().position(acts) {
            assert!(actions[..first].contains(&Action::Persist), "persist first: {actions:?}");
        }
        self.log.extend(actions.iter().cloned());
        actions
    }

    fn taker_sends(&mut self, body: Message) -> Vec<Action> {
        let env = self.envelope(body);
        self.feed(Event::Message(env))
    }

    fn tick(&mut self) -> Vec<Action> {
        self.feed(Event::Tick)
    }

    fn mine(&mut self, n: u32) {
        self.ctx.tip_height += n;
        self.ctx.now_secs += 600 * u64::from(n);
    }

    fn htlc_output(&mut self, confirmed_height: Option<u32>) -> Vec<Action> {
        let event = Event::HtlcOutput {
            outpoint: self.outpoint(),
            value_sat: self.accept.htlc_amount_sat,
            script_pubkey: self.htlc.script_pubkey().to_owned(),
            confirmed_height,
        };
        self.feed(event)
    }

    /// The chain's answer to the maker's last look before paying.
    fn htlc_checked(&mut self, confirmed_height: Option<u32>) -> Vec<Action> {
        let status =
            HtlcStatus::Unspent { value_sat: self.accept.htlc_amount_sat, confirmed_height };
        self.feed(Event::HtlcChecked { outpoint: self.outpoint(), status })
    }

    /// `swap_funded` with a good invoice, the funding confirmed, checked: the maker pays.
    fn pay_up(&mut self) -> Vec<Action> {
        let funded = self.swap_funded(Some(self.good_invoice()));
        self.taker_sends(funded);
        self.mine(1);
        let height = self.ctx.tip_height;
        let actions = self.htlc_output(Some(height));
        assert!(actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })), "{actions:?}");
        let actions = self.htlc_checked(Some(height));
        assert!(pays(&actions), "{actions:?}");
        actions
    }

    /// Paid: the taker's preimage comes back; the maker asks for the cooperative claim.
    fn run_to_claiming(&mut self) -> Vec<Action> {
        self.pay_up();
        let preimage = self.taker.preimage().clone();
        let actions = self.feed(Event::PaymentSucceeded { preimage });
        assert!(matches!(self.maker.state(), BuyerState::Claiming { .. }));
        actions
    }

    fn state_name(&self) -> &'static str {
        self.maker.state().name()
    }

    /// The maker's record through bytes, loaded with its keys again (a restart).
    fn restart(&mut self) -> Vec<Action> {
        let bytes = SwapRecord::from(&self.maker).to_bytes().unwrap();
        let record = SwapRecord::from_bytes(&bytes).unwrap();
        let Swap::Buyer(maker) = record.load(maker_keys()).unwrap() else { panic!("a buyer") };
        self.maker = maker;
        let ctx = self.ctx;
        self.maker.resume(&ctx, &mut self.rng).unwrap()
    }

    /// The taker's cooperative refund request, and the session to finish it.
    fn refund_request(&mut self) -> (CoopRefundRequest, InitiatorSession, SpendTx) {
        let input = HtlcInput {
            htlc: self.htlc.clone(),
            outpoint: self.outpoint(),
            amount: Amount::from_sat(self.accept.htlc_amount_sat),
            path: SpendPath::KeyPath,
        };
        let spend =
            SpendTx::build(vec![input], destination(), FeeRate::from_sat_per_vb(2).unwrap())
                .unwrap();
        let sighash = spend.sighash(0).unwrap();
        let seckey = self.taker.musig().secret_key();
        let session =
            InitiatorSession::new(&self.htlc, Signer::Locker, seckey, sighash, &mut self.rng)
                .unwrap();
        let request = CoopRefundRequest {
            tx_hex: bitcoin::consensus::encode::serialize_hex(spend.tx()),
            seller_nonce: PubNonceBytes(session.public_nonce().to_bytes()),
        };
        (request, session, spend)
    }

    /// Asks for a cooperative refund; the maker's node says `status` of the payment for the hash.
    /// Returns the refund, when the maker co-signed (checked by Bitcoin Core's interpreter).
    fn cooperative_refund(&mut self, status: PaymentStatus) -> Option<Transaction> {
        let (request, session, mut spend) = self.refund_request();
        let actions = self.taker_sends(Message::CoopRefundRequest(request));
        let payment_hash = self.taker.payment_hash();
        assert!(
            actions.contains(&Action::CheckPayment { payment_hash }),
            "asks its node first: {actions:?}"
        );
        assert!(sent(&actions).is_empty(), "no answer before the node's word");
        let actions = self.feed(Event::PaymentStatus { payment_hash, status });
        let response = sent(&actions).into_iter().find_map(|m| match m {
            Message::CoopRefundResponse(r) => Some(r),
            _ => None,
        })?;
        let nonce = musig::decode_pub_nonce(&response.buyer_nonce.0).unwrap();
        let partial = musig::decode_partial_signature(&response.partial_sig.0).unwrap();
        let sig = session.finish(&nonce, partial).unwrap();
        spend.set_key_path_signature(0, &sig).unwrap();
        let tx = spend.finalize().unwrap();
        kernel_verify(&tx, &[htlc_out(&self.htlc, Amount::from_sat(AMOUNT_SAT))]).unwrap();
        Some(tx)
    }

    fn assert_aborted(&self, reason: AbortReason, check: Option<BuyerCheckError>) {
        let BuyerState::Aborted { reason: r, check: c, .. } = self.maker.state() else {
            panic!("not aborted: {}", self.state_name())
        };
        assert_eq!((*r, c.clone()), (reason, check));
        assert!(!pays(&self.log), "nothing paid");
        let abort = self.log.iter().find_map(|a| match a {
            Action::Send(Envelope { body: Message::SwapAbort(a), .. }) => Some(a.clone()),
            _ => None,
        });
        assert_eq!(abort.map(|a| a.reason), Some(reason), "swap_abort sent");
    }
}

#[test]
fn admission_answers_with_the_contract_the_taker_rebuilds() {
    let run = Run::new();
    let [a, b, c, d] = &run.log[..] else { panic!("{:?}", run.log) };
    assert_eq!(*a, Action::Persist);
    assert!(matches!(b, Action::Send(Envelope { seq: 0, body: Message::LoopInAccept(_), .. })));
    assert_eq!(
        *c,
        Action::WatchHtlc { script_pubkey: run.accept.htlc_script_pubkey.clone() },
        "watches the script at once"
    );
    let quote = Quote::compute(&offer(), AMOUNT_SAT).unwrap();
    let timeout_height = START_HEIGHT + offer().timeout_delta;
    assert_eq!(*d, Action::Notify(Notification::Accepted { quote, timeout_height }));
    let accept = &run.accept;
    assert_eq!(accept.direction, SwapDirection::LoopIn);
    assert_eq!(accept.quote, quote);
    assert_eq!(accept.htlc_amount_sat, quote.htlc_amount_sat);
    assert_eq!(accept.htlc_amount_sat, AMOUNT_SAT, "the taker locks the amount");
    assert_eq!(quote.invoice_amount_sat, AMOUNT_SAT - quote.fee_sat(), "pays the rest");
    assert_eq!(accept.timeout_height, timeout_height);
    assert_eq!(accept.claimer_musig_pubkey, maker_keys().musig_pubkey());
    assert_eq!(accept.claimer_claim_pubkey, maker_keys().claim_pubkey());
    // The record.
    let rec = run.maker.record();
    assert_eq!(rec.direction(), SwapDirection::LoopIn);
    assert_eq!(rec.state().name(), "Accepting");
    assert_eq!(rec.kind(), StateKind::Pending);
    assert_eq!(rec.payment_hash(), Some(taker_keys().payment_hash()), "known from the start");
    assert_eq!(rec.quote(), Some(&quote));
    assert_eq!(rec.htlc_params().map(|p| p.timeout_height), Some(timeout_height));
    assert!(rec.terms().is_none(), "no invoice yet");
    assert_eq!(rec.prepay_hash(), None);
    assert_eq!(rec.amount_sat(), AMOUNT_SAT);
    assert_eq!(rec.peer(), "taker");
    assert_eq!(rec.inbox().next_seq, 1, "the request was the taker's seq 0");
    assert!(!rec.state().has_paid());
}

#[test]
fn cooperative_claim_end_to_end() {
    let mut run = Run::new();
    let funded = run.swap_funded(Some(run.good_invoice()));
    let actions = run.taker_sends(funded);
    assert_eq!(actions, vec![Action::Persist]);
    let BuyerState::Accepted { terms, announced } = run.maker.state() else { panic!() };
    assert_eq!(*announced, Some(run.outpoint()));
    assert_eq!(terms.prepay, None);
    assert_eq!(terms.invoice_amount_msat, run.invoice_msat());
    assert_eq!(terms.htlc_params.payment_hash, run.taker.payment_hash());
    assert_eq!(run.maker.terms().map(|t| t.quote), Some(run.quote()));

    // In the mempool: funded, not paid.
    let actions = run.htlc_output(None);
    assert!(matches!(run.maker.state(), BuyerState::Funded { .. }));
    assert!(!pays(&actions));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Notify(Notification::FundingSeen { confirmations: 0, required: 1, .. })
    )));
    assert!(!pays(&run.tick()));

    // Confirmed: one more look on chain, then the payment with a CLTV budget that ends before
    // timeout - claim_margin.
    run.mine(1);
    let height = run.ctx.tip_height;
    let actions = run.htlc_output(Some(height));
    let check = Action::CheckHtlc {
        outpoint: run.outpoint(),
        script_pubkey: run.htlc.script_pubkey().to_owned(),
    };
    assert!(actions.contains(&check), "{actions:?}");
    assert!(!pays(&actions));
    let actions = run.htlc_checked(Some(height));
    assert_eq!(actions.first(), Some(&Action::Persist));
    let Some(Action::PayInvoice { invoice, amount_msat, max_total_cltv_expiry_delta, attempt }) =
        actions.iter().find(|a| matches!(a, Action::PayInvoice { .. })).cloned()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(invoice, run.maker.terms().unwrap().invoice);
    assert_eq!(amount_msat, run.invoice_msat());
    assert_eq!(attempt, 1);
    let timeout = run.accept.timeout_height;
    let margin = offer().claim_margin;
    assert_eq!(max_total_cltv_expiry_delta, (timeout - height - margin).min(500));
    assert!(height + max_total_cltv_expiry_delta + margin <= timeout);
    assert!(max_total_cltv_expiry_delta >= MIN_CLTV_BUDGET_BLOCKS);
    assert!(matches!(run.maker.state(), BuyerState::Paying { .. }));
    assert!(run.maker.state().has_paid());

    // Paid: the preimage; the cooperative claim.
    let preimage = run.taker.preimage().clone();
    let actions = run.feed(Event::PaymentSucceeded { preimage: preimage.clone() });
    let [Message::CoopClaimRequest(request)] = &sent(&actions)[..] else { panic!("{actions:?}") };
    assert_eq!(request.preimage.as_ref(), Some(&preimage));
    let claim = request.tx().unwrap();
    assert_eq!(claim.input.len(), 1);
    assert_eq!(claim.input[0].previous_output, run.outpoint());
    assert_eq!(claim.output[0].script_pubkey, destination());

    // The taker co-signs (its MuSig2 key is the locker's, first in the aggregation).
    let input = HtlcInput {
        htlc: run.htlc.clone(),
        outpoint: run.outpoint(),
        amount: Amount::from_sat(AMOUNT_SAT),
        path: SpendPath::KeyPath,
    };
    let sighash = SpendTx::from_unsigned(claim, vec![input]).unwrap().sighash(0).unwrap();
    let their_nonce = musig::decode_pub_nonce(&request.buyer_nonce.0).unwrap();
    let seckey = run.taker.musig().secret_key();
    let (nonce, partial) =
        musig::respond(&run.htlc, Signer::Locker, &seckey, &sighash, &their_nonce, &mut run.rng)
            .unwrap();
    let response = CoopClaimResponse {
        seller_nonce: PubNonceBytes(nonce.to_bytes()),
        partial_sig: PartialSigBytes(partial.serialize()),
    };
    let actions = run.taker_sends(Message::CoopClaimResponse(response));
    let Some(Action::Broadcast { tx, purpose: TxPurpose::CooperativeClaim }) =
        actions.iter().find(|a| matches!(a, Action::Broadcast { .. })).cloned()
    else {
        panic!("{actions:?}")
    };
    kernel_verify(&tx, &[htlc_out(&run.htlc, Amount::from_sat(AMOUNT_SAT))]).unwrap();
    assert_eq!(run.htlc.spend_path(&tx, run.outpoint()), Some(HtlcSpendPath::KeyPath));
    assert!(matches!(run.maker.state(), BuyerState::ClaimBroadcast { .. }));

    run.mine(1);
    let height = run.ctx.tip_height;
    let actions = run.feed(Event::HtlcSpent { tx: tx.clone(), confirmed_height: Some(height) });
    // Confirmed once: not final before ANTI_REORG_DEPTH confirmations.
    assert!(!actions.iter().any(|a| matches!(a, Action::Notify(Notification::Finished { .. }))));
    assert!(matches!(run.maker.state(), BuyerState::ClaimBroadcast { .. }));
    run.mine(ANTI_REORG_DEPTH - 2);
    assert!(run.tick().is_empty(), "nothing to rebroadcast or replace while it is in the chain");
    assert!(matches!(run.maker.state(), BuyerState::ClaimBroadcast { .. }));
    run.mine(1);
    let actions = run.tick();
    assert!(actions.iter().any(|a| matches!(a, Action::Notify(Notification::Finished { .. }))));
    let BuyerState::Claimed { received_sat, claim_txid, .. } = run.maker.state() else {
        panic!("{}", run.state_name())
    };
    assert_eq!(*claim_txid, tx.compute_txid());
    assert_eq!(*received_sat, tx.output[0].value.to_sat());
    assert!(*received_sat > AMOUNT_SAT - 1_000, "a key-path claim at 2 sat/vB");
    assert_eq!(run.maker.kind(), StateKind::Succeeded);
}

#[test]
fn script_path_when_the_taker_does_not_cosign() {
    let mut run = Run::new();
    let actions = run.run_to_claiming();
    assert!(matches!(&sent(&actions)[..], [Message::CoopClaimRequest(_)]));
    // No answer within COOP_TIMEOUT_SECS: the claim leaf, alone.
    run.ctx.now_secs += COOP_TIMEOUT_SECS;
    let actions = run.tick();
    let Some(Action::Broadcast { tx, purpose: TxPurpose::ScriptClaim }) =
        actions.iter().find(|a| matches!(a, Action::Broadcast { .. })).cloned()
    else {
        panic!("{actions:?}")
    };
    kernel_verify(&tx, &[htlc_out(&run.htlc, Amount::from_sat(AMOUNT_SAT))]).unwrap();
    assert_eq!(run.htlc.spend_path(&tx, run.outpoint()), Some(HtlcSpendPath::ClaimLeaf));
    assert_eq!(tx.output[0].script_pubkey, destination());
    let height = run.ctx.tip_height + 1;
    run.feed(Event::HtlcSpent { tx, confirmed_height: Some(height) });
    assert!(matches!(run.maker.state(), BuyerState::ClaimBroadcast { .. }));
    run.mine(ANTI_REORG_DEPTH);
    run.tick();
    assert!(matches!(run.maker.state(), BuyerState::Claimed { .. }));
}

#[test]
fn admission_refusals() {
    let ctx = context();
    let taker = taker_keys();
    let refused = |offer: Offer, request: LoopInRequest, policy: BuyerPolicy| {
        admit(offer, request, policy, &ctx).map(|_| ()).unwrap_err().code
    };
    let ok = request(&taker);
    let cases: Vec<(&str, Offer, LoopInRequest, BuyerPolicy, ErrorCode)> = vec![
        (
            "unknown offer",
            offer(),
            LoopInRequest { offer_id: "other".into(), ..ok.clone() },
            policy(),
            ErrorCode::UnknownOffer,
        ),
        (
            "expired offer",
            Offer { expires_at: START_TIME, ..offer() },
            ok.clone(),
            policy(),
            ErrorCode::UnknownOffer,
        ),
        (
            "a loop-out offer",
            Offer { direction: SwapDirection::LoopOut, ..offer() },
            ok.clone(),
            policy(),
            ErrorCode::InvalidParams,
        ),
        (
            "a request that is not loop_in",
            offer(),
            LoopInRequest { direction: SwapDirection::LoopOut, ..ok.clone() },
            policy(),
            ErrorCode::InvalidParams,
        ),
        (
            "another network",
            offer(),
            LoopInRequest { network: Network::Testnet, ..ok.clone() },
            policy(),
            ErrorCode::InvalidParams,
        ),
        (
            "amount below the range",
            offer(),
            LoopInRequest { amount_sat: 9_999, ..ok.clone() },
            policy(),
            ErrorCode::AmountOutOfRange,
        ),
        (
            "amount above the range",
            offer(),
            LoopInRequest { amount_sat: 5_000_001, ..ok.clone() },
            policy(),
            ErrorCode::AmountOutOfRange,
        ),
        (
            "fee over the taker's max",
            offer(),
            LoopInRequest { max_total_fee_sat: 1_799, ..ok.clone() },
            policy(),
            ErrorCode::InvalidParams,
        ),
        (
            "the taker names our musig key",
            offer(),
            LoopInRequest { locker_musig_pubkey: maker_keys().musig_pubkey(), ..ok.clone() },
            policy(),
            ErrorCode::InvalidParams,
        ),
        (
            "our claim would not be affordable",
            offer(),
            ok.clone(),
            BuyerPolicy { max_claim_fee_rate_sat_vb: 1_400, ..policy() },
            ErrorCode::AmountOutOfRange,
        ),
        (
            "the offer's claim margin below our floor",
            offer(),
            ok.clone(),
            BuyerPolicy { min_claim_margin: 21, ..policy() },
            ErrorCode::Internal,
        ),
    ];
    // The fee at 200 000 sat: 1 000 + 500 + 300.
    assert_eq!(Quote::compute(&offer(), AMOUNT_SAT).unwrap().fee_sat(), 1_800);
    assert!(admit(
        offer(),
        LoopInRequest { max_total_fee_sat: 1_800, ..ok.clone() },
        policy(),
        &ctx
    )
    .is_ok());
    for (name, offer, request, policy, code) in cases {
        assert_eq!(refused(offer, request, policy), code, "{name}");
    }
}

#[test]
fn swap_funded_refusals() {
    type Tamper = fn(&Run) -> Message;
    let cases: Vec<(&str, Tamper, BuyerCheckError)> = vec![
        (
            "no invoice",
            |r| r.swap_funded(None),
            BuyerCheckError::InvoiceInvalid("missing: a loop-in swap_funded carries it".into()),
        ),
        (
            "another hash",
            |r| {
                let i = invoice(
                    PaymentHash([9; 32]),
                    r.invoice_msat(),
                    r.ctx.now_secs,
                    3_600,
                    Currency::Regtest,
                );
                r.swap_funded(Some(i))
            },
            BuyerCheckError::InvoiceHashMismatch,
        ),
        (
            "another amount",
            |r| {
                let i = invoice(
                    r.taker.payment_hash(),
                    r.invoice_msat() + 1_000,
                    r.ctx.now_secs,
                    3_600,
                    Currency::Regtest,
                );
                r.swap_funded(Some(i))
            },
            BuyerCheckError::InvoiceAmountMismatch {
                invoice_msat: 198_201_000,
                quote_msat: 198_200_000,
            },
        ),
        (
            "expired",
            |r| {
                let i = invoice(
                    r.taker.payment_hash(),
                    r.invoice_msat(),
                    r.ctx.now_secs - 100,
                    10,
                    Currency::Regtest,
                );
                r.swap_funded(Some(i))
            },
            BuyerCheckError::InvoiceExpired,
        ),
        (
            "another network",
            |r| {
                let i = invoice(
                    r.taker.payment_hash(),
                    r.invoice_msat(),
                    r.ctx.now_secs,
                    3_600,
                    Currency::Bitcoin,
                );
                r.swap_funded(Some(i))
            },
            BuyerCheckError::InvoiceNetwork,
        ),
        (
            "the output pays another script",
            |r| {
                let tx = funding_tx(&destination(), AMOUNT_SAT);
                let i = r.good_invoice();
                Message::SwapFunded(SwapFunded { invoice: Some(i), ..SwapFunded::new(&tx, 1) })
            },
            BuyerCheckError::HtlcScriptMismatch(
                "funding output script differs from the htlc".into(),
            ),
        ),
        (
            "the output pays another value",
            |r| {
                let tx = funding_tx(r.htlc.script_pubkey(), AMOUNT_SAT - 1);
                let i = r.good_invoice();
                Message::SwapFunded(SwapFunded { invoice: Some(i), ..SwapFunded::new(&tx, 1) })
            },
            BuyerCheckError::HtlcScriptMismatch(
                "funding output pays 199999 sat, agreed 200000".into(),
            ),
        ),
        (
            "no such output",
            |r| {
                let i = r.good_invoice();
                Message::SwapFunded(SwapFunded {
                    invoice: Some(i),
                    ..SwapFunded::new(&r.funding, 2)
                })
            },
            BuyerCheckError::HtlcScriptMismatch(
                "vout 2 is out of range, the transaction has 2 outputs".into(),
            ),
        ),
    ];
    for (name, tamper, check) in cases {
        let mut run = Run::new();
        assert_eq!(run.quote().invoice_amount_sat, 198_200);
        let message = tamper(&run);
        run.taker_sends(message);
        assert_eq!(run.state_name(), "Aborted", "{name}");
        run.assert_aborted(AbortReason::ChecksFailed, Some(check));
        // Whatever the chain shows afterwards, nothing is paid.
        run.mine(1);
        let height = run.ctx.tip_height;
        run.htlc_output(Some(height));
        run.tick();
        run.mine(5);
        run.tick();
        assert!(!pays(&run.log), "{name}: nothing paid");
        assert_eq!(run.state_name(), "Aborted", "{name}");
    }
}

#[test]
fn funding_timeout_after_the_invoice_expiry_of_the_offer() {
    let mut run = Run::new();
    run.ctx.now_secs = START_TIME + 3_599;
    assert!(run.tick().is_empty(), "still waiting");
    run.ctx.now_secs = START_TIME + 3_600;
    run.tick();
    run.assert_aborted(AbortReason::FundingTimeout, None);
    assert_eq!(run.maker.kind(), StateKind::Failed);
}

#[test]
fn funding_timeout_when_too_few_blocks_are_left_to_pay() {
    // Blocks only (the clock stands still): the last height at which a payment still fits.
    let mut run = Run::with(Offer { invoice_expiry_secs: 86_400, ..offer() }, policy());
    let timeout = run.accept.timeout_height;
    let last = timeout - offer().claim_margin - MIN_CLTV_BUDGET_BLOCKS - 1;
    run.ctx.tip_height = last;
    assert!(run.tick().is_empty(), "tip + margin + 42 < timeout: still waiting");
    run.ctx.tip_height = last + 1;
    run.tick();
    run.assert_aborted(AbortReason::FundingTimeout, None);
}

#[test]
fn a_late_funding_after_the_abort_is_refunded_cooperatively() {
    let mut run = Run::new();
    run.ctx.now_secs = START_TIME + 3_600;
    run.tick();
    run.assert_aborted(AbortReason::FundingTimeout, None);
    // The taker locks anyway and announces it: nothing is paid.
    let funded = run.swap_funded(Some(run.good_invoice()));
    run.taker_sends(funded);
    run.mine(3);
    let height = run.ctx.tip_height - 2;
    run.htlc_output(Some(height));
    run.tick();
    assert!(!pays(&run.log));
    assert_eq!(run.state_name(), "Aborted");
    // Its cooperative refund: refused while the node shows a payment for the hash in flight
    // (never here, but the rule is today's), signed once no payment can succeed.
    assert!(run.cooperative_refund(PaymentStatus::Pending).is_none());
    let last = sent(&run.log).pop();
    assert!(
        matches!(last, Some(Message::Error(ErrorMessage { code: ErrorCode::InvalidState, .. }))),
        "{last:?}"
    );
    let refund = run.cooperative_refund(PaymentStatus::Unknown).expect("co-signed");
    assert_eq!(run.htlc.spend_path(&refund, run.outpoint()), Some(HtlcSpendPath::KeyPath));
    assert_eq!(run.state_name(), "Aborted");
    assert!(!pays(&run.log));
    // The refund confirms: nothing changes for the maker, which never paid.
    run.feed(Event::HtlcSpent { tx: refund, confirmed_height: Some(run.ctx.tip_height) });
    assert_eq!(run.state_name(), "Aborted");
}

#[test]
fn the_taker_aborts_after_locking_and_gets_its_cooperative_refund() {
    // The maker saw the lock before any swap_funded, then the taker gives up.
    let mut run = Run::new();
    run.mine(1);
    let height = run.ctx.tip_height;
    let actions = run.htlc_output(Some(height));
    assert_eq!(actions, vec![Action::Persist], "remembered, not paid for");
    let BuyerState::Accepting { htlc: Some(seen), .. } = run.maker.state() else { panic!() };
    assert_eq!(seen.outpoint, run.outpoint());
    let abort = SwapAbort { reason: AbortReason::UserRequested, message: None };
    run.taker_sends(Message::SwapAbort(abort));
    let BuyerState::Aborted { htlc: Some(h), offered: Some(_), terms: None, .. } =
        run.maker.state()
    else {
        panic!("{:?}", run.maker.state())
    };
    assert_eq!(h.outpoint, run.outpoint());
    assert!(run.cooperative_refund(PaymentStatus::Failed).is_some());
    assert!(!pays(&run.log));
}

#[test]
fn htlc_seen_before_swap_funded_is_paid_for_only_with_the_invoice() {
    let mut run = Run::new();
    run.mine(1);
    let height = run.ctx.tip_height;
    run.htlc_output(Some(height));
    assert!(run.tick().is_empty());
    assert!(!pays(&run.log));
    // An output of the script with another value fails the swap, as in a loop out.
    // (Not here: this one is right.) Now the invoice: the swap moves on to Funded at once.
    let funded = run.swap_funded(Some(run.good_invoice()));
    let actions = run.taker_sends(funded);
    assert!(matches!(run.maker.state(), BuyerState::Funded { .. }), "{}", run.state_name());
    assert!(actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })), "{actions:?}");
    let actions = run.htlc_checked(Some(height));
    assert!(pays(&actions));
}

#[test]
fn htlc_seen_before_swap_funded_without_an_invoice_pays_nothing() {
    let mut run = Run::new();
    run.mine(1);
    let height = run.ctx.tip_height;
    run.htlc_output(Some(height));
    run.taker_sends(run.swap_funded(None));
    run.assert_aborted(
        AbortReason::ChecksFailed,
        Some(BuyerCheckError::InvoiceInvalid("missing: a loop-in swap_funded carries it".into())),
    );
    let BuyerState::Aborted { htlc: Some(_), .. } = run.maker.state() else { panic!() };
    run.mine(1);
    run.tick();
    assert!(!pays(&run.log));
}

#[test]
fn an_early_output_of_another_value_fails_the_swap() {
    let mut run = Run::new();
    let event = Event::HtlcOutput {
        outpoint: run.outpoint(),
        value_sat: AMOUNT_SAT - 1,
        script_pubkey: run.htlc.script_pubkey().to_owned(),
        confirmed_height: None,
    };
    run.feed(event);
    run.assert_aborted(
        AbortReason::ChecksFailed,
        Some(BuyerCheckError::HtlcAmountMismatch {
            expected_sat: AMOUNT_SAT,
            got_sat: AMOUNT_SAT - 1,
        }),
    );
}

#[test]
fn an_early_output_that_leaves_the_chain_is_forgotten() {
    let mut run = Run::new();
    run.htlc_output(None);
    let actions = run.feed(Event::HtlcGone { outpoint: run.outpoint() });
    assert_eq!(actions.first(), Some(&Action::Persist));
    let BuyerState::Accepting { htlc: None, .. } = run.maker.state() else { panic!() };
    // The invoice alone does not make it Funded.
    let funded = run.swap_funded(Some(run.good_invoice()));
    run.taker_sends(funded);
    assert!(matches!(run.maker.state(), BuyerState::Accepted { .. }));
}

#[test]
fn restart_in_accepting_resends_the_accept_and_watches_again() {
    let mut run = Run::new();
    let actions = run.restart();
    let accept = run.log.iter().find_map(|a| match a {
        Action::Send(env) if matches!(env.body, Message::LoopInAccept(_)) => Some(env.clone()),
        _ => None,
    });
    assert!(actions.contains(&Action::Send(accept.unwrap())), "{actions:?}");
    assert!(
        actions.contains(&Action::WatchHtlc { script_pubkey: run.htlc.script_pubkey().to_owned() })
    );
    assert!(!pays(&actions));
    assert_eq!(run.state_name(), "Accepting");
    // And it goes on: the whole swap after the restart.
    run.run_to_claiming();
}

#[test]
fn restart_after_swap_funded_pays_once_confirmed() {
    let mut run = Run::new();
    let funded = run.swap_funded(Some(run.good_invoice()));
    run.taker_sends(funded);
    let actions = run.restart();
    assert_eq!(run.state_name(), "Accepted");
    assert!(
        actions.contains(&Action::WatchHtlc { script_pubkey: run.htlc.script_pubkey().to_owned() })
    );
    assert!(!pays(&actions));
    run.mine(1);
    let height = run.ctx.tip_height;
    run.htlc_output(Some(height));
    let actions = run.restart();
    assert_eq!(run.state_name(), "Funded");
    assert!(actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })), "{actions:?}");
    assert!(pays(&run.htlc_checked(Some(height))));
    // Restarted while paying: no blind second payment, the node is asked.
    let actions = run.restart();
    let payment_hash = run.taker.payment_hash();
    assert!(actions.contains(&Action::CheckPayment { payment_hash }));
    assert!(!pays(&actions));
}

#[test]
fn a_replayed_swap_funded_changes_nothing() {
    let mut run = Run::new();
    let funded = run.swap_funded(Some(run.good_invoice()));
    let env = run.envelope(funded);
    run.feed(Event::Message(env.clone()));
    let terms = run.maker.terms().cloned().unwrap();
    // The same message again (same seq): dropped.
    assert!(run.feed(Event::Message(env)).is_empty());
    // Another swap_funded (a new seq) with another invoice: the terms stay.
    let other = invoice(
        PaymentHash([9; 32]),
        run.invoice_msat(),
        run.ctx.now_secs,
        3_600,
        Currency::Regtest,
    );
    run.taker_sends(run.swap_funded(Some(other)));
    assert_eq!(run.maker.terms(), Some(&terms));
    assert_eq!(run.state_name(), "Accepted");
    run.mine(1);
    let height = run.ctx.tip_height;
    run.htlc_output(Some(height));
    let actions = run.htlc_checked(Some(height));
    let Some(Action::PayInvoice { invoice, .. }) =
        actions.iter().find(|a| matches!(a, Action::PayInvoice { .. }))
    else {
        panic!()
    };
    assert_eq!(*invoice, terms.invoice);
}

#[test]
fn no_payment_before_min_confirmations() {
    let mut run = Run::with(Offer { min_confirmations: 3, ..offer() }, policy());
    let funded = run.swap_funded(Some(run.good_invoice()));
    run.taker_sends(funded);
    run.mine(1);
    let confirmed = run.ctx.tip_height;
    let actions = run.htlc_output(Some(confirmed));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Notify(Notification::FundingSeen { confirmations: 1, required: 3, .. })
    )));
    for _ in 0..2 {
        let actions = run.tick();
        assert!(!pays(&actions) && !actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })));
        run.mine(1);
    }
    // Three confirmations now.
    let actions = run.tick();
    assert!(actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })), "{actions:?}");
    // The chain says fewer confirmations (its view lags): wait.
    let actions = run.htlc_checked(Some(confirmed + 1));
    assert!(!pays(&actions));
    let actions = run.tick();
    assert!(!pays(&actions) && !actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })));
    // The chain source shows the block again: three confirmations, checked once more, paid.
    let actions = run.htlc_output(Some(confirmed));
    assert!(actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. })), "{actions:?}");
    assert!(pays(&run.htlc_checked(Some(confirmed))));
    assert_eq!(
        run.log.iter().filter(|a| matches!(a, Action::PayInvoice { .. })).count(),
        1,
        "paid once"
    );
}

#[test]
fn a_taker_error_or_user_abort_in_accepting_ends_the_swap() {
    let mut run = Run::new();
    let error = ErrorMessage::new(ErrorCode::InvalidParams, "timeout too far");
    run.taker_sends(Message::Error(error));
    assert_eq!(run.state_name(), "Aborted");
    assert!(!pays(&run.log));

    let mut run = Run::new();
    run.feed(Event::UserAbort);
    run.assert_aborted(AbortReason::UserRequested, None);
}

#[test]
fn loop_out_messages_are_refused_in_a_loop_in() {
    let mut run = Run::new();
    let actions = run.taker_sends(Message::LoopInRequest(request(&taker_keys())));
    let [Message::Error(e)] = &sent(&actions)[..] else { panic!("{actions:?}") };
    assert_eq!(e.code, ErrorCode::InvalidState);
    assert!(e.message.contains("taker"), "{}", e.message);
    assert_eq!(run.state_name(), "Accepting");
}

/// A paid claimer whose HTLC's funding the taker double-spent: nothing is decided before the
/// timeout plus the required confirmations; from then on the chain is asked at each tick
/// (`CheckHtlc`, also after a restart that never saw the output leave), and a second `Missing`
/// at a later block ends the swap `Lost` (the funding's txid, `funding_gone`), told with the
/// amount lost. An output found there again in between is claimable as before.
#[test]
fn a_funding_gone_after_the_payment_ends_lost_on_two_missing_checks_past_the_deadline() {
    let asks = |actions: &[Action]| actions.iter().any(|a| matches!(a, Action::CheckHtlc { .. }));
    // Paid and claiming (the cooperative claim or, once its time is up, the claim leaf's):
    // when the HTLC left the chain.
    let gone_since = |run: &Run| match run.maker.state() {
        BuyerState::Claiming { htlc, .. } | BuyerState::ClaimBroadcast { htlc, .. } => {
            htlc.gone_since
        }
        other => panic!("not claiming: {}", other.name()),
    };
    let mut run = Run::new();
    run.run_to_claiming();
    let outpoint = run.outpoint();
    let actions = run.feed(Event::HtlcGone { outpoint });
    assert_eq!(actions.first(), Some(&Action::Persist), "the departure is recorded");
    assert_eq!(gone_since(&run), Some(run.ctx.tip_height));
    // Before the deadline (timeout + 1 confirmation here): nothing asked, nothing decided.
    let deadline = run.accept.timeout_height + 1;
    run.mine(deadline - 1 - run.ctx.tip_height);
    assert!(!asks(&run.tick()));
    let missing = HtlcStatus::Missing;
    run.feed(Event::HtlcChecked { outpoint, status: missing });
    assert!(gone_since(&run).is_some(), "not before the deadline");
    // A restart loses nothing: the record keeps the departure.
    run.restart();
    run.mine(1);
    assert!(asks(&run.tick()), "asked at the deadline");
    // Back on chain: forgotten; missing again: recorded again, not decided at once.
    let unspent = HtlcStatus::Unspent { value_sat: AMOUNT_SAT, confirmed_height: Some(1) };
    run.feed(Event::HtlcChecked { outpoint, status: unspent });
    assert_eq!(gone_since(&run), None);
    run.feed(Event::HtlcChecked { outpoint, status: missing });
    assert_eq!(gone_since(&run), Some(run.ctx.tip_height), "one look is not enough");
    run.mine(1);
    assert!(asks(&run.tick()));
    let actions = run.feed(Event::HtlcChecked { outpoint, status: missing });
    let BuyerState::Lost { terms, spend_txid, funding_gone } = run.maker.state() else {
        panic!("lost: {}", run.state_name())
    };
    assert!(*funding_gone);
    assert_eq!(*spend_txid, outpoint.txid);
    let lost_sat = terms.invoice_amount_msat / 1000;
    assert_eq!(lost_sat, run.quote().invoice_amount_sat);
    let told = Action::Notify(Notification::FundingLost { txid: outpoint.txid, lost_sat });
    assert!(actions.contains(&told), "{actions:?}");
    assert_eq!(actions.first(), Some(&Action::Persist));
    assert_eq!(run.maker.kind(), StateKind::Failed);
    // Ended: no more questions.
    run.mine(1);
    assert!(!asks(&run.tick()));
}
