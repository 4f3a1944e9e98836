//! What a larve was asked to be, and the one call that starts it.
//!
//! The CLI builds a [`Config`]; `larve::run` starts the role it names, which owns its threads from
//! then on. Nothing here touches the network.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::auth::{ClientTokens, Token};
use crate::exec::Mode;
use crate::labels::Labels;
use crate::tasks::placement::Policy;
use crate::tls::{ClientTls, LarveTls};

/// Everything a larve needs to start, whichever role it plays.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on. Loopback by default, so a laptop hive is not reachable from the network.
    pub bind: IpAddr,
    /// Port to listen on; 0 picks a free one (it is logged, and a drone advertises the real one).
    pub port: u16,
    /// Least severe log level written to stderr.
    pub log_level: LevelFilter,
    /// The cluster token; `None` leaves every endpoint open, as in the tutorial.
    pub token: Option<Token>,
    /// TLS for what the larve serves and the larves it calls; `None` is plain HTTP, as in the
    /// tutorial.
    pub tls: Option<LarveTls>,
    /// How many client connections the front door holds.
    pub connections: ConnectionLimits,
    /// Warnings to log as the larve starts: choices the command line allows but that expose it
    /// (see `cli::exposure`).
    pub warnings: Vec<String>,
    /// Queen or drone, with the settings only that role has.
    pub role: RoleConfig,
}

/// Caps on the client connections a larve holds at once (see `front/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// In all.
    pub total: usize,
    /// From one peer address.
    pub per_peer: usize,
}

impl Default for ConnectionLimits {
    /// A thread and a descriptor each: 2,048 is far below what a machine runs out of, and far above
    /// a hive's own traffic. Every process on one machine shares the address 127.0.0.1, a laptop
    /// hive's drones and load tools included, so one address may hold a quarter of them.
    fn default() -> Self {
        ConnectionLimits {
            total: 2048,
            per_peer: 512,
        }
    }
}

/// The two things a larve can be.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleConfig {
    Queen(QueenConfig),
    Drone(DroneConfig),
}

/// Settings only a queen has.
#[derive(Debug, Clone, PartialEq)]
pub struct QueenConfig {
    /// How the queen checks that drones are alive.
    pub heartbeat: HeartbeatConfig,
    /// Limit for handing one task to one drone, connect and answer together.
    pub task_timeout: Duration,
    /// `host:port` other queens and users know this queen by (the leader key names it); `None`
    /// means the bind address and port.
    pub advertise: Option<String>,
    /// Where the registry and the tasks live.
    pub store: StoreConfig,
    /// The client tokens she takes, each with its scope (`--client-tokens`).
    pub clients: ClientTokens,
    /// How tasks are queued, placed and kept.
    pub tasks: TaskConfig,
}

/// How a queen queues, places and keeps tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskConfig {
    /// Pending tasks at most; a create beyond is refused (429).
    pub max_pending: usize,
    /// Finished tasks kept, the most recently finished; older ones are deleted.
    pub keep_finished: usize,
    /// How the scheduler picks among drones that fit.
    pub placement: Policy,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            max_pending: 100_000,
            keep_finished: 10_000,
            placement: Policy::Spread,
        }
    }
}

/// Where a queen keeps her registry.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// In her own memory, as in the tutorial: one queen, and a restart forgets every drone until
    /// it registers again, and every task.
    Memory,
    /// In her memory and, before she answers for any change, in a data dir on her disk
    /// (`--data-dir`): one queen, and a restart (or a crash) forgets nothing.
    DataDir(PathBuf),
    /// In etcd, shared with every queen that names the same endpoints and prefix.
    Etcd(EtcdConfig),
}

/// How a queen reaches etcd and shares it with the other queens.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `host:port` of each etcd member's client URL, tried in order.
    pub endpoints: Vec<String>,
    /// Every key Hive writes starts with this; it ends with `/`.
    pub prefix: String,
    /// Lifetime of the leader's lease: a leader that stops renewing it is replaced this long after.
    pub leader_ttl: Duration,
    /// TLS to reach etcd (`https://` endpoints); `None` speaks plain HTTP to it.
    pub tls: Option<ClientTls>,
}

/// How often drones must show life, and how patiently the queen probes one that does not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatConfig {
    /// Drones renew their leases every interval; one that showed no life for an interval is
    /// probed (a drone that renews nothing, every interval on a slot of its own).
    pub interval: Duration,
    /// Tries of one probe; a drone that fails them all is removed.
    pub attempts: u32,
    /// Limit for one try, connect and answer together.
    pub timeout: Duration,
    /// Pause between two tries of the same drone.
    pub retry_delay: Duration,
}

impl HeartbeatConfig {
    /// The longest a dead drone can stay registered after its last sign of life: an interval,
    /// then every try of its probe timing out.
    pub fn detection_bound(&self) -> Duration {
        self.interval + (self.timeout + self.retry_delay) * self.attempts
    }
}

impl Default for HeartbeatConfig {
    /// The tutorial's loop: every 10 s, 4 tries (its `count < max_retry` with 5), 0.5 s apart; plus the
    /// 1 s timeout the tutorial lacks.
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(10),
            attempts: 4,
            timeout: Duration::from_secs(1),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// Settings only a drone has.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneConfig {
    /// `host:port` of each queen it may register with, tried in turn.
    pub queens: Vec<String>,
    /// `host:port` the queen is told to reach this drone at; `None` means the bind address and port.
    pub advertise: Option<String>,
    /// With `--allow-exec`: the slots of tasks it runs at once. `None`: it runs no commands.
    pub exec_slots: Option<u32>,
    /// Where attempts run, each in a fresh directory; `None`: a directory per address under the
    /// system's temporary directory.
    pub work_dir: Option<PathBuf>,
    /// What is kept of each output stream of an attempt at most, in MiB: `--max-log-mb`.
    pub max_log_mb: u64,
    /// What holds its attempts: `--containment`.
    pub containment: Mode,
    /// Under which cgroup its attempts' are made (a path in the hierarchies); `None`: a `hive`
    /// group under the drone's own.
    pub cgroup_parent: Option<String>,
    /// The user attempts run as; `None`: `nobody` for a drone run as root, else its own.
    pub run_as: Option<String>,
    /// Variables of the drone's environment its commands get beyond the allowed ones.
    pub pass_env: Vec<String>,
    /// The memory (MiB) and cpus its attempts may take together; `None`: what the machine has.
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    /// Its `--label`s (never a `hive.*` one: those it finds itself).
    pub labels: Labels,
}

/// Why a larve could not start or had to stop. Each maps to the process exit status in `exit_code`.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is wrong (exit 2), e.g. the queen refused this drone's registration.
    Config(String),
    /// The machine refused something (exit 1), e.g. the port is taken.
    Io(String),
}

impl StartError {
    /// The exit status: 2 for a configuration mistake, like a bad flag; 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::Io(_) => 1,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(why) | StartError::Io(why) => write!(f, "{why}"),
        }
    }
}
