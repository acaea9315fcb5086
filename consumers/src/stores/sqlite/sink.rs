//! SQLite: the same tables as PostgreSQL (`migrations/` beside this file), for single-machine and
//! local use. One transaction per batch in WAL mode with `synchronous = FULL`, so a batch is
//! durable at `COMMIT`; `INSERT … ON CONFLICT (event_id) DO NOTHING` keeps it idempotent. One
//! connection writes (SQLite has a single writer); lanes take turns.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::sink::{CheckpointRecord, Sink, SinkError, SinkRecord, WriteOutcome};
use crate::stores::sql::row::EventRow;

/// The migrations shipped with this build.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/stores/sqlite/migrations");

/// The SQLite sink.
#[derive(Debug, Clone)]
pub struct SqliteSink {
    pool: SqlitePool,
}

/// Classifies a SQLite error once (primary result codes).
pub fn classify(e: &sqlx::Error) -> SinkError {
    let reason = e.to_string();
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
            match primary {
                // BUSY, LOCKED, IOERR, FULL: the database is momentarily unavailable
                5 | 6 | 10 | 13 => SinkError::retriable(format!("{reason} (SQLite {code})")),
                // READONLY, CANTOPEN, AUTH, PERM, CORRUPT, NOTADB: nothing a retry fixes
                3 | 8 | 11 | 14 | 23 | 26 => SinkError::fatal(format!("{reason} (SQLite {code})")),
                // CONSTRAINT, TOOBIG, MISMATCH: this row can never be stored
                18..=20 => SinkError::poison(format!("{reason} (SQLite {code})")),
                _ => SinkError::retriable(format!("{reason} (SQLite {code})")),
            }
        }
        sqlx::Error::Configuration(_) => SinkError::fatal(reason),
        _ => SinkError::retriable(reason),
    }
}

impl SqliteSink {
    /// Opens (creating) the database file and applies the migrations.
    pub async fn open(path: &std::path::Path) -> Result<SqliteSink, SinkError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| SinkError::fatal(format!("sqlite path {}: {e}", path.display())))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool =
            SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(|e| {
                match classify(&e) {
                    SinkError::Retriable { reason, .. } => {
                        SinkError::fatal(format!("cannot open {}: {reason}", path.display()))
                    }
                    other => other,
                }
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| SinkError::fatal(format!("migrations: {e}")))?;
        Ok(SqliteSink { pool })
    }

    /// The pool (for tools and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Sink for SqliteSink {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn prepare(&self, _partition: i32) -> Result<Option<i64>, SinkError> {
        Ok(None)
    }

    async fn write(&self, batch: &[SinkRecord]) -> Result<WriteOutcome, SinkError> {
        let mut outcome = WriteOutcome::default();
        let mut tx = self.pool.begin().await.map_err(|e| classify(&e))?;
        for r in batch {
            let row = EventRow::of(r)?;
            let inserted = sqlx::query(
                "INSERT INTO audit_events (event_id, tenant_id, action, outcome, actor_type, actor_id, target_type, target_id, \
                 occurred_at, received_at, chain, seq, prev_hash, hash, kafka_partition, kafka_offset, event) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(row.event_id)
            .bind(row.tenant_id)
            .bind(row.action)
            .bind(row.outcome)
            .bind(row.actor_type)
            .bind(row.actor_id)
            .bind(row.target_type)
            .bind(row.target_id)
            .bind(row.occurred_at)
            .bind(row.received_at)
            .bind(row.chain)
            .bind(row.seq)
            .bind(row.prev_hash)
            .bind(row.hash)
            .bind(row.partition)
            .bind(row.offset)
            .bind(row.event)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e))?
            .rows_affected();
            if inserted == 1 {
                outcome.written += 1;
                continue;
            }
            let stored: String = sqlx::query_scalar("SELECT hash FROM audit_events WHERE event_id = ?")
                .bind(&r.event_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| classify(&e))?;
            if stored == r.hash {
                outcome.duplicates += 1;
            } else {
                sqlx::query(
                    "INSERT INTO audit_event_conflicts (event_id, stored_hash, incoming_hash, incoming_event, kafka_partition, kafka_offset) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.event_id)
                .bind(&stored)
                .bind(&r.hash)
                .bind(&r.json)
                .bind(r.partition)
                .bind(r.offset)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(&e))?;
                outcome.conflicts.push(r.conflict_with(stored));
            }
        }
        tx.commit().await.map_err(|e| classify(&e))?;
        Ok(outcome)
    }

    async fn write_checkpoints(&self, batch: &[CheckpointRecord]) -> Result<WriteOutcome, SinkError> {
        let mut outcome = WriteOutcome::default();
        let mut tx = self.pool.begin().await.map_err(|e| classify(&e))?;
        for r in batch {
            let c = &r.checkpoint;
            let seq =
                i64::try_from(c.seq).map_err(|_| SinkError::poison(format!("checkpoint seq {} too large", c.seq)))?;
            let inserted = sqlx::query(
                "INSERT INTO audit_checkpoints (chain, seq, hash, signed_at, key_id, signature, checkpoint, kafka_partition, kafka_offset) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&c.chain)
            .bind(seq)
            .bind(&c.hash)
            .bind(&c.time)
            .bind(&c.key_id)
            .bind(&c.signature)
            .bind(&r.json)
            .bind(r.partition)
            .bind(r.offset)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e))?
            .rows_affected();
            outcome.written += inserted;
            outcome.duplicates += 1 - inserted.min(1);
        }
        tx.commit().await.map_err(|e| classify(&e))?;
        Ok(outcome)
    }
}
