//! The stores under test, one fixture per store: each makes a store of its own (a directory, a
//! database), configures an `audit-sink` process for it, and reads back what it holds. A new store
//! adds one file here, its `pub mod` line, and its `conformance!` line in
//! `tests/tests/sink_conformance.rs`.

use std::collections::BTreeMap;

use serde_json::Value;

pub mod http;
pub mod jsonl;
pub mod mongodb;
pub mod postgres;
pub mod sqlite;

/// A store under test.
pub trait Target: Send + Sync {
    /// Sink kind, for messages.
    fn name(&self) -> &'static str;
    /// Environment configuring an `audit-sink` process for this store.
    fn env(&self) -> Vec<(String, String)>;
    /// The stored events, per partition, in the order the store keeps them.
    fn read_back(&self) -> BTreeMap<i32, Vec<Value>>;
    /// Conflicts the store kept for review (`None` when it keeps none beyond the metric).
    fn conflicts(&self) -> Option<usize>;
    /// The signed checkpoints the store keeps (their JSON objects), in the order it keeps them.
    fn checkpoints(&self) -> Vec<Value>;
}
