//! `looper offers` (discovery, buyer side) and `looper offer create|list|withdraw` (seller side),
//! plus the quote arithmetic `looper out` shares.

use clap::{Args, Subcommand};
use looper_api::{
    DiscoverQuery, DiscoveredOffer, InfoResponse, OfferContext, OfferIdResponse, OfferList,
    OfferTerms, SellerHistory, WithdrawResponse,
};
use looper_protocol::messages::Offer;
use looper_protocol::SwapDirection;
use serde_json::{json, Value};

use super::{parse_sat, Ctx};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult};
use crate::output::{group, print_json, sat, short, table, Align};

/// Virtual size of the buyer's cooperative claim transaction (key path, one P2TR output).
pub const CLAIM_VSIZE_VB: u64 = 111;
/// Virtual size of a loop-in taker's funding transaction, estimated: one P2TR input, the HTLC
/// output and change (the wallet's actual coins decide).
pub const FUNDING_VSIZE_VB: u64 = 154;
/// Fee rate assumed for the claim estimate when neither `--fee-rate` nor the node gives one.
pub const FALLBACK_FEE_RATE_SAT_VB: u64 = 2;

/// `looper offers`.
#[derive(Debug, Args)]
pub struct OffersArgs {
    /// Swap amount in satoshis: only offers that cover it, with their cost for it (required:
    /// the node discovers offers for an amount).
    #[arg(long, value_name = "SAT", value_parser = parse_sat)]
    pub amount: Option<u64>,
    /// Fee rate for the claim fee estimate, in sat/vB (default: the node's estimate if
    /// it gives one, else 2).
    #[arg(long, value_name = "SAT_PER_VB", value_parser = parse_sat)]
    pub fee_rate: Option<u64>,
    /// Loop-in offers (this node would lock on-chain BTC and be paid over Lightning) instead of
    /// loop-out offers.
    #[arg(long = "in")]
    pub loop_in: bool,
}

/// Seller commands.
#[derive(Debug, Subcommand)]
pub enum OfferCommand {
    /// Publish an offer (loop out: this node sells on-chain BTC for Lightning; `--direction in`:
    /// it pays over Lightning for on-chain BTC).
    #[command(
        after_help = "Examples:\n  looper offer create --min 100000 --max 5000000 --fee-base 1000 --fee-ppm 5000\n  looper offer create --direction in --min 100000 --max 2000000"
    )]
    Create(Box<CreateArgs>),
    /// This node's published offers.
    #[command(after_help = "Example:\n  looper offer list")]
    List,
    /// Withdraw one of this node's offers.
    #[command(after_help = "Example:\n  looper offer withdraw my-offer-1")]
    Withdraw {
        /// The offer id.
        id: String,
    },
}

/// `looper offer create`: the offer's terms (the flags are [`OfferTerms`]'s, named as the
/// offer's wire fields, with the older short names as aliases) and where it is served.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Offer id (letters, digits, `-`, `_`). Default: a fresh random-looking id.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// The terms.
    #[command(flatten)]
    pub terms: OfferTerms,
    /// The offer expires this many seconds from now.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub expires_in: u64,
    /// `out` (loop out: takers pay Lightning, this node locks on-chain BTC) or `in` (loop in:
    /// takers lock on-chain BTC, this node pays over Lightning; no prepay).
    #[arg(long, value_name = "DIRECTION", default_value = "out", value_parser = parse_direction)]
    pub direction: SwapDirection,
    /// Nostr relay buyers reach this node on (repeatable). Default: the node's relays.
    #[arg(long = "relay", value_name = "URL")]
    pub relays: Vec<String>,
}

/// One discovered offer with the buyer's cost for an amount.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The seller's Nostr public key (hex).
    pub seller: String,
    /// The offer as the node returned it.
    pub offer: Offer,
    /// The quote for the amount, when an amount was given and the offer covers it.
    pub quote: Option<Quote>,
    /// What this node saw of the seller in its own swaps.
    pub history: SellerHistory,
}

impl Candidate {
    /// Whether the seller left one of this node's swaps unfunded without a word.
    pub fn has_no_shows(&self) -> bool {
        self.history.no_shows > 0
    }
}

/// The seller's track record in a few words: "new", "3 done", "3 done, 1 no-show".
pub fn track_text(h: &SellerHistory) -> String {
    match (h.completed, h.no_shows) {
        (0, 0) => "new".into(),
        (c, 0) => format!("{c} done"),
        (c, n) => format!("{c} done, {n} no-show{}", if n == 1 { "" } else { "s" }),
    }
}

/// The buyer's cost of a swap, in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// The amount.
    pub amount_sat: u64,
    /// `fee_base + ceil(amount * fee_ppm / 1e6)`.
    pub swap_fee_sat: u64,
    /// The offer's funding fee.
    pub funding_fee_sat: u64,
    /// Estimated fee of our own transaction: the claim (loop out, 111 vB) or the funding (loop
    /// in, about [`FUNDING_VSIZE_VB`]) x fee rate.
    pub claim_fee_sat: u64,
    /// The fee rate of the estimate.
    pub fee_rate_sat_vb: u64,
    /// Prepayment (part of what is paid, not a cost).
    pub prepay_sat: u64,
    /// A loop-in quote: we lock on chain and are paid over Lightning.
    pub loop_in: bool,
}

impl Quote {
    /// Swap fee + funding fee + claim fee.
    pub fn total_cost_sat(&self) -> u64 {
        self.swap_fee_sat.saturating_add(self.funding_fee_sat).saturating_add(self.claim_fee_sat)
    }

    /// Loop out: what the buyer pays over Lightning (amount + swap fee + funding fee). Loop in:
    /// what leaves the wallet on chain (amount + the funding's own fee, estimated).
    pub fn pay_sat(&self) -> u64 {
        if self.loop_in {
            return self.amount_sat.saturating_add(self.claim_fee_sat);
        }
        self.amount_sat.saturating_add(self.swap_fee_sat).saturating_add(self.funding_fee_sat)
    }

    /// Loop out: what arrives on-chain (amount - claim fee). Loop in: what arrives over
    /// Lightning (amount - swap fee - funding fee).
    pub fn receive_sat(&self) -> u64 {
        if self.loop_in {
            return self.amount_sat.saturating_sub(self.swap_fee_sat + self.funding_fee_sat);
        }
        self.amount_sat.saturating_sub(self.claim_fee_sat)
    }

    /// The stable JSON form (README).
    pub fn to_json(self) -> Value {
        json!({
            "amount_sat": self.amount_sat,
            "swap_fee_sat": self.swap_fee_sat,
            "funding_fee_sat": self.funding_fee_sat,
            "claim_fee_sat": self.claim_fee_sat,
            "claim_vsize_vb": CLAIM_VSIZE_VB,
            "fee_rate_sat_vb": self.fee_rate_sat_vb,
            "prepay_sat": self.prepay_sat,
            "total_cost_sat": self.total_cost_sat(),
            "pay_sat": self.pay_sat(),
            "receive_sat": self.receive_sat(),
        })
    }
}

/// The quote of `offer` for `amount` (the protocol's arithmetic, `spec/01-messages.md`, "The
/// quote", plus the estimated claim fee), `None` when the offer does not cover the amount.
pub fn quote(offer: &Offer, amount: u64, fee_rate: u64) -> Option<Quote> {
    let q = looper_protocol::terms::Quote::compute(offer, amount).ok()?;
    let loop_in = offer.direction == SwapDirection::LoopIn;
    let own_vsize = if loop_in { FUNDING_VSIZE_VB } else { CLAIM_VSIZE_VB };
    Some(Quote {
        amount_sat: amount,
        swap_fee_sat: q.swap_fee_sat,
        funding_fee_sat: q.funding_fee_sat,
        claim_fee_sat: own_vsize.saturating_mul(fee_rate),
        fee_rate_sat_vb: fee_rate,
        prepay_sat: q.prepay_sat,
        loop_in,
    })
}

/// The fee rate for the claim estimate: the flag, else the node's estimate for `conf_target`
/// (default: the node's claim target) in `/v1/info`, else [`FALLBACK_FEE_RATE_SAT_VB`]. Returns
/// the rate and the target it is for (`None` when the flag set the rate).
pub async fn claim_fee_rate(
    client: &Client,
    flag: Option<u64>,
    conf_target: Option<u16>,
) -> CliResult<(u64, Option<u16>)> {
    if let Some(r) = flag {
        return Ok((r, None));
    }
    let info: InfoResponse = client.get("/v1/info", "get the node's info").await?;
    Ok(claim_fee_rate_of(&info, conf_target))
}

/// The claim fee rate (sat/vB) and confirmation target from the node's `/v1/info`: the estimate
/// for `conf_target` (else the node's claim target), else the node's claim rate, else
/// [`FALLBACK_FEE_RATE_SAT_VB`].
pub fn claim_fee_rate_of(info: &InfoResponse, conf_target: Option<u16>) -> (u64, Option<u16>) {
    let target = conf_target.or(Some(info.claim_conf_target).filter(|t| *t > 0));
    let estimate = target.and_then(|t| estimate_for(info, t));
    let rate = estimate.or(Some(info.fee_rate_sat_vb)).filter(|r| *r > 0);
    (rate.unwrap_or(FALLBACK_FEE_RATE_SAT_VB), target)
}

/// The node's fee estimate (sat/vB) for confirming within `target` blocks from its `/v1/info`:
/// that of the longest listed target not above it (the protocol's rule).
pub fn estimate_for(info: &InfoResponse, target: u16) -> Option<u64> {
    info.fee_estimates_sat_vb
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<u16>().ok()?, *v)))
        .filter(|(k, _)| *k <= target)
        .max_by_key(|(k, _)| *k)
        .map(|(_, v)| v)
}

/// `GET /v1/offers/discover?amount_sat=N&direction=D`, with quotes, best (cheapest) first.
pub async fn fetch(
    client: &Client,
    amount: u64,
    fee_rate: u64,
    direction: SwapDirection,
) -> CliResult<Vec<Candidate>> {
    let q = DiscoverQuery { amount_sat: amount, direction };
    let direction = serde_json::to_value(q.direction)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let list: Vec<DiscoveredOffer> = client
        .get(
            &format!("/v1/offers/discover?amount_sat={}&direction={direction}", q.amount_sat),
            "discover offers",
        )
        .await?;
    let mut out: Vec<Candidate> = list
        .into_iter()
        .filter_map(|d| {
            let quote = quote(&d.offer, amount, fee_rate)?;
            Some(Candidate {
                seller: d.seller,
                offer: d.offer,
                quote: Some(quote),
                history: d.history,
            })
        })
        .collect();
    // Stable sort: the node's order breaks ties.
    out.sort_by_key(|c| c.quote.map(|q| q.total_cost_sat()).unwrap_or(0));
    Ok(out)
}

/// The JSON form of a candidate (README: `offers`).
pub fn candidate_json(c: &Candidate) -> Value {
    json!({
        "seller": c.seller,
        "offer_id": c.offer.offer_id,
        "quote": c.quote.map(Quote::to_json),
        "history": {
            "completed": c.history.completed,
            "no_shows": c.history.no_shows,
            "prepaid_lost_sat": c.history.prepaid_lost_sat,
        },
        "offer": c.offer,
    })
}

/// `looper offers`.
pub async fn discover(ctx: &Ctx, args: &OffersArgs) -> CliResult<()> {
    let Some(amount) = args.amount else {
        return Err(CliError::usage(
            "looper offers",
            "no amount given: the node discovers the offers that cover an amount",
            "pass --amount SAT, e.g. `looper offers --amount 250000`",
        ));
    };
    let client = ctx.client()?;
    let (rate, _) = claim_fee_rate(&client, args.fee_rate, None).await?;
    let direction = if args.loop_in { SwapDirection::LoopIn } else { SwapDirection::LoopOut };
    let list = fetch(&client, amount, rate, direction).await?;
    if ctx.json() {
        print_json(&json!({
            "amount_sat": args.amount,
            "offers": list.iter().map(candidate_json).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    print!("{}", render_offers(&list, args.amount));
    Ok(())
}

/// The human table of discovered offers.
pub fn render_offers(list: &[Candidate], amount: Option<u64>) -> String {
    if list.is_empty() {
        return match amount {
            Some(a) => format!("no live offer covers {}\n", sat(a)),
            None => "no live offers\n".into(),
        };
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let o = &c.offer;
            vec![
                o.offer_id.clone(),
                short(&c.seller),
                format!("{}-{}", group(o.min_amount_sat), group(o.max_amount_sat)),
                format!("{} + {} ppm", group(o.fee_base_sat), o.fee_ppm),
                c.quote.map(|q| group(q.total_cost_sat())).unwrap_or_else(|| "-".into()),
                o.prepay_sat.map(group).unwrap_or_else(|| "-".into()),
                o.min_confirmations.to_string(),
                o.timeout_delta.to_string(),
                track_text(&c.history),
            ]
        })
        .collect();
    let mut out = table(
        &[
            ("OFFER", Align::Left),
            ("SELLER", Align::Left),
            ("RANGE (sat)", Align::Right),
            ("FEE (sat + ppm)", Align::Right),
            ("TOTAL COST (sat)", Align::Right),
            ("PREPAY (sat)", Align::Right),
            ("CONFS", Align::Right),
            ("TIMEOUT (blocks)", Align::Right),
            ("SELLER TRACK", Align::Left),
        ],
        &rows,
    );
    if let Some(a) = amount {
        out.push_str(&format!(
            "total cost for {} = swap fee + funding fee + estimated claim fee; best first\n",
            sat(a)
        ));
    }
    out
}

/// `looper offer ...`.
pub async fn offer(ctx: &Ctx, cmd: OfferCommand) -> CliResult<()> {
    let client = ctx.client()?;
    match cmd {
        OfferCommand::List => {
            let v: OfferList = client.get("/v1/offers", "list this node's offers").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!("{}", render_own_offers(&v));
            }
        }
        OfferCommand::Withdraw { id } => {
            let v: WithdrawResponse = client
                .delete(&format!("/v1/offers/{}", encode(&id)), &format!("withdraw offer {id}"))
                .await
                .map_err(|e| {
                    if e.is_not_found() {
                        e.with_todo("`looper offer list` shows this node's offers")
                    } else {
                        e
                    }
                })?;
            if ctx.json() {
                print_json(&v);
            } else {
                println!("withdrawn offer {id}");
            }
        }
        OfferCommand::Create(args) => {
            let info: InfoResponse = client.get("/v1/info", "get the node's info").await?;
            let offer = build_offer(&args, &info)?;
            let id = offer.offer_id.clone();
            let v: OfferIdResponse =
                client.post("/v1/offers", &offer, &format!("publish offer {id}")).await?;
            if ctx.json() {
                print_json(&v);
            } else {
                let t = &args.terms;
                println!(
                    "published offer {id}: {}-{} sat, fee {} sat + {} ppm, funding fee {} sat",
                    group(t.min_amount_sat),
                    group(t.max_amount_sat),
                    group(t.fee_base_sat),
                    t.fee_ppm,
                    group(t.funding_fee_sat)
                );
            }
        }
    }
    Ok(())
}

fn build_offer(args: &CreateArgs, info: &InfoResponse) -> CliResult<Offer> {
    let relays = if args.relays.is_empty() { info.relays.clone() } else { args.relays.clone() };
    if relays.is_empty() {
        return Err(CliError::usage(
            "cannot create the offer",
            "no relay to name in it (the node's info lists none)",
            "pass --relay URL",
        ));
    }
    let ln_node_id = info.ln_node_id.parse().map_err(|e| {
        CliError::failure(
            "cannot create the offer",
            format!("the node's Lightning node id does not read: {e}"),
            "see the node's log",
        )
    })?;
    let now = now_secs();
    let id = args.id.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("o{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
    });
    let ctx = OfferContext {
        offer_id: id,
        network: info.network,
        ln_node_id,
        ln_address: None,
        relays,
        expires_at: now.saturating_add(args.expires_in),
        // `--prepay auto`: the funding and refund fees at the node's current fee rate.
        fee_rate_sat_vb: info.fee_rate_sat_vb,
    };
    Ok(match args.direction {
        SwapDirection::LoopIn => args.terms.loop_in_offer(ctx),
        _ => args.terms.offer(ctx),
    })
}

/// `--direction`: `out` or `in` (`loop_out`/`loop_in` too).
fn parse_direction(s: &str) -> Result<SwapDirection, String> {
    match s.trim() {
        "out" | "loop_out" => Ok(SwapDirection::LoopOut),
        "in" | "loop_in" => Ok(SwapDirection::LoopIn),
        other => Err(format!("`{other}` is neither `out` nor `in`")),
    }
}

fn render_own_offers(v: &OfferList) -> String {
    if v.offers.is_empty() {
        return "no offers published (create one with `looper offer create`)\n".into();
    }
    let now = now_secs();
    let rows: Vec<Vec<String>> = v
        .offers
        .iter()
        .map(|o| {
            vec![
                o.offer_id.clone(),
                format!("{}-{}", group(o.min_amount_sat), group(o.max_amount_sat)),
                format!("{} + {} ppm", group(o.fee_base_sat), o.fee_ppm),
                group(o.funding_fee_sat),
                o.min_confirmations.to_string(),
                o.timeout_delta.to_string(),
                if o.expires_at <= now {
                    "expired".into()
                } else {
                    format!("in {}", crate::output::duration(o.expires_at - now))
                },
            ]
        })
        .collect();
    table(
        &[
            ("OFFER", Align::Left),
            ("RANGE (sat)", Align::Right),
            ("FEE (sat + ppm)", Align::Right),
            ("FUNDING FEE", Align::Right),
            ("CONFS", Align::Right),
            ("TIMEOUT (blocks)", Align::Right),
            ("EXPIRES", Align::Left),
        ],
        &rows,
    )
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_the_protocol() {
        // protocol/src/terms.rs: Quote::from_parts(100_000, 1_000, 2_500, 300, ...) -> 1_250 fee.
        let offer = OfferTerms {
            min_amount_sat: 10_000,
            max_amount_sat: 1_000_000,
            fee_base_sat: 1_000,
            fee_ppm: 2_500,
            funding_fee_sat: 300,
            ..OfferTerms::default()
        }
        .offer(OfferContext {
            offer_id: "o".into(),
            network: bitcoin::Network::Regtest,
            ln_node_id: "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
                .parse()
                .unwrap_or_else(|_| panic!("key")),
            ln_address: None,
            relays: vec!["ws://r".into()],
            expires_at: 1,
            fee_rate_sat_vb: 2,
        });
        let q = quote(&offer, 100_000, 2).unwrap_or_else(|| panic!("in range"));
        assert_eq!(q.swap_fee_sat, 1_250);
        assert_eq!(q.claim_fee_sat, 222);
        assert_eq!(q.total_cost_sat(), 1_250 + 300 + 222);
        assert_eq!(q.pay_sat(), 101_550);
        assert_eq!(q.receive_sat(), 99_778);
        assert!(quote(&offer, 5_000, 2).is_none());
        // Rounds up.
        let q = quote(&offer, 10_001, 1).unwrap_or_else(|| panic!("in range"));
        assert_eq!(q.swap_fee_sat, 1_000 + 26);
    }
}
