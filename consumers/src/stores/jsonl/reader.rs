//! The JSONL sink's reader: every line of every file it wrote, in write order per partition, and
//! every entry of its directory it never writes (reported, not read).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use super::gz::GzMembers;
use super::layout::{compressed, jsonl_layout};
use super::line;
use crate::stores::read::{chain_of, missing_link_field, Each, ReadError, ReadFilter, Stored, Unread, UnreadKind};

pub(super) fn read_jsonl<E: From<ReadError>>(dir: &Path, filter: &ReadFilter, each: &mut Each<'_, E>) -> Result<(), E> {
    let layout = jsonl_layout(dir)?;
    for (path, reason) in layout.foreign {
        let reason = format!("{reason}: not read, so what it holds is not verified");
        each(Unread::stored(UnreadKind::UnreadFile, path.display().to_string(), reason))?;
    }
    for (_, _, files) in layout.partitions {
        let newest = files.last().cloned();
        for path in files {
            // Only the newest plain file is ever appended to: only it can end in a torn line.
            let appendable = Some(&path) == newest.as_ref() && !compressed(&path);
            read_jsonl_file(&path, appendable, filter, each)?;
        }
    }
    Ok(())
}

/// One file of a JSONL sink, line by line (every member of a compressed file); what is not as
/// the sink writes it goes to `each` as [`Stored::Unread`].
fn read_jsonl_file<E: From<ReadError>>(
    path: &Path,
    appendable: bool,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(), E> {
    let location = || path.display().to_string();
    let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m.len())));
    let (file, len) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let reason = format!("could not be opened ({e}): not read, so what it holds is not verified");
            return each(Unread::stored(UnreadKind::UnreadFile, location(), reason));
        }
    };
    if !compressed(path) {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        if let (lines, Some(e)) = jsonl_lines(&mut reader, path, appendable, filter, each)? {
            let reason = format!("could not be read after line {lines} ({e}): the rest is not verified");
            each(Unread::stored(UnreadKind::UnreadFile, location(), reason))?;
        }
        return Ok(());
    }
    if len == 0 {
        let reason = "an empty file, not a gzip stream (the sink renames a .gz into place once complete)".into();
        return each(Unread::stored(UnreadKind::DamagedFile, location(), reason));
    }
    let mut reader = BufReader::with_capacity(1 << 20, GzMembers::new(file, len));
    if let (lines, Some(e)) = jsonl_lines(&mut reader, path, false, filter, each)? {
        let reason = format!(
            "the gzip stream is damaged after line {lines} ({e}): the rest of the file is not read, so not verified"
        );
        each(Unread::stored(UnreadKind::DamagedFile, location(), reason))?;
    }
    let gz = reader.get_ref();
    if let (true, Some(at)) = (gz.members > 1, gz.second_at) {
        let reason = format!(
            "{} gzip members, the second from byte {at}: the sink writes one and never appends to a compressed \
             file, so it was written again after it was closed (every member was read and verified, as gzip tools \
             read them)",
            gz.members
        );
        each(Unread::stored(UnreadKind::ExtraGzipMember, location(), reason))?;
    }
    if let Some((at, n)) = gz.trailing {
        let reason =
            format!("{n} bytes after the gzip stream, from byte {at}, that are not gzip: not read, so not verified");
        each(Unread::stored(UnreadKind::TrailingBytes, location(), reason))?;
    }
    Ok(())
}

/// Hands every line of `reader` to `each` as what it stores; returns how many lines were read,
/// and the read error that ended the file early, if one did.
fn jsonl_lines<R: Read, E: From<ReadError>>(
    reader: &mut BufReader<R>,
    path: &Path,
    appendable: bool,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(usize, Option<std::io::Error>), E> {
    let mut line = Vec::with_capacity(4096);
    let mut number = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok((number, None)),
            Ok(_) => {}
            Err(e) => return Ok((number, Some(e))),
        }
        number += 1;
        let (text, complete) = match line.strip_suffix(b"\n") {
            Some(text) => (text, true),
            None => (&line[..], false),
        };
        jsonl_line(path, number, text, appendable && !complete, filter, each)?;
    }
}

/// One line of a JSONL sink file: an event, a checkpoint, or what it is instead (`torn`: the
/// last line of the newest plain file, without its newline).
fn jsonl_line<E: From<ReadError>>(
    path: &Path,
    number: usize,
    line: &[u8],
    torn: bool,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(), E> {
    // Only `event` or `checkpoint` is kept (partition and offset are skipped, not built).
    #[derive(serde::Deserialize)]
    struct Line {
        event: Option<Value>,
        checkpoint: Option<Value>,
    }
    if filter.hashes_only {
        if let Some(stored) = line::hashed_line(line, filter) {
            return match stored {
                Some(stored) => each(stored),
                None => Ok(()),
            };
        }
    }
    let location = || format!("{}:{number}", path.display());
    let unreadable = |reason: String| Unread::stored(UnreadKind::Unreadable, location(), reason);
    if line.is_empty() {
        return each(unreadable("an empty line (the sink never writes one)".into()));
    }
    match serde_json::from_slice::<Line>(line) {
        Err(e) if torn => {
            let reason = format!(
                "the newest file's last line ends without its newline and does not decode ({e}): a write a crash \
                 cut short, which the sink cuts when it starts again and then writes anew; not verified"
            );
            each(Unread::stored(UnreadKind::TornLine, location(), reason))
        }
        Err(e) => each(unreadable(format!("not a JSON line of the sink ({e}): not verified"))),
        Ok(Line { event: Some(event), checkpoint: None }) => {
            if let Some(field) = missing_link_field(&event) {
                let reason = format!("an event without a valid {field}: not verified");
                return each(Unread::event(location(), &event, reason));
            }
            if filter.chain.as_deref().is_some_and(|c| chain_of(&event) != Some(c)) {
                return Ok(());
            }
            if let Err(why) = line::sink_event_text(line) {
                let reason = format!(
                    "the line is not byte for byte what the sink writes ({why}): readers of the file may see other \
                     content than the canonical form that was hashed; the event is verified as it parses"
                );
                each(Unread::about(UnreadKind::NonCanonical, location(), &event, reason))?;
            }
            each(Stored::Event(event))
        }
        Ok(Line { event: None, checkpoint: Some(c) }) => match Stored::checkpoint(c, location) {
            Stored::Checkpoint(c) if filter.chain.as_deref().is_some_and(|chain| c.chain != chain) => Ok(()),
            stored => each(stored),
        },
        Ok(_) => each(unreadable("neither an \"event\" nor a \"checkpoint\" line: not verified".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    /// Reads `dir` as a JSONL source: the kinds of what was not read as an event or checkpoint,
    /// and how many lines were read as checkpoints (good or bad).
    fn read_dir(dir: &Path) -> (Vec<(&'static str, String)>, usize) {
        let mut unread = Vec::new();
        let mut checkpoints = 0;
        read_jsonl::<ReadError>(dir, &ReadFilter::default(), &mut |stored| {
            match stored {
                Stored::Unread(u) => unread.push((u.kind.as_str(), u.location)),
                Stored::Checkpoint(_) | Stored::BadCheckpoint { .. } => checkpoints += 1,
                other => panic!("{other:?}"),
            }
            Ok(())
        })
        .unwrap();
        (unread, checkpoints)
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    const LINE: &[u8] = b"{\"partition\":0,\"offset\":0,\"checkpoint\":{}}\n";
    #[test]
    fn only_the_sinks_names_are_read_and_every_other_entry_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = dir.path().join("partition-0");
        std::fs::create_dir_all(&p0).unwrap();
        std::fs::create_dir_all(dir.path().join("partition-01")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(p0.join("00000000000000000000.jsonl"), LINE).unwrap();
        // A compression under way: its plain file is read, the .tmp is not reported.
        std::fs::write(p0.join("00000000000000000000.jsonl.gz.tmp"), b"partial").unwrap();
        std::fs::write(p0.join("00000000000000000007.jsonl.gz.tmp"), b"orphan").unwrap();
        std::fs::write(p0.join("7.jsonl"), LINE).unwrap();
        let (unread, checkpoints) = read_dir(dir.path());
        let names: Vec<_> = unread
            .iter()
            .map(|(k, l)| (*k, Path::new(l).file_name().unwrap().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            [
                ("unread_file", "notes.txt".to_owned()),
                ("unread_file", "00000000000000000007.jsonl.gz.tmp".to_owned()),
                ("unread_file", "7.jsonl".to_owned()),
                ("unread_file", "partition-01".to_owned()),
            ]
        );
        assert_eq!(checkpoints, 1);
    }

    #[test]
    fn every_gzip_member_is_read_and_more_than_one_or_trailing_bytes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = dir.path().join("partition-0");
        std::fs::create_dir_all(&p0).unwrap();
        let file = p0.join("00000000000000000000.jsonl.gz");
        std::fs::write(&file, gzip(&LINE.repeat(3))).unwrap();
        assert_eq!(read_dir(dir.path()), (vec![], 3), "one member, as the sink writes it");

        let mut two = gzip(&LINE.repeat(3));
        two.extend(gzip(&LINE.repeat(2)));
        std::fs::write(&file, &two).unwrap();
        let (unread, checkpoints) = read_dir(dir.path());
        assert_eq!((unread.iter().map(|u| u.0).collect::<Vec<_>>(), checkpoints), (vec!["extra_gzip_member"], 5));

        let mut trailing = gzip(&LINE.repeat(3));
        trailing.extend(b"\x1f");
        std::fs::write(&file, &trailing).unwrap();
        let (unread, checkpoints) = read_dir(dir.path());
        assert_eq!((unread.iter().map(|u| u.0).collect::<Vec<_>>(), checkpoints), (vec!["trailing_bytes"], 3));

        let whole = gzip(&LINE.repeat(3));
        std::fs::write(&file, &whole[..whole.len() - 4]).unwrap();
        let (unread, _) = read_dir(dir.path());
        assert_eq!(unread.iter().map(|u| u.0).collect::<Vec<_>>(), vec!["damaged_file"]);
    }

    #[test]
    fn a_torn_line_is_one_only_at_the_end_of_the_newest_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = dir.path().join("partition-0");
        std::fs::create_dir_all(&p0).unwrap();
        let torn = [LINE, &LINE[..10]].concat();
        std::fs::write(p0.join("00000000000000000000.jsonl"), &torn).unwrap();
        std::fs::write(p0.join("00000000000000000001.jsonl"), &torn).unwrap();
        let (unread, _) = read_dir(dir.path());
        let kinds: Vec<_> = unread.iter().map(|(k, l)| (*k, l.rsplit('/').next().unwrap().to_owned())).collect();
        assert_eq!(
            kinds,
            [
                ("unreadable", "00000000000000000000.jsonl:2".to_owned()),
                ("torn_line", "00000000000000000001.jsonl:2".to_owned())
            ]
        );
    }
}
