//! Settings of the HTTP sink (`[store] kind = "http"`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the request bodies look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// One event per line (`application/x-ndjson`).
    Ndjson,
    /// A JSON array of events (`application/json`).
    JsonArray,
    /// Splunk HTTP Event Collector: `{"time", "source", "sourcetype", "index", "event"}` objects.
    SplunkHec,
    /// Elasticsearch / OpenSearch `_bulk` with `create` and `_id = eventId`: retries are idempotent,
    /// duplicates and conflicts are told apart.
    Elasticsearch,
}

/// How requests authenticate. Secrets come from an environment variable or a file (a mounted
/// Kubernetes secret), never from the config itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic base64(username:password)`; the password is the secret.
    Basic,
    /// `Authorization: Splunk <token>` (HEC tokens).
    Splunk,
    /// `Authorization: ApiKey <token>` (Elasticsearch API keys).
    ApiKey,
}

/// `[store.auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The scheme.
    pub scheme: AuthScheme,
    /// Environment variable holding the secret (token, or password for `basic`).
    pub secret_env: Option<String>,
    /// File holding the secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// User name for `basic`.
    pub username: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { scheme: AuthScheme::None, secret_env: None, secret_file: None, username: None }
    }
}

/// The HTTP sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSinkConfig {
    /// Endpoint: the URL batches are POSTed to (`…/_bulk` for Elasticsearch,
    /// `…/services/collector/event` for Splunk HEC).
    pub url: String,
    /// Body format.
    pub format: HttpFormat,
    /// Elasticsearch index (required for `elasticsearch`); Splunk index (optional).
    pub index: Option<String>,
    /// Elasticsearch index that keeps conflicts for review (default `<index>-conflicts`).
    pub conflicts_index: Option<String>,
    /// Splunk `sourcetype` of events.
    pub sourcetype: String,
    /// Splunk `sourcetype` of signed checkpoints.
    pub checkpoint_sourcetype: String,
    /// Splunk `source`.
    pub source: String,
    /// Authentication.
    pub auth: AuthConfig,
    /// Extra request headers (not secrets: those go through `auth`).
    pub headers: BTreeMap<String, String>,
    /// Whole-request timeout, milliseconds.
    pub timeout_ms: u64,
    /// Extra PEM file of CA certificates to trust (besides the platform's).
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpSinkConfig {
    fn default() -> Self {
        HttpSinkConfig {
            url: String::new(),
            format: HttpFormat::Ndjson,
            index: None,
            conflicts_index: None,
            sourcetype: "auditstream:event".into(),
            checkpoint_sourcetype: "auditstream:checkpoint".into(),
            source: "auditstream".into(),
            auth: AuthConfig::default(),
            headers: BTreeMap::new(),
            timeout_ms: 30_000,
            ca_file: None,
        }
    }
}

impl HttpSinkConfig {
    /// Checks every value without I/O: `(key, message)` of the first bad one.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(("store.url", format!("{:?} must be an http:// or https:// URL", self.url)));
        }
        if url.contains('@') {
            return Err(("store.url", "must not carry credentials: use [store.auth]".into()));
        }
        if self.format == HttpFormat::Elasticsearch {
            match self.index.as_deref() {
                None | Some("") => return Err(("store.index", "the elasticsearch format needs an index".into())),
                Some(i) if !index_name_ok(i) => {
                    return Err(("store.index", format!("{i:?} is not a valid index name (lowercase, no spaces)")))
                }
                _ => {}
            }
            if let Some(i) = self.conflicts_index.as_deref().filter(|i| !index_name_ok(i)) {
                return Err(("store.conflicts_index", format!("{i:?} is not a valid index name")));
            }
        }
        let a = &self.auth;
        let needs_secret = a.scheme != AuthScheme::None;
        match (needs_secret, a.secret_env.is_some(), a.secret_file.is_some()) {
            (true, false, false) => {
                return Err(("store.auth.secret_env", "the auth scheme needs secret_env or secret_file".into()))
            }
            (true, true, true) => {
                return Err(("store.auth.secret_file", "set secret_env or secret_file, not both".into()))
            }
            (false, e, f) if e || f => {
                return Err(("store.auth.scheme", "a secret is set but the scheme is none".into()))
            }
            _ => {}
        }
        if a.scheme == AuthScheme::Basic && a.username.as_deref().unwrap_or_default().is_empty() {
            return Err(("store.auth.username", "basic auth needs a username".into()));
        }
        for name in self.headers.keys() {
            let lower = name.to_ascii_lowercase();
            if lower == "authorization" || lower == "content-type" {
                return Err(("store.headers", format!("{name} is set by the sink (use [store.auth] for secrets)")));
            }
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                return Err(("store.headers", format!("{name:?} is not a valid header name")));
            }
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Err(("store.timeout_ms", "must be between 100 and 600000".into()));
        }
        Ok(())
    }
}

fn index_name_ok(i: &str) -> bool {
    !i.is_empty()
        && i.len() <= 255
        && !i.starts_with(['-', '_', '+'])
        && i.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}
