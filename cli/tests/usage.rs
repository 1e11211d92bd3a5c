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
        "error: looper swap: no swap id given (use `looper swap ID`, `looper swap monitor [ID]`, `looper swap abort ID`, `looper swap claim ID`, `looper swap refund ID` or `looper swap export ID`)\n"
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
fn ln_withdraw_takes_an_amount_or_all() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api.token");
    std::fs::write(&token, "0123456789abcdef\n").unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let base = ["--rpc-url", &url, "--token-file", token.to_str().unwrap(), "ln", "withdraw"];
    for extra in [&["bcrt1qxyz", "--yes"][..], &["bcrt1qxyz", "--amount", "1000", "--all", "--yes"]]
    {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let r = looper(&args);
        assert_eq!(r.code, 2, "{extra:?}: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{r:?}");
        assert!(r.stderr.contains("--amount <SAT>") && r.stderr.contains("--all"), "{r:?}");
    }
    // Without a terminal, a withdrawal needs --yes (the node is not asked).
    let args: Vec<&str> = base.iter().chain(&["bcrt1qxyz", "--all"]).copied().collect();
    let r = looper(&args);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("pass --yes"), "{r:?}");
}

#[test]
fn help_has_examples() {
    let r = looper(&["--help"]);
    assert_eq!(r.code, 0);
    snapshot("help.txt", &r.stdout);
    let r = looper(&["out", "--help"]);
    assert_eq!(r.code, 0);
    snapshot("out_help.txt", &r.stdout);
    let r = looper(&["ln", "--help"]);
    assert_eq!(r.code, 0);
    snapshot("ln_help.txt", &r.stdout);
    let r = looper(&["ln", "close", "--help"]);
    assert_eq!(r.code, 0);
    snapshot("ln_close_help.txt", &r.stdout);
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
        vec!["ln", "peers"],
        vec!["ln", "connect"],
        vec!["ln", "disconnect"],
        vec!["ln", "close"],
        vec!["ln", "withdraw"],
        vec!["autoloop", "status"],
        vec!["autoloop", "set"],
        vec!["autoloop", "dry-run"],
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

/// `looper-node` in this test's target dir (`target/debug`, next to `deps/`).
fn built_node_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = format!("looper-node{}", std::env::consts::EXE_SUFFIX);
    exe.ancestors().skip(1).take(2).map(|d| d.join(&name)).find(|p| p.is_file())
}

/// The `looper-node` binary for its `--help`: `LOOPER_NODE_BIN`, else the one of this test's
/// target dir; when there is none, built with `cargo build -p looper-node` (another package's
/// binary is not built for this crate's tests by `cargo test -p looper-cli`).
fn node_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("LOOPER_NODE_BIN") {
        return p.into();
    }
    if let Some(p) = built_node_binary() {
        return p;
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "looper-node", "--bin", "looper-node"])
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p looper-node failed: {status}");
    built_node_binary()
        .expect("looper-node not found after building it: cargo build -p looper-node")
}

/// What a (sub)command's `--help` says: its subcommands, whether it takes arguments, its options
/// (long and short names and visible aliases) and whether each takes a value.
#[derive(Debug, Default)]
struct Help {
    commands: Vec<String>,
    takes_arguments: bool,
    options: std::collections::HashMap<String, bool>,
}

impl Help {
    fn parse(text: &str) -> Help {
        let mut help = Help::default();
        let mut section = "";
        for line in text.lines() {
            if !line.starts_with(' ') {
                section = line.trim_end_matches(':');
                help.takes_arguments |= section == "Arguments";
                continue;
            }
            let trimmed = line.trim_start();
            if section == "Commands" {
                if let Some(name) = trimmed.split_whitespace().next() {
                    help.commands.push(name.to_string());
                }
            } else if trimmed.starts_with('-') {
                // `-y, --yes  Text`, `--amount <SAT>  Text [alias: --amt]`.
                let words: Vec<&str> = trimmed.split_whitespace().collect();
                let mut names = Vec::new();
                let mut takes_value = false;
                for w in &words {
                    let w = w.trim_end_matches(',');
                    if w.starts_with('-') && w.len() > 1 {
                        names.push(w.to_string());
                    } else {
                        takes_value = w.starts_with('<') || w.starts_with('[');
                        break;
                    }
                }
                for alias in trimmed.split("[alias: ").chain(trimmed.split("[aliases: ")).skip(1) {
                    let list = alias.split(']').next().unwrap_or("");
                    names.extend(list.split(", ").map(|a| a.trim().to_string()));
                }
                for name in names {
                    help.options.insert(name, takes_value);
                }
            }
        }
        help
    }
}

/// Splits one shell command line into words: whitespace outside quotes, `'...'` and `"..."`
/// kept whole (without the quotes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Every `looper` and `looper-node` command in the fenced shell blocks of a Markdown text, with
/// its line number (1-based): lines joined across a trailing `\`, a leading `$ ` and comments
/// (` #`) dropped, pipelines and lists (`|`, `&&`, `||`, `;`) split, `VAR=value` prefixes skipped.
fn doc_commands(doc: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_shell: Option<bool> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in doc.lines().enumerate() {
        let line = raw.trim();
        if let Some(info) = line.strip_prefix("```") {
            in_shell = match in_shell {
                Some(_) => None,
                None => Some(matches!(info.trim(), "" | "sh" | "bash" | "shell" | "console")),
            };
            continue;
        }
        if in_shell != Some(true) {
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        text.push_str(line.strip_prefix("$ ").unwrap_or(line));
        if let Some(head) = text.strip_suffix('\\') {
            pending = Some((start, format!("{head} ")));
            continue;
        }
        let text = match text.find(" #") {
            Some(at) => &text[..at],
            None => text.as_str(),
        };
        let text = text.replace("&&", ";").replace("||", ";").replace('|', ";");
        for part in text.split(';') {
            let words: Vec<String> =
                shell_words(part).into_iter().skip_while(|w| w.contains('=')).collect();
            if matches!(words.first().map(String::as_str), Some("looper" | "looper-node")) {
                out.push((start, words));
            }
        }
    }
    out
}

/// Gives the `--help` text of a program's (sub)command path.
type HelpOf<'a> = dyn FnMut(&str, &[String]) -> Result<String, String> + 'a;

/// Checks one command against the binaries' help: every subcommand exists, every option is in the
/// help of the (sub)command it follows, nothing else stands where only a subcommand may.
fn check_command(words: &[String], help_of: &mut HelpOf<'_>) -> Result<(), String> {
    let program = words[0].as_str();
    let mut path: Vec<String> = Vec::new();
    let mut help = Help::parse(&help_of(program, &path)?);
    let mut positional = false;
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        let shown =
            || format!("{program}{}", path.iter().map(|p| format!(" {p}")).collect::<String>());
        if w.starts_with('-') && w.len() > 1 && w != "-" {
            let name = w.split('=').next().unwrap_or(w);
            match help.options.get(name) {
                None => {
                    return Err(format!(
                        "`{name}` is not an option of `{}` (see `{} --help`)",
                        shown(),
                        shown()
                    ))
                }
                Some(true) if !w.contains('=') => i += 1,
                Some(_) => {}
            }
        } else if !positional && help.commands.iter().any(|c| c == w) {
            path.push(w.clone());
            help = Help::parse(&help_of(program, &path)?);
        } else if help.takes_arguments {
            positional = true;
        } else if !help.commands.is_empty() {
            return Err(format!(
                "`{w}` is not a subcommand of `{}` (it has: {})",
                shown(),
                help.commands.join(", ")
            ));
        } else {
            return Err(format!("`{}` takes no argument, but `{w}` is given", shown()));
        }
        i += 1;
    }
    if program == "looper" && path.is_empty() && !words.iter().any(|w| w == "--version") {
        return Err("no subcommand".into());
    }
    Ok(())
}

/// Checks every command of a Markdown text; the failures, one line each, naming the line.
fn check_doc(name: &str, doc: &str, node_bin: &std::path::Path) -> (usize, Vec<String>) {
    let mut cache: std::collections::HashMap<(String, Vec<String>), String> = Default::default();
    let mut help_of = |program: &str, path: &[String]| -> Result<String, String> {
        let key = (program.to_string(), path.to_vec());
        if let Some(text) = cache.get(&key) {
            return Ok(text.clone());
        }
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = if program == "looper" {
            looper(&args)
        } else {
            let out = std::process::Command::new(node_bin).args(&args).output().unwrap();
            common::Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        };
        if run.code != 0 {
            return Err(format!("`{program} {} --help` failed: {}", path.join(" "), run.stderr));
        }
        cache.insert(key, run.stdout.clone());
        Ok(run.stdout)
    };
    let commands = doc_commands(doc);
    let failures = commands
        .iter()
        .filter_map(|(line, words)| {
            check_command(words, &mut help_of)
                .err()
                .map(|e| format!("{name}:{line}: `{}`: {e}", words.join(" ")))
        })
        .collect();
    (commands.len(), failures)
}

#[test]
fn signet_guide_commands_match_the_binaries() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/signet.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let node_bin = node_binary();
    let (checked, failures) = check_doc("docs/signet.md", &doc, &node_bin);
    assert!(
        failures.is_empty(),
        "commands of docs/signet.md that the binaries do not take (a stale {}? rebuild it: \
         cargo build -p looper-node):\n{}",
        node_bin.display(),
        failures.join("\n")
    );
    let commands = doc_commands(&doc);
    assert!(checked >= 20, "only {checked} commands found in docs/signet.md");
    for program in ["looper", "looper-node"] {
        assert!(commands.iter().any(|(_, w)| w[0] == program), "no {program} command found");
    }

    // The checker itself: a wrong flag, a wrong subcommand, a stray word, each named by line.
    let bad = "text\n```sh\nlooper out --amount 1 --bogus\nlooper ln frobnicate\n```\n\
               ```toml\nlooper = 1\n```\n```\nX=1 looper --json offers --amount 5 | jq . # ok\n\
               looper-node --proxy socks5h://127.0.0.1:9050 --no-such-flag\nlooper swaps extra\n```\n";
    let (checked, failures) = check_doc("bad.md", bad, &node_bin);
    assert_eq!(checked, 5, "{failures:?}");
    assert_eq!(failures.len(), 4, "{failures:#?}");
    assert_eq!(
        failures[0],
        "bad.md:3: `looper out --amount 1 --bogus`: `--bogus` is not an option of `looper out` (see `looper out --help`)"
    );
    assert!(
        failures[1].starts_with(
            "bad.md:4: `looper ln frobnicate`: `frobnicate` is not a subcommand of `looper ln` (it has: info, "
        ),
        "{}",
        failures[1]
    );
    assert_eq!(
        failures[2],
        "bad.md:11: `looper-node --proxy socks5h://127.0.0.1:9050 --no-such-flag`: `--no-such-flag` is not an option of `looper-node` (see `looper-node --help`)"
    );
    assert_eq!(
        failures[3],
        "bad.md:12: `looper swaps extra`: `looper swaps` takes no argument, but `extra` is given"
    );
}
