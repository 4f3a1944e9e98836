//! The bench's own calls to a queen, apart from the measured load: reading `/drones` and
//! registering fake drones, through one HTTP client with a limit on every call.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use ureq::Agent;

use crate::Result;
use crate::larve::Larve;

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

/// The control client.
pub struct Control {
    agent: Agent,
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
        Control { agent }
    }

    /// The queen's `GET /drones`.
    pub fn list(&self, queen: &Larve) -> Result<Vec<DroneEntry>> {
        let url = format!("http://{}/drones", queen.address());
        let mut reply = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = reply.status().as_u16();
        let body = reply
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// The addresses in the queen's `/drones`.
    pub fn listed(&self, queen: &Larve) -> Result<HashSet<String>> {
        Ok(self.list(queen)?.into_iter().map(|d| d.address).collect())
    }

    /// Registers `address` with the queen by hand, as a drone would.
    pub fn register(&self, queen: &Larve, address: &str) -> Result<()> {
        let url = format!("http://{}/register", queen.address());
        let body = serde_json::json!({ "address": address }).to_string();
        let mut reply = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = reply.status().as_u16();
        let _ = reply.body_mut().read_to_vec();
        if status == 200 {
            Ok(())
        } else {
            Err(format!("POST {url} {address}: HTTP {status}"))
        }
    }
}
