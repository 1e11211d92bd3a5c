//! Precedence of `LOOPER_*` environment variables: over the configuration file, under the flags.
//!
//! The only test in this binary, because it sets process-wide environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use clap::Parser;
use looper_node::config::{Args, Config};

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("looper.toml"),
        "network = \"signet\"\nesplora_url = \"http://file.example\"\nrelays = [\"ws://file.example\"]\n[api]\nlisten = \"127.0.0.1:1111\"\n",
    )
    .unwrap();
    std::env::set_var("LOOPER_DATADIR", dir.path());
    std::env::set_var("LOOPER_NETWORK", "regtest");
    std::env::set_var("LOOPER_RELAYS", "ws://env1.example,ws://env2.example");
    std::env::set_var("LOOPER_API_LISTEN", "127.0.0.1:2222");
    std::env::set_var("LOOPER_LOG_JSON", "true");

    // Environment over file (and the data dir from the environment finds the file).
    let c = Config::load(&Args::try_parse_from(["looper-node"]).unwrap()).unwrap();
    assert_eq!(c.datadir, dir.path());
    assert_eq!(c.network, bitcoin::Network::Regtest);
    assert_eq!(c.esplora_url, "http://file.example");
    assert_eq!(c.relays, vec!["ws://env1.example", "ws://env2.example"]);
    assert_eq!(c.api.listen.port(), 2222);
    assert!(c.log_json);

    // Flags over environment.
    let c = Config::load(
        &Args::try_parse_from([
            "looper-node",
            "--network",
            "signet",
            "--relay",
            "wss://flag.example",
            "--api-listen",
            "127.0.0.1:3333",
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(c.network, bitcoin::Network::Signet);
    assert_eq!(c.relays, vec!["wss://flag.example"]);
    assert_eq!(c.api.listen.port(), 3333);

    // A bad value from the environment is reported like any other.
    std::env::set_var("LOOPER_NETWORK", "moonnet");
    let e = Config::load(&Args::try_parse_from(["looper-node"]).unwrap()).unwrap_err();
    assert!(e.to_string().contains("network: unknown network \"moonnet\""), "{e}");
}
