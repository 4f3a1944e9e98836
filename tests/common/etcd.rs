//! Real etcd for the tests of several queens: `hive_support`'s etcd (one member or a cluster on free
//! loopback ports, killed by a `Drop` guard) in a temporary directory of its own, whose members'
//! logs are printed when a test fails.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::thread;

use hive_support::workdir::WorkDir;

/// The etcd binary, looked for on the `PATH` (`scripts/test.sh` installs Debian's etcd-server).
const ETCD: &str = "etcd";

/// Lines of each member's log printed when a test fails.
const LOG_TAIL_LINES: usize = 15;

/// An etcd cluster started for one test; everything it offers is `hive_support`'s etcd, through
/// `Deref`.
pub struct Etcd {
    /// Dropped before `_dir`, so the members are gone before their directory.
    etcd: hive_support::etcd::Etcd,
    /// Held for its `Drop`, which removes the members' data and logs.
    _dir: WorkDir,
}

impl Etcd {
    /// A single member, ready to serve.
    pub fn single() -> Etcd {
        Etcd::cluster(1)
    }

    /// `size` members on loopback, ready to serve.
    pub fn cluster(size: usize) -> Etcd {
        let dir = WorkDir::create("hive-etcd").expect("etcd's temp dir");
        let etcd = hive_support::etcd::Etcd::cluster(Path::new(ETCD), dir.path(), "m", size)
            .unwrap_or_else(|why| panic!("{why}"));
        Etcd { etcd, _dir: dir }
    }
}

impl Deref for Etcd {
    type Target = hive_support::etcd::Etcd;

    fn deref(&self) -> &Self::Target {
        &self.etcd
    }
}

impl DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if thread::panicking() {
            for i in 0..self.etcd.size() {
                let log = self.etcd.log(i);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
                eprintln!("--- etcd member {i} log (last lines) ---\n{tail}");
            }
        }
    }
}
