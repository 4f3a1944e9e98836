//! Real etcd for the tests of several queens: one member or a cluster on free loopback ports, each
//! with its own temporary data directory, killed and removed by a `Drop` guard.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::tls::{self, Identity, Pki};
use super::{SOON, eventually, free_port};

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

/// One member: how to start it again, and the process while it runs.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster started for one test.
pub struct Etcd {
    members: Vec<Member>,
    dir: PathBuf,
    initial_cluster: String,
    tls: Option<EtcdTls>,
}

/// How an etcd serves its clients over TLS, requiring a client certificate.
struct EtcdTls {
    ca: PathBuf,
    server: Identity,
    /// What the tests show it.
    client: Identity,
}

impl Etcd {
    /// A single member, ready to serve.
    pub fn single() -> Etcd {
        Etcd::cluster(1)
    }

    /// `size` members on loopback, ready to serve. Heartbeat 10 ms and election timeout 50 ms
    /// make them healthy in well under a second.
    pub fn cluster(size: usize) -> Etcd {
        Etcd::start_cluster(size, None)
    }

    /// A single member that serves clients over TLS with a certificate from `pki`, and takes only
    /// clients with one from `pki` (as etcd's `--client-cert-auth` does).
    pub fn single_tls(pki: &Pki) -> Etcd {
        let tls = EtcdTls {
            ca: pki.ca(),
            server: pki.issue("etcd-server"),
            client: pki.issue("etcd-client"),
        };
        Etcd::start_cluster(1, Some(tls))
    }

    fn start_cluster(size: usize, tls: Option<EtcdTls>) -> Etcd {
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hive-etcd-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("etcd's temp dir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            dir,
            initial_cluster,
            tls,
        };
        for i in 0..size {
            etcd.start(i);
        }
        etcd.wait_ready();
        etcd
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// What a queen's `--etcd` takes: every member's client URL.
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What a queen adds to reach a TLS etcd: `--etcd-ca`, `--etcd-cert`, `--etcd-key`.
    pub fn tls_flags(&self) -> Vec<String> {
        let tls = self.tls.as_ref().expect("an etcd with TLS");
        vec![
            "--etcd-ca".into(),
            tls.ca.display().to_string(),
            "--etcd-cert".into(),
            tls.client.cert.display().to_string(),
            "--etcd-key".into(),
            tls.client.key.display().to_string(),
        ]
    }

    /// Starts member `i` (again), on its data directory.
    pub fn start(&mut self, i: usize) {
        let member = &self.members[i];
        let data = self.dir.join(&member.name);
        let log = fs::File::create(self.dir.join(format!("{}.log", member.name))).expect("log");
        let client = format!("{}://127.0.0.1:{}", self.scheme(), member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.cert)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (is it installed? scripts/test.sh installs etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Kills member `i` with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends member `i` a signal by `kill`'s name for it: `STOP` leaves its ports accepting
    /// connections that nothing answers, as a hung member does; `CONT` wakes it.
    pub fn signal(&self, i: usize, name: &str) {
        let child = self.members[i].child.as_ref().expect("a running member");
        let status = Command::new("kill")
            .args([format!("-{name}"), child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits until every running member says it is healthy (the cluster has a leader).
    pub fn wait_ready(&self) {
        let agent: ureq::Agent = match &self.tls {
            Some(tls) => tls::agent(&tls.ca, Some(&tls.client)),
            None => ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_millis(500)))
                .build()
                .into(),
        };
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            eventually(SOON, "etcd to be healthy", || {
                let mut answer = agent
                    .get(format!(
                        "{}://127.0.0.1:{}/health",
                        self.scheme(),
                        member.client_port
                    ))
                    .call()
                    .ok()?;
                let body = answer.body_mut().read_to_string().ok()?;
                body.contains("\"true\"").then_some(())
            });
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for member in &self.members {
                let log = fs::read_to_string(self.dir.join(format!("{}.log", member.name)));
                let tail: String = log
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n");
                eprintln!(
                    "--- etcd {} log (last lines, newest first) ---\n{tail}",
                    member.name
                );
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
