//! Kafka plumbing shared by every auditstream client: the producer library, the processor, the sinks
//! and `auditctl`.
//!
//! It owns the few things that must be done the same way everywhere:
//! * [`ClientSettings::client_config`]: one function builds each client's `ClientConfig`: our required
//!   keys first, then (with [`ClientSettings::tuned_client_config`]) our tuning for that client, then
//!   the user's pass-through librdkafka options, which may change the tuning but are refused for the
//!   keys our delivery guarantees depend on.
//! * [`close_consumer`]: the one close sequence for a consumer that is in a group. Dropping a
//!   `BaseConsumer` runs librdkafka's close with no time limit, which hangs while the broker is
//!   unreachable (and was seen to hang against rdkafka's mock cluster); this closes with a
//!   deadline instead.
//! * [`lanes`]: the partition-lane engine every at-least-once consumer service runs on: the
//!   consumer group, one ordered lane per assigned partition, handler-chosen start offsets,
//!   offsets stored only after the handler acknowledges them, back-pressure, release deadlines,
//!   fatal and interrupted stops, lag, close. A service is a [`lanes::LaneHandler`]; its
//!   consumer's fixed keys come from [`lanes::consumer_keys`] and its group membership is a
//!   [`lanes::GroupMember`] (checked by [`lanes::GroupMember::validate`]). The processor and every
//!   sink run on it.
//! * [`topics`]: creating topics and reading partition counts, used by `auditctl topics create`, the
//!   processor's start-up check and the tests.
//!
//! Nothing here depends on broker-specific behaviour: it targets Apache Kafka (the test suite runs
//! against Apache Kafka 4.1 itself, `scripts/services`) and Redpanda. The processor writes in
//! transactions (`processing_guarantee = "exactly_once"`); every consumer here reads committed
//! records only ([`AT_LEAST_ONCE_CONSUMER`], [`READ_COMMITTED`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};

pub mod lanes;
pub mod topics;

/// The value of the first header of `m` named `key`: `None` when there is no such header,
/// `Some(None)` when it has no value.
pub fn header<'a, M: rdkafka::Message>(m: &'a M, key: &str) -> Option<Option<&'a [u8]>> {
    use rdkafka::message::Headers as _;
    m.headers()?.iter().find(|h| h.key == key).map(|h| h.value)
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pass-through option tried to override a key our guarantees depend on.
    #[error("librdkafka option {key:?} cannot be overridden: {reason}")]
    ProtectedKey {
        /// The refused key.
        key: String,
        /// Why it is fixed.
        reason: &'static str,
    },
    /// The broker list is empty or malformed.
    #[error("bootstrap servers {0:?} is not a comma-separated list of host:port")]
    Bootstrap(String),
    /// A Kafka operation failed.
    #[error("kafka {operation} failed: {source}")]
    Kafka {
        /// What was being done.
        operation: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic did not have the expected shape.
    #[error("topic {topic:?}: {message}")]
    Topic {
        /// Topic name.
        topic: String,
        /// What is wrong.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a librdkafka error with the operation that failed.
    pub fn kafka(operation: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
        move |source| Error::Kafka { operation, source }
    }
}

/// A key our code sets and the user may not override, with the reason shown when they try.
#[derive(Debug, Clone)]
pub struct Required {
    /// librdkafka key.
    pub key: &'static str,
    /// Value we set.
    pub value: Cow<'static, str>,
    /// Why it is fixed (shown in the error).
    pub reason: &'static str,
}

impl Required {
    /// `key` fixed to `value`, for `reason`.
    pub const fn fixed(key: &'static str, value: &'static str, reason: &'static str) -> Required {
        Required { key, value: Cow::Borrowed(value), reason }
    }
}

/// Keys a consumer-group member takes from its own `[kafka]` settings, refused as pass-through
/// options (their values come from the config).
pub const GROUP_MEMBER_KEYS: &[Required] = &[
    Required::fixed("group.id", "", "set kafka.group_id instead"),
    Required::fixed("session.timeout.ms", "", "set kafka.session_timeout_ms instead"),
    Required::fixed("group.instance.id", "", "set kafka.instance_id instead"),
];

/// Where the brokers are and what else the user wants passed to librdkafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `client.id`.
    pub client_id: String,
    /// Extra librdkafka options (e.g. `security.protocol`, `sasl.*`, `ssl.*`).
    pub pass_through: BTreeMap<String, String>,
}

impl ClientSettings {
    /// Settings for `bootstrap_servers` with `client_id` and no pass-through options.
    pub fn new(bootstrap_servers: impl Into<String>, client_id: impl Into<String>) -> Self {
        ClientSettings {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: client_id.into(),
            pass_through: BTreeMap::new(),
        }
    }

    /// Checks the settings without any I/O.
    pub fn validate(&self, required: &[Required]) -> Result<()> {
        let ok = !self.bootstrap_servers.trim().is_empty()
            && self.bootstrap_servers.split(',').all(|hp| {
                let hp = hp.trim();
                let hp = hp.rsplit_once("://").map_or(hp, |(_, rest)| rest);
                hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
        if !ok {
            return Err(Error::Bootstrap(self.bootstrap_servers.clone()));
        }
        for key in self.pass_through.keys() {
            if key == "bootstrap.servers" {
                return Err(Error::ProtectedKey { key: key.clone(), reason: "set it through the brokers setting" });
            }
            if let Some(r) = required.iter().find(|r| r.key == key) {
                return Err(Error::ProtectedKey { key: key.clone(), reason: r.reason });
            }
        }
        Ok(())
    }

    /// Builds a `ClientConfig`: `required` first, then the pass-through options (which may not touch a
    /// required key).
    pub fn client_config(&self, required: &[Required]) -> Result<ClientConfig> {
        self.tuned_client_config(required, &[])
    }

    /// [`client_config`](Self::client_config) with `tuned`: our defaults for this client (batching,
    /// compression...), set before the pass-through options so that a user's value for the same key
    /// wins.
    pub fn tuned_client_config(&self, required: &[Required], tuned: &[(&str, &str)]) -> Result<ClientConfig> {
        self.validate(required)?;
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        if !self.client_id.is_empty() {
            config.set("client.id", &self.client_id);
        }
        for r in required {
            config.set(r.key, r.value.as_ref());
        }
        for (k, v) in tuned {
            config.set(*k, *v);
        }
        for (k, v) in &self.pass_through {
            config.set(k, v);
        }
        Ok(config)
    }
}

/// Keys every at-least-once consumer of ours fixes: offsets are stored by our code only after the
/// write they cover is durable, and committed on revoke and shutdown.
pub const AT_LEAST_ONCE_CONSUMER: &[Required] = &[
    Required {
        key: "enable.auto.offset.store",
        value: Cow::Borrowed("false"),
        reason: "offsets are stored only after the write they cover is durable",
    },
    Required {
        key: "enable.auto.commit",
        value: Cow::Borrowed("true"),
        reason: "stored offsets are committed in the background and on revoke",
    },
    ISOLATION_READ_COMMITTED,
];

/// What every reader of the processed topic fixes (librdkafka's default, stated so no pass-through
/// option turns it off): records of an aborted transaction (a fenced processor's, or one a crash
/// cut short) never reach a sink, a verifier or a lane's tail recovery.
pub const READ_COMMITTED: &[Required] = &[ISOLATION_READ_COMMITTED];

/// The one `isolation.level` every consumer of ours fixes.
const ISOLATION_READ_COMMITTED: Required =
    Required::fixed("isolation.level", "read_committed", "never read records of aborted transactions");

/// How a consumer close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The group was left cleanly: revoke served, commits finished, LeaveGroup answered.
    Closed,
    /// The deadline passed; the handle was leaked rather than blocking forever in `Drop`. The broker
    /// removes the member after its session times out.
    TimedOut,
}

/// Closes a consumer that is (or may be) in a group, within `deadline`.
///
/// Commits the stored offsets synchronously, then runs librdkafka's close on the consumer queue and
/// keeps polling, which serves the final revoke (the default rebalance handler unassigns) and waits
/// for outstanding commits and the LeaveGroup answer. If that takes longer than `deadline` the
/// consumer is leaked instead of dropped, because `Drop` would repeat the close with no time limit.
/// Any custom `ConsumerContext::rebalance` must still unassign on revoke, or no close can finish.
pub fn close_consumer<C: ConsumerContext>(consumer: BaseConsumer<C>, deadline: Duration) -> CloseOutcome {
    let started = Instant::now();
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored or no assignment: both fine at close.
        tracing::debug!(%error, "commit before close");
    }
    if let Err(error) = consumer.close_queue() {
        tracing::warn!(%error, "consumer close could not start");
        std::mem::forget(consumer);
        return CloseOutcome::TimedOut;
    }
    while !consumer.closed() {
        if started.elapsed() >= deadline {
            tracing::warn!(?deadline, "consumer close did not finish in time; leaking the handle");
            std::mem::forget(consumer);
            return CloseOutcome::TimedOut;
        }
        let _ = consumer.poll(Duration::from_millis(50));
    }
    drop(consumer);
    CloseOutcome::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_overrides_of_required_keys_naming_the_key() {
        let mut s = ClientSettings::new("127.0.0.1:9092", "t");
        s.pass_through.insert("enable.auto.offset.store".into(), "true".into());
        let err = s.client_config(AT_LEAST_ONCE_CONSUMER).unwrap_err();
        assert!(err.to_string().contains("\"enable.auto.offset.store\""), "{err}");
    }

    #[test]
    fn pass_through_options_reach_the_config() {
        let mut s = ClientSettings::new("127.0.0.1:9092,localhost:9093", "t");
        s.pass_through.insert("security.protocol".into(), "plaintext".into());
        let c = s.client_config(AT_LEAST_ONCE_CONSUMER).unwrap();
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn a_users_option_overrides_a_tuned_default() {
        let mut s = ClientSettings::new("127.0.0.1:9092", "t");
        s.pass_through.insert("linger.ms".into(), "50".into());
        let c = s.tuned_client_config(&[], &[("linger.ms", "5"), ("compression.type", "lz4")]).unwrap();
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
    }

    #[test]
    fn rejects_malformed_bootstrap_lists() {
        for bad in ["", "localhost", "host:notaport", ":9092"] {
            let err = ClientSettings::new(bad, "t").validate(&[]).unwrap_err();
            assert!(matches!(err, Error::Bootstrap(_)), "{bad}: {err}");
        }
    }
}
