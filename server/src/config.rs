//! Command line and environment configuration. Every flag has an environment variable so the
//! server can be configured the same way under systemd, in a container or by hand.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderName;
use clap::Parser;
use ipnet::IpNet;
use shared::IceServer;

use crate::datadir::{DataDir, DataDirError, Secret, MIN_SECRET_CHARS};
use crate::hub::{HubConfig, MIN_QUEUE_BYTES};
use crate::ice::{BuiltinTurn, IceServers};
use crate::origin::Origin;
use crate::passcode::{Rate, DEFAULT_ITERATIONS};
use crate::resume::ResumeKeys;
use crate::tls::{AcmeSettings, HandshakeLimits, TlsMode, LETS_ENCRYPT_PRODUCTION};
use crate::turn::{PortRange, TurnSettings};

/// The public STUN servers of the tutorial app this product started from.
pub const DEFAULT_ICE_SERVERS: &[&str] = &[
    "stun:stun.l.google.com:19302",
    "stun:stun1.l.google.com:19302",
    "stun:stun2.l.google.com:19302",
    "stun:stun3.l.google.com:19302",
];

#[derive(Clone, Debug, Parser)]
#[command(
    name = "server",
    version,
    about = "Noom: serves the browser app and relays WebRTC signaling between people in the same room.",
    after_help = "Calls are peer to peer; only when no direct path works does media go through the built-in TURN relay (or a --turn-url server). Logs: set RUST_LOG (default info; the turn crate's own per-packet logs are off unless RUST_LOG names it, like RUST_LOG=info,turn=debug)."
)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port; the bound address is printed.
    #[arg(long, env = "NOOM_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Pending TCP connections the kernel queues before the server accepts them. The default of
    /// `TcpListener::bind` (128, from mio) overflows when a couple of hundred people join at once;
    /// an overflowed SYN costs that person a one-second retransmit. The kernel caps it at
    /// net.core.somaxconn.
    #[arg(long, env = "NOOM_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Where the server keeps what must survive a restart: its secrets, the self-signed
    /// certificate, the ACME account and certificates. A relative path is taken from the working
    /// directory, so by default it is a `noom-data` directory beside where the server is
    /// started. Created (mode 0700) only when something needs it.
    #[arg(long, env = "NOOM_DATA_DIR", default_value = "noom-data")]
    pub data_dir: PathBuf,

    /// Serve the web app from this directory (`trunk build --release` writes `dist`) instead of
    /// the one built into this binary: for development and custom builds. By default the
    /// built-in app is served; a binary built without one serves `dist` from the working
    /// directory if it is there, and otherwise says so on `/` (HTTP 503).
    #[arg(long, env = "NOOM_DIST")]
    pub dist: Option<PathBuf>,

    /// People per room (at most 8: every browser sends its video to each of the others, so a
    /// mesh larger than that does not fit a home uplink).
    #[arg(long, env = "NOOM_ROOM_CAPACITY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub room_capacity: u32,

    /// Rooms open at once; a join that would open one more gets `server-full`.
    #[arg(long, env = "NOOM_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// STUN server URL handed to browsers (repeat the flag, or comma-separate in the env var).
    /// `none` hands out no ICE servers: enough on one LAN or one machine.
    #[arg(long = "ice-server", env = "NOOM_ICE_SERVERS", value_delimiter = ',',
          default_values_t = DEFAULT_ICE_SERVERS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub ice_servers: Vec<String>,

    /// Largest websocket message accepted, in bytes (SDP offers are a few KiB).
    #[arg(long, env = "NOOM_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Seconds open connections get to close after Ctrl-C / SIGTERM before the server exits.
    #[arg(long, env = "NOOM_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,

    /// Websockets open at once; more are refused with HTTP 503. 0: unlimited.
    #[arg(long, env = "NOOM_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Websockets open at once from one IP address; more are refused with HTTP 429. Generous
    /// because everyone behind one office or mobile-carrier NAT shares an address. 0: unlimited.
    #[arg(long, env = "NOOM_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: usize,

    /// Take the client's IP address (for --max-connections-per-ip) from this request header,
    /// set by the reverse proxy in front (`x-forwarded-for`: its last entry; `x-real-ip`).
    /// Only set it behind a proxy that overwrites the header: clients can send anything.
    #[arg(long, env = "NOOM_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,

    /// Messages a connection may send in one burst (a joining browser trickles a burst of ICE
    /// candidates: a few per peer).
    #[arg(long, env = "NOOM_RATE_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,

    /// Messages per second a connection may sustain after its burst; messages over the limit
    /// are dropped with a `rate-limited` error. 0: no rate limit.
    #[arg(long, env = "NOOM_RATE_PER_SEC", default_value_t = 50)]
    pub rate_per_sec: u32,

    /// Bad messages (malformed, unknown type, binary, invalid room, wrong version, out of
    /// order, over the rate limit) a connection may send before it is closed with 1008.
    /// 0: never close.
    #[arg(long, env = "NOOM_MAX_BAD_MESSAGES", default_value_t = 20)]
    pub max_bad_messages: u32,

    /// Milliseconds between keep-alive pings to each websocket (browsers answer by themselves).
    /// 0: no pings.
    #[arg(long, env = "NOOM_PING_INTERVAL_MS", default_value_t = 15_000)]
    pub ping_interval_ms: u64,

    /// Milliseconds a ping may go unanswered before the peer is taken for dead: its connection
    /// is dropped (its seat kept for --resume-grace-secs). With the default interval, a dead
    /// peer is noticed within 30 s.
    #[arg(long, env = "NOOM_PING_TIMEOUT_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_timeout_ms: u64,

    /// Another origin whose pages may open websockets here, like `https://noom.example` or
    /// `http://127.0.0.1:8080` for `trunk serve` (repeat the flag, or comma-separate in the env
    /// var). The server's own host is always allowed, and so are clients that send no Origin
    /// (programs, not browsers); any other page is refused with HTTP 403.
    #[arg(
        long = "allowed-origin",
        env = "NOOM_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    // --- TLS (HTTPS); resolved by `Config::tls_mode` into a `tls::TlsMode` ---
    /// HTTPS: `auto` (the default) serves plain HTTP when --addr is a loopback address and a
    /// self-signed certificate otherwise (so another device on the LAN gets a secure context);
    /// `off`: plain HTTP; `self-signed`: always HTTPS with a certificate made once and kept in
    /// --data-dir. --tls-cert/--tls-key or --acme imply HTTPS with that certificate.
    /// [default: auto]
    #[arg(long, env = "NOOM_TLS", value_enum, value_name = "MODE")]
    pub tls: Option<TlsFlag>,

    /// Certificate chain (PEM) to serve, with --tls-key. Reloaded when it changes on disk (a
    /// certbot renewal) without a restart; a broken new file keeps the old certificate.
    #[arg(long, env = "NOOM_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "NOOM_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Get a certificate for this domain from an ACME CA (Let's Encrypt by default) with the
    /// TLS-ALPN-01 challenge on the HTTPS port (so --addr must be reachable from the internet on
    /// port 443), and renew it before it expires. Repeat for more names (comma-separate in the
    /// env var). The account and certificates are kept in --data-dir.
    #[arg(
        long = "acme",
        env = "NOOM_ACME",
        value_delimiter = ',',
        value_name = "DOMAIN"
    )]
    pub acme_domains: Vec<String>,

    /// Contact address given to the ACME CA (expiry warnings, policy changes). Optional.
    #[arg(long, env = "NOOM_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,

    /// ACME directory URL. [default: https://acme-v02.api.letsencrypt.org/directory (Let's
    /// Encrypt production); its staging directory is
    /// https://acme-staging-v02.api.letsencrypt.org/directory]
    #[arg(long, env = "NOOM_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,

    /// Trust this CA certificate (PEM) for the ACME directory's own HTTPS, instead of the public
    /// roots: for a private or test ACME server such as pebble.
    #[arg(long, env = "NOOM_ACME_CA_ROOT", value_name = "FILE")]
    pub acme_ca_root: Option<PathBuf>,

    /// Also listen on this address with plain HTTP, answering every request with a redirect
    /// (308) to the same path on the HTTPS port, like `0.0.0.0:80`. Needs HTTPS on.
    #[arg(long, env = "NOOM_HTTP_REDIRECT", value_name = "ADDR")]
    pub http_redirect: Option<SocketAddr>,

    /// Milliseconds a client gets to complete its TLS handshake before the connection is closed
    /// (a client that connects and sends nothing holds no more than this).
    #[arg(long, env = "NOOM_TLS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_ms: u64,

    /// TLS handshakes in progress at once; further connections wait in the listen queue until
    /// one finishes. Handshakes do not count against --max-connections.
    #[arg(long, env = "NOOM_MAX_TLS_HANDSHAKES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tls_handshakes: u32,
    // --- end TLS ---

    // ---- TURN (src/turn/, src/ice.rs) ----
    /// The built-in TURN server, which relays calls between people whose networks block a
    /// direct connection. `auto`: on when the server serves HTTPS (that is, reachable from other
    /// machines), on UDP and TCP port 3478 of the --addr IP; `off`; or `ADDR:PORT` (0.0.0.0:3478
    /// listens on every interface).
    #[arg(long, env = "NOOM_TURN", default_value = "auto", help_heading = "TURN")]
    pub turn: TurnMode,

    /// The address to advertise for the built-in TURN server and its relays, when the server is
    /// behind a NAT with 3478/udp+tcp and the relay ports forwarded to it. Default: the address
    /// the browser reached the server at.
    #[arg(long, env = "NOOM_TURN_PUBLIC_IP", help_heading = "TURN")]
    pub turn_public_ip: Option<IpAddr>,

    /// UDP ports the built-in TURN server relays on, MIN-MAX (one per allocation; open them in
    /// the firewall).
    #[arg(
        long,
        env = "NOOM_TURN_RELAY_PORTS",
        default_value = "49152-65535",
        help_heading = "TURN"
    )]
    pub turn_relay_ports: PortRange,

    /// A peer range the relay may reach although it is private (repeat, or comma-separate in the
    /// env var), like 10.0.0.0/8. By default the relay refuses private and special ranges that
    /// are not the server's own networks; loopback, link-local, multicast and the server's own
    /// addresses are always refused.
    #[arg(
        long = "turn-allow-peer",
        env = "NOOM_TURN_ALLOW_PEERS",
        value_delimiter = ',',
        help_heading = "TURN"
    )]
    pub turn_allow_peers: Vec<IpNet>,

    /// TURN allocations one username (one joined browser) may hold at once. A browser makes
    /// about two per other person in the room (UDP and TCP) and network interface.
    #[arg(long, env = "NOOM_TURN_MAX_ALLOCATIONS_PER_USER", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "TURN")]
    pub turn_max_allocations_per_user: u32,

    /// TURN allocations one client IP address may hold at once (generous: an office NAT is one
    /// address). Also the most TURN-over-TCP connections from one address.
    #[arg(long, env = "NOOM_TURN_MAX_ALLOCATIONS_PER_IP", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "TURN")]
    pub turn_max_allocations_per_ip: u32,

    /// An external TURN server handed to browsers, like `turn:turn.example:3478?transport=udp`
    /// (repeat, or comma-separate in the env var), with credentials signed by --turn-secret
    /// (coturn: `use-auth-secret` and `static-auth-secret`).
    #[arg(
        long = "turn-url",
        env = "NOOM_TURN_URLS",
        value_delimiter = ',',
        help_heading = "TURN"
    )]
    pub turn_urls: Vec<String>,

    /// The TURN REST secret that signs TURN credentials (at least 16 characters; prefer the env
    /// var to the flag, which other users can see in `ps`). Default: the `turn-secret` file in
    /// --data-dir, created on first use; give an external coturn the same secret.
    #[arg(
        long,
        env = "NOOM_TURN_SECRET",
        hide_env_values = true,
        help_heading = "TURN"
    )]
    pub turn_secret: Option<SecretArg>,

    // --- Seats, resume, outbound queues and room passcodes (the hub) ------------------------
    /// Secret that signs resume tokens (at least 16 characters). Give every server node, and
    /// every restart, the same one so their tokens stay valid. Default: the `resume-secret` file
    /// in --data-dir, created with a random secret on first start.
    #[arg(long, env = "NOOM_RESUME_SECRET", hide_env_values = true)]
    pub resume_secret: Option<String>,

    /// Seconds a dropped connection's seat is kept (the room sees the person as reconnecting)
    /// before the room is told they left; a reconnect with the seat's resume token within it
    /// takes the seat back. 0: release at once.
    #[arg(long, env = "NOOM_RESUME_GRACE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub resume_grace_secs: u64,

    /// Bytes of messages that may wait for one connection (at least 524288). A client whose
    /// queue would grow past it is dropped as too slow; memory per connection stays bounded
    /// while honest bursts (three peers' ICE candidates, chat history) pass.
    #[arg(long, env = "NOOM_MAX_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_queue_bytes: usize,

    /// Milliseconds a write to a client may make no progress before the client is taken for a
    /// stalled reader and dropped (its seat kept for --resume-grace-secs). Each write is at most
    /// 64 KiB plus one message, so a client reading slower than that per period is dropped.
    #[arg(long, env = "NOOM_WRITE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_ms: u64,

    /// Passcode attempts (joins with a passcode, locks with one) per client address per minute;
    /// more are refused with `too-many-attempts`. 0: no limit.
    #[arg(long, env = "NOOM_PASSCODE_ATTEMPTS_PER_IP", default_value_t = 10)]
    pub passcode_attempts_per_ip: u32,

    /// Passcode attempts per room per minute, from all addresses together. 0: no limit.
    #[arg(long, env = "NOOM_PASSCODE_ATTEMPTS_PER_ROOM", default_value_t = 30)]
    pub passcode_attempts_per_room: u32,
}

/// The `--tls` choices (see [`Config::tls_mode`] for how they combine with the other flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsFlag {
    Auto,
    Off,
    SelfSigned,
}

/// `--turn`: whether and where the built-in TURN server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnMode {
    /// On when the server serves HTTPS, on port 3478 of the --addr IP.
    Auto,
    Off,
    Listen(SocketAddr),
}

/// A `--turn` value that is not `auto`, `off` or `ADDR:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("expected auto, off, or ADDR:PORT like 0.0.0.0:3478")]
pub struct BadTurnMode;

impl FromStr for TurnMode {
    type Err = BadTurnMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(TurnMode::Auto),
            "off" => Ok(TurnMode::Off),
            addr => addr.parse().map(TurnMode::Listen).map_err(|_| BadTurnMode),
        }
    }
}

impl fmt::Display for TurnMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TurnMode::Auto => f.write_str("auto"),
            TurnMode::Off => f.write_str("off"),
            TurnMode::Listen(addr) => addr.fmt(f),
        }
    }
}

/// A secret as given on the command line or in the environment, checked when used (so that a
/// refusal never echoes it, as clap's errors echo values). `Debug` hides it.
#[derive(Clone)]
pub struct SecretArg(String);

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--ice-server {0:?}: expected a stun: or stuns: URL (like stun:stun.example.org:3478), or `none`")]
    BadIceServer(String),
    #[error("--ice-server {0:?}: a TURN server needs credentials: give it with --turn-url and --turn-secret")]
    TurnUnsupported(String),
    #[error("--turn-url {0:?}: expected a turn: or turns: URL with a host, like turn:turn.example:3478?transport=udp")]
    BadTurnUrl(String),
    #[error("the TURN secret: {0}")]
    TurnSecret(DataDirError),
    #[error(
        "--turn-secret: a secret needs at least {} characters",
        crate::datadir::MIN_SECRET_CHARS
    )]
    ShortTurnSecret,
    #[error("--turn-public-ip {0}: expected an address browsers can reach, not an unspecified or multicast one")]
    BadTurnPublicIp(IpAddr),
    #[error("--allowed-origin {0:?}: expected http:// or https:// and a host, like https://noom.example or http://127.0.0.1:8080")]
    BadOrigin(String),
    #[error("--client-ip-header {0:?}: not a valid HTTP header name")]
    BadHeaderName(String),
    // --- TLS ---
    #[error("{0} cannot be combined with {1}: choose one way to get a certificate")]
    TlsConflict(&'static str, &'static str),
    #[error("{0} needs {1}")]
    TlsMissing(&'static str, &'static str),
    #[error("--http-redirect needs HTTPS, which is off here (--tls off, or --tls auto on a loopback --addr)")]
    RedirectWithoutTls,
    #[error("--acme {0:?}: expected a DNS name like noom.example.org (no wildcard, no IP address: TLS-ALPN-01 cannot validate those)")]
    BadAcmeDomain(String),
    #[error("--acme-email {0:?}: expected an email address like admin@example.org")]
    BadAcmeEmail(String),
    #[error("--acme-directory {0:?}: expected an https:// URL")]
    BadAcmeDirectory(String),
    #[error("--resume-secret: at least {MIN_SECRET_CHARS} characters, please")]
    ShortResumeSecret,
    #[error("resume secret: {0}")]
    ResumeSecret(DataDirError),
    #[error("--max-queue-bytes {got}: at least {min} (the largest message the server sends must fit twice)")]
    SmallQueue { got: usize, min: usize },
}

impl Config {
    /// Defaults, as if started with no flags and no environment (for tests).
    pub fn defaults() -> Self {
        Self::parse_from(["server"])
    }

    pub fn data_dir(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The ICE servers to hand to browsers, checked.
    pub fn ice_servers(&self) -> Result<Vec<IceServer>, ConfigError> {
        let mut out: Vec<IceServer> = Vec::new();
        for url in &self.ice_servers {
            let url = url.trim();
            if url.eq_ignore_ascii_case("none") || url.is_empty() {
                continue;
            }
            let scheme = url
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            match scheme.as_str() {
                "stun" | "stuns" if url.len() > scheme.len() + 1 => {}
                "turn" | "turns" => return Err(ConfigError::TurnUnsupported(url.to_string())),
                _ => return Err(ConfigError::BadIceServer(url.to_string())),
            }
            if !out.iter().any(|s| s.urls.iter().any(|u| u == url)) {
                out.push(IceServer {
                    urls: vec![url.to_string()],
                    username: None,
                    credential: None,
                });
            }
        }
        Ok(out)
    }

    /// The extra origins allowed to open websockets, checked.
    pub fn allowed_origins(&self) -> Result<Vec<Origin>, ConfigError> {
        self.allowed_origins
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| Origin::parse(s).ok_or_else(|| ConfigError::BadOrigin(s.to_string())))
            .collect()
    }

    pub fn client_ip_header(&self) -> Result<Option<HeaderName>, ConfigError> {
        self.client_ip_header
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                HeaderName::try_from(s.to_ascii_lowercase())
                    .map_err(|_| ConfigError::BadHeaderName(s.to_string()))
            })
            .transpose()
    }

    pub fn ping_interval(&self) -> Option<Duration> {
        (self.ping_interval_ms > 0).then(|| Duration::from_millis(self.ping_interval_ms))
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms.max(1))
    }

    // --- TLS ---
    /// How the server serves HTTPS, with every contradictory combination of flags refused.
    /// Pure: reads no file and no interface, so it can be asked anywhere ("is TLS on?").
    pub fn tls_mode(&self) -> Result<TlsMode, ConfigError> {
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (Some(_), None) => return Err(ConfigError::TlsMissing("--tls-cert", "--tls-key")),
            (None, Some(_)) => return Err(ConfigError::TlsMissing("--tls-key", "--tls-cert")),
            (None, None) => None,
        };
        let acme = self.acme_settings()?;
        let chosen = match self.tls {
            Some(TlsFlag::Off) => Some("--tls off"),
            Some(TlsFlag::SelfSigned) => Some("--tls self-signed"),
            Some(TlsFlag::Auto) | None => None,
        };
        if let Some(chosen) = chosen {
            if files.is_some() {
                return Err(ConfigError::TlsConflict(chosen, "--tls-cert/--tls-key"));
            }
            if acme.is_some() {
                return Err(ConfigError::TlsConflict(chosen, "--acme"));
            }
        }
        let mode = match (self.tls, files, acme) {
            (_, Some(_), Some(_)) => {
                return Err(ConfigError::TlsConflict("--tls-cert/--tls-key", "--acme"))
            }
            (_, Some((cert, key)), None) => TlsMode::Files { cert, key },
            (_, None, Some(acme)) => TlsMode::Acme(acme),
            (Some(TlsFlag::Off), None, None) => TlsMode::Off,
            (Some(TlsFlag::SelfSigned), None, None) => TlsMode::SelfSigned,
            (Some(TlsFlag::Auto) | None, None, None) if self.addr.ip().is_loopback() => {
                TlsMode::Off
            }
            (Some(TlsFlag::Auto) | None, None, None) => TlsMode::SelfSigned,
        };
        if self.http_redirect.is_some() && !mode.is_on() {
            return Err(ConfigError::RedirectWithoutTls);
        }
        Ok(mode)
    }

    fn acme_settings(&self) -> Result<Option<AcmeSettings>, ConfigError> {
        let domains: Vec<String> = self
            .acme_domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if domains.is_empty() {
            for (set, flag) in [
                (self.acme_email.is_some(), "--acme-email"),
                (self.acme_directory.is_some(), "--acme-directory"),
                (self.acme_ca_root.is_some(), "--acme-ca-root"),
            ] {
                if set {
                    return Err(ConfigError::TlsMissing(flag, "--acme DOMAIN"));
                }
            }
            return Ok(None);
        }
        let mut unique: Vec<String> = Vec::with_capacity(domains.len());
        for domain in domains {
            if !crate::tls::is_acme_domain(&domain) {
                return Err(ConfigError::BadAcmeDomain(domain));
            }
            if !unique.contains(&domain) {
                unique.push(domain);
            }
        }
        let email = match self.acme_email.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(email) => {
                let valid = email.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty() && host.contains('.') && !host.contains('@')
                }) && !email.contains(|c: char| c.is_whitespace() || c.is_control());
                if !valid {
                    return Err(ConfigError::BadAcmeEmail(email.to_string()));
                }
                Some(email.to_string())
            }
        };
        let directory = match self.acme_directory.as_deref().map(str::trim) {
            None | Some("") => LETS_ENCRYPT_PRODUCTION.to_string(),
            Some(url) => {
                let rest = url.get(..8).filter(|s| s.eq_ignore_ascii_case("https://"));
                if rest.is_none() || url.len() <= 8 {
                    return Err(ConfigError::BadAcmeDirectory(url.to_string()));
                }
                url.to_string()
            }
        };
        Ok(Some(AcmeSettings {
            domains: unique,
            email,
            directory,
            ca_root: self.acme_ca_root.clone(),
        }))
    }

    pub fn tls_handshake_limits(&self) -> HandshakeLimits {
        HandshakeLimits {
            timeout: Duration::from_millis(self.tls_handshake_timeout_ms.max(1)),
            max_in_flight: (self.max_tls_handshakes as usize).max(1),
        }
    }
    // --- end TLS ---

    // --- Seats, resume, outbound queues and room passcodes (the hub) ------------------------

    /// The resume-token secret: the flag, else the data directory's `resume-secret` file
    /// (created on first use).
    pub fn resume_secret(&self) -> Result<Secret, ConfigError> {
        match self.resume_secret.as_deref() {
            Some(text) => Secret::from_text(text).ok_or(ConfigError::ShortResumeSecret),
            None => self
                .data_dir()
                .secret("resume-secret")
                .map_err(ConfigError::ResumeSecret),
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.max(1))
    }

    /// The smallest `--max-queue-bytes` that works with `--max-message-bytes`: a relayed
    /// message is a little larger than what its sender sent, and must fit in half a queue (what
    /// a reconnecting seat keeps).
    pub fn min_queue_bytes(&self) -> usize {
        MIN_QUEUE_BYTES.max(
            self.max_message_bytes
                .saturating_add(1024)
                .saturating_mul(2),
        )
    }

    /// Everything the hub needs. Reads (or creates) the resume secret. `builtin`: the built-in
    /// TURN server, when one was started (its credentials are minted per `joined`).
    pub fn hub_config(&self, builtin: Option<BuiltinTurn>) -> Result<HubConfig, ConfigError> {
        let min = self.min_queue_bytes();
        if self.max_queue_bytes < min {
            return Err(ConfigError::SmallQueue {
                got: self.max_queue_bytes,
                min,
            });
        }
        Ok(HubConfig {
            room_capacity: self.room_capacity as usize,
            max_rooms: self.max_rooms,
            max_queue_bytes: self.max_queue_bytes,
            ice_servers: self.ice_server_list(builtin)?,
            resume: ResumeKeys::new(&self.resume_secret()?),
            resume_grace: Duration::from_secs(self.resume_grace_secs),
            passcode_iterations: DEFAULT_ITERATIONS,
            attempts_per_ip: Rate {
                per_minute: self.passcode_attempts_per_ip,
            },
            attempts_per_room: Rate {
                per_minute: self.passcode_attempts_per_room,
            },
        })
    }

    // ---- TURN ----

    /// Where the built-in TURN server listens, if it runs. `tls`: whether the server serves
    /// HTTPS (for `--turn auto`).
    pub fn turn_listen(&self, tls: bool) -> Option<SocketAddr> {
        match self.turn {
            TurnMode::Auto => {
                tls.then(|| SocketAddr::new(self.addr.ip(), crate::turn::DEFAULT_PORT))
            }
            TurnMode::Off => None,
            TurnMode::Listen(addr) => Some(addr),
        }
    }

    /// The external TURN servers, checked.
    pub fn turn_urls(&self) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for url in self
            .turn_urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            if !is_turn_url(url) {
                return Err(ConfigError::BadTurnUrl(url.to_string()));
            }
            if !out.iter().any(|u| u == url) {
                out.push(url.to_string());
            }
        }
        Ok(out)
    }

    /// The TURN REST secret: `--turn-secret`, else the `turn-secret` file in the data
    /// directory (created with a random secret the first time).
    pub fn turn_secret(&self) -> Result<Secret, ConfigError> {
        match &self.turn_secret {
            Some(SecretArg(text)) => Secret::from_text(text).ok_or(ConfigError::ShortTurnSecret),
            None => self
                .data_dir()
                .secret(TURN_SECRET_FILE)
                .map_err(ConfigError::TurnSecret),
        }
    }

    /// The built-in TURN server's settings, listening on `listen`.
    pub fn turn_settings(&self, listen: SocketAddr) -> Result<TurnSettings, ConfigError> {
        if let Some(ip) = self
            .turn_public_ip
            .filter(|ip| ip.is_unspecified() || ip.is_multicast())
        {
            return Err(ConfigError::BadTurnPublicIp(ip));
        }
        Ok(TurnSettings {
            listen,
            public_ip: self.turn_public_ip,
            relay_ports: self.turn_relay_ports,
            allow_peers: self.turn_allow_peers.clone(),
            max_allocations_per_user: self.turn_max_allocations_per_user,
            max_allocations_per_ip: self.turn_max_allocations_per_ip,
            secret: self.turn_secret()?,
        })
    }

    /// What browsers get in `joined`: the STUN list, the built-in TURN server if it runs, and
    /// the external ones; a secret is read only if some TURN server needs credentials.
    pub fn ice_server_list(&self, builtin: Option<BuiltinTurn>) -> Result<IceServers, ConfigError> {
        let stun = self.ice_servers()?;
        let external = self.turn_urls()?;
        if builtin.is_none() && external.is_empty() {
            return Ok(IceServers::fixed(stun));
        }
        let secret = self.turn_secret()?;
        Ok(IceServers::new(stun, builtin, external, Some(secret)))
    }
}

/// The TURN REST secret's file in the data directory.
pub const TURN_SECRET_FILE: &str = "turn-secret";

/// `turn:` or `turns:`, a host, an optional port, an optional `?transport=udp|tcp`.
fn is_turn_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("turn") && !scheme.eq_ignore_ascii_case("turns") {
        return false;
    }
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    let query_ok = match query {
        None => true,
        Some(q) => {
            let q = q.to_ascii_lowercase();
            q == "transport=udp" || q == "transport=tcp"
        }
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    query_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_hand_out_the_tutorial_stun_list() {
        let config = Config::defaults();
        assert_eq!(config.room_capacity, 4);
        assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
        let servers = config.ice_servers().unwrap();
        assert_eq!(servers.len(), DEFAULT_ICE_SERVERS.len());
        assert_eq!(servers[0].urls, ["stun:stun.l.google.com:19302"]);
    }

    #[test]
    fn ice_server_none_and_repeats() {
        assert!(parse(&["--ice-server", "none"])
            .ice_servers()
            .unwrap()
            .is_empty());
        let config = parse(&[
            "--ice-server",
            "stun:a:1",
            "--ice-server",
            "stun:b:2,stun:a:1",
        ]);
        let urls: Vec<_> = config
            .ice_servers()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.urls)
            .collect();
        assert_eq!(urls, ["stun:a:1", "stun:b:2"]);
    }

    #[test]
    fn bad_ice_servers_are_refused_with_a_reason() {
        let err = parse(&["--ice-server", "http://x"])
            .ice_servers()
            .unwrap_err();
        assert!(err.to_string().contains("stun:"), "{err}");
        assert!(matches!(
            parse(&["--ice-server", "turn:x:3478"]).ice_servers(),
            Err(ConfigError::TurnUnsupported(_))
        ));
        assert!(Config::try_parse_from(["server", "--room-capacity", "0"]).is_err());
        assert!(Config::try_parse_from(["server", "--room-capacity", "9"]).is_err());
        assert_eq!(parse(&["--room-capacity", "8"]).room_capacity, 8);
    }

    #[test]
    fn turn_flags() {
        let config = Config::defaults();
        assert_eq!(config.turn, TurnMode::Auto);
        // auto follows TLS, on the --addr IP.
        assert_eq!(config.turn_listen(false), None);
        assert_eq!(
            config.turn_listen(true),
            Some("127.0.0.1:3478".parse().unwrap())
        );
        assert_eq!(parse(&["--turn", "off"]).turn_listen(true), None);
        assert_eq!(
            parse(&["--turn", "0.0.0.0:3479"]).turn_listen(false),
            Some("0.0.0.0:3479".parse().unwrap())
        );
        assert!(Config::try_parse_from(["server", "--turn", "on"]).is_err());
        assert_eq!(config.turn_relay_ports.to_string(), "49152-65535");
        assert!(Config::try_parse_from(["server", "--turn-relay-ports", "9-1"]).is_err());
        assert!(Config::try_parse_from(["server", "--turn-allow-peer", "10.0.0.0/33"]).is_err());
        let config = parse(&[
            "--turn-allow-peer",
            "10.0.0.0/8,fd00::/8",
            "--turn-url",
            "turn:a.example:3478?transport=udp",
            "--turn-url",
            "turns:[2001:db8::1]:5349?transport=tcp,turn:b.example",
        ]);
        assert_eq!(config.turn_allow_peers.len(), 2);
        assert_eq!(config.turn_urls().unwrap().len(), 3);
        for bad in [
            "stun:a.example",
            "turn:",
            "turn:a b",
            "turn:a.example?x=1",
            "http://a",
        ] {
            assert!(
                matches!(
                    parse(&["--turn-url", bad]).turn_urls(),
                    Err(ConfigError::BadTurnUrl(_))
                ),
                "{bad}"
            );
        }
        let listen = "0.0.0.0:3478".parse().unwrap();
        assert!(matches!(
            parse(&[
                "--turn-public-ip",
                "0.0.0.0",
                "--turn-secret",
                "long-enough-secret-1"
            ])
            .turn_settings(listen),
            Err(ConfigError::BadTurnPublicIp(_))
        ));
        let settings = parse(&[
            "--turn-public-ip",
            "203.0.113.7",
            "--turn-secret",
            "long-enough-secret-1",
        ])
        .turn_settings(listen)
        .unwrap();
        assert_eq!(settings.public_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(
            (
                settings.max_allocations_per_user,
                settings.max_allocations_per_ip
            ),
            (64, 256)
        );
        assert!(!format!("{settings:?}").contains("long-enough"));
        let err = parse(&["--turn-secret", "shortpass"])
            .turn_secret()
            .unwrap_err();
        assert!(!err.to_string().contains("shortpass"), "{err}");
    }

    #[test]
    fn turn_secret_comes_from_the_flag_or_the_data_dir_and_never_prints() {
        let config = parse(&["--turn-secret", "a-long-enough-secret-value"]);
        assert_eq!(
            config.turn_secret().unwrap().expose(),
            "a-long-enough-secret-value"
        );
        assert!(!format!("{config:?}").contains("a-long-enough"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = parse(&["--data-dir", data.to_str().unwrap()]);
        let first = config.turn_secret().unwrap();
        assert_eq!(config.turn_secret().unwrap(), first);
        assert!(data.join(TURN_SECRET_FILE).is_file());
        // No TURN server anywhere: no TURN secret is read or written (the hub still keeps its
        // resume secret there).
        let empty = dir.path().join("no-turn");
        let config = parse(&["--data-dir", empty.to_str().unwrap()]);
        config.hub_config(None).unwrap();
        assert!(!empty.join(TURN_SECRET_FILE).exists());
    }

    #[test]
    fn limits_have_internet_defaults() {
        let config = Config::defaults();
        assert_eq!(config.max_connections, 20_000);
        assert_eq!(config.max_connections_per_ip, 100);
        assert_eq!((config.rate_burst, config.rate_per_sec), (200, 50));
        assert_eq!(config.max_bad_messages, 20);
        assert_eq!(config.ping_interval(), Some(Duration::from_secs(15)));
        assert_eq!(config.ping_timeout(), Duration::from_secs(15));
        assert!(config.allowed_origins().unwrap().is_empty());
        assert_eq!(config.client_ip_header().unwrap(), None);
        assert_eq!(parse(&["--ping-interval-ms", "0"]).ping_interval(), None);
        assert!(Config::try_parse_from(["server", "--ping-timeout-ms", "0"]).is_err());
    }

    #[test]
    fn allowed_origins_are_checked_and_repeatable() {
        let config = parse(&[
            "--allowed-origin",
            "http://127.0.0.1:8080/",
            "--allowed-origin",
            "https://noom.example,https://b.example:8443",
        ]);
        let origins: Vec<String> = config
            .allowed_origins()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            origins,
            [
                "http://127.0.0.1:8080",
                "https://noom.example",
                "https://b.example:8443"
            ]
        );
        let err = parse(&["--allowed-origin", "noom.example"])
            .allowed_origins()
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(parse(&["--client-ip-header", "bad header"])
            .client_ip_header()
            .is_err());
        assert_eq!(
            parse(&["--client-ip-header", "X-Forwarded-For"])
                .client_ip_header()
                .unwrap()
                .unwrap()
                .as_str(),
            "x-forwarded-for"
        );
    }

    // --- TLS ---
    fn mode(args: &[&str]) -> Result<TlsMode, ConfigError> {
        parse(args).tls_mode()
    }

    #[test]
    fn tls_auto_is_plain_http_on_loopback_and_self_signed_elsewhere() {
        assert_eq!(Config::defaults().tls_mode().unwrap(), TlsMode::Off);
        assert!(!Config::defaults().tls_mode().unwrap().is_on());
        assert_eq!(mode(&["--addr", "[::1]:8080"]).unwrap(), TlsMode::Off);
        assert_eq!(
            mode(&["--addr", "0.0.0.0:8443"]).unwrap(),
            TlsMode::SelfSigned
        );
        assert_eq!(
            mode(&["--addr", "198.18.0.1:8443", "--tls", "auto"]).unwrap(),
            TlsMode::SelfSigned
        );
        assert_eq!(
            mode(&["--addr", "0.0.0.0:8080", "--tls", "off"]).unwrap(),
            TlsMode::Off
        );
        assert_eq!(
            mode(&["--tls", "self-signed"]).unwrap(),
            TlsMode::SelfSigned
        );
        assert!(mode(&["--tls", "self-signed"]).unwrap().is_on());
        assert_eq!(
            mode(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap(),
            TlsMode::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        let limits = Config::defaults().tls_handshake_limits();
        assert_eq!(limits.timeout, Duration::from_secs(10));
        assert_eq!(limits.max_in_flight, 1024);
    }

    #[test]
    fn acme_settings_are_checked_and_defaulted() {
        let TlsMode::Acme(acme) = mode(&[
            "--acme",
            "Noom.Example.org",
            "--acme",
            "b.example.org,noom.example.org",
            "--acme-email",
            "ops@example.org",
        ])
        .unwrap() else {
            panic!("not ACME")
        };
        assert_eq!(acme.domains, ["noom.example.org", "b.example.org"]);
        assert_eq!(acme.email.as_deref(), Some("ops@example.org"));
        assert_eq!(acme.directory, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(acme.ca_root, None);
        let TlsMode::Acme(acme) = mode(&[
            "--acme",
            "noom.test",
            "--acme-directory",
            "https://127.0.0.1:14000/dir",
            "--acme-ca-root",
            "pebble.pem",
        ])
        .unwrap() else {
            panic!("not ACME")
        };
        assert_eq!(acme.directory, "https://127.0.0.1:14000/dir");
        assert_eq!(acme.ca_root, Some("pebble.pem".into()));
        for (args, needle) in [
            (vec!["--acme", "*.example.org"], "wildcard"),
            (vec!["--acme", "192.0.2.1"], "IP address"),
            (
                vec!["--acme", "a.example", "--acme-email", "nobody"],
                "email",
            ),
            (
                vec!["--acme", "a.example", "--acme-directory", "http://x/dir"],
                "https://",
            ),
        ] {
            let err = mode(&args).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn contradictory_tls_flags_are_refused_with_a_reason() {
        let cases: [(&[&str], &str); 9] = [
            (
                &["--tls", "off", "--tls-cert", "c", "--tls-key", "k"],
                "--tls off cannot be combined with --tls-cert",
            ),
            (
                &["--tls", "self-signed", "--acme", "a.example"],
                "--tls self-signed cannot be combined with --acme",
            ),
            (
                &["--tls", "off", "--acme", "a.example"],
                "--tls off cannot be combined with --acme",
            ),
            (
                &["--tls-cert", "c", "--tls-key", "k", "--acme", "a.example"],
                "--tls-cert/--tls-key cannot be combined with --acme",
            ),
            (&["--tls-cert", "c"], "--tls-cert needs --tls-key"),
            (&["--tls-key", "k"], "--tls-key needs --tls-cert"),
            (
                &["--acme-email", "a@b.example"],
                "--acme-email needs --acme",
            ),
            (&["--acme-ca-root", "x.pem"], "--acme-ca-root needs --acme"),
            (
                &["--http-redirect", "127.0.0.1:8081"],
                "--http-redirect needs HTTPS",
            ),
        ];
        for (args, message) in cases {
            let err = mode(args).unwrap_err();
            assert!(err.to_string().starts_with(message), "{args:?}: {err}");
        }
        // With HTTPS on, the redirect is fine.
        assert!(mode(&["--tls", "self-signed", "--http-redirect", "127.0.0.1:0"]).is_ok());
        assert!(Config::try_parse_from(["server", "--tls", "maybe"]).is_err());
        assert!(Config::try_parse_from(["server", "--tls-handshake-timeout-ms", "0"]).is_err());
        assert!(Config::try_parse_from(["server", "--max-tls-handshakes", "0"]).is_err());
    }
    // --- end TLS ---
    #[test]
    fn resume_secret_from_the_flag_or_the_data_dir() {
        let config = parse(&["--resume-secret", "a secret of twenty chars"]);
        assert_eq!(
            config.resume_secret().unwrap(),
            Secret::from_text("a secret of twenty chars").unwrap()
        );
        assert!(matches!(
            parse(&["--resume-secret", "short"]).resume_secret(),
            Err(ConfigError::ShortResumeSecret)
        ));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = parse(&["--data-dir", data.to_str().unwrap()]);
        let first = config.resume_secret().unwrap();
        assert!(data.join("resume-secret").is_file());
        assert_eq!(config.resume_secret().unwrap(), first, "kept across starts");
    }

    #[test]
    fn queue_and_grace_defaults_and_bounds() {
        let config = parse(&["--resume-secret", "a secret of twenty chars"]);
        assert_eq!(config.resume_grace_secs, 30);
        assert_eq!(config.write_timeout(), Duration::from_secs(10));
        let hub = config.hub_config(None).unwrap();
        assert_eq!(hub.max_queue_bytes, 1024 * 1024);
        assert_eq!(hub.room_capacity, 4);
        assert_eq!(hub.attempts_per_ip.per_minute, 10);
        let small = parse(&[
            "--resume-secret",
            "a secret of twenty chars",
            "--max-queue-bytes",
            "1000",
        ]);
        assert!(matches!(
            small.hub_config(None),
            Err(ConfigError::SmallQueue { min: 524_288, .. })
        ));
        // Big messages need a bigger queue.
        let big = parse(&[
            "--resume-secret",
            "a secret of twenty chars",
            "--max-message-bytes",
            "1000000",
        ]);
        assert!(matches!(
            big.hub_config(None),
            Err(ConfigError::SmallQueue { .. })
        ));
        assert!(Config::try_parse_from(["server", "--resume-grace-secs", "3601"]).is_err());
    }
}
