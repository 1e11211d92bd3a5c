//! `looper`: the Looper command-line interface. It speaks only the control API of a running
//! `looper-node` (see `looper --help` and cli/README.md for the commands and the JSON schema).
//!
//! Exit codes: 0 ok, 1 failure, 2 usage. Errors are one line on stderr:
//! `error: <what failed>: <why> (<what to do>)`; with `--json`, an error the node answered is
//! also printed on stdout as `{"error": {"code", "message"}, "status"}`.

mod client;
mod commands;
mod error;
mod output;

use clap::Parser;

fn main() {
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version exit 0, usage errors 2 (clap's own message).
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e} (out of resources?)");
            std::process::exit(error::EXIT_FAILURE);
        }
    };
    let json = cli.json;
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(()) => error::EXIT_OK,
        Err(e) => {
            // With --json, the node's typed error (code, message) goes to stdout too.
            if let Some(v) = e.to_json().filter(|_| json) {
                output::print_json_line(&v);
            }
            eprintln!("error: {e}");
            e.exit
        }
    };
    std::process::exit(code);
}
