//! How the JSONL sink lays out its directory, as its reader lists it: `partition-<p>` directories
//! of `<first offset, 20 digits>.jsonl[.gz]` files, and whatever else is there.

use std::path::{Path, PathBuf};

use crate::stores::read::{ReadContext as _, ReadError};

/// A JSONL sink's directory: the files it wrote, and every other entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonlLayout {
    /// `(partition, directory, its files in write order)`, in partition order.
    pub partitions: Vec<(i32, PathBuf, Vec<PathBuf>)>,
    /// Entries the sink never writes, or that could not be listed, and why: not read.
    pub foreign: Foreign,
}

/// Entries of a JSONL directory that are not read, and why.
pub type Foreign = Vec<(PathBuf, String)>;

/// The directory of `partition`'s file series under `dir`: `partition-<p>`.
pub(super) fn partition_dir(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("partition-{partition}"))
}

/// The name of a series file whose first line is the record at `first_offset`.
pub(super) fn file_name(first_offset: i64) -> String {
    format!("{first_offset:020}.jsonl")
}

/// Whether `path` is a compressed file of the sink (`.jsonl.gz`).
pub(super) fn compressed(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The partition of a `partition-<p>` directory name, exactly as the sink spells it.
fn partition_of(name: &str) -> Option<i32> {
    let p: i32 = name.strip_prefix("partition-")?.parse().ok()?;
    (format!("partition-{p}") == name).then_some(p)
}

/// Whether `name` is a file the sink writes: `<first offset, 20 digits>.jsonl` or `.jsonl.gz`.
fn is_sink_file(name: &str) -> bool {
    let stem = name.strip_suffix(".jsonl.gz").or_else(|| name.strip_suffix(".jsonl"));
    stem.is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads how `dir` is laid out: the `partition-<p>` directories and their
/// `<offset>.jsonl[.gz]` files, and whatever else is there (a `.jsonl.gz.tmp` beside its plain
/// file is a compression under way, not foreign: its content is the plain file's).
pub fn jsonl_layout(dir: &Path) -> Result<JsonlLayout, ReadError> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the JSONL directory {}", dir.display()))?;
    let mut layout = JsonlLayout::default();
    let not_sink = "not a partition-<n> directory of the JSONL sink";
    for entry in entries {
        let entry = entry.with_context(|| format!("reading the JSONL directory {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match partition_of(&name) {
            Some(p) if entry.file_type().is_ok_and(|t| t.is_dir()) => match partition_files(&path) {
                Ok((files, foreign)) => {
                    layout.partitions.push((p, path, files));
                    layout.foreign.extend(foreign);
                }
                Err(e) => layout.foreign.push((path, format!("could not be listed ({e})"))),
            },
            _ => layout.foreign.push((path, not_sink.into())),
        }
    }
    layout.partitions.sort();
    layout.foreign.sort();
    Ok(layout)
}

/// The sink's files of one partition directory in write order, and its other entries.
fn partition_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Foreign)> {
    let mut files = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_sink_file(&name) && entry.file_type().is_ok_and(|t| !t.is_dir()) {
            files.push(entry.path());
        } else {
            others.push((entry.path(), name));
        }
    }
    let mut foreign = Vec::new();
    for (path, name) in others {
        let compressing = name
            .strip_suffix(".gz.tmp")
            .is_some_and(|plain| is_sink_file(plain) && files.iter().any(|f| f.file_name() == Some(plain.as_ref())));
        if !compressing {
            foreign
                .push((path, "not a file the JSONL sink writes (<first offset, 20 digits>.jsonl or .jsonl.gz)".into()));
        }
    }
    files.sort();
    Ok((files, foreign))
}

/// The partition directories of a JSONL sink, in partition order.
pub fn jsonl_partitions(dir: &Path) -> Result<Vec<(i32, PathBuf)>, ReadError> {
    let partitions: Vec<(i32, PathBuf)> =
        jsonl_layout(dir)?.partitions.into_iter().map(|(p, path, _)| (p, path)).collect();
    if partitions.is_empty() {
        return Err(ReadError::msg(format!(
            "{} holds no partition-<n> directories: is it a JSONL sink's directory?",
            dir.display()
        )));
    }
    Ok(partitions)
}

/// The files of one JSONL partition directory in write order (`.jsonl` and compressed
/// `.jsonl.gz`, named by their first offset); other names are left out.
pub fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    Ok(partition_files(dir).with_context(|| format!("reading {}", dir.display()))?.0)
}
