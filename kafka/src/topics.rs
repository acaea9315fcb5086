//! Creating topics and reading their shape.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::{ClientSettings, Error, Result};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor; -1 = the cluster's `default.replication.factor`.
    pub replication: i32,
    /// Topic configs such as `retention.ms`, `max.message.bytes`.
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions, the cluster's default replication factor and no
    /// configs. (A fixed replication of 1 would put each partition on one broker: unavailable
    /// whenever that broker is down, whatever the rest of the cluster does.)
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec { name: name.into(), partitions, replication: -1, config: Vec::new() }
    }

    /// Adds a topic config.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }
}

/// Whether [`create_topics`] made a topic or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The topic was created.
    New,
    /// It already existed (its shape is not changed).
    Existing,
}

/// Creates the topics that do not exist yet; existing topics are left as they are.
///
/// Topics the cluster metadata already lists are not asked for at all, so a client without the
/// right to create topics (the usual ACLs) works once they exist.
pub async fn create_topics(settings: &ClientSettings, specs: &[TopicSpec]) -> Result<Vec<(String, Created)>> {
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config(&[])?.create().map_err(Error::kafka("create admin client"))?;
    let mut out = Vec::with_capacity(specs.len());
    // All topics (never a named lookup, which a broker may answer by auto-creating the topic).
    if let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) {
        for spec in specs {
            if metadata
                .topics()
                .iter()
                .any(|t| t.name() == spec.name && t.error().is_none() && !t.partitions().is_empty())
            {
                out.push((spec.name.clone(), Created::Existing));
            }
        }
    }
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .filter(|s| !out.iter().any(|(name, _)| *name == s.name))
        .map(|s| {
            let mut t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(s.replication));
            for (k, v) in &s.config {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    if new.is_empty() {
        return Ok(out);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new.iter(), &options).await.map_err(Error::kafka("create topics"))?;
    for result in results {
        match result {
            Ok(name) => out.push((name, Created::New)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, Created::Existing)),
            Err((name, code)) => {
                return Err(Error::Topic { topic: name, message: format!("cannot be created: {code}") })
            }
        }
    }
    Ok(out)
}

/// Number of partitions of `topic`, or an error naming the topic when it does not exist.
pub fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str, timeout: Duration) -> Result<i32> {
    let metadata = client.fetch_metadata(Some(topic), timeout).map_err(Error::kafka("fetch metadata"))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Error::Topic { topic: topic.to_owned(), message: "not in the metadata answer".into() })?;
    if let Some(err) = t.error() {
        return Err(Error::Topic {
            topic: topic.to_owned(),
            message: format!("does not exist or is unavailable ({err:?})"),
        });
    }
    if t.partitions().is_empty() {
        return Err(Error::Topic { topic: topic.to_owned(), message: "has no partitions (does it exist?)".into() });
    }
    Ok(t.partitions().len() as i32)
}

/// The `max.message.bytes` the broker reports for each of `topics` (its own setting or the
/// broker's default), in one request answered within `wait`.
///
/// Every record written to a topic must fit, key, headers and batch framing included. Per topic an
/// error text when the broker does not report it (ACLs, or a Kafka-compatible broker that lists
/// only the configs set on the topic): callers decide whether that matters.
pub async fn max_message_bytes(
    settings: &ClientSettings,
    topics: &[&str],
    wait: Duration,
) -> Result<Vec<std::result::Result<usize, String>>> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config(&[])?.create().map_err(Error::kafka("create admin client"))?;
    let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(wait));
    let results = admin.describe_configs(specs.iter(), &options).await.map_err(Error::kafka("describe configs"))?;
    let mut out: Vec<std::result::Result<usize, String>> = results
        .into_iter()
        .map(|r| {
            let resource = r.map_err(|code| format!("configs cannot be described: {code}"))?;
            let entry = resource.get("max.message.bytes").ok_or("no max.message.bytes config reported")?;
            entry
                .value
                .as_deref()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| format!("max.message.bytes {:?} is not a byte count", entry.value))
        })
        .collect();
    out.resize_with(topics.len(), || Err("the broker described fewer topics than asked".into()));
    Ok(out)
}
