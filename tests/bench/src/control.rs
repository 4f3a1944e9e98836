//! The bench's own calls to a queen, apart from the measured load: reading `/drones` and
//! `/healthz` (and a drone's own `/healthz?verbose`), and registering fake drones, through one
//! HTTP client with a limit on every call; over HTTPS for a hive that serves TLS.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hive::tls::ClientTls;
use hive_support::larve::Larve;
use serde::Deserialize;
use ureq::Agent;

use crate::Result;

/// Limit for one control call; a `/drones` of 1,000 drones is ~200 KB.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Kept-alive connections per queen: the detection scenario polls two queens from two threads.
const IDLE_CONNECTIONS_PER_QUEEN: usize = 4;

/// One drone as `GET /drones` shows it; only the fields the scenarios read.
#[derive(Deserialize)]
pub struct DroneEntry {
    pub name: String,
    pub address: String,
    pub last_seen: f64,
    pub failures: u32,
}

/// Now in Unix seconds, the clock of [`DroneEntry::last_seen`].
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A queen's `GET /healthz`; only the fields the scenarios read.
#[derive(Deserialize)]
pub struct QueenHealth {
    pub status: String,
    /// `host:port` of the queen that leads, when she shares etcd and one does.
    pub leader: Option<String>,
    /// Address → name of every drone she knows: shown to holders of the cluster token, and to
    /// everyone when the queen has none (as in the bench).
    pub drones: Option<BTreeMap<String, String>>,
}

impl QueenHealth {
    /// Whether she serves: a queen on etcd is not ready until she has read the registry.
    pub fn is_ready(&self) -> bool {
        self.status == READY
    }
}

/// A Hive drone's `GET /healthz?verbose` (to a caller with the token, or to anyone without one);
/// only what the scenarios read.
#[derive(Deserialize)]
pub struct DroneHealth {
    /// Slots its running attempts take now, by its own count.
    pub used: u32,
}

/// A larve's `status` once it serves.
const READY: &str = "Status.READY";

/// The control client.
pub struct Control {
    agent: Agent,
    /// `http`, or `https` for larves that serve TLS.
    scheme: &'static str,
}

impl Control {
    /// A client that reports every status as a response (a non-200 is an error here, said in
    /// words), with a limit on each whole call.
    pub fn new() -> Control {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CONTROL_TIMEOUT))
            .max_idle_connections_per_host(IDLE_CONNECTIONS_PER_QUEEN)
            .build()
            .into();
        Control {
            agent,
            scheme: "http",
        }
    }

    /// [`Control::new`] over HTTPS, trusting the CA whose certificate is at `ca` and showing no
    /// certificate of its own (as a user without one; the larves it asks must not require one).
    pub fn https(ca: &Path) -> Result<Control> {
        let tls = ClientTls::user(ca, None)?;
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CONTROL_TIMEOUT))
            .max_idle_connections_per_host(IDLE_CONNECTIONS_PER_QUEEN)
            .tls_config(tls.ureq_config())
            .build()
            .into();
        Ok(Control {
            agent,
            scheme: "https",
        })
    }

    /// The URL of `path` on `larve`.
    fn url(&self, larve: &Larve, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, larve.address())
    }

    /// The status and whole body of `GET url`.
    fn get(&self, url: &str) -> Result<(u16, Vec<u8>)> {
        get(&self.agent, url, None)
    }

    /// `GET url` answered 200 with JSON of type `T`.
    fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let (status, body) = self.get(url)?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// The queen's `GET /drones`.
    pub fn list(&self, queen: &Larve) -> Result<Vec<DroneEntry>> {
        self.get_json(&self.url(queen, "/drones"))
    }

    /// The queen's `GET /healthz`, whatever her status (a queen not ready answers 200 too).
    pub fn health(&self, queen: &Larve) -> Result<QueenHealth> {
        self.get_json(&self.url(queen, "/healthz"))
    }

    /// A drone's own view of what it runs: its `GET /healthz?verbose`.
    pub fn drone_health(&self, drone: &Larve) -> Result<DroneHealth> {
        self.get_json(&self.url(drone, "/healthz?verbose"))
    }

    /// Whether `queen`'s `/healthz` lists every address in `addresses`.
    pub fn lists_all(&self, queen: &Larve, addresses: &[String]) -> bool {
        self.health(queen).is_ok_and(|health| {
            health
                .drones
                .is_some_and(|drones| addresses.iter().all(|a| drones.contains_key(a)))
        })
    }

    /// The addresses in the queen's `/drones`.
    pub fn listed(&self, queen: &Larve) -> Result<HashSet<String>> {
        Ok(self.list(queen)?.into_iter().map(|d| d.address).collect())
    }

    /// Registers `address` with the queen by hand and returns her answer's status, which may be a
    /// refusal (a queen on etcd answers 503 while etcd is slow). `Err` only when she did not
    /// answer at all.
    pub fn register_status(&self, queen: &Larve, address: &str) -> Result<u16> {
        let url = self.url(queen, "/register");
        let body = serde_json::json!({ "address": address }).to_string();
        let mut reply = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| format!("POST {url}: {e}"))?;
        let _ = reply.body_mut().read_to_vec();
        Ok(reply.status().as_u16())
    }
}

/// The status and whole body of `GET url` with `agent`, within `limit` when one is given (else the
/// agent's own).
pub fn get(agent: &Agent, url: &str, limit: Option<Duration>) -> Result<(u16, Vec<u8>)> {
    let mut request = agent.get(url).config();
    if let Some(limit) = limit {
        request = request.timeout_global(Some(limit));
    }
    let mut reply = request
        .build()
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = reply.status().as_u16();
    let body = reply
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok((status, body))
}
