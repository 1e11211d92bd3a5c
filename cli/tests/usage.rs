//! Usage errors, exit codes and the messages for a node that cannot be reached or used, without
//! a node; snapshots of the help texts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{free_port, looper, snapshot};

#[test]
fn bad_amount_is_a_usage_error() {
    for bad in ["abc", "0", "-1", "1.5", ""] {
        let r = looper(&["--rpc-url", "http://127.0.0.1:1", "out", "--amount", bad, "--yes"]);
        assert_eq!(r.code, 2, "amount {bad:?}: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{r:?}");
        assert!(r.stderr.contains("--amount <SAT>"), "{r:?}");
        assert!(r.stdout.is_empty());
    }
    let r = looper(&["out", "--amount", "abc"]);
    snapshot("bad_amount.txt", &r.stderr);
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let r = looper(&["frobnicate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with("error: unrecognized subcommand 'frobnicate'"), "{r:?}");
    let r = looper(&["swap"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "error: looper swap: no swap id given (use `looper swap ID`, `looper swap monitor [ID]`, `looper swap abort ID` or `looper swap export ID`)\n"
    );
    let r = looper(&["offers"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("pass --amount SAT"), "{r:?}");
    let r = looper(&["--rpc-url", "ftp://x", "--token-file", "/nonexistent", "info"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with("error: invalid --rpc-url: "), "{r:?}");
}

#[test]
fn node_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api.token");
    std::fs::write(&token, "0123456789abcdef\n").unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for json in [false, true] {
        let mut args = vec!["--rpc-url", url.as_str(), "--token-file", token.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        args.push("info");
        let r = looper(&args);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            r.stderr,
            format!(
                "error: cannot reach looper-node at {url}: connection refused (is looper-node running? start it with `looper-node --datadir DIR`)\n"
            )
        );
        assert!(r.stdout.is_empty(), "{r:?}");
    }
    // Through the data dir: looper.toml names the API address.
    std::fs::write(
        dir.path().join("looper.toml"),
        format!("network = \"regtest\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let r = looper(&["--datadir", dir.path().to_str().unwrap(), "swaps"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with(&format!("error: cannot reach looper-node at {url}: ")), "{r:?}");
}

#[test]
fn missing_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = looper(&["--datadir", dir.path().to_str().unwrap(), "info"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot read the API token {}: no such file (looper-node writes it into its data dir at start: pass --datadir DIR of the running node, or --token-file FILE)\n",
            dir.path().join("api.token").display()
        )
    );
}

#[test]
fn no_terminal_and_no_yes_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api.token");
    std::fs::write(&token, "0123456789abcdef\n").unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let r = looper(&[
        "--rpc-url",
        &url,
        "--token-file",
        token.to_str().unwrap(),
        "wallet",
        "send",
        "--address",
        "bcrt1qxyz",
        "--amount",
        "1000",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "error: cannot ask for confirmation: standard input is not a terminal (pass --yes to go ahead without asking)\n"
    );
}

#[test]
fn help_has_examples() {
    let r = looper(&["--help"]);
    assert_eq!(r.code, 0);
    snapshot("help.txt", &r.stdout);
    let r = looper(&["out", "--help"]);
    assert_eq!(r.code, 0);
    snapshot("out_help.txt", &r.stdout);
    // Every command's help has an example.
    for cmd in [
        vec!["info"],
        vec!["offers"],
        vec!["offer", "create"],
        vec!["offer", "list"],
        vec!["offer", "withdraw"],
        vec!["block", "add"],
        vec!["block", "remove"],
        vec!["block", "list"],
        vec!["out"],
        vec!["swaps"],
        vec!["swap"],
        vec!["swap", "monitor"],
        vec!["swap", "abort"],
        vec!["swap", "export"],
        vec!["stats"],
        vec!["wallet", "balance"],
        vec!["wallet", "address"],
        vec!["wallet", "send"],
        vec!["ln", "info"],
        vec!["ln", "channels"],
        vec!["ln", "balance"],
        vec!["ln", "address"],
        vec!["ln", "open"],
        vec!["ln", "invoice"],
        vec!["ln", "pay"],
        vec!["ln", "payment"],
        vec!["sync"],
        vec!["completions"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let r = looper(&args);
        assert_eq!(r.code, 0, "{cmd:?}: {r:?}");
        assert!(r.stdout.contains("Example"), "{cmd:?} has no example:\n{}", r.stdout);
    }
}

#[test]
fn completions() {
    for shell in ["bash", "zsh", "fish"] {
        let r = looper(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {r:?}");
        assert!(r.stdout.contains("looper"), "{shell}");
        assert!(r.stdout.len() > 1000, "{shell}");
    }
    assert_eq!(looper(&["completions", "tcsh"]).code, 2);
}
