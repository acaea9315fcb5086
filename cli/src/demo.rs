//! `auditctl demo`: the whole pipeline on one machine with nothing installed.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster: for this demo only; production
//! runs on Apache Kafka or Redpanda), the processor, a SQLite sink and a JSONL sink (each its own
//! consumer group) under `./auditstream-demo/`. A few thousand realistic events go through the
//! producer library (logins, failed logins, invoice updates with diffs, secrets that must be
//! redacted), plus one oversize and one malformed record published around the library, as a
//! misbehaving client would. The processor signs checkpoints of every chain (a fresh key pair in
//! `keys/`, beside but outside what the sinks write: `audit.db` and `jsonl/`; the directory is the
//! owner's only): they travel in the processed partitions, so both sinks store them, and a witness copy
//! goes to `witness/`. Then every chain is verified from both sinks against the checkpoints (the
//! stored ones and the witness) and a short report says what happened and where to look next.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Diff, Outcome, Target};
use audit_sink::metrics::SinkMetrics;
use audit_sink::stores::jsonl::JsonlConfig;
use audit_sink::stores::sqlite::SqliteConfig;
use audit_sink::stores::StoreConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::source::{Location, Source};
use crate::verify::{self, Verdict, VerifyReport, VerifyRequest};

use audit_schema::wire::topics::{DEAD_LETTERS, PROCESSED, RAW};
const PARTITIONS: i32 = 4;
/// Marks a directory as the demo's own, so a rerun may empty it.
const MARKER: &str = ".auditstream-demo";

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    /// The demo directory.
    pub dir: PathBuf,
    /// Events accepted by the producer library.
    pub published: u64,
    /// Bad records published around the library.
    pub bad_records: u64,
    /// Events (and quarantine entries) the processor published.
    pub processed: u64,
    /// Records the processor dead-lettered.
    pub dead_lettered: u64,
    /// Values redacted, by rule.
    pub redactions: Vec<(String, u64)>,
    /// Payloads replaced by truncation markers.
    pub truncations: u64,
    /// Events each sink stored.
    pub stored: Vec<(&'static str, u64)>,
    /// Verification from each sink.
    pub verified: Vec<VerifyReport>,
}

impl DemoReport {
    /// Intact when every sink's chains verify.
    pub fn verdict(&self) -> Verdict {
        self.verified.iter().map(|r| r.verdict).max().unwrap_or(Verdict::Intact)
    }
}

/// Prepares `dir`: created when missing, emptied when it is a previous demo's, refused otherwise.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!("{} exists and is not a previous demo's directory: choose another --dir", dir.display());
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `auditctl demo`; the next run empties this directory\n")?;
    Ok(())
}

const TENANTS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "wonka"];

fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// The `i`-th realistic event.
fn event(i: u64) -> (String, AuditEventInput) {
    let tenant = TENANTS[(i % TENANTS.len() as u64) as usize].to_owned();
    let user = format!("u-{}", i % 97);
    let mut e = match i % 8 {
        0 | 1 => {
            let mut e = AuditEventInput::new("auth.login", Outcome::Success, Actor::new("user", &user));
            // A client that logs too much: the password must never reach a sink.
            e.metadata =
                Some(object(json!({"method": "password", "password": "correct horse battery staple", "mfa": true})));
            e
        }
        2 => {
            let mut e = AuditEventInput::new("auth.login", Outcome::Failure, Actor::new("user", &user));
            e.metadata = Some(object(json!({"reason": "bad password", "attempt": i % 5 + 1})));
            e
        }
        3 | 4 => {
            let mut e = AuditEventInput::new("billing.invoice.update", Outcome::Success, Actor::new("user", &user));
            e.target = Some(Target::new("invoice", format!("inv-{}", i % 500)));
            e.diff = Some(Diff {
                before: Some(json!({"status": "draft", "amount": 1200 + i % 100})),
                after: Some(json!({"status": "sent", "amount": 1250 + i % 100})),
            });
            e.metadata = Some(object(
                json!({"headers": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTQyIn0.c2lnbmF0dXJl"}}),
            ));
            e
        }
        5 => {
            let mut e = AuditEventInput::new("api_key.create", Outcome::Success, Actor::new("user", &user));
            e.target = Some(Target::new("api_key", format!("key-{i}")));
            e.metadata = Some(object(json!({"apiKey": "sk_live_51HxDemoSecretValue", "scopes": ["invoices:read"]})));
            e
        }
        6 => {
            let mut e = AuditEventInput::new("payment.card.add", Outcome::Success, Actor::new("user", &user));
            e.metadata = Some(object(json!({"note": "customer read out card 4111 1111 1111 1111 on the phone"})));
            e
        }
        _ => {
            let mut e = AuditEventInput::new("webhook.deliver", Outcome::Failure, Actor::new("service", "notifier"));
            e.target = Some(Target::new("webhook", format!("wh-{}", i % 20)));
            e.metadata = Some(object(
                json!({"url": "https://hooks:s3cr3t@partner.example/callback?token=abc123", "status": 503}),
            ));
            e
        }
    };
    e.context =
        Context { tenant_id: Some(tenant.clone()), ip: Some(format!("203.0.113.{}", i % 250)), ..Context::default() };
    (tenant, e)
}

/// Sums a counter family of the processor's registry by its one label.
fn counters(registry: &prometheus::Registry, name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for family in registry.gather().iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let label = m.get_label().first().map(|l| l.value().to_owned()).unwrap_or_default();
            out.push((label, m.get_counter().get_value() as u64));
        }
    }
    out.sort();
    out
}

/// Why a service task ended before it was asked to.
fn stopped<E: std::fmt::Display>(joined: Result<Result<(), E>, tokio::task::JoinError>) -> String {
    match joined {
        Ok(Ok(())) => "it returned without an error".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("it panicked: {e}"),
    }
}

/// Runs the demo in `dir` with `events` good events, printing progress lines through `say`.
pub async fn run(dir: &Path, events: u64, say: &mut (dyn FnMut(&str) + Send)) -> anyhow::Result<DemoReport> {
    prepare_dir(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    say("broker: librdkafka's in-process mock cluster, FOR THIS DEMO ONLY (production runs on Apache Kafka or Redpanda)");
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).context("starting the mock cluster")?;
    let brokers = cluster.bootstrap_servers();
    for topic in [RAW, PROCESSED] {
        cluster.create_topic(topic, PARTITIONS, 1).with_context(|| format!("creating {topic}"))?;
    }
    for topic in [DEAD_LETTERS, "audit.processed.dlq.demo-sqlite", "audit.processed.dlq.demo-jsonl"] {
        cluster.create_topic(topic, 1, 1).with_context(|| format!("creating {topic}"))?;
    }

    let shutdown = CancellationToken::new();
    // The processor stops first: its final checkpoints then reach the sinks before they stop.
    let stop_processor = shutdown.child_token();
    let mut processor_config = audit_processor::ProcessorConfig::default();
    processor_config.kafka.brokers = brokers.clone();
    processor_config.kafka.raw_topic = RAW.into();
    processor_config.kafka.processed_topic = PROCESSED.into();
    processor_config.kafka.dead_letter_topic = DEAD_LETTERS.into();
    processor_config.kafka.group_id = "demo-processor".into();
    // librdkafka's mock cluster answers the transactional calls but writes no commit or abort
    // markers and keeps no last stable offset, so read_committed readers would see aborted
    // records there: exactly-once would be claimed, not kept. The demo says what it runs.
    processor_config.kafka.processing_guarantee = audit_processor::config::ProcessingGuarantee::Idempotent;
    processor_config.http.listen = "127.0.0.1:0".into();
    // Signed checkpoints every 500 events (or second) per chain, to a witness the sinks do not hold.
    // The private key lives where no sink writes: not in jsonl/, not beside audit.db's journal.
    let public_key = crate::keys::generate(&dir.join("keys"))?;
    #[cfg(unix)]
    std::fs::set_permissions(dir.join("keys"), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let witness = dir.join("witness").join("checkpoints.jsonl");
    processor_config.checkpoint.signing_key_file = Some(dir.join("keys").join("checkpoint.key"));
    processor_config.checkpoint.every_events = 500;
    processor_config.checkpoint.every_ms = 1000;
    processor_config.checkpoint.witness_file = Some(witness.clone());
    let processor_settings = processor_config.validate().map_err(|e| anyhow::anyhow!("processor config: {e}"))?;
    let processor_metrics = audit_processor::metrics::ProcessorMetrics::new()?;
    let processor = tokio::spawn(audit_processor::run_with_metrics(
        processor_settings,
        processor_metrics.clone(),
        stop_processor.clone(),
    ));

    let sqlite_path = dir.join("audit.db");
    let jsonl_dir = dir.join("jsonl");
    let mut sinks = Vec::new();
    for (name, store) in [
        ("sqlite", StoreConfig::Sqlite(SqliteConfig { path: sqlite_path.clone() })),
        ("jsonl", StoreConfig::Jsonl(JsonlConfig { dir: jsonl_dir.clone(), ..JsonlConfig::default() })),
    ] {
        let mut c = audit_sink::SinkConfig::default();
        c.kafka.brokers = brokers.clone();
        c.kafka.processed_topic = PROCESSED.into();
        c.kafka.group_id = format!("demo-{name}");
        c.http.listen = "127.0.0.1:0".into();
        c.drain_timeout_ms = 10_000;
        c.store = Some(store);
        let settings = c.validate().map_err(|e| anyhow::anyhow!("{name} sink config: {e}"))?;
        let metrics = SinkMetrics::new(name, &settings.config.kafka.group_id)?;
        let task = tokio::spawn(audit_sink::run_store(settings, metrics.clone(), shutdown.clone()));
        sinks.push((name, metrics, task));
    }
    say(&format!(
        "started: processor, SQLite sink ({}), JSONL sink ({}), each its own consumer group",
        sqlite_path.display(),
        jsonl_dir.display()
    ));

    let logger = AuditLogger::builder("demo-app")
        .brokers(&brokers)
        .topic(RAW)
        .environment("demo")
        .spool_dir(dir.join("producer-spool"))
        .build()
        .await
        .context("starting the producer")?;
    let mut published = 0;
    for i in 0..events {
        let (tenant, input) = event(i);
        logger.child(Context { tenant_id: Some(tenant), ..Context::default() }).log(input).await?;
        published += 1;
    }
    // One event with 40 KiB of metadata (truncated, kept), then two records sent around the
    // library as a misbehaving client would: 100 KiB of metadata (truncated too: limits keep what
    // they can) and a torn JSON document (dead-lettered, a quarantine entry in its place).
    let (_, mut big) = event(3);
    big.metadata = Some(object(json!({"export": "x".repeat(40 * 1024)})));
    logger.log(big).await?;
    published += 1;
    let report = logger.shutdown(Duration::from_secs(30)).await;
    if report.pending > 0 {
        bail!("the producer could not deliver {} events", report.pending);
    }
    let raw: FutureProducer =
        audit_kafka::ClientSettings::new(&brokers, "demo-bad-client").client_config(&[])?.create()?;
    let oversize = serde_json::to_vec(&json!({
        "action": "report.export", "outcome": "SUCCESS", "actor": {"type": "user", "id": "u-1"},
        "context": {"tenantId": "acme"}, "metadata": {"rows": "y".repeat(100 * 1024)}
    }))?;
    for payload in [&oversize[..], b"{\"action\": \"auth.login\", \"outcome\": "] {
        raw.send(FutureRecord::<str, [u8]>::to(RAW).key("acme").payload(payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing a bad record: {e}"))?;
    }
    let bad_records = 2;
    say(&format!("published {published} events through the producer library, and {bad_records} bad records around it"));

    // Everything the processor publishes: one event per good record, one quarantine entry per bad.
    let expected = published + bad_records;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stored: Vec<u64> = sinks.iter().map(|(_, m, _)| m.written_total()).collect();
        if processor_metrics.processed_total() >= expected && stored.iter().all(|s| *s >= expected) {
            break;
        }
        if let Some(i) = sinks.iter().position(|(_, _, t)| t.is_finished()) {
            let (name, _, task) = sinks.swap_remove(i);
            bail!("the {name} sink stopped early: {}", stopped(task.await));
        }
        if processor.is_finished() {
            bail!("the processor stopped early: {}", stopped(processor.await));
        }
        if Instant::now() > deadline {
            bail!(
                "not everything arrived within 180 s: processor {} of {expected}, sinks {stored:?}",
                processor_metrics.processed_total()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_processor.cancel();
    processor.await?.map_err(|e| anyhow::anyhow!("processor: {e}"))?;
    // Every record the processor published (events, quarantine entries, checkpoints) is consumed
    // by each sink before the sinks stop.
    let records = processor_metrics.processed_total() + processor_metrics.checkpoints_published();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sinks.iter().any(|(_, m, _)| m.consumed_total() < records) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let mut stored = Vec::new();
    for (name, metrics, task) in sinks {
        task.await?.map_err(|e| anyhow::anyhow!("{name} sink: {e}"))?;
        stored.push((name, metrics.written_total()));
    }
    drop(cluster);
    say("all events stored; verifying every chain from each sink");

    let mut verified = Vec::new();
    for source in [Source::Store(Location::Sqlite(sqlite_path)), Source::Store(Location::Jsonl(jsonl_dir))] {
        let request = VerifyRequest {
            checkpoints: Some(witness.clone()),
            public_keys: vec![public_key.clone()],
            ..VerifyRequest::default()
        };
        verified.push(verify::verify(&source, &request, &mut |_| {}).await?);
    }
    let registry = &processor_metrics.registry;
    Ok(DemoReport {
        dir,
        published,
        bad_records,
        processed: processor_metrics.processed_total(),
        dead_lettered: processor_metrics.dead_lettered_total(),
        redactions: counters(registry, audit_processor::metrics::REDACTIONS),
        truncations: counters(registry, audit_processor::metrics::TRUNCATIONS).iter().map(|(_, n)| n).sum(),
        stored,
        verified,
    })
}

/// The closing report.
pub fn render(report: &DemoReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "\n== auditstream demo: report");
    let _ = writeln!(
        out,
        "published   {} events (+{} bad records); processor published {} ({} events, {} quarantine entry/entries)",
        report.published,
        report.bad_records,
        report.processed,
        report.processed - report.dead_lettered,
        report.dead_lettered
    );
    for (name, n) in &report.stored {
        let _ = writeln!(out, "stored      {n} in the {name} sink");
    }
    let redacted: u64 = report.redactions.iter().map(|(_, n)| n).sum();
    let rules: Vec<String> = report.redactions.iter().map(|(rule, n)| format!("{rule} {n}")).collect();
    let _ = writeln!(out, "redacted    {redacted} values ({})", rules.join(", "));
    let _ = writeln!(out, "truncated   {} oversize payloads (kept with a marker of their size)", report.truncations);
    let _ = writeln!(
        out,
        "dead letter {} records (topic {DEAD_LETTERS}, each with its reason; a quarantine entry keeps its place in the chain)",
        report.dead_lettered
    );
    for v in &report.verified {
        let chains = v.chains.len();
        let _ = writeln!(
            out,
            "verified    {}: {} events in {chains} chains against {} signed checkpoints: {:?}",
            v.source, v.events, v.checkpoints, v.verdict
        );
        for f in v.findings() {
            let _ = writeln!(out, "            {} {} seq {}: {}", f.kind, f.chain, f.seq, f.detail);
        }
    }
    let d = report.dir.display();
    let _ = writeln!(out, "\nwhere to look next:");
    let _ =
        writeln!(out, "  {d}/jsonl/partition-*/   the JSONL sink's files (a line per event and per signed checkpoint)");
    let _ = writeln!(
        out,
        "  {d}/audit.db             sqlite3 {d}/audit.db 'select action, count(*) from audit_events group by 1'"
    );
    let _ = writeln!(out, "  {d}/witness/checkpoints.jsonl   signed checkpoints, each naming its chain's previous one");
    let _ = writeln!(
        out,
        "  {d}/keys/checkpoint.key  the processor's private signing key, kept outside the directories the sinks write \
         ({d}/audit.db, {d}/jsonl/): a store's writer cannot re-sign a chain (in production: a Secret only the \
         processor mounts)"
    );
    let _ = writeln!(
        out,
        "  {d}/keys/keyring         pins the public key {d}/keys/checkpoint.pub by its fingerprint (`--public-key {d}/keys`)"
    );
    let _ = writeln!(out, "  auditctl verify --source jsonl:{d}/jsonl --public-key {d}/keys/checkpoint.pub");
    let _ = writeln!(out, "                               verify again against the checkpoints the sink stored");
    let _ = writeln!(
        out,
        "  auditctl verify --source sqlite:{d}/audit.db --checkpoints {d}/witness/checkpoints.jsonl --public-key {d}/keys/checkpoint.pub"
    );
    let _ = writeln!(
        out,
        "                               and against the witness too (try deleting the newest rows of audit_events first)"
    );
    let _ = writeln!(out, "  docs/CLI.md, docs/INTEGRITY.md, docs/PRIVACY.md  what each check means");
    out
}
