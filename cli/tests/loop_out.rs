//! `looper` driving a real loop out on the regtest harness: a seller and a buyer as
//! `looper-node` processes, funded, with a buyer -> seller channel, blocks from a background
//! miner. Asserts on `--json` (offers, out, swaps, swap by id and by payment hash, wallet
//! balance, channels, swap monitor) and on snapshots of the human output of `looper out` and
//! `looper swap ID` with the varying parts (txids, ids, heights, times, fees) replaced by
//! placeholders. Then the Lightning operations on the real channels: peers, a second channel, a
//! cooperative and a force close, disconnecting and connecting a peer.
//!
//! Runs the `looper-node` binary of the same target dir (`cargo test` of the whole workspace
//! builds it; `cargo test -p looper-cli` alone does not, so run `cargo build -p looper-node`
//! after changing the node; the test builds it when it is missing) or `LOOPER_NODE_BIN`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{looper, snapshot, Run};
use looper_regtest::harness::{find_node_binary, wait_until, Harness, HarnessConfig, NodeSpec};
use serde_json::Value;

const AMOUNT: &str = "100000";
const AMOUNT_SAT: u64 = 100_000;
const TIMEOUT: Duration = Duration::from_secs(180);

/// `looper --rpc-url URL --token-file FILE ARGS...` against one node, off the async runtime.
#[derive(Clone)]
struct Cli {
    url: String,
    token: PathBuf,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = vec![
            "--rpc-url".into(),
            self.url.clone(),
            "--token-file".into(),
            self.token.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            looper(&refs)
        })
        .await
        .unwrap()
    }

    /// Runs and checks exit code 0.
    async fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "looper {args:?}: {r:?}");
        r
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(&all).await.json()
    }
}

/// The JSON lines of a streaming command.
fn lines(r: &Run) -> Vec<Value> {
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// Replaces every maximal run of at least `min_len` lower-case hex digits by `what`.
fn replace_hex(s: &str, min_len: usize, what: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= min_len {
            out.push_str(what);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Replaces the number (digits and `,`) right after each occurrence of `marker` by `what`.
fn replace_after(s: &str, marker: &str, what: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        let (head, tail) = rest.split_at(i + marker.len());
        out.push_str(head);
        let end = tail.find(|c: char| !(c.is_ascii_digit() || c == ',')).unwrap_or(tail.len());
        if end > 0 {
            out.push_str(what);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Makes a human output comparable across runs. Placeholders: `<HEX>` txids, swap ids,
/// payment hashes; `<SHORT>` their shortened form; `<T>` elapsed times; `<H>` block heights
/// and CLTV budgets (they follow the chain's tip); `<K>` confirmation counts and `<SEQ>` event
/// numbers (how many `funding seen` steps show depends on when blocks come: repeated lines are
/// kept once); `<TIME>` dates. Amounts stay: the harness fixes the offer and the regtest fee rate.
fn normalize(s: &str) -> String {
    let mut s = shorten_marks(&replace_hex(s, 32, "<HEX>"));
    for (marker, what) in
        [("timeout at height ", "<H>"), ("route CLTV budget ", "<H>"), ("(confirmations ", "<K>")]
    {
        s = replace_after(&s, marker, what);
    }
    let mut out: Vec<String> = Vec::new();
    for line in s.lines() {
        let mut l = line.to_string();
        if l.starts_with('[') {
            if let Some(end) = l.find(']') {
                l = format!("[<T>]{}", &l[end + 1..]);
            }
        }
        if let Some(i) = l.find(", took ") {
            l = format!("{}, took <T>", &l[..i]);
        }
        if l.starts_with("created:") || l.starts_with("updated:") {
            let label = l.split(':').next().unwrap_or_default().to_string();
            l = format!("{label}: <TIME>");
        }
        let trimmed = l.trim_start();
        if l.starts_with("  ") && trimmed.starts_with(|c: char| c.is_ascii_digit()) {
            if let Some(i) = trimmed.find("  ") {
                l = format!("  <SEQ>{}", &trimmed[i..]);
            }
            // The event's time ("2026-11-27 21:17:23 UTC  ").
            if let Some(i) = l.find(" UTC  ") {
                l = format!("  <SEQ>  <AT>{}", &l[i + 4..]);
            }
        }
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// `0123abcd..ef01` (from `short()`) -> `<SHORT>`.
fn shorten_marks(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if i + 14 <= b.len()
            && b[i..i + 8].iter().all(|c| c.is_ascii_hexdigit())
            && &b[i + 8..i + 10] == b".."
            && b[i + 10..i + 14].iter().all(|c| c.is_ascii_hexdigit())
        {
            out.push_str("<SHORT>");
            i += 14;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The `looper-node` binary: `LOOPER_NODE_BIN`, else next to this test's target dir (or on
/// `PATH`); when there is none, built with `cargo build -p looper-node` (another package's
/// binary is not built for this crate's tests by `cargo test -p looper-cli`).
fn node_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LOOPER_NODE_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = find_node_binary() {
        return Ok(p);
    }
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "looper-node", "--bin", "looper-node"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build -p looper-node")?;
    ensure!(status.success(), "cargo build -p looper-node failed: {status}");
    find_node_binary().context(
        "looper-node binary not found next to the test executable or on PATH: build it: cargo build -p looper-node",
    )
}

fn cli_for(h: &Harness, name: &str) -> Result<Cli> {
    let n = h.node(name)?;
    Ok(Cli { url: n.api_url(), token: n.token_file() })
}

/// The buyer's channels (`looper --json ln channels`).
async fn channels(cli: &Cli) -> Vec<Value> {
    cli.json(&["ln", "channels"]).await["channels"].as_array().cloned().unwrap_or_default()
}

/// What the buyer's Lightning node can spend on chain, after a sync.
async fn ln_spendable(cli: &Cli) -> Option<u64> {
    cli.run(&["sync"]).await;
    cli.json(&["ln", "balance"]).await["onchain_spendable_sat"].as_u64()
}

/// After the swaps, with blocks coming: the buyer's peers (the seller, with its channel; not
/// disconnected while it has one), a second channel, a cooperative close of the first (its funds
/// come back to the Lightning node's on-chain wallet), a force close of the second, then the
/// seller disconnected and connected again.
async fn lightning_operations(h: &Harness, buyer: &Cli) -> Result<()> {
    let seller_node = h.node("seller")?;
    let seller_id = seller_node.info().expect("seller info").ln_node_id.clone();
    let seller_addr = seller_node.ln_addr().to_string();
    let seller = cli_for(h, "seller")?;

    let peers = buyer.json(&["ln", "peers"]).await;
    let peer = peers["peers"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["node_id"] == seller_id.as_str()))
        .cloned()
        .with_context(|| format!("the seller is not a peer: {peers:#}"))?;
    assert_eq!(
        (&peer["connected"], &peer["persisted"], &peer["channels"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::from(1)),
        "{peer:#}"
    );
    let r = buyer.ok(&["ln", "peers"]).await;
    assert!(r.stdout.starts_with("NODE ID") && r.stdout.contains(&seller_id), "{r:?}");
    let r = buyer.run(&["ln", "disconnect", &seller_id]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("close its channels first"), "{r:?}");

    // A second channel, to force-close.
    let opened = buyer
        .json(&[
            "ln",
            "open",
            "--node-id",
            &seller_id,
            "--address",
            &seller_addr,
            "--amount",
            "300000",
            "--yes",
        ])
        .await;
    let user_channel_id = opened["user_channel_id"].as_str().unwrap().to_string();
    let chans = wait_until("the second channel usable", TIMEOUT, || async {
        let c = channels(buyer).await;
        (c.len() == 2 && c.iter().all(|c| c["usable"] == true)).then_some(c)
    })
    .await?;
    let first = chans.iter().find(|c| c["capacity_sat"] != 300_000).unwrap();
    let first_id = first["channel_id"].as_str().unwrap().to_string();
    let first_out_sat = first["outbound_msat"].as_u64().unwrap() / 1000;

    // Cooperative close of the first, named as `ln channels` shows it.
    let before = ln_spendable(buyer).await.context("ln balance")?;
    let short_form = format!("{}..{}", &first_id[..8], &first_id[60..]);
    let r = buyer.ok(&["ln", "close", &short_form]).await;
    assert!(
        r.stdout.starts_with(&format!(
            "closing channel {first_id} with {seller_id} cooperatively: the funds come back"
        )),
        "{r:?}"
    );
    let after = wait_until("the first channel's funds back on chain", TIMEOUT, || async {
        let b = ln_spendable(buyer).await?;
        let open = channels(buyer).await.iter().any(|c| c["channel_id"] == first_id.as_str());
        (!open && b >= before + first_out_sat - 5_000).then_some(b)
    })
    .await
    .with_context(|| format!("spendable before {before}, outbound {first_out_sat}"))?;
    ensure!(after > before);

    // Force close of the second, by its user channel id.
    let closed = buyer.json(&["ln", "close", &user_channel_id, "--force", "--yes"]).await;
    assert_eq!(closed["force"], true, "{closed:#}");
    assert_eq!(closed["user_channel_id"], user_channel_id.as_str(), "{closed:#}");
    assert_eq!(closed["counterparty"], seller_id.as_str(), "{closed:#}");
    assert!(closed["to_self_delay_blocks"].as_u64().is_some_and(|d| d > 0), "{closed:#}");
    wait_until("no channel left on either side", TIMEOUT, || async {
        (channels(buyer).await.is_empty() && channels(&seller).await.is_empty()).then_some(())
    })
    .await?;

    // No channel left: the seller is forgotten (its last channel closed), can be connected,
    // disconnected, and connected again, remembered this time.
    let target = format!("{seller_id}@{seller_addr}");
    let r = buyer.ok(&["ln", "connect", &target]).await;
    assert_eq!(r.stdout, format!("connected to {target}\n"));
    let r = buyer.ok(&["ln", "disconnect", &seller_id]).await;
    assert_eq!(r.stdout, format!("disconnected {seller_id}\n"));
    wait_until("the seller gone from the peers", TIMEOUT, || async {
        let v = buyer.json(&["ln", "peers"]).await;
        (!v["peers"].as_array()?.iter().any(|p| p["node_id"] == seller_id.as_str())).then_some(())
    })
    .await?;
    let peer = buyer.json(&["ln", "connect", &target, "--persist"]).await;
    assert_eq!(
        (&peer["node_id"], &peer["connected"], &peer["persisted"], &peer["channels"]),
        (&Value::from(seller_id.as_str()), &Value::Bool(true), &Value::Bool(true), &Value::from(0)),
        "{peer:#}"
    );
    let r = buyer.ok(&["ln", "peers"]).await;
    assert!(r.stdout.contains(&seller_id) && r.stdout.contains("yes"), "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loop_out_with_the_cli() -> Result<()> {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir: &Path = tmp.path();
    let mut config = HarnessConfig::new(dir, node_binary()?);
    config.nodes = vec![NodeSpec::seller("seller"), NodeSpec::buyer("buyer")];
    let h = Harness::start(config).await?;
    let buyer = cli_for(&h, "buyer")?;
    let seller_nostr = h.node("seller")?.info().expect("seller info").nostr_pubkey.clone();

    // offers: the seller's offer, best first, with its total cost for the amount.
    let offers = wait_until("the seller's offer via looper offers", TIMEOUT, || {
        let buyer = buyer.clone();
        async move {
            let v = buyer.json(&["offers", "--amount", AMOUNT]).await;
            let list = v["offers"].as_array()?;
            list.iter().any(|o| o["offer_id"] == "seller-offer").then_some(v)
        }
    })
    .await?;
    assert_eq!(offers["amount_sat"], AMOUNT_SAT);
    let first = &offers["offers"][0];
    // The harness's offer (`seller-offer`) or the one the seller node serves from its config.
    assert_eq!(first["seller"], seller_nostr.as_str(), "{offers:#}");
    assert!(first["offer"].is_object(), "{offers:#}");
    let q = &first["quote"];
    let total = q["total_cost_sat"].as_u64().unwrap();
    assert_eq!(
        total,
        q["swap_fee_sat"].as_u64().unwrap()
            + q["funding_fee_sat"].as_u64().unwrap()
            + q["claim_fee_sat"].as_u64().unwrap(),
        "{q:#}"
    );
    let costs: Vec<u64> = offers["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["quote"]["total_cost_sat"].as_u64().unwrap())
        .collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "best first: {costs:?}");

    let balance_before = buyer.json(&["wallet", "balance"]).await["total_sat"].as_u64().unwrap();

    // out --json: quote, started, events, result.
    let miner = h.start_miner(Duration::from_secs(1));
    let r = buyer.ok(&["--json", "out", "--amount", AMOUNT, "--best", "--yes"]).await;
    let stream = lines(&r);
    assert_eq!(stream[0]["type"], "quote", "{}", r.stdout);
    assert_eq!(stream[0]["seller"], seller_nostr.as_str());
    assert_eq!(stream[0]["quote"]["amount_sat"], AMOUNT_SAT);
    assert_eq!(stream[1]["type"], "started");
    let swap_id = stream[1]["swap_id"].as_str().unwrap().to_string();
    let result = stream.last().unwrap();
    assert_eq!(result["type"], "result", "{}", r.stdout);
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["state"], "Claimed");
    assert_eq!(result["swap_id"], swap_id.as_str());
    let claim_txid = result["claim_txid"].as_str().unwrap().to_string();
    assert_eq!(claim_txid.len(), 64, "{result}");
    let events: Vec<&Value> = stream.iter().filter(|l| l["type"] == "event").collect();
    let last_event = &events.last().unwrap()["event"];
    assert_eq!(last_event["event"], "finished", "{}", r.stdout);
    assert_eq!(last_event["kind"], "succeeded");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"]["event"].as_str()).collect();
    for k in ["accepted", "funding_seen", "paying", "paid", "broadcast", "finished"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    let claim_fee = result["claim_fee_sat"].as_u64().unwrap();
    assert_eq!(
        result["total_cost_sat"].as_u64().unwrap(),
        result["swap_fee_sat"].as_u64().unwrap()
            + result["funding_fee_sat"].as_u64().unwrap()
            + claim_fee,
        "{result}"
    );

    // swaps, swap ID, swap PAYMENT_HASH.
    let swaps = buyer.json(&["swaps"]).await;
    let list = swaps["swaps"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{swaps:#}");
    assert_eq!(list[0]["swap_id"], swap_id.as_str());
    assert_eq!(list[0]["role"], "buyer");
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(list[0]["state"], "Claimed");
    let one = buyer.json(&["swap", &swap_id]).await;
    assert_eq!(one["state"], "Claimed", "{one:#}");
    assert_eq!(one["swap_id"], swap_id.as_str());
    assert!(one["record"].is_object(), "{one:#}");
    let hash = one["payment_hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    let by_hash = buyer.json(&["swap", &hash]).await;
    assert_eq!(by_hash["swap_id"], swap_id.as_str());
    assert_eq!(by_hash["state"], "Claimed");

    // wallet balance: up by the amount less the claim fee once the claim is seen.
    let want = balance_before + AMOUNT_SAT - claim_fee;
    let got = wait_until("the claim in the buyer's wallet", TIMEOUT, || {
        let buyer = buyer.clone();
        async move {
            buyer.run(&["sync"]).await;
            let b = buyer.json(&["wallet", "balance"]).await["total_sat"].as_u64()?;
            (b == want).then_some(b)
        }
    })
    .await
    .with_context(|| format!("before {balance_before}, want {want}"))?;
    ensure!(got > balance_before);

    // ln channels: the buyer's channel to the seller, usable, with less outbound now.
    let channels = buyer.json(&["ln", "channels"]).await;
    let chans = channels["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 1, "{channels:#}");
    assert_eq!(
        chans[0]["counterparty"],
        h.node("seller")?.info().expect("seller info").ln_node_id.as_str()
    );
    assert_eq!(chans[0]["usable"], true);

    // ln payment: the swap's invoice, paid by the buyer, with its proof of payment.
    let swap = buyer.json(&["swap", &swap_id]).await;
    let hash = swap["payment_hash"].as_str().unwrap().to_string();
    let payment = buyer.json(&["ln", "payment", &hash]).await;
    assert_eq!(payment["direction"], "outbound", "{payment:#}");
    assert_eq!(payment["status"], "succeeded", "{payment:#}");
    assert!(payment["preimage"].as_str().is_some_and(|p| p.len() == 64), "{payment:#}");
    let r = buyer.run(&["ln", "payment", "zz"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("invalid payment hash"), "{}", r.stderr);

    // swap export: to stdout, to a new file of mode 0600 (never overwritten); the seller's export
    // of the same swap has the same HTLC and preimage, and the funding outpoint.
    let export = buyer.json(&["swap", "export", &swap_id]).await;
    assert_eq!(export["role"], "buyer", "{export:#}");
    assert_eq!(export["payment_hash"], hash.as_str());
    assert_eq!(export["preimage"], payment["preimage"], "{export:#}");
    assert_eq!(export["key"]["leaf"], "claim");
    assert_eq!(export["htlc"]["claim_leaf"]["control_block"].as_str().map(str::len), Some(130));
    let file = dir.join("export.json");
    let file_arg = file.to_str().unwrap();
    let r = buyer.ok(&["swap", "export", &swap_id, "--out", file_arg]).await;
    assert!(r.stdout.contains("exported to") && r.stdout.contains("preimage"), "{r:?}");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    assert_eq!(written, export);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    }
    let r = buyer.run(&["swap", "export", &swap_id, "--out", file_arg]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("the file exists"), "{r:?}");
    let seller = cli_for(&h, "seller")?;
    let sold = seller.json(&["swap", "export", &hash]).await;
    assert_eq!(sold["role"], "seller", "{sold:#}");
    assert_eq!(sold["key"]["leaf"], "refund");
    assert_eq!(sold["preimage"], export["preimage"]);
    assert_eq!(sold["htlc"]["output_key"], export["htlc"]["output_key"]);
    assert_eq!(sold["htlc"]["refund_leaf"], export["htlc"]["refund_leaf"]);
    assert!(sold["htlc"]["outpoint"].as_str().is_some_and(|o| o.len() > 65), "{sold:#}");

    // swap monitor on a finished swap: its history, exit 0.
    let r = buyer.ok(&["swap", "monitor", &swap_id]).await;
    assert_eq!(r.stdout.lines().count(), events.len(), "{}", r.stdout);
    assert!(r.stdout.ends_with("] finished: claimed\n"), "{}", r.stdout);
    let r = buyer.ok(&["--json", "swap", "monitor", &swap_id]).await;
    let mon = lines(&r);
    assert_eq!(mon.len(), events.len(), "{}", r.stdout);
    assert_eq!(mon.last().unwrap()["event"]["event"], "finished");

    // Human output: a second loop out, of the harness's offer by id (snapshot), and `swap ID` of the first one.
    let r = buyer
        .ok(&[
            "out",
            "--amount",
            AMOUNT,
            "--offer",
            "seller-offer",
            "--max-total-fee",
            "2000",
            "-y",
        ])
        .await;
    assert!(r.stderr.is_empty(), "{r:?}");
    snapshot("out.txt", &normalize(&r.stdout));
    let r = buyer.ok(&["swap", &swap_id]).await;
    snapshot("swap_claimed.txt", &normalize(&r.stdout));
    let r = buyer.ok(&["swap", &hash]).await;
    snapshot("swap_claimed.txt", &normalize(&r.stdout));
    let swaps = buyer.json(&["swaps"]).await;
    assert_eq!(swaps["swaps"].as_array().map(Vec::len), Some(2), "{swaps:#}");

    lightning_operations(&h, &buyer).await?;
    miner.stop();

    h.stop().await;
    eprintln!("loop_out_with_the_cli took {:?}", t0.elapsed());
    Ok(())
}
