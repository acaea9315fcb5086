//! Settings of the MongoDB sink (`[store] kind = "mongodb"`).

use serde::{Deserialize, Serialize};

/// The MongoDB sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConfig {
    /// `mongodb://…` URI. Default: the `MONGODB_URI` environment variable.
    pub uri: Option<String>,
    /// Database.
    pub database: String,
    /// Collection of events (`<collection>_conflicts` keeps conflicts).
    pub collection: String,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig { uri: None, database: "audit".into(), collection: "audit_events".into() }
    }
}

impl MongoConfig {
    /// Checks the settings without I/O and gives the connection URI (`store.uri`, else the
    /// `MONGODB_URI` environment variable); else the key and what is wrong.
    pub fn check(&self) -> Result<String, (&'static str, String)> {
        let uri = self
            .uri
            .clone()
            .or_else(|| std::env::var("MONGODB_URI").ok())
            .ok_or(("store.uri", "no MongoDB URI: set store.uri or MONGODB_URI".to_owned()))?;
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(("store.uri", "must be a mongodb:// URI".into()));
        }
        if self.database.is_empty() || self.collection.is_empty() {
            return Err(("store.collection", "database and collection must not be empty".into()));
        }
        Ok(uri)
    }
}
