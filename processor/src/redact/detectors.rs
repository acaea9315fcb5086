//! Value detectors: credentials and personal data inside strings, whatever their key.
//!
//! [`SPECS`] is the table: each detector has a name (its `rule` in reports and metrics), a family
//! (its `redaction.detectors.<family>` switch), a gate, a regular expression and a check. This
//! module holds the table's vocabulary and order, `compiled` the engine that runs it; the rows,
//! and the checks only they use, are in one module per kind of secret: `private_keys`, `bearer`
//! (authorization headers, JWTs, auth schemes), `prefixed` (issuer-prefixed cloud, source-host,
//! chat, payment, AI, registry and messaging keys), `personal` (cards, SSNs, IBANs), `urls`
//! (credentials in URLs and `curl`), `key_named` (`KEY=value`, `password: …`, `?token=…`, with its
//! prefilter in `assignments`).
//!
//! A string costs one pass of one Aho-Corasick automaton over the literal anchors of every enabled
//! detector (ASCII case ignored), plus a count of its digits when a digit-gated detector (cards,
//! SSNs, IBANs) is on; only the detectors whose gate passed run their regex. So a string with no
//! anchor costs that pass and nothing else. An anchor is a literal every match contains (or, for
//! context-gated detectors such as Twilio's, the string must contain); detectors that find a secret
//! by the key named before it (`DB_PASSWORD=…`, `?token=…`, `password: …`) are gated by the words
//! of the policy's key names.
//!
//! Where the secret is: the regex's group named `secret` when it has one (the regex crate finds
//! the match with its DFA and runs the capture engine over the match only), else the whole match.

use std::ops::Range;

use crate::config::DetectorsConfig;

mod assignments;
mod bearer;
mod compiled;
mod key_named;
mod personal;
mod prefixed;
mod private_keys;
#[cfg(test)]
mod test_support;
mod urls;

use assignments::Assignment;
pub(super) use compiled::Detectors;
pub(super) use personal::card_number;
pub use personal::luhn_valid;

/// A detector family: one `redaction.detectors` switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    BearerTokens,
    UrlCredentials,
    PrivateKeys,
    CardNumbers,
    CloudKeys,
    SourceHostTokens,
    ChatTokens,
    PaymentKeys,
    AiKeys,
    RegistryTokens,
    MessagingKeys,
    EnvAssignments,
    Ssn,
    Iban,
}

impl Family {
    pub(super) fn enabled(self, c: &DetectorsConfig) -> bool {
        match self {
            Family::BearerTokens => c.bearer_tokens,
            Family::UrlCredentials => c.url_credentials,
            Family::PrivateKeys => c.private_keys,
            Family::CardNumbers => c.card_numbers,
            Family::CloudKeys => c.cloud_keys,
            Family::SourceHostTokens => c.source_host_tokens,
            Family::ChatTokens => c.chat_tokens,
            Family::PaymentKeys => c.payment_keys,
            Family::AiKeys => c.ai_keys,
            Family::RegistryTokens => c.registry_tokens,
            Family::MessagingKeys => c.messaging_keys,
            Family::EnvAssignments => c.env_assignments,
            Family::Ssn => c.ssn,
            Family::Iban => c.iban,
        }
    }

    /// The `redaction.detectors` field.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Family::BearerTokens => "bearer_tokens",
            Family::UrlCredentials => "url_credentials",
            Family::PrivateKeys => "private_keys",
            Family::CardNumbers => "card_numbers",
            Family::CloudKeys => "cloud_keys",
            Family::SourceHostTokens => "source_host_tokens",
            Family::ChatTokens => "chat_tokens",
            Family::PaymentKeys => "payment_keys",
            Family::AiKeys => "ai_keys",
            Family::RegistryTokens => "registry_tokens",
            Family::MessagingKeys => "messaging_keys",
            Family::EnvAssignments => "env_assignments",
            Family::Ssn => "ssn",
            Family::Iban => "iban",
        }
    }
}

/// What a string must contain before a detector's regex runs on it.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// One of these literals (ASCII case ignored).
    Literals(&'static [&'static str]),
    /// One of these literals (ASCII case ignored), and this byte, which every match holds besides
    /// (`@` in a URL with credentials, `.` in a JWT). The byte is not part of the policy's version:
    /// it follows from the regex and changes nothing found.
    LiteralsAnd(&'static [&'static str], u8),
    /// A word of a sensitive key name (the policy's key names and the built-in keys), then an
    /// assignment of the given shape whose key names a secret ([`assignments`]).
    KeyWords(Assignment),
    /// At least this many ASCII digits.
    Digits(usize),
}

#[cfg(test)]
impl Gate {
    /// The literals of a literal gate.
    fn literals(self) -> Option<&'static [&'static str]> {
        match self {
            Gate::Literals(l) | Gate::LiteralsAnd(l, _) => Some(l),
            Gate::KeyWords(_) | Gate::Digits(_) => None,
        }
    }
}

/// What a match must pass besides the regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Nothing more.
    Format,
    /// The `name` group names a secret (the key-name matcher with the measure rule); the value
    /// loses surrounding quotes and trailing blanks.
    KeyName,
    /// [`Check::KeyName`], or a URL signature parameter (`sig`, `X-Amz-Signature`).
    QueryName,
    /// Looks machine-made: upper and lower case letters (a 40-character hex hash has one case).
    Random,
    /// A credential after an auth scheme: not a plain lowercase word (`Token expired`).
    Credential,
    /// An OpenAI-style key: the `T3BlbkFJ` marker, a typed prefix (`proj-`, `svcacct-`,
    /// `admin-`) with 40+ random characters, or 32+ random letters and digits.
    OpenAi,
    /// 13–19 digits, a card issuer's prefix and length, the Luhn check.
    Card,
    /// A US SSN: area not 000, 666 or 900–999, group not 00, serial not 0000, not a known
    /// advertising number, not part of a longer number.
    Ssn,
    /// An IBAN: the country's length and the mod-97 check.
    Iban,
}

impl Check {
    fn as_str(self) -> &'static str {
        match self {
            Check::Format => "format",
            Check::KeyName => "key_name",
            Check::QueryName => "query_name",
            Check::Random => "random",
            Check::Credential => "credential",
            Check::OpenAi => "openai",
            Check::Card => "luhn_iin",
            Check::Ssn => "ssn_validity",
            Check::Iban => "iban_mod97",
        }
    }
}

/// One row of the detector table.
#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    family: Family,
    gate: Gate,
    /// `\b` here is an ASCII word boundary (compiled as `(?-u:\b)`: the fast engines cannot run a
    /// Unicode boundary over non-ASCII text).
    regex: &'static str,
    check: Check,
}

/// The detectors, most specific first: where two find overlapping secrets, the first is counted
/// (both are masked). Each family's rows are in its module; this is their order.
const SPECS: &[&[Spec]] = &[
    private_keys::SPECS,
    bearer::AUTHORIZATION_HEADERS,
    prefixed::SPECS,
    bearer::TOKENS,
    personal::SPECS,
    urls::SPECS,
    key_named::SPECS,
];

/// The rows of [`SPECS`], in order.
fn specs() -> impl Iterator<Item = &'static Spec> {
    SPECS.iter().flat_map(|family| family.iter())
}

/// Query parameters that sign a URL (a presigned URL is a credential until it expires).
const URL_SIGNATURE_WORDS: &[&str] = &["sig", "signature"];

/// Whether a URL parameter's name signs the URL (`sig`, `X-Amz-Signature`).
pub(super) fn is_url_signature(words_last: Option<&str>) -> bool {
    words_last.is_some_and(|w| URL_SIGNATURE_WORDS.contains(&w))
}

/// The checks that need only the text.
fn passes(check: Check, text: &str, range: Range<usize>) -> bool {
    let s = &text[range.clone()];
    match check {
        Check::Format | Check::KeyName | Check::QueryName => true,
        Check::Random => prefixed::looks_random(s),
        Check::Credential => !s.bytes().all(|b| b.is_ascii_lowercase()),
        Check::OpenAi => prefixed::openai_key(s),
        Check::Card => card_number(s),
        Check::Ssn => personal::ssn(text, range),
        Check::Iban => personal::iban_valid(s),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::keeps;
    use super::*;

    #[test]
    fn false_positive_traps_are_left_alone() {
        for text in [
            "550e8400-e29b-41d4-a716-446655440000",
            "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "order ORD-2024-000123456 shipped",
            "2026-11-26T10:00:00.123Z and 1732579200 and 1732579200123",
            "client 203.0.113.7 and [2001:db8::1]:443",
            "upgraded from v1.2.3 to 2.10.0-rc.1+build.5",
            "ISBN 978-0-306-40615-7",
            "call +44 20 7946 0958 or (555) 123-4567",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
            "the skeleton crew asked for a task-list",
            "key: value, monkey: banana, keyboard layout: us",
            "see https://docs.example.com/tokens#rotation",
        ] {
            keeps(text);
        }
    }

    #[test]
    fn every_detector_and_family_is_documented() {
        let privacy = include_str!("../../../docs/PRIVACY.md");
        let metrics = include_str!("../../../docs/METRICS.md");
        for spec in specs() {
            let row = format!("| `{}` | `{}` |", spec.name, spec.family.as_str());
            assert!(privacy.contains(&row), "docs/PRIVACY.md has no row {row}");
            assert!(metrics.contains(&format!("`{}`", spec.name)), "docs/METRICS.md does not list {}", spec.name);
        }
    }
}
