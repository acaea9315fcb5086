//! A small service that audits logins and invoice updates (with a diff) through the axum layer.
//!
//! ```sh
//! scripts/services up && eval "$(scripts/services env)"
//! cargo run -p audit-producer --features axum --example axum_app
//! curl -s -XPOST localhost:3000/login -H 'content-type: application/json' -d '{"user":"ada","password":"hunter2"}'
//! curl -s -XPUT localhost:3000/invoices/inv-7 -H 'x-tenant-id: tenant-a' -H 'content-type: application/json' -d '{"status":"paid"}'
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use audit_producer::axum_layer::{Audit, AuditLayer};
use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Diff, Outcome, Target};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(Default)]
struct Invoices(std::collections::HashMap<String, Value>);

fn tenant(headers: &HeaderMap) -> Context {
    let tenant_id = headers.get("x-tenant-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Context { tenant_id, ..Context::default() }
}

async fn login(audit: Audit, headers: HeaderMap, Json(body): Json<Value>) -> StatusCode {
    let user = body["user"].as_str().unwrap_or("unknown").to_owned();
    // The password is checked, never logged: the event carries no request body.
    let ok = body["password"].as_str() == Some("hunter2");
    let outcome = if ok { Outcome::Success } else { Outcome::Failure };
    let mut event = AuditEventInput::new("user.login", outcome, Actor::new("user", user));
    event.context = tenant(&headers);
    if !ok {
        event.metadata = Some(json!({"reason": "bad_credentials"}).as_object().cloned().unwrap_or_default());
    }
    match audit.log(event).await {
        Ok(_) if ok => StatusCode::OK,
        Ok(_) => StatusCode::UNAUTHORIZED,
        // An audit trail that cannot be written fails the request rather than hiding the action.
        Err(e) => {
            tracing::error!(error = %e, "audit log failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn update_invoice(
    audit: Audit,
    State(store): State<Arc<Mutex<Invoices>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(after): Json<Value>,
) -> StatusCode {
    let before = store.lock().await.0.insert(id.clone(), after.clone()).unwrap_or(json!({"status": "draft"}));
    let mut event = AuditEventInput::new("billing.invoice.update", Outcome::Success, Actor::new("user", "u-42"));
    event.target = Some(Target::new("invoice", id));
    event.context = tenant(&headers);
    event.diff = Some(Diff { before: Some(before), after: Some(after) });
    match audit.log(event).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(e) => {
            tracing::error!(error = %e, "audit log failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let brokers = std::env::var("AUDIT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let logger =
        AuditLogger::builder("example-billing").brokers(brokers).topic("audit.raw").environment("dev").build().await?;
    let layer = AuditLayer::new(logger.clone()).trusted_proxies(["127.0.0.1"])?;
    let app = Router::new()
        .route("/login", post(login))
        .route("/invoices/{id}", put(update_invoice))
        .with_state(Arc::new(Mutex::new(Invoices::default())))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = logger.shutdown(Duration::from_secs(10)).await;
    tracing::info!(?report, "audit producer stopped");
    Ok(())
}
