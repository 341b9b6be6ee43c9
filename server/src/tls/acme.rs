//! Certificates from an ACME CA (Let's Encrypt, or any RFC 8555 server such as pebble), through
//! `rustls-acme`: TLS-ALPN-01 on the HTTPS port (validation connections are recognized by their
//! ALPN `acme-tls/1` and answered by rustls-acme's resolver), renewal a third of the lifetime
//! before expiry, backoff on errors. The account key and the certificates (with their private
//! keys) are cached in the data directory through `write_private` (0600), so a restart neither
//! creates a new account nor orders a new certificate.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use ring::digest::{Context, SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::ResolvesServerCert;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::{AccountCache, AcmeConfig, CertCache, EventOk};

use super::cert::CertInfo;
use super::{provider, AcmeSettings, TlsError};
use crate::datadir::{write_private, DataDir, DataDirError};
use crate::metrics::Metrics;

/// Starts the ACME machinery: returns the resolver handshakes use (the current certificate, or
/// the challenge certificate for a validation connection) and the task that orders, caches and
/// renews. Before the first certificate is there, ordinary handshakes fail (no certificate).
pub fn start(
    settings: &AcmeSettings,
    data_dir: &DataDir,
    metrics: Arc<Metrics>,
) -> Result<(Arc<dyn ResolvesServerCert>, tokio::task::JoinHandle<()>), TlsError> {
    let cache = DataDirCache {
        dir: data_dir.clone(),
        deployed: Arc::new(Mutex::new(None)),
    };
    let deployed = Arc::clone(&cache.deployed);
    let mut config = match &settings.ca_root {
        Some(path) => AcmeConfig::new_with_client_config(
            settings.domains.iter(),
            client_config_trusting(path)?,
        ),
        None => AcmeConfig::new_with_provider(settings.domains.iter(), provider()),
    }
    .directory(&settings.directory)
    .cache(cache);
    if let Some(email) = &settings.email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    let mut state = config.state();
    let resolver: Arc<dyn ResolvesServerCert> = state.resolver();
    let domains = settings.domains.join(",");
    let directory = settings.directory.clone();
    tracing::info!(%domains, %directory, "ACME: getting a certificate (TLS-ALPN-01 on the HTTPS port)");
    let task = tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(EventOk::DeployedNewCert | EventOk::DeployedCachedCert) => {
                    let cached = matches!(event, Ok(EventOk::DeployedCachedCert));
                    let info = deployed.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(info) = info {
                        metrics
                            .tls_certificate_expiry
                            .set(info.expiry_unix_seconds());
                        tracing::info!(
                            %domains,
                            cached,
                            fingerprint = %info.sha256_fingerprint,
                            spki_sha256 = %info.spki_sha256_base64,
                            "ACME: serving the certificate"
                        );
                    } else {
                        tracing::info!(%domains, cached, "ACME: serving the certificate");
                    }
                }
                Ok(other) => tracing::debug!(?other, "ACME"),
                Err(err) => {
                    metrics.tls_acme_errors.inc();
                    tracing::error!(%err, %domains, "ACME: will retry with backoff");
                }
            }
        }
    });
    Ok((resolver, task))
}

/// An HTTPS client configuration for the ACME API that trusts the CA certificates in `path`.
fn client_config_trusting(path: &PathBuf) -> Result<Arc<ClientConfig>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.clone(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadPem {
            path: path.clone(),
            detail: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.clone() });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|err| TlsError::BadCertificate {
            path: path.clone(),
            detail: err.to_string(),
        })?;
    }
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// rustls-acme's cache, in the data directory: `acme-account-<hash>` (the account's PKCS#8
/// key) and `acme-cert-<hash>.pem` (private key then chain), the hash over the contacts or
/// domains and the directory URL so that a test CA's files never stand in for a real one's.
struct DataDirCache {
    dir: DataDir,
    /// Facts about the certificate last loaded or stored, for the log and metrics.
    deployed: Arc<Mutex<Option<CertInfo>>>,
}

impl fmt::Debug for DataDirCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataDirCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn cache_name(prefix: &str, items: &[String], directory_url: &str, suffix: &str) -> String {
    let mut ctx = Context::new(&SHA256);
    for item in items {
        ctx.update(item.as_bytes());
        ctx.update(&[0]);
    }
    ctx.update(directory_url.as_bytes());
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ctx.finish().as_ref());
    format!("{prefix}-{hash}{suffix}")
}

impl DataDirCache {
    async fn read(&self, name: String) -> Result<Option<Vec<u8>>, DataDirError> {
        let dir = self.dir.clone();
        run_blocking(move || {
            let path = dir.file(&name)?;
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(DataDirError::Read { path, source }),
            }
        })
        .await
    }

    async fn write(&self, name: String, bytes: Vec<u8>) -> Result<(), DataDirError> {
        let dir = self.dir.clone();
        run_blocking(move || write_private(&dir.file(&name)?, &bytes)).await
    }

    /// Remembers the leaf of a cached or new certificate PEM (key first, then the chain).
    fn note(&self, pem: &[u8]) {
        let leaf = CertificateDer::pem_slice_iter(pem)
            .next()
            .and_then(Result::ok);
        if let Some(info) = leaf.and_then(|der| CertInfo::from_der(&der).ok()) {
            *self.deployed.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DataDirError> + Send + 'static,
) -> Result<T, DataDirError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| {
            Err(DataDirError::Write {
                path: PathBuf::new(),
                source: std::io::Error::other(err.to_string()),
            })
        })
}

#[async_trait]
impl CertCache for DataDirCache {
    type EC = DataDirError;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EC> {
        let pem = self
            .read(cache_name("acme-cert", domains, directory_url, ".pem"))
            .await?;
        if let Some(pem) = &pem {
            self.note(pem);
        }
        Ok(pem)
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), Self::EC> {
        self.note(cert);
        self.write(
            cache_name("acme-cert", domains, directory_url, ".pem"),
            cert.to_vec(),
        )
        .await
    }
}

#[async_trait]
impl AccountCache for DataDirCache {
    type EA = DataDirError;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        self.read(cache_name("acme-account", contact, directory_url, ""))
            .await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        self.write(
            cache_name("acme-account", contact, directory_url, ""),
            account.to_vec(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_differ_by_directory_and_domains() {
        let a = cache_name("acme-cert", &["a.example".into()], "https://x/dir", ".pem");
        let b = cache_name("acme-cert", &["a.example".into()], "https://y/dir", ".pem");
        let c = cache_name("acme-cert", &["b.example".into()], "https://x/dir", ".pem");
        assert!(a.starts_with("acme-cert-") && a.ends_with(".pem"));
        assert!(a != b && a != c && b != c);
        assert!(!a.contains('/'));
    }

    #[tokio::test]
    async fn the_cache_writes_private_files_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DataDirCache {
            dir: DataDir::new(dir.path().join("d")),
            deployed: Arc::new(Mutex::new(None)),
        };
        let contact = ["mailto:a@b.example".to_string()];
        assert_eq!(
            cache.load_account(&contact, "https://x").await.unwrap(),
            None
        );
        cache
            .store_account(&contact, "https://x", b"key bytes")
            .await
            .unwrap();
        assert_eq!(
            cache.load_account(&contact, "https://x").await.unwrap(),
            Some(b"key bytes".to_vec())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in std::fs::read_dir(dir.path().join("d")).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
    }
}
