//! The terms of an offer, defined once: the `[seller]` section of `looper.toml`, the flags of
//! `looper offer create` and the regtest harness's seller nodes all use [`OfferTerms`], whose
//! names are the wire names of the protocol's [`Offer`] (`spec/01-messages.md`).

use bitcoin::secp256k1::PublicKey;
use bitcoin::Network;
use looper_protocol::messages::{Offer, PROTOCOL_VERSION};
use looper_protocol::spend::REFUND_SCRIPT_PATH_VBYTES;
use looper_protocol::SwapDirection;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The funding transaction's size an automatic prepay is priced at, vB: one P2TR key-path input
/// and two P2TR outputs (the HTLC and the change).
pub const AUTO_PREPAY_FUNDING_VBYTES: u64 = 154;

/// The prepayment an offer asks before the seller locks anything (spec `02-swap-flow.md`,
/// "Prepay"). Written `"auto"` or a number of sat in `looper.toml`, JSON and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prepay {
    /// What a buyer that never pays would cost the seller on chain: the funding and the
    /// script-path refund ([`AUTO_PREPAY_FUNDING_VBYTES`] + [`REFUND_SCRIPT_PATH_VBYTES`]) at
    /// the fee rate when the offer is published (at least 1 sat/vB), repriced at each refresh;
    /// never more than the offer's `min_amount_sat`.
    #[default]
    Auto,
    /// A fixed amount, sat; 0 for none.
    Sat(u64),
}

impl Prepay {
    /// The prepay in sat at `fee_rate_sat_vb`, `None` for none (see [`Prepay::Auto`]).
    pub fn resolve(self, fee_rate_sat_vb: u64, min_amount_sat: u64) -> Option<u64> {
        let sat = match self {
            Prepay::Sat(sat) => sat,
            Prepay::Auto => AUTO_PREPAY_FUNDING_VBYTES
                .saturating_add(REFUND_SCRIPT_PATH_VBYTES)
                .saturating_mul(fee_rate_sat_vb.max(1))
                .min(min_amount_sat),
        };
        (sat > 0).then_some(sat)
    }
}

impl std::fmt::Display for Prepay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepay::Auto => f.write_str("auto"),
            Prepay::Sat(sat) => write!(f, "{sat}"),
        }
    }
}

/// A prepay that is neither `auto` nor a number of sat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a prepay is `auto` or a number of sat (0 for none), not {0:?}")]
pub struct PrepayParseError(String);

impl std::str::FromStr for Prepay {
    type Err = PrepayParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Prepay::Auto);
        }
        s.parse().map(Prepay::Sat).map_err(|_| PrepayParseError(s.chars().take(32).collect()))
    }
}

impl Serialize for Prepay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Prepay::Auto => serializer.serialize_str("auto"),
            Prepay::Sat(sat) => serializer.serialize_u64(*sat),
        }
    }
}

impl<'de> Deserialize<'de> for Prepay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Sat(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Sat(sat) => Ok(Prepay::Sat(sat)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What a seller offers: amount range, fees, confirmations, timeout, claim margin, invoice
/// expiry. The names are the offer's wire names; `looper.toml` also accepts the older
/// `timeout_delta_blocks` and `claim_margin_blocks`. Amounts are in satoshis, deltas in blocks.
///
/// The defaults are the "numbers to start from" of the protocol design: 100 000 to 10 000 000
/// sat, fee 1 000 sat + 5 000 ppm, funding fee 1 000 sat, an automatic prepay ([`Prepay::Auto`]:
/// the seller's funding and refund fees at the current fee rate), 1 confirmation, timeout delta
/// 288 blocks, claim margin 20 blocks, invoices of one hour.
///
/// ```
/// use looper_api::{OfferContext, OfferTerms, Prepay};
/// let terms = OfferTerms { fee_ppm: 2_500, ..OfferTerms::default() };
/// let offer = terms.offer(OfferContext {
///     offer_id: "my-offer".into(),
///     network: bitcoin::Network::Regtest,
///     ln_node_id: "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619".parse()?,
///     ln_address: None,
///     relays: vec!["wss://relay.example".into()],
///     expires_at: 1_900_000_000,
///     fee_rate_sat_vb: 3,
/// });
/// assert_eq!(offer.fee_ppm, 2_500);
/// assert_eq!(offer.timeout_delta, 288);
/// // The automatic prepay: funding (154 vB) and script-path refund (138 vB) at 3 sat/vB.
/// assert_eq!(offer.prepay_sat, Some(876));
/// assert_eq!(OfferTerms::from(&offer), OfferTerms { prepay_sat: Prepay::Sat(876), ..terms });
/// # Ok::<(), bitcoin::secp256k1::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct OfferTerms {
    /// Smallest swap amount, sat.
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "min", value_name = "SAT",
            default_value_t = OfferTerms::DEFAULT.min_amount_sat)
    )]
    pub min_amount_sat: u64,
    /// Largest swap amount, sat.
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "max", value_name = "SAT",
            default_value_t = OfferTerms::DEFAULT.max_amount_sat)
    )]
    pub max_amount_sat: u64,
    /// Fixed part of the swap fee, sat.
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "fee-base", value_name = "SAT",
            default_value_t = OfferTerms::DEFAULT.fee_base_sat)
    )]
    pub fee_base_sat: u64,
    /// Proportional part of the swap fee, in parts per million of the amount (rounded up).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "PPM", default_value_t = OfferTerms::DEFAULT.fee_ppm)
    )]
    pub fee_ppm: u32,
    /// On-chain funding fee charged to the buyer in the quote, sat (the seller pays the real fee).
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "funding-fee", value_name = "SAT",
            default_value_t = OfferTerms::DEFAULT.funding_fee_sat)
    )]
    pub funding_fee_sat: u64,
    /// Prepayment asked before locking funds (anti-griefing): `auto` (the seller's funding and
    /// refund fees at the current fee rate) or sat; 0 for none.
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "prepay", value_name = "SAT|auto",
            default_value_t = OfferTerms::DEFAULT.prepay_sat)
    )]
    pub prepay_sat: Prepay,
    /// Confirmations of the HTLC funding the buyer waits for before paying.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", default_value_t = OfferTerms::DEFAULT.min_confirmations)
    )]
    pub min_confirmations: u32,
    /// Blocks from the tip at `swap_accept` to the HTLC timeout.
    #[serde(alias = "timeout_delta_blocks")]
    #[cfg_attr(
        feature = "clap",
        arg(long, alias = "timeout-delta-blocks", value_name = "BLOCKS",
            default_value_t = OfferTerms::DEFAULT.timeout_delta)
    )]
    pub timeout_delta: u32,
    /// Blocks before the timeout under which the preimage is no longer revealed: the seller
    /// claims an incoming payment only while `tip + claim_margin <= timeout`.
    #[serde(alias = "claim_margin_blocks")]
    #[cfg_attr(
        feature = "clap",
        arg(long, alias = "claim-margin-blocks", value_name = "BLOCKS",
            default_value_t = OfferTerms::DEFAULT.claim_margin)
    )]
    pub claim_margin: u32,
    /// Upper bound of the invoice expiry, seconds (an invoice expires at the earlier of this and
    /// half the time left to the timeout).
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "invoice-expiry", value_name = "SECS",
            default_value_t = OfferTerms::DEFAULT.invoice_expiry_secs)
    )]
    pub invoice_expiry_secs: u32,
    /// NIP-13 proof of work (leading zero bits, at most 32) asked of every swap request's gift
    /// wrap, to make floods of requests from fresh keys cost their sender; 0 for none.
    #[cfg_attr(
        feature = "clap",
        arg(long, visible_alias = "pow", value_name = "BITS",
            default_value_t = OfferTerms::DEFAULT.pow_difficulty)
    )]
    pub pow_difficulty: u8,
}

/// What an offer carries besides its terms: who and where the seller is, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferContext {
    /// The offer's id: 1 to 64 characters of `[A-Za-z0-9_-]`.
    pub offer_id: String,
    /// The network of the HTLC and the invoices.
    pub network: Network,
    /// The seller's Lightning node id.
    pub ln_node_id: PublicKey,
    /// The seller's Lightning address (`host:port`), if it has a routable one.
    pub ln_address: Option<String>,
    /// Relays where the seller reads swap messages.
    pub relays: Vec<String>,
    /// UNIX time after which the offer is void.
    pub expires_at: u64,
    /// The fee rate an automatic prepay ([`Prepay::Auto`]) is priced at, sat/vB.
    pub fee_rate_sat_vb: u64,
}

impl OfferTerms {
    /// The defaults (see the type's documentation).
    pub const DEFAULT: OfferTerms = OfferTerms {
        min_amount_sat: 100_000,
        max_amount_sat: 10_000_000,
        fee_base_sat: 1_000,
        fee_ppm: 5_000,
        funding_fee_sat: 1_000,
        prepay_sat: Prepay::Auto,
        min_confirmations: 1,
        timeout_delta: 288,
        claim_margin: 20,
        invoice_expiry_secs: 3_600,
        pow_difficulty: 0,
    };

    /// Every key of the serialized terms, in order.
    pub const KEYS: &'static [&'static str] = &[
        "min_amount_sat",
        "max_amount_sat",
        "fee_base_sat",
        "fee_ppm",
        "funding_fee_sat",
        "prepay_sat",
        "min_confirmations",
        "timeout_delta",
        "claim_margin",
        "invoice_expiry_secs",
        "pow_difficulty",
    ];

    /// Older names still read (`looper.toml` files written before the names matched the wire),
    /// as `(old, current)`.
    pub const ALIASES: &'static [(&'static str, &'static str)] =
        &[("timeout_delta_blocks", "timeout_delta"), ("claim_margin_blocks", "claim_margin")];

    /// Whether `key` names a field (by its name or an older alias).
    pub fn is_key(key: &str) -> bool {
        Self::KEYS.contains(&key) || Self::ALIASES.iter().any(|(old, _)| *old == key)
    }

    /// The loop-out offer with these terms (version [`PROTOCOL_VERSION`]). It
    /// is not validated: [`Offer::validate`] says whether the terms make a valid offer.
    pub fn offer(&self, ctx: OfferContext) -> Offer {
        Offer {
            version: PROTOCOL_VERSION,
            offer_id: ctx.offer_id,
            network: ctx.network,
            direction: SwapDirection::LoopOut,
            min_amount_sat: self.min_amount_sat,
            max_amount_sat: self.max_amount_sat,
            fee_base_sat: self.fee_base_sat,
            fee_ppm: self.fee_ppm,
            funding_fee_sat: self.funding_fee_sat,
            prepay_sat: self.prepay_sat.resolve(ctx.fee_rate_sat_vb, self.min_amount_sat),
            min_confirmations: self.min_confirmations,
            timeout_delta: self.timeout_delta,
            claim_margin: self.claim_margin,
            invoice_expiry_secs: self.invoice_expiry_secs,
            ln_node_id: ctx.ln_node_id,
            ln_address: ctx.ln_address,
            relays: ctx.relays,
            pow_difficulty: (self.pow_difficulty > 0).then_some(self.pow_difficulty),
            expires_at: ctx.expires_at,
        }
    }
}

impl OfferTerms {
    /// The loop-in offer of these terms (the maker pays over Lightning and claims the taker's
    /// lock): as [`OfferTerms::offer`] with `direction: loop_in` and no prepay (the maker locks
    /// nothing before the taker has; spec `01-messages.md`, "The quote").
    pub fn loop_in_offer(&self, ctx: OfferContext) -> Offer {
        Offer { direction: SwapDirection::LoopIn, prepay_sat: None, ..self.offer(ctx) }
    }
}

impl Default for OfferTerms {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl From<&Offer> for OfferTerms {
    fn from(o: &Offer) -> Self {
        OfferTerms {
            min_amount_sat: o.min_amount_sat,
            max_amount_sat: o.max_amount_sat,
            fee_base_sat: o.fee_base_sat,
            fee_ppm: o.fee_ppm,
            funding_fee_sat: o.funding_fee_sat,
            prepay_sat: Prepay::Sat(o.prepay_sat.unwrap_or(0)),
            min_confirmations: o.min_confirmations,
            timeout_delta: o.timeout_delta,
            claim_margin: o.claim_margin,
            invoice_expiry_secs: o.invoice_expiry_secs,
            pow_difficulty: o.pow_difficulty.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_the_serialized_fields() {
        let v = serde_json::to_value(OfferTerms::default()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = OfferTerms::KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        for (old, new) in OfferTerms::ALIASES {
            assert!(OfferTerms::KEYS.contains(new));
            let t: OfferTerms = serde_json::from_value(serde_json::json!({ *old: 77 })).unwrap();
            assert_eq!(serde_json::to_value(t).unwrap()[new], 77);
        }
    }

    #[test]
    fn terms_are_the_offer_fields() {
        // Every key is a field of the offer's wire form, with the same value.
        let ctx = OfferContext {
            offer_id: "o".into(),
            network: Network::Regtest,
            ln_node_id: "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
                .parse()
                .unwrap(),
            ln_address: None,
            relays: vec!["ws://r".into()],
            expires_at: 1,
            fee_rate_sat_vb: 1,
        };
        let terms =
            OfferTerms { prepay_sat: Prepay::Sat(5), pow_difficulty: 8, ..OfferTerms::default() };
        let offer = serde_json::to_value(terms.offer(ctx.clone())).unwrap();
        let terms_json = serde_json::to_value(terms).unwrap();
        for key in OfferTerms::KEYS {
            assert_eq!(offer[key], terms_json[key], "{key}");
        }
        // No prepay and no proof of work: the wire fields are absent.
        let none = OfferTerms { prepay_sat: Prepay::Sat(0), ..OfferTerms::default() };
        let offer = serde_json::to_value(none.offer(ctx.clone())).unwrap();
        assert!(offer.get("prepay_sat").is_none());
        assert!(offer.get("pow_difficulty").is_none());
    }

    #[test]
    fn the_automatic_prepay_covers_funding_and_refund_at_the_fee_rate() {
        let per_vb = AUTO_PREPAY_FUNDING_VBYTES + REFUND_SCRIPT_PATH_VBYTES;
        assert_eq!(Prepay::Auto.resolve(0, 100_000), Some(per_vb));
        assert_eq!(Prepay::Auto.resolve(25, 100_000), Some(25 * per_vb));
        // Never above the smallest swap.
        assert_eq!(Prepay::Auto.resolve(10_000, 100_000), Some(100_000));
        assert_eq!(Prepay::Sat(0).resolve(25, 100_000), None);
        assert_eq!(Prepay::Sat(700).resolve(25, 100_000), Some(700));
    }

    #[test]
    fn a_prepay_reads_and_writes_as_auto_or_sat() {
        assert_eq!("auto".parse::<Prepay>(), Ok(Prepay::Auto));
        assert_eq!("AUTO".parse::<Prepay>(), Ok(Prepay::Auto));
        assert_eq!("1500".parse::<Prepay>(), Ok(Prepay::Sat(1_500)));
        assert!("-1".parse::<Prepay>().is_err());
        assert!("lots".parse::<Prepay>().is_err());
        assert_eq!(serde_json::to_value(Prepay::Auto).unwrap(), serde_json::json!("auto"));
        assert_eq!(serde_json::to_value(Prepay::Sat(9)).unwrap(), serde_json::json!(9));
        let t: OfferTerms = serde_json::from_value(serde_json::json!({"prepay_sat": 0})).unwrap();
        assert_eq!(t.prepay_sat, Prepay::Sat(0));
        let t: OfferTerms =
            serde_json::from_value(serde_json::json!({"prepay_sat": "auto"})).unwrap();
        assert_eq!(t.prepay_sat, Prepay::Auto);
        assert!(
            serde_json::from_value::<OfferTerms>(serde_json::json!({"prepay_sat": "x"})).is_err()
        );
        assert_eq!(Prepay::Auto.to_string(), "auto");
    }
}
