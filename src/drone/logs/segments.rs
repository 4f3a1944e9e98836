//! One output stream of one attempt on disk: its bytes in a run of segment files, the newest
//! appended to, the oldest removed once the stream holds more than its cap.
//!
//! A segment is named for the stream and the offset of its first byte in the whole stream,
//! zero-padded so that names sort in the stream's order: `stdout.00000000000000000000`,
//! `stdout.00000000000001638400`, ... (`cat stdout.*` is what is kept of the stream). Every
//! segment but the newest holds exactly its segment size, so the offset a reader wants is found
//! from the names alone, and the end of one segment names the next. A segment is only ever
//! appended to, never rewritten: a reader that opened one reads what it holds even after the
//! writer removed it, and the bytes it reads are always the stream's.
//!
//! The cap is what is kept at most, on disk and for readers: once the stream passes it, the writer
//! removes the oldest segment whenever the next bytes would take the kept part over it. Segments
//! are a sixty-fourth of the cap (at least [`MIN_SEGMENT_BYTES`]), so the kept part is never less
//! than the cap less one segment: 100 MiB keeps between 98.4 and 100 MiB. Where the kept part now
//! starts is the first segment's name; what was dropped before it is said by those who serve the
//! stream (see `follow.rs`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::exec::Stream;

/// Segments a cap is cut into.
const SEGMENTS_PER_CAP: u64 = 64;

/// The smallest segment: below it, a small cap would cost a file per few lines.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

/// Digits of a segment's offset in its name: every `u64`.
const OFFSET_DIGITS: usize = 20;

/// Only the drone's user may read what a task printed.
const FILE_MODE: u32 = 0o600;

/// The bytes of a stream that are kept, `from` (its first kept byte's offset) to `to` (the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kept {
    pub from: u64,
    pub to: u64,
}

/// The size of the segments a stream of cap `cap_bytes` is cut into.
fn segment_bytes(cap_bytes: u64) -> u64 {
    (cap_bytes / SEGMENTS_PER_CAP).max(MIN_SEGMENT_BYTES)
}

/// The name of `stream`'s segment whose first byte is the stream's byte `start`.
fn segment_name(stream: Stream, start: u64) -> String {
    format!("{}.{start:0OFFSET_DIGITS$}", stream.as_str())
}

/// The offset a segment's file name says, when it is one of `stream`'s.
fn segment_start(stream: Stream, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(stream.as_str())?.strip_prefix('.')?;
    if digits.len() != OFFSET_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The first offsets of `stream`'s segments in `dir`, oldest first; none when `dir` is missing.
fn starts(dir: &Path, stream: Stream) -> io::Result<Vec<u64>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut starts = Vec::new();
    for entry in entries {
        if let Some(start) = entry?
            .file_name()
            .to_str()
            .and_then(|n| segment_start(stream, n))
        {
            starts.push(start);
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// What is kept of `stream` in `dir` now.
pub fn kept(dir: &Path, stream: Stream) -> io::Result<Kept> {
    let starts = starts(dir, stream)?;
    let (Some(&from), Some(&last)) = (starts.first(), starts.last()) else {
        return Ok(Kept::default());
    };
    let last_len = match fs::metadata(dir.join(segment_name(stream, last))) {
        Ok(meta) => meta.len(),
        // Removed since the listing: only a writer removes, and never its newest.
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(Kept {
        from,
        to: last + last_len,
    })
}

/// Appends to one stream's segments, removing the oldest past the cap. Not shared: the attempt's
/// thread owns it.
pub struct Writer {
    dir: PathBuf,
    stream: Stream,
    cap_bytes: u64,
    segment_bytes: u64,
    /// First offsets of the segments kept, oldest first; the last is the one written to.
    starts: VecDeque<u64>,
    /// The newest segment, once one is open.
    file: Option<File>,
    /// Bytes of the stream written in all (its end).
    written: u64,
}

impl Writer {
    /// A writer of `stream` in `dir` (which exists), keeping at most `cap_bytes` of it (at least
    /// two segments' worth). Whatever `dir` holds of the stream already is kept and appended to.
    pub fn open(dir: &Path, stream: Stream, cap_bytes: u64) -> io::Result<Writer> {
        let segment_bytes = segment_bytes(cap_bytes);
        let cap_bytes = cap_bytes.max(2 * segment_bytes);
        let kept = kept(dir, stream)?;
        let starts: VecDeque<u64> = starts(dir, stream)?.into();
        let file = match starts.back() {
            Some(&last) if kept.to - last < segment_bytes => Some(
                OpenOptions::new()
                    .append(true)
                    .open(dir.join(segment_name(stream, last)))?,
            ),
            _ => None,
        };
        Ok(Writer {
            dir: dir.to_path_buf(),
            stream,
            cap_bytes,
            segment_bytes,
            starts,
            file,
            written: kept.to,
        })
    }

    /// Bytes of the stream written in all: its end, and where the next byte goes.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The first byte still kept.
    pub fn kept_from(&self) -> u64 {
        self.starts.front().copied().unwrap_or(self.written)
    }

    /// Appends `bytes`, starting segments as they fill and removing the oldest ones the cap no
    /// longer holds. On an error the stream's files stay as they were up to the last byte
    /// written whole.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let full = match (&self.file, self.starts.back()) {
                (Some(_), Some(&start)) => self.written - start >= self.segment_bytes,
                _ => true,
            };
            if full {
                self.start_segment()?;
            }
            let start = self.starts.back().copied().unwrap_or(self.written);
            let room = self.segment_bytes - (self.written - start);
            let n = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            let Some(file) = &mut self.file else {
                return Err(io::Error::other("no segment is open"));
            };
            file.write_all(&bytes[..n])?;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Opens a new segment at the stream's end, first removing the oldest segments the cap could
    /// not hold beside a full new one.
    fn start_segment(&mut self) -> io::Result<()> {
        while let Some(&oldest) = self.starts.front()
            && self.written + self.segment_bytes - oldest > self.cap_bytes
        {
            match fs::remove_file(self.dir.join(segment_name(self.stream, oldest))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.starts.pop_front();
        }
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(self.dir.join(segment_name(self.stream, self.written)))?;
        self.starts.push_back(self.written);
        self.file = Some(file);
        Ok(())
    }
}

/// Reads one stream from an offset on, segment after segment, as far as it is written. Whether
/// more will come, or what it read past was dropped, is for its caller to know (see `follow.rs`):
/// here a read of nothing only says "nothing more now".
pub struct Reader {
    dir: PathBuf,
    stream: Stream,
    /// The segment being read, and its first offset.
    file: Option<(File, u64)>,
    /// The stream's offset of the next byte read.
    position: u64,
}

impl Reader {
    /// A reader of `stream` in `dir` from `offset`, or from the first byte kept when that one was
    /// dropped; with what was kept when it opened.
    pub fn open(dir: &Path, stream: Stream, offset: u64) -> io::Result<(Reader, Kept)> {
        let kept = kept(dir, stream)?;
        let mut reader = Reader {
            dir: dir.to_path_buf(),
            stream,
            file: None,
            position: offset.max(kept.from),
        };
        reader.locate()?;
        Ok((reader, kept))
    }

    /// The stream's offset of the next byte this reads.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads what is written at the reader's position into `buf`, going on into the next segment
    /// at the end of one. `Ok(0)`: nothing more there now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.file.is_none() && !self.locate()? {
                return Ok(0);
            }
            let Some((file, start)) = &mut self.file else {
                return Ok(0);
            };
            let n = file.read(buf)?;
            if n > 0 {
                self.position += n as u64;
                return Ok(n);
            }
            if self.position == *start {
                return Ok(0);
            }
            // At the end of what this segment holds now: if the next one exists, this one is
            // whole (every segment but the newest is), and the stream goes on there.
            match File::open(self.dir.join(segment_name(self.stream, self.position))) {
                Ok(next) => self.file = Some((next, self.position)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the segment holding the reader's position, if one is written that far: the newest
    /// segment starting at or before it. Returns whether one was opened.
    fn locate(&mut self) -> io::Result<bool> {
        let starts = starts(&self.dir, self.stream)?;
        let Some(&start) = starts.iter().rev().find(|&&start| start <= self.position) else {
            return Ok(false);
        };
        let mut file = match File::open(self.dir.join(segment_name(self.stream, start))) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if self.position > start + len {
            // Past what is written: the bytes there may land in a later segment.
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.position - start))?;
        self.file = Some((file, start));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::Scratch;
    use std::os::unix::fs::PermissionsExt;

    /// The stream's bytes: a counter's, so that any byte out of place shows.
    fn bytes(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| (i % 251) as u8).collect()
    }

    fn read_all(reader: &mut Reader) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0; 7000];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_stream_under_its_cap_is_read_back_whole_from_any_offset() {
        let scratch = Scratch::new();
        let dir = scratch.file("logs");
        fs::create_dir(&dir).unwrap();
        let cap = 64 * MIN_SEGMENT_BYTES;
        let mut writer = Writer::open(&dir, Stream::Stdout, cap).unwrap();
        let total = 5 * MIN_SEGMENT_BYTES as usize + 123;
        for chunk in bytes(0, total).chunks(10_000) {
            writer.write(chunk).unwrap();
        }
        assert_eq!((writer.written(), writer.kept_from()), (total as u64, 0));
        for offset in [0, 1, MIN_SEGMENT_BYTES as usize, total - 1, total] {
            let (mut reader, kept) = Reader::open(&dir, Stream::Stdout, offset as u64).unwrap();
            assert_eq!(
                kept,
                Kept {
                    from: 0,
                    to: total as u64
                }
            );
            assert_eq!(
                read_all(&mut reader),
                bytes(offset, total - offset),
                "from {offset}"
            );
            assert_eq!(reader.position(), total as u64);
        }
        let (mut other, kept) = Reader::open(&dir, Stream::Stderr, 0).unwrap();
        assert_eq!((kept, read_all(&mut other)), (Kept::default(), Vec::new()));
        let mode = fs::metadata(dir.join(segment_name(Stream::Stdout, 0)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn past_its_cap_a_stream_keeps_its_last_part_and_never_more() {
        let scratch = Scratch::new();
        let dir = scratch.file("logs");
        fs::create_dir(&dir).unwrap();
        let cap = 2 * MIN_SEGMENT_BYTES;
        let mut writer = Writer::open(&dir, Stream::Stderr, cap).unwrap();
        let total = 7 * MIN_SEGMENT_BYTES as usize + 5000;
        let mut written = 0;
        for chunk in bytes(0, total).chunks(9_999) {
            writer.write(chunk).unwrap();
            written += chunk.len() as u64;
            let kept = kept(&dir, Stream::Stderr).unwrap();
            assert_eq!((kept.to, kept.from), (written, writer.kept_from()));
            assert!(kept.to - kept.from <= cap, "{kept:?} is over the cap");
            if written >= cap {
                assert!(kept.to - kept.from >= cap - MIN_SEGMENT_BYTES, "{kept:?}");
            }
        }
        let from = writer.kept_from() as usize;
        let (mut reader, _) = Reader::open(&dir, Stream::Stderr, 0).unwrap();
        assert_eq!(
            reader.position(),
            from as u64,
            "a dropped offset starts at the kept part"
        );
        assert_eq!(read_all(&mut reader), bytes(from, total - from));
    }

    #[test]
    fn a_reader_follows_the_writer_across_segments_and_a_removed_one_it_holds() {
        let scratch = Scratch::new();
        let dir = scratch.file("logs");
        fs::create_dir(&dir).unwrap();
        let segment = MIN_SEGMENT_BYTES as usize;
        let mut writer = Writer::open(&dir, Stream::Stdout, 2 * MIN_SEGMENT_BYTES).unwrap();
        // Past its end: nothing, until the writer gets there.
        let (mut ahead, _) = Reader::open(&dir, Stream::Stdout, 10).unwrap();
        let (mut reader, _) = Reader::open(&dir, Stream::Stdout, 0).unwrap();
        assert_eq!(read_all(&mut reader), Vec::<u8>::new());
        writer.write(&bytes(0, segment - 1)).unwrap();
        assert_eq!(read_all(&mut ahead), bytes(10, segment - 11));
        let mut buf = vec![0; 100];
        assert_eq!(reader.read(&mut buf).unwrap(), 100);
        // The reader holds the first segment while the writer fills the second and begins a
        // third, which removes the first.
        writer.write(&bytes(segment - 1, segment + 1)).unwrap();
        assert_eq!(writer.kept_from(), 0);
        writer.write(&bytes(2 * segment, segment)).unwrap();
        assert_eq!(writer.kept_from(), segment as u64);
        let rest = read_all(&mut reader);
        assert_eq!(rest, bytes(100, 3 * segment - 100));
    }

    #[test]
    fn a_writer_goes_on_after_what_a_previous_one_left() {
        let scratch = Scratch::new();
        let dir = scratch.file("logs");
        fs::create_dir(&dir).unwrap();
        let cap = 4 * MIN_SEGMENT_BYTES;
        let first = MIN_SEGMENT_BYTES as usize + 10;
        Writer::open(&dir, Stream::Stdout, cap)
            .unwrap()
            .write(&bytes(0, first))
            .unwrap();
        let mut again = Writer::open(&dir, Stream::Stdout, cap).unwrap();
        assert_eq!(again.written(), first as u64);
        again.write(&bytes(first, 500)).unwrap();
        let (mut reader, _) = Reader::open(&dir, Stream::Stdout, 0).unwrap();
        assert_eq!(read_all(&mut reader), bytes(0, first + 500));
        assert_eq!(
            starts(&dir, Stream::Stdout).unwrap(),
            [0, MIN_SEGMENT_BYTES],
            "the second segment was appended to, not begun again"
        );
    }

    #[test]
    fn only_a_stream_s_own_segment_names_count() {
        assert_eq!(
            segment_name(Stream::Stdout, 1638400),
            "stdout.00000000000001638400"
        );
        assert_eq!(
            segment_start(Stream::Stdout, "stdout.00000000000001638400"),
            Some(1638400)
        );
        for name in [
            "stderr.00000000000001638400",
            "stdout.1638400",
            "stdout.0000000000000163840x",
            "stdout",
            "stdout.new",
        ] {
            assert_eq!(segment_start(Stream::Stdout, name), None, "{name}");
        }
    }
}
