//! Certificates for the TLS tests, made with the `openssl` command as a user would, and HTTPS
//! clients that show them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

static NEXT_PKI: AtomicUsize = AtomicUsize::new(0);

/// A certificate authority in a temporary directory, removed when dropped, and the certificates it
/// signs: ECDSA P-256 keys, each certificate good for 127.0.0.1 and localhost, for servers and
/// clients alike (as `scripts/hive-up.sh --tls` makes them).
pub struct Pki {
    pub dir: PathBuf,
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

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let n = NEXT_PKI.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hive-pki-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("the PKI's directory");
        let pki = Pki { dir };
        let (key, cert) = (pki.path("ca.key"), pki.path("ca.pem"));
        new_key(&["-x509", "-days", "30"], &key, &cert, name);
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The CA's certificate, what `--tls-ca` takes.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `name`, signed by this CA.
    pub fn issue(&self, name: &str) -> Identity {
        self.issue_for_days(name, 30)
    }

    /// A certificate for `name` that expired yesterday.
    pub fn expired(&self, name: &str) -> Identity {
        self.issue_for_days(name, -1)
    }

    fn issue_for_days(&self, name: &str, days: i32) -> Identity {
        let (key, csr, cert, ext) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.ext")),
        );
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("the extensions file");
        new_key(&[], &key, &csr, name);
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
        ]);
        Identity {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// What a larve of this PKI is started with: its certificate, and this CA to trust.
    pub fn larve_flags(&self, identity: &Identity) -> Vec<String> {
        let mut flags = identity.flags();
        flags.extend(["--tls-ca".into(), self.ca().display().to_string()]);
        flags
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An HTTPS client that trusts `ca` and shows `identity` when given one.
pub fn agent(ca: &Path, identity: Option<&Identity>) -> ureq::Agent {
    let pem = |path: &Path| fs::read(path).expect("a PEM file");
    let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem(ca))
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    let mut tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    if let Some(identity) = identity {
        let cert = Certificate::from_pem(&pem(&identity.cert)).expect("a certificate");
        let key = PrivateKey::from_pem(&pem(&identity.key)).expect("a key");
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls.build())
        .build()
        .into()
}

/// `GET url` with `agent`: the status and JSON body, or why no answer came.
pub fn get_with(agent: &ureq::Agent, url: &str) -> Result<(u16, Value), String> {
    let mut reply = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = reply.status().as_u16();
    let body = reply
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let json = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((status, json))
}

/// A new P-256 key in `key`, and a request for `name` in `out` (with `-x509` among `extra`: a
/// self-signed certificate).
fn new_key(extra: &[&str], key: &str, out: &str, name: &str) {
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
    openssl(&args);
}
