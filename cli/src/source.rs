//! Where stored events are read from: a store (its reader is in its folder,
//! `audit_sink::stores::<kind>`, and [`audit_sink::stores::Location`] names it), or the processed
//! topic itself, whose reader is here. Every reader hands over the events of each chain in the
//! order the store keeps them (file order for JSONL and the topic, `seq` order for the databases);
//! what they hand over is [`audit_sink::stores::read`]'s contract, re-exported here.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use audit_sink::stores::read::{chain_of, missing_link_field, stored_checkpoint};
pub use audit_sink::stores::read::{LinkOnly, LinkRef, ReadFilter, Stored, Unread, UnreadKind};
pub use audit_sink::stores::Location;

/// A store to read events from, parsed from `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A store (`jsonl:DIR` or a directory, `sqlite:PATH`, `postgres://…`, `mongodb://…#COLLECTION`).
    Store(Location),
    /// `kafka://HOST:PORT[,HOST:PORT]/TOPIC`: the processed topic, read from its oldest record to
    /// the high watermark of each partition.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Processed topic.
        topic: String,
    },
}

impl From<Location> for Source {
    fn from(location: Location) -> Source {
        Source::Store(location)
    }
}

impl FromStr for Source {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Source> {
        if let Some(location) = Location::parse(s) {
            return location.map(Source::Store).map_err(anyhow::Error::msg);
        }
        if let Some(rest) = s.strip_prefix("kafka://") {
            let Some((brokers, topic)) = rest.split_once('/').filter(|(b, t)| !b.is_empty() && !t.is_empty()) else {
                bail!("source {s:?}: expected kafka://HOST:PORT/TOPIC");
            };
            return Ok(Source::Kafka { brokers: brokers.to_owned(), topic: topic.to_owned() });
        }
        let forms: Vec<&str> = audit_sink::stores::SOURCE_FORMS.iter().flatten().copied().collect();
        if s.contains("://") {
            // Each store's scheme: `jsonl:DIR` → `jsonl:`, `postgres://` as it is.
            let schemes: Vec<&str> = forms
                .iter()
                .map(|f| f.find("://").map_or_else(|| f.split_inclusive(':').next().unwrap_or(f), |i| &f[..i + 3]))
                .collect();
            bail!("source {s:?}: unknown scheme (expected {} or kafka://)", schemes.join(", "));
        }
        if let Some(location) = Location::parse_bare(s) {
            return Ok(Source::Store(location));
        }
        bail!("source {s:?}: not a directory, and not one of {}, kafka://", forms.join(", "))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Store(location) => location.fmt(f),
            Source::Kafka { brokers, topic } => write!(f, "kafka://{brokers}/{topic}"),
        }
    }
}

/// Reads every stored event of `source` that `filter` asks for, calling `each` in store order.
pub async fn read(
    source: &Source,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    match source {
        Source::Store(location) => location.read(filter, each).await,
        Source::Kafka { brokers, topic } => read_kafka(brokers, topic, filter, each).await,
    }
}

async fn read_kafka(
    brokers: &str,
    topic: &str,
    filter: &ReadFilter,
    each: &mut (dyn FnMut(Stored) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use rdkafka::Message as _;
    crate::kafka::scan_topic(brokers, topic, &mut |message| {
        let location = || format!("{topic}/{} offset {}", message.partition(), message.offset());
        let Some(payload) = message.payload() else {
            let reason = "a record without a payload (the processor never publishes one): not verified".into();
            return each(Unread::stored(UnreadKind::Unreadable, location(), reason));
        };
        if crate::kafka::is_checkpoint(message) {
            return match stored_checkpoint(payload, location) {
                Stored::Checkpoint(c) if filter.chain.as_deref().is_some_and(|chain| c.chain != chain) => Ok(()),
                stored => each(stored),
            };
        }
        let json = audit_schema::WireFormat::detect(payload) == audit_schema::WireFormat::Json;
        let strict = if json {
            audit_schema::canonical::check_text(payload, audit_schema::canonical::TextForm::Canonical)
        } else {
            Ok(())
        };
        let event = match audit_schema::codec::event_value(payload) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("not a processed event ({e}): not verified");
                return each(Unread::stored(UnreadKind::Unreadable, location(), reason));
            }
        };
        if let Some(field) = missing_link_field(&event) {
            return each(Unread::event(location(), &event, format!("an event without a valid {field}: not verified")));
        }
        if filter.chain.as_deref().is_some_and(|c| chain_of(&event) != Some(c)) {
            return Ok(());
        }
        if let Err(e) = strict {
            let reason = format!(
                "the record's payload is not the canonical form the processor publishes (at {e}): consumers of the \
                 topic may read other content than what was hashed; the event is verified as it parses"
            );
            each(Unread::about(UnreadKind::NonCanonical, location(), &event, reason))?;
        }
        each(Stored::Event(event))
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use audit_sink::stores::mongodb::MongoCollection;

    use super::*;

    fn store(location: Location) -> Source {
        Source::Store(location)
    }

    #[test]
    fn sources_parse_from_their_spellings() {
        assert_eq!("jsonl:/x".parse::<Source>().unwrap(), store(Location::Jsonl("/x".into())));
        assert_eq!("sqlite:/a/b.db".parse::<Source>().unwrap(), store(Location::Sqlite("/a/b.db".into())));
        assert_eq!("sqlite:///a/b.db".parse::<Source>().unwrap(), store(Location::Sqlite("/a/b.db".into())));
        assert_eq!(
            "postgres://u:p@h:5432/db".parse::<Source>().unwrap(),
            store(Location::Postgres("postgres://u:p@h:5432/db".into()))
        );
        assert_eq!(
            "mongodb://h:27017/auditdb?directConnection=true#events".parse::<Source>().unwrap(),
            store(Location::Mongodb(MongoCollection {
                uri: "mongodb://h:27017/auditdb?directConnection=true".into(),
                database: "auditdb".into(),
                collection: "events".into()
            }))
        );
        assert_eq!(
            "mongodb://h:27017/?directConnection=true".parse::<Source>().unwrap(),
            store(Location::Mongodb(MongoCollection {
                uri: "mongodb://h:27017/?directConnection=true".into(),
                database: "audit".into(),
                collection: "audit_events".into()
            }))
        );
        assert_eq!(
            "kafka://h:9092,g:9092/audit.processed".parse::<Source>().unwrap(),
            Source::Kafka { brokers: "h:9092,g:9092".into(), topic: "audit.processed".into() }
        );
        let dir = std::env::temp_dir();
        assert_eq!(dir.display().to_string().parse::<Source>().unwrap(), store(Location::Jsonl(PathBuf::from(&dir))));
        let error = "ftp://x".parse::<Source>().unwrap_err().to_string();
        assert_eq!(
            error,
            "source \"ftp://x\": unknown scheme (expected jsonl:, postgres://, sqlite:, mongodb:// or kafka://)"
        );
        let error = "kafka://h:9092".parse::<Source>().unwrap_err().to_string();
        assert!(error.contains("kafka://HOST:PORT/TOPIC"), "{error}");
        let error = "/no/such/dir".parse::<Source>().unwrap_err().to_string();
        assert_eq!(
            error,
            "source \"/no/such/dir\": not a directory, and not one of jsonl:DIR, postgres://, sqlite:PATH, \
             mongodb://, kafka://"
        );
        let error = "sqlite:".parse::<Source>().unwrap_err().to_string();
        assert!(error.contains("needs a file path"), "{error}");
    }

    #[test]
    fn a_source_never_prints_its_password() {
        let s: Source = "postgres://audit:s3cret@db:5432/audit".parse().unwrap();
        assert_eq!(s.to_string(), "postgres://audit:***@db:5432/audit");
        let s: Source = "mongodb://u:pw@h/db#c".parse().unwrap();
        assert_eq!(s.to_string(), "mongodb://u:***@h/db#c");
    }
}
