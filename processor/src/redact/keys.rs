//! Key names: how a key is split into words, the built-in sensitive keys, and the measure rule
//! (a key that counts or measures a secret, `token_count`, is not the secret when its value is a
//! number or a boolean).

/// The built-in sensitive keys, matched like configured keys: the name's words in a row in the key
/// (plural allowed on the last one), or the key's letters ending with the name's (`xapikey`).
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "otp",
    "token",
    "accessToken",
    "refreshToken",
    "authorization",
    "cookie",
    "set-cookie",
    "secret",
    "credential",
    "apiKey",
    "privateKey",
    "accessKey",
    "signingKey",
    "encryptionKey",
    "cardNumber",
    "securityCode",
    "recoveryCode",
    "backupCode",
];

/// Built-in keys short enough to hide in other words: matched as whole words only (`card_pin`,
/// `PIN`, but not `shipping` or `spin`).
pub const DEFAULT_WORD_KEYS: &[&str] = &["pwd", "pin", "cvv", "cvv2", "cvc", "cvc2", "ssn"];

/// Built-in keys matched only as a key's last word: `db_pass`, `smtpPass`, but not `pass_through`
/// or `bypass`.
pub const DEFAULT_LAST_WORD_KEYS: &[&str] = &["pass"];

/// Last words that make a key a measure of a secret rather than the secret (`token_count`,
/// `password_length`, `secret_rotation_days`, `tokens_used`, `password_changed_at`). `number` is
/// not one: `card_number` is a secret.
pub const MEASURE_WORDS: &[&str] = &[
    "count",
    "counts",
    "length",
    "len",
    "size",
    "used",
    "total",
    "limit",
    "max",
    "min",
    "remaining",
    "left",
    "attempts",
    "tries",
    "retries",
    "failures",
    "days",
    "hours",
    "minutes",
    "mins",
    "seconds",
    "secs",
    "ms",
    "millis",
    "age",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "lifetime",
    "timeout",
    "interval",
    "at",
    "time",
    "timestamp",
    "ts",
    "version",
    "score",
    "strength",
    "bits",
    "rounds",
    "iterations",
    "percent",
    "rate",
];

/// First words that do the same (`max_tokens`, `num_keys`, `total_tokens`).
pub const MEASURE_PREFIXES: &[&str] = &["max", "min", "num", "total", "count", "avg"];

/// Words skipped at the end of a key before its last word is read (`token_expires_in`).
const TRAILING_WORDS: &[&str] = &["in", "for", "after"];

/// Splits a key into lowercase words at separators and lower→upper case changes.
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A key split into words once, so every rule can test it without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWords {
    words: Vec<String>,
    joined: String,
}

impl KeyWords {
    /// Splits `key`.
    pub fn new(key: &str) -> Self {
        let words = words(key);
        KeyWords { joined: words.concat(), words }
    }

    /// The key's last word.
    pub(super) fn last_word(&self) -> Option<&str> {
        self.words.last().map(String::as_str)
    }

    /// The key's last word, before trailing prepositions (`expires` in `expires_in`).
    fn last_meaningful(&self) -> Option<&str> {
        let mut end = self.words.len();
        while end > 1 && TRAILING_WORDS.contains(&self.words[end - 1].as_str()) {
            end -= 1;
        }
        self.words.get(end.checked_sub(1)?).map(String::as_str)
    }
}

/// `word` is `base` or `base` + "s".
fn same_or_plural(word: &str, base: &str) -> bool {
    word == base || (word.len() == base.len() + 1 && word.starts_with(base) && word.ends_with('s'))
}

/// How a key name finds itself in a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordMatch {
    /// Its words in a row, or the key's letters ending with its letters (configured keys).
    WordsOrLetters,
    /// Its words in a row only.
    Words,
    /// As the key's last word only.
    LastWord,
}

/// A key name as a rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName {
    pub(super) original: String,
    words: Vec<String>,
    joined: String,
    how: WordMatch,
    /// The name itself names a measure (`password_length`): the measure rule does not apply.
    is_measure: bool,
}

impl KeyName {
    /// Parses a rule's key name (matched on words or letters, like configured keys).
    pub fn new(name: &str) -> Self {
        KeyName::with(name, WordMatch::WordsOrLetters)
    }

    /// Parses a key name matched the given way.
    pub fn with(name: &str, how: WordMatch) -> Self {
        let words = words(name);
        let is_measure =
            words.iter().any(|w| MEASURE_WORDS.contains(&w.as_str()) || MEASURE_PREFIXES.contains(&w.as_str()));
        KeyName { original: name.to_owned(), joined: words.concat(), words, how, is_measure }
    }

    /// How this name matches.
    pub fn how(&self) -> WordMatch {
        self.how
    }

    /// Whether a document key matches this name.
    pub fn matches(&self, key: &str) -> bool {
        self.matches_words(&KeyWords::new(key))
    }

    /// [`KeyName::matches`] on a key already split.
    pub fn matches_words(&self, key: &KeyWords) -> bool {
        let n = self.words.len();
        if n == 0 {
            return false;
        }
        match self.how {
            WordMatch::LastWord => {
                key.words.len() >= n
                    && key.words[key.words.len() - n..key.words.len() - 1] == self.words[..n - 1]
                    && same_or_plural(&key.words[key.words.len() - 1], &self.words[n - 1])
            }
            WordMatch::WordsOrLetters
                if key.joined.ends_with(&self.joined) || same_or_plural(&key.joined, &self.joined) =>
            {
                true
            }
            WordMatch::WordsOrLetters | WordMatch::Words => key
                .words
                .windows(n)
                .any(|w| w[..n - 1] == self.words[..n - 1] && same_or_plural(&w[n - 1], &self.words[n - 1])),
        }
    }

    /// Whether `key` (which this name matches) counts or measures the secret rather than holding
    /// it: its last word is a measure word (`token_count`, `password_length`, `tokens_used`,
    /// `token_expires_in`), its first word a measure prefix (`max_tokens`), or its last word this
    /// name's last word in the plural (`prompt_tokens`). A number or boolean under such a key is
    /// kept. Never true when the name itself names a measure.
    pub fn is_measure_of(&self, key: &KeyWords) -> bool {
        if self.is_measure {
            return false;
        }
        let Some(last) = key.last_meaningful() else { return false };
        let plural_of_name = self.words.last().is_some_and(|w| last.len() == w.len() + 1 && same_or_plural(last, w));
        MEASURE_WORDS.contains(&last)
            || (key.words.len() > 1 && MEASURE_PREFIXES.contains(&key.words[0].as_str()))
            || plural_of_name
    }

    /// The word a string must contain (ASCII case aside) for this name to match a key in it: the
    /// longest of its words (every word of a match is in the key's letters).
    pub(super) fn anchor(&self) -> Option<&str> {
        self.words.iter().max_by_key(|w| w.len()).map(String::as_str)
    }
}

/// Whether a value is one the measure rule keeps: a number, a boolean, or text that reads as one
/// (`"12"`, `"true"`: env files, YAML and query strings carry numbers as text).
pub(super) fn measurable_text(s: &str) -> bool {
    // Most text starts with a byte no number or boolean starts with, and no blank `trim` removes
    // (U+000B is one `is_ascii_whitespace` leaves out; other blanks are not ASCII): decided
    // without trimming.
    let Some(&first) = s.as_bytes().first() else { return false };
    let plain = first.is_ascii() && !first.is_ascii_whitespace() && first != 0x0B;
    if plain && !matches!(first, b'0'..=b'9' | b'-' | b't' | b'T' | b'f' | b'F') {
        return false;
    }
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
        return true;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && digits.len() <= 32
        && int.bytes().all(|b| b.is_ascii_digit())
        && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(key: &str) -> Option<KeyName> {
        DEFAULT_KEYS
            .iter()
            .map(|k| KeyName::new(k))
            .chain(DEFAULT_WORD_KEYS.iter().map(|k| KeyName::with(k, WordMatch::Words)))
            .chain(DEFAULT_LAST_WORD_KEYS.iter().map(|k| KeyName::with(k, WordMatch::LastWord)))
            .find(|k| k.matches(key))
    }

    #[test]
    fn short_built_in_keys_match_whole_words_only() {
        for key in
            ["pwd", "db_pass", "smtpPass", "PASS", "card_pin", "PIN", "cvv", "cvv2", "CVC", "ssn", "user_ssn", "passes"]
        {
            if key == "passes" {
                assert!(builtin(key).is_none(), "{key}");
                continue;
            }
            assert!(builtin(key).is_some(), "{key}");
        }
        for key in ["bypass", "compass", "pass_through", "shipping", "spin", "mapping", "pinned", "cwd", "passport"] {
            assert!(builtin(key).is_none(), "{key} is not a secret: {:?}", builtin(key));
        }
        for key in [
            "passwd",
            "DB_PASSWORD",
            "passphrase",
            "client_secret",
            "api_key",
            "private_key",
            "secret_key",
            "aws_access_key_id",
            "credentials",
            "card_number",
            "security_code",
        ] {
            assert!(builtin(key).is_some(), "{key}");
        }
    }

    #[test]
    fn measure_words_exempt_counters_but_not_secrets() {
        let measure = |key: &str| {
            let name = builtin(key).unwrap_or_else(|| panic!("{key} matches a built-in key"));
            name.is_measure_of(&KeyWords::new(key))
        };
        for key in [
            "token_count",
            "tokens_used",
            "password_length",
            "secret_rotation_days",
            "max_tokens",
            "prompt_tokens",
            "tokens",
            "token_expires_in",
            "passwordChangedAt",
            "pin_attempts",
        ] {
            assert!(measure(key), "{key} measures");
        }
        for key in ["password", "pin", "card_number", "otp", "token_id", "secret_rotation", "api_key"] {
            assert!(!measure(key), "{key} holds the secret");
        }
        let own = KeyName::new("password_length");
        assert!(!own.is_measure_of(&KeyWords::new("password_length")), "a configured measure stays a rule");
    }

    #[test]
    fn measurable_text_is_numbers_and_booleans() {
        for s in ["12", "-3", "1.5", "true", "FALSE", " 42 ", "\u{B}7", "\u{A0}7\n"] {
            assert!(measurable_text(s), "{s}");
        }
        for s in ["", "12a", "1.", ".5", "hunter2", "0x1f", "1e5", "x12", "(12)"] {
            assert!(!measurable_text(s), "{s}");
        }
    }
}
