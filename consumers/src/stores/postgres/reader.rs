//! The PostgreSQL store's reader: `audit_checkpoints`, then `audit_events` in `(chain, seq)` order.

use std::time::Duration;

use futures::TryStreamExt as _;

use crate::stores::read::{Each, ReadContext as _, ReadError, ReadFilter};
use crate::stores::sql::read::{checkpoint_row, SqlRow, QUERY_COLUMNS, SQL_COLUMNS};

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
    // The source offset as text: a cast in SQL would fail the whole query on one edited event.
    // The content of a row is handed over when the tenant column or the content itself names the
    // tenant: the database reads every row's tenant from its content, so editing the tenant column
    // does not take a row out of its tenant's verification (and only links leave the database for
    // the others).
    let sql = format!(
        "SELECT {SQL_COLUMNS}, CASE WHEN $1::text IS NULL OR tenant_id = $1 OR event #>> '{{context,tenantId}}' = $1 \
         THEN event::text END, \
         event #>> '{{integrity,source,offset}}', to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         kafka_partition::int8, kafka_offset, {QUERY_COLUMNS}, \
         to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM audit_events WHERE $2::text IS NULL OR chain = $2 ORDER BY chain, seq, kafka_offset"
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant.as_deref())
        .bind(filter.chain.as_deref())
        .fetch(&mut conn);
    while let Some(row) = rows.try_next().await.context("reading audit_events from PostgreSQL")? {
        SqlRow::read(&row).stored(audit_schema::canonical::TextForm::Jsonb, each)?;
    }
    Ok(())
}
