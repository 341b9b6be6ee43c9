//! Limits that protect the server from its clients: how many websockets may be open (in total and
//! per IP address) and how fast one connection may send. Plain data and a std `Mutex` taken only
//! when a connection opens or closes; the per-message check is a token bucket owned by the
//! connection's task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::metrics::Rejection;

/// A websocket upgrade the server refused, as the HTTP response the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefused {
    #[error("This page is not allowed to connect: the Origin header is not in --allowed-origin.")]
    Origin,
    #[error("Too many connections from your address. Close some tabs and try again.")]
    PerIp,
    #[error("The server has too many connections right now. Try again in a minute.")]
    Total,
}

impl UpgradeRefused {
    pub fn status(self) -> StatusCode {
        match self {
            UpgradeRefused::Origin => StatusCode::FORBIDDEN,
            UpgradeRefused::PerIp => StatusCode::TOO_MANY_REQUESTS,
            UpgradeRefused::Total => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn reason(self) -> Rejection {
        match self {
            UpgradeRefused::Origin => Rejection::Origin,
            UpgradeRefused::PerIp => Rejection::PerIp,
            UpgradeRefused::Total => Rejection::Total,
        }
    }
}

impl IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        (self.status(), format!("{self}\n")).into_response()
    }
}

/// Counts open websockets, in total and per client IP address. `0` means unlimited.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    /// Only addresses with a connection open; an entry goes with its last connection.
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            state: Mutex::new(LimiterState::default()),
        })
    }

    /// Takes a place for a connection from `ip` (unknown: counted in the total only). The place
    /// is given back when the [`Permit`] drops.
    pub fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, UpgradeRefused> {
        let mut state = self.lock();
        if self.max_total != 0 && state.total >= self.max_total {
            return Err(UpgradeRefused::Total);
        }
        let per_ip = ip.filter(|_| self.max_per_ip != 0);
        if let Some(ip) = per_ip {
            let count = state.per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                return Err(UpgradeRefused::PerIp);
            }
            *count += 1;
        }
        state.total += 1;
        Ok(Permit {
            limiter: Arc::clone(self),
            ip: per_ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        // Every method leaves the counts consistent between statements.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open connection's place in the [`ConnectionLimiter`].
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<ConnectionLimiter>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(count) = state.per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    state.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// The client's address: from `header` when the server sits behind a proxy that sets it (the
/// rightmost entry of a comma-separated list such as `X-Forwarded-For`, which is the one the
/// nearest proxy added), otherwise the TCP peer's address.
pub fn client_ip(
    headers: &HeaderMap,
    header: Option<&HeaderName>,
    peer: Option<SocketAddr>,
) -> Option<IpAddr> {
    let from_header = header
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    from_header
        .or(peer.map(|addr| addr.ip()))
        .map(|ip| ip.to_canonical())
}

/// A per-connection token bucket: `burst` messages at once, refilled at `per_sec` a second.
/// `per_sec == 0` turns the limit off.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f32,
    burst: f32,
    per_sec: f32,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        Self {
            tokens: burst as f32,
            burst: burst as f32,
            per_sec: per_sec as f32,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.per_sec == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_refill_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5, 10, start);
        assert!((0..5).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        // 10 a second: one token every 100 ms.
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(150)));
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..5).all(|_| bucket.try_take(later)));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn bucket_with_zero_rate_is_unlimited() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(1, 0, now);
        assert!((0..10_000).all(|_| bucket.try_take(now)));
    }

    #[test]
    fn limiter_counts_total_and_per_ip_and_gives_places_back() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limiter.acquire(Some(a)).unwrap();
        let _a2 = limiter.acquire(Some(a)).unwrap();
        assert_eq!(limiter.acquire(Some(a)).unwrap_err(), UpgradeRefused::PerIp);
        let _b1 = limiter.acquire(Some(b)).unwrap();
        assert_eq!(limiter.acquire(Some(b)).unwrap_err(), UpgradeRefused::Total);
        assert_eq!(limiter.open(), 3);
        drop(a1);
        assert_eq!(limiter.open(), 2);
        let _a3 = limiter.acquire(Some(a)).unwrap();
        assert_eq!(limiter.acquire(None).unwrap_err(), UpgradeRefused::Total);
    }

    #[test]
    fn limiter_zero_means_unlimited() {
        let limiter = ConnectionLimiter::new(0, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..1000)
            .map(|_| limiter.acquire(Some(ip)).unwrap())
            .collect();
        assert_eq!(limiter.open(), 1000);
        drop(permits);
        assert_eq!(limiter.open(), 0);
        assert!(limiter.lock().per_ip.is_empty());
    }

    #[test]
    fn client_ip_prefers_the_configured_header() {
        let peer: SocketAddr = "[::ffff:192.0.2.9]:4000".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            client_ip(&headers, None, Some(peer)),
            Some("192.0.2.9".parse().unwrap()),
            "IPv4-mapped addresses count as IPv4"
        );
        headers.insert(
            "x-forwarded-for",
            "203.0.113.5, 198.51.100.7".parse().unwrap(),
        );
        let name = HeaderName::from_static("x-forwarded-for");
        assert_eq!(
            client_ip(&headers, Some(&name), Some(peer)),
            Some("198.51.100.7".parse().unwrap())
        );
        // Ignored unless configured: any client can send it.
        assert_eq!(
            client_ip(&headers, None, Some(peer)),
            Some("192.0.2.9".parse().unwrap())
        );
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(
            client_ip(&headers, Some(&name), Some(peer)),
            Some("192.0.2.9".parse().unwrap())
        );
    }
}
