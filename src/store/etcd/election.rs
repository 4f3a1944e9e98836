//! The leader election: one queen at a time holds the leader key, on an etcd lease.
//!
//! A queen grants herself a lease and creates the leader key on it, only if the key is absent (a
//! txn comparing its create revision with 0). The winner renews the lease every third of its TTL
//! and steps down at once when a renewal says the lease is gone, when none has worked for a whole
//! TTL, or when the watch shows the key gone or someone else's. The others wait for the watch to
//! show the key deleted (its lease expired, or its holder let it go), then try. On a clean stop the
//! leader revokes her lease ([`Leadership::resign`]), which deletes the key at once, so another
//! queen leads within moments instead of a TTL later (client-go's `ReleaseOnCancel`, etcd's
//! `resign`). This is client-go's leader election on a `Lease`, with etcd's own leases.
//!
//! A queen's belief that she leads ends a TTL after her last renewal was *sent*, so it ends before
//! etcd's view of the lease does. Her clock can still lie (a suspended VM's monotonic clock stops),
//! so what actually keeps an ex-leader from writing is the [`Fence`] on each of her writes: it holds
//! only while the leader key is the one she created.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use super::gateway::Gateway;
use crate::logging::quoted;
use crate::store::Reachability;
use crate::store::engine::{Compare, Kv, StoreError, Txn};
use crate::store::leadership::{Fence, Leadership};

/// Pause after a failed election call, so an etcd that refuses at once is not called in a loop.
const ELECTION_RETRY: Duration = Duration::from_millis(100);

/// Pause before the election thread starts again after a panic.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// This queen's part in the election: who leads as she knows it, and her term while she leads.
pub struct Election {
    gateway: Arc<Gateway>,
    /// The leader key (under the hive's prefix).
    key: Vec<u8>,
    /// Where a leader notes why she let leadership go.
    handover: Vec<u8>,
    state: Mutex<State>,
    /// Woken when the leader key changes or the store has been read, so a follower campaigns
    /// at once when the key goes.
    changed: Condvar,
    /// The lease asked for. etcd may grant longer (it has a minimum); this queen counts on no more.
    ttl: Duration,
    /// `host:port` this queen is known by: the leader key's value when she leads.
    me: OnceLock<String>,
    /// Set once the store has been read: a follower campaigns only then.
    ready: AtomicBool,
    /// Set by a clean stop: this queen campaigns no more.
    resigned: AtomicBool,
    /// Told whether each call reached etcd.
    reach: Arc<Reachability>,
}

#[derive(Debug, Default)]
struct State {
    /// The leader key's value, if it exists.
    leader: Option<String>,
    /// This queen's term, while she leads.
    term: Option<Term>,
    /// The last leader whose key went, and why (a new leader says so).
    previous: Option<(String, String)>,
    /// The latest handover note seen: who let leadership go, and why.
    handover: Option<Handover>,
}

/// A leader's note of why she let leadership go: the `handover` key's value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Handover {
    from: String,
    why: String,
}

/// A leader's hold on the leader key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Term {
    lease: i64,
    ttl: Duration,
    /// The leader key's create revision: unique to this term, so writes can check it is current.
    key_revision: i64,
    /// When the last renewal that worked was sent: the lease lives at least `ttl` from then.
    renewed: Instant,
    /// When this term began, to say how long it lasted.
    began: Instant,
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
    /// The election for the leader key `key` (the handover note is `handover`), on leases of
    /// `ttl`.
    pub fn new(
        gateway: Arc<Gateway>,
        key: Vec<u8>,
        handover: Vec<u8>,
        ttl: Duration,
        reach: Arc<Reachability>,
    ) -> Election {
        Election {
            gateway,
            key,
            handover,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            ttl,
            me: OnceLock::new(),
            ready: AtomicBool::new(false),
            resigned: AtomicBool::new(false),
            reach,
        }
    }

    fn me(&self) -> &str {
        self.me.get().map_or("", String::as_str)
    }

    fn current_term(&self) -> Option<Term> {
        let state = self.state.lock();
        state.term.filter(|term| term.holds(Instant::now()))
    }

    /// What etcd granted, counted as no more than what was asked: a huge TTL in a bad answer must
    /// neither overflow the clock nor make a leader of a queen for longer than her lease.
    fn granted(&self, ttl: Duration) -> Duration {
        ttl.min(self.ttl)
    }

    /// Campaigns while no queen leads, and renews the lease while this one does, forever.
    fn run(&self) -> ! {
        loop {
            let term = self.state.lock().term;
            match term {
                Some(term) => self.keep_leading(term),
                None => self.campaign(),
            }
        }
    }

    fn keep_leading(&self, term: Term) {
        let wait = term.renew_at().saturating_duration_since(Instant::now());
        {
            // Woken early by a resignation.
            let mut state = self.state.lock();
            if state.term == Some(term) {
                self.changed.wait_for(&mut state, wait);
            }
            if state.term != Some(term) {
                return;
            }
        }
        if Instant::now() < term.renew_at() {
            return;
        }
        if !term.holds(Instant::now()) {
            self.step_down(term, "its lease was not renewed for a whole TTL");
            return;
        }
        let sent = Instant::now();
        let renewed = self
            .gateway
            .keep_alive(term.lease)
            .map_err(StoreError::from);
        self.reach.note(&renewed);
        let mut state = self.state.lock();
        if state.term != Some(term) {
            return; // Stepped down meanwhile (the watch saw the key go).
        }
        match renewed {
            Ok(Some(ttl)) => {
                state.term = Some(Term {
                    ttl: self.granted(ttl),
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
            let mut state = self.state.lock();
            if state.term != Some(term) {
                return;
            }
            state.term = None;
            if state.leader.as_deref() == Some(self.me()) {
                state.leader = None;
            }
        }
        warn!(
            "this queen no longer leads, after {}: {why}",
            rounded(term.began.elapsed())
        );
        // Let the key go now rather than a TTL from now, if etcd still holds the lease.
        let _ = self.gateway.revoke(term.lease);
    }

    /// Tries to become the leader if no queen is; otherwise waits until the leader key goes.
    fn campaign(&self) {
        {
            let mut state = self.state.lock();
            let resigned = self.resigned.load(Ordering::Relaxed);
            if state.leader.is_some() || !self.ready.load(Ordering::Relaxed) || resigned {
                // Woken when the watch sees the key change; the timeout only guards a watch that
                // is down (then a campaign could not reach etcd either).
                self.changed.wait_for(&mut state, self.ttl);
                return;
            }
        }
        let me = self.me().to_string();
        let sent = Instant::now();
        let lease = self.gateway.grant(self.ttl).map_err(StoreError::from);
        self.reach.note(&lease);
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                debug!("could not campaign: {e}");
                thread::sleep(ELECTION_RETRY);
                return;
            }
        };
        let txn = Txn::new()
            .if_absent(&self.key)
            .put_on_lease(&self.key, me.as_bytes(), lease.id)
            .or_read(&self.key);
        let won = self.gateway.txn(&txn).map_err(StoreError::from);
        self.reach.note(&won);
        match won {
            Ok(result) if result.succeeded => {
                let ttl = self.granted(lease.ttl);
                let mut state = self.state.lock();
                let before = state.previous.take();
                state.term = Some(Term {
                    lease: lease.id,
                    ttl,
                    key_revision: result.revision,
                    renewed: sent,
                    began: Instant::now(),
                });
                state.leader = Some(me);
                drop(state);
                info!(
                    "this queen leads now (lease of {}, renewed every {}){}",
                    rounded(ttl),
                    rounded(ttl / 3),
                    before.map_or(String::new(), |(who, why)| format!(
                        "; {} led before, and {why}",
                        quoted(&who)
                    ))
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

impl Leadership for Election {
    fn term(&self) -> Option<Fence> {
        self.current_term().map(|term| {
            Fence(Some(Compare::Created {
                key: self.key.clone(),
                revision: term.key_revision,
            }))
        })
    }

    fn view(&self) -> (bool, Option<String>) {
        let state = self.state.lock();
        let leads = state.term.is_some_and(|term| term.holds(Instant::now()));
        (leads, state.leader.clone())
    }

    /// A leader whose key is gone or no longer hers steps down at once.
    fn leader_seen(&self, kv: Option<&Kv>) {
        let leader = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let mut state = self.state.lock();
        if let Some(term) = state.term {
            let still_mine = kv.is_some_and(|kv| kv.create_revision == term.key_revision);
            if !still_mine {
                state.term = None;
                warn!(
                    "this queen no longer leads, after {}: the leader key is no longer hers (leader now {})",
                    rounded(term.began.elapsed()),
                    leader.as_deref().map_or("none".to_string(), quoted)
                );
            }
        }
        if state.leader != leader {
            match (state.leader.clone(), &leader) {
                (Some(before), None) => {
                    let why = match state.handover.take() {
                        Some(note) if note.from == before => note.why,
                        _ => "its lease expired: it stopped renewing it (it died, froze or lost etcd)"
                            .to_string(),
                    };
                    info!("{} no longer leads: {why}", quoted(&before));
                    state.previous = Some((before, why));
                }
                (_, Some(now)) if now != self.me() => info!("{} leads now", quoted(now)),
                _ => {}
            }
            state.leader = leader;
            self.changed.notify_all();
        }
    }

    fn handover_seen(&self, kv: &Kv) {
        if let Ok(note) = serde_json::from_slice::<Handover>(&kv.value) {
            self.state.lock().handover = Some(note);
        }
    }

    fn store_read(&self) {
        self.ready.store(true, Ordering::Relaxed);
        let _state = self.state.lock();
        self.changed.notify_all();
    }

    fn start(self: Arc<Self>, me: String) -> std::io::Result<()> {
        let _ = self.me.set(me);
        thread::Builder::new()
            .name("election".into())
            .spawn(move || {
                loop {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
                    log::error!("the election thread panicked; starting it again");
                    thread::sleep(RESTART_PAUSE);
                }
            })?;
        Ok(())
    }

    fn resign(&self) {
        self.resigned.store(true, Ordering::Relaxed);
        let term = {
            let mut state = self.state.lock();
            let term = state.term.take();
            if term.is_some() {
                state.leader = None;
            }
            self.changed.notify_all();
            term
        };
        if let Some(term) = term {
            // The note and the key's release in one transaction, so whoever sees the key go
            // knows why; then the lease goes too.
            let note = Handover {
                from: self.me().to_string(),
                why: "it stopped cleanly and let leadership go".to_string(),
            };
            let value = serde_json::to_vec(&note).expect("a note serializes");
            let txn = Txn::new()
                .if_created_at(&self.key, term.key_revision)
                .put(&self.handover, &value)
                .delete(&self.key);
            let released = self.gateway.txn(&txn).map(|result| result.succeeded);
            let _ = self.gateway.revoke(term.lease);
            let led = rounded(term.began.elapsed());
            match released {
                Ok(true) => info!(
                    "this queen resigns after leading for {led}: stopping cleanly; the leader key is released"
                ),
                Ok(false) => info!(
                    "this queen resigns after leading for {led}; her leader key was gone already"
                ),
                Err(e) => warn!(
                    "this queen resigns after leading for {led}, but could not release the leader key ({e}); another queen leads once its lease expires"
                ),
            }
        }
    }
}

/// `duration` rounded for a log line: milliseconds under a second, else tenths of seconds.
pub fn rounded(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
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
            began: now,
        };
        assert!(term.holds(now + Duration::from_millis(2999)));
        assert!(!term.holds(now + Duration::from_secs(3)));
        assert_eq!(term.renew_at(), now + Duration::from_secs(1));
    }

    #[test]
    fn a_lease_counts_for_no_more_than_was_asked() {
        let gateway = Arc::new(Gateway::new(
            vec!["127.0.0.1:1".into()],
            None,
            Duration::from_secs(1),
        ));
        let election = Election::new(
            gateway,
            b"/hive/leader".to_vec(),
            b"/hive/handover".to_vec(),
            Duration::from_secs(5),
            Arc::default(),
        );
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

#[cfg(test)]
mod rounding {
    use super::*;

    #[test]
    fn durations_print_rounded() {
        assert_eq!(rounded(Duration::from_micros(1234)), "1 ms");
        assert_eq!(rounded(Duration::from_millis(5060)), "5.1 s");
    }
}
