//! `looper-bench`: end-to-end figures on the regtest harness (real looper-node processes).
//!
//! (a) loop-out latency split by phase, blocks mined as soon as a transaction waits;
//! (c) on-chain vbytes per swap (funding share + claim), single and with concurrent swaps;
//! (b) one seller serving N concurrent buyers, each running K swaps at once over its channel
//!     (`--swaps-per-buyer K`): swaps per minute, p50/p99 time to `swap_accept`, the seller's
//!     memory.
//!
//! `cargo build -p looper-node -p looper-regtest && target/debug/looper-bench --buyers 5`
//! `target/debug/looper-bench --swaps 0 --buyers 5 --swaps-per-buyer 100 --amount 20000`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use looper_regtest::harness::{
    find_node_binary, Harness, HarnessConfig, LoopOutReport, NodeHandle, NodeSpec, PeerLimits,
};
use looper_regtest::RegtestChain;

#[derive(Parser)]
#[command(name = "looper-bench", about = "Looper end-to-end benchmarks on the regtest harness")]
struct Cli {
    /// Sequential loop outs for the latency figures (a).
    #[arg(long, default_value_t = 3)]
    swaps: usize,
    /// Concurrent buyers served by one seller (b); 0 skips it.
    #[arg(long, default_value_t = 5)]
    buyers: usize,
    /// Swaps each buyer of (b) starts at once through its API (all over its one channel).
    #[arg(long, default_value_t = 1)]
    swaps_per_buyer: usize,
    /// The fee-rate cap of (b)'s buyers, in sat/vB (`fees.max_fee_rate_sat_vb`): a buyer
    /// refuses a swap it could not claim at its cap, and at the node's default (200) that is
    /// every swap below about 61 000 sat.
    #[arg(long, default_value_t = 50)]
    buyer_max_fee_rate: u64,
    /// The seller's offer timeout in (b), in blocks (`seller.timeout_delta`). With a block every
    /// second, a swap must be paid within about `timeout_delta - 62` seconds (claim margin 20,
    /// route budget 42) or the buyer aborts it (`timeout_too_close`).
    #[arg(long, default_value_t = 144)]
    timeout_delta: u32,
    /// How long (b) waits for its swaps to finish, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Swap amount in satoshis.
    #[arg(long, default_value_t = 100_000)]
    amount: u64,
    /// The looper-node binary (default: next to this executable, then on PATH).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Scratch directory (default: under the system temp dir; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Mines a block whenever the mempool holds a transaction (polls every 50 ms).
fn eager_miner(chain: Arc<RegtestChain>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let c = Arc::clone(&chain);
            let _ = tokio::task::spawn_blocking(move || {
                if c.mempool_size().unwrap_or(0) > 0 {
                    let _ = c.mine(1);
                }
            })
            .await;
        }
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A `/proc/PID/status` field in KiB (`VmRSS:` now, `VmHWM:` the peak).
fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Funding vbytes per swap: each funding transaction's size shared by the swaps it funds.
fn funding_shares(reports: &[LoopOutReport]) -> Vec<u64> {
    let mut per_tx: HashMap<&str, u64> = HashMap::new();
    for r in reports {
        *per_tx.entry(r.funding_txid.as_str()).or_default() += 1;
    }
    reports
        .iter()
        .map(|r| {
            r.funding_vsize.div_ceil(per_tx.get(r.funding_txid.as_str()).copied().unwrap_or(1))
        })
        .collect()
}

async fn latency(cli: &Cli, binary: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let mut config = HarnessConfig::new(dir.join("latency"), binary);
    config.channel_sat = (cli.amount * 10 + 100_000) * cli.swaps.max(1) as u64;
    let h = Harness::start(config).await?;
    let miner = eager_miner(Arc::clone(h.chain()));
    let mut reports = Vec::new();
    for _ in 0..cli.swaps {
        let r = h.loop_out("buyer", cli.amount, cli.amount / 10).await?;
        println!("{r}\n");
        reports.push(r);
    }
    miner.abort();
    h.stop().await;
    println!("## (a) loop-out latency, {} swaps, blocks mined at once (median s)", reports.len());
    let names: Vec<&str> =
        reports.first().map(|r| r.phases.iter().map(|p| p.name).collect()).unwrap_or_default();
    for name in names {
        let v =
            sorted(reports.iter().filter_map(|r| r.phase(name)).map(|d| d.as_secs_f64()).collect());
        println!("| {name} | {:.2} |", pct(&v, 0.5));
    }
    let v = sorted(reports.iter().map(|r| r.to_claim_broadcast.as_secs_f64()).collect());
    println!(
        "| request -> claim broadcast | {:.2} (min {:.2}, max {:.2}) |",
        pct(&v, 0.5),
        pct(&v, 0.0),
        pct(&v, 1.0)
    );
    let shares = funding_shares(&reports);
    println!("## (c) on-chain per swap, single");
    for (r, share) in reports.iter().zip(shares) {
        println!(
            "| {} | funding {} vB ({} outputs) + claim {} vB ({}) = {} vB |",
            &r.swap_id[..8.min(r.swap_id.len())],
            share,
            r.funding_outputs,
            r.claim_vsize,
            r.claim_purpose,
            share + r.claim_vsize
        );
    }
    Ok(())
}

/// Largest channel ldk-node opens without large-channel support (2^24 - 1 sat).
const MAX_CHANNEL_SAT: u64 = 16_777_215;

/// How often the pollers list a buyer's swaps. They only tell when every swap is final (the
/// times come from the event logs): a slow poll leaves the 2 cores to the nodes being measured.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Polls `GET /v1/swaps` of a buyer every [`POLL_EVERY`] until `done` is set and every swap in
/// `expected` is final (or `deadline`): the final state of each swap seen final, by id.
async fn poll_buyer(
    node: &NodeHandle,
    expected: &Mutex<Vec<String>>,
    done: &AtomicBool,
    deadline: Instant,
) -> HashMap<String, String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    loop {
        if let Ok(list) = node.api().swaps().await {
            for s in list {
                if s.status.is_final() {
                    seen.entry(s.swap_id.clone()).or_insert_with(|| s.state.clone());
                }
            }
        }
        let finished = done.load(Ordering::SeqCst)
            && expected
                .lock()
                .map(|ids| ids.iter().all(|id| seen.contains_key(id)))
                .unwrap_or(false);
        if finished || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// One swap of the concurrent run: when its `POST /v1/swaps/out` was made and answered (UNIX
/// milliseconds, the clock the nodes time their events with).
struct Started {
    buyer: usize,
    id: String,
    called_ms: u64,
    answered_ms: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the buyer's event log of a finished swap tells: when (its node's `at_ms`) it handled the
/// seller's `swap_accept`, saw the funding at the confirmations it needs, broadcast its claim and
/// finished; the funding txid and the claim's vsize.
#[derive(Debug, Default)]
struct SwapLog {
    accepted: Option<u64>,
    funded: Option<u64>,
    claim_broadcast: Option<u64>,
    finished: Option<u64>,
    funding_txid: String,
    claim_vsize: u64,
}

async fn swap_log(node: &NodeHandle, id: &str) -> SwapLog {
    let events = node.api().swap_events(id).await.unwrap_or_default();
    let mut log = SwapLog::default();
    for e in &events {
        let at = e[looper_api::EVENT_TIME].as_u64();
        match e["event"].as_str() {
            Some("accepted") => log.accepted = log.accepted.or(at),
            Some("funding_seen") => {
                log.funding_txid = e["txid"].as_str().unwrap_or("").into();
                if e["confirmations"].as_u64() >= e["required"].as_u64() {
                    log.funded = log.funded.or(at);
                }
            }
            Some("broadcast") => {
                log.claim_vsize = e["vsize"].as_u64().unwrap_or(0);
                log.claim_broadcast = log.claim_broadcast.or(at);
            }
            Some("finished") => log.finished = log.finished.or(at),
            _ => {}
        }
    }
    log
}

fn secs_between(a: u64, b: Option<u64>) -> Option<f64> {
    b.map(|b| b.saturating_sub(a) as f64 / 1000.0)
}

async fn concurrent(cli: &Cli, binary: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let n = cli.buyers;
    let k = cli.swaps_per_buyer.max(1);
    let total = n * k;
    let mut config = HarnessConfig::new(dir.join("concurrent"), binary);
    // ldk-node lets at most 10 % of a channel be in flight: room for all K payments at once,
    // within the largest channel it opens.
    config.channel_sat = (cli.amount * k as u64 * 10 + 100_000).min(MAX_CHANNEL_SAT);
    config.wallet_fund_sat = (cli.amount + 10_000) * total as u64 + 1_000_000;
    let mut seller = NodeSpec::seller("seller");
    seller.max_concurrent_swaps = u32::try_from(total).unwrap_or(u32::MAX).max(1);
    seller.offer.timeout_delta = cli.timeout_delta;
    // The seller's answers to one buyer all come from its one key (a buyer counts them over all
    // its swaps; its own requests come from one key per swap): raise the per-sender limits of
    // every node beyond K swaps at once, as in the published runs (the node's defaults stay as
    // they are).
    let limits =
        (k > 1).then(|| PeerLimits::for_swaps_at_once(u32::try_from(k).unwrap_or(u32::MAX)));
    seller.peer_limits = limits;
    config.nodes = vec![seller];
    for i in 0..n {
        let mut buyer = NodeSpec::buyer(format!("buyer{i}"));
        buyer.peer_limits = limits;
        buyer.max_fee_rate_sat_vb = Some(cli.buyer_max_fee_rate);
        config.nodes.push(buyer);
    }
    let setup = Instant::now();
    let h = Harness::start(config).await?;
    println!(
        "harness with 1 seller + {n} buyers ready in {:.1} s (channels {} sat)",
        setup.elapsed().as_secs_f64(),
        (cli.amount * k as u64 * 10 + 100_000).min(MAX_CHANNEL_SAT)
    );
    let seller_pid = h.node("seller")?.pid();
    let rss_before = proc_status_kib(seller_pid, "VmRSS:");
    // Every buyer finds the offer first, so that the timed part is the swaps.
    let mut offers = Vec::new();
    for i in 0..n {
        offers.push(h.best_offer(&format!("buyer{i}"), cli.amount).await?);
    }
    let miner = h.start_miner(Duration::from_secs(1));
    let harness = h;
    let h = &harness;
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs);
    let expected: Vec<Mutex<Vec<String>>> = (0..n).map(|_| Mutex::new(Vec::new())).collect();
    let done = AtomicBool::new(false);
    let start_ms = unix_ms();
    let pollers = futures_join_all(
        (0..n)
            .map(|i| {
                let (expected, done) = (&expected[i], &done);
                async move {
                    let node = h.node(&format!("buyer{i}"))?;
                    anyhow::Ok(poll_buyer(node, expected, done, deadline).await)
                }
            })
            .collect(),
    );
    let calls = async {
        let calls = offers.iter().enumerate().flat_map(|(i, offer)| {
            let expected = &expected[i];
            (0..k).map(move |_| async move {
                let node = h.node(&format!("buyer{i}"))?;
                let called_ms = unix_ms();
                let id = node.api().swap_out(offer, cli.amount, cli.amount / 10).await?;
                let answered_ms = unix_ms();
                if let Ok(mut ids) = expected.lock() {
                    ids.push(id.clone());
                }
                anyhow::Ok(Started { buyer: i, id, called_ms, answered_ms })
            })
        });
        let started = futures_join_all(calls.collect()).await;
        done.store(true, Ordering::SeqCst);
        started
    };
    let (seen, started) = tokio::join!(pollers, calls);
    let seen: Vec<HashMap<String, String>> = seen.into_iter().collect::<Result<_>>()?;
    let rss_after = proc_status_kib(seller_pid, "VmRSS:");
    let rss_peak = proc_status_kib(seller_pid, "VmHWM:");
    drop(miner);

    let mut refused = 0;
    let mut swaps = Vec::new();
    for s in started {
        match s {
            Ok(s) => swaps.push(s),
            Err(e) => {
                refused += 1;
                if refused <= 5 {
                    eprintln!("swap_out failed: {e:#}");
                }
            }
        }
    }
    let mut claimed = Vec::new();
    let mut failed: HashMap<String, usize> = HashMap::new();
    for s in &swaps {
        match seen[s.buyer].get(&s.id).map(String::as_str) {
            Some("Claimed") => claimed.push(s),
            Some(other) => *failed.entry(other.to_string()).or_default() += 1,
            None => *failed.entry("unfinished".into()).or_default() += 1,
        }
    }
    for s in swaps
        .iter()
        .filter(|s| seen[s.buyer].get(&s.id).map(String::as_str) != Some("Claimed"))
        .take(3)
    {
        let node = h.node(&format!("buyer{}", s.buyer))?;
        let events = node.api().swap_events(&s.id).await.unwrap_or_default();
        eprintln!(
            "swap {} of buyer{} not claimed; events: {}",
            s.id,
            s.buyer,
            serde_json::Value::Array(events)
        );
    }
    // The times of each step come from the buyers' event logs, read after the timed part (the
    // pollers only tell when every swap is final).
    let mut logs = Vec::with_capacity(claimed.len());
    for s in &claimed {
        let node = h.node(&format!("buyer{}", s.buyer))?;
        logs.push((*s, swap_log(node, &s.id).await));
    }
    let first = swaps.iter().map(|s| s.called_ms).min().unwrap_or(start_ms);
    let last = logs.iter().filter_map(|(_, l)| l.finished).max().unwrap_or(first);
    let wall = Duration::from_millis(last.saturating_sub(first));
    let col = |f: &dyn Fn(&Started, &SwapLog) -> Option<f64>| {
        sorted(logs.iter().filter_map(|(s, l)| f(s, l)).collect())
    };
    let api_call = col(&|s, _| secs_between(s.called_ms, Some(s.answered_ms)));
    let accept_call = col(&|s, l| secs_between(s.called_ms, l.accepted));
    let accept_sent = col(&|s, l| secs_between(s.answered_ms, l.accepted));
    let funded = col(&|s, l| secs_between(s.called_ms, l.funded));
    let broadcast = col(&|s, l| secs_between(s.called_ms, l.claim_broadcast));
    let done_at = col(&|s, l| secs_between(s.called_ms, l.finished));
    let p =
        |v: &[f64]| format!("{:.2} s / {:.2} s / {:.2} s", pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));

    println!(
        "## (b) one seller, {n} buyers x {k} concurrent swaps of {} sat (blocks every 1 s, \
         timeout delta {} blocks)",
        cli.amount, cli.timeout_delta
    );
    println!(
        "| swaps claimed | {} of {total} ({refused} refused by the API, not claimed: {failed:?}) |",
        claimed.len()
    );
    println!("| wall time, first request -> last claimed | {:.1} s |", wall.as_secs_f64());
    println!(
        "| swaps per minute | {:.0} |",
        claimed.len() as f64 / wall.as_secs_f64().max(0.001) * 60.0
    );
    println!("| (p50 / p99 / max) | |");
    println!("| `POST /v1/swaps/out` answered (request sent) | {} |", p(&api_call));
    println!("| time to swap_accept, from the API call | {} |", p(&accept_call));
    println!("| time to swap_accept, from the request sent | {} |", p(&accept_sent));
    println!("| request -> funded and confirmed | {} |", p(&funded));
    println!("| request -> claim broadcast | {} |", p(&broadcast));
    println!("| request -> claimed (confirmed) | {} |", p(&done_at));
    let mib = |k: Option<u64>| k.map(|k| k / 1024).unwrap_or(0);
    println!(
        "| seller RSS before / after / peak | {} / {} / {} MiB |",
        mib(rss_before),
        mib(rss_after),
        mib(rss_peak)
    );

    // On-chain figures, read after the timed part.
    let mut per_tx: HashMap<String, u64> = HashMap::new();
    let mut claim_vsizes = Vec::new();
    for (_, l) in &logs {
        *per_tx.entry(l.funding_txid.clone()).or_default() += 1;
        claim_vsizes.push(l.claim_vsize);
    }
    let mut funding_vbytes = 0u64;
    for txid in per_tx.keys().filter(|t| !t.is_empty()) {
        let mut r = LoopOutReport { funding_txid: txid.clone(), ..LoopOutReport::default() };
        r.fill_chain_data(&h.chain().esplora_url()).await;
        funding_vbytes += r.funding_vsize;
    }
    let swaps_n = claimed.len().max(1) as f64;
    let mean_share = funding_vbytes as f64 / swaps_n;
    let mean_claim = claim_vsizes.iter().sum::<u64>() as f64 / swaps_n;
    println!(
        "## (c) on-chain per swap, {} swaps in {} funding transactions",
        claimed.len(),
        per_tx.len()
    );
    println!(
        "| mean funding share + claim | {mean_share:.0} + {mean_claim:.0} = {:.0} vB |",
        mean_share + mean_claim
    );
    harness.stop().await;
    Ok(())
}

/// Runs futures concurrently on the current task (no extra crate).
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let binary = cli
        .node_bin
        .clone()
        .or_else(find_node_binary)
        .filter(|p| p.is_file())
        .context("looper-node binary not found: build it: cargo build -p looper-node")?;
    let (dir, created) = match &cli.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("looper-bench-{}", std::process::id())), true),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        if cli.swaps > 0 {
            latency(&cli, &binary, &dir).await?;
        }
        if cli.buyers > 0 {
            concurrent(&cli, &binary, &dir).await?;
        }
        anyhow::Ok(())
    });
    if created {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
