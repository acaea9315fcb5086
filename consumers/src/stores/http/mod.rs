//! The HTTP store (SIEMs, log platforms, webhooks). It is written to only: nothing reads an
//! endpoint back, so `auditctl verify` and `export` have no reader for it.

use std::fmt;

use super::read::{Each, ReadError, ReadFilter};
use super::{NoReader, Store};
use crate::sink::SinkError;

mod config;
mod sink;

pub use config::{AuthConfig, AuthScheme, HttpFormat, HttpSinkConfig};
pub use sink::{classify, install_crypto_provider, parse_retry_after, HttpSink};

/// The HTTP store in the registry.
#[derive(Debug)]
pub struct Http;

impl Store for Http {
    const KIND: &'static str = "http";
    const SOURCE_FORM: Option<&'static str> = None;
    /// Boxed: by far the largest of the `[store]` sections.
    type Config = Box<HttpSinkConfig>;
    type Sink = HttpSink;
    type Location = NoReader;

    fn check(config: &Box<HttpSinkConfig>) -> Result<Option<String>, (&'static str, String)> {
        config.check().map(|()| None)
    }

    async fn open(config: &Box<HttpSinkConfig>, _: Option<&str>) -> Result<HttpSink, SinkError> {
        HttpSink::connect(config)
    }

    fn locate(_: &str) -> Option<Result<NoReader, String>> {
        None
    }

    fn fmt_location(location: &NoReader, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *location {}
    }

    async fn read<E: From<ReadError> + Send>(
        location: &NoReader,
        _: &ReadFilter,
        _: &mut Each<'_, E>,
    ) -> Result<(), E> {
        match *location {}
    }
}
