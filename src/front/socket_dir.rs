//! The private directory that holds the Unix socket between the front and tiny_http.
//!
//! Only the front may reach tiny_http: anything that did would pass every limit of the front,
//! and could set the peer address the server believes. So the socket lives at a path in a
//! directory only this user can enter (mode 0700), not at an abstract address that any local user
//! could connect to. A larve killed with SIGKILL cannot remove its directory, so each directory
//! holds a lock file its larve keeps locked for life: a larve starting up removes the directories
//! whose lock it can take, since the kernel released those locks when their larves died.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Every such directory's name starts with this, in the system's temporary directory.
const PREFIX: &str = "hive-front-";

/// A directory younger than this is never swept: its larve may not have locked it yet.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);

/// A larve's socket directory, locked while the larve lives.
pub struct SocketDir {
    path: PathBuf,
    /// Held, never read: the lock lasts as long as the file is open.
    _lock: File,
}

impl SocketDir {
    /// Creates a new private directory (after removing those left by dead larves) and locks it.
    pub fn create() -> io::Result<SocketDir> {
        let parent = std::env::temp_dir();
        sweep(&parent);
        let path = parent.join(format!(
            "{PREFIX}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        DirBuilder::new().mode(0o700).create(&path)?;
        let lock = File::create(path.join("lock"))?;
        lock.try_lock().map_err(io::Error::other)?;
        Ok(SocketDir { path, _lock: lock })
    }

    /// Where the socket goes.
    pub fn socket(&self) -> PathBuf {
        self.path.join("http.sock")
    }
}

/// Removes the socket directories in `parent` whose larve is gone.
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let old_enough = entry.metadata().and_then(|m| m.modified()).is_ok_and(|at| {
            SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age >= SWEEP_MIN_AGE)
        });
        // Another user's directory cannot be opened, let alone removed: skipped.
        let abandoned = old_enough
            && File::open(entry.path().join("lock")).is_ok_and(|lock| lock.try_lock().is_ok());
        if abandoned {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_directory_is_private_and_locked_while_it_lives() {
        let dir = SocketDir::create().unwrap();
        let mode = fs::metadata(&dir.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let lock = File::open(dir.path.join("lock")).unwrap();
        assert!(lock.try_lock().is_err(), "held by its larve");
        let path = dir.path.clone();
        drop(dir);
        assert!(lock.try_lock().is_ok(), "free once the larve is gone");
        fs::remove_dir_all(path).unwrap();
    }
}
