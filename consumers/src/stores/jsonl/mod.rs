//! The JSONL file store: `<dir>/partition-<p>/<first offset, 20 digits>.jsonl[.gz]`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::read::{Each, ReadError, ReadFilter};
use super::Store;
use crate::sink::SinkError;

mod config;
mod files;
mod gz;
mod layout;
mod line;
mod reader;
mod sink;

pub use config::JsonlConfig;
pub use layout::{jsonl_files, jsonl_layout, jsonl_partitions, Foreign, JsonlLayout};
pub use sink::JsonlSink;

/// The JSONL store in the registry.
#[derive(Debug)]
pub struct Jsonl;

impl Store for Jsonl {
    const KIND: &'static str = "jsonl";
    const SOURCE_FORM: Option<&'static str> = Some("jsonl:DIR");
    type Config = JsonlConfig;
    type Sink = JsonlSink;
    /// The directory.
    type Location = PathBuf;

    fn check(config: &JsonlConfig) -> Result<Option<String>, (&'static str, String)> {
        config.check().map(|()| None)
    }

    async fn open(config: &JsonlConfig, _: Option<&str>) -> Result<JsonlSink, SinkError> {
        Ok(JsonlSink::new(config.clone()))
    }

    fn locate(source: &str) -> Option<Result<PathBuf, String>> {
        source.strip_prefix("jsonl:").map(|dir| Ok(PathBuf::from(dir)))
    }

    fn fmt_location(dir: &PathBuf, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "jsonl:{}", dir.display())
    }

    fn locate_bare(source: &str) -> Option<PathBuf> {
        Path::new(source).is_dir().then(|| PathBuf::from(source))
    }

    async fn read<E: From<ReadError> + Send>(
        dir: &PathBuf,
        filter: &ReadFilter,
        each: &mut Each<'_, E>,
    ) -> Result<(), E> {
        reader::read_jsonl(dir, filter, each)
    }
}
