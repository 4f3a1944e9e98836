//! Who may make the writes only one queen should make: placing tasks and removing drones.
//!
//! Leadership is apart from the engine: a queen alone always leads ([`Alone`]); queens sharing etcd
//! elect one on an etcd lease (`etcd::election`). A leader's writes carry a [`Fence`]: a compare
//! that holds only while her term does, so a paused or cut-off ex-leader changes nothing, whatever
//! her clock says.

use std::sync::Arc;

use super::engine::{Compare, Kv};

/// What a leader's write must also check: nothing for a queen alone, the leader key's create
/// revision in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence(pub Option<Compare>);

/// This queen's part in choosing a leader.
pub trait Leadership: Send + Sync {
    /// The fence of this queen's term, if she leads now.
    fn term(&self) -> Option<Fence>;

    /// Whether this queen leads, and the `host:port` of whoever does, at one moment.
    fn view(&self) -> (bool, Option<String>);

    /// The store's watch saw the leader key change (`None`: deleted).
    fn leader_seen(&self, kv: Option<&Kv>);

    /// The store's watch saw a leader's note of why she let leadership go (written just before
    /// her leader key goes, in the same transaction).
    fn handover_seen(&self, kv: &Kv);

    /// The store has been read once: a follower may campaign from now on.
    fn store_read(&self);

    /// Starts the threads the election needs, for the life of the process; `me` is the
    /// `host:port` other queens know this queen by.
    fn start(self: Arc<Self>, me: String) -> std::io::Result<()>;

    /// Lets leadership go now (a clean stop), so another queen takes over at once.
    fn resign(&self);
}

/// A queen alone: she always leads, and her writes need no fence.
pub struct Alone;

impl Leadership for Alone {
    fn term(&self) -> Option<Fence> {
        Some(Fence(None))
    }

    fn view(&self) -> (bool, Option<String>) {
        (true, None)
    }

    fn leader_seen(&self, _kv: Option<&Kv>) {}

    fn handover_seen(&self, _kv: &Kv) {}

    fn store_read(&self) {}

    fn start(self: Arc<Self>, _me: String) -> std::io::Result<()> {
        Ok(())
    }

    fn resign(&self) {}
}
