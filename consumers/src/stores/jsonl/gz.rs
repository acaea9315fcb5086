//! A compressed file of the JSONL sink read as gzip tools read it: every member in turn.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

/// Every gzip member of a compressed file in turn, as gzip tools read them: counts the members,
/// and stops at bytes after the last member that do not start another.
pub(super) struct GzMembers {
    decoder: Option<flate2::bufread::GzDecoder<BufReader<File>>>,
    len: u64,
    /// Members read to their end.
    pub(super) members: u32,
    /// Where the second member starts.
    pub(super) second_at: Option<u64>,
    /// `(at, length)` of bytes after the gzip stream that are not gzip.
    pub(super) trailing: Option<(u64, u64)>,
}

impl GzMembers {
    pub(super) fn new(file: File, len: u64) -> GzMembers {
        GzMembers {
            decoder: Some(flate2::bufread::GzDecoder::new(BufReader::with_capacity(1 << 16, file))),
            len,
            members: 0,
            second_at: None,
            trailing: None,
        }
    }

    /// After a member: a decoder for the next one, or the end (with any trailing bytes noted).
    fn next_member(&mut self, input: BufReader<File>) -> std::io::Result<()> {
        let mut input = input;
        let at = input.stream_position()?;
        let mut file = input.into_inner();
        file.seek(SeekFrom::Start(at))?;
        let mut magic = [0u8; 2];
        let mut got = 0;
        while got < magic.len() {
            match file.read(&mut magic[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if got == 0 {
            return Ok(());
        }
        if got < 2 || magic != [0x1f, 0x8b] {
            self.trailing = Some((at, self.len.saturating_sub(at)));
            return Ok(());
        }
        file.seek(SeekFrom::Start(at))?;
        self.second_at.get_or_insert(at);
        self.decoder = Some(flate2::bufread::GzDecoder::new(BufReader::with_capacity(1 << 16, file)));
        Ok(())
    }
}

impl Read for GzMembers {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while let Some(decoder) = self.decoder.as_mut() {
            let n = decoder.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            let Some(decoder) = self.decoder.take() else { break };
            self.members += 1;
            self.next_member(decoder.into_inner())?;
        }
        Ok(0)
    }
}
