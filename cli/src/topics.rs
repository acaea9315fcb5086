//! `auditctl topics create`: the raw, processed and dead-letter topics with matching partition
//! counts and retention that fits what each holds.
//!
//! The raw topic holds events **before redaction** (passwords, tokens, card numbers as the
//! applications sent them): keep it short (24 hours by default, enough to ride out a processor
//! outage) and restrict who reads it. The processed topic is the system of record until every sink
//! holds it (30 days by default); dead letters wait for an operator (30 days).

use std::time::Duration;

use anyhow::{bail, Context as _};
use audit_kafka::topics::{create_topics, partition_count, Created, TopicSpec};
use audit_kafka::ClientSettings;
use audit_schema::wire::topics;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

/// What `topics create` makes (also its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct TopicsPlan {
    /// Bootstrap servers.
    #[arg(long, env = "AUDIT_KAFKA__BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Raw topic (unredacted events: short retention).
    #[arg(long, default_value = topics::RAW)]
    pub raw: String,
    /// Processed topic.
    #[arg(long, default_value = topics::PROCESSED)]
    pub processed: String,
    /// Dead-letter topic.
    #[arg(long, default_value = topics::DEAD_LETTERS)]
    pub dead_letter: String,
    /// Partitions of each (raw and processed must match).
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    pub replication: i32,
    /// Retention of the raw topic, hours.
    #[arg(long, default_value_t = 24)]
    pub raw_retention_hours: u64,
    /// Retention of the processed and dead-letter topics, days.
    #[arg(long, default_value_t = 30)]
    pub retention_days: u64,
}

/// One topic's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    /// Topic name.
    pub name: String,
    /// Made now, or found.
    pub created: bool,
    /// Its partition count afterwards.
    pub partitions: i32,
}

/// Creates the missing topics and checks that raw and processed have the same partition count
/// (the processor refuses to start otherwise).
pub async fn create(plan: &TopicsPlan) -> anyhow::Result<Vec<TopicOutcome>> {
    if plan.partitions < 1 || plan.replication < 1 {
        bail!("--partitions and --replication must be at least 1");
    }
    let hours = |h: u64| (h * 3_600_000).to_string();
    let specs = [
        TopicSpec::new(&plan.raw, plan.partitions).with_config("retention.ms", hours(plan.raw_retention_hours)),
        TopicSpec::new(&plan.processed, plan.partitions).with_config("retention.ms", hours(plan.retention_days * 24)),
        TopicSpec::new(&plan.dead_letter, plan.partitions).with_config("retention.ms", hours(plan.retention_days * 24)),
    ]
    .map(|s| TopicSpec { replication: plan.replication, ..s });
    let settings = ClientSettings::new(&plan.brokers, "auditctl");
    let created = create_topics(&settings, &specs).await.context("creating the topics")?;
    let client: BaseConsumer = settings.client_config(&[])?.create().context("Kafka client")?;
    let mut out = Vec::new();
    for spec in &specs {
        let partitions = partition_count(client.client(), &spec.name, Duration::from_secs(10))?;
        let made = created.iter().any(|(n, c)| *n == spec.name && *c == Created::New);
        out.push(TopicOutcome { name: spec.name.clone(), created: made, partitions });
    }
    if out[0].partitions != out[1].partitions {
        bail!(
            "{} has {} partitions but {} has {}: they must match (the processor keeps raw partition p in processed partition p); \
             add partitions to the smaller one with kafka-topics --alter before starting the processor",
            out[0].name,
            out[0].partitions,
            out[1].name,
            out[1].partitions
        );
    }
    Ok(out)
}
