//! The signaling state machine: the room [`Registry`], one outbound queue per connection, and the
//! seats kept for people whose connection dropped. It has no transport and no timer inside: a
//! [`Session`] (one connection) takes decoded [`ClientMessage`]s and everything they produce lands
//! in queues, which the connection reads with [`Session::recv`] (tests with
//! [`Session::try_recv`]). Time comes from an injected [`Clock`]; the transport calls
//! [`Hub::expire`] when a grace period may have ended, and runs key stretching (passcodes) that the
//! hub hands out as a [`Stretch`], off the lock.
//!
//! Connections and seats. A connection joins a room and gets a seat: a [`PeerId`] (random, unique
//! among live seats) that the others address. A seat outlives its connection:
//! - `leave`, or a connection the server closes for misbehaving, releases it at once (the room
//!   hears `peerLeft`);
//! - a connection that just drops (closed, reset, timed out) leaves the seat *held* for the grace
//!   period: the room hears `peerReconnecting`, signals sent to the seat meanwhile are kept (in at
//!   most half of `max_queue_bytes`), and a `join` with the seat's resume token takes it back:
//!   `joined` (resumed), then the kept signals; the room hears `peerReconnected`. Other messages to
//!   a held seat (room state, chat) are not kept: the resumed `joined` carries that state. If the
//!   kept signals overflow, the seat is released (the room hears `peerLeft`): what was sent to a
//!   seat is delivered, or the seat is released — never silently dropped while the seat lives.
//!   After the grace, [`Hub::expire`] releases it;
//! - a valid token for a seat still attached to an open connection (the server has not noticed
//!   that connection died) moves the seat to the new connection and closes the old one
//!   ([`Closed::Replaced`]); what was queued for the old one follows the new `joined`;
//! - a valid token for a seat the server does not know (it restarted, or the grace passed) seats
//!   the person again under the same id, if the room has space: the room hears `peerJoined`.
//!
//! Queues are bounded in bytes: a connection whose queue would exceed `max_queue_bytes` is not
//! reading fast enough; it is closed ([`Closed::SlowReader`]) and its seat released. (The
//! transport separately drops a connection whose writes stop making progress.)
//!
//! Locking: one std `Mutex` guards everything, so that "who is in the room" and "where do their
//! messages go" never disagree. It is held for map work and queue pushes (never across an
//! `.await`, never for key stretching); messages are serialized once, under it, into shared
//! frames. Tasks waiting on their queue are woken after the lock is released.
//!
//! The queues live here rather than in channels because an idle connection must be cheap: a tokio
//! channel costs ~1 KiB per connection before any message, a queue here an empty `VecDeque`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use shared::{
    ChatEntry, ChatText, ClientMessage, DisplayName, ErrorCode, IceServer, Member, Passcode,
    PeerId, ResumeToken, RoomName, ServerKind, ServerMessage, PROTOCOL_VERSION,
};

use crate::clock::{Clock, Now, SystemClock};
use crate::ice::IceServers;
use crate::metrics::{Expiry, Metrics, ResumeOutcome, SlowReason};
use crate::passcode::{IpAttempts, PasscodeHash, RandomError, Rate, DEFAULT_ITERATIONS};
use crate::registry::{Admission, JoinError, Registry, RoomLock, Seat};
use crate::resume::{ResumeError, ResumeKeys};

/// Smallest `max_queue_bytes`: the largest `joined` (50 chat messages of 2 KiB, each character
/// possibly escaped, eight members) is about 230 KB, and a held seat gets half the bound.
pub const MIN_QUEUE_BYTES: usize = 512 * 1024;

/// Passes through the join logic one request may take (each key stretching is one pass; more
/// happen only if the room's lock keeps changing under it).
const MAX_ROUNDS: u8 = 4;

/// Sizes, lists and secrets the hub needs; see `Config` for the flags that set them.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub room_capacity: usize,
    pub max_rooms: usize,
    /// Bytes of messages that may wait for one connection (at least [`MIN_QUEUE_BYTES`]); a
    /// seat kept for a dropped connection keeps at most half of this.
    pub max_queue_bytes: usize,
    /// What `joined` hands out; TURN entries carry credentials minted per participant.
    pub ice_servers: IceServers,
    /// Signs and checks resume tokens.
    pub resume: ResumeKeys,
    /// How long a dropped connection's seat is kept; zero releases it at once.
    pub resume_grace: Duration,
    /// PBKDF2 rounds for room passcodes.
    pub passcode_iterations: NonZeroU32,
    pub attempts_per_ip: Rate,
    pub attempts_per_room: Rate,
}

impl HubConfig {
    /// Defaults (as the flags'), signing tokens with `resume`.
    pub fn new(resume: ResumeKeys) -> Self {
        Self {
            room_capacity: 4,
            max_rooms: 10_000,
            max_queue_bytes: 1024 * 1024,
            ice_servers: IceServers::default(),
            resume,
            resume_grace: Duration::from_secs(30),
            passcode_iterations: DEFAULT_ITERATIONS,
            attempts_per_ip: Rate { per_minute: 10 },
            attempts_per_room: Rate { per_minute: 30 },
        }
    }
}

/// One serialized server message, shared by every queue it goes to. A pointer, so that a queue's
/// slots (which an idle connection keeps allocated) stay small.
#[derive(Clone, Debug)]
pub struct Frame(Arc<FrameInner>);

#[derive(Debug)]
struct FrameInner {
    kind: ServerKind,
    text: Utf8Bytes,
}

impl Frame {
    fn new(message: &ServerMessage) -> Self {
        Self(Arc::new(FrameInner {
            kind: message.kind(),
            text: Utf8Bytes::from(message.to_json()),
        }))
    }

    pub fn kind(&self) -> ServerKind {
        self.0.kind
    }

    /// The JSON text, as written to the websocket.
    pub fn text(&self) -> &Utf8Bytes {
        &self.0.text
    }

    /// Bytes counted against queue bounds.
    pub fn len(&self) -> usize {
        self.0.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.text.is_empty()
    }

    /// Parses the text back (tests, fuzzing).
    pub fn decode(&self) -> Result<ServerMessage, serde_json::Error> {
        ServerMessage::from_json(&self.0.text)
    }

    /// A signal for one peer (kept for a held seat; everything else `joined` restates).
    fn is_signal(&self) -> bool {
        matches!(
            self.0.kind,
            ServerKind::Description | ServerKind::IceCandidate
        )
    }
}

/// Why the hub closed a connection ([`Session::recv`] returns it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Its queue went over `max_queue_bytes`: it was not reading. Its seat was released.
    SlowReader,
    /// A newer connection resumed its seat with the seat's token.
    Replaced,
}

/// How a connection ended, for its seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It dropped (closed by the client, reset, timed out, server shutting down): keep the seat
    /// for the grace period.
    Dropped,
    /// The server closed it for breaking a rule: release the seat now.
    Expelled,
}

/// What [`Session::handle`] did with a request.
#[derive(Debug)]
#[must_use]
pub enum Handled {
    Done,
    /// Refused; an error reply with this code is already queued.
    Refused(ErrorCode),
    /// Needs key stretching before it can go on: run [`Stretch::run`] (slow; on a blocking
    /// thread, not under any lock), then pass the result to [`Session::finish`]. The connection
    /// must not handle its next request before that.
    Stretch(Stretch),
}

/// Key stretching a request waits for (see [`Handled::Stretch`]). Holds the request itself.
#[derive(Debug)]
pub struct Stretch {
    job: Job,
    iterations: NonZeroU32,
}

#[derive(Debug)]
enum Job {
    /// Hash the passcode of a join that creates a room locked.
    HashForJoin(JoinRequest),
    /// Check the passcode of a join against the room's lock of this generation.
    VerifyForJoin {
        request: JoinRequest,
        hash: Arc<PasscodeHash>,
        generation: u64,
    },
    /// Hash the passcode a member locks the room with.
    HashForLock { room: RoomName, passcode: Passcode },
}

/// The result of a [`Stretch`], for [`Session::finish`].
#[derive(Debug)]
pub struct Stretched(Done);

#[derive(Debug)]
enum Done {
    JoinHashed(JoinRequest, Result<PasscodeHash, RandomError>),
    JoinVerified {
        request: JoinRequest,
        generation: u64,
        matches: bool,
    },
    LockHashed {
        room: RoomName,
        hash: Result<PasscodeHash, RandomError>,
    },
}

impl Stretch {
    /// Does the slow part. No lock, no hub: safe on any thread.
    pub fn run(self) -> Stretched {
        let rng = SystemRandom::new();
        Stretched(match self.job {
            Job::HashForJoin(request) => {
                let hash = request.passcode.as_ref().map_or(Err(RandomError), |code| {
                    PasscodeHash::new(code, self.iterations, &rng)
                });
                Done::JoinHashed(request, hash)
            }
            Job::VerifyForJoin {
                request,
                hash,
                generation,
            } => {
                let matches = request
                    .passcode
                    .as_ref()
                    .is_some_and(|code| hash.verify(code));
                Done::JoinVerified {
                    request,
                    generation,
                    matches,
                }
            }
            Job::HashForLock { room, passcode } => Done::LockHashed {
                room,
                hash: PasscodeHash::new(&passcode, self.iterations, &rng),
            },
        })
    }
}

/// A `join` on its way through the hub (possibly across key stretching).
#[derive(Debug)]
struct JoinRequest {
    room: RoomName,
    name: DisplayName,
    resume: Option<ResumeToken>,
    /// Absent or empty: none given.
    passcode: Option<Passcode>,
    proof: Proof,
    round: u8,
}

/// What key stretching established for a [`JoinRequest`].
#[derive(Debug)]
enum Proof {
    None,
    /// Its passcode, hashed: the lock of the room it creates.
    Hashed(Arc<PasscodeHash>),
    /// Its passcode matches the lock of this generation.
    Verified {
        generation: u64,
    },
}

type ConnId = u64;

/// A seat id and its resume token, drawn and signed before the hub's lock is taken (a random
/// draw and an HMAC are the costly part of a join).
struct Ticket {
    id: PeerId,
    token: ResumeToken,
}

pub struct Hub {
    config: HubConfig,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    next_conn: AtomicU64,
}

struct Inner {
    registry: Registry,
    conns: HashMap<ConnId, Conn>,
    /// Seat → its connection. Every seat in the registry is either here or in `held`.
    attached: HashMap<PeerId, ConnId>,
    held: HashMap<PeerId, Queue>,
    ip_attempts: IpAttempts,
    max_queue_bytes: usize,
    metrics: Arc<Metrics>,
    /// Largest queue seen, in bytes and in messages (the bytes are also a metric).
    high_water: (usize, usize),
    /// Connections and held seats that went over their bound during the current operation;
    /// dealt with before the lock is released (see [`Inner::settle`]).
    overflowed: Vec<Overflow>,
    /// Tasks to wake once the lock is released (see [`Locked`]).
    wakes: Vec<Waker>,
}

enum Overflow {
    Conn(ConnId),
    Held(PeerId),
}

struct Conn {
    queue: Queue,
    waker: Option<Waker>,
    seat: Option<PeerId>,
    closed: Option<Closed>,
    ip: Option<IpAddr>,
    /// The `Host` the browser reached us by, kept only when the ICE servers name it (TURN on
    /// every interface without `--turn-public-ip`).
    host: Option<Box<str>>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Queue {
    fn push(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some(frame)
    }

    /// The signals in it (what a held seat keeps).
    fn into_signals(self) -> Queue {
        let mut out = Queue::default();
        for frame in self.frames.into_iter().filter(Frame::is_signal) {
            out.push(frame);
        }
        out
    }
}

/// The hub's lock. Dropping it settles overflows, releases the mutex, then wakes the tasks that
/// got messages, so that a woken task never finds the lock still held.
struct Locked<'a> {
    guard: Option<MutexGuard<'a, Inner>>,
}

impl Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        // Only `drop` takes the guard out.
        match &self.guard {
            Some(guard) => guard,
            None => unreachable!("the hub's lock is held until dropped"),
        }
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        match &mut self.guard {
            Some(guard) => guard,
            None => unreachable!("the hub's lock is held until dropped"),
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.settle();
            let wakes = std::mem::take(&mut guard.wakes);
            drop(guard);
            for waker in wakes {
                waker.wake();
            }
        }
    }
}

impl Hub {
    /// A hub with its own [`Metrics`] and the system clock.
    pub fn new(config: HubConfig) -> Arc<Self> {
        Self::with_clock(
            config,
            Arc::new(Metrics::new()),
            Arc::new(SystemClock::new()),
        )
    }

    /// A hub that counts in `metrics` and reads time from `clock`.
    pub fn with_clock(
        config: HubConfig,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let max_queue_bytes = config.max_queue_bytes.max(MIN_QUEUE_BYTES);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                registry: Registry::new(
                    config.room_capacity,
                    config.max_rooms,
                    config.attempts_per_room,
                ),
                conns: HashMap::new(),
                attached: HashMap::new(),
                held: HashMap::new(),
                ip_attempts: IpAttempts::new(config.attempts_per_ip),
                max_queue_bytes,
                metrics: Arc::clone(&metrics),
                high_water: (0, 0),
                overflowed: Vec::new(),
                wakes: Vec::new(),
            }),
            config,
            metrics,
            clock,
            rng: SystemRandom::new(),
            next_conn: AtomicU64::new(1),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Registers a new connection from `ip` (used for the per-address passcode attempt limit).
    pub fn connect(self: &Arc<Self>, ip: Option<IpAddr>) -> Session {
        self.connect_from(ip, None)
    }

    /// [`Hub::connect`] for a browser that reached the server as `host` (its `Host` header, an
    /// opaque string), which the ICE servers in its `joined` may name.
    pub fn connect_from(self: &Arc<Self>, ip: Option<IpAddr>, host: Option<&str>) -> Session {
        let host = host
            .filter(|h| h.len() <= MAX_HOST_BYTES && self.config.ice_servers.needs_host())
            .map(Box::from);
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.lock().conns.insert(
            conn,
            Conn {
                queue: Queue::default(),
                waker: None,
                seat: None,
                closed: None,
                ip,
                host,
            },
        );
        Session {
            conn,
            hub: Arc::clone(self),
            ended: false,
        }
    }

    /// Releases every held seat whose grace period has ended (the room hears `peerLeft`).
    /// Returns how many. Call it when a grace period may have ended; it is also called on every
    /// join.
    pub fn expire(&self) -> usize {
        let now = self.clock.now();
        self.lock().expire(now)
    }

    pub fn room_count(&self) -> usize {
        self.lock().registry.room_count()
    }

    /// Open connections (in a room or not).
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Seats, held ones included.
    pub fn seat_count(&self) -> usize {
        self.lock().registry.peer_count()
    }

    /// Seats kept for a dropped connection.
    pub fn held_count(&self) -> usize {
        self.lock().held.len()
    }

    /// The largest any queue has been: bytes, messages.
    pub fn queue_high_water(&self) -> (usize, usize) {
        self.lock().high_water
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

    /// A random id no seat has.
    fn fresh_id(&self, inner: &Inner) -> Result<PeerId, RandomError> {
        for _ in 0..8 {
            let id = self.draw_id()?;
            if inner.registry.room_of(id).is_none() {
                return Ok(id);
            }
        }
        // Eight collisions in 2^53 ids: the generator is broken.
        Err(RandomError)
    }

    /// A random id (not checked against the seats).
    fn draw_id(&self) -> Result<PeerId, RandomError> {
        let mut bits = [0u8; 8];
        self.rng.fill(&mut bits).map_err(|_| RandomError)?;
        Ok(PeerId::from_random(u64::from_le_bytes(bits)))
    }

    /// `id`'s seat in `room`, with its resume token.
    fn ticket(&self, id: PeerId, room: &RoomName, now: Now) -> Option<Ticket> {
        let token = self.config.resume.mint(id, room, now.unix_secs()).ok()?;
        Some(Ticket { id, token })
    }

    /// The ICE servers handed to `id` in its `joined` (every `joined`, fresh or resumed, comes
    /// through here: the place to mint per-participant TURN credentials).
    /// Minting is one HMAC per TURN entry: microseconds, fine under the lock.
    fn ice_servers_for(&self, id: PeerId, host: Option<&str>) -> Vec<IceServer> {
        self.config
            .ice_servers
            .for_peer(id, host, std::time::SystemTime::now())
    }

    fn capacity(&self) -> u32 {
        u32::try_from(self.config.room_capacity.max(1)).unwrap_or(u32::MAX)
    }
}

impl Inner {
    /// Queues `frame` for whoever holds seat `peer`: its connection, or its held buffer (signals
    /// only). Nothing if there is no such seat.
    fn send_to(&mut self, peer: PeerId, frame: &Frame) {
        if let Some(&conn) = self.attached.get(&peer) {
            self.push_conn(conn, frame.clone());
        } else if frame.is_signal() {
            let bound = self.max_queue_bytes / 2;
            if let Some(held) = self.held.get_mut(&peer) {
                if held.bytes + frame.len() > bound {
                    self.overflowed.push(Overflow::Held(peer));
                } else {
                    held.push(frame.clone());
                }
            }
        }
    }

    /// Queues `frame` on a connection. A connection whose queue would go over the bound is not
    /// reading: it is closed and its seat released (by [`Inner::settle`]).
    fn push_conn(&mut self, conn: ConnId, frame: Frame) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closed.is_some() {
            return;
        }
        if c.queue.bytes + frame.len() > self.max_queue_bytes {
            self.overflowed.push(Overflow::Conn(conn));
            return;
        }
        c.queue.push(frame);
        let (bytes, messages) = (c.queue.bytes, c.queue.frames.len());
        if let Some(waker) = c.waker.take() {
            self.wakes.push(waker);
        }
        if bytes > self.high_water.0 {
            self.high_water.0 = bytes;
            self.metrics
                .queue_high_water_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.high_water.1 = self.high_water.1.max(messages);
    }

    fn reply(&mut self, conn: ConnId, message: &ServerMessage) {
        self.push_conn(conn, Frame::new(message));
    }

    /// Queues an error reply and returns the refusal.
    fn refuse(&mut self, conn: ConnId, code: ErrorCode, text: impl Into<String>) -> Handled {
        self.reply(conn, &ServerMessage::error(code, text));
        Handled::Refused(code)
    }

    /// Releases seat `peer`: out of the registry (the room hears `peerLeft`), and out of
    /// `attached` / `held`. The connection it was attached to, if any, stays open, seatless.
    fn release(&mut self, peer: PeerId) {
        if let Some(conn) = self.attached.remove(&peer) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.seat = None;
            }
        }
        self.held.remove(&peer);
        if let Some(departure) = self.registry.leave(peer) {
            tracing::info!(%peer, room = %departure.room, "left room");
            let left = Frame::new(&ServerMessage::PeerLeft { peer });
            for member in departure.remaining {
                self.send_to(member, &left);
            }
        }
    }

    /// Deals with everything that overflowed. Releasing a seat notifies its room, which may
    /// overflow another queue: keep going until nothing else overflows. Each connection is
    /// closed and each seat released at most once, so this ends.
    fn settle(&mut self) {
        while let Some(overflow) = self.overflowed.pop() {
            match overflow {
                Overflow::Conn(conn) => {
                    let Some(c) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    if c.closed.is_some() {
                        continue;
                    }
                    c.closed = Some(Closed::SlowReader);
                    c.queue = Queue::default();
                    let seat = c.seat;
                    if let Some(waker) = c.waker.take() {
                        self.wakes.push(waker);
                    }
                    tracing::warn!(peer = ?seat, "outbound queue over its byte bound; disconnecting slow reader");
                    self.metrics.slow_reader(SlowReason::QueueFull);
                    if let Some(seat) = seat {
                        self.release(seat);
                    }
                }
                Overflow::Held(peer) => {
                    if self.held.contains_key(&peer) {
                        tracing::info!(%peer, "messages kept for a reconnecting seat overflowed; releasing it");
                        self.metrics.seat_expired(Expiry::Overflow);
                        self.release(peer);
                    }
                }
            }
        }
        self.count();
    }

    fn count(&self) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics
            .rooms_open
            .set(gauge(self.registry.room_count()));
        self.metrics.seats_reconnecting.set(gauge(self.held.len()));
    }

    fn expire(&mut self, now: Now) -> usize {
        let due = self.registry.due(now.mono_ms);
        for &peer in &due {
            tracing::info!(%peer, "did not come back within the grace period");
            self.metrics.seat_expired(Expiry::Grace);
            self.release(peer);
        }
        due.len()
    }

    /// The members of `peer`'s room other than `peer`, as the protocol shows them.
    fn others(&self, room: &RoomName, peer: PeerId) -> Vec<Member> {
        self.registry
            .members(room)
            .iter()
            .filter(|s| s.id != peer)
            .map(Seat::member)
            .collect()
    }

    fn seat_of(&self, conn: ConnId) -> Option<PeerId> {
        self.conns.get(&conn).and_then(|c| c.seat)
    }
}

/// One connection's view of the hub: every request it makes acts for its own seat, so a client
/// can never act as, or appear to be, someone else. Dropping it is [`Session::end`] with
/// [`Ending::Dropped`].
pub struct Session {
    conn: ConnId,
    hub: Arc<Hub>,
    ended: bool,
}

impl Session {
    /// This connection's seat id, once it has joined.
    pub fn seat(&self) -> Option<PeerId> {
        self.hub.lock().seat_of(self.conn)
    }

    /// The next message for this connection, or why the hub closed it. Waits without holding
    /// the lock.
    pub async fn recv(&self) -> Result<Frame, Closed> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Frame, Closed>> {
        let mut inner = self.hub.lock();
        let Some(conn) = inner.conns.get_mut(&self.conn) else {
            return Poll::Ready(Err(Closed::SlowReader));
        };
        if let Some(closed) = conn.closed {
            return Poll::Ready(Err(closed));
        }
        if let Some(frame) = conn.queue.pop() {
            return Poll::Ready(Ok(frame));
        }
        match &mut conn.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message if one is queued now (`None`: empty, or closed by the hub).
    pub fn try_recv(&self) -> Option<Frame> {
        let mut inner = self.hub.lock();
        let conn = inner.conns.get_mut(&self.conn)?;
        if conn.closed.is_some() {
            return None;
        }
        conn.queue.pop()
    }

    /// Why the hub closed this connection, if it did.
    pub fn closed(&self) -> Option<Closed> {
        self.hub.lock().conns.get(&self.conn).and_then(|c| c.closed)
    }

    /// Tells this connection's own client that something it sent was refused.
    pub fn reply_error(&self, code: ErrorCode, message: impl Into<String>) {
        let message = ServerMessage::error(code, message);
        self.hub.lock().reply(self.conn, &message);
    }

    /// Handles one decoded request. Replies (including errors) go to this connection's queue.
    pub fn handle(&self, message: ClientMessage) -> Handled {
        if self.closed().is_some() {
            // Closed by the hub; the transport is about to close the socket.
            return Handled::Done;
        }
        match message {
            ClientMessage::Join {
                room,
                version,
                name,
                resume,
                passcode,
            } => {
                if version != PROTOCOL_VERSION {
                    let text = format!(
                        "This page is out of date (protocol {version}, server speaks {PROTOCOL_VERSION}). Reload the page."
                    );
                    let mut inner = self.hub.lock();
                    return inner.refuse(self.conn, ErrorCode::UnsupportedVersion, text);
                }
                self.join(JoinRequest {
                    room,
                    name,
                    resume,
                    passcode: passcode.filter(|p| !p.is_empty()),
                    proof: Proof::None,
                    round: 0,
                })
            }
            ClientMessage::Leave => {
                let mut inner = self.hub.lock();
                if let Some(seat) = inner.seat_of(self.conn) {
                    inner.release(seat);
                }
                Handled::Done
            }
            ClientMessage::Description {
                to,
                connection,
                description,
            } => self.relay(to, |from| ServerMessage::Description {
                from,
                connection,
                description,
            }),
            ClientMessage::IceCandidate {
                to,
                connection,
                candidate,
            } => self.relay(to, |from| ServerMessage::IceCandidate {
                from,
                connection,
                candidate,
            }),
            ClientMessage::MediaState(state) => {
                let mut inner = self.hub.lock();
                let Some(seat) = inner.seat_of(self.conn) else {
                    let text = "Join a room before sending your microphone and camera state.";
                    return inner.refuse(self.conn, ErrorCode::NotInRoom, text);
                };
                let others = inner
                    .registry
                    .set_media(seat, state.clone())
                    .unwrap_or_default();
                let frame = Frame::new(&ServerMessage::PeerMediaState { peer: seat, state });
                for member in others {
                    inner.metrics.relayed(frame.kind());
                    inner.send_to(member, &frame);
                }
                Handled::Done
            }
            ClientMessage::Chat { text } => self.chat(text),
            ClientMessage::Lock { passcode } => self.lock_room(passcode),
            ClientMessage::Unlock => {
                let mut inner = self.hub.lock();
                let Some((seat, room)) = self.seat_and_room(&inner) else {
                    return inner.refuse(self.conn, ErrorCode::NotInRoom, "Join a room first.");
                };
                let open = matches!(inner.registry.lock(&room), Some((RoomLock::Open, _)));
                if !open {
                    inner.registry.set_lock(&room, RoomLock::Open);
                    self.lock_changed(&mut inner, &room, seat);
                }
                Handled::Done
            }
        }
    }

    /// Goes on with a request after its key stretching (see [`Handled::Stretch`]).
    pub fn finish(&self, stretched: Stretched) -> Handled {
        if self.closed().is_some() {
            return Handled::Done;
        }
        match stretched.0 {
            Done::JoinHashed(mut request, Ok(hash)) => {
                request.proof = Proof::Hashed(Arc::new(hash));
                request.round += 1;
                self.join(request)
            }
            Done::JoinHashed(_, Err(RandomError)) | Done::LockHashed { hash: Err(_), .. } => {
                let mut inner = self.hub.lock();
                let text = "The server cannot set a passcode right now. Try again.";
                inner.refuse(self.conn, ErrorCode::ServerFull, text)
            }
            Done::JoinVerified {
                mut request,
                generation,
                matches,
            } => {
                if !matches {
                    self.hub.metrics.passcode_failures.inc();
                    tracing::info!(room = %request.room, "wrong passcode");
                    let mut inner = self.hub.lock();
                    let text = format!(
                        "That is not the passcode of room \"{}\". Check it with whoever invited you.",
                        request.room
                    );
                    return inner.refuse(self.conn, ErrorCode::WrongPasscode, text);
                }
                request.proof = Proof::Verified { generation };
                request.round += 1;
                self.join(request)
            }
            Done::LockHashed {
                room,
                hash: Ok(hash),
            } => {
                let mut inner = self.hub.lock();
                // Still in that room? (It may have left while the hash was computed.)
                if let Some((seat, current)) = self.seat_and_room(&inner) {
                    if current == room {
                        inner
                            .registry
                            .set_lock(&room, RoomLock::Passcode(Arc::new(hash)));
                        self.lock_changed(&mut inner, &room, seat);
                    }
                }
                Handled::Done
            }
        }
    }

    /// [`Session::handle`], running any key stretching on this thread. For tests, fuzzing and
    /// tools; the server runs stretching on a blocking thread instead.
    pub fn handle_inline(&self, message: ClientMessage) -> Result<(), ErrorCode> {
        let mut handled = self.handle(message);
        loop {
            match handled {
                Handled::Done => return Ok(()),
                Handled::Refused(code) => return Err(code),
                Handled::Stretch(stretch) => handled = self.finish(stretch.run()),
            }
        }
    }

    /// Ends this connection: its seat is kept for the grace period ([`Ending::Dropped`]) or
    /// released ([`Ending::Expelled`]). Returns the grace period when a seat is now held, so
    /// that the caller can call [`Hub::expire`] once it has passed.
    /// Later calls (and dropping the session) do nothing.
    pub fn end(&mut self, ending: Ending) -> Option<Duration> {
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        self.end_inner(ending)
    }

    fn end_inner(&mut self, ending: Ending) -> Option<Duration> {
        let grace = self.hub.config.resume_grace;
        let now = self.hub.clock.now();
        let mut inner = self.hub.lock();
        let conn = inner.conns.remove(&self.conn)?;
        let seat = conn.seat?;
        inner.attached.remove(&seat);
        let kept = conn.queue.into_signals();
        let fits = kept.bytes <= inner.max_queue_bytes / 2;
        if ending == Ending::Expelled || grace.is_zero() || !fits {
            inner.release(seat);
            return None;
        }
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let others = inner
            .registry
            .hold(seat, now.mono_ms.saturating_add(grace_ms))
            .unwrap_or_default();
        inner.held.insert(seat, kept);
        tracing::info!(peer = %seat, "connection dropped; seat kept for the grace period");
        let reconnecting = Frame::new(&ServerMessage::PeerReconnecting { peer: seat });
        for member in others {
            inner.send_to(member, &reconnecting);
        }
        Some(grace)
    }

    fn seat_and_room(&self, inner: &Inner) -> Option<(PeerId, RoomName)> {
        let seat = inner.seat_of(self.conn)?;
        let room = inner.registry.room_of(seat)?.clone();
        Some((seat, room))
    }

    fn relay(&self, to: PeerId, message: impl FnOnce(PeerId) -> ServerMessage) -> Handled {
        let mut inner = self.hub.lock();
        let Some(from) = inner.seat_of(self.conn) else {
            let text = "Join a room before sending signaling messages.";
            return inner.refuse(self.conn, ErrorCode::NotInRoom, text);
        };
        if to == from || !inner.registry.same_room(from, to) {
            let text = format!("Peer {to} is not in your room.");
            return inner.refuse(self.conn, ErrorCode::UnknownPeer, text);
        }
        let frame = Frame::new(&message(from));
        inner.metrics.relayed(frame.kind());
        inner.send_to(to, &frame);
        Handled::Done
    }

    fn chat(&self, text: ChatText) -> Handled {
        let now = self.hub.clock.now();
        let mut inner = self.hub.lock();
        let Some((seat, room)) = self.seat_and_room(&inner) else {
            let text = "Join a room before sending chat messages.";
            return inner.refuse(self.conn, ErrorCode::NotInRoom, text);
        };
        let Some(name) = inner.registry.seat(seat).map(|s| s.name.clone()) else {
            return Handled::Done;
        };
        let entry = ChatEntry {
            from: seat,
            name,
            text,
            at: now.unix_ms,
        };
        let frame = Frame::new(&ServerMessage::Chat(entry.clone()));
        inner.registry.push_chat(&room, entry);
        inner.metrics.chat_messages.inc();
        let members: Vec<PeerId> = inner.registry.members(&room).iter().map(|s| s.id).collect();
        for member in members {
            inner.metrics.relayed(frame.kind());
            inner.send_to(member, &frame);
        }
        Handled::Done
    }

    fn lock_room(&self, passcode: Passcode) -> Handled {
        let now = self.hub.clock.now();
        let mut inner = self.hub.lock();
        let Some((seat, room)) = self.seat_and_room(&inner) else {
            return inner.refuse(self.conn, ErrorCode::NotInRoom, "Join a room first.");
        };
        if passcode.is_empty() {
            inner.registry.set_lock(&room, RoomLock::Closed);
            self.lock_changed(&mut inner, &room, seat);
            return Handled::Done;
        }
        if let Some(refused) = self.take_attempt(&mut inner, &room, now) {
            return refused;
        }
        Handled::Stretch(Stretch {
            job: Job::HashForLock { room, passcode },
            iterations: self.hub.config.passcode_iterations,
        })
    }

    fn lock_changed(&self, inner: &mut Inner, room: &RoomName, by: PeerId) {
        let Some((lock, _)) = inner.registry.lock(room) else {
            return;
        };
        inner.metrics.lock_changes.inc();
        tracing::info!(%room, %by, lock = ?lock.state(), "room lock changed");
        let frame = Frame::new(&ServerMessage::LockChanged {
            lock: lock.state(),
            by,
        });
        let members: Vec<PeerId> = inner.registry.members(room).iter().map(|s| s.id).collect();
        for member in members {
            inner.send_to(member, &frame);
        }
    }

    /// Spends one passcode attempt of this connection's address and of `room`; the refusal if
    /// either has none left.
    fn take_attempt(&self, inner: &mut Inner, room: &RoomName, now: Now) -> Option<Handled> {
        let ip = inner.conns.get(&self.conn).and_then(|c| c.ip);
        let by_ip = inner.ip_attempts.try_take(ip, now.mono_ms);
        if by_ip && inner.registry.take_attempt(room, now.mono_ms) {
            return None;
        }
        tracing::info!(%room, ?ip, "too many passcode attempts");
        let text = "Too many passcode attempts. Wait a minute, then try again.";
        Some(inner.refuse(self.conn, ErrorCode::TooManyAttempts, text))
    }

    fn join(&self, request: JoinRequest) -> Handled {
        let now = self.hub.clock.now();
        // The token is checked before the lock is taken: it needs no state.
        let resumed = match &request.resume {
            None => None,
            Some(token) => {
                match self
                    .hub
                    .config
                    .resume
                    .verify(token, &request.room, now.unix_secs())
                {
                    Ok(id) => Some(id),
                    Err(err) => {
                        self.hub.metrics.resume(ResumeOutcome::Refused);
                        tracing::info!(room = %request.room, %err, "resume refused");
                        let mut inner = self.hub.lock();
                        return inner.refuse(
                            self.conn,
                            ErrorCode::ResumeRefused,
                            resume_refusal(err),
                        );
                    }
                }
            }
        };
        let ticket = match resumed {
            Some(id) => self.hub.ticket(id, &request.room, now),
            None => self
                .hub
                .draw_id()
                .ok()
                .and_then(|id| self.hub.ticket(id, &request.room, now)),
        };
        let mut inner = self.hub.lock();
        if let Some(seat) = inner.seat_of(self.conn) {
            let room = inner
                .registry
                .room_of(seat)
                .map(ToString::to_string)
                .unwrap_or_default();
            let text = format!("You are already in room \"{room}\". Leave it first.");
            return inner.refuse(self.conn, ErrorCode::AlreadyJoined, text);
        }
        let Some(ticket) = ticket else {
            return self.cannot_seat(&mut inner);
        };
        inner.expire(now);
        match resumed {
            Some(_) => self.resume(&mut inner, ticket, request),
            None => self.newcomer(&mut inner, ticket, request, now),
        }
    }

    fn newcomer(
        &self,
        inner: &mut Inner,
        ticket: Ticket,
        request: JoinRequest,
        now: Now,
    ) -> Handled {
        let room = request.room.clone();
        let lock_if_new = match (inner.registry.lock(&room), &request.proof) {
            // A room this join creates: locked if a passcode came with it.
            (None, Proof::Hashed(hash)) => RoomLock::Passcode(Arc::clone(hash)),
            (None, _) if request.passcode.is_some() => {
                if request.round >= MAX_ROUNDS {
                    return self.lock_keeps_changing(inner);
                }
                if let Some(refused) = self.take_attempt(inner, &room, now) {
                    return refused;
                }
                return Handled::Stretch(Stretch {
                    job: Job::HashForJoin(request),
                    iterations: self.hub.config.passcode_iterations,
                });
            }
            (None, _) | (Some((RoomLock::Open, _)), _) => RoomLock::Open,
            (Some((RoomLock::Closed, _)), _) => {
                let text = format!(
                    "Room \"{room}\" is closed to newcomers. Ask someone in it to open it."
                );
                return inner.refuse(self.conn, ErrorCode::RoomClosed, text);
            }
            (Some((RoomLock::Passcode(hash), generation)), proof) => {
                if inner.registry.members(&room).len() >= inner.registry.capacity() {
                    return self.room_full(inner, &room);
                }
                let verified =
                    matches!(proof, Proof::Verified { generation: g } if *g == generation);
                if !verified {
                    if request.passcode.is_none() {
                        let text =
                            format!("Room \"{room}\" is locked. Enter its passcode to join.");
                        return inner.refuse(self.conn, ErrorCode::PasscodeRequired, text);
                    }
                    if request.round >= MAX_ROUNDS {
                        return self.lock_keeps_changing(inner);
                    }
                    if let Some(refused) = self.take_attempt(inner, &room, now) {
                        return refused;
                    }
                    return Handled::Stretch(Stretch {
                        job: Job::VerifyForJoin {
                            request,
                            hash,
                            generation,
                        },
                        iterations: self.hub.config.passcode_iterations,
                    });
                }
                RoomLock::Open
            }
        };
        let admission = match request.proof {
            Proof::Verified { generation } => Admission::Passcode { generation },
            _ => Admission::Newcomer,
        };
        // The id drawn outside the lock is almost surely free; if not, draw again here.
        let ticket = if inner.registry.room_of(ticket.id).is_none() {
            Some(ticket)
        } else {
            self.hub
                .fresh_id(inner)
                .ok()
                .and_then(|id| self.hub.ticket(id, &request.room, now))
        };
        let Some(ticket) = ticket else {
            return self.cannot_seat(inner);
        };
        self.take_seat(
            inner,
            ticket,
            request.room,
            request.name,
            admission,
            lock_if_new,
        )
    }

    /// Seats this connection as `ticket.id` in `room` (a newcomer, or a known person whose seat
    /// the server forgot) and tells everyone.
    fn take_seat(
        &self,
        inner: &mut Inner,
        ticket: Ticket,
        room: RoomName,
        name: DisplayName,
        admission: Admission,
        lock_if_new: RoomLock,
    ) -> Handled {
        let Ticket { id, token } = ticket;
        let seat = Seat::new(id, name);
        let member = seat.member();
        match inner.registry.join(&room, seat, admission, lock_if_new) {
            Ok(entered) => {
                inner.attached.insert(id, self.conn);
                if let Some(conn) = inner.conns.get_mut(&self.conn) {
                    conn.seat = Some(id);
                }
                tracing::info!(peer = %id, %room, others = entered.others.len(), "joined room");
                let others: Vec<PeerId> = entered.others.iter().map(|m| m.id).collect();
                let joined = ServerMessage::Joined {
                    room,
                    you: id,
                    peers: entered.others,
                    capacity: self.hub.capacity(),
                    ice_servers: self.hub.ice_servers_for(
                        id,
                        inner.conns.get(&self.conn).and_then(|c| c.host.as_deref()),
                    ),
                    resume_token: token,
                    resumed: false,
                    lock: entered.lock,
                    chat: entered.chat,
                };
                // The newcomer hears `joined` before anyone can react to `peerJoined`.
                inner.reply(self.conn, &joined);
                let frame = Frame::new(&ServerMessage::PeerJoined { peer: member });
                for other in others {
                    inner.send_to(other, &frame);
                }
                Handled::Done
            }
            Err(err) => {
                tracing::info!(%room, %err, "join refused");
                match err {
                    JoinError::RoomFull { .. } => self.room_full(inner, &room),
                    JoinError::TooManyRooms { .. } => {
                        let text =
                            "The server has no room for another call right now. Try again later.";
                        inner.refuse(self.conn, ErrorCode::ServerFull, text)
                    }
                    JoinError::Locked { lock, .. } => {
                        let (code, text) = match lock {
                            shared::LockState::Closed => (
                                ErrorCode::RoomClosed,
                                format!("Room \"{room}\" is closed to newcomers."),
                            ),
                            _ => (
                                ErrorCode::PasscodeRequired,
                                format!("Room \"{room}\" is locked. Enter its passcode to join."),
                            ),
                        };
                        inner.refuse(self.conn, code, text)
                    }
                    JoinError::SeatTaken(_) => {
                        let text = "That seat is taken. Join afresh.";
                        inner.refuse(self.conn, ErrorCode::ResumeRefused, text)
                    }
                }
            }
        }
    }

    /// A join with a valid token for seat `ticket.id` in `request.room`.
    fn resume(&self, inner: &mut Inner, ticket: Ticket, request: JoinRequest) -> Handled {
        let room = request.room;
        let id = ticket.id;
        match inner.registry.room_of(id) {
            None => {
                // The server does not know this seat (it restarted, or the grace passed): seat
                // the person again under the same id, past any lock, if there is space.
                let seated = self.take_seat(
                    inner,
                    ticket,
                    room,
                    request.name,
                    Admission::Member,
                    RoomLock::Open,
                );
                if matches!(seated, Handled::Done) {
                    self.hub.metrics.resume(ResumeOutcome::Restored);
                }
                seated
            }
            Some(current) if *current != room => {
                // Only if a random id collided with a live seat elsewhere.
                let text = "That seat is taken. Join afresh.";
                inner.refuse(self.conn, ErrorCode::ResumeRefused, text)
            }
            Some(_) => {
                let token = ticket.token;
                let (kept, outcome) = match inner.held.remove(&id) {
                    Some(kept) => {
                        let others = inner.registry.reconnect(id).unwrap_or_default();
                        let back = Frame::new(&ServerMessage::PeerReconnected { peer: id });
                        for other in others {
                            inner.send_to(other, &back);
                        }
                        (kept, ResumeOutcome::Resumed)
                    }
                    None => {
                        // Still attached to a connection the server believes open: take it
                        // over, with whatever was queued for it.
                        let mut kept = Queue::default();
                        if let Some(old) = inner.attached.remove(&id) {
                            if let Some(c) = inner.conns.get_mut(&old) {
                                c.seat = None;
                                c.closed = Some(Closed::Replaced);
                                kept = std::mem::take(&mut c.queue).into_signals();
                                if let Some(waker) = c.waker.take() {
                                    inner.wakes.push(waker);
                                }
                            }
                        }
                        (kept, ResumeOutcome::TakenOver)
                    }
                };
                inner.attached.insert(id, self.conn);
                if let Some(conn) = inner.conns.get_mut(&self.conn) {
                    conn.seat = Some(id);
                }
                self.hub.metrics.resume(outcome);
                tracing::info!(peer = %id, %room, ?outcome, kept = kept.frames.len(), "seat resumed");
                let joined = ServerMessage::Joined {
                    room: room.clone(),
                    you: id,
                    peers: inner.others(&room, id),
                    capacity: self.hub.capacity(),
                    ice_servers: self.hub.ice_servers_for(
                        id,
                        inner.conns.get(&self.conn).and_then(|c| c.host.as_deref()),
                    ),
                    resume_token: token,
                    resumed: true,
                    lock: inner
                        .registry
                        .lock(&room)
                        .map(|(lock, _)| lock.state())
                        .unwrap_or_default(),
                    chat: inner.registry.chat(&room),
                };
                inner.reply(self.conn, &joined);
                for frame in kept.frames {
                    inner.push_conn(self.conn, frame);
                }
                Handled::Done
            }
        }
    }

    fn room_full(&self, inner: &mut Inner, room: &RoomName) -> Handled {
        let capacity = inner.registry.capacity();
        let text = format!(
            "Room \"{room}\" is full: it holds {capacity} people. Try another room name, or come back later."
        );
        inner.refuse(self.conn, ErrorCode::RoomFull, text)
    }

    fn cannot_seat(&self, inner: &mut Inner) -> Handled {
        let text = "The server cannot seat you right now. Try again in a moment.";
        inner.refuse(self.conn, ErrorCode::ServerFull, text)
    }

    fn lock_keeps_changing(&self, inner: &mut Inner) -> Handled {
        let text = "The room's lock keeps changing. Wait a moment, then try again.";
        inner.refuse(self.conn, ErrorCode::TooManyAttempts, text)
    }
}

fn resume_refusal(err: ResumeError) -> String {
    format!("Your previous place in the call cannot be taken back ({err}). Join afresh.")
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.ended {
            self.end_inner(Ending::Dropped);
        }
    }
}

#[cfg(test)]
mod tests;

/// Longest `Host` kept for [`Hub::connect_from`].
const MAX_HOST_BYTES: usize = 260;
