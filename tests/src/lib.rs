//! Looper conformance and the deterministic test bed: the node's real [`Engine`] run over a
//! simulated chain, Lightning network, wallet and clock ([`world`], [`fakes`]).
//!
//! - [`testbed`]: two engines over an in-memory wire, driven by a seeded scheduler that injects
//!   crashes between a commit and what follows it, duplicated, reordered and replayed messages
//!   and Lightning events, chain-source failures, reorgs and a malicious peer; invariants are
//!   checked after each step and at the end (`tests/tests/testbed.rs` runs many seeds).
//! - the conformance suite (`tests/tests/conformance.rs`): the same engines over the node's real
//!   Nostr transport and a real local relay.
//!
//! [`Engine`]: looper_node::engine::Engine

pub mod fakes;
pub mod node;
pub mod testbed;
pub mod world;

/// The hand-written conformance engine that `tests/tests/conformance.rs` and
/// `tests/tests/relay_faults.rs` still drive over the real relay (to be replaced by the node's
/// engine in run mode, as the test bed already does; see issue 13).
pub mod legacy;
pub use legacy::*;
