//! Settings of the JSONL sink (`[store] kind = "jsonl"`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The JSONL file sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlConfig {
    /// Directory of the file series (one sub-directory per partition).
    pub dir: PathBuf,
    /// Rotate a file at this size, bytes.
    pub max_file_bytes: u64,
    /// Rotate a file at this age, seconds.
    pub max_file_age_secs: u64,
    /// Compress closed files to `<name>.jsonl.gz` (in the background; the open file stays plain).
    pub gzip_closed: bool,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        JsonlConfig {
            dir: PathBuf::from("audit-jsonl"),
            max_file_bytes: 256 << 20,
            max_file_age_secs: 3600,
            gzip_closed: false,
        }
    }
}

impl JsonlConfig {
    /// Checks the settings without I/O: the key and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.dir.as_os_str().is_empty() {
            return Err(("store.dir", "must name a directory".into()));
        }
        if self.max_file_bytes < 4096 {
            return Err(("store.max_file_bytes", "must be at least 4096".into()));
        }
        if self.max_file_age_secs == 0 {
            return Err(("store.max_file_age_secs", "must be positive".into()));
        }
        Ok(())
    }
}
