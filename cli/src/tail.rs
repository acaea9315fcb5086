//! `auditctl tail`: follow the processed topic, optionally filtered.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde_json::Value;

/// Which events `tail` and `export` print.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EventFilter {
    /// Only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only actions starting with this (`auth.` matches `auth.login`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this chain.
    #[arg(long)]
    pub chain: Option<String>,
}

impl EventFilter {
    /// Whether `event` passes.
    pub fn accepts(&self, event: &Value) -> bool {
        let text = |p: &str| event.pointer(p).and_then(Value::as_str);
        self.tenant.as_deref().is_none_or(|t| text("/context/tenantId") == Some(t))
            && self.action.as_deref().is_none_or(|a| text("/action").is_some_and(|x| x.starts_with(a)))
            && self.chain.as_deref().is_none_or(|c| text("/integrity/chain") == Some(c))
    }
}

/// One line for people: time, tenant, action, outcome, who, what, and where in the chain.
pub fn human_line(event: &Value) -> String {
    let text = |p: &str| event.pointer(p).and_then(Value::as_str).unwrap_or("-");
    let target = match event.get("target") {
        Some(_) => format!(" -> {}:{}", text("/target/type"), text("/target/id")),
        None => String::new(),
    };
    format!(
        "{} {} {} {} {}:{}{target} [{} #{}]",
        text("/receivedAt"),
        text("/context/tenantId"),
        text("/action"),
        text("/outcome"),
        text("/actor/type"),
        text("/actor/id"),
        text("/integrity/chain"),
        event.pointer("/integrity/seq").and_then(Value::as_u64).unwrap_or_default()
    )
}

/// Follows `topic` (from its oldest records with `from_beginning`, else from its end), calling
/// `each` with every event `filter` accepts, until `limit` events (forever without one).
pub fn follow(
    brokers: &str,
    topic: &str,
    from_beginning: bool,
    filter: &EventFilter,
    limit: Option<u64>,
    each: &mut dyn FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let consumer = crate::kafka::reader(brokers, "tail")?;
    let mut assignment = TopicPartitionList::new();
    let start = if from_beginning { Offset::Beginning } else { Offset::End };
    for p in crate::kafka::partitions(&consumer, brokers, topic)? {
        assignment.add_partition_offset(topic, p, start)?;
    }
    consumer.assign(&assignment).context("assigning the partitions")?;
    let mut shown = 0;
    while limit.is_none_or(|l| shown < l) {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.with_context(|| format!("reading {topic}"))?;
        let Some(payload) = message.payload() else { continue };
        if crate::kafka::is_checkpoint(&message) {
            continue;
        }
        let Ok(event) = audit_schema::codec::event_value(payload) else { continue };
        if filter.accepts(&event) {
            each(&event)?;
            shown += 1;
        }
    }
    Ok(shown)
}
