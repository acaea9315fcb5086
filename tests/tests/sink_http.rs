//! HTTP-specific behaviour of the sink against a real HTTP server in this process: the receiver
//! answering 503 (with `Retry-After`) for a while loses nothing, a 401 stops the sink with a clear
//! message, an event the receiver refuses (400) is isolated and dead-lettered while its neighbours
//! are stored, and the generic NDJSON / JSON array and Splunk HEC bodies carry every event with the
//! configured credentials.

use std::time::{Duration, Instant};

use audit_tests::http_receiver::Receiver;
use audit_tests::kafka::read_topic;
use audit_tests::pipeline::terminate;
use audit_tests::sinks::{http_get, metric, spawn_sink, wait_stored, Processed, Target};
use audit_tests::stores::http::HttpTarget;
use audit_tests::unique_name;
use serde_json::Value;

const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

fn sorted_ids<'a>(events: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut ids: Vec<String> = events.map(|e| e["eventId"].as_str().unwrap_or("?").to_owned()).collect();
    ids.sort();
    ids
}

fn log_text(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_503_for_a_while_loses_nothing_once_it_recovers() {
    let target = HttpTarget::new();
    let mut processed = Processed::create(2).await;
    processed.publish(100);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, &target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    assert_eq!(wait_stored(&target, 100, Duration::from_secs(60)).values().map(Vec::len).sum::<usize>(), 100);

    target.receiver.fail_for(503, Duration::from_secs(8), Some(1));
    processed.publish(200);
    let mut retries = 0.0;
    for _ in 0..100 {
        retries = metric(&http_get(sink.port, "/metrics").unwrap_or_default(), "audit_sink_retries_total");
        if retries >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(retries >= 3.0, "503s are retried ({retries}); log: {}", log_text(&log));
    assert!(sink.child.try_wait().unwrap().is_none(), "the sink stays up during the outage");
    assert!(target.receiver.state().failures_served >= 3);

    let stored = wait_stored(&target, 300, Duration::from_secs(90));
    assert_eq!(sorted_ids(stored.values().flatten()), sorted_ids(processed.published.values().flatten()));
    for (p, events) in &stored {
        let report = audit_tests::pipeline::verify(events);
        assert!(report.is_intact(), "partition {p}: {:?}", report.first_break());
    }
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_stop_the_sink_with_a_clear_message() {
    let target = HttpTarget::new();
    target.receiver.state().authorization = Some("Bearer another-token".into());
    let mut processed = Processed::create(1).await;
    processed.publish(5);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, &target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = sink.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the sink should stop on 401");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "a fatal error exits non-zero");
    let text = log_text(&log);
    assert!(text.contains("401"), "the message names the status: {text}");
    assert!(!text.contains("s3cret-token-for-tests"), "the secret never reaches the log");
    assert!(target.read_back().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_receiver_refuses_is_dead_lettered_and_its_neighbours_are_stored() {
    let target = HttpTarget::new();
    let mut processed = Processed::create(1).await;
    processed.publish(40);
    let refused = processed.published[&0][17]["eventId"].as_str().unwrap().to_owned();
    target.receiver.state().refuse_event = Some(refused.clone());
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, &target, &processed.bootstrap, &processed.topic, &group, &log, &[]);
    let stored = wait_stored(&target, 39, Duration::from_secs(60));
    let want: Vec<String> =
        sorted_ids(processed.published[&0].iter()).into_iter().filter(|id| *id != refused).collect();
    assert_eq!(sorted_ids(stored.values().flatten()), want, "log: {}", log_text(&log));
    let dead =
        read_topic(&processed.bootstrap, &format!("{}.dlq.{group}", processed.topic), 1, Duration::from_secs(10));
    assert_eq!(dead.len(), 1, "the refused event is dead-lettered");
    assert_eq!(dead[0].header("audit.source.offset"), Some("17"));
    assert_eq!(dead[0].header("audit.sink"), Some("http"));
    assert!(dead[0].header("audit.error.reason").unwrap_or_default().contains("mapper_parsing_exception"));
    terminate(&sink.child);
    sink.child.wait().unwrap();
}

/// Runs a sink with `env` against `receiver` until `n` events and then the signed checkpoint
/// published after them were posted; what was posted.
async fn post_through(receiver: &Receiver, env: &[(&str, &str)], n: u64) -> (Processed, Vec<Value>) {
    let mut processed = Processed::create(1).await;
    processed.publish(n);
    processed.publish_checkpoints(&audit_schema::checkpoint::SigningKey::from_seed(&[3; 32]));
    let n = n + 1;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let none = NoTarget;
    let mut sink = spawn_sink(SINK, &none, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, env);
    let started = Instant::now();
    while (receiver.state().posted.len() as u64) < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "posted {} of {n}; log: {}",
            receiver.state().posted.len(),
            log_text(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
    let posted = receiver.state().posted.clone();
    (processed, posted)
}

/// A target whose settings all come from the test's extra environment.
struct NoTarget;

impl Target for NoTarget {
    fn name(&self) -> &'static str {
        "http"
    }
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn read_back(&self) -> std::collections::BTreeMap<i32, Vec<Value>> {
        Default::default()
    }
    fn conflicts(&self) -> Option<usize> {
        None
    }
    fn checkpoints(&self) -> Vec<Value> {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_and_json_array_bodies_carry_every_event_as_published() {
    for (format, content_type) in [("ndjson", "application/x-ndjson"), ("json_array", "application/json")] {
        let receiver = Receiver::start();
        receiver.state().authorization = Some("Basic YXVkaXRvcjpwQHNz".into()); // auditor:p@ss
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "p@ss\n").unwrap();
        let url = receiver.url("/ingest");
        let file = secret.path().display().to_string();
        let env = [
            ("AUDIT_STORE__KIND", "http"),
            ("AUDIT_STORE__FORMAT", format),
            ("AUDIT_STORE__URL", url.as_str()),
            ("AUDIT_STORE__AUTH__SCHEME", "basic"),
            ("AUDIT_STORE__AUTH__USERNAME", "auditor"),
            ("AUDIT_STORE__AUTH__SECRET_FILE", file.as_str()),
            ("AUDIT_STORE__HEADERS__X-Audit-Source", "auditstream-tests"),
        ];
        let (processed, posted) = post_through(&receiver, &env, 60).await;
        assert_eq!(posted[..60], processed.published[&0], "{format}: every event, in order, exactly as published");
        assert_eq!(posted[60..], processed.checkpoints, "{format}: then the signed checkpoint, as itself");
        let state = receiver.state();
        let request = state.requests.iter().find(|r| r.uri == "/ingest").expect("a request");
        assert_eq!(request.headers.get("content-type").map(String::as_str), Some(content_type), "{format}");
        assert_eq!(request.headers.get("x-audit-source").map(String::as_str), Some("auditstream-tests"));
        if format == "ndjson" {
            let text = String::from_utf8(request.body.clone()).unwrap();
            assert!(text.ends_with('\n') && text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
        } else {
            assert!(serde_json::from_slice::<Vec<Value>>(&request.body).is_ok(), "a JSON array");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_events_carry_time_source_and_the_token() {
    let receiver = Receiver::start();
    receiver.state().authorization = Some("Splunk 0e5b-hec-token".into());
    let url = receiver.url("/services/collector/event");
    let env = [
        ("AUDIT_STORE__KIND", "http"),
        ("AUDIT_STORE__FORMAT", "splunk_hec"),
        ("AUDIT_STORE__URL", url.as_str()),
        ("AUDIT_STORE__INDEX", "audit"),
        ("AUDIT_STORE__AUTH__SCHEME", "splunk"),
        ("AUDIT_STORE__AUTH__SECRET_ENV", "TEST_HEC_TOKEN"),
        ("TEST_HEC_TOKEN", "0e5b-hec-token"),
    ];
    let (processed, posted) = post_through(&receiver, &env, 30).await;
    assert_eq!(posted[..30], processed.published[&0], "every event, in order, exactly as published");
    assert_eq!(posted[30..], processed.checkpoints, "then the signed checkpoint");
    let state = receiver.state();
    let last = state.requests.iter().rev().find(|r| r.uri.starts_with("/services/collector")).expect("a request");
    let envelope: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(envelope["sourcetype"], "auditstream:checkpoint");
    assert_eq!(envelope["fields"]["chain"], processed.checkpoints[0]["chain"]);
    let body = &state.requests.iter().find(|r| r.uri.starts_with("/services/collector")).expect("a request").body;
    let first: Value = serde_json::Deserializer::from_slice(body).into_iter::<Value>().next().unwrap().unwrap();
    assert_eq!(first["sourcetype"], "auditstream:event");
    assert_eq!(first["source"], "auditstream");
    assert_eq!(first["index"], "audit");
    assert_eq!(first["fields"]["eventId"], first["event"]["eventId"]);
    let occurred = chrono_like_seconds(first["event"]["context"]["occurredAt"].as_str().unwrap());
    assert!((first["time"].as_f64().unwrap() - occurred).abs() < 0.001, "time is occurredAt in epoch seconds");
}

/// Epoch seconds of an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS(.fff)Z` (days from the civil date).
fn chrono_like_seconds(t: &str) -> f64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let frac: f64 = t[19..].trim_end_matches('Z').parse::<f64>().unwrap_or(0.0);
    secs as f64 + frac
}
