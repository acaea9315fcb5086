//! `auditctl redact`: the processor's pipeline and policy over sample events, without a broker.
//!
//! Each line of the input is what an application publishes (one JSON event); it goes through
//! [`Pipeline::process`], the function the processor runs on every raw record, with the config
//! loaded the way the processor loads it ([`ProcessorConfig::load`]: defaults ← `AUDIT_PRESET` ←
//! file ← `AUDIT_<SECTION>__<KEY>`). The line becomes a raw record of partition 0 of the
//! configured raw topic, at offset = line number − 1, keyed by its `context.tenantId` (what the
//! producer library does) and stamped with one broker time for the whole run. What comes out is
//! what the processor would publish, one JSON line per non-blank input line: the processed event,
//! or for a line that can never be processed the quarantine entry that takes its place in the
//! chain. Nothing is dropped: every output line names its input line in
//! `integrity.source.offset`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use audit_processor::config::{CheckpointConfig, OutputEncoding};
use audit_processor::pipeline::{DeadLetter, Pipeline, RawRecord};
use audit_processor::{ConfigError, ProcessorConfig, Settings};
use audit_schema::chain::{chain_name, ChainHead};

/// Exit code of `redact` for a bad config or bad arguments, as the processor's for a bad config.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// The processor's settings from `file` and the environment, exactly as `audit-processor` loads
/// and validates them, with two differences that leave every event as it is: JSON output (the
/// processed events are written as the RFC 8785 text that is hashed; the Avro output carries the
/// same event), and no `[checkpoint]` section: checkpoints are signed after the pipeline, and the
/// signing key stays on the processor's host rather than on the laptop where a policy is tried.
pub fn load_settings(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut config = ProcessorConfig::load(file)?;
    config.checkpoint = CheckpointConfig::default();
    let mut settings = config.validate()?;
    settings.config.processing.output_encoding = OutputEncoding::Json;
    Ok(settings)
}

/// A line the pipeline dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetteredLine {
    /// Input line number, from 1.
    pub line: u64,
    /// Its class and reason, as the processor puts them in the dead-letter headers.
    pub dead_letter: DeadLetter,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RedactSummary {
    /// Input lines read.
    pub lines: u64,
    /// Blank lines (nothing but whitespace), skipped: no application publishes one.
    pub blank: u64,
    /// Lines that became processed events.
    pub events: u64,
    /// Lines dead-lettered (each written as its quarantine entry).
    pub dead_letters: Vec<DeadLetteredLine>,
    /// Values redacted, by rule or detector (the processor's `audit_processor_redactions_total`
    /// labels).
    pub redactions: BTreeMap<String, u64>,
    /// Events that record warnings (values dropped or normalized in lenient mode, ...).
    pub with_warnings: u64,
    /// Payloads replaced by truncation markers.
    pub truncations: u64,
    /// The redaction policy's version, as recorded in every event.
    pub policy: String,
}

impl RedactSummary {
    /// Dead letters by class.
    pub fn dead_letter_classes(&self) -> BTreeMap<&'static str, u64> {
        let mut classes = BTreeMap::new();
        for d in &self.dead_letters {
            *classes.entry(d.dead_letter.class.as_str()).or_default() += 1;
        }
        classes
    }
}

/// Why a run stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The input could not be read (an I/O error, not a bad line: a bad line is a dead letter).
    #[error("cannot read the input after line {line}: {source}")]
    Read {
        /// Lines read before the error.
        line: u64,
        /// The error.
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[source] std::io::Error),
}

/// Only the tenant: the record key the producer library would have set.
#[derive(serde::Deserialize)]
struct KeyOnly {
    context: Option<KeyContext>,
}

#[derive(serde::Deserialize)]
struct KeyContext {
    #[serde(rename = "tenantId")]
    tenant_id: Option<String>,
}

/// The producer library keys a record by its tenant; a line that has none (or is not JSON) has no
/// key.
fn tenant_key(line: &[u8]) -> Option<String> {
    let json = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    serde_json::from_slice::<KeyOnly>(json).ok()?.context?.tenant_id
}

/// Runs every line of `input` through the pipeline of `settings` as one chain, writes what the
/// processor would publish to `output` (a JSON line each) and counts into `summary`, which holds
/// what was done even when an error stops the run. `received_at_ms` is the broker time of every
/// record.
pub fn redact(
    settings: &Settings,
    received_at_ms: i64,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    summary: &mut RedactSummary,
) -> Result<(), RedactError> {
    let pipeline = Pipeline::new(settings);
    let topic = settings.config.kafka.raw_topic.as_str();
    let mut head = ChainHead::genesis(chain_name(topic, 0));
    summary.policy = pipeline.policy_version().to_owned();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(source) => return Err(RedactError::Read { line: summary.lines, source }),
        }
        summary.lines += 1;
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        let payload = payload.strip_suffix(b"\r").unwrap_or(payload);
        if payload.iter().all(u8::is_ascii_whitespace) {
            summary.blank += 1;
            continue;
        }
        let key = tenant_key(payload);
        let raw = RawRecord {
            topic,
            partition: 0,
            offset: summary.lines as i64 - 1,
            timestamp_ms: Some(received_at_ms),
            key: key.as_deref().map(str::as_bytes),
            payload: Some(payload),
        };
        let processed = pipeline.process(&raw, &mut head);
        match processed.dead_letter {
            Some(dead_letter) => summary.dead_letters.push(DeadLetteredLine { line: summary.lines, dead_letter }),
            None => {
                summary.events += 1;
                let warned = processed.value.get("warnings").and_then(|w| w.as_array()).is_some_and(|w| !w.is_empty());
                summary.with_warnings += u64::from(warned);
            }
        }
        for (rule, n) in &processed.redactions.by_rule {
            *summary.redactions.entry(rule.to_string()).or_default() += n;
        }
        summary.truncations +=
            u64::from(processed.limits.metadata_truncated) + u64::from(processed.limits.diff_truncated);
        output.write_all(&processed.encoded).map_err(RedactError::Write)?;
        output.write_all(b"\n").map_err(RedactError::Write)?;
    }
}

/// The summary for standard error: counts, redactions by rule, dead letters by class and each
/// with its line and reason.
pub fn render_summary(summary: &RedactSummary) -> String {
    use std::fmt::Write as _;
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut out = String::new();
    let dead = summary.dead_letters.len() as u64;
    let _ = writeln!(
        out,
        "{} read: {}, {}{}, {} skipped",
        plural(summary.lines, "line", "lines"),
        plural(summary.events, "event", "events"),
        plural(dead, "dead letter", "dead letters"),
        if dead > 0 { " (written as quarantine entries)" } else { "" },
        plural(summary.blank, "blank line", "blank lines"),
    );
    let redacted: u64 = summary.redactions.values().sum();
    let rules: Vec<String> = summary.redactions.iter().map(|(rule, n)| format!("{rule} {n}")).collect();
    let _ = writeln!(out, "redacted:     {}{}", plural(redacted, "value", "values"), list(&rules));
    let classes: Vec<String> = summary.dead_letter_classes().iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(out, "dead letters: {dead}{}", list(&classes));
    for d in &summary.dead_letters {
        let _ = writeln!(out, "  line {} {}: {}", d.line, d.dead_letter.class.as_str(), d.dead_letter.reason);
    }
    let _ =
        writeln!(out, "warnings:     {}", plural(summary.with_warnings, "event records some", "events record some"));
    let _ = writeln!(out, "truncated:    {}", plural(summary.truncations, "payload", "payloads"));
    let _ = writeln!(out, "policy:       {}", summary.policy);
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" ({})", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_schema::chain::verify_chain;
    use audit_schema::{codec, ValidationOptions};
    use serde_json::Value;

    fn run(settings: &Settings, input: &[u8]) -> (Vec<Value>, RedactSummary) {
        let mut out = Vec::new();
        let mut summary = RedactSummary::default();
        redact(settings, 1_790_000_000_000, &mut &input[..], &mut out, &mut summary).unwrap();
        let lines = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap());
        (lines.collect(), summary)
    }

    fn defaults() -> Settings {
        let mut settings = ProcessorConfig::default().validate().unwrap();
        settings.config.processing.output_encoding = OutputEncoding::Json;
        settings
    }

    const GOOD: &str = r#"{"action":"user.login","outcome":"SUCCESS","actor":{"type":"user","id":"u-1"},"context":{"tenantId":"acme"},"metadata":{"password":"hunter2"}}"#;

    #[test]
    fn every_non_blank_line_gives_one_output_line_at_its_own_offset_in_one_verifiable_chain() {
        let good = GOOD.as_bytes();
        let lines: [&[u8]; 7] =
            [good, b"", b"{\"action\": ", b"  \r", &[b"\xEF\xBB\xBF", good, b"\r"].concat(), b"\xFF", good];
        let (out, summary) = run(&defaults(), &lines.join(&b'\n'));
        assert_eq!((summary.lines, summary.blank, summary.events), (7, 2, 3));
        let offsets: Vec<i64> = out.iter().map(|e| e["integrity"]["source"]["offset"].as_i64().unwrap()).collect();
        assert_eq!(offsets, [0, 2, 4, 5, 6], "line number − 1");
        let dead: Vec<(u64, &str)> =
            summary.dead_letters.iter().map(|d| (d.line, d.dead_letter.class.as_str())).collect();
        assert_eq!(dead, [(3, "decode"), (6, "decode")]);
        assert_eq!(out[1]["action"], "audit.quarantined");
        assert_eq!(out[4]["metadata"]["password"], "***");
        assert_eq!(summary.redactions.get("key"), Some(&3));
        let events: Vec<_> =
            out.iter().map(|v| codec::event_from_value(v.clone(), ValidationOptions::STRICT).unwrap().event).collect();
        assert!(verify_chain(&events).unwrap().is_intact());
        // The quarantine entry of a parseable line carries its tenant, as the record key would.
        let (out, _) = run(&defaults(), br#"{"action":"a.b","context":{"tenantId":"acme"}}"#);
        assert_eq!(out[0]["context"]["tenantId"], "acme");
    }

    #[test]
    fn the_same_input_and_time_give_byte_identical_output() {
        let input = format!("{GOOD}\nnot json\n{GOOD}\n");
        let once = |s: &Settings| {
            let mut out = Vec::new();
            redact(s, 1, &mut input.as_bytes(), &mut out, &mut RedactSummary::default()).unwrap();
            out
        };
        assert_eq!(once(&defaults()), once(&defaults()));
    }

    #[test]
    fn the_summary_counts_by_rule_and_class_and_names_each_dead_lettered_line() {
        let (_, summary) = run(&defaults(), format!("{GOOD}\n[1]\n").as_bytes());
        let text = render_summary(&summary);
        assert!(
            text.starts_with(
                "2 lines read: 1 event, 1 dead letter (written as quarantine entries), 0 blank lines skipped\n"
            ),
            "{text}"
        );
        assert!(text.contains("redacted:     1 value (key 1)\n"), "{text}");
        assert!(
            text.contains("dead letters: 1 (invalid 1)\n  line 2 invalid: an audit event must be a JSON object\n"),
            "{text}"
        );
        assert!(text.contains(&format!("policy:       {}\n", summary.policy)), "{text}");
    }
}
