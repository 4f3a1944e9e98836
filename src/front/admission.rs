//! Who may open a connection: a cap on connections in all, and one per peer address.
//!
//! Plain data under one lock, taken for a count and never across I/O: the accept loop asks before
//! it starts a connection's thread, and the connection gives its place back when it ends.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::config::ConnectionLimits;

/// Which cap a refused connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The larve holds `--max-connections` already.
    Total,
    /// This peer address holds `--max-connections-per-peer` already.
    Peer,
}

/// The open connections, in all and by peer address.
pub struct Admission {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only peers with at least one connection: the map never outgrows the total cap.
    by_peer: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Admission {
        Admission {
            limits,
            open: Mutex::new(Open::default()),
        }
    }

    /// Counts a new connection from `peer`, or says which cap it would pass.
    pub fn admit(&self, peer: IpAddr) -> Result<(), Refusal> {
        let peer = peer.to_canonical();
        let mut open = self.open.lock();
        if open.total >= self.limits.total {
            return Err(Refusal::Total);
        }
        let mine = open.by_peer.entry(peer).or_default();
        if *mine >= self.limits.per_peer {
            return Err(Refusal::Peer);
        }
        *mine += 1;
        open.total += 1;
        Ok(())
    }

    /// A connection [`Admission::admit`] counted has ended.
    pub fn release(&self, peer: IpAddr) {
        let peer = peer.to_canonical();
        let mut open = self.open.lock();
        if let Some(mine) = open.by_peer.get_mut(&peer) {
            *mine -= 1;
            if *mine == 0 {
                open.by_peer.remove(&peer);
            }
            open.total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_peer_has_its_cap_and_all_share_the_total() {
        let admission = Admission::new(ConnectionLimits {
            total: 5,
            per_peer: 3,
        });
        for _ in 0..3 {
            assert_eq!(admission.admit(ip("127.0.0.2")), Ok(()));
        }
        assert_eq!(admission.admit(ip("127.0.0.2")), Err(Refusal::Peer));
        assert_eq!(admission.admit(ip("127.0.0.1")), Ok(()));
        assert_eq!(admission.admit(ip("127.0.0.1")), Ok(()));
        assert_eq!(admission.admit(ip("127.0.0.3")), Err(Refusal::Total));
        admission.release(ip("127.0.0.2"));
        assert_eq!(admission.open.lock().total, 4);
        assert_eq!(admission.admit(ip("127.0.0.3")), Ok(()));
        assert_eq!(admission.admit(ip("127.0.0.3")), Err(Refusal::Total));
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_same_peer() {
        let admission = Admission::new(ConnectionLimits {
            total: 10,
            per_peer: 1,
        });
        assert_eq!(admission.admit(ip("10.0.0.1")), Ok(()));
        assert_eq!(admission.admit(ip("::ffff:10.0.0.1")), Err(Refusal::Peer));
        admission.release(ip("::ffff:10.0.0.1"));
        assert_eq!(admission.open.lock().total, 0);
        assert!(
            admission.open.lock().by_peer.is_empty(),
            "nothing left behind"
        );
    }
}
