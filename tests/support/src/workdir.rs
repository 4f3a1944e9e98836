//! A temporary directory for what processes leave behind (logs, stdout, etcd's data), removed when
//! its guard is dropped unless it was kept for a look at what went wrong.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Result;

/// Directories made by this process so far, so each one's name is new.
static CREATED: AtomicUsize = AtomicUsize::new(0);

/// A directory of its own under the system's temporary directory; removed when dropped unless kept.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `PREFIX-PID-N`: the process id keeps runs apart, N the directories of one run.
    pub fn create(prefix: &str) -> Result<WorkDir> {
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        // A directory left by an earlier process with the same id would mix its files with ours.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the guard is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_removed_unless_kept() {
        let gone = WorkDir::create("hive-support-test").expect("a directory");
        let kept = {
            let mut kept = WorkDir::create("hive-support-test").expect("a directory");
            assert_ne!(gone.path(), kept.path());
            fs::write(kept.path().join("log"), "a line").expect("a file");
            kept.keep();
            kept.path().to_path_buf()
        };
        assert!(kept.join("log").is_file());
        let gone_path = gone.path().to_path_buf();
        drop(gone);
        assert!(!gone_path.exists());
        fs::remove_dir_all(kept).expect("remove the kept directory");
    }
}
