//! MongoDB: each event is a document (`_id` = `eventId`, plus a unique index on `eventId`), written
//! with an unordered `insert_many` acknowledged by the server with journaling. Duplicate-key errors
//! (11000) are absorbed when the stored event has the same `integrity.hash`, and kept in
//! `<collection>_conflicts` otherwise; every other error is classified.
//!
//! Signed checkpoints go to `<collection>_checkpoints` as `{_id: <chain>:<seq>:<signature>,
//! checkpoint: {…}, kafkaPartition, kafkaOffset}`.
//!
//! A verifier reads the documents back, drops `_id` and hashes the rest: it is the event as
//! published.

use std::collections::HashMap;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};

use super::config::MongoConfig;
use crate::sink::{CheckpointRecord, Sink, SinkError, SinkRecord, WriteOutcome};

const DUPLICATE_KEY: i32 = 11000;

/// The MongoDB sink.
#[derive(Debug, Clone)]
pub struct MongoSink {
    events: Collection<Document>,
    conflicts: Collection<Document>,
    checkpoints: Collection<Document>,
}

/// Classifies a driver error once.
pub fn classify(e: &Error) -> SinkError {
    let reason = e.to_string();
    match &*e.kind {
        ErrorKind::Authentication { .. } | ErrorKind::InvalidArgument { .. } => SinkError::fatal(reason),
        ErrorKind::Command(c) if matches!(c.code, 13 | 18 | 8000) => SinkError::fatal(reason),
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code != DUPLICATE_KEY => SinkError::poison(reason),
        ErrorKind::BsonSerialization(_) => SinkError::poison(reason),
        _ => SinkError::retriable(reason),
    }
}

impl MongoSink {
    /// Connects and makes sure the unique index exists.
    pub async fn connect(uri: &str, config: &MongoConfig) -> Result<MongoSink, SinkError> {
        let mut options = ClientOptions::parse(uri).await.map_err(|e| SinkError::fatal(format!("MongoDB URI: {e}")))?;
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.write_concern = Some(WriteConcern::builder().journal(true).build());
        let client = Client::with_options(options).map_err(|e| SinkError::fatal(format!("MongoDB client: {e}")))?;
        let db = client.database(&config.database);
        let events = db.collection::<Document>(&config.collection);
        let conflicts = db.collection::<Document>(&format!("{}_conflicts", config.collection));
        let checkpoints = db.collection::<Document>(&format!("{}_checkpoints", config.collection));
        let index = IndexModel::builder()
            .keys(doc! {"eventId": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build();
        let mut attempt = 0;
        loop {
            match events.create_index(index.clone()).await {
                Ok(_) => break,
                Err(e) => match classify(&e) {
                    SinkError::Retriable { reason, .. } if attempt < 30 => {
                        tracing::warn!(%reason, attempt, "MongoDB not reachable yet; retrying");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => return Err(SinkError::fatal(format!("cannot prepare {}: {other}", config.collection))),
                },
            }
        }
        Ok(MongoSink { events, conflicts, checkpoints })
    }
}

fn document(r: &SinkRecord) -> Result<Document, SinkError> {
    let mut d =
        mongodb::bson::to_document(&r.event).map_err(|e| SinkError::poison(format!("event {}: {e}", r.event_id)))?;
    d.insert("_id", r.event_id.clone());
    Ok(d)
}

/// One unordered `insert_many`: the indexes of the documents whose key was already there. Any other
/// write error is poison, naming the document (`name`: its index to a name).
async fn insert_unordered(
    collection: &Collection<Document>,
    docs: Vec<Document>,
    name: impl Fn(usize) -> String,
) -> Result<Vec<usize>, SinkError> {
    match collection.insert_many(docs).ordered(false).await {
        Ok(_) => Ok(Vec::new()),
        Err(e) => match &*e.kind {
            ErrorKind::InsertMany(m) if m.write_concern_error.is_none() => {
                let errors = m.write_errors.as_deref().unwrap_or_default();
                if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                    return Err(SinkError::poison(format!(
                        "{}: {} (code {})",
                        name(other.index),
                        other.message,
                        other.code
                    )));
                }
                Ok(errors.iter().map(|w| w.index).collect())
            }
            _ => Err(classify(&e)),
        },
    }
}

impl Sink for MongoSink {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    async fn prepare(&self, _partition: i32) -> Result<Option<i64>, SinkError> {
        Ok(None)
    }

    async fn write(&self, batch: &[SinkRecord]) -> Result<WriteOutcome, SinkError> {
        let docs = batch.iter().map(document).collect::<Result<Vec<_>, _>>()?;
        let duplicates = insert_unordered(&self.events, docs, |i| format!("event {}", batch[i].event_id)).await?;
        let mut outcome = WriteOutcome { written: (batch.len() - duplicates.len()) as u64, ..WriteOutcome::default() };
        if duplicates.is_empty() {
            return Ok(outcome);
        }
        let ids: Vec<Bson> = duplicates.iter().map(|i| Bson::String(batch[*i].event_id.clone())).collect();
        let mut stored: HashMap<String, String> = HashMap::new();
        let mut cursor = self
            .events
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"integrity.hash": 1})
            .await
            .map_err(|e| classify(&e))?;
        while cursor.advance().await.map_err(|e| classify(&e))? {
            let d = cursor.deserialize_current().map_err(|e| classify(&e))?;
            let id = d.get_str("_id").unwrap_or_default().to_owned();
            let hash =
                d.get_document("integrity").ok().and_then(|i| i.get_str("hash").ok()).unwrap_or_default().to_owned();
            stored.insert(id, hash);
        }
        for i in duplicates {
            let r = &batch[i];
            match stored.get(&r.event_id) {
                Some(h) if *h != r.hash => {
                    let mut c = document(r)?;
                    c.remove("_id");
                    let record = doc! {
                        "eventId": &r.event_id, "storedHash": h, "incomingHash": &r.hash,
                        "incomingEvent": c, "kafkaPartition": r.partition, "kafkaOffset": r.offset,
                    };
                    self.conflicts.insert_one(record).await.map_err(|e| classify(&e))?;
                    outcome.conflicts.push(r.conflict_with(h.clone()));
                }
                _ => outcome.duplicates += 1,
            }
        }
        Ok(outcome)
    }

    async fn write_checkpoints(&self, batch: &[CheckpointRecord]) -> Result<WriteOutcome, SinkError> {
        let mut docs = Vec::with_capacity(batch.len());
        for r in batch {
            let checkpoint = mongodb::bson::to_document(&r.checkpoint)
                .map_err(|e| SinkError::poison(format!("checkpoint {}: {e}", r.id())))?;
            docs.push(doc! {
                "_id": r.id(), "checkpoint": checkpoint, "kafkaPartition": r.partition, "kafkaOffset": r.offset,
            });
        }
        // Same id, same checkpoint: a duplicate key is a redelivery.
        let duplicates = insert_unordered(&self.checkpoints, docs, |i| format!("checkpoint {}", batch[i].id())).await?;
        let duplicates = duplicates.len() as u64;
        Ok(WriteOutcome { written: batch.len() as u64 - duplicates, duplicates, ..WriteOutcome::default() })
    }
}
