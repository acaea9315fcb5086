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
//!
//! Layout: `frame.rs` is the file format, `recovery.rs` opening a spool left by a previous run,
//! `failed.rs` the log of events the broker refused; this module appends, acknowledges, rotates
//! and reads.

mod failed;
mod frame;
mod recovery;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use failed::FailedLog;
use frame::{encode_frame, frame_at, segment_path};
pub use recovery::Recovery;

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

impl Spool {
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

#[cfg(test)]
mod tests {
    use super::frame::SEGMENT_SUFFIX;
    use super::*;

    pub(super) fn record(i: u32) -> SpoolRecord {
        SpoolRecord {
            key: format!("tenant-{}", i % 3).into_bytes(),
            traceparent: i
                .is_multiple_of(2)
                .then(|| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            value: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    pub(super) fn open(dir: &Path) -> (Spool, Recovery) {
        Spool::open(dir, 256, 1 << 20, FsyncPolicy::Never).unwrap()
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
