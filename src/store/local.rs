//! The engine of a queen alone: a versioned key-value map in her memory that keeps revisions,
//! transactions and watches exactly as etcd does, so one code path serves both (see `engine.rs`).
//! Given a [`Keeper`] (the data dir's file, `store/data_dir.rs`), every transaction is written
//! through to it before it is applied: that is the durable engine; without one, the memory engine.
//!
//! Every write bumps the revision; a transaction's writes share one. Recent changes are kept in a
//! bounded history for watches: a watch that falls further behind than the history reaches is
//! cancelled as etcd cancels one whose start revision was compacted, and its reader lists again.
//! A durable engine opened again starts with an empty history at the revision it had, so a watch
//! from before the restart is cancelled the same way. Values are shared (`Arc`) between the map
//! and the history, so keeping history costs only the values that were since overwritten.
//!
//! A transaction is decided and applied in two short holds of the map's lock, with the keeper's
//! write (a disk sync) between them and no lock but the writers' turn held across it: readers and
//! watches go on meanwhile, seeing the map as it was until the write is durable, so nobody sees a
//! change a crash could still take back. Writers take turns, so what a transaction decided still
//! holds when it is applied; the group commit (`batch.rs`) is what lets many callers share a turn.

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

/// One key's change, made by a transaction at its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Put(Arc<Kv>),
    Delete { key: Vec<u8>, revision: i64 },
}

impl Mutation {
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put(kv) => &kv.key,
            Mutation::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> i64 {
        match self {
            Mutation::Put(kv) => kv.mod_revision,
            Mutation::Delete { revision, .. } => *revision,
        }
    }

    fn event(&self) -> Event {
        match self {
            Mutation::Put(kv) => Event::Put(Kv::clone(kv)),
            Mutation::Delete { key, revision } => Event::Delete {
                key: key.clone(),
                revision: *revision,
            },
        }
    }
}

/// Where a local engine keeps its transactions beyond the process.
pub trait Keeper: Send + Sync {
    /// Makes `mutations`, all made at `revision`, durable together, or none of them. Called by one
    /// writer at a time, in revision order.
    fn keep(&self, revision: i64, mutations: &[Mutation]) -> Result<(), StoreError>;
}

/// What a keeper held when it was opened: every key, and the revision of the last write.
#[derive(Debug, Default)]
pub struct Kept {
    pub kvs: Vec<Kv>,
    pub revision: i64,
}

/// The map, its revision and recent history, under one lock held only for map operations;
/// watches share it. Optionally written through to a keeper.
pub struct Local {
    shared: Arc<Shared>,
    keeper: Option<Box<dyn Keeper>>,
    /// Held by the transaction being decided, kept and applied: one at a time.
    writing: Mutex<()>,
}

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
    history: VecDeque<Mutation>,
    /// The oldest revision a watch may start at: older changes are gone from the history.
    oldest: i64,
}

/// What a transaction does, decided on the map as it is: applied as a whole once kept.
struct Decision {
    succeeded: bool,
    revision: i64,
    reads: Vec<Option<Kv>>,
    mutations: Vec<Mutation>,
}

impl Local {
    /// The memory engine: everything is lost with the process.
    pub fn in_memory() -> Local {
        Local::from_kept(Kept::default(), None)
    }

    /// The durable engine: what `keeper` held when it was opened, and every transaction written
    /// through to it before it is applied.
    pub fn kept_by(kept: Kept, keeper: Box<dyn Keeper>) -> Local {
        Local::from_kept(kept, Some(keeper))
    }

    fn from_kept(kept: Kept, keeper: Option<Box<dyn Keeper>>) -> Local {
        // etcd starts an empty store at revision 1.
        let revision = kept.revision.max(1);
        let data = kept
            .kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), Arc::new(kv)))
            .collect();
        Local {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    data,
                    revision,
                    history: VecDeque::new(),
                    oldest: revision + 1,
                }),
                written: Condvar::new(),
            }),
            keeper,
            writing: Mutex::new(()),
        }
    }
}

impl Local {
    /// Forgets the changes made before `revision`, as etcd's compaction does: a watch from an
    /// older revision is cancelled, and its reader lists again. The engine does this by itself
    /// to bound its history; an engine opened on a data dir starts with none.
    pub fn compact(&self, revision: i64) {
        self.shared.inner.lock().compact(revision);
    }
}

impl Inner {
    /// What `key` holds, counting the writes `decided` so far (`Some(None)`: deleted there).
    fn current<'a>(
        &'a self,
        decided: &'a BTreeMap<&[u8], Option<Arc<Kv>>>,
        key: &[u8],
    ) -> Option<&'a Arc<Kv>> {
        match decided.get(key) {
            Some(now) => now.as_ref(),
            None => self.data.get(key),
        }
    }

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

    /// Decides `txn` on the map as it is, changing nothing: which branch, what its reads find,
    /// and the mutations its writes make (each seen by the branch's later operations).
    fn decide(&self, txn: &Txn) -> Decision {
        let succeeded = txn.compare.iter().all(|compare| self.holds(compare));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Writes are made at the next revision; a branch that changes nothing (reads, deletes of
        // missing keys) leaves the revision as it is, as etcd does.
        let revision = self.revision + 1;
        let mut decided: BTreeMap<&[u8], Option<Arc<Kv>>> = BTreeMap::new();
        let mut reads = Vec::new();
        let mut mutations = Vec::new();
        for op in branch {
            match op {
                Op::Put { key, value, .. } => {
                    let create_revision = self
                        .current(&decided, key)
                        .map_or(revision, |kv| kv.create_revision);
                    let kv = Arc::new(Kv {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    });
                    decided.insert(key, Some(kv.clone()));
                    mutations.push(Mutation::Put(kv));
                }
                Op::Delete { key } => {
                    if self.current(&decided, key).is_some() {
                        decided.insert(key, None);
                        mutations.push(Mutation::Delete {
                            key: key.clone(),
                            revision,
                        });
                    }
                }
                Op::Get { key } => reads.push(self.current(&decided, key).map(|kv| Kv::clone(kv))),
            }
        }
        Decision {
            succeeded,
            revision: if mutations.is_empty() {
                self.revision
            } else {
                revision
            },
            reads,
            mutations,
        }
    }

    /// Applies what a transaction decided.
    fn apply(&mut self, mutations: Vec<Mutation>, revision: i64) {
        for mutation in mutations {
            match &mutation {
                Mutation::Put(kv) => {
                    self.data.insert(kv.key.clone(), kv.clone());
                }
                Mutation::Delete { key, .. } => {
                    self.data.remove(key);
                }
            }
            self.history.push_back(mutation);
        }
        self.revision = self.revision.max(revision);
        if self.history.len() > HISTORY_EVENTS {
            let cut = self.history[self.history.len() - HISTORY_EVENTS].revision();
            self.compact(cut);
        }
    }

    /// Forgets the changes made before `revision` (the revision itself kept): watches from
    /// before it are cancelled. A cut never falls inside a revision.
    fn compact(&mut self, revision: i64) {
        let revision = revision.min(self.revision + 1);
        let before = self
            .history
            .partition_point(|change| change.revision() < revision);
        self.history.drain(..before);
        self.oldest = self.oldest.max(revision);
    }
}

impl Engine for Local {
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
        let _turn = self.writing.lock();
        let Decision {
            succeeded,
            revision,
            reads,
            mutations,
        } = self.shared.inner.lock().decide(txn);
        if mutations.is_empty() {
            return Ok(TxnResult {
                succeeded,
                revision,
                reads,
            });
        }
        if let Some(keeper) = &self.keeper {
            keeper.keep(revision, &mutations)?;
        }
        self.shared.inner.lock().apply(mutations, revision);
        self.shared.written.notify_all();
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
        Ok(Box::new(LocalWatch {
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

/// A watch on a local engine: reads the history from `next` on.
struct LocalWatch {
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

impl Watch for LocalWatch {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, Subject};
    use crate::store::data_dir::{DataDir, scratch::Scratch};

    fn durable(dir: &Scratch) -> Local {
        let (keeper, kept) = DataDir::open(dir.path()).expect("a data dir");
        Local::kept_by(kept, Box::new(keeper))
    }

    #[test]
    fn the_memory_engine_keeps_the_contract() {
        let engine = Local::in_memory();
        conformance::check(&Subject {
            engine: &engine,
            prefix: "/conformance/",
            compact: &|revision| engine.compact(revision),
        });
    }

    #[test]
    fn the_durable_engine_keeps_the_contract() {
        let dir = Scratch::new("contract");
        let engine = durable(&dir);
        conformance::check(&Subject {
            engine: &engine,
            prefix: "/conformance/",
            compact: &|revision| engine.compact(revision),
        });
    }

    #[test]
    fn opened_again_the_durable_engine_has_every_key_and_revision_and_no_history() {
        let dir = Scratch::new("reopen");
        let (kept_before, revision) = {
            let engine = durable(&dir);
            engine.txn(&Txn::new().put(b"/k/a", b"1"), None).unwrap();
            engine
                .txn(&Txn::new().put(b"/k/b", b"2").put(b"/k/a", b"3"), None)
                .unwrap();
            let last = engine.txn(&Txn::new().delete(b"/k/b"), None).unwrap();
            (engine.range(b"/", Some(b"0")).unwrap().0, last.revision)
        };
        let engine = durable(&dir);
        let (kvs, now) = engine.range(b"/", Some(b"0")).unwrap();
        assert_eq!((kvs, now), (kept_before, revision));
        let next = engine.txn(&Txn::new().put(b"/k/c", b"4"), None).unwrap();
        assert_eq!(next.revision, revision + 1, "revisions go on from there");
        // A watch from before the restart: the history is gone, so its reader lists again.
        let mut watch = engine
            .watch(b"/", b"0", revision - 1, Duration::from_secs(1))
            .unwrap();
        assert_eq!(watch.next_message().unwrap(), Some(WatchMessage::Created));
        assert_eq!(
            watch.next_message().unwrap(),
            Some(WatchMessage::Canceled {
                compact_revision: revision + 1
            })
        );
    }

    /// A keeper whose syncs take `delay`, counting them.
    struct Slow {
        delay: Duration,
        kept: Arc<Mutex<Vec<i64>>>,
    }

    impl Keeper for Slow {
        fn keep(&self, revision: i64, _: &[Mutation]) -> Result<(), StoreError> {
            std::thread::sleep(self.delay);
            self.kept.lock().push(revision);
            Ok(())
        }
    }

    #[test]
    fn readers_do_not_wait_for_a_write_being_synced_nor_see_it_before_it_is_durable() {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keeper = Slow {
            delay: Duration::from_millis(300),
            kept: kept.clone(),
        };
        let engine = Arc::new(Local::kept_by(Kept::default(), Box::new(keeper)));
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || engine.txn(&Txn::new().put(b"k", b"v"), None).unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let (kvs, revision) = engine.range(b"k", None).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "a read took {:?}",
            started.elapsed()
        );
        assert_eq!(
            (kvs.len(), revision),
            (0, 1),
            "the write is not durable yet"
        );
        let written = writer.join().unwrap();
        assert_eq!(*kept.lock(), vec![written.revision]);
        assert_eq!(engine.range(b"k", None).unwrap().0.len(), 1);
    }

    /// A keeper that fails every write.
    struct Full;

    impl Keeper for Full {
        fn keep(&self, _: i64, _: &[Mutation]) -> Result<(), StoreError> {
            Err(StoreError::Unreachable("the disk is full".into()))
        }
    }

    #[test]
    fn a_write_the_keeper_cannot_keep_is_not_made() {
        let engine = Local::kept_by(Kept::default(), Box::new(Full));
        let failed = engine.txn(&Txn::new().put(b"k", b"v"), None);
        assert_eq!(
            failed,
            Err(StoreError::Unreachable("the disk is full".into()))
        );
        assert_eq!(engine.range(b"k", None).unwrap(), (vec![], 1));
    }
}
