//! The PostgreSQL sink.

mod config;
mod sink;

pub use config::PostgresConfig;
pub use sink::{classify, PostgresSink, MIGRATOR};
