//! Shared by the CLI tests: running `looper`, snapshots.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of `looper` produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `looper ARGS` with no LOOPER_* variables, stdin closed (not a terminal).
pub fn looper(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_looper"));
    cmd.args(args).stdin(Stdio::null());
    for var in ["LOOPER_DATADIR", "LOOPER_RPC_URL", "LOOPER_TOKEN_FILE", "LOOPER_NETWORK"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run looper");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("snapshots").join(name)
}

/// Compares `actual` with `tests/snapshots/NAME`; `LOOPER_BLESS=1` rewrites the file instead.
pub fn snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("LOOPER_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("no snapshot {}: run with LOOPER_BLESS=1 to create it", path.display())
    });
    assert_eq!(
        actual,
        expected,
        "output differs from {} (LOOPER_BLESS=1 re-blesses after a deliberate change)",
        path.display()
    );
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
