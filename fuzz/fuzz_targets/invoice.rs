//! The BOLT11 checks the buyer runs on the seller's invoice before it pays (spec `02-swap-flow.md`,
//! "Buyer checks" and "Paying"), through the public API: a buyer in `Requested` receives the honest
//! seller's `swap_accept` carrying the fuzzed invoice (encoded and decoded as on the wire), and,
//! when it accepts, sees the HTLC confirmed and decides whether to pay.
//!
//! The first byte picks what the rest is: `0`, an invoice string; `1`, the fields of an invoice
//! (network, amount, hash, times, final CLTV delta, signer, payee field, description) that the
//! target signs, so that the checks behind the signature are reached.
//!
//! Checks: never a panic; the buyer accepts only an invoice that decodes, is for regtest, is
//! signed by the offer's `ln_node_id`, has the HTLC's payment hash, asks exactly the quote's
//! amount and has not expired; any other invoice ends the swap in `Aborted` with the matching
//! `BuyerCheckError` and nothing paid; a `PayInvoice` pays that invoice, unexpired, with a CLTV
//! budget of at least `max(42, min_final_cltv_expiry_delta)`.
#![no_main]

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::rand::rngs::StdRng;
use bitcoin::secp256k1::rand::SeedableRng;
use bitcoin::Amount;
use libfuzzer_sys::fuzz_target;
use lightning_invoice::{Bolt11Invoice, Currency};
use looper_fuzz::{
    ln_secret, make_invoice, master, offer, other_secret, p2tr, public, start_buyer, start_context,
    InvoiceSpec,
};
use looper_protocol::buyer::{BuyerCheckError, BuyerState, BuyerSwap};
use looper_protocol::htlc::Htlc;
use looper_protocol::keys::SwapKeys;
use looper_protocol::messages::{
    decode_envelope, encode, Envelope, Message, SwapAccept, MIN_CLTV_BUDGET_BLOCKS,
};
use looper_protocol::seller::{SellerPolicy, SellerSwap};
use looper_protocol::swap::{Action, Context, Event, HtlcStatus};
use looper_protocol::PaymentHash;

struct Fixture {
    ctx: Context,
    buyer: BuyerSwap,
    accept: SwapAccept,
    swap_id: looper_protocol::SwapId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ctx = start_context();
        let (buyer, actions) = start_buyer(&ctx);
        let request = actions
            .iter()
            .find_map(|a| match a {
                Action::Send(Envelope { body: Message::SwapRequest(r), .. }) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        let (mut seller, _) = SellerSwap::from_request(
            buyer.swap_id(),
            "buyer".into(),
            offer(),
            request,
            SwapKeys::derive(&master(1), 0).unwrap(),
            p2tr(10),
            SellerPolicy::default(),
            &ctx,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let actions = seller
            .handle(
                Event::InvoiceCreated { invoice: "placeholder".into(), prepay_invoice: None },
                &ctx,
                &mut rng,
            )
            .unwrap();
        let accept = actions
            .iter()
            .find_map(|a| match a {
                Action::Send(Envelope { body: Message::SwapAccept(m), .. }) => Some(m.clone()),
                _ => None,
            })
            .unwrap();
        Fixture { ctx, swap_id: buyer.swap_id(), buyer, accept }
    })
}

#[derive(Debug, Arbitrary)]
enum AmountChoice {
    Exact,
    Off(i16),
    Msat(u64),
    Missing,
}

#[derive(Debug, Arbitrary)]
struct Fields {
    currency: u8,
    amount: AmountChoice,
    right_hash: bool,
    created_secs_ago: i32,
    expiry_secs: u32,
    min_final_cltv: u16,
    right_signer: bool,
    payee_field: u8,
    description: String,
}

fn invoice_from(fields: Fields, f: &Fixture) -> Option<String> {
    let currency = match fields.currency % 5 {
        0 => Currency::Regtest,
        1 => Currency::Bitcoin,
        2 => Currency::BitcoinTestnet,
        3 => Currency::Signet,
        _ => Currency::Simnet,
    };
    let quote_msat = f.accept.quote.invoice_amount_sat * 1000;
    let amount_msat = match fields.amount {
        AmountChoice::Exact => Some(quote_msat),
        AmountChoice::Off(d) => Some(quote_msat.saturating_add_signed(i64::from(d))),
        AmountChoice::Msat(m) => Some(m),
        AmountChoice::Missing => None,
    };
    let payment_hash =
        if fields.right_hash { f.accept.payment_hash } else { PaymentHash([0x99; 32]) };
    let created_at = f.ctx.now_secs.checked_add_signed(-i64::from(fields.created_secs_ago))?;
    let signer = if fields.right_signer { ln_secret() } else { other_secret() };
    let explicit_payee = match fields.payee_field % 3 {
        0 => None,
        1 => Some(public(&ln_secret())),
        _ => Some(public(&other_secret())),
    };
    make_invoice(&InvoiceSpec {
        currency,
        payment_hash,
        amount_msat,
        created_at,
        expiry_secs: u64::from(fields.expiry_secs),
        min_final_cltv: u64::from(fields.min_final_cltv),
        description: fields.description.chars().take(200).collect(),
        signer,
        explicit_payee,
    })
}

fn is_invoice_check(c: &BuyerCheckError) -> bool {
    matches!(
        c,
        BuyerCheckError::InvoiceInvalid(_)
            | BuyerCheckError::InvoiceNetwork
            | BuyerCheckError::InvoicePayee
            | BuyerCheckError::InvoiceHashMismatch
            | BuyerCheckError::InvoiceAmountMismatch { .. }
            | BuyerCheckError::InvoiceExpired
    )
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else { return };
    let invoice = if mode % 2 == 0 {
        let Ok(s) = std::str::from_utf8(rest) else { return };
        s.to_string()
    } else {
        let Ok(fields) = Fields::arbitrary_take_rest(Unstructured::new(rest)) else { return };
        let Some(s) = invoice_from(fields, f) else { return };
        s
    };

    // On the wire: the decoder refuses what is not a short bech32 string.
    let accept = SwapAccept { invoice: invoice.clone(), ..f.accept.clone() };
    let env = Envelope::new(f.swap_id, 0, Message::SwapAccept(accept));
    let Ok(env) = decode_envelope(&encode(&env)) else { return };

    let mut buyer = f.buyer.clone();
    let mut rng = StdRng::seed_from_u64(2);
    let mut ctx = f.ctx;
    let actions =
        buyer.handle(Event::Message(env), &ctx, &mut rng).expect("swap_accept is handled");
    assert!(!actions.iter().any(|a| matches!(a, Action::PayInvoice { .. })));

    if std::env::var_os("LOOPER_FUZZ_LOG").is_some() {
        match buyer.state() {
            BuyerState::Aborted { check, .. } => eprintln!("{invoice}: Aborted {check:?}"),
            other => eprintln!("{invoice}: {}", other.name()),
        }
    }
    let parsed = Bolt11Invoice::from_str(&invoice);
    let terms = match buyer.state() {
        BuyerState::Accepted { terms, .. } => terms.clone(),
        BuyerState::Aborted { check: Some(check), .. } => {
            assert!(is_invoice_check(check), "only invoice checks can fail here: {check:?}");
            if parsed.is_err() {
                assert!(matches!(check, BuyerCheckError::InvoiceInvalid(_)));
            }
            return;
        }
        other => panic!("swap_accept left the buyer in {}", other.name()),
    };
    let inv = parsed.expect("an accepted invoice decodes");
    // lightning-invoice maps simnet (`lnsb`) to regtest too: both are test networks.
    assert_eq!(inv.network(), offer().network);
    assert_eq!(inv.recover_payee_pub_key(), offer().ln_node_id);
    assert_eq!(inv.payment_hash().to_byte_array(), f.accept.payment_hash.0);
    assert_eq!(inv.amount_milli_satoshis(), Some(f.accept.quote.invoice_amount_sat * 1000));
    assert!(!inv.would_expire(Duration::from_secs(ctx.now_secs)));
    assert_eq!(terms.invoice, invoice);
    assert_eq!(terms.invoice_amount_msat, f.accept.quote.invoice_amount_sat * 1000);

    // The HTLC confirms one block later: the buyer pays or gives up, never pays a bad invoice.
    let htlc = Htlc::new(terms.htlc_params.clone()).unwrap();
    ctx.tip_height += 1;
    ctx.now_secs += 600;
    let actions = buyer
        .handle(
            Event::HtlcOutput {
                outpoint: bitcoin::OutPoint {
                    txid: bitcoin::Txid::from_byte_array([3; 32]),
                    vout: 1,
                },
                value_sat: Amount::from_sat(f.accept.htlc_amount_sat).to_sat(),
                script_pubkey: htlc.script_pubkey().to_owned(),
                confirmed_height: Some(ctx.tip_height),
            },
            &ctx,
            &mut rng,
        )
        .expect("the htlc output is handled");
    // Right before paying the buyer looks the HTLC up once more: it is there, confirmed.
    let mut all = actions.clone();
    for a in &actions {
        if let Action::CheckHtlc { outpoint, .. } = a {
            let status = HtlcStatus::Unspent {
                value_sat: f.accept.htlc_amount_sat,
                confirmed_height: Some(ctx.tip_height),
            };
            all.extend(
                buyer
                    .handle(Event::HtlcChecked { outpoint: *outpoint, status }, &ctx, &mut rng)
                    .expect("the htlc check is handled"),
            );
        }
    }
    for a in &all {
        if let Action::PayInvoice { invoice: paid, max_total_cltv_expiry_delta, .. } = a {
            assert_eq!(*paid, invoice);
            assert!(!inv.would_expire(Duration::from_secs(ctx.now_secs)));
            let needed = u64::from(MIN_CLTV_BUDGET_BLOCKS).max(inv.min_final_cltv_expiry_delta());
            assert!(u64::from(*max_total_cltv_expiry_delta) >= needed);
        }
    }
});
