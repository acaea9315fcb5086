//! PostgreSQL: one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT (event_id) DO NOTHING` per batch, in
//! a transaction with the conflict check, so a batch is durable at `COMMIT` and idempotent on
//! `eventId`. The event is stored as its canonical text, as it is (no `jsonb`: the server parses
//! nothing), each row naming that form (`event_form`). Migrations (`migrations/` beside this file)
//! are compiled in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::sink::{CheckpointRecord, Sink, SinkError, SinkRecord, WriteOutcome};
use crate::stores::sql::row::EventRow;

/// The PostgreSQL sink.
#[derive(Debug, Clone)]
pub struct PostgresSink {
    pool: PgPool,
}

/// The migrations shipped with this build.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/stores/postgres/migrations");

/// Classifies a database error once: retriable, poison or fatal.
pub fn classify(e: &sqlx::Error) -> SinkError {
    let reason = e.to_string();
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match &code[..code.len().min(2)] {
                // connection, transaction rollback (serialization, deadlock), resources, shutdown
                "08" | "40" | "53" | "57" | "55" => SinkError::retriable(format!("{reason} (SQLSTATE {code})")),
                // authentication, permissions, missing tables: nothing a retry fixes
                "28" | "42" | "3D" | "3F" => SinkError::fatal(format!("{reason} (SQLSTATE {code})")),
                // bad data, constraint violations, limits: this row can never be stored
                "22" | "23" | "54" => SinkError::poison(format!("{reason} (SQLSTATE {code})")),
                _ => SinkError::retriable(format!("{reason} (SQLSTATE {code})")),
            }
        }
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => SinkError::fatal(reason),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            SinkError::fatal(reason)
        }
        _ => SinkError::retriable(reason),
    }
}

fn time(text: &str, key: &str) -> Result<DateTime<Utc>, SinkError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| SinkError::poison(format!("{key} is not an RFC 3339 time ({e}): {text:?}")))
}

impl PostgresSink {
    /// Connects (retrying while the server is unreachable, failing at once on authentication or
    /// configuration errors) and applies the migrations when `migrate` is set.
    pub async fn connect(url: &str, max_connections: u32, migrate: bool) -> Result<PostgresSink, SinkError> {
        let mut attempt = 0u32;
        let pool = loop {
            match PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect(url)
                .await
            {
                Ok(pool) => break pool,
                Err(e) => match classify(&e) {
                    SinkError::Retriable { reason, .. } if attempt < 30 => {
                        tracing::warn!(%reason, attempt, "PostgreSQL not reachable yet; retrying");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => return Err(SinkError::fatal(format!("cannot connect to PostgreSQL: {other}"))),
                },
            }
        };
        let sink = PostgresSink { pool };
        if migrate {
            sink.migrate().await?;
        }
        Ok(sink)
    }

    /// Applies the shipped migrations.
    pub async fn migrate(&self) -> Result<(), SinkError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| SinkError::fatal(format!("migrations: {e}")))
    }

    /// The pool (for tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn prepare(&self, _partition: i32) -> Result<Option<i64>, SinkError> {
        // Idempotence comes from the primary key on event_id, not from offsets.
        Ok(None)
    }

    async fn write(&self, batch: &[SinkRecord]) -> Result<WriteOutcome, SinkError> {
        let rows = batch.iter().map(EventRow::of).collect::<Result<Vec<_>, _>>()?;
        let occurred =
            rows.iter().map(|r| time(r.occurred_at, "/context/occurredAt")).collect::<Result<Vec<_>, _>>()?;
        let received = rows.iter().map(|r| time(r.received_at, "/receivedAt")).collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await.map_err(|e| classify(&e))?;
        let inserted = sqlx::query(
            "INSERT INTO audit_events (event_id, tenant_id, action, outcome, actor_type, actor_id, target_type, target_id, \
             occurred_at, received_at, chain, seq, prev_hash, hash, kafka_partition, kafka_offset, event, event_form) \
             SELECT i, t, a, o, aty, aid, tty, tid, occ, rec, ch, s, ph, h, kp, ko, ev, 'canonical' \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                         $9::timestamptz[], $10::timestamptz[], $11::text[], $12::int8[], $13::text[], $14::text[], \
                         $15::int4[], $16::int8[], $17::text[]) \
                  AS x(i, t, a, o, aty, aid, tty, tid, occ, rec, ch, s, ph, h, kp, ko, ev) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.action).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.outcome).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.actor_type).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.actor_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.target_type).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.target_id).collect::<Vec<_>>())
        .bind(occurred)
        .bind(received)
        .bind(rows.iter().map(|r| r.chain).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.prev_hash).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hash).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.partition).collect::<Vec<i32>>())
        .bind(rows.iter().map(|r| r.offset).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.event).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&e))?
        .rows_affected();

        let mut outcome = WriteOutcome { written: inserted, ..WriteOutcome::default() };
        if inserted < batch.len() as u64 {
            // Some rows were there already (from before, or from earlier in this batch): every row
            // whose stored hash differs from its own is a conflict, the others are duplicates (the
            // rows just inserted read back their own hash).
            let ids: Vec<&str> = rows.iter().map(|r| r.event_id).collect();
            let stored: Vec<(String, String)> =
                sqlx::query_as("SELECT event_id, hash FROM audit_events WHERE event_id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| classify(&e))?;
            let stored: std::collections::HashMap<String, String> = stored.into_iter().collect();
            for r in batch {
                let Some(h) = stored.get(&r.event_id).filter(|h| **h != r.hash) else { continue };
                sqlx::query(
                    "INSERT INTO audit_event_conflicts (event_id, stored_hash, incoming_hash, incoming_event, \
                     incoming_event_form, kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4, 'canonical', $5, $6)",
                )
                .bind(&r.event_id)
                .bind(h)
                .bind(&r.hash)
                .bind(&r.json)
                .bind(r.partition)
                .bind(r.offset)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(&e))?;
                outcome.conflicts.push(r.conflict_with(h.clone()));
            }
            outcome.duplicates = batch.len() as u64 - inserted - outcome.conflicts.len() as u64;
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9) ON CONFLICT DO NOTHING",
            )
            .bind(&c.chain)
            .bind(seq)
            .bind(&c.hash)
            .bind(time(&c.time, "checkpoint time")?)
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
