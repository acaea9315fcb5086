//! `audit-sink`: writes processed audit events into stores, one consumer group per sink.
//!
//! **Status: skeleton.** The sink issue fills this crate. It will own one shared runtime (an ordered
//! lane per assigned partition, batches bounded by count, bytes and time, offsets stored only after
//! the batch is durable, errors classified once as retriable, poison or fatal) and one folder per
//! sink with the same shape (`config.rs`, `sink.rs`): PostgreSQL, SQLite, MongoDB, JSONL files and
//! HTTP (generic batch, Splunk HEC, Elasticsearch/OpenSearch `_bulk`). Duplicates are absorbed by
//! each sink's idempotence on `eventId`; a duplicate with different content is kept as a conflict.
//! One conformance suite runs against every sink.

/// The sinks this crate will provide, by their config name.
pub const SINK_KINDS: &[&str] = &["postgres", "sqlite", "mongodb", "jsonl", "http"];
