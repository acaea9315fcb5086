//! Settings of the PostgreSQL sink (`[store] kind = "postgres"`).

use serde::{Deserialize, Serialize};

/// The PostgreSQL sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://…` URL. Default: the `DATABASE_URL` environment variable.
    pub url: Option<String>,
    /// Connection pool size.
    pub max_connections: u32,
    /// Apply the shipped migrations at start (`audit-sink migrate` does it on its own).
    pub migrate: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig { url: None, max_connections: 4, migrate: true }
    }
}
