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
