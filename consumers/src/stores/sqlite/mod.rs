//! The SQLite store: the same tables as PostgreSQL in one file, for single-machine and local use.

use std::fmt;
use std::path::PathBuf;

use super::read::{Each, ReadError, ReadFilter};
use super::Store;
use crate::sink::SinkError;

mod config;
mod reader;
mod sink;

pub use config::SqliteConfig;
pub use sink::{classify, SqliteSink, MIGRATOR};

/// The SQLite store in the registry.
#[derive(Debug)]
pub struct Sqlite;

impl Store for Sqlite {
    const KIND: &'static str = "sqlite";
    const SOURCE_FORM: Option<&'static str> = Some("sqlite:PATH");
    type Config = SqliteConfig;
    type Sink = SqliteSink;
    /// The database file.
    type Location = PathBuf;

    fn check(config: &SqliteConfig) -> Result<Option<String>, (&'static str, String)> {
        config.check().map(|()| None)
    }

    /// Opening applies the migrations.
    async fn open(config: &SqliteConfig, _: Option<&str>) -> Result<SqliteSink, SinkError> {
        SqliteSink::open(&config.path).await
    }

    async fn migrate(config: &SqliteConfig, _: Option<&str>) -> Option<Result<(), SinkError>> {
        Some(SqliteSink::open(&config.path).await.map(drop))
    }

    fn locate(source: &str) -> Option<Result<PathBuf, String>> {
        let path = source.strip_prefix("sqlite://").or_else(|| source.strip_prefix("sqlite:"))?;
        if path.is_empty() {
            return Some(Err(format!("source {source:?}: sqlite: needs a file path (sqlite:/var/lib/audit/audit.db)")));
        }
        Some(Ok(PathBuf::from(path)))
    }

    fn fmt_location(path: &PathBuf, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sqlite:{}", path.display())
    }

    async fn read<E: From<ReadError> + Send>(
        path: &PathBuf,
        filter: &ReadFilter,
        each: &mut Each<'_, E>,
    ) -> Result<(), E> {
        reader::read_sqlite(path, filter, each).await
    }
}
