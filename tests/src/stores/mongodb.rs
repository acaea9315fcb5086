//! The MongoDB store under test: a database of its own on the shared server.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Target;
use crate::unique_name;

/// A MongoDB database of its own on the shared server.
#[derive(Debug)]
pub struct MongoTarget {
    uri: String,
    database: String,
}

impl MongoTarget {
    /// A fresh database name on the shared `MONGODB_URI`.
    pub fn new() -> Self {
        MongoTarget { uri: crate::mongodb_uri(), database: unique_name("sink").replace('-', "_") }
    }

    fn collection(&self, name: &str) -> Vec<mongodb::bson::Document> {
        let (uri, db, name) = (self.uri.clone(), self.database.clone(), name.to_owned());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async move {
                let client = mongodb::Client::with_uri_str(&uri).await.expect("MongoDB client");
                let coll = client.database(&db).collection::<mongodb::bson::Document>(&name);
                let mut out = Vec::new();
                if let Ok(mut cursor) = coll.find(mongodb::bson::doc! {}).await {
                    while cursor.advance().await.unwrap_or(false) {
                        out.push(cursor.deserialize_current().expect("document"));
                    }
                }
                out
            })
        })
        .join()
        .expect("query thread")
    }
}

impl Default for MongoTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for MongoTarget {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "mongodb".into()),
            ("AUDIT_STORE__URI".into(), self.uri.clone()),
            ("AUDIT_STORE__DATABASE".into(), self.database.clone()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
        for mut d in self.collection("audit_events") {
            d.remove("_id");
            let v = serde_json::to_value(&d).expect("document as JSON");
            let p = v["integrity"]["source"]["partition"].as_i64().unwrap_or(-1) as i32;
            out.entry(p).or_default().push(v);
        }
        for events in out.values_mut() {
            events.sort_by_key(|e| e["integrity"]["seq"].as_u64());
        }
        out
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.collection("audit_events_conflicts").len())
    }

    fn checkpoints(&self) -> Vec<Value> {
        let mut docs: Vec<Value> = self
            .collection("audit_events_checkpoints")
            .into_iter()
            .map(|d| serde_json::to_value(&d).expect("document as JSON"))
            .collect();
        docs.sort_by_key(|d| (d["kafkaPartition"].as_i64(), d["kafkaOffset"].as_i64()));
        docs.into_iter().map(|mut d| d["checkpoint"].take()).collect()
    }
}
