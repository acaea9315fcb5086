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

impl SqliteConfig {
    /// Checks the settings without I/O: the key and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("store.path", "must name the database file".into()));
        }
        Ok(())
    }
}
