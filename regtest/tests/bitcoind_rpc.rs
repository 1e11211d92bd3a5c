//! The chain's Bitcoin Core JSON-RPC interface, raw: authentication (cookie, user and password),
//! Core's shapes, error codes and HTTP statuses, batches, the mempool calls, and BIP-0158 block
//! filters that match what a block pays and spends. (ldk-node's bitcoind chain source on it is in
//! `ldk_node.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use bitcoin::absolute::LockTime;
use bitcoin::bip158::{BlockFilter, FilterHeader};
use bitcoin::hashes::Hash;
use bitcoin::hex::FromHex;
use bitcoin::{Amount, BlockHash, OutPoint, Sequence};
use common::{spend, TempDir};
use looper_regtest::{test_key, ChainConfig, RegtestChain};
use serde_json::{json, Value};

struct Rpc {
    url: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl Rpc {
    fn new(chain: &RegtestChain, user: &str, password: &str) -> Self {
        Rpc {
            url: chain.rpc_url(),
            user: user.into(),
            password: password.into(),
            http: reqwest::Client::new(),
        }
    }

    /// The HTTP status and the JSON body of a request.
    async fn raw(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The result, or the error object.
    async fn call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let (_, body) = self
            .raw(json!({ "jsonrpc": "1.0", "id": "t", "method": method, "params": params }))
            .await;
        match &body["error"] {
            Value::Null => Ok(body["result"].clone()),
            e => Err(e.clone()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoind_rpc_auth_and_errors() {
    let dir = TempDir::new("rpc-auth");
    let mut config = ChainConfig::new(dir.path());
    config.rpc_auth = Some(("alice".into(), "secret".into()));
    let chain = RegtestChain::start_with(config).unwrap();

    // The cookie file, as bitcoind writes it (owner-only), and what it holds.
    let cookie = std::fs::read_to_string(chain.rpc_cookie_file()).unwrap();
    let (user, password) = chain.rpc_cookie();
    assert_eq!(cookie, format!("{user}:{password}"));
    assert_eq!(user, "__cookie__");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(chain.rpc_cookie_file()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let by_cookie = Rpc::new(&chain, &user, &password);
    let by_password = Rpc::new(&chain, "alice", "secret");
    for rpc in [&by_cookie, &by_password] {
        assert_eq!(rpc.call("getblockcount", json!([])).await.unwrap(), json!(101));
    }
    for (u, p) in [("alice", "wrong"), ("__cookie__", "nope"), ("", "")] {
        let (status, _) = Rpc::new(&chain, u, p).raw(json!({"method": "getblockcount"})).await;
        assert_eq!(status, 401, "{u}:{p}");
    }
    let (status, _) = reqwest::Client::new()
        .post(chain.rpc_url())
        .body("{}")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "no credentials");

    // Statuses and codes as Bitcoin Core's.
    let (status, body) = by_cookie.raw(json!({"id": 1, "method": "nosuchmethod"})).await;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!(-32601)));
    let (status, body) =
        by_cookie.raw(json!({"id": 2, "method": "getblockhash", "params": [500]})).await;
    assert_eq!((status, body["error"]["code"].clone()), (500, json!(-8)));
    let unknown = "11".repeat(32);
    assert_eq!(
        by_cookie.call("getrawtransaction", json!([unknown])).await.unwrap_err()["code"],
        -5
    );
    assert_eq!(by_cookie.call("getmempoolentry", json!([unknown])).await.unwrap_err()["code"], -5);
    assert_eq!(by_cookie.call("getblockheader", json!([unknown])).await.unwrap_err()["code"], -5);
    assert_eq!(by_cookie.call("sendrawtransaction", json!(["00"])).await.unwrap_err()["code"], -22);
    assert_eq!(by_cookie.call("estimatesmartfee", json!([0])).await.unwrap_err()["code"], -8);

    // A batch: one answer per request, in order, HTTP 200.
    let (status, body) = by_cookie
        .raw(json!([
            {"id": "a", "method": "getblockcount"},
            {"id": "b", "method": "nosuchmethod"},
            {"id": "c", "method": "getblockhash", "params": [0]},
        ]))
        .await;
    assert_eq!(status, 200);
    let answers = body.as_array().unwrap();
    assert_eq!(answers[0]["result"], 101);
    assert_eq!(answers[1]["error"]["code"], -32601);
    assert_eq!(answers[2]["result"], chain.block_hash(0).unwrap().unwrap().to_string());

    // The cookie goes with the chain.
    let path = chain.rpc_cookie_file().to_path_buf();
    chain.shutdown();
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoind_rpc_chain_mempool_and_filters() {
    let dir = TempDir::new("rpc-chain");
    let chain = RegtestChain::start(dir.path()).unwrap();
    let (user, password) = chain.rpc_cookie();
    let rpc = Rpc::new(&chain, &user, &password);

    let info = rpc.call("getblockchaininfo", json!([])).await.unwrap();
    assert_eq!(info["chain"], "regtest");
    assert_eq!(info["blocks"], 101);
    assert_eq!(info["bestblockhash"], chain.tip_hash().unwrap().to_string());
    assert_eq!(info["initialblockdownload"], false);
    // Regtest blocks each add 2 to the chain work.
    assert_eq!(info["chainwork"], format!("{:064x}", 2 * 102));
    let tip = chain.tip_hash().unwrap().to_string();
    let header = rpc.call("getblockheader", json!([tip])).await.unwrap();
    assert_eq!((header["height"].clone(), header["confirmations"].clone()), (json!(101), json!(1)));
    assert_eq!(header["bits"], "207fffff");
    assert_eq!(header["previousblockhash"], chain.block_hash(100).unwrap().unwrap().to_string());
    let raw_header = rpc.call("getblockheader", json!([tip, false])).await.unwrap();
    assert_eq!(raw_header.as_str().unwrap().len(), 160);
    let block = rpc.call("getblock", json!([tip, 0])).await.unwrap();
    let block: bitcoin::Block =
        bitcoin::consensus::deserialize(&Vec::<u8>::from_hex(block.as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(block.block_hash().to_string(), tip);

    // A funded key, then its spend in the mempool.
    let (key, addr) = test_key("rpc").unwrap();
    let fund = chain.fund_address(&addr, Amount::from_sat(100_000)).unwrap();
    let tx = rpc.call("getrawtransaction", json!([fund.to_string(), true])).await.unwrap();
    assert_eq!(tx["confirmations"], 1);
    assert_eq!(tx["blockhash"], chain.tip_hash().unwrap().to_string());
    let ftx: bitcoin::Transaction =
        bitcoin::consensus::deserialize(&Vec::<u8>::from_hex(tx["hex"].as_str().unwrap()).unwrap())
            .unwrap();
    let vout = ftx.output.iter().position(|o| o.script_pubkey == addr.script_pubkey()).unwrap();
    let out = rpc.call("gettxout", json!([fund.to_string(), vout])).await.unwrap();
    assert_eq!((out["value"].clone(), out["confirmations"].clone()), (json!(0.001), json!(1)));
    assert_eq!(out["scriptPubKey"]["address"], addr.to_string());
    let (_, dest) = test_key("rpc-dest").unwrap();
    let prev = OutPoint::new(fund, vout as u32);
    let spend_tx = spend(
        &key,
        prev,
        &addr.script_pubkey(),
        Amount::from_sat(100_000),
        &dest.script_pubkey(),
        Amount::from_sat(99_000),
        LockTime::ZERO,
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    let hex = bitcoin::consensus::encode::serialize_hex(&spend_tx);
    let txid = rpc.call("sendrawtransaction", json!([hex])).await.unwrap();
    assert_eq!(txid, spend_tx.compute_txid().to_string());
    assert_eq!(rpc.call("sendrawtransaction", json!([hex])).await.unwrap(), txid, "known: success");
    assert!(chain.in_mempool(&spend_tx.compute_txid()).unwrap(), "one mempool for every API");
    assert_eq!(rpc.call("gettxout", json!([fund.to_string(), vout])).await.unwrap(), Value::Null);
    assert!(rpc
        .call("gettxout", json!([fund.to_string(), vout, false]))
        .await
        .unwrap()
        .is_object());
    assert_eq!(rpc.call("getrawmempool", json!([])).await.unwrap(), json!([txid]));
    let entry = rpc.call("getmempoolentry", json!([txid])).await.unwrap();
    assert_eq!(entry["height"], 102);
    assert_eq!(entry["fees"]["base"], 0.00001);
    assert!(entry["time"].as_u64().unwrap() > 1_700_000_000);
    let verbose = rpc.call("getrawmempool", json!([true])).await.unwrap();
    assert_eq!(verbose[txid.as_str().unwrap()]["vsize"], entry["vsize"]);
    // A double spend is refused with Core's code and reason.
    let mut double = spend_tx.clone();
    double.output[0].value = Amount::from_sat(99_999);
    let e = rpc
        .call("sendrawtransaction", json!([bitcoin::consensus::encode::serialize_hex(&double)]))
        .await
        .unwrap_err();
    assert_eq!(e["code"], -26, "{e}");

    // Fees in BTC/kvB.
    let fee = rpc.call("estimatesmartfee", json!([6, "ECONOMICAL"])).await.unwrap();
    assert_eq!((fee["feerate"].clone(), fee["blocks"].clone()), (json!(0.00001), json!(6)));
    chain.set_fee_estimates(Some(BTreeMap::from([(1, 50.0), (6, 20.0)]))).unwrap();
    let fee = rpc.call("estimatesmartfee", json!([3])).await.unwrap();
    assert_eq!(fee["feerate"], 0.0005);
    chain.set_min_fee_rate(5.0).unwrap();
    let mempool = rpc.call("getmempoolinfo", json!([])).await.unwrap();
    assert_eq!(mempool["mempoolminfee"], 0.00005);

    // BIP-0158 filters: the block that mines the spend matches both scripts (the one it pays
    // and the one it spends from); its header chains from the previous one's.
    chain.set_min_fee_rate(0.0).unwrap();
    chain.mine(1).unwrap();
    let hash = chain.tip_hash().unwrap();
    let f = rpc.call("getblockfilter", json!([hash.to_string(), "basic"])).await.unwrap();
    let filter = BlockFilter::new(&Vec::<u8>::from_hex(f["filter"].as_str().unwrap()).unwrap());
    for spk in [dest.script_pubkey(), addr.script_pubkey()] {
        assert!(filter.match_any(&hash, std::iter::once(spk.as_bytes())).unwrap());
    }
    let (_, other) = test_key("rpc-other").unwrap();
    assert!(!filter.match_any(&hash, std::iter::once(other.script_pubkey().as_bytes())).unwrap());
    let prev_hash: BlockHash = chain.block_hash(chain.tip_height().unwrap() - 1).unwrap().unwrap();
    let p = rpc.call("getblockfilter", json!([prev_hash.to_string()])).await.unwrap();
    let prev_header: FilterHeader = p["header"].as_str().unwrap().parse().unwrap();
    assert_eq!(f["header"], filter.filter_header(&prev_header).to_string());
    let genesis = chain.block_hash(0).unwrap().unwrap();
    let g = rpc.call("getblockfilter", json!([genesis.to_string()])).await.unwrap();
    let g_filter = BlockFilter::new(&Vec::<u8>::from_hex(g["filter"].as_str().unwrap()).unwrap());
    assert_eq!(g["header"], g_filter.filter_header(&FilterHeader::all_zeros()).to_string());
    assert_eq!(
        rpc.call("getblockfilter", json!([hash.to_string(), "extended"])).await.unwrap_err()
            ["code"],
        -5
    );
}
