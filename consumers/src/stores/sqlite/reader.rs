//! The SQLite store's reader: `audit_checkpoints`, then `audit_events` in `(chain, seq)` order,
//! read-only.

use std::path::Path;

use futures::TryStreamExt as _;

use crate::stores::read::{Each, ReadContext as _, ReadError, ReadFilter};
use crate::stores::sql::read::{checkpoint_row, ColumnTimes, SqlRow, QUERY_COLUMNS, SQL_COLUMNS};

pub(super) async fn read_sqlite<E: From<ReadError>>(
    path: &Path,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(), E> {
    use sqlx::Connection as _;
    if !path.is_file() {
        return Err(ReadError::msg(format!(
            "{} does not exist (sqlite: wants the SQLite sink's database file)",
            path.display()
        ))
        .into());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn =
        sqlx::SqliteConnection::connect_with(&options).await.with_context(|| format!("opening {}", path.display()))?;
    let table: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_checkpoints'")
            .fetch_optional(&mut conn)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
    if table.is_some() {
        let mut rows = sqlx::query(
            "SELECT checkpoint, CAST(chain AS TEXT), CAST(seq AS INTEGER), CAST(hash AS TEXT), CAST(key_id AS TEXT), \
             CAST(signature AS TEXT) FROM audit_checkpoints ORDER BY chain, seq",
        )
        .fetch(&mut conn);
        while let Some(row) =
            rows.try_next().await.with_context(|| format!("reading audit_checkpoints from {}", path.display()))?
        {
            checkpoint_row(&row, filter, each)?;
        }
    }
    // json_extract fails the whole query on text that is not JSON: only valid JSON is asked.
    // As for PostgreSQL, the tenant is also read from the content (and a row whose content is not
    // JSON is handed over to every tenant: whose it is cannot be told), here by the database.
    let sql = format!(
        "SELECT {SQL_COLUMNS}, CASE WHEN ?1 IS NULL OR tenant_id = ?1 THEN event WHEN NOT json_valid(event) THEN event \
         WHEN json_extract(event, '$.context.tenantId') = ?1 THEN event END, \
         CASE WHEN json_valid(event) THEN CAST(json_extract(event, '$.integrity.source.offset') AS TEXT) END, \
         received_at, kafka_partition, kafka_offset, {QUERY_COLUMNS}, occurred_at \
         FROM audit_events WHERE ?2 IS NULL OR chain = ?2 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant.as_deref())
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
    while let Some(row) =
        rows.try_next().await.with_context(|| format!("reading audit_events from {}", path.display()))?
    {
        SqlRow::read(&row).stored(Ok(audit_schema::canonical::TextForm::Canonical), ColumnTimes::Text, each)?;
    }
    Ok(())
}
