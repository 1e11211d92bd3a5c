//! `looper block add|remove|list`: the seller's block list of Nostr keys (their swap requests are
//! dropped unanswered).

use clap::Subcommand;
use looper_api::{BlockRequest, BlockSource, BlockedKey, BlockedList, UnblockResponse};

use super::Ctx;
use crate::client::encode;
use crate::error::CliResult;
use crate::output::{date, print_json, table, Align};

/// Block list commands.
#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Block a Nostr key: its next swap requests are dropped unanswered (its running swaps go
    /// on). Kept by the node across restarts.
    #[command(after_help = "Example:\n  looper block add npub1... --note \"floods requests\"")]
    Add {
        /// The key: 64 hex characters or npub1...
        key: String,
        /// Why (one line, at most 200 characters).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Unblock a key blocked with `looper block add` (keys of `seller.blocked_keys` in
    /// looper.toml are removed there).
    #[command(after_help = "Example:\n  looper block remove npub1...")]
    Remove {
        /// The key: 64 hex characters or npub1...
        key: String,
    },
    /// The blocked keys: from looper.toml (`config`) and from `looper block add` (`api`).
    #[command(after_help = "Example:\n  looper block list")]
    List,
}

/// `looper block ...`.
pub async fn block(ctx: &Ctx, cmd: BlockCommand) -> CliResult<()> {
    let client = ctx.client()?;
    match cmd {
        BlockCommand::List => {
            let v: BlockedList = client.get("/v1/seller/blocked", "list the blocked keys").await?;
            if ctx.json() {
                print_json(&v);
            } else {
                print!("{}", render_list(&v));
            }
        }
        BlockCommand::Add { key, note } => {
            let req = BlockRequest { key: key.clone(), note };
            let v: BlockedKey =
                client.post("/v1/seller/blocked", &req, &format!("block {key}")).await?;
            if ctx.json() {
                print_json(&v);
            } else {
                println!("{}", added_text(&v));
            }
        }
        BlockCommand::Remove { key } => {
            let v: UnblockResponse = client
                .delete(&format!("/v1/seller/blocked/{}", encode(&key)), &format!("unblock {key}"))
                .await
                .map_err(|e| {
                    if e.status == Some(409) {
                        e.with_todo(
                            "remove it from seller.blocked_keys in looper.toml, then restart \
                             looper-node",
                        )
                    } else {
                        e
                    }
                })?;
            if ctx.json() {
                print_json(&v);
            } else if v.removed {
                println!("unblocked {key}");
            } else {
                println!("{key} was not blocked");
            }
        }
    }
    Ok(())
}

/// The line `block add` prints.
fn added_text(v: &BlockedKey) -> String {
    let mut out = format!("blocked {}", v.npub);
    if v.source == BlockSource::Config {
        out.push_str(" (by seller.blocked_keys in looper.toml)");
    }
    if let Some(note) = &v.note {
        out.push_str(&format!(": {note}"));
    }
    out
}

/// The human table of the block list.
fn render_list(v: &BlockedList) -> String {
    if v.blocked.is_empty() {
        return "no blocked keys (block one with `looper block add KEY`)\n".into();
    }
    let rows: Vec<Vec<String>> = v
        .blocked
        .iter()
        .map(|b| {
            vec![
                b.npub.clone(),
                b.source.to_string(),
                b.added_at.map_or_else(|| "-".into(), date),
                b.note.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            ("KEY", Align::Left),
            ("SOURCE", Align::Left),
            ("BLOCKED", Align::Left),
            ("NOTE", Align::Left),
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: BlockSource, note: Option<&str>, added_at: Option<u64>) -> BlockedKey {
        BlockedKey {
            key: "ab".repeat(32),
            npub: "npub1xyz".into(),
            source,
            note: note.map(String::from),
            added_at,
        }
    }

    #[test]
    fn renders() {
        let empty = BlockedList { blocked: vec![] };
        assert_eq!(
            render_list(&empty),
            "no blocked keys (block one with `looper block add KEY`)\n"
        );
        let list = BlockedList {
            blocked: vec![
                entry(BlockSource::Config, None, None),
                entry(BlockSource::Api, Some("spam"), Some(0)),
            ],
        };
        assert_eq!(
            render_list(&list),
            "KEY       SOURCE  BLOCKED                  NOTE\n\
             npub1xyz  config  -                        -\n\
             npub1xyz  api     1970-01-01 00:00:00 UTC  spam\n"
        );
        assert_eq!(
            added_text(&entry(BlockSource::Api, Some("spam"), Some(1))),
            "blocked npub1xyz: spam"
        );
        assert_eq!(
            added_text(&entry(BlockSource::Config, None, None)),
            "blocked npub1xyz (by seller.blocked_keys in looper.toml)"
        );
    }
}
