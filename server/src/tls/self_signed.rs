//! The self-signed certificate: made once and kept in the data directory, so browsers ask a
//! person to trust it once rather than after every restart. It names `localhost`, the host name,
//! `<host>.local` and every address the server listens on; when the kept one no longer covers
//! them (a new DHCP address) or is near its end, a new one is made and the log says why.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::cert::CertInfo;
use super::{files, is_dns_name, url_for, TlsError};
use crate::datadir::{write_private, DataDir};

/// File names inside the data directory.
pub const CERT_FILE: &str = "tls-self-signed.crt";
pub const KEY_FILE: &str = "tls-self-signed.key";

/// Validity of a new certificate. Apple platforms refuse server certificates valid for more
/// than 825 days, and Chromium is strict past 398: stay under both.
const VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

/// A kept certificate closer than this to its end is replaced at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most names a certificate carries when old and new names are merged (so that moving between
/// networks does not force a new certificate each time, yet the list cannot grow forever).
const MAX_NAMES: usize = 32;

/// The names a certificate must cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// `localhost`, the host name and `<host>.local`, lowercase.
    pub dns: Vec<String>,
    /// Every address the server listens on.
    pub ips: Vec<IpAddr>,
}

impl Names {
    fn push_dns(&mut self, name: String) {
        if !self.dns.contains(&name) {
            self.dns.push(name);
        }
    }

    fn push_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    /// What `info` lacks of these names, for the log.
    fn missing_from(&self, info: &CertInfo) -> Vec<String> {
        let dns = self.dns.iter().filter(|n| !info.covers_dns(n)).cloned();
        let ips = self
            .ips
            .iter()
            .filter(|ip| !info.covers_ip(**ip))
            .map(ToString::to_string);
        dns.chain(ips).collect()
    }
}

/// The names for a server listening on `local`: `localhost`, the host name, `<host>.local`, and
/// the address itself, or every interface address for `0.0.0.0` / `[::]`.
pub fn names_for(local: SocketAddr) -> Names {
    let mut names = Names::default();
    names.push_dns("localhost".to_string());
    if let Some(host) = host_name() {
        let label = host.split('.').next().unwrap_or(&host).to_string();
        if host != "localhost" {
            names.push_dns(host.clone());
        }
        if label != "localhost" {
            names.push_dns(format!("{label}.local"));
        }
    }
    let ip = local.ip();
    if ip.is_unspecified() {
        // `[::]` also accepts IPv4 (Linux's default, bindv6only=0); `0.0.0.0` only IPv4.
        let want_v6 = ip.is_ipv6();
        match if_addrs::get_if_addrs() {
            Ok(interfaces) => {
                let mut addrs: Vec<IpAddr> = interfaces
                    .iter()
                    .map(|i| i.ip())
                    .filter(|ip| want_v6 || ip.is_ipv4())
                    .collect();
                // Addresses people type first: IPv4, then IPv6; loopback last.
                addrs.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
                for ip in addrs {
                    names.push_ip(ip);
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot list the interface addresses; the certificate names only the host name")
            }
        }
    } else {
        names.push_ip(ip);
    }
    names
}

/// The machine's host name, when it is a usable DNS name.
fn host_name() -> Option<String> {
    let host = hostname::get().ok()?.into_string().ok()?;
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    is_dns_name(&host).then_some(host)
}

/// The URLs a person can open: each non-loopback address, `<host>.local`, then localhost.
pub fn urls(names: &Names, port: u16) -> Vec<String> {
    let mut urls: Vec<String> = names
        .ips
        .iter()
        .filter(|ip| !ip.is_loopback())
        .map(|ip| url_for(&ip.to_string(), port))
        .collect();
    urls.extend(
        names
            .dns
            .iter()
            .filter(|n| n.ends_with(".local"))
            .map(|n| url_for(n, port)),
    );
    if names.ips.iter().any(IpAddr::is_loopback) {
        urls.push(url_for("localhost", port));
    }
    urls
}

/// The certificate to serve, with its key and facts.
pub struct Kept {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    /// The names needed now (what the URLs are made from).
    pub names: Names,
}

/// The kept certificate when it covers `needed` and is not near its end; otherwise a new one
/// (covering `needed` and, within [`MAX_NAMES`], what the old one covered), written to the data
/// directory. Blocking (file I/O, key generation).
pub fn load_or_make(data_dir: &DataDir, needed: &Names) -> Result<Kept, TlsError> {
    let cert_path = data_dir.file(CERT_FILE)?;
    let key_path = data_dir.file(KEY_FILE)?;
    let now = SystemTime::now();
    let mut carried = Names::default();
    match files::load(&cert_path, &key_path) {
        Ok(loaded) => {
            let missing = needed.missing_from(&loaded.info);
            let remaining = loaded.info.remaining(now);
            if missing.is_empty() && remaining > RENEW_BEFORE {
                tracing::info!(
                    cert = %cert_path.display(),
                    days_left = remaining.as_secs() / 86_400,
                    "using the kept self-signed certificate"
                );
                return Ok(Kept {
                    key: loaded.key,
                    info: loaded.info,
                    names: needed.clone(),
                });
            }
            if missing.is_empty() {
                tracing::warn!(
                    days_left = remaining.as_secs() / 86_400,
                    "the kept self-signed certificate is near its end: making a new one (browsers will ask to trust it again)"
                );
            } else {
                tracing::warn!(
                    missing = %missing.join(", "),
                    "the kept self-signed certificate does not name every address or name this server is reached by: making a new one (browsers will ask to trust it again)"
                );
            }
            carried.dns = loaded.info.dns_names;
            carried.ips = loaded.info.ip_addresses;
        }
        Err(TlsError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(dir = %data_dir.path().display(), "making a self-signed certificate (kept for later starts)");
        }
        Err(err @ TlsError::Read { .. }) => return Err(err),
        Err(err) => {
            tracing::warn!(%err, "the kept self-signed certificate cannot be used: making a new one");
        }
    }
    let mut names = needed.clone();
    for name in carried.dns {
        if names.dns.len() + names.ips.len() < MAX_NAMES {
            names.push_dns(name);
        }
    }
    for ip in carried.ips {
        if names.dns.len() + names.ips.len() < MAX_NAMES {
            names.push_ip(ip);
        }
    }
    let (cert_pem, key_pem) = generate(&names, now)?;
    // The key first: a crash in between leaves a pair that does not match, which the next start
    // notices and replaces, never a certificate whose key is lost.
    write_private(&key_path, key_pem.as_bytes())?;
    write_private(&cert_path, cert_pem.as_bytes())?;
    let loaded = files::from_pem(
        cert_pem.as_bytes(),
        &cert_path,
        key_pem.as_bytes(),
        &key_path,
    )?;
    tracing::info!(
        cert = %cert_path.display(),
        fingerprint = %loaded.info.sha256_fingerprint,
        "new self-signed certificate"
    );
    Ok(Kept {
        key: loaded.key,
        info: loaded.info,
        names: needed.clone(),
    })
}

/// A new ECDSA P-256 key and a certificate for `names`, as PEM.
fn generate(names: &Names, now: SystemTime) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.dns.clone())?;
    params
        .subject_alt_names
        .extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Noom");
    let cn = names
        .dns
        .iter()
        .find(|n| *n != "localhost")
        .map_or_else(|| "Noom".to_string(), |host| format!("Noom on {host}"));
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::from(now);
    // A day of slack for clocks behind ours.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn exists(dir: &Path) -> bool {
        dir.join(CERT_FILE).is_file() && dir.join(KEY_FILE).is_file()
    }

    fn names(dns: &[&str], ips: &[&str]) -> Names {
        Names {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn made_once_kept_then_remade_when_an_address_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        let first_names = names(&["localhost", "box.local"], &["192.0.2.10"]);
        let first = load_or_make(&data, &first_names).unwrap();
        assert!(exists(data.path()));
        let again = load_or_make(&data, &first_names).unwrap();
        assert_eq!(again.info.sha256_fingerprint, first.info.sha256_fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |name: &str| {
                std::fs::metadata(data.path().join(name))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(KEY_FILE), 0o600);
        }
        // A new DHCP address: a new certificate that also keeps the old address.
        let moved = names(&["localhost", "box.local"], &["192.0.2.77"]);
        let third = load_or_make(&data, &moved).unwrap();
        assert_ne!(third.info.sha256_fingerprint, first.info.sha256_fingerprint);
        assert!(third.info.covers_ip("192.0.2.77".parse().unwrap()));
        assert!(third.info.covers_ip("192.0.2.10".parse().unwrap()));
        // Back on the old network: the merged certificate still covers it, nothing changes.
        let back = load_or_make(&data, &first_names).unwrap();
        assert_eq!(back.info.sha256_fingerprint, third.info.sha256_fingerprint);
        let remaining = back.info.remaining(SystemTime::now());
        assert!(remaining > Duration::from_secs(390 * 86_400) && remaining <= VALIDITY);
    }

    #[test]
    fn a_damaged_or_expiring_kept_certificate_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let wanted = names(&["localhost"], &["127.0.0.1"]);
        let first = load_or_make(&data, &wanted).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        let second = load_or_make(&data, &wanted).unwrap();
        assert_ne!(
            second.info.sha256_fingerprint,
            first.info.sha256_fingerprint
        );
        // One that ends in 10 days.
        let soon = SystemTime::now() - VALIDITY + Duration::from_secs(10 * 86_400);
        let (cert, key) = generate(&wanted, soon).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), cert).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), key).unwrap();
        let third = load_or_make(&data, &wanted).unwrap();
        assert!(third.info.remaining(SystemTime::now()) > RENEW_BEFORE);
    }

    #[test]
    fn names_cover_localhost_the_host_and_the_listen_address() {
        let names = names_for("192.0.2.5:8443".parse().unwrap());
        assert_eq!(names.dns[0], "localhost");
        assert_eq!(names.ips, ["192.0.2.5".parse::<IpAddr>().unwrap()]);
        if let Some(host) = host_name() {
            let label = host.split('.').next().unwrap().to_string();
            assert!(names.dns.contains(&format!("{label}.local")), "{names:?}");
        }
        // 0.0.0.0: every interface address, loopback included (lo is always there).
        let all = names_for("0.0.0.0:8443".parse().unwrap());
        assert!(all.ips.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
        assert!(all.ips.iter().all(IpAddr::is_ipv4));
        assert_eq!(
            all.ips.last().unwrap(),
            &"127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn urls_put_lan_addresses_first() {
        let n = names(
            &["localhost", "box", "box.local"],
            &["192.0.2.5", "2001:db8::5", "127.0.0.1"],
        );
        assert_eq!(
            urls(&n, 8443),
            [
                "https://192.0.2.5:8443/",
                "https://[2001:db8::5]:8443/",
                "https://box.local:8443/",
                "https://localhost:8443/"
            ]
        );
    }
}
