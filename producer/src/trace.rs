//! W3C trace context: the current OpenTelemetry span travels with each event in a `traceparent`
//! record header, and fills `context.traceId` / `context.spanId` when the caller left them empty.

use audit_schema::Context;
use opentelemetry::trace::TraceContextExt;

/// Record header name.
pub const TRACEPARENT: &str = audit_schema::wire::headers::TRACEPARENT;

/// Fills the event's trace ids from the current OpenTelemetry context (when it has a valid span and
/// the event has none) and returns the `traceparent` header for the record.
pub(crate) fn apply_current(context: &mut Context) -> Option<String> {
    let current = opentelemetry::Context::current();
    let span = current.span();
    let sc = span.span_context();
    if sc.is_valid() {
        let trace_id = sc.trace_id().to_string();
        let span_id = sc.span_id().to_string();
        let header = format!("00-{trace_id}-{span_id}-{:02x}", sc.trace_flags().to_u8());
        if context.trace_id.is_none() {
            context.trace_id = Some(trace_id);
            context.span_id = Some(span_id);
        }
        return Some(header);
    }
    match (&context.trace_id, &context.span_id) {
        (Some(t), Some(s)) => Some(format!("00-{t}-{s}-01")),
        _ => None,
    }
}

/// Parses a `traceparent` value into (trace id, span id), when well formed.
pub fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace_id.to_owned(), span_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents_only() {
        let ok = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(ok, Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), "00f067aa0ba902b7".into())));
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_current_opentelemetry_span_becomes_the_header_and_fills_the_event() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _guard = opentelemetry::Context::new().with_remote_span_context(sc).attach();
        let mut c = Context::default();
        let header = apply_current(&mut c);
        assert_eq!(header.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(c.trace_id.as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(c.span_id.as_deref(), Some("b7ad6b7169203331"));
    }

    #[test]
    fn event_trace_ids_become_the_header_without_a_current_span() {
        let mut c = Context {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            span_id: Some("00f067aa0ba902b7".into()),
            ..Context::default()
        };
        assert_eq!(apply_current(&mut c).as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(apply_current(&mut Context::default()), None);
    }
}
