//! Group commit: the writes of many callers go to the engine together, a few transactions instead
//! of one each.
//!
//! etcd makes every transaction durable before it answers (a disk sync and a round of consensus),
//! so one write per task state change would cap a hive at a few hundred changes a second. Here the
//! first caller to find no commit in progress commits everything queued so far, its own writes
//! included; callers that arrive meanwhile queue theirs and wait, and the next of them commits the
//! lot. Nobody waits on a timer: a lone write goes out at once, and under load batches grow by
//! themselves. The local engines take the same path: in memory a commit takes microseconds, so
//! batches stay small; with a data dir each commit waits for a disk sync, and batches grow to
//! share it, as on etcd.
//!
//! Each write keeps its own compares. A transaction is all or nothing, so a batch whose compares
//! do not all hold is split into single writes, and each of those reports for itself whether it
//! was made, lost a race ([`Written::Conflict`], with what the keys hold now), or was fenced out
//! ([`Written::NotLeader`]). Batches are cut to the engine's limits (operations and bytes per
//! transaction), and never hold two writes to one key (etcd refuses that).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::engine::{Compare, Engine, Kv, Op, StoreError, Txn};
use super::leadership::{Fence, Leadership};

/// One caller's change: compares that must hold, and the puts and deletes to make if they do.
#[derive(Debug, Clone)]
pub struct Write {
    pub compare: Vec<Compare>,
    pub ops: Vec<Op>,
    /// A leader's write: it holds only while this queen leads.
    pub fenced: bool,
}

impl Write {
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.ops.iter().map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key.as_slice(),
        })
    }

    fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key } | Op::Get { key } => key.len(),
            })
            .sum()
    }
}

/// How one write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Made at `revision` (a new key's create revision too).
    Done { revision: i64 },
    /// A compare did not hold: what each key of the write holds now, in the order of its ops.
    Conflict(Vec<Option<Kv>>),
    /// A leader's write, and this queen no longer leads.
    NotLeader,
}

type Outcome = Result<Written, StoreError>;

/// Where a queued write's outcome lands.
#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
}

/// The queue of writes waiting for a commit, and the turn to commit.
#[derive(Default)]
pub struct Batcher {
    queue: Mutex<Queue>,
    /// Held by the caller committing now.
    turn: Mutex<()>,
    /// Woken when a commit ends, so waiters look at their slots (or take the turn).
    committed: Condvar,
}

#[derive(Default)]
struct Queue {
    writes: Vec<(Write, Arc<Slot>)>,
    /// Commits ended so far. A caller that finds the turn taken waits only if no commit has ended
    /// since it last looked: a commit that ended in between (its wake-up already gone) may have
    /// left the caller's writes queued and the turn free, with nobody else to take it.
    ended: u64,
}

impl Batcher {
    pub fn new() -> Batcher {
        Batcher::default()
    }

    /// Makes `writes` (with other callers' writes), and returns how each went, in order.
    pub fn commit(
        &self,
        engine: &dyn Engine,
        leadership: &dyn Leadership,
        writes: Vec<Write>,
    ) -> Vec<Outcome> {
        let slots: Vec<Arc<Slot>> = writes.iter().map(|_| Arc::default()).collect();
        let mut seen = {
            let mut queue = self.queue.lock();
            queue
                .writes
                .extend(writes.into_iter().zip(slots.iter().cloned()));
            queue.ended
        };
        loop {
            if let Some(outcomes) = taken(&slots) {
                return outcomes;
            }
            let Some(turn) = self.turn.try_lock() else {
                // Someone commits now: wait for the end of that commit (unless it ended since we
                // looked), then look again.
                let mut queue = self.queue.lock();
                if queue.ended == seen && !slots.iter().all(|slot| slot.outcome.lock().is_some()) {
                    self.committed.wait_for(&mut queue, COMMIT_BACKSTOP);
                }
                seen = queue.ended;
                continue;
            };
            let batch = std::mem::take(&mut self.queue.lock().writes);
            if !batch.is_empty() {
                run(engine, leadership, batch);
            }
            drop(turn);
            let mut queue = self.queue.lock();
            queue.ended += 1;
            seen = queue.ended;
            self.committed.notify_all();
        }
    }
}

/// The longest a waiter sleeps without a wake-up. Every commit's end wakes the waiters, so this
/// only bounds the cost of a mistake here; it is not how waiters learn of commits.
const COMMIT_BACKSTOP: std::time::Duration = std::time::Duration::from_millis(100);

/// The outcomes of `slots`, once every one has one.
fn taken(slots: &[Arc<Slot>]) -> Option<Vec<Outcome>> {
    if !slots.iter().all(|slot| slot.outcome.lock().is_some()) {
        return None;
    }
    Some(
        slots
            .iter()
            .map(|slot| slot.outcome.lock().take().expect("checked above"))
            .collect(),
    )
}

/// Commits `batch` in as few transactions as the engine's limits allow.
fn run(engine: &dyn Engine, leadership: &dyn Leadership, batch: Vec<(Write, Arc<Slot>)>) {
    let (fenced, free): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(w, _)| w.fenced);
    if !fenced.is_empty() {
        match leadership.term() {
            Some(fence) => {
                for chunk in chunks(engine, fenced) {
                    commit_chunk(engine, Some(&fence), chunk);
                }
            }
            None => {
                for (_, slot) in fenced {
                    *slot.outcome.lock() = Some(Ok(Written::NotLeader));
                }
            }
        }
    }
    for chunk in chunks(engine, free) {
        commit_chunk(engine, None, chunk);
    }
}

/// Cuts writes into groups that fit one transaction: within the engine's operation and byte
/// limits (a fence takes one compare), and without two writes to one key.
fn chunks(engine: &dyn Engine, writes: Vec<(Write, Arc<Slot>)>) -> Vec<Vec<(Write, Arc<Slot>)>> {
    let max_ops = engine.max_txn_ops().saturating_sub(1).max(1);
    let max_bytes = engine.max_txn_bytes();
    let mut chunks = Vec::new();
    let mut chunk: Vec<(Write, Arc<Slot>)> = Vec::new();
    let (mut ops, mut compares, mut bytes) = (0, 0, 0);
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    for (write, slot) in writes {
        let clash = write.keys().any(|key| keys.contains(key));
        let full = ops + write.ops.len() > max_ops
            || compares + write.compare.len() > max_ops
            || bytes + write.bytes() > max_bytes;
        if !chunk.is_empty() && (clash || full) {
            chunks.push(std::mem::take(&mut chunk));
            (ops, compares, bytes) = (0, 0, 0);
            keys.clear();
        }
        ops += write.ops.len();
        compares += write.compare.len();
        bytes += write.bytes();
        keys.extend(write.keys().map(<[u8]>::to_vec));
        chunk.push((write, slot));
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// One transaction for `chunk`; if its compares do not all hold and it holds several writes, each
/// write is tried alone so that one conflict does not fail the others.
fn commit_chunk(engine: &dyn Engine, fence: Option<&Fence>, chunk: Vec<(Write, Arc<Slot>)>) {
    if chunk.len() == 1 {
        let (write, slot) = chunk.into_iter().next().expect("one write");
        *slot.outcome.lock() = Some(commit_one(engine, fence, &write));
        return;
    }
    let mut txn = Txn::new();
    if let Some(Fence(Some(compare))) = fence {
        txn.compare.push(compare.clone());
    }
    for (write, _) in &chunk {
        txn.compare.extend(write.compare.iter().cloned());
        txn.success.extend(write.ops.iter().cloned());
    }
    match engine.txn(&txn, None) {
        Ok(result) if result.succeeded => {
            for (_, slot) in chunk {
                *slot.outcome.lock() = Some(Ok(Written::Done {
                    revision: result.revision,
                }));
            }
        }
        Ok(_) => {
            for (write, slot) in chunk {
                *slot.outcome.lock() = Some(commit_one(engine, fence, &write));
            }
        }
        Err(e) => {
            for (_, slot) in chunk {
                *slot.outcome.lock() = Some(Err(e.clone()));
            }
        }
    }
}

/// One write in a transaction of its own. When it fails, the failure branch reads the write's
/// keys (and the fence's key), to tell a lost race from a lost term.
fn commit_one(engine: &dyn Engine, fence: Option<&Fence>, write: &Write) -> Outcome {
    let mut txn = Txn::new();
    let fence_compare = fence.and_then(|Fence(compare)| compare.clone());
    if let Some(compare) = &fence_compare {
        txn.compare.push(compare.clone());
    }
    txn.compare.extend(write.compare.iter().cloned());
    txn.success.extend(write.ops.iter().cloned());
    for key in write.keys() {
        txn = txn.or_read(key);
    }
    if let Some(Compare::Created { key, .. }) = &fence_compare {
        txn = txn.or_read(key);
    }
    let result = engine.txn(&txn, None)?;
    if result.succeeded {
        return Ok(Written::Done {
            revision: result.revision,
        });
    }
    let mut reads = result.reads;
    if let Some(Compare::Created { revision, .. }) = fence_compare {
        let leader = reads.pop().flatten();
        if leader.is_none_or(|kv| kv.create_revision != revision) {
            return Ok(Written::NotLeader);
        }
    }
    Ok(Written::Conflict(reads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::leadership::Alone;
    use crate::store::local::Local;

    fn create(key: &str) -> Write {
        Write {
            compare: vec![Compare::Created {
                key: key.as_bytes().to_vec(),
                revision: 0,
            }],
            ops: vec![Op::Put {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease: 0,
            }],
            fenced: false,
        }
    }

    #[test]
    fn writes_of_one_call_share_a_transaction_and_a_conflict_fails_only_its_own() {
        let engine = Local::in_memory();
        let batcher = Batcher::new();
        let first = batcher.commit(&engine, &Alone, vec![create("a")]);
        assert_eq!(first, vec![Ok(Written::Done { revision: 2 })]);
        let outcomes = batcher.commit(&engine, &Alone, vec![create("b"), create("c")]);
        assert_eq!(
            outcomes,
            vec![
                Ok(Written::Done { revision: 3 }),
                Ok(Written::Done { revision: 3 })
            ],
            "one transaction, one revision"
        );
        let outcomes = batcher.commit(&engine, &Alone, vec![create("a"), create("d")]);
        assert!(
            matches!(&outcomes[0], Ok(Written::Conflict(now)) if now[0].as_ref().is_some_and(|kv| kv.mod_revision == 2)),
            "{outcomes:?}"
        );
        assert!(matches!(outcomes[1], Ok(Written::Done { .. })));
    }

    #[test]
    fn two_writes_to_one_key_go_in_two_transactions() {
        let engine = Local::in_memory();
        let batcher = Batcher::new();
        let put = |value: &[u8]| Write {
            compare: vec![],
            ops: vec![Op::Put {
                key: b"k".to_vec(),
                value: value.to_vec(),
                lease: 0,
            }],
            fenced: false,
        };
        let outcomes = batcher.commit(&engine, &Alone, vec![put(b"1"), put(b"2")]);
        assert_eq!(
            outcomes,
            vec![
                Ok(Written::Done { revision: 2 }),
                Ok(Written::Done { revision: 3 })
            ]
        );
        let (kvs, _) = engine.range(b"k", None).unwrap();
        assert_eq!(kvs[0].value, b"2", "in the order they were given");
    }

    #[test]
    fn many_threads_writing_at_once_all_get_their_outcome() {
        let engine = Arc::new(Local::in_memory());
        let batcher = Arc::new(Batcher::new());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (engine, batcher) = (engine.clone(), batcher.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let outcome =
                            batcher.commit(&*engine, &Alone, vec![create(&format!("{t}/{i}"))]);
                        assert!(
                            matches!(outcome[0], Ok(Written::Done { .. })),
                            "{outcome:?}"
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let (kvs, _) = engine.range(b"0", Some(b"~")).unwrap();
        assert_eq!(kvs.len(), 16 * 200);
    }
}
