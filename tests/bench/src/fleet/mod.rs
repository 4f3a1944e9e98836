//! A simulated fleet: fake drones on loopback, ten thousand in one process, so a queen can be
//! measured holding a fleet (the liveness scenarios) and queens can take a thousand registrations
//! (several queens).
//!
//! - **Answering drones** ([`server`]): one thread serves every one of them, their listeners and
//!   connections on one epoll. Some **renew leases** as Hive drones do ([`leases`]: registered by
//!   [`Fleet::join`], renewed by a few threads for all of them); the others (**good**) only answer
//!   probes, as the tutorial's do, and are registered by the caller.
//! - **Refusing drones** are ports that were bound and closed: a probe is refused at once.
//! - **Silent drones** are listeners that never accept: the kernel completes connections into
//!   their backlog and nothing ever answers, so each probe try waits out its timeout.
//!
//! The process's descriptor limit is raised to what the fleet needs. Dropping the [`Fleet`] stops
//! every thread it started.

mod leases;
mod server;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::{Result, progress};
use leases::Lease;
pub use leases::Renewals;
pub use server::Asked;
use server::{Answering, TUTORIAL_HEALTH};

/// Descriptors beyond one per drone: connections being served, the bench's own calls, wrk's
/// output, the larves' logs.
const DESCRIPTOR_MARGIN: u64 = 4096;

/// Threads that renew the leases of every renewing drone: several, so a slow queen's answers do
/// not make the others late.
pub const RENEW_THREADS: usize = 16;

/// Registrations of renewing drones, retried on anything but a 200 until this passes.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Connections a fake drone's kernel completes before it accepts them: std's own.
const LISTEN_BACKLOG: i32 = 128;

/// How long stopping the fleet waits for its threads.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many fake drones of each kind to simulate.
#[derive(Clone, Copy)]
pub struct FleetSize {
    /// Answering drones that renew leases (as Hive drones do).
    pub renewing: usize,
    /// Answering drones that only answer probes (as the tutorial's do).
    pub good: usize,
    pub refusing: usize,
    pub silent: usize,
}

impl FleetSize {
    pub fn total(&self) -> usize {
        self.answering() + self.refusing + self.silent
    }

    /// Drones that answer: renewing and good.
    pub fn answering(&self) -> usize {
        self.renewing + self.good
    }
}

/// The fleet's addresses by kind, what its drones were asked, and what its leases did.
pub struct Fleet {
    pub renewing: Vec<String>,
    pub good: Vec<String>,
    pub refusing: Vec<String>,
    pub silent: Vec<String>,
    /// Probes and tasks the answering drones were asked for.
    pub asked: Arc<Asked>,
    /// What the renewing drones' leases did.
    pub renewals: Arc<Renewals>,
    /// Each renewing drone's boot id.
    boots: Vec<String>,
    /// Held open, never accepted from.
    silent_listeners: Vec<TcpListener>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Binds every fake drone and starts serving the answering ones.
    pub fn start(size: FleetSize) -> Result<Fleet> {
        let limit = server::raise_descriptor_limit(size.total() as u64 + DESCRIPTOR_MARGIN)?;
        if size.total() > 1000 {
            progress(&format!("descriptor limit {limit}"));
        }
        let bind = || {
            let listener = bind().map_err(|e| format!("cannot bind a fake drone: {e}"))?;
            let address = listener
                .local_addr()
                .map_err(|e| format!("fake drone address: {e}"))?
                .to_string();
            Ok::<_, String>((listener, address))
        };
        let mut fleet = Fleet {
            renewing: Vec::new(),
            good: Vec::new(),
            refusing: Vec::new(),
            silent: Vec::new(),
            asked: Arc::default(),
            renewals: Arc::default(),
            boots: Vec::new(),
            silent_listeners: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let mut answering = Vec::new();
        for i in 0..size.answering() {
            let (listener, address) = bind()?;
            let renews = i < size.renewing;
            let health = if renews {
                let boot = format!("{:032x}", fastrand::u128(..));
                let health = format!(
                    r#"{{"status":"Status.READY","version":"0.0.1","mode":"Mode.DRONE","boot":"{boot}","exec":false,"slots":0,"used":0,"running":[],"ended":[]}}"#
                );
                fleet.boots.push(boot);
                fleet.renewing.push(address);
                health
            } else {
                fleet.good.push(address);
                TUTORIAL_HEALTH.to_string()
            };
            answering.push(Answering {
                listener,
                health,
                renews,
            });
        }
        for _ in 0..size.silent {
            let (listener, address) = bind()?;
            fleet.silent_listeners.push(listener);
            fleet.silent.push(address);
        }
        // Bound together and closed last, so no port is handed out twice, and none of these freed
        // ports goes to another fake drone.
        let mut closing = Vec::new();
        for _ in 0..size.refusing {
            let (listener, address) = bind()?;
            closing.push(listener);
            fleet.refusing.push(address);
        }
        drop(closing);
        let served = server::start(answering, fleet.stop.clone(), fleet.asked.clone())
            .map_err(|e| format!("cannot start the fleet's server: {e}"))?;
        fleet.threads.push(served);
        Ok(fleet)
    }

    /// Registers every renewing drone as a Hive drone does, drone i through `queens[i mod n]`
    /// (each told every queen, to renew with the others when one fails), from `clients` threads,
    /// then starts renewing their leases.
    pub fn join(&mut self, queens: &[String], clients: usize) -> Result<()> {
        let leases: Vec<Lease> = self
            .renewing
            .iter()
            .zip(&self.boots)
            .enumerate()
            .map(|(i, (address, boot))| Lease::new(address, boot, queens, i))
            .collect();
        let clients = clients.max(1);
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut shares: Vec<Vec<Lease>> = (0..clients).map(|_| Vec::new()).collect();
        for (i, lease) in leases.into_iter().enumerate() {
            shares[i % clients].push(lease);
        }
        let registered: Vec<Lease> = thread::scope(|scope| {
            let workers: Vec<_> = shares
                .into_iter()
                .map(|mut share| {
                    scope.spawn(move || -> Result<Vec<Lease>> {
                        for lease in &mut share {
                            while let Err(why) = lease.register() {
                                if Instant::now() > deadline {
                                    return Err(format!(
                                        "gave up registering {}: {why}",
                                        lease.address
                                    ));
                                }
                                thread::sleep(JOIN_RETRY_PAUSE);
                            }
                        }
                        Ok(share)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for worker in workers {
                all.extend(
                    worker
                        .join()
                        .unwrap_or_else(|_| Err("a registering thread panicked".into()))?,
                );
            }
            Ok::<_, String>(all)
        })?;
        let started = leases::start(registered, RENEW_THREADS, &self.stop, &self.renewals)
            .map_err(|e| format!("cannot start the fleet's renewing threads: {e}"))?;
        self.threads.extend(started);
        Ok(())
    }
}

/// A listener on a free loopback port. First without `SO_REUSEADDR`, which std's `bind` sets: with
/// it, Linux looks for a free port in a way that slows with every port taken (11,000 took 40 s).
/// Without it a port that still has connections in TIME_WAIT is not free, so when those fill the
/// range (an earlier fleet's), std's way is the one that finds a port.
fn bind() -> std::io::Result<TcpListener> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    match socket.bind(&loopback.into()) {
        Ok(()) => {
            socket.listen(LISTEN_BACKLOG)?;
            Ok(socket.into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => TcpListener::bind(loopback),
        Err(e) => Err(e),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.silent_listeners.clear();
        let deadline = Instant::now() + STOP_TIMEOUT;
        for thread in self.threads.drain(..) {
            // A thread still running after the deadline is a fake drone's, harmless to leave.
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
