//! Precedence of `LOOPER_*` environment variables: over the configuration file, under the flags.
//! Runs the `looper-node` binary (which parses flags and variables) with `--print-config`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `looper-node --print-config` with `flags` and the variables `env` (and no other `LOOPER_*`
/// variable): the printed configuration, or the error line and exit code.
fn print_config(env: &[(&str, &str)], flags: &[&str]) -> Result<Value, (i32, String)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_looper-node"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOOPER_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).arg("--print-config").args(flags);
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("looper.toml"),
        "network = \"signet\"\nesplora_url = \"http://file.example\"\nrelays = [\"ws://file.example\"]\n[api]\nlisten = \"127.0.0.1:1111\"\n[seller]\ntimeout_delta_blocks = 200\n",
    )
    .unwrap();
    let datadir = dir.path().to_str().unwrap();
    let env = [
        ("LOOPER_DATADIR", datadir),
        ("LOOPER_NETWORK", "regtest"),
        ("LOOPER_RELAYS", "ws://env1.example,ws://env2.example"),
        ("LOOPER_API_LISTEN", "127.0.0.1:2222"),
        ("LOOPER_LOG_JSON", "true"),
    ];

    // Environment over file (and the data dir from the environment finds the file).
    let c = print_config(&env, &[]).unwrap();
    assert_eq!(Path::new(c["datadir"].as_str().unwrap()), dir.path());
    assert_eq!(c["network"], "regtest");
    assert_eq!(c["esplora_url"], "http://file.example");
    assert_eq!(c["relays"], serde_json::json!(["ws://env1.example", "ws://env2.example"]));
    assert_eq!(c["api"]["listen"], "127.0.0.1:2222");
    assert_eq!(c["log_json"], true);
    // The older key name is read, and printed under the offer's wire name.
    assert_eq!(c["seller"]["timeout_delta"], 200);

    // Flags over environment.
    let c = print_config(
        &env,
        &["--network", "signet", "--relay", "wss://flag.example", "--api-listen", "127.0.0.1:3333"],
    )
    .unwrap();
    assert_eq!(c["network"], "signet");
    assert_eq!(c["relays"], serde_json::json!(["wss://flag.example"]));
    assert_eq!(c["api"]["listen"], "127.0.0.1:3333");

    // A bad value from the environment is reported like any other (exit code 2).
    let mut bad = env;
    bad[1] = ("LOOPER_NETWORK", "moonnet");
    let (code, err) = print_config(&bad, &[]).unwrap_err();
    assert_eq!(code, 2);
    assert!(err.contains("network: unknown network \"moonnet\""), "{err}");
}

#[test]
fn proxy_from_the_environment_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().to_str().unwrap();
    let env = [
        ("LOOPER_DATADIR", datadir),
        ("LOOPER_NETWORK", "signet"),
        ("LOOPER_PROXY", "socks5h://127.0.0.1:9050"),
    ];
    assert_eq!(print_config(&env[..2], &[]).unwrap()["proxy"], serde_json::Value::Null);
    assert_eq!(print_config(&env, &[]).unwrap()["proxy"], "127.0.0.1:9050");
    let c = print_config(&env, &["--proxy", "socks5://127.0.0.1:9150"]).unwrap();
    assert_eq!(c["proxy"], "127.0.0.1:9150");
    let (code, err) = print_config(&env, &["--proxy", "http://127.0.0.1:8080"]).unwrap_err();
    assert_eq!(code, 2);
    assert!(err.contains("invalid configuration: proxy: "), "{err}");
}

#[test]
fn default_datadir_is_per_network_under_home() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_str().unwrap();
    let c = print_config(&[("HOME", h), ("LOOPER_NETWORK", "signet")], &[]).unwrap();
    assert_eq!(Path::new(c["datadir"].as_str().unwrap()), home.path().join(".looper/signet"));
    let c = print_config(&[("HOME", h)], &["--network", "mainnet"]).unwrap();
    assert_eq!(Path::new(c["datadir"].as_str().unwrap()), home.path().join(".looper/bitcoin"));
    assert_eq!(c["safety"]["max_swap_amount_sat"], 1_000_000);

    // An older node's data dir with a seed stays in use, with a notice on stderr.
    std::fs::create_dir_all(home.path().join(".looper")).unwrap();
    std::fs::write(home.path().join(".looper/seed"), "words").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_looper-node"))
        .env_remove("LOOPER_DATADIR")
        .env_remove("LOOPER_CONFIG")
        .env("HOME", h)
        .args(["--network", "signet", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(Path::new(c["datadir"].as_str().unwrap()), home.path().join(".looper"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("looper-node: using ") && err.contains("the default is now"), "{err}");
}
