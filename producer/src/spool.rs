//! The durable local spool: an append-only log of accepted events, in segment files.
//!
//! Every record is framed as `u32 length (LE) | u32 CRC32 of the payload (LE) | payload` and written
//! with one `write(2)` before `log` returns, so a `kill -9` cannot lose it (the page cache holds it);
//! the fsync policy decides what survives a power loss. A segment file is deleted once every record
//! in it has been acknowledged by the broker. On open, each segment is scanned and cut at the first
//! frame that is incomplete or fails its CRC, so a torn tail is never replayed as garbage; the
//! records before it are replayed in order, ahead of anything new.
//!
//! A lock on `spool.lock` keeps two processes from sharing a spool directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest payload a frame may claim; anything larger is corruption.
const MAX_FRAME: u32 = 64 * 1024 * 1024;
const HEADER: usize = 8;
const SEGMENT_SUFFIX: &str = ".spool";

/// Failures of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool reached its size cap.
    #[error(
        "spool {dir} is full ({used} of {cap} bytes used); the broker has been unreachable or too slow for too long"
    )]
    Full {
        /// Spool directory.
        dir: String,
        /// Bytes on disk.
        used: u64,
        /// Configured cap.
        cap: u64,
    },
    /// Another process holds the spool directory.
    #[error("spool directory {dir} is in use by another process; give each producer instance its own spool.dir")]
    Locked {
        /// Spool directory.
        dir: String,
    },
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// File or directory.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.display().to_string(), source }
}

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record, before `log` returns (survives power loss; slowest).
    Always,
    /// By a background task every this many milliseconds (power loss may lose that window).
    IntervalMs(u64),
    /// Left to the operating system (a process crash loses nothing; a power loss may).
    Never,
}

/// What the spool holds for one event: the Kafka key, the optional `traceparent` header and the
/// encoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    /// Record key (tenant id or service name).
    pub key: Vec<u8>,
    /// W3C traceparent header, if any.
    pub traceparent: Option<String>,
    /// Encoded event (JSON or Avro single-object).
    pub value: Vec<u8>,
}

impl SpoolRecord {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.key);
        let tp = self.traceparent.as_deref().unwrap_or_default().as_bytes();
        out.extend_from_slice(&(tp.len() as u16).to_le_bytes());
        out.extend_from_slice(tp);
        out.extend_from_slice(&self.value);
    }

    fn decode(payload: &[u8]) -> Option<SpoolRecord> {
        let key_len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let key = payload.get(4..4 + key_len)?.to_vec();
        let at = 4 + key_len;
        let tp_len = u16::from_le_bytes(payload.get(at..at + 2)?.try_into().ok()?) as usize;
        let tp = payload.get(at + 2..at + 2 + tp_len)?;
        let traceparent = if tp.is_empty() { None } else { Some(String::from_utf8(tp.to_vec()).ok()?) };
        let value = payload.get(at + 2 + tp_len..)?.to_vec();
        Some(SpoolRecord { key, traceparent, value })
    }
}

/// Where a record lives: segment id and byte offset of its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment id (file name).
    pub segment: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    records: u64,
    acked: u64,
    bytes: u64,
    sealed: bool,
}

/// What opening the spool found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records left by a previous run, to be replayed.
    pub records: u64,
    /// Segments they are in.
    pub segments: usize,
    /// Bytes cut from torn or corrupt segment tails.
    pub bytes_cut: u64,
}

/// The spool of one producer instance.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    _lock: File,
    segment_bytes: u64,
    max_bytes: u64,
    fsync: FsyncPolicy,
    segments: BTreeMap<u64, Segment>,
    active_id: u64,
    active: File,
    total_bytes: u64,
    frame: Vec<u8>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

/// Reads frames from `bytes` starting at 0; returns (record count, bytes of whole valid frames).
fn scan_frames(bytes: &[u8]) -> (u64, u64) {
    let mut at = 0usize;
    let mut records = 0;
    while let Some((_, next)) = frame_at(bytes, at) {
        at = next;
        records += 1;
    }
    (records, at as u64)
}

/// The payload range of the valid frame at `at`, and the offset after it.
fn frame_at(bytes: &[u8], at: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let start = at + HEADER;
    let end = start + len as usize;
    let payload = bytes.get(start..end)?;
    (crc32fast::hash(payload) == crc).then_some((start..end, end))
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering what a previous run left.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        max_bytes: u64,
        fsync: FsyncPolicy,
    ) -> Result<(Spool, Recovery), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("spool.lock");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { dir: dir.display().to_string() }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(SEGMENT_SUFFIX).and_then(|s| s.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        let mut recovery = Recovery::default();
        let mut segments = BTreeMap::new();
        let mut total_bytes = 0;
        for id in &ids {
            let path = segment_path(dir, *id);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let (records, valid) = scan_frames(&bytes);
            if valid < bytes.len() as u64 {
                let cut = bytes.len() as u64 - valid;
                tracing::warn!(segment = %path.display(), bytes_cut = cut, records_kept = records, "spool segment had a torn or corrupt tail; cut it");
                recovery.bytes_cut += cut;
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(valid).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            if records == 0 {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            recovery.records += records;
            recovery.segments += 1;
            total_bytes += valid;
            segments.insert(*id, Segment { records, acked: 0, bytes: valid, sealed: true });
        }

        let active_id = ids.last().map_or(1, |last| last + 1);
        let active = Self::create_segment(dir, active_id)?;
        segments.insert(active_id, Segment { records: 0, acked: 0, bytes: 0, sealed: false });
        let spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
            segment_bytes,
            max_bytes,
            fsync,
            segments,
            active_id,
            active,
            total_bytes,
            frame: Vec::with_capacity(4096),
        };
        Ok((spool, recovery))
    }

    fn create_segment(dir: &Path, id: u64) -> Result<File, SpoolError> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        // Make the new directory entry durable too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(file)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a record; it is in the OS when this returns (and on disk with [`FsyncPolicy::Always`]).
    pub fn append(&mut self, record: &SpoolRecord) -> Result<Position, SpoolError> {
        encode_frame(record, &mut self.frame);
        let frame_len = self.frame.len() as u64;
        if self.total_bytes + frame_len > self.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                used: self.total_bytes,
                cap: self.max_bytes,
            });
        }
        let active_bytes = self.segments.get(&self.active_id).map_or(0, |s| s.bytes);
        if active_bytes > 0 && active_bytes + frame_len > self.segment_bytes {
            self.rotate()?;
        }
        let path = segment_path(&self.dir, self.active_id);
        self.active.write_all(&self.frame).map_err(io_err(&path))?;
        if self.fsync == FsyncPolicy::Always {
            self.active.sync_data().map_err(io_err(&path))?;
        }
        let seg =
            self.segments.entry(self.active_id).or_insert(Segment { records: 0, acked: 0, bytes: 0, sealed: false });
        let position = Position { segment: self.active_id, offset: seg.bytes };
        seg.records += 1;
        seg.bytes += frame_len;
        self.total_bytes += frame_len;
        Ok(position)
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        if self.fsync != FsyncPolicy::Never {
            let path = segment_path(&self.dir, self.active_id);
            self.active.sync_data().map_err(io_err(&path))?;
        }
        let old = self.active_id;
        self.active_id += 1;
        self.active = Self::create_segment(&self.dir, self.active_id)?;
        self.segments.insert(self.active_id, Segment { records: 0, acked: 0, bytes: 0, sealed: false });
        if let Some(seg) = self.segments.get_mut(&old) {
            seg.sealed = true;
        }
        self.remove_if_done(old);
        Ok(())
    }

    /// Records that one record of `segment` was acknowledged (or parked as failed); deletes the
    /// segment when it is sealed and fully acknowledged.
    pub fn ack(&mut self, segment: u64) {
        if let Some(seg) = self.segments.get_mut(&segment) {
            seg.acked += 1;
        }
        self.remove_if_done(segment);
    }

    fn remove_if_done(&mut self, id: u64) {
        let done = self.segments.get(&id).is_some_and(|s| s.sealed && s.acked >= s.records);
        if done {
            let seg = self.segments.remove(&id).map_or(0, |s| s.bytes);
            self.total_bytes = self.total_bytes.saturating_sub(seg);
            let path = segment_path(&self.dir, id);
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), %error, "could not delete an acknowledged spool segment");
            }
        }
    }

    /// When every record of the active segment is acknowledged, starts a new segment so the old
    /// one is deleted; a restart then has nothing acknowledged to replay.
    pub fn release_acknowledged(&mut self) -> Result<(), SpoolError> {
        let done = self.segments.get(&self.active_id).is_some_and(|s| s.records > 0 && s.acked >= s.records);
        if done {
            self.rotate()?;
        }
        Ok(())
    }

    /// The position after the last appended record.
    pub fn end(&self) -> Position {
        Position { segment: self.active_id, offset: self.segments.get(&self.active_id).map_or(0, |s| s.bytes) }
    }

    /// The first position of the oldest segment that still holds records.
    pub fn start(&self) -> Position {
        let id = self.segments.iter().find(|(_, s)| s.records > 0).map_or(self.active_id, |(id, _)| *id);
        Position { segment: id, offset: 0 }
    }

    /// Records not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        self.segments.values().map(|s| s.records.saturating_sub(s.acked)).sum()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// A handle to the active segment for a background fsync.
    pub fn active_handle(&self) -> io::Result<File> {
        self.active.try_clone()
    }

    /// Forces the active segment to disk.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, self.active_id);
        self.active.sync_data().map_err(io_err(&path))
    }

    /// Reads up to `max` records from `from` onwards (across segments), stopping at [`Spool::end`].
    /// Returns the records with their positions and the position after the last one.
    pub fn read_from(
        &self,
        from: Position,
        max: usize,
    ) -> Result<(Vec<(Position, SpoolRecord)>, Position), SpoolError> {
        let mut out = Vec::new();
        let mut pos = from;
        for (&id, seg) in self.segments.range(from.segment..) {
            if out.len() >= max {
                break;
            }
            let start = if id == from.segment { from.offset } else { 0 };
            if start >= seg.bytes {
                pos = Position { segment: id, offset: seg.bytes };
                continue;
            }
            let path = segment_path(&self.dir, id);
            let mut file = File::open(&path).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
            let mut bytes = Vec::with_capacity((seg.bytes - start) as usize);
            file.take(seg.bytes - start).read_to_end(&mut bytes).map_err(io_err(&path))?;
            let mut at = 0usize;
            while out.len() < max {
                let Some((range, next)) = frame_at(&bytes, at) else { break };
                let record = SpoolRecord::decode(&bytes[range]).ok_or_else(|| SpoolError::Io {
                    path: path.display().to_string(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "frame passes its CRC but does not decode"),
                })?;
                out.push((Position { segment: id, offset: start + at as u64 }, record));
                at = next;
            }
            pos = Position { segment: id, offset: start + at as u64 };
        }
        Ok((out, pos))
    }
}

/// Events the broker refused for good, kept (same framing as the spool) for an operator to inspect
/// or resend; never replayed automatically.
#[derive(Debug)]
pub struct FailedLog {
    path: PathBuf,
    file: File,
    frame: Vec<u8>,
}

impl FailedLog {
    /// File name inside the spool directory.
    pub const FILE: &'static str = "failed.spool";

    /// Opens `dir/failed.spool` for appending.
    pub fn open(dir: &Path) -> Result<FailedLog, SpoolError> {
        let path = dir.join(Self::FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        Ok(FailedLog { path, file, frame: Vec::new() })
    }

    /// Appends and syncs one record.
    pub fn append(&mut self, record: &SpoolRecord) -> Result<(), SpoolError> {
        encode_frame(record, &mut self.frame);
        self.file.write_all(&self.frame).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Reads every record of a failed log (for tools and tests).
    pub fn read_all(dir: &Path) -> Result<Vec<SpoolRecord>, SpoolError> {
        let path = dir.join(Self::FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((range, next)) = frame_at(&bytes, at) {
            out.extend(SpoolRecord::decode(&bytes[range]));
            at = next;
        }
        Ok(out)
    }
}

/// Writes `record` framed (`len | crc32 | payload`) into `out`, replacing its contents.
fn encode_frame(record: &SpoolRecord, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; HEADER]);
    record.encode_into(out);
    let len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..HEADER].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32) -> SpoolRecord {
        SpoolRecord {
            key: format!("tenant-{}", i % 3).into_bytes(),
            traceparent: i
                .is_multiple_of(2)
                .then(|| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            value: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    fn open(dir: &Path) -> (Spool, Recovery) {
        Spool::open(dir, 256, 1 << 20, FsyncPolicy::Never).unwrap()
    }

    #[test]
    fn records_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, rec) = open(dir.path());
            assert_eq!(rec, Recovery::default());
            for i in 0..20 {
                spool.append(&record(i)).unwrap();
            }
        }
        let (spool, rec) = open(dir.path());
        assert_eq!(rec.records, 20);
        assert!(rec.segments > 1, "small segments rotate");
        let (records, _) = spool.read_from(spool.start(), 100).unwrap();
        let got: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
        assert_eq!(got, (0..20).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_cut_and_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Never).unwrap();
            for i in 0..5 {
                spool.append(&record(i)).unwrap();
            }
        }
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let full = bytes.len();
        // A half-written sixth frame: header promising 100 bytes, then 10.
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&[7; 10]);
        fs::write(&seg, &bytes).unwrap();

        let (spool, rec) = Spool::open(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Never).unwrap();
        assert_eq!(rec.records, 5);
        assert_eq!(rec.bytes_cut, 18);
        assert_eq!(fs::metadata(&seg).unwrap().len() as usize, full);
        let (records, _) = spool.read_from(spool.start(), 100).unwrap();
        assert_eq!(records.len(), 5);
    }

    #[test]
    fn a_corrupt_frame_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Never).unwrap();
            for i in 0..5 {
                spool.append(&record(i)).unwrap();
            }
        }
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff; // flip a payload byte of the fifth record
        fs::write(&seg, &bytes).unwrap();
        let (_, rec) = Spool::open(dir.path(), 1 << 20, 1 << 20, FsyncPolicy::Never).unwrap();
        assert_eq!(rec.records, 4, "the record that fails its CRC is not replayed");
    }

    #[test]
    fn fully_acknowledged_sealed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        let mut positions = Vec::new();
        for i in 0..20 {
            positions.push(spool.append(&record(i)).unwrap());
        }
        let before = spool.bytes();
        for p in &positions {
            spool.ack(p.segment);
        }
        assert_eq!(spool.unacked(), 0);
        assert!(spool.bytes() < before);
        let files = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX));
        assert_eq!(files.count(), 1, "only the active segment is left");
    }

    #[test]
    fn the_size_cap_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20, 100, FsyncPolicy::Never).unwrap();
        let mut err = None;
        for i in 0..10 {
            if let Err(e) = spool.append(&record(i)) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("the cap is reached");
        assert!(err.to_string().contains("is full"), "{err}");
    }

    #[test]
    fn a_second_process_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let err = Spool::open(dir.path(), 256, 1 << 20, FsyncPolicy::Never).unwrap_err();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    }

    #[test]
    fn reading_resumes_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path());
        let positions: Vec<_> = (0..20).map(|i| spool.append(&record(i)).unwrap()).collect();
        let (records, next) = spool.read_from(positions[7], 5).unwrap();
        assert_eq!(records.iter().map(|(p, _)| *p).collect::<Vec<_>>(), positions[7..12]);
        let (rest, end) = spool.read_from(next, 100).unwrap();
        assert_eq!(rest.len(), 8);
        assert_eq!(end, spool.end());
    }
}
