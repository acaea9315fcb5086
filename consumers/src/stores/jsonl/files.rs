//! The JSONL sink's files on disk: listing a partition's series, compressing a closed file, and
//! reading back where a series ends (cutting a torn last line).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::sink::SinkError;

pub(super) fn io(path: &Path, e: std::io::Error) -> SinkError {
    let reason = format!("{}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => SinkError::fatal(reason),
        // A full disk, a flaky mount: worth retrying, the lane pauses meanwhile.
        _ => SinkError::retriable(reason),
    }
}

/// The files of a partition directory whose names end with `suffix`, oldest first.
pub(super) fn files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, SinkError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    files.sort();
    Ok(files)
}

/// The newest `.jsonl` file of a partition directory.
pub(super) fn newest(dir: &Path) -> Result<Option<PathBuf>, SinkError> {
    Ok(files(dir, ".jsonl")?.pop())
}

/// The newest file of a partition's series, plain or compressed (names sort by first offset; a
/// plain file wins over its own `.gz`). Older plain files are closed ones waiting for compression.
pub(super) fn newest_file(dir: &Path) -> Result<Option<PathBuf>, SinkError> {
    let plain = newest(dir)?;
    let gz = files(dir, ".jsonl.gz")?.pop();
    Ok(match (plain, gz) {
        (Some(p), Some(g)) if gz_name(&p) < g => Some(g),
        (p, g) => p.or(g),
    })
}

/// `<name>.jsonl` → `<name>.jsonl.gz`.
pub(super) fn gz_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// `<name>.jsonl.gz.tmp` → `<name>.jsonl`.
pub(super) fn plain_name(tmp: &Path) -> PathBuf {
    let name = tmp.to_string_lossy();
    PathBuf::from(name.strip_suffix(".gz.tmp").unwrap_or(&name))
}

/// Compresses a closed file: `.gz.tmp`, fsync, rename to `.gz`, fsync the directory, remove the
/// plain file.
pub(super) fn gzip_file(path: &Path) -> std::io::Result<()> {
    let gz = gz_name(path);
    if !gz.exists() {
        let tmp = PathBuf::from(format!("{}.tmp", gz.display()));
        let mut encoder = flate2::write::GzEncoder::new(File::create(&tmp)?, flate2::Compression::default());
        std::io::copy(&mut File::open(path)?, &mut encoder)?;
        encoder.finish()?.sync_all()?;
        fs::rename(&tmp, &gz)?;
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    fs::remove_file(path)
}

/// The offset of the last line of a compressed file.
pub(super) fn last_offset_gz(path: &Path) -> Result<Option<i64>, SinkError> {
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(File::open(path).map_err(|e| io(path, e))?));
    let mut last = None;
    for line in std::io::BufRead::lines(reader) {
        let line = line.map_err(|e| io(path, e))?;
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            last = v.get("offset").and_then(Value::as_i64).or(last);
        }
    }
    Ok(last)
}

/// Cuts a torn last line and returns the offset of the last complete line (`None`: the file holds
/// no complete line). Reads back from the end until it holds the whole last line, however long.
pub(super) fn recover_tail(path: &Path) -> Result<Option<i64>, SinkError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| io(path, e))?;
    let len = file.metadata().map_err(|e| io(path, e))?.len();
    let mut window = len.min(1 << 20);
    let (tail, complete, start) = loop {
        file.seek(SeekFrom::Start(len - window)).map_err(|e| io(path, e))?;
        let mut tail = Vec::with_capacity(window as usize);
        (&mut file).take(window).read_to_end(&mut tail).map_err(|e| io(path, e))?;
        let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let before = tail[..complete.saturating_sub(1)].iter().rposition(|b| *b == b'\n').map(|i| i + 1);
        match before {
            Some(start) => break (tail, complete, start),
            None if window == len => break (tail, complete, 0),
            None => window = window.saturating_mul(4).min(len), // the last line starts further back
        }
    };
    if complete < tail.len() {
        let keep = len - (tail.len() - complete) as u64;
        tracing::warn!(file = %path.display(), bytes_cut = tail.len() - complete, "cut a torn last line");
        file.set_len(keep).map_err(|e| io(path, e))?;
        file.sync_all().map_err(|e| io(path, e))?;
    }
    let last = &tail[start..complete.saturating_sub(1).max(start)];
    if last.is_empty() {
        return Ok(None);
    }
    let edited =
        |what: String| SinkError::fatal(format!("{}: last line {what}; the file was edited by hand?", path.display()));
    let line: Value = serde_json::from_slice(last).map_err(|e| edited(format!("is not JSON ({e})")))?;
    line.get("offset").and_then(Value::as_i64).map(Some).ok_or_else(|| edited("has no offset".into()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_last_line_longer_than_the_read_window_is_found_and_a_torn_one_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.jsonl");
        let long = format!("{{\"partition\":0,\"offset\":7,\"event\":{{\"x\":\"{}\"}}}}\n", "a".repeat(3 << 20));
        let torn = format!("{{\"partition\":0,\"offset\":8,\"event\":{{\"x\":\"{}", "b".repeat(5 << 20));
        fs::write(&path, format!("{{\"partition\":0,\"offset\":6,\"event\":{{}}}}\n{long}{torn}")).unwrap();
        assert_eq!(recover_tail(&path).unwrap(), Some(7));
        assert_eq!(lines_of(&path), [6, 7], "only the torn line is cut");
        // A file whose only line is torn holds nothing; a last line without an offset is refused.
        fs::write(&path, torn.as_bytes()).unwrap();
        assert_eq!(recover_tail(&path).unwrap(), None);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        fs::write(&path, "{\"partition\":0,\"event\":{}}\n").unwrap();
        assert!(recover_tail(&path).unwrap_err().to_string().contains("has no offset"));
    }

    /// The offsets of a file's lines.
    pub(crate) fn lines_of(path: &Path) -> Vec<i64> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["offset"].as_i64().unwrap())
            .collect()
    }
}
