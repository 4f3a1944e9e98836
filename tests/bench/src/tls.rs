//! TLS for the scenarios that measure it: a client that times a whole HTTPS request on a new
//! connection, handshake included (the certificates are `hive_support::pki`'s, made in the run's
//! directory).
//!
//! The client is rustls, the stack the larve serves with; it trusts only the hive's CA and shows
//! no certificate, so it is a user's client, for queens started without `--tls-verify-clients`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_support::rawhttp::{self, Answer, HEALTHZ_REQUEST};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::Result;

/// Bytes read at a time while waiting for an answer's head.
const READ_CHUNK_BYTES: usize = 4096;

/// The shortest socket timeout to set: a zero one is refused.
const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(1);

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
