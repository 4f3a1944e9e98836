//! TLS for the scenarios that measure it: certificates made with the `openssl` command in the
//! run's directory (as a user would, and as `scripts/hive-up.sh --tls` does), and a client that
//! times a whole HTTPS request on a new connection, handshake included, or sends the opening of one
//! and stops.
//!
//! The client is rustls, the stack the larve serves with; it trusts only the hive's CA and shows
//! no certificate, so it is a user's client, for queens started without `--tls-verify-clients`.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_support::rawhttp::{self, Answer, HEALTHZ_REQUEST};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::Result;

/// How long the certificates are good for: far longer than a run.
const VALID_DAYS: &str = "30";

/// What every certificate is good for: the loopback address larves listen on, as servers and as
/// clients of each other.
const EXTENSIONS: &str =
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";

/// A TLS alert record: a warning (1), `close_notify` (0), after a TLS 1.2 record header.
pub const CLOSE_NOTIFY: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00];

/// Bytes read at a time while waiting for an answer's head.
const READ_CHUNK_BYTES: usize = 4096;

/// The shortest socket timeout to set: a zero one is refused.
const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(1);

/// A CA and the one certificate every larve of a hive serves and calls with (ECDSA P-256), in a
/// directory of the run.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes the CA and the larves' certificate in `dir`.
    pub fn make(dir: &Path) -> Result<Pki> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let path = |file: &str| pki.dir.join(file).to_string_lossy().into_owned();
        let (ca_key, ca) = (path("ca.key"), path("ca.pem"));
        let (key, csr, cert, ext) = (
            path("larve.key"),
            path("larve.csr"),
            path("larve.pem"),
            path("larve.ext"),
        );
        let key_options = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &key_options,
                &["-keyout", &ca_key, "-out", &ca, "-days", VALID_DAYS],
                &["-subj", "/CN=hive-bench CA"],
            ]
            .concat(),
        )?;
        fs::write(&ext, EXTENSIONS).map_err(|e| format!("{ext}: {e}"))?;
        openssl(
            &[
                &["req"][..],
                &key_options,
                &["-keyout", &key, "-out", &csr, "-subj", "/CN=larve"],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            VALID_DAYS,
            "-extfile",
            &ext,
        ])?;
        Ok(pki)
    }

    /// The CA's certificate: what `--tls-ca` takes and what clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `--tls-cert CERT --tls-key KEY --tls-ca CA`: a larve that serves HTTPS and calls the others
    /// over HTTPS, showing its certificate.
    pub fn larve_flags(&self) -> Vec<String> {
        let file = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
        vec![
            "--tls-cert".into(),
            file("larve.pem"),
            "--tls-key".into(),
            file("larve.key"),
            "--tls-ca".into(),
            file("ca.pem"),
        ]
    }
}

/// Runs `openssl` with `args`; its error output is the error.
fn openssl(args: &[&str]) -> Result<()> {
    let output = Command::new("openssl").args(args).output().map_err(|e| {
        format!("cannot run openssl (install it, e.g. apt-get install -y openssl): {e}")
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The rustls provider the larve uses too.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS client that trusts one CA and shows no certificate.
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// A client that trusts the CA certificate(s) at `ca`.
    pub fn trusting(ca: &Path) -> Result<TlsClient> {
        let mut roots = RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(ca)
            .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Asks `GET /healthz` over a new TLS connection to `address` (`IP:PORT`): the answer, and how
    /// long it took from `connect()` to the answer's head, handshake included, all within `limit`.
    /// A failed handshake is [`Answer::Closed`].
    pub fn healthz(&self, address: &str, limit: Duration) -> (Answer, Duration) {
        let started = Instant::now();
        let deadline = started + limit;
        let answer = match rawhttp::connect(address, deadline) {
            Ok(tcp) => self.ask(tcp, deadline),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Answer::Silent,
            Err(_) => Answer::Closed,
        };
        (answer, started.elapsed())
    }

    /// The handshake, `GET /healthz` and the answer's status on `tcp`, by `deadline`.
    fn ask(&self, tcp: TcpStream, deadline: Instant) -> Answer {
        let Ok(peer) = tcp.peer_addr() else {
            return Answer::Closed;
        };
        let Ok(connection) = ClientConnection::new(self.config.clone(), server_name(peer)) else {
            return Answer::Closed;
        };
        let mut tls = StreamOwned::new(connection, tcp);
        let left = || deadline.saturating_duration_since(Instant::now());
        if set_timeouts(&tls.sock, left()).is_err() {
            return Answer::Closed;
        }
        // The first write runs the handshake.
        match tls.write_all(HEALTHZ_REQUEST).and_then(|()| tls.flush()) {
            Ok(()) => {}
            Err(e) if timed_out(&e) => return Answer::Silent,
            Err(_) => return Answer::Closed,
        }
        let mut head = Vec::new();
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            if let Some(answer) = rawhttp::answer_in(&head) {
                return answer;
            }
            if left().is_zero() || set_timeouts(&tls.sock, left()).is_err() {
                return Answer::Silent;
            }
            match tls.read(&mut chunk) {
                Ok(0) => return Answer::Closed,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Answer::Silent,
                Err(_) => return Answer::Closed,
            }
        }
    }
}

/// The name a larve's certificate is checked against: its address.
fn server_name(peer: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(peer.ip().into())
}

fn set_timeouts(tcp: &TcpStream, left: Duration) -> io::Result<()> {
    let timeout = Some(left.max(MIN_SOCKET_TIMEOUT));
    tcp.set_read_timeout(timeout)?;
    tcp.set_write_timeout(timeout)
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A real ClientHello (made by rustls for `localhost`), as the first bytes a TLS client sends.
pub fn client_hello() -> Result<Vec<u8>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut client =
        ClientConnection::new(Arc::new(config), name).map_err(|e| format!("a ClientHello: {e}"))?;
    let mut hello = Vec::new();
    client
        .write_tls(&mut hello)
        .map_err(|e| format!("a ClientHello: {e}"))?;
    Ok(hello)
}
