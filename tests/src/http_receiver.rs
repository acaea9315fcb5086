//! A real HTTP receiver in the test process for the HTTP sink: it speaks enough of the
//! Elasticsearch `_bulk` / `_mget` API (create with `_id`, 409 for an existing id) to be an
//! idempotent store, accepts NDJSON, JSON arrays and Splunk HEC events on any other path, checks
//! the `Authorization` header, and can be told to fail (status + `Retry-After` for a while) or to
//! refuse one event's content (400).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Path and query.
    pub uri: String,
    /// Headers (lower-case names).
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

/// What the receiver holds and how it behaves.
#[derive(Debug, Default)]
pub struct State {
    /// Documents per index, by `_id`.
    pub indices: HashMap<String, HashMap<String, Value>>,
    /// `(index, _id)` in the order documents were first stored.
    pub order: Vec<(String, String)>,
    /// Events posted in the generic and Splunk formats, in arrival order.
    pub posted: Vec<Value>,
    /// Every request (the last 1000).
    pub requests: Vec<Request>,
    /// Answer every request with this status until the instant (then recover).
    pub failing: Option<(StatusCode, Instant, Option<u64>)>,
    /// Requests answered with the failure.
    pub failures_served: u64,
    /// `eventId` whose content is refused (400 in `_bulk` items, 400 for a whole generic batch).
    pub refuse_event: Option<String>,
    /// The `Authorization` header required (401 otherwise).
    pub authorization: Option<String>,
}

/// The receiver; it serves until the test process exits.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Loopback port.
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                    let state = shared.clone();
                    async move { handle(&state, uri, headers, body) }
                });
                let _ = axum::serve(listener, app).await;
            });
        });
        Receiver { port, state }
    }

    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Fails every request with `status` (and `Retry-After: retry_after`) for `duration`.
    pub fn fail_for(&self, status: u16, duration: Duration, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status).expect("status");
        self.state().failing = Some((status, Instant::now() + duration, retry_after));
    }

    /// Documents of `index` in the order they were stored.
    pub fn documents(&self, index: &str) -> Vec<Value> {
        let s = self.state();
        s.order
            .iter()
            .filter(|(i, _)| i == index)
            .filter_map(|(i, id)| s.indices.get(i).and_then(|docs| docs.get(id)).cloned())
            .collect()
    }
}

fn handle(state: &Mutex<State>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let headers: HashMap<String, String> =
        headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())).collect();
    if s.requests.len() >= 1000 {
        s.requests.remove(0);
    }
    s.requests.push(Request { uri: uri.to_string(), headers: headers.clone(), body: body.to_vec() });
    if let Some((status, until, retry_after)) = s.failing {
        if Instant::now() < until {
            s.failures_served += 1;
            let mut r = (status, "receiver told to fail").into_response();
            if let Some(secs) = retry_after {
                r.headers_mut().insert("retry-after", secs.into());
            }
            return r;
        }
        s.failing = None;
    }
    if let Some(want) = &s.authorization {
        if headers.get("authorization") != Some(want) {
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
    }
    let path = uri.path();
    if path.ends_with("/_bulk") {
        bulk(&mut s, path, &body)
    } else if path.ends_with("/_mget") {
        mget(&s, path, &body)
    } else {
        generic(&mut s, path, &body)
    }
}

fn bulk(s: &mut State, path: &str, body: &[u8]) -> Response {
    let default_index = path.trim_start_matches('/').strip_suffix("_bulk").unwrap_or("").trim_end_matches('/');
    let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut items = Vec::new();
    let mut errors = false;
    while let Some(action) = lines.next() {
        let Ok(action) = serde_json::from_slice::<Value>(action) else {
            return (StatusCode::BAD_REQUEST, "bad action line").into_response();
        };
        let Some(source) = lines.next().and_then(|l| serde_json::from_slice::<Value>(l).ok()) else {
            return (StatusCode::BAD_REQUEST, "bad source line").into_response();
        };
        let create = &action["create"];
        let index = create["_index"].as_str().unwrap_or(default_index).to_owned();
        let id = create["_id"].as_str().unwrap_or_default().to_owned();
        let refused = s.refuse_event.is_some() && source["eventId"].as_str() == s.refuse_event.as_deref();
        let docs = s.indices.entry(index.clone()).or_default();
        let item = if refused {
            errors = true;
            json!({"create": {"_index": index, "_id": id, "status": 400,
                "error": {"type": "mapper_parsing_exception", "reason": "refused by the test receiver"}}})
        } else if docs.contains_key(&id) {
            errors = true;
            json!({"create": {"_index": index, "_id": id, "status": 409,
                "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}}})
        } else {
            docs.insert(id.clone(), source);
            s.order.push((index.clone(), id.clone()));
            json!({"create": {"_index": index, "_id": id, "status": 201, "result": "created"}})
        };
        items.push(item);
    }
    axum::Json(json!({"took": 1, "errors": errors, "items": items})).into_response()
}

fn mget(s: &State, path: &str, body: &[u8]) -> Response {
    let index = path.trim_start_matches('/').strip_suffix("/_mget").unwrap_or_default();
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let docs: Vec<Value> = request["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|id| match s.indices.get(index).and_then(|d| d.get(id)) {
            Some(doc) => json!({"_index": index, "_id": id, "found": true,
                "_source": {"integrity": {"hash": doc["integrity"]["hash"]}}}),
            None => json!({"_index": index, "_id": id, "found": false}),
        })
        .collect();
    axum::Json(json!({ "docs": docs })).into_response()
}

fn generic(s: &mut State, path: &str, body: &[u8]) -> Response {
    let mut events = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let Ok(value) = value else { return (StatusCode::BAD_REQUEST, "not JSON").into_response() };
        match value {
            Value::Array(items) => events.extend(items),
            Value::Object(ref o) if path.contains("/services/collector") => {
                events.push(o.get("event").cloned().unwrap_or_default())
            }
            other => events.push(other),
        }
    }
    if s.refuse_event.is_some() && events.iter().any(|e| e["eventId"].as_str() == s.refuse_event.as_deref()) {
        return (StatusCode::BAD_REQUEST, "refused by the test receiver").into_response();
    }
    s.posted.extend(events);
    if path.contains("/services/collector") {
        return axum::Json(json!({"text": "Success", "code": 0})).into_response();
    }
    StatusCode::OK.into_response()
}
