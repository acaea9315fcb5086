//! The HTTP store under test: the HTTP sink in `elasticsearch` format against the receiver of
//! [`crate::http_receiver`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::Target;
use crate::http_receiver::Receiver;

/// The HTTP sink in `elasticsearch` format against the receiver, with bearer authentication.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The receiver.
    pub receiver: Receiver,
}

/// The index the target's sink writes.
pub const INDEX: &str = "audit-events";
const TOKEN: &str = "s3cret-token-for-tests";

impl HttpTarget {
    /// A fresh receiver requiring `Authorization: Bearer <token>`.
    pub fn new() -> Self {
        let receiver = Receiver::start();
        receiver.state().authorization = Some(format!("Bearer {TOKEN}"));
        HttpTarget { receiver }
    }
}

impl Default for HttpTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for HttpTarget {
    fn name(&self) -> &'static str {
        "http"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "http".into()),
            ("AUDIT_STORE__FORMAT".into(), "elasticsearch".into()),
            ("AUDIT_STORE__URL".into(), self.receiver.url("/_bulk")),
            ("AUDIT_STORE__INDEX".into(), INDEX.into()),
            ("AUDIT_STORE__AUTH__SCHEME".into(), "bearer".into()),
            ("AUDIT_STORE__AUTH__SECRET_ENV".into(), "AUDIT_TEST_HTTP_TOKEN".into()),
            ("AUDIT_TEST_HTTP_TOKEN".into(), TOKEN.into()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
        for e in self.receiver.documents(INDEX) {
            let p = e["integrity"]["source"]["partition"].as_i64().unwrap_or(-1) as i32;
            out.entry(p).or_default().push(e);
        }
        out
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.receiver.documents(&format!("{INDEX}-conflicts")).len())
    }

    fn checkpoints(&self) -> Vec<Value> {
        self.receiver.documents(&format!("{INDEX}-checkpoints"))
    }
}
