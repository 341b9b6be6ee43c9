//! Which peer addresses the relay may reach (coturn's `denied-peer-ip`, on by default).
//!
//! A TURN server sends UDP wherever its clients ask, from inside the server's network. Without
//! this policy anyone who can join a room (and so get credentials) could use it to reach services
//! on the server itself or on its private network. The rules, in order:
//!
//! 1. The server's own addresses (every interface address, loopback, `--turn-public-ip`) are
//!    refused, except the relay address of another live allocation on this server: two browsers
//!    that both relay through us must reach each other ([`Verdict::Sibling`]).
//! 2. Always refused: unspecified, loopback, link-local, multicast, broadcast (including the
//!    broadcast address of the server's own subnets) and other never-routable addresses.
//! 3. `--turn-allow-peer` ranges are allowed.
//! 4. Private and special-purpose ranges (RFC 1918, CGNAT, ULA, benchmarking, documentation,
//!    NAT64, ...) are refused unless they are one of the server's own networks (a subnet of one
//!    of its interfaces: people on the same LAN call each other).
//! 5. Anything else (the internet) is allowed.
//!
//! The same verdict is applied twice: when a client asks for a permission or a channel (refused
//! with 403), and by the relay socket on every datagram it sends, so nothing reaches a denied
//! address even through a path the check at the door did not foresee.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

/// Why a peer address is refused; the label of `noom_turn_permissions_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// One of the server's own addresses, not a live relay.
    OwnAddress,
    /// Loopback, link-local, multicast, broadcast, unspecified or otherwise never a peer.
    Special,
    /// A private or special-purpose range that is not one of the server's own networks.
    Private,
}

/// What the relay does with a datagram for a peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The relay address of another allocation on this server: delivered to that relay socket
    /// directly, at this local address (see `relay.rs`).
    Sibling(SocketAddr),
    Denied(Denied),
}

/// The server's own addresses and the networks they are on, read from its interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks {
    pub addrs: Vec<IpAddr>,
    /// Subnets of the interfaces, without loopback and link-local ones.
    pub subnets: Vec<IpNet>,
}

impl Networks {
    /// The interfaces' addresses now.
    pub fn read() -> std::io::Result<Self> {
        let mut networks = Networks::default();
        for iface in webrtc_util::ifaces::ifaces()? {
            let Some(addr) = iface.addr.map(|a| canonical(a.ip())) else {
                continue;
            };
            if !networks.addrs.contains(&addr) {
                networks.addrs.push(addr);
            }
            let Some(mask) = iface.mask.map(|m| m.ip()) else {
                continue;
            };
            if let Ok(net) = IpNet::with_netmask(addr, mask) {
                let net = net.trunc();
                if !is_always_denied(addr) && !networks.subnets.contains(&net) {
                    networks.subnets.push(net);
                }
            }
        }
        Ok(networks)
    }
}

/// The peer policy of one TURN server. Cheap to share; the interface view can be refreshed.
#[derive(Debug)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    public_ip: Option<IpAddr>,
    networks: RwLock<Arc<Networks>>,
}

/// Answers "is there a live relay on this local port?" for [`PeerPolicy::verdict`].
pub trait LiveRelays {
    /// The local address to deliver to if `port` (of `addr`'s family) is a live relay port.
    fn sibling(&self, addr: SocketAddr) -> Option<SocketAddr>;
}

impl PeerPolicy {
    pub fn new(allow: Vec<IpNet>, public_ip: Option<IpAddr>, networks: Networks) -> Self {
        Self {
            allow,
            public_ip: public_ip.map(canonical),
            networks: RwLock::new(Arc::new(networks)),
        }
    }

    /// Replaces the view of the server's interfaces (they change: DHCP, VPNs).
    pub fn set_networks(&self, networks: Networks) {
        let mut slot = self.networks.write().unwrap_or_else(|p| p.into_inner());
        if **slot != networks {
            *slot = Arc::new(networks);
        }
    }

    pub fn networks(&self) -> Arc<Networks> {
        Arc::clone(&self.networks.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `ip` is one of this server's addresses (interfaces, loopback, public IP).
    pub fn is_own(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_loopback() || Some(ip) == self.public_ip || self.networks().addrs.contains(&ip)
    }

    pub fn verdict(&self, peer: SocketAddr, relays: &dyn LiveRelays) -> Verdict {
        let ip = canonical(peer.ip());
        let networks = self.networks();
        let own = ip.is_loopback() || Some(ip) == self.public_ip || networks.addrs.contains(&ip);
        if own {
            return match relays.sibling(SocketAddr::new(ip, peer.port())) {
                Some(local) => Verdict::Sibling(local),
                None => Verdict::Denied(Denied::OwnAddress),
            };
        }
        if is_always_denied(ip) || is_subnet_broadcast(ip, &networks) {
            return Verdict::Denied(Denied::Special);
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Verdict::Allowed;
        }
        if is_private(ip) && !networks.subnets.iter().any(|net| net.contains(&ip)) {
            return Verdict::Denied(Denied::Private);
        }
        Verdict::Allowed
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Never a peer, whatever the flags say.
fn is_always_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || in_v4(v4, [0, 0, 0, 0], 8) // "this network"
                || in_v4(v4, [240, 0, 0, 0], 4) // reserved
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || in_v6(v6, 0xfe80, 10) // link-local
                || in_v6(v6, 0xfec0, 10) // site-local (deprecated)
        }
    }
}

fn is_subnet_broadcast(ip: IpAddr, networks: &Networks) -> bool {
    matches!(ip, IpAddr::V4(_))
        && networks
            .subnets
            .iter()
            .any(|net| net.prefix_len() < 31 && net.broadcast() == ip)
}

/// Ranges that are not the public internet (coturn's recommended `denied-peer-ip` list, minus
/// what [`is_always_denied`] covers).
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => [
            ([10, 0, 0, 0], 8),      // RFC 1918
            ([172, 16, 0, 0], 12),   // RFC 1918
            ([192, 168, 0, 0], 16),  // RFC 1918
            ([100, 64, 0, 0], 10),   // carrier-grade NAT
            ([192, 0, 0, 0], 24),    // IETF protocol assignments
            ([192, 0, 2, 0], 24),    // documentation
            ([192, 88, 99, 0], 24),  // 6to4 relay anycast
            ([198, 18, 0, 0], 15),   // benchmarking
            ([198, 51, 100, 0], 24), // documentation
            ([203, 0, 113, 0], 24),  // documentation
        ]
        .iter()
        .any(|(net, len)| in_v4(v4, *net, *len)),
        IpAddr::V6(v6) => {
            in_v6(v6, 0xfc00, 7) // unique local
                || v6.segments()[..2] == [0x2001, 0x0db8] // documentation
                || v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64
                || v6.segments()[..3] == [0x64, 0xff9b, 1] // local-use NAT64
                || v6.segments()[..4] == [0x100, 0, 0, 0] // discard
                || v6.segments()[..2] == [0x2001, 0] // Teredo
                || v6.segments()[0] == 0x2002 // 6to4
                || (v6.segments()[..5] == [0; 5] && v6.segments()[5] == 0) // IPv4-compatible
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, first: u16, len: u32) -> bool {
    let mask = u16::MAX.checked_shl(16 - len).unwrap_or(0);
    ip.segments()[0] & mask == first & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoRelays;
    impl LiveRelays for NoRelays {
        fn sibling(&self, _: SocketAddr) -> Option<SocketAddr> {
            None
        }
    }

    struct OneRelay(u16);
    impl LiveRelays for OneRelay {
        fn sibling(&self, addr: SocketAddr) -> Option<SocketAddr> {
            (addr.port() == self.0).then(|| SocketAddr::from(([127, 0, 0, 1], self.0)))
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn lan() -> Networks {
        Networks {
            addrs: vec![
                "192.168.1.10".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ],
            subnets: vec!["192.168.1.0/24".parse().unwrap()],
        }
    }

    #[test]
    fn internal_addresses_are_refused() {
        let policy = PeerPolicy::new(vec![], None, lan());
        for (peer, why) in [
            ("127.0.0.1:80", Denied::OwnAddress),
            ("127.8.0.1:80", Denied::OwnAddress),
            ("[::1]:80", Denied::OwnAddress),
            ("[::ffff:127.0.0.1]:80", Denied::OwnAddress),
            ("192.168.1.10:22", Denied::OwnAddress),
            ("0.0.0.0:80", Denied::Special),
            ("169.254.169.254:80", Denied::Special),
            ("224.0.0.251:5353", Denied::Special),
            ("255.255.255.255:9", Denied::Special),
            ("192.168.1.255:9", Denied::Special),
            ("[fe80::1]:80", Denied::Special),
            ("[ff02::1]:80", Denied::Special),
            ("10.0.0.5:5432", Denied::Private),
            ("172.20.1.1:80", Denied::Private),
            ("192.168.2.7:80", Denied::Private),
            ("100.100.100.100:53", Denied::Private),
            ("198.19.0.1:9", Denied::Private),
            ("[fd00::1]:80", Denied::Private),
            ("[64:ff9b::a00:1]:80", Denied::Private),
            ("[::ffff:10.0.0.1]:80", Denied::Private),
        ] {
            assert_eq!(
                policy.verdict(addr(peer), &NoRelays),
                Verdict::Denied(why),
                "{peer}"
            );
        }
    }

    #[test]
    fn the_internet_and_the_own_lan_are_allowed() {
        let policy = PeerPolicy::new(vec![], None, lan());
        for peer in [
            "8.8.8.8:3478",
            "192.168.1.20:50000",
            "[2001:4860::8888]:3478",
            "[::ffff:8.8.8.8]:80",
        ] {
            assert_eq!(
                policy.verdict(addr(peer), &NoRelays),
                Verdict::Allowed,
                "{peer}"
            );
        }
    }

    #[test]
    fn allow_peer_widens_private_ranges_only() {
        let policy = PeerPolicy::new(
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap(),
            ],
            None,
            lan(),
        );
        assert_eq!(
            policy.verdict(addr("10.1.2.3:80"), &NoRelays),
            Verdict::Allowed
        );
        assert_eq!(
            policy.verdict(addr("127.0.0.1:80"), &NoRelays),
            Verdict::Denied(Denied::OwnAddress)
        );
    }

    #[test]
    fn live_relays_on_own_addresses_are_siblings() {
        let public: IpAddr = "203.0.113.9".parse().unwrap();
        let policy = PeerPolicy::new(vec![], Some(public), lan());
        let local = SocketAddr::from(([127, 0, 0, 1], 50_000));
        for peer in ["203.0.113.9:50000", "192.168.1.10:50000", "127.0.0.1:50000"] {
            assert_eq!(
                policy.verdict(addr(peer), &OneRelay(50_000)),
                Verdict::Sibling(local),
                "{peer}"
            );
        }
        assert_eq!(
            policy.verdict(addr("203.0.113.9:50001"), &OneRelay(50_000)),
            Verdict::Denied(Denied::OwnAddress)
        );
        // Someone else's address on a live relay port is just a peer.
        assert_eq!(
            policy.verdict(addr("8.8.8.8:50000"), &OneRelay(50_000)),
            Verdict::Allowed
        );
        assert!(policy.is_own(public));
    }

    #[test]
    fn reads_this_machines_interfaces() {
        let networks = Networks::read().unwrap();
        assert!(
            networks.addrs.iter().any(|a| a.is_loopback()),
            "{networks:?}"
        );
        assert!(networks.subnets.iter().all(|n| !n.addr().is_loopback()));
    }
}
