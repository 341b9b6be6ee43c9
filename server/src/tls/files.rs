//! Certificates from PEM files (`--tls-cert`, `--tls-key`, and the kept self-signed one), and the
//! slot handshakes read the current certificate from, which a watcher replaces when the files
//! change on disk (a certbot renewal) without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::cert::CertInfo;
use super::{provider, TlsError};
use crate::metrics::Metrics;

/// How often the watcher looks at the files' modification times.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Largest certificate or key file read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The certificate handshakes get now. Reading takes a read lock for an `Arc` clone; replacing
/// takes the write lock for a pointer swap. Never held across an `.await`.
#[derive(Debug)]
pub struct CertSlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSlot {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    pub fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole Arc: a panic cannot leave half a pointer behind.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// A certificate chain and its key, checked to match.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Reads and checks a PEM certificate chain and its private key.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let cert_pem = read_bounded(cert_path)?;
    let key_pem = read_bounded(key_path)?;
    from_pem(&cert_pem, cert_path, &key_pem, key_path)
}

/// Parses a PEM chain (leaf first) and a PEM key; `*_path` only name them in errors.
pub fn from_pem(
    cert_pem: &[u8],
    cert_path: &Path,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadPem {
            path: cert_path.to_path_buf(),
            detail: err.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let info = CertInfo::from_der(leaf).map_err(|err| TlsError::BadCertificate {
        path: cert_path.to_path_buf(),
        detail: err.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_path_buf(),
        },
        // The message names the PEM problem, never the key's bytes.
        other => TlsError::BadPem {
            path: key_path.to_path_buf(),
            detail: other.to_string(),
        },
    })?;
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
        },
        source => TlsError::BadKey {
            path: key_path.to_path_buf(),
            source,
        },
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        info,
    })
}

/// Logs a warning when `info` has expired or expires within a week (the certificate is served
/// anyway: refusing to start would not help the people on the call).
pub fn warn_if_expired(path: &Path, info: &CertInfo) {
    let left = info.remaining(SystemTime::now());
    if left.is_zero() {
        tracing::warn!(cert = %path.display(), "the certificate has expired: browsers will refuse it");
    } else if left < Duration::from_secs(7 * 86_400) {
        tracing::warn!(cert = %path.display(), hours_left = left.as_secs() / 3600, "the certificate expires within a week");
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::BadPem {
            path: path.to_path_buf(),
            detail: format!("larger than {MAX_PEM_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// What identifies one version of a file: modification time, size, inode.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Self {
        Self(std::fs::metadata(path).ok().map(|meta| {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
                inode,
            )
        }))
    }
}

/// Watches `--tls-cert` and `--tls-key` and puts a new pair into the slot when they change.
pub struct Watcher {
    cert: PathBuf,
    key: PathBuf,
    slot: Arc<CertSlot>,
    seen: (Stamp, Stamp),
}

impl Watcher {
    /// Starts from the files as they are now (already loaded by the caller).
    pub fn new(cert: PathBuf, key: PathBuf, slot: Arc<CertSlot>) -> Self {
        let seen = (Stamp::of(&cert), Stamp::of(&key));
        Self {
            cert,
            key,
            slot,
            seen,
        }
    }

    /// Polls every `interval` until dropped (aborted with the server).
    pub async fn run(mut self, interval: Duration, metrics: Arc<Metrics>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let now = (Stamp::of(&self.cert), Stamp::of(&self.key));
            if now == self.seen {
                continue;
            }
            // Remember this version whatever happens: a broken file is reported once, and tried
            // again when it changes (certbot writes the certificate and the key one after the
            // other, so a first look may see a new certificate with the old key).
            self.seen = now;
            let (cert, key) = (self.cert.clone(), self.key.clone());
            let loaded = tokio::task::spawn_blocking(move || load(&cert, &key)).await;
            match loaded {
                Ok(Ok(loaded)) => {
                    warn_if_expired(&self.cert, &loaded.info);
                    self.slot.set(loaded.key);
                    metrics.tls_certificate_reloads.inc();
                    metrics
                        .tls_certificate_expiry
                        .set(loaded.info.expiry_unix_seconds());
                    tracing::info!(
                        cert = %self.cert.display(),
                        fingerprint = %loaded.info.sha256_fingerprint,
                        names = ?loaded.info.dns_names,
                        "certificate files changed: now serving the new certificate"
                    );
                }
                Ok(Err(err)) => {
                    metrics.tls_certificate_reload_failures.inc();
                    tracing::error!(%err, "certificate files changed but cannot be used; still serving the previous certificate");
                }
                Err(err) => {
                    metrics.tls_certificate_reload_failures.inc();
                    tracing::error!(%err, "certificate reload task failed; still serving the previous certificate");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_pair_and_refuses_the_rest_with_reasons() {
        let (cert_a, key_a) = pair("a.example");
        let (_, key_b) = pair("b.example");
        let (c, k) = (Path::new("c.pem"), Path::new("k.pem"));
        let loaded = from_pem(cert_a.as_bytes(), c, key_a.as_bytes(), k).unwrap();
        assert_eq!(loaded.info.dns_names, ["a.example"]);
        assert!(matches!(
            from_pem(cert_a.as_bytes(), c, key_b.as_bytes(), k),
            Err(TlsError::KeyMismatch { .. })
        ));
        assert!(matches!(
            from_pem(b"", c, key_a.as_bytes(), k),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            from_pem(cert_a.as_bytes(), c, b"hello", k),
            Err(TlsError::NoKey { .. })
        ));
        let err = from_pem(cert_a.as_bytes(), c, cert_a.as_bytes(), k)
            .err()
            .unwrap();
        assert!(err.to_string().contains("k.pem"), "{err}");
        assert!(matches!(
            load(Path::new("/nonexistent/c.pem"), k),
            Err(TlsError::Read { .. })
        ));
    }
}
