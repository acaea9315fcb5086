//! `auditctl export`: a tenant's (or everyone's) events over a time range, from any store, as
//! JSONL (the events exactly as stored) or CSV (the queryable columns).

use std::io::Write;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::source::{self, ReadFilter, Source, Stored};
use crate::tail::EventFilter;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One event per line, exactly as stored.
    Jsonl,
    /// The queryable columns, with a header row.
    Csv,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 14] = [
    "eventId",
    "occurredAt",
    "receivedAt",
    "tenantId",
    "action",
    "outcome",
    "actorType",
    "actorId",
    "targetType",
    "targetId",
    "chain",
    "seq",
    "hash",
    "sourceOffset",
];

fn csv_row(event: &Value) -> Vec<String> {
    let text = |p: &str| match event.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    [
        "/eventId",
        "/context/occurredAt",
        "/receivedAt",
        "/context/tenantId",
        "/action",
        "/outcome",
        "/actor/type",
        "/actor/id",
        "/target/type",
        "/target/id",
        "/integrity/chain",
        "/integrity/seq",
        "/integrity/hash",
        "/integrity/source/offset",
    ]
    .iter()
    .map(|p| text(p))
    .collect()
}

/// Writes the events of `source` that `filter` accepts and that occurred in `[since, until]`
/// (`context.occurredAt`) to `out`; returns how many.
pub async fn export(
    source: &Source,
    filter: &EventFilter,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let read = ReadFilter { chain: filter.chain.clone(), tenant: filter.tenant.clone(), hashes_only: false };
    enum Output<'a> {
        Csv(Box<csv::Writer<&'a mut (dyn Write + Send)>>),
        Jsonl(std::io::BufWriter<&'a mut (dyn Write + Send)>),
    }
    let mut output = match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(CSV_COLUMNS)?;
            Output::Csv(Box::new(w))
        }
        Format::Jsonl => Output::Jsonl(std::io::BufWriter::with_capacity(1 << 16, out)),
    };
    let mut written = 0u64;
    source::read(source, &read, &mut |stored| {
        let event = match stored {
            Stored::Event(event) => event,
            // An export never leaves out in silence what it could not read.
            Stored::Unread(u) => anyhow::bail!(
                "{}: {} ({}); `auditctl verify` reports everything the store holds that is not as written",
                u.location,
                u.reason,
                u.kind.as_str()
            ),
            // Other tenants' events may come as links only: never exported.
            _ => return Ok(()),
        };
        if !filter.accepts(&event) {
            return Ok(());
        }
        let at = event
            .pointer("/context/occurredAt")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        if (since.is_some() || until.is_some())
            && !at.is_some_and(|at| since.is_none_or(|s| at >= s) && until.is_none_or(|u| at <= u))
        {
            return Ok(());
        }
        match &mut output {
            Output::Csv(w) => w.write_record(csv_row(&event))?,
            Output::Jsonl(w) => {
                serde_json::to_writer(&mut *w, &event)?;
                w.write_all(b"\n")?;
            }
        }
        written += 1;
        Ok(())
    })
    .await?;
    match &mut output {
        Output::Csv(w) => w.flush(),
        Output::Jsonl(w) => w.flush(),
    }
    .context("writing the export")?;
    Ok(written)
}
