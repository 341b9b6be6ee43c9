//! The signaling state machine: the room [`Registry`] plus one bounded outbound queue per
//! connected peer. It has no transport inside: a [`Session`] takes decoded [`ClientMessage`]s
//! and everything it produces lands in the queues, which a connection reads with
//! [`Session::recv`] (and tests with [`Session::try_recv`]).
//!
//! Locking: one std `Mutex` guards the registry and the queues together, so that "who is in the
//! room" and "where do their messages go" can never disagree. It is held only for map work and
//! queue pushes and pops (which never wait); never across an `.await`. Tasks waiting on their
//! queue are woken after the lock is released.
//!
//! The queues live here rather than in channels because an idle connection must be cheap: a tokio
//! channel costs ~1 KiB per connection before any message (cache-padded state plus a first block
//! of 32 slots), a queue in this map costs its `VecDeque` (empty until used) and a waker.
//! Items are boxed `ServerMessage`s, serialized by the receiving connection's task, outside the
//! lock.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use shared::{ClientMessage, ErrorCode, PeerId, ServerMessage, PROTOCOL_VERSION};

use crate::ice::IceServers;
use crate::metrics::{Metrics, Relayed};
use crate::registry::{JoinError, Registry};

/// What a connection's queue carries.
pub type Outgoing = Box<ServerMessage>;

/// Sizes and lists the hub needs; see `Config` for the flags that set them.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub room_capacity: usize,
    pub max_rooms: usize,
    /// Messages that may wait for one slow connection before it is dropped.
    pub queue_capacity: usize,
    /// What `joined` hands out (TURN entries carry credentials minted per peer).
    pub ice_servers: IceServers,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            room_capacity: 2,
            max_rooms: 10_000,
            queue_capacity: 128,
            ice_servers: IceServers::default(),
        }
    }
}

pub struct Hub {
    config: HubConfig,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

struct Inner {
    registry: Registry,
    queues: HashMap<PeerId, Queue>,
    /// Most messages one queue may hold.
    queue_capacity: usize,
    metrics: Arc<Metrics>,
    /// Tasks to wake once the lock is released (see [`Locked`]).
    wakes: Vec<Waker>,
}

/// One connection's outbound messages, and its task's waker while it waits for one.
#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    waker: Option<Waker>,
}

/// The hub's lock. Dropping it releases the mutex first, then wakes the tasks that got messages,
/// so that a woken task never finds the lock still held.
struct Locked<'a> {
    guard: Option<MutexGuard<'a, Inner>>,
}

impl Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let wakes = std::mem::take(&mut guard.wakes);
            drop(guard);
            for waker in wakes {
                waker.wake();
            }
        }
    }
}

impl Hub {
    /// A hub with its own [`Metrics`].
    pub fn new(config: HubConfig) -> Arc<Self> {
        Self::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// A hub that counts rooms, relayed messages and slow readers in `metrics`.
    pub fn with_metrics(config: HubConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                registry: Registry::new(config.room_capacity, config.max_rooms),
                queues: HashMap::new(),
                queue_capacity: config.queue_capacity.max(1),
                metrics: Arc::clone(&metrics),
                wakes: Vec::new(),
            }),
            config,
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Registers a new connection: a fresh [`PeerId`] with an empty queue. The queue closes
    /// ([`Session::recv`] gives `None`) when the hub drops the peer for falling too far behind.
    pub fn connect(self: &Arc<Self>) -> Session {
        self.connect_from(None)
    }

    /// [`Hub::connect`] for a browser that reached the server as `host` (its `Host` header, an
    /// opaque string), which the ICE servers in its `joined` may name. Kept only when they do.
    pub fn connect_from(self: &Arc<Self>, host: Option<&str>) -> Session {
        let id = PeerId::new(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock().queues.insert(id, Queue::default());
        let host = host
            .filter(|h| h.len() <= MAX_HOST_BYTES && self.config.ice_servers.needs_host())
            .map(Box::from);
        Session {
            id,
            hub: Arc::clone(self),
            host,
        }
    }

    pub fn room_count(&self) -> usize {
        self.lock().registry.room_count()
    }

    pub fn connection_count(&self) -> usize {
        self.lock().queues.len()
    }

    fn lock(&self) -> Locked<'_> {
        // A panic while holding this lock would be a bug in this module; the data is still
        // consistent enough to keep relaying (every method leaves it valid between statements).
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Locked { guard: Some(guard) }
    }
}

impl Inner {
    /// Queues `message` for `to`. A peer whose queue is full is not reading: it is removed (its
    /// queue closed, which closes its connection) and its room is told it left.
    fn send(&mut self, to: PeerId, message: ServerMessage) {
        let mut overflowed = Vec::new();
        self.send_collecting(to, message, &mut overflowed);
        self.settle(overflowed);
    }

    /// Drops every peer whose queue overflowed. Removing a slow peer notifies its room, which
    /// may overflow another queue: keep going until no one else is dropped. Each peer is dropped
    /// at most once (its queue leaves the map), so this ends.
    fn settle(&mut self, mut overflowed: Vec<PeerId>) {
        while let Some(slow) = overflowed.pop() {
            tracing::warn!(peer = %slow, "outbound queue full; disconnecting slow reader");
            self.metrics.slow_reader_disconnects.inc();
            self.remove(slow, &mut overflowed);
        }
    }

    fn send_collecting(
        &mut self,
        to: PeerId,
        message: ServerMessage,
        overflowed: &mut Vec<PeerId>,
    ) {
        // No queue: the peer is already gone.
        let Some(queue) = self.queues.get_mut(&to) else {
            return;
        };
        if queue.items.len() >= self.queue_capacity {
            if !overflowed.contains(&to) {
                overflowed.push(to);
            }
            return;
        }
        queue.items.push_back(Box::new(message));
        if let Some(waker) = queue.waker.take() {
            self.wakes.push(waker);
        }
    }

    /// Takes `peer` out of its room (telling the others) and closes its queue (waking its task,
    /// which then finds it closed).
    fn remove(&mut self, peer: PeerId, overflowed: &mut Vec<PeerId>) {
        if let Some(Queue {
            waker: Some(waker), ..
        }) = self.queues.remove(&peer)
        {
            self.wakes.push(waker);
        }
        self.leave(peer, overflowed);
    }

    fn leave(&mut self, peer: PeerId, overflowed: &mut Vec<PeerId>) {
        if let Some(departure) = self.registry.leave(peer) {
            self.count_rooms();
            tracing::info!(%peer, room = %departure.room, "left room");
            for member in departure.remaining {
                self.send_collecting(member, ServerMessage::PeerLeft { peer }, overflowed);
            }
        }
    }

    fn count_rooms(&self) {
        let rooms = i64::try_from(self.registry.room_count()).unwrap_or(i64::MAX);
        self.metrics.rooms_open.set(rooms);
    }

    /// Queues an error reply for `to` and returns its code, for [`Session::handle`] to report.
    fn refuse(&mut self, to: PeerId, code: ErrorCode, text: impl Into<String>) -> ErrorCode {
        self.send(to, ServerMessage::error(code, text));
        code
    }
}

/// Longest `Host` kept for [`Hub::connect_from`].
const MAX_HOST_BYTES: usize = 260;

/// One connection's view of the hub: every request it makes carries its own [`PeerId`], so a
/// client can never act as, or appear to be, someone else. Dropping the session leaves the room.
pub struct Session {
    id: PeerId,
    hub: Arc<Hub>,
    host: Option<Box<str>>,
}

impl Session {
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The next message for this connection; `None` once the hub has dropped it (its queue
    /// overflowed: it was not reading). Waits without holding the lock.
    pub async fn recv(&self) -> Option<Outgoing> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        let mut inner = self.hub.lock();
        let Some(queue) = inner.queues.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        if let Some(message) = queue.items.pop_front() {
            return Poll::Ready(Some(message));
        }
        match &mut queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message if one is queued now (`None`: empty, or dropped by the hub).
    pub fn try_recv(&self) -> Option<Outgoing> {
        self.hub
            .lock()
            .queues
            .get_mut(&self.id)
            .and_then(|queue| queue.items.pop_front())
    }

    /// False once the hub has dropped this connection as a slow reader.
    pub fn is_open(&self) -> bool {
        self.hub.lock().queues.contains_key(&self.id)
    }

    /// Handles one decoded request. Replies (including errors) go to this session's own queue.
    /// `Err(code)`: the request was refused, and an error with that code is already queued.
    pub fn handle(&self, message: ClientMessage) -> Result<(), ErrorCode> {
        // Minting TURN credentials is an HMAC: done before taking the lock.
        let ice_servers = match &message {
            ClientMessage::Join { version, .. } if *version == PROTOCOL_VERSION => self
                .hub
                .config
                .ice_servers
                .for_peer(self.id, self.host.as_deref(), SystemTime::now()),
            _ => Vec::new(),
        };
        let mut inner = self.hub.lock();
        if !inner.queues.contains_key(&self.id) {
            // Dropped as a slow reader; the transport is about to close.
            return Ok(());
        }
        match message {
            ClientMessage::Join { room, version } => {
                if version != PROTOCOL_VERSION {
                    let text = format!(
                        "This page is out of date (protocol {version}, server speaks {PROTOCOL_VERSION}). Reload the page."
                    );
                    return Err(inner.refuse(self.id, ErrorCode::UnsupportedVersion, text));
                }
                match inner.registry.join(self.id, &room) {
                    Ok(peers) => {
                        inner.count_rooms();
                        tracing::info!(peer = %self.id, %room, others = peers.len(), "joined room");
                        let joined = ServerMessage::Joined {
                            room,
                            you: self.id,
                            peers: peers.clone(),
                            capacity: u32::try_from(inner.registry.capacity()).unwrap_or(u32::MAX),
                            ice_servers,
                        };
                        // The newcomer hears `joined` before anyone can react to `peerJoined`,
                        // so it has its peer connections ready before the first offer arrives.
                        inner.send(self.id, joined);
                        for member in peers {
                            inner.send(member, ServerMessage::PeerJoined { peer: self.id });
                        }
                        Ok(())
                    }
                    Err(err) => {
                        let (code, text) = match &err {
                            JoinError::AlreadyJoined(current) => (
                                ErrorCode::AlreadyJoined,
                                format!("You are already in room \"{current}\". Leave it first."),
                            ),
                            JoinError::RoomFull { capacity } => (
                                ErrorCode::RoomFull,
                                format!(
                                    "Room \"{room}\" is full: it holds {capacity} people. Try another room name, or come back later."
                                ),
                            ),
                            JoinError::TooManyRooms { .. } => (
                                ErrorCode::ServerFull,
                                "The server has no room for another call right now. Try again later.".to_string(),
                            ),
                        };
                        tracing::info!(peer = %self.id, %room, %err, "join refused");
                        Err(inner.refuse(self.id, code, text))
                    }
                }
            }
            ClientMessage::Leave => {
                let mut overflowed = Vec::new();
                inner.leave(self.id, &mut overflowed);
                inner.settle(overflowed);
                Ok(())
            }
            ClientMessage::Description { to, description } => self.relay(
                &mut inner,
                to,
                Relayed::Description,
                ServerMessage::Description {
                    from: self.id,
                    description,
                },
            ),
            ClientMessage::MediaState(state) => {
                let Some(room) = inner.registry.room_of(self.id).cloned() else {
                    let text = "Join a room before sending your microphone and camera state.";
                    return Err(inner.refuse(self.id, ErrorCode::NotInRoom, text));
                };
                let others: Vec<PeerId> = inner
                    .registry
                    .members(&room)
                    .iter()
                    .copied()
                    .filter(|member| *member != self.id)
                    .collect();
                for member in others {
                    inner.metrics.relayed(Relayed::PeerMediaState);
                    inner.send(
                        member,
                        ServerMessage::PeerMediaState {
                            peer: self.id,
                            state,
                        },
                    );
                }
                Ok(())
            }
            ClientMessage::IceCandidate { to, candidate } => self.relay(
                &mut inner,
                to,
                Relayed::IceCandidate,
                ServerMessage::IceCandidate {
                    from: self.id,
                    candidate,
                },
            ),
        }
    }

    /// Tells this session's own client that something it sent was refused.
    pub fn reply_error(&self, code: ErrorCode, message: impl Into<String>) {
        self.hub
            .lock()
            .send(self.id, ServerMessage::error(code, message));
    }

    fn relay(
        &self,
        inner: &mut Inner,
        to: PeerId,
        kind: Relayed,
        message: ServerMessage,
    ) -> Result<(), ErrorCode> {
        if inner.registry.room_of(self.id).is_none() {
            let text = "Join a room before sending signaling messages.";
            Err(inner.refuse(self.id, ErrorCode::NotInRoom, text))
        } else if to == self.id || !inner.registry.same_room(self.id, to) {
            let text = format!("Peer {to} is not in your room.");
            Err(inner.refuse(self.id, ErrorCode::UnknownPeer, text))
        } else {
            inner.metrics.relayed(kind);
            inner.send(to, message);
            Ok(())
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        let mut overflowed = Vec::new();
        inner.remove(self.id, &mut overflowed);
        inner.settle(overflowed);
    }
}

#[cfg(test)]
mod tests {
    use shared::{IceCandidate, RoomName, SdpKind, SessionDescription};

    use super::*;

    fn hub(capacity: usize) -> Arc<Hub> {
        Hub::new(HubConfig {
            room_capacity: capacity,
            queue_capacity: 8,
            ..HubConfig::default()
        })
    }

    fn join(room: &str) -> ClientMessage {
        ClientMessage::Join {
            room: RoomName::new(room).unwrap(),
            version: PROTOCOL_VERSION,
        }
    }

    fn offer(to: PeerId) -> ClientMessage {
        ClientMessage::Description {
            to,
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: "v=0".into(),
            },
        }
    }

    fn drain(session: &Session) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Some(message) = session.try_recv() {
            out.push(*message);
        }
        out
    }

    fn error_code(messages: &[ServerMessage]) -> Option<ErrorCode> {
        messages.iter().find_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn join_then_relay_stamps_sender() {
        let hub = hub(2);
        let a = hub.connect();
        let b = hub.connect();
        let _ = a.handle(join("x"));
        let _ = b.handle(join("x"));
        assert!(
            matches!(&drain(&b)[..], [ServerMessage::Joined { peers, .. }] if peers == &[a.id()])
        );
        assert_eq!(drain(&a)[1..], [ServerMessage::PeerJoined { peer: b.id() }]);
        let _ = a.handle(offer(b.id()));
        assert!(
            matches!(&drain(&b)[..], [ServerMessage::Description { from, .. }] if *from == a.id())
        );
        assert!(drain(&a).is_empty());
    }

    #[test]
    fn media_state_goes_to_the_rest_of_the_room_stamped() {
        let hub = hub(3);
        let a = hub.connect();
        let b = hub.connect();
        let c = hub.connect();
        let state = shared::MediaState {
            muted: true,
            camera_off: false,
        };
        let _ = a.handle(ClientMessage::MediaState(state));
        assert_eq!(error_code(&drain(&a)), Some(ErrorCode::NotInRoom));
        let _ = a.handle(join("x"));
        let _ = b.handle(join("x"));
        let _ = c.handle(join("y"));
        drain(&a);
        drain(&b);
        drain(&c);
        let _ = a.handle(ClientMessage::MediaState(state));
        assert_eq!(
            drain(&b),
            [ServerMessage::PeerMediaState {
                peer: a.id(),
                state
            }]
        );
        assert!(drain(&a).is_empty(), "not echoed to the sender");
        assert!(drain(&c).is_empty(), "not to other rooms");
    }

    #[test]
    fn relay_outside_room_is_refused() {
        let hub = hub(2);
        let a = hub.connect();
        let b = hub.connect();
        let _ = a.handle(offer(b.id()));
        assert_eq!(error_code(&drain(&a)), Some(ErrorCode::NotInRoom));
        let _ = a.handle(join("x"));
        let _ = b.handle(join("y"));
        drain(&a);
        drain(&b);
        let _ = a.handle(ClientMessage::IceCandidate {
            to: b.id(),
            candidate: IceCandidate {
                candidate: "c".into(),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            },
        });
        assert_eq!(error_code(&drain(&a)), Some(ErrorCode::UnknownPeer));
        assert!(drain(&b).is_empty());
        let _ = a.handle(offer(a.id()));
        assert_eq!(error_code(&drain(&a)), Some(ErrorCode::UnknownPeer));
    }

    #[test]
    fn stale_protocol_version_is_refused() {
        let hub = hub(2);
        let a = hub.connect();
        let _ = a.handle(ClientMessage::Join {
            room: RoomName::new("x").unwrap(),
            version: 0,
        });
        assert_eq!(error_code(&drain(&a)), Some(ErrorCode::UnsupportedVersion));
        assert_eq!(hub.room_count(), 0);
    }

    #[test]
    fn drop_tells_the_room_and_removes_it_when_empty() {
        let hub = hub(2);
        let a = hub.connect();
        let b = hub.connect();
        let _ = a.handle(join("x"));
        let _ = b.handle(join("x"));
        drain(&a);
        let b_id = b.id();
        drop(b);
        assert_eq!(drain(&a), [ServerMessage::PeerLeft { peer: b_id }]);
        drop(a);
        assert_eq!(hub.room_count(), 0);
        assert_eq!(hub.connection_count(), 0);
    }

    #[tokio::test]
    async fn recv_waits_for_a_message_and_ends_when_dropped() {
        let hub = hub(2);
        let a = Arc::new(hub.connect());
        let b = hub.connect();
        let _ = a.handle(join("x"));
        drain(&a);
        let waiting = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.recv().await.map(|m| *m) }
        });
        tokio::task::yield_now().await;
        let _ = b.handle(join("x"));
        assert_eq!(
            waiting.await.unwrap(),
            Some(ServerMessage::PeerJoined { peer: b.id() })
        );
        // Overflowing a's queue (8) drops it, which wakes a waiting task with `None`.
        let waiting = tokio::spawn({
            let a = Arc::clone(&a);
            async move {
                let mut got = 0;
                while a.recv().await.is_some() {
                    got += 1;
                }
                got
            }
        });
        tokio::task::yield_now().await;
        for _ in 0..100 {
            let _ = b.handle(ClientMessage::MediaState(shared::MediaState::default()));
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting task was woken")
            .unwrap();
        assert!(got <= 100, "{got}");
        assert!(!a.is_open());
    }

    #[test]
    fn slow_reader_is_dropped_and_its_room_told() {
        let hub = hub(2);
        let a = hub.connect();
        let b = hub.connect();
        let _ = a.handle(join("x"));
        let _ = b.handle(join("x"));
        drain(&a);
        // b never reads: its queue (8) fills, then it is dropped.
        let mut a_got = Vec::new();
        for _ in 0..20 {
            let _ = a.handle(offer(b.id()));
            a_got.extend(drain(&a));
        }
        assert!(a_got.contains(&ServerMessage::PeerLeft { peer: b.id() }));
        // b's queue is closed (what was in it is dropped: b was not reading anyway).
        assert!(!b.is_open());
        assert!(b.try_recv().is_none());
        let waker = futures_util::task::noop_waker();
        assert_eq!(
            b.poll_recv(&mut Context::from_waker(&waker))
                .map(|m| m.is_none()),
            Poll::Ready(true)
        );
        assert_eq!(hub.connection_count(), 1);
        // Further requests from the dropped session do nothing.
        let _ = b.handle(offer(a.id()));
        assert!(drain(&a).is_empty());
    }
}
