//! The SQLite sink.

mod config;
mod sink;

pub use config::SqliteConfig;
pub use sink::{classify, SqliteSink, MIGRATOR};
