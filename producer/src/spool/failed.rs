//! [`FailedLog`]: what the broker refused for good, in the spool's framing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::frame::{encode_frame, frame_at};
use super::{io_err, SpoolError, SpoolRecord};

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
