//! `looper-bench`: end-to-end figures on the regtest harness (real looper-node processes).
//!
//! (a) loop-out latency split by phase, blocks mined as soon as a transaction waits;
//! (c) on-chain vbytes per swap (funding share + claim), single and with concurrent swaps;
//! (b) one seller serving N concurrent buyers: swaps per minute, p50/p99 time to `swap_accept`,
//!     the seller's memory.
//!
//! `cargo build -p looper-node -p looper-regtest && target/debug/looper-bench --buyers 5`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use looper_regtest::harness::{
    find_node_binary, report_follow, Harness, HarnessConfig, LoopOutReport, NodeSpec,
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

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
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

async fn concurrent(cli: &Cli, binary: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let n = cli.buyers;
    let mut config = HarnessConfig::new(dir.join("concurrent"), binary);
    config.channel_sat = cli.amount * 10 + 100_000;
    config.wallet_fund_sat = (cli.amount + 10_000) * n as u64 + 1_000_000;
    let mut seller = NodeSpec::seller("seller");
    seller.max_concurrent_swaps = (n as u32).max(1);
    config.nodes = vec![seller];
    for i in 0..n {
        config.nodes.push(NodeSpec::buyer(format!("buyer{i}")));
    }
    let setup = Instant::now();
    let h = Harness::start(config).await?;
    println!("harness with 1 seller + {n} buyers ready in {:.1} s", setup.elapsed().as_secs_f64());
    let rss_before = rss_kib(h.node("seller")?.pid());
    // Every buyer finds the offer first, so that the timed part is the swaps.
    let mut offers = Vec::new();
    for i in 0..n {
        offers.push(h.best_offer(&format!("buyer{i}"), cli.amount).await?);
    }
    let miner = h.start_miner(Duration::from_secs(1));
    let start = Instant::now();
    let harness = h;
    let h = &harness;
    let tasks = offers.into_iter().enumerate().map(|(i, offer)| async move {
        let node = h.node(&format!("buyer{i}"))?;
        let t = Instant::now();
        let id = node.api().swap_out(&offer, cli.amount, cli.amount / 10).await?;
        let mut r = report_follow(node, &id, Duration::from_secs(600)).await?;
        // Phases are timed from the request; add the time the request call took.
        r.total += t.elapsed().saturating_sub(r.total);
        r.fill_chain_data(&h.chain().esplora_url()).await;
        anyhow::Ok(r)
    });
    let results = futures_join_all(tasks.collect()).await;
    let wall = start.elapsed();
    let rss_after = rss_kib(h.node("seller")?.pid());
    drop(miner);
    let mut reports = Vec::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(r) => reports.push(r),
            Err(e) => {
                failed += 1;
                eprintln!("swap failed: {e:#}");
            }
        }
    }
    let accept = sorted(
        reports
            .iter()
            .filter_map(|r| r.phase("request -> accepted (nostr round trip)"))
            .map(|d| d.as_secs_f64())
            .collect(),
    );
    println!("## (b) one seller, {n} concurrent buyers (blocks every 1 s)");
    println!("| swaps claimed | {} of {n} ({failed} failed) |", reports.len());
    println!("| wall time, all claimed | {:.1} s |", wall.as_secs_f64());
    println!(
        "| swaps per minute | {:.1} |",
        reports.len() as f64 / wall.as_secs_f64().max(0.001) * 60.0
    );
    println!(
        "| time to swap_accept p50 / p99 | {:.2} s / {:.2} s |",
        pct(&accept, 0.5),
        pct(&accept, 0.99)
    );
    println!(
        "| seller RSS before / after | {} / {} MiB |",
        rss_before.map(|k| k / 1024).unwrap_or(0),
        rss_after.map(|k| k / 1024).unwrap_or(0)
    );
    let shares = funding_shares(&reports);
    let txs: std::collections::HashSet<&str> =
        reports.iter().map(|r| r.funding_txid.as_str()).collect();
    let mean_share = shares.iter().sum::<u64>() as f64 / shares.len().max(1) as f64;
    let mean_claim =
        reports.iter().map(|r| r.claim_vsize).sum::<u64>() as f64 / reports.len().max(1) as f64;
    println!(
        "## (c) on-chain per swap, {} swaps in {} funding transactions",
        reports.len(),
        txs.len()
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
