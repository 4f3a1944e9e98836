//! A queen's data dir (`--data-dir`): the durable engine's file, and the lock that keeps it one
//! queen's.
//!
//! | file          | what it is                                                                  |
//! |---------------|-----------------------------------------------------------------------------|
//! | `lock`        | held (`flock`) by the queen using the dir, for her whole life; her pid in it |
//! | `hive.db`     | SQLite: every key with its revisions, and the store's revision              |
//! | `hive.db-wal`, `hive.db-shm` | SQLite's write-ahead log and its index                       |
//!
//! Every transaction of the engine is one SQLite transaction, committed with `synchronous=FULL` in
//! WAL mode: the commit returns once the log is synced to the disk, so a change the queen has
//! answered for survives a `kill -9` and a power cut alike. The file says what it is in its
//! header (SQLite's application id, "HIVE", and the format's version in its user version), written
//! in the same transaction as its tables, so a file is either a whole Hive store or none.
//!
//! Opening checks everything before the queen serves, and refuses rather than guesses: a dir that
//! cannot be written, one another queen holds, one holding something else, a file of another
//! format or a newer one, and a damaged file (SQLite's own check, then every row read back). A
//! damaged file is never reset: the error says how to salvage it (docs/design/store.md).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use super::engine::{Kv, StoreError};
use super::local::{Keeper, Kept, Mutation};

/// The SQLite file in the dir.
const DB_FILE: &str = "hive.db";

/// The lock file in the dir.
const LOCK_FILE: &str = "lock";

/// What may be in a data dir besides the store: SQLite's files beside it, and what `mkfs` leaves
/// at the top of a new file system.
const OURS: [&str; 5] = [
    LOCK_FILE,
    DB_FILE,
    "hive.db-wal",
    "hive.db-shm",
    "lost+found",
];

/// SQLite's application id of a Hive store: "HIVE" in ASCII.
const APPLICATION_ID: i32 = 0x4849_5645;

/// The version of the store's layout (its tables), in SQLite's user version. A larve opens only
/// the versions it knows.
const FORMAT_VERSION: i32 = 1;

/// How long SQLite waits for its own lock: never, since the dir's lock makes the queen its only
/// user (a `sqlite3` shell reading it meanwhile holds it only for moments).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How much of SQLite's check an error quotes.
const MAX_CHECK_CHARS: usize = 200;

/// The first bytes of every SQLite file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The tables of format 1: every key with its revisions, and the store's revision.
const SCHEMA: &str = "
    CREATE TABLE kv (
        key BLOB PRIMARY KEY,
        value BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision INTEGER NOT NULL
    );
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (name, value) VALUES ('revision', 1);
";

const PUT: &str =
    "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (key) DO UPDATE SET value = ?2, create_revision = ?3, mod_revision = ?4";
const DELETE: &str = "DELETE FROM kv WHERE key = ?1";
const SET_REVISION: &str = "UPDATE meta SET value = ?1 WHERE name = 'revision'";

/// A data dir in use: its lock, held until the process ends, and its store.
pub struct DataDir {
    path: PathBuf,
    /// Held for its `flock`, which the kernel drops when the process ends, however it ends.
    _lock: File,
    /// The one connection. Only the engine's writer, one at a time, takes it (see `local.rs`), so
    /// a sync under it stops no reader.
    db: Mutex<Connection>,
}

/// Why a data dir cannot be used. Each says the path and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirError(pub String);

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl DataDir {
    /// Opens the data dir at `path` (making it if it does not exist) and reads everything in it.
    pub fn open(path: &Path) -> Result<(DataDir, Kept), DataDirError> {
        let shown = path.display();
        if path.exists() && !path.is_dir() {
            return Err(DataDirError(format!("--data-dir {shown}: not a directory")));
        }
        fs::create_dir_all(path).map_err(|e| {
            DataDirError(format!(
                "--data-dir {shown}: cannot create the directory: {e}"
            ))
        })?;
        let lock = lock(path)?;
        let db_path = path.join(DB_FILE);
        let fresh = !db_path.exists();
        if fresh {
            refuse_foreign_files(path)?;
        } else {
            refuse_other_formats(&db_path)?;
        }
        let db = connect(&db_path).map_err(|why| damaged(&db_path, &why))?;
        check_format(&db, &db_path)?;
        let kept = load(&db).map_err(|why| damaged(&db_path, &why))?;
        Ok((
            DataDir {
                path: path.to_path_buf(),
                _lock: lock,
                db: Mutex::new(db),
            },
            kept,
        ))
    }
}

impl Keeper for DataDir {
    fn keep(&self, revision: i64, mutations: &[Mutation]) -> Result<(), StoreError> {
        let mut db = self.db.lock();
        let kept = (|| -> rusqlite::Result<()> {
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut put = tx.prepare_cached(PUT)?;
                let mut delete = tx.prepare_cached(DELETE)?;
                for mutation in mutations {
                    match mutation {
                        Mutation::Put(kv) => {
                            put.execute(params![
                                kv.key,
                                kv.value,
                                kv.create_revision,
                                kv.mod_revision
                            ])?;
                        }
                        Mutation::Delete { key, .. } => {
                            delete.execute(params![key])?;
                        }
                    }
                }
                tx.prepare_cached(SET_REVISION)?
                    .execute(params![revision])?;
            }
            tx.commit()
        })();
        kept.map_err(|e| {
            let why = format!(
                "the data dir {} cannot be written: {e}",
                self.path.display()
            );
            match e.sqlite_error_code() {
                // Full, or failing underneath: worth trying again once someone made room.
                Some(
                    ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen,
                ) => StoreError::Unreachable(why),
                _ => StoreError::Refused(why),
            }
        })
    }
}

/// Takes the dir's lock for the life of the process, or says who holds it.
fn lock(dir: &Path) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            DataDirError(format!(
                "--data-dir {}: cannot write in it: {e}",
                dir.display()
            ))
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(DataDirError(format!(
                "--data-dir {}: cannot lock {}: {error}",
                dir.display(),
                path.display()
            )));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let who = if holder.is_empty() {
            "another process".to_string()
        } else {
            format!("the process {holder}")
        };
        return Err(DataDirError(format!(
            "--data-dir {}: in use by another queen ({who} holds {}); stop it first, or give another directory",
            dir.display(),
            path.display()
        )));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "pid {}", std::process::id()));
    written.map_err(|e| {
        DataDirError(format!(
            "--data-dir {}: cannot write in it: {e}",
            dir.display()
        ))
    })?;
    Ok(file)
}

/// A dir without a store must hold nothing else: a mistyped path to some other program's data
/// is refused, not filled.
fn refuse_foreign_files(dir: &Path) -> Result<(), DataDirError> {
    let mut foreign: Vec<String> = fs::read_dir(dir)
        .map_err(|e| DataDirError(format!("--data-dir {}: cannot read it: {e}", dir.display())))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            (!OURS.contains(&name.as_str())).then_some(name)
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    foreign.truncate(5);
    Err(DataDirError(format!(
        "--data-dir {}: holds files that are not a Hive store ({}); give an empty or new directory",
        dir.display(),
        foreign.join(", ")
    )))
}

/// `hive.db` must be a SQLite file: anything else there is another program's, or a mistake.
fn refuse_other_formats(db_path: &Path) -> Result<(), DataDirError> {
    let mut head = [0u8; 16];
    let read = File::open(db_path).and_then(|mut file| {
        let mut got = 0;
        while got < head.len() {
            match file.read(&mut head[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    });
    match read {
        // An empty file: SQLite made it and died before its first page; it holds nothing.
        Ok(0) => Ok(()),
        Ok(_) if &head == SQLITE_MAGIC => Ok(()),
        Ok(_) => Err(DataDirError(format!(
            "--data-dir {}: {} is not a SQLite file, so not a Hive store (another format?); give another directory",
            db_path.parent().unwrap_or(db_path).display(),
            db_path.display()
        ))),
        Err(e) => Err(DataDirError(format!(
            "--data-dir {}: cannot read {}: {e}",
            db_path.parent().unwrap_or(db_path).display(),
            db_path.display()
        ))),
    }
}

/// The connection, in WAL mode with every commit synced.
fn connect(db_path: &Path) -> Result<Connection, String> {
    let db = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    db.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    let mode: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite kept journal mode {mode} rather than WAL"));
    }
    db.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| e.to_string())?;
    Ok(db)
}

/// Checks the file's header says it is a Hive store SQLite can read whole, making a new one
/// (tables and header in one transaction) in a file that has neither.
fn check_format(db: &Connection, db_path: &Path) -> Result<(), DataDirError> {
    let dir = db_path.parent().unwrap_or(db_path).display();
    let header = |name: &str| -> Result<i32, DataDirError> {
        db.pragma_query_value(None, name, |row| row.get(0))
            .map_err(|e| damaged(db_path, &e.to_string()))
    };
    let (application_id, version) = (header("application_id")?, header("user_version")?);
    let tables: i64 = db
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(|e| damaged(db_path, &e.to_string()))?;
    if application_id == 0 && tables == 0 {
        // New, or made by SQLite just before a crash that came before its tables.
        let made = db.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {FORMAT_VERSION}; COMMIT;"
        ));
        return made.map_err(|e| {
            DataDirError(format!(
                "--data-dir {dir}: cannot make a new store in {}: {e}",
                db_path.display()
            ))
        });
    }
    if application_id != APPLICATION_ID {
        return Err(DataDirError(format!(
            "--data-dir {dir}: {} is another program's SQLite database (application id {application_id:#x}), not a Hive store; give another directory",
            db_path.display()
        )));
    }
    if version != FORMAT_VERSION {
        return Err(DataDirError(format!(
            "--data-dir {dir}: {} is a Hive store of format {version}, and this larve reads format {FORMAT_VERSION} only; run the larve that wrote it",
            db_path.display()
        )));
    }
    let check: String = db
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| damaged(db_path, &e.to_string()))?;
    if check != "ok" {
        // Its first findings are enough to say what is wrong; the full list can be long.
        let first: String = check.lines().collect::<Vec<_>>().join("; ");
        let first: String = first.chars().take(MAX_CHECK_CHARS).collect();
        return Err(damaged(db_path, &format!("SQLite's check says: {first}")));
    }
    Ok(())
}

/// Every key and the store's revision; a row that breaks the store's rules means damage.
fn load(db: &Connection) -> Result<Kept, String> {
    let revision: i64 = db
        .query_row(
            "SELECT value FROM meta WHERE name = 'revision'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| format!("no revision: {e}"))?;
    let mut select = db
        .prepare("SELECT key, value, create_revision, mod_revision FROM kv")
        .map_err(|e| e.to_string())?;
    let rows = select
        .query_map([], |row| {
            Ok(Kv {
                key: row.get(0)?,
                value: row.get(1)?,
                create_revision: row.get(2)?,
                mod_revision: row.get(3)?,
            })
        })
        .map_err(|e| e.to_string())?;
    let mut kvs = Vec::new();
    for kv in rows {
        let kv = kv.map_err(|e| e.to_string())?;
        if !(0 < kv.create_revision
            && kv.create_revision <= kv.mod_revision
            && kv.mod_revision <= revision)
        {
            return Err(format!(
                "key {} has revisions {} and {}, beyond the store's {revision}",
                String::from_utf8_lossy(&kv.key),
                kv.create_revision,
                kv.mod_revision
            ));
        }
        kvs.push(kv);
    }
    Ok(Kept { kvs, revision })
}

/// A damaged store, and how to get out of it: never by resetting it.
fn damaged(db_path: &Path, why: &str) -> DataDirError {
    let dir = db_path.parent().unwrap_or(db_path).display();
    DataDirError(format!(
        "--data-dir {dir}: the store {} is damaged ({why}); the queen will not start on it, and never resets it. \
         Keep a copy of the dir, then either salvage what SQLite can still read into a new dir \
         (see \"A damaged store\" in docs/design/store.md) and start on that, or start on an empty \
         --data-dir (the drones register again; the tasks are lost)",
        db_path.display()
    ))
}

/// Directories for the unit tests of the engines, removed when dropped.
#[cfg(test)]
pub(crate) mod scratch {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Scratch(PathBuf);

    impl Scratch {
        /// A new, empty directory named for `test`.
        pub fn new(test: &str) -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("hive-store-{test}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("a scratch dir");
            Scratch(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scratch::Scratch;
    use super::*;

    fn refused(path: &Path) -> String {
        match DataDir::open(path) {
            Ok(_) => panic!("{} was taken", path.display()),
            Err(DataDirError(why)) => why,
        }
    }

    #[test]
    fn a_dir_is_one_queen_s_while_she_lives() {
        let dir = Scratch::new("locked");
        let (first, _) = DataDir::open(dir.path()).unwrap();
        let why = refused(dir.path());
        assert!(
            why.contains("in use by another queen")
                && why.contains(&format!("pid {}", std::process::id()))
                && why.contains(&dir.path().display().to_string()),
            "{why}"
        );
        drop(first);
        assert!(DataDir::open(dir.path()).is_ok(), "free once she is gone");
    }

    #[test]
    fn a_new_dir_is_made_and_a_dir_holding_other_things_is_refused() {
        let dir = Scratch::new("new");
        let inside = dir.path().join("a/b");
        let (_, kept) = DataDir::open(&inside).unwrap();
        assert_eq!((kept.kvs.len(), kept.revision), (0, 1));

        let other = Scratch::new("other");
        std::fs::create_dir(other.path().join("member")).unwrap();
        let why = refused(other.path());
        assert!(why.contains("not a Hive store (member)"), "{why}");

        let file = other.path().join("member/file");
        std::fs::write(&file, b"x").unwrap();
        assert!(refused(&file).contains("not a directory"));
    }

    #[test]
    fn a_file_of_another_format_or_version_is_refused() {
        let dir = Scratch::new("format");
        std::fs::write(dir.path().join(DB_FILE), b"{\"not\": \"sqlite\"}").unwrap();
        let why = refused(dir.path());
        assert!(why.contains("is not a SQLite file"), "{why}");

        let other = Scratch::new("other-app");
        let db = Connection::open(other.path().join(DB_FILE)).unwrap();
        db.execute_batch("CREATE TABLE t (x); PRAGMA application_id = 42;")
            .unwrap();
        drop(db);
        let why = refused(other.path());
        assert!(why.contains("another program's SQLite database"), "{why}");

        let newer = Scratch::new("newer");
        drop(DataDir::open(newer.path()).unwrap());
        let db = Connection::open(newer.path().join(DB_FILE)).unwrap();
        db.execute_batch("PRAGMA user_version = 2;").unwrap();
        drop(db);
        let why = refused(newer.path());
        assert!(why.contains("format 2"), "{why}");
    }

    #[test]
    fn a_damaged_store_is_refused_never_reset() {
        let dir = Scratch::new("damaged");
        {
            let (keeper, _) = DataDir::open(dir.path()).unwrap();
            let kv = Kv {
                key: b"/hive/tasks/t".to_vec(),
                value: vec![b'x'; 64 * 1024],
                create_revision: 2,
                mod_revision: 2,
            };
            keeper
                .keep(2, &[Mutation::Put(std::sync::Arc::new(kv))])
                .unwrap();
        }
        // Scribble over the pages after the first (the header stays a Hive store's).
        let path = dir.path().join(DB_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        assert!(len > 8192, "the store was checkpointed into its file");
        for byte in &mut bytes[4096..len] {
            *byte = 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let why = refused(dir.path());
        assert!(
            why.contains("is damaged") && why.contains("never resets it"),
            "{why}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the damaged file is left as it was"
        );
    }

    #[test]
    fn rows_that_break_the_store_s_rules_are_damage() {
        let dir = Scratch::new("rules");
        drop(DataDir::open(dir.path()).unwrap());
        let db = Connection::open(dir.path().join(DB_FILE)).unwrap();
        db.execute(
            "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (x'61', x'62', 5, 9)",
            [],
        )
        .unwrap();
        drop(db);
        let why = refused(dir.path());
        assert!(why.contains("beyond the store's 1"), "{why}");
    }
}
