//! How the SQL stores' readers (PostgreSQL, SQLite) read their tables back: the columns asked of
//! `audit_events` and `audit_checkpoints`, each row decoded column by column, and every query
//! column compared with the hashed event it stands beside.

use audit_schema::checkpoint::Checkpoint;
use serde_json::Value;

use crate::stores::read::{missing_link_field, Each, LinkOnly, ReadError, ReadFilter, Stored, Unread, UnreadKind};

/// Rows of the SQL sinks' `audit_events` table: the link columns, the content only where it is
/// wanted, the source offset and `receivedAt` as text, the row's Kafka position, then
/// [`QUERY_COLUMNS`] and `occurred_at` (as text).
pub(crate) const SQL_COLUMNS: &str = "chain, seq, prev_hash, hash, event_id";

/// The query columns a row holds beside its event, each the event's field of the same meaning
/// (`occurred_at` and `received_at` follow them as text).
pub(crate) const QUERY_COLUMNS: &str = "tenant_id, action, outcome, actor_type, actor_id, target_type, target_id";

/// Each query column and the event field it must equal (the link columns are compared too).
const COLUMN_FIELDS: [(&str, &[&str]); 9] = [
    ("tenant_id", &["context", "tenantId"]),
    ("action", &["action"]),
    ("outcome", &["outcome"]),
    ("actor_type", &["actor", "type"]),
    ("actor_id", &["actor", "id"]),
    ("target_type", &["target", "type"]),
    ("target_id", &["target", "id"]),
    ("occurred_at", &["context", "occurredAt"]),
    ("received_at", &["receivedAt"]),
];

/// One `audit_events` row, each column as it decoded (`Err`: why it did not). A writer with the
/// database's password can put anything into a column (SQLite keeps any type in any column).
pub(crate) struct SqlRow {
    chain: Result<String, String>,
    seq: Result<i64, String>,
    prev_hash: Result<String, String>,
    hash: Result<String, String>,
    event_id: Result<String, String>,
    /// The event as text where it is wanted (`Ok(None)`: another tenant's).
    content: Result<Option<String>, String>,
    source_offset: Option<i64>,
    received_at: Option<String>,
    /// `(kafka_partition, kafka_offset)`.
    position: Option<(i64, i64)>,
    /// The values of [`COLUMN_FIELDS`]' columns, in that order, as text (`Err`: does not decode).
    columns: Vec<Result<Option<String>, String>>,
}

impl SqlRow {
    /// Decodes the columns of [`SQL_COLUMNS`] and the four that follow, one by one.
    pub(crate) fn read<R>(row: &R) -> SqlRow
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        fn column<'r, R, T>(row: &'r R, i: usize) -> Result<T, String>
        where
            R: sqlx::Row,
            usize: sqlx::ColumnIndex<R>,
            T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            row.try_get(i).map_err(|e| e.to_string())
        }
        let text = |i| column::<R, Option<String>>(row, i).ok().flatten();
        SqlRow {
            chain: column(row, 0),
            seq: column(row, 1),
            prev_hash: column(row, 2),
            hash: column(row, 3),
            event_id: column(row, 4),
            content: column(row, 5),
            source_offset: text(6).and_then(|t| t.parse().ok()),
            received_at: text(7),
            position: column::<R, i64>(row, 8).ok().zip(column::<R, i64>(row, 9).ok()),
            // tenant_id .. target_id, occurred_at, then received_at (read above as column 7).
            columns: (10..18).chain([7]).map(|i| column::<R, Option<String>>(row, i)).collect(),
        }
    }

    /// What the row stores: an event; or, when its content does not decode, that finding and its
    /// link columns in its place (so the chain around it still links); or only that finding
    /// when even the link columns do not decode.
    /// `form`: how the store keeps the event's text (SQLite: the canonical bytes; PostgreSQL:
    /// `jsonb`'s output).
    pub(crate) fn stored<E: From<ReadError>>(
        self,
        form: audit_schema::canonical::TextForm,
        each: &mut Each<'_, E>,
    ) -> Result<(), E> {
        let SqlRow { chain, seq, prev_hash, hash, event_id, content, source_offset, received_at, position, columns } =
            self;
        let location = match position {
            Some((p, o)) => format!("audit_events row of Kafka partition {p} offset {o}"),
            None => "audit_events row".to_owned(),
        };
        let seq = seq.and_then(|s| u64::try_from(s).map_err(|_| format!("negative: {s}")));
        let unreadable = |chain: Option<String>, seq: Option<u64>, event_id: Option<String>, reason: String| {
            Stored::Unread(Box::new(Unread {
                kind: UnreadKind::Unreadable,
                location: location.clone(),
                chain,
                seq,
                event_id,
                reason,
            }))
        };
        let link = match (chain, seq, prev_hash, hash, event_id) {
            (Ok(chain), Ok(seq), Ok(prev_hash), Ok(hash), Ok(event_id)) => {
                LinkOnly { chain, seq, prev_hash, hash, event_id, source_offset, received_at, tenant: None }
            }
            (chain, seq, prev_hash, hash, event_id) => {
                let why = [
                    ("chain", chain.as_ref().err()),
                    ("seq", seq.as_ref().err()),
                    ("prev_hash", prev_hash.as_ref().err()),
                    ("hash", hash.as_ref().err()),
                    ("event_id", event_id.as_ref().err()),
                ]
                .into_iter()
                .filter_map(|(name, e)| e.map(|e| format!("{name}: {e}")))
                .collect::<Vec<_>>()
                .join("; ");
                let reason = format!("its link columns do not decode ({why}): not verified");
                return each(unreadable(chain.ok(), seq.ok(), event_id.ok(), reason));
            }
        };
        let mut strict = Ok(());
        let content = match content {
            Ok(None) => return each(Stored::Link(link)),
            Ok(Some(text)) => {
                strict = audit_schema::canonical::check_text(text.as_bytes(), form);
                serde_json::from_str::<Value>(&text).map_err(|e| format!("is not JSON ({e})"))
            }
            Err(e) => Err(format!("does not decode ({e})")),
        };
        let problem = match content {
            Ok(event) => match missing_link_field(&event) {
                None => {
                    if let Err(e) = strict {
                        let what = match form {
                            audit_schema::canonical::TextForm::Canonical => {
                                "the canonical form the processor published"
                            }
                            audit_schema::canonical::TextForm::Jsonb => "jsonb's output of the canonical form",
                        };
                        let reason = format!(
                            "the event column is not {what} (at {e}): readers of the column may see other content \
                             than what was hashed; the event is verified as it parses"
                        );
                        each(Unread::about(UnreadKind::NonCanonical, location.clone(), &event, reason))?;
                    }
                    let exact_times = form == audit_schema::canonical::TextForm::Canonical;
                    let wrong = column_mismatches(&event, &link, &columns, exact_times);
                    if !wrong.is_empty() {
                        let reason = format!(
                            "query columns differ from the hashed event: {}; queries, export and --tenant on those \
                             columns see other values than the verified content",
                            wrong.join("; ")
                        );
                        each(Unread::about(UnreadKind::ColumnMismatch, location.clone(), &event, reason))?;
                    }
                    return each(Stored::Event(event));
                }
                Some(field) => format!("has no valid {field}"),
            },
            Err(e) => e,
        };
        let reason = format!(
            "the event column {problem}: its content is not verified (its link columns stand in for it in the chain)"
        );
        each(unreadable(Some(link.chain.clone()), Some(link.seq), Some(link.event_id.clone()), reason))?;
        each(Stored::Link(link))
    }
}

/// The columns of a row that differ from its hashed event, each as `column "value" ≠ event's
/// "value"`. `exact_times`: the times are stored as the event's text (SQLite); otherwise as
/// instants to the microsecond (PostgreSQL `timestamptz`).
fn column_mismatches(
    event: &Value,
    link: &LinkOnly,
    columns: &[Result<Option<String>, String>],
    exact_times: bool,
) -> Vec<String> {
    let field = |path: &[&str]| path.iter().try_fold(event, |v, key| v.get(key));
    let text = |path: &[&str]| field(path).and_then(Value::as_str);
    let mut wrong = Vec::new();
    let integrity = |name: &str| text(&["integrity", name]);
    let links = [
        ("chain", Some(link.chain.as_str()), integrity("chain")),
        ("prev_hash", Some(link.prev_hash.as_str()), integrity("prevHash")),
        ("hash", Some(link.hash.as_str()), integrity("hash")),
        ("event_id", Some(link.event_id.as_str()), text(&["eventId"])),
    ];
    for (name, column, content) in links {
        if column != content {
            wrong.push(format!("{name} {column:?} ≠ event's {content:?}"));
        }
    }
    let seq = field(&["integrity", "seq"]).and_then(Value::as_u64);
    if seq != Some(link.seq) {
        wrong.push(format!("seq {} ≠ event's {seq:?}", link.seq));
    }
    for ((name, path), column) in COLUMN_FIELDS.iter().zip(columns) {
        let content = text(path);
        let equal = match column {
            Err(e) => {
                wrong.push(format!("{name} does not decode ({e})"));
                continue;
            }
            Ok(column) if !exact_times && name.ends_with("_at") => match (column.as_deref(), content) {
                (Some(c), Some(e)) => same_instant(c, e),
                (c, e) => c == e,
            },
            Ok(column) => column.as_deref() == content,
        };
        if !equal {
            wrong.push(format!("{name} {:?} ≠ event's {content:?}", column.as_ref().ok().cloned().flatten()));
        }
    }
    wrong
}

/// Two RFC 3339 times name the same instant to the microsecond (`timestamptz`'s precision).
fn same_instant(column: &str, event: &str) -> bool {
    let nanos =
        |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().and_then(|t| t.timestamp_nanos_opt()).map(i128::from);
    matches!((nanos(column), nanos(event)), (Some(c), Some(e)) if (c - e).abs() < 1_000)
}

/// The columns of `audit_checkpoints` read beside the signed checkpoint, in this order after it:
/// what people query must be what was signed.
const CHECKPOINT_COLUMNS: [&str; 5] = ["chain", "seq", "hash", "key_id", "signature"];

/// A row of an `audit_checkpoints` table: its signed checkpoint, as stored (one that does not
/// decode is reported as what it is), and a `column_mismatch` when a column says something else
/// than the signed checkpoint. Rows are chosen by the signed chain, never by the column.
pub(crate) fn checkpoint_row<R, E: From<ReadError>>(
    row: &R,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(), E>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let origin = || "a row of audit_checkpoints".to_owned();
    let text = match row.try_get::<String, _>(0) {
        Ok(text) => text,
        Err(e) => return each(Stored::BadCheckpoint { origin: origin(), reason: e.to_string() }),
    };
    let checkpoint = match Checkpoint::from_json(text.as_bytes()) {
        Ok(c) => c,
        Err(e) => return each(Stored::BadCheckpoint { origin: origin(), reason: e.to_string() }),
    };
    if filter.chain.as_deref().is_some_and(|chain| chain != checkpoint.chain) {
        return Ok(());
    }
    let column = |i: usize| row.try_get::<String, _>(i).ok();
    let columns = [column(1), row.try_get::<i64, _>(2).ok().map(|n| n.to_string()), column(3), column(4), column(5)];
    let signed = [
        checkpoint.chain.clone(),
        checkpoint.seq.to_string(),
        checkpoint.hash.clone(),
        checkpoint.key_id.clone(),
        checkpoint.signature.clone(),
    ];
    let differ: Vec<String> = CHECKPOINT_COLUMNS
        .iter()
        .zip(columns.iter().zip(&signed))
        .filter(|(_, (column, signed))| column.as_deref() != Some(signed.as_str()))
        .map(|(name, (column, _))| format!("{name} = {}", column.as_deref().map_or("?".into(), |c| format!("{c:?}"))))
        .collect();
    if !differ.is_empty() {
        each(Stored::Unread(Box::new(Unread {
            kind: UnreadKind::ColumnMismatch,
            location: format!("audit_checkpoints row of chain {:?} seq {}", checkpoint.chain, checkpoint.seq),
            chain: Some(checkpoint.chain.clone()),
            seq: Some(checkpoint.seq),
            event_id: None,
            reason: format!(
                "the row's {} differ from its signed checkpoint: queries by those columns see another checkpoint than the one verified",
                differ.join(", ")
            ),
        })))?;
    }
    each(Stored::Checkpoint(Box::new(checkpoint)))
}
