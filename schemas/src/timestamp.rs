//! Timestamps as the contract writes them: RFC 3339, UTC, millisecond precision.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with millisecond precision.
///
/// Parsing accepts any RFC 3339 date-time (any offset, any fraction) and normalizes it to UTC,
/// truncating below the millisecond; formatting always gives `YYYY-MM-DDTHH:MM:SS.mmmZ`. Equal instants
/// therefore serialize to equal bytes, which the hash chain depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From milliseconds since the Unix epoch.
    pub fn from_millis(millis: i64) -> Option<Self> {
        Utc.timestamp_millis_opt(millis).single().map(|_| Timestamp(millis))
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// The current time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// As a chrono value.
    pub fn to_datetime(self) -> DateTime<Utc> {
        // from_millis/parse only construct in-range values.
        Utc.timestamp_millis_opt(self.0).single().unwrap_or_default()
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Timestamp(value.timestamp_millis())
    }
}

/// A string that is not an RFC 3339 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time (expected e.g. 2026-01-31T23:59:59.123Z): {input:?}")]
pub struct TimestampParseError {
    input: String,
}

impl FromStr for Timestamp {
    type Err = TimestampParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|dt| Timestamp(dt.timestamp_millis()))
            .map_err(|_| TimestampParseError { input: s.chars().take(64).collect() })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_datetime().to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_offsets_and_precision_to_utc_millis() {
        let t: Timestamp = "2026-01-31T23:59:59.123456+02:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-01-31T21:59:59.123Z");
        let t: Timestamp = "2026-01-31T23:59:59Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-01-31T23:59:59.000Z");
    }

    #[test]
    fn rejects_non_rfc3339_with_the_input_in_the_message() {
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(err.to_string().contains("\"yesterday\""), "{err}");
    }
}
