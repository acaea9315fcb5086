//! The MongoDB store.

use std::fmt;

use super::read::{redact_userinfo, Each, ReadError, ReadFilter};
use super::Store;
use crate::sink::SinkError;

mod config;
mod reader;
mod sink;

pub use config::MongoConfig;
pub use sink::{classify, MongoSink};

/// The MongoDB store in the registry.
#[derive(Debug)]
pub struct Mongodb;

/// `mongodb://host/DATABASE?…#COLLECTION`: the MongoDB sink's collection (database `audit` and
/// collection `audit_events` unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoCollection {
    /// Connection string without the `#collection` part.
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Collection of events.
    pub collection: String,
}

impl Store for Mongodb {
    const KIND: &'static str = "mongodb";
    const SOURCE_FORM: Option<&'static str> = Some("mongodb://");
    type Config = MongoConfig;
    type Sink = MongoSink;
    type Location = MongoCollection;

    fn check(config: &MongoConfig) -> Result<Option<String>, (&'static str, String)> {
        config.check().map(Some)
    }

    async fn open(config: &MongoConfig, uri: Option<&str>) -> Result<MongoSink, SinkError> {
        MongoSink::connect(uri.unwrap_or_default(), config).await
    }

    fn locate(s: &str) -> Option<Result<MongoCollection, String>> {
        if !(s.starts_with("mongodb://") || s.starts_with("mongodb+srv://")) {
            return None;
        }
        let (uri, collection) = s.split_once('#').unwrap_or((s, "audit_events"));
        let rest = uri.split_once("://").map_or("", |(_, r)| r);
        let database = rest
            .split_once('/')
            .map(|(_, path)| path.split('?').next().unwrap_or_default())
            .filter(|d| !d.is_empty())
            .unwrap_or("audit");
        if collection.is_empty() {
            return Some(Err(format!("source {s:?}: the collection after '#' is empty")));
        }
        Some(Ok(MongoCollection { uri: uri.to_owned(), database: database.to_owned(), collection: collection.into() }))
    }

    fn fmt_location(c: &MongoCollection, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password.
        write!(f, "{}#{}", redact_userinfo(&c.uri), c.collection)
    }

    async fn read<E: From<ReadError> + Send>(
        c: &MongoCollection,
        filter: &ReadFilter,
        each: &mut Each<'_, E>,
    ) -> Result<(), E> {
        reader::read_mongo(&c.uri, &c.database, &c.collection, filter, each).await
    }
}
