//! Prometheus metrics, served as OpenMetrics text at `GET /metrics` (Prometheus scrapes it as is).
//!
//! Every label value is known in advance, so each labelled counter is created once, here, and
//! the hot paths (a relayed message, a refused one) only bump an atomic: no lock, no map lookup,
//! no allocation. The registry is touched only when `/metrics` is scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared::{ClientMessage, ErrorCode};

/// The OpenMetrics text content type (what `/metrics` answers with).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every [`ErrorCode`], in the order of [`code_index`].
const ERROR_CODES: [ErrorCode; ErrorCode::ALL.len()] = ErrorCode::ALL;

/// Position of `code` in [`ERROR_CODES`]. Exhaustive, so a new code fails to compile until it is
/// given a counter.
fn code_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::RoomFull => 0,
        ErrorCode::InvalidRoom => 1,
        ErrorCode::UnsupportedVersion => 2,
        ErrorCode::Malformed => 3,
        ErrorCode::UnknownType => 4,
        ErrorCode::NotInRoom => 5,
        ErrorCode::AlreadyJoined => 6,
        ErrorCode::UnknownPeer => 7,
        ErrorCode::ServerFull => 8,
        ErrorCode::RateLimited => 9,
    }
}

/// Why a websocket upgrade or a message was refused before reaching the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The upgrade came from a page on another site (`Origin` not allowed).
    Origin,
    /// The client's IP address already has `--max-connections-per-ip` websockets open.
    PerIp,
    /// The server already has `--max-connections` websockets open.
    Total,
    /// A message over the per-connection rate limit (dropped, answered `rate-limited`).
    Rate,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::Origin,
        Rejection::PerIp,
        Rejection::Total,
        Rejection::Rate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Origin => "origin",
            Rejection::PerIp => "per-ip",
            Rejection::Total => "total",
            Rejection::Rate => "rate",
        }
    }
}

// --- TLS ---
/// Why a TLS handshake did not complete, for `noom_tls_handshake_failures_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within `--tls-handshake-timeout-ms` (a client that sent nothing, or stalled).
    Timeout,
    /// Refused by TLS: not a ClientHello, no common version or cipher, a bad certificate alert,
    /// a connection reset mid-handshake.
    Error,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 2] = [HandshakeFailure::Timeout, HandshakeFailure::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Error => "error",
        }
    }
}
// --- end TLS ---

/// What a relayed message was, for `noom_messages_relayed_total{type}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayed {
    Description,
    IceCandidate,
    PeerMediaState,
}

impl Relayed {
    const ALL: [Relayed; 3] = [
        Relayed::Description,
        Relayed::IceCandidate,
        Relayed::PeerMediaState,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Relayed::Description => "description",
            Relayed::IceCandidate => "iceCandidate",
            Relayed::PeerMediaState => "peerMediaState",
        }
    }
}

/// The `type` label for a received frame that is not a valid message (bad JSON, unknown type,
/// binary frame).
const INVALID: &str = "invalid";

type Labels = [(&'static str, &'static str); 1];

/// All of the server's counters and gauges. One per server (in `AppState` and the hub).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Websockets open now.
    pub connections_open: Gauge,
    /// Websockets accepted since start.
    pub connections: Counter,
    /// Rooms open now.
    pub rooms_open: Gauge,
    /// Received frames by client message type, then [`INVALID`].
    received: Vec<Counter>,
    relayed: Vec<Counter>,
    errors: Vec<Counter>,
    rejections: Vec<Counter>,
    /// Peers dropped because their outbound queue was full (close 1008, "too slow").
    pub slow_reader_disconnects: Counter,
    /// Connections closed for sending too many bad messages (close 1008).
    pub bad_message_closes: Counter,
    /// Connections closed for a message over `--max-message-bytes` (close 1009).
    pub oversize_closes: Counter,
    /// Connections dropped because a keep-alive ping went unanswered.
    pub keepalive_timeouts: Counter,
    // --- TLS ---
    /// TLS handshakes completed (connections handed to the HTTP server).
    pub tls_handshakes: Counter,
    tls_handshake_failures: Vec<Counter>,
    /// TLS handshakes started and not yet handed over.
    pub tls_handshakes_in_flight: Gauge,
    /// ACME TLS-ALPN-01 validation connections answered.
    pub tls_acme_challenges: Counter,
    /// ACME errors (each retried with backoff).
    pub tls_acme_errors: Counter,
    /// Certificate files reloaded after a change on disk.
    pub tls_certificate_reloads: Counter,
    /// Changed certificate files that could not be used (the previous certificate stays).
    pub tls_certificate_reload_failures: Counter,
    /// When the certificate served now expires, in seconds since the epoch (0: none yet).
    pub tls_certificate_expiry: Gauge,
    // --- end TLS ---
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("noom");
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Websocket connections open now",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Websocket connections accepted since the server started",
            connections.clone(),
        );
        let rooms_open = Gauge::default();
        registry.register("rooms_open", "Rooms open now", rooms_open.clone());

        let received_family = Family::<Labels, Counter>::default();
        registry.register(
            "messages_received",
            "Frames received from clients, by message type (invalid: not a protocol message)",
            received_family.clone(),
        );
        let received = ClientMessage::TYPES
            .iter()
            .copied()
            .chain([INVALID])
            .map(|kind| received_family.get_or_create(&[("type", kind)]).clone())
            .collect();

        let relayed_family = Family::<Labels, Counter>::default();
        registry.register(
            "messages_relayed",
            "Messages queued for another member of the sender's room, by type",
            relayed_family.clone(),
        );
        let relayed = Relayed::ALL
            .iter()
            .map(|kind| {
                relayed_family
                    .get_or_create(&[("type", kind.as_str())])
                    .clone()
            })
            .collect();

        let errors_family = Family::<Labels, Counter>::default();
        registry.register(
            "errors",
            "Error replies sent to clients, by code",
            errors_family.clone(),
        );
        let errors = ERROR_CODES
            .iter()
            .map(|code| {
                errors_family
                    .get_or_create(&[("code", code.as_str())])
                    .clone()
            })
            .collect();

        let rejections_family = Family::<Labels, Counter>::default();
        registry.register(
            "rejections",
            "Websocket upgrades refused (origin, per-ip, total) and messages over the rate limit (rate)",
            rejections_family.clone(),
        );
        let rejections = Rejection::ALL
            .iter()
            .map(|reason| {
                rejections_family
                    .get_or_create(&[("reason", reason.as_str())])
                    .clone()
            })
            .collect();

        let slow_reader_disconnects = Counter::default();
        registry.register(
            "slow_reader_disconnects",
            "Connections dropped because their outbound queue was full (not reading)",
            slow_reader_disconnects.clone(),
        );
        let bad_message_closes = Counter::default();
        registry.register(
            "bad_message_closes",
            "Connections closed (1008) for sending too many bad messages",
            bad_message_closes.clone(),
        );
        let oversize_closes = Counter::default();
        registry.register(
            "oversize_closes",
            "Connections closed (1009) for a message over the size limit",
            oversize_closes.clone(),
        );
        let keepalive_timeouts = Counter::default();
        registry.register(
            "keepalive_timeouts",
            "Connections dropped because a keep-alive ping went unanswered",
            keepalive_timeouts.clone(),
        );

        // --- TLS ---
        let tls_handshakes = Counter::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed",
            tls_handshakes.clone(),
        );
        let tls_failures_family = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (error) or did not finish in time (timeout)",
            tls_failures_family.clone(),
        );
        let tls_handshake_failures = HandshakeFailure::ALL
            .iter()
            .map(|reason| {
                tls_failures_family
                    .get_or_create(&[("reason", reason.as_str())])
                    .clone()
            })
            .collect();
        let tls_handshakes_in_flight = Gauge::default();
        registry.register(
            "tls_handshakes_in_flight",
            "TLS handshakes in progress",
            tls_handshakes_in_flight.clone(),
        );
        let tls_acme_challenges = Counter::default();
        registry.register(
            "tls_acme_challenges",
            "ACME TLS-ALPN-01 validation connections answered",
            tls_acme_challenges.clone(),
        );
        let tls_acme_errors = Counter::default();
        registry.register(
            "tls_acme_errors",
            "ACME errors (orders, cache); each is retried with backoff",
            tls_acme_errors.clone(),
        );
        let tls_certificate_reloads = Counter::default();
        registry.register(
            "tls_certificate_reloads",
            "Certificate files reloaded after they changed on disk",
            tls_certificate_reloads.clone(),
        );
        let tls_certificate_reload_failures = Counter::default();
        registry.register(
            "tls_certificate_reload_failures",
            "Changed certificate files that could not be used (the previous certificate is kept)",
            tls_certificate_reload_failures.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate served now expires, in seconds since the Unix epoch (0: none yet)",
            tls_certificate_expiry.clone(),
        );
        // --- end TLS ---

        Self {
            registry,
            connections_open,
            connections,
            rooms_open,
            received,
            relayed,
            errors,
            rejections,
            slow_reader_disconnects,
            bad_message_closes,
            oversize_closes,
            keepalive_timeouts,
            tls_handshakes,
            tls_handshake_failures,
            tls_handshakes_in_flight,
            tls_acme_challenges,
            tls_acme_errors,
            tls_certificate_reloads,
            tls_certificate_reload_failures,
            tls_certificate_expiry,
        }
    }

    /// A frame decoded as `message`.
    pub fn received(&self, message: &ClientMessage) {
        let index = match message {
            ClientMessage::Join { .. } => 0,
            ClientMessage::Leave => 1,
            ClientMessage::Description { .. } => 2,
            ClientMessage::IceCandidate { .. } => 3,
            ClientMessage::MediaState(_) => 4,
        };
        self.received[index].inc();
    }

    /// A frame that is not a protocol message.
    pub fn received_invalid(&self) {
        self.received[ClientMessage::TYPES.len()].inc();
    }

    pub fn relayed(&self, kind: Relayed) {
        self.relayed[kind as usize].inc();
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors[code_index(code)].inc();
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejections[reason as usize].inc();
    }

    /// A TLS handshake that did not complete.
    pub fn tls_handshake_failed(&self, reason: HandshakeFailure) {
        self.tls_handshake_failures[reason as usize].inc();
    }

    /// Current values, as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_line_up_with_their_enums() {
        for (index, code) in ERROR_CODES.iter().enumerate() {
            assert_eq!(code_index(*code), index);
        }
        for (index, kind) in Relayed::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, reason) in Rejection::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, reason) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        // `received` relies on TYPES listing the variants in declaration order.
        assert_eq!(
            ClientMessage::TYPES,
            ["join", "leave", "description", "iceCandidate", "mediaState"]
        );
    }

    #[test]
    fn encodes_every_series_with_its_value() {
        let metrics = Metrics::new();
        metrics.error(ErrorCode::RateLimited);
        metrics.error(ErrorCode::RateLimited);
        metrics.rejected(Rejection::PerIp);
        metrics.relayed(Relayed::IceCandidate);
        metrics.received_invalid();
        metrics.connections_open.inc();
        metrics.tls_handshake_failed(HandshakeFailure::Timeout);
        let text = metrics.encode();
        for line in [
            "noom_errors_total{code=\"rate-limited\"} 2",
            "noom_errors_total{code=\"room-full\"} 0",
            "noom_rejections_total{reason=\"per-ip\"} 1",
            "noom_messages_relayed_total{type=\"iceCandidate\"} 1",
            "noom_messages_received_total{type=\"invalid\"} 1",
            "noom_connections_open 1",
            "noom_keepalive_timeouts_total 0",
            "noom_tls_handshake_failures_total{reason=\"timeout\"} 1",
            "noom_tls_handshake_failures_total{reason=\"error\"} 0",
            "noom_tls_handshakes_in_flight 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
