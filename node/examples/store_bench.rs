//! Figures for `docs/benchmarks.md` (issue 13 item 9): how fast the swap store commits when many
//! swaps persist at once, as a seller answering a burst of requests does (each `put_swap` is a
//! durable redb commit: persist before act).
//!
//! `cargo run -p looper-node --example store_bench -- [THREADS] [WRITES_PER_THREAD]`
//! (default 64 threads, the engine's concurrent message handlers, and 50 writes each).

use std::sync::Arc;
use std::time::{Duration, Instant};

use looper_node::store::{RedbStore, SwapRecord, SwapRole, SwapStatus, SwapStore};
use looper_protocol::SwapId;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn record(thread: usize, n: usize) -> SwapRecord {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(thread as u64).to_le_bytes());
    id[8..16].copy_from_slice(&(n as u64).to_le_bytes());
    SwapRecord {
        id: SwapId(id),
        role: SwapRole::Seller,
        state: "accepted".into(),
        status: SwapStatus::Pending,
        payment_hash: None,
        created_at: 1_000,
        updated_at: 1_000,
        // About the size of a seller record in `Accepted`.
        data: vec![b'x'; 2_500],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn run(store: &Arc<RedbStore>, threads: usize, writes: usize) -> Res<()> {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(store);
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut lat = Vec::with_capacity(writes);
                for n in 0..writes {
                    let at = Instant::now();
                    store.put_swap(&record(t, n)).map_err(|e| e.to_string())?;
                    lat.push(at.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| "a writer panicked")??);
    }
    let wall = started.elapsed();
    all.sort();
    println!(
        "| {threads} | {} | {:.2} s | {:.0} | {:.1} ms | {:.1} ms |",
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64(),
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let writes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(RedbStore::open(&dir.path().join("looper.redb"))?);
    println!("| writers | commits | wall time | commits/s | latency p50 | latency p99 |");
    println!("|---|---|---|---|---|---|");
    run(&store, 1, writes)?;
    run(&store, threads, writes)?;
    Ok(())
}
