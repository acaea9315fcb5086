//! The SQLite store under test: a database file in a temporary directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sqlx::Connection;

use super::Target;

/// A SQLite database file in a temporary directory.
#[derive(Debug)]
pub struct SqliteTarget {
    dir: tempfile::TempDir,
}

impl SqliteTarget {
    /// A fresh directory.
    pub fn new() -> Self {
        SqliteTarget { dir: tempfile::tempdir().expect("dir") }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.sqlite")
    }

    fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(sqlx::SqliteConnection) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
            + Send
            + 'static,
        default: T,
    ) -> T {
        let path = self.path();
        if !path.exists() {
            return default;
        }
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async move {
                let c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
                    .await
                    .expect("open");
                f(c).await
            })
        })
        .join()
        .expect("query thread")
    }
}

impl Default for SqliteTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for SqliteTarget {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "sqlite".into()),
            ("AUDIT_STORE__PATH".into(), self.path().display().to_string()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        self.query(
            |mut c| {
                Box::pin(async move {
                    let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
                    let rows: Vec<(i32, String)> = sqlx::query_as(
                        "SELECT kafka_partition, event FROM audit_events ORDER BY kafka_partition, kafka_offset",
                    )
                    .fetch_all(&mut c)
                    .await
                    .unwrap_or_default();
                    for (p, text) in rows {
                        out.entry(p).or_default().push(serde_json::from_str(&text).expect("event JSON"));
                    }
                    out
                })
            },
            BTreeMap::new(),
        )
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.query(
            |mut c| {
                Box::pin(async move {
                    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event_conflicts")
                        .fetch_one(&mut c)
                        .await
                        .unwrap_or(0);
                    n as usize
                })
            },
            0,
        ))
    }

    fn checkpoints(&self) -> Vec<Value> {
        self.query(
            |mut c| {
                Box::pin(async move {
                    let rows: Vec<String> = sqlx::query_scalar(
                        "SELECT checkpoint FROM audit_checkpoints ORDER BY kafka_partition, kafka_offset",
                    )
                    .fetch_all(&mut c)
                    .await
                    .unwrap_or_default();
                    rows.iter().map(|t| serde_json::from_str(t).expect("checkpoint JSON")).collect()
                })
            },
            Vec::new(),
        )
    }
}
