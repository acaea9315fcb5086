//! How the SQL stores' readers (PostgreSQL, SQLite) read their tables back: the columns asked of
//! `audit_events` and `audit_checkpoints`, each row decoded column by column, and every query
//! column compared with the hashed event it stands beside.

use audit_schema::canonical::TextForm;
use audit_schema::checkpoint::Checkpoint;
use serde_json::Value;

use crate::stores::read::{missing_link_field, Each, LinkOnly, ReadError, ReadFilter, Stored, Unread, UnreadKind};

/// Rows of the SQL sinks' `audit_events` table: the link columns, the content (only where it is
/// wanted, or every row's, chosen by [`SqlRow::chosen_by_content`]), the source offset and
/// `receivedAt` as text, the row's Kafka position, then [`QUERY_COLUMNS`] and `occurred_at` (as
/// text).
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

/// How a SQL store keeps the times of its query columns (`occurred_at`, `received_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnTimes {
    /// As the event's RFC 3339 text (SQLite): compared byte for byte.
    Text,
    /// As instants (PostgreSQL `timestamptz`): compared to the microsecond.
    Instants,
}

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
    /// The content already parsed by [`SqlRow::chosen_by_content`] (so it is parsed once).
    parsed: Option<Result<Value, String>>,
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
            parsed: None,
            source_offset: text(6).and_then(|t| t.parse().ok()),
            received_at: text(7),
            position: column::<R, i64>(row, 8).ok().zip(column::<R, i64>(row, 9).ok()),
            // tenant_id .. target_id, occurred_at, then received_at (read above as column 7).
            columns: (10..18).chain([7]).map(|i| column::<R, Option<String>>(row, i)).collect(),
        }
    }

    /// Reads the content's own fields here, for a store whose query cannot (PostgreSQL keeps the
    /// event as text, and a cast to `jsonb` in the query would fail the whole query on one edited
    /// row): the source offset, and, with `tenant`, whose the content is. The content is kept when
    /// no tenant is asked, when the tenant column or the content's `context.tenantId` names the
    /// tenant, or when it is not JSON (whose it is cannot be told, so every tenant's verification
    /// reports it); otherwise only the row's link columns are handed over.
    /// Every row's text is asked for, so a NULL is a row without its event (not another tenant's).
    pub(crate) fn chosen_by_content(mut self, tenant: Option<&str>) -> SqlRow {
        if matches!(self.content, Ok(None)) {
            self.content = Err("it is NULL".to_owned());
        }
        let Ok(Some(text)) = &self.content else { return self };
        let parsed = serde_json::from_str::<Value>(text).map_err(|e| format!("is not JSON ({e})"));
        if let Ok(event) = &parsed {
            // Plain lookups: `Value::pointer` allocates while unescaping every token.
            let field = |path: &[&str]| path.iter().try_fold(event, |v, key| v.get(key));
            self.source_offset = field(&["integrity", "source", "offset"]).and_then(Value::as_i64);
            if let Some(tenant) = tenant {
                let column = matches!(self.columns.first(), Some(Ok(Some(c))) if c == tenant);
                let content = field(&["context", "tenantId"]).and_then(Value::as_str) == Some(tenant);
                if !column && !content {
                    self.content = Ok(None);
                    return self;
                }
            }
        }
        self.parsed = Some(parsed);
        self
    }

    /// What the row stores: an event; or, when its content does not decode, that finding and its
    /// link columns in its place (so the chain around it still links); or only that finding
    /// when even the link columns do not decode.
    /// `form`: how the row's event text is written (SQLite: always the canonical bytes;
    /// PostgreSQL: as the row's `event_form` says); `Err`: the row names no form its writer uses
    /// (why), itself a finding. `times`: how the store keeps the query columns' times.
    pub(crate) fn stored<E: From<ReadError>>(
        self,
        form: Result<TextForm, String>,
        times: ColumnTimes,
        each: &mut Each<'_, E>,
    ) -> Result<(), E> {
        let SqlRow {
            chain,
            seq,
            prev_hash,
            hash,
            event_id,
            content,
            parsed,
            source_offset,
            received_at,
            position,
            columns,
        } = self;
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
                strict = match form {
                    Ok(form) => audit_schema::canonical::check_text(text.as_bytes(), form).map_err(|e| {
                        let what = match form {
                            TextForm::Canonical => "the canonical form the processor published",
                            TextForm::Jsonb => "jsonb's output of the canonical form",
                        };
                        format!("the event column is not {what} (at {e})")
                    }),
                    Err(why) => Err(format!(
                        "the row's {why}, no form its writer uses, so its event text cannot be checked in the form it \
                         was written in"
                    )),
                };
                parsed.unwrap_or_else(|| serde_json::from_str::<Value>(&text).map_err(|e| format!("is not JSON ({e})")))
            }
            Err(e) => Err(format!("does not decode ({e})")),
        };
        let problem = match content {
            Ok(event) => match missing_link_field(&event) {
                None => {
                    if let Err(e) = strict {
                        let reason = format!(
                            "{e}: readers of the column may see other content than what was hashed; the event is \
                             verified as it parses"
                        );
                        each(Unread::about(UnreadKind::NonCanonical, location.clone(), &event, reason))?;
                    }
                    let wrong = column_mismatches(&event, &link, &columns, times == ColumnTimes::Text);
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

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"action":"user.login","actor":{"id":"u1","type":"user"},"context":{"occurredAt":"2026-11-26T12:00:00.000Z","tenantId":"acme"},"eventId":"e1","integrity":{"chain":"audit.raw/0","hash":"h","prevHash":"p","seq":1,"source":{"offset":41,"partition":0,"topic":"audit.raw"}},"outcome":"success","receivedAt":"2026-11-26T12:00:00.100Z"}"#;

    /// `canonical` with the spacing PostgreSQL prints `jsonb` with (its member order is jsonb's
    /// choice and not compared).
    fn jsonb_output(canonical: &str) -> String {
        let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
        for c in canonical.chars() {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                ':' | ',' if !in_string => out.push(' '),
                _ => {}
            }
        }
        out
    }

    /// A PostgreSQL row of `EVENT` (times as `to_char` prints the `timestamptz` columns) holding
    /// `text`, its tenant column `tenant`.
    fn row(text: Option<&str>, tenant: &str) -> SqlRow {
        let some = |t: &str| Ok(Some(t.to_owned()));
        SqlRow {
            chain: Ok("audit.raw/0".into()),
            seq: Ok(1),
            prev_hash: Ok("p".into()),
            hash: Ok("h".into()),
            event_id: Ok("e1".into()),
            content: Ok(text.map(str::to_owned)),
            parsed: None,
            source_offset: None,
            received_at: Some("2026-11-26T12:00:00.100000Z".into()),
            position: Some((0, 7)),
            columns: vec![
                some(tenant),
                some("user.login"),
                some("success"),
                some("user"),
                some("u1"),
                Ok(None),
                Ok(None),
                some("2026-11-26T12:00:00.000000Z"),
                some("2026-11-26T12:00:00.100000Z"),
            ],
        }
    }

    /// What `row` hands over, each item as a short label.
    fn handed(row: SqlRow, form: Result<TextForm, String>, times: ColumnTimes) -> Vec<String> {
        let mut out = Vec::new();
        let mut each = |s: Stored| -> Result<(), ReadError> {
            out.push(match s {
                Stored::Event(_) => "event".to_owned(),
                Stored::Link(l) => format!("link of offset {:?}", l.source_offset),
                Stored::Unread(u) => format!("{:?}", u.kind),
                other => format!("{other:?}"),
            });
            Ok(())
        };
        row.stored(form, times, &mut each).unwrap();
        out
    }

    #[test]
    fn each_row_is_checked_in_the_form_it_names() {
        let jsonb = jsonb_output(EVENT);
        let pg =
            |text: &str, form| handed(row(Some(text), "acme").chosen_by_content(None), form, ColumnTimes::Instants);
        assert_eq!(pg(EVENT, Ok(TextForm::Canonical)), ["event"]);
        assert_eq!(pg(&jsonb, Ok(TextForm::Jsonb)), ["event"]);
        // The form column flipped either way, or naming no form: found, and the event still read.
        assert_eq!(pg(EVENT, Ok(TextForm::Jsonb)), ["NonCanonical", "event"]);
        assert_eq!(pg(&jsonb, Ok(TextForm::Canonical)), ["NonCanonical", "event"]);
        assert_eq!(pg(EVENT, Err("event_form is \"raw\"".into())), ["NonCanonical", "event"]);
    }

    #[test]
    fn times_are_compared_as_text_or_as_instants() {
        assert_eq!(handed(row(Some(EVENT), "acme"), Ok(TextForm::Canonical), ColumnTimes::Instants), ["event"]);
        assert_eq!(
            handed(row(Some(EVENT), "acme"), Ok(TextForm::Canonical), ColumnTimes::Text),
            ["ColumnMismatch", "event"]
        );
    }

    #[test]
    fn content_is_chosen_by_what_it_says_whatever_the_tenant_column_says() {
        let pg = |text: Option<&str>, column: &str, tenant: Option<&str>| {
            handed(row(text, column).chosen_by_content(tenant), Ok(TextForm::Canonical), ColumnTimes::Instants)
        };
        assert_eq!(pg(Some(EVENT), "acme", Some("acme")), ["event"]);
        // Another tenant's: only its link, with the source offset read from its text.
        assert_eq!(pg(Some(EVENT), "acme", Some("globex")), ["link of offset Some(41)"]);
        // The tenant column moved away: still handed over by its content, and the column found.
        assert_eq!(pg(Some(EVENT), "globex", Some("acme")), ["ColumnMismatch", "event"]);
        // Text that is not JSON: whose it is cannot be told, so every tenant's verification sees it.
        let cut = &EVENT[..100];
        assert_eq!(pg(Some(cut), "acme", Some("globex")), ["Unreadable", "link of offset None"]);
        assert_eq!(pg(Some(cut), "acme", None), ["Unreadable", "link of offset None"]);
        // A row without its event is not another tenant's.
        assert_eq!(pg(None, "acme", Some("globex")), ["Unreadable", "link of offset None"]);
    }
}
