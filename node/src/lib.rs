//! Looper node.
