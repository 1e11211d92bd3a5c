//! Loop in, the locker as taker (spec `02-swap-flow.md`, "Loop in: the locker as taker"): the
//! taker's `SellerSwap` asks a maker's loop-in offer, checks the maker's `swap_accept`, issues the
//! invoice and funds; from the funding on it is the loop-out seller. The maker (claimer) is
//! played by hand from the messages, with its own `SwapKeys`; every message goes through the
//! real encoding. Also: records written by the loop-out code before loop in still load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{rand::rngs::StdRng, rand::SeedableRng, Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute::LockTime, Amount, FeeRate, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use looper_protocol::htlc::{Htlc, HtlcParams};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{
    decode_envelope, encode, AbortReason, CoopClaimRequest, CoopRefundResponse, Envelope,
    ErrorCode, ErrorMessage, LoopInAccept, Message, Offer, PubNonceBytes, SwapAbort, SwapFunded,
    MIN_CLTV_BUDGET_BLOCKS,
};
use looper_protocol::musig::{self, InitiatorSession, Signer};
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::{
    LockerCheckError, LockerStart, LoopInLimits, SellerPolicy, SellerRecord, SellerRequest,
    SellerState, SellerSwap,
};
use looper_protocol::spend::{HtlcInput, SpendPath, SpendTx};
use looper_protocol::swap::{
    Action, Context, Event, Notification, StateKind, SwapError, TxPurpose, ANTI_REORG_DEPTH,
    TIMEOUT_SLACK_BLOCKS,
};
use looper_protocol::terms::Quote;
use looper_protocol::{PaymentHash, SwapDirection, SwapId};
use musig2::BinaryEncoding;

use common::{kernel_verify, master};

const TIP: u32 = 1_000;
const NOW: u64 = 1_800_000_000;
const AMOUNT: u64 = 200_000;
const SWAP: SwapId = SwapId([0xcd; 32]);

fn ctx() -> Context {
    Context::new(NOW, TIP, FeeRate::from_sat_per_vb(2).unwrap())
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(11)
}

fn ln_secret() -> SecretKey {
    SecretKey::from_slice(&[7; 32]).unwrap()
}

fn p2tr(tag: u8) -> ScriptBuf {
    let k = SwapKeys::derive(&master(tag), 0).unwrap();
    ScriptBuf::new_p2tr(&Secp256k1::new(), k.claim_pubkey(), None)
}

/// The maker's loop-in offer.
fn offer() -> Offer {
    Offer {
        ln_node_id: SecretKey::from_slice(&[9; 32]).unwrap().public_key(&Secp256k1::new()),
        ..common::offer(SwapDirection::LoopIn, "in", NOW + 86_400)
    }
}

fn taker_keys() -> SwapKeys {
    SwapKeys::derive(&master(1), 0).unwrap()
}

fn maker_keys() -> SwapKeys {
    SwapKeys::derive(&master(2), 0).unwrap()
}

fn limits() -> LoopInLimits {
    LoopInLimits { max_total_fee_sat: 5_000, max_timeout_delta: 200, ..LoopInLimits::default() }
}

fn start_with(
    offer: Offer,
    limits: LoopInLimits,
) -> Result<(SellerSwap, Vec<Action>), LockerCheckError> {
    SellerSwap::start_loop_in(
        LockerStart {
            swap_id: SWAP,
            peer: "maker".into(),
            offer,
            amount_sat: AMOUNT,
            limits,
            policy: SellerPolicy::default(),
            refund_destination: p2tr(10),
            keys: taker_keys(),
        },
        &ctx(),
    )
}

fn start() -> (SellerSwap, Vec<Action>) {
    start_with(offer(), limits()).unwrap()
}

/// The messages `actions` send, through the real encoding.
fn sent(actions: &[Action]) -> Vec<Envelope> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(env) => Some(decode_envelope(&encode(env)).unwrap()),
            _ => None,
        })
        .collect()
}

fn from_maker(seq: u32, body: Message) -> Event {
    let env = Envelope::new(SWAP, seq, body);
    Event::Message(decode_envelope(&encode(&env)).unwrap())
}

fn feed(swap: &mut SellerSwap, event: Event, ctx: &Context) -> Vec<Action> {
    swap.handle(event, ctx, &mut rng()).unwrap()
}

/// The contract the maker makes from the taker's request: its keys, `timeout_height`.
fn maker_params(swap: &SellerSwap, maker: &SwapKeys, timeout_height: u32) -> HtlcParams {
    let SellerRequest::LoopIn(req) = swap.request() else { panic!("not a loop in") };
    HtlcParams {
        payment_hash: req.payment_hash,
        claim_key: maker.claim_pubkey(),
        refund_key: req.locker_refund_pubkey,
        locker_musig_key: req.locker_musig_pubkey,
        claimer_musig_key: maker.musig_pubkey(),
        timeout_height,
        network: Network::Regtest,
    }
}

/// The honest maker's `swap_accept` with `timeout_height`.
fn accept_at(swap: &SellerSwap, timeout_height: u32) -> LoopInAccept {
    let maker = maker_keys();
    let htlc = Htlc::new(maker_params(swap, &maker, timeout_height)).unwrap();
    let quote = Quote::compute(&offer(), AMOUNT).unwrap();
    LoopInAccept {
        direction: SwapDirection::LoopIn,
        claimer_musig_pubkey: maker.musig_pubkey(),
        claimer_claim_pubkey: maker.claim_pubkey(),
        timeout_height,
        htlc_script_pubkey: htlc.script_pubkey().to_owned(),
        htlc_amount_sat: quote.htlc_amount_sat,
        quote,
    }
}

fn accept(swap: &SellerSwap) -> LoopInAccept {
    accept_at(swap, TIP + offer().timeout_delta)
}

/// The taker's Lightning node's invoice for `hash`.
fn invoice(hash: PaymentHash, amount_msat: u64, expiry_secs: u32) -> String {
    let secp = Secp256k1::new();
    InvoiceBuilder::new(Currency::Regtest)
        .description("loop in".into())
        .payment_hash(sha256::Hash::from_byte_array(hash.0))
        .payment_secret(PaymentSecret([42; 32]))
        .duration_since_epoch(Duration::from_secs(NOW))
        .min_final_cltv_expiry_delta(42)
        .amount_milli_satoshis(amount_msat)
        .expiry_time(Duration::from_secs(u64::from(expiry_secs)))
        .build_signed(|h| secp.sign_ecdsa_recoverable(h, &ln_secret()))
        .unwrap()
        .to_string()
}

/// The taker's wallet's funding: change first, the HTLC at vout 1.
fn funding_tx(script: &bitcoin::Script, amount_sat: u64) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::from_byte_array([5; 32]), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut { value: Amount::from_sat(50_000), script_pubkey: p2tr(30) },
            TxOut { value: Amount::from_sat(amount_sat), script_pubkey: script.to_owned() },
        ],
    }
}

/// Reloads the swap from its stored bytes, as a restarted node does.
fn restart(swap: &SellerSwap) -> SellerSwap {
    let bytes = SwapRecord::from(swap).to_bytes().unwrap();
    let SwapRecord::Seller(rec) = SwapRecord::from_bytes(&bytes).unwrap() else {
        panic!("not a seller record")
    };
    SellerSwap::load(rec, taker_keys()).unwrap()
}

/// Drives the taker to `AwaitingInvoice` and returns the invoice its node made.
fn accepted() -> SellerSwap {
    let (mut swap, _) = start();
    let acc = accept(&swap);
    feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
    assert_eq!(swap.state(), &SellerState::AwaitingInvoice);
    swap
}

fn the_invoice() -> String {
    let quote = Quote::compute(&offer(), AMOUNT).unwrap();
    invoice(taker_keys().payment_hash(), quote.invoice_amount_sat * 1000, 3_600)
}

/// Drives the taker to `Accepted` (invoice created, funding asked for).
fn invoiced() -> SellerSwap {
    let mut swap = accepted();
    feed(&mut swap, Event::InvoiceCreated { invoice: the_invoice(), prepay_invoice: None }, &ctx());
    assert!(matches!(swap.state(), SellerState::Accepted { prepay: None, .. }));
    swap
}

/// Drives the taker to `Funded`; returns the funding transaction.
fn funded() -> (SellerSwap, Transaction) {
    let mut swap = invoiced();
    let tx = funding_tx(swap.htlc().unwrap().script_pubkey(), AMOUNT);
    feed(&mut swap, Event::FundingBuilt { tx: tx.clone(), vout: 1 }, &ctx());
    assert!(matches!(swap.state(), SellerState::Funded { .. }));
    (swap, tx)
}

fn abort_check(swap: &SellerSwap, actions: &[Action]) -> LockerCheckError {
    let SellerState::Aborted { reason: AbortReason::ChecksFailed, check: Some(check), .. } =
        swap.state()
    else {
        panic!("not aborted on a check: {:?}", swap.state());
    };
    let msgs = sent(actions);
    assert!(
        matches!(
            &msgs[..],
            [Envelope {
                seq: 1,
                body: Message::SwapAbort(SwapAbort { reason: AbortReason::ChecksFailed, .. }),
                ..
            }]
        ),
        "{msgs:?}"
    );
    assert_eq!(actions.first(), Some(&Action::Persist));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CreateInvoice { .. } | Action::FundHtlc { .. })),
        "nothing is asked for: {actions:?}"
    );
    assert_eq!(swap.kind(), StateKind::Failed);
    check.clone()
}

fn refused(tamper: impl FnOnce(&mut LoopInAccept), ctx: &Context) -> LockerCheckError {
    let (mut swap, _) = start();
    let mut acc = accept(&swap);
    tamper(&mut acc);
    let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), ctx);
    abort_check(&swap, &actions)
}

// ---------------------------------------------------------------------------------------------
// The start.

#[test]
fn the_taker_asks_with_its_hash_and_keys() {
    let (swap, actions) = start();
    let keys = taker_keys();
    assert_eq!(actions.first(), Some(&Action::Persist));
    let msgs = sent(&actions);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].seq, 0);
    let Message::LoopInRequest(req) = &msgs[0].body else { panic!("{msgs:?}") };
    assert_eq!(req.offer_id, "in");
    assert_eq!(req.direction, SwapDirection::LoopIn);
    assert_eq!(req.amount_sat, AMOUNT);
    assert_eq!(req.payment_hash, keys.payment_hash());
    assert_eq!(req.locker_musig_pubkey, keys.musig_pubkey());
    assert_eq!(req.locker_refund_pubkey, keys.refund_pubkey());
    let quote = Quote::compute(&offer(), AMOUNT).unwrap();
    assert_eq!(req.max_total_fee_sat, quote.fee_sat(), "the quote's fee, within our limit");
    assert_eq!(swap.state(), &SellerState::Requested);
    assert_eq!(swap.state().kind(), StateKind::Pending);
    assert_eq!(swap.direction(), SwapDirection::LoopIn);
    assert_eq!(swap.offer().direction, SwapDirection::LoopIn);
    assert_eq!(swap.amount_sat(), AMOUNT);
    assert_eq!(swap.payment_hash(), keys.payment_hash());
    assert!(swap.htlc_params().is_none() && swap.htlc().is_none());
    assert_eq!(swap.loop_in_limits(), Some(&limits()));
    assert_eq!(swap.invoice_expires_at(), None);
    // The record says so.
    let json = serde_json::to_value(SwapRecord::from(&swap)).unwrap();
    assert_eq!(json["swap"]["state"]["state"], "requested");
    assert_eq!(json["swap"]["request"]["direction"], "loop_in");
}

#[test]
fn the_taker_refuses_an_offer_it_cannot_take_before_asking() {
    let code = |offer: Offer, limits: LoopInLimits| start_with(offer, limits).unwrap_err().code();
    let out = Offer { direction: SwapDirection::LoopOut, ..offer() };
    assert_eq!(code(out, limits()), "not_loop_in");
    let expired = Offer { expires_at: NOW - 1, ..offer() };
    assert_eq!(code(expired, limits()), "invalid_offer");
    let invalid = Offer { relays: Vec::new(), ..offer() };
    assert_eq!(code(invalid, limits()), "invalid_offer");
    let small = Offer { min_amount_sat: AMOUNT + 1, ..offer() };
    assert_eq!(code(small, limits()), "quote_mismatch");
    let err = start_with(offer(), LoopInLimits { max_total_fee_sat: 1_799, ..limits() });
    assert_eq!(err.unwrap_err(), LockerCheckError::FeeTooHigh { fee_sat: 1_800, max_sat: 1_799 });
    let err = start_with(offer(), LoopInLimits { max_timeout_delta: 143, ..limits() });
    assert_eq!(err.unwrap_err(), LockerCheckError::TimeoutTooLong { blocks: 144, max: 143 });
    for code in LockerCheckError::CODES {
        assert!(!code.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// The whole swap.

#[test]
fn happy_path_request_accept_invoice_fund_paid_claimed_with_the_makers_coop_claim() {
    let (mut swap, _) = start();
    let maker = maker_keys();
    let quote = Quote::compute(&offer(), AMOUNT).unwrap();
    let hash = taker_keys().payment_hash();

    // swap_accept: checked, the invoice asked for.
    let acc = accept(&swap);
    let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc.clone())), &ctx());
    assert_eq!(
        actions,
        vec![
            Action::Persist,
            Action::Notify(Notification::Accepted { quote, timeout_height: acc.timeout_height }),
            Action::CreateInvoice {
                payment_hash: hash,
                amount_msat: quote.invoice_amount_sat * 1000,
                expiry_secs: 3_600,
                description: format!("looper swap {SWAP}"),
                prepay_msat: None,
                prepay_expiry_secs: 600,
            },
        ]
    );
    let params = maker_params(&swap, &maker, acc.timeout_height);
    assert_eq!(swap.htlc_params(), Some(&params));
    assert_eq!(swap.htlc().unwrap().script_pubkey(), &acc.htlc_script_pubkey);

    // The invoice: no swap_accept from the taker; funding at once.
    let inv = the_invoice();
    let actions = feed(
        &mut swap,
        Event::InvoiceCreated { invoice: inv.clone(), prepay_invoice: None },
        &ctx(),
    );
    let script = acc.htlc_script_pubkey.clone();
    assert_eq!(
        actions,
        vec![
            Action::Persist,
            Action::WatchHtlc { script_pubkey: script.clone() },
            Action::FundHtlc {
                script_pubkey: script.clone(),
                amount_sat: AMOUNT,
                conf_target: None
            },
        ]
    );
    assert!(swap.invoice_expires_at().is_some());

    // The funding: swap_funded carries the invoice.
    let tx = funding_tx(&script, AMOUNT);
    let actions = feed(&mut swap, Event::FundingBuilt { tx: tx.clone(), vout: 1 }, &ctx());
    assert_eq!(actions[0], Action::Persist);
    assert_eq!(actions[1], Action::Broadcast { tx: tx.clone(), purpose: TxPurpose::Funding });
    let msgs = sent(&actions);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].seq, 1);
    let Message::SwapFunded(f) = &msgs[0].body else { panic!("{msgs:?}") };
    assert_eq!(f, &SwapFunded { invoice: Some(inv.clone()), ..SwapFunded::new(&tx, 1) });
    assert_eq!(f.tx().unwrap(), tx);
    let outpoint = OutPoint { txid: tx.compute_txid(), vout: 1 };
    let actions = feed(
        &mut swap,
        Event::HtlcOutput {
            outpoint,
            value_sat: AMOUNT,
            script_pubkey: script.clone(),
            confirmed_height: Some(TIP + 1),
        },
        &ctx(),
    );
    assert_eq!(actions, vec![Action::Persist]);

    // The maker pays: the taker claims with its preimage.
    let mut later = ctx();
    later.tip_height = TIP + 2;
    let amount_msat = quote.invoice_amount_sat * 1000;
    let actions =
        feed(&mut swap, Event::PaymentClaimable { payment_hash: hash, amount_msat }, &later);
    assert_eq!(
        actions,
        vec![
            Action::Persist,
            Action::ClaimPayment {
                payment_hash: hash,
                preimage: taker_keys().preimage().clone(),
                amount_msat
            },
            Action::Notify(Notification::Paid),
        ]
    );
    feed(&mut swap, Event::PaymentClaimed { payment_hash: hash }, &later);
    assert!(matches!(swap.state(), SellerState::Paid { claim_settled: true, .. }));

    // The maker's cooperative claim, co-signed by the taker.
    let htlc = Htlc::new(params).unwrap();
    let input = HtlcInput {
        htlc: htlc.clone(),
        outpoint,
        amount: Amount::from_sat(AMOUNT),
        path: SpendPath::KeyPath,
    };
    let mut spend =
        SpendTx::build(vec![input], p2tr(40), FeeRate::from_sat_per_vb(2).unwrap()).unwrap();
    let session = InitiatorSession::new(
        &htlc,
        Signer::Claimer,
        maker.musig().secret_key(),
        spend.sighash(0).unwrap(),
        &mut rng(),
    )
    .unwrap();
    let req = CoopClaimRequest {
        tx_hex: bitcoin::consensus::encode::serialize_hex(spend.tx()),
        buyer_nonce: PubNonceBytes(session.public_nonce().to_bytes()),
        preimage: None,
    };
    let actions = feed(&mut swap, from_maker(1, Message::CoopClaimRequest(req)), &later);
    let msgs = sent(&actions);
    let Message::CoopClaimResponse(resp) = &msgs[0].body else { panic!("{msgs:?}") };
    assert_eq!(msgs[0].seq, 2);
    let sig = session
        .finish(
            &musig::decode_pub_nonce(&resp.seller_nonce.0).unwrap(),
            musig::decode_partial_signature(&resp.partial_sig.0).unwrap(),
        )
        .unwrap();
    spend.set_key_path_signature(0, &sig).unwrap();
    let claim = spend.finalize().unwrap();
    kernel_verify(&claim, &[tx.output[1].clone()]).unwrap();

    // The claim confirms: the taker's swap succeeded.
    let actions = feed(
        &mut swap,
        Event::HtlcSpent { tx: claim.clone(), confirmed_height: Some(TIP + 3) },
        &later,
    );
    assert_eq!(actions, vec![Action::Persist]);
    // Final at ANTI_REORG_DEPTH confirmations.
    assert!(matches!(swap.state(), SellerState::Paid { .. }), "{:?}", swap.state());
    let mut deep = later;
    deep.tip_height = TIP + 2 + ANTI_REORG_DEPTH;
    let actions = swap.handle(Event::Tick, &deep, &mut rng()).unwrap();
    assert_eq!(actions[0], Action::Persist);
    let SellerState::Claimed { claim_txid, amount_msat: got, .. } = swap.state() else {
        panic!("{:?}", swap.state())
    };
    assert_eq!((*claim_txid, *got), (claim.compute_txid(), amount_msat));
    assert_eq!(swap.kind(), StateKind::Succeeded);
}

#[test]
fn the_refund_leaf_after_the_timeout_when_the_maker_never_pays() {
    let (mut swap, tx) = funded();
    let timeout = swap.timeout_height().unwrap();
    let outpoint = OutPoint { txid: tx.compute_txid(), vout: 1 };
    let script = swap.htlc().unwrap().script_pubkey().to_owned();
    feed(
        &mut swap,
        Event::HtlcOutput {
            outpoint,
            value_sat: AMOUNT,
            script_pubkey: script,
            confirmed_height: Some(TIP + 1),
        },
        &ctx(),
    );
    // Before the timeout the refund leaf is not valid yet.
    let mut before = ctx();
    before.tip_height = timeout - 1;
    let err = swap.handle(Event::UserScriptSpend, &before, &mut rng()).unwrap_err();
    assert!(matches!(err, SwapError::NotNow { .. }), "{err:?}");
    // A payment that comes too late is failed back.
    let hash = taker_keys().payment_hash();
    let actions = feed(
        &mut swap,
        Event::PaymentClaimable { payment_hash: hash, amount_msat: 198_200_000 },
        &before,
    );
    assert_eq!(actions, vec![Action::FailPayment { payment_hash: hash }]);
    // At the timeout (no cooperative refund asked: the invoice has not expired in block time).
    let mut at = ctx();
    at.tip_height = timeout;
    let actions = swap.handle(Event::Tick, &at, &mut rng()).unwrap();
    let refund = actions
        .iter()
        .find_map(|a| match a {
            Action::Broadcast { tx, purpose: TxPurpose::ScriptRefund } => Some(tx.clone()),
            _ => None,
        })
        .expect("refund leaf broadcast");
    assert_eq!(actions[0], Action::Persist);
    assert!(matches!(swap.state(), SellerState::Refunding { .. }));
    kernel_verify(&refund, &[tx.output[1].clone()]).unwrap();
    assert_eq!(refund.output[0].script_pubkey, p2tr(10));
    feed(
        &mut swap,
        Event::HtlcSpent { tx: refund.clone(), confirmed_height: Some(timeout + 1) },
        &at,
    );
    assert!(matches!(swap.state(), SellerState::Refunding { .. }));
    at.tip_height = timeout + ANTI_REORG_DEPTH;
    swap.handle(Event::Tick, &at, &mut rng()).unwrap();
    assert!(
        matches!(swap.state(), SellerState::Refunded { refund_txid, .. } if *refund_txid == refund.compute_txid())
    );
}

#[test]
fn an_invoice_expired_unpaid_is_refunded_cooperatively_with_the_maker() {
    let (mut swap, tx) = funded();
    let outpoint = OutPoint { txid: tx.compute_txid(), vout: 1 };
    let expires = swap.invoice_expires_at().unwrap();
    let mut later = ctx();
    later.now_secs = expires + 120;
    later.tip_height = TIP + 7;
    let actions = swap.handle(Event::Tick, &later, &mut rng()).unwrap();
    assert!(matches!(swap.state(), SellerState::RefundingCooperatively { .. }));
    let msgs = sent(&actions);
    let Message::CoopRefundRequest(req) = &msgs[0].body else { panic!("{msgs:?}") };
    // The maker, which never paid, signs.
    let maker = maker_keys();
    let htlc = swap.htlc().unwrap().clone();
    let input = HtlcInput {
        htlc: htlc.clone(),
        outpoint,
        amount: Amount::from_sat(AMOUNT),
        path: SpendPath::KeyPath,
    };
    let spend = SpendTx::from_unsigned(req.tx().unwrap(), vec![input]).unwrap();
    let (nonce, partial) = musig::respond(
        &htlc,
        Signer::Claimer,
        &maker.musig().secret_key(),
        &spend.sighash(0).unwrap(),
        &musig::decode_pub_nonce(&req.seller_nonce.0).unwrap(),
        &mut rng(),
    )
    .unwrap();
    let resp = CoopRefundResponse {
        buyer_nonce: PubNonceBytes(nonce.to_bytes()),
        partial_sig: looper_protocol::messages::PartialSigBytes(partial.serialize()),
    };
    let actions = feed(&mut swap, from_maker(1, Message::CoopRefundResponse(resp)), &later);
    let refund = actions
        .iter()
        .find_map(|a| match a {
            Action::Broadcast { tx, purpose: TxPurpose::CooperativeRefund } => Some(tx.clone()),
            _ => None,
        })
        .expect("cooperative refund");
    kernel_verify(&refund, &[tx.output[1].clone()]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The taker's checks of swap_accept.

#[test]
fn a_quote_that_differs_from_ours_is_refused() {
    let check = refused(|a| a.quote.swap_fee_sat += 1, &ctx());
    assert_eq!(check.code(), "quote_mismatch");
    let check = refused(|a| a.quote.invoice_amount_sat -= 1, &ctx());
    assert_eq!(check.code(), "quote_mismatch");
}

#[test]
fn a_fee_over_the_takers_limit_is_refused() {
    // The quote can only match ours, which was within the limit when we asked: a record whose
    // limit was lowered since stands in for a changed limit.
    let (swap, _) = start();
    let mut json = serde_json::to_value(SwapRecord::from(&swap)).unwrap();
    json["swap"]["limits"]["max_total_fee_sat"] = 1_000.into();
    let SwapRecord::Seller(rec) = serde_json::from_value::<SwapRecord>(json).unwrap() else {
        panic!()
    };
    let mut swap = SellerSwap::load(rec, taker_keys()).unwrap();
    let acc = accept(&swap);
    let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
    assert_eq!(
        abort_check(&swap, &actions),
        LockerCheckError::FeeTooHigh { fee_sat: 1_800, max_sat: 1_000 }
    );
}

#[test]
fn a_wrong_amount_is_refused() {
    let check = refused(|a| a.htlc_amount_sat -= 1, &ctx());
    assert_eq!(
        check,
        LockerCheckError::HtlcAmountMismatch { expected_sat: AMOUNT, got_sat: AMOUNT - 1 }
    );
}

#[test]
fn a_timeout_too_far_or_too_near_is_refused() {
    let o = offer();
    let delta = o.timeout_delta;
    let floor = TIP + o.claim_margin + o.min_confirmations + MIN_CLTV_BUDGET_BLOCKS;
    let expected = |t| LockerCheckError::TimeoutOutOfRange {
        timeout_height: t,
        min: floor,
        max: TIP + delta + TIMEOUT_SLACK_BLOCKS,
    };
    for t in [TIP + delta + TIMEOUT_SLACK_BLOCKS + 1, floor - 1, TIP + 1] {
        let (mut swap, _) = start();
        let acc = accept_at(&swap, t);
        let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
        assert_eq!(abort_check(&swap, &actions), expected(t));
    }
    // The edges pass, and so does a maker whose tip lags ten blocks behind ours (its timeout
    // is earlier: our coins are locked for less).
    for t in [TIP + delta + TIMEOUT_SLACK_BLOCKS, floor, TIP + delta - 10] {
        let (mut swap, _) = start();
        let acc = accept_at(&swap, t);
        feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
        assert_eq!(swap.state(), &SellerState::AwaitingInvoice);
    }
}

#[test]
fn a_timeout_beyond_the_takers_own_limit_is_refused() {
    let tight = LoopInLimits { max_timeout_delta: 145, ..limits() };
    let (mut swap, _) = start_with(offer(), tight).unwrap();
    let acc = accept_at(&swap, TIP + 148);
    let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
    assert_eq!(
        abort_check(&swap, &actions),
        LockerCheckError::TimeoutTooLong { blocks: 148, max: 145 }
    );
}

#[test]
fn a_script_that_is_not_the_rebuilt_htlc_is_refused() {
    // Another claim key than the one announced.
    let other = SwapKeys::derive(&master(3), 0).unwrap();
    let check = refused(|a| a.claimer_claim_pubkey = other.claim_pubkey(), &ctx());
    assert_eq!(check.code(), "htlc_script_mismatch");
    // A script one byte off.
    let check = refused(
        |a| {
            let mut bytes = a.htlc_script_pubkey.to_bytes();
            bytes[33] ^= 1;
            a.htlc_script_pubkey = ScriptBuf::from_bytes(bytes);
        },
        &ctx(),
    );
    assert_eq!(check.code(), "htlc_script_mismatch");
    // Our own keys swapped in for the maker's.
    let check = refused(|a| a.claimer_musig_pubkey = taker_keys().musig_pubkey(), &ctx());
    assert_eq!(check.code(), "htlc_script_mismatch");
}

#[test]
fn an_accept_outside_requested_or_repeated_changes_nothing() {
    // Repeated with its sequence number: dropped by the inbox.
    let mut swap = accepted();
    let acc = accept(&swap);
    let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc.clone())), &ctx());
    assert!(actions.is_empty(), "{actions:?}");
    // Another one, with a new number, in AwaitingInvoice, Accepted and Funded: ignored (only the
    // inbox moves).
    let actions = feed(&mut swap, from_maker(1, Message::LoopInAccept(acc.clone())), &ctx());
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(swap.inbox().next_seq, 2);
    assert_eq!(swap.state(), &SellerState::AwaitingInvoice);
    let mut swap = invoiced();
    let actions = feed(&mut swap, from_maker(1, Message::LoopInAccept(acc.clone())), &ctx());
    assert!(actions.is_empty(), "{actions:?}");
    assert!(matches!(swap.state(), SellerState::Accepted { .. }));
    let (mut swap, _) = funded();
    let params = swap.htlc_params().cloned();
    let acc = accept_at(&swap, TIP + 145);
    let actions = feed(&mut swap, from_maker(1, Message::LoopInAccept(acc)), &ctx());
    assert!(actions.is_empty(), "{actions:?}");
    assert!(matches!(swap.state(), SellerState::Funded { .. }));
    assert_eq!(swap.htlc_params().cloned(), params, "the contract never changes");
    // A loop-out seller refuses a loop-in accept, as before.
    let (mut out, _) = loop_out_seller();
    let actions = feed(&mut out, from_maker(1, Message::LoopInAccept(acc_for_out())), &ctx());
    let msgs = sent(&actions);
    assert!(
        matches!(
            &msgs[..],
            [Envelope {
                body: Message::Error(ErrorMessage { code: ErrorCode::InvalidState, .. }),
                ..
            }]
        ),
        "{msgs:?}"
    );
}

fn loop_out_seller() -> (SellerSwap, Vec<Action>) {
    let buyer = SwapKeys::derive(&master(2), 0).unwrap();
    let offer = Offer { direction: SwapDirection::LoopOut, offer_id: "out".into(), ..offer() };
    let quote = Quote::compute(&offer, AMOUNT).unwrap();
    let req = looper_protocol::messages::SwapRequest {
        offer_id: "out".into(),
        direction: SwapDirection::LoopOut,
        network: Network::Regtest,
        amount_sat: AMOUNT,
        buyer_musig_pubkey: buyer.musig_pubkey(),
        buyer_claim_pubkey: buyer.claim_pubkey(),
        max_total_fee_sat: quote.fee_sat(),
        prepay_accepted: false,
    };
    SellerSwap::from_request(
        SWAP,
        "buyer".into(),
        offer,
        req,
        taker_keys(),
        p2tr(10),
        SellerPolicy::default(),
        &ctx(),
    )
    .unwrap()
}

fn acc_for_out() -> LoopInAccept {
    let (swap, _) = start();
    accept(&swap)
}

// ---------------------------------------------------------------------------------------------
// Ending before anything is locked.

#[test]
fn an_error_from_the_maker_in_requested_ends_the_swap() {
    let (mut swap, _) = start();
    let error = ErrorMessage::new(ErrorCode::RateLimited, "too many swaps");
    let actions = feed(&mut swap, from_maker(0, Message::Error(error.clone())), &ctx());
    assert_eq!(actions[0], Action::Persist);
    assert!(actions.contains(&Action::Notify(Notification::PeerError { error })));
    assert!(sent(&actions).is_empty(), "nothing to tell a maker that refused");
    let SellerState::Aborted { reason: AbortReason::Internal, message: Some(m), check: None } =
        swap.state()
    else {
        panic!("{:?}", swap.state())
    };
    assert_eq!(m, "rate_limited: too many swaps");
    assert_eq!(swap.kind(), StateKind::Failed);
}

#[test]
fn an_error_from_the_maker_before_the_funding_ends_the_swap_and_nothing_is_funded() {
    for mut swap in [accepted(), invoiced()] {
        let error = ErrorMessage::new(ErrorCode::UnknownSwap, "no such swap");
        let actions = feed(&mut swap, from_maker(1, Message::Error(error)), &ctx());
        assert_eq!(actions[0], Action::Persist);
        assert!(sent(&actions).is_empty());
        assert!(matches!(swap.state(), SellerState::Aborted { reason: AbortReason::Internal, .. }));
        let tx = funding_tx(swap.htlc().unwrap().script_pubkey(), AMOUNT);
        assert!(feed(&mut swap, Event::FundingBuilt { tx, vout: 1 }, &ctx()).is_empty());
    }
    // Once funded an error is only reported (the loop-out rule).
    let (mut swap, _) = funded();
    let error = ErrorMessage::new(ErrorCode::InvalidState, "later");
    let actions = feed(&mut swap, from_maker(1, Message::Error(error)), &ctx());
    assert!(
        matches!(&actions[..], [Action::Persist, Action::Notify(Notification::PeerError { .. })]),
        "{actions:?}"
    );
    assert!(matches!(swap.state(), SellerState::Funded { .. }));
}

#[test]
fn a_swap_abort_from_the_maker_in_requested_ends_the_swap() {
    let (mut swap, _) = start();
    let abort = SwapAbort { reason: AbortReason::OfferWithdrawn, message: None };
    let actions = feed(&mut swap, from_maker(0, Message::SwapAbort(abort)), &ctx());
    assert_eq!(actions[0], Action::Persist);
    assert!(sent(&actions).is_empty());
    assert!(matches!(
        swap.state(),
        SellerState::Aborted { reason: AbortReason::OfferWithdrawn, check: None, .. }
    ));
}

#[test]
fn the_user_aborts_before_the_funding_and_nothing_is_locked() {
    // Requested, AwaitingInvoice, Accepted: the swap just ends, telling the maker.
    for mut swap in [start().0, accepted(), invoiced()] {
        let actions = feed(&mut swap, Event::UserAbort, &ctx());
        assert_eq!(actions[0], Action::Persist);
        let msgs = sent(&actions);
        assert!(
            matches!(
                &msgs[..],
                [Envelope {
                    body: Message::SwapAbort(SwapAbort { reason: AbortReason::UserRequested, .. }),
                    ..
                }]
            ),
            "{msgs:?}"
        );
        assert!(matches!(swap.state(), SellerState::Aborted { .. }));
        // A funding built meanwhile is never broadcast.
        let tx = funding_tx(&p2tr(50), AMOUNT);
        assert!(feed(&mut swap, Event::FundingBuilt { tx, vout: 1 }, &ctx()).is_empty());
        assert!(matches!(swap.state(), SellerState::Aborted { .. }));
    }
    // Nothing to refund before the funding.
    let (mut swap, _) = start();
    let err = swap.handle(Event::UserScriptSpend, &ctx(), &mut rng()).unwrap_err();
    assert!(matches!(err, SwapError::NotNow { .. }));
    // Once funded: the loop-out rules (a cooperative refund is asked of the maker).
    let (mut swap, _) = funded();
    let actions = feed(&mut swap, Event::UserAbort, &ctx());
    assert!(matches!(swap.state(), SellerState::RefundingCooperatively { .. }));
    assert!(sent(&actions).iter().any(|e| matches!(e.body, Message::CoopRefundRequest(_))));
}

#[test]
fn a_swap_never_funded_ends_when_the_timeout_comes_too_close() {
    let mut swap = invoiced();
    let mut late = ctx();
    late.tip_height = swap.timeout_height().unwrap() - offer().claim_margin;
    let actions = swap.handle(Event::Tick, &late, &mut rng()).unwrap();
    assert!(matches!(
        swap.state(),
        SellerState::Aborted { reason: AbortReason::TimeoutTooClose, .. }
    ));
    assert!(sent(&actions).iter().any(|e| matches!(e.body, Message::SwapAbort(_))));
}

// ---------------------------------------------------------------------------------------------
// Restarts.

#[test]
fn a_restart_in_requested_sends_the_request_again() {
    let (swap, first) = start();
    let mut swap = restart(&swap);
    assert_eq!(swap.state(), &SellerState::Requested);
    let actions = swap.resume(&ctx(), &mut rng()).unwrap();
    assert_eq!(actions, first[1..].to_vec(), "the same request, same seq, nothing else");
    // The maker's answer still goes through.
    let acc = accept(&swap);
    feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
    assert_eq!(swap.state(), &SellerState::AwaitingInvoice);
}

#[test]
fn a_restart_in_awaiting_invoice_asks_for_the_invoice_again() {
    // An offer whose invoices live a day: the time left to the timeout bounds the expiry.
    let (mut swap, _) =
        start_with(Offer { invoice_expiry_secs: 86_400, ..offer() }, limits()).unwrap();
    let acc = accept(&swap);
    let actions = feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
    assert!(
        actions.contains(&Action::CreateInvoice {
            payment_hash: taker_keys().payment_hash(),
            amount_msat: 198_200_000,
            expiry_secs: 144 * 300,
            description: format!("looper swap {SWAP}"),
            prepay_msat: None,
            prepay_expiry_secs: 600,
        }),
        "{actions:?}"
    );
    let mut swap = restart(&swap);
    assert_eq!(swap.state(), &SellerState::AwaitingInvoice);
    let mut later = ctx();
    later.tip_height = swap.timeout_height().unwrap() - 30;
    let actions = swap.resume(&later, &mut rng()).unwrap();
    let msgs = sent(&actions);
    assert!(matches!(&msgs[..], [Envelope { seq: 0, body: Message::LoopInRequest(_), .. }]));
    let asks: Vec<_> =
        actions.iter().filter(|a| matches!(a, Action::CreateInvoice { .. })).collect();
    assert_eq!(asks.len(), 1);
    // Half the blocks left to the timeout, at 600 s a block: 30 blocks leave 9000 s.
    assert!(
        matches!(
            asks[0],
            Action::CreateInvoice {
                expiry_secs: 9_000,
                amount_msat: 198_200_000,
                prepay_msat: None,
                ..
            }
        ),
        "{asks:?}"
    );
    feed(&mut swap, Event::InvoiceCreated { invoice: the_invoice(), prepay_invoice: None }, &later);
    assert!(matches!(swap.state(), SellerState::Accepted { .. }));
}

/// A maker that never answers the request: the taker gives up after `REQUEST_TIMEOUT_SECS`
/// (nothing was locked), telling the maker.
#[test]
fn a_request_the_maker_never_answers_ends() {
    use looper_protocol::swap::{StateKind, REQUEST_TIMEOUT_SECS};
    let (mut swap, _) = start();
    let at = |secs: u64| Context::new(NOW + secs, TIP + 1, FeeRate::from_sat_per_vb(2).unwrap());
    assert!(feed(&mut swap, Event::Tick, &at(REQUEST_TIMEOUT_SECS - 1)).is_empty());
    assert_eq!(swap.state(), &SellerState::Requested);
    let late = feed(&mut swap, Event::Tick, &at(REQUEST_TIMEOUT_SECS));
    assert_eq!(swap.kind(), StateKind::Failed, "{:?}", swap.state());
    let aborts: Vec<_> = sent(&late)
        .into_iter()
        .filter_map(|e| match e.body {
            Message::SwapAbort(m) => Some(m.reason),
            _ => None,
        })
        .collect();
    assert_eq!(aborts, vec![AbortReason::FundingTimeout], "{late:?}");
}

/// The taker's own funding target (`looper in --conf-target`) rides on `FundHtlc`, also after a
/// restart (it is part of the record's limits).
#[test]
fn the_funding_asks_for_the_takers_own_confirmation_target() {
    let urgent = LoopInLimits { funding_conf_target: Some(2), ..limits() };
    let (mut swap, _) = start_with(offer(), urgent).unwrap();
    let acc = accept(&swap);
    feed(&mut swap, from_maker(0, Message::LoopInAccept(acc)), &ctx());
    let invoice = Event::InvoiceCreated { invoice: the_invoice(), prepay_invoice: None };
    let actions = feed(&mut swap, invoice, &ctx());
    let targets = |actions: &[Action]| -> Vec<Option<u16>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::FundHtlc { conf_target, .. } => Some(*conf_target),
                _ => None,
            })
            .collect()
    };
    assert_eq!(targets(&actions), vec![Some(2)]);
    let mut back = restart(&swap);
    assert_eq!(back.loop_in_limits().and_then(|l| l.funding_conf_target), Some(2));
    assert_eq!(targets(&back.resume(&ctx(), &mut rng()).unwrap()), vec![Some(2)]);
}

#[test]
fn a_restart_in_accepted_asks_for_the_funding_again_and_funds_once() {
    let swap = invoiced();
    let mut swap = restart(&swap);
    let actions = swap.resume(&ctx(), &mut rng()).unwrap();
    let script = swap.htlc().unwrap().script_pubkey().to_owned();
    assert_eq!(sent(&actions).len(), 1, "the request only: no swap_accept in a loop in");
    assert!(actions.contains(&Action::WatchHtlc { script_pubkey: script.clone() }));
    let funds: Vec<_> = actions.iter().filter(|a| matches!(a, Action::FundHtlc { .. })).collect();
    assert_eq!(
        funds,
        vec![&Action::FundHtlc {
            script_pubkey: script.clone(),
            amount_sat: AMOUNT,
            conf_target: None
        }]
    );
    // The wallet answers (perhaps twice: the order before the restart and after): one funding.
    let tx = funding_tx(&script, AMOUNT);
    let first = feed(&mut swap, Event::FundingBuilt { tx: tx.clone(), vout: 1 }, &ctx());
    assert_eq!(sent(&first).len(), 1);
    let again = feed(&mut swap, Event::FundingBuilt { tx: tx.clone(), vout: 1 }, &ctx());
    assert!(again.is_empty(), "{again:?}");
    // Restarted once funded: no funding asked, the same funding broadcast again.
    let mut swap = restart(&swap);
    let actions = swap.resume(&ctx(), &mut rng()).unwrap();
    assert!(!actions.iter().any(|a| matches!(a, Action::FundHtlc { .. })), "{actions:?}");
    assert!(actions.contains(&Action::Broadcast { tx, purpose: TxPurpose::Funding }));
}

#[test]
fn every_resend_of_swap_funded_carries_the_invoice() {
    let (swap, tx) = funded();
    let mut swap = restart(&swap);
    let actions = swap.resume(&ctx(), &mut rng()).unwrap();
    let msgs = sent(&actions);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let Message::SwapFunded(f) = &msgs[1].body else { panic!("{msgs:?}") };
    assert_eq!(msgs[1].seq, 1);
    assert_eq!(f.invoice.as_deref(), Some(the_invoice().as_str()));
    assert_eq!(f.tx().unwrap(), tx);
    // And the outbox holds it so (what the node's resend and the cooperative refund's retries
    // send again).
    assert!(swap
        .outbox()
        .sent
        .iter()
        .any(|e| matches!(&e.body, Message::SwapFunded(f) if f.invoice.is_some())));
}

#[test]
fn wrong_keys_do_not_load_a_requested_loop_in() {
    let (swap, _) = start();
    let SwapRecord::Seller(rec) = SwapRecord::from(&swap) else { panic!() };
    let err = SellerSwap::load(rec, SwapKeys::derive(&master(1), 1).unwrap()).unwrap_err();
    assert!(matches!(err, SwapError::WrongKeys { .. }));
}

// ---------------------------------------------------------------------------------------------
// Loop out is as before: records written by the code before loop in load and write back
// byte for byte.

#[test]
fn seller_records_of_the_loop_out_code_still_load_byte_for_byte() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/records");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let record = SwapRecord::from_bytes(&bytes).unwrap();
        assert_eq!(record.to_bytes().unwrap(), bytes, "{} changed shape", path.display());
        let SwapRecord::Seller(rec) = record else { panic!("{}", path.display()) };
        let rec: SellerRecord = rec;
        assert_eq!(rec.direction(), SwapDirection::LoopOut);
        assert!(matches!(rec.request(), SellerRequest::LoopOut(_)));
        assert_eq!(rec.amount_sat(), AMOUNT);
        assert!(rec.htlc_params().is_some() && rec.loop_in_limits().is_none());
        let state = rec.state().name();
        let mut swap = SellerSwap::load(rec, SwapKeys::derive(&master(1), 0).unwrap()).unwrap();
        let actions = swap.resume(&ctx(), &mut rng()).unwrap();
        // A loop out re-sends its swap_accept (with the invoice), never a swap_funded with one.
        let msgs = sent(&actions);
        assert!(matches!(msgs[0].body, Message::SwapAccept(_)), "{state}: {msgs:?}");
        assert!(msgs
            .iter()
            .all(|e| !matches!(&e.body, Message::SwapFunded(f) if f.invoice.is_some())));
        seen += 1;
    }
    assert!(seen >= 4);
}
