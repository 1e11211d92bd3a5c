//! Looper conformance and the deterministic test bed: the node's real [`Engine`] run over a
//! simulated chain, Lightning network, wallet and clock ([`world`], [`fakes`]).
//!
//! - [`testbed`]: two engines over an in-memory wire, driven by a seeded scheduler that injects
//!   crashes between a commit and what follows it, duplicated, reordered and replayed messages
//!   and Lightning events, chain-source failures, reorgs and a malicious peer; invariants are
//!   checked after each step and at the end (`tests/tests/testbed.rs` runs many seeds).
//! - [`pair`]: the same engines in run mode over the node's real Nostr transport and real local
//!   relays (the conformance suite, `tests/tests/conformance.rs` and `relay_faults.rs`).
//!
//! [`Engine`]: looper_node::engine::Engine

pub mod fakes;
pub mod node;
pub mod pair;
pub mod testbed;
pub mod world;
