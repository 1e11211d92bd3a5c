//! One loop out between a buyer and a seller state machine, driven by hand: messages are passed
//! from one to the other, the chain is a list of transactions and the Lightning network a few
//! lines. A real driver (`looper-node`) does the same with a wallet, a chain source, a Lightning
//! node and Nostr, and persists each swap's record at every [`Action::Persist`].
//!
//! `cargo run -p looper-protocol --example loop_out`

use std::collections::VecDeque;
use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{rand, Secp256k1, SecretKey};
use bitcoin::{
    absolute, transaction, Amount, FeeRate, Network, OutPoint, ScriptBuf, Transaction, TxIn, TxOut,
    Txid,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use looper_protocol::buyer::{BuyerPolicy, BuyerStart, BuyerState, BuyerSwap};
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{Message, Offer};
use looper_protocol::record::SwapRecord;
use looper_protocol::seller::{SellerPolicy, SellerState, SellerSwap};
use looper_protocol::swap::{Action, Context, Event, HtlcStatus};
use looper_protocol::{SwapDirection, SwapId};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Party {
    Buyer,
    Seller,
}

/// Both state machines and the world around them.
struct World {
    ctx: Context,
    offer: Offer,
    ln_key: SecretKey,
    seller_keys: SwapKeys,
    buyer: BuyerSwap,
    seller: Option<SellerSwap>,
    /// Events waiting to be fed, in order.
    events: VecDeque<(Party, Event)>,
    /// Transactions: (tx, height of its block once mined).
    chain: Vec<(Transaction, Option<u32>)>,
    /// The HTLC output, once funded.
    htlc: Option<(OutPoint, ScriptBuf, u64)>,
}

fn main() -> Res<()> {
    let secp = Secp256k1::new();
    let master = |tag: u8| Xpriv::new_master(Network::Regtest, &[tag; 32]);
    let wallet = |keys: &SwapKeys| ScriptBuf::new_p2tr(&secp, keys.claim_pubkey(), None);
    let ln_key = SecretKey::from_slice(&[7; 32])?;
    let ctx = Context::new(1_700_000_000, 1_000, FeeRate::from_sat_per_vb(2).ok_or("fee rate")?);
    // The seller's offer (found on Nostr in real life).
    let offer = Offer {
        version: 1,
        offer_id: "example".into(),
        network: Network::Regtest,
        direction: SwapDirection::LoopOut,
        min_amount_sat: 10_000,
        max_amount_sat: 1_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 2_500,
        funding_fee_sat: 300,
        prepay_sat: None,
        min_confirmations: 1,
        timeout_delta: 144,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        ln_node_id: ln_key.public_key(&secp),
        ln_address: None,
        relays: vec![],
        pow_difficulty: None,
        expires_at: ctx.now_secs + 86_400,
    };
    // The buyer takes it: its first action sends `swap_request`.
    let buyer_keys = SwapKeys::derive(&master(2)?, 0)?;
    let start = BuyerStart {
        swap_id: SwapId([0xab; 32]),
        peer: "seller's nostr key".into(),
        offer: offer.clone(),
        amount_sat: 200_000,
        policy: BuyerPolicy::default(),
        claim_destination: wallet(&buyer_keys),
        keys: buyer_keys,
    };
    let (buyer, actions) = BuyerSwap::start(start, &ctx)?;
    let seller_keys = SwapKeys::derive(&master(1)?, 0)?;
    let mut world = World {
        ctx,
        offer,
        ln_key,
        seller_keys,
        buyer,
        seller: None,
        events: VecDeque::new(),
        chain: Vec::new(),
        htlc: None,
    };
    world.carry_out(Party::Buyer, actions)?;
    // Feed events until both sides are done; mine a block whenever nothing else happens.
    for _ in 0..20 {
        while let Some((party, event)) = world.events.pop_front() {
            world.feed(party, event)?;
        }
        let done = matches!(world.buyer.state(), BuyerState::Claimed { .. })
            && matches!(
                world.seller.as_ref().map(|s| s.state()),
                Some(SellerState::Claimed { .. })
            );
        if done {
            println!("swap done: buyer {}, seller Claimed", world.buyer.state().name());
            // What the node stores: the record, without keys; loaded again with them.
            let bytes = SwapRecord::from(&world.buyer).to_bytes()?;
            let record = SwapRecord::from_bytes(&bytes)?;
            let keys = SwapKeys::derive(&master(2)?, record.key_index())?;
            let reloaded = record.load(keys)?;
            println!(
                "record: {} bytes, reloads as {:?}",
                bytes.len(),
                SwapRecord::from(&reloaded).state_name()
            );
            return Ok(());
        }
        world.mine();
    }
    Err("the swap did not finish".into())
}

impl World {
    /// Feeds one event to one side and carries out what it returns.
    fn feed(&mut self, party: Party, event: Event) -> Res<()> {
        let mut rng = rand::thread_rng();
        let actions = match party {
            Party::Buyer => self.buyer.handle(event, &self.ctx, &mut rng)?,
            Party::Seller => match self.seller.as_mut() {
                Some(seller) => seller.handle(event, &self.ctx, &mut rng)?,
                None => return Ok(()),
            },
        };
        self.carry_out(party, actions)
    }

    /// What a driver does with each action, in order.
    fn carry_out(&mut self, party: Party, actions: Vec<Action>) -> Res<()> {
        let peer = if party == Party::Buyer { Party::Seller } else { Party::Buyer };
        for action in actions {
            println!("{party:?}: {}", describe(&action));
            match action {
                Action::Persist => {} // a node writes the swap's record here, before going on
                Action::Send(env) => match (&env.body, self.seller.is_none()) {
                    // The seller's node answers a request for its offer with a new swap.
                    (Message::SwapRequest(request), true) => {
                        let refund_destination = ScriptBuf::new_p2tr(
                            &Secp256k1::new(),
                            self.seller_keys.refund_pubkey(),
                            None,
                        );
                        let (seller, actions) = SellerSwap::from_request(
                            env.swap_id,
                            "buyer's nostr key".into(),
                            self.offer.clone(),
                            request.clone(),
                            self.seller_keys.clone(),
                            refund_destination,
                            SellerPolicy::default(),
                            &self.ctx,
                        )
                        .map_err(|e| e.message)?;
                        self.seller = Some(seller);
                        self.carry_out(Party::Seller, actions)?;
                    }
                    _ => self.events.push_back((peer, Event::Message(env))),
                },
                Action::CreateInvoice { payment_hash, amount_msat, expiry_secs, description, .. } => {
                    let secp = Secp256k1::new();
                    let invoice = InvoiceBuilder::new(Currency::Regtest)
                        .description(description)
                        .payment_hash(sha256::Hash::from_byte_array(payment_hash.0))
                        .payment_secret(PaymentSecret([42; 32]))
                        .duration_since_epoch(Duration::from_secs(self.ctx.now_secs))
                        .min_final_cltv_expiry_delta(40)
                        .amount_milli_satoshis(amount_msat)
                        .expiry_time(Duration::from_secs(u64::from(expiry_secs)))
                        .build_signed(|h| secp.sign_ecdsa_recoverable(h, &self.ln_key))?;
                    let event =
                        Event::InvoiceCreated { invoice: invoice.to_string(), prepay_invoice: None };
                    self.events.push_back((party, event));
                }
                Action::FundHtlc { script_pubkey, amount_sat, .. } => {
                    // The seller's wallet: one input of its own, the HTLC output first.
                    let tx = Transaction {
                        version: transaction::Version::TWO,
                        lock_time: absolute::LockTime::ZERO,
                        input: vec![TxIn {
                            previous_output: OutPoint { txid: Txid::all_zeros(), vout: 7 },
                            ..TxIn::default()
                        }],
                        output: vec![TxOut { value: Amount::from_sat(amount_sat), script_pubkey }],
                    };
                    self.events.push_back((party, Event::FundingBuilt { tx, vout: 0 }));
                }
                Action::QueueClaim => {
                    // A node batches claims (`looper_protocol::claims`); alone, at once.
                    let (event, tx) = looper_protocol::claims::claim_alone(&self.buyer, &self.ctx)?;
                    self.feed(Party::Buyer, event)?;
                    let purpose = looper_protocol::swap::TxPurpose::ScriptClaim;
                    self.carry_out(Party::Buyer, vec![Action::Broadcast { tx, purpose }])?;
                }
                Action::Broadcast { tx, .. } => {
                    if !self.chain.iter().any(|(t, _)| t.compute_txid() == tx.compute_txid()) {
                        if let Some(out) = tx.output.first() {
                            if self.htlc.is_none() {
                                let outpoint = OutPoint { txid: tx.compute_txid(), vout: 0 };
                                let value = out.value.to_sat();
                                self.htlc = Some((outpoint, out.script_pubkey.clone(), value));
                            }
                        }
                        self.chain.push((tx, None));
                    }
                }
                Action::CheckHtlc { outpoint, .. } => {
                    let (_, _, value_sat) = self.htlc.clone().ok_or("no htlc")?;
                    let confirmed_height = self.chain.first().and_then(|(_, h)| *h);
                    let status = HtlcStatus::Unspent { value_sat, confirmed_height };
                    self.events.push_back((party, Event::HtlcChecked { outpoint, status }));
                }
                // Lightning in three lines: the seller's node holds the payment, claims it with
                // the preimage, and the buyer's payment succeeds with that preimage.
                Action::PayInvoice { amount_msat, .. } => {
                    let payment_hash = self.seller_keys.payment_hash();
                    let claimable = Event::PaymentClaimable { payment_hash, amount_msat };
                    self.events.push_back((Party::Seller, claimable));
                }
                Action::ClaimPayment { payment_hash, preimage, .. } => {
                    self.events.push_back((Party::Buyer, Event::PaymentSucceeded { preimage }));
                    self.events.push_back((Party::Seller, Event::PaymentClaimed { payment_hash }));
                }
                Action::WatchHtlc { .. }
                | Action::CheckPayment { .. }
                | Action::FailPayment { .. }
                | Action::PayPrepay { .. } // the example's offer has no prepay
                | Action::Notify(_) => {}
            }
        }
        Ok(())
    }

    /// Mines every unconfirmed transaction and tells both sides what happened to the HTLC.
    fn mine(&mut self) {
        self.ctx.tip_height += 1;
        self.ctx.now_secs += 600;
        println!("-- block {}", self.ctx.tip_height);
        for (_, height) in self.chain.iter_mut().filter(|(_, h)| h.is_none()) {
            *height = Some(self.ctx.tip_height);
        }
        if let Some((outpoint, script_pubkey, value_sat)) = self.htlc.clone() {
            let confirmed_height = self.chain.first().and_then(|(_, h)| *h);
            for party in [Party::Buyer, Party::Seller] {
                let (script_pubkey, event) = (script_pubkey.clone(), Event::Tick);
                let output =
                    Event::HtlcOutput { outpoint, value_sat, script_pubkey, confirmed_height };
                self.events.extend([(party, output), (party, event)]);
            }
            for (tx, height) in &self.chain {
                if tx.input.iter().any(|i| i.previous_output == outpoint) {
                    for party in [Party::Buyer, Party::Seller] {
                        let spent = Event::HtlcSpent { tx: tx.clone(), confirmed_height: *height };
                        self.events.push_back((party, spent));
                    }
                }
            }
        }
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Send(env) => format!("send {}", env.body.kind_name()),
        Action::Broadcast { tx, purpose } => format!("broadcast {purpose:?} {}", tx.compute_txid()),
        Action::Notify(note) => format!("notify {note:?}"),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}
