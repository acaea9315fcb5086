//! The axum layer gives each request an audit context, and events logged through the extractor
//! reach the broker with it; the request body is never part of the event.

use std::net::SocketAddr;
use std::time::Duration;

use audit_producer::axum_layer::{Audit, AuditLayer, REQUEST_ID};
use audit_producer::{Actor, AuditEventInput, AuditLogger, Outcome};
use audit_schema::{codec, ValidationOptions};
use audit_tests::kafka::{create_topic, read_shared_topic};
use audit_tests::kafka_bootstrap;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::post;
use axum::Router;
use http::{Request, StatusCode};
use tower::ServiceExt;

async fn login(audit: Audit, _body: String) -> StatusCode {
    let event = AuditEventInput::new("user.login", Outcome::Success, Actor::new("user", "ada"));
    audit.log(event).await.map(|_| StatusCode::OK).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_log_with_the_request_context_and_never_the_body() {
    let topic = create_topic(&kafka_bootstrap(), 1, &[]).await;
    let spool = tempfile::tempdir().unwrap();
    let logger = AuditLogger::builder("web")
        .brokers(kafka_bootstrap())
        .topic(&topic)
        .spool_dir(spool.path())
        .build()
        .await
        .unwrap();
    let layer = AuditLayer::new(logger.clone()).trusted_proxies(["10.0.0.0/8"]).unwrap();
    let peer: SocketAddr = "10.1.1.1:5555".parse().unwrap();
    let app = Router::new().route("/login", post(login)).layer(layer);

    let mut request = Request::post("/login")
        .header(REQUEST_ID, "req-abc-1")
        .header("user-agent", "curl/8.5")
        .header("x-forwarded-for", "198.51.100.23, 10.2.2.2")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(Body::from(r#"{"user":"ada","password":"hunter2"}"#))
        .unwrap();
    // What axum's `into_make_service_with_connect_info` puts on each request.
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[REQUEST_ID], "req-abc-1");

    // Without a request id one is generated and echoed.
    let response = app.oneshot(Request::post("/login").body(Body::empty()).unwrap()).await.unwrap();
    let generated = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 26, "a ULID");

    let report = logger.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.pending, 0);
    let records = read_shared_topic(&topic, 2);
    assert_eq!(records.len(), 2);
    let first = codec::decode_input(&records[0].payload, ValidationOptions::STRICT).unwrap().event;
    assert_eq!(first.context.request_id.as_deref(), Some("req-abc-1"));
    assert_eq!(first.context.ip.as_deref(), Some("198.51.100.23"), "client behind a trusted proxy");
    assert_eq!(first.context.user_agent.as_deref(), Some("curl/8.5"));
    assert_eq!(first.context.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(records[0].traceparent.as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    let text = String::from_utf8_lossy(&records[0].payload);
    assert!(!text.contains("hunter2"), "the request body is never captured: {text}");
    let second = codec::decode_input(&records[1].payload, ValidationOptions::STRICT).unwrap().event;
    assert_eq!(second.context.request_id.as_deref(), Some(generated.as_str()));
}
