//! The engine of a queen alone: a versioned key-value map in her memory that keeps revisions,
//! transactions and watches exactly as etcd does, so one code path serves both (see `engine.rs`).
//!
//! Every write bumps the revision; a transaction's writes share one. Recent changes are kept in a
//! bounded history for watches: a watch that falls further behind than the history reaches is
//! cancelled as etcd cancels one whose start revision was compacted, and its reader lists again.
//! Values are shared (`Arc`) between the map and the history, so keeping history costs only the
//! values that were since overwritten.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::engine::{
    Compare, Engine, Event, Kv, Op, StoreError, Txn, TxnResult, Watch, WatchMessage,
};

/// Changes kept for watches, at most: enough for a watcher that is a few seconds behind under the
/// heaviest write load (tens of thousands of writes a second).
const HISTORY_EVENTS: usize = 100_000;

/// Changes one watch message carries at most.
const EVENTS_PER_MESSAGE: usize = 1024;

/// The whole store: the map, the revision and the recent history, under one lock held only for
/// map operations. Watches share it.
#[derive(Default)]
pub struct Memory {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// Woken at every write, for watches waiting for changes.
    written: Condvar,
}

struct Inner {
    data: BTreeMap<Vec<u8>, Arc<Kv>>,
    /// The revision of the last write; etcd starts an empty store at 1.
    revision: i64,
    /// Recent changes, oldest first.
    history: VecDeque<Change>,
    /// The oldest revision a watch may start at: older changes are gone from the history.
    oldest: i64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            data: BTreeMap::new(),
            revision: 1,
            history: VecDeque::new(),
            oldest: 2,
        }
    }
}

/// One change in the history.
#[derive(Clone)]
enum Change {
    Put(Arc<Kv>),
    Delete { key: Vec<u8>, revision: i64 },
}

impl Change {
    fn key(&self) -> &[u8] {
        match self {
            Change::Put(kv) => &kv.key,
            Change::Delete { key, .. } => key,
        }
    }

    fn revision(&self) -> i64 {
        match self {
            Change::Put(kv) => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }

    fn event(&self) -> Event {
        match self {
            Change::Put(kv) => Event::Put(Kv::clone(kv)),
            Change::Delete { key, revision } => Event::Delete {
                key: key.clone(),
                revision: *revision,
            },
        }
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }
}

impl Inner {
    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::Created { key, revision } => {
                self.data.get(key).map_or(0, |kv| kv.create_revision) == *revision
            }
            Compare::Modified { key, revision } => {
                self.data.get(key).map_or(0, |kv| kv.mod_revision) == *revision
            }
        }
    }

    fn remember(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > HISTORY_EVENTS {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest = dropped.revision() + 1;
            }
        }
    }

    /// Runs one branch; every write in it is made at `revision`.
    fn run(&mut self, ops: &[Op], revision: i64) -> Vec<Option<Kv>> {
        let mut reads = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    let create_revision =
                        self.data.get(key).map_or(revision, |kv| kv.create_revision);
                    let kv = Arc::new(Kv {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    });
                    self.data.insert(key.clone(), kv.clone());
                    self.remember(Change::Put(kv));
                }
                Op::Delete { key } => {
                    if self.data.remove(key).is_some() {
                        self.remember(Change::Delete {
                            key: key.clone(),
                            revision,
                        });
                    }
                }
                Op::Get { key } => reads.push(self.data.get(key).map(|kv| Kv::clone(kv))),
            }
        }
        reads
    }
}

fn writes(ops: &[Op]) -> bool {
    ops.iter().any(|op| !matches!(op, Op::Get { .. }))
}

impl Engine for Memory {
    fn range(&self, key: &[u8], end: Option<&[u8]>) -> Result<(Vec<Kv>, i64), StoreError> {
        let inner = self.shared.inner.lock();
        let kvs = match end {
            None => inner
                .data
                .get(key)
                .map(|kv| Kv::clone(kv))
                .into_iter()
                .collect(),
            Some(end) if end > key => inner
                .data
                .range(key.to_vec()..end.to_vec())
                .map(|(_, kv)| Kv::clone(kv))
                .collect(),
            Some(_) => Vec::new(),
        };
        Ok((kvs, inner.revision))
    }

    fn txn(&self, txn: &Txn, _deadline: Option<Instant>) -> Result<TxnResult, StoreError> {
        let mut inner = self.shared.inner.lock();
        let succeeded = txn.compare.iter().all(|compare| inner.holds(compare));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let revision = if writes(branch) {
            inner.revision + 1
        } else {
            inner.revision
        };
        let reads = inner.run(branch, revision);
        let wrote = revision != inner.revision;
        inner.revision = revision;
        drop(inner);
        if wrote {
            self.shared.written.notify_all();
        }
        Ok(TxnResult {
            succeeded,
            revision,
            reads,
        })
    }

    fn watch(
        &self,
        key: &[u8],
        end: &[u8],
        start_revision: i64,
        lifetime: Duration,
    ) -> Result<Box<dyn Watch>, StoreError> {
        Ok(Box::new(MemoryWatch {
            shared: self.shared.clone(),
            key: key.to_vec(),
            end: end.to_vec(),
            next: start_revision,
            created: false,
            until: Instant::now() + lifetime,
        }))
    }

    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }

    fn max_txn_bytes(&self) -> usize {
        usize::MAX
    }
}

/// A watch on the memory engine: reads the history from `next` on.
struct MemoryWatch {
    shared: Arc<Shared>,
    key: Vec<u8>,
    end: Vec<u8>,
    /// The revision of the first change not yet reported.
    next: i64,
    /// Whether `Created` was reported.
    created: bool,
    /// When the watch ends quietly.
    until: Instant,
}

impl Watch for MemoryWatch {
    fn next_message(&mut self) -> Result<Option<WatchMessage>, StoreError> {
        if !self.created {
            self.created = true;
            return Ok(Some(WatchMessage::Created));
        }
        let mut inner = self.shared.inner.lock();
        loop {
            if self.next < inner.oldest {
                return Ok(Some(WatchMessage::Canceled {
                    compact_revision: inner.oldest,
                }));
            }
            if self.next <= inner.revision {
                // The history is in revision order: start at the first change at `next`, and stop
                // between two revisions once a message is full, never inside one.
                let skip = inner
                    .history
                    .partition_point(|change| change.revision() < self.next);
                let mut events = Vec::new();
                let mut next = inner.revision + 1;
                for change in inner.history.range(skip..) {
                    if events.len() >= EVENTS_PER_MESSAGE && change.revision() >= next {
                        break;
                    }
                    let key = change.key();
                    if key >= self.key.as_slice() && key < self.end.as_slice() {
                        events.push(change.event());
                    }
                    next = change.revision() + 1;
                }
                self.next = next;
                if !events.is_empty() {
                    return Ok(Some(WatchMessage::Events(events)));
                }
                self.next = inner.revision + 1;
                continue;
            }
            if self
                .shared
                .written
                .wait_until(&mut inner, self.until)
                .timed_out()
            {
                return Ok(None);
            }
        }
    }
}
