//! The `Origin` check on websocket upgrades, against cross-site websocket hijacking: a page on
//! another site can open a websocket to any server (the same-origin policy does not apply to
//! websockets), so the server itself must refuse pages it does not serve.
//!
//! Allowed: an upgrade whose `Origin` names the host the request was sent to (`Host`, scheme
//! default ports filled in), any origin given with `--allowed-origin`, and a request without
//! `Origin` at all.

use axum::http::{header, HeaderMap};

/// An origin: scheme, host and port, as RFC 6454 serializes it (lowercase, default port known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]`, with an optional trailing `/` (as people paste URLs).
    /// Only `http` and `https`: the pages that can open websockets to this server.
    pub fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_authority(authority)?;
        Some(Self {
            scheme,
            host,
            port: port.unwrap_or(default_port),
        })
    }

    fn default_port(&self) -> u16 {
        if self.scheme == "https" {
            443
        } else {
            80
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if self.port != self.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// `host[:port]` → lowercase host (IPv6 keeps its brackets) and the port if given.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The origins whose pages may open websockets here, besides the server's own.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins {
    extra: Vec<Origin>,
}

impl AllowedOrigins {
    pub fn new(extra: Vec<Origin>) -> Self {
        Self { extra }
    }

    /// True when the upgrade request may proceed.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            // No Origin header: not a browser. Every browser sends Origin with a websocket
            // upgrade, and a page cannot remove or forge it, so hijacking (a hostile page using
            // the visitor's browser) always arrives with one. Other programs (tests, the load
            // generator, curl) can send any Origin they like, so refusing them would protect
            // nothing.
            return true;
        };
        let Some(origin) = origin.to_str().ok().and_then(Origin::parse) else {
            // `null` (sandboxed frames, file: pages) and anything unparsable.
            return false;
        };
        if self.extra.contains(&origin) {
            return true;
        }
        // Same host as the request was sent to: the page came from this server.
        let Some((host, port)) = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(split_authority)
        else {
            return false;
        };
        host == origin.host && port.unwrap_or(origin.default_port()) == origin.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        headers
    }

    #[test]
    fn parses_and_normalizes_origins() {
        let o = Origin::parse("HTTP://Example.ORG:80/").unwrap();
        assert_eq!(o.to_string(), "http://example.org");
        assert_eq!(o, Origin::parse("http://example.org").unwrap());
        assert_eq!(
            Origin::parse("http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Origin::parse("https://[::1]:8443").unwrap().to_string(),
            "https://[::1]:8443"
        );
        for bad in [
            "null",
            "file://",
            "ws://example.org",
            "http://",
            "http://a/b",
            "http://a:port",
            "http://u@a",
            "http://a:99999",
            "example.org",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn same_host_is_allowed_with_default_ports_filled_in() {
        let none = AllowedOrigins::default();
        let allowed = [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("https://noom.example", "noom.example"),
            ("https://noom.example", "NOOM.example:443"),
            ("http://noom.example:80", "noom.example"),
            ("http://[::1]:3000", "[::1]:3000"),
        ];
        for (origin, host) in allowed {
            assert!(
                none.allows(&headers(Some(origin), Some(host))),
                "{origin} on {host}"
            );
        }
        let refused = [
            ("http://evil.example", "noom.example"),
            ("http://127.0.0.1:8080", "127.0.0.1:3000"),
            ("http://127.0.0.1:8080", "127.0.0.1"),
            ("https://noom.example", "noom.example:80"),
            ("null", "noom.example"),
            ("http://noom.example", "noom.example:bad"),
        ];
        for (origin, host) in refused {
            assert!(
                !none.allows(&headers(Some(origin), Some(host))),
                "{origin} on {host}"
            );
        }
        assert!(!none.allows(&headers(Some("http://a"), None)), "no Host");
        assert!(none.allows(&headers(None, Some("x"))), "no Origin");
    }

    #[test]
    fn extra_origins_are_allowed_from_any_host() {
        let dev = AllowedOrigins::new(vec![Origin::parse("http://127.0.0.1:8080/").unwrap()]);
        assert!(dev.allows(&headers(Some("http://127.0.0.1:8080"), Some("127.0.0.1"))));
        assert!(!dev.allows(&headers(Some("http://127.0.0.1:8081"), Some("127.0.0.1"))));
    }
}
