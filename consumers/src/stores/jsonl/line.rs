//! The JSONL sink's event lines as `verify` reads them: one pass over each line's bytes checks
//! that the stored text is the canonical form the processor published (byte for byte), takes the
//! fields verification needs, and finds the `integrity.hash` member to leave out of the hash;
//! one more pass hashes the text as it stands.
//!
//! Nothing is parsed into a map and nothing re-serialized: the canonical check works on the bytes
//! (`audit_schema::canonical::check_text_visiting`), and the hash covers the stored bytes
//! themselves, which is the event's hash exactly when they are canonical. A line this path does not
//! take as it stands (not the sink's shape, not canonical, a field missing or of another type, a
//! hash that does not match) is read the general way by the caller, which reports what is wrong;
//! so this path only ever decides for lines that are intact in every respect it checks.

use std::borrow::Cow;
use std::ops::Range;

use audit_schema::canonical::{check_text, check_text_visiting, NameSpan, TextForm};

use crate::stores::read::{LinkOnly, ReadFilter, Stored};

/// The event text of a JSONL event line exactly as the sink writes it,
/// `{"partition":p,"offset":o,"event":<the event in canonical form>}`, or why the line is not that.
pub(crate) fn sink_event_text(line: &[u8]) -> Result<&[u8], String> {
    let event = event_span(line).ok_or("not {\"partition\":P,\"offset\":O,\"event\":…} without whitespace")?;
    check_text(event, TextForm::Canonical).map_err(|e| format!("the event is not in canonical form at {e}"))?;
    Ok(event)
}

/// The text after `"event":` of a line of the sink's shape (its partition and offset canonical
/// integers, no whitespace), not yet checked itself.
fn event_span(line: &[u8]) -> Option<&[u8]> {
    let integer = |s: &[u8]| !s.is_empty() && check_text(s, TextForm::Canonical).is_ok() && !s.contains(&b'.');
    let rest = line.strip_prefix(b"{\"partition\":")?;
    let comma = rest.iter().position(|b| *b == b',')?;
    let rest = rest.strip_prefix(&rest[..comma]).filter(|_| integer(&rest[..comma]))?;
    let rest = rest.strip_prefix(b",\"offset\":")?;
    let comma = rest.iter().position(|b| *b == b',')?;
    let rest = rest.strip_prefix(&rest[..comma]).filter(|_| integer(&rest[..comma]))?;
    rest.strip_prefix(b",\"event\":")?.strip_suffix(b"}")
}

/// Where the members verification reads are in an event's text (each the value's bytes).
#[derive(Debug, Default)]
struct Spans {
    action: Option<Range<usize>>,
    event_id: Option<Range<usize>>,
    received_at: Option<Range<usize>>,
    context: Option<Range<usize>>,
    tenant: Option<Range<usize>>,
    integrity: Option<Range<usize>>,
    chain: Option<Range<usize>>,
    seq: Option<Range<usize>>,
    prev_hash: Option<Range<usize>>,
    /// The name and the value of `integrity.hash`.
    hash: Option<(NameSpan, Range<usize>)>,
    source: Option<Range<usize>>,
    offset: Option<Range<usize>>,
}

impl Spans {
    /// Notes the member at `path` (names as written) if it is one verification reads.
    fn visit(&mut self, text: &[u8], path: &[NameSpan], value: Range<usize>) {
        let name = |i: usize| &text[path[i].clone()];
        let slot = match path.len() {
            1 => match name(0) {
                b"action" => &mut self.action,
                b"eventId" => &mut self.event_id,
                b"receivedAt" => &mut self.received_at,
                b"context" => &mut self.context,
                b"integrity" => &mut self.integrity,
                _ => return,
            },
            2 => match (name(0), name(1)) {
                (b"context", b"tenantId") => &mut self.tenant,
                (b"integrity", b"chain") => &mut self.chain,
                (b"integrity", b"seq") => &mut self.seq,
                (b"integrity", b"prevHash") => &mut self.prev_hash,
                (b"integrity", b"source") => &mut self.source,
                (b"integrity", b"hash") => {
                    self.hash = Some((path[1].clone(), value));
                    return;
                }
                _ => return,
            },
            3 => match (name(0), name(1), name(2)) {
                (b"integrity", b"source", b"offset") => &mut self.offset,
                _ => return,
            },
            _ => return,
        };
        *slot = Some(value);
    }
}

/// The fields of an event's text, as verification reads them; `None` when one it needs is missing
/// or of another type (read the general way then).
struct Fields<'a> {
    event_id: Cow<'a, str>,
    action: Cow<'a, str>,
    received_at: Option<Cow<'a, str>>,
    tenant: Option<Cow<'a, str>>,
    chain: Cow<'a, str>,
    seq: u64,
    prev_hash: Cow<'a, str>,
    hash: Cow<'a, str>,
    source_offset: Option<i64>,
}

impl<'a> Fields<'a> {
    fn read(text: &'a [u8], spans: &Spans) -> Option<Fields<'a>> {
        let at = |span: &Option<Range<usize>>| span.clone().map(|r| &text[r]);
        let required = |span: &Option<Range<usize>>| at(span).and_then(string);
        // An optional member may be absent or null; any other type is not what the writer writes.
        let optional = |span: &Option<Range<usize>>| match at(span) {
            None | Some(b"null") => Some(None),
            Some(value) => string(value).map(Some),
        };
        let object_or_null = |span: &Option<Range<usize>>| match at(span) {
            None | Some(b"null") => Some(false),
            Some(value) => value.starts_with(b"{").then_some(true),
        };
        at(&spans.integrity).filter(|i| i.starts_with(b"{"))?;
        let tenant = if object_or_null(&spans.context)? { optional(&spans.tenant)? } else { None };
        let source_offset = match object_or_null(&spans.source)? {
            false => None,
            true => match at(&spans.offset) {
                None | Some(b"null") => None,
                Some(value) => Some(std::str::from_utf8(value).ok()?.parse::<i64>().ok()?),
            },
        };
        Some(Fields {
            event_id: required(&spans.event_id)?,
            action: required(&spans.action)?,
            received_at: optional(&spans.received_at)?,
            tenant,
            chain: required(&spans.chain)?,
            // A canonical integer: digits without sign, point or exponent parse as they read.
            seq: std::str::from_utf8(at(&spans.seq)?).ok()?.parse::<u64>().ok()?,
            prev_hash: required(&spans.prev_hash)?,
            hash: string(&text[spans.hash.clone()?.1])?,
            source_offset,
        })
    }
}

/// A JSON string's value (`text` with its quotes), borrowed when it has no escape.
fn string(text: &[u8]) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        return serde_json::from_slice::<String>(text).ok().map(Cow::Owned);
    }
    std::str::from_utf8(inner).ok().map(Cow::Borrowed)
}

/// The bytes of the member `"hash":"…"` (name span `name`, value `value`) together with the comma
/// that separates it from a neighbour, so that the rest is the event without it, still canonical
/// (`None` when its value is not a string without escapes).
fn hash_member(text: &[u8], name: &NameSpan, value: &Range<usize>) -> Option<Range<usize>> {
    if text.get(value.start) != Some(&b'"') || text[value.clone()].contains(&b'\\') {
        return None;
    }
    // The member starts at its name's opening quote; before that, `,` or the object's `{`.
    let member = name.start.checked_sub(1)?;
    match (text.get(member.checked_sub(1)?)?, text.get(value.end)) {
        (b',', _) => Some(member - 1..value.end),
        (_, Some(b',')) => Some(member..value.end + 1),
        _ => Some(member..value.end),
    }
}

/// The fast path of a JSONL event line written by the sink: its fields read in the pass that
/// checks its text is canonical, its hash computed over the stored text itself. `None` when the
/// line is not of the sink's shape, its event is not canonical, lacks a field or has one of another
/// type, or does not hash to its recorded hash as it stands (the caller then reads it the general
/// way, which reports what is wrong and tells a non-canonical but intact event from a modified
/// one); `Some(None)` for an event the chain filter leaves out.
pub(crate) fn hashed_line(line: &[u8], filter: &ReadFilter) -> Option<Option<Stored>> {
    let event = event_span(line)?;
    let mut spans = Spans::default();
    check_text_visiting(event, TextForm::Canonical, 3, &mut |path, value| spans.visit(event, path, value)).ok()?;
    let fields = Fields::read(event, &spans)?;
    if filter.chain.as_deref().is_some_and(|c| c != fields.chain) {
        return Some(None);
    }
    let (name, value) = spans.hash.as_ref()?;
    let cut = hash_member(event, name, value)?;
    // Every event is hashed, whatever `filter.tenant` says: the tenant is read from the content,
    // and content moved to another tenant must not leave that tenant's verification unhashed.
    if audit_schema::chain::hash_text_without(event, cut) != fields.hash.as_bytes() {
        return None;
    }
    let hash = fields.hash.into_owned();
    let link = LinkOnly {
        chain: fields.chain.into_owned(),
        seq: fields.seq,
        prev_hash: fields.prev_hash.into_owned(),
        hash,
        event_id: fields.event_id.into_owned(),
        source_offset: fields.source_offset,
        received_at: fields.received_at.map(Cow::into_owned),
        tenant: fields.tenant.map(Cow::into_owned),
    };
    Some(Some(Stored::Hashed {
        computed_hash: link.hash.clone(),
        link,
        quarantined: fields.action == audit_schema::wire::QUARANTINE_ACTION,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A processed event as the sink writes it, and its line.
    fn sink_line(event: &serde_json::Value) -> Vec<u8> {
        let mut value = event.clone();
        let mut canonical = Vec::new();
        audit_schema::chain::seal_canonical(&mut value, &mut canonical).unwrap();
        [b"{\"partition\":0,\"offset\":7,\"event\":".as_slice(), &canonical, b"}"].concat()
    }

    fn event() -> serde_json::Value {
        serde_json::json!({
            "action": "a.b", "eventId": "e-1", "receivedAt": "2026-12-05T00:00:00.000Z",
            "context": {"tenantId": "t\n1", "ip": "x"}, "metadata": {"hash": "not this one", "n": [1, {"seq": 2}]},
            "integrity": {"alg": "sha256", "chain": "audit.raw/0", "seq": 3, "prevHash": "00", "hash": "",
                          "source": {"offset": 41, "partition": 0, "topic": "audit.raw"}}
        })
    }

    #[test]
    fn the_fast_path_reads_what_the_general_path_reads() {
        let line = sink_line(&event());
        let Some(Some(Stored::Hashed { link, computed_hash, quarantined })) =
            hashed_line(&line, &ReadFilter::default())
        else {
            panic!("not taken")
        };
        let value: serde_json::Value = serde_json::from_slice(sink_event_text(&line).unwrap()).unwrap();
        let general = audit_schema::chain::ChainLink::from_value(&value, &mut Vec::new()).unwrap();
        assert_eq!(
            (link.chain.as_str(), link.seq, link.prev_hash.as_str(), link.event_id.as_str()),
            (general.chain.as_str(), general.seq, general.prev_hash.as_str(), general.event_id.as_str())
        );
        assert_eq!((&computed_hash, &link.hash), (&general.computed_hash, &general.hash));
        assert_eq!(link.source_offset, Some(41));
        assert_eq!(link.tenant.as_deref(), Some("t\n1"));
        assert_eq!(link.received_at.as_deref(), Some("2026-12-05T00:00:00.000Z"));
        assert!(!quarantined);
        let other = ReadFilter { chain: Some("audit.raw/1".into()), ..ReadFilter::default() };
        assert!(matches!(hashed_line(&line, &other), Some(None)));
    }

    #[test]
    fn whatever_is_not_intact_goes_the_general_way() {
        let line = sink_line(&event());
        let text = String::from_utf8(line.clone()).unwrap();
        let edits = [
            text.replace("\"e-1\"", "\"e-2\""),                       // modified: the hash differs
            text.replace("\"seq\":3", "\"seq\":3.0"),                 // not canonical
            text.replace("\"eventId\":\"e-1\",", ""),                 // no eventId
            text.replace("\"tenantId\":\"t\\n1\"", "\"tenantId\":1"), // a tenant of another type
            text.replace("\"offset\":41", "\"offset\":-0"),           // not canonical
            text.replace(",\"event\":", ", \"event\":"),              // not the sink's shape
        ];
        for edited in edits {
            assert!(hashed_line(edited.as_bytes(), &ReadFilter::default()).is_none(), "{edited}");
        }
    }

    #[test]
    fn the_hash_member_is_cut_with_one_comma() {
        let text = br#"{"i":{"hash":"h","z":1}}"#;
        let name = 7..11;
        assert_eq!(&text[name.clone()], b"hash");
        assert_eq!(hash_member(text, &name, &(13..16)), Some(6..17));
        let text = br#"{"i":{"a":1,"hash":"h"}}"#;
        assert_eq!(hash_member(text, &(13..17), &(19..22)), Some(11..22));
        let text = br#"{"i":{"hash":"h"}}"#;
        assert_eq!(hash_member(text, &(7..11), &(13..16)), Some(6..16));
    }
}
