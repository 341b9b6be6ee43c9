//! Relay sockets: what the `turn` crate gets from our [`RelayAddressGenerator`] when it creates an
//! allocation. The crate relays through whatever `Conn` the generator returns; ours
//!
//! - binds a UDP port in `--turn-relay-ports` and advertises the address clients can reach
//!   (`--turn-public-ip`, else the address the client reached us at). Without a public IP the
//!   socket binds that very address, so its datagrams leave from the address it advertises even
//!   on a multi-homed host (bound to the unspecified address, the kernel would pick the source
//!   by route and peers would see an unknown, "peer-reflexive" address instead of the relay);
//! - applies the [`PeerPolicy`] to every datagram it sends, so the relay never reaches a denied
//!   address whatever the crate or a client does;
//! - delivers datagrams for another allocation's relay address on this server straight to that
//!   socket (over loopback when the sockets bind the unspecified address), and presents them to the receiver as coming from the sender's
//!   advertised relay address, so two browsers that both relay through this server reach each
//!   other even behind a NAT without hairpinning;
//! - counts bytes relayed, and holds the allocation's place in the per-user and per-IP limits
//!   until it closes.
//!
//! The registry of live relays ([`Relays`]) knows which client each relay serves, so that when a
//! TURN-over-TCP connection closes its allocation goes with it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use super::policy::{canonical, LiveRelays, PeerPolicy, Verdict};
use super::PortRange;
use crate::metrics::{Metrics, TurnRefusal};

/// How a client reaches the TURN server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A client of the TURN server: its transport and address (with the listener, its 5-tuple).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Allocations one username / one client IP address may hold at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_user: u32,
    pub per_ip: u32,
}

/// A relay socket's key: its family (IPv4?) and port. Ports are unique within a family (a relay
/// never takes a port another relay holds, whichever address either binds), so the port alone
/// tells them apart.
type Key = (bool, u16);

struct LiveRelay {
    /// Tells this relay from a later one on the same port (see [`Registration`]).
    id: u64,
    advertised: SocketAddr,
    /// The socket's own address (the unspecified IP when it advertises a public one).
    bound: SocketAddr,
    client: Client,
    closed: CancellationToken,
}

#[derive(Default)]
struct State {
    next_id: u64,
    live: HashMap<Key, LiveRelay>,
    per_user: HashMap<Arc<str>, u32>,
    per_ip: HashMap<IpAddr, u32>,
}

/// The live relays of one TURN server, and the allocation counts behind the limits.
pub struct Relays {
    state: Mutex<State>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Relays {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            limits,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves the maps consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for one more allocation by `user` from `ip`, or says which limit is full.
    /// The place is given back when the [`Ticket`] (and every relay holding it) is dropped.
    pub fn reserve(self: &Arc<Self>, user: &str, ip: IpAddr) -> Result<Ticket, TurnRefusal> {
        let ip = canonical(ip);
        let mut state = self.lock();
        let by_user = state.per_user.get(user).copied().unwrap_or(0);
        if by_user >= self.limits.per_user {
            return Err(TurnRefusal::PerUser);
        }
        let by_ip = state.per_ip.get(&ip).copied().unwrap_or(0);
        if by_ip >= self.limits.per_ip {
            return Err(TurnRefusal::PerIp);
        }
        let user: Arc<str> = Arc::from(user);
        *state.per_user.entry(Arc::clone(&user)).or_insert(0) += 1;
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Ticket {
            relays: Arc::clone(self),
            user,
            ip,
        })
    }

    fn release(&self, user: &Arc<str>, ip: IpAddr) {
        let mut state = self.lock();
        if let Some(count) = state.per_user.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_user.remove(user);
            }
        }
        if let Some(count) = state.per_ip.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_ip.remove(&ip);
            }
        }
    }

    /// Registers a new relay; None if another relay holds the port already (sockets bound to
    /// two different addresses of ours may share a port: the newer one must pick another).
    fn register(self: &Arc<Self>, key: Key, mut relay: LiveRelay) -> Option<Registration> {
        let id = {
            let mut state = self.lock();
            if state.live.contains_key(&key) {
                return None;
            }
            state.next_id += 1;
            relay.id = state.next_id;
            state.live.insert(key, relay);
            state.next_id
        };
        self.metrics.turn.allocations_open.inc();
        Some(Registration {
            relays: Arc::clone(self),
            key,
            id,
        })
    }

    fn holds_port(&self, key: Key) -> bool {
        self.lock().live.contains_key(&key)
    }

    /// Closes every relay serving `client` (its TCP connection is gone). The `turn` crate then
    /// drops the allocation when its relay socket reports the close.
    pub fn close_client(&self, client: Client) {
        let state = self.lock();
        for relay in state.live.values().filter(|r| r.client == client) {
            relay.closed.cancel();
        }
    }

    /// Allocations open now.
    pub fn open(&self) -> usize {
        self.lock().live.len()
    }

    /// The advertised relay address of the relay socket that sent a datagram from `src` (a
    /// loopback address, see [`Verdict::Sibling`]), if it is one of ours.
    fn advertised_of(&self, src: SocketAddr) -> Option<SocketAddr> {
        if !src.ip().is_loopback() {
            return None;
        }
        let key = (canonical(src.ip()).is_ipv4(), src.port());
        self.lock().live.get(&key).map(|r| r.advertised)
    }
}

impl LiveRelays for Relays {
    fn sibling(&self, addr: SocketAddr) -> Option<SocketAddr> {
        let v4 = addr.is_ipv4();
        let bound = self.lock().live.get(&(v4, addr.port())).map(|r| r.bound)?;
        if !bound.ip().is_unspecified() {
            return Some(bound);
        }
        let loopback: IpAddr = if v4 {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        };
        Some(SocketAddr::new(loopback, addr.port()))
    }
}

/// One allocation's place in the per-user and per-IP counts.
pub struct Ticket {
    relays: Arc<Relays>,
    user: Arc<str>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.relays.release(&self.user, self.ip);
    }
}

/// A relay socket's entry in the registry, removed on drop. A relay's socket closes before its
/// registration goes, so another relay may already have the port: only this one's entry is
/// removed.
struct Registration {
    relays: Arc<Relays>,
    key: Key,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = {
            let mut state = self.relays.lock();
            let ours = state.live.get(&self.key).is_some_and(|r| r.id == self.id);
            ours && state.live.remove(&self.key).is_some()
        };
        if removed {
            self.relays.metrics.turn.allocations_open.dec();
        }
    }
}

/// The authenticated Allocate request the crate is handling now on one listener, as the gate
/// saw it. The crate handles a listener's requests one at a time (`Server::read_loop` awaits
/// each before reading the next), so the gate sets this before handing the request over and
/// clears it before reading the next one; the generator finds it when the crate asks for a relay.
pub struct Pending {
    pub ticket: Ticket,
    pub client: Client,
    /// Where the client reached us (the listener's address, or the TCP connection's local end).
    pub local_ip: IpAddr,
}

pub type PendingSlot = Arc<Mutex<Option<Arc<Pending>>>>;

/// The crate's hook for creating relay sockets; one per listener (it shares the listener's
/// [`PendingSlot`] with the gate).
pub struct Generator {
    pub slot: PendingSlot,
    pub relays: Arc<Relays>,
    pub policy: Arc<PeerPolicy>,
    pub ports: PortRange,
    pub public_ip: Option<IpAddr>,
    pub metrics: Arc<Metrics>,
}

/// Random ports tried before an allocation fails with 508 (Insufficient Capacity).
const PORT_ATTEMPTS: usize = 64;

impl Generator {
    /// The address clients and peers reach the relay at.
    fn advertised_ip(&self, local_ip: IpAddr, ipv4: bool) -> Option<IpAddr> {
        let fits = |ip: &IpAddr| ip.is_ipv4() == ipv4 && !ip.is_unspecified();
        if let Some(public) = self.public_ip.filter(fits) {
            return Some(public);
        }
        let local = canonical(local_ip);
        if fits(&local) {
            return Some(local);
        }
        // Reached over the other family: any routable address of ours of the wanted family.
        self.policy
            .networks()
            .addrs
            .iter()
            .copied()
            .find(|ip| fits(ip) && !ip.is_loopback() && !is_link_local(*ip))
    }

    /// The address a relay advertised as `advertised` binds: that address itself unless it is
    /// the public one (`--turn-public-ip`, not ours to bind) or loopback (a socket bound there
    /// could not send to any other host; a loopback-advertised relay serves tests and a client
    /// on this machine, and the kernel picks the source address for its peers).
    fn bind_ip(&self, advertised: IpAddr) -> IpAddr {
        if Some(advertised) == self.public_ip || advertised.is_loopback() {
            if advertised.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            }
        } else {
            advertised
        }
    }

    /// A socket on `ip`, on `requested_port` or a free random port of the range that no live
    /// relay holds.
    fn bind(&self, ip: IpAddr, requested_port: u16) -> std::io::Result<UdpSocket> {
        let in_use = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free relay port");
        if requested_port != 0 {
            if !self.ports.contains(requested_port) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "requested port outside the relay range",
                ));
            }
            if self.relays.holds_port((ip.is_ipv4(), requested_port)) {
                return Err(in_use());
            }
            return bind_udp(SocketAddr::new(ip, requested_port));
        }
        let mut last = in_use();
        for _ in 0..PORT_ATTEMPTS {
            let port = self.ports.random();
            if self.relays.holds_port((ip.is_ipv4(), port)) {
                continue;
            }
            match bind_udp(SocketAddr::new(ip, port)) {
                Ok(socket) => return Ok(socket),
                Err(err) => last = err,
            }
        }
        Err(last)
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// A UDP socket on `addr`; IPv6 sockets are IPv6-only, so that the two families' relay ports
/// are independent.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn turn_error(text: &str) -> turn::Error {
    turn::Error::Other(text.to_string())
}

#[async_trait]
impl RelayAddressGenerator for Generator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        // Only an Allocate that went through the gate (authenticated, within the limits) gets a
        // relay.
        let pending = self
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| turn_error("no authenticated Allocate in flight"))?;
        let ip = self
            .advertised_ip(pending.local_ip, use_ipv4)
            .ok_or_else(|| turn_error("no address of the requested family to relay on"))?;
        let bind_ip = self.bind_ip(ip);
        // Another listener's allocation may take the same port on another address between our
        // bind and our registration: then try again.
        let mut attempt = 0;
        let (socket, local, advertised, closed, registration) = loop {
            attempt += 1;
            let socket = self.bind(bind_ip, requested_port).map_err(|err| {
                tracing::warn!(%err, "cannot open a TURN relay port");
                turn::Error::Other(format!("cannot open a relay port: {err}"))
            })?;
            let local = socket.local_addr()?;
            let advertised = SocketAddr::new(ip, local.port());
            let closed = CancellationToken::new();
            let relay = LiveRelay {
                id: 0,
                advertised,
                bound: local,
                client: pending.client,
                closed: closed.clone(),
            };
            match self.relays.register((use_ipv4, local.port()), relay) {
                Some(registration) => break (socket, local, advertised, closed, registration),
                None if requested_port == 0 && attempt < PORT_ATTEMPTS => continue,
                None => return Err(turn_error("cannot open a relay port: the port is taken")),
            }
        };
        tracing::debug!(client = %pending.client.addr, relay = %advertised, "relay opened");
        let conn = RelayConn {
            socket,
            local,
            relays: Arc::clone(&self.relays),
            policy: Arc::clone(&self.policy),
            metrics: Arc::clone(&self.metrics),
            closed,
            hold: Mutex::new(Some(Hold {
                _registration: registration,
                _pending: pending,
            })),
        };
        Ok((Arc::new(conn), advertised))
    }
}

/// What a live relay keeps until it closes: its registry entry and its place in the limits.
struct Hold {
    _registration: Registration,
    _pending: Arc<Pending>,
}

/// One allocation's relay socket.
pub struct RelayConn {
    socket: UdpSocket,
    local: SocketAddr,
    relays: Arc<Relays>,
    policy: Arc<PeerPolicy>,
    metrics: Arc<Metrics>,
    closed: CancellationToken,
    hold: Mutex<Option<Hold>>,
}

impl RelayConn {
    fn release(&self) {
        self.closed.cancel();
        let hold = self.hold.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(hold);
    }
}

fn closed_error() -> webrtc_util::Error {
    webrtc_util::Error::ErrAlreadyClosed
}

#[async_trait]
impl Conn for RelayConn {
    async fn connect(&self, _addr: SocketAddr) -> Result<(), webrtc_util::Error> {
        Err(webrtc_util::Error::Other(
            "a relay socket is not connected".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, webrtc_util::Error> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        let (n, src) = tokio::select! {
            () = self.closed.cancelled() => {
                // The allocation ended (or its TCP client left): let the crate drop it.
                self.release();
                return Err(closed_error());
            }
            received = self.socket.recv_from(buf) => received?,
        };
        let src = self.relays.advertised_of(src).unwrap_or(src);
        self.metrics.turn.relayed_from_peer(n);
        Ok((n, src))
    }

    async fn send(&self, _buf: &[u8]) -> Result<usize, webrtc_util::Error> {
        Err(webrtc_util::Error::Other(
            "a relay socket needs a destination".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, webrtc_util::Error> {
        if self.closed.is_cancelled() {
            return Err(closed_error());
        }
        let destination = match self.policy.verdict(target, &*self.relays) {
            Verdict::Allowed => target,
            Verdict::Sibling(local) => local,
            Verdict::Denied(why) => {
                self.metrics.turn.relay_denied.inc();
                tracing::debug!(peer = %target, ?why, "relay refused to send to a denied address");
                return Err(webrtc_util::Error::Other("peer address refused".into()));
            }
        };
        let n = self.socket.send_to(buf, destination).await?;
        self.metrics.turn.relayed_to_peer(n);
        Ok(n)
    }

    fn local_addr(&self) -> Result<SocketAddr, webrtc_util::Error> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> Result<(), webrtc_util::Error> {
        self.release();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::policy::Networks;

    fn setup(per_user: u32, per_ip: u32) -> (Arc<Relays>, Generator, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let relays = Relays::new(Limits { per_user, per_ip }, Arc::clone(&metrics));
        // As behind a NAT: relays are advertised on an address that is not an interface's.
        let public_ip: IpAddr = "203.0.113.5".parse().unwrap();
        let policy = Arc::new(PeerPolicy::new(
            vec![],
            Some(public_ip),
            Networks {
                addrs: vec!["127.0.0.1".parse().unwrap()],
                subnets: vec![],
            },
        ));
        let generator = Generator {
            slot: Arc::new(Mutex::new(None)),
            relays: Arc::clone(&relays),
            policy,
            ports: PortRange {
                min: 1024,
                max: 65535,
            },
            public_ip: Some(public_ip),
            metrics: Arc::clone(&metrics),
        };
        (relays, generator, metrics)
    }

    fn client(port: u16) -> Client {
        Client {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn pend(relays: &Arc<Relays>, generator: &Generator, user: &str, port: u16) {
        let ticket = relays.reserve(user, "127.0.0.1".parse().unwrap()).unwrap();
        *generator.slot.lock().unwrap() = Some(Arc::new(Pending {
            ticket,
            client: client(port),
            local_ip: "127.0.0.1".parse().unwrap(),
        }));
    }

    #[test]
    fn limits_count_per_user_and_per_ip_and_free_on_drop() {
        let (relays, _, _) = setup(2, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a1 = relays.reserve("a", ip).unwrap();
        let _a2 = relays.reserve("a", ip).unwrap();
        assert!(matches!(relays.reserve("a", ip), Err(TurnRefusal::PerUser)));
        let _b1 = relays.reserve("b", ip).unwrap();
        assert!(matches!(relays.reserve("b", ip), Err(TurnRefusal::PerIp)));
        assert!(relays.reserve("b", "192.0.2.2".parse().unwrap()).is_ok());
        drop(a1);
        assert!(relays.reserve("b", ip).is_ok());
    }

    #[tokio::test]
    async fn no_relay_without_an_authenticated_allocate() {
        let (_, generator, _) = setup(5, 5);
        assert!(generator.allocate_conn(true, 0).await.is_err());
    }

    #[tokio::test]
    async fn relays_never_send_to_denied_addresses_but_reach_siblings() {
        let (relays, generator, metrics) = setup(5, 5);
        pend(&relays, &generator, "a", 1);
        let (a, a_addr) = generator.allocate_conn(true, 0).await.unwrap();
        pend(&relays, &generator, "b", 2);
        let (b, b_addr) = generator.allocate_conn(true, 0).await.unwrap();
        assert_eq!(a_addr.ip().to_string(), "203.0.113.5");
        assert_eq!(relays.open(), 2);
        assert!(metrics.encode().contains("noom_turn_allocations_open 2"));

        // A loopback socket that is not a relay: the relay refuses to send to it.
        let victim = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let victim_addr = victim.local_addr().unwrap();
        assert!(a.send_to(b"secret", victim_addr).await.is_err());
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(
                std::time::Duration::from_millis(200),
                victim.recv_from(&mut buf)
            )
            .await
            .is_err(),
            "nothing reaches a denied address"
        );

        // The other relay's advertised (public) address is reachable without hairpinning through
        // a NAT, and the datagram appears to come from a's advertised address.
        a.send_to(b"hello", b_addr).await.unwrap();
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], a_addr));

        // Closing releases the port and the place.
        a.close().await.unwrap();
        assert!(a.send_to(b"x", b_addr).await.is_err());
        assert_eq!(relays.open(), 1);
        drop(b);
        assert_eq!(relays.open(), 0);
        let text = metrics.encode();
        assert!(text.contains("noom_turn_relay_denied_total 1"), "{text}");
        assert!(text.contains("noom_turn_allocations_open 0"), "{text}");
    }

    #[tokio::test]
    async fn closing_a_client_closes_its_relays() {
        let (relays, generator, _) = setup(5, 5);
        pend(&relays, &generator, "a", 7);
        let (a, _) = generator.allocate_conn(true, 0).await.unwrap();
        relays.close_client(client(7));
        let mut buf = [0u8; 8];
        assert!(a.recv_from(&mut buf).await.is_err());
        assert_eq!(relays.open(), 0);
    }
}
