//! The prefilter of the key-named detectors (`secret_assignment`, the URL-parameter
//! `url_credentials`): before their regex runs on a string, one pass over its `=` and `:` finds
//! the names assigned there, read the way each detector's regex reads them, and asks the policy
//! whether one names a secret. A string whose assignments name none (`?page=2&sort=asc`,
//! `https://…`, `time: 10:30`) runs none of these regexes, although a key word (`token`, `key`)
//! opened their gate.
//!
//! Exact by construction: a match of one of these regexes has, as its `name` group, the longest
//! run of name characters (`[A-Za-z0-9_.\[\]-]`) before its `=` or `:` (after the quote and blanks
//! the regex allows), and it is dropped unless that name names a secret. Each test below is
//! implied by its regex; where this scan is looser than the regex (a prefix word, a missing
//! value), the regex decides.

/// The shape of `name=value` text a key-named detector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::redact) enum Assignment {
    /// A line of an env, YAML or INI file: `[export |set |- ]["']name["'][ \t]*(=|:[ \t])` at the
    /// start of a line.
    Line,
    /// `name: value` inside text: `(^|[\s,;{(])["']?name["']?[ \t]*:`.
    Inline,
    /// A URL parameter or form field: `[?&;\t ]name=`.
    Query,
}

/// The shapes with an assignment whose name names a secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Shapes {
    line: bool,
    inline: bool,
    query: bool,
}

impl Shapes {
    /// Whether `shape` was found.
    pub(super) fn contains(self, shape: Assignment) -> bool {
        match shape {
            Assignment::Line => self.line,
            Assignment::Inline => self.inline,
            Assignment::Query => self.query,
        }
    }

    fn all(self) -> bool {
        self.line && self.inline && self.query
    }
}

/// A byte of a key name as the detectors' regexes read it (the inline shape's name has no
/// brackets, but where it matches, the byte before its name is no name byte either).
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']')
}

fn blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn quote(b: u8) -> bool {
    b == b'"' || b == b'\''
}

/// Start of the run of name bytes that ends at `end`.
fn name_start(b: &[u8], end: usize) -> usize {
    b[..end].iter().rposition(|&c| !name_byte(c)).map_or(0, |i| i + 1)
}

/// Where a name ends before the delimiter at `at`: before the blanks and the one quote the line
/// and inline shapes allow there.
fn name_end(b: &[u8], at: usize) -> usize {
    let mut end = at;
    while end > 0 && blank(b[end - 1]) {
        end -= 1;
    }
    if end > 0 && quote(b[end - 1]) {
        end -= 1;
    }
    end
}

/// Start of the blanks that end at `end`.
fn blanks_start(b: &[u8], end: usize) -> usize {
    b[..end].iter().rposition(|&c| !blank(c)).map_or(0, |i| i + 1)
}

fn line_start(b: &[u8], at: usize) -> bool {
    at == 0 || b[at - 1] == b'\n'
}

/// Whether a line-shaped name starting at `start` can be at the start of its line: after an
/// optional quote, only blanks, or `export`, `set` or `-` and blanks, since the line began.
fn starts_line(b: &[u8], start: usize) -> bool {
    let before_quote = if start > 0 && quote(b[start - 1]) { start - 1 } else { start };
    let blanks = blanks_start(b, before_quote);
    if line_start(b, blanks) {
        return true;
    }
    blanks < before_quote
        && [&b"export"[..], b"set", b"-"]
            .iter()
            .any(|prefix| b[..blanks].ends_with(prefix) && line_start(b, blanks_start(b, blanks - prefix.len())))
}

/// Whether an inline-shaped name starting at `start` follows what the inline shape needs before
/// it: the text's start or `[\s,;{(]` (any non-ASCII byte too, for Unicode blanks), after an
/// optional quote.
fn starts_inline(b: &[u8], start: usize) -> bool {
    let at = if start > 0 && quote(b[start - 1]) { start - 1 } else { start };
    at == 0 || {
        let c = b[at - 1];
        c.is_ascii_whitespace() || c == b'\x0B' || matches!(c, b',' | b';' | b'{' | b'(') || !c.is_ascii()
    }
}

/// The shapes of `text`'s assignments whose name names a secret: `names_secret(name,
/// url_parameter)` answers for a name (the query shape's names are URL parameters).
pub(super) fn assignments(text: &str, names_secret: impl Fn(&str, bool) -> bool) -> Shapes {
    let b = text.as_bytes();
    let mut found = Shapes::default();
    for (at, &c) in b.iter().enumerate() {
        if c != b'=' && c != b':' {
            continue;
        }
        if c == b'=' && !found.query {
            let start = name_start(b, at);
            found.query = start > 0
                && start < at
                && matches!(b[start - 1], b'?' | b'&' | b';' | b'\t' | b' ')
                && names_secret(&text[start..at], true);
        }
        let line = !found.line && (c == b'=' || b.get(at + 1).is_some_and(|&n| blank(n)));
        let inline = !found.inline && c == b':';
        if line || inline {
            let end = name_end(b, at);
            let start = name_start(b, end);
            // Both shapes' names start with a letter or `_`.
            if start < end && (b[start].is_ascii_alphabetic() || b[start] == b'_') {
                let line = line && starts_line(b, start);
                let inline = inline && starts_inline(b, start);
                if (line || inline) && names_secret(&text[start..end], false) {
                    found.line |= line;
                    found.inline |= inline;
                }
            }
        }
        if found.all() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(text: &str) -> Shapes {
        assignments(text, |name, url_parameter| {
            let name = name.to_ascii_lowercase();
            name.contains("password") || name.contains("token") || (url_parameter && name == "sig")
        })
    }

    #[test]
    fn each_shape_where_its_regex_reads_it() {
        let only = |line, inline, query| Shapes { line, inline, query };
        assert_eq!(shapes("https://api.example.com/hook?token=abc&x=1"), only(false, false, true));
        assert_eq!(shapes("/cb?sig=abc"), only(false, false, true), "URL signatures");
        assert_eq!(shapes("DB_PASSWORD=x"), only(true, false, false));
        assert_eq!(shapes("a=1\n  export 'API_TOKEN' = x"), only(true, false, false));
        assert_eq!(shapes("set TOKEN=x"), only(true, false, true), "a line, and ` TOKEN=` a parameter");
        assert_eq!(shapes("- password: x"), only(true, true, false));
        assert_eq!(shapes("login failed, password: x"), only(false, true, false));
        assert_eq!(shapes("{\"password\":\"x\"}"), only(false, true, false));
        assert_eq!(shapes("password\u{A0}token: x"), only(false, true, false), "Unicode blanks");
        assert_eq!(shapes("--password=x"), only(false, false, false), "no delimiter before the name");
        assert_eq!(shapes("user --password=x"), only(false, false, true));
    }

    #[test]
    fn names_that_name_no_secret_open_nothing() {
        for text in [
            "https://example.com/reset?page=2&sort=asc",
            "time: 10:30, user=ada",
            "password reset requested",
            "token expired",
            "mypassword",
            "--password: x",
        ] {
            assert_eq!(shapes(text), Shapes::default(), "{text}");
        }
    }
}
