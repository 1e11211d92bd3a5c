//! The committed state diagrams match the transition tables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn committed_diagrams_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/diagrams");
    for (name, text) in looper_protocol::diagrams::state_diagrams() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert_eq!(
            committed, text,
            "spec/diagrams/{name} is stale: run `cargo run -p looper-protocol --example fsm-diagrams`"
        );
    }
}
