//! Benchmarks of the embedded regtest chain: mempool acceptance rate, block rate with N
//! transactions, and Esplora request latency.
//!
//! `cargo run --release -p looper-regtest --bin regtest-bench [-- --txs 1000 --requests 1000]`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use clap::Parser;
use looper_regtest::{sign_p2wpkh, test_key, RegtestChain};

#[derive(Parser)]
#[command(about = "Benchmarks of the embedded regtest chain")]
struct Args {
    /// Transactions per mempool/block round.
    #[arg(long, default_value_t = 1000)]
    txs: usize,
    /// Esplora requests per endpoint.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Empty blocks mined for the empty-block rate.
    #[arg(long, default_value_t = 200)]
    blocks: u32,
}

/// Minimal keep-alive HTTP/1.1 GET client (the bench has no HTTP client dependency).
struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Self { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    fn get(&mut self, path: &str) -> anyhow::Result<Vec<u8>> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
        )?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        if !status.contains(" 200 ") {
            bail!("{path}: {}", status.trim());
        }
        let mut len = None;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse::<usize>()?);
                }
            }
        }
        let len = len.ok_or_else(|| anyhow!("{path}: no content-length"))?;
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

/// One transaction splitting `prev` into `n` equal P2WPKH outputs to `spk`.
fn fan_out(
    key: &bitcoin::secp256k1::SecretKey,
    prev: OutPoint,
    prev_out: TxOut,
    spk: &ScriptBuf,
    n: usize,
) -> anyhow::Result<Transaction> {
    let fee = 200 + 31 * n as u64;
    let each = (prev_out.value.to_sat() - fee) / n as u64;
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: prev,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: (0..n)
            .map(|_| TxOut { value: Amount::from_sat(each), script_pubkey: spk.clone() })
            .collect(),
    };
    sign_p2wpkh(&mut tx, key, &[(prev, prev_out)])?;
    Ok(tx)
}

fn spends(
    key: &bitcoin::secp256k1::SecretKey,
    parent: &Transaction,
    spk: &ScriptBuf,
) -> anyhow::Result<Vec<Transaction>> {
    let txid = parent.compute_txid();
    parent
        .output
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let prev = OutPoint::new(txid, i as u32);
            let mut tx = Transaction {
                version: Version::TWO,
                lock_time: LockTime::ZERO,
                input: vec![TxIn {
                    previous_output: prev,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                }],
                output: vec![TxOut {
                    value: out.value - Amount::from_sat(200),
                    script_pubkey: spk.clone(),
                }],
            };
            sign_p2wpkh(&mut tx, key, &[(prev, out.clone())])?;
            Ok(tx)
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("looper-regtest-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = run(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let t = Instant::now();
    let chain = RegtestChain::start(dir).context("starting the chain")?;
    println!("start + premine 101 blocks: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

    // Empty blocks.
    let t = Instant::now();
    chain.mine(args.blocks)?;
    let dt = t.elapsed().as_secs_f64();
    println!(
        "empty blocks: {} in {:.3} s = {:.0} blocks/s",
        args.blocks,
        dt,
        f64::from(args.blocks) / dt
    );

    let (key, addr) = test_key("bench")?;
    let spk = addr.script_pubkey();
    let n = args.txs;
    for round in [n, n / 10] {
        if round == 0 {
            continue;
        }
        let funding = chain.fund_address(&addr, Amount::from_sat(round as u64 * 100_000))?;
        // `fund_address` pays the requested amount in output 0.
        let prev_out =
            TxOut { value: Amount::from_sat(round as u64 * 100_000), script_pubkey: spk.clone() };
        let vout = 0;
        let fan = fan_out(&key, OutPoint::new(funding, vout), prev_out, &spk, round)?;
        chain.submit_transaction(&fan)?;
        chain.mine(1)?;
        let txs = spends(&key, &fan, &spk)?;

        let t = Instant::now();
        for tx in &txs {
            chain.submit_transaction(tx)?;
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "mempool acceptance (1-in/1-out P2WPKH, kernel script verification): {} txs in {:.3} s = {:.0} tx/s",
            round,
            dt,
            round as f64 / dt
        );
        let t = Instant::now();
        chain.mine(1)?;
        let dt = t.elapsed().as_secs_f64();
        println!(
            "block with {} txs (build + kernel validation + index): {:.1} ms = {:.1} blocks/s",
            round,
            dt * 1e3,
            1.0 / dt
        );
        if chain.mempool_size()? != 0 {
            bail!("mempool not empty after mining");
        }
    }

    // Esplora latency over one keep-alive connection.
    let tip = chain.tip_hash()?;
    let (_, small) = test_key("bench-small")?;
    let small_tx = chain.fund_address(&small, Amount::from_sat(50_000))?;
    let small_sh = looper_regtest::script_hash(&small.script_pubkey());
    let busy_sh = looper_regtest::script_hash(&spk);
    let heavy = (args.requests / 10).max(1);
    let endpoints = [
        ("/blocks/tip/height", "/blocks/tip/height".to_string(), args.requests),
        ("/block/:hash/header", format!("/block/{tip}/header"), args.requests),
        ("/block/:hash/status", format!("/block/{tip}/status"), args.requests),
        ("/fee-estimates", "/fee-estimates".to_string(), args.requests),
        ("/tx/:txid", format!("/tx/{small_tx}"), args.requests),
        ("/tx/:txid/merkle-proof", format!("/tx/{small_tx}/merkle-proof"), args.requests),
        ("/scripthash/:h/txs (1 tx)", format!("/scripthash/{small_sh}/txs"), args.requests),
        ("/scripthash/:h/utxo (1 utxo)", format!("/scripthash/{small_sh}/utxo"), args.requests),
        ("/scripthash/:h/txs (busy, 25 of 1.1k txs)", format!("/scripthash/{busy_sh}/txs"), heavy),
        ("/scripthash/:h/utxo (busy, 1.1k utxos)", format!("/scripthash/{busy_sh}/utxo"), heavy),
    ];
    let mut http = Http::connect(chain.listen_addr())?;
    for (label, path, count) in &endpoints {
        let mut lat = Vec::with_capacity(*count);
        let mut bytes = 0;
        for _ in 0..*count {
            let t = Instant::now();
            bytes = http.get(path)?.len();
            lat.push(t.elapsed());
        }
        lat.sort_unstable();
        println!(
            "GET {label:<42} p50 {:>8.1} us  p99 {:>8.1} us  ({bytes} bytes, {count} requests)",
            percentile(&lat, 0.5).as_secs_f64() * 1e6,
            percentile(&lat, 0.99).as_secs_f64() * 1e6,
        );
    }
    chain.shutdown();
    Ok(())
}
