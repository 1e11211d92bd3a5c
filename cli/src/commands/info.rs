//! `looper info`, `looper sync`.

use looper_api::{InfoResponse, SyncResponse};

use super::Ctx;
use crate::error::CliResult;
use crate::output::{key_values, print_json, sat};

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
    let mut pairs = vec![
        ("network", v.network.to_string()),
        ("node", base.to_string()),
        ("version", format!("{} (api {})", v.version, v.api_version)),
        ("tip height", v.tip_height.to_string()),
        ("open swaps", v.open_swaps.to_string()),
        ("nostr pubkey", v.nostr_pubkey.clone()),
        ("ln node id", v.ln_node_id.clone()),
        ("ln listen", listen),
    ];
    if let Some(max) = v.max_swap_amount_sat {
        pairs.push(("max swap amount", format!("{} (safety.max_swap_amount_sat)", sat(max))));
    }
    key_values(&pairs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InfoResponse {
        InfoResponse {
            network: bitcoin::Network::Signet,
            api_version: 1,
            version: "0.1.0".into(),
            tip_height: 7,
            nostr_pubkey: "ab".into(),
            ln_node_id: "02".into(),
            ln_listen: Vec::new(),
            open_swaps: 0,
            relays: Vec::new(),
            fee_rate_sat_vb: 1,
            fee_estimates_sat_vb: Default::default(),
            claim_conf_target: 9,
            max_swap_amount_sat: None,
        }
    }

    #[test]
    fn network_comes_first() {
        let text = render_info(&sample(), "http://127.0.0.1:38839");
        assert!(text.starts_with("network"), "{text}");
        assert!(text.lines().next().is_some_and(|l| l.ends_with("signet")), "{text}");
        assert!(!text.contains("max swap amount"), "{text}");
        let main = InfoResponse {
            network: bitcoin::Network::Bitcoin,
            max_swap_amount_sat: Some(1_000_000),
            ..sample()
        };
        let text = render_info(&main, "http://127.0.0.1:8839");
        assert!(text.lines().next().is_some_and(|l| l.ends_with("bitcoin")), "{text}");
        assert!(text.contains("max swap amount"), "{text}");
    }
}
