//! `looper offers` (discovery, buyer side) and `looper offer create|list|withdraw` (seller side),
//! plus the quote arithmetic `looper out` shares.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{parse_sat, Ctx};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult};
use crate::output::{group, num, print_json, sat, short, table, text, Align};

/// Virtual size of the buyer's cooperative claim transaction (key path, one P2TR output).
pub const CLAIM_VSIZE_VB: u64 = 111;
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
}

/// Seller commands.
#[derive(Debug, Subcommand)]
pub enum OfferCommand {
    /// Publish an offer (loop out: this node sells on-chain BTC for Lightning).
    #[command(
        after_help = "Example:\n  looper offer create --min 100000 --max 5000000 --fee-base 1000 --fee-ppm 5000"
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

/// `looper offer create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Offer id (letters, digits, `-`, `_`). Default: a fresh random-looking id.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Smallest swap amount, sat.
    #[arg(long, value_name = "SAT", value_parser = parse_sat, default_value = "100000")]
    pub min: u64,
    /// Largest swap amount, sat.
    #[arg(long, value_name = "SAT", value_parser = parse_sat, default_value = "10000000")]
    pub max: u64,
    /// Fixed part of the swap fee, sat.
    #[arg(long, value_name = "SAT", default_value_t = 1000)]
    pub fee_base: u64,
    /// Proportional part of the swap fee, parts per million.
    #[arg(long, value_name = "PPM", default_value_t = 5000)]
    pub fee_ppm: u32,
    /// On-chain funding fee charged to the buyer, sat.
    #[arg(long, value_name = "SAT", default_value_t = 1000)]
    pub funding_fee: u64,
    /// Prepayment asked before locking funds, sat (0: none).
    #[arg(long, value_name = "SAT", default_value_t = 0)]
    pub prepay: u64,
    /// Confirmations the buyer waits for before paying.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_confirmations: u32,
    /// Blocks from acceptance to the HTLC timeout.
    #[arg(long, value_name = "BLOCKS", default_value_t = 288)]
    pub timeout_delta: u32,
    /// Claim margin in blocks.
    #[arg(long, value_name = "BLOCKS", default_value_t = 20)]
    pub claim_margin: u32,
    /// Upper bound of the invoice expiry, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub invoice_expiry: u32,
    /// The offer expires this many seconds from now.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub expires_in: u64,
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
    pub offer: Value,
    /// The quote for the amount, when an amount was given and the offer covers it.
    pub quote: Option<Quote>,
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
    /// Estimated claim fee: 111 vB x fee rate.
    pub claim_fee_sat: u64,
    /// The fee rate of the estimate.
    pub fee_rate_sat_vb: u64,
    /// Prepayment (part of what is paid, not a cost).
    pub prepay_sat: u64,
}

impl Quote {
    /// Swap fee + funding fee + claim fee.
    pub fn total_cost_sat(&self) -> u64 {
        self.swap_fee_sat.saturating_add(self.funding_fee_sat).saturating_add(self.claim_fee_sat)
    }

    /// What the buyer pays over Lightning: amount + swap fee + funding fee.
    pub fn pay_sat(&self) -> u64 {
        self.amount_sat.saturating_add(self.swap_fee_sat).saturating_add(self.funding_fee_sat)
    }

    /// What arrives on-chain: amount - claim fee.
    pub fn receive_sat(&self) -> u64 {
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

/// The quote of `offer` for `amount`, `None` when the offer does not cover the amount.
pub fn quote(offer: &Value, amount: u64, fee_rate: u64) -> Option<Quote> {
    if amount < num(offer, "min_amount_sat") || amount > num(offer, "max_amount_sat") {
        return None;
    }
    let ppm = u128::from(num(offer, "fee_ppm"));
    let prop = (u128::from(amount) * ppm).div_ceil(1_000_000);
    let swap_fee = num(offer, "fee_base_sat").saturating_add(u64::try_from(prop).ok()?);
    Some(Quote {
        amount_sat: amount,
        swap_fee_sat: swap_fee,
        funding_fee_sat: num(offer, "funding_fee_sat"),
        claim_fee_sat: CLAIM_VSIZE_VB.saturating_mul(fee_rate),
        fee_rate_sat_vb: fee_rate,
        prepay_sat: num(offer, "prepay_sat"),
    })
}

/// The fee rate for the claim estimate: the flag, else the node's `fee_rate_sat_vb` in
/// `/v1/info`, else [`FALLBACK_FEE_RATE_SAT_VB`].
pub async fn claim_fee_rate(client: &Client, flag: Option<u64>) -> CliResult<u64> {
    if let Some(r) = flag {
        return Ok(r);
    }
    let info = client.get("/v1/info", "get the node's info").await?;
    Ok(info
        .get("fee_rate_sat_vb")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .unwrap_or(FALLBACK_FEE_RATE_SAT_VB))
}

/// `GET /v1/offers/discover[?amount_sat=N]`, with quotes, best (cheapest) first.
pub async fn fetch(
    client: &Client,
    amount: Option<u64>,
    fee_rate: u64,
) -> CliResult<Vec<Candidate>> {
    let path = match amount {
        Some(a) => format!("/v1/offers/discover?amount_sat={a}"),
        None => "/v1/offers/discover".to_string(),
    };
    let v = client.get(&path, "discover offers").await?;
    let list = match &v {
        Value::Array(a) => a.clone(),
        other => other.get("offers").and_then(Value::as_array).cloned().unwrap_or_default(),
    };
    let mut out: Vec<Candidate> = list
        .into_iter()
        .filter_map(|item| {
            let offer = item.get("offer")?.clone();
            let seller = item.get("seller").and_then(Value::as_str).unwrap_or("").to_string();
            let quote = amount.and_then(|a| quote(&offer, a, fee_rate));
            Some(Candidate { seller, offer, quote })
        })
        .filter(|c| amount.is_none() || c.quote.is_some())
        .collect();
    // Stable sort: the node's order breaks ties.
    out.sort_by_key(|c| c.quote.map(|q| q.total_cost_sat()).unwrap_or(0));
    Ok(out)
}

/// The JSON form of a candidate (README: `offers`).
pub fn candidate_json(c: &Candidate) -> Value {
    json!({
        "seller": c.seller,
        "offer_id": c.offer.get("offer_id").cloned().unwrap_or(Value::Null),
        "quote": c.quote.map(Quote::to_json),
        "offer": c.offer,
    })
}

/// `looper offers`.
pub async fn discover(ctx: &Ctx, args: &OffersArgs) -> CliResult<()> {
    if args.amount.is_none() {
        return Err(CliError::usage(
            "looper offers",
            "no amount given: the node discovers the offers that cover an amount",
            "pass --amount SAT, e.g. `looper offers --amount 250000`",
        ));
    }
    let client = ctx.client()?;
    let rate = claim_fee_rate(&client, args.fee_rate).await?;
    let list = fetch(&client, args.amount, rate).await?;
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
                text(o, "offer_id"),
                short(&c.seller),
                format!("{}-{}", group(num(o, "min_amount_sat")), group(num(o, "max_amount_sat"))),
                format!("{} + {} ppm", group(num(o, "fee_base_sat")), num(o, "fee_ppm")),
                c.quote.map(|q| group(q.total_cost_sat())).unwrap_or_else(|| "-".into()),
                text(o, "min_confirmations"),
                text(o, "timeout_delta"),
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
            ("CONFS", Align::Right),
            ("TIMEOUT (blocks)", Align::Right),
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
            let v = client.get("/v1/offers", "list this node's offers").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!("{}", render_own_offers(&v));
            }
        }
        OfferCommand::Withdraw { id } => {
            let v = client
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
            let info = client.get("/v1/info", "get the node's info").await?;
            let offer = build_offer(&args, &info)?;
            let id = text(&offer, "offer_id");
            let v = client.post("/v1/offers", &offer, &format!("publish offer {id}")).await?;
            if ctx.json() {
                print_json(&v);
            } else {
                println!(
                    "published offer {id}: {}-{} sat, fee {} sat + {} ppm, funding fee {} sat",
                    group(args.min),
                    group(args.max),
                    group(args.fee_base),
                    args.fee_ppm,
                    group(args.funding_fee)
                );
            }
        }
    }
    Ok(())
}

fn build_offer(args: &CreateArgs, info: &Value) -> CliResult<Value> {
    let relays: Vec<String> = if args.relays.is_empty() {
        info.get("relays")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default()
    } else {
        args.relays.clone()
    };
    if relays.is_empty() {
        return Err(CliError::usage(
            "cannot create the offer",
            "no relay to name in it (the node's info lists none)",
            "pass --relay URL",
        ));
    }
    let now = now_secs();
    let id = args.id.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("o{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
    });
    let mut offer = json!({
        "v": 1,
        "offer_id": id,
        "network": info.get("network").cloned().unwrap_or(Value::Null),
        "direction": "loop_out",
        "min_amount_sat": args.min,
        "max_amount_sat": args.max,
        "fee_base_sat": args.fee_base,
        "fee_ppm": args.fee_ppm,
        "funding_fee_sat": args.funding_fee,
        "min_confirmations": args.min_confirmations,
        "timeout_delta": args.timeout_delta,
        "claim_margin": args.claim_margin,
        "invoice_expiry_secs": args.invoice_expiry,
        "ln_node_id": info.get("ln_node_id").cloned().unwrap_or(Value::Null),
        "relays": relays,
        "expires_at": now.saturating_add(args.expires_in),
    });
    if args.prepay > 0 {
        offer["prepay_sat"] = json!(args.prepay);
    }
    Ok(offer)
}

fn render_own_offers(v: &Value) -> String {
    let offers = v.get("offers").and_then(Value::as_array).cloned().unwrap_or_default();
    if offers.is_empty() {
        return "no offers published (create one with `looper offer create`)\n".into();
    }
    let now = now_secs();
    let rows: Vec<Vec<String>> = offers
        .iter()
        .map(|o| {
            let expires = num(o, "expires_at");
            vec![
                text(o, "offer_id"),
                format!("{}-{}", group(num(o, "min_amount_sat")), group(num(o, "max_amount_sat"))),
                format!("{} + {} ppm", group(num(o, "fee_base_sat")), num(o, "fee_ppm")),
                group(num(o, "funding_fee_sat")),
                text(o, "min_confirmations"),
                text(o, "timeout_delta"),
                if expires <= now {
                    "expired".into()
                } else {
                    format!("in {}", crate::output::duration(expires - now))
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
        let offer = json!({
            "min_amount_sat": 10_000, "max_amount_sat": 1_000_000,
            "fee_base_sat": 1_000, "fee_ppm": 2_500, "funding_fee_sat": 300,
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
