//! The MongoDB sink.

mod config;
mod sink;

pub use config::MongoConfig;
pub use sink::{classify, MongoSink};
