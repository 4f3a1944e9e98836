//! One change as a follower reads it: a line of JSON, encoded once when the change arrives and
//! shared by every follower.
//!
//! ```text
//! {"rev":42,"kind":"task","id":"build-7","type":"updated","object":{...}}
//! ```
//!
//! - `rev`: the store revision of the change (etcd's, so the same on every queen of a hive);
//! - `kind`: `task` or `drone`; `id`: a task's id, a drone's address (its key in the store);
//! - `type`: `created` (the key is new), `updated`, or `deleted`;
//! - `object`: a task as `GET /tasks` lists it (no output), a drone's registration as `GET /drones`
//!   shows it (never its credential) without what only one queen sees of it or works out from
//!   tasks (`last_seen`, `failures`, `available`, `used*`): those change with no change in the
//!   store. A deletion's object holds only what the store's key says: `{"id"}` of a task,
//!   `{"address"}` of a drone.
//!
//! A task whose `env` is not empty is encoded twice: as it is, and with every value `***`, for
//! followers with a `read` token (see `api::redacted`).

use serde::Serialize;
use serde_json::json;

use crate::labels::{Labels, NAME_LABEL};
use crate::queen::registry::Record;
use crate::tasks::{Summary, Task};

/// What a `env` value looks like to a follower that may not see secrets.
const REDACTED: &str = "***";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Task,
    Drone,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Task, Kind::Drone];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Drone => "drone",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// The kinds a follower asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub tasks: bool,
    pub drones: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        tasks: true,
        drones: true,
    };

    /// `task`, `drone` or `task,drone`, as `?kind=` takes them.
    pub fn parse(list: &str) -> Result<Kinds, String> {
        let mut kinds = Kinds {
            tasks: false,
            drones: false,
        };
        for name in list.split(',') {
            match Kind::parse(name) {
                Some(Kind::Task) => kinds.tasks = true,
                Some(Kind::Drone) => kinds.drones = true,
                None => {
                    return Err(format!(
                        "kind: {name:?} is not task or drone (kind=task, kind=drone or kind=task,drone)"
                    ));
                }
            }
        }
        Ok(kinds)
    }

    pub fn wants(self, kind: Kind) -> bool {
        match kind {
            Kind::Task => self.tasks,
            Kind::Drone => self.drones,
        }
    }
}

/// One change, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub rev: i64,
    pub kind: Kind,
    /// The line as it is, newline included.
    pub full: Box<[u8]>,
    /// The line for a follower that may not see secrets, when it differs.
    pub redacted: Option<Box<[u8]>>,
    /// Where it starts in everything the history took in (set by the history).
    pub start: u64,
}

impl Line {
    /// The version a follower sees: as it is for one who sees secrets (`secrets`), else redacted.
    pub fn version(&self, secrets: bool) -> &[u8] {
        match &self.redacted {
            Some(redacted) if !secrets => redacted,
            _ => &self.full,
        }
    }

    /// Bytes it holds, both versions.
    pub fn size(&self) -> usize {
        self.full.len() + self.redacted.as_ref().map_or(0, |r| r.len())
    }
}

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Created,
    Updated,
    Deleted,
}

impl Type {
    /// A put is a creation when the key's life began at that write.
    pub fn of_put(create_revision: i64, mod_revision: i64) -> Type {
        if create_revision == mod_revision {
            Type::Created
        } else {
            Type::Updated
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Type::Created => "created",
            Type::Updated => "updated",
            Type::Deleted => "deleted",
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    rev: i64,
    kind: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    change: &'static str,
    object: T,
}

/// The line of `object`, newline included.
fn encode(rev: i64, kind: Kind, id: &str, change: Type, object: impl Serialize) -> Box<[u8]> {
    let envelope = Envelope {
        rev,
        kind: kind.as_str(),
        id,
        change: change.as_str(),
        object,
    };
    let mut bytes = serde_json::to_vec(&envelope).expect("an event serializes");
    bytes.push(b'\n');
    bytes.into_boxed_slice()
}

/// A task created or changed at `rev`.
pub fn task(rev: i64, change: Type, task: &Task) -> Line {
    let full = encode(rev, Kind::Task, &task.id, change, task.summary());
    let redacted = (!task.spec.env.is_empty()).then(|| {
        let mut spec = task.spec.clone();
        for value in spec.env.values_mut() {
            *value = REDACTED.into();
        }
        let summary = Summary {
            spec: &spec,
            ..task.summary()
        };
        encode(rev, Kind::Task, &task.id, change, summary)
    });
    Line {
        rev,
        kind: Kind::Task,
        full,
        redacted,
        start: 0,
    }
}

/// A drone's registration as a change shows it: `GET /drones`' fields that the store holds.
#[derive(Serialize)]
struct Registered<'a> {
    name: &'a str,
    address: &'a str,
    registered_at: f64,
    exec: bool,
    slots: u32,
    memory_mb: u64,
    cpus: f64,
    containment: &'a str,
    draining: bool,
    renews: bool,
    labels: Labels,
}

/// A drone registered or changed at `rev`.
pub fn drone(rev: i64, change: Type, record: &Record) -> Line {
    let mut labels = record.labels.clone();
    labels.insert(NAME_LABEL.to_string(), record.name.clone());
    let object = Registered {
        name: &record.name,
        address: &record.address,
        registered_at: record.registered_at,
        exec: record.exec,
        slots: record.slots,
        memory_mb: record.offer.memory_mb,
        cpus: f64::from(record.offer.millicpus) / 1000.0,
        containment: &record.offer.containment,
        draining: record.draining,
        renews: record.renews,
        labels,
    };
    Line {
        rev,
        kind: Kind::Drone,
        full: encode(rev, Kind::Drone, &record.address, change, object),
        redacted: None,
        start: 0,
    }
}

/// A task or a drone deleted at `rev`; `id` is the task's id or the drone's address.
pub fn deleted(rev: i64, kind: Kind, id: &str) -> Line {
    let object = match kind {
        Kind::Task => json!({ "id": id }),
        Kind::Drone => json!({ "address": id }),
    };
    Line {
        rev,
        kind,
        full: encode(rev, kind, id, Type::Deleted, object),
        redacted: None,
        start: 0,
    }
}
