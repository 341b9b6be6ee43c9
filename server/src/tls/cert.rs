//! What the server reads from a certificate: the names it covers, when it expires, and the two
//! fingerprints people and browsers compare.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::digest::{digest, SHA256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Facts about a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the whole certificate, as colon-separated uppercase hex (what browsers show).
    pub sha256_fingerprint: String,
    /// Base64 of the SHA-256 of its SubjectPublicKeyInfo (Chromium's
    /// `--ignore-certificate-errors-spki-list` format; also HPKP's pin).
    pub spki_sha256_base64: String,
    /// DNS names in its subjectAltName, lowercase.
    pub dns_names: Vec<String>,
    /// IP addresses in its subjectAltName.
    pub ip_addresses: Vec<IpAddr>,
    /// End of its validity.
    pub not_after: SystemTime,
}

/// A DER blob that is not an X.509 certificate.
#[derive(Debug, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct ParseError(String);

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, ParseError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|err| ParseError(err.to_string()))?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(name) => dns_names.push(name.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let not_after = cert.validity().not_after.timestamp();
        let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
        Ok(Self {
            sha256_fingerprint: colon_hex(digest(&SHA256, der).as_ref()),
            spki_sha256_base64: base64::engine::general_purpose::STANDARD
                .encode(digest(&SHA256, cert.public_key().raw).as_ref()),
            dns_names,
            ip_addresses,
            not_after,
        })
    }

    /// True when the certificate names `ip` in its subjectAltName.
    pub fn covers_ip(&self, ip: IpAddr) -> bool {
        self.ip_addresses.contains(&ip)
    }

    /// True when the certificate names `name` exactly (no wildcard matching: the self-signed
    /// certificate has none).
    pub fn covers_dns(&self, name: &str) -> bool {
        self.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// When it expires, in seconds since the Unix epoch (for the expiry gauge).
    pub fn expiry_unix_seconds(&self) -> i64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// Time left before it expires (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// `AB:CD:...`
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_expiry_and_fingerprints() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "Noom.Local".to_string()])
                .unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("192.0.2.7".parse().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("2001:db8::7".parse().unwrap()));
        params.not_after = rcgen::date_time_ymd(2040, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::from_der(cert.der()).unwrap();
        assert_eq!(info.dns_names, ["localhost", "noom.local"]);
        assert!(info.covers_dns("NOOM.local"));
        assert!(info.covers_ip("192.0.2.7".parse().unwrap()));
        assert!(info.covers_ip("2001:db8::7".parse().unwrap()));
        assert!(!info.covers_ip("192.0.2.8".parse().unwrap()));
        assert_eq!(
            info.not_after,
            UNIX_EPOCH + Duration::from_secs(2_209_075_200)
        );
        // 32 bytes: 64 hex digits and 31 colons.
        assert_eq!(info.sha256_fingerprint.len(), 95);
        assert_eq!(
            info.sha256_fingerprint,
            colon_hex(digest(&SHA256, cert.der()).as_ref())
        );
        // The SPKI hash is over the DER SubjectPublicKeyInfo, which rcgen also gives.
        let spki = base64::engine::general_purpose::STANDARD
            .encode(digest(&SHA256, &key.public_key_der()).as_ref());
        assert_eq!(info.spki_sha256_base64, spki);
        assert!(CertInfo::from_der(b"not a certificate").is_err());
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x00]), "0A:FF:00");
    }
}
