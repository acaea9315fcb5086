//! Logs (`tracing` to stderr, text or JSON) and, when `telemetry.otlp_endpoint` is set, OpenTelemetry
//! spans exported over OTLP/HTTP (protobuf, plain HTTP: point it at a local collector).
//!
//! Each lane emits one `audit.process_batch` span per batch of records it takes from its queue,
//! with the raw partition and offsets as attributes and a span link to every producer span whose
//! `traceparent` the records carried, so a trace viewer can follow an event from the application
//! that logged it into the processor.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryConfig;

/// Keeps the span exporter alive; [`Telemetry::shutdown`] flushes it.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global `tracing` subscriber.
    pub fn init(config: &TelemetryConfig) -> Result<Telemetry, String> {
        let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| format!("telemetry.log_filter: {e}"))?;
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let fmt = if config.log_format == "json" {
            tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
        } else {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        };
        let (provider, otel) = match &config.otlp_endpoint {
            Some(endpoint) => {
                // reqwest (shared with the HTTP sink) takes rustls without a built-in crypto
                // provider: install ring before the exporter builds its client.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
                    .build();
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("audit-processor"))
                    .with_filter(tracing_subscriber::filter::filter_fn(|m| m.name().starts_with("audit.")));
                (Some(provider), Some(layer))
            }
            None => (None, None),
        };
        tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init().map_err(|e| e.to_string())?;
        Ok(Telemetry { provider })
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(error) = p.shutdown() {
                eprintln!("audit-processor: span export shutdown: {error}");
            }
        }
    }
}

/// The remote span a `traceparent` header names, for a span link.
pub fn span_context(traceparent: &[u8]) -> Option<SpanContext> {
    let text = std::str::from_utf8(traceparent).ok()?;
    let mut parts = text.trim().split('-');
    let (_version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, TraceState::default()))
}
