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

impl PostgresConfig {
    /// Checks the settings without I/O and gives the connection URL (`store.url`, else the
    /// `DATABASE_URL` environment variable); else the key and what is wrong.
    pub fn check(&self) -> Result<String, (&'static str, String)> {
        let url = self
            .url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .ok_or(("store.url", "no PostgreSQL URL: set store.url or DATABASE_URL".to_owned()))?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(("store.url", "must be a postgres:// URL".into()));
        }
        if self.max_connections == 0 {
            return Err(("store.max_connections", "must be positive".into()));
        }
        Ok(url)
    }
}
