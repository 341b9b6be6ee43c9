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
use shared::{ClientKind, ErrorCode, ServerKind};

/// The OpenMetrics text content type (what `/metrics` answers with).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label enum declared once with its values: `ALL`, `as_str` and `index` come with it, so a
/// counter family made from `ALL` always has a series for every value (like `shared`'s kinds).
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }

            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labels!(
    /// Why a websocket upgrade or a message was refused before reaching the hub.
    Rejection {
        /// The upgrade came from a page on another site (`Origin` not allowed).
        Origin = "origin",
        /// The client's IP address already has `--max-connections-per-ip` websockets open.
        PerIp = "per-ip",
        /// The server already has `--max-connections` websockets open.
        Total = "total",
        /// A message over the per-connection rate limit (dropped, answered `rate-limited`).
        Rate = "rate",
    }
);

labels!(
    /// How a join with a valid resume token went (or that the token was refused).
    ResumeOutcome {
        /// A held seat taken back within the grace period.
        Resumed = "resumed",
        /// A seat still attached to a connection the server thought open, moved to the new one.
        TakenOver = "taken-over",
        /// A seat the server did not know (restart, or grace passed), seated again.
        Restored = "restored",
        /// Forged, expired, for another room, or malformed: answered `resume-refused`.
        Refused = "refused",
    }
);

// --- TLS ---
labels!(
    /// Why a TLS handshake did not complete, for `noom_tls_handshake_failures_total{reason}`.
    HandshakeFailure {
        /// Not finished within `--tls-handshake-timeout-ms` (a client that sent nothing, or
        /// stalled).
        Timeout = "timeout",
        /// Refused by TLS: not a ClientHello, no common version or cipher, a bad certificate
        /// alert, a connection reset mid-handshake.
        Error = "error",
    }
);
// --- end TLS ---

labels!(
    /// Why a held seat was released.
    Expiry {
        /// Its grace period ended.
        Grace = "grace",
        /// What was kept for it went over its bound.
        Overflow = "overflow",
    }
);

labels!(
    /// Why a connection was dropped as a slow reader.
    SlowReason {
        /// A write made no progress for `--write-timeout-ms`.
        Stalled = "stalled",
        /// Its queue would have gone over `--max-queue-bytes`.
        QueueFull = "queue-full",
    }
);

/// The `type` label for a received frame that is not a valid message (bad JSON, unknown type,
/// binary frame).
const INVALID: &str = "invalid";

type Labels = [(&'static str, &'static str); 1];

/// One counter per label value, created up front from a list (`ALL`).
fn family<T: Copy>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = T>,
    as_str: impl Fn(T) -> &'static str,
) -> Vec<Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    values
        .into_iter()
        .map(|value| family.get_or_create(&[(label, as_str(value))]).clone())
        .collect()
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.clone());
    counter
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

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
    /// Seats kept for a dropped connection now.
    pub seats_reconnecting: Gauge,
    /// The largest outbound queue seen, in bytes.
    pub queue_high_water_bytes: Gauge,
    /// Received frames by [`ClientKind`], then [`INVALID`].
    received: Vec<Counter>,
    /// Messages queued for a member because of another member's message, by [`ServerKind`].
    relayed: Vec<Counter>,
    errors: Vec<Counter>,
    rejections: Vec<Counter>,
    resumes: Vec<Counter>,
    seats_expired: Vec<Counter>,
    slow_readers: Vec<Counter>,
    /// Chat messages sent (each counted once, however many receive it).
    pub chat_messages: Counter,
    /// Rooms locked, opened or locked again.
    pub lock_changes: Counter,
    /// Joins with a wrong passcode.
    pub passcode_failures: Counter,
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
        let r = &mut registry;
        let connections_open = gauge(r, "connections_open", "Websocket connections open now");
        let connections = counter(
            r,
            "connections",
            "Websocket connections accepted since the server started",
        );
        let rooms_open = gauge(r, "rooms_open", "Rooms open now");
        let seats_reconnecting = gauge(
            r,
            "seats_reconnecting",
            "Seats kept for people whose connection dropped, now",
        );
        let queue_high_water_bytes = gauge(
            r,
            "queue_high_water_bytes",
            "The largest outbound queue of any connection so far, in bytes",
        );
        let received = family(
            r,
            "messages_received",
            "Frames received from clients, by message type (invalid: not a protocol message)",
            "type",
            ClientKind::ALL.iter().map(|k| k.as_str()).chain([INVALID]),
            |label| label,
        );
        let relayed = family(
            r,
            "messages_relayed",
            "Messages queued for a member because of another member's message, by type",
            "type",
            ServerKind::ALL.iter().copied(),
            ServerKind::as_str,
        );
        let errors = family(
            r,
            "errors",
            "Error replies sent to clients, by code",
            "code",
            ErrorCode::ALL.iter().copied(),
            ErrorCode::as_str,
        );
        let rejections = family(
            r,
            "rejections",
            "Websocket upgrades refused (origin, per-ip, total) and messages over the rate limit (rate)",
            "reason",
            Rejection::ALL.iter().copied(),
            Rejection::as_str,
        );
        let resumes = family(
            r,
            "resumes",
            "Joins with a resume token, by outcome",
            "outcome",
            ResumeOutcome::ALL.iter().copied(),
            ResumeOutcome::as_str,
        );
        let seats_expired = family(
            r,
            "seats_expired",
            "Seats of dropped connections released without a resume (grace over, or what was kept for them overflowed)",
            "reason",
            Expiry::ALL.iter().copied(),
            Expiry::as_str,
        );
        let slow_readers = family(
            r,
            "slow_reader_disconnects",
            "Connections dropped for not reading: a write stalled, or the queue went over its byte bound",
            "reason",
            SlowReason::ALL.iter().copied(),
            SlowReason::as_str,
        );
        let chat_messages = counter(r, "chat_messages", "Chat messages sent");
        let lock_changes = counter(r, "lock_changes", "Rooms locked, opened, or locked again");
        let passcode_failures = counter(r, "passcode_failures", "Joins with a wrong passcode");
        let bad_message_closes = counter(
            r,
            "bad_message_closes",
            "Connections closed (1008) for sending too many bad messages",
        );
        let oversize_closes = counter(
            r,
            "oversize_closes",
            "Connections closed (1009) for a message over the size limit",
        );
        let keepalive_timeouts = counter(
            r,
            "keepalive_timeouts",
            "Connections dropped because a keep-alive ping went unanswered",
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
            seats_reconnecting,
            queue_high_water_bytes,
            received,
            relayed,
            errors,
            rejections,
            resumes,
            seats_expired,
            slow_readers,
            chat_messages,
            lock_changes,
            passcode_failures,
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

    /// A frame decoded as a message of `kind`.
    pub fn received(&self, kind: ClientKind) {
        self.received[kind.index()].inc();
    }

    /// A frame that is not a protocol message.
    pub fn received_invalid(&self) {
        self.received[ClientKind::ALL.len()].inc();
    }

    pub fn relayed(&self, kind: ServerKind) {
        self.relayed[kind.index()].inc();
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].inc();
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejections[reason.index()].inc();
    }

    pub fn resume(&self, outcome: ResumeOutcome) {
        self.resumes[outcome.index()].inc();
    }

    pub fn seat_expired(&self, why: Expiry) {
        self.seats_expired[why.index()].inc();
    }

    pub fn slow_reader(&self, why: SlowReason) {
        self.slow_readers[why.index()].inc();
    }

    /// A TLS handshake that did not complete.
    pub fn tls_handshake_failed(&self, reason: HandshakeFailure) {
        self.tls_handshake_failures[reason as usize].inc();
    }

    /// Current values, as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
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
    fn local_labels_index_their_own_lists() {
        for (i, x) in Rejection::ALL.iter().enumerate() {
            assert_eq!(x.index(), i);
        }
        for (i, x) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(x.index(), i);
        }
        for (index, reason) in TurnRefusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, reason) in TurnAuthFailure::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (i, x) in ResumeOutcome::ALL.iter().enumerate() {
            assert_eq!(x.index(), i);
        }
        for (i, x) in Expiry::ALL.iter().enumerate() {
            assert_eq!(x.index(), i);
        }
        for (i, x) in SlowReason::ALL.iter().enumerate() {
            assert_eq!(x.index(), i);
        }
    }

    #[test]
    fn every_label_value_has_a_series_from_the_start() {
        let text = Metrics::new().encode();
        let has = |line: String| assert!(text.lines().any(|l| l == line), "no {line:?}");
        for kind in ClientKind::ALL {
            has(format!("noom_messages_received_total{{type=\"{kind}\"}} 0"));
        }
        has("noom_messages_received_total{type=\"invalid\"} 0".into());
        for kind in ServerKind::ALL {
            has(format!("noom_messages_relayed_total{{type=\"{kind}\"}} 0"));
        }
        for code in ErrorCode::ALL {
            has(format!("noom_errors_total{{code=\"{code}\"}} 0"));
        }
        for outcome in ResumeOutcome::ALL {
            has(format!(
                "noom_resumes_total{{outcome=\"{}\"}} 0",
                outcome.as_str()
            ));
        }
    }

    #[test]
    fn encodes_every_series_with_its_value() {
        let metrics = Metrics::new();
        metrics.error(ErrorCode::RateLimited);
        metrics.error(ErrorCode::RateLimited);
        metrics.error(ErrorCode::InvalidChat);
        metrics.rejected(Rejection::PerIp);
        metrics.relayed(ServerKind::IceCandidate);
        metrics.received(ClientKind::Chat);
        metrics.received_invalid();
        metrics.resume(ResumeOutcome::TakenOver);
        metrics.seat_expired(Expiry::Grace);
        metrics.slow_reader(SlowReason::Stalled);
        metrics.chat_messages.inc();
        metrics.connections_open.inc();
        metrics.tls_handshake_failed(HandshakeFailure::Timeout);
        metrics.turn.auth_failed(TurnAuthFailure::Expired);
        metrics.turn.relayed_to_peer(1200);
        metrics.turn.allocation_refused(TurnRefusal::PerIp);
        let text = metrics.encode();
        for line in [
            "noom_errors_total{code=\"rate-limited\"} 2",
            "noom_errors_total{code=\"invalid-chat\"} 1",
            "noom_errors_total{code=\"room-full\"} 0",
            "noom_rejections_total{reason=\"per-ip\"} 1",
            "noom_messages_relayed_total{type=\"iceCandidate\"} 1",
            "noom_messages_received_total{type=\"chat\"} 1",
            "noom_messages_received_total{type=\"invalid\"} 1",
            "noom_resumes_total{outcome=\"taken-over\"} 1",
            "noom_seats_expired_total{reason=\"grace\"} 1",
            "noom_slow_reader_disconnects_total{reason=\"stalled\"} 1",
            "noom_slow_reader_disconnects_total{reason=\"queue-full\"} 0",
            "noom_chat_messages_total 1",
            "noom_lock_changes_total 0",
            "noom_passcode_failures_total 0",
            "noom_seats_reconnecting 0",
            "noom_queue_high_water_bytes 0",
            "noom_connections_open 1",
            "noom_keepalive_timeouts_total 0",
            "noom_turn_auth_failures_total{reason=\"expired\"} 1",
            "noom_turn_auth_failures_total{reason=\"bad-credentials\"} 0",
            "noom_turn_relayed_bytes_total{direction=\"to-peer\"} 1200",
            "noom_turn_allocations_refused_total{reason=\"per-ip\"} 1",
            "noom_turn_allocations_open 0",
            "noom_turn_permissions_refused_total 0",
            "noom_tls_handshake_failures_total{reason=\"timeout\"} 1",
            "noom_tls_handshake_failures_total{reason=\"error\"} 0",
            "noom_tls_handshakes_in_flight 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
