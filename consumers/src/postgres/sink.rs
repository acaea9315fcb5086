//! PostgreSQL: one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT (event_id) DO NOTHING` per batch, in
//! a transaction with the conflict check, so a batch is durable at `COMMIT` and idempotent on
//! `eventId`. Migrations (`consumers/migrations/postgres/`) are compiled in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::sink::{Conflict, Sink, SinkError, SinkRecord, WriteOutcome};

/// The PostgreSQL sink.
#[derive(Debug, Clone)]
pub struct PostgresSink {
    pool: PgPool,
}

/// The migrations shipped with this build.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn time(v: &Value, pointer: &str) -> Result<DateTime<Utc>, SinkError> {
    text(v, pointer)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| SinkError::poison(format!("{pointer} is not an RFC 3339 time")))
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
        let n = batch.len();
        let (mut ids, mut tenants, mut actions, mut outcomes) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut actor_types, mut actor_ids, mut target_types, mut target_ids) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut occurred, mut received, mut chains, mut seqs) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut prevs, mut hashes, mut partitions, mut offsets, mut events) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in batch {
            let e = &r.event;
            let need = |p: &str| {
                text(e, p)
                    .map(str::to_owned)
                    .ok_or_else(|| SinkError::poison(format!("event {} has no {p}", r.event_id)))
            };
            ids.push(r.event_id.clone());
            tenants.push(text(e, "/context/tenantId").map(str::to_owned));
            actions.push(need("/action")?);
            outcomes.push(need("/outcome")?);
            actor_types.push(need("/actor/type")?);
            actor_ids.push(need("/actor/id")?);
            target_types.push(text(e, "/target/type").map(str::to_owned));
            target_ids.push(text(e, "/target/id").map(str::to_owned));
            occurred.push(time(e, "/context/occurredAt")?);
            received.push(time(e, "/receivedAt")?);
            chains.push(need("/integrity/chain")?);
            seqs.push(
                e.pointer("/integrity/seq")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| SinkError::poison("no integrity.seq"))?,
            );
            prevs.push(need("/integrity/prevHash")?);
            hashes.push(r.hash.clone());
            partitions.push(r.partition);
            offsets.push(r.offset);
            events.push(r.json.clone());
        }
        let mut tx = self.pool.begin().await.map_err(|e| classify(&e))?;
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO audit_events (event_id, tenant_id, action, outcome, actor_type, actor_id, target_type, target_id, \
             occurred_at, received_at, chain, seq, prev_hash, hash, kafka_partition, kafka_offset, event) \
             SELECT i, t, a, o, aty, aid, tty, tid, occ, rec, ch, s, ph, h, kp, ko, ev::jsonb \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                         $9::timestamptz[], $10::timestamptz[], $11::text[], $12::int8[], $13::text[], $14::text[], \
                         $15::int4[], $16::int8[], $17::text[]) \
                  AS x(i, t, a, o, aty, aid, tty, tid, occ, rec, ch, s, ph, h, kp, ko, ev) \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&actions)
        .bind(&outcomes)
        .bind(&actor_types)
        .bind(&actor_ids)
        .bind(&target_types)
        .bind(&target_ids)
        .bind(&occurred)
        .bind(&received)
        .bind(&chains)
        .bind(&seqs)
        .bind(&prevs)
        .bind(&hashes)
        .bind(&partitions)
        .bind(&offsets)
        .bind(&events)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(&e))?;

        let mut outcome = WriteOutcome { written: inserted.len() as u64, ..WriteOutcome::default() };
        if inserted.len() < n {
            // Each inserted id covers one row of the batch (its first occurrence); every other row
            // was already there, from before or from earlier in this batch.
            let mut unclaimed: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
            let existing: Vec<&SinkRecord> = batch.iter().filter(|r| !unclaimed.remove(r.event_id.as_str())).collect();
            let existing_ids: Vec<String> = existing.iter().map(|r| r.event_id.clone()).collect();
            let stored: Vec<(String, String)> =
                sqlx::query_as("SELECT event_id, hash FROM audit_events WHERE event_id = ANY($1)")
                    .bind(&existing_ids)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| classify(&e))?;
            let stored: std::collections::HashMap<String, String> = stored.into_iter().collect();
            for r in existing {
                match stored.get(&r.event_id) {
                    Some(h) if *h == r.hash => outcome.duplicates += 1,
                    Some(h) => {
                        sqlx::query(
                            "INSERT INTO audit_event_conflicts (event_id, stored_hash, incoming_hash, incoming_event, kafka_partition, kafka_offset) \
                             VALUES ($1, $2, $3, $4::jsonb, $5, $6)",
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
                        outcome.conflicts.push(Conflict {
                            event_id: r.event_id.clone(),
                            stored_hash: h.clone(),
                            incoming_hash: r.hash.clone(),
                        });
                    }
                    // Inserted by a concurrent writer between our insert and this read: a duplicate.
                    None => outcome.duplicates += 1,
                }
            }
        }
        tx.commit().await.map_err(|e| classify(&e))?;
        Ok(outcome)
    }
}
