//! Command line and environment configuration. Every flag has an environment variable so the
//! server can be configured the same way under systemd, in a container or by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use clap::Parser;
use shared::IceServer;

use crate::datadir::{DataDir, DataDirError, Secret, MIN_SECRET_CHARS};
use crate::hub::{HubConfig, MIN_QUEUE_BYTES};
use crate::origin::Origin;
use crate::passcode::{Rate, DEFAULT_ITERATIONS};
use crate::resume::ResumeKeys;

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
    after_help = "Media never passes through this server: calls are peer to peer. Logs: set RUST_LOG (default info)."
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

    /// Directory of the built web app (`trunk build --release` writes `dist`).
    #[arg(long, env = "NOOM_DIST", default_value = "dist")]
    pub dist: PathBuf,

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

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--ice-server {0:?}: expected a stun: or stuns: URL (like stun:stun.example.org:3478), or `none`")]
    BadIceServer(String),
    #[error("--ice-server {0:?}: TURN servers need credentials, which this version does not hand out yet")]
    TurnUnsupported(String),
    #[error("--allowed-origin {0:?}: expected http:// or https:// and a host, like https://noom.example or http://127.0.0.1:8080")]
    BadOrigin(String),
    #[error("--client-ip-header {0:?}: not a valid HTTP header name")]
    BadHeaderName(String),
    #[error("--resume-secret: at least {MIN_SECRET_CHARS} characters, please")]
    ShortResumeSecret,
    #[error("resume secret: {0}")]
    ResumeSecret(#[from] DataDirError),
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

    // --- Seats, resume, outbound queues and room passcodes (the hub) ------------------------

    /// The resume-token secret: the flag, else the data directory's `resume-secret` file
    /// (created on first use).
    pub fn resume_secret(&self) -> Result<Secret, ConfigError> {
        match self.resume_secret.as_deref() {
            Some(text) => Secret::from_text(text).ok_or(ConfigError::ShortResumeSecret),
            None => Ok(self.data_dir().secret("resume-secret")?),
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

    /// Everything the hub needs. Reads (or creates) the resume secret.
    pub fn hub_config(&self) -> Result<HubConfig, ConfigError> {
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
            ice_servers: self.ice_servers()?,
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
        let hub = config.hub_config().unwrap();
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
            small.hub_config(),
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
            big.hub_config(),
            Err(ConfigError::SmallQueue { .. })
        ));
        assert!(Config::try_parse_from(["server", "--resume-grace-secs", "3601"]).is_err());
    }
}
