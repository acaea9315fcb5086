//! The size limits, applied to the sealed event: a payload (`metadata`, `diff`) over its own limit
//! becomes a truncation marker (its size and SHA-256); an event still over the event limit has its
//! payloads truncated too or is refused, as configured.

use std::ops::Range;

use audit_schema::Limits;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{DeadLetter, DeadLetterClass, Pipeline, PAYLOADS};
use crate::config::OversizeBehavior;

/// The marker that replaces a payload, given the payload's canonical bytes.
fn truncation_marker(canonical: &[u8]) -> Value {
    let (bytes, sha256) = (canonical.len(), hex::encode(Sha256::digest(canonical)));
    let mut m = Map::new();
    m.insert("truncated".into(), Value::Bool(true));
    m.insert("originalBytes".into(), Value::from(bytes));
    m.insert("sha256".into(), Value::String(sha256));
    Value::Object(m)
}

impl Pipeline {
    /// Applies the size limits to the sealed event, `bytes` long without its hash, whose canonical
    /// form is `canonical` (`spans` locate the payloads in it). First each payload over its own
    /// limit becomes a truncation marker; then, for an event still over `limits.max_event_bytes`,
    /// the remaining payloads too (TRUNCATE) or the event is refused (REJECT). `Ok(true)`: payloads
    /// were truncated and the event must be sealed and measured again.
    pub(super) fn check_limits(
        &self,
        value: &mut Value,
        limits: &mut Limits,
        bytes: usize,
        canonical: &[u8],
        spans: &[Option<Range<usize>>; 2],
    ) -> Result<bool, DeadLetter> {
        let max = self.limits.max_event_bytes;
        let own_max = [self.limits.max_metadata_bytes, self.limits.max_diff_bytes];
        let done = [limits.metadata_truncated, limits.diff_truncated];
        // The canonical length of each payload still there and not yet a marker.
        let len = |i: usize| spans[i].as_ref().filter(|_| !done[i]).map(Range::len);
        let mut cut = [0, 1].map(|i| len(i).is_some_and(|n| n > own_max[i]));
        if cut == [false, false] {
            if bytes <= max {
                return Ok(false);
            }
            if self.limits.oversize == OversizeBehavior::Truncate {
                cut = [0, 1].map(|i| len(i).is_some());
            }
            if cut == [false, false] {
                return Err(DeadLetter {
                    class: DeadLetterClass::Oversize,
                    reason: format!("event is {bytes} bytes (canonical JSON), over limits.max_event_bytes = {max}"),
                });
            }
        }
        let Some(obj) = value.as_object_mut() else { unreachable!("an event is an object") };
        for (i, span) in spans.iter().enumerate() {
            if let (true, Some(span)) = (cut[i], span) {
                obj.insert(PAYLOADS[i].into(), truncation_marker(&canonical[span.clone()]));
            }
        }
        limits.metadata_truncated |= cut[0];
        limits.diff_truncated |= cut[1];
        obj.insert("limits".into(), serde_json::to_value(*limits).unwrap_or_default());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use audit_schema::codec;
    use serde_json::json;

    use super::*;
    use crate::pipeline::tests::{head, input, pipeline, raw};

    #[test]
    fn metadata_and_diff_over_their_limits_become_truncation_markers() {
        let p = pipeline(|c| {
            c.limits.max_metadata_bytes = 100;
            c.limits.max_diff_bytes = 100;
        });
        let big = "z".repeat(500);
        let out = p.process(
            &raw(1, &input(json!({"metadata": {"blob": big}, "diff": {"before": {"a": 1}, "after": {"a": big}}}))),
            &mut head(),
        );
        let e = &out.event();
        assert!(e.limits.metadata_truncated && e.limits.diff_truncated);
        let marker = e.metadata.as_ref().unwrap();
        assert_eq!(marker["truncated"], true);
        assert_eq!(marker["originalBytes"], 511, "canonical size of {{\"blob\":\"z…\"}}");
        assert_eq!(marker["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(e.diff.as_ref().unwrap()["truncated"], true);
    }

    /// Events of at most 2 KiB, oversized ones truncated; metadata up to `max_metadata_bytes`.
    fn truncating(max_metadata_bytes: usize) -> Pipeline {
        pipeline(|c| {
            c.limits.max_event_bytes = 2048;
            c.limits.max_metadata_bytes = max_metadata_bytes;
            c.limits.max_diff_bytes = 1024;
            c.limits.oversize = OversizeBehavior::Truncate;
        })
    }

    #[test]
    fn oversize_events_are_truncated_when_configured() {
        let p = truncating(2048);
        let meta = (0..40).map(|i| (format!("k{i}"), json!("v".repeat(40)))).collect::<Map<_, _>>();
        let out = p.process(&raw(1, &input(json!({"metadata": meta}))), &mut head());
        assert!(out.dead_letter.is_none());
        assert!(out.event().limits.metadata_truncated);
    }

    #[test]
    fn the_event_limit_is_measured_after_payloads_over_their_own_limits_are_truncated() {
        // metadata breaks its own limit; once it is a marker the event fits, so diff stays whole.
        let p = truncating(1024);
        let payloads = json!({"metadata": {"blob": "m".repeat(1500)}, "diff": {"after": {"a": "d".repeat(600)}}});
        let out = p.process(&raw(1, &input(payloads)), &mut head());
        assert!(out.dead_letter.is_none());
        let e = out.event();
        assert!(e.limits.metadata_truncated && !e.limits.diff_truncated, "{:?}", e.limits);
        assert_eq!(e.diff.as_ref().unwrap()["after"]["a"], "d".repeat(600));
        // The Avro record carries exactly what was hashed, markers included.
        assert_eq!(codec::event_value(&out.encoded).unwrap(), out.value);
    }
}
