//! The drone: does the tasks it is handed, runs the attempts queens place on it (with
//! `--allow-exec`), reports how they ended, and keeps itself registered with its queens.
//!
//! - [`registration`]: registering, and registering again when its queens no longer know it;
//! - [`lease`]: renewing its lease with the leader every interval (with a Hive queen);
//! - [`attempts`]: the attempts it runs, its slots, and the ended ones waiting to be reported;
//! - [`logs`]: what its attempts print, kept in files, served and followed, until forgotten;
//! - [`capacity`]: the memory and cpus it offers, found on the machine at start;
//! - [`facts`]: its own `hive.*` labels, found at start and sent with its `--label`s;
//! - [`setup`]: how it runs commands: their containment, their user, their environment;
//! - [`reports`]: the thread that sends those reports to a queen until one records them;
//! - `exec` (at the crate's top): running one attempt's command.

pub mod attempts;
mod capacity;
mod facts;
mod lease;
pub mod logs;
mod registration;
mod reports;
mod setup;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Instant;

use log::info;
use parking_lot::Mutex;

use crate::auth::{Identity, Keyring, Token};
use crate::client::{Client, Credentials};
use crate::config::{DroneConfig, StartError};
use crate::error::{Error, Result};
use crate::exec::Stream;
use crate::exec::{self, Executor};
use crate::front::BodyLimits;
use crate::logging::{one_line, quoted};
use crate::tasks::new_boot;
use crate::tasks::wire::{DroneStatus, Forget, LogHead, StartAnswer, StartRequest};
use attempts::Attempts;
use logs::{LogBody, Logs};
use registration::Registration;

/// Handler threads of a drone; a task is a print, so a few are plenty.
pub const HANDLER_THREADS: usize = 8;

/// Bodies a drone takes beyond the default 64 KiB: a queen starts many attempts in one request.
pub const BODY_LIMITS: BodyLimits = BodyLimits {
    by_path: &[("/tasks", 2 * 1024 * 1024)],
};

/// The drone's state and what it does on each request.
pub struct Drone {
    /// Registered with its queen, and serving.
    ready: AtomicBool,
    /// Last time anyone probed `/healthz`: the sign that the queen still knows this drone.
    last_checked: Mutex<Instant>,
    /// New at each start of the process: a queen that sees it change knows this drone forgot
    /// (and ended) every attempt it ran before.
    boot: String,
    /// Slots, with `--allow-exec`; `None`: this drone runs no commands.
    exec_slots: Option<u32>,
    /// What its queens gave it at registration: it shows it to report, and takes attempts only
    /// from callers that show it (see `auth.rs`). `None` until a Hive queen has registered it.
    credential: Mutex<Option<Token>>,
    /// The attempts, once the drone serves (with `--allow-exec`).
    attempts: OnceLock<Arc<Attempts>>,
}

impl Drone {
    /// A drone that runs commands in `exec_slots` slots, or none (`None`).
    pub fn new(exec_slots: Option<u32>) -> Drone {
        Drone {
            ready: AtomicBool::new(false),
            last_checked: Mutex::new(Instant::now()),
            boot: new_boot(),
            exec_slots,
            credential: Mutex::new(None),
            attempts: OnceLock::new(),
        }
    }

    /// The credential its queens gave it, if any yet.
    pub fn credential(&self) -> Option<Token> {
        self.credential.lock().clone()
    }

    /// True once serving and registered with the queen.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Notes a `/healthz` probe: the queen (or someone) is checking on this drone.
    pub fn checked(&self) {
        *self.last_checked.lock() = Instant::now();
    }

    /// Does the task: prints its text to stdout as one line.
    pub fn do_task(&self, text: &str) -> Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", one_line(text))
            .map_err(|e| Error::Internal(format!("could not print the task: {e}")))
    }

    /// Who this drone is and what it runs, for a probe.
    pub fn status(&self) -> DroneStatus {
        let (used, running, ended) = self.attempts.get().map(|a| a.status()).unwrap_or_default();
        DroneStatus {
            boot: self.boot.clone(),
            exec: self.exec_slots.is_some(),
            slots: self.exec_slots.unwrap_or(0),
            used,
            running,
            ended,
        }
    }

    /// Starts the attempts a queen placed here.
    pub fn start(&self, request: StartRequest) -> Result<StartAnswer> {
        self.exec()?.start(request.attempts)
    }

    /// Stops the attempt `id`.
    pub fn stop(&self, id: &str) -> Result<()> {
        self.exec()?.stop(id)
    }

    /// `stream` of attempt `id` from `offset`, as it is written or (`follow`) as it comes.
    pub fn logs(
        &self,
        id: &str,
        stream: Stream,
        offset: u64,
        follow: bool,
    ) -> Result<(LogHead, LogBody)> {
        self.exec()?.logs().stream(id, stream, offset, follow)
    }

    /// Removes the logs of the attempts a queen has forgotten; says how many there were.
    pub fn forget(&self, forget: &Forget) -> Result<usize> {
        Ok(self.exec()?.logs().forget(&forget.attempts))
    }

    fn exec(&self) -> Result<&Arc<Attempts>> {
        if self.exec_slots.is_none() {
            return Err(Error::Forbidden(
                "this drone does not run commands (start it with --allow-exec)".into(),
            ));
        }
        self.attempts
            .get()
            .ok_or_else(|| Error::NotReady("this drone is starting; try again".into()))
    }
}

/// On a drone, a request showing this drone's credential is from one of its queens.
impl Keyring for Drone {
    fn identify(&self, authorization: &str) -> Option<Identity> {
        self.credential
            .lock()
            .as_ref()
            .is_some_and(|credential| credential.admits(Some(authorization)))
            .then_some(Identity::Queen)
    }
}

/// Once the drone serves at `local`: ends what a previous run left behind, starts the reporter
/// (with `--allow-exec`), then registers with a queen and keeps registered, on this thread, for
/// the life of the process. Returns only on a fatal error.
pub fn run(
    drone: &Arc<Drone>,
    local: SocketAddr,
    credentials: Credentials,
    config: DroneConfig,
) -> StartError {
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    let token = credentials.token.clone();
    let client = Client::new(2, 2, credentials.clone());
    let renewals = Client::new(0, 0, credentials);
    // What it offers tasks, found once; its hive.cpus and hive.memory_mb labels say the same (a
    // drone that runs no commands: what its machine has).
    let offer = capacity::offered(config.memory_mb, config.cpus);
    let mut labels = facts::own_labels(offer);
    labels.extend(config.labels.clone());
    // Held for the life of the process: the work root's lock, and the pipe to the reaper that ends
    // this drone's attempts when the drone ends.
    let mut _watched = None;
    if let Some(slots) = drone.exec_slots {
        let root = config
            .work_dir
            .clone()
            .unwrap_or_else(|| default_work_dir(local));
        let lock = match exec::reaper::lock_root(&root, exec::reaper::LOCK_WAIT) {
            Ok(lock) => lock,
            Err(e) => {
                return StartError::Io(format!(
                    "cannot use the work directory {}: {e}",
                    root.display()
                ));
            }
        };
        // Before the reaper starts: on cgroup v2 the drone may have to move itself into a group
        // of its own (see exec/cgroup.rs), which a process beside it would prevent.
        let settings = match setup::settings(&config, &root, token.as_ref()) {
            Ok(settings) => settings,
            Err(why) => return StartError::Config(why),
        };
        _watched = Some(exec::reaper::watch(&root, lock));
        let executor = match Executor::new(root.clone(), settings) {
            Ok(executor) => executor,
            Err(e) => {
                return StartError::Io(format!(
                    "cannot use the work directory {}: {e}",
                    root.display()
                ));
            }
        };
        let logs = match Logs::open(&root, config.max_log_mb << 20) {
            Ok(logs) => Arc::new(logs),
            Err(e) => {
                return StartError::Io(format!(
                    "cannot keep logs in the work directory {}: {e}",
                    root.display()
                ));
            }
        };
        setup::announce(&executor, slots, offer, &root);
        capacity::protect_this_process();
        let sweeping = logs.clone();
        let spawned = thread::Builder::new()
            .name("log-sweep".into())
            .spawn(move || {
                loop {
                    thread::sleep(logs::SWEEP_EVERY);
                    sweeping.sweep(logs::MAX_AGE);
                }
            });
        if let Err(e) = spawned {
            return StartError::Io(format!("cannot start the log sweep thread: {e}"));
        }
        let attempts = Attempts::new(executor, logs, slots, offer, advertise.clone());
        attempts.reap_leftovers();
        let _ = drone.attempts.set(attempts.clone());
        let (reporter, client, queens, address) = (
            drone.clone(),
            client.clone(),
            config.queens.clone(),
            advertise.clone(),
        );
        let spawned = thread::Builder::new()
            .name("reports".into())
            .spawn(move || reports::run(&attempts, &client, &queens, &address, &reporter));
        if let Err(e) = spawned {
            return StartError::Io(format!("cannot start the reporter thread: {e}"));
        }
    }
    info!(
        "drone listening on {local}, known to queens as {}",
        quoted(&advertise)
    );
    Registration {
        drone: drone.clone(),
        client,
        renewals,
        queens: config.queens,
        current: 0,
        advertise,
        labels,
    }
    .run()
}

/// Where a drone on `local` runs attempts unless `--work-dir` says otherwise: one directory per
/// address, so a drone restarted on its address finds what it left behind.
fn default_work_dir(local: SocketAddr) -> PathBuf {
    std::env::temp_dir().join(format!("hive-drone-{}-{}", local.ip(), local.port()))
}
