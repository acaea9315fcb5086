//! Whether stored JSON text is the form the processor published, checked on the bytes themselves
//! (no parse into a map, which would merge duplicate members and read aliases as what they alias).

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
    let mut checker = Checker { text, at: 0, jsonb: form == TextForm::Jsonb, depth: 0, number: Vec::new() };
    checker.value()?;
    if checker.at != text.len() {
        return checker.fail("text after the value");
    }
    Ok(())
}

struct Checker<'t> {
    text: &'t [u8],
    at: usize,
    jsonb: bool,
    depth: usize,
    number: Vec<u8>,
}

impl<'t> Checker<'t> {
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
        let mut keys: Vec<(usize, usize)> = Vec::new();
        loop {
            let key_at = self.at;
            if self.peek() != Some(b'"') {
                return self.fail("not a member name");
            }
            let key = self.string()?;
            let name = &self.text[key.0..key.1];
            if name.starts_with(b"$serde_json::private::") {
                self.at = key_at;
                return self.fail("a member named like a serde_json private token");
            }
            if let Some(&previous) = keys.last() {
                let order = self.compare(previous, key);
                let wrong = if self.jsonb {
                    keys.iter().any(|k| self.compare(*k, key) == Ordering::Equal)
                } else {
                    order != Ordering::Less
                };
                if wrong {
                    self.at = key_at;
                    let equal = keys.iter().any(|k| self.compare(*k, key) == Ordering::Equal);
                    return self.fail(if equal { "a duplicate member name" } else { "members out of canonical order" });
                }
            }
            keys.push(key);
            if self.peek() != Some(b':') {
                return self.fail("no ':' after a member name");
            }
            self.at += 1;
            self.jsonb_space()?;
            self.value()?;
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.jsonb_space()?;
                }
                Some(b'}') => {
                    self.at += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return self.fail("neither ',' nor '}' after a member"),
            }
        }
    }

    /// Two member names (raw spans of strings already checked) by UTF-16 code units.
    fn compare(&self, a: (usize, usize), b: (usize, usize)) -> Ordering {
        let (a, b) = (&self.text[a.0..a.1], &self.text[b.0..b.1]);
        let plain = |s: &[u8]| s.iter().all(|c| *c != b'\\' && *c < 0x80);
        if plain(a) && plain(b) {
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
                    return Ok(());
                }
                _ => return self.fail("neither ',' nor ']' after an element"),
            }
        }
    }

    /// A string with only the escapes RFC 8785 writes; returns the span between the quotes.
    fn string(&mut self) -> Result<(usize, usize), NotCanonical> {
        self.at += 1;
        let start = self.at;
        let mut ascii = true;
        loop {
            match self.peek() {
                None => return self.fail("an unterminated string"),
                Some(b'"') => break,
                Some(b'\\') => {
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
                    ascii &= c < 0x80;
                    self.at += 1;
                }
            }
        }
        let end = self.at;
        if !ascii && std::str::from_utf8(&self.text[start..end]).is_err() {
            self.at = start;
            return self.fail("a string that is not UTF-8");
        }
        self.at += 1;
        Ok((start, end))
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
