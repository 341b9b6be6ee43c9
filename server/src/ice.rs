//! The ICE servers each browser is handed in `joined`: the `--ice-server` STUN list as given,
//! then the built-in TURN server (a `stun:` URL and `turn:` over UDP and TCP), then any external
//! `--turn-url` servers. TURN entries carry credentials minted for that peer (see
//! [`crate::turn::credentials`]), so the list is made per `joined`, not once.
//!
//! Browsers use host and STUN candidates first and the relay only when nothing direct works:
//! that is ICE's own priority order, so nothing here (no `iceTransportPolicy`) changes it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use shared::{IceServer, PeerId};

use crate::datadir::Secret;
use crate::turn::credentials;

/// Where browsers reach the built-in TURN server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinTurn {
    pub port: u16,
    /// The address it listens on (unspecified: every interface).
    pub listen_ip: IpAddr,
    /// `--turn-public-ip`: what to advertise instead (a NAT's public address).
    pub public_ip: Option<IpAddr>,
}

impl BuiltinTurn {
    /// The host for the URLs: the public IP, else the address it listens on, else (listening
    /// everywhere) the host the browser reached this server by.
    fn url_host(&self, request_host: Option<&str>) -> Option<String> {
        if let Some(ip) = self.public_ip {
            return Some(url_ip(ip));
        }
        if !self.listen_ip.is_unspecified() {
            return Some(url_ip(self.listen_ip));
        }
        request_host.and_then(host_from_header)
    }

    /// Whether [`IceServers::for_peer`] needs the host the browser used.
    fn needs_host(&self) -> bool {
        self.public_ip.is_none() && self.listen_ip.is_unspecified()
    }
}

/// The ICE server list and what is needed to mint credentials. Cheap to clone.
#[derive(Clone, Default)]
pub struct IceServers(Arc<Inner>);

#[derive(Default)]
struct Inner {
    stun: Vec<IceServer>,
    builtin: Option<BuiltinTurn>,
    external: Vec<String>,
    secret: Option<Secret>,
}

impl fmt::Debug for IceServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServers")
            .field("stun", &self.0.stun.len())
            .field("builtin", &self.0.builtin)
            .field("external", &self.0.external)
            .field("secret", &self.0.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl IceServers {
    /// A fixed list (STUN only: no credentials to mint).
    pub fn fixed(stun: Vec<IceServer>) -> Self {
        Self(Arc::new(Inner {
            stun,
            ..Inner::default()
        }))
    }

    /// `stun` as given, plus TURN entries for the built-in server and for `external` URLs,
    /// with credentials signed by `secret`. Without a secret no TURN entry is handed out.
    pub fn new(
        stun: Vec<IceServer>,
        builtin: Option<BuiltinTurn>,
        external: Vec<String>,
        secret: Option<Secret>,
    ) -> Self {
        Self(Arc::new(Inner {
            stun,
            builtin,
            external,
            secret,
        }))
    }

    /// Whether the list depends on the `Host` the browser used (worth keeping per connection).
    pub fn needs_host(&self) -> bool {
        self.0.builtin.is_some_and(|b| b.needs_host())
    }

    /// The list for `peer`, which reached this server as `host` (the `Host` header), at `now`.
    pub fn for_peer(&self, peer: PeerId, host: Option<&str>, now: SystemTime) -> Vec<IceServer> {
        let inner = &*self.0;
        let mut servers = inner.stun.clone();
        let Some(secret) = &inner.secret else {
            return servers;
        };
        let builtin_host = inner.builtin.and_then(|b| Some((b, b.url_host(host)?)));
        if builtin_host.is_none() && inner.external.is_empty() {
            return servers;
        }
        let credentials::Credentials { username, password } =
            credentials::mint(secret, peer, now, credentials::LIFETIME);
        if let Some((builtin, host)) = builtin_host {
            let port = builtin.port;
            servers.push(IceServer {
                urls: vec![format!("stun:{host}:{port}")],
                username: None,
                credential: None,
            });
            servers.push(IceServer {
                urls: vec![
                    format!("turn:{host}:{port}?transport=udp"),
                    format!("turn:{host}:{port}?transport=tcp"),
                ],
                username: Some(username.clone()),
                credential: Some(password.clone()),
            });
        }
        if !inner.external.is_empty() {
            servers.push(IceServer {
                urls: inner.external.clone(),
                username: Some(username),
                credential: Some(password),
            });
        }
        servers
    }
}

fn url_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The host part of a `Host` header value, if it is an IP address or a DNS name (anything else
/// is not put into a URL).
fn host_from_header(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.len() > 260 {
        return None;
    }
    let port_ok = |rest: &str| {
        rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        return port_ok(after).then(|| url_ip(IpAddr::V6(ip)));
    }
    let host = match value.split_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return None,
        None => value,
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    let dns_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    dns_name.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn secret() -> Secret {
        Secret::from_text("0123456789abcdef0123").unwrap()
    }

    fn stun(url: &str) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            username: None,
            credential: None,
        }
    }

    const NOW: Duration = Duration::from_secs(1_000_000);

    #[test]
    fn builtin_turn_is_advertised_with_fresh_credentials() {
        let builtin = BuiltinTurn {
            port: 3478,
            listen_ip: "0.0.0.0".parse().unwrap(),
            public_ip: None,
        };
        let ice = IceServers::new(
            vec![stun("stun:s:1")],
            Some(builtin),
            vec![],
            Some(secret()),
        );
        assert!(ice.needs_host());
        let list = ice.for_peer(PeerId::new(7), Some("192.168.1.5:8443"), UNIX_EPOCH + NOW);
        assert_eq!(list.len(), 3);
        assert_eq!(list[0], stun("stun:s:1"));
        assert_eq!(list[1], stun("stun:192.168.1.5:3478"));
        assert_eq!(
            list[2].urls,
            [
                "turn:192.168.1.5:3478?transport=udp",
                "turn:192.168.1.5:3478?transport=tcp"
            ]
        );
        let username = list[2].username.as_deref().unwrap();
        assert_eq!(username, format!("{}:7", NOW.as_secs() + 86_400));
        assert_eq!(
            list[2].credential.as_deref().unwrap(),
            credentials::password_for(&secret(), username)
        );
        // No usable host: no built-in entries rather than a broken URL.
        let list = ice.for_peer(PeerId::new(7), Some("bad host/x"), UNIX_EPOCH + NOW);
        assert_eq!(list.len(), 1);
        assert!(!format!("{ice:?}").contains("0123456789"));
    }

    #[test]
    fn public_ip_or_listen_ip_win_over_the_host() {
        let mut builtin = BuiltinTurn {
            port: 3478,
            listen_ip: "198.18.0.1".parse().unwrap(),
            public_ip: None,
        };
        let ice = |b| IceServers::new(vec![], Some(b), vec![], Some(secret()));
        let urls = |ice: IceServers| {
            ice.for_peer(PeerId::new(1), Some("example.org"), UNIX_EPOCH + NOW)[0]
                .urls
                .clone()
        };
        assert!(!ice(builtin).needs_host());
        assert_eq!(urls(ice(builtin)), ["stun:198.18.0.1:3478"]);
        builtin.public_ip = Some("2001:db8::1".parse().unwrap());
        assert_eq!(urls(ice(builtin)), ["stun:[2001:db8::1]:3478"]);
    }

    #[test]
    fn external_turn_gets_the_same_credentials() {
        let ice = IceServers::new(
            vec![],
            None,
            vec!["turn:turn.example:3478?transport=udp".into()],
            Some(secret()),
        );
        assert!(!ice.needs_host());
        let list = ice.for_peer(PeerId::new(9), None, UNIX_EPOCH + NOW);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].urls, ["turn:turn.example:3478?transport=udp"]);
        assert!(list[0].username.as_deref().unwrap().ends_with(":9"));
        assert!(IceServers::fixed(vec![stun("stun:a:1")])
            .for_peer(PeerId::new(1), None, UNIX_EPOCH + NOW)
            .iter()
            .all(|s| s.credential.is_none()));
    }

    #[test]
    fn hosts_are_taken_from_the_header_only_when_well_formed() {
        for (header, host) in [
            ("noom.example", Some("noom.example")),
            ("Noom.Example:8443", Some("noom.example")),
            ("198.18.0.1:8443", Some("198.18.0.1")),
            ("[::1]:8080", Some("[::1]")),
            ("[2001:db8::1]", Some("[2001:db8::1]")),
            ("localhost", Some("localhost")),
            ("", None),
            ("a b", None),
            ("x.example:99999", None),
            ("x.example?transport=tcp", None),
            ("[::1]x", None),
            ("evil.example/path", None),
            ("a..b", None),
        ] {
            assert_eq!(host_from_header(header).as_deref(), host, "{header:?}");
        }
    }
}
