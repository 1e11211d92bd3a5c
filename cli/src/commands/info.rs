//! `looper info`, `looper sync`.

use serde_json::{json, Value};

use super::Ctx;
use crate::error::CliResult;
use crate::output::{key_values, print_json, text};

/// `GET /v1/info`.
pub async fn info(ctx: &Ctx) -> CliResult<()> {
    let client = ctx.client()?;
    let v = client.get("/v1/info", "get the node's info").await?;
    if ctx.json() {
        print_json(&v);
        return Ok(());
    }
    print!("{}", render_info(&v, client.base()));
    Ok(())
}

/// The human view of `/v1/info`.
pub fn render_info(v: &Value, base: &str) -> String {
    let open =
        v.get("open_swaps").or_else(|| v.get("swaps_active")).cloned().unwrap_or(Value::Null);
    let listen = match v.get("ln_listen") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    };
    let version = match (v.get("api_version"), v.get("version")) {
        (Some(api), Some(ver)) => format!("{} (api {})", plain(ver), plain(api)),
        (None, Some(ver)) => plain(ver),
        (Some(api), None) => format!("api {}", plain(api)),
        _ => "-".into(),
    };
    key_values(&[
        ("node", base.to_string()),
        ("version", version),
        ("network", text(v, "network")),
        ("tip height", text(v, "tip_height")),
        ("open swaps", plain(&open)),
        ("nostr pubkey", text(v, "nostr_pubkey")),
        ("ln node id", text(v, "ln_node_id")),
        ("ln listen", listen),
    ])
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `POST /v1/sync`.
pub async fn sync(ctx: &Ctx) -> CliResult<()> {
    let client = ctx.client()?;
    let v = client.post("/v1/sync", &json!({}), "sync the wallets").await?;
    if ctx.json() {
        print_json(&v);
    } else {
        println!("synced: tip height {}", text(&v, "tip_height"));
    }
    Ok(())
}
