//! Settings of the SQLite sink (`[store] kind = "sqlite"`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The SQLite sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// Database file (created when missing).
    pub path: PathBuf,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig { path: PathBuf::from("audit.sqlite") }
    }
}
