//! Start-up failures of the `looper-node` binary: one clear line, a non-zero exit, no panic, and
//! nothing started that would have to be torn down.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_taken_api_port_fails_the_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let t0 = Instant::now();
    // Esplora and the relay point nowhere: the API is bound before either is reached.
    let out = Command::new(env!("CARGO_BIN_EXE_looper-node"))
        .args(["--datadir", dir.path().to_str().unwrap(), "--network", "regtest"])
        .args(["--esplora-url", "http://127.0.0.1:9", "--relay", "ws://127.0.0.1:9"])
        .args(["--api-listen", &addr.to_string()])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a taken port: {stderr}");
    assert!(stderr.contains("cannot bind the control API"), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(20), "took {:?}", t0.elapsed());
    // No Lightning node was started.
    assert!(!dir.path().join("ldk").exists(), "ldk-node started before the API was bound");
    drop(taken);
}
