//! A deterministic buyer/seller simulation: a virtual clock and tip height, a simulated chain
//! whose HTLC spends are checked by Bitcoin Core's interpreter, a simulated Lightning network,
//! and a wire that carries real encoded messages (and can drop, duplicate or reorder them).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{rand::rngs::StdRng, rand::SeedableRng, Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute::LockTime, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerState, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{decode_envelope, encode, Envelope, Message, Offer};
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::{LockerStart, LoopInLimits, SellerPolicy, SellerState, SellerSwap};
use looper_protocol::swap::{
    Action, Context, Event, HtlcStatus, PaymentStatus, StateKind, TxPurpose,
};
use looper_protocol::{PaymentHash, SwapDirection, SwapId};

use crate::common::{kernel_verify, master};

pub const START_HEIGHT: u32 = 1_000;
pub const START_TIME: u64 = 1_800_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Buyer,
    Seller,
}

/// Knobs for the scenarios: faults and misbehaviour.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// Route CLTV the simulated network needs (payment fails if the cap is lower).
    pub route_cltv: u32,
    /// Blocks a payment spends in flight before it reaches the seller.
    pub payment_delay_blocks: u32,
    /// The first N payment attempts fail at once (failed back by the first hop).
    pub fail_first_payments: u32,
    /// The first N payment attempts are not even sent (no usable channel yet: a peer
    /// reconnecting).
    pub unsent_first_payments: u32,
    /// The buyer's node is gone after it accepted (never pays, never answers).
    pub buyer_vanishes_after_accept: bool,
    /// The buyer aborts once the HTLC is funded.
    pub buyer_aborts_when_funded: bool,
    /// The seller's co-signing is switched off.
    pub seller_uncooperative: bool,
    /// Every message is delivered twice.
    pub duplicate_messages: bool,
    /// Messages are delivered newest first.
    pub reorder_messages: bool,
    /// Tamper with what the seller sends or does.
    pub tamper: Option<Tamper>,
    /// Buyer's route CLTV cap.
    pub buyer_max_route_cltv: Option<u32>,
    /// Crash a party right after it persists this state, restoring it from its record.
    pub crash_at: Option<(Party, &'static str)>,
    /// The seller's Lightning claim never settles (the node takes the claim but never reports
    /// it claimed, and the payment is failed back later).
    pub seller_claim_never_settles: bool,
    /// The seller's offer sets this `claim_margin` (a malicious seller's small margin).
    pub offer_claim_margin: Option<u32>,
    /// Blocks that pass while a crashed party is down (`crash_at`), before it restarts.
    pub crash_downtime_blocks: u32,
    /// The first claim broadcast is dropped by the network (never reaches the mempool).
    pub drop_first_claim: bool,
    /// The first `coop_refund_request` is lost on the wire.
    pub drop_first_refund_request: bool,
    /// The buyer's `swap_abort` is lost on the wire (the seller never hears that it gave up).
    pub drop_buyer_abort: bool,
    /// The offer asks for this prepay.
    pub prepay_sat: Option<u64>,
    /// The buyer never pays the prepay (a griefer that takes the offer for free).
    pub buyer_skips_prepay: bool,
    /// The buyer's `max_prepay_sat`.
    pub buyer_max_prepay_sat: Option<u64>,
    /// The buyer's node holds back the news that the seller failed its payment back (until
    /// [`Sim::release_held_reports`]).
    pub hold_buyer_failure_reports: bool,
    /// Which way the swap goes. Loop out (the default): the buyer (claimer) takes the seller's
    /// offer. Loop in: the seller (locker) takes the buyer's loop-in offer
    /// ([`SellerSwap::start_loop_in`]) and the buyer, its maker, answers the request the wire
    /// delivers ([`BuyerSwap::from_loop_in_request`]). The parties keep their money roles: the
    /// buyer pays and claims, the seller locks and refunds, whichever direction.
    pub loop_in: bool,
}

/// Both directions, for scenarios run in each.
pub const DIRECTIONS: [bool; 2] = [false, true];

/// The preimage of the seller's prepay invoice (the sim's Lightning node makes it).
pub const PREPAY_PREIMAGE: [u8; 32] = [0x77; 32];

pub fn prepay_hash() -> PaymentHash {
    PaymentHash(sha256::Hash::hash(&PREPAY_PREIMAGE).to_byte_array())
}

/// What a simulated Lightning node knows of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LnStatus {
    #[default]
    Unknown,
    Pending,
    Failed,
    Succeeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    FundingValue,
    HtlcScript,
    InvoiceHash,
    InvoiceExpired,
    InvoiceAmount,
    InvoicePayee,
    /// The prepay invoice asks 1 sat more than the quote's prepay.
    PrepayAmount,
}

#[derive(Debug, Default)]
pub struct Chain {
    pub mempool: Vec<Transaction>,
    pub confirmed: BTreeMap<Txid, (u32, Transaction)>,
}

impl Chain {
    fn all(&self) -> impl Iterator<Item = (&Transaction, Option<u32>)> {
        self.confirmed
            .values()
            .map(|(h, t)| (t, Some(*h)))
            .chain(self.mempool.iter().map(|t| (t, None)))
    }

    fn spender_of(&self, op: OutPoint) -> Option<(&Transaction, Option<u32>)> {
        self.all().find(|(t, _)| t.input.iter().any(|i| i.previous_output == op))
    }

    fn output(&self, op: OutPoint) -> Option<TxOut> {
        self.all()
            .find(|(t, _)| t.compute_txid() == op.txid)
            .and_then(|(t, _)| t.output.get(op.vout as usize).cloned())
    }
}

pub struct Sim {
    pub opts: Opts,
    pub ctx: Context,
    pub rng: StdRng,
    pub offer: Offer,
    /// The buyer (the claimer): from the start in a loop out, once the request arrives in a loop
    /// in.
    pub buyer: Option<BuyerSwap>,
    pub seller: Option<SellerSwap>,
    pub buyer_record: Vec<u8>,
    pub seller_record: Vec<u8>,
    pub to_seller: VecDeque<Envelope>,
    pub to_buyer: VecDeque<Envelope>,
    pub chain: Chain,
    pub watch: Vec<(Party, ScriptBuf)>,
    pub seen: BTreeMap<(u8, String), String>,
    /// Payments in flight: (arrives at seller at height, hash, amount).
    pub in_flight: Vec<(u32, PaymentHash, u64)>,
    pub buyer_paid_msat: u64,
    pub seller_received_msat: u64,
    pub seller_failed_payments: u32,
    pub broadcasts: Vec<(Party, TxPurpose, Txid)>,
    pub crashed: bool,
    /// Transactions double-spent away (`remove_tx`): never accepted again.
    pub conflicted: Vec<Txid>,
    /// The buyer's node's view of its payment.
    pub buyer_ln: LnStatus,
    /// The seller's node's view of the payment to its invoice.
    pub seller_ln: LnStatus,
    /// Every `PayInvoice` attempt number seen, in order.
    pub attempts: Vec<u32>,
    /// `(tip, max_total_cltv_expiry_delta)` of every `PayInvoice`.
    pub pay_budgets: Vec<(u32, u32)>,
    /// Times a payment was started while another attempt was in flight (must stay 0).
    pub double_payments: u32,
    /// Refund signatures the buyer gave while a payment was in flight or done (must stay 0).
    pub refund_sigs_while_paying: u32,
    pub log: Vec<String>,
    pub buyer_gone: bool,
    /// The mempool's minimum fee rate (a fee spike): claims and refunds below it are refused
    /// and not mined.
    pub min_fee_rate: FeeRate,
    /// Replacements accepted (BIP-125), as (replaced, replacement).
    pub replacements: Vec<(Txid, Txid)>,
    /// The prepay the buyer paid and the seller received (one payment: it settles at once).
    pub prepaid_msat: u64,
    /// `PayPrepay` actions seen (idempotent: paid once whatever the count).
    pub prepay_orders: u32,
    /// Payment reports to the buyer held back (`hold_buyer_failure_reports`).
    pub held_reports: Vec<Event>,
    ln_secret: SecretKey,
}

pub fn offer() -> Offer {
    crate::common::offer(SwapDirection::LoopOut, "sim", START_TIME + 86_400)
}

pub fn p2tr(tag: u8) -> ScriptBuf {
    let k = SwapKeys::derive(&master(tag), 0).unwrap();
    ScriptBuf::new_p2tr(&Secp256k1::new(), k.claim_pubkey(), None)
}

/// The buyer's policy: as taker of a loop out, as maker of a loop in.
fn buyer_policy(opts: &Opts) -> BuyerPolicy {
    let mut policy = BuyerPolicy {
        max_total_fee_sat: 50_000,
        max_route_cltv: opts.buyer_max_route_cltv.unwrap_or(500),
        min_confirmations: 1,
        ..BuyerPolicy::default()
    };
    if let Some(max) = opts.buyer_max_prepay_sat {
        policy.max_prepay_sat = max;
    }
    policy
}

impl Sim {
    pub fn new(opts: Opts) -> Self {
        let ctx = Context::new(START_TIME, START_HEIGHT, FeeRate::from_sat_per_vb(2).unwrap());
        let mut offer = offer();
        if let Some(margin) = opts.offer_claim_margin {
            offer.claim_margin = margin;
        }
        offer.prepay_sat = opts.prepay_sat;
        if opts.loop_in {
            offer.direction = SwapDirection::LoopIn;
            offer.offer_id = "sim-in".into();
        }
        let mut buyer = None;
        let mut seller = None;
        let (first, actions) = if opts.loop_in {
            let start = LockerStart {
                swap_id: SwapId([0xab; 32]),
                peer: "buyer".into(),
                offer: offer.clone(),
                amount_sat: 200_000,
                limits: LoopInLimits {
                    max_total_fee_sat: 50_000,
                    max_timeout_delta: 200,
                    ..LoopInLimits::default()
                },
                policy: SellerPolicy { cooperative_claims: !opts.seller_uncooperative },
                refund_destination: p2tr(10),
                keys: SwapKeys::derive(&master(1), 0).unwrap(),
            };
            let (s, actions) = SellerSwap::start_loop_in(start, &ctx).expect("locker starts");
            seller = Some(s);
            (Party::Seller, actions)
        } else {
            let start = BuyerStart {
                swap_id: SwapId([0xab; 32]),
                peer: "seller".into(),
                offer: offer.clone(),
                amount_sat: 200_000,
                policy: buyer_policy(&opts),
                claim_destination: p2tr(20),
                keys: SwapKeys::derive(&master(2), 0).unwrap(),
            };
            let (b, actions) = BuyerSwap::start(start, &ctx).expect("buyer starts");
            buyer = Some(b);
            (Party::Buyer, actions)
        };
        let mut sim = Sim {
            opts,
            ctx,
            rng: StdRng::seed_from_u64(7),
            offer,
            buyer,
            seller,
            buyer_record: Vec::new(),
            seller_record: Vec::new(),
            to_seller: VecDeque::new(),
            to_buyer: VecDeque::new(),
            chain: Chain::default(),
            watch: Vec::new(),
            seen: BTreeMap::new(),
            in_flight: Vec::new(),
            buyer_paid_msat: 0,
            seller_received_msat: 0,
            seller_failed_payments: 0,
            broadcasts: Vec::new(),
            crashed: false,
            conflicted: Vec::new(),
            buyer_ln: LnStatus::Unknown,
            seller_ln: LnStatus::Unknown,
            attempts: Vec::new(),
            pay_budgets: Vec::new(),
            min_fee_rate: FeeRate::ZERO,
            replacements: Vec::new(),
            prepaid_msat: 0,
            prepay_orders: 0,
            held_reports: Vec::new(),
            double_payments: 0,
            refund_sigs_while_paying: 0,
            log: Vec::new(),
            buyer_gone: false,
            ln_secret: SecretKey::from_slice(&[7; 32]).unwrap(),
        };
        sim.run(first, actions);
        sim
    }

    /// The buyer (the claimer); in a loop in, once the request reached it.
    pub fn buyer(&self) -> &BuyerSwap {
        self.buyer.as_ref().expect("the buyer exists")
    }

    pub fn buyer_mut(&mut self) -> &mut BuyerSwap {
        self.buyer.as_mut().expect("the buyer exists")
    }

    /// Whether `party`'s machine exists (a loop-in buyer only once the request arrived; a
    /// loop-out seller likewise).
    pub fn exists(&self, party: Party) -> bool {
        match party {
            Party::Buyer => self.buyer.is_some(),
            Party::Seller => self.seller.is_some(),
        }
    }

    fn wire(&mut self, to: Party, env: Envelope) {
        // Real encoding on the way.
        let env = decode_envelope(&encode(&env)).expect("our own messages decode");
        if self.opts.drop_first_refund_request && matches!(env.body, Message::CoopRefundRequest(_))
        {
            self.opts.drop_first_refund_request = false;
            self.log.push("wire: coop_refund_request lost".into());
            return;
        }
        if self.opts.drop_buyer_abort && matches!(env.body, Message::SwapAbort(_)) {
            self.opts.drop_buyer_abort = false;
            self.log.push("wire: swap_abort lost".into());
            return;
        }
        let queue = if to == Party::Seller { &mut self.to_seller } else { &mut self.to_buyer };
        queue.push_back(env.clone());
        if self.opts.duplicate_messages {
            queue.push_back(env);
        }
    }

    fn make_invoice(&self, hash: PaymentHash, amount_msat: u64, expiry_secs: u32) -> String {
        self.build_invoice(hash, amount_msat, expiry_secs, self.opts.tamper)
    }

    fn build_invoice(
        &self,
        hash: PaymentHash,
        amount_msat: u64,
        expiry_secs: u32,
        tamper: Option<Tamper>,
    ) -> String {
        let secp = Secp256k1::new();
        let mut hash = hash;
        let mut amount_msat = amount_msat;
        let mut expiry = u64::from(expiry_secs);
        let mut created = self.ctx.now_secs;
        match tamper {
            Some(Tamper::InvoiceHash) => hash = PaymentHash([0x99; 32]),
            Some(Tamper::InvoiceAmount) => amount_msat += 1_000,
            Some(Tamper::InvoiceExpired) => {
                expiry = 10;
                created -= 100;
            }
            _ => {}
        }
        InvoiceBuilder::new(Currency::Regtest)
            .description("sim".into())
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .payment_secret(PaymentSecret([42; 32]))
            .duration_since_epoch(Duration::from_secs(created))
            .min_final_cltv_expiry_delta(42)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(expiry))
            .build_signed(|h| {
                let key = if tamper == Some(Tamper::InvoicePayee) {
                    SecretKey::from_slice(&[8; 32]).unwrap()
                } else {
                    self.ln_secret
                };
                secp.sign_ecdsa_recoverable(h, &key)
            })
            .unwrap()
            .to_string()
    }

    fn feed(&mut self, party: Party, event: Event) {
        if party == Party::Buyer && self.buyer_gone {
            return;
        }
        let ctx = self.ctx;
        let result = match party {
            Party::Buyer => match self.buyer.as_mut() {
                Some(b) => b.handle(event, &ctx, &mut self.rng),
                None => return,
            },
            Party::Seller => match self.seller.as_mut() {
                Some(s) => s.handle(event, &ctx, &mut self.rng),
                None => return,
            },
        };
        match result {
            Ok(actions) => self.run(party, actions),
            Err(e) => self.log.push(format!("{party:?} refused event: {e}")),
        }
    }

    fn state_name(&self, party: Party) -> &'static str {
        match party {
            Party::Buyer => self.buyer.as_ref().map(|b| b.state().name()).unwrap_or("-"),
            Party::Seller => self.seller.as_ref().map(|s| s.state().name()).unwrap_or("-"),
        }
    }

    /// Carries out actions in order, as the node would.
    fn run(&mut self, party: Party, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist => {
                    let bytes = match party {
                        Party::Buyer => SwapRecord::from(self.buyer()).to_bytes().unwrap(),
                        Party::Seller => {
                            SwapRecord::from(self.seller.as_ref().unwrap()).to_bytes().unwrap()
                        }
                    };
                    if party == Party::Buyer {
                        self.buyer_record = bytes;
                    } else {
                        self.seller_record = bytes;
                    }
                    if let Some((p, state)) = self.opts.crash_at {
                        if p == party && state == self.state_name(party) && !self.crashed {
                            self.crashed = true;
                            self.log.push(format!("crash {party:?} in {state}"));
                            // The world moves on while the party is down.
                            self.ctx.tip_height += self.opts.crash_downtime_blocks;
                            self.ctx.now_secs += 600 * u64::from(self.opts.crash_downtime_blocks);
                            self.restart(party);
                            return; // The rest of the actions died with the process.
                        }
                    }
                }
                Action::Send(env) => {
                    if party == Party::Buyer
                        && matches!(env.body, Message::CoopRefundResponse(_))
                        && matches!(self.buyer_ln, LnStatus::Pending | LnStatus::Succeeded)
                    {
                        self.refund_sigs_while_paying += 1;
                    }
                    if party == Party::Buyer && self.opts.tamper == Some(Tamper::HtlcScript) {
                        // Loop in: the maker's accept names another script.
                        if let Message::LoopInAccept(mut a) = env.body.clone() {
                            a.htlc_script_pubkey = p2tr(33);
                            let env = Envelope { body: Message::LoopInAccept(a), ..env };
                            self.wire(Party::Seller, env);
                            continue;
                        }
                    }
                    if party == Party::Seller && self.opts.tamper == Some(Tamper::HtlcScript) {
                        if let Message::SwapAccept(mut a) = env.body.clone() {
                            a.htlc_script_pubkey = p2tr(33);
                            let env = Envelope { body: Message::SwapAccept(a), ..env };
                            self.wire(Party::Buyer, env);
                            continue;
                        }
                    }
                    let to = if party == Party::Buyer { Party::Seller } else { Party::Buyer };
                    self.wire(to, env);
                }
                Action::CreateInvoice {
                    payment_hash,
                    amount_msat,
                    expiry_secs,
                    prepay_msat,
                    prepay_expiry_secs,
                    ..
                } => {
                    let invoice = self.make_invoice(payment_hash, amount_msat, expiry_secs);
                    let prepay_invoice = prepay_msat.map(|m| {
                        let m = if self.opts.tamper == Some(Tamper::PrepayAmount) {
                            m + 1_000
                        } else {
                            m
                        };
                        self.build_invoice(prepay_hash(), m, prepay_expiry_secs, None)
                    });
                    self.feed(party, Event::InvoiceCreated { invoice, prepay_invoice });
                }
                Action::PayPrepay { invoice, amount_msat } => {
                    assert_eq!(party, Party::Buyer);
                    let inv: lightning_invoice::Bolt11Invoice = invoice.parse().unwrap();
                    assert_eq!(inv.amount_milli_satoshis(), Some(amount_msat));
                    assert_eq!(inv.payment_hash().to_byte_array(), prepay_hash().0);
                    self.prepay_orders += 1;
                    if self.opts.buyer_skips_prepay {
                        continue;
                    }
                    if self.prepaid_msat == 0 {
                        // A plain invoice: the seller's node settles it at once.
                        self.prepaid_msat = amount_msat;
                        self.feed(
                            Party::Seller,
                            Event::PaymentClaimed { payment_hash: prepay_hash() },
                        );
                    }
                    let preimage = looper_protocol::Preimage(PREPAY_PREIMAGE);
                    self.feed(Party::Buyer, Event::PaymentSucceeded { preimage });
                }
                Action::FundHtlc { script_pubkey, amount_sat, .. } => {
                    let tx = Transaction {
                        version: Version::TWO,
                        lock_time: LockTime::ZERO,
                        input: vec![TxIn {
                            previous_output: OutPoint {
                                txid: Txid::from_byte_array([5; 32]),
                                vout: 0,
                            },
                            script_sig: ScriptBuf::new(),
                            sequence: Sequence::MAX,
                            witness: Witness::new(),
                        }],
                        output: vec![
                            TxOut { value: Amount::from_sat(50_000), script_pubkey: p2tr(11) },
                            TxOut { value: Amount::from_sat(amount_sat), script_pubkey },
                        ],
                    };
                    self.feed(party, Event::FundingBuilt { tx, vout: 1 });
                }
                Action::QueueClaim => {
                    // A node batches claims; alone, the claim is built at once.
                    let ctx = self.ctx;
                    match looper_protocol::claims::claim_alone(self.buyer(), &ctx) {
                        Ok((event, tx)) => {
                            self.feed(party, event);
                            self.broadcast(party, tx, TxPurpose::ScriptClaim);
                        }
                        Err(e) => self.log.push(format!("claim not built: {e}")),
                    }
                }
                Action::Broadcast { mut tx, purpose } => {
                    if purpose == TxPurpose::Funding
                        && self.opts.tamper == Some(Tamper::FundingValue)
                    {
                        tx.output[1].value -= Amount::from_sat(1_000);
                    }
                    self.broadcast(party, tx, purpose);
                }
                Action::WatchHtlc { script_pubkey } => {
                    if !self.watch.contains(&(party, script_pubkey.clone())) {
                        self.watch.push((party, script_pubkey));
                    }
                    self.notify_chain();
                }
                Action::PayInvoice {
                    invoice,
                    amount_msat,
                    max_total_cltv_expiry_delta,
                    attempt,
                } => {
                    let inv: lightning_invoice::Bolt11Invoice = invoice.parse().unwrap();
                    assert_eq!(inv.amount_milli_satoshis(), Some(amount_msat));
                    assert!(
                        self.attempts.last().is_none_or(|a| *a < attempt),
                        "attempt numbers grow: {:?} then {attempt}",
                        self.attempts
                    );
                    self.attempts.push(attempt);
                    self.pay_budgets.push((self.ctx.tip_height, max_total_cltv_expiry_delta));
                    let hash = PaymentHash(inv.payment_hash().to_byte_array());
                    if matches!(self.buyer_ln, LnStatus::Pending | LnStatus::Succeeded) {
                        // ldk-node refuses a second payment of the same hash; count it.
                        self.double_payments += 1;
                        continue;
                    }
                    if self.opts.unsent_first_payments > 0 {
                        self.opts.unsent_first_payments -= 1;
                        self.feed(
                            Party::Buyer,
                            Event::PaymentNotSent {
                                attempt,
                                reason: "no route: peer offline".into(),
                            },
                        );
                    } else if self.opts.fail_first_payments > 0 {
                        self.opts.fail_first_payments -= 1;
                        self.buyer_ln = LnStatus::Failed;
                        self.feed(
                            Party::Buyer,
                            Event::PaymentFailed {
                                attempt,
                                reason: "temporary channel failure".into(),
                            },
                        );
                    } else if max_total_cltv_expiry_delta < self.opts.route_cltv.max(42) {
                        self.buyer_ln = LnStatus::Failed;
                        self.feed(
                            Party::Buyer,
                            Event::PaymentFailed {
                                attempt,
                                reason: "no route within the cltv cap".into(),
                            },
                        );
                    } else {
                        self.buyer_ln = LnStatus::Pending;
                        let at = self.ctx.tip_height + self.opts.payment_delay_blocks;
                        self.in_flight.push((at, hash, amount_msat));
                        self.deliver_payments();
                    }
                }
                Action::CheckPayment { payment_hash } if payment_hash == prepay_hash() => {
                    let status = if self.prepaid_msat > 0 {
                        PaymentStatus::Succeeded { preimage: None }
                    } else {
                        PaymentStatus::Unknown
                    };
                    self.feed(party, Event::PaymentStatus { payment_hash, status });
                }
                Action::CheckPayment { payment_hash } => {
                    let status = match party {
                        Party::Buyer => match self.buyer_ln {
                            LnStatus::Unknown => PaymentStatus::Unknown,
                            LnStatus::Pending => PaymentStatus::Pending,
                            LnStatus::Failed => PaymentStatus::Failed,
                            LnStatus::Succeeded => PaymentStatus::Succeeded {
                                preimage: Some(
                                    SwapKeys::derive(&master(1), 0).unwrap().preimage().clone(),
                                ),
                            },
                        },
                        Party::Seller => match self.seller_ln {
                            LnStatus::Unknown => PaymentStatus::Unknown,
                            LnStatus::Pending => PaymentStatus::Pending,
                            LnStatus::Failed => PaymentStatus::Failed,
                            LnStatus::Succeeded => PaymentStatus::Succeeded { preimage: None },
                        },
                    };
                    self.feed(party, Event::PaymentStatus { payment_hash, status });
                }
                Action::CheckHtlc { outpoint, .. } => {
                    let status =
                        match self.chain.all().find(|(t, _)| t.compute_txid() == outpoint.txid) {
                            None => HtlcStatus::Missing,
                            Some((tx, height)) => {
                                let value_sat = tx.output[outpoint.vout as usize].value.to_sat();
                                if self.chain.spender_of(outpoint).is_some() {
                                    HtlcStatus::Spent
                                } else {
                                    HtlcStatus::Unspent { value_sat, confirmed_height: height }
                                }
                            }
                        };
                    self.feed(party, Event::HtlcChecked { outpoint, status });
                }
                Action::ClaimPayment { payment_hash, preimage, amount_msat } => {
                    assert_eq!(preimage.payment_hash(), payment_hash);
                    if self.opts.seller_claim_never_settles {
                        // The claim is lost (the held HTLC timed out first): the payment fails
                        // back, nothing was revealed.
                        if self.seller_ln == LnStatus::Pending {
                            self.seller_ln = LnStatus::Failed;
                            self.buyer_ln = LnStatus::Failed;
                            self.feed(
                                Party::Buyer,
                                Event::PaymentStatus {
                                    payment_hash,
                                    status: PaymentStatus::Failed,
                                },
                            );
                        }
                        continue;
                    }
                    if self.seller_received_msat == 0 {
                        self.seller_received_msat = amount_msat;
                        self.buyer_paid_msat = amount_msat;
                        self.seller_ln = LnStatus::Succeeded;
                        self.buyer_ln = LnStatus::Succeeded;
                        self.feed(Party::Buyer, Event::PaymentSucceeded { preimage });
                        self.feed(Party::Seller, Event::PaymentClaimed { payment_hash });
                    }
                }
                Action::FailPayment { payment_hash } => {
                    self.seller_failed_payments += 1;
                    if self.seller_ln == LnStatus::Pending {
                        self.seller_ln = LnStatus::Failed;
                    }
                    if self.buyer_ln == LnStatus::Pending {
                        self.buyer_ln = LnStatus::Failed;
                        // Failed back: the node reports it without telling which attempt.
                        let report =
                            Event::PaymentStatus { payment_hash, status: PaymentStatus::Failed };
                        if self.opts.hold_buyer_failure_reports {
                            self.held_reports.push(report);
                        } else {
                            self.feed(Party::Buyer, report);
                        }
                    }
                }
                Action::Notify(n) => self.log.push(format!("{party:?}: {n:?}")),
            }
        }
    }

    pub fn restart(&mut self, party: Party) {
        let ctx = self.ctx;
        // A restarted node's chain watcher reports what it sees afresh (the engine's memory of
        // what it fed is gone with the process).
        let tag = (party == Party::Buyer) as u8;
        self.seen.retain(|(p, _), _| *p != tag);
        match party {
            Party::Buyer => {
                let SwapRecord::Buyer(b) = SwapRecord::from_bytes(&self.buyer_record).unwrap()
                else {
                    panic!("not a buyer record")
                };
                let keys = SwapKeys::derive(&master(2), b.key_index()).unwrap();
                let buyer = self.buyer.insert(BuyerSwap::load(b, keys).unwrap());
                let actions = buyer.resume(&ctx, &mut self.rng).unwrap();
                self.run(Party::Buyer, actions);
            }
            Party::Seller => {
                let SwapRecord::Seller(s) = SwapRecord::from_bytes(&self.seller_record).unwrap()
                else {
                    panic!("not a seller record")
                };
                let keys = SwapKeys::derive(&master(1), s.key_index()).unwrap();
                self.seller = Some(SellerSwap::load(s, keys).unwrap());
                let actions = self.seller.as_mut().unwrap().resume(&ctx, &mut self.rng).unwrap();
                self.run(Party::Seller, actions);
            }
        }
    }

    /// The fee `tx` pays (0 for the funding, whose inputs the sim does not know).
    pub fn fee_of(&self, tx: &Transaction) -> u64 {
        let inputs: Option<u64> = tx
            .input
            .iter()
            .map(|i| self.chain.output(i.previous_output).map(|o| o.value.to_sat()))
            .sum();
        let out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        inputs.map_or(0, |i| i.saturating_sub(out))
    }

    /// The claim or refund `party`'s stored record holds.
    pub fn persisted_spend(&self, party: Party) -> Option<Transaction> {
        let bytes = if party == Party::Buyer { &self.buyer_record } else { &self.seller_record };
        match SwapRecord::from_bytes(bytes).ok()? {
            SwapRecord::Buyer(r) => match r.state() {
                BuyerState::ClaimBroadcast { claim_tx, .. } => Some(claim_tx.clone()),
                _ => None,
            },
            SwapRecord::Seller(r) => match r.state() {
                SellerState::Refunding { refund_tx, .. } => Some(refund_tx.clone()),
                _ => None,
            },
        }
    }

    fn broadcast(&mut self, party: Party, tx: Transaction, purpose: TxPurpose) {
        let txid = tx.compute_txid();
        if self.chain.all().any(|(t, _)| t.compute_txid() == txid) {
            return;
        }
        if self.conflicted.contains(&txid) {
            self.log.push(format!("{party:?} {purpose:?} rejected: inputs double-spent"));
            return;
        }
        // A claim or refund is persisted before it goes out.
        if purpose != TxPurpose::Funding {
            assert_eq!(
                self.persisted_spend(party).map(|t| t.compute_txid()),
                Some(txid),
                "{party:?} broadcast a {purpose:?} its record does not hold"
            );
        }
        // First seen wins, unless a replacement pays more (BIP-125 rules 3, 4 and 6).
        let mut replaced = None;
        for input in &tx.input {
            if let Some((other, height)) = self.chain.spender_of(input.previous_output) {
                let other = other.clone();
                let (old_fee, new_fee) = (self.fee_of(&other), self.fee_of(&tx));
                let pays_more = height.is_none()
                    && purpose != TxPurpose::Funding
                    && new_fee.saturating_mul(other.vsize() as u64)
                        > old_fee.saturating_mul(tx.vsize() as u64)
                    && new_fee >= old_fee + tx.vsize() as u64;
                if !pays_more {
                    self.log.push(format!("{party:?} {purpose:?} rejected: double spend"));
                    return;
                }
                replaced = Some(other.compute_txid());
            }
        }
        if purpose != TxPurpose::Funding {
            let rate = self.fee_of(&tx) * 1000 / (tx.vsize() as u64 * 4).max(1);
            if rate < self.min_fee_rate.to_sat_per_kwu() {
                self.log.push(format!("{party:?} {purpose:?} rejected: mempool min fee not met"));
                return;
            }
        }
        if let Some(old) = replaced {
            self.chain.mempool.retain(|t| t.compute_txid() != old);
            self.replacements.push((old, txid));
            self.log.push(format!("{party:?} {purpose:?} {txid} replaces {old}"));
        }
        if purpose != TxPurpose::Funding {
            let Some(prevouts) = tx
                .input
                .iter()
                .map(|i| self.chain.output(i.previous_output))
                .collect::<Option<Vec<TxOut>>>()
            else {
                self.log.push(format!("{party:?} {purpose:?} rejected: missing inputs"));
                return;
            };
            if let Err(e) = kernel_verify(&tx, &prevouts) {
                panic!("{party:?} broadcast an invalid {purpose:?}: {e}");
            }
            // Final at the next block?
            let lock = tx.lock_time.to_consensus_u32();
            if lock > self.ctx.tip_height {
                self.log.push(format!("{party:?} {purpose:?} rejected: non-final"));
                return;
            }
        }
        self.broadcasts.push((party, purpose, txid));
        if self.opts.drop_first_claim
            && matches!(purpose, TxPurpose::CooperativeClaim | TxPurpose::ScriptClaim)
        {
            self.opts.drop_first_claim = false;
            let tip = self.ctx.tip_height;
            self.log.push(format!("{party:?} {purpose:?} dropped by the network at {tip}"));
            return;
        }
        self.chain.mempool.push(tx);
        self.notify_chain();
    }

    fn notify_chain(&mut self) {
        let watchers = self.watch.clone();
        let mut present: Vec<(u8, OutPoint)> = Vec::new();
        for (party, spk) in watchers {
            let outputs: Vec<(OutPoint, u64, Option<u32>)> = self
                .chain
                .all()
                .flat_map(|(t, h)| {
                    let txid = t.compute_txid();
                    t.output
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.script_pubkey == spk)
                        .map(move |(v, o)| (OutPoint { txid, vout: v as u32 }, o.value.to_sat(), h))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (op, value, height) in outputs {
                present.push(((party == Party::Buyer) as u8, op));
                let key = ((party == Party::Buyer) as u8, format!("out {op}"));
                let val = format!("{height:?}");
                if self.seen.get(&key) != Some(&val) {
                    self.seen.insert(key, val);
                    self.feed(
                        party,
                        Event::HtlcOutput {
                            outpoint: op,
                            value_sat: value,
                            script_pubkey: spk.clone(),
                            confirmed_height: height,
                        },
                    );
                }
                let key = ((party == Party::Buyer) as u8, format!("spent {op}"));
                if let Some((tx, h)) = self.chain.spender_of(op).map(|(t, h)| (t.clone(), h)) {
                    let val = format!("{} {h:?}", tx.compute_txid());
                    if self.seen.get(&key) != Some(&val) {
                        self.seen.insert(key, val);
                        self.feed(party, Event::HtlcSpent { tx, confirmed_height: h });
                    }
                } else if let Some(val) = self.seen.remove(&key) {
                    // The spend reported before is in neither the chain nor the mempool.
                    let txid = val.split(' ').next().and_then(|t| t.parse().ok()).unwrap();
                    self.feed(party, Event::HtlcSpendGone { outpoint: op, txid });
                }
            }
        }
        // An output reported before that is in neither the chain nor the mempool now (its
        // transaction was reorganised out and dropped): gone, as the node's watcher says it.
        let gone: Vec<(u8, OutPoint)> = self
            .seen
            .keys()
            .filter_map(|(p, k)| Some((*p, k.strip_prefix("out ")?.parse().ok()?)))
            .filter(|key| !present.contains(key))
            .collect();
        for (p, op) in gone {
            self.seen.remove(&(p, format!("out {op}")));
            self.seen.remove(&(p, format!("spent {op}")));
            let party = if p == 1 { Party::Buyer } else { Party::Seller };
            self.feed(party, Event::HtlcGone { outpoint: op });
        }
    }

    fn deliver_payments(&mut self) {
        let tip = self.ctx.tip_height;
        let (due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, _, _)| *at <= tip);
        self.in_flight = later;
        for (_, payment_hash, amount_msat) in due {
            if self.seller_ln != LnStatus::Succeeded {
                self.seller_ln = LnStatus::Pending;
            }
            self.feed(Party::Seller, Event::PaymentClaimable { payment_hash, amount_msat });
        }
    }

    /// Removes a transaction from the chain and the mempool (reorganised out and dropped, or
    /// double-spent). With `notify`, the parties' chain watchers report the output gone.
    pub fn remove_tx(&mut self, txid: Txid, notify: bool) {
        self.conflicted.push(txid);
        self.chain.confirmed.remove(&txid);
        self.chain.mempool.retain(|t| t.compute_txid() != txid);
        self.log.push(format!("chain: {txid} removed"));
        if !notify {
            return;
        }
        let gone: Vec<((u8, String), Party, OutPoint)> = self
            .seen
            .keys()
            .filter_map(|(p, k)| {
                let op: OutPoint = k.strip_prefix("out ")?.parse().ok()?;
                let party = if *p == 1 { Party::Buyer } else { Party::Seller };
                (op.txid == txid).then(|| ((*p, k.clone()), party, op))
            })
            .collect();
        for (key, party, outpoint) in gone {
            self.seen.remove(&key);
            self.feed(party, Event::HtlcGone { outpoint });
        }
    }

    /// A reorg takes the block holding `txid` out of the chain: the transaction goes back to the
    /// mempool or, with `drop`, leaves it too (the mempool dropped it); the watchers report what
    /// they see now.
    pub fn reorg_out(&mut self, txid: Txid, drop: bool) {
        let (h, tx) = self.chain.confirmed.remove(&txid).expect("a confirmed transaction");
        self.log.push(format!("chain: {txid} at {h} reorganised out (dropped: {drop})"));
        if !drop {
            self.chain.mempool.push(tx);
        }
        self.notify_chain();
    }

    /// A reorg puts `tx` at the height of the confirmed `txid`, which leaves the chain and the
    /// mempool (a competing spend of the same output won in the new chain).
    pub fn reorg_replace(&mut self, txid: Txid, tx: Transaction) {
        let (h, _) = self.chain.confirmed.remove(&txid).expect("a confirmed transaction");
        self.chain.mempool.retain(|t| t.compute_txid() != txid);
        self.log.push(format!("chain: {txid} at {h} replaced by {}", tx.compute_txid()));
        self.chain.confirmed.insert(tx.compute_txid(), (h, tx));
        self.notify_chain();
    }

    /// Height of the block holding `txid`, if confirmed.
    pub fn confirmed_at(&self, txid: Txid) -> Option<u32> {
        self.chain.confirmed.get(&txid).map(|(h, _)| *h)
    }

    /// Whether `txid` is in the mempool.
    pub fn in_mempool(&self, txid: Txid) -> bool {
        self.chain.mempool.iter().any(|t| t.compute_txid() == txid)
    }

    /// Drops the next message queued for `to`.
    pub fn drop_next(&mut self, to: Party) {
        let queue = if to == Party::Seller { &mut self.to_seller } else { &mut self.to_buyer };
        queue.pop_front();
    }

    /// Duplicates the next message queued for `to`.
    pub fn duplicate_next(&mut self, to: Party) {
        let queue = if to == Party::Seller { &mut self.to_seller } else { &mut self.to_buyer };
        if let Some(e) = queue.front().cloned() {
            queue.push_back(e);
        }
    }

    /// Moves the next message queued for `to` to the back of its queue (reordering).
    pub fn delay_next(&mut self, to: Party) {
        let queue = if to == Party::Seller { &mut self.to_seller } else { &mut self.to_buyer };
        if let Some(e) = queue.pop_front() {
            queue.push_back(e);
        }
    }

    /// Delivers one message to `to`, if any is queued.
    pub fn deliver_one(&mut self, to: Party) {
        let queue = if to == Party::Seller { &mut self.to_seller } else { &mut self.to_buyer };
        let Some(env) = queue.pop_front() else { return };
        self.deliver(to, env);
    }

    /// Hands `env` to `to`: the request that makes the maker's machine when it has none yet
    /// (the seller of a loop out, the buyer of a loop in), else an event.
    fn deliver(&mut self, to: Party, env: Envelope) {
        if !self.exists(to) {
            self.make_maker(to, env);
            return;
        }
        self.feed(to, Event::Message(env));
        self.after_step();
    }

    /// The maker's machine, from the taker's request (anything else before it is lost).
    fn make_maker(&mut self, to: Party, env: Envelope) {
        let made = match (to, env.body.clone()) {
            (Party::Seller, Message::SwapRequest(req)) => {
                let policy = SellerPolicy { cooperative_claims: !self.opts.seller_uncooperative };
                let keys = SwapKeys::derive(&master(1), 0).unwrap();
                SellerSwap::from_request(
                    env.swap_id,
                    "buyer".into(),
                    self.offer.clone(),
                    req,
                    keys,
                    p2tr(10),
                    policy,
                    &self.ctx,
                )
                .map(|(s, actions)| {
                    self.seller = Some(s);
                    actions
                })
            }
            (Party::Buyer, Message::LoopInRequest(req)) => {
                let keys = SwapKeys::derive(&master(2), 0).unwrap();
                BuyerSwap::from_loop_in_request(
                    env.swap_id,
                    "seller".into(),
                    self.offer.clone(),
                    req,
                    keys,
                    p2tr(20),
                    buyer_policy(&self.opts),
                    &self.ctx,
                )
                .map(|(b, actions)| {
                    self.buyer = Some(b);
                    actions
                })
            }
            _ => return,
        };
        match made {
            Ok(actions) => {
                self.run(to, actions);
                self.after_step();
            }
            Err(e) => {
                let back = if to == Party::Seller { Party::Buyer } else { Party::Seller };
                self.wire(back, Envelope::error_reply(env.swap_id, 0, e));
            }
        }
    }

    /// Delivers every queued message (in the configured order) until the wire is quiet.
    pub fn pump(&mut self) {
        for _ in 0..1_000 {
            let next = if self.opts.reorder_messages {
                self.to_seller
                    .pop_back()
                    .map(|e| (Party::Seller, e))
                    .or_else(|| self.to_buyer.pop_back().map(|e| (Party::Buyer, e)))
            } else {
                self.to_seller
                    .pop_front()
                    .map(|e| (Party::Seller, e))
                    .or_else(|| self.to_buyer.pop_front().map(|e| (Party::Buyer, e)))
            };
            let Some((to, env)) = next else { return };
            if to == Party::Seller && self.buyer_gone {
                continue;
            }
            self.deliver(to, env);
        }
        panic!("the wire never went quiet: {:#?}", self.log);
    }

    fn after_step(&mut self) {
        let Some(buyer) = self.buyer.as_ref() else { return };
        // Loop in: once the seller's `swap_funded` passed (the lock is out), not in `Accepting`
        // (the accept would be lost with it and nothing ever locked).
        let accepted =
            matches!(buyer.state(), BuyerState::Accepted { .. } | BuyerState::Funded { .. });
        let funded = matches!(buyer.state(), BuyerState::Funded { .. });
        if self.opts.buyer_vanishes_after_accept && accepted {
            self.buyer_gone = true;
        }
        if self.opts.buyer_aborts_when_funded && funded {
            self.feed(Party::Buyer, Event::UserAbort);
        }
    }

    /// The user of `party` asks to abort.
    pub fn user_abort(&mut self, party: Party) {
        self.feed(party, Event::UserAbort);
    }

    pub fn tick(&mut self) {
        self.feed(Party::Buyer, Event::Tick);
        self.feed(Party::Seller, Event::Tick);
        self.after_step();
        self.pump();
    }

    pub fn mine(&mut self, n: u32) {
        for _ in 0..n {
            self.ctx.tip_height += 1;
            self.ctx.now_secs += 600;
            let h = self.ctx.tip_height;
            for tx in std::mem::take(&mut self.chain.mempool) {
                // Blocks are full of transactions paying the spike's rate.
                let rate = self.fee_of(&tx) * 1000 / (tx.vsize() as u64 * 4).max(1);
                if self.fee_of(&tx) > 0 && rate < self.min_fee_rate.to_sat_per_kwu() {
                    self.chain.mempool.push(tx);
                    continue;
                }
                self.chain.confirmed.insert(tx.compute_txid(), (h, tx));
            }
            self.notify_chain();
            self.deliver_payments();
            self.after_step();
            self.pump();
            self.tick();
        }
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.ctx.now_secs += secs;
        self.tick();
    }

    /// Runs the swap until both sides are finished or `max_blocks` pass.
    pub fn run_to_end(&mut self, max_blocks: u32) {
        self.pump();
        for _ in 0..max_blocks {
            if self.finished() {
                return;
            }
            self.advance_secs(31);
            self.mine(1);
        }
    }

    /// Delivers the payment reports held back (`hold_buyer_failure_reports`) to the buyer.
    pub fn release_held_reports(&mut self) {
        for event in std::mem::take(&mut self.held_reports) {
            self.feed(Party::Buyer, event);
        }
        self.pump();
    }

    /// Feeds one event to a party and carries out its actions.
    pub fn inject(&mut self, party: Party, event: Event) {
        self.feed(party, event);
        self.pump();
    }

    pub fn finished(&self) -> bool {
        let seller_done = self.seller.as_ref().is_none_or(|s| s.kind() != StateKind::Pending);
        let buyer_done = self.buyer.as_ref().is_none_or(|b| b.kind() != StateKind::Pending);
        seller_done && (buyer_done || self.buyer_gone)
    }

    pub fn seller_state(&self) -> &SellerState {
        self.seller.as_ref().expect("seller exists").state()
    }

    pub fn purposes(&self) -> Vec<TxPurpose> {
        self.broadcasts.iter().map(|(_, p, _)| *p).collect()
    }

    /// The safety invariant: an honest party never loses both sides.
    pub fn check_invariants(&self) {
        if !self.conflicted.is_empty() {
            return; // a double-spent funding: the seller's loss, checked by the scenario
        }
        assert_eq!(
            self.double_payments, 0,
            "a payment started while one was in flight: {:#?}",
            self.log
        );
        assert_eq!(
            self.refund_sigs_while_paying, 0,
            "the buyer co-signed a refund with a payment in flight: {:#?}",
            self.log
        );
        let htlc_locked = self.broadcasts.iter().any(|(_, p, _)| *p == TxPurpose::Funding);
        if self.opts.prepay_sat.is_some() && htlc_locked {
            assert!(self.prepaid_msat > 0, "the seller funded before the prepay: {:#?}", self.log);
        }
        if self.buyer_paid_msat > 0 && !self.buyer_gone {
            assert!(
                matches!(self.buyer().state(), BuyerState::Claimed { .. }),
                "buyer paid but did not claim: {:?}\n{:#?}",
                self.buyer().state().name(),
                self.log
            );
        }
        // (A funding the sim altered behind the seller's back is not the one its record holds:
        // its refund spends an outpoint that does not exist.)
        if htlc_locked && self.opts.tamper != Some(Tamper::FundingValue) {
            // Every swap ends: a lock is claimed or refunded, whoever misbehaved.
            assert!(
                self.finished(),
                "a swap is still pending: buyer {}, seller {}\n{:#?}",
                self.state_name(Party::Buyer),
                self.state_name(Party::Seller),
                self.log
            );
        }
        if htlc_locked && self.opts.tamper.is_none() {
            let refunded = matches!(self.seller_state(), SellerState::Refunded { .. });
            assert!(
                self.seller_received_msat > 0 || refunded,
                "seller locked but neither paid nor refunded: {}\n{:#?}",
                self.seller_state().name(),
                self.log
            );
        }
    }
}
