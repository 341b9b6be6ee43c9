//! Command line and environment configuration. Every flag has an environment variable so the
//! server can be configured the same way under systemd, in a container or by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::IceServer;

use crate::hub::HubConfig;

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

    /// Directory of the built web app (`trunk build --release` writes `dist`).
    #[arg(long, env = "NOOM_DIST", default_value = "dist")]
    pub dist: PathBuf,

    /// People per room. 2 is a 1:1 call.
    #[arg(long, env = "NOOM_ROOM_CAPACITY", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=16))]
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

    /// Messages that may wait for one connection; a client that falls further behind is dropped.
    #[arg(long, env = "NOOM_QUEUE_CAPACITY", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,

    /// Seconds open connections get to close after Ctrl-C / SIGTERM before the server exits.
    #[arg(long, env = "NOOM_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--ice-server {0:?}: expected a stun: or stuns: URL (like stun:stun.example.org:3478), or `none`")]
    BadIceServer(String),
    #[error("--ice-server {0:?}: TURN servers need credentials, which this version does not hand out yet")]
    TurnUnsupported(String),
}

impl Config {
    /// Defaults, as if started with no flags and no environment (for tests).
    pub fn defaults() -> Self {
        Self::parse_from(["server"])
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

    pub fn hub_config(&self) -> Result<HubConfig, ConfigError> {
        Ok(HubConfig {
            room_capacity: self.room_capacity as usize,
            max_rooms: self.max_rooms,
            queue_capacity: self.queue_capacity as usize,
            ice_servers: self.ice_servers()?,
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
        assert_eq!(config.room_capacity, 2);
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
    }
}
