//! The one seam under a queen's state: a versioned key-value engine, as etcd is one.
//!
//! Three operations cover everything Hive keeps (toydb's `storage::Engine` is the model):
//! - **range**: the keys in `[key, end)` and the store's revision they were read at;
//! - **txn**: compares, then writes if they all hold (or reads if not), atomically, at one new
//!   revision: a compare-and-write is how every queen changes shared state without a lock;
//! - **watch**: every change to a range of keys from a revision on, in the order they were made.
//!
//! Every write bumps the store's revision by one (a txn's writes share it); each key carries the
//! revision that created it and the one that last wrote it. [`crate::store::local`] keeps all of
//! this in the queen's memory, and with a data dir on her disk too ([`crate::store::data_dir`]);
//! [`crate::store::etcd`] is etcd behind the same trait. [`crate::store::conformance`] is the one
//! contract all three are checked against. Nothing here knows Hive's keys or records: the typed
//! views (`store::drones`, `store::tasks`) do.

use std::fmt;
use std::time::{Duration, Instant};

/// A key and its value as the engine holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the write that created the key; unique to this life of the key.
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
}

/// A condition a transaction checks before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// Holds if `key` was created at `revision` (0: it does not exist).
    Created { key: Vec<u8>, revision: i64 },
    /// Holds if `key` was last written at `revision` (0: it does not exist).
    Modified { key: Vec<u8>, revision: i64 },
}

/// One operation of a transaction's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `value` to `key`, attached to `lease` when it is not 0 (etcd only: see `election`).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    /// Delete `key`.
    Delete { key: Vec<u8> },
    /// Read `key` (its value goes to [`TxnResult::reads`]).
    Get { key: Vec<u8> },
}

/// A transaction: compares, then the `success` operations if they all hold, or the `failure` ones
/// if not. A transaction without compares always takes `success`: a batch of reads is atomic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Holds if `key` does not exist.
    pub fn if_absent(self, key: &[u8]) -> Txn {
        self.if_created_at(key, 0)
    }

    /// Holds if `key` exists and was created at `revision` (0: it does not exist).
    pub fn if_created_at(mut self, key: &[u8], revision: i64) -> Txn {
        self.compare.push(Compare::Created {
            key: key.to_vec(),
            revision,
        });
        self
    }

    /// Holds if `key` was last written at `revision` (0: it does not exist).
    pub fn if_modified_at(mut self, key: &[u8], revision: i64) -> Txn {
        self.compare.push(Compare::Modified {
            key: key.to_vec(),
            revision,
        });
        self
    }

    /// Then: write `value` to `key`.
    pub fn put(self, key: &[u8], value: &[u8]) -> Txn {
        self.put_on_lease(key, value, 0)
    }

    /// Then: write `value` to `key`, attached to `lease` (0: none).
    pub fn put_on_lease(mut self, key: &[u8], value: &[u8], lease: i64) -> Txn {
        self.success.push(Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        });
        self
    }

    /// Then: delete `key`.
    pub fn delete(mut self, key: &[u8]) -> Txn {
        self.success.push(Op::Delete { key: key.to_vec() });
        self
    }

    /// Then: read `key`.
    pub fn read(mut self, key: &[u8]) -> Txn {
        self.success.push(Op::Get { key: key.to_vec() });
        self
    }

    /// Otherwise: read `key`, so a retry starts from what is there now.
    pub fn or_read(mut self, key: &[u8]) -> Txn {
        self.failure.push(Op::Get { key: key.to_vec() });
        self
    }
}

/// How a transaction went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held and the `success` branch ran.
    pub succeeded: bool,
    /// The store's revision after it: the revision of its writes, if it made any.
    pub revision: i64,
    /// What each read of the branch taken found (`None`: the key does not exist), in order.
    pub reads: Vec<Option<Kv>>,
}

/// A change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    /// The key was deleted (by a delete or an expired lease) at `revision`.
    Delete {
        key: Vec<u8>,
        revision: i64,
    },
}

impl Event {
    /// The revision the change was made at.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// One message of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch is in place; changes follow.
    Created,
    /// Changes, oldest first.
    Events(Vec<Event>),
    /// The watch ended: its start revision had been compacted away (`compact_revision` is the
    /// oldest one left), or the engine cancelled it (0). Read everything again.
    Canceled { compact_revision: i64 },
    /// Nothing changed (a progress notice).
    Progress,
}

/// A watch, read one message at a time.
pub trait Watch: Send {
    /// The next message; `None` when the watch ended quietly (its lifetime passed): open a new one
    /// from where it stopped.
    fn next_message(&mut self) -> Result<Option<WatchMessage>, StoreError>;
}

/// Why a call to the engine failed. Each says what the caller can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached now (refused, timed out, no quorum): try again later.
    Unreachable(String),
    /// The store understood and refused the request: the same request will not work.
    Refused(String),
    /// The store answered something that is not what it sends: someone must look.
    Malformed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unreachable(why) => write!(f, "the store cannot be reached: {why}"),
            StoreError::Refused(why) => write!(f, "the store refused the request: {why}"),
            StoreError::Malformed(why) => {
                write!(f, "the store answered something unexpected: {why}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A versioned key-value store: a queen's memory (and data dir), or etcd.
pub trait Engine: Send + Sync {
    /// The keys from `key` up to, not including, `end` (none: just `key`), sorted by key, and the
    /// store's revision they were read at.
    fn range(&self, key: &[u8], end: Option<&[u8]>) -> Result<(Vec<Kv>, i64), StoreError>;

    /// Runs `txn` atomically, giving up at `deadline` when one is given.
    fn txn(&self, txn: &Txn, deadline: Option<Instant>) -> Result<TxnResult, StoreError>;

    /// Watches the keys from `key` up to `end` for changes made at `start_revision` or later, for
    /// up to `lifetime` (then the watch ends quietly and is opened again from where it stopped).
    fn watch(
        &self,
        key: &[u8],
        end: &[u8],
        start_revision: i64,
        lifetime: Duration,
    ) -> Result<Box<dyn Watch>, StoreError>;

    /// Most operations one transaction may hold in a branch (etcd's `--max-txn-ops`, 128 by
    /// default), so batches of writes are cut to fit.
    fn max_txn_ops(&self) -> usize;

    /// Largest transaction, in bytes of keys and values, the engine takes at once (etcd refuses
    /// requests over 1.5 MiB by default).
    fn max_txn_bytes(&self) -> usize;
}

/// The first key past every key that starts with `prefix`: the prefix with its last byte plus one.
/// Hive's prefixes end with `/`, so this never carries.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}
