//! The file format: a segment is named `<id, 20 digits>.spool` and holds frames
//! `u32 length (LE) | u32 CRC32 of the payload (LE) | payload`; a payload is a [`SpoolRecord`]:
//! `u32 key length | key | u16 traceparent length | traceparent | encoded event`.

use std::path::{Path, PathBuf};

use super::SpoolRecord;

/// Largest payload a frame may claim; anything larger is corruption.
const MAX_FRAME: u32 = 64 * 1024 * 1024;
pub(super) const HEADER: usize = 8;
pub(super) const SEGMENT_SUFFIX: &str = ".spool";

impl SpoolRecord {
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.key);
        let tp = self.traceparent.as_deref().unwrap_or_default().as_bytes();
        out.extend_from_slice(&(tp.len() as u16).to_le_bytes());
        out.extend_from_slice(tp);
        out.extend_from_slice(&self.value);
    }

    pub(super) fn decode(payload: &[u8]) -> Option<SpoolRecord> {
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

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

/// Reads frames from `bytes` starting at 0; returns (record count, bytes of whole valid frames).
pub(super) fn scan_frames(bytes: &[u8]) -> (u64, u64) {
    let mut at = 0usize;
    let mut records = 0;
    while let Some((_, next)) = frame_at(bytes, at) {
        at = next;
        records += 1;
    }
    (records, at as u64)
}

/// The payload range of the valid frame at `at`, and the offset after it.
pub(super) fn frame_at(bytes: &[u8], at: usize) -> Option<(std::ops::Range<usize>, usize)> {
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

/// Writes `record` framed (`len | crc32 | payload`) into `out`, replacing its contents.
pub(super) fn encode_frame(record: &SpoolRecord, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; HEADER]);
    record.encode_into(out);
    let len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..HEADER].copy_from_slice(&crc.to_le_bytes());
}
