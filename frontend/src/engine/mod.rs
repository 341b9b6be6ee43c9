//! The call core: everything a call decides, with no browser inside. Events go in (server
//! messages, what each peer connection reports, what we send, the person's commands, timers,
//! online/offline), [`Effect`]s come out (send a message, open the websocket, create or close a
//! peer connection, run an operation on one, set a timer), and [`View`] says what the screen
//! shows. The browser adapters (`signaling`, `peer`, `media`) execute the effects and turn
//! browser events back into [`Event`]s; `call.rs` is the loop that connects them. Because it
//! never waits for anything, one slow peer (a long `setRemoteDescription`, a permission prompt)
//! stalls no other: every peer's operations run in that peer's own queue in the adapter.
//!
//! It compiles and is tested natively, like the server's hub.

pub mod negotiation;
pub mod quality;
pub mod uplink;

use std::collections::{BTreeMap, VecDeque};

use shared::{
    ChatEntry, ChatText, ClientMessage, ConnectionId, DisplayName, ErrorCode, IceCandidate,
    IceServer, LockState, MediaState, Member, Passcode, PeerId, ResumeToken, RoomName,
    ServerMessage, SessionDescription, PROTOCOL_VERSION,
};

use negotiation::{Negotiation, OfferOutcome, Operation, Step};
use quality::{Adjust, QualityView, Route, StatsSample, Tracker};
use uplink::VideoLimit;

/// Milliseconds on the driver's monotonic clock (`performance.now()`).
pub type Millis = f64;

/// A local track, as the media adapter numbers them (the core never holds the track itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u32);

/// A remote stream, as the peer adapter numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey(pub u32);

/// Tunable times, in milliseconds.
#[derive(Clone, Debug)]
pub struct Timing {
    pub reconnect_base: Millis,
    pub reconnect_cap: Millis,
    /// ICE `disconnected` for this long → restart ICE.
    pub disconnected_restart: Millis,
    /// Restart ICE again if the last restart has not connected after this long, for the first
    /// `ice_fast_retries` restarts: a restart is one offer and answer through the server, and
    /// only a restart gathers the addresses of a network that came back (or changed), so the
    /// call recovers within a few seconds of the network's return.
    pub ice_retry: Millis,
    pub ice_fast_retries: u32,
    /// Then (a long outage) this long between restarts.
    pub ice_slow_retry: Millis,
    /// A connection that never connected in this long is reported on its tile.
    pub connect_deadline: Millis,
    /// No answer to our offer in this long → offer again.
    pub answer_watchdog: Millis,
    /// A member waits this long for a newcomer's offer before offering itself.
    pub await_offer: Millis,
    /// A peer missing after we came back is dropped after this long (the server's grace).
    pub missing_grace: Millis,
    /// Between `getStats` rounds.
    pub stats_interval: Millis,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            reconnect_base: 500.0,
            reconnect_cap: 30_000.0,
            disconnected_restart: 3_000.0,
            ice_retry: 3_000.0,
            ice_fast_retries: 40,
            ice_slow_retry: 10_000.0,
            connect_deadline: 15_000.0,
            answer_watchdog: 10_000.0,
            await_offer: 8_000.0,
            missing_grace: 30_000.0,
            stats_interval: 2_000.0,
        }
    }
}

/// The screen we share: its track and the id of the stream it is announced in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    pub track: TrackId,
    pub stream_id: String,
}

/// What we have to send, from the media adapter. `can_send_*`: whether that kind can be sent at
/// all (a device exists and access was granted); a camera switched off by choice can still be
/// sent (its transceiver stays `sendrecv`, so turning it back on needs no renegotiation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalMedia {
    pub mic: Option<TrackId>,
    pub camera: Option<TrackId>,
    pub screen: Option<Screen>,
    pub can_send_audio: bool,
    pub can_send_video: bool,
    pub muted: bool,
    pub camera_off: bool,
}

impl LocalMedia {
    fn state(&self) -> MediaState {
        MediaState {
            muted: self.muted || self.mic.is_none(),
            camera_off: self.camera_off || self.camera.is_none(),
            screen: self.screen.as_ref().map(|s| s.stream_id.clone()),
        }
    }
}

/// What one peer connection should send: the tracks, the directions, the video cap.
#[derive(Clone, Debug, PartialEq)]
pub struct Sending {
    pub mic: Option<TrackId>,
    pub camera: Option<TrackId>,
    pub screen: Option<Screen>,
    pub send_audio: bool,
    pub send_video: bool,
    pub video_limit: VideoLimit,
}

/// Who makes the first offer on a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Adds its transceivers and makes the first offer at once.
    Offerer,
    /// Waits for the other side's offer and answers it with what it sends.
    Answerer,
}

/// One operation on one peer connection, run in that connection's queue in order.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerOp {
    MakeOffer,
    AcceptOffer(SessionDescription),
    ApplyAnswer(SessionDescription),
    AddCandidate(IceCandidate),
    RestartIce,
    SetSending(Sending),
    /// An answerer that got no offer: add our transceivers and offer ourselves.
    StartOffering,
    GetStats,
}

/// `RTCPeerConnection.iceConnectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceState {
    New,
    Checking,
    Connected,
    Completed,
    Disconnected,
    Failed,
    Closed,
}

/// `RTCPeerConnection.connectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// Why a peer operation failed, as far as the person is concerned; the browser's own words go to
/// the console, not the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub operation: FailedOp,
    /// The browser's message, for the console.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedOp {
    MakeOffer,
    AcceptOffer,
    ApplyAnswer,
    AddCandidate,
    SetSending,
    Create,
}

/// What a peer connection reports.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    NegotiationNeeded,
    LocalDescription(SessionDescription),
    AnswerApplied,
    Failed(OpError),
    IceCandidate(IceCandidate),
    Ice(IceState),
    Connection(ConnState),
    /// Remote media arrived in stream `stream` (`id`: the sender's stream id).
    Track {
        stream: StreamKey,
        id: String,
    },
    Stats(StatsSample),
}

/// How the websocket ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketClose {
    pub code: u16,
    pub reason: String,
}

/// What the person asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Join {
        name: DisplayName,
        passcode: Option<Passcode>,
    },
    Leave,
    SendChat(ChatText),
    SetChatOpen(bool),
    Lock(Passcode),
    Unlock,
}

/// Which timer fired. A timer's generation must match the one the core last set for that
/// purpose, so a stale timer does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    Reconnect,
    Stats,
    IceDisconnected(PeerId),
    IceRetry(PeerId),
    ConnectDeadline(PeerId),
    AnswerWatchdog(PeerId),
    AwaitOffer(PeerId),
    Missing(PeerId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timer {
    pub kind: TimerKind,
    pub generation: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Command(Command),
    Local(LocalMedia),
    SignalingOpened,
    SignalingClosed(SocketClose),
    Server(ServerMessage),
    /// `navigator.onLine` changed (or its value at start).
    Online(bool),
    Peer {
        peer: PeerId,
        connection: ConnectionId,
        event: PeerEvent,
    },
    Timer(Timer),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Open the websocket (replacing any old one).
    Connect,
    /// Close the websocket for good.
    Disconnect,
    Send(ClientMessage),
    CreatePeer {
        peer: PeerId,
        connection: ConnectionId,
        role: Role,
        ice_servers: Vec<IceServer>,
        sending: Sending,
    },
    Peer {
        peer: PeerId,
        connection: ConnectionId,
        op: PeerOp,
    },
    ClosePeer {
        peer: PeerId,
        connection: ConnectionId,
    },
    /// Fire `Event::Timer(timer)` after `after` ms (replacing a pending timer of the same kind).
    SetTimer {
        timer: Timer,
        after: Millis,
    },
    /// For the console: something worth knowing that is not the person's problem.
    Log(String),
}

/// Where the call is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Preview and pickers; not joined (maybe refused: see [`View::refusal`]).
    Lobby,
    /// `join` sent, waiting for `joined`.
    Joining,
    InCall,
    /// Left on purpose.
    Left,
}

/// The link to the server, for `#status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Open,
    /// Lost while in the call; trying again (attempt number).
    Reconnecting(u32),
    /// The browser says it is offline: waiting for the network.
    Offline,
    Closed,
}

/// Why the server would not let us in (the lobby explains and stays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// A problem with one participant, shown on their tile until it is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerProblem {
    /// ICE never found a path (firewall or NAT): TURN would help.
    NetworkPath,
    /// ICE connected but the secure (DTLS) handshake failed.
    SecureHandshake,
    /// The two browsers could not agree on a session (no common codec, bad description).
    NothingNegotiated,
    /// Nothing connected within the deadline.
    NeverConnected,
}

impl PeerProblem {
    /// The tile's `data-problem` value.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerProblem::NetworkPath => "network-path",
            PeerProblem::SecureHandshake => "secure-handshake",
            PeerProblem::NothingNegotiated => "nothing-negotiated",
            PeerProblem::NeverConnected => "never-connected",
        }
    }
}

/// How a remote tile looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileState {
    Connecting,
    Connected,
    /// Their signaling dropped, or the media path is being repaired (ICE restart).
    Reconnecting,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeerView {
    pub id: PeerId,
    pub name: DisplayName,
    pub media: MediaState,
    pub tile: TileState,
    pub problem: Option<PeerProblem>,
    pub stream: Option<StreamKey>,
    pub screen: Option<StreamKey>,
    pub route: Option<Route>,
    pub quality: Option<QualityView>,
    /// We send this peer less than the room budget because of poor quality.
    pub sending_reduced: bool,
}

/// Everything the screen shows about the call (media pickers live with the media adapter).
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub phase: Phase,
    pub link: Link,
    pub me: Option<PeerId>,
    pub peers: Vec<PeerView>,
    pub refusal: Option<Refusal>,
    /// A problem with the call as a whole (not one peer), as a sentence.
    pub problem: Option<String>,
    pub chat: Vec<ChatEntry>,
    pub chat_open: bool,
    pub unread: u32,
    pub lock: LockState,
    pub capacity: u32,
}

impl View {
    /// Before anything happened: the lobby, connecting.
    pub fn lobby() -> Self {
        Self {
            phase: Phase::Lobby,
            link: Link::Connecting,
            me: None,
            peers: Vec::new(),
            refusal: None,
            problem: None,
            chat: Vec::new(),
            chat_open: false,
            unread: 0,
            lock: LockState::Open,
            capacity: 0,
        }
    }
}

/// The close code the server uses when a newer connection took our seat with our token.
pub const SEAT_TAKEN: u16 = 4001;

/// Chat messages the view keeps (the server keeps the last 50 for late joiners).
pub const CHAT_KEPT: usize = 200;
/// Signaling messages kept while the websocket is down (beyond it, the oldest candidates go).
pub const OUTBOX_MAX: usize = 256;

/// One remote participant and our connection to them.
struct Remote {
    view: PeerView,
    connection: ConnectionId,
    role: Role,
    /// Their connection id, once we have seen one.
    remote_connection: Option<ConnectionId>,
    negotiation: Negotiation,
    ice: IceState,
    conn: ConnState,
    ever_connected: bool,
    restarting: bool,
    /// ICE restarts since the connection last worked.
    restarts: u32,
    /// An offer from them arrived since our last restart tick (the polite side waits for the
    /// impolite side's restart instead of offering at the same moment).
    offer_seen: bool,
    /// Present in the room as far as the server last told us (false: missing after our resume).
    present: bool,
    reconnecting: bool,
    quality: Tracker,
    screen_stream_id: Option<String>,
    /// Streams seen by id (to tell the screen from the camera when the state arrives later).
    streams: Vec<(String, StreamKey)>,
    sending: Option<Sending>,
}

pub struct Call {
    room: RoomName,
    timing: Timing,
    rng: u64,
    phase: Phase,
    link: Link,
    online: bool,
    attempts: u32,
    me: Option<PeerId>,
    name: Option<DisplayName>,
    passcode: Option<Passcode>,
    resume: Option<ResumeToken>,
    ice_servers: Vec<IceServer>,
    local: LocalMedia,
    /// Joined and the socket is up: messages can go out now.
    ready: bool,
    /// A `join` is out and not answered yet (a refusal then concerns us).
    awaiting_joined: bool,
    outbox: VecDeque<ClientMessage>,
    remotes: BTreeMap<PeerId, Remote>,
    /// Join order of the remotes (for the grid).
    order: Vec<PeerId>,
    timers: BTreeMap<TimerKind, u64>,
    next_generation: u64,
    stats_running: bool,
    refusal: Option<Refusal>,
    problem: Option<String>,
    chat: VecDeque<ChatEntry>,
    chat_open: bool,
    unread: u32,
    lock: LockState,
    capacity: u32,
    effects: VecDeque<Effect>,
    /// Bumped on every change the view could show.
    version: u64,
}

impl Call {
    /// A call for `room`, in the lobby. `seed` seeds the core's own random numbers (connection
    /// ids, reconnect jitter): any value works, tests pass a fixed one. Opens the websocket at
    /// once, so that joining costs no connection setup.
    pub fn new(room: RoomName, timing: Timing, seed: u64) -> Self {
        let mut call = Self {
            room,
            timing,
            rng: seed | 1,
            phase: Phase::Lobby,
            link: Link::Connecting,
            online: true,
            attempts: 0,
            me: None,
            name: None,
            passcode: None,
            resume: None,
            ice_servers: Vec::new(),
            local: LocalMedia::default(),
            ready: false,
            awaiting_joined: false,
            outbox: VecDeque::new(),
            remotes: BTreeMap::new(),
            order: Vec::new(),
            timers: BTreeMap::new(),
            next_generation: 1,
            stats_running: false,
            refusal: None,
            problem: None,
            chat: VecDeque::new(),
            chat_open: false,
            unread: 0,
            lock: LockState::Open,
            capacity: 0,
            effects: VecDeque::new(),
            version: 0,
        };
        call.effects.push_back(Effect::Connect);
        call
    }

    /// The next effect to execute.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Changes whenever the view may have changed.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn view(&self) -> View {
        View {
            phase: self.phase.clone(),
            link: self.link,
            me: self.me,
            peers: self
                .order
                .iter()
                .filter_map(|id| self.remotes.get(id))
                .map(|r| r.view.clone())
                .collect(),
            refusal: self.refusal.clone(),
            problem: self.problem.clone(),
            chat: self.chat.iter().cloned().collect(),
            chat_open: self.chat_open,
            unread: self.unread,
            lock: self.lock,
            capacity: self.capacity,
        }
    }

    pub fn handle(&mut self, event: Event) {
        self.version += 1;
        match event {
            Event::Command(command) => self.on_command(command),
            Event::Local(local) => self.on_local(local),
            Event::SignalingOpened => self.on_open(),
            Event::SignalingClosed(close) => self.on_close(close),
            Event::Server(message) => self.on_server(message),
            Event::Online(online) => self.on_online(online),
            Event::Peer {
                peer,
                connection,
                event,
            } => self.on_peer(peer, connection, event),
            Event::Timer(timer) => self.on_timer(timer),
        }
    }

    // ----- helpers -----

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for connection ids and jitter (nothing here is a secret).
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn new_connection_id(&mut self) -> ConnectionId {
        ConnectionId::new((self.random() >> 32) as u32)
    }

    fn set_timer(&mut self, kind: TimerKind, after: Millis) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.timers.insert(kind, generation);
        self.effects.push_back(Effect::SetTimer {
            timer: Timer { kind, generation },
            after,
        });
    }

    fn cancel_timer(&mut self, kind: TimerKind) {
        self.timers.remove(&kind);
    }

    fn log(&mut self, text: impl Into<String>) {
        self.effects.push_back(Effect::Log(text.into()));
    }

    /// Sends now, or keeps it for when the websocket is back.
    fn send(&mut self, message: ClientMessage) {
        if self.ready {
            self.effects.push_back(Effect::Send(message));
            return;
        }
        if self.outbox.len() >= OUTBOX_MAX {
            // Candidates are the most expendable (ICE finds peer-reflexive ones anyway).
            match self
                .outbox
                .iter()
                .position(|m| matches!(m, ClientMessage::IceCandidate { .. }))
            {
                Some(index) => {
                    self.outbox.remove(index);
                }
                None => {
                    self.outbox.pop_front();
                }
            }
        }
        self.outbox.push_back(message);
    }

    fn peer_op(&mut self, peer: PeerId, op: PeerOp) {
        if let Some(remote) = self.remotes.get(&peer) {
            self.effects.push_back(Effect::Peer {
                peer,
                connection: remote.connection,
                op,
            });
        }
    }

    /// Runs what a negotiation step asks for.
    fn run_steps(&mut self, peer: PeerId, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::MakeOffer => self.peer_op(peer, PeerOp::MakeOffer),
                Step::AcceptOffer(d) => {
                    // What we send goes on the transceivers the offer creates (the adapter
                    // attaches the last `SetSending` before answering).
                    self.peer_op(peer, PeerOp::AcceptOffer(d));
                }
                Step::ApplyAnswer(d) => self.peer_op(peer, PeerOp::ApplyAnswer(d)),
                Step::AddCandidate(c) => self.peer_op(peer, PeerOp::AddCandidate(c)),
                Step::Send(description) => {
                    if let Some(remote) = self.remotes.get(&peer) {
                        let message = ClientMessage::Description {
                            to: peer,
                            connection: remote.connection,
                            description,
                        };
                        self.send(message);
                    }
                }
                Step::WatchAnswer => {
                    let after = self.timing.answer_watchdog;
                    self.set_timer(TimerKind::AnswerWatchdog(peer), after);
                }
            }
        }
    }

    fn sending_for(&self, peer: PeerId) -> Sending {
        let others = self.remotes.len();
        let base = uplink::for_room(others);
        let steps = self.remotes.get(&peer).map_or(0, |r| r.quality.steps);
        Sending {
            mic: self.local.mic,
            camera: if self.local.camera_off {
                None
            } else {
                self.local.camera
            },
            screen: self.local.screen.clone(),
            send_audio: self.local.can_send_audio || self.local.mic.is_some(),
            send_video: self.local.can_send_video || self.local.camera.is_some(),
            video_limit: uplink::reduced(base, steps),
        }
    }

    /// Tells every connection what to send, where it changed.
    fn update_sending(&mut self) {
        let peers: Vec<PeerId> = self.remotes.keys().copied().collect();
        for peer in peers {
            let sending = self.sending_for(peer);
            let Some(remote) = self.remotes.get_mut(&peer) else {
                continue;
            };
            if remote.sending.as_ref() != Some(&sending) {
                remote.sending = Some(sending.clone());
                self.peer_op(peer, PeerOp::SetSending(sending));
            }
        }
    }

    // ----- the person -----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { name, passcode } => {
                if !matches!(self.phase, Phase::Lobby) {
                    return;
                }
                self.name = Some(name);
                self.passcode = passcode;
                self.refusal = None;
                self.problem = None;
                self.phase = Phase::Joining;
                match self.link {
                    Link::Open => self.send_join(),
                    // The lobby's socket dropped: connect now, join when it opens.
                    Link::Closed | Link::Reconnecting(_) | Link::Offline | Link::Connecting => {
                        if !matches!(self.link, Link::Connecting) {
                            self.link = Link::Connecting;
                            self.effects.push_back(Effect::Connect);
                        }
                    }
                }
            }
            Command::Leave => {
                if matches!(self.phase, Phase::InCall | Phase::Joining) && self.ready {
                    self.effects.push_back(Effect::Send(ClientMessage::Leave));
                }
                self.phase = Phase::Left;
                self.ready = false;
                self.outbox.clear();
                self.close_all_peers();
                self.timers.clear();
                self.link = Link::Closed;
                self.effects.push_back(Effect::Disconnect);
            }
            Command::SendChat(text) => {
                if matches!(self.phase, Phase::InCall) {
                    self.send(ClientMessage::Chat { text });
                }
            }
            Command::SetChatOpen(open) => {
                self.chat_open = open;
                if open {
                    self.unread = 0;
                }
            }
            Command::Lock(passcode) => {
                if matches!(self.phase, Phase::InCall) {
                    self.send(ClientMessage::Lock { passcode });
                }
            }
            Command::Unlock => {
                if matches!(self.phase, Phase::InCall) {
                    self.send(ClientMessage::Unlock);
                }
            }
        }
    }

    fn on_local(&mut self, local: LocalMedia) {
        let announce = local.state() != self.local.state();
        self.local = local;
        self.update_sending();
        if announce && matches!(self.phase, Phase::InCall) {
            let state = self.local.state();
            self.send(ClientMessage::MediaState(state));
        }
    }

    // ----- the websocket -----

    fn send_join(&mut self) {
        let Some(name) = self.name.clone() else {
            return;
        };
        self.awaiting_joined = true;
        self.effects.push_back(Effect::Send(ClientMessage::Join {
            room: self.room.clone(),
            version: PROTOCOL_VERSION,
            name,
            resume: self.resume.clone(),
            passcode: self.passcode.clone(),
        }));
    }

    fn on_open(&mut self) {
        self.link = Link::Open;
        match self.phase {
            // Joining (first time or again after a drop): with our resume token if we have one.
            Phase::Joining => self.send_join(),
            // Reconnected: join again, taking our seat back. The call view stays meanwhile.
            Phase::InCall => self.send_join(),
            Phase::Lobby | Phase::Left => {}
        }
    }

    fn on_close(&mut self, close: SocketClose) {
        self.ready = false;
        self.awaiting_joined = false;
        match self.phase {
            Phase::Left => {}
            Phase::Lobby => {
                // Nothing lost; connect again on Join.
                self.link = Link::Closed;
                self.log(format!(
                    "signaling closed in the lobby ({} {})",
                    close.code, close.reason
                ));
            }
            Phase::Joining | Phase::InCall if close.code == SEAT_TAKEN => {
                // Our seat went to a newer connection with our token: another tab (or this one
                // after a long freeze) is in the call now. Reconnecting would take it back.
                self.phase = Phase::Lobby;
                self.link = Link::Closed;
                self.close_all_peers();
                self.me = None;
                self.resume = None;
                self.outbox.clear();
                self.problem = Some(
                    "You are in this call from another tab or device now, so this one stepped out. Join again here to move back."
                        .into(),
                );
            }
            Phase::Joining | Phase::InCall => {
                if self.me.is_none() && close.code == 1001 {
                    // Never got in and the server is going away: the person can try again.
                    self.phase = Phase::Lobby;
                    self.link = Link::Closed;
                    self.problem =
                        Some("The server is restarting. Try joining again in a moment.".into());
                    return;
                }
                self.log(format!(
                    "signaling lost ({} {}); reconnecting",
                    close.code, close.reason
                ));
                self.schedule_reconnect();
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        if !self.online {
            self.link = Link::Offline;
            self.cancel_timer(TimerKind::Reconnect);
            return;
        }
        self.link = Link::Reconnecting(self.attempts);
        // Exponential backoff with full jitter: a uniformly random wait up to
        // min(cap, base · 2^attempt), so that many clients of one restarted server spread out.
        let ceiling = (self.timing.reconnect_base * 2f64.powi(self.attempts.min(16) as i32))
            .min(self.timing.reconnect_cap);
        let fraction = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        self.attempts = self.attempts.saturating_add(1);
        self.set_timer(TimerKind::Reconnect, ceiling * fraction);
    }

    fn on_online(&mut self, online: bool) {
        self.online = online;
        let lost = matches!(
            self.link,
            Link::Reconnecting(_) | Link::Offline | Link::Closed
        );
        let in_call = matches!(self.phase, Phase::InCall | Phase::Joining) && self.me.is_some();
        if !online {
            if in_call && lost {
                self.link = Link::Offline;
                self.cancel_timer(TimerKind::Reconnect);
            }
            return;
        }
        if in_call && lost {
            // Back online: try at once, with a fresh backoff.
            self.attempts = 0;
            self.link = Link::Reconnecting(0);
            self.cancel_timer(TimerKind::Reconnect);
            self.effects.push_back(Effect::Connect);
        }
    }

    // ----- the server -----

    fn on_server(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Joined {
                room: _,
                you,
                peers,
                capacity,
                ice_servers,
                resume_token,
                resumed,
                lock,
                chat,
            } => self.on_joined(
                you,
                peers,
                capacity,
                ice_servers,
                resume_token,
                resumed,
                lock,
                chat,
            ),
            ServerMessage::PeerJoined { peer } => {
                if matches!(self.phase, Phase::InCall) {
                    self.on_peer_joined(peer);
                }
            }
            ServerMessage::PeerLeft { peer } => self.remove_peer(peer),
            ServerMessage::PeerReconnecting { peer } => {
                if let Some(remote) = self.remotes.get_mut(&peer) {
                    remote.reconnecting = true;
                    refresh_tile(remote);
                }
            }
            ServerMessage::PeerReconnected { peer } => {
                if let Some(remote) = self.remotes.get_mut(&peer) {
                    remote.reconnecting = false;
                    remote.present = true;
                    refresh_tile(remote);
                }
                self.cancel_timer(TimerKind::Missing(peer));
            }
            ServerMessage::Description {
                from,
                connection,
                description,
            } => self.on_description(from, connection, description),
            ServerMessage::IceCandidate {
                from,
                connection,
                candidate,
            } => {
                let Some(remote) = self.remotes.get_mut(&from) else {
                    return;
                };
                if remote.remote_connection != Some(connection) {
                    // For a connection of theirs we do not (or no longer) talk to.
                    return;
                }
                let mut steps = Vec::new();
                remote.negotiation.remote_candidate(candidate, &mut steps);
                self.run_steps(from, steps);
            }
            ServerMessage::PeerMediaState { peer, state } => {
                if let Some(remote) = self.remotes.get_mut(&peer) {
                    remote.screen_stream_id = state.screen.clone();
                    remote.view.media = state;
                    assign_streams(remote);
                }
            }
            ServerMessage::Chat(entry) => self.add_chat(entry),
            ServerMessage::LockChanged { lock, by: _ } => self.lock = lock,
            ServerMessage::Error { code, message } => self.on_error(code, message),
        }
    }

    fn add_chat(&mut self, entry: ChatEntry) {
        if !self.chat_open && Some(entry.from) != self.me {
            self.unread = self.unread.saturating_add(1);
        }
        self.chat.push_back(entry);
        while self.chat.len() > CHAT_KEPT {
            self.chat.pop_front();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_joined(
        &mut self,
        you: PeerId,
        peers: Vec<Member>,
        capacity: u32,
        ice_servers: Vec<IceServer>,
        resume_token: ResumeToken,
        resumed: bool,
        lock: LockState,
        chat: Vec<ChatEntry>,
    ) {
        let same_seat = self.me == Some(you);
        if !same_seat {
            // A first join, or the server did not take our old seat back: start over.
            self.close_all_peers();
            self.outbox.clear();
        }
        self.me = Some(you);
        self.phase = Phase::InCall;
        self.awaiting_joined = false;
        self.link = Link::Open;
        self.attempts = 0;
        self.cancel_timer(TimerKind::Reconnect);
        self.resume = Some(resume_token);
        self.ice_servers = ice_servers;
        self.capacity = capacity;
        self.lock = lock;
        self.refusal = None;
        self.problem = None;
        self.chat = chat.into_iter().collect();
        self.ready = true;

        let listed: Vec<PeerId> = peers.iter().map(|m| m.id).collect();
        for member in peers {
            match self.remotes.get_mut(&member.id) {
                Some(remote) => {
                    remote.present = true;
                    remote.reconnecting = member.reconnecting;
                    remote.view.name = member.name;
                    remote.screen_stream_id = member.media.screen.clone();
                    remote.view.media = member.media;
                    assign_streams(remote);
                    refresh_tile(remote);
                    self.cancel_timer(TimerKind::Missing(member.id));
                }
                None => {
                    // New to us: we call them, whether we are the newcomer or came back. The
                    // newcomer offers at once rather than waiting for the members' offers: the
                    // members heard `peerJoined` before our offer can reach them (the server
                    // sends it before `joined`'s recipient can react), so they are ready to
                    // answer, and the newcomer's offer is being made while its call view is
                    // still being built instead of after it.
                    self.add_remote(member, Role::Offerer);
                }
            }
        }
        // After a resume, people we knew who are not listed (yet): keep their connection a
        // while — after a server restart they are probably reconnecting too.
        let missing: Vec<PeerId> = self
            .remotes
            .keys()
            .copied()
            .filter(|id| !listed.contains(id))
            .collect();
        for id in missing {
            if let Some(remote) = self.remotes.get_mut(&id) {
                remote.present = false;
                remote.reconnecting = true;
                refresh_tile(remote);
            }
            let after = self.timing.missing_grace;
            self.set_timer(TimerKind::Missing(id), after);
        }
        // What was said while we were away.
        let outbox: Vec<ClientMessage> = self.outbox.drain(..).collect();
        for message in outbox {
            self.effects.push_back(Effect::Send(message));
        }
        let state = self.local.state();
        self.effects
            .push_back(Effect::Send(ClientMessage::MediaState(state)));
        if same_seat && !resumed {
            // The server had no seat for us (restart, or grace over): anything in flight may be
            // lost. Offer again wherever we wait for an answer.
            let ids: Vec<PeerId> = self.remotes.keys().copied().collect();
            for id in ids {
                if let Some(remote) = self.remotes.get_mut(&id) {
                    let mut steps = Vec::new();
                    remote.negotiation.offer_again(&mut steps);
                    self.run_steps(id, steps);
                }
            }
        }
        self.update_sending();
        if !self.stats_running {
            self.stats_running = true;
            let after = self.timing.stats_interval;
            self.set_timer(TimerKind::Stats, after);
        }
    }

    fn on_peer_joined(&mut self, member: Member) {
        if let Some(remote) = self.remotes.get_mut(&member.id) {
            // We still have a connection to them (the server restarted, or they came back
            // after the grace): keep it. If they started over, their next offer carries a new
            // connection id and we replace ours then.
            remote.present = true;
            remote.reconnecting = member.reconnecting;
            remote.view.name = member.name;
            remote.screen_stream_id = member.media.screen.clone();
            remote.view.media = member.media;
            assign_streams(remote);
            refresh_tile(remote);
            self.cancel_timer(TimerKind::Missing(member.id));
            return;
        }
        // The newcomer calls us (see `on_joined`); we answer, and call them ourselves if no
        // offer comes (`AwaitOffer`).
        self.add_remote(member, Role::Answerer);
        self.update_sending();
    }

    fn on_error(&mut self, code: ErrorCode, message: String) {
        match code {
            ErrorCode::ResumeRefused => {
                // Our seat cannot be taken back: join as someone new.
                self.log(format!("resume refused: {message}"));
                self.resume = None;
                self.send_join();
            }
            ErrorCode::RoomFull
            | ErrorCode::PasscodeRequired
            | ErrorCode::WrongPasscode
            | ErrorCode::RoomClosed
            | ErrorCode::TooManyAttempts
            | ErrorCode::ServerFull
            | ErrorCode::InvalidName
            | ErrorCode::InvalidRoom
            | ErrorCode::UnsupportedVersion
                if self.awaiting_joined =>
            {
                self.awaiting_joined = false;
                // Refused at the door: back to the lobby, which says why. If we were in the
                // call before (and lost our seat while away), the call is over.
                self.close_all_peers();
                self.me = None;
                self.resume = None;
                self.ready = false;
                self.outbox.clear();
                self.phase = Phase::Lobby;
                self.refusal = Some(Refusal { code, message });
            }
            ErrorCode::UnknownPeer => {
                // A peer that just left: harmless.
                self.log(format!("unknown peer: {message}"));
            }
            _ => self.log(format!("server refused a message ({code}): {message}")),
        }
    }

    fn add_remote(&mut self, member: Member, role: Role) {
        let Some(me) = self.me else {
            return;
        };
        let id = member.id;
        let connection = self.new_connection_id();
        let polite = me < id;
        let screen_stream_id = member.media.screen.clone();
        let remote = Remote {
            view: PeerView {
                id,
                name: member.name,
                media: member.media,
                tile: TileState::Connecting,
                problem: None,
                stream: None,
                screen: None,
                route: None,
                quality: None,
                sending_reduced: false,
            },
            connection,
            role,
            remote_connection: None,
            negotiation: Negotiation::new(polite),
            ice: IceState::New,
            conn: ConnState::New,
            ever_connected: false,
            restarting: false,
            restarts: 0,
            offer_seen: false,
            present: true,
            reconnecting: member.reconnecting,
            quality: Tracker::default(),
            screen_stream_id,
            streams: Vec::new(),
            sending: None,
        };
        self.remotes.insert(id, remote);
        if !self.order.contains(&id) {
            self.order.push(id);
        }
        self.create_connection(id, role, connection);
    }

    fn create_connection(&mut self, id: PeerId, role: Role, connection: ConnectionId) {
        let sending = self.sending_for(id);
        if let Some(remote) = self.remotes.get_mut(&id) {
            remote.sending = Some(sending.clone());
        }
        self.effects.push_back(Effect::CreatePeer {
            peer: id,
            connection,
            role,
            ice_servers: self.ice_servers.clone(),
            sending,
        });
        if role == Role::Offerer {
            // Offer now rather than on the browser's `negotiationneeded`, which is a task for
            // later (after whatever the page does next, such as building the call view). The
            // browser checks at that moment whether negotiation is still needed: with our offer
            // set meanwhile, it is not, and no event comes.
            if let Some(remote) = self.remotes.get_mut(&id) {
                let mut steps = Vec::new();
                remote.negotiation.negotiation_needed(&mut steps);
                self.run_steps(id, steps);
            }
        }
        let deadline = self.timing.connect_deadline;
        self.set_timer(TimerKind::ConnectDeadline(id), deadline);
        if role == Role::Answerer {
            let wait = self.timing.await_offer;
            self.set_timer(TimerKind::AwaitOffer(id), wait);
        }
    }

    /// Replaces our connection to `id` by a new one (they started over).
    fn recreate(&mut self, id: PeerId, role: Role) {
        let connection = self.new_connection_id();
        let Some(remote) = self.remotes.get_mut(&id) else {
            return;
        };
        let old = remote.connection;
        let polite = remote.negotiation.polite();
        remote.connection = connection;
        remote.role = role;
        remote.remote_connection = None;
        remote.negotiation = Negotiation::new(polite);
        remote.ice = IceState::New;
        remote.conn = ConnState::New;
        remote.ever_connected = false;
        remote.restarting = false;
        remote.restarts = 0;
        remote.quality.reset();
        remote.view.stream = None;
        remote.view.screen = None;
        remote.view.route = None;
        remote.view.quality = None;
        remote.view.problem = None;
        remote.streams.clear();
        refresh_tile(remote);
        self.effects.push_back(Effect::ClosePeer {
            peer: id,
            connection: old,
        });
        for kind in [
            TimerKind::IceDisconnected(id),
            TimerKind::IceRetry(id),
            TimerKind::AnswerWatchdog(id),
            TimerKind::AwaitOffer(id),
        ] {
            self.cancel_timer(kind);
        }
        self.create_connection(id, role, connection);
    }

    fn remove_peer(&mut self, id: PeerId) {
        if let Some(remote) = self.remotes.remove(&id) {
            self.effects.push_back(Effect::ClosePeer {
                peer: id,
                connection: remote.connection,
            });
        }
        self.order.retain(|p| *p != id);
        self.timers.retain(|kind, _| !timer_is_for(kind, id));
        self.update_sending();
    }

    fn close_all_peers(&mut self) {
        let ids: Vec<PeerId> = self.remotes.keys().copied().collect();
        for id in ids {
            if let Some(remote) = self.remotes.remove(&id) {
                self.effects.push_back(Effect::ClosePeer {
                    peer: id,
                    connection: remote.connection,
                });
            }
            self.timers.retain(|kind, _| !timer_is_for(kind, id));
        }
        self.order.clear();
    }

    fn on_description(
        &mut self,
        from: PeerId,
        connection: ConnectionId,
        description: SessionDescription,
    ) {
        if description.kind == shared::SdpKind::Offer {
            if let Some(remote) = self.remotes.get_mut(&from) {
                remote.offer_seen = true;
            }
        }
        let Some(remote) = self.remotes.get(&from) else {
            return;
        };
        match remote.remote_connection {
            Some(known) if known != connection => {
                if description.kind != shared::SdpKind::Offer {
                    self.log(format!(
                        "ignored an answer from an old connection of {from}"
                    ));
                    return;
                }
                // They started over with a new connection: ours to their old one is useless.
                self.recreate(from, Role::Answerer);
            }
            _ => {}
        }
        let Some(remote) = self.remotes.get_mut(&from) else {
            return;
        };
        remote.remote_connection = Some(connection);
        let mut steps = Vec::new();
        let outcome = remote
            .negotiation
            .remote_description(description, &mut steps);
        if outcome == Some(OfferOutcome::Ignored) {
            self.log(format!(
                "glare with {from}: ignored their offer (we are impolite)"
            ));
        }
        if outcome == Some(OfferOutcome::Accepted) {
            self.cancel_timer(TimerKind::AwaitOffer(from));
        }
        self.run_steps(from, steps);
    }

    // ----- peer connections -----

    fn on_peer(&mut self, peer: PeerId, connection: ConnectionId, event: PeerEvent) {
        let Some(remote) = self.remotes.get_mut(&peer) else {
            return;
        };
        if remote.connection != connection {
            // A closed connection's last words.
            return;
        }
        match event {
            PeerEvent::NegotiationNeeded => {
                let mut steps = Vec::new();
                remote.negotiation.negotiation_needed(&mut steps);
                self.run_steps(peer, steps);
            }
            PeerEvent::LocalDescription(description) => {
                let mut steps = Vec::new();
                remote
                    .negotiation
                    .local_description(description, &mut steps);
                self.run_steps(peer, steps);
            }
            PeerEvent::AnswerApplied => {
                let mut steps = Vec::new();
                remote.negotiation.answer_applied(&mut steps);
                self.cancel_timer(TimerKind::AnswerWatchdog(peer));
                self.run_steps(peer, steps);
            }
            PeerEvent::Failed(error) => self.on_op_failed(peer, error),
            PeerEvent::IceCandidate(candidate) => {
                let message = ClientMessage::IceCandidate {
                    to: peer,
                    connection,
                    candidate,
                };
                self.send(message);
            }
            PeerEvent::Ice(state) => self.on_ice(peer, state),
            PeerEvent::Connection(state) => self.on_connection(peer, state),
            PeerEvent::Track { stream, id } => {
                if !remote.streams.iter().any(|(_, key)| *key == stream) {
                    remote.streams.push((id, stream));
                }
                assign_streams(remote);
            }
            PeerEvent::Stats(sample) => {
                let (view, adjust) = remote.quality.sample(sample);
                if let Some(view) = view {
                    remote.view.route = quality::route(view.local_candidate, view.remote_candidate);
                    remote.view.quality = Some(view);
                }
                if let Some(adjust) = adjust {
                    remote.view.sending_reduced = remote.quality.steps > 0;
                    let name = remote.view.name.clone();
                    self.log(match adjust {
                        Adjust::Lowered => format!("poor connection to {name}: sending less video"),
                        Adjust::Raised => {
                            format!("connection to {name} better: sending more video")
                        }
                    });
                    self.update_sending();
                }
            }
        }
    }

    fn on_op_failed(&mut self, peer: PeerId, error: OpError) {
        let Some(remote) = self.remotes.get_mut(&peer) else {
            return;
        };
        let operation = match error.operation {
            FailedOp::MakeOffer => Some(Operation::MakeOffer),
            FailedOp::AcceptOffer => Some(Operation::AcceptOffer),
            FailedOp::ApplyAnswer => Some(Operation::ApplyAnswer),
            FailedOp::AddCandidate | FailedOp::SetSending | FailedOp::Create => None,
        };
        let mut steps = Vec::new();
        if let Some(operation) = operation {
            remote.negotiation.failed(operation, &mut steps);
            if matches!(operation, Operation::AcceptOffer | Operation::ApplyAnswer) {
                // Their description could not be used: most often no common codec.
                remote.view.problem = Some(PeerProblem::NothingNegotiated);
            }
        }
        if error.operation == FailedOp::Create {
            remote.view.problem = Some(PeerProblem::NothingNegotiated);
        }
        let detail = format!("{:?} failed for {peer}: {}", error.operation, error.detail);
        self.log(detail);
        self.run_steps(peer, steps);
    }

    fn on_ice(&mut self, peer: PeerId, state: IceState) {
        let Some(remote) = self.remotes.get_mut(&peer) else {
            return;
        };
        remote.ice = state;
        match state {
            IceState::Connected | IceState::Completed => {
                remote.ever_connected = true;
                remote.restarting = false;
                remote.restarts = 0;
                if matches!(
                    remote.view.problem,
                    Some(PeerProblem::NetworkPath | PeerProblem::NeverConnected)
                ) {
                    remote.view.problem = None;
                }
                refresh_tile(remote);
                self.cancel_timer(TimerKind::IceDisconnected(peer));
                self.cancel_timer(TimerKind::IceRetry(peer));
            }
            IceState::Disconnected => {
                let after = self.timing.disconnected_restart;
                self.set_timer(TimerKind::IceDisconnected(peer), after);
            }
            IceState::Failed => {
                if !remote.ever_connected {
                    remote.view.problem = Some(PeerProblem::NetworkPath);
                }
                self.restart_ice(peer);
            }
            IceState::New | IceState::Checking | IceState::Closed => {}
        }
    }

    fn restart_ice(&mut self, peer: PeerId) {
        let Some(remote) = self.remotes.get_mut(&peer) else {
            return;
        };
        remote.restarting = true;
        remote.restarts = remote.restarts.saturating_add(1);
        remote.quality.reset();
        refresh_tile(remote);
        let after = if remote.restarts <= self.timing.ice_fast_retries {
            self.timing.ice_retry
        } else {
            self.timing.ice_slow_retry
        };
        // Only one side restarts: both would offer at once, and the polite side's rollback of
        // its own offer has left Chromium's remote video frozen after the repair. The impolite
        // side restarts; the polite side waits for that offer and restarts itself only when a
        // whole retry period brought none (the other side may be the one that cannot).
        let polite = remote.negotiation.polite();
        let waited = remote.restarts > 1 && !std::mem::take(&mut remote.offer_seen);
        if polite && !waited {
            self.log(format!("waiting for {peer} to restart ICE"));
        } else {
            self.log(format!("restarting ICE with {peer}"));
            self.peer_op(peer, PeerOp::RestartIce);
        }
        self.set_timer(TimerKind::IceRetry(peer), after);
    }

    fn on_connection(&mut self, peer: PeerId, state: ConnState) {
        let Some(remote) = self.remotes.get_mut(&peer) else {
            return;
        };
        remote.conn = state;
        match state {
            ConnState::Connected => {
                remote.ever_connected = true;
                remote.view.problem = None;
            }
            ConnState::Failed
                if matches!(remote.ice, IceState::Connected | IceState::Completed) =>
            {
                // A path exists but the secure handshake over it failed.
                remote.view.problem = Some(PeerProblem::SecureHandshake);
            }
            _ => {}
        }
        refresh_tile(remote);
        if state == ConnState::Connected {
            self.cancel_timer(TimerKind::ConnectDeadline(peer));
        }
    }

    // ----- timers -----

    fn on_timer(&mut self, timer: Timer) {
        if self.timers.get(&timer.kind) != Some(&timer.generation) {
            return;
        }
        self.timers.remove(&timer.kind);
        match timer.kind {
            TimerKind::Reconnect => {
                if matches!(self.link, Link::Reconnecting(_)) && self.online {
                    self.effects.push_back(Effect::Connect);
                }
            }
            TimerKind::Stats => {
                let connected: Vec<PeerId> = self
                    .remotes
                    .iter()
                    .filter(|(_, r)| r.ever_connected)
                    .map(|(id, _)| *id)
                    .collect();
                for id in connected {
                    self.peer_op(id, PeerOp::GetStats);
                }
                if matches!(self.phase, Phase::InCall | Phase::Joining) {
                    let after = self.timing.stats_interval;
                    self.set_timer(TimerKind::Stats, after);
                } else {
                    self.stats_running = false;
                }
            }
            TimerKind::IceDisconnected(peer) => {
                if self
                    .remotes
                    .get(&peer)
                    .is_some_and(|r| r.ice == IceState::Disconnected)
                {
                    self.restart_ice(peer);
                }
            }
            TimerKind::IceRetry(peer) => {
                if self.remotes.get(&peer).is_some_and(|r| {
                    r.restarting && !matches!(r.ice, IceState::Connected | IceState::Completed)
                }) {
                    self.restart_ice(peer);
                }
            }
            TimerKind::ConnectDeadline(peer) => {
                if let Some(remote) = self.remotes.get_mut(&peer) {
                    if !remote.ever_connected && remote.view.problem.is_none() {
                        remote.view.problem = Some(PeerProblem::NeverConnected);
                    }
                }
            }
            TimerKind::AnswerWatchdog(peer) => {
                if let Some(remote) = self.remotes.get_mut(&peer) {
                    let mut steps = Vec::new();
                    remote.negotiation.offer_again(&mut steps);
                    if !steps.is_empty() {
                        self.log(format!("no answer from {peer}; offering again"));
                    }
                    self.run_steps(peer, steps);
                }
            }
            TimerKind::AwaitOffer(peer) => {
                if self
                    .remotes
                    .get(&peer)
                    .is_some_and(|r| r.role == Role::Answerer && !r.negotiation.has_remote())
                {
                    self.log(format!("no offer from {peer}; calling them instead"));
                    if let Some(remote) = self.remotes.get_mut(&peer) {
                        remote.role = Role::Offerer;
                    }
                    self.peer_op(peer, PeerOp::StartOffering);
                }
            }
            TimerKind::Missing(peer) => {
                if self.remotes.get(&peer).is_some_and(|r| !r.present) {
                    self.remove_peer(peer);
                }
            }
        }
    }
}

fn timer_is_for(kind: &TimerKind, id: PeerId) -> bool {
    match kind {
        TimerKind::IceDisconnected(p)
        | TimerKind::IceRetry(p)
        | TimerKind::ConnectDeadline(p)
        | TimerKind::AnswerWatchdog(p)
        | TimerKind::AwaitOffer(p)
        | TimerKind::Missing(p) => *p == id,
        TimerKind::Reconnect | TimerKind::Stats => false,
    }
}

fn refresh_tile(remote: &mut Remote) {
    let media_up = matches!(remote.ice, IceState::Connected | IceState::Completed);
    remote.view.tile = if remote.reconnecting || remote.restarting || !remote.present {
        TileState::Reconnecting
    } else if media_up || remote.conn == ConnState::Connected {
        TileState::Connected
    } else if remote.ever_connected {
        TileState::Reconnecting
    } else {
        TileState::Connecting
    };
}

/// Which of their streams is the screen share (announced by id) and which the camera.
fn assign_streams(remote: &mut Remote) {
    let screen_id = remote.screen_stream_id.as_deref();
    remote.view.screen = remote
        .streams
        .iter()
        .find(|(id, _)| Some(id.as_str()) == screen_id)
        .map(|(_, key)| *key);
    remote.view.stream = remote
        .streams
        .iter()
        .find(|(id, _)| Some(id.as_str()) != screen_id)
        .map(|(_, key)| *key);
}

#[cfg(test)]
mod tests;
