//! `looper swaps`, `looper swap ID|PAYMENT_HASH`, `looper swap monitor [ID]`,
//! `looper swap abort ID`, `looper swap export ID [--out FILE]`, and following a swap's events (shared with `looper out`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use looper_api::{
    AbortResponse, ScriptSpendResponse, SwapDetail, SwapExport, SwapList, SwapStatus, SwapSummary,
};
use serde_json::{json, Value};

use super::Ctx;
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult};
use crate::output::{
    date, duration, group, key_values, num, print_json, print_json_line, sat, short, table, text,
    Align,
};

/// `looper swap`.
#[derive(Debug, Args)]
pub struct SwapArgs {
    /// Swap id or payment hash (hex).
    #[arg(value_name = "ID|PAYMENT_HASH")]
    pub key: Option<String>,
    /// Subcommand.
    #[command(subcommand)]
    pub command: Option<SwapCommand>,
}

/// `looper swap monitor|abort|claim|refund|export`.
#[derive(Debug, Subcommand)]
pub enum SwapCommand {
    /// Follow a swap's progress live (every swap in progress when no id is given).
    #[command(after_help = "Examples:\n  looper swap monitor\n  looper swap monitor 9d1e...")]
    Monitor {
        /// Swap id or payment hash.
        #[arg(value_name = "ID|PAYMENT_HASH")]
        key: Option<String>,
    },
    /// Ask the node to abort a swap (refused once the swap cannot be aborted safely).
    #[command(after_help = "Example:\n  looper swap abort 9d1e...")]
    Abort {
        /// Swap id or payment hash.
        #[arg(value_name = "ID|PAYMENT_HASH")]
        key: String,
    },
    /// Buyer: claim the HTLC through the claim leaf now, without waiting for the seller's
    /// cooperative signature (recovery; a claim already out is broadcast again).
    #[command(
        after_help = "Example:\n  looper swap claim 9d1e...\n\nRefused while the invoice is not paid (abort the swap instead)."
    )]
    Claim {
        /// Swap id or payment hash.
        #[arg(value_name = "ID|PAYMENT_HASH")]
        key: String,
    },
    /// Seller: refund the HTLC through the refund leaf as soon as the timeout allows, without
    /// waiting on a cooperative refund (recovery; a refund already out is broadcast again).
    #[command(
        after_help = "Example:\n  looper swap refund 9d1e...\n\nBefore the timeout the node says from which block the refund leaf is valid."
    )]
    Refund {
        /// Swap id or payment hash.
        #[arg(value_name = "ID|PAYMENT_HASH")]
        key: String,
    },
    /// What another tool needs to claim (buyer) or refund (seller) the swap's HTLC by hand, as
    /// JSON (see docs/recovery.md). SECRET: it holds the preimage when the node knows it.
    #[command(
        after_help = "Examples:\n  looper swap export 9d1e... --out swap-9d1e.json\n  looper swap export 9d1e... | jq .htlc\n\nWithout --out the JSON goes to stdout. --out creates FILE with mode 0600 and never\noverwrites one."
    )]
    Export {
        /// Swap id or payment hash.
        #[arg(value_name = "ID|PAYMENT_HASH")]
        key: String,
        /// Write the export to FILE (created, mode 0600; refused if it exists) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn not_found_hint(e: CliError) -> CliError {
    if e.is_not_found() {
        e.with_todo("`looper swaps` lists this node's swaps")
    } else {
        e
    }
}

/// `looper swaps`.
pub async fn list(ctx: &Ctx) -> CliResult<()> {
    let client = ctx.client()?;
    let v: SwapList = client.get("/v1/swaps", "list the swaps").await?;
    if ctx.json() {
        print_json(&v);
    } else {
        print!("{}", render_swaps(&v));
    }
    Ok(())
}

/// The human table of `/v1/swaps`, newest first.
pub fn render_swaps(v: &SwapList) -> String {
    let mut swaps: Vec<_> = v.swaps.iter().collect();
    if swaps.is_empty() {
        return "no swaps yet (start one with `looper out --amount SAT`)\n".into();
    }
    swaps.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let rows: Vec<Vec<String>> = swaps
        .iter()
        .map(|s| {
            vec![
                s.swap_id.clone(),
                direction_cell(s.direction).into(),
                s.role.to_string(),
                s.status.to_string(),
                s.state.clone(),
                s.amount_sat.map_or_else(|| "-".into(), group),
                cost_cell(s),
                short(s.payment_hash.as_deref().unwrap_or("-")),
                date(s.created_at),
                s.label.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            ("SWAP", Align::Left),
            ("DIR", Align::Left),
            ("ROLE", Align::Left),
            ("STATUS", Align::Left),
            ("STATE", Align::Left),
            ("AMOUNT (sat)", Align::Right),
            ("COST (sat)", Align::Right),
            ("PAYMENT HASH", Align::Left),
            ("CREATED (unix)", Align::Right),
            ("LABEL", Align::Left),
        ],
        &rows,
    )
}

/// The DIR cell: `out` (Lightning to on-chain) or `in` (on-chain to Lightning).
fn direction_cell(d: looper_protocol::SwapDirection) -> &'static str {
    match d {
        looper_protocol::SwapDirection::LoopIn => "in",
        _ => "out",
    }
}

/// The COST cell: a buyer's cost (what it paid, or will pay per its quote while pending); a
/// seller's fee earned, marked as such; "-" when the node did not say (an older node, a record
/// that does not read).
fn cost_cell(s: &SwapSummary) -> String {
    match (s.cost_sat, s.earned_sat) {
        (Some(cost), _) => group(cost),
        (None, Some(earned)) => format!("earned {}", group(earned)),
        (None, None) => "-".into(),
    }
}

/// `looper swap ...`.
pub async fn swap(ctx: &Ctx, args: SwapArgs) -> CliResult<()> {
    match (args.command, args.key) {
        (Some(SwapCommand::Monitor { key }), _) => monitor(ctx, key).await,
        (Some(SwapCommand::Abort { key }), _) => {
            let client = ctx.client()?;
            let v: AbortResponse = client
                .post(
                    &format!("/v1/swaps/{}/abort", encode(&key)),
                    &json!({}),
                    &format!("abort swap {key}"),
                )
                .await
                .map_err(not_found_hint)?;
            if ctx.json() {
                print_json(&v);
            } else {
                println!("abort requested for swap {}", v.swap_id);
            }
            Ok(())
        }
        (Some(SwapCommand::Claim { key }), _) => script_spend(ctx, &key, "claim").await,
        (Some(SwapCommand::Refund { key }), _) => script_spend(ctx, &key, "refund").await,
        (Some(SwapCommand::Export { key, out }), _) => export(ctx, &key, out.as_deref()).await,
        (None, Some(key)) => show(ctx, &key).await,
        (None, None) => Err(CliError::usage(
            "looper swap",
            "no swap id given",
            "use `looper swap ID`, `looper swap monitor [ID]`, `looper swap abort ID`, `looper swap claim ID`, `looper swap refund ID` or `looper swap export ID`",
        )),
    }
}

/// `looper swap claim|refund ID`: `POST /v1/swaps/{id}/claim|refund`.
async fn script_spend(ctx: &Ctx, key: &str, spend: &str) -> CliResult<()> {
    let client = ctx.client()?;
    let v: ScriptSpendResponse = client
        .post(
            &format!("/v1/swaps/{}/{spend}", encode(key)),
            &json!({}),
            &format!("{spend} swap {key}"),
        )
        .await
        .map_err(not_found_hint)?;
    if ctx.json() {
        print_json(&v);
    } else {
        println!(
            "{} through the script path requested for swap {} (now {}); follow it with `looper swap monitor {}`",
            v.spend, v.swap_id, v.state, v.swap_id
        );
    }
    Ok(())
}

/// `looper swap export ID [--out FILE]`: `GET /v1/swaps/{id}/export`, to stdout or to a new file
/// of mode 0600.
async fn export(ctx: &Ctx, key: &str, out: Option<&Path>) -> CliResult<()> {
    let client = ctx.client()?;
    let v: SwapExport = client
        .get(&format!("/v1/swaps/{}/export", encode(key)), &format!("export swap {key}"))
        .await
        .map_err(not_found_hint)?;
    let Some(path) = out else {
        print_json(&v);
        return Ok(());
    };
    let text = serde_json::to_string_pretty(&v)
        .map_err(|e| CliError::failure(format!("cannot export swap {key}"), e.to_string(), ""))?;
    write_secret_file(path, &format!("{text}\n"))?;
    if ctx.json() {
        print_json(&json!({"swap_id": v.swap_id, "file": path.display().to_string()}));
    } else {
        println!(
            "swap {} exported to {} (mode 0600; keep it secret while the swap is open{})",
            v.swap_id,
            path.display(),
            if v.preimage.is_some() { ": it holds the preimage" } else { "" }
        );
    }
    Ok(())
}

/// Writes `text` to a new file `path` readable by its owner only (mode 0600 on Unix); an existing
/// file is never overwritten.
fn write_secret_file(path: &Path, text: &str) -> CliResult<()> {
    let fail = |why: String, todo: &str| {
        CliError::failure(format!("cannot write {}", path.display()), why, todo)
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            fail("the file exists".into(), "name a new file, or remove that one first")
        }
        _ => fail(e.to_string(), "check the directory and its permissions"),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail(e.to_string(), "check the disk"))
}

async fn show(ctx: &Ctx, key: &str) -> CliResult<()> {
    let client = ctx.client()?;
    let v: SwapDetail = client
        .get(&format!("/v1/swaps/{}", encode(key)), &format!("get swap {key}"))
        .await
        .map_err(not_found_hint)?;
    if ctx.json() {
        print_json(&v);
        return Ok(());
    }
    let s = &v;
    let mut pairs = vec![
        ("swap", s.swap_id.clone()),
        ("role", s.role.to_string()),
        ("status", s.status.to_string()),
        ("state", s.state.clone()),
        ("payment hash", s.payment_hash.clone().unwrap_or_else(|| "-".into())),
        ("created", date(s.created_at)),
        ("updated", date(s.updated_at)),
    ];
    if let Some(label) = &s.label {
        pairs.push(("label", label.clone()));
    }
    print!("{}", key_values(&pairs));
    let events = client.swap_events(&s.swap_id, 0, 0).await?;
    if !events.events.is_empty() {
        println!("events:");
        for e in &events.events {
            // The time the node logged it (none for events logged by older versions).
            let at = e.at_ms().map(|ms| format!("{}  ", date(ms / 1000))).unwrap_or_default();
            println!("  {:>3}  {at}{}", e.seq, describe(&e.event));
        }
    }
    Ok(())
}

async fn monitor(ctx: &Ctx, key: Option<String>) -> CliResult<()> {
    let client = ctx.client()?;
    let start = Instant::now();
    let keys: Vec<String> = match key {
        Some(k) => {
            // Resolve a payment hash to the id, and fail early on an unknown swap.
            let v: SwapDetail = client
                .get(&format!("/v1/swaps/{}", encode(&k)), &format!("get swap {k}"))
                .await
                .map_err(not_found_hint)?;
            vec![v.swap_id]
        }
        None => {
            let v: SwapList = client.get("/v1/swaps", "list the swaps").await?;
            v.swaps
                .into_iter()
                .filter(|s| s.status == SwapStatus::Pending)
                .map(|s| s.swap_id)
                .collect()
        }
    };
    if keys.is_empty() {
        if ctx.json() {
            print_json_line(&json!({"type": "idle", "swaps": []}));
        } else {
            println!("no swap in progress");
        }
        return Ok(());
    }
    let many = keys.len() > 1;
    let mut followers: Vec<Follower> =
        keys.into_iter().map(|k| Follower::new(k, ctx.json(), many, start)).collect();
    loop {
        let mut all_done = true;
        for f in followers.iter_mut().filter(|f| !f.outcome.finished) {
            f.step(&client, if many { 0 } else { 25 }).await?;
            all_done &= f.outcome.finished;
        }
        if all_done {
            break;
        }
        if many {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if followers.iter().all(|f| f.outcome.succeeded) {
        Ok(())
    } else {
        let failed: Vec<&str> =
            followers.iter().filter(|f| !f.outcome.succeeded).map(|f| f.key.as_str()).collect();
        Err(CliError::failure(
            format!("swap {} did not succeed", failed.join(", ")),
            "it ended without the exchange (refunded, aborted or failed)",
            "see `looper swap ID` for its events",
        ))
    }
}

/// What following a swap learnt.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The swap finished (succeeded or failed).
    pub finished: bool,
    /// It succeeded.
    pub succeeded: bool,
    /// The final state name.
    pub state: String,
    /// The claim transaction.
    pub claim_txid: Option<String>,
    /// Its fee.
    pub claim_fee_sat: Option<u64>,
    /// The agreed quote (from the `accepted` event).
    pub quote: Option<Value>,
}

/// Starts a swap with `POST path` (`body`, taking `offer_id`), says so, and follows it to its end
/// from `start`, printing its events: the swap id and the follower with the outcome.
///
/// # Errors
/// The client's error.
pub async fn start_and_follow(
    ctx: &Ctx,
    client: &Client,
    path: &str,
    body: &impl serde::Serialize,
    offer_id: &str,
    start: Instant,
) -> CliResult<(String, Follower)> {
    let v: looper_api::SwapOutResponse =
        client.post(path, body, &format!("take offer {offer_id}")).await?;
    let swap_id = v.swap_id;
    if ctx.json() {
        print_json_line(&json!({"type": "started", "swap_id": swap_id}));
    } else {
        println!(
            "swap {swap_id} started (follow it elsewhere with `looper swap monitor {swap_id}`)"
        );
    }
    let mut follower = Follower::new(swap_id.clone(), ctx.json(), false, start);
    while !follower.outcome.finished {
        follower.step(client, 25).await?;
    }
    Ok((swap_id, follower))
}

/// Follows one swap's event log, printing each event once.
#[derive(Debug)]
pub struct Follower {
    /// Swap id.
    pub key: String,
    next: u64,
    json: bool,
    prefix: bool,
    start: Instant,
    /// What was seen so far.
    pub outcome: Outcome,
}

impl Follower {
    /// A follower of swap `key` from its first event.
    pub fn new(key: String, json: bool, prefix: bool, start: Instant) -> Self {
        Self { key, next: 0, json, prefix, start, outcome: Outcome::default() }
    }

    /// One long poll (up to `wait_secs`); prints new events and updates the outcome.
    ///
    /// # Errors
    /// The client's error.
    pub async fn step(&mut self, client: &Client, wait_secs: u64) -> CliResult<()> {
        let events = client.swap_events(&self.key, self.next, wait_secs).await?.events;
        for e in &events {
            let seq = e.seq;
            if seq < self.next {
                continue;
            }
            self.next = seq + 1;
            let event = e.event.clone();
            self.learn(&event);
            let elapsed = self.start.elapsed().as_secs();
            if self.json {
                print_json_line(&json!({
                    "type": "event", "swap_id": self.key, "seq": seq,
                    "elapsed_secs": elapsed, "event": event,
                }));
            } else if self.prefix {
                println!("[{:>6}] {}  {}", duration(elapsed), short(&self.key), describe(&event));
            } else {
                println!("[{:>6}] {}", duration(elapsed), describe(&event));
            }
        }
        if events.is_empty() && !self.outcome.finished {
            // No event for a while: the swap may have ended before its log says so.
            let s: SwapDetail =
                client.get(&format!("/v1/swaps/{}", encode(&self.key)), "get the swap").await?;
            if s.is_final() {
                self.outcome.finished = true;
                self.outcome.succeeded = s.status == SwapStatus::Succeeded;
                self.outcome.state = s.state;
            }
        }
        Ok(())
    }

    fn learn(&mut self, e: &Value) {
        match text(e, "event").as_str() {
            "accepted" => self.outcome.quote = e.get("quote").cloned(),
            "broadcast" => {
                let purpose = text(e, "purpose");
                if purpose.ends_with("claim") {
                    self.outcome.claim_txid = Some(text(e, "txid"));
                    self.outcome.claim_fee_sat = e.get("fee_sat").and_then(Value::as_u64);
                }
            }
            "finished" => {
                self.outcome.finished = true;
                self.outcome.succeeded = text(e, "kind") == "succeeded";
                self.outcome.state = text(e, "state");
            }
            _ => {}
        }
    }
}

/// One line for a swap event (the engine's `Notification`, tagged by `event`).
pub fn describe(e: &Value) -> String {
    match text(e, "event").as_str() {
        "accepted" => {
            let q = e.get("quote").cloned().unwrap_or(Value::Null);
            format!(
                "accepted: invoice {}, HTLC {}, timeout at height {}",
                sat(num(&q, "invoice_amount_sat")),
                sat(num(&q, "htlc_amount_sat")),
                text(e, "timeout_height")
            )
        }
        "funding_seen" => format!(
            "funding seen: {} (confirmations {}/{})",
            text(e, "txid"),
            text(e, "confirmations"),
            text(e, "required")
        ),
        "paying" => {
            format!("paying the invoice (route CLTV budget {} blocks)", text(e, "max_cltv"))
        }
        "proof_of_work" => match e.get("millis").and_then(Value::as_u64) {
            None => format!(
                "mining the proof of work the offer asks of the request ({} bits)...",
                text(e, "bits")
            ),
            Some(ms) => format!("proof of work done ({} bits, {ms} ms)", text(e, "bits")),
        },
        "prepaid" => format!(
            "prepay of {} settled: the seller funds the HTLC now",
            sat(num(e, "amount_sat"))
        ),
        "paid" => "paid: the preimage is known".into(),
        "broadcast" => {
            let purpose = text(e, "purpose");
            let what = match purpose.as_str() {
                "cooperative_claim" | "script_claim" => "claiming",
                "cooperative_refund" | "script_refund" => "refunding",
                "funding" => "funding",
                _ => "broadcast",
            };
            format!(
                "{what}: {} {} (fee {}, {} vB)",
                purpose.replace('_', " "),
                text(e, "txid"),
                sat(num(e, "fee_sat")),
                text(e, "vsize")
            )
        }
        "payment_failed" => {
            let again = if e.get("retrying").and_then(Value::as_bool) == Some(true) {
                ": trying again shortly"
            } else {
                ""
            };
            format!("payment failed ({}){again}", text(e, "reason"))
        }
        "cooperation_failed" => {
            format!("cooperative path failed ({}): using the script path", text(e, "reason"))
        }
        "finished" => {
            let kind = text(e, "kind");
            if kind == "succeeded" {
                format!("finished: {}", text(e, "state").to_lowercase())
            } else {
                format!("finished: {} ({kind})", text(e, "state"))
            }
        }
        "aborted" => {
            let msg = text(e, "message");
            if msg == "-" {
                format!("aborted: {}", text(e, "reason"))
            } else {
                format!("aborted: {}: {msg}", text(e, "reason"))
            }
        }
        "stalled" => format!("stalled (trying again): {}", text(e, "reason")),
        "funding_gone" => format!(
            "funding {} left the chain (reorg or double spend): waiting for it again",
            text(e, "txid")
        ),
        "funding_lost" => format!(
            "funding {} left the chain after the payment and never came back: {} sat lost",
            text(e, "txid"),
            text(e, "lost_sat")
        ),
        "peer_error" => {
            let err = e.get("error").cloned().unwrap_or(Value::Null);
            format!("peer error: {} {}", text(&err, "code"), text(&err, "message"))
        }
        other => format!("{other}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_new_and_private() {
        let dir = std::env::temp_dir().join(format!("looper-cli-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("export.json");
        let _ = std::fs::remove_file(&path);
        write_secret_file(&path, "{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = write_secret_file(&path, "other").unwrap_err();
        assert!(e.to_string().contains("the file exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn summary(id: &str, role: looper_api::SwapRole, created_at: u64) -> SwapSummary {
        SwapSummary {
            swap_id: id.into(),
            direction: looper_protocol::SwapDirection::LoopOut,
            role,
            state: "Claimed".into(),
            status: SwapStatus::Succeeded,
            payment_hash: None,
            created_at,
            updated_at: created_at,
            amount_sat: Some(100_000),
            cost_sat: None,
            earned_sat: None,
            label: None,
        }
    }

    #[test]
    fn the_swap_table_shows_amounts_and_costs() {
        use looper_api::SwapRole;
        let bought = SwapSummary {
            cost_sat: Some(1_661),
            label: Some("autoloop".into()),
            ..summary("b1", SwapRole::Buyer, 3)
        };
        let sold = SwapSummary { earned_sat: Some(1_550), ..summary("s1", SwapRole::Seller, 2) };
        // An older node's answer: no amounts.
        let old = SwapSummary { amount_sat: None, ..summary("o1", SwapRole::Buyer, 1) };
        let list = SwapList { swaps: vec![old, sold, bought] };
        assert_eq!(
            render_swaps(&list),
            "\
SWAP  DIR  ROLE    STATUS     STATE    AMOUNT (sat)    COST (sat)  PAYMENT HASH           CREATED (unix)  LABEL
b1    out  buyer   succeeded  Claimed       100,000         1,661  -             1970-01-01 00:00:03 UTC  autoloop
s1    out  seller  succeeded  Claimed       100,000  earned 1,550  -             1970-01-01 00:00:02 UTC  -
o1    out  buyer   succeeded  Claimed             -             -  -             1970-01-01 00:00:01 UTC  -
"
        );
        // JSON: the fields are added, the others unchanged; absent ones left out.
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["swaps"][2]["cost_sat"], 1_661);
        assert_eq!(v["swaps"][1]["earned_sat"], 1_550);
        assert_eq!(v["swaps"][1]["amount_sat"], 100_000);
        assert!(v["swaps"][1].get("cost_sat").is_none(), "{v}");
        assert!(v["swaps"][0].get("amount_sat").is_none(), "{v}");
        assert_eq!(v["swaps"][0]["payment_hash"], Value::Null);
        assert_eq!(v["swaps"][2]["label"], "autoloop");
        assert!(v["swaps"][1].get("label").is_none(), "{v}");
    }

    #[test]
    fn describes_events() {
        let e = json!({"event": "funding_seen", "txid": "ab", "confirmations": 0, "required": 1});
        assert_eq!(describe(&e), "funding seen: ab (confirmations 0/1)");
        let e = json!({"event": "finished", "state": "claimed", "kind": "succeeded"});
        assert_eq!(describe(&e), "finished: claimed");
        let e = json!({"event": "broadcast", "txid": "cd", "purpose": "cooperative_claim", "fee_sat": 222, "vsize": 111});
        assert_eq!(describe(&e), "claiming: cooperative claim cd (fee 222 sat, 111 vB)");
        let e = json!({"event": "stalled", "reason": "claim: fee too high"});
        assert_eq!(describe(&e), "stalled (trying again): claim: fee too high");
        let e = json!({"event": "proof_of_work", "bits": 20});
        assert_eq!(
            describe(&e),
            "mining the proof of work the offer asks of the request (20 bits)..."
        );
        let e = json!({"event": "proof_of_work", "bits": 20, "millis": 8100});
        assert_eq!(describe(&e), "proof of work done (20 bits, 8100 ms)");
    }
}
