//! The PostgreSQL store.

use std::fmt;

use super::read::{redact_userinfo, Each, ReadError, ReadFilter};
use super::Store;
use crate::sink::SinkError;

mod config;
mod reader;
mod sink;

pub use config::PostgresConfig;
pub use sink::{classify, PostgresSink, MIGRATOR};

/// The PostgreSQL store in the registry.
#[derive(Debug)]
pub struct Postgres;

impl Store for Postgres {
    const KIND: &'static str = "postgres";
    const SOURCE_FORM: Option<&'static str> = Some("postgres://");
    type Config = PostgresConfig;
    type Sink = PostgresSink;
    /// The connection URL.
    type Location = String;

    fn check(config: &PostgresConfig) -> Result<Option<String>, (&'static str, String)> {
        config.check().map(Some)
    }

    async fn open(config: &PostgresConfig, url: Option<&str>) -> Result<PostgresSink, SinkError> {
        PostgresSink::connect(url.unwrap_or_default(), config.max_connections, config.migrate).await
    }

    async fn migrate(config: &PostgresConfig, url: Option<&str>) -> Option<Result<(), SinkError>> {
        Some(PostgresSink::connect(url.unwrap_or_default(), config.max_connections, true).await.map(drop))
    }

    fn locate(source: &str) -> Option<Result<String, String>> {
        (source.starts_with("postgres://") || source.starts_with("postgresql://")).then(|| Ok(source.to_owned()))
    }

    fn fmt_location(url: &String, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password.
        f.write_str(&redact_userinfo(url))
    }

    async fn read<E: From<ReadError> + Send>(
        url: &String,
        filter: &ReadFilter,
        each: &mut Each<'_, E>,
    ) -> Result<(), E> {
        reader::read_postgres(url, filter, each).await
    }
}
