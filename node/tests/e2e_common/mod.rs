//! What the end-to-end tests on the regtest harness share (`e2e_swaps.rs`, `e2e_late_payment.rs`).
#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use looper_regtest::harness::{wait_until, Harness};
use serde_json::{json, Value};

/// Swap amount of every test swap.
pub const AMOUNT: u64 = 100_000;
/// The buyer's fee limit.
pub const MAX_FEE: u64 = 10_000;

/// A test directory, removed at the end unless kept.
pub struct Scratch {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// LOOPER_KEEP_TESTDIR=1 keeps the directory (node logs, data dirs).
pub fn scratch() -> Result<Scratch> {
    let tmp = tempfile::tempdir()?;
    if std::env::var_os("LOOPER_KEEP_TESTDIR").is_some() {
        let dir = tmp.keep();
        eprintln!("test dir (kept): {}", dir.display());
        Ok(Scratch { dir, _tmp: None })
    } else {
        Ok(Scratch { dir: tmp.path().to_path_buf(), _tmp: Some(tmp) })
    }
}

/// `node`'s state of the swap (empty when the node or the swap cannot be read).
pub async fn state_of(h: &Harness, node: &str, swap_id: &str) -> String {
    match h.node(node) {
        Ok(n) => n.api().swap(swap_id).await.map(|v| v.state).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Takes the seller's offer asking 50 confirmations (so the buyer never pays); the swap id once
/// the buyer sees the funded HTLC (within `timeout`).
pub async fn take_unpaid(h: &Harness, timeout: Duration) -> Result<String> {
    let offer = h.best_offer("buyer", AMOUNT).await?;
    let body = json!({
        "offer": offer.offer,
        "seller": offer.seller,
        "amount_sat": AMOUNT,
        "max_total_fee_sat": MAX_FEE,
        "min_confirmations": 50,
    });
    let v: Value = h.node("buyer")?.api().post("/v1/swaps/out", &body).await?;
    let id = v["swap_id"].as_str().context("swap_id")?.to_string();
    wait_until("buyer sees the funded htlc", timeout, || async {
        (state_of(h, "buyer", &id).await == "Funded").then_some(())
    })
    .await?;
    Ok(id)
}
