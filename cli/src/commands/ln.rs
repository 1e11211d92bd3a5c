//! `looper ln info|channels|balance|peers|connect|disconnect|open|close|invoice|pay|payment|address|withdraw`.

use clap::{ArgGroup, Subcommand};
use looper_api::{
    AddressResponse, ChannelList, CloseRequest, CloseResponse, ConnectRequest, DisconnectResponse,
    ErrorCode, InvoiceRequest, InvoiceResponse, LnBalance, LnInfo, LnWithdrawRequest, OpenRequest,
    OpenResponse, PayRequest, PayResponse, PaymentInfo, PaymentStatus, Peer, PeerList,
    SendResponse,
};
use serde_json::Value;

use super::{confirm, parse_sat, Ctx};
use crate::client::{encode, Client};
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
    /// The Lightning node's peers: connected or remembered, with their channel counts.
    #[command(after_help = "Example:\n  looper ln peers\n  looper --json ln peers")]
    Peers,
    /// Connect to a peer (--persist: reconnect to it, after restarts too).
    #[command(after_help = "Example:\n  looper ln connect 02ab...@203.0.113.5:9735 --persist")]
    Connect {
        /// The peer: its node id, @, its address.
        #[arg(value_name = "NODE_ID@HOST:PORT")]
        peer: String,
        /// Remember the peer and reconnect to it, after restarts too (a peer the node opens a
        /// channel to is remembered anyway).
        #[arg(long)]
        persist: bool,
    },
    /// Disconnect a peer and forget it (refused while the node has channels with it).
    #[command(after_help = "Example:\n  looper ln disconnect 02ab...")]
    Disconnect {
        /// The peer's node id (hex).
        #[arg(value_name = "NODE_ID")]
        node_id: String,
    },
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
    /// Close a channel: cooperatively, or with --force without the peer (asks for confirmation
    /// on --force unless --yes).
    #[command(after_help = "\
A cooperative close needs the peer connected; the funds come back to the Lightning node's
on-chain wallet (`looper ln balance`, `looper ln withdraw`) once the closing transaction
confirms. A force close broadcasts the node's latest commitment transaction: the node's funds
then stay locked for the channel's to_self_delay (144 blocks by default, up to 2016) after it
confirms, and it costs more fees. Use it only when the peer is gone.

Examples:
  looper ln close 5a1b2c3d
  looper ln close 5a1b2c3d..9e8f --force --yes")]
    Close {
        /// The channel: its id (or the start of it, or the `ln channels` form `5a1b2c3d..9e8f`),
        /// or its user channel id (as `ln open` answers it).
        #[arg(value_name = "CHANNEL_ID")]
        channel: String,
        /// Force-close without the peer: the funds wait for the channel's to_self_delay.
        #[arg(long)]
        force: bool,
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
    /// A new on-chain address of the Lightning node's wallet (funds channels).
    #[command(after_help = "Example:\n  looper ln address")]
    Address,
    /// Send from the Lightning node's on-chain wallet (asks for confirmation unless --yes).
    #[command(
        group(ArgGroup::new("how_much").required(true).args(["amount", "all"])),
        after_help = "Examples:\n  looper ln withdraw bc1q... --amount 500000 --fee-rate 4\n  looper ln withdraw bc1q... --all"
    )]
    Withdraw {
        /// Destination address.
        #[arg(value_name = "ADDRESS")]
        address: String,
        /// Amount in satoshis.
        #[arg(long, value_name = "SAT", value_parser = parse_sat)]
        amount: Option<u64>,
        /// Everything spendable, less the fee (and the reserve open anchor channels need).
        #[arg(long)]
        all: bool,
        /// Fee rate in sat/vB (default: the Lightning node's estimate).
        #[arg(long, value_name = "SAT_PER_VB", value_parser = parse_sat)]
        fee_rate: Option<u64>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
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
        LnCommand::Peers => {
            let v: PeerList = client.get("/v1/ln/peers", "list the peers").await?;
            let h = render_peers(&v);
            (json(&v), h)
        }
        LnCommand::Connect { peer, persist } => {
            let (node_id, address) = split_peer(&peer)?;
            let body = ConnectRequest {
                node_id: node_id.to_string(),
                address: Some(address.to_string()),
                persist,
            };
            let v: Peer = client
                .post("/v1/ln/peers", &body, &format!("connect to {}", short(node_id)))
                .await
                .map_err(|e| match e.code() {
                    Some(ErrorCode::LightningError) => {
                        e.with_todo("check the address and that the peer is online")
                    }
                    _ => e,
                })?;
            let remembered = if v.persisted { " (remembered)" } else { "" };
            let h = format!("connected to {}@{}{remembered}\n", v.node_id, v.address);
            (json(&v), h)
        }
        LnCommand::Disconnect { node_id } => {
            let node_id = node_id.trim().to_ascii_lowercase();
            let v: DisconnectResponse = client
                .delete(
                    &format!("/v1/ln/peers/{}", encode(&node_id)),
                    &format!("disconnect {}", short(&node_id)),
                )
                .await
                .map_err(|e| match e.code() {
                    Some(ErrorCode::Conflict) => e.with_todo(
                        "close its channels first: `looper ln channels`, `looper ln close CHANNEL_ID`",
                    ),
                    _ => e,
                })?;
            let h = if v.disconnected {
                format!("disconnected {}\n", v.node_id)
            } else {
                format!("{} is not a peer (nothing to do)\n", v.node_id)
            };
            (json(&v), h)
        }
        LnCommand::Close { channel, force, yes } => {
            let (id, known) = resolve_channel(&client, &channel).await?;
            if force {
                let what = match &known {
                    Some(c) => format!(
                        "channel {} ({} with {})",
                        short(&c.channel_id),
                        sat(c.capacity_sat),
                        short(&c.counterparty)
                    ),
                    None => format!("channel {id}"),
                };
                confirm(
                    &format!(
                        "Force-close {what}? Your funds in it stay locked for the channel's \
                         to_self_delay (144 blocks by default) after the commitment transaction \
                         confirms."
                    ),
                    yes,
                )?;
            }
            let v: CloseResponse = client
                .post(
                    &format!("/v1/ln/channels/{}/close", encode(&id)),
                    &CloseRequest { force },
                    &format!("close channel {}", short(&id)),
                )
                .await
                .map_err(|e| match e.code() {
                    Some(ErrorCode::NotFound) => {
                        e.with_todo("`looper ln channels` lists the channels")
                    }
                    Some(ErrorCode::Conflict) => e.with_todo(
                        "wait for the peer to reconnect (`looper ln peers`), or close with --force",
                    ),
                    _ => e,
                })?;
            let h = render_close(&v);
            (json(&v), h)
        }
        LnCommand::Withdraw { address, amount, all, fee_rate, yes } => {
            let how_much = match amount {
                Some(a) if !all => sat(a),
                _ => "everything spendable".to_string(),
            };
            let rate = fee_rate.map(|r| format!(" at {r} sat/vB")).unwrap_or_default();
            confirm(
                &format!(
                    "Send {how_much} from the Lightning node's on-chain wallet to {address}{rate}?"
                ),
                yes,
            )?;
            let body = LnWithdrawRequest {
                address: address.clone(),
                amount_sat: amount.filter(|_| !all),
                all,
                fee_rate_sat_vb: fee_rate,
            };
            let v: SendResponse = client
                .post("/v1/ln/withdraw", &body, "withdraw from the lightning node's wallet")
                .await
                .map_err(|e| match e.code() {
                    Some(ErrorCode::InsufficientFunds) => {
                        e.with_todo("see what is spendable: `looper ln balance`")
                    }
                    _ => e,
                })?;
            let h = format!("sent {how_much} to {address}: txid {}\n", v.txid);
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

/// `NODE_ID@HOST:PORT` as its node id and its address.
fn split_peer(peer: &str) -> CliResult<(&str, &str)> {
    match peer.trim().split_once('@') {
        Some((id, address)) if !id.trim().is_empty() && !address.trim().is_empty() => {
            Ok((id.trim(), address.trim()))
        }
        _ => Err(CliError::usage(
            format!("invalid peer {peer:?}"),
            "expected NODE_ID@HOST:PORT",
            "for example 02ab...@203.0.113.5:9735",
        )),
    }
}

/// The id to close `arg` by, and its channel when the node lists it: a full channel id as given;
/// else the one channel whose id starts with `arg` (or matches the `5a1b2c3d..9e8f` form
/// `ln channels` shows); else `arg` as a user channel id when it is a number.
async fn resolve_channel(
    client: &Client,
    arg: &str,
) -> CliResult<(String, Option<looper_api::Channel>)> {
    let arg = arg.trim().to_ascii_lowercase();
    let list: ChannelList = client.get("/v1/ln/channels", "list the channels").await?;
    pick_channel(&arg, list)
}

/// [`resolve_channel`] over the node's channel list.
fn pick_channel(arg: &str, list: ChannelList) -> CliResult<(String, Option<looper_api::Channel>)> {
    let (head, tail) = arg.split_once("..").unwrap_or((arg, ""));
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut found: Vec<looper_api::Channel> = if !head.is_empty() && hex(head) && hex(tail) {
        list.channels
            .into_iter()
            .filter(|c| c.channel_id.starts_with(head) && c.channel_id.ends_with(tail))
            .collect()
    } else {
        Vec::new()
    };
    match found.len() {
        1 => {
            let c = found.remove(0);
            Ok((c.channel_id.clone(), Some(c)))
        }
        0 if arg.len() == 64 && hex(arg) => Ok((arg.to_string(), None)),
        0 if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((arg.to_string(), None))
        }
        0 => Err(CliError::failure(
            format!("cannot close channel {arg}"),
            "no channel of the node has that id",
            "`looper ln channels` lists the channels",
        )),
        n => Err(CliError::usage(
            format!("cannot close channel {arg}"),
            format!("{n} channels start with it"),
            "give more of the channel id: `looper --json ln channels` shows them whole",
        )),
    }
}

fn render_peers(v: &PeerList) -> String {
    if v.peers.is_empty() {
        return "no peers (connect to one with `looper ln connect NODE_ID@HOST:PORT`)\n".into();
    }
    let rows: Vec<Vec<String>> = v
        .peers
        .iter()
        .map(|p| {
            vec![
                p.node_id.clone(),
                p.address.clone(),
                if p.connected { "connected" } else { "disconnected" }.into(),
                if p.persisted { "yes" } else { "no" }.into(),
                p.channels.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("NODE ID", Align::Left),
            ("ADDRESS", Align::Left),
            ("STATE", Align::Left),
            ("REMEMBERED", Align::Left),
            ("CHANNELS", Align::Right),
        ],
        &rows,
    )
}

fn render_close(v: &CloseResponse) -> String {
    if v.force {
        let wait = match v.to_self_delay_blocks {
            Some(n) => format!("{n} blocks after it confirms (the channel's to_self_delay)"),
            None => "after the channel's to_self_delay once it confirms".into(),
        };
        format!(
            "force-closed channel {} with {}: the commitment transaction is broadcast; your funds \
             come back to the Lightning node's on-chain wallet {wait}\n",
            v.channel_id, v.counterparty
        )
    } else {
        format!(
            "closing channel {} with {} cooperatively: the funds come back to the Lightning \
             node's on-chain wallet once the closing transaction confirms (`looper ln balance`)\n",
            v.channel_id, v.counterparty
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn channel(id: &str) -> looper_api::Channel {
        looper_api::Channel {
            channel_id: id.into(),
            counterparty: "02".repeat(33),
            capacity_sat: 2_000_000,
            outbound_msat: 1,
            inbound_msat: 2,
            ready: true,
            usable: true,
        }
    }

    #[test]
    fn a_channel_is_found_by_its_id_its_start_or_its_short_form() {
        let a = format!("5a1b2c3d{}9e8f", "0".repeat(52));
        let b = format!("5a1b2c3d{}1234", "1".repeat(52));
        let list = || ChannelList { channels: vec![channel(&a), channel(&b)] };
        for arg in [a.as_str(), &a[..20], "5a1b2c3d..9e8f", "5a1b2c3d0"] {
            let (id, c) = pick_channel(arg, list()).unwrap();
            assert_eq!((id.as_str(), c.map(|c| c.channel_id)), (a.as_str(), Some(a.clone())));
        }
        // Ambiguous: a usage error.
        let e = pick_channel("5a1b", list()).unwrap_err();
        assert_eq!(e.exit, crate::error::EXIT_USAGE);
        assert!(e.why.contains("2 channels start with it"), "{e}");
        // Not listed: a full id or a user channel id goes to the node as it is.
        let other = "ab".repeat(32);
        assert_eq!(pick_channel(&other, list()).unwrap(), (other.clone(), None));
        assert_eq!(pick_channel("12345", list()).unwrap(), ("12345".to_string(), None));
        let e = pick_channel("ffff", list()).unwrap_err();
        assert_eq!(e.exit, crate::error::EXIT_FAILURE);
        assert!(e.to_string().contains("`looper ln channels` lists the channels"), "{e}");
        assert!(pick_channel("zz", list()).is_err());
    }

    #[test]
    fn a_peer_is_node_id_at_address() {
        assert_eq!(split_peer(" 02ab@127.0.0.1:9735 ").unwrap(), ("02ab", "127.0.0.1:9735"));
        for bad in ["02ab", "@127.0.0.1:9735", "02ab@", ""] {
            let e = split_peer(bad).unwrap_err();
            assert_eq!(e.exit, crate::error::EXIT_USAGE, "{bad:?}");
            assert!(e.why.contains("NODE_ID@HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn peers_and_closes_read_as_sentences() {
        assert!(render_peers(&PeerList { peers: vec![] }).starts_with("no peers"));
        let peers = PeerList {
            peers: vec![Peer {
                node_id: "02".repeat(33),
                address: "127.0.0.1:9735".into(),
                connected: true,
                persisted: false,
                channels: 2,
            }],
        };
        let t = render_peers(&peers);
        assert!(t.starts_with("NODE ID"), "{t}");
        assert!(t.contains(&"02".repeat(33)) && t.contains("connected") && t.contains("no"), "{t}");
        let forced = CloseResponse {
            channel_id: "ab".repeat(32),
            user_channel_id: "7".into(),
            counterparty: "02".repeat(33),
            force: true,
            to_self_delay_blocks: Some(144),
        };
        assert!(render_close(&forced).contains("on-chain wallet 144 blocks after it confirms"));
        let coop = CloseResponse { force: false, to_self_delay_blocks: None, ..forced };
        assert!(render_close(&coop).contains("cooperatively"));
    }
}
