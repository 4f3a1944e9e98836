//! Certificates for TLS, made with the `openssl` command as a user would (and as
//! `scripts/hive-up.sh --tls` does): a CA and the certificates it signs, ECDSA P-256 keys, each
//! certificate good for 127.0.0.1 and localhost, for servers and clients alike. Also the opening
//! bytes of a real TLS client, for tests that send one and stop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::Result;
use crate::workdir::WorkDir;

/// What every certificate is good for: the loopback address larves listen on, as servers and as
/// clients of each other.
const EXTENSIONS: &str =
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";

/// How long certificates are good for: far longer than a run.
const VALID_DAYS: i32 = 30;

/// A TLS alert record: a warning (1), `close_notify` (0), after a TLS 1.2 record header.
pub const CLOSE_NOTIFY: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00];

/// A certificate authority in a directory, and the certificates it signs there.
pub struct Pki {
    dir: PathBuf,
    /// The temporary directory the CA lives in, removed when dropped (none: the caller's).
    _temporary: Option<WorkDir>,
}

/// A certificate and its key.
#[derive(Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    /// `--tls-cert CERT --tls-key KEY`.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Pki {
    /// A new CA named `name` in `dir`, which stays when the `Pki` is dropped.
    pub fn create(dir: &Path, name: &str) -> Result<Pki> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Pki::make(dir.to_path_buf(), None, name)
    }

    /// A new CA named `name` in a temporary directory, removed when the `Pki` is dropped.
    pub fn temporary(name: &str) -> Result<Pki> {
        let dir = WorkDir::create("hive-pki")?;
        Pki::make(dir.path().to_path_buf(), Some(dir), name)
    }

    fn make(dir: PathBuf, temporary: Option<WorkDir>, name: &str) -> Result<Pki> {
        let pki = Pki {
            dir,
            _temporary: temporary,
        };
        let days = VALID_DAYS.to_string();
        new_key(
            &["-x509", "-days", &days],
            &pki.path("ca.key"),
            &pki.path("ca.pem"),
            name,
        )?;
        Ok(pki)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The CA's certificate: what `--tls-ca` takes and what clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `name`, signed by this CA.
    pub fn issue(&self, name: &str) -> Result<Identity> {
        self.issue_for_days(name, VALID_DAYS)
    }

    /// A certificate for `name` that expired yesterday.
    pub fn expired(&self, name: &str) -> Result<Identity> {
        self.issue_for_days(name, -1)
    }

    fn issue_for_days(&self, name: &str, days: i32) -> Result<Identity> {
        let (key, csr, cert, ext) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.ext")),
        );
        fs::write(&ext, EXTENSIONS).map_err(|e| format!("{ext}: {e}"))?;
        new_key(&[], &key, &csr, name)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.path("ca.pem"),
            "-CAkey",
            &self.path("ca.key"),
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            &days.to_string(),
            "-extfile",
            &ext,
        ])?;
        Ok(Identity {
            cert: cert.into(),
            key: key.into(),
        })
    }

    /// What a larve of this PKI is started with: `identity`'s certificate, and this CA to trust
    /// (`--tls-cert CERT --tls-key KEY --tls-ca CA`).
    pub fn larve_flags(&self, identity: &Identity) -> Vec<String> {
        let mut flags = identity.flags();
        flags.extend(["--tls-ca".into(), self.ca().display().to_string()]);
        flags
    }
}

/// A new P-256 key in `key`, and a request for `name` in `out` (with `-x509` among `extra`: a
/// self-signed certificate).
fn new_key(extra: &[&str], key: &str, out: &str, name: &str) -> Result<()> {
    let subject = format!("/CN={name}");
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    args.extend_from_slice(extra);
    args.extend(["-keyout", key, "-out", out, "-subj", &subject]);
    openssl(&args)
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

/// A real ClientHello (made by rustls, the larve's own stack, for `localhost`): the first bytes a
/// TLS client sends.
pub fn client_hello() -> Result<Vec<u8>> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut client = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("a ClientHello: {e}"))?;
    let mut hello = Vec::new();
    client
        .write_tls(&mut hello)
        .map_err(|e| format!("a ClientHello: {e}"))?;
    Ok(hello)
}
