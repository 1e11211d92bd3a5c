//! `looper-node`: the Looper daemon (work in progress: see the README status table).

fn main() {}
