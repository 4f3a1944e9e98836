//! Real etcd for the tests of several queens: `hive_support`'s etcd (one member or a cluster on free
//! loopback ports, killed by a `Drop` guard) in a temporary directory of its own, whose members'
//! logs are printed when a test fails; plain, or serving its clients over mutual TLS.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::thread;

use hive_support::etcd::ServerTls;
use hive_support::workdir::WorkDir;

use super::tls::{Identity, Pki};

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
    /// With TLS: the CA, and the certificate a queen shows etcd.
    tls: Option<(PathBuf, Identity)>,
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
        Etcd {
            etcd,
            _dir: dir,
            tls: None,
        }
    }

    /// A single member that serves clients over TLS with a certificate from `pki`, and takes only
    /// clients with one from `pki` (as etcd's `--client-cert-auth` does).
    pub fn single_tls(pki: &Pki) -> Etcd {
        let server = pki.issue("etcd-server");
        let tls = ServerTls {
            ca: pki.ca(),
            cert: server.cert,
            key: server.key,
        };
        let dir = WorkDir::create("hive-etcd").expect("etcd's temp dir");
        let etcd = hive_support::etcd::Etcd::cluster_tls(Path::new(ETCD), dir.path(), "m", 1, tls)
            .unwrap_or_else(|why| panic!("{why}"));
        Etcd {
            etcd,
            _dir: dir,
            tls: Some((pki.ca(), pki.issue("etcd-client"))),
        }
    }

    /// What a queen adds to reach a TLS etcd: `--etcd-ca`, `--etcd-cert`, `--etcd-key`.
    pub fn tls_flags(&self) -> Vec<String> {
        let (ca, client) = self.tls.as_ref().expect("an etcd with TLS");
        vec![
            "--etcd-ca".into(),
            ca.display().to_string(),
            "--etcd-cert".into(),
            client.cert.display().to_string(),
            "--etcd-key".into(),
            client.key.display().to_string(),
        ]
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
