//! The stores, and the one registry that lists them.
//!
//! A store is one folder, `stores/<kind>/`, of the same shape every time:
//!
//! * `mod.rs`: the store's [`Store`] implementation, which ties the rest together;
//! * `config.rs`: its `[store]` settings (a serde struct) and their check, without I/O;
//! * `sink.rs`: the writer (a [`Sink`]); and `migrations/` where it has a schema;
//! * `reader.rs`: what `auditctl verify` and `export` read back ([`read`] is the contract);
//! * unit tests beside the code they test.
//!
//! The store kind is matched in this file only: `registry!` lists every store once and makes
//! from that list the `[store]` config ([`StoreConfig`], a serde enum tagged by `kind`), where a
//! store is read from ([`Location`], from `auditctl --source`), and the dispatch of checking,
//! opening, migrating and reading. `docs/SINKS.md` ("Adding a store") lists the files a new store
//! needs. `sql/` is what the two SQL stores share.

use std::fmt;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sink::{Sink, SinkError};
use read::{Each, ReadError, ReadFilter};

pub mod http;
pub mod jsonl;
pub mod mongodb;
pub mod postgres;
pub mod read;
pub(crate) mod sql;
pub mod sqlite;

/// A kind of store: its settings, its writer and its reader, as the registry sees them.
pub trait Store {
    /// `[store] kind` (also the sink's name in logs and metrics): the registry's variant name in
    /// snake case.
    const KIND: &'static str;
    /// How `auditctl --source` names a store of this kind (`jsonl:DIR`, `postgres://`), for
    /// messages; `None` when it cannot be read back.
    const SOURCE_FORM: Option<&'static str>;
    /// Its `[store]` settings.
    type Config: fmt::Debug + Clone + PartialEq + Eq + Default + Serialize + DeserializeOwned;
    /// Its writer.
    type Sink: Sink;
    /// Where one such store is, to read it back ([`NoReader`] when it cannot be).
    type Location: fmt::Debug + Clone + PartialEq + Eq + Send + Sync;

    /// Checks `config` without I/O; gives its connection URL or URI where it has one (from the
    /// config or the environment), else the key and what is wrong.
    fn check(config: &Self::Config) -> Result<Option<String>, (&'static str, String)>;

    /// Opens the writer (`url`: what [`Store::check`] gave), applying migrations where the config says so.
    fn open(config: &Self::Config, url: Option<&str>) -> impl Future<Output = Result<Self::Sink, SinkError>> + Send;

    /// Applies the store's migrations (`audit-sink migrate`); `None` when it has none, and then
    /// `migrate` runs the sink as usual.
    fn migrate(config: &Self::Config, url: Option<&str>) -> impl Future<Output = Option<Result<(), SinkError>>> + Send {
        let _ = (config, url);
        async { None }
    }

    /// `source` as a location of this kind, when it is spelled as one (`Err`: spelled as one,
    /// but wrong).
    fn locate(source: &str) -> Option<Result<Self::Location, String>>;

    /// Writes `location` as `--source` spells it, never with a password.
    fn fmt_location(location: &Self::Location, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// A bare `source` without a scheme (a directory) as a location of this kind, asked after
    /// every store's [`Store::locate`] said no.
    fn locate_bare(source: &str) -> Option<Self::Location> {
        let _ = source;
        None
    }

    /// Reads everything the store at `location` holds that `filter` asks for, calling `each` in
    /// store order.
    fn read<E: From<ReadError> + Send>(
        location: &Self::Location,
        filter: &ReadFilter,
        each: &mut Each<'_, E>,
    ) -> impl Future<Output = Result<(), E>> + Send;
}

/// The location of a store that cannot be read back (an HTTP endpoint): there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReader {}

/// What is done with a store's writer once it is open: [`StoreConfig::open`] hands it over
/// whatever its type.
pub trait WithSink {
    /// What is done gives this.
    type Output;
    /// Does it with `sink`.
    fn with<S: Sink>(self, sink: S) -> impl Future<Output = Self::Output> + Send;
}

/// Lists the stores: `Variant => stores::<kind>::Type,` with its doc comment. Makes the
/// `[store]` config enum, the location enum and every dispatch on the kind.
macro_rules! registry {
    ($($(#[doc = $doc:literal])* $variant:ident => $store:ty,)*) => {
        /// Which store, and its settings (`[store] kind = "…"` and that store's keys).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
        pub enum StoreConfig {
            $($(#[doc = $doc])* $variant(<$store as Store>::Config),)*
        }

        /// Where a store is, to read it back (parsed from `auditctl --source`).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Location {
            $($(#[doc = $doc])* $variant(<$store as Store>::Location),)*
        }

        /// Every store kind, in registry order.
        pub const KINDS: &[&str] = &[$(<$store as Store>::KIND),*];

        /// How `--source` names each store that can be read back, in registry order.
        pub const SOURCE_FORMS: &[Option<&str>] = &[$(<$store as Store>::SOURCE_FORM),*];

        impl StoreConfig {
            /// The store's kind (`jsonl`, `postgres`…).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(StoreConfig::$variant(_) => <$store as Store>::KIND,)*
                }
            }

            /// Checks the store's own settings (each store's `config.rs`) and gives its
            /// connection URL or URI where it has one; else the key and what is wrong.
            pub fn check(&self) -> Result<Option<String>, (&'static str, String)> {
                match self {
                    $(StoreConfig::$variant(c) => <$store as Store>::check(c),)*
                }
            }

            /// Opens the store's writer and hands it to `with`.
            pub async fn open<W: WithSink>(&self, url: Option<&str>, with: W) -> Result<W::Output, SinkError> {
                match self {
                    $(StoreConfig::$variant(c) => Ok(with.with(<$store as Store>::open(c, url).await?).await),)*
                }
            }

            /// Applies the store's migrations; `None` when it has none.
            pub async fn migrate(&self, url: Option<&str>) -> Option<Result<(), SinkError>> {
                match self {
                    $(StoreConfig::$variant(c) => <$store as Store>::migrate(c, url).await,)*
                }
            }
        }

        impl Location {
            /// `source` as a store's location, when a store spells it so (`Err`: wrongly).
            pub fn parse(source: &str) -> Option<Result<Location, String>> {
                $(if let Some(location) = <$store as Store>::locate(source) {
                    return Some(location.map(Location::$variant));
                })*
                None
            }

            /// A bare `source` (no scheme) as a store's location, when a store takes it so.
            pub fn parse_bare(source: &str) -> Option<Location> {
                $(if let Some(location) = <$store as Store>::locate_bare(source) {
                    return Some(Location::$variant(location));
                })*
                None
            }

            /// Reads everything the store holds that `filter` asks for, calling `each` in store order.
            pub async fn read<E: From<ReadError> + Send>(
                &self,
                filter: &ReadFilter,
                each: &mut Each<'_, E>,
            ) -> Result<(), E> {
                match self {
                    $(Location::$variant(l) => <$store as Store>::read(l, filter, each).await,)*
                }
            }
        }

        impl fmt::Display for Location {
            /// As `--source` spells it, without a password.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Location::$variant(l) => <$store as Store>::fmt_location(l, f),)*
                }
            }
        }
    };
}

registry! {
    /// JSONL files.
    Jsonl => jsonl::Jsonl,
    /// PostgreSQL.
    Postgres => postgres::Postgres,
    /// SQLite (single-machine and local use).
    Sqlite => sqlite::Sqlite,
    /// MongoDB.
    Mongodb => mongodb::Mongodb,
    /// HTTP: generic NDJSON / JSON array, Splunk HEC, Elasticsearch / OpenSearch `_bulk`.
    Http => http::Http,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[store] kind` is the variant's serde tag: the registry's `KIND` must be the same word.
    #[test]
    fn each_store_kind_is_its_config_tag() {
        for kind in KINDS {
            let config: StoreConfig = toml::from_str(&format!("kind = {kind:?}")).expect(kind);
            assert_eq!(config.kind(), *kind);
            let text = toml::to_string(&config).unwrap();
            assert!(text.starts_with(&format!("kind = {kind:?}")), "{text}");
        }
        assert_eq!(KINDS, ["jsonl", "postgres", "sqlite", "mongodb", "http"]);
    }
}
