//! `looper ln info|channels|open|invoice|pay|payment|address|balance`.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{confirm, parse_sat, Ctx};
use crate::error::{CliError, CliResult};
use crate::output::{key_values, num, print_json, sat, short, table, text, Align};

/// Lightning commands.
#[derive(Debug, Subcommand)]
pub enum LnCommand {
    /// The Lightning node: id, channel count, on-chain funds for channels.
    #[command(after_help = "Example:\n  looper ln info")]
    Info,
    /// Channels with their balances.
    #[command(after_help = "Example:\n  looper ln channels")]
    Channels,
    /// Balances of the Lightning node (on-chain spendable, outbound, inbound).
    #[command(after_help = "Example:\n  looper ln balance")]
    Balance,
    /// A new on-chain address of the Lightning node's wallet (funds channels).
    #[command(after_help = "Example:\n  looper ln address")]
    Address,
    /// Open a channel (asks for confirmation unless --yes).
    #[command(
        after_help = "Example:\n  looper ln open --node-id 02ab... --address 203.0.113.5:9735 --amount 2000000"
    )]
    Open {
        /// The peer's node id (hex).
        #[arg(long, value_name = "PUBKEY")]
        node_id: String,
        /// The peer's address, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        address: String,
        /// Channel size in satoshis.
        #[arg(long, value_name = "SAT", value_parser = parse_sat)]
        amount: u64,
        /// Amount pushed to the peer at opening, in millisatoshis.
        #[arg(long, value_name = "MSAT", default_value_t = 0)]
        push_msat: u64,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Create an invoice.
    #[command(after_help = "Example:\n  looper ln invoice --amount 10000 --description coffee")]
    Invoice {
        /// Amount in satoshis.
        #[arg(long, value_name = "SAT", value_parser = parse_sat)]
        amount: u64,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Expiry in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        expiry: u32,
    },
    /// Pay an invoice (asks for confirmation unless --yes).
    #[command(after_help = "Example:\n  looper ln pay lnbcrt10u1p... --yes")]
    Pay {
        /// The BOLT 11 invoice.
        invoice: String,
        /// Largest total CLTV expiry delta of the route, in blocks.
        #[arg(long, value_name = "BLOCKS")]
        max_cltv: Option<u32>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// A payment, sent or received, by its payment hash (a swap's, or one of `ln pay`).
    #[command(after_help = "Example:
  looper ln payment 3b1f...e9 --json")]
    Payment {
        /// The payment hash (64 hex characters).
        #[arg(value_name = "PAYMENT_HASH")]
        hash: String,
    },
}

/// Runs a Lightning command.
pub async fn ln(ctx: &Ctx, cmd: LnCommand) -> CliResult<()> {
    let client = ctx.client()?;
    let (v, human) = match cmd {
        LnCommand::Info => {
            let v = client.get("/v1/ln/info", "get the lightning node's info").await?;
            let h = key_values(&[
                ("node id", text(&v, "node_id")),
                ("channels", text(&v, "channels")),
                ("on-chain spendable", sat(num(&v, "onchain_spendable_sat"))),
            ]);
            (v, h)
        }
        LnCommand::Channels => {
            let v = client.get("/v1/ln/channels", "list the channels").await?;
            let h = render_channels(&v);
            (v, h)
        }
        LnCommand::Balance => {
            let v = client.get("/v1/ln/balance", "get the lightning balance").await?;
            let h = key_values(&[
                ("on-chain spendable", sat(num(&v, "onchain_spendable_sat"))),
                ("outbound", sat(num(&v, "lightning_outbound_msat") / 1000)),
                ("inbound", sat(num(&v, "lightning_inbound_msat") / 1000)),
            ]);
            (v, h)
        }
        LnCommand::Address => {
            let v =
                client.post("/v1/ln/address", &json!({}), "get a lightning wallet address").await?;
            let h = format!("{}\n", text(&v, "address"));
            (v, h)
        }
        LnCommand::Open { node_id, address, amount, push_msat, yes } => {
            confirm(&format!("Open a {} channel to {node_id}@{address}?", sat(amount)), yes)?;
            let body = json!({
                "node_id": node_id, "address": address, "amount_sat": amount, "push_msat": push_msat,
            });
            let v = client.post("/v1/ln/open", &body, "open the channel").await?;
            let h = format!(
                "opening a {} channel to {node_id}: user channel id {}\n",
                sat(amount),
                text(&v, "user_channel_id")
            );
            (v, h)
        }
        LnCommand::Invoice { amount, description, expiry } => {
            let amount_msat = amount.checked_mul(1000).ok_or_else(|| {
                CliError::usage("invalid --amount", "too large", "use a smaller amount")
            })?;
            let body = json!({
                "amount_msat": amount_msat, "description": description, "expiry_secs": expiry,
            });
            let v = client.post("/v1/ln/invoice", &body, "create the invoice").await?;
            let h = format!("{}\n", text(&v, "invoice"));
            (v, h)
        }
        LnCommand::Pay { invoice, max_cltv, yes } => {
            confirm(&format!("Pay {}?", short(&invoice)), yes)?;
            let mut body = json!({"invoice": invoice});
            if let Some(c) = max_cltv {
                body["max_total_cltv_expiry_delta"] = json!(c);
            }
            let v = client.post("/v1/ln/pay", &body, "pay the invoice").await?;
            let status = text(&v, "status");
            if status == "failed" {
                return Err(CliError::failure(
                    "payment failed",
                    format!("payment hash {}", text(&v, "payment_hash")),
                    "check the route and the channel balances: `looper ln channels`",
                ));
            }
            let h = format!(
                "payment {status}: payment hash {hash}\n(follow it with `looper ln payment {hash}`)\n",
                hash = text(&v, "payment_hash")
            );
            (v, h)
        }
        LnCommand::Payment { hash } => {
            let hash = hash.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CliError::usage(
                    "invalid payment hash",
                    "expected 64 hex characters",
                    "copy it from `looper swap ID` or `looper ln pay`",
                ));
            }
            let v = client.get(&format!("/v1/ln/payments/{hash}"), "get the payment").await?;
            let mut rows = vec![
                ("payment hash", text(&v, "payment_hash")),
                ("direction", text(&v, "direction")),
                ("status", text(&v, "status")),
            ];
            if v.get("amount_msat").is_some() {
                rows.push(("amount", sat(num(&v, "amount_msat") / 1000)));
            }
            if v.get("fee_paid_msat").is_some() {
                rows.push(("fee paid", format!("{} msat", num(&v, "fee_paid_msat"))));
            }
            if v.get("preimage").is_some() {
                rows.push(("preimage", text(&v, "preimage")));
            }
            let h = key_values(&rows);
            (v, h)
        }
    };
    if ctx.json() {
        print_json(&v);
    } else {
        print!("{human}");
    }
    Ok(())
}

fn render_channels(v: &Value) -> String {
    let channels = v.get("channels").and_then(Value::as_array).cloned().unwrap_or_default();
    if channels.is_empty() {
        return "no channels\n".into();
    }
    let rows: Vec<Vec<String>> = channels
        .iter()
        .map(|c| {
            vec![
                short(&text(c, "channel_id")),
                short(&text(c, "counterparty")),
                crate::output::group(num(c, "capacity_sat")),
                crate::output::group(num(c, "outbound_msat") / 1000),
                crate::output::group(num(c, "inbound_msat") / 1000),
                if c.get("usable").and_then(Value::as_bool).unwrap_or(false) {
                    "usable".into()
                } else if c.get("ready").and_then(Value::as_bool).unwrap_or(false) {
                    "ready".into()
                } else {
                    "pending".into()
                },
            ]
        })
        .collect();
    table(
        &[
            ("CHANNEL", Align::Left),
            ("PEER", Align::Left),
            ("CAPACITY", Align::Right),
            ("OUTBOUND", Align::Right),
            ("INBOUND", Align::Right),
            ("STATE", Align::Left),
        ],
        &rows,
    )
}
