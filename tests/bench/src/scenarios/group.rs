//! Queens sharing one store in etcd, as the scenarios start them (several queens, and the task
//! scenarios' etcd parts): each on a free port, all under one key prefix of their own (so one
//! part's drones, tasks and leader are never another's), and the one way to see that they agree on
//! a leader.

use std::time::Duration;

use hive_support::etcd::Etcd;
use hive_support::larve::Larve;
use hive_support::wait;

use crate::Result;
use crate::scenarios::Bench;

/// The leader's lease queens are started with unless a scenario asks for another: the larve's
/// default, given explicitly so the failover target (TTL + 1 s) is computed from what the queens
/// really run with.
pub const LEADER_TTL: Duration = Duration::from_secs(5);

/// Queens in each group.
pub const QUEENS: usize = 3;

/// How long fresh queens may take to agree on a leader: a campaign is one lease grant and one txn.
pub const AGREE_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the queens' `/healthz` is read while waiting for them to agree: the 10 ms,
/// which is also the failover's resolution.
pub const AGREE_POLL: Duration = Duration::from_millis(10);

/// The queens of one group, alive ones only.
pub struct Queens<'a> {
    bench: &'a Bench,
    /// What follows `--queen --port 0` on every queen's command line.
    args: Vec<String>,
    label: String,
    /// Queens started so far, so a fresh one gets a fresh label (and log).
    started: usize,
    live: Vec<Larve>,
}

impl<'a> Queens<'a> {
    /// Starts [`QUEENS`] queens on `etcd` under the key prefix `/{label}/`, with the default
    /// [`LEADER_TTL`].
    pub fn start(bench: &'a Bench, etcd: &Etcd, label: &str) -> Result<Queens<'a>> {
        Queens::start_with(bench, etcd, label, LEADER_TTL, &[])
    }

    /// Starts [`QUEENS`] queens on `etcd` under the key prefix `/{label}/`, with a lease of
    /// `leader_ttl` (whole seconds) and `extra` flags.
    pub fn start_with(
        bench: &'a Bench,
        etcd: &Etcd,
        label: &str,
        leader_ttl: Duration,
        extra: &[String],
    ) -> Result<Queens<'a>> {
        let mut args = vec![
            "--etcd".into(),
            etcd.urls(),
            "--etcd-prefix".into(),
            format!("/{label}/"),
            "--leader-ttl".into(),
            leader_ttl.as_secs().to_string(),
        ];
        args.extend_from_slice(extra);
        let mut queens = Queens {
            bench,
            args,
            label: label.to_string(),
            started: 0,
            live: Vec::new(),
        };
        for _ in 0..QUEENS {
            queens.add()?;
        }
        Ok(queens)
    }

    /// Starts one more queen, a fresh one.
    pub fn add(&mut self) -> Result<()> {
        let label = format!("{}-queen-{}", self.label, self.started);
        self.started += 1;
        let queen = self.bench.queen(&label, &self.args)?;
        self.live.push(queen);
        Ok(())
    }

    /// A queen's command line, as the launcher runs it.
    pub fn command(&self) -> String {
        format!("larve --queen --port 0 {}", self.args.join(" "))
    }

    /// The queens alive now.
    pub fn live(&self) -> &[Larve] {
        &self.live
    }

    /// The queens alive now, as drones and waits take them.
    pub fn refs(&self) -> Vec<&Larve> {
        self.live.iter().collect()
    }

    /// A queen that follows the one at index `leader`: the next one.
    pub fn follower(&self, leader: usize) -> &Larve {
        &self.live[(leader + 1) % self.live.len()]
    }

    /// Takes queen `i` out of the group, to be killed.
    pub fn take(&mut self, i: usize) -> Larve {
        self.live.remove(i)
    }

    /// Waits until every live queen has read the registry and names the same leader, one of them;
    /// returns the leader's index.
    pub fn agreed_leader(&self, within: Duration) -> Result<usize> {
        wait::until(
            within,
            AGREE_POLL,
            &format!("the {} queens to agree on a leader", self.label),
            || self.leader(),
        )
    }

    /// One look: the index of the queen every live queen names as leader, if they all do.
    fn leader(&self) -> Option<usize> {
        let mut named: Option<String> = None;
        for queen in &self.live {
            let health = self.bench.control.health(queen).ok()?;
            if !health.is_ready() {
                return None;
            }
            let leader = health.leader?;
            if named.as_ref().is_some_and(|named| *named != leader) {
                return None;
            }
            named = Some(leader);
        }
        let named = named?;
        self.live.iter().position(|queen| queen.address() == named)
    }
}
