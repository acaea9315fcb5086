//! Opening a spool: take the directory's lock, scan each segment left by a previous run, cut a
//! torn or corrupt tail at its first bad frame, drop empty segments, and start a new active
//! segment after them; what is left is replayed in order, ahead of anything new.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::Path;

use super::frame::{scan_frames, segment_path, SEGMENT_SUFFIX};
use super::{io_err, FsyncPolicy, Segment, Spool, SpoolError};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::{open, record};

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
    fn a_second_process_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let err = Spool::open(dir.path(), 256, 1 << 20, FsyncPolicy::Never).unwrap_err();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    }
}
