//! TLS for a larve, server side and client side, with one stack: rustls 0.23 on the ring provider.
//!
//! A larve given `--tls-cert`, `--tls-key` and `--tls-ca` serves HTTPS (its front door terminates
//! TLS, see `front/`) and calls the larves it talks to over HTTPS, trusting only that CA and showing
//! its own certificate, so with `--tls-verify-clients` on every larve each leg is mutual TLS. etcd
//! gets a client side of its own (`--etcd-ca`, `--etcd-cert`, `--etcd-key`), since its CA is often
//! not the hive's. Everything is loaded and checked once, by the CLI: a missing file, a key that
//! does not match its certificate or a CA file without a certificate stops the larve before it
//! starts, with the reason.
//!
//! Hive trusts only the CAs it is given, never the web's roots: a hive is a closed group.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// The one crypto provider of the process, for both sides.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a larve serves HTTPS with, ready for each new connection.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Whether a client must show a certificate signed by the CA.
    pub verify_clients: bool,
    /// The files it was loaded from: what `Debug` shows and what equality compares.
    files: Vec<PathBuf>,
}

/// What a larve (or a queen's etcd gateway) calls HTTPS peers with: the CA it trusts, and the
/// certificate it shows when it has one.
#[derive(Clone)]
pub struct ClientTls {
    config: TlsConfig,
    /// The same trust and certificate as rustls takes them, for calls made on sockets of Hive's
    /// own (the queen's prober drives a `rustls::ClientConnection` itself).
    rustls: Arc<ClientConfig>,
    files: Vec<PathBuf>,
}

/// A larve's TLS: the server side and, with the same certificate, the client side.
#[derive(Clone, Debug, PartialEq)]
pub struct LarveTls {
    pub server: ServerTls,
    pub client: ClientTls,
}

impl LarveTls {
    /// Loads `cert` (PEM, the larve's certificate then any intermediates), `key` (PEM) and `ca`
    /// (PEM, one or more certificates) and checks that they make a working TLS set-up.
    pub fn load(cert: &Path, key: &Path, ca: &Path, verify_clients: bool) -> Result<Self, String> {
        let chain = certificates(cert, "--tls-cert")?;
        let private = private_key(key, "--tls-key")?;
        let roots = certificates(ca, "--tls-ca")?;
        let server = server_config(&chain, &private, &roots, verify_clients)?;
        let (client, rustls) = client_config(&roots, Some((&chain, &private)))?;
        let files = vec![cert.to_path_buf(), key.to_path_buf(), ca.to_path_buf()];
        Ok(LarveTls {
            server: ServerTls {
                config: Arc::new(server),
                verify_clients,
                files: files.clone(),
            },
            client: ClientTls {
                config: client,
                rustls: Arc::new(rustls),
                files,
            },
        })
    }
}

impl ClientTls {
    /// What a queen reaches etcd with: trust in the CA in `ca` (`--etcd-ca`) and, given
    /// `identity`, the certificate and key it shows (`--etcd-cert`, `--etcd-key`).
    pub fn etcd(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, String> {
        ClientTls::from_files(ca, identity, ["--etcd-ca", "--etcd-cert", "--etcd-key"])
    }

    /// What the command-line client reaches a queen with: `--tls-ca`, and the `--tls-cert` and
    /// `--tls-key` it shows a queen that verifies clients.
    pub fn user(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, String> {
        ClientTls::from_files(ca, identity, ["--tls-ca", "--tls-cert", "--tls-key"])
    }

    /// Trust in the CA in `ca` and, given `identity`, the certificate and key shown; `flags` name
    /// the three files in errors.
    fn from_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        [ca_flag, cert_flag, key_flag]: [&str; 3],
    ) -> Result<Self, String> {
        let roots = certificates(ca, ca_flag)?;
        let mut files = vec![ca.to_path_buf()];
        let loaded = match identity {
            Some((cert, key)) => {
                files.extend([cert.to_path_buf(), key.to_path_buf()]);
                let chain = certificates(cert, cert_flag)?;
                Some((chain, private_key(key, key_flag)?))
            }
            None => None,
        };
        let (config, rustls) =
            client_config(&roots, loaded.as_ref().map(|(c, k)| (c.as_slice(), k)))?;
        Ok(ClientTls {
            config,
            rustls: Arc::new(rustls),
            files,
        })
    }

    /// The configuration a ureq agent takes.
    pub fn ureq_config(&self) -> TlsConfig {
        self.config.clone()
    }

    /// The configuration a `rustls::ClientConnection` takes.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.rustls.clone()
    }
}

fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let list: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if list.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(list)
}

/// The private key in the PEM file at `path`, for rustls and for ureq.
fn private_key(path: &Path, flag: &str) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let missing =
        |e: &dyn fmt::Display| format!("{flag} {}: no PEM private key in it ({e})", path.display());
    Ok(Key {
        rustls: PrivateKeyDer::from_pem_slice(&pem).map_err(|e| missing(&e))?,
        ureq: PrivateKey::from_pem(&pem).map_err(|e| missing(&e))?,
    })
}

/// A private key, as each side's crate takes it.
struct Key {
    rustls: PrivateKeyDer<'static>,
    ureq: PrivateKey<'static>,
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| format!("a CA certificate cannot be trusted: {e}"))?;
    }
    Ok(store)
}

fn server_config(
    chain: &[CertificateDer<'static>],
    key: &Key,
    roots: &[CertificateDer<'static>],
    verify_clients: bool,
) -> Result<ServerConfig, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = if verify_clients {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(roots)?), provider)
                .build()
                .map_err(|e| format!("--tls-ca: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(chain.to_vec(), key.rustls.clone_key())
        .map_err(|e| format!("--tls-cert and --tls-key do not make a usable pair: {e}"))
}

/// ureq's TLS settings, and the same as a rustls configuration: built here once, so a certificate
/// ureq could not use is refused now with a reason rather than when the first call is made.
fn client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<(&[CertificateDer<'static>], &Key)>,
) -> Result<(TlsConfig, ClientConfig), String> {
    let provider = provider();
    let check = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(root_store(roots)?);
    let roots: Vec<Certificate<'static>> = roots
        .iter()
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    let mut config = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(provider);
    let rustls = match identity {
        Some((chain, key)) => {
            let rustls = check
                .with_client_auth_cert(chain.to_vec(), key.rustls.clone_key())
                .map_err(|e| format!("the client certificate and key are not usable: {e}"))?;
            let chain: Vec<Certificate<'static>> = chain
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .collect();
            let identity = ClientCert::new_with_certs(&chain, key.ureq.to_owned());
            config = config.client_cert(Some(identity));
            rustls
        }
        None => check.with_no_client_auth(),
    };
    Ok((config.build(), rustls))
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("verify_clients", &self.verify_clients)
            .finish()
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish()
    }
}

/// Two are the same set-up when loaded from the same files (what a configuration compares).
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.verify_clients == other.verify_clients
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}
