//! The HTTP sink: batches POSTed as NDJSON, a JSON array, Splunk HEC events or an Elasticsearch /
//! OpenSearch `_bulk` request.
//!
//! Classification (once, here): connection errors, timeouts, 408, 429 and 5xx are retriable
//! (`Retry-After` honoured); 401 and 403 are fatal (credentials), as is 404 (wrong URL); any other
//! 4xx means the receiver refuses the batch's content, which is poison (the runtime splits the batch
//! until the refused event is alone and dead-letters it).
//!
//! Only the `elasticsearch` format is idempotent on the receiver's side: each event is a `create`
//! with `_id = eventId`, so a redelivery answers 409, and the sink then reads the stored
//! `integrity.hash` back (`_mget`) to count a duplicate or keep a conflict (in
//! `<index>-conflicts`). The other formats carry `eventId` in every event for the receiver to
//! deduplicate; the sink cannot tell duplicates there.
//!
//! Signed checkpoints that travel in the processed partition are sent too, in their own request:
//! as themselves (`"kind":"audit.checkpoint"`) in `ndjson` and `json_array`, as HEC events of
//! `store.checkpoint_sourcetype`, and as `create`s into `<index>-checkpoints` with
//! `_id = <chain>:<seq>:<signature>` (409: already there, a duplicate).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use super::config::{AuthScheme, HttpFormat, HttpSinkConfig};
use crate::sink::{CheckpointRecord, Sink, SinkError, SinkRecord, WriteOutcome};

/// The HTTP sink.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: Client,
    url: String,
    format: HttpFormat,
    index: String,
    conflicts_index: String,
    splunk: (String, String, Option<String>),
    /// Splunk `sourcetype` of checkpoints.
    checkpoint_sourcetype: String,
    /// `<index>-checkpoints`, for the elasticsearch format.
    checkpoints_index: String,
    /// `…/<index>/_mget`, for the elasticsearch format.
    mget_url: String,
}

/// Reads the secret named by `[store.auth]`.
fn secret(config: &HttpSinkConfig) -> Result<Option<String>, SinkError> {
    let a = &config.auth;
    let value = match (&a.secret_env, &a.secret_file) {
        (Some(var), _) => std::env::var(var)
            .map_err(|_| SinkError::fatal(format!("store.auth.secret_env: environment variable {var} is not set")))?,
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| SinkError::fatal(format!("store.auth.secret_file: cannot read {}: {e}", file.display())))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim_end_matches(['\r', '\n']).to_owned();
    if value.is_empty() {
        return Err(SinkError::fatal("store.auth: the secret is empty"));
    }
    Ok(Some(value))
}

fn authorization(config: &HttpSinkConfig) -> Result<Option<HeaderValue>, SinkError> {
    use base64::Engine as _;
    let Some(secret) = secret(config)? else { return Ok(None) };
    let text = match config.auth.scheme {
        AuthScheme::None => return Ok(None),
        AuthScheme::Bearer => format!("Bearer {secret}"),
        AuthScheme::Splunk => format!("Splunk {secret}"),
        AuthScheme::ApiKey => format!("ApiKey {secret}"),
        AuthScheme::Basic => {
            let user = config.auth.username.as_deref().unwrap_or_default();
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
        }
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| SinkError::fatal("store.auth: the secret contains characters not allowed in a header"))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Installs the process-wide rustls crypto provider (ring) once; reqwest builds its TLS config
/// with it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpSink {
    /// Builds the client (reads the secret and the CA file: fatal when missing).
    pub fn connect(config: &HttpSinkConfig) -> Result<HttpSink, SinkError> {
        install_crypto_provider();
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| SinkError::fatal(format!("store.headers.{k}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| SinkError::fatal(format!("store.headers.{k}: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(auth) = authorization(config)? {
            headers.insert(AUTHORIZATION, auth);
        }
        let mut builder = Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("auditstream-sink/", env!("CARGO_PKG_VERSION")));
        if let Some(file) = &config.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| SinkError::fatal(format!("store.ca_file: cannot read {}: {e}", file.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SinkError::fatal(format!("store.ca_file: {}: {e}", file.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| SinkError::fatal(format!("HTTP client: {e}")))?;
        let url = config.url.trim().to_owned();
        let index = config.index.clone().unwrap_or_default();
        let base = url.strip_suffix("/_bulk").unwrap_or(&url).trim_end_matches('/');
        let base = base.strip_suffix(&format!("/{index}")).unwrap_or(base);
        Ok(HttpSink {
            client,
            mget_url: format!("{base}/{index}/_mget"),
            conflicts_index: config.conflicts_index.clone().unwrap_or_else(|| format!("{index}-conflicts")),
            checkpoints_index: format!("{index}-checkpoints"),
            index,
            format: config.format,
            splunk: (config.source.clone(), config.sourcetype.clone(), config.index.clone()),
            checkpoint_sourcetype: config.checkpoint_sourcetype.clone(),
            url,
        })
    }

    /// The request body for `batch`, and its content type.
    pub fn body(&self, batch: &[SinkRecord]) -> (Vec<u8>, &'static str) {
        let size = batch.iter().map(|r| r.json.len() + 128).sum();
        let mut out = Vec::with_capacity(size);
        match self.format {
            HttpFormat::Ndjson | HttpFormat::JsonArray => {
                plain_body(self.format, batch.iter().map(|r| r.json.as_str()), out)
            }
            HttpFormat::SplunkHec => {
                let (source, sourcetype, index) = &self.splunk;
                for r in batch {
                    let mut envelope = json!({
                        "time": splunk_time(&r.event),
                        "source": source,
                        "sourcetype": sourcetype,
                        "fields": {"tenantId": r.event["context"]["tenantId"], "eventId": r.event_id},
                    });
                    if let Some(index) = index {
                        envelope["index"] = Value::String(index.clone());
                    }
                    // The event's own text goes in as is (no re-serialization).
                    let text = envelope.to_string();
                    out.extend_from_slice(&text.as_bytes()[..text.len() - 1]);
                    out.extend_from_slice(b",\"event\":");
                    out.extend_from_slice(r.json.as_bytes());
                    out.extend_from_slice(b"}\n");
                }
                (out, "application/json")
            }
            HttpFormat::Elasticsearch => {
                for r in batch {
                    bulk_create(&mut out, &self.index, &r.event_id, &r.json);
                }
                (out, "application/x-ndjson")
            }
        }
    }

    /// The request body for a run of checkpoints, and its content type.
    pub fn checkpoint_body(&self, batch: &[CheckpointRecord]) -> (Vec<u8>, &'static str) {
        let mut out = Vec::with_capacity(batch.iter().map(|r| r.json.len() + 160).sum());
        match self.format {
            HttpFormat::Ndjson | HttpFormat::JsonArray => {
                plain_body(self.format, batch.iter().map(|r| r.json.as_str()), out)
            }
            HttpFormat::SplunkHec => {
                let (source, _, index) = &self.splunk;
                for r in batch {
                    let time = chrono::DateTime::parse_from_rfc3339(&r.checkpoint.time)
                        .map(|t| json!(t.timestamp_millis() as f64 / 1000.0))
                        .unwrap_or(Value::Null);
                    let mut envelope = json!({
                        "time": time, "source": source, "sourcetype": self.checkpoint_sourcetype,
                        "fields": {"chain": r.checkpoint.chain, "seq": r.checkpoint.seq},
                        "event": r.checkpoint,
                    });
                    if let Some(index) = index {
                        envelope["index"] = Value::String(index.clone());
                    }
                    out.extend_from_slice(envelope.to_string().as_bytes());
                    out.push(b'\n');
                }
                (out, "application/json")
            }
            HttpFormat::Elasticsearch => {
                for r in batch {
                    bulk_create(&mut out, &self.checkpoints_index, &r.id(), &r.json);
                }
                (out, "application/x-ndjson")
            }
        }
    }

    async fn post(&self, url: &str, body: Vec<u8>, content_type: &'static str) -> Result<reqwest::Response, SinkError> {
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError::retriable(format!("POST {url}: {}", error_chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let reason = format!("POST {url}: HTTP {status}: {}", text.chars().take(300).collect::<String>());
        Err(classify(status, reason, retry_after))
    }

    /// The elasticsearch format: `_bulk` create, then sort 409s into duplicates and conflicts.
    async fn write_bulk(&self, batch: &[SinkRecord]) -> Result<WriteOutcome, SinkError> {
        let (body, content_type) = self.body(batch);
        let mut response: Value = self
            .post(&self.url, body, content_type)
            .await?
            .json()
            .await
            .map_err(|e| SinkError::retriable(format!("_bulk response: {e}")))?;
        let items = match response["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        };
        if items.len() != batch.len() {
            return Err(SinkError::retriable(format!(
                "_bulk answered {} items for {} events",
                items.len(),
                batch.len()
            )));
        }
        let mut outcome = WriteOutcome::default();
        let mut existing = Vec::new();
        let mut retry: Option<String> = None;
        for (i, item) in items.iter().enumerate() {
            let item = item.get("create").unwrap_or(item);
            let status = item["status"].as_u64().unwrap_or(0) as u16;
            match status {
                200..=299 => outcome.written += 1,
                409 => existing.push(i),
                _ => {
                    let reason = format!("event {}: {} {}", batch[i].event_id, status, item["error"]);
                    match classify(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), reason, None) {
                        SinkError::Retriable { reason, .. } => retry = Some(reason),
                        other => return Err(other),
                    }
                }
            }
        }
        if let Some(reason) = retry {
            // Items created in this attempt come back as 409 with the same hash: duplicates.
            return Err(SinkError::retriable(reason));
        }
        if existing.is_empty() {
            return Ok(outcome);
        }
        let stored = self.stored_hashes(existing.iter().map(|i| batch[*i].event_id.as_str())).await?;
        let mut conflicts = Vec::new();
        for i in existing {
            let r = &batch[i];
            match stored.get(&r.event_id) {
                Some(h) if *h != r.hash => {
                    conflicts.push(r);
                    outcome.conflicts.push(r.conflict_with(h.clone()));
                }
                _ => outcome.duplicates += 1,
            }
        }
        if !conflicts.is_empty() {
            let mut body = Vec::new();
            for r in conflicts {
                let stored_hash = stored.get(&r.event_id).cloned().unwrap_or_default();
                let record = json!({
                    "eventId": r.event_id, "storedHash": stored_hash, "incomingHash": r.hash,
                    "incomingEvent": r.event, "kafkaPartition": r.partition, "kafkaOffset": r.offset,
                });
                bulk_create(
                    &mut body,
                    &self.conflicts_index,
                    &format!("{}:{}", r.event_id, r.hash),
                    &record.to_string(),
                );
            }
            let response: Value = self
                .post(&self.url, body, "application/x-ndjson")
                .await?
                .json()
                .await
                .map_err(|e| SinkError::retriable(format!("_bulk response: {e}")))?;
            if response["errors"].as_bool() == Some(true) {
                let failed = response["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| i.get("create").unwrap_or(i))
                    .find(|i| !matches!(i["status"].as_u64(), Some(200..=299 | 409)));
                if let Some(item) = failed {
                    return Err(SinkError::retriable(format!("keeping a conflict: {item}")));
                }
            }
        }
        Ok(outcome)
    }

    async fn stored_hashes(&self, ids: impl Iterator<Item = &str>) -> Result<HashMap<String, String>, SinkError> {
        let ids: Vec<&str> = ids.collect();
        let url = format!("{}?_source_includes=integrity.hash", self.mget_url);
        let body = serde_json::to_vec(&json!({ "ids": ids })).unwrap_or_default();
        let response: Value = self
            .post(&url, body, "application/json")
            .await?
            .json()
            .await
            .map_err(|e| SinkError::retriable(format!("_mget response: {e}")))?;
        let mut out = HashMap::new();
        for doc in response["docs"].as_array().into_iter().flatten() {
            if let (Some(id), Some(hash)) = (doc["_id"].as_str(), doc["_source"]["integrity"]["hash"].as_str()) {
                out.insert(id.to_owned(), hash.to_owned());
            }
        }
        Ok(out)
    }
}

/// An `ndjson` or `json_array` body of `items` (JSON texts) in `out`, and its content type.
fn plain_body<'a>(
    format: HttpFormat,
    items: impl Iterator<Item = &'a str>,
    mut out: Vec<u8>,
) -> (Vec<u8>, &'static str) {
    if format == HttpFormat::Ndjson {
        for item in items {
            out.extend_from_slice(item.as_bytes());
            out.push(b'\n');
        }
        return (out, "application/x-ndjson");
    }
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    out.push(b']');
    (out, "application/json")
}

fn bulk_create(out: &mut Vec<u8>, index: &str, id: &str, source: &str) {
    let action = json!({"create": {"_index": index, "_id": id}});
    out.extend_from_slice(action.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(source.as_bytes());
    out.push(b'\n');
}

/// Splunk's `time`: epoch seconds (milliseconds as decimals) of `context.occurredAt`.
fn splunk_time(event: &Value) -> Value {
    event["context"]["occurredAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| json!(t.timestamp_millis() as f64 / 1000.0))
        .unwrap_or(Value::Null)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).num_milliseconds().clamp(0, 3_600_000);
    Some(Duration::from_millis(wait as u64))
}

/// Classifies an HTTP status once.
pub fn classify(status: StatusCode, reason: String, retry_after: Option<Duration>) -> SinkError {
    match status.as_u16() {
        408 | 425 | 429 | 500..=599 => SinkError::Retriable { reason, retry_after },
        401 | 403 | 404 | 405 => SinkError::fatal(reason),
        _ => SinkError::poison(reason),
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn prepare(&self, _partition: i32) -> Result<Option<i64>, SinkError> {
        Ok(None)
    }

    async fn write(&self, batch: &[SinkRecord]) -> Result<WriteOutcome, SinkError> {
        if self.format == HttpFormat::Elasticsearch {
            return self.write_bulk(batch).await;
        }
        let (body, content_type) = self.body(batch);
        self.post(&self.url, body, content_type).await?;
        Ok(WriteOutcome { written: batch.len() as u64, ..WriteOutcome::default() })
    }

    async fn write_checkpoints(&self, batch: &[CheckpointRecord]) -> Result<WriteOutcome, SinkError> {
        let (body, content_type) = self.checkpoint_body(batch);
        let response = self.post(&self.url, body, content_type).await?;
        if self.format != HttpFormat::Elasticsearch {
            return Ok(WriteOutcome { written: batch.len() as u64, ..WriteOutcome::default() });
        }
        let response: Value =
            response.json().await.map_err(|e| SinkError::retriable(format!("_bulk response: {e}")))?;
        let mut outcome = WriteOutcome::default();
        for item in response["items"].as_array().into_iter().flatten() {
            let item = item.get("create").unwrap_or(item);
            match item["status"].as_u64() {
                Some(200..=299) => outcome.written += 1,
                // The id names the signed content: already there is the same checkpoint.
                Some(409) => outcome.duplicates += 1,
                status => {
                    let status = StatusCode::from_u16(status.unwrap_or(502) as u16).unwrap_or(StatusCode::BAD_GATEWAY);
                    return Err(classify(status, format!("checkpoint: {} {}", status, item["error"]), None));
                }
            }
        }
        if outcome.written + outcome.duplicates != batch.len() as u64 {
            return Err(SinkError::retriable(format!(
                "_bulk answered {} items for {} checkpoints",
                outcome.written + outcome.duplicates,
                batch.len()
            )));
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), String::new(), None);
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(c(s), SinkError::Retriable { .. }), "{s}");
        }
        for s in [401, 403, 404] {
            assert!(matches!(c(s), SinkError::Fatal { .. }), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(matches!(c(s), SinkError::Poison { .. }), "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&soon).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
