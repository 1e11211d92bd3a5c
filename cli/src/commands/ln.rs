//! `looper ln info|channels|open|invoice|pay|payment|address|balance`.

use clap::Subcommand;
use looper_api::{
    AddressResponse, ChannelList, InvoiceRequest, InvoiceResponse, LnBalance, LnInfo, OpenRequest,
    OpenResponse, PayRequest, PayResponse, PaymentInfo, PaymentStatus,
};
use serde_json::Value;

use super::{confirm, parse_sat, Ctx};
use crate::error::{CliError, CliResult};
use crate::output::{key_values, print_json, sat, short, table, Align};

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
        /// Largest total CLTV expiry delta of the route, in blocks (as `buyer.max_route_cltv`).
        #[arg(long = "max-route-cltv", alias = "max-cltv", value_name = "BLOCKS")]
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
            let v: LnInfo = client.get("/v1/ln/info", "get the lightning node's info").await?;
            let h = key_values(&[
                ("node id", v.node_id.clone()),
                ("channels", v.channels.to_string()),
                ("on-chain spendable", sat(v.onchain_spendable_sat)),
            ]);
            (json(&v), h)
        }
        LnCommand::Channels => {
            let v: ChannelList = client.get("/v1/ln/channels", "list the channels").await?;
            let h = render_channels(&v);
            (json(&v), h)
        }
        LnCommand::Balance => {
            let v: LnBalance = client.get("/v1/ln/balance", "get the lightning balance").await?;
            let h = key_values(&[
                ("on-chain spendable", sat(v.onchain_spendable_sat)),
                ("outbound", sat(v.lightning_outbound_msat / 1000)),
                ("inbound", sat(v.lightning_inbound_msat / 1000)),
            ]);
            (json(&v), h)
        }
        LnCommand::Address => {
            let v: AddressResponse = client
                .post("/v1/ln/address", &serde_json::json!({}), "get a lightning wallet address")
                .await?;
            let h = format!("{}\n", v.address);
            (json(&v), h)
        }
        LnCommand::Open { node_id, address, amount, push_msat, yes } => {
            confirm(&format!("Open a {} channel to {node_id}@{address}?", sat(amount)), yes)?;
            let body =
                OpenRequest { node_id: node_id.clone(), address, amount_sat: amount, push_msat };
            let v: OpenResponse = client.post("/v1/ln/open", &body, "open the channel").await?;
            let h = format!(
                "opening a {} channel to {node_id}: user channel id {}\n",
                sat(amount),
                v.user_channel_id
            );
            (json(&v), h)
        }
        LnCommand::Invoice { amount, description, expiry } => {
            let amount_msat = amount.checked_mul(1000).ok_or_else(|| {
                CliError::usage("invalid --amount", "too large", "use a smaller amount")
            })?;
            let body = InvoiceRequest {
                amount_msat,
                description: Some(description),
                expiry_secs: Some(expiry),
            };
            let v: InvoiceResponse =
                client.post("/v1/ln/invoice", &body, "create the invoice").await?;
            let h = format!("{}\n", v.invoice);
            (json(&v), h)
        }
        LnCommand::Pay { invoice, max_cltv, yes } => {
            confirm(&format!("Pay {}?", short(&invoice)), yes)?;
            let body = PayRequest { invoice, max_route_cltv: max_cltv };
            let v: PayResponse = client.post("/v1/ln/pay", &body, "pay the invoice").await?;
            if v.status == PaymentStatus::Failed {
                return Err(CliError::failure(
                    "payment failed",
                    format!("payment hash {}", v.payment_hash),
                    "check the route and the channel balances: `looper ln channels`",
                ));
            }
            let h = format!(
                "payment {}: payment hash {hash}\n(follow it with `looper ln payment {hash}`)\n",
                v.status,
                hash = v.payment_hash
            );
            (json(&v), h)
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
            let v: PaymentInfo =
                client.get(&format!("/v1/ln/payments/{hash}"), "get the payment").await?;
            let mut rows = vec![
                ("payment hash", v.payment_hash.clone()),
                ("direction", v.direction.to_string()),
                ("status", v.status.to_string()),
            ];
            if let Some(a) = v.amount_msat {
                rows.push(("amount", sat(a / 1000)));
            }
            if let Some(f) = v.fee_paid_msat {
                rows.push(("fee paid", format!("{f} msat")));
            }
            if let Some(p) = &v.preimage {
                rows.push(("preimage", p.clone()));
            }
            let h = key_values(&rows);
            (json(&v), h)
        }
    };
    if ctx.json() {
        print_json(&v);
    } else {
        print!("{human}");
    }
    Ok(())
}

/// `v` as JSON (the node's answer, as typed).
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn render_channels(v: &ChannelList) -> String {
    if v.channels.is_empty() {
        return "no channels\n".into();
    }
    let rows: Vec<Vec<String>> = v
        .channels
        .iter()
        .map(|c| {
            vec![
                short(&c.channel_id),
                short(&c.counterparty),
                crate::output::group(c.capacity_sat),
                crate::output::group(c.outbound_msat / 1000),
                crate::output::group(c.inbound_msat / 1000),
                if c.usable {
                    "usable".into()
                } else if c.ready {
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
