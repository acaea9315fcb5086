//! Hashing an event's stored text without parsing it: when the text is already in canonical form
//! (processed JSON output, the JSONL sink's lines), the hash is SHA-256 over it with the member
//! `integrity.hash` cut out, found by a scan of compact JSON.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// SHA-256 over `text` with the member `hash` of its top-level `integrity` object cut out: the
/// event's hash when `text` is already in canonical form (processed JSON output and the JSONL sink's
/// lines are), with no parsing and no copy. `None` when the member is not found where the canonical
/// form has it. A result that differs from the recorded hash proves nothing by itself (the text may
/// simply not be canonical): then hash the parsed event with [`hash_event_value`].
pub fn hash_canonical_text(text: &[u8]) -> Option<String> {
    let (from, to) = integrity_hash_member(text)?;
    let hex = hash_text_without(text, from..to);
    Some(hex.iter().map(|&b| char::from(b)).collect())
}

/// SHA-256 over `text` without the bytes `cut`, as lowercase hex digits: the event's hash when
/// `text` is its canonical form and `cut` its member `integrity.hash` with the comma that separates
/// it from a neighbour (what [`hash_canonical_text`] finds itself, for readers that found it while
/// reading the text). No allocation: compare the digits with the recorded hash's bytes.
pub fn hash_text_without(text: &[u8], cut: Range<usize>) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = Sha256::new();
    hasher.update(&text[..cut.start]);
    hasher.update(&text[cut.end..]);
    let mut hex = [0u8; 64];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(hasher.finalize().iter()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    hex
}

/// The byte range of `"hash":"…"` in the top-level `integrity` object of `text`, with the comma
/// that separates it from a neighbour, so that cutting it leaves valid JSON.
fn integrity_hash_member(text: &[u8]) -> Option<(usize, usize)> {
    let mut i = expect(text, 0, b'{')?;
    loop {
        let (key_start, key_end) = string_at(text, i)?;
        i = expect(text, key_end, b':')?;
        if &text[key_start..key_end] == b"\"integrity\"" {
            return hash_member_in(text, i);
        }
        i = skip_value(text, i)?;
        match text.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

/// Within the object starting at `at`: the range of member `"hash":"<string without escapes>"`.
fn hash_member_in(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut i = expect(text, at, b'{')?;
    let mut first = true;
    loop {
        let member = i;
        let (key_start, key_end) = string_at(text, i)?;
        i = expect(text, key_end, b':')?;
        let value_end = skip_value(text, i)?;
        if &text[key_start..key_end] == b"\"hash\"" {
            if text[i] != b'"' || text[i..value_end].contains(&b'\\') {
                return None;
            }
            return match (first, text.get(value_end)?) {
                (false, _) => Some((member - 1, value_end)),   // the comma before it
                (true, b',') => Some((member, value_end + 1)), // the comma after it
                (true, _) => Some((member, value_end)),
            };
        }
        i = value_end;
        match text.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
        first = false;
    }
}

fn expect(text: &[u8], at: usize, byte: u8) -> Option<usize> {
    (*text.get(at)? == byte).then_some(at + 1)
}

/// The string starting at `at` (its quotes included): `(at, end)`.
fn string_at(text: &[u8], at: usize) -> Option<(usize, usize)> {
    if *text.get(at)? != b'"' {
        return None;
    }
    let mut i = at + 1;
    loop {
        match text.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some((at, i + 1)),
            _ => i += 1,
        }
    }
}

/// The end of the JSON value starting at `at` (compact text: no whitespace between tokens).
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    loop {
        match *text.get(i)? {
            b'"' => i = string_at(text, i)?.1,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ => i += 1,
        }
        if depth == 0 && matches!(text.get(i), None | Some(b',' | b'}' | b']')) {
            return Some(i);
        }
    }
}
