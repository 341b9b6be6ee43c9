//! The built-in TURN server: webrtc-rs's `turn` crate (a port of pion/turn, which Galène uses)
//! on UDP and TCP, default port 3478, with what the crate does not provide added at its seams:
//!
//! - [`gate`]: a `Conn` around each listener that authenticates requests against the TURN REST
//!   secret (401 on bad or expired credentials, counted), enforces the per-user and per-IP
//!   allocation limits (486) and the peer policy for permissions and channels (403), and keeps
//!   the crate's nonce table bounded;
//! - [`relay`]: the `RelayAddressGenerator` whose relay sockets bind in `--turn-relay-ports`,
//!   advertise `--turn-public-ip` (or the address the client reached), refuse to send to denied
//!   addresses, count bytes, and deliver straight to another allocation on this server;
//! - [`tcp`]: TURN over TCP (the crate serves packet sockets only): one `Conn` over all TCP
//!   connections, with RFC 5766 framing;
//! - [`policy`]: which peer addresses may be relayed to (coturn's `denied-peer-ip`);
//! - [`credentials`]: minting and checking time-limited credentials (coturn's
//!   `use-auth-secret`), shared with an external coturn.
//!
//! Invariants: credentials and the secret are never logged (their `Debug` is redacted); the
//! relay never sends to loopback, link-local, multicast, the server's own addresses (other than
//! another allocation's relay) or private ranges that are not the server's own networks.

pub mod credentials;
mod gate;
pub mod policy;
pub mod relay;
mod tcp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::{TcpSocket, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;

use crate::datadir::Secret;
use crate::ice::BuiltinTurn;
use crate::metrics::Metrics;
use gate::{Auth, Gate, Inner, Shared};
use policy::{Networks, PeerPolicy};
use relay::{Generator, Limits, Relays};
use tcp::{TcpLimits, TcpMux};

/// TURN's standard port (RFC 5766), on UDP and TCP.
pub const DEFAULT_PORT: u16 = 3478;

/// The realm of our long-term credentials (part of the key, so clients echo it back).
pub const REALM: &str = "noom";

/// How often the view of the server's own addresses and networks is refreshed.
const NETWORKS_REFRESH: Duration = Duration::from_secs(30);

/// A UDP port range, `MIN-MAX` inclusive (`--turn-relay-ports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

/// A `--turn-relay-ports` value that is not `MIN-MAX` with 1 <= MIN <= MAX.
#[derive(Debug, thiserror::Error)]
#[error("expected MIN-MAX with 1 <= MIN <= MAX <= 65535, like 49152-65535")]
pub struct BadPortRange;

impl FromStr for PortRange {
    type Err = BadPortRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (min, max) = s.trim().split_once('-').ok_or(BadPortRange)?;
        let min: u16 = min.trim().parse().map_err(|_| BadPortRange)?;
        let max: u16 = max.trim().parse().map_err(|_| BadPortRange)?;
        if min == 0 || min > max {
            return Err(BadPortRange);
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    pub fn len(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// A random port of the range.
    fn random(&self) -> u16 {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 4];
        let r = match ring::rand::SystemRandom::new().fill(&mut bytes) {
            Ok(()) => u32::from_le_bytes(bytes),
            // Not a secret: any spread will do if the system generator ever fails.
            Err(_) => {
                std::process::id()
                    ^ std::time::UNIX_EPOCH
                        .elapsed()
                        .map_or(0, |d| d.subsec_nanos())
            }
        };
        let offset = r % u32::from(self.max - self.min + 1);
        self.min + offset as u16
    }
}

/// Everything the built-in TURN server needs, resolved from the flags.
#[derive(Clone, Debug)]
pub struct TurnSettings {
    /// `ADDR:PORT`; an unspecified address listens on every interface address (UDP: one socket
    /// per address, so that answers leave from the address the client used).
    pub listen: SocketAddr,
    pub public_ip: Option<IpAddr>,
    pub relay_ports: PortRange,
    pub allow_peers: Vec<IpNet>,
    pub max_allocations_per_user: u32,
    pub max_allocations_per_ip: u32,
    pub secret: Secret,
}

/// Why the TURN server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("cannot read the network interfaces: {0}")]
    Interfaces(std::io::Error),
    #[error("no network address to listen for TURN on {0}")]
    NoAddress(SocketAddr),
    #[error("cannot listen for TURN on {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the TURN server: {0}")]
    Start(#[from] turn::Error),
}

/// A running TURN server. [`TurnServer::close`] stops it; dropping it stops the TCP listener
/// and the background tasks.
pub struct TurnServer {
    server: Server,
    udp: Vec<SocketAddr>,
    tcp: SocketAddr,
    listen: SocketAddr,
    public_ip: Option<IpAddr>,
    relay_ports: PortRange,
    relays: Arc<Relays>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("public_ip", &self.public_ip)
            .finish_non_exhaustive()
    }
}

impl TurnServer {
    pub async fn start(settings: TurnSettings, metrics: Arc<Metrics>) -> Result<Self, TurnError> {
        let networks = Networks::read().map_err(TurnError::Interfaces)?;
        let listen = settings.listen;
        let bind_error = |proto, addr, source| TurnError::Bind {
            proto,
            addr,
            source,
        };

        // UDP: one socket per address. The first one fixes the port when asked for port 0.
        let mut port = listen.port();
        let mut udp_sockets = Vec::new();
        for ip in udp_ips(listen.ip(), &networks) {
            let addr = SocketAddr::new(ip, port);
            let socket = bind_udp_listener(addr).map_err(|e| bind_error("udp", addr, e))?;
            if port == 0 {
                port = socket
                    .local_addr()
                    .map_err(|e| bind_error("udp", addr, e))?
                    .port();
            }
            udp_sockets.push(socket);
        }
        if udp_sockets.is_empty() {
            return Err(TurnError::NoAddress(listen));
        }
        let tcp_addr = SocketAddr::new(listen.ip(), port);
        let tcp_listener =
            bind_tcp_listener(tcp_addr).map_err(|e| bind_error("tcp", tcp_addr, e))?;

        let shutdown = CancellationToken::new();
        let policy = Arc::new(PeerPolicy::new(
            settings.allow_peers.clone(),
            settings.public_ip,
            networks,
        ));
        let relays = Relays::new(
            Limits {
                per_user: settings.max_allocations_per_user,
                per_ip: settings.max_allocations_per_ip,
            },
            Arc::clone(&metrics),
        );
        let shared = Arc::new(Shared::new(
            settings.secret.clone(),
            REALM.to_string(),
            Arc::clone(&relays),
            Arc::clone(&policy),
            Arc::clone(&metrics),
        ));
        let listener = |inner: Inner| {
            let slot = Arc::new(Mutex::new(None));
            ConnConfig {
                conn: Arc::new(Gate::new(inner, Arc::clone(&shared), Arc::clone(&slot))),
                relay_addr_generator: Box::new(Generator {
                    slot,
                    relays: Arc::clone(&relays),
                    policy: Arc::clone(&policy),
                    ports: settings.relay_ports,
                    public_ip: settings.public_ip,
                    metrics: Arc::clone(&metrics),
                }),
            }
        };

        let mut udp = Vec::new();
        let mut conn_configs = Vec::new();
        for socket in udp_sockets {
            if let Ok(addr) = socket.local_addr() {
                udp.push(addr);
            }
            conn_configs.push(listener(Inner::Udp(socket)));
        }
        let (mux, accept_task) = TcpMux::start(
            tcp_listener,
            TcpLimits {
                per_ip: settings.max_allocations_per_ip as usize,
                total: settings.relay_ports.len(),
            },
            Arc::clone(&relays),
            shutdown.clone(),
        )
        .map_err(|e| bind_error("tcp", tcp_addr, e))?;
        let tcp = mux.local_addr();
        conn_configs.push(listener(Inner::Tcp(mux)));

        let server = Server::new(ServerConfig {
            conn_configs,
            realm: REALM.to_string(),
            auth_handler: Arc::new(Auth {
                secret: settings.secret.clone(),
            }),
            // The crate's default (10 minutes, as RFC 5766 asks).
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await?;

        let refresh = tokio::spawn({
            let policy = Arc::clone(&policy);
            let shutdown = shutdown.clone();
            async move {
                let mut tick = tokio::time::interval(NETWORKS_REFRESH);
                tick.tick().await;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => match Networks::read() {
                            Ok(networks) => policy.set_networks(networks),
                            Err(err) => tracing::warn!(%err, "cannot read the network interfaces"),
                        },
                    }
                }
            }
        });
        tracing::info!(
            ?udp,
            %tcp,
            relay_ports = %settings.relay_ports,
            public_ip = ?settings.public_ip,
            allow_peers = ?settings.allow_peers,
            "TURN server started"
        );
        Ok(Self {
            server,
            udp,
            tcp,
            listen,
            public_ip: settings.public_ip,
            relay_ports: settings.relay_ports,
            relays,
            shutdown,
            tasks: vec![accept_task, refresh],
        })
    }

    /// The UDP listeners' addresses.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// Allocations open now.
    pub fn allocations(&self) -> usize {
        self.relays.open()
    }

    /// What browsers are told about this server (see [`crate::ice::IceServers`]).
    pub fn builtin(&self) -> BuiltinTurn {
        BuiltinTurn {
            port: self.tcp.port(),
            listen_ip: self.listen.ip(),
            public_ip: self.public_ip,
        }
    }

    /// One line for people: where it listens.
    pub fn describe(&self) -> String {
        let udp: Vec<String> = self.udp.iter().map(ToString::to_string).collect();
        let mut line = format!(
            "udp {} and tcp {} (relay ports {})",
            udp.join(", "),
            self.tcp,
            self.relay_ports
        );
        if let Some(ip) = self.public_ip {
            line.push_str(&format!(", advertised as {ip}"));
        }
        line
    }

    /// Stops listening and closes every allocation.
    pub async fn close(mut self) {
        self.shutdown.cancel();
        if let Err(err) = self.server.close().await {
            tracing::debug!(%err, "closing the TURN server");
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The addresses to open a UDP listener on for `ip`: itself, or every interface address of its
/// family (both families for `::`) when it is unspecified. IPv6 link-local addresses are left
/// out (they need a scope).
fn udp_ips(ip: IpAddr, networks: &Networks) -> Vec<IpAddr> {
    if !ip.is_unspecified() {
        return vec![ip];
    }
    networks
        .addrs
        .iter()
        .copied()
        .filter(|a| match a {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => ip.is_ipv6() && v6.segments()[0] & 0xffc0 != 0xfe80,
        })
        .collect()
}

/// Bigger socket buffers than the default (~200 KiB) for the listeners, which carry every
/// client's media: a burst from many clients at once should queue, not drop. The kernel caps it
/// at net.core.rmem_max / wmem_max.
const LISTENER_BUFFER_BYTES: usize = 4 << 20;

fn bind_udp_listener(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(LISTENER_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(LISTENER_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn bind_tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_pick_inside() {
        let range: PortRange = "49152-65535".parse().unwrap();
        assert_eq!((range.min, range.max, range.len()), (49152, 65535, 16384));
        for _ in 0..1000 {
            assert!(range.contains(range.random()));
        }
        let one: PortRange = "5000-5000".parse().unwrap();
        assert_eq!(one.random(), 5000);
        for bad in ["", "5000", "0-10", "10-5", "1-70000", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unspecified_listens_on_every_address_of_its_family() {
        let networks = Networks {
            addrs: vec![
                "127.0.0.1".parse().unwrap(),
                "192.168.1.2".parse().unwrap(),
                "::1".parse().unwrap(),
                "fe80::1".parse().unwrap(),
            ],
            subnets: vec![],
        };
        let ips = |s: &str| udp_ips(s.parse().unwrap(), &networks);
        assert_eq!(ips("0.0.0.0").len(), 2);
        assert_eq!(ips("::").len(), 3);
        assert_eq!(ips("192.168.1.2").len(), 1);
    }
}
