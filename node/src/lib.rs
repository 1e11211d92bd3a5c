//! # looper-node
//!
//! The Looper daemon: an embedded ldk-node Lightning node, a BDK wallet persisted in redb, a redb swap
//! store, a Nostr client for offers and encrypted swap messages, the swap engine that drives the
//! `looper-protocol` state machines, encrypted backups of the swap store on the node's relays
//! (restored from the seed alone), and a local control API for the `looper` CLI.
#![deny(missing_docs)]

pub mod api;
pub mod autoloop;
pub mod backup;
pub mod chain;
pub mod config;
pub mod engine;
pub mod export;
pub mod lightning;
pub mod node;
pub mod nostr;
pub mod seed;
pub mod stats;
pub mod store;
pub mod wallet;
