//! Certificates for the TLS tests (made by `hive_support::pki` with the `openssl` command, as a
//! user would), and HTTPS clients that show them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use hive_support::pki::Identity;
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// A certificate authority in a temporary directory, removed when dropped: `hive_support`'s, with
/// calls that panic on what a test must never see.
pub struct Pki(hive_support::pki::Pki);

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        Pki(hive_support::pki::Pki::temporary(name).unwrap_or_else(|why| panic!("{why}")))
    }

    /// The CA's certificate, what `--tls-ca` takes.
    pub fn ca(&self) -> PathBuf {
        self.0.ca()
    }

    /// A certificate for `name`, signed by this CA.
    pub fn issue(&self, name: &str) -> Identity {
        self.0.issue(name).unwrap_or_else(|why| panic!("{why}"))
    }

    /// A certificate for `name` that expired yesterday.
    pub fn expired(&self, name: &str) -> Identity {
        self.0.expired(name).unwrap_or_else(|why| panic!("{why}"))
    }

    /// What a larve of this PKI is started with: its certificate, and this CA to trust.
    pub fn larve_flags(&self, identity: &Identity) -> Vec<String> {
        self.0.larve_flags(identity)
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
