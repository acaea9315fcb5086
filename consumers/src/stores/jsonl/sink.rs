//! JSONL files: one file series per partition, rotated by size and age, fsync before an offset is
//! stored, exactly once across restarts.
//!
//! Layout: `<dir>/partition-<p>/<first offset, 20 digits>.jsonl`; each line is
//! `{"partition":p,"offset":o,"event":{…}}` with the event in RFC 8785 canonical form (the hashed bytes), so
//! `auditctl verify` hashes `.event`; a signed checkpoint that travelled in the partition is the
//! line `{"partition":p,"offset":o,"checkpoint":{…}}`, in offset order with the events. On assignment the newest file of the partition is read from
//! its end: a torn last line (a crash mid-write) is cut, and the offset of the last complete line
//! tells which records are already there; they are skipped when redelivered.
//!
//! With `gzip_closed`, a rotated file is compressed in the background: written to
//! `<name>.jsonl.gz.tmp`, fsynced, renamed to `<name>.jsonl.gz`, and only then is the plain file
//! removed. A crash at any step leaves the plain file or a complete `.gz` (a stray `.tmp` is
//! removed and the work redone at the next start), never neither.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::JsonlConfig;
use super::files::{files, gz_name, gzip_file, io, last_offset_gz, newest_file, plain_name, recover_tail};
use super::layout;
use crate::sink::{CheckpointRecord, Sink, SinkError, SinkRecord, WriteOutcome};

/// How many recent checkpoint ids per partition are remembered to absorb a redelivery.
const RECENT_CHECKPOINTS: usize = 256;
/// How many recent event ids per partition are remembered to notice a conflicting duplicate.
const RECENT_IDS: usize = 100_000;

#[derive(Debug)]
struct Series {
    dir: PathBuf,
    file: Option<(File, PathBuf, u64, Instant)>,
    last_offset: Option<i64>,
    recent: HashMap<String, String>,
    order: VecDeque<String>,
    /// Ids of the newest checkpoints written, to absorb a redelivery.
    recent_checkpoints: VecDeque<String>,
}

/// The JSONL file sink.
#[derive(Debug)]
pub struct JsonlSink {
    config: JsonlConfig,
    series: Mutex<HashMap<i32, Series>>,
    /// Plain files being compressed right now: a partition re-assigned meanwhile must neither start
    /// a second compression of the same file nor remove its `.gz.tmp` as a leftover.
    compressing: Arc<Mutex<HashSet<PathBuf>>>,
}

impl JsonlSink {
    /// A sink writing under `config.dir`.
    pub fn new(config: JsonlConfig) -> Self {
        JsonlSink { config, series: Mutex::new(HashMap::new()), compressing: Arc::default() }
    }

    fn partition_dir(&self, partition: i32) -> PathBuf {
        layout::partition_dir(&self.config.dir, partition)
    }

    fn open_series(&self, partition: i32) -> Result<Series, SinkError> {
        let dir = self.partition_dir(partition);
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        for tmp in files(&dir, ".gz.tmp")? {
            if !self.is_compressing(&plain_name(&tmp)) {
                fs::remove_file(&tmp).map_err(|e| io(&tmp, e))?; // a compression cut short
            }
        }
        let mut last_offset = None;
        let mut file = None;
        // The newest file of the series tells the last offset written. An empty one (created by a
        // rotation just before a crash) is removed and the one before it decides.
        while let Some(path) = newest_file(&dir)? {
            let compressed = path.extension().is_some_and(|e| e == "gz");
            let found = if compressed { last_offset_gz(&path)? } else { recover_tail(&path)? };
            let Some(offset) = found else {
                // No line at all (recover_tail refuses a file whose last line has no offset).
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
                continue;
            };
            last_offset = Some(offset);
            if compressed {
                break;
            }
            let len = fs::metadata(&path).map_err(|e| io(&path, e))?.len();
            // Never append to a file being compressed (a reassignment while a rotation's
            // compression runs) or whose `.gz` is complete (a crash between the rename and the
            // removal): its compression would keep that `.gz` and drop what was appended.
            if len < self.config.max_file_bytes && !self.is_compressing(&path) && !gz_name(&path).exists() {
                let f = OpenOptions::new().append(true).open(&path).map_err(|e| io(&path, e))?;
                file = Some((f, path, len, Instant::now()));
            }
            break;
        }
        if self.config.gzip_closed {
            // Closed files a previous run did not get to compress.
            let open = file.as_ref().map(|(_, p, _, _): &(File, PathBuf, u64, Instant)| p.clone());
            for closed in files(&dir, ".jsonl")?.into_iter().filter(|p| Some(p) != open.as_ref()) {
                self.compress_in_background(closed);
            }
        }
        Ok(Series {
            dir,
            file,
            last_offset,
            recent: HashMap::new(),
            order: VecDeque::new(),
            recent_checkpoints: VecDeque::new(),
        })
    }

    /// The open series of `partition` (opened on first use).
    fn series_of<'a>(&self, all: &'a mut HashMap<i32, Series>, partition: i32) -> Result<&'a mut Series, SinkError> {
        Ok(match all.entry(partition) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.open_series(partition)?),
        })
    }

    /// Appends `lines` to the series and fsyncs them; false when there was nothing to write.
    fn append(&self, s: &mut Series, lines: &Lines) -> Result<bool, SinkError> {
        let (Some(first), Some(last)) = (lines.first, lines.last) else { return Ok(false) };
        self.rotate_if_due(s, first)?;
        let Some((file, path, bytes, _)) = s.file.as_mut() else { return Err(SinkError::retriable("no open file")) };
        if let Err(e) = file.write_all(&lines.buf).and_then(|()| file.sync_data()) {
            // Nothing of a failed write may stay: the retry writes these lines again. A file that
            // cannot even be cut back stops the sink; the next start cuts its torn tail.
            return Err(match file.set_len(*bytes) {
                Ok(()) => io(path, e),
                Err(cut) => {
                    SinkError::fatal(format!("{}: a write failed ({e}) and cannot be undone ({cut})", path.display()))
                }
            });
        }
        *bytes += lines.buf.len() as u64;
        s.last_offset = Some(last);
        Ok(true)
    }

    fn is_compressing(&self, plain: &Path) -> bool {
        self.compressing.lock().unwrap_or_else(|e| e.into_inner()).contains(plain)
    }

    /// Compresses `path` on its own thread, unless a compression of it is already running.
    fn compress_in_background(&self, path: PathBuf) {
        if !self.compressing.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone()) {
            return;
        }
        let compressing = Arc::clone(&self.compressing);
        std::thread::spawn(move || {
            if let Err(error) = gzip_file(&path) {
                // The plain file stays; the next start tries again.
                tracing::warn!(file = %path.display(), %error, "could not compress a closed file");
            }
            compressing.lock().unwrap_or_else(|e| e.into_inner()).remove(&path);
        });
    }

    fn rotate_if_due(&self, s: &mut Series, first_offset: i64) -> Result<(), SinkError> {
        let due = match &s.file {
            None => true,
            // An empty file is never rotated out: every closed file ends with the offset it holds.
            Some((_, _, bytes, opened)) => {
                *bytes > 0
                    && (*bytes >= self.config.max_file_bytes
                        || opened.elapsed() >= Duration::from_secs(self.config.max_file_age_secs))
            }
        };
        if due {
            if let Some((f, path, _, _)) = s.file.take() {
                f.sync_all().map_err(|e| io(&path, e))?;
                if self.config.gzip_closed {
                    self.compress_in_background(path);
                }
            }
            let path = s.dir.join(layout::file_name(first_offset));
            let f = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
            if let Ok(d) = File::open(&s.dir) {
                let _ = d.sync_all();
            }
            s.file = Some((f, path, 0, Instant::now()));
        }
        Ok(())
    }
}

/// The lines of one write, `{"partition":p,"offset":o,"<field>":…}`, after what is stored.
struct Lines {
    buf: Vec<u8>,
    /// Offset of the first new line.
    first: Option<i64>,
    /// Offset of the last line, stored or new.
    last: Option<i64>,
}

impl Lines {
    fn new(stored: Option<i64>, capacity: usize) -> Lines {
        Lines { buf: Vec::with_capacity(capacity), first: None, last: stored }
    }

    /// Whether the record at `offset` is already stored (or in these lines).
    fn has(&self, offset: i64) -> bool {
        self.last.is_some_and(|l| offset <= l)
    }

    /// Adds the line of the record at `offset`, its `field` holding `json`.
    fn push(&mut self, partition: i32, offset: i64, field: &str, json: &str) {
        self.first.get_or_insert(offset);
        self.buf.extend_from_slice(format!("{{\"partition\":{partition},\"offset\":{offset},\"{field}\":").as_bytes());
        self.buf.extend_from_slice(json.as_bytes());
        self.buf.extend_from_slice(b"}\n");
        self.last = Some(offset);
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    async fn prepare(&self, partition: i32) -> Result<Option<i64>, SinkError> {
        let series = self.open_series(partition)?;
        let last = series.last_offset;
        self.series.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, series);
        Ok(last)
    }

    async fn write(&self, batch: &[SinkRecord]) -> Result<WriteOutcome, SinkError> {
        let Some(first) = batch.first() else { return Ok(WriteOutcome::default()) };
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.series_of(&mut all, first.partition)?;
        let mut outcome = WriteOutcome::default();
        let mut lines = Lines::new(s.last_offset, batch.iter().map(|r| r.json.len() + 48).sum());
        // Ids of this batch: a duplicate can arrive in the same batch as its original.
        let mut in_batch: HashMap<&str, &str> = HashMap::new();
        for r in batch {
            if lines.has(r.offset) {
                outcome.duplicates += 1;
                continue;
            }
            let seen =
                s.recent.get(&r.event_id).map(String::as_str).or_else(|| in_batch.get(r.event_id.as_str()).copied());
            in_batch.entry(&r.event_id).or_insert(&r.hash);
            if let Some(stored) = seen {
                if stored == r.hash {
                    outcome.duplicates += 1;
                    continue;
                }
                // Kept in the file all the same: the file is the record of what arrived.
                outcome.conflicts.push(r.conflict_with(stored.to_owned()));
            }
            lines.push(r.partition, r.offset, "event", &r.json);
            outcome.written += 1;
        }
        if !self.append(s, &lines)? {
            return Ok(outcome);
        }
        for r in batch {
            if s.recent.insert(r.event_id.clone(), r.hash.clone()).is_none() {
                s.order.push_back(r.event_id.clone());
                if s.order.len() > RECENT_IDS {
                    if let Some(old) = s.order.pop_front() {
                        s.recent.remove(&old);
                    }
                }
            }
        }
        outcome.written -= outcome.conflicts.len() as u64;
        Ok(outcome)
    }

    async fn write_checkpoints(&self, batch: &[CheckpointRecord]) -> Result<WriteOutcome, SinkError> {
        let Some(first) = batch.first() else { return Ok(WriteOutcome::default()) };
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.series_of(&mut all, first.partition)?;
        let mut outcome = WriteOutcome::default();
        let mut lines = Lines::new(s.last_offset, batch.iter().map(|r| r.json.len() + 48).sum());
        let mut ids = Vec::new();
        for r in batch {
            let id = r.id();
            if lines.has(r.offset) || s.recent_checkpoints.contains(&id) || ids.contains(&id) {
                outcome.duplicates += 1;
                continue;
            }
            ids.push(id);
            lines.push(r.partition, r.offset, "checkpoint", &r.json);
            outcome.written += 1;
        }
        if !self.append(s, &lines)? {
            return Ok(outcome);
        }
        for id in ids {
            if s.recent_checkpoints.len() == RECENT_CHECKPOINTS {
                s.recent_checkpoints.pop_front();
            }
            s.recent_checkpoints.push_back(id);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::newest;
    use super::super::files::tests::lines_of;
    use super::*;
    use serde_json::{json, Value};

    fn record(p: i32, offset: i64, id: &str, hash: &str) -> SinkRecord {
        let event = json!({"eventId": id, "integrity": {"hash": hash}});
        SinkRecord { partition: p, offset, event_id: id.into(), hash: hash.into(), json: event.to_string(), event }
    }

    fn sink(dir: &Path, max_file_bytes: u64) -> JsonlSink {
        JsonlSink::new(JsonlConfig { dir: dir.to_owned(), max_file_bytes, max_file_age_secs: 3600, gzip_closed: false })
    }

    /// A compressing sink with 4 KiB files, and its partition 0 directory (created).
    fn gzip_sink_with_partition_dir(dir: &Path) -> (JsonlSink, PathBuf) {
        let s = JsonlSink::new(JsonlConfig {
            dir: dir.to_owned(),
            max_file_bytes: 4096,
            max_file_age_secs: 3600,
            gzip_closed: true,
        });
        let part = dir.join("partition-0");
        fs::create_dir_all(&part).unwrap();
        (s, part)
    }

    /// A closed file holding offset 0, as if its compression were running on another thread.
    fn closed_file_being_compressed(s: &JsonlSink, part: &Path) -> PathBuf {
        let closed = part.join("00000000000000000000.jsonl");
        fs::write(&closed, "{\"partition\":0,\"offset\":0,\"event\":{}}\n").unwrap();
        s.compressing.lock().unwrap().insert(closed.clone());
        closed
    }

    fn lines(dir: &Path, p: i32) -> Vec<Value> {
        let mut files: Vec<_> =
            fs::read_dir(dir.join(format!("partition-{p}"))).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_restart_skips_what_is_already_written_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(dir.path(), 1 << 20);
        assert_eq!(s.prepare(0).await.unwrap(), None);
        s.write(&[record(0, 0, "a", "h0"), record(0, 1, "b", "h1")]).await.unwrap();
        drop(s);
        // A crash in the middle of the next line.
        let file = newest(&dir.path().join("partition-0")).unwrap().unwrap();
        OpenOptions::new().append(true).open(&file).unwrap().write_all(b"{\"partition\":0,\"offs").unwrap();

        let s = sink(dir.path(), 1 << 20);
        assert_eq!(s.prepare(0).await.unwrap(), Some(1), "the last complete line is offset 1");
        let out = s.write(&[record(0, 1, "b", "h1"), record(0, 2, "c", "h2")]).await.unwrap();
        assert_eq!((out.written, out.duplicates), (1, 1));
        let offsets: Vec<i64> = lines(dir.path(), 0).iter().map(|l| l["offset"].as_i64().unwrap()).collect();
        assert_eq!(offsets, [0, 1, 2]);
    }

    #[tokio::test]
    async fn files_rotate_by_size_and_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(dir.path(), 4096);
        s.prepare(3).await.unwrap();
        for i in 0..100 {
            s.write(&[record(3, i, &format!("e{i}"), "h")]).await.unwrap();
        }
        let files = fs::read_dir(dir.path().join("partition-3")).unwrap().count();
        assert!(files > 1, "rotated into {files} files");
        let offsets: Vec<i64> = lines(dir.path(), 3).iter().map(|l| l["offset"].as_i64().unwrap()).collect();
        assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn closed_files_are_compressed_and_a_restart_still_knows_the_last_offset() {
        let dir = tempfile::tempdir().unwrap();
        let config = |dir: &Path| JsonlConfig {
            dir: dir.to_owned(),
            max_file_bytes: 4096,
            max_file_age_secs: 3600,
            gzip_closed: true,
        };
        let s = JsonlSink::new(config(dir.path()));
        s.prepare(0).await.unwrap();
        for i in 0..300 {
            s.write(&[record(0, i, &format!("e{i}"), "h")]).await.unwrap();
        }
        drop(s);
        let part = dir.path().join("partition-0");
        let wait = Instant::now();
        while files(&part, ".jsonl").unwrap().len() > 1 && wait.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gz = files(&part, ".jsonl.gz").unwrap();
        assert!(gz.len() > 1, "closed files compressed: {gz:?}");
        assert_eq!(files(&part, ".jsonl").unwrap().len(), 1, "only the open file stays plain");
        // A compression cut short leaves a stray .tmp.
        fs::write(part.join("00000000000000000000.jsonl.gz.tmp"), b"partial").unwrap();
        let mut offsets = Vec::new();
        for f in &gz {
            let text = std::io::read_to_string(flate2::read::GzDecoder::new(File::open(f).unwrap())).unwrap();
            offsets.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["offset"].as_i64().unwrap()));
        }
        offsets.extend(lines_of(&newest(&part).unwrap().unwrap()));
        assert_eq!(offsets, (0..300).collect::<Vec<_>>(), "nothing lost or reordered by compression");

        let s = JsonlSink::new(config(dir.path()));
        assert_eq!(s.prepare(0).await.unwrap(), Some(299));
        assert!(files(&part, ".gz.tmp").unwrap().is_empty(), "the stray .tmp is removed");
    }

    #[tokio::test]
    async fn a_restart_after_the_newest_file_was_compressed_knows_the_last_offset() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("partition-0");
        let s = sink(dir.path(), 4096);
        s.prepare(0).await.unwrap();
        for i in 0..300 {
            s.write(&[record(0, i, &format!("e{i}"), "h")]).await.unwrap();
        }
        drop(s);
        let plain = files(&part, ".jsonl").unwrap();
        assert!(plain.len() > 2, "rotated: {plain:?}");
        // Killed after compressing the newest file and before opening the next one, with an older
        // closed file still waiting for compression.
        gzip_file(plain.last().unwrap()).unwrap();
        gzip_file(&plain[0]).unwrap();
        let s = sink(dir.path(), 4096);
        assert_eq!(s.prepare(0).await.unwrap(), Some(299), "the newest file is compressed; its last line counts");
        drop(s);
        // Killed right after a rotation created the next file, before anything was written to it.
        let empty = part.join(format!("{:020}.jsonl", 300));
        File::create(&empty).unwrap();
        let s = sink(dir.path(), 4096);
        assert_eq!(s.prepare(0).await.unwrap(), Some(299), "an empty newest file defers to the .gz before it");
        assert!(!empty.exists());
        drop(s);
        // Killed between a compression's rename and its removal of the plain file: the plain twin
        // gives the offset but is never appended to (its compression would keep the old .gz).
        let twin = plain.last().unwrap();
        let text = std::io::read_to_string(flate2::read::GzDecoder::new(File::open(gz_name(twin)).unwrap())).unwrap();
        fs::write(twin, &text).unwrap();
        let s = sink(dir.path(), 4096);
        assert_eq!(s.prepare(0).await.unwrap(), Some(299));
        let out = s.write(&[record(0, 299, "e299", "h"), record(0, 300, "e300", "h")]).await.unwrap();
        assert_eq!((out.written, out.duplicates), (1, 1));
        assert_eq!(fs::read_to_string(twin).unwrap(), text, "the twin is not appended to");
        assert_eq!(lines_of(&empty), [300], "the next record starts a new file");
    }

    #[tokio::test]
    async fn a_reassigned_partition_leaves_a_running_compression_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (s, part) = gzip_sink_with_partition_dir(dir.path());
        let closed = closed_file_being_compressed(&s, &part);
        fs::write(part.join("00000000000000000001.jsonl"), "{\"partition\":0,\"offset\":1,\"event\":{}}\n").unwrap();
        let tmp = part.join("00000000000000000000.jsonl.gz.tmp");
        fs::write(&tmp, b"being written").unwrap();

        assert_eq!(s.prepare(0).await.unwrap(), Some(1));
        assert!(tmp.exists(), "the running compression's .tmp is not removed as a leftover");
        assert!(closed.exists(), "no second compression of the same file started");

        s.compressing.lock().unwrap().clear();
        fs::remove_file(&tmp).unwrap();
        assert_eq!(s.prepare(0).await.unwrap(), Some(1));
        let wait = Instant::now();
        while closed.exists() && wait.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!closed.exists() && part.join("00000000000000000000.jsonl.gz").exists(), "compressed once free");
    }

    #[tokio::test]
    async fn the_newest_file_is_not_appended_to_while_its_compression_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (s, part) = gzip_sink_with_partition_dir(dir.path());
        // A rotation closed this file and started compressing it, then opening the next failed.
        let closed = closed_file_being_compressed(&s, &part);
        assert_eq!(s.prepare(0).await.unwrap(), Some(0));
        s.write(&[record(0, 1, "e1", "h")]).await.unwrap();
        assert_eq!(lines_of(&closed), [0], "the file being compressed is left as it is");
        assert_eq!(lines_of(&part.join("00000000000000000001.jsonl")), [1]);
    }

    #[tokio::test]
    async fn the_same_event_id_with_other_content_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(dir.path(), 1 << 20);
        s.prepare(0).await.unwrap();
        s.write(&[record(0, 0, "a", "h0")]).await.unwrap();
        let out = s.write(&[record(0, 1, "a", "other")]).await.unwrap();
        assert_eq!(out.conflicts.len(), 1);
        assert_eq!(out.conflicts[0].stored_hash, "h0");
    }
}
