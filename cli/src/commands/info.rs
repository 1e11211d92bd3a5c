//! `looper info`, `looper sync`.

use looper_api::{InfoResponse, SyncResponse};

use super::Ctx;
use crate::error::CliResult;
use crate::output::{key_values, print_json};

/// `GET /v1/info`.
pub async fn info(ctx: &Ctx) -> CliResult<()> {
    let client = ctx.client()?;
    let v: InfoResponse = client.get("/v1/info", "get the node's info").await?;
    if ctx.json() {
        print_json(&v);
        return Ok(());
    }
    print!("{}", render_info(&v, client.base()));
    Ok(())
}

/// The human view of `/v1/info`.
pub fn render_info(v: &InfoResponse, base: &str) -> String {
    let listen = if v.ln_listen.is_empty() { "-".into() } else { v.ln_listen.join(", ") };
    key_values(&[
        ("node", base.to_string()),
        ("version", format!("{} (api {})", v.version, v.api_version)),
        ("network", v.network.to_string()),
        ("tip height", v.tip_height.to_string()),
        ("open swaps", v.open_swaps.to_string()),
        ("nostr pubkey", v.nostr_pubkey.clone()),
        ("ln node id", v.ln_node_id.clone()),
        ("ln listen", listen),
    ])
}

/// `POST /v1/sync`.
pub async fn sync(ctx: &Ctx) -> CliResult<()> {
    let client = ctx.client()?;
    let v: SyncResponse =
        client.post("/v1/sync", &serde_json::json!({}), "sync the wallets").await?;
    if ctx.json() {
        print_json(&v);
    } else {
        println!("synced: tip height {}", v.tip_height);
    }
    Ok(())
}
