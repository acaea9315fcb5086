//! Stores filled by `auditctl demo` (the real producer, processor, SQLite and JSONL sinks, signed
//! checkpoints and a witness), for the tests that verify them and tamper with copies of them.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use audit_sink::sink::{CheckpointRecord, SinkRecord};
use serde_json::Value;

/// The directory of an `auditctl demo` run of `events` events, made by the binary `auditctl`.
///
/// nextest runs every test in a process of its own: the run is made once per build of the binary
/// and shared. It is made in a directory of its own and renamed into place when complete, so a
/// test that finds the directory finds a whole run; tests only ever read it (they tamper with
/// copies).
pub fn demo_store(auditctl: &Path, events: u64) -> PathBuf {
    let built = std::fs::metadata(auditctl).and_then(|m| m.modified()).expect("the auditctl binary");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (auditctl, built, events).hash(&mut hasher);
    let dir = std::env::temp_dir().join(format!("auditstream-demo-{:016x}", hasher.finish()));
    if dir.exists() {
        return dir;
    }
    let making = PathBuf::from(format!("{}.{}", dir.display(), std::process::id()));
    let status = Command::new(auditctl)
        .args(["demo", "--events", &events.to_string(), "--dir"])
        .arg(&making)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run auditctl demo");
    assert!(status.success(), "auditctl demo failed: {status}");
    if std::fs::rename(&making, &dir).is_err() {
        // Another test process finished first: use its run.
        let _ = std::fs::remove_dir_all(&making);
    }
    assert!(dir.exists(), "the demo run at {}", dir.display());
    dir
}

/// Copies the tree `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("directory");
    for entry in std::fs::read_dir(from).expect("directory").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The events and the signed checkpoints of a JSONL sink's directory as sink records, in file
/// order, to load other stores with the same chains.
pub fn jsonl_records(jsonl: &Path) -> (Vec<SinkRecord>, Vec<CheckpointRecord>) {
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    for (_, partition) in audit_sink::stores::jsonl::jsonl_partitions(jsonl).expect("a JSONL directory") {
        for file in audit_sink::stores::jsonl::jsonl_files(&partition).expect("its files") {
            for line in std::fs::read_to_string(file).expect("a plain JSONL file").lines() {
                let wrapper: Value = serde_json::from_str(line).expect("a JSON line");
                let partition = wrapper["partition"].as_i64().expect("partition") as i32;
                let offset = wrapper["offset"].as_i64().expect("offset");
                if let Some(c) = wrapper.get("checkpoint") {
                    checkpoints.push(CheckpointRecord {
                        partition,
                        offset,
                        checkpoint: serde_json::from_value(c.clone()).expect("a checkpoint"),
                        json: c.to_string(),
                    });
                    continue;
                }
                let event = wrapper["event"].clone();
                events.push(SinkRecord {
                    partition,
                    offset,
                    event_id: event["eventId"].as_str().expect("eventId").to_owned(),
                    hash: event["integrity"]["hash"].as_str().expect("hash").to_owned(),
                    json: event.to_string(),
                    event,
                });
            }
        }
    }
    (events, checkpoints)
}
