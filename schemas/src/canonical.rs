//! Canonical JSON per RFC 8785 (JSON Canonicalization Scheme).
//!
//! Objects are written with their members sorted by the UTF-16 code units of their names, no
//! whitespace, strings escaped the way ECMAScript's `JSON.stringify` escapes them, and numbers in
//! ECMAScript `Number.prototype.toString` form (via `ryu-js`). Any JCS implementation in another
//! language produces the same bytes; `schemas/testdata/canonical.json` holds vectors to check that.
//!
//! RFC 8785 treats every number as an IEEE 754 double. An integer that a double cannot hold exactly
//! (for example 2^53 + 1) would be silently rounded by other implementations, so two different
//! documents would share one hash; here it is an error instead, and the processor turns such values
//! into strings before it hashes.

use std::cmp::Ordering;
use std::ops::Range;

use serde_json::{Map, Number, Value};

mod text;
pub use text::{check_text, check_text_visiting, MemberVisit, NameSpan, NotCanonical, TextForm};

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// An integer outside what an IEEE 754 double represents exactly.
    #[error("integer {value} at {path} cannot be represented exactly as an IEEE 754 double (RFC 8785 / I-JSON); send it as a string")]
    InexactInteger {
        /// JSON path of the number.
        path: String,
        /// The integer as written.
        value: String,
    },
    /// NaN or an infinity (cannot come from parsed JSON, only from constructed values).
    #[error("number at {path} is not finite")]
    NonFinite {
        /// JSON path of the number.
        path: String,
    },
}

/// The canonical bytes of `value`.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(512);
    canonicalize_into(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical bytes of `value` to `out`.
pub fn canonicalize_into(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    write(value, out, None, &mut []).map(drop)
}

/// Writes without tracking the JSON path; only when that fails, writes again tracking it, so the
/// error can name where the bad number is. On error `out` is left as it was.
fn write<'v>(
    value: &'v Value,
    out: &mut Vec<u8>,
    omit: Option<(&str, &str)>,
    marks: &mut [Mark<'v>],
) -> Result<Option<Gap>, CanonicalError> {
    let start = out.len();
    let mut writer = Writer::new(out, omit, false, marks);
    let fast = writer.value(value);
    if fast.is_ok() {
        return Ok(writer.gap);
    }
    out.truncate(start);
    let tracked = Writer::new(out, omit, true, &mut []).value(value);
    out.truncate(start);
    tracked.and(fast).map(|()| None)
}

/// A top-level member's value whose canonical bytes are wanted on their own: the writer sets
/// `range` to where it wrote `value` (found by identity, not by equality) in the output.
#[derive(Debug)]
pub(crate) struct Mark<'v> {
    /// The value (a reference into the value being written); `None` marks nothing.
    pub(crate) value: Option<&'v Value>,
    /// Its bytes in the output, once written.
    pub(crate) range: Option<Range<usize>>,
}

/// Where a member left out by [`canonicalize_omitting`] belongs in the written bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// Byte offset to insert the member at.
    pub(crate) at: usize,
    /// The member needs a comma before it (it follows another member).
    pub(crate) comma_before: bool,
    /// The member needs a comma after it (it is first and others follow).
    pub(crate) comma_after: bool,
}

/// Appends the canonical bytes of `value` as if the member `inner` of the top-level object member
/// `outer` were absent. The hash chain uses it to hash an event without `integrity.hash` and without
/// copying the event. Returns where the member belongs in `out` (`None` when there is no object
/// `outer`), so it can be put back without writing the whole value again.
/// `marks` get the ranges of the values they name.
pub(crate) fn canonicalize_omitting<'v>(
    value: &'v Value,
    outer: &str,
    inner: &str,
    out: &mut Vec<u8>,
    marks: &mut [Mark<'v>],
) -> Result<Option<Gap>, CanonicalError> {
    write(value, out, Some((outer, inner)), marks)
}

/// True when an integer survives a round trip through an IEEE 754 double.
fn exact_in_double(n: &Number) -> bool {
    if let Some(i) = n.as_i64() {
        // i64 -> f64 -> i128 avoids the saturating cast hiding i64::MIN edge cases.
        (i as f64) as i128 == i as i128 && (i as f64).abs() < 9.3e18
    } else if let Some(u) = n.as_u64() {
        (u as f64) < 1.8446744073709552e19 && (u as f64) as u64 == u
    } else {
        true
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

struct Writer<'a, 'v> {
    out: &'a mut Vec<u8>,
    /// Values whose ranges are wanted.
    marks: &'a mut [Mark<'v>],
    number: ryu_js::Buffer,
    /// `(outer, inner)`: leave out member `inner` of the object at top-level member `outer`.
    omit: Option<(&'a str, &'a str)>,
    /// Containers around the current value.
    depth: usize,
    /// The top-level member being written.
    top_key: Option<&'v str>,
    /// Whether `path` is kept (for errors; costs a push per member).
    track: bool,
    path: Vec<Segment<'v>>,
    /// Where the omitted member belongs, once the object holding it has been written.
    gap: Option<Gap>,
}

impl<'a, 'v> Writer<'a, 'v> {
    fn new(out: &'a mut Vec<u8>, omit: Option<(&'a str, &'a str)>, track: bool, marks: &'a mut [Mark<'v>]) -> Self {
        Writer {
            out,
            marks,
            number: ryu_js::Buffer::new(),
            omit,
            depth: 0,
            top_key: None,
            track,
            path: Vec::new(),
            gap: None,
        }
    }

    fn enter(&mut self, segment: Segment<'v>) {
        if self.track {
            self.path.push(segment);
        }
    }

    fn leave(&mut self) {
        if self.track {
            self.path.pop();
        }
    }

    fn path_string(&self) -> String {
        let mut s = String::from("$");
        for seg in &self.path {
            match seg {
                Segment::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Segment::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }

    fn value(&mut self, value: &'v Value) -> Result<(), CanonicalError> {
        let start = self.out.len();
        self.bare_value(value)?;
        if self.depth == 1 {
            for mark in self.marks.iter_mut().filter(|m| m.value.is_some_and(|v| std::ptr::eq(v, value))) {
                mark.range = Some(start..self.out.len());
            }
        }
        Ok(())
    }

    fn bare_value(&mut self, value: &'v Value) -> Result<(), CanonicalError> {
        match value {
            Value::Null => self.out.extend_from_slice(b"null"),
            Value::Bool(true) => self.out.extend_from_slice(b"true"),
            Value::Bool(false) => self.out.extend_from_slice(b"false"),
            Value::Number(n) => self.number(n)?,
            Value::String(s) => write_string(s, self.out),
            Value::Array(items) => {
                self.out.push(b'[');
                self.depth += 1;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.enter(Segment::Index(i));
                    self.value(item)?;
                    self.leave();
                }
                self.depth -= 1;
                self.out.push(b']');
            }
            Value::Object(map) => self.object(map)?,
        }
        Ok(())
    }

    fn object(&mut self, map: &'v Map<String, Value>) -> Result<(), CanonicalError> {
        let omit = match (self.omit, self.top_key) {
            (Some((outer, inner)), Some(key)) if self.depth == 1 && key == outer => Some(inner),
            _ => None,
        };
        // Map iteration is sorted by UTF-8 bytes (serde_json's map is a BTreeMap unless
        // `preserve_order` is on somewhere in the build), which equals UTF-16 order except when
        // characters above U+FFFF meet U+E000..U+FFFF (UTF-8 lead bytes 0xEE and up); collect and
        // sort only when the order can differ.
        if map_is_sorted() && !map.keys().any(|k| !k.is_ascii() && k.bytes().any(|b| b >= 0xEE)) {
            return self.members(map.iter().filter(|(k, _)| Some(k.as_str()) != omit), omit);
        }
        let mut members: Vec<(&'v String, &'v Value)> = map.iter().filter(|(k, _)| Some(k.as_str()) != omit).collect();
        members.sort_by(|a, b| utf16_cmp(a.0, b.0));
        self.members(members.into_iter(), omit)
    }

    /// Writes the members in the order given; `omitted` (already filtered out) marks its gap.
    fn members(
        &mut self,
        members: impl Iterator<Item = (&'v String, &'v Value)>,
        omitted: Option<&str>,
    ) -> Result<(), CanonicalError> {
        self.out.push(b'{');
        self.depth += 1;
        let mut count = 0;
        for (key, item) in members {
            if self.gap.is_none() && omitted.is_some_and(|inner| utf16_cmp(key, inner) == Ordering::Greater) {
                // Before this member (and before its comma): `…prev,"inner":…,"key"…`.
                self.gap = Some(Gap { at: self.out.len(), comma_before: count > 0, comma_after: count == 0 });
            }
            if count > 0 {
                self.out.push(b',');
            }
            count += 1;
            write_string(key, self.out);
            self.out.push(b':');
            if self.depth == 1 {
                self.top_key = Some(key);
            }
            self.enter(Segment::Key(key));
            self.value(item)?;
            self.leave();
        }
        if omitted.is_some() && self.gap.is_none() {
            self.gap = Some(Gap { at: self.out.len(), comma_before: count > 0, comma_after: false });
        }
        self.depth -= 1;
        self.out.push(b'}');
        Ok(())
    }

    fn number(&mut self, n: &Number) -> Result<(), CanonicalError> {
        if !exact_in_double(n) {
            return Err(CanonicalError::InexactInteger { path: self.path_string(), value: n.to_string() });
        }
        // Up to 2^53 every integer prints in ECMAScript as its plain digits, exactly as itoa prints
        // it (above, the shortest round-trip form can differ: 2^60 prints as 1152921504606847000).
        const SAFE: u64 = 1 << 53;
        if let Some(i) = n.as_i64() {
            if i.unsigned_abs() <= SAFE {
                self.out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
                return Ok(());
            }
        } else if let Some(u) = n.as_u64() {
            if u <= SAFE {
                self.out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
                return Ok(());
            }
        }
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() {
            return Err(CanonicalError::NonFinite { path: self.path_string() });
        }
        let text = self.number.format_finite(f);
        self.out.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// Whether `serde_json::Map` iterates in key order in this build (checked once).
fn map_is_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().next().map(String::as_str) == Some("a")
    })
}

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Whether any byte needs an escape; in 16-byte chunks without early exit so it vectorizes.
fn needs_escape(bytes: &[u8]) -> bool {
    let special = |acc: bool, &b: &u8| acc | (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, special) {
            return true;
        }
    }
    chunks.remainder().iter().fold(false, special)
}

/// Writes `s` as a JSON string the way `JSON.stringify` does: `"` and `\` escaped, the two-letter
/// escapes for \b \f \n \r \t, other controls below U+0020 as `\u00xx`, everything else verbatim.
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(canonicalize(v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_by_utf16_code_units_not_utf8_bytes() {
        // U+1F600 is D83D DE00 in UTF-16 and so sorts before U+FB33, although its UTF-8 is larger.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2, "a": 3});
        assert_eq!(canon(&v), "{\"a\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}");
    }

    #[test]
    fn rejects_integers_a_double_cannot_hold() {
        let err = canonicalize(&json!({"a": [9007199254740993u64]})).unwrap_err();
        assert_eq!(err, CanonicalError::InexactInteger { path: "$.a[0]".into(), value: "9007199254740993".into() });
        assert!(canonicalize(&json!(-9007199254740993i64)).is_err());
        // 2^53 and 2^60 are exact doubles.
        assert_eq!(canon(&json!(9007199254740992u64)), "9007199254740992");
        assert_eq!(canon(&json!(1152921504606846976u64)), "1152921504606847000");
        assert_eq!(canon(&json!(i64::MIN)), "-9223372036854776000");
        assert!(canonicalize(&json!(i64::MAX)).is_err());
        assert!(canonicalize(&json!(u64::MAX)).is_err());
    }

    #[test]
    fn escapes_like_json_stringify() {
        let v = json!("\u{0}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\"\\/\u{7f}\u{2028}é");
        assert_eq!(canon(&v), "\"\\u0000\\b\\t\\n\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}é\"");
    }
}
