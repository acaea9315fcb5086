//! The PostgreSQL store's reader: `audit_checkpoints`, then `audit_events` in `(chain, seq)` order.

use std::time::Duration;

use audit_schema::canonical::TextForm;
use futures::TryStreamExt as _;

use crate::stores::read::{Each, ReadContext as _, ReadError, ReadFilter};
use crate::stores::sql::read::{checkpoint_row, ColumnTimes, SqlRow, QUERY_COLUMNS, SQL_COLUMNS};

pub(super) async fn read_postgres<E: From<ReadError>>(
    url: &str,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(), E> {
    use sqlx::Connection as _;
    let mut conn = tokio::time::timeout(Duration::from_secs(30), sqlx::PgConnection::connect(url))
        .await
        .context("connecting to PostgreSQL timed out")?
        .context("connecting to PostgreSQL")?;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('audit_checkpoints')::text")
        .fetch_one(&mut conn)
        .await
        .context("looking for audit_checkpoints in PostgreSQL")?;
    if table.is_some() {
        let mut rows = sqlx::query(
            "SELECT checkpoint::text, chain, seq::int8, hash, key_id, signature FROM audit_checkpoints ORDER BY chain, seq",
        )
        .fetch(&mut conn);
        while let Some(row) = rows.try_next().await.context("reading audit_checkpoints from PostgreSQL")? {
            checkpoint_row(&row, filter, each)?;
        }
    }
    // The event is text, and a row edited into text that is not JSON must be reported, not fail the
    // whole query: so the query casts nothing, and the tenant and the source offset are read from
    // each row's text here. Every row's text is read; the content of a row is handed over when the
    // tenant column or the content itself names the tenant, so editing the tenant column does not
    // take a row out of its tenant's verification (and only links are handed over of the others).
    let sql = format!(
        "SELECT {SQL_COLUMNS}, event::text, NULL::text, \
         to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         kafka_partition::int8, kafka_offset, {QUERY_COLUMNS}, \
         to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), event_form::text \
         FROM audit_events WHERE $1::text IS NULL OR chain = $1 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.chain.as_deref()).fetch(&mut conn);
    while let Some(row) = rows.try_next().await.context("reading audit_events from PostgreSQL")? {
        let form = text_form(sqlx::Row::try_get(&row, 18_usize));
        SqlRow::read(&row).chosen_by_content(filter.tenant.as_deref()).stored(form, ColumnTimes::Instants, each)?;
    }
    Ok(())
}

/// The form a row's `event_form` names for its event text: `canonical`, what the sink writes, or
/// `jsonb`, a row written before the column became text and converted with it (or written by a
/// sink of that time during an upgrade). `Err`: what the column holds instead.
fn text_form(column: Result<Option<String>, sqlx::Error>) -> Result<TextForm, String> {
    match column {
        Ok(Some(form)) if form == "canonical" => Ok(TextForm::Canonical),
        Ok(Some(form)) if form == "jsonb" => Ok(TextForm::Jsonb),
        Ok(Some(other)) => Err(format!("event_form is {other:?}")),
        Ok(None) => Err("event_form is NULL".to_owned()),
        Err(e) => Err(format!("event_form does not decode ({e})")),
    }
}
