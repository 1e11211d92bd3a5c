//! `looper` against a real `looper-node` (in-process `LooperNode` on the embedded regtest chain
//! and a local Nostr relay), asserting on `--json`, on snapshots of the stable human output, and
//! on the documented messages of the bad cases (wrong token, unknown offer, unknown swap).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{free_port, looper, snapshot, Run};
use looper_node::config::{Config, Overrides};
use looper_node::node::LooperNode;
use looper_regtest::RegtestChain;
use nostr_relay_builder::prelude::*;

/// Runs `looper --rpc-url URL --token-file FILE ARGS` off the async runtime.
async fn cli(url: &str, token: &std::path::Path, args: &[&str]) -> Run {
    let mut all: Vec<String> =
        vec!["--rpc-url".into(), url.into(), "--token-file".into(), token.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        looper(&refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_against_a_regtest_node() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let chain = RegtestChain::start(tmp.path().join("chain"))?;
    let relay = LocalRelay::new(RelayBuilder::default());
    relay.run().await?;
    let relay_url = relay.url().await.to_string();
    let datadir = tmp.path().join("node");
    let ln_listen = format!("127.0.0.1:{}", free_port());
    let overrides = Overrides {
        datadir: Some(datadir.clone()),
        network: Some("regtest".into()),
        esplora_url: Some(chain.esplora_url()),
        relays: vec![relay_url.clone()],
        api_listen: Some("127.0.0.1:0".into()),
        ln_listen: vec![ln_listen.clone()],
        ..Overrides::default()
    };
    let node = LooperNode::start(Config::load(&overrides)?).await?;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(node.run(
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx).await??;
    let url = format!("http://{addr}");
    let token = datadir.join("api.token");

    // info
    let r = cli(&url, &token, &["--json", "info"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let info = r.json();
    assert_eq!(info["network"], "regtest");
    assert!(info["tip_height"].as_u64().is_some(), "{info}");
    assert_eq!(info["open_swaps"], 0);
    let r = cli(&url, &token, &["info"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("network:"), "the network comes first: {r:?}");
    assert!(r.stdout.lines().next().is_some_and(|l| l.ends_with("regtest")), "{r:?}");

    // The data dir alone finds the node when looper.toml names the address.
    std::fs::write(datadir.join("looper.toml"), format!("[api]\nlisten = \"{addr}\"\n"))?;
    let dd = datadir.display().to_string();
    let r =
        tokio::task::spawn_blocking(move || looper(&["--datadir", &dd, "--json", "swaps"])).await?;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"swaps": []}));

    // wallet balance: a fresh wallet holds nothing.
    let r = cli(&url, &token, &["--json", "wallet", "balance"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["total_sat"], 0);
    let r = cli(&url, &token, &["wallet", "balance"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    snapshot("wallet_balance_empty.txt", &r.stdout);
    let r = cli(&url, &token, &["--json", "wallet", "address"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.json()["address"].as_str().unwrap().starts_with("bcrt1"), "{r:?}");

    // swaps: none.
    let r = cli(&url, &token, &["--json", "swaps"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["swaps"], serde_json::json!([]));
    let r = cli(&url, &token, &["swaps"]).await;
    snapshot("swaps_empty.txt", &r.stdout);
    let r = cli(&url, &token, &["offer", "list"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    snapshot("offer_list_empty.txt", &r.stdout);
    let r = cli(&url, &token, &["swap", "monitor"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "no swap in progress\n");

    // autoloop: off by default; set (the rest keeps its defaults); a dry run of a node without
    // channels; a usage error.
    let r = cli(&url, &token, &["autoloop", "status"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("autoloop:"), "{r:?}");
    assert!(r.stdout.contains("stopped:") && r.stdout.contains("autoloop is disabled"), "{r:?}");
    let r = cli(
        &url,
        &token,
        &["--json", "autoloop", "set", "--enable", "--high", "70", "--budget", "9000"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let st = r.json();
    assert_eq!(st["config"]["enabled"], true);
    assert_eq!(st["config"]["rule"]["high_pct"], 70);
    assert_eq!(st["config"]["rule"]["low_pct"], 20);
    assert_eq!(st["config"]["budget"]["max_fee_sat"], 9000);
    let r = cli(&url, &token, &["autoloop", "dry-run"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "no channels\n");
    let r = cli(&url, &token, &["autoloop", "set", "--low", "90"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("low_pct (90) must be below high_pct (70)"), "{r:?}");
    let r = cli(&url, &token, &["--json", "autoloop", "set", "--disable"]).await;
    assert_eq!(r.json()["config"]["enabled"], false, "{r:?}");

    // An unknown swap.
    let unknown = "00".repeat(32);
    let r = cli(&url, &token, &["swap", &unknown]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with(&format!("error: cannot get swap {unknown}: ")), "{r:?}");
    assert!(r.stderr.ends_with("(`looper swaps` lists this node's swaps)\n"), "{r:?}");

    // A wrong token.
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n")?;
    for args in [&["info"][..], &["--json", "swaps"][..]] {
        let r = cli(&url, &wrong, args).await;
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            r.stderr,
            "error: the node refused the API token (401): missing or wrong token (use the api.token of the node you reach: --datadir DIR of that node, or --token-file FILE)\n"
        );
        if args[0] == "--json" {
            // The node's typed error, on stdout as JSON.
            assert_eq!(
                r.json(),
                serde_json::json!({
                    "error": {"code": "unauthorized", "message": "missing or wrong token"},
                    "status": 401
                })
            );
        } else {
            assert!(r.stdout.is_empty());
        }
    }

    // An unknown offer.
    let r = cli(&url, &token, &["--json", "out", "--amount", "100000", "--offer", "nope", "--yes"])
        .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "error: cannot take offer nope: no live offer nope covers 100,000 sat (0 offers do) (list them with `looper offers --amount 100000`)\n"
    );
    let r = cli(&url, &token, &["--json", "offers", "--amount", "100000"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["offers"], serde_json::json!([]));

    // Seller: create, list, withdraw.
    let r = cli(
        &url,
        &token,
        &[
            "--json",
            "offer",
            "create",
            "--id",
            "cli-test-1",
            "--min-amount-sat",
            "50000",
            "--max",
            "500000",
            "--timeout-delta",
            "144",
            "--claim-margin-blocks",
            "30",
            "--relay",
            &relay_url,
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["offer_id"], "cli-test-1");
    let r = cli(&url, &token, &["--json", "offer", "list"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let offers = r.json()["offers"].clone();
    assert_eq!(offers.as_array().map(Vec::len), Some(1), "{offers}");
    assert_eq!(offers[0]["offer_id"], "cli-test-1");
    assert_eq!(offers[0]["min_amount_sat"], 50_000);
    assert_eq!(offers[0]["max_amount_sat"], 500_000);
    assert_eq!(offers[0]["claim_margin"], 30);
    let r = cli(&url, &token, &["offer", "withdraw", "cli-test-1"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "withdrawn offer cli-test-1\n");
    let r = cli(&url, &token, &["offer", "withdraw", "cli-test-1"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: cannot withdraw offer cli-test-1: "), "{r:?}");
    let r = cli(&url, &token, &["--json", "offer", "withdraw", "cli-test-1"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "not_found", "{r:?}");
    assert_eq!(r.json()["status"], 404, "{r:?}");

    // Seller: the block list (add by hex, list, add again, remove twice, a bad key).
    let key = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let r = cli(&url, &token, &["block", "list"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "no blocked keys (block one with `looper block add KEY`)\n");
    let r = cli(&url, &token, &["--json", "block", "add", key, "--note", "spam"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let entry = r.json();
    assert_eq!(
        (&entry["key"], &entry["source"], &entry["note"]),
        (&key.into(), &"api".into(), &"spam".into())
    );
    let npub = entry["npub"].as_str().unwrap().to_string();
    assert!(npub.starts_with("npub1"), "{entry}");
    let r = cli(&url, &token, &["block", "add", &npub]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("blocked {npub}: spam\n"));
    let r = cli(&url, &token, &["--json", "block", "list"]).await;
    assert_eq!(r.json()["blocked"].as_array().map(Vec::len), Some(1), "{r:?}");
    let r = cli(&url, &token, &["block", "list"]).await;
    assert!(
        r.stdout.starts_with("KEY ") && r.stdout.contains(&npub) && r.stdout.contains("spam"),
        "{r:?}"
    );
    let r = cli(&url, &token, &["block", "remove", &npub]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, format!("unblocked {npub}\n").as_str()), "{r:?}");
    let r = cli(&url, &token, &["--json", "block", "remove", key]).await;
    assert_eq!(r.json(), serde_json::json!({"key": key, "removed": false}));
    let r = cli(&url, &token, &["block", "add", "nope"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: cannot block nope: key: not a Nostr public key"), "{r:?}");

    // Lightning: peers (none), connecting, disconnecting, closing and withdrawing, with the
    // errors of bad input.
    let r = cli(&url, &token, &["ln", "peers"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "no peers (connect to one with `looper ln connect NODE_ID@HOST:PORT`)\n");
    let r = cli(&url, &token, &["ln", "peers", "--json"]).await;
    assert_eq!(r.json(), serde_json::json!({"peers": []}), "{r:?}");
    let stranger = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";
    let r = cli(&url, &token, &["ln", "connect", stranger]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("expected NODE_ID@HOST:PORT"), "{r:?}");
    let nobody = format!("{stranger}@127.0.0.1:{}", free_port());
    let r = cli(&url, &token, &["ln", "connect", &nobody]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: cannot connect to 02eec724..6619: "), "{r:?}");
    assert!(r.stderr.ends_with("(check the address and that the peer is online)\n"), "{r:?}");
    let r = cli(&url, &token, &["ln", "disconnect", stranger]).await;
    assert_eq!(
        (r.code, r.stdout.clone()),
        (0, format!("{stranger} is not a peer (nothing to do)\n"))
    );
    let unknown = "ab".repeat(32);
    let r = cli(&url, &token, &["ln", "close", &unknown]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot close channel abababab..abab: no channel {unknown} (`looper ln channels` lists the channels)\n"
        )
    );
    let r = cli(&url, &token, &["--json", "ln", "close", "7"]).await;
    assert_eq!(r.json()["error"]["code"], "not_found", "{r:?}");
    let r = cli(&url, &token, &["ln", "close", "5a1b"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no channel of the node has that id"), "{r:?}");
    // A force close asks first: without a terminal, --yes is needed.
    let r = cli(&url, &token, &["ln", "close", &unknown, "--force"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("pass --yes"), "{r:?}");
    let mainnet = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    let r =
        cli(&url, &token, &["--json", "ln", "withdraw", mainnet, "--amount", "10000", "-y"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "bad_request", "{r:?}");
    assert!(r.stderr.contains("address: not a regtest address"), "{r:?}");
    let dest = cli(&url, &token, &["--json", "wallet", "address"]).await.json()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let r = cli(&url, &token, &["ln", "withdraw", &dest, "--amount", "10000", "-y"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("insufficient funds")
            && r.stderr.ends_with("(see what is spendable: `looper ln balance`)\n"),
        "{r:?}"
    );
    // Fund the Lightning node's wallet, then withdraw part of it, then the rest.
    let ln_addr = cli(&url, &token, &["--json", "ln", "address"]).await.json()["address"]
        .as_str()
        .unwrap()
        .to_string();
    chain.fund_address(
        &looper_regtest::parse_address(&ln_addr)?,
        bitcoin::Amount::from_sat(200_000),
    )?;
    chain.mine(1)?;
    let ln_balance = || async {
        cli(&url, &token, &["sync"]).await;
        cli(&url, &token, &["--json", "ln", "balance"]).await.json()["onchain_spendable_sat"]
            .as_u64()
    };
    looper_regtest::harness::wait_until(
        "the lightning wallet funded",
        Duration::from_secs(60),
        || async { (ln_balance().await? == 200_000).then_some(()) },
    )
    .await?;
    let r =
        cli(&url, &token, &["ln", "withdraw", &dest, "--amount", "50000", "--fee-rate", "2", "-y"])
            .await;
    assert_eq!(r.code, 0, "{r:?}");
    let prefix = format!("sent 50,000 sat to {dest}: txid ");
    assert!(r.stdout.starts_with(&prefix), "{r:?}");
    let first: bitcoin::Txid = r.stdout[prefix.len()..].trim().parse()?;
    looper_regtest::harness::wait_until(
        "the first withdrawal broadcast",
        Duration::from_secs(60),
        || async { chain.in_mempool(&first).ok()?.then_some(()) },
    )
    .await?;
    let r = cli(&url, &token, &["--json", "ln", "withdraw", &dest, "--all", "--yes"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let txid: bitcoin::Txid = r.json()["txid"].as_str().unwrap().parse()?;
    looper_regtest::harness::wait_until(
        "the withdrawal broadcast",
        Duration::from_secs(60),
        || async { chain.in_mempool(&txid).ok()?.then_some(()) },
    )
    .await?;
    chain.mine(1)?;
    looper_regtest::harness::wait_until(
        "the lightning wallet emptied",
        Duration::from_secs(60),
        || async { (ln_balance().await? == 0).then_some(()) },
    )
    .await?;
    looper_regtest::harness::wait_until(
        "the withdrawals in the swap wallet",
        Duration::from_secs(60),
        || async {
            cli(&url, &token, &["sync"]).await;
            let b = cli(&url, &token, &["--json", "wallet", "balance"]).await.json()
                ["confirmed_sat"]
                .as_u64()?;
            // 200 000 sat less the two fees.
            (b > 199_000 && b < 200_000).then_some(())
        },
    )
    .await?;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(60), task).await???;
    Ok(())
}
