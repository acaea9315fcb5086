//! Whether stored JSON text is the form the processor published, checked on the bytes themselves
//! (no parse into a map, which would merge duplicate members and read aliases as what they alias).
//!
//! A little over 500 lines because it is one recursive-descent checker of one grammar (its
//! numbers, strings, member order and nesting call each other), with its tests.

use std::cmp::Ordering;

use serde_json::Value;

/// How a store keeps an event's text, and so what its text must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextForm {
    /// Byte for byte the RFC 8785 form (JSONL lines, SQLite's text column, the processed topic).
    Canonical,
    /// PostgreSQL `jsonb` output: the same strings and members, but with a space after `:` and
    /// `,`, members in `jsonb`'s own order (by length, then bytes), and numbers as `numeric`
    /// prints them (plain decimals, never an exponent).
    Jsonb,
}

/// Where and why text is not in the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {at}: {reason}")]
pub struct NotCanonical {
    /// Byte offset in the text.
    pub at: usize,
    /// What is there instead.
    pub reason: &'static str,
}

/// Nesting beyond this is refused (the processor's limits allow far less).
const MAX_DEPTH: usize = 128;

/// Checks that `text` is one JSON value written in `form`: no duplicate member names, members in
/// order (canonical form), strings escaped only as RFC 8785 escapes them (no `\u0061` for `a`, no
/// `\/`), numbers in their one form (no `1.0`, `1e0`, `-0`), no insignificant whitespace (canonical
/// form), and no member named like a serde private token (`$serde_json::private::…`), which some
/// parsers read as something other than an object.
pub fn check_text(text: &[u8], form: TextForm) -> Result<(), NotCanonical> {
    Checker::new(text, form, None).run()
}

/// The byte range of a member name between its quotes, as written (escapes not decoded).
pub type NameSpan = std::ops::Range<usize>;

/// A member [`check_text_visiting`] reports: the names of the objects it is in, outermost first,
/// then its own (`path`), and the byte range of its value in the text (strings with their quotes).
pub type MemberVisit<'a> = &'a mut dyn FnMut(&[NameSpan], std::ops::Range<usize>);

/// [`check_text`], also handing `visit` every member whose path (its own name and those of the
/// objects around it) runs through objects only, no array, and is at most `depth` names long, as
/// each is checked: a reader takes the fields it wants in the same pass (members of text that then
/// fails the check may have been visited).
pub fn check_text_visiting(
    text: &[u8],
    form: TextForm,
    depth: usize,
    visit: MemberVisit<'_>,
) -> Result<(), NotCanonical> {
    Checker::new(text, form, Some((depth, visit))).run()
}

struct Checker<'t, 'v> {
    text: &'t [u8],
    at: usize,
    jsonb: bool,
    depth: usize,
    number: Vec<u8>,
    /// The names of the members of every object being checked, innermost object last (each
    /// object truncates back to where it started): `(span, plain)`, plain when ASCII without
    /// escapes (compared as bytes).
    names: Vec<(NameSpan, bool)>,
    /// With a visitor: the deepest path reported, and the visitor.
    visit: Option<(usize, MemberVisit<'v>)>,
    /// The member names from the top down to the current value (with a visitor).
    path: Vec<NameSpan>,
    /// Arrays around the current value: their members are not visited.
    arrays: usize,
}

impl<'t, 'v> Checker<'t, 'v> {
    fn new(text: &'t [u8], form: TextForm, visit: Option<(usize, MemberVisit<'v>)>) -> Self {
        Checker {
            text,
            at: 0,
            jsonb: form == TextForm::Jsonb,
            depth: 0,
            number: Vec::new(),
            names: Vec::new(),
            visit,
            path: Vec::new(),
            arrays: 0,
        }
    }

    fn run(mut self) -> Result<(), NotCanonical> {
        self.value()?;
        if self.at != self.text.len() {
            return self.fail("text after the value");
        }
        Ok(())
    }

    fn fail<T>(&self, reason: &'static str) -> Result<T, NotCanonical> {
        Err(NotCanonical { at: self.at, reason })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// `jsonb` prints one space after `:` and `,`; nothing else is allowed anywhere.
    fn jsonb_space(&mut self) -> Result<(), NotCanonical> {
        if self.jsonb {
            if self.peek() != Some(b' ') {
                return self.fail("jsonb prints one space here");
            }
            self.at += 1;
        }
        Ok(())
    }

    fn value(&mut self) -> Result<(), NotCanonical> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b' ' | b'\t' | b'\n' | b'\r') => self.fail("whitespace outside a string"),
            _ => self.fail("not a JSON value"),
        }
    }

    fn enter(&mut self) -> Result<(), NotCanonical> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        self.at += 1;
        Ok(())
    }

    fn object(&mut self) -> Result<(), NotCanonical> {
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        // This object's names are `names[first..]` (room for an event's at once).
        self.names.reserve(32);
        let first = self.names.len();
        loop {
            let key_at = self.at;
            if self.peek() != Some(b'"') {
                return self.fail("not a member name");
            }
            let (key, plain) = self.string()?;
            if self.text[key.clone()].starts_with(b"$serde_json::private::") {
                self.at = key_at;
                return self.fail("a member named like a serde_json private token");
            }
            let name = (key, plain);
            if let Some(previous) = self.names.last().filter(|_| self.names.len() > first) {
                let order = self.compare(previous, &name);
                let names = &self.names[first..];
                let wrong = if self.jsonb {
                    names.iter().any(|k| self.compare(k, &name) == Ordering::Equal)
                } else {
                    order != Ordering::Less
                };
                if wrong {
                    self.at = key_at;
                    let equal = names.iter().any(|k| self.compare(k, &name) == Ordering::Equal);
                    return self.fail(if equal { "a duplicate member name" } else { "members out of canonical order" });
                }
            }
            let key = name.0.clone();
            self.names.push(name);
            if self.peek() != Some(b':') {
                return self.fail("no ':' after a member name");
            }
            self.at += 1;
            self.jsonb_space()?;
            self.member_value(key)?;
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.jsonb_space()?;
                }
                Some(b'}') => {
                    self.at += 1;
                    self.depth -= 1;
                    self.names.truncate(first);
                    return Ok(());
                }
                _ => return self.fail("neither ',' nor '}' after a member"),
            }
        }
    }

    /// The value of the member named `key`, handed to the visitor when its path is wanted.
    fn member_value(&mut self, key: NameSpan) -> Result<(), NotCanonical> {
        let wanted = self.visit.as_ref().is_some_and(|(depth, _)| self.arrays == 0 && self.path.len() < *depth);
        if !wanted {
            return self.value();
        }
        self.path.push(key);
        let start = self.at;
        self.value()?;
        if let Some((_, visit)) = self.visit.as_mut() {
            visit(&self.path, start..self.at);
        }
        self.path.pop();
        Ok(())
    }

    /// Two member names (raw spans of strings already checked, and whether each is plain: ASCII
    /// without escapes) by UTF-16 code units.
    fn compare(&self, a: &(NameSpan, bool), b: &(NameSpan, bool)) -> Ordering {
        let (a_plain, b_plain) = (a.1, b.1);
        let (a, b) = (&self.text[a.0.clone()], &self.text[b.0.clone()]);
        if a_plain && b_plain {
            return a.cmp(b);
        }
        let decode = |s: &[u8]| -> Vec<u16> {
            let quoted = [b"\"", s, b"\""].concat();
            serde_json::from_slice::<String>(&quoted).unwrap_or_default().encode_utf16().collect()
        };
        decode(a).cmp(&decode(b))
    }

    fn array(&mut self) -> Result<(), NotCanonical> {
        self.enter()?;
        if self.peek() == Some(b']') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        self.arrays += 1;
        loop {
            self.value()?;
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.jsonb_space()?;
                }
                Some(b']') => {
                    self.at += 1;
                    self.depth -= 1;
                    self.arrays -= 1;
                    return Ok(());
                }
                _ => return self.fail("neither ',' nor ']' after an element"),
            }
        }
    }

    /// A string with only the escapes RFC 8785 writes; returns the span between the quotes, and
    /// whether it is plain (ASCII without escapes).
    fn string(&mut self) -> Result<(NameSpan, bool), NotCanonical> {
        self.at += 1;
        let start = self.at;
        // Bytes at or above 0x80 seen (OR-ed together: only the high bit matters).
        let mut high = 0u64;
        let mut escaped = false;
        loop {
            high |= self.skip_plain();
            match self.peek() {
                None => return self.fail("an unterminated string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 1,
                        Some(b'u') => {
                            let hex = self.text.get(self.at + 1..self.at + 5).unwrap_or_default();
                            let lower = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
                            let code = std::str::from_utf8(hex).ok().and_then(|h| u16::from_str_radix(h, 16).ok());
                            match code {
                                Some(c) if hex.iter().all(lower) && c < 0x20 && ![8, 9, 10, 12, 13].contains(&c) => {
                                    self.at += 5;
                                }
                                _ => return self.fail("a \\u escape RFC 8785 does not write (an escaped alias)"),
                            }
                        }
                        _ => return self.fail("an escape RFC 8785 does not write"),
                    }
                }
                Some(c) if c < 0x20 => return self.fail("an unescaped control character"),
                Some(c) => {
                    high |= u64::from(c);
                    self.at += 1;
                }
            }
        }
        let end = self.at;
        let ascii = high & 0x8080_8080_8080_8080 == 0;
        if !ascii && std::str::from_utf8(&self.text[start..end]).is_err() {
            self.at = start;
            return self.fail("a string that is not UTF-8");
        }
        self.at += 1;
        Ok((start..end, ascii && !escaped))
    }

    /// Moves to the next string byte that needs a look (`"`, `\\` or a control character),
    /// eight bytes at a time; returns the bytes passed OR-ed together (for their high bits). Stops
    /// short of it only within the text's last seven bytes.
    fn skip_plain(&mut self) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // The high bit of each byte that is zero (exact for the lowest one: a borrow only runs
        // upwards, from a byte that is zero itself).
        let zeros = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
        let mut seen = 0u64;
        let mut passed = 0;
        for chunk in self.text[self.at..].chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let w = u64::from_le_bytes(bytes);
            // Bytes below 0x20 (those at or above 0x80 are masked out by `!w` and borrow
            // nothing), quotes and backslashes.
            let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
            let special = control | zeros(w ^ (ONES * u64::from(b'"'))) | zeros(w ^ (ONES * u64::from(b'\\')));
            if special != 0 {
                // Little-endian: the lowest flagged byte comes first in the text.
                let first = special.trailing_zeros() / 8;
                seen |= w & ((1u64 << (8 * first)) - 1);
                passed += first as usize;
                break;
            }
            seen |= w;
            passed += 8;
        }
        self.at += passed;
        seen
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), NotCanonical> {
        if !self.text[self.at..].starts_with(word) {
            return self.fail("not a JSON value");
        }
        self.at += word.len();
        Ok(())
    }

    /// A number exactly as RFC 8785 writes it (or, for `jsonb`, that number as `numeric` prints
    /// it: the same value in plain decimals).
    fn number(&mut self) -> Result<(), NotCanonical> {
        let start = self.at;
        while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        let token = &self.text[start..self.at];
        if plain_safe_integer(token) {
            // Its own canonical form in both forms: nothing to parse.
            return Ok(());
        }
        let fail = |reason| Err(NotCanonical { at: start, reason });
        let Ok(value) = serde_json::from_slice::<Value>(token) else { return fail("not a JSON number") };
        self.number.clear();
        if crate::canonical::canonicalize_into(&value, &mut self.number).is_err() {
            return fail("a number without a canonical form (an integer a double cannot hold)");
        }
        let same =
            if self.jsonb { plain_decimal(&self.number).as_deref() == Some(token) } else { self.number == token };
        if !same {
            return fail("a number not in its canonical form (a number alias such as 1.0 or 1e0)");
        }
        Ok(())
    }
}

/// Whether `token` is an integer written as RFC 8785 writes it, small enough (at most 15 digits,
/// so below 2^53) that no double rounds it: `0`, or digits without a leading zero, with an optional
/// `-`. Every other token is checked by writing the number it parses to.
fn plain_safe_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    match digits {
        [b'0'] => token.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.len() < 15 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// ECMAScript's number form (`1e+21`, `1.5e-7`, `-0.25`) written out as plain decimals, as
/// PostgreSQL's `numeric` prints it.
fn plain_decimal(canonical: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(canonical).ok()?;
    let Some((mantissa, exponent)) = text.split_once('e') else { return Some(canonical.to_vec()) };
    let exponent: i32 = exponent.parse().ok()?;
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    // The decimal point sits after `point` digits.
    let point = i32::try_from(whole.len()).ok()? + exponent;
    let out = if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(usize::try_from(-point).ok()?))
    } else if usize::try_from(point).ok()? >= digits.len() {
        format!("{sign}{digits}{}", "0".repeat(usize::try_from(point).ok()? - digits.len()))
    } else {
        let (a, b) = digits.split_at(usize::try_from(point).ok()?);
        format!("{sign}{a}.{b}")
    };
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Result<(), NotCanonical> {
        check_text(text.as_bytes(), TextForm::Canonical)
    }

    #[test]
    fn the_canonical_form_passes_and_each_alias_is_refused() {
        let good = r#"{"a":[1,-2.5,1e+21,true,null,"x\n\u001f/é"],"b":{"c":"d"},"é":0}"#;
        assert_eq!(canonical(good), Ok(()));
        assert_eq!(crate::canonical::canonicalize(&serde_json::from_str(good).unwrap()).unwrap(), good.as_bytes());
        for bad in [
            r#"{"a":1,"a":1}"#,
            r#"{"b":1,"a":1}"#,
            r#"{"a":"\u0061"}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":1.0}"#,
            r#"{"a":1e0}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a": 1}"#,
            r#"{"a":1} "#,
            "{\"a\":1}\n",
            r#"{"$serde_json::private::Number":"1"}"#,
            r#"{"a":9007199254740993}"#,
        ] {
            assert!(canonical(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strings_are_checked_wherever_their_special_bytes_fall() {
        // Runs of plain bytes of every length before what needs a look, so each lands at every
        // place of the eight bytes read at once.
        for n in 0..20 {
            let run = "a".repeat(n);
            for (inner, ok) in [
                (run.clone(), true),
                (format!("{run}\\n{run}"), true),
                (format!("{run}é{run}"), true),
                (format!("{run}\\\"{run}"), true),
                (format!("{run}\u{1}{run}"), false),
                (format!("{run}\\/{run}"), false),
                (format!("{run}\\u0061"), false),
            ] {
                let text = format!("{{\"k\":\"{inner}\",\"z{inner}\":1}}");
                assert_eq!(canonical(&text).is_ok(), ok, "{text:?}");
            }
            let mut bytes = format!("{{\"k\":\"{run}").into_bytes();
            bytes.extend([0xff, b'"', b'}']);
            assert!(check_text(&bytes, TextForm::Canonical).is_err(), "not UTF-8 after {n} bytes");
        }
        // Names that are not plain compare by UTF-16 code units.
        assert_eq!(canonical("{\"\\n\":1,\"a\":2,\"é\":3,\"\u{10000}\":4,\"\u{ff61}\":5}"), Ok(()));
        assert!(canonical("{\"a\":1,\"\\n\":2}").is_err());
    }

    #[test]
    fn integers_are_checked_with_or_without_parsing() {
        for good in ["0", "-1", "999999999999999", "-999999999999999", "9007199254740992", "1234567890123456"] {
            assert_eq!(canonical(&format!("[{good}]")), Ok(()), "{good}");
        }
        for bad in ["-0", "01", "-01", "1.0", "1e2", "9007199254740993", "+1"] {
            assert!(canonical(&format!("[{bad}]")).is_err(), "{bad}");
        }
    }

    #[test]
    fn members_are_visited_by_path_outside_arrays_and_up_to_the_depth() {
        let text = br#"{"a":{"b":{"c":1},"d":[{"e":2}]},"f":"g"}"#;
        let mut seen = Vec::new();
        check_text_visiting(text, TextForm::Canonical, 2, &mut |path, value| {
            let names: Vec<_> = path.iter().map(|n| String::from_utf8_lossy(&text[n.clone()]).into_owned()).collect();
            seen.push((names.join("."), String::from_utf8_lossy(&text[value]).into_owned()));
        })
        .unwrap();
        let expected =
            [("a.b", r#"{"c":1}"#), ("a.d", r#"[{"e":2}]"#), ("a", r#"{"b":{"c":1},"d":[{"e":2}]}"#), ("f", r#""g""#)];
        assert_eq!(seen, expected.map(|(p, v)| (p.to_owned(), v.to_owned())));
    }

    #[test]
    fn jsonb_output_passes_with_its_spacing_order_and_plain_numbers() {
        let jsonb = |t: &str| check_text(t.as_bytes(), TextForm::Jsonb);
        assert_eq!(jsonb(r#"{"b": 1, "aa": [1, 2.5, 1000000000000000000000, 0.00000015], "c": "\u001f"}"#), Ok(()));
        assert!(jsonb(r#"{"a": 1.0}"#).is_err());
        assert!(jsonb(r#"{"a": 1e+21}"#).is_err());
        assert!(jsonb(r#"{"a":1}"#).is_err());
        assert!(jsonb(r#"{"a": 1, "a": 2}"#).is_err());
        assert_eq!(plain_decimal(b"1.5e-7").as_deref(), Some(&b"0.00000015"[..]));
        assert_eq!(plain_decimal(b"-1.25e+22").as_deref(), Some(&b"-12500000000000000000000"[..]));
    }
}
