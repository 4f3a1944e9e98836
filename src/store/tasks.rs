//! Tasks in the store: `tasks/<id>` holds a task as JSON (what `GET /tasks/ID` shows).
//!
//! Every change is a compare-and-write against the revision it was decided on, through the
//! batcher, so many changes share a transaction and a decision made on a stale copy loses and is
//! made again on what the store holds now. Placements and garbage collection are the leader's
//! (fenced); creations, drones' reports and cancels go through any queen.

use std::sync::Arc;

use super::Store;
use super::batch::{Write, Written};
use super::engine::{Compare, Kv, Op, StoreError};
use crate::tasks::Task;
use crate::tasks::index::{Stored, decode};

/// A new version of a task, decided on the version at `revision` (0: the task does not exist yet).
#[derive(Debug, Clone)]
pub struct Change {
    pub task: Task,
    pub revision: i64,
}

/// How one change went.
#[derive(Debug, Clone)]
pub enum Changed {
    /// Written; the task as stored now.
    Done(Stored),
    /// Someone changed the task first: what the store holds now (`None`: no such task, or a value
    /// that is not a task).
    Conflict(Option<Stored>),
    /// A leader's change, and this queen no longer leads.
    NotLeader,
}

impl Store {
    /// Writes `changes`, each only if its task is still at the revision it was decided on (or,
    /// for revision 0, absent). `fenced`: only while this queen leads. Written tasks are in this
    /// queen's index when this returns.
    pub fn change_tasks(
        &self,
        changes: Vec<Change>,
        fenced: bool,
    ) -> Vec<Result<Changed, StoreError>> {
        let writes = changes
            .iter()
            .map(|change| {
                let key = self.keys.task(&change.task.id);
                let compare = if change.revision == 0 {
                    Compare::Created {
                        key: key.clone(),
                        revision: 0,
                    }
                } else {
                    Compare::Modified {
                        key: key.clone(),
                        revision: change.revision,
                    }
                };
                let value = serde_json::to_vec(&change.task).expect("a task serializes");
                Write {
                    compare: vec![compare],
                    ops: vec![Op::Put {
                        key,
                        value,
                        lease: 0,
                    }],
                    fenced,
                }
            })
            .collect();
        let outcomes = self.write(writes);
        changes
            .into_iter()
            .zip(outcomes)
            .map(|(change, outcome)| {
                let id = change.task.id.clone();
                Ok(match outcome? {
                    Written::Done { revision } => {
                        let create_revision = match change.revision {
                            0 => revision,
                            _ => self
                                .tasks
                                .get(&id)
                                .map_or(revision, |stored| stored.order.0),
                        };
                        let kv = Kv {
                            create_revision,
                            mod_revision: revision,
                            ..Kv::default()
                        };
                        self.tasks.put(change.task, &kv);
                        match self.tasks.get(&id) {
                            Some(stored) => Changed::Done(stored),
                            // Deleted already (its revision passed): as good as a lost race.
                            None => Changed::Conflict(None),
                        }
                    }
                    Written::Conflict(now) => {
                        let current = now.into_iter().next().flatten().and_then(|kv| {
                            let task = decode(&id, &kv).ok()?;
                            self.tasks.put(task.clone(), &kv);
                            Some(Stored {
                                task: Arc::new(task),
                                revision: kv.mod_revision,
                                order: (kv.create_revision, Arc::from(id.as_str())),
                            })
                        });
                        Changed::Conflict(current)
                    }
                    Written::NotLeader => Changed::NotLeader,
                })
            })
            .collect()
    }

    /// Deletes finished tasks (the leader's garbage collection), each only if unchanged since
    /// `revision`. Returns how many were deleted.
    pub fn delete_tasks(&self, victims: &[Stored]) -> usize {
        let writes = victims
            .iter()
            .map(|stored| {
                let key = self.keys.task(&stored.task.id);
                Write {
                    compare: vec![Compare::Modified {
                        key: key.clone(),
                        revision: stored.revision,
                    }],
                    ops: vec![Op::Delete { key }],
                    fenced: true,
                }
            })
            .collect();
        let mut deleted = 0;
        for (stored, outcome) in victims.iter().zip(self.write(writes)) {
            if let Ok(Written::Done { revision }) = outcome {
                self.tasks.forget(&stored.task.id, revision);
                deleted += 1;
            }
        }
        deleted
    }
}

impl Store {
    /// Task `id` for recording the end of its attempt `attempt` (an id): from the index, or read
    /// from the engine when the index does not know that attempt yet (the report came through a
    /// queen whose watch has not brought the placement yet). `None`: no such task.
    pub fn task_for_report(&self, id: &str, attempt: &str) -> Result<Option<Stored>, StoreError> {
        if let Some(stored) = self.tasks.get(id)
            && stored.task.attempt(attempt).is_some()
        {
            return Ok(Some(stored));
        }
        let read = self.engine.range(&self.keys.task(id), None);
        self.note(&read);
        let Some(kv) = read?.0.into_iter().next() else {
            return Ok(None);
        };
        let Ok(task) = decode(id, &kv) else {
            return Ok(None);
        };
        self.tasks.put(task, &kv);
        Ok(self.tasks.get(id))
    }
}
