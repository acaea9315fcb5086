//! Helpers shared by the integration tests under `tests/tests/`.
//!
//! Service addresses come from the environment that `scripts/services env` prints, with the same
//! loopback defaults `scripts/services` uses, so `cargo nextest run` works after `scripts/services up`
//! without exporting anything. A test never skips itself when a service is missing: it fails, naming
//! the service and how to start it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `host:port` of the Kafka-protocol broker.
pub fn kafka_bootstrap() -> String {
    std::env::var("AUDIT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

/// PostgreSQL connection URL.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/postgres".to_owned())
}

/// MongoDB connection URI.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:17017/?directConnection=true".to_owned())
}

/// A name no other test run uses: `prefix-<pid>-<millis>-<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    format!("{prefix}-{}-{millis}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The message a test prints when a service cannot be reached.
pub fn unreachable(service: &str, address: &str, error: impl std::fmt::Display) -> String {
    format!("{service} at {address} is not reachable ({error}); start it with `scripts/services up`")
}

pub mod demo;
pub mod deploy_policy;
pub mod http_receiver;
pub mod kafka;
pub mod pipeline;
pub mod sinks;
pub mod stores;
pub mod tamper;
pub mod workload;
