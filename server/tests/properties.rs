//! Property tests: random sequences of connect / join / resume / leave / disconnect / time passing /
//! relay / mediaState / chat / lock / unlock over a few rooms, run against the real [`Hub`] (with a
//! manual clock) and, separately, the [`Registry`], and compared after every step with a small
//! model. What every step must deliver to every connection is predicted exactly (the hub only
//! chooses ids and tokens, which the model learns from `joined`), so the properties checked are:
//! - a message never reaches anyone outside the sender's room, nor anyone it was not for;
//! - `from` (and `peer`, `by`) is always the real sender; chat carries the sender's name;
//! - a room never holds more than its capacity, nor the server more than `max_rooms` rooms;
//! - every leave, expiry or (with no grace) disconnect gives exactly one `peerLeft` to each
//!   remaining member; a dropped connection gives `peerReconnecting`, never `peerLeft`, until its
//!   grace has passed;
//! - a resume within the grace keeps the id, tells the room `peerReconnected`, and delivers the
//!   signals sent to the seat meanwhile, in order, right after `joined`; a resume after the grace
//!   (or of a seat still attached) keeps the id too;
//! - chat goes to the whole room in one order and a late joiner gets the last 50;
//! - a closed room admits only people with a token;
//! - empty rooms vanish (the room count is the number of rooms with a seat, held ones included).
//!
//! Case counts are moderate so that the whole file runs in a few seconds on 2 cores.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use server::clock::{Clock, ManualClock};
use server::datadir::Secret;
use server::hub::{Hub, HubConfig, Session};
use server::metrics::Metrics;
use server::passcode::Rate;
use server::registry::{Admission, JoinError, Registry, RoomLock, Seat};
use server::resume::ResumeKeys;
use shared::{
    ChatEntry, ChatText, ClientMessage, ConnectionId, DisplayName, ErrorCode, IceCandidate,
    LockState, MediaState, Member, Passcode, PeerId, ResumeToken, RoomName, SdpKind, ServerMessage,
    SessionDescription, CHAT_HISTORY, PROTOCOL_VERSION,
};

const ROOMS: [&str; 3] = ["red", "green", "blue"];
/// Connections a sequence may open.
const SLOTS: usize = 6;
const START_UNIX_MS: u64 = 1_700_000_000_000;
const CONNECTION: ConnectionId = ConnectionId::new(5);

#[derive(Clone, Debug)]
enum Op {
    Connect,
    Join {
        conn: usize,
        room: usize,
    },
    /// Join with the `token`-th resume token handed out so far (modulo their number).
    Resume {
        conn: usize,
        token: usize,
    },
    Leave {
        conn: usize,
    },
    Disconnect {
        conn: usize,
    },
    /// Seconds pass, then held seats whose grace is over are released.
    Wait {
        secs: u64,
    },
    /// A signal to the `to`-th seat id seen so far.
    Relay {
        from: usize,
        to: usize,
        ice: bool,
    },
    Media {
        conn: usize,
        muted: bool,
    },
    Chat {
        conn: usize,
    },
    Lock {
        conn: usize,
    },
    Unlock {
        conn: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        2 => Just(Op::Connect),
        4 => (slot.clone(), 0..ROOMS.len()).prop_map(|(conn, room)| Op::Join { conn, room }),
        2 => (slot.clone(), 0..16usize).prop_map(|(conn, token)| Op::Resume { conn, token }),
        1 => slot.clone().prop_map(|conn| Op::Leave { conn }),
        2 => slot.clone().prop_map(|conn| Op::Disconnect { conn }),
        1 => (1..15u64).prop_map(|secs| Op::Wait { secs }),
        4 => (slot.clone(), 0..16usize, any::<bool>())
            .prop_map(|(from, to, ice)| Op::Relay { from, to, ice }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(conn, muted)| Op::Media { conn, muted }),
        2 => slot.clone().prop_map(|conn| Op::Chat { conn }),
        1 => slot.clone().prop_map(|conn| Op::Lock { conn }),
        1 => slot.prop_map(|conn| Op::Unlock { conn }),
    ]
}

fn room(index: usize) -> RoomName {
    RoomName::new(ROOMS[index]).unwrap()
}

fn name(conn: usize) -> DisplayName {
    DisplayName::new(format!("P{conn}")).unwrap()
}

/// One connection of the sequence.
struct Conn {
    /// Until disconnected.
    session: Option<Session>,
    /// Taken over by a newer connection: open, but the hub ignores it.
    replaced: bool,
    seat: Option<PeerId>,
}

impl Conn {
    fn usable(&self) -> bool {
        self.session.is_some() && !self.replaced
    }
}

/// A seat in the model.
#[derive(Clone, Debug)]
struct ModelSeat {
    id: PeerId,
    name: DisplayName,
    media: MediaState,
    /// Which connection holds it; `None` while held for a resume.
    conn: Option<usize>,
    held_until: Option<u64>,
    /// Signals sent to it while held.
    kept: Vec<ServerMessage>,
}

impl ModelSeat {
    fn member(&self) -> Member {
        Member {
            id: self.id,
            name: self.name.clone(),
            media: self.media.clone(),
            reconnecting: self.held_until.is_some(),
        }
    }
}

#[derive(Default)]
struct ModelRoom {
    seats: Vec<ModelSeat>,
    lock: LockState,
    chat: VecDeque<ChatEntry>,
}

#[derive(Default)]
struct Model {
    rooms: BTreeMap<usize, ModelRoom>,
    now_ms: u64,
    chats: u64,
}

impl Model {
    fn find(&self, id: PeerId) -> Option<(usize, usize)> {
        self.rooms
            .iter()
            .find_map(|(r, room)| room.seats.iter().position(|s| s.id == id).map(|i| (*r, i)))
    }

    fn seat_mut(&mut self, id: PeerId) -> Option<&mut ModelSeat> {
        let (r, i) = self.find(id)?;
        Some(&mut self.rooms.get_mut(&r)?.seats[i])
    }

    /// Removes seat `id`; returns the connections (attached seats) still in its room.
    fn remove(&mut self, id: PeerId) -> Vec<usize> {
        let Some((r, i)) = self.find(id) else {
            return Vec::new();
        };
        let room = self.rooms.get_mut(&r).unwrap();
        room.seats.remove(i);
        let remaining = room.seats.iter().filter_map(|s| s.conn).collect();
        if room.seats.is_empty() {
            self.rooms.remove(&r);
        }
        remaining
    }

    /// Connections attached to seats of room `r`, except `but`.
    fn attached(&self, r: usize, but: Option<PeerId>) -> Vec<usize> {
        self.rooms
            .get(&r)
            .map(|room| {
                room.seats
                    .iter()
                    .filter(|s| Some(s.id) != but)
                    .filter_map(|s| s.conn)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn seat_count(&self) -> usize {
        self.rooms.values().map(|r| r.seats.len()).sum()
    }

    fn held_count(&self) -> usize {
        self.rooms
            .values()
            .flat_map(|r| &r.seats)
            .filter(|s| s.held_until.is_some())
            .count()
    }
}

/// What a connection has been sent (nothing once disconnected).
fn drain(session: Option<&Session>) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    while let Some(frame) = session.and_then(Session::try_recv) {
        out.push(frame.decode().unwrap());
    }
    out
}

fn error_code(messages: &[ServerMessage]) -> Option<ErrorCode> {
    match messages {
        [ServerMessage::Error { code, .. }] => Some(*code),
        _ => None,
    }
}

fn relay_message(to: PeerId, ice: bool) -> ClientMessage {
    if ice {
        ClientMessage::IceCandidate {
            to,
            connection: CONNECTION,
            candidate: IceCandidate {
                candidate: "candidate:1".into(),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            },
        }
    } else {
        ClientMessage::Description {
            to,
            connection: CONNECTION,
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: "v=0".into(),
            },
        }
    }
}

fn relayed(from: PeerId, message: ClientMessage) -> ServerMessage {
    match message {
        ClientMessage::IceCandidate {
            connection,
            candidate,
            ..
        } => ServerMessage::IceCandidate {
            from,
            connection,
            candidate,
        },
        ClientMessage::Description {
            connection,
            description,
            ..
        } => ServerMessage::Description {
            from,
            connection,
            description,
        },
        other => unreachable!("not a signal: {other:?}"),
    }
}

fn keys() -> ResumeKeys {
    ResumeKeys::new(&Secret::from_text("property test resume secret").unwrap())
}

/// The parameters of one run.
#[derive(Clone, Copy, Debug)]
struct Params {
    capacity: usize,
    max_rooms: usize,
    grace_secs: u64,
}

struct Run {
    params: Params,
    hub: Arc<Hub>,
    clock: Arc<ManualClock>,
    conns: Vec<Conn>,
    model: Model,
    /// Every token handed out: (token, room, seat id).
    tokens: Vec<(ResumeToken, usize, PeerId)>,
    /// Every seat id seen.
    ids: Vec<PeerId>,
    /// What each connection must receive in this step.
    expected: BTreeMap<usize, Vec<ServerMessage>>,
    /// A `joined` a connection must receive first in this step (checked field by field, id and
    /// token learned), and the signals kept for it that follow.
    expected_joined: Option<(usize, ExpectedJoined)>,
    expected_error: Option<(usize, ErrorCode)>,
}

struct ExpectedJoined {
    room: usize,
    /// Known for a resume, chosen by the hub for a newcomer.
    you: Option<PeerId>,
    peers: Vec<Member>,
    resumed: bool,
    lock: LockState,
    chat: Vec<ChatEntry>,
    then: Vec<ServerMessage>,
}

impl Run {
    fn new(params: Params) -> Self {
        let clock = Arc::new(ManualClock::new(START_UNIX_MS));
        let hub = Hub::with_clock(
            HubConfig {
                room_capacity: params.capacity,
                max_rooms: params.max_rooms,
                resume_grace: Duration::from_secs(params.grace_secs),
                ..HubConfig::new(keys())
            },
            Arc::new(Metrics::new()),
            Arc::clone(&clock) as Arc<dyn Clock>,
        );
        Self {
            params,
            hub,
            clock,
            conns: Vec::new(),
            model: Model::default(),
            tokens: Vec::new(),
            ids: Vec::new(),
            expected: BTreeMap::new(),
            expected_joined: None,
            expected_error: None,
        }
    }

    fn expect(&mut self, conn: usize, message: ServerMessage) {
        self.expected.entry(conn).or_default().push(message);
    }

    fn expect_all(&mut self, conns: Vec<usize>, message: &ServerMessage) {
        for conn in conns {
            self.expect(conn, message.clone());
        }
    }

    fn session(&self, conn: usize) -> &Session {
        self.conns[conn].session.as_ref().unwrap()
    }

    /// Handles `message` on `conn` and checks the outcome against `code`.
    fn handle(
        &mut self,
        conn: usize,
        message: ClientMessage,
        code: Option<ErrorCode>,
    ) -> Result<(), TestCaseError> {
        let result = self.session(conn).handle_inline(message);
        prop_assert_eq!(result, code.map_or(Ok(()), Err));
        if let Some(code) = code {
            self.expected_error = Some((conn, code));
        }
        Ok(())
    }

    fn release(&mut self, id: PeerId) {
        let remaining = self.model.remove(id);
        self.expect_all(remaining, &ServerMessage::PeerLeft { peer: id });
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let capacity = self.params.capacity;
        let usable = |conns: &[Conn], i: usize| conns.get(i).is_some_and(Conn::usable);
        match *op {
            Op::Connect if self.conns.len() < SLOTS => {
                let session = self.hub.connect(None);
                self.conns.push(Conn {
                    session: Some(session),
                    replaced: false,
                    seat: None,
                });
            }
            Op::Join { conn, room: r } if usable(&self.conns, conn) => {
                let message = ClientMessage::Join {
                    room: room(r),
                    version: PROTOCOL_VERSION,
                    name: name(conn),
                    resume: None,
                    passcode: None,
                };
                let existing = self.model.rooms.get(&r);
                let code = if self.conns[conn].seat.is_some() {
                    Some(ErrorCode::AlreadyJoined)
                } else if existing.is_some_and(|room| room.lock == LockState::Closed) {
                    Some(ErrorCode::RoomClosed)
                } else if existing.is_some_and(|room| room.seats.len() >= capacity) {
                    Some(ErrorCode::RoomFull)
                } else if existing.is_none() && self.model.rooms.len() >= self.params.max_rooms {
                    Some(ErrorCode::ServerFull)
                } else {
                    None
                };
                self.handle(conn, message, code)?;
                if code.is_none() {
                    let room_state = self.model.rooms.get(&r);
                    self.expected_joined = Some((
                        conn,
                        ExpectedJoined {
                            room: r,
                            you: None,
                            peers: room_state
                                .map(|room| room.seats.iter().map(ModelSeat::member).collect())
                                .unwrap_or_default(),
                            resumed: false,
                            lock: room_state.map(|room| room.lock).unwrap_or_default(),
                            chat: room_state
                                .map(|room| room.chat.iter().cloned().collect())
                                .unwrap_or_default(),
                            then: Vec::new(),
                        },
                    ));
                    // The seat itself is added once its id is known (in `check`).
                }
            }
            Op::Resume { conn, token } if usable(&self.conns, conn) && !self.tokens.is_empty() => {
                let (token, r, id) = self.tokens[token % self.tokens.len()].clone();
                let message = ClientMessage::Join {
                    room: room(r),
                    version: PROTOCOL_VERSION,
                    name: name(conn),
                    resume: Some(token),
                    passcode: None,
                };
                match self.model.find(id) {
                    _ if self.conns[conn].seat.is_some() => {
                        self.handle(conn, message, Some(ErrorCode::AlreadyJoined))?;
                    }
                    Some((seat_room, i)) => {
                        prop_assert_eq!(seat_room, r, "a seat id lives in its token's room");
                        self.handle(conn, message, None)?;
                        let seat = &mut self.model.rooms.get_mut(&r).unwrap().seats[i];
                        let kept = std::mem::take(&mut seat.kept);
                        let old = seat.conn.replace(conn);
                        let was_held = seat.held_until.take().is_some();
                        if let Some(old) = old {
                            // Taken over: the old connection is closed, its queue (empty: every
                            // step drains) follows.
                            self.conns[old].replaced = true;
                            self.conns[old].seat = None;
                        }
                        self.conns[conn].seat = Some(id);
                        if was_held {
                            let others = self.model.attached(r, Some(id));
                            self.expect_all(others, &ServerMessage::PeerReconnected { peer: id });
                        }
                        let room_state = &self.model.rooms[&r];
                        self.expected_joined = Some((
                            conn,
                            ExpectedJoined {
                                room: r,
                                you: Some(id),
                                peers: room_state
                                    .seats
                                    .iter()
                                    .filter(|s| s.id != id)
                                    .map(ModelSeat::member)
                                    .collect(),
                                resumed: true,
                                lock: room_state.lock,
                                chat: room_state.chat.iter().cloned().collect(),
                                then: kept,
                            },
                        ));
                    }
                    None => {
                        // Unknown seat: seated again under the same id, past any lock.
                        let existing = self.model.rooms.get(&r);
                        let code = if existing.is_some_and(|room| room.seats.len() >= capacity) {
                            Some(ErrorCode::RoomFull)
                        } else if existing.is_none()
                            && self.model.rooms.len() >= self.params.max_rooms
                        {
                            Some(ErrorCode::ServerFull)
                        } else {
                            None
                        };
                        self.handle(conn, message, code)?;
                        if code.is_none() {
                            let room_state = self.model.rooms.get(&r);
                            self.expected_joined = Some((
                                conn,
                                ExpectedJoined {
                                    room: r,
                                    you: Some(id),
                                    peers: room_state
                                        .map(|room| {
                                            room.seats.iter().map(ModelSeat::member).collect()
                                        })
                                        .unwrap_or_default(),
                                    resumed: false,
                                    lock: room_state.map(|room| room.lock).unwrap_or_default(),
                                    chat: room_state
                                        .map(|room| room.chat.iter().cloned().collect())
                                        .unwrap_or_default(),
                                    then: Vec::new(),
                                },
                            ));
                        }
                    }
                }
            }
            Op::Leave { conn } if usable(&self.conns, conn) => {
                self.handle(conn, ClientMessage::Leave, None)?;
                if let Some(id) = self.conns[conn].seat.take() {
                    self.release(id);
                }
            }
            Op::Disconnect { conn }
                if self.conns.get(conn).is_some_and(|c| c.session.is_some()) =>
            {
                drop(self.conns[conn].session.take());
                if let Some(id) = self.conns[conn].seat.take() {
                    if self.params.grace_secs == 0 {
                        self.release(id);
                    } else {
                        let until = self.model.now_ms + self.params.grace_secs * 1000;
                        let seat = self.model.seat_mut(id).unwrap();
                        seat.conn = None;
                        seat.held_until = Some(until);
                        let (r, _) = self.model.find(id).unwrap();
                        let others = self.model.attached(r, Some(id));
                        self.expect_all(others, &ServerMessage::PeerReconnecting { peer: id });
                    }
                }
            }
            Op::Wait { secs } => {
                self.clock.advance(Duration::from_secs(secs));
                self.model.now_ms += secs * 1000;
                let now = self.model.now_ms;
                let mut due: Vec<(u64, PeerId)> = self
                    .model
                    .rooms
                    .values()
                    .flat_map(|room| &room.seats)
                    .filter_map(|s| {
                        s.held_until
                            .filter(|until| *until <= now)
                            .map(|u| (u, s.id))
                    })
                    .collect();
                due.sort();
                let released = self.hub.expire();
                prop_assert_eq!(released, due.len());
                for (_, id) in due {
                    self.release(id);
                }
            }
            Op::Relay { from, to, ice } if usable(&self.conns, from) && !self.ids.is_empty() => {
                let to_id = self.ids[to % self.ids.len()];
                let from_id = self.conns[from].seat;
                let message = relay_message(to_id, ice);
                let from_room = from_id.and_then(|id| self.model.find(id)).map(|(r, _)| r);
                let to_seat = self.model.find(to_id);
                let code = match from_id {
                    None => Some(ErrorCode::NotInRoom),
                    Some(id) if id == to_id || to_seat.map(|(r, _)| r) != from_room => {
                        Some(ErrorCode::UnknownPeer)
                    }
                    Some(_) => None,
                };
                self.handle(from, message.clone(), code)?;
                if let (None, Some(from_id), Some((r, i))) = (code, from_id, to_seat) {
                    let delivered = relayed(from_id, message);
                    let seat = &mut self.model.rooms.get_mut(&r).unwrap().seats[i];
                    match seat.conn {
                        Some(conn) => self.expect(conn, delivered),
                        None => seat.kept.push(delivered),
                    }
                }
            }
            Op::Media { conn, muted } if usable(&self.conns, conn) => {
                let state = MediaState {
                    muted,
                    camera_off: !muted,
                    screen: None,
                };
                let message = ClientMessage::MediaState(state.clone());
                match self.conns[conn].seat {
                    None => self.handle(conn, message, Some(ErrorCode::NotInRoom))?,
                    Some(id) => {
                        self.handle(conn, message, None)?;
                        self.model.seat_mut(id).unwrap().media = state.clone();
                        let (r, _) = self.model.find(id).unwrap();
                        let others = self.model.attached(r, Some(id));
                        self.expect_all(others, &ServerMessage::PeerMediaState { peer: id, state });
                    }
                }
            }
            Op::Chat { conn } if usable(&self.conns, conn) => {
                self.model.chats += 1;
                let text = ChatText::new(format!("message {}", self.model.chats)).unwrap();
                let message = ClientMessage::Chat { text: text.clone() };
                match self.conns[conn].seat {
                    None => self.handle(conn, message, Some(ErrorCode::NotInRoom))?,
                    Some(id) => {
                        self.handle(conn, message, None)?;
                        let (r, i) = self.model.find(id).unwrap();
                        let room_state = self.model.rooms.get_mut(&r).unwrap();
                        let entry = ChatEntry {
                            from: id,
                            name: room_state.seats[i].name.clone(),
                            text,
                            at: START_UNIX_MS + self.model.now_ms,
                        };
                        if room_state.chat.len() == CHAT_HISTORY {
                            room_state.chat.pop_front();
                        }
                        room_state.chat.push_back(entry.clone());
                        let everyone = self.model.attached(r, None);
                        self.expect_all(everyone, &ServerMessage::Chat(entry));
                    }
                }
            }
            Op::Lock { conn } | Op::Unlock { conn } if usable(&self.conns, conn) => {
                let locking = matches!(op, Op::Lock { .. });
                let message = if locking {
                    ClientMessage::Lock {
                        passcode: Passcode::empty(),
                    }
                } else {
                    ClientMessage::Unlock
                };
                match self.conns[conn].seat {
                    None => self.handle(conn, message, Some(ErrorCode::NotInRoom))?,
                    Some(id) => {
                        self.handle(conn, message, None)?;
                        let (r, _) = self.model.find(id).unwrap();
                        let room_state = self.model.rooms.get_mut(&r).unwrap();
                        let lock = if locking {
                            LockState::Closed
                        } else {
                            LockState::Open
                        };
                        if locking || room_state.lock != LockState::Open {
                            room_state.lock = lock;
                            let everyone = self.model.attached(r, None);
                            self.expect_all(everyone, &ServerMessage::LockChanged { lock, by: id });
                        }
                    }
                }
            }
            // An operation on a slot that is not connected (or no longer): nothing happens.
            _ => {}
        }
        self.check(op)
    }

    /// Compares what every connection got with the model's prediction.
    fn check(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let expected_joined = self.expected_joined.take();
        let expected_error = self.expected_error.take();
        let mut got: Vec<VecDeque<ServerMessage>> = self
            .conns
            .iter()
            .map(|c| drain(c.session.as_ref()).into())
            .collect();
        // The joiner first: its `joined` names its id, and the others' `peerJoined` follow
        // from it.
        if let Some((i, joined)) = expected_joined {
            let Some(ServerMessage::Joined {
                room: got_room,
                you,
                peers,
                capacity,
                ice_servers,
                resume_token,
                resumed,
                lock,
                chat,
            }) = got[i].pop_front()
            else {
                return Err(TestCaseError::fail(format!(
                    "connection {i}: no joined after {op:?}: {:?}",
                    got[i]
                )));
            };
            prop_assert_eq!(got_room, room(joined.room));
            prop_assert_eq!(&peers, &joined.peers);
            prop_assert_eq!(capacity as usize, self.params.capacity);
            prop_assert!(ice_servers.is_empty());
            prop_assert_eq!(resumed, joined.resumed);
            prop_assert_eq!(lock, joined.lock);
            prop_assert_eq!(&chat, &joined.chat);
            match joined.you {
                Some(id) => prop_assert_eq!(you, id),
                None => {
                    prop_assert!(self.model.find(you).is_none(), "a new id is unused");
                    prop_assert!((1..PeerId::LIMIT).contains(&you.get()));
                }
            }
            if self.model.find(you).is_none() {
                // A newcomer (or a restored seat): add it, tell the others.
                let seat = ModelSeat {
                    id: you,
                    name: name(i),
                    media: MediaState::default(),
                    conn: Some(i),
                    held_until: None,
                    kept: Vec::new(),
                };
                let others = self.model.attached(joined.room, None);
                self.expect_all(
                    others,
                    &ServerMessage::PeerJoined {
                        peer: seat.member(),
                    },
                );
                self.model
                    .rooms
                    .entry(joined.room)
                    .or_default()
                    .seats
                    .push(seat);
                self.conns[i].seat = Some(you);
            }
            if !self.ids.contains(&you) {
                self.ids.push(you);
            }
            self.tokens.push((resume_token, joined.room, you));
            let take = joined.then.len().min(got[i].len());
            let then: Vec<ServerMessage> = got[i].drain(..take).collect();
            prop_assert_eq!(&then, &joined.then, "kept signals, in order, after joined");
        }
        let mut expected = std::mem::take(&mut self.expected);
        for (i, got) in got.into_iter().enumerate() {
            let got: Vec<ServerMessage> = got.into();
            if self.conns[i].replaced {
                prop_assert!(got.is_empty(), "a replaced connection got {:?}", got);
                continue;
            }
            if let Some((who, code)) = expected_error.filter(|(who, _)| *who == i) {
                prop_assert_eq!(
                    error_code(&got),
                    Some(code),
                    "connection {}: {:?}",
                    who,
                    got
                );
                continue;
            }
            let want = expected.remove(&i).unwrap_or_default();
            prop_assert_eq!(&got, &want, "connection {} after {:?}", i, op);
        }
        // Rooms: only those with a seat exist; capacity and the room limit hold.
        prop_assert_eq!(self.hub.room_count(), self.model.rooms.len());
        prop_assert!(self.model.rooms.len() <= self.params.max_rooms);
        for room_state in self.model.rooms.values() {
            prop_assert!(!room_state.seats.is_empty());
            prop_assert!(room_state.seats.len() <= self.params.capacity);
        }
        prop_assert_eq!(self.hub.seat_count(), self.model.seat_count());
        prop_assert_eq!(self.hub.held_count(), self.model.held_count());
        let open = self.conns.iter().filter(|c| c.session.is_some()).count();
        prop_assert_eq!(self.hub.connection_count(), open);
        Ok(())
    }
}

fn check_hub(params: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut run = Run::new(params);
    for op in &ops {
        run.step(op)?;
    }
    // Everyone disconnects and the grace passes: nothing is left.
    for conn in &mut run.conns {
        conn.session = None;
    }
    run.clock
        .advance(Duration::from_secs(params.grace_secs + 1));
    run.hub.expire();
    prop_assert_eq!(run.hub.room_count(), 0);
    prop_assert_eq!(run.hub.connection_count(), 0);
    prop_assert_eq!(run.hub.seat_count(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hub_keeps_rooms_apart_and_seats_through_drops(
        capacity in 1usize..=4,
        max_rooms in 1usize..=3,
        grace_secs in prop_oneof![Just(0u64), Just(10u64)],
        ops in prop::collection::vec(op(), 1..80),
    ) {
        check_hub(Params { capacity, max_rooms, grace_secs }, ops)?;
    }

    #[test]
    fn registry_matches_the_model(
        capacity in 1usize..=3,
        max_rooms in 1usize..=3,
        ops in prop::collection::vec((0u64..6, prop::option::of(0..ROOMS.len())), 1..100),
    ) {
        let mut registry = Registry::new(capacity, max_rooms, Rate { per_minute: 0 });
        let mut model: BTreeMap<usize, Vec<PeerId>> = BTreeMap::new();
        let room_of = |model: &BTreeMap<usize, Vec<PeerId>>, id: PeerId| {
            model.iter().find(|(_, m)| m.contains(&id)).map(|(r, _)| *r)
        };
        for (peer, action) in ops {
            let id = PeerId::new(peer + 1);
            match action {
                Some(r) => {
                    let seat = Seat::new(id, DisplayName::new(format!("P{peer}")).unwrap());
                    let result = registry
                        .join(&room(r), seat, Admission::Newcomer, RoomLock::Open)
                        .map(|entered| entered.others.iter().map(|m| m.id).collect::<Vec<_>>());
                    let want = if let Some(current) = room_of(&model, id) {
                        Err(JoinError::SeatTaken(room(current)))
                    } else if model.get(&r).is_some_and(|m| m.len() >= capacity) {
                        Err(JoinError::RoomFull { capacity })
                    } else if !model.contains_key(&r) && model.len() >= max_rooms {
                        Err(JoinError::TooManyRooms { max_rooms })
                    } else {
                        let before = model.get(&r).cloned().unwrap_or_default();
                        model.entry(r).or_default().push(id);
                        Ok(before)
                    };
                    prop_assert_eq!(result, want);
                }
                None => {
                    let had_room = room_of(&model, id);
                    let mut remaining = Vec::new();
                    if let Some(r) = had_room {
                        let members = model.get_mut(&r).unwrap();
                        members.retain(|m| *m != id);
                        remaining = members.clone();
                        if remaining.is_empty() {
                            model.remove(&r);
                        }
                    }
                    let departure = registry.leave(id);
                    prop_assert_eq!(departure.as_ref().map(|d| d.room.clone()), had_room.map(room));
                    prop_assert_eq!(departure.map(|d| d.remaining).unwrap_or_default(), remaining);
                }
            }
            prop_assert_eq!(registry.room_count(), model.len());
            let peers: usize = model.values().map(Vec::len).sum();
            prop_assert_eq!(registry.peer_count(), peers);
            for (r, name) in ROOMS.iter().enumerate() {
                let want = model.get(&r).cloned().unwrap_or_default();
                let got: Vec<PeerId> = registry
                    .members(&RoomName::new(*name).unwrap())
                    .iter()
                    .map(|s| s.id)
                    .collect();
                prop_assert_eq!(got, want.clone());
                prop_assert!(want.len() <= capacity);
            }
            for other in 1..=6 {
                let other = PeerId::new(other);
                prop_assert_eq!(
                    registry.same_room(id, other),
                    room_of(&model, id).is_some() && room_of(&model, id) == room_of(&model, other)
                );
            }
        }
    }
}

// The hub is used from many tasks at once; it must stay `Send + Sync`.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Arc<Hub>>();
};
