//! `looper`: the Looper command-line interface (work in progress: see the README status table).

fn main() {}
