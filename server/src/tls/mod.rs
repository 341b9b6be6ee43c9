//! HTTPS, built into the server so that a phone or a second laptop on the LAN gets a secure
//! context (camera and microphone) with no proxy in front.
//!
//! - [`TlsMode`]: what `--tls`, `--tls-cert/--tls-key` and `--acme` resolve to
//!   ([`crate::Config::tls_mode`]); [`TlsMode::is_on`] answers "is TLS on?" for other parts.
//! - `self_signed`: the certificate made once and kept in `--data-dir`, its names (localhost,
//!   the host name, `<host>.local`, every address listened on) and its renewal when they change.
//! - `files`: `--tls-cert/--tls-key`, reloaded when they change on disk.
//! - `acme`: certificates from an ACME CA (rustls-acme, TLS-ALPN-01 on the HTTPS port), the
//!   account and certificates cached in `--data-dir`.
//! - [`listener`]: the accepting side. Every handshake runs in its own task with a timeout and
//!   a bound on handshakes in flight, then the stream is handed to axum
//!   ([`listener::TlsListener`] is an `axum::serve::Listener` with `Addr = SocketAddr`, so
//!   `ConnectInfo<SocketAddr>` and the per-IP limits see the client's address).
//! - [`redirect`]: the optional plain-HTTP listener that redirects to HTTPS.
//! - [`cert`]: reading a certificate (names, expiry, fingerprints).
//!
//! Invariants: private keys are written only through `datadir::write_private` (mode 0600, in the
//! 0700 data directory) and are never logged; a handshake costs bounded time and memory; only
//! the ring provider is used.

pub mod cert;
mod files;
pub mod listener;
pub mod redirect;
mod self_signed;

mod acme;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio_util::task::AbortOnDropHandle;

use crate::datadir::{DataDir, DataDirError};
use crate::metrics::Metrics;

pub use cert::CertInfo;
pub use listener::TlsListener;

/// Let's Encrypt's production ACME directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How the server speaks: plain HTTP or HTTPS, and where the certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP (`--tls off`, or `--tls auto` on a loopback address).
    Off,
    /// A self-signed certificate kept in the data directory.
    SelfSigned,
    /// Certificate and key files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Certificates from an ACME CA.
    Acme(AcmeSettings),
}

impl TlsMode {
    /// True when the server speaks HTTPS.
    pub fn is_on(&self) -> bool {
        !matches!(self, TlsMode::Off)
    }
}

/// `--acme` and its companions, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Lowercase DNS names, no duplicates, at least one.
    pub domains: Vec<String>,
    pub email: Option<String>,
    /// The directory URL (https).
    pub directory: String,
    /// A CA certificate (PEM) to trust for the directory's HTTPS instead of the public roots.
    pub ca_root: Option<PathBuf>,
}

/// Bounds on TLS handshakes (`--tls-handshake-timeout-ms`, `--max-tls-handshakes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    pub timeout: Duration,
    pub max_in_flight: usize,
}

/// Why HTTPS could not start (or a certificate could not be loaded).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate (expected PEM `BEGIN CERTIFICATE` blocks)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    NoKey { path: PathBuf },
    #[error("{path}: {detail}")]
    BadPem { path: PathBuf, detail: String },
    #[error("{path}: not a certificate this server can use: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("the private key does not match the certificate ({cert})")]
    KeyMismatch { cert: PathBuf },
    #[error("unsupported private key in {path}: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot make the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("HTTPS is off in this configuration (--tls off, or --tls auto on a loopback --addr)")]
    Off,
    #[error("the certificate task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The only crypto provider used: ring (no cmake, no aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// True for a name `--acme` can get a certificate for: a DNS name (letters, digits, hyphens,
/// dots; labels of 1-63 characters), not an IP address, not a wildcard.
pub fn is_acme_domain(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_err() && is_dns_name(name)
}

/// A host name made of letters, digits and hyphens, in dot-separated labels of 1-63 characters,
/// at most 253 characters.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// HTTPS, ready to serve: the rustls configuration, what to print, and the background task that
/// keeps the certificate fresh (file reloads, ACME orders and renewals). Dropping it (with the
/// listener it was turned into) stops that task.
pub struct TlsServer {
    config: Arc<ServerConfig>,
    /// The certificate served now, when known at start (not for ACME before the first order).
    pub certificate: Option<CertInfo>,
    /// `https://` URLs a person can open, best first.
    pub urls: Vec<String>,
    /// True for a self-signed certificate: browsers will ask to trust it once.
    pub self_signed: bool,
    _background: Option<AbortOnDropHandle<()>>,
}

impl TlsServer {
    /// Prepares HTTPS in `mode` (which must be on) for a listener bound to `local`: makes or
    /// loads the certificate and starts what keeps it fresh. Call inside a tokio runtime.
    pub async fn start(
        mode: &TlsMode,
        data_dir: &DataDir,
        local: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TlsError> {
        let port = local.port();
        match mode {
            TlsMode::Off => Err(TlsError::Off),
            TlsMode::SelfSigned => {
                let names = self_signed::names_for(local);
                let kept = tokio::task::spawn_blocking({
                    let data_dir = data_dir.clone();
                    move || self_signed::load_or_make(&data_dir, &names)
                })
                .await??;
                let urls = self_signed::urls(&kept.names, port);
                metrics
                    .tls_certificate_expiry
                    .set(kept.info.expiry_unix_seconds());
                let resolver = Arc::new(files::CertSlot::new(kept.key));
                Ok(Self {
                    config: server_config(resolver, false)?,
                    certificate: Some(kept.info),
                    urls,
                    self_signed: true,
                    _background: None,
                })
            }
            TlsMode::Files { cert, key } => {
                let loaded = files::load(cert, key)?;
                let info = loaded.info.clone();
                files::warn_if_expired(cert, &info);
                metrics
                    .tls_certificate_expiry
                    .set(info.expiry_unix_seconds());
                let slot = Arc::new(files::CertSlot::new(loaded.key));
                let watcher = files::Watcher::new(cert.clone(), key.clone(), Arc::clone(&slot));
                let task = tokio::spawn(watcher.run(files::RELOAD_INTERVAL, metrics));
                Ok(Self {
                    config: server_config(slot, false)?,
                    urls: urls_for_names(info.dns_names.iter().map(String::as_str), port),
                    certificate: Some(info),
                    self_signed: false,
                    _background: Some(AbortOnDropHandle::new(task)),
                })
            }
            TlsMode::Acme(settings) => {
                let (resolver, task) = acme::start(settings, data_dir, metrics)?;
                Ok(Self {
                    config: server_config(resolver, true)?,
                    certificate: None,
                    urls: urls_for_names(settings.domains.iter().map(String::as_str), port),
                    self_signed: false,
                    _background: Some(AbortOnDropHandle::new(task)),
                })
            }
        }
    }

    /// The lines printed under "Noom is listening on https://ADDR": the URLs to open, then the
    /// certificate's fingerprints (what a person compares with the browser's certificate view,
    /// and what Chromium's `--ignore-certificate-errors-spki-list` takes).
    pub fn banner(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.urls.iter().map(|u| format!("Open: {u}")).collect();
        if let Some(info) = &self.certificate {
            lines.push(format!(
                "Certificate SHA-256 fingerprint: {}",
                info.sha256_fingerprint
            ));
            lines.push(format!(
                "Certificate public key SHA-256 (SPKI, base64): {}",
                info.spki_sha256_base64
            ));
        } else {
            lines.push(
                "Certificate: requested from the ACME CA; its fingerprint is logged once issued"
                    .to_string(),
            );
        }
        if self.self_signed {
            lines.push(
                "The certificate is self-signed: each browser warns once. Check that the fingerprint it shows matches, then accept."
                    .to_string(),
            );
        }
        lines
    }

    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}

/// The server's rustls configuration: ring, TLS 1.2 and 1.3, HTTP/1.1 (what axum serves here;
/// websockets ride on it), and for ACME also the TLS-ALPN-01 protocol.
fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    acme: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Ok(Arc::new(config))
}

/// `https://name[:port]/` for each name that is not a wildcard.
fn urls_for_names<'a>(names: impl Iterator<Item = &'a str>, port: u16) -> Vec<String> {
    names
        .filter(|n| !n.starts_with('*'))
        .map(|name| url_for(name, port))
        .collect()
}

/// `https://host[:port]/`, the port left out when it is 443; IPv6 addresses in brackets.
pub(crate) fn url_for(host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 443 {
        format!("https://{host}/")
    } else {
        format!("https://{host}:{port}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_domains_are_dns_names() {
        for good in ["noom.example.org", "a.b", "x-1.example", "localhost"] {
            assert!(is_acme_domain(good), "{good}");
        }
        for bad in [
            "",
            "*.example.org",
            "10.0.0.1",
            "-a.example",
            "a..b",
            "a_b.example",
            "exa mple.org",
            "::1",
        ] {
            assert!(!is_acme_domain(bad), "{bad}");
        }
    }

    #[test]
    fn urls_bracket_ipv6_and_drop_port_443() {
        assert_eq!(url_for("192.0.2.1", 8443), "https://192.0.2.1:8443/");
        assert_eq!(url_for("noom.example", 443), "https://noom.example/");
        assert_eq!(url_for("2001:db8::1", 8443), "https://[2001:db8::1]:8443/");
        assert_eq!(
            urls_for_names(["*.example.org", "example.org"].into_iter(), 443),
            ["https://example.org/"]
        );
    }
}
