//! The JSONL store under test: files in a temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Target;

/// JSONL files in a temporary directory.
#[derive(Debug)]
pub struct JsonlTarget {
    dir: tempfile::TempDir,
    gzip: bool,
}

impl JsonlTarget {
    /// A fresh directory.
    pub fn new() -> Self {
        JsonlTarget { dir: tempfile::tempdir().expect("dir"), gzip: false }
    }

    /// A fresh directory, closed files compressed (`store.gzip_closed`).
    pub fn gzip() -> Self {
        JsonlTarget { gzip: true, ..Self::new() }
    }

    /// Every line of every file, parsed, per partition in file order.
    fn lines(&self) -> BTreeMap<i32, Vec<Value>> {
        let mut out = BTreeMap::new();
        let Ok(parts) = std::fs::read_dir(self.dir.path()) else { return out };
        for part in parts.flatten() {
            let name = part.file_name().to_string_lossy().into_owned();
            let Some(p) = name.strip_prefix("partition-").and_then(|s| s.parse::<i32>().ok()) else { continue };
            // `<first offset>.jsonl` or `.jsonl.gz` (a file may be caught between the two: the
            // compressed copy is complete before the plain one goes, so read one of each name).
            let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
            for path in std::fs::read_dir(part.path()).expect("dir").flatten().map(|e| e.path()) {
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".jsonl.gz") {
                    files.insert(stem.to_owned(), path); // complete: preferred
                } else if let Some(stem) = name.strip_suffix(".jsonl") {
                    files.entry(stem.to_owned()).or_insert(path);
                }
            }
            let lines: &mut Vec<Value> = out.entry(p).or_default();
            for f in files.into_values() {
                let text = if f.extension().is_some_and(|x| x == "gz") {
                    let Ok(file) = std::fs::File::open(&f) else { continue }; // removed meanwhile
                    std::io::read_to_string(flate2::read::GzDecoder::new(file)).expect("gzip file")
                } else {
                    match std::fs::read_to_string(&f) {
                        Ok(text) => text,
                        Err(_) => continue, // compressed and removed meanwhile: the .gz was read
                    }
                };
                for line in text.lines() {
                    lines.push(serde_json::from_str(line).expect("a JSON line"));
                }
            }
        }
        out
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for JsonlTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for JsonlTarget {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_STORE__KIND".into(), "jsonl".into()),
            ("AUDIT_STORE__DIR".into(), self.dir.path().display().to_string()),
            ("AUDIT_STORE__MAX_FILE_BYTES".into(), "65536".into()),
            ("AUDIT_STORE__GZIP_CLOSED".into(), self.gzip.to_string()),
        ]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        self.lines()
            .into_iter()
            .map(|(p, lines)| (p, lines.into_iter().filter_map(|mut l| l.get_mut("event").map(Value::take)).collect()))
            .collect()
    }

    fn checkpoints(&self) -> Vec<Value> {
        let lines = self.lines().into_values().flatten();
        lines.filter_map(|mut l| l.get_mut("checkpoint").map(Value::take)).collect()
    }

    fn conflicts(&self) -> Option<usize> {
        None
    }
}
