//! Value detectors: credentials and personal data inside strings, whatever their key.
//!
//! [`SPECS`] is the table: each detector has a name (its `rule` in reports and metrics), a family
//! (its `redaction.detectors.<family>` switch), a gate, a regular expression and a check.
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

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex::Regex;
use serde_json::{json, Value};

use crate::config::DetectorsConfig;

mod assignments;

use assignments::{assignments, Assignment};

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

use Check as C;
use Family as F;
use Gate as G;

/// The detectors, most specific first: where two find overlapping secrets, the first is counted
/// (both are masked).
const SPECS: &[Spec] = &[
    // A key block may contain anything, so it goes first.
    Spec {
        name: "private_key",
        family: F::PrivateKeys,
        gate: G::Literals(&["-----BEGIN"]),
        regex: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)",
        check: C::Format,
    },
    Spec {
        name: "private_key",
        family: F::PrivateKeys,
        gate: G::Literals(&["PuTTY-User-Key-File-"]),
        regex: r"PuTTY-User-Key-File-\d+:(?s:.*?)(?:Private-MAC: *[0-9a-fA-F]+|\z)",
        check: C::Format,
    },
    // `Authorization:` header lines: everything after the scheme, to the end of the line (Digest)
    // or of the quoted value. Before the token formats: a header is counted as a header, whatever
    // credential it carries.
    Spec {
        name: "authorization_header",
        family: F::BearerTokens,
        gate: G::Literals(&["authorization"]),
        regex: r#"(?i)\b(?:proxy-)?authorization["']?[ \t]*(?::|=>?)[ \t]*["']?digest[ \t]+(?P<secret>[^\r\n]+)"#,
        check: C::Format,
    },
    Spec {
        name: "authorization_header",
        family: F::BearerTokens,
        gate: G::Literals(&["authorization"]),
        regex: r#"(?i)\b(?:proxy-)?authorization["']?[ \t]*(?::|=>?)[ \t]*["']?(?:[a-z][a-z0-9._-]*[ \t]+)?(?P<secret>[^\s"',;][^\r\n"']*)"#,
        check: C::Format,
    },
    // Cloud keys.
    Spec {
        name: "aws_access_key_id",
        family: F::CloudKeys,
        gate: G::Literals(&["AKIA", "ASIA", "ABIA", "ACCA"]),
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        check: C::Format,
    },
    Spec {
        name: "aws_secret_access_key",
        family: F::CloudKeys,
        gate: G::Literals(&["AKIA", "ASIA", "ABIA", "ACCA"]),
        regex: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b(?s:.{0,100}?)[^A-Za-z0-9/+](?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)",
        check: C::Random,
    },
    Spec {
        name: "aws_secret_access_key",
        family: F::CloudKeys,
        gate: G::Literals(&["access_key", "accesskey", "access-key", "access key"]),
        regex: r#"(?i:secret[_ -]?access[_ -]?key)["']?\s*(?:[:=]|=>)\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)"#,
        check: C::Random,
    },
    Spec {
        name: "google_api_key",
        family: F::CloudKeys,
        gate: G::Literals(&["AIza"]),
        regex: r"\b(?P<secret>AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|\z)",
        check: C::Format,
    },
    Spec {
        name: "azure_storage_key",
        family: F::CloudKeys,
        gate: G::Literals(&["AccountKey", "SharedAccessKey"]),
        regex: r"(?i:AccountKey|SharedAccessKey)\s*=\s*(?P<secret>[A-Za-z0-9+/]{40,86}={0,2})",
        check: C::Random,
    },
    // Source hosts.
    Spec {
        name: "github_classic_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&["ghp_"]),
        regex: r"\bghp_[A-Za-z0-9]{36}\b",
        check: C::Format,
    },
    Spec {
        name: "github_fine_grained_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&["github_pat_"]),
        regex: r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        check: C::Format,
    },
    Spec {
        name: "github_app_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&["gho_", "ghu_", "ghs_", "ghr_"]),
        regex: r"\bgh[ousr]_[A-Za-z0-9]{36,}\b",
        check: C::Format,
    },
    Spec {
        name: "gitlab_token",
        family: F::SourceHostTokens,
        gate: G::Literals(&[
            "glpat-",
            "gldt-",
            "glrt-",
            "glcbt-",
            "glptt-",
            "glft-",
            "glimt-",
            "glagent-",
            "gloas-",
            "glsoat-",
            "glffct-",
            "GR1348941",
        ]),
        regex: r"\b(?:gl(?:pat|dt|rt|cbt|ptt|ft|imt|agent|oas|soat|ffct)-|GR1348941)[0-9A-Za-z_-]{20,}(?:\.[0-9A-Za-z_-]+)*",
        check: C::Format,
    },
    // Chat.
    Spec {
        name: "slack_token",
        family: F::ChatTokens,
        gate: G::Literals(&["xox", "xapp-"]),
        regex: r"\b(?:(?:xox[abcenprs]|xapp)-[0-9]+-[0-9A-Za-z-]{10,}|xoxd-[0-9A-Za-z%/+=]{20,})",
        check: C::Format,
    },
    Spec {
        name: "slack_webhook",
        family: F::ChatTokens,
        gate: G::Literals(&["hooks.slack.com"]),
        regex: r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]{20,})",
        check: C::Format,
    },
    // Payment.
    Spec {
        name: "stripe_secret_key",
        family: F::PaymentKeys,
        gate: G::Literals(&["sk_live_", "sk_test_", "rk_live_", "rk_test_"]),
        regex: r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{24,}\b",
        check: C::Format,
    },
    Spec {
        name: "stripe_webhook_secret",
        family: F::PaymentKeys,
        gate: G::Literals(&["whsec_"]),
        regex: r"\bwhsec_[A-Za-z0-9+/]{32,}={0,2}",
        check: C::Format,
    },
    // AI providers (Anthropic's `sk-ant-` before OpenAI's `sk-`).
    Spec {
        name: "anthropic_api_key",
        family: F::AiKeys,
        gate: G::Literals(&["sk-ant-"]),
        regex: r"\bsk-ant-[a-z]+[0-9]{2}-[A-Za-z0-9_-]{32,}",
        check: C::Format,
    },
    Spec {
        name: "openai_api_key",
        family: F::AiKeys,
        gate: G::Literals(&["sk-"]),
        regex: r"\bsk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}",
        check: C::OpenAi,
    },
    Spec {
        name: "huggingface_token",
        family: F::AiKeys,
        gate: G::Literals(&["hf_"]),
        regex: r"\b(?P<secret>hf_[A-Za-z0-9]{34,})\b",
        check: C::Random,
    },
    // Package registries.
    Spec {
        name: "npm_token",
        family: F::RegistryTokens,
        gate: G::Literals(&["npm_"]),
        regex: r"\bnpm_[A-Za-z0-9]{36}\b",
        check: C::Format,
    },
    Spec {
        name: "pypi_token",
        family: F::RegistryTokens,
        gate: G::Literals(&["pypi-AgE"]),
        regex: r"\bpypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,}",
        check: C::Format,
    },
    Spec {
        name: "dockerhub_token",
        family: F::RegistryTokens,
        gate: G::Literals(&["dckr_pat_"]),
        regex: r"\bdckr_pat_[A-Za-z0-9_-]{27,}",
        check: C::Format,
    },
    // Mail and SMS providers.
    Spec {
        name: "sendgrid_api_key",
        family: F::MessagingKeys,
        gate: G::Literals(&["SG."]),
        regex: r"\b(?P<secret>SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|\z)",
        check: C::Format,
    },
    // Twilio's SIDs are `AC`/`SK` + 32 hex, like many hashes: only in a string that names Twilio.
    Spec {
        name: "twilio_key",
        family: F::MessagingKeys,
        gate: G::Literals(&["twilio"]),
        regex: r"\b(?:AC|SK)[0-9a-f]{32}\b",
        check: C::Format,
    },
    Spec {
        name: "twilio_key",
        family: F::MessagingKeys,
        gate: G::Literals(&["twilio"]),
        regex: r#"(?i:auth[_ -]?token|api[_ -]?secret)["']?\s*[:=]\s*["']?(?P<secret>[0-9a-f]{32})\b"#,
        check: C::Format,
    },
    // Tokens by their shape anywhere in text.
    Spec {
        name: "jwt",
        family: F::BearerTokens,
        gate: G::LiteralsAnd(&["eyJ"], b'.'),
        regex: r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)?",
        check: C::Format,
    },
    Spec {
        name: "bearer",
        family: F::BearerTokens,
        // The scheme and the whitespace after it (`token=` in a query is not a scheme).
        gate: G::Literals(&[
            "bearer ", "bearer\t", "bearer\n", "bearer\r", "basic ", "basic\t", "basic\n", "basic\r", "token ",
            "token\t", "token\n", "token\r",
        ]),
        regex: r"(?i)\b(?:bearer|basic|token)\s+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
        check: C::Credential,
    },
    // Personal data.
    Spec {
        name: "card_number",
        family: F::CardNumbers,
        gate: G::Digits(13),
        regex: r"\b[2-6](?:[ -]?[0-9]){12,18}\b",
        check: C::Card,
    },
    Spec {
        name: "ssn",
        family: F::Ssn,
        gate: G::Digits(9),
        regex: r"\b(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})\b",
        check: C::Ssn,
    },
    Spec {
        name: "ssn",
        family: F::Ssn,
        gate: G::Literals(&["ssn", "social security"]),
        regex: r"(?i:\bssn|social[ \t]+security(?:[ \t]+(?:number|no\.?))?)[\s:#=.-]{0,3}(?P<secret>[0-9]{9})\b",
        check: C::Ssn,
    },
    Spec {
        name: "iban",
        family: F::Iban,
        gate: G::Digits(8),
        regex: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        check: C::Iban,
    },
    // Credentials in URLs and command lines.
    Spec {
        name: "url_credentials",
        family: F::UrlCredentials,
        gate: G::LiteralsAnd(&["://"], b'@'),
        regex: r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:(?P<secret>[^\s@/]+)@",
        check: C::Format,
    },
    Spec {
        name: "curl_credentials",
        family: F::UrlCredentials,
        gate: G::Literals(&["curl"]),
        regex: r#"\bcurl\b[^\r\n]*?[ \t](?:-u[ \t]*|--user(?:[ \t]+|=))["']?(?:[^\s:"']*:)?(?P<secret>[^\s"']+)"#,
        check: C::Format,
    },
    // `KEY=value` lines of env files, `password: value` lines of YAML, INI `password = value`:
    // to the end of the line.
    Spec {
        name: "secret_assignment",
        family: F::EnvAssignments,
        gate: G::KeyWords(Assignment::Line),
        regex: r#"(?m)^[ \t]*(?:export[ \t]+|set[ \t]+|-[ \t]+)?["']?(?P<name>[A-Za-z_][A-Za-z0-9_.\[\]-]*)["']?[ \t]*(?:=|:[ \t])[ \t]*(?P<secret>[^\s#][^\r\n]*)"#,
        check: C::KeyName,
    },
    // `name: value` inside a line (`password: hunter2, user: ada`, `{password: 'x'}`; not
    // `scheme://`).
    Spec {
        name: "secret_assignment",
        family: F::EnvAssignments,
        gate: G::KeyWords(Assignment::Inline),
        regex: r#"(?:^|[\s,;{(])["']?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)["']?[ \t]*:[ \t]*(?P<secret>"[^"\r\n]*"|'[^'\r\n]*'|/?[^\s,;})"'/][^\s,;})"']*)"#,
        check: C::KeyName,
    },
    // URL parameters and form fields (`?token=…`, `&password=…`), and `--password=…` flags.
    Spec {
        name: "url_credentials",
        family: F::UrlCredentials,
        gate: G::KeyWords(Assignment::Query),
        regex: r#"[?&;\t ](?P<name>[A-Za-z0-9_.\[\]-]+)=(?P<secret>[^&\s#;"'<>]+)"#,
        check: C::QueryName,
    },
];

/// Keys whose lines belong to [`SPECS`]' `authorization_header` (which keeps the scheme visible),
/// not to `secret_assignment`.
const HEADER_KEYS: &[&str] = &["authorization", "proxy-authorization"];

/// Query parameters that sign a URL (a presigned URL is a credential until it expires).
const URL_SIGNATURE_WORDS: &[&str] = &["sig", "signature"];

/// The bit [`Detectors::gates`] sets when a string holds a word of a sensitive key name.
const KEY_WORDS: u64 = 1 << 63;

/// A compiled detector.
#[derive(Debug, Clone)]
pub(super) struct Detector {
    pub(super) name: &'static str,
    family: Family,
    gate: Gate,
    regex: Regex,
    check: Check,
    /// Index of the regex's `secret` group, if it has one.
    secret_group: Option<usize>,
    /// Index of its `name` group (the key a [`Check::KeyName`] value is assigned to).
    name_group: Option<usize>,
}

/// A secret found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    /// Byte range of the secret.
    pub(super) range: Range<usize>,
    /// The detector that found it.
    pub(super) rule: &'static str,
    /// Counted in the report: false when an earlier detector found an overlapping secret.
    pub(super) counted: bool,
}

/// The enabled detectors and their prefilter.
#[derive(Debug, Clone)]
pub(super) struct Detectors {
    list: Vec<Detector>,
    /// Anchors of the literal- and key-word-gated detectors.
    automaton: Option<AhoCorasick>,
    /// For each automaton pattern, the detectors it opens.
    pattern_masks: Vec<u64>,
    /// Every detector the automaton can open.
    anchored: u64,
    /// Digit-gated detectors: (digits needed, detector bit).
    digit_gates: Vec<(usize, u64)>,
    /// Detectors whose matches all hold a byte besides their anchor: (byte, detector bits).
    required_bytes: Vec<(u8, u64)>,
    /// Key-named detectors: (the assignment shape their regex reads, detector bit).
    assignment_gates: Vec<(Assignment, u64)>,
    /// An `authorization_header` detector is on.
    header_lines: bool,
    /// Card numbers stored as JSON numbers are checked too.
    pub(super) card_numbers: bool,
    /// Strings holding JSON are parsed and redacted inside.
    pub(super) json_strings: bool,
}

impl Detectors {
    /// Compiles the enabled detectors. `key_anchors` are the words of the policy's key names;
    /// `unanchored_keys`: some key rule is a regular expression (or a non-ASCII name), whose keys
    /// no word announces (the key-named detectors then run on every string holding `=` or `:`).
    #[allow(clippy::expect_used)] // constant patterns, covered by tests
    pub(super) fn new(config: &DetectorsConfig, key_anchors: &[String], unanchored_keys: bool) -> Detectors {
        let list: Vec<Detector> = SPECS
            .iter()
            .filter(|s| s.family.enabled(config))
            .map(|s| {
                let regex = Regex::new(&s.regex.replace(r"\b", r"(?-u:\b)")).expect("detector regex");
                let group = |name: &str| regex.capture_names().position(|n| n == Some(name));
                let (secret_group, name_group) = (group("secret"), group("name"));
                Detector {
                    name: s.name,
                    family: s.family,
                    gate: s.gate,
                    regex,
                    check: s.check,
                    secret_group,
                    name_group,
                }
            })
            .collect();
        assert!(list.len() < 64, "one bit per detector, and one for key words");
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_masks: Vec<u64> = Vec::new();
        let mut digit_gates = Vec::new();
        let mut required_bytes: Vec<(u8, u64)> = Vec::new();
        let mut assignment_gates = Vec::new();
        let mut add = |pattern: &str, bit: u64| {
            let lower = pattern.to_ascii_lowercase();
            match patterns.iter().position(|p| *p == lower) {
                Some(i) => pattern_masks[i] |= bit,
                None => {
                    patterns.push(lower);
                    pattern_masks.push(bit);
                }
            }
        };
        for (i, d) in list.iter().enumerate() {
            let bit = 1u64 << i;
            match d.gate {
                Gate::Literals(literals) => literals.iter().for_each(|l| add(l, bit)),
                Gate::LiteralsAnd(literals, byte) => {
                    literals.iter().for_each(|l| add(l, bit));
                    match required_bytes.iter_mut().find(|(b, _)| *b == byte) {
                        Some((_, bits)) => *bits |= bit,
                        None => required_bytes.push((byte, bit)),
                    }
                }
                Gate::KeyWords(shape) => {
                    assignment_gates.push((shape, bit));
                    key_anchors.iter().for_each(|w| add(w, bit));
                    if d.check == Check::QueryName {
                        URL_SIGNATURE_WORDS.iter().for_each(|w| add(w, bit));
                    }
                    if unanchored_keys {
                        add("=", bit);
                        add(":", bit);
                    }
                }
                Gate::Digits(n) => digit_gates.push((n, bit)),
            }
        }
        // A key word anywhere opens JSON text to the key rules, whichever detectors are on.
        key_anchors.iter().for_each(|w| add(w, KEY_WORDS));
        let anchored = pattern_masks.iter().fold(0, |a, m| a | m);
        let automaton = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&patterns)
                .expect("anchor automaton")
        });
        let header_lines = list.iter().any(|d| d.name == "authorization_header");
        Detectors {
            header_lines,
            list,
            automaton,
            pattern_masks,
            anchored,
            digit_gates,
            required_bytes,
            assignment_gates,
            card_numbers: config.card_numbers,
            json_strings: config.json_strings,
        }
    }

    /// The detectors whose gate `s` passes, one bit each (and [`KEY_WORDS`]).
    pub(super) fn gates(&self, s: &str) -> u64 {
        let mut open = 0u64;
        if let Some(automaton) = &self.automaton {
            for m in automaton.find_overlapping_iter(s) {
                open |= self.pattern_masks[m.pattern().as_usize()];
                if open == self.anchored {
                    break;
                }
            }
        }
        if let Some(fewest) = self.digit_gates.iter().map(|g| g.0).min() {
            if s.len() >= fewest {
                let digits = s.bytes().filter(u8::is_ascii_digit).count();
                for &(needed, bit) in &self.digit_gates {
                    if digits >= needed {
                        open |= bit;
                    }
                }
            }
        }
        open
    }

    /// The secrets in `text` found by the detectors in `open`, in detector order. `names_secret`
    /// tells whether a key name (with its value, and whether it is a URL parameter) names a secret.
    pub(super) fn find(
        &self,
        text: &str,
        open: u64,
        mask: &str,
        names_secret: impl Fn(&str, &str, bool) -> bool,
    ) -> Vec<Finding> {
        let open = self.refine(text, open, &names_secret);
        let mut found: Vec<Finding> = Vec::new();
        let mut accept = |range: Range<usize>, rule: &'static str| {
            let secret = &text[range.clone()];
            let leftover = |rest: &str| rest.trim().is_empty();
            if leftover(secret) || (secret.contains(mask) && secret.split(mask).all(leftover)) {
                return; // nothing, or what an earlier redaction left
            }
            let counted = !found.iter().any(|f| f.range.start < range.end && range.start < f.range.end);
            found.push(Finding { range, rule, counted });
        };
        for (i, d) in self.list.iter().enumerate() {
            if open & (1 << i) == 0 {
                continue;
            }
            if let Some(secret_group) = d.secret_group {
                for caps in d.regex.captures_iter(text) {
                    let Some(secret) = caps.get(secret_group) else { continue };
                    let mut range = secret.range();
                    if let Some(name_group) = d.name_group {
                        range = trim_value(text, range);
                        let name = caps.get(name_group).map_or("", |n| n.as_str());
                        if self.header_lines && HEADER_KEYS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                            continue;
                        }
                        if !names_secret(name, &text[range.clone()], d.check == Check::QueryName) {
                            continue;
                        }
                    } else if !passes(d.check, text, range.clone()) {
                        continue;
                    }
                    accept(range, d.name);
                }
            } else {
                for m in d.regex.find_iter(text) {
                    if passes(d.check, text, m.range()) {
                        accept(m.range(), d.name);
                    }
                }
            }
        }
        found
    }

    /// `open` without the detectors whose regex cannot find a secret in `text` although their gate
    /// passed: a required byte is missing, or no `name=value` of the shape a key-named detector
    /// reads has a name that names a secret ([`assignments`]). Exact: every match these skip would
    /// have been dropped by its check.
    fn refine(&self, text: &str, mut open: u64, names_secret: &impl Fn(&str, &str, bool) -> bool) -> u64 {
        for &(byte, bits) in &self.required_bytes {
            if open & bits != 0 && !text.as_bytes().contains(&byte) {
                open &= !bits;
            }
        }
        if self.assignment_gates.iter().any(|&(_, bit)| open & bit != 0) {
            // The value does not matter here: a key that names a secret for some value passes.
            let found = assignments(text, |name, url_parameter| names_secret(name, "", url_parameter));
            for &(shape, bit) in &self.assignment_gates {
                if !found.contains(shape) {
                    open &= !bit;
                }
            }
        }
        open
    }

    /// Describes the detectors for the policy version.
    pub(super) fn describe(&self) -> Value {
        Value::Array(
            self.list
                .iter()
                .map(|d| {
                    let gate = match d.gate {
                        // The byte and the assignment shape follow from the regex: not described.
                        Gate::Literals(l) | Gate::LiteralsAnd(l, _) => json!({"literals": l}),
                        Gate::KeyWords(_) => json!("key_words"),
                        Gate::Digits(n) => json!({"digits": n}),
                    };
                    json!({"name": d.name, "family": d.family.as_str(), "gate": gate, "regex": d.regex.as_str(), "check": d.check.as_str()})
                })
                .collect(),
        )
    }
}

/// Whether a URL parameter's name signs the URL (`sig`, `X-Amz-Signature`).
pub(super) fn is_url_signature(words_last: Option<&str>) -> bool {
    words_last.is_some_and(|w| URL_SIGNATURE_WORDS.contains(&w))
}

/// An assigned value without trailing blanks, and without its quotes when quoted (what follows
/// the closing quote, `",` in a line of JSON-like text, is not the value).
fn trim_value(text: &str, range: Range<usize>) -> Range<usize> {
    let value = text[range.clone()].trim_end();
    let start = range.start;
    match value.as_bytes().first() {
        Some(&q @ (b'"' | b'\'')) => {
            let end = value[1..].rfind(q as char).map_or(value.len(), |i| i + 1);
            start + 1..start + end.max(1)
        }
        _ => start..start + value.len(),
    }
}

/// The checks that need only the text.
fn passes(check: Check, text: &str, range: Range<usize>) -> bool {
    let s = &text[range.clone()];
    match check {
        Check::Format | Check::KeyName | Check::QueryName => true,
        Check::Random => looks_random(s),
        Check::Credential => !s.bytes().all(|b| b.is_ascii_lowercase()),
        Check::OpenAi => openai_key(s),
        Check::Card => card_number(s),
        Check::Ssn => ssn(text, range),
        Check::Iban => iban_valid(s),
    }
}

/// Upper and lower case letters: base62 and base64 secrets have both, hex hashes, words in
/// identifiers and numbers do not.
fn looks_random(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase)
}

/// See [`Check::OpenAi`].
fn openai_key(m: &str) -> bool {
    let body = m.strip_prefix("sk-").unwrap_or(m);
    if body.contains("T3BlbkFJ") {
        return true;
    }
    let typed = ["proj-", "svcacct-", "admin-"].iter().find_map(|p| body.strip_prefix(p));
    match typed {
        Some(rest) => rest.len() >= 40 && looks_random(rest),
        None => body.len() >= 32 && body.bytes().all(|b| b.is_ascii_alphanumeric()) && looks_random(body),
    }
}

/// Luhn checksum over the digits of `s` (13–19 of them).
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (1, twice) if twice > 9 => twice - 9,
            (1, twice) => twice,
            _ => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the digits of `s` could be a payment card: an issuer's prefix and length (Visa,
/// Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro, Mir) and the Luhn check.
pub(super) fn card_number(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let len = digits.len();
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let issuer = match digits.as_bytes().first() {
        Some(b'2') => {
            ((2200..=2204).contains(&prefix(4)) && len >= 16) || ((2221..=2720).contains(&prefix(4)) && len == 16)
        }
        Some(b'3') => {
            ((prefix(2) == 34 || prefix(2) == 37) && len == 15)
                || (((300..=305).contains(&prefix(3)) || [36, 38, 39].contains(&prefix(2))) && len >= 14)
                || ((3528..=3589).contains(&prefix(4)) && len >= 16)
        }
        Some(b'4') => [13, 16, 19].contains(&len),
        Some(b'5') => ((51..=55).contains(&prefix(2)) && len == 16) || [50, 56, 57, 58].contains(&prefix(2)),
        Some(b'6') => len >= 16 || [63, 67].contains(&prefix(2)),
        _ => false,
    };
    (13..=19).contains(&len) && issuer && luhn_valid(&digits)
}

/// See [`Check::Ssn`].
fn ssn(text: &str, range: Range<usize>) -> bool {
    let digits: String = text[range.clone()].chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 9 {
        return false;
    }
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    let area_ok = area != "000" && area != "666" && !area.starts_with('9');
    // Numbers printed in advertising and examples, never issued to a person.
    let published = ["078051120", "219099999", "123456789"].contains(&digits.as_str())
        || digits.bytes().all(|b| b == digits.as_bytes()[0]);
    // Part of a longer number (`1-123-45-6789`, `123-45-6789-0`, `123-45-6789.5`).
    let before = text[..range.start].chars().rev().take(2).collect::<Vec<_>>();
    let after = text[range.end..].chars().take(2).collect::<Vec<_>>();
    let joined = |near: &[char]| matches!(near, [sep, d, ..] if "-./".contains(*sep) && d.is_ascii_digit());
    area_ok && group != "00" && serial != "0000" && !published && !joined(&before) && !joined(&after)
}

/// IBAN length by country (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// An IBAN (spaces allowed): its country's length and the ISO 7064 mod-97 check.
pub(super) fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(cc, _)| compact.starts_with(cc)) else { return false };
    if compact.len() != len || !compact.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
        return false;
    }
    let rearranged = compact[4..].bytes().chain(compact[..4].bytes());
    let remainder = rearranged.fold(0u32, |acc, b| {
        let v = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
        if v >= 10 {
            (acc * 100 + v) % 97
        } else {
            (acc * 10 + v) % 97
        }
    });
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5555 5555 5555 4444"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("1234"));
    }

    #[test]
    fn card_issuers_and_lengths() {
        for good in ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "3530111333300000"]
        {
            assert!(card_number(good), "{good}");
        }
        // Luhn-valid, but no issuer uses that prefix with that length.
        for bad in ["41111111111111", "7111111111111111", "5955555555554444", "37828224631000"] {
            let fixed = luhn_fix(bad);
            assert!(!card_number(&fixed), "{fixed}");
        }
        assert!(!card_number("4111111111111112"), "Luhn");
    }

    /// `digits` with its last digit changed so that the Luhn check passes.
    fn luhn_fix(digits: &str) -> String {
        (0..10)
            .map(|d| format!("{}{d}", &digits[..digits.len() - 1]))
            .find(|c| luhn_valid(c) || c.len() < 13)
            .unwrap_or_default()
    }

    #[test]
    fn ssn_validity_rules() {
        let check = |s: &str| ssn(s, 0..s.len());
        assert!(check("401-55-0001"));
        assert!(check("401 55 0001"));
        for bad in
            ["000-55-0001", "666-55-0001", "901-55-0001", "401-00-0001", "401-55-0000", "078-05-1120", "123-45-6789"]
        {
            assert!(!check(bad), "{bad}");
        }
        let text = "call 1-401-55-0001 now";
        let at = text.find("401").unwrap();
        assert!(!ssn(text, at..at + 11), "part of a longer number");
    }

    #[test]
    fn iban_check_digits_and_lengths() {
        let de = with_check_digits("DE", "370400440532013000");
        assert!(iban_valid(&de), "{de}");
        let spaced = de.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ");
        assert!(iban_valid(&spaced), "{spaced}");
        let mut wrong = de.clone().into_bytes();
        wrong[10] = if wrong[10] == b'9' { b'0' } else { wrong[10] + 1 };
        assert!(!iban_valid(std::str::from_utf8(&wrong).unwrap()), "one digit changed");
        assert!(!iban_valid(&with_check_digits("DE", "3704004405320130")), "too short for DE");
        assert!(!iban_valid(&with_check_digits("ZZ", "370400440532013000")), "no such country");
    }

    /// `cc` + the check digits that make `bban` a valid IBAN, computed the long way.
    fn with_check_digits(cc: &str, bban: &str) -> String {
        let numeric: String = format!("{bban}{cc}00")
            .chars()
            .map(|c| c.to_digit(36).map(|v| v.to_string()).unwrap_or_default())
            .collect();
        let remainder = numeric.chars().fold(0u64, |acc, c| (acc * 10 + u64::from(c.to_digit(10).unwrap())) % 97);
        format!("{cc}{:02}{bban}", 98 - remainder)
    }

    #[test]
    fn openai_keys_need_a_marker_a_type_or_randomness() {
        let random = "EXAMPLEk3y9".repeat(5);
        assert!(openai_key(&format!("sk-{}", &random[..48])));
        assert!(openai_key(&format!("sk-proj-{}", &random[..50])));
        assert!(openai_key(&format!("sk-{}T3BlbkFJ{}", "a".repeat(20), "b".repeat(20))));
        assert!(!openai_key("sk-learn-tutorial-for-beginners-2024"), "words");
        assert!(!openai_key("sk-abcdefghijklmnopqrstuvwxyzabcdefgh"), "one case, no digit");
        assert!(!openai_key("sk-550e8400-e29b-41d4-a716-446655440000"), "a UUID");
    }

    #[test]
    fn every_detector_regex_compiles_and_every_family_has_a_switch() {
        let all = DetectorsConfig {
            bearer_tokens: true,
            url_credentials: true,
            private_keys: true,
            card_numbers: true,
            cloud_keys: true,
            source_host_tokens: true,
            chat_tokens: true,
            payment_keys: true,
            ai_keys: true,
            registry_tokens: true,
            messaging_keys: true,
            env_assignments: true,
            json_strings: true,
            ssn: true,
            iban: true,
        };
        let d = Detectors::new(&all, &["password".into()], false);
        assert_eq!(d.list.len(), SPECS.len());
        for spec in SPECS {
            assert!(spec.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}: snake_case", spec.name);
            let mut off = all.clone();
            match spec.family {
                Family::BearerTokens => off.bearer_tokens = false,
                Family::UrlCredentials => off.url_credentials = false,
                Family::PrivateKeys => off.private_keys = false,
                Family::CardNumbers => off.card_numbers = false,
                Family::CloudKeys => off.cloud_keys = false,
                Family::SourceHostTokens => off.source_host_tokens = false,
                Family::ChatTokens => off.chat_tokens = false,
                Family::PaymentKeys => off.payment_keys = false,
                Family::AiKeys => off.ai_keys = false,
                Family::RegistryTokens => off.registry_tokens = false,
                Family::MessagingKeys => off.messaging_keys = false,
                Family::EnvAssignments => off.env_assignments = false,
                Family::Ssn => off.ssn = false,
                Family::Iban => off.iban = false,
            }
            assert!(!spec.family.enabled(&off), "{}", spec.family.as_str());
            assert!(Detectors::new(&off, &[], false).list.iter().all(|d| d.family != spec.family));
        }
    }

    // ---- Behaviour through the policy: true positives, near misses, false-positive traps. ----

    use std::collections::BTreeMap;

    use crate::redact::{RedactionPolicy, RedactionReport};

    /// Every detector on (IBANs are off by default).
    fn all_on() -> RedactionPolicy {
        let config = DetectorsConfig { iban: true, ..DetectorsConfig::default() };
        RedactionPolicy::new(true, "***".into(), true, Vec::new(), config, None)
    }

    /// `pattern` repeated to `n` characters: fake values of an issuer's length and alphabet.
    fn fill(pattern: &str, n: usize) -> String {
        pattern.chars().cycle().take(n).collect()
    }

    /// Redacts `{"note": text}`: the note after, and the redactions by rule.
    fn scan(policy: &RedactionPolicy, text: &str) -> (String, BTreeMap<&'static str, u64>) {
        let mut v = json!({ "note": text });
        let mut report = RedactionReport::default();
        policy.redact("metadata", &mut v, &mut report);
        (v["note"].as_str().unwrap_or_default().to_owned(), report.by_rule)
    }

    /// `rule` finds `secret` in `text`: gone from the note, counted under `rule`.
    #[track_caller]
    fn finds(rule: &str, text: &str, secret: &str) {
        assert!(text.contains(secret), "the sample holds its secret");
        let (out, by_rule) = scan(&all_on(), text);
        assert!(!out.contains(secret), "{rule}: {secret:?} left in {out:?}");
        assert!(by_rule.contains_key(rule), "{rule} not in {by_rule:?} for {text:?} -> {out:?}");
    }

    /// Nothing in `text` is redacted.
    #[track_caller]
    fn keeps(text: &str) {
        let (out, by_rule) = scan(&all_on(), text);
        assert_eq!(out, text, "{by_rule:?}");
        assert!(by_rule.is_empty(), "{by_rule:?}");
    }

    #[test]
    fn cloud_keys() {
        let id = "AKIAEXAMPLEKEY234567";
        let secret = fill("EXAMPLEsecret/Key+0123", 40);
        finds("aws_access_key_id", &format!("rotated {id} today"), id);
        finds("aws_access_key_id", "temp ASIAEXAMPLE7TEMP2345.", "ASIAEXAMPLE7TEMP2345");
        finds("aws_secret_access_key", &format!("{id}:{secret}"), &secret);
        finds("aws_secret_access_key", &format!("keys {id} and, later, {secret} done"), &secret);
        finds("aws_secret_access_key", &format!("aws_secret_access_key = \"{secret}\""), &secret);
        finds("aws_secret_access_key", &format!("{{SecretAccessKey: '{secret}'}}"), &secret);
        let google = format!("AIza{}", fill("SyEXAMPLE-key_0123456789", 35));
        finds("google_api_key", &format!("maps?key={google}&v=3"), &google);
        let account_key = fill("EXAMPLEkey0123+/", 86);
        finds(
            "azure_storage_key",
            &format!("DefaultEndpointsProtocol=https;AccountName=examplestore;AccountKey={account_key}==;EndpointSuffix=core.windows.net"),
            &account_key,
        );
        let shared = fill("EXAMPLEsharedKey0+/", 43);
        finds(
            "azure_storage_key",
            &format!("Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={shared}="),
            &shared,
        );
        // Near misses: wrong length, wrong alphabet, no context.
        keeps("AKIAEXAMPLEKEY23456 is 19 characters");
        keeps("AKIAEXAMPLEKEY2345678 is 21");
        keeps("AKIAEXAMPLEKEY234518 has 1 and 8, not base32");
        keeps("TZ=Asia/Tokyo and ASIA-PACIFIC");
        keeps(&format!("a git commit {} near nothing", fill("0123456789abcdef", 40)));
        keeps(&format!("AKIA… then sha {}", fill("0123456789abcdef", 40)));
        keeps(&format!("AIza{}", fill("SyEXAMPLE", 34)));
        keeps("AccountKey=tooShort==");
    }

    #[test]
    fn source_host_tokens() {
        let classic = format!("ghp_{}", fill("EXAMPLE0token1", 36));
        finds("github_classic_token", &format!("GITHUB_TOKEN: {classic}"), &classic);
        let fine = format!("github_pat_{}_{}", fill("EXAMPLE01", 22), fill("EXAMPLEfine0grained", 59));
        finds("github_fine_grained_token", &format!("token={fine}"), &fine);
        for prefix in ["gho_", "ghu_", "ghs_", "ghr_"] {
            let token = format!("{prefix}{}", fill("EXAMPLE0app1", 36));
            finds("github_app_token", &format!("installation {token} issued"), &token);
        }
        let gitlab = format!("glpat-{}", fill("EXAMPLExample_1234", 20));
        finds("gitlab_token", &format!("clone with {gitlab}"), &gitlab);
        let deploy = format!("gldt-{}", fill("EXAMPLE-deploy", 24));
        finds("gitlab_token", &format!("deploy token {deploy}"), &deploy);
        let runner = format!("GR1348941{}", fill("EXAMPLErunner", 20));
        finds("gitlab_token", &format!("register {runner}"), &runner);
        keeps(&format!("ghp_{}", fill("EXAMPLE0token1", 35)));
        keeps(&format!("ghp_{}", fill("EXAMPLE0token1", 37)));
        keeps("ghp_EXAMPLE-token-with-dashes-0123456789ab");
        keeps(&format!("glpat-{}", fill("EXAMPLE", 19)));
        keeps("the ghost_protocol and glpat-short");
    }

    #[test]
    fn chat_tokens() {
        let bot = format!("xoxb-123456789012-1234567890123-{}", fill("EXAMPLEtoken", 24));
        finds("slack_token", &format!("bot {bot} posted"), &bot);
        let user = format!("xoxp-1234567890-1234567890-1234567890123-{}", fill("0123456789abcdef", 32));
        finds("slack_token", &user, &user);
        let app = format!("xapp-1-A0EXAMPLE1-1234567890123-{}", fill("0123456789abcdef", 64));
        finds("slack_token", &format!("socket mode {app}"), &app);
        let hook = format!("T00EXAMPLE/B00EXAMPLE/{}", fill("EXAMPLEsecret", 24));
        let (out, _) = scan(&all_on(), &format!("POST https://hooks.slack.com/services/{hook}"));
        assert_eq!(out, "POST https://hooks.slack.com/services/***", "the host stays visible");
        finds("slack_webhook", &format!("https://hooks.slack.com/services/{hook}"), &hook);
        keeps("xoxb-notatoken and xoxo-123-hugs-and-kisses");
        keeps("see https://hooks.slack.com/services/ for setup");
    }

    #[test]
    fn payment_keys() {
        for prefix in ["sk_live_", "rk_live_", "sk_test_", "rk_test_"] {
            let key = format!("{prefix}{}", fill("EXAMPLE0key", 24));
            finds("stripe_secret_key", &format!("curl https://api.stripe.com -H 'k: {key}'"), &key);
        }
        let long = format!("sk_live_{}", fill("EXAMPLE0long1key", 99));
        finds("stripe_secret_key", &long, &long);
        let hook = format!("whsec_{}", fill("EXAMPLE0webhook+/", 32));
        finds("stripe_webhook_secret", &format!("endpoint secret {hook}"), &hook);
        keeps(&format!("sk_live_{}", fill("EXAMPLE0key", 23)));
        keeps("sk_test_YOUR_KEY_HERE");
        keeps("whsec_tooShort0123");
        keeps(&format!("publishable pk_live_{}", fill("EXAMPLE0key", 24)));
    }

    #[test]
    fn ai_keys() {
        let anthropic = format!("sk-ant-api03-{}AA", fill("EXAMPLE_key-0123", 93));
        finds("anthropic_api_key", &format!("x-api: {anthropic}"), &anthropic);
        let project = format!("sk-proj-{}", fill("EXAMPLEk3y9_-", 120));
        finds("openai_api_key", &format!("OPENAI {project}"), &project);
        let marked = format!("sk-{}T3BlbkFJ{}", fill("EXAMPLE0key1", 20), fill("EXAMPLE2key3", 20));
        finds("openai_api_key", &format!("key {marked}."), &marked);
        let plain = format!("sk-{}", fill("EXAMPLEkey01", 48));
        finds("openai_api_key", &plain, &plain);
        let service = format!("sk-svcacct-{}", fill("EXAMPLEsvc0", 64));
        finds("openai_api_key", &service, &service);
        let hf = format!("hf_{}", fill("EXAMPLEtokenValue", 34));
        finds("huggingface_token", &format!("HF {hf}"), &hf);
        keeps("task-list, skeleton, risk-based, desk-booking, ask-me-anything");
        keeps("pip install sk-learn-tutorial-for-beginners-2024");
        keeps("sk-abcdefghijklmnopqrstuvwxyzabcdefgh");
        keeps("trace sk-550e8400-e29b-41d4-a716-446655440000");
        keeps(&format!("sk-ant-api03-{}", fill("EXAMPLE", 10)));
        keeps("hf_hubdownloadcachedirectorysettings and hf_transfer");
    }

    #[test]
    fn registry_and_messaging_keys() {
        let npm = format!("npm_{}", fill("EXAMPLE0token", 36));
        finds("npm_token", &format!("//registry.npmjs.org/:_authToken={npm}"), &npm);
        let pypi = format!("pypi-AgEIcHlwaS5vcmc{}", fill("CJEXAMPLE-token_0123", 60));
        finds("pypi_token", &format!("password = {pypi}"), &pypi);
        let test_pypi = format!("pypi-AgENdGVzdC5weXBpLm9yZw{}", fill("CJEXAMPLE", 60));
        finds("pypi_token", &test_pypi, &test_pypi);
        let docker = format!("dckr_pat_{}", fill("EXAMPLE-tok_en", 27));
        finds("dockerhub_token", &format!("docker login -p {docker}"), &docker);
        let sendgrid = format!("SG.{}.{}", fill("EXAMPLEkey_0", 22), fill("EXAMPLEsecret-0123", 43));
        finds("sendgrid_api_key", &format!("mail via {sendgrid}"), &sendgrid);
        let sid = format!("SK{}", fill("0123456789abcdef", 32));
        finds("twilio_key", &format!("twilio api key {sid}"), &sid);
        let account = format!("AC{}", fill("abcdef0123456789", 32));
        finds("twilio_key", &format!("Twilio account {account}"), &account);
        let auth = fill("0123456789abcdef", 32);
        finds("twilio_key", &format!("twilio authToken='{auth}'"), &auth);
        keeps(&format!("npm_{}", fill("EXAMPLE0token", 35)));
        keeps("npm_config_registry and pypi-package-name and pypi-AgEIcHlwaS5vcmcshort");
        keeps(&format!("SG.{}.{}", fill("EXAMPLEkey_0", 22), fill("EXAMPLE", 42)));
        keeps("msg.send and SG.team");
        keeps("dckr_pat_short and docker_pat_EXAMPLE");
        keeps(&format!("md5 SK{} without the provider named", fill("0123456789abcdef", 32)));
    }

    #[test]
    fn tokens_and_headers_in_raw_text() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJFWEFNUExFIn0.RVhBTVBMRXNpZ25hdHVyZQ";
        finds("jwt", &format!("id_token was {jwt} (expired)"), jwt);
        let request =
            "GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic ZXhhbXBsZTpFWEFNUExF\r\nAccept: */*";
        let (out, by_rule) = scan(&all_on(), request);
        assert_eq!(out, "GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic ***\r\nAccept: */*");
        assert_eq!(by_rule.get("authorization_header"), Some(&1), "{by_rule:?}");
        finds("authorization_header", "authorization: Bearer EXAMPLEopaque.token_value", "EXAMPLEopaque.token_value");
        let sigv4 = format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY234567/20250101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
            fill("0123456789abcdef", 64)
        );
        let (out, _) = scan(&all_on(), &sigv4);
        assert_eq!(out, "Authorization: AWS4-HMAC-SHA256 ***");
        let digest = r#"Proxy-Authorization: Digest username="ada", realm="example", nonce="EXAMPLEnonce", response="0123456789abcdef0123456789abcdef""#;
        let (out, _) = scan(&all_on(), digest);
        assert_eq!(out, "Proxy-Authorization: Digest ***");
        let (out, _) = scan(&all_on(), "{'Authorization': 'Token EXAMPLE0123opaque', 'Accept': 'json'}");
        assert_eq!(out, "{'Authorization': 'Token ***', 'Accept': 'json'}");
        finds("bearer", "sent Bearer EXAMPLE0123.opaque to the API", "EXAMPLE0123.opaque");
        keeps("Authorization failed for user ada; Basic authentication is off; token expired yesterday");
        keeps("header eyJhbGciOiJIUzI1NiJ9 alone, and eyJ.x.y too short");
        keeps("the bearer tokens were refreshed successfully");
    }

    #[test]
    fn credentials_in_urls_and_command_lines() {
        let (out, _) = scan(&all_on(), "cache at redis://:EXAMPLEpass@cache:6379/0");
        assert_eq!(out, "cache at redis://:***@cache:6379/0", "an empty user");
        finds("url_credentials", "amqp://guest:EXAMPLEpw@mq.internal/vhost", "EXAMPLEpw");
        finds("url_credentials", "mongodb+srv://app:EXAMPLE%40pw@cluster0.example.net/db", "EXAMPLE%40pw");
        let presigned = format!(
            "https://bucket.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={}&x=1",
            fill("0123456789abcdef", 64)
        );
        let (out, by_rule) = scan(&all_on(), &presigned);
        assert!(out.ends_with("X-Amz-Signature=***&x=1"), "{out}");
        assert_eq!(by_rule.get("url_credentials"), Some(&1));
        finds("url_credentials", "https://store.example.net/c?sv=2024&sig=EXAMPLEsig%3D", "EXAMPLEsig%3D");
        let (out, _) = scan(&all_on(), "curl -u ada:EXAMPLEpass https://api.example.com/v1");
        assert_eq!(out, "curl -u ada:*** https://api.example.com/v1", "the user stays visible");
        finds("curl_credentials", "curl -s --user=ada:EXAMPLEpw https://x", "EXAMPLEpw");
        finds("curl_credentials", "curl -X POST https://api.example.com --user 'ops:EXAMPLEpw'", "EXAMPLEpw");
        finds("curl_credentials", "curl -uada:EXAMPLEpw https://x", "EXAMPLEpw");
        keeps("https://example.com:8443/path?page=2&tokens_used=3");
        keeps("git@github.com:org/repo.git and mailto:ada@example.com");
        keeps("curl --user-agent Mozilla -H 'Accept: json' https://x");
    }

    #[test]
    fn assignments_in_env_yaml_and_ini_text_where_the_key_names_a_secret() {
        let env = "APP_NAME=billing\nDB_PASSWORD=EXAMPLE pass phrase\nexport STRIPE_SECRET=\"EXAMPLEquoted\"\nPASSWORD_LENGTH=12\nMAX_TOKENS=4096\nPIN=1234\n";
        let (out, by_rule) = scan(&all_on(), env);
        assert_eq!(
            out,
            "APP_NAME=billing\nDB_PASSWORD=***\nexport STRIPE_SECRET=\"***\"\nPASSWORD_LENGTH=12\nMAX_TOKENS=4096\nPIN=***\n"
        );
        assert_eq!(by_rule.get("secret_assignment"), Some(&3), "{by_rule:?}");
        let yaml = "database:\n  host: db.internal\n  password: EXAMPLE pass # prod\n  pool_size: 5\n  api_key: 'EXAMPLEkey'\n";
        let (out, _) = scan(&all_on(), yaml);
        assert_eq!(out, "database:\n  host: db.internal\n  password: ***\n  pool_size: 5\n  api_key: '***'\n");
        let ini = "[smtp]\r\nuser = ada\r\npass = EXAMPLEpw\r\ncompass = north\r\n";
        let (out, _) = scan(&all_on(), ini);
        assert_eq!(out, "[smtp]\r\nuser = ada\r\npass = ***\r\ncompass = north\r\n");
        let (out, _) = scan(&all_on(), "login failed for ada, password: EXAMPLEpw, retrying");
        assert_eq!(out, "login failed for ada, password: ***, retrying");
        let (out, _) = scan(&all_on(), "{user: 'ada', passwd: 'EXAMPLEpw'}");
        assert_eq!(out, "{user: 'ada', passwd: '***'}");
        let (out, _) = scan(&all_on(), "{\n  \"password\": \"EXAMPLE pw\",\n  \"user\": \"ada\",\n");
        assert_eq!(out, "{\n  \"password\": \"***\",\n  \"user\": \"ada\",\n", "broken JSON keeps its quotes");
        keeps("passport: X1234567, bypass: true, token_count: 42, time: 10:30");
        keeps("password reset requested; see https://example.com/reset");
        keeps("SECRET_ROTATION_DAYS=90\nTOKEN_TTL=3600\nPASSWORD_MIN_LENGTH=12");
    }

    #[test]
    fn card_numbers_in_text_and_as_json_numbers() {
        finds("card_number", "card 4111 1111 1111 1111 on file", "4111 1111 1111 1111");
        finds("card_number", "amex 378282246310005.", "378282246310005");
        finds("card_number", "mc 5555-5555-5555-4444", "5555-5555-5555-4444");
        let policy = all_on();
        let mut v = json!({"n": 4111111111111111u64, "jcb": 3530111333300000u64, "amount": 1250.5,
            "order": 4111111111111112u64, "ts": 1732579200000u64, "nine": 9111111111111111u64, "small": 42});
        let mut report = RedactionReport::default();
        policy.redact("metadata", &mut v, &mut report);
        assert_eq!(v["n"], "***");
        assert_eq!(v["jcb"], "***");
        assert_eq!(report.by_rule.get("card_number"), Some(&2));
        let mut paths = report.paths.clone();
        paths.sort(); // document order follows the map's order, which a build may change
        assert_eq!(paths, vec!["metadata.jcb", "metadata.n"]);
        assert_eq!(v["order"], 4111111111111112u64, "Luhn fails");
        assert_eq!(v["ts"], 1732579200000u64, "a millisecond timestamp");
        assert_eq!(v["nine"], 9111111111111111u64, "no issuer starts with 9");
        keeps("order 4111 1111 1111 1112, ts 1732579200000, ISBN 978-3-16-148410-0, +1 555 123 4567");
        keeps("tracking 1Z999AA10123456784 and 2024-01-15 10:30:00.123456");
    }

    #[test]
    fn ssns_with_the_validity_rules() {
        finds("ssn", "SSN 401-55-0001 on file", "401-55-0001");
        finds("ssn", "social security number 401 55 0001", "401 55 0001");
        finds("ssn", "ssn: 401550001", "401550001");
        for bad in ["000-55-0001", "666-55-0001", "901-55-0001", "401-00-0001", "401-55-0000", "078-05-1120"] {
            keeps(&format!("id {bad}"));
        }
        keeps("a bare 401550001 with no context, call 555-123-4567, on 2024-01-15, 1-401-55-0001");
    }

    #[test]
    fn ibans_with_the_mod_97_check() {
        for iban in [
            with_check_digits("DE", "100100100000123456"),
            with_check_digits("GB", "XMPL00000012345678"),
            with_check_digits("NL", "XMPL0123456789"),
        ] {
            finds("iban", &format!("refund to {iban} today"), &iban);
            let spaced =
                iban.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ");
            finds("iban", &format!("refund to {spaced}"), &spaced);
        }
        let good = with_check_digits("DE", "100100100000123456");
        let bad_check = format!("{}{}", &good[..2], if &good[2..4] == "11" { "12" } else { "11" }) + &good[4..];
        keeps(&format!("refund to {bad_check}"));
        keeps(&format!("refund to {}", with_check_digits("US", "123456789012345678")));
        keeps(&format!("refund to {}", with_check_digits("DE", "1001001000001234567")));
        keeps(&format!("refund to {}", with_check_digits("DE", "100100100000123456").to_lowercase()));
        let (out, _) = scan(&RedactionPolicy::default_policy(), &format!("refund to {good}"));
        assert_eq!(out, format!("refund to {good}"), "off by default");
    }

    #[test]
    fn private_key_blocks() {
        finds(
            "private_key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAEXAMPLE\n-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAAEXAMPLE",
        );
        finds(
            "private_key",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBEXAMPLE\n-----END PGP PRIVATE KEY BLOCK-----",
            "lQOYBEXAMPLE",
        );
        finds("private_key", "cut off: -----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIEXAMPLE", "MIIEXAMPLE");
        finds(
            "private_key",
            "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\nAAAAEXAMPLE\nPrivate-MAC: 0123abcd",
            "AAAAEXAMPLE",
        );
        keeps("-----BEGIN PUBLIC KEY-----\nMIIBIjEXAMPLE\n-----END PUBLIC KEY-----");
        keeps("-----BEGIN CERTIFICATE-----\nMIIDEXAMPLE\n-----END CERTIFICATE-----");
    }

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

    /// Every match of a literal-gated detector over the samples above contains one of its
    /// anchors, so the prefilter never skips a string the regex would match (Twilio's anchor is
    /// context instead: it must be in the string).
    #[test]
    fn every_literal_gated_match_contains_an_anchor() {
        let samples = [
            format!("AKIAEXAMPLEKEY234567:{}", fill("EXAMPLEsecret/Key+0123", 40)),
            format!("aws_secret_access_key = \"{}\"", fill("EXAMPLEsecret/Key+0123", 40)),
            format!("AIza{} ghp_{}", fill("SyEXAMPLE", 35), fill("EXAMPLE0", 36)),
            format!("AccountKey={}==", fill("EXAMPLEkey0123+/", 86)),
            format!("xoxb-1-{} https://hooks.slack.com/services/{}", fill("EXAMPLE", 12), fill("T0/B0/EXAMPLE", 30)),
            format!("sk_live_{} whsec_{} sk-ant-api03-{}", fill("EX0", 24), fill("EX0", 32), fill("EX0", 40)),
            format!("sk-proj-{} hf_{} npm_{}", fill("EXAMPLEk3y9", 50), fill("EXAMPLEtok", 34), fill("EX0", 36)),
            format!(
                "pypi-AgEIcHlwaS5vcmc{} dckr_pat_{} SG.{}.{}",
                fill("X", 50),
                fill("X", 27),
                fill("X", 22),
                fill("Y", 43)
            ),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig Authorization: Basic EXAMPLE0 bearer EXAMPLE0123 x".to_owned(),
            "Authorization: Digest response=\"x\"\nredis://:pw@h curl -u a:b https://x ssn 401550001".to_owned(),
            "-----BEGIN RSA PRIVATE KEY-----\nx PuTTY-User-Key-File-2: x Private-MAC: 00".to_owned(),
            format!("glpat-{} GR1348941{}", fill("EXAMPLE", 20), fill("EXAMPLE", 20)),
        ];
        let all = DetectorsConfig { iban: true, ..DetectorsConfig::default() };
        let detectors = Detectors::new(&all, &[], false);
        let mut checked = 0;
        for d in &detectors.list {
            let Some(anchors) = d.gate.literals() else { continue };
            for text in &samples {
                for m in d.regex.find_iter(text) {
                    let found = m.as_str().to_ascii_lowercase();
                    let context = d.name == "twilio_key" || d.name == "ssn";
                    let within = if context { text.to_ascii_lowercase() } else { found };
                    assert!(
                        anchors.iter().any(|a| within.contains(&a.to_ascii_lowercase())),
                        "{}: {:?} holds none of {anchors:?}",
                        d.name,
                        m.as_str()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 25, "the samples exercise the detectors: {checked} matches");
    }

    #[test]
    fn every_detector_and_family_is_documented() {
        let privacy = include_str!("../../../docs/PRIVACY.md");
        let metrics = include_str!("../../../docs/METRICS.md");
        for spec in SPECS {
            let row = format!("| `{}` | `{}` |", spec.name, spec.family.as_str());
            assert!(privacy.contains(&row), "docs/PRIVACY.md has no row {row}");
            assert!(metrics.contains(&format!("`{}`", spec.name)), "docs/METRICS.md does not list {}", spec.name);
        }
    }

    #[test]
    fn a_string_without_anchors_opens_no_detector() {
        let detectors = Detectors::new(&DetectorsConfig::default(), &["password".into(), "token".into()], false);
        for text in ["customer request", "EUR", "billing.invoice.update", "r-1", "draft"] {
            assert_eq!(detectors.gates(text), 0, "{text}");
        }
        assert_ne!(detectors.gates("a PASSWORD here") & KEY_WORDS, 0, "key words, any case");
        let digits = detectors.gates("2026-11-26T10:00:00.123Z");
        assert_ne!(digits, 0, "13+ digits open the card and SSN detectors");
        assert_eq!(digits & detectors.anchored, 0, "and nothing else");
    }
}
