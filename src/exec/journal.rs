//! The journal of the attempts that run: one file of lines, one appended when an attempt's command
//! has started (its `Record`; in a cgroup, when its cgroup is made, before the command starts) and
//! one when the attempt has ended. Only the drone's user may read or write it (mode 0600).
//!
//! A file per record cost as much to make and remove on ext4 as the attempt's directory; appending
//! a line costs a fraction of that. Each line is one write to a file opened for appending, so lines
//! from many threads never mix; the journal is rewritten with only the attempts that run when it
//! is opened and whenever it has grown by `MAX_JOURNAL_BYTES`, written aside and renamed over the
//! old one so that it is always one or the other whole. A line cut short when a drone died is
//! passed over.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use log::warn;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Past this many bytes appended, the journal is rewritten with only the attempts that run.
const MAX_JOURNAL_BYTES: u64 = 256 * 1024;

/// The journal file, and the one handle every line is appended through.
pub(super) struct Journal {
    pub(super) path: PathBuf,
    file: Mutex<JournalFile>,
}

struct JournalFile {
    /// Open for appending: each line is one write, whole, whatever other threads write.
    file: File,
    /// Bytes appended since the journal was last rewritten.
    grown: u64,
    /// A write failed partway: the next line starts on a line of its own.
    torn: bool,
}

/// Records by where their attempts live: shard and name.
pub(super) type Records = BTreeMap<(u64, String), Record>;

/// One line of the journal.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// The attempt's command runs.
    Started(Record),
    /// Nothing of the attempt at `shard` and `name` runs any more.
    Ended { shard: u64, name: String },
}

impl Journal {
    /// Opens the journal at `path`, made if missing, with the records of the attempts a previous
    /// run left: it is rewritten with only those, which also drops a line cut short when that
    /// run died.
    pub(super) fn open(path: PathBuf) -> io::Result<(Journal, Records)> {
        let lines = match fs::read(&path) {
            Ok(lines) => lines,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let records = records_left(&lines);
        let file = rewrite(&path, &records)?;
        let journal = Journal {
            path,
            file: Mutex::new(file),
        };
        Ok((journal, records))
    }

    pub(super) fn started(&self, record: Record) -> io::Result<()> {
        self.append(&Entry::Started(record))
    }

    pub(super) fn ended(&self, shard: u64, name: &str) -> io::Result<()> {
        let name = name.to_owned();
        self.append(&Entry::Ended { shard, name })
    }

    fn append(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut journal = self.file.lock();
        if journal.torn {
            line.insert(0, b'\n');
        }
        journal.torn = true;
        journal.file.write_all(&line)?;
        journal.torn = false;
        journal.grown += line.len() as u64;
        if journal.grown > MAX_JOURNAL_BYTES {
            let rewritten =
                fs::read(&self.path).and_then(|lines| rewrite(&self.path, &records_left(&lines)));
            match rewritten {
                Ok(file) => *journal = file,
                Err(e) => {
                    // The line is written; the journal is only longer than it need be.
                    journal.grown = 0;
                    warn!("could not rewrite {}: {e}", self.path.display());
                }
            }
        }
        Ok(())
    }
}

/// The records a journal's lines leave: every attempt that started and has not ended. A line
/// that is not a whole entry (one cut short when a drone died) is passed over.
pub(super) fn records_left(lines: &[u8]) -> Records {
    let mut records = BTreeMap::new();
    for line in lines.split(|&byte| byte == b'\n') {
        match serde_json::from_slice(line) {
            Ok(Entry::Started(record)) => {
                records.insert((record.shard, record.name.clone()), record);
            }
            Ok(Entry::Ended { shard, name }) => {
                records.remove(&(shard, name));
            }
            Err(_) => {}
        }
    }
    records
}

/// Replaces the journal at `path` with one of `records` (written aside, then renamed over it, so
/// it is the old one or the new one whole), open for appending.
fn rewrite(path: &Path, records: &Records) -> io::Result<JournalFile> {
    let mut lines = Vec::new();
    for record in records.values() {
        serde_json::to_writer(&mut lines, &Entry::Started(record.clone()))?;
        lines.push(b'\n');
    }
    replace_file(path, &lines)?;
    Ok(JournalFile {
        file: File::options().append(true).open(path)?,
        grown: 0,
        torn: false,
    })
}

/// What the journal records of an attempt while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    /// Where its directory is.
    pub(super) shard: u64,
    pub(super) name: String,
    pub(super) task: String,
    pub(super) attempt: u32,
    /// The group's id: its leader's pid; 0 for an attempt held by a cgroup, which is recorded
    /// before its command starts.
    #[serde(default)]
    pub(super) process_group: i32,
    /// When the leader started, in clock ticks since boot: tells it from a later process that
    /// got the same pid.
    #[serde(default)]
    pub(super) start_ticks: u64,
    /// The leader's session; what the attempt's processes are in (they are the drone's).
    #[serde(default)]
    pub(super) session: i32,
    pub(super) boot_id: String,
    /// The attempt's cgroups, the v2 one first; none for an attempt held by its process group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) cgroups: Vec<PathBuf>,
}

/// Replaces the file at `path` with `bytes` (mode 0600): written aside and renamed over the old
/// one, so that whoever reads it finds one or the other whole, never a part.
pub(super) fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let aside = path.with_extension("new");
    let _ = fs::remove_file(&aside);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)?
        .write_all(bytes)?;
    fs::rename(&aside, path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_what_runs_and_stays_small() {
        let scratch = crate::exec::tests::Scratch::new();
        let path = scratch.file("journal");
        let (journal, left) = Journal::open(path.clone()).unwrap();
        assert!(left.is_empty());
        let numbered = |n: u64| Record {
            shard: n % 7,
            name: format!("t1.1.{n}"),
            ..record()
        };
        journal.started(numbered(0)).unwrap();
        // Thousands of attempts start and end: the journal is rewritten as it grows, and the one
        // that still runs is in every rewrite.
        for n in 1..5000 {
            journal.started(numbered(n)).unwrap();
            journal.ended(n % 7, &format!("t1.1.{n}")).unwrap();
        }
        let size = fs::metadata(&path).unwrap().len();
        assert!(size <= MAX_JOURNAL_BYTES + 1024, "{size} bytes");
        drop(journal);
        let (_, left) = Journal::open(path).unwrap();
        assert_eq!(left.into_values().collect::<Vec<_>>(), [numbered(0)]);
    }

    #[test]
    fn a_journal_line_cut_short_is_passed_over() {
        let (running, ended) = (
            record(),
            Record {
                name: "t1.1.7".into(),
                ..record()
            },
        );
        let mut lines = Vec::new();
        let entries = [
            Entry::Started(running.clone()),
            Entry::Started(ended.clone()),
            Entry::Ended {
                shard: ended.shard,
                name: ended.name,
            },
        ];
        for entry in &entries {
            serde_json::to_writer(&mut lines, entry).unwrap();
            lines.push(b'\n');
        }
        lines.extend_from_slice(b"{\"ended\":{\"sha");
        let left = records_left(&lines);
        assert_eq!(left.into_values().collect::<Vec<_>>(), [running]);
    }

    /// A record as tests use it.
    pub(crate) fn record() -> Record {
        Record {
            shard: 1,
            name: "t1.1.1".into(),
            task: "t1".into(),
            attempt: 1,
            process_group: 100,
            start_ticks: 5000,
            session: 7,
            boot_id: "boot".into(),
            cgroups: Vec::new(),
        }
    }
}
