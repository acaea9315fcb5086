//! The HTTP sink (SIEMs, log platforms, webhooks).

mod config;
mod sink;

pub use config::{AuthConfig, AuthScheme, HttpFormat, HttpSinkConfig};
pub use sink::{classify, install_crypto_provider, parse_retry_after, HttpSink};
