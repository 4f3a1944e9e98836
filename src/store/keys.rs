//! Hive's keys under one prefix (`/hive/` by default), the same in every engine.
//!
//! | key                     | value                                              | written by                     |
//! |-------------------------|----------------------------------------------------|--------------------------------|
//! | `drones/<host:port>`    | a drone's registration (`store::drones`)           | any queen, at registration     |
//! | `next_id`               | the number of the next `drone-N`                   | bumped in the same txn         |
//! | `tasks/<id>`            | a task and its attempts (`store::tasks`)           | any queen; placements: leader  |
//! | `leader`                | `host:port` of the queen that leads (etcd only)    | the leader, on her lease       |
//! | `handover`              | who last let leadership go on a clean stop, and why | a leader, as she resigns       |

use super::engine::prefix_end;
use crate::address;

/// The keys of one hive.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: Vec<u8>,
    drones: Vec<u8>,
    tasks: Vec<u8>,
    pub next_id: Vec<u8>,
    pub leader: Vec<u8>,
    pub handover: Vec<u8>,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind {
    Drone(String),
    Task(String),
    Leader,
    Handover,
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let key = |name: &str| format!("{prefix}{name}").into_bytes();
        Keys {
            prefix: prefix.as_bytes().to_vec(),
            drones: key("drones/"),
            tasks: key("tasks/"),
            next_id: key("next_id"),
            leader: key("leader"),
            handover: key("handover"),
        }
    }

    pub fn drone(&self, address: &str) -> Vec<u8> {
        [&self.drones[..], address.as_bytes()].concat()
    }

    pub fn task(&self, id: &str) -> Vec<u8> {
        [&self.tasks[..], id.as_bytes()].concat()
    }

    /// The first key past every key of the hive.
    pub fn end(&self) -> Vec<u8> {
        prefix_end(&self.prefix)
    }

    pub fn kind(&self, key: &[u8]) -> KeyKind {
        if key == self.leader.as_slice() {
            return KeyKind::Leader;
        }
        if key == self.handover.as_slice() {
            return KeyKind::Handover;
        }
        let text = |rest: &[u8]| std::str::from_utf8(rest).ok().map(str::to_string);
        if let Some(address) = key.strip_prefix(self.drones.as_slice()).and_then(text)
            && address::validate(&address).is_ok()
        {
            return KeyKind::Drone(address);
        }
        if let Some(id) = key.strip_prefix(self.tasks.as_slice()).and_then(text)
            && crate::tasks::valid_id(&id)
        {
            return KeyKind::Task(id);
        }
        KeyKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_hives_keys_from_anything_else() {
        let keys = Keys::new("/hive/");
        assert_eq!(keys.drone("127.0.0.1:5001"), b"/hive/drones/127.0.0.1:5001");
        assert_eq!(keys.end(), b"/hive0");
        assert_eq!(
            keys.kind(b"/hive/drones/127.0.0.1:5001"),
            KeyKind::Drone("127.0.0.1:5001".into())
        );
        assert_eq!(
            keys.kind(b"/hive/tasks/build-7"),
            KeyKind::Task("build-7".into())
        );
        assert_eq!(keys.kind(b"/hive/leader"), KeyKind::Leader);
        assert_eq!(keys.kind(b"/hive/handover"), KeyKind::Handover);
        for other in [
            &b"/hive/next_id"[..],
            b"/hive/drones/evil.example/x#",
            b"/hive/drones/\xff",
            b"/hive/tasks/Not_An_Id",
            b"/hive/tasks/",
            b"/hive/leader2",
        ] {
            assert_eq!(keys.kind(other), KeyKind::Other, "{other:?}");
        }
    }
}
