//! With `telemetry.otlp_endpoint` set, the processor exports one span per batch over OTLP/HTTP,
//! linked to the producer's span from the `traceparent` each event carried. The OTLP receiver is a
//! real HTTP server in this test process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Outcome};
use audit_tests::pipeline::{terminate, Topology};
use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN_ID: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_exported_as_spans_linked_to_the_producers_trace() {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut all = sink.lock().unwrap();
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        all.extend(ss.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let t = Topology::create(1, None).await;
    let logs = tempfile::tempdir().unwrap();
    let processor = t.spawn_processor(
        PROCESSOR,
        &logs.path().join("processor.log"),
        &[("AUDIT_TELEMETRY__OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    let spool = tempfile::tempdir().unwrap();
    let logger =
        AuditLogger::builder("web").brokers(&t.bootstrap).topic(&t.raw).spool_dir(spool.path()).build().await.unwrap();
    let traced = logger.child(Context {
        tenant_id: Some("tenant-1".into()),
        trace_id: Some(TRACE_ID.into()),
        span_id: Some(SPAN_ID.into()),
        ..Context::default()
    });
    for i in 0..5 {
        traced
            .log(AuditEventInput::new("user.login", Outcome::Success, Actor::new("user", format!("u-{i}"))))
            .await
            .unwrap();
    }
    assert_eq!(logger.shutdown(Duration::from_secs(10)).await.pending, 0);

    let started = Instant::now();
    let linked = |spans: &[Span]| {
        spans
            .iter()
            .any(|s| s.name == "audit.process_batch" && s.links.iter().any(|l| hex::encode(&l.trace_id) == TRACE_ID))
    };
    while !linked(&spans.lock().unwrap()) && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    terminate(&processor);
    let status = tokio::task::spawn_blocking(move || {
        let mut p = processor;
        p.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success());

    let spans = spans.lock().unwrap();
    let batch = spans
        .iter()
        .find(|s| s.name == "audit.process_batch" && s.links.iter().any(|l| hex::encode(&l.trace_id) == TRACE_ID))
        .unwrap_or_else(|| panic!("no batch span linked to the producer's trace among {} spans", spans.len()));
    let link = batch.links.iter().find(|l| hex::encode(&l.trace_id) == TRACE_ID).unwrap();
    assert_eq!(hex::encode(&link.span_id), SPAN_ID);
    let partition = batch.attributes.iter().find(|a| a.key == "partition").expect("a partition attribute");
    assert!(format!("{:?}", partition.value).contains("IntValue(0)"), "{:?}", partition.value);
}
