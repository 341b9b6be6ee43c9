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
    /// The built-in TURN server.
    pub turn: TurnMetrics,
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
        let turn = TurnMetrics::register(&mut registry);

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
            turn,
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

// ---- The built-in TURN server (`crate::turn`) ----

/// Why an Allocate was refused by a limit, for `noom_turn_allocations_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnRefusal {
    /// The username already holds `--turn-max-allocations-per-user` allocations.
    PerUser,
    /// The client's IP address already holds `--turn-max-allocations-per-ip` allocations.
    PerIp,
}

impl TurnRefusal {
    const ALL: [TurnRefusal; 2] = [TurnRefusal::PerUser, TurnRefusal::PerIp];

    pub fn as_str(self) -> &'static str {
        match self {
            TurnRefusal::PerUser => "per-user",
            TurnRefusal::PerIp => "per-ip",
        }
    }
}

/// Why TURN credentials were refused, for `noom_turn_auth_failures_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnAuthFailure {
    /// The username is not `EXPIRY:...`.
    Malformed,
    /// The username's expiry has passed.
    Expired,
    /// The message integrity does not match: wrong password (or secret).
    BadCredentials,
}

impl TurnAuthFailure {
    const ALL: [TurnAuthFailure; 3] = [
        TurnAuthFailure::Malformed,
        TurnAuthFailure::Expired,
        TurnAuthFailure::BadCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TurnAuthFailure::Malformed => "malformed",
            TurnAuthFailure::Expired => "expired",
            TurnAuthFailure::BadCredentials => "bad-credentials",
        }
    }
}

/// The TURN server's series (all zero when it is off).
#[derive(Debug)]
pub struct TurnMetrics {
    /// TURN allocations (relay ports) open now.
    pub allocations_open: Gauge,
    /// [to peers, from peers].
    relayed_bytes: [Counter; 2],
    auth_failures: Vec<Counter>,
    /// CreatePermission / ChannelBind requests refused (403) for a denied peer address.
    pub permissions_refused: Counter,
    allocations_refused: Vec<Counter>,
    /// Datagrams a relay socket itself refused to send to a denied address (the requests were
    /// already refused at the door, so this stays 0 unless something slipped past).
    pub relay_denied: Counter,
}

impl TurnMetrics {
    fn register(registry: &mut Registry) -> Self {
        let allocations_open = Gauge::default();
        registry.register(
            "turn_allocations_open",
            "TURN allocations (relay ports) open now",
            allocations_open.clone(),
        );
        let bytes_family = Family::<Labels, Counter>::default();
        registry.register(
            "turn_relayed_bytes",
            "Payload bytes through TURN relay ports: to-peer (sent by relays), from-peer (arrived at relays)",
            bytes_family.clone(),
        );
        // One statement each: `get_or_create` returns a read guard that lives to the end of
        // its statement, and creating the second series needs the write lock.
        let to_peer = bytes_family
            .get_or_create(&[("direction", "to-peer")])
            .clone();
        let from_peer = bytes_family
            .get_or_create(&[("direction", "from-peer")])
            .clone();
        let relayed_bytes = [to_peer, from_peer];
        let auth_family = Family::<Labels, Counter>::default();
        registry.register(
            "turn_auth_failures",
            "TURN requests refused (401) for bad credentials, by reason",
            auth_family.clone(),
        );
        let auth_failures = TurnAuthFailure::ALL
            .iter()
            .map(|r| auth_family.get_or_create(&[("reason", r.as_str())]).clone())
            .collect();
        let permissions_refused = Counter::default();
        registry.register(
            "turn_permissions_refused",
            "TURN permissions and channels refused (403) for a denied peer address",
            permissions_refused.clone(),
        );
        let refused_family = Family::<Labels, Counter>::default();
        registry.register(
            "turn_allocations_refused",
            "TURN allocations refused (486) by the per-user or per-IP limit",
            refused_family.clone(),
        );
        let allocations_refused = TurnRefusal::ALL
            .iter()
            .map(|r| {
                refused_family
                    .get_or_create(&[("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let relay_denied = Counter::default();
        registry.register(
            "turn_relay_denied",
            "Datagrams a TURN relay socket refused to send to a denied address",
            relay_denied.clone(),
        );
        Self {
            allocations_open,
            relayed_bytes,
            auth_failures,
            permissions_refused,
            allocations_refused,
            relay_denied,
        }
    }

    pub fn relayed_to_peer(&self, bytes: usize) {
        self.relayed_bytes[0].inc_by(bytes as u64);
    }

    pub fn relayed_from_peer(&self, bytes: usize) {
        self.relayed_bytes[1].inc_by(bytes as u64);
    }

    pub fn auth_failed(&self, reason: TurnAuthFailure) {
        self.auth_failures[reason as usize].inc();
    }

    pub fn allocation_refused(&self, reason: TurnRefusal) {
        self.allocations_refused[reason as usize].inc();
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
        for (index, reason) in TurnRefusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, reason) in TurnAuthFailure::ALL.iter().enumerate() {
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
        metrics.turn.auth_failed(TurnAuthFailure::Expired);
        metrics.turn.relayed_to_peer(1200);
        metrics.turn.allocation_refused(TurnRefusal::PerIp);
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
            "noom_turn_auth_failures_total{reason=\"expired\"} 1",
            "noom_turn_auth_failures_total{reason=\"bad-credentials\"} 0",
            "noom_turn_relayed_bytes_total{direction=\"to-peer\"} 1200",
            "noom_turn_allocations_refused_total{reason=\"per-ip\"} 1",
            "noom_turn_allocations_open 0",
            "noom_turn_permissions_refused_total 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
