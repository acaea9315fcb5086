//! The JSONL file sink.

mod config;
mod sink;

pub use config::JsonlConfig;
pub use sink::JsonlSink;
