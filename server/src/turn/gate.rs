//! The gate: a `Conn` wrapped around each TURN listener (a UDP socket or the TCP multiplexer)
//! that sees every request before the `turn` crate does, decoded with the `stun` crate.
//!
//! The crate authenticates requests but cannot say why one failed, has no allocation quotas and
//! no peer filter, and answers bad credentials with 400. The gate, at the crate's only seam for
//! incoming traffic, does those parts itself:
//!
//! - long-term authentication against the TURN REST secret (expiry first, then the
//!   MESSAGE-INTEGRITY, compared in constant time by `stun`): failures are answered 401 and
//!   counted by reason; only authenticated requests reach the crate, which checks them again;
//! - per-user and per-IP allocation limits (486), and the reservation the relay generator picks
//!   up (see `relay::Pending`);
//! - the peer policy for CreatePermission and ChannelBind (403), for every XOR-PEER-ADDRESS
//!   in the request (the crate itself only looks at the first);
//! - nonces: the crate remembers every nonce it issues until someone presents it after it
//!   expired, so letting it challenge every unauthenticated packet would grow its table without
//!   bound. The gate answers every challenge itself with the one nonce the crate issued last
//!   (see [`Nonces`]), so the crate's table holds one nonce (one per listener at most);
//! - anything that is neither a request the crate serves, a Send indication nor ChannelData is
//!   dropped before the crate logs an error for it.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{
    ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN,
    CODE_STALE_NONCE, CODE_UNAUTHORIZED,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    is_message, Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
    CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_REFRESH, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::proto::chandata::ChannelData;
use turn::proto::peeraddr::PeerAddress;
use webrtc_util::Conn;

use super::credentials::{check_expiry, password_for, UsernameError};
use super::policy::{PeerPolicy, Verdict};
use super::relay::{Client, Pending, PendingSlot, Relays, Transport};
use super::tcp::TcpMux;
use crate::datadir::Secret;
use crate::metrics::{Metrics, TurnAuthFailure};

/// The nonce the gate challenges with: the last one the crate issued.
///
/// The crate issues a nonce when it answers a request that has none (401) or an unknown or
/// expired one (438), and forgets one only when it is presented after its hour is up. So the
/// gate lets exactly those requests through only while it has no nonce yet; afterwards it
/// challenges with the current one itself (401 without, 438 with any other nonce) and passes
/// only requests that carry it. Once that nonce is an hour old, the next request carrying it
/// makes the crate drop it and answer 438 with a new one, which the gate learns from the
/// answer: the client retries, and the crate's table never holds more than the current nonce.
#[derive(Debug, Default)]
pub struct Nonces {
    current: Option<String>,
}

impl Nonces {
    fn current(&self) -> Option<String> {
        self.current.clone()
    }

    fn is_current(&self, nonce: &str) -> bool {
        self.current.as_deref() == Some(nonce)
    }

    fn learn(&mut self, nonce: String) {
        self.current = Some(nonce);
    }
}

/// What every listener's gate shares: the secret, the nonces, the limits and the policy.
pub struct Shared {
    secret: Secret,
    realm: String,
    nonces: Mutex<Nonces>,
    relays: Arc<Relays>,
    policy: Arc<PeerPolicy>,
    metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(
        secret: Secret,
        realm: String,
        relays: Arc<Relays>,
        policy: Arc<PeerPolicy>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            secret,
            realm,
            nonces: Mutex::new(Nonces::default()),
            relays,
            policy,
            metrics,
        }
    }

    fn nonces(&self) -> std::sync::MutexGuard<'_, Nonces> {
        self.nonces.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The listener under a gate.
pub enum Inner {
    Udp(UdpSocket),
    Tcp(Arc<TcpMux>),
}

impl Inner {
    fn transport(&self) -> Transport {
        match self {
            Inner::Udp(_) => Transport::Udp,
            Inner::Tcp(_) => Transport::Tcp,
        }
    }

    /// Where `client` reached us.
    fn local_ip_for(&self, client: SocketAddr) -> Option<IpAddr> {
        match self {
            Inner::Udp(socket) => socket.local_addr().ok().map(|a| a.ip()),
            Inner::Tcp(mux) => mux.local_addr_for(client).map(|a| a.ip()),
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        match self {
            Inner::Udp(socket) => Ok(socket.recv_from(buf).await?),
            Inner::Tcp(mux) => mux.recv_from(buf).await,
        }
    }

    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> Result<usize, webrtc_util::Error> {
        match self {
            Inner::Udp(socket) => Ok(socket.send_to(buf, to).await?),
            Inner::Tcp(mux) => mux.send_to(buf, to),
        }
    }

    fn local_addr(&self) -> Result<SocketAddr, webrtc_util::Error> {
        match self {
            Inner::Udp(socket) => Ok(socket.local_addr()?),
            Inner::Tcp(mux) => Ok(mux.local_addr()),
        }
    }
}

/// What the gate does with one incoming packet.
enum Screen {
    /// Hand it to the crate.
    Pass,
    /// Answer it ourselves; the crate never sees it.
    Answer(Message),
    Drop,
}

/// One listener's gate. The crate's read loop is its only reader.
pub struct Gate {
    inner: Inner,
    shared: Arc<Shared>,
    slot: PendingSlot,
    /// Set while the crate handles a request it will answer with a new nonce (401 or 438), so
    /// that [`Conn::send_to`] picks the nonce up from the answer.
    awaiting_nonce: AtomicBool,
}

impl Gate {
    pub fn new(inner: Inner, shared: Arc<Shared>, slot: PendingSlot) -> Self {
        Self {
            inner,
            shared,
            slot,
            awaiting_nonce: AtomicBool::new(false),
        }
    }

    fn set_pending(&self, pending: Option<Pending>) {
        let old = std::mem::replace(
            &mut *self.slot.lock().unwrap_or_else(|p| p.into_inner()),
            pending.map(Arc::new),
        );
        // An unused reservation gives its place back here, outside the slot's lock.
        drop(old);
    }

    fn screen(&self, buf: &[u8], src: SocketAddr) -> Screen {
        if ChannelData::is_channel_data(buf) {
            return Screen::Pass;
        }
        if !is_message(buf) {
            return Screen::Drop;
        }
        let mut m = Message {
            raw: buf.to_vec(),
            ..Default::default()
        };
        if m.decode().is_err() {
            return Screen::Drop;
        }
        match (m.typ.class, m.typ.method) {
            (CLASS_INDICATION, METHOD_SEND) | (CLASS_REQUEST, METHOD_BINDING) => Screen::Pass,
            (
                CLASS_REQUEST,
                METHOD_ALLOCATE | METHOD_REFRESH | METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND,
            ) => self.authenticate(m, src),
            _ => Screen::Drop,
        }
    }

    fn authenticate(&self, mut m: Message, src: SocketAddr) -> Screen {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return self.challenge(&m, CODE_UNAUTHORIZED);
        }
        let (Ok(nonce), Ok(realm), Ok(username)) = (
            TextAttribute::get_from_as(&m, ATTR_NONCE),
            TextAttribute::get_from_as(&m, ATTR_REALM),
            TextAttribute::get_from_as(&m, ATTR_USERNAME),
        ) else {
            return answer(&m, CODE_BAD_REQUEST, vec![]);
        };
        if !self.shared.nonces().is_current(&nonce.text) {
            return self.challenge(&m, CODE_STALE_NONCE);
        }
        let user = username.text;
        match check_expiry(&user, SystemTime::now()) {
            Ok(()) => {}
            Err(UsernameError::Expired) => {
                return self.refuse(&m, src, TurnAuthFailure::Expired, nonce.text)
            }
            Err(UsernameError::Malformed) => {
                return self.refuse(&m, src, TurnAuthFailure::Malformed, nonce.text)
            }
        }
        let integrity = MessageIntegrity(generate_auth_key(
            &user,
            &realm.text,
            &password_for(&self.shared.secret, &user),
        ));
        if integrity.check(&mut m).is_err() {
            return self.refuse(&m, src, TurnAuthFailure::BadCredentials, nonce.text);
        }
        // If the nonce has just turned an hour old, the crate answers 438 with a new one.
        self.awaiting_nonce.store(true, Ordering::Relaxed);
        match m.typ.method {
            METHOD_ALLOCATE => match self.shared.relays.reserve(&user, src.ip()) {
                Err(reason) => {
                    self.shared.metrics.turn.allocation_refused(reason);
                    tracing::debug!(client = %src, ?reason, "TURN allocation over the limit");
                    answer(&m, CODE_ALLOC_QUOTA_REACHED, vec![Box::new(integrity)])
                }
                Ok(ticket) => {
                    let Some(local_ip) = self.inner.local_ip_for(src) else {
                        return Screen::Drop;
                    };
                    self.set_pending(Some(Pending {
                        ticket,
                        client: Client {
                            transport: self.inner.transport(),
                            addr: src,
                        },
                        local_ip,
                    }));
                    Screen::Pass
                }
            },
            METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => {
                for peer in peer_addresses(&m) {
                    let Some(peer) = peer else {
                        return answer(&m, CODE_BAD_REQUEST, vec![Box::new(integrity)]);
                    };
                    if let Verdict::Denied(why) =
                        self.shared.policy.verdict(peer, &*self.shared.relays)
                    {
                        self.shared.metrics.turn.permissions_refused.inc();
                        tracing::debug!(client = %src, %peer, ?why, "TURN peer refused");
                        return answer(&m, CODE_FORBIDDEN, vec![Box::new(integrity)]);
                    }
                }
                Screen::Pass
            }
            _ => Screen::Pass,
        }
    }

    /// Refuses credentials: 401 with the realm and the (valid) nonce, as RFC 5389 asks.
    fn refuse(
        &self,
        m: &Message,
        src: SocketAddr,
        reason: TurnAuthFailure,
        nonce: String,
    ) -> Screen {
        self.shared.metrics.turn.auth_failed(reason);
        tracing::debug!(client = %src, ?reason, "TURN credentials refused");
        answer(
            m,
            CODE_UNAUTHORIZED,
            vec![
                Box::new(TextAttribute::new(ATTR_REALM, self.shared.realm.clone())),
                Box::new(TextAttribute::new(ATTR_NONCE, nonce)),
            ],
        )
    }

    /// Answers `code` (401 or 438) with the realm and the current nonce, or, before the crate has
    /// issued one, lets the crate answer (and learns its nonce).
    fn challenge(&self, m: &Message, code: ErrorCode) -> Screen {
        match self.shared.nonces().current() {
            Some(nonce) => answer(
                m,
                code,
                vec![
                    Box::new(TextAttribute::new(ATTR_REALM, self.shared.realm.clone())),
                    Box::new(TextAttribute::new(ATTR_NONCE, nonce)),
                ],
            ),
            None => {
                self.awaiting_nonce.store(true, Ordering::Relaxed);
                Screen::Pass
            }
        }
    }

    /// Remembers the nonce in an answer the crate sends while we wait for one.
    fn learn_nonce(&self, buf: &[u8]) {
        if !self.awaiting_nonce.load(Ordering::Relaxed) || !is_message(buf) {
            return;
        }
        let mut m = Message {
            raw: buf.to_vec(),
            ..Default::default()
        };
        if m.decode().is_err() || m.typ.class != CLASS_ERROR_RESPONSE {
            return;
        }
        if let Ok(nonce) = TextAttribute::get_from_as(&m, ATTR_NONCE) {
            self.shared.nonces().learn(nonce.text);
            self.awaiting_nonce.store(false, Ordering::Relaxed);
        }
    }
}

/// Every XOR-PEER-ADDRESS in `m`, decoded (`None`: one that does not decode).
fn peer_addresses(m: &Message) -> Vec<Option<SocketAddr>> {
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == stun::attributes::ATTR_XOR_PEER_ADDRESS)
        .map(|attr| {
            // `PeerAddress` reads the first such attribute of a message: give it one at a time,
            // with the transaction ID that IPv6 addresses are XORed with.
            let mut one = Message::new();
            one.transaction_id = m.transaction_id;
            one.add(attr.typ, &attr.value);
            let mut peer = PeerAddress::default();
            peer.get_from(&one)
                .ok()
                .map(|()| SocketAddr::new(peer.ip, peer.port))
        })
        .collect()
}

/// An error response to `m` with `code` and `extra` attributes.
fn answer(m: &Message, code: ErrorCode, extra: Vec<Box<dyn Setter>>) -> Screen {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: m.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason(code).as_bytes().to_vec(),
        }),
    ];
    setters.extend(extra);
    let mut out = Message::new();
    match out.build(&setters) {
        Ok(()) => Screen::Answer(out),
        Err(_) => Screen::Drop,
    }
}

fn reason(code: ErrorCode) -> &'static str {
    match code {
        CODE_BAD_REQUEST => "Bad Request",
        CODE_UNAUTHORIZED => "Unauthorized",
        CODE_FORBIDDEN => "Forbidden",
        CODE_STALE_NONCE => "Stale Nonce",
        CODE_ALLOC_QUOTA_REACHED => "Allocation Quota Reached",
        _ => "",
    }
}

#[async_trait]
impl Conn for Gate {
    async fn connect(&self, _addr: SocketAddr) -> Result<(), webrtc_util::Error> {
        Err(webrtc_util::Error::Other(
            "a TURN listener is not connected".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, webrtc_util::Error> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        loop {
            // The crate has finished with the previous packet (it handles one at a time).
            self.set_pending(None);
            self.awaiting_nonce.store(false, Ordering::Relaxed);
            let (n, src) = match self.inner.recv_from(buf).await {
                Ok(received) => received,
                // The TCP side only fails once it is shut down; that ends the crate's loop.
                Err(err) if matches!(self.inner, Inner::Tcp(_)) => return Err(err),
                // A UDP socket's errors are about one datagram (an ICMP error for an earlier
                // send); returning one would end the crate's read loop for good.
                Err(err) => {
                    tracing::debug!(%err, "TURN UDP receive error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            let packet = &buf[..n];
            // The STUN decoder sees bytes from anyone: if it ever panicked, the crate's read loop
            // (and with it this listener) would die. Drop such a packet instead.
            let screened = std::panic::catch_unwind(AssertUnwindSafe(|| self.screen(packet, src)));
            match screened {
                Ok(Screen::Pass) => return Ok((n, src)),
                Ok(Screen::Answer(reply)) => {
                    if let Err(err) = self.inner.send_to(&reply.raw, src).await {
                        tracing::debug!(%err, client = %src, "cannot answer a TURN request");
                    }
                }
                Ok(Screen::Drop) => {}
                Err(_) => {
                    tracing::warn!(client = %src, "a TURN packet crashed its decoder; dropped")
                }
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> Result<usize, webrtc_util::Error> {
        Err(webrtc_util::Error::Other(
            "a TURN listener needs a destination".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, webrtc_util::Error> {
        self.learn_nonce(buf);
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> Result<SocketAddr, webrtc_util::Error> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Does nothing: the crate calls this on the listener whenever an allocation closes
    /// (`Allocation::close` closes its "turn socket"). The listener lives as long as the server.
    async fn close(&self) -> Result<(), webrtc_util::Error> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The crate's own authentication, behind the gate's: the same checks, so that nothing the gate
/// passes by mistake is served without credentials.
pub struct Auth {
    pub secret: Secret,
}

impl AuthHandler for Auth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        check_expiry(username, SystemTime::now()).map_err(|e| turn::Error::Other(e.to_string()))?;
        Ok(generate_auth_key(
            username,
            realm,
            &password_for(&self.secret, username),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_challenges_with_the_nonce_the_crate_issued_last() {
        let mut nonces = Nonces::default();
        assert_eq!(nonces.current(), None, "the crate issues the first one");
        assert!(!nonces.is_current(""));
        nonces.learn("a".into());
        assert_eq!(nonces.current().as_deref(), Some("a"));
        assert!(nonces.is_current("a") && !nonces.is_current("b"));
        nonces.learn("b".into());
        assert!(nonces.is_current("b") && !nonces.is_current("a"));
    }

    #[test]
    fn every_peer_address_is_decoded() {
        let mut m = Message::new();
        let setters: [Box<dyn Setter>; 4] = [
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
            Box::new(PeerAddress {
                ip: "8.8.8.8".parse().unwrap(),
                port: 1,
            }),
            Box::new(PeerAddress {
                ip: "2001:db8::1".parse().unwrap(),
                port: 2,
            }),
        ];
        m.build(&setters).unwrap();
        let mut decoded = Message {
            raw: m.raw.clone(),
            ..Default::default()
        };
        decoded.decode().unwrap();
        assert_eq!(
            peer_addresses(&decoded),
            vec![
                Some("8.8.8.8:1".parse().unwrap()),
                Some("[2001:db8::1]:2".parse().unwrap())
            ]
        );
    }
}
