//! The leader election: one queen at a time holds the leader key, on an etcd lease.
//!
//! A queen grants herself a lease and creates the leader key on it, only if the key is absent (a
//! txn comparing its create revision with 0). The winner renews the lease every third of its TTL
//! and steps down at once when a renewal says the lease is gone, when none has worked for a whole
//! TTL, or when the watch shows the key gone or someone else's. The others wait for the watch to
//! show the key deleted (its lease expired, or its holder let it go), then try. This is client-go's
//! leader election on a `Lease`, with etcd's own leases.
//!
//! A queen's belief that she leads ends a TTL after her last renewal was *sent*, so it ends before
//! etcd's view of the lease does. Her clock can still lie (a suspended VM's monotonic clock stops),
//! so what actually keeps an ex-leader from removing drones is the txn each removal is: it holds
//! only while the leader key is the one she created (see `mod.rs`).

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use super::Etcd;
use super::gateway::{Kv, Txn};
use crate::logging::quoted;

/// Pause after a failed election call, so an etcd that refuses at once is not called in a loop.
const ELECTION_RETRY: Duration = Duration::from_millis(100);

/// Who leads, as this queen knows it, and the wake-up for when that changes.
pub(super) struct Election {
    state: Mutex<State>,
    /// Woken when the leader key changes or the registry has been read, so a follower campaigns
    /// at once when the key goes.
    changed: Condvar,
    /// The lease asked for. etcd may grant longer (it has a minimum); this queen counts on no more.
    ttl: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The leader key's value, if it exists.
    leader: Option<String>,
    /// This queen's term, while she leads.
    term: Option<Term>,
}

/// A leader's hold on the leader key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Term {
    lease: i64,
    ttl: Duration,
    /// The leader key's create revision: unique to this term, so removals can check it is current.
    pub(super) key_revision: i64,
    /// When the last renewal that worked was sent: the lease lives at least `ttl` from then.
    renewed: Instant,
}

impl Term {
    /// Whether the lease is surely still alive at `now`. Past that, this queen must act as if
    /// another one leads, whatever etcd says later.
    fn holds(&self, now: Instant) -> bool {
        now < self.renewed + self.ttl
    }

    /// When to renew: a third of the TTL after the last renewal.
    fn renew_at(&self) -> Instant {
        self.renewed + self.ttl / 3
    }
}

impl Election {
    pub(super) fn new(ttl: Duration) -> Election {
        Election {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            ttl,
        }
    }

    /// This queen's term, if she leads now.
    pub(super) fn term(&self) -> Option<Term> {
        let state = self.state.lock();
        state.term.filter(|term| term.holds(Instant::now()))
    }

    /// Whether this queen leads, and who does, at one moment.
    pub(super) fn view(&self) -> (bool, Option<String>) {
        let state = self.state.lock();
        let leads = state.term.is_some_and(|term| term.holds(Instant::now()));
        (leads, state.leader.clone())
    }

    /// Wakes a waiting follower (the registry has been read: she may campaign).
    pub(super) fn wake(&self) {
        let _state = self.state.lock();
        self.changed.notify_all();
    }

    /// What etcd granted, counted as no more than what was asked: a huge TTL in a bad answer must
    /// neither overflow the clock nor make a leader of a queen for longer than her lease.
    fn granted(&self, ttl: Duration) -> Duration {
        ttl.min(self.ttl)
    }
}

impl Etcd {
    /// Campaigns while no queen leads, and renews the lease while this one does, forever.
    pub(super) fn elect(&self) -> ! {
        loop {
            let term = self.election.state.lock().term;
            match term {
                Some(term) => self.keep_leading(term),
                None => self.campaign(),
            }
        }
    }

    /// The leader key as the watch or a read shows it (`None`: deleted). A leader whose key is
    /// gone or no longer hers steps down at once.
    pub(super) fn leader_seen(&self, kv: Option<&Kv>) {
        let leader = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let mut state = self.election.state.lock();
        if let Some(term) = state.term {
            let still_mine = kv.is_some_and(|kv| kv.create_revision == term.key_revision);
            if !still_mine {
                state.term = None;
                warn!(
                    "this queen no longer leads: the leader key is no longer hers (leader now {})",
                    leader.as_deref().map_or("none".to_string(), quoted)
                );
            }
        }
        if state.leader != leader {
            debug!("leader key: {leader:?}");
            state.leader = leader;
            self.election.changed.notify_all();
        }
    }

    fn keep_leading(&self, term: Term) {
        let wait = term.renew_at().saturating_duration_since(Instant::now());
        thread::sleep(wait);
        if !term.holds(Instant::now()) {
            self.step_down(term, "its lease was not renewed for a whole TTL");
            return;
        }
        let sent = Instant::now();
        let renewed = self.gateway.keep_alive(term.lease);
        self.note(&renewed);
        let mut state = self.election.state.lock();
        if state.term != Some(term) {
            return; // Stepped down meanwhile (the watch saw the key go).
        }
        match renewed {
            Ok(Some(ttl)) => {
                state.term = Some(Term {
                    ttl: self.election.granted(ttl),
                    renewed: sent,
                    ..term
                });
            }
            Ok(None) => {
                drop(state);
                self.step_down(term, "its lease expired");
            }
            Err(e) => {
                drop(state);
                debug!("could not renew the leader lease: {e}");
                thread::sleep(ELECTION_RETRY);
            }
        }
    }

    fn step_down(&self, term: Term, why: &str) {
        {
            let mut state = self.election.state.lock();
            if state.term != Some(term) {
                return;
            }
            state.term = None;
            if state.leader.as_deref() == Some(self.me()) {
                state.leader = None;
            }
        }
        warn!("this queen no longer leads: {why}");
        // Let the key go now rather than a TTL from now, if etcd still holds the lease.
        let _ = self.gateway.revoke(term.lease);
    }

    /// Tries to become the leader if no queen is; otherwise waits until the leader key goes.
    fn campaign(&self) {
        {
            let mut state = self.election.state.lock();
            if state.leader.is_some() || !self.ready.load(Ordering::Relaxed) {
                // Woken when the watch sees the key change; the timeout only guards a watch that
                // is down (then a campaign could not reach etcd either).
                self.election
                    .changed
                    .wait_for(&mut state, self.election.ttl);
                return;
            }
        }
        let me = self.me().to_string();
        let sent = Instant::now();
        let lease = self.gateway.grant(self.election.ttl);
        self.note(&lease);
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                debug!("could not campaign: {e}");
                thread::sleep(ELECTION_RETRY);
                return;
            }
        };
        let key = &self.keys.leader;
        let txn = Txn::new()
            .if_absent(key)
            .put(key, me.as_bytes(), lease.id)
            .or_read(key);
        let won = self.gateway.txn(&txn);
        self.note(&won);
        match won {
            Ok(result) if result.succeeded => {
                let ttl = self.election.granted(lease.ttl);
                let mut state = self.election.state.lock();
                state.term = Some(Term {
                    lease: lease.id,
                    ttl,
                    key_revision: result.revision,
                    renewed: sent,
                });
                state.leader = Some(me);
                info!(
                    "this queen leads now (lease of {ttl:?}, renewed every {:?})",
                    ttl / 3
                );
            }
            Ok(result) => {
                let _ = self.gateway.revoke(lease.id);
                let leader = result.reads.into_iter().next().flatten();
                self.leader_seen(leader.as_ref());
            }
            Err(e) => {
                let _ = self.gateway.revoke(lease.id);
                debug!("could not campaign: {e}");
                thread::sleep(ELECTION_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_holds_for_a_ttl_from_its_last_renewal() {
        let now = Instant::now();
        let term = Term {
            lease: 1,
            ttl: Duration::from_secs(3),
            key_revision: 7,
            renewed: now,
        };
        assert!(term.holds(now + Duration::from_millis(2999)));
        assert!(!term.holds(now + Duration::from_secs(3)));
        assert_eq!(term.renew_at(), now + Duration::from_secs(1));
    }

    #[test]
    fn a_lease_counts_for_no_more_than_was_asked() {
        let election = Election::new(Duration::from_secs(5));
        assert_eq!(
            election.granted(Duration::from_secs(u64::MAX)),
            Duration::from_secs(5)
        );
        assert_eq!(
            election.granted(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
