//! Property tests: random sequences of connect / join / leave / disconnect / relay / mediaState
//! over a few rooms, run against the real [`Hub`] (and, separately, the [`Registry`]) and
//! compared after every step with a small model of who is in which room. What every step
//! must deliver is predicted exactly, so the properties checked are:
//! - a message never reaches anyone outside the sender's room, nor anyone it was not for;
//! - `from` (and `peer`) is always the real sender;
//! - a room never holds more than its capacity, nor the server more than `max_rooms` rooms;
//! - every leave or disconnect gives exactly one `peerLeft` to each remaining member;
//! - empty rooms vanish (the room count is the number of non-empty rooms).
//!
//! Case counts are moderate so that the whole file runs in a few seconds on 2 cores.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use server::hub::{Hub, HubConfig, Session};
use server::registry::{JoinError, Registry};
use shared::{
    ClientMessage, ErrorCode, IceCandidate, MediaState, PeerId, RoomName, SdpKind, ServerMessage,
    SessionDescription, PROTOCOL_VERSION,
};

const ROOMS: [&str; 3] = ["red", "green", "blue"];
/// Connections a sequence may open.
const SLOTS: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    Connect,
    Join { peer: usize, room: usize },
    Leave { peer: usize },
    Disconnect { peer: usize },
    Relay { from: usize, to: usize, ice: bool },
    Media { peer: usize, muted: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        2 => Just(Op::Connect),
        4 => (slot.clone(), 0..ROOMS.len()).prop_map(|(peer, room)| Op::Join { peer, room }),
        1 => slot.clone().prop_map(|peer| Op::Leave { peer }),
        1 => slot.clone().prop_map(|peer| Op::Disconnect { peer }),
        4 => (slot.clone(), slot.clone(), any::<bool>())
            .prop_map(|(from, to, ice)| Op::Relay { from, to, ice }),
        2 => (slot, any::<bool>()).prop_map(|(peer, muted)| Op::Media { peer, muted }),
    ]
}

fn room(index: usize) -> RoomName {
    RoomName::new(ROOMS[index]).unwrap()
}

/// One connection of the sequence: its session, until disconnected.
struct Conn {
    id: PeerId,
    session: Option<Session>,
}

/// The model: members of each room, in joining order.
#[derive(Default)]
struct Model {
    rooms: BTreeMap<usize, Vec<PeerId>>,
}

impl Model {
    fn room_of(&self, peer: PeerId) -> Option<usize> {
        self.rooms
            .iter()
            .find(|(_, members)| members.contains(&peer))
            .map(|(room, _)| *room)
    }

    /// Removes `peer` from its room; returns who remains (to be told).
    fn leave(&mut self, peer: PeerId) -> Vec<PeerId> {
        let Some(room) = self.room_of(peer) else {
            return Vec::new();
        };
        let members = self.rooms.get_mut(&room).unwrap();
        members.retain(|m| *m != peer);
        let remaining = members.clone();
        if remaining.is_empty() {
            self.rooms.remove(&room);
        }
        remaining
    }
}

/// What a connection has been sent (nothing once disconnected: its queue went with it).
fn drain(session: Option<&Session>) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    while let Some(message) = session.and_then(Session::try_recv) {
        out.push(*message);
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
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: "v=0".into(),
            },
        }
    }
}

/// Runs `ops` against a hub and the model, checking every step.
fn check_hub(capacity: usize, max_rooms: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let hub = Hub::new(HubConfig {
        room_capacity: capacity,
        max_rooms,
        // Large enough that no queue overflows: slow readers are tested elsewhere.
        queue_capacity: 1024,
        ice_servers: Default::default(),
    });
    let mut conns: Vec<Conn> = Vec::new();
    let mut model = Model::default();

    for op in ops {
        // What each connection (by index) must receive for this step; everyone else nothing.
        let mut expected: BTreeMap<usize, Vec<ServerMessage>> = BTreeMap::new();
        let index_of = |conns: &[Conn], id: PeerId| conns.iter().position(|c| c.id == id).unwrap();
        let live = |conns: &[Conn], i: usize| conns.get(i).is_some_and(|c| c.session.is_some());
        // Errors are checked by code only (their sentences are for people).
        let mut expected_error: Option<(usize, ErrorCode)> = None;

        match op {
            Op::Connect if conns.len() < SLOTS => {
                let session = hub.connect();
                conns.push(Conn {
                    id: session.id(),
                    session: Some(session),
                });
            }
            Op::Join { peer, room: r } if live(&conns, peer) => {
                let id = conns[peer].id;
                let result = conns[peer]
                    .session
                    .as_ref()
                    .unwrap()
                    .handle(ClientMessage::Join {
                        room: room(r),
                        version: PROTOCOL_VERSION,
                    });
                let code = if model.room_of(id).is_some() {
                    Some(ErrorCode::AlreadyJoined)
                } else if model.rooms.get(&r).is_some_and(|m| m.len() >= capacity) {
                    Some(ErrorCode::RoomFull)
                } else if !model.rooms.contains_key(&r) && model.rooms.len() >= max_rooms {
                    Some(ErrorCode::ServerFull)
                } else {
                    None
                };
                prop_assert_eq!(result, code.map_or(Ok(()), Err));
                match code {
                    Some(code) => expected_error = Some((peer, code)),
                    None => {
                        let before = model.rooms.get(&r).cloned().unwrap_or_default();
                        for member in &before {
                            expected
                                .entry(index_of(&conns, *member))
                                .or_default()
                                .push(ServerMessage::PeerJoined { peer: id });
                        }
                        expected
                            .entry(peer)
                            .or_default()
                            .push(ServerMessage::Joined {
                                room: room(r),
                                you: id,
                                peers: before,
                                capacity: capacity as u32,
                                ice_servers: Vec::new(),
                            });
                        model.rooms.entry(r).or_default().push(id);
                    }
                }
            }
            Op::Leave { peer } if live(&conns, peer) => {
                let id = conns[peer].id;
                let result = conns[peer]
                    .session
                    .as_ref()
                    .unwrap()
                    .handle(ClientMessage::Leave);
                prop_assert_eq!(result, Ok(()));
                for member in model.leave(id) {
                    expected
                        .entry(index_of(&conns, member))
                        .or_default()
                        .push(ServerMessage::PeerLeft { peer: id });
                }
            }
            Op::Disconnect { peer } if live(&conns, peer) => {
                let id = conns[peer].id;
                drop(conns[peer].session.take());
                for member in model.leave(id) {
                    expected
                        .entry(index_of(&conns, member))
                        .or_default()
                        .push(ServerMessage::PeerLeft { peer: id });
                }
            }
            Op::Relay { from, to, ice } if live(&conns, from) && to < conns.len() => {
                let (from_id, to_id) = (conns[from].id, conns[to].id);
                let result = conns[from]
                    .session
                    .as_ref()
                    .unwrap()
                    .handle(relay_message(to_id, ice));
                let sender_room = model.room_of(from_id);
                let code = if sender_room.is_none() {
                    Some(ErrorCode::NotInRoom)
                } else if to_id == from_id || model.room_of(to_id) != sender_room {
                    Some(ErrorCode::UnknownPeer)
                } else {
                    None
                };
                prop_assert_eq!(result, code.map_or(Ok(()), Err));
                match code {
                    Some(code) => expected_error = Some((from, code)),
                    None => {
                        let message = match relay_message(to_id, ice) {
                            ClientMessage::IceCandidate { candidate, .. } => {
                                ServerMessage::IceCandidate {
                                    from: from_id,
                                    candidate,
                                }
                            }
                            ClientMessage::Description { description, .. } => {
                                ServerMessage::Description {
                                    from: from_id,
                                    description,
                                }
                            }
                            _ => unreachable!(),
                        };
                        expected.entry(to).or_default().push(message);
                    }
                }
            }
            Op::Media { peer, muted } if live(&conns, peer) => {
                let id = conns[peer].id;
                let state = MediaState {
                    muted,
                    camera_off: !muted,
                };
                let result = conns[peer]
                    .session
                    .as_ref()
                    .unwrap()
                    .handle(ClientMessage::MediaState(state));
                match model.room_of(id) {
                    None => {
                        prop_assert_eq!(result, Err(ErrorCode::NotInRoom));
                        expected_error = Some((peer, ErrorCode::NotInRoom));
                    }
                    Some(r) => {
                        prop_assert_eq!(result, Ok(()));
                        for member in model.rooms[&r].iter().filter(|m| **m != id) {
                            expected
                                .entry(index_of(&conns, *member))
                                .or_default()
                                .push(ServerMessage::PeerMediaState { peer: id, state });
                        }
                    }
                }
            }
            // An operation on a slot that is not connected (or no longer): nothing happens.
            _ => {}
        }

        for (i, conn) in conns.iter().enumerate() {
            let got = drain(conn.session.as_ref());
            if let Some((who, code)) = expected_error.filter(|(who, _)| *who == i) {
                prop_assert_eq!(
                    error_code(&got),
                    Some(code),
                    "connection {}: {:?}",
                    who,
                    got
                );
            } else {
                let want = expected.remove(&i).unwrap_or_default();
                prop_assert_eq!(&got, &want, "connection {} after {:?}", i, op);
            }
        }
        // Rooms: only non-empty ones exist; capacity and the room limit hold.
        prop_assert_eq!(hub.room_count(), model.rooms.len());
        prop_assert!(model.rooms.len() <= max_rooms);
        for members in model.rooms.values() {
            prop_assert!(!members.is_empty() && members.len() <= capacity);
        }
        let live_count = conns.iter().filter(|c| c.session.is_some()).count();
        prop_assert_eq!(hub.connection_count(), live_count);
    }
    // Everyone disconnects: nothing is left.
    drop(conns);
    prop_assert_eq!(hub.room_count(), 0);
    prop_assert_eq!(hub.connection_count(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hub_keeps_rooms_apart_and_tells_everyone_exactly_once(
        capacity in 1usize..=3,
        max_rooms in 1usize..=3,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        check_hub(capacity, max_rooms, ops)?;
    }

    #[test]
    fn registry_matches_the_model(
        capacity in 1usize..=3,
        max_rooms in 1usize..=3,
        ops in prop::collection::vec((0u64..6, prop::option::of(0..ROOMS.len())), 1..100),
    ) {
        let mut registry = Registry::new(capacity, max_rooms);
        let mut model = Model::default();
        for (peer, action) in ops {
            let id = PeerId::new(peer);
            match action {
                Some(r) => {
                    let result = registry.join(id, &room(r));
                    let want = if let Some(current) = model.room_of(id) {
                        Err(JoinError::AlreadyJoined(room(current)))
                    } else if model.rooms.get(&r).is_some_and(|m| m.len() >= capacity) {
                        Err(JoinError::RoomFull { capacity })
                    } else if !model.rooms.contains_key(&r) && model.rooms.len() >= max_rooms {
                        Err(JoinError::TooManyRooms { max_rooms })
                    } else {
                        let before = model.rooms.get(&r).cloned().unwrap_or_default();
                        model.rooms.entry(r).or_default().push(id);
                        Ok(before)
                    };
                    prop_assert_eq!(result, want);
                }
                None => {
                    let had_room = model.room_of(id);
                    let remaining = model.leave(id);
                    let departure = registry.leave(id);
                    prop_assert_eq!(departure.as_ref().map(|d| d.room.clone()), had_room.map(room));
                    prop_assert_eq!(departure.map(|d| d.remaining).unwrap_or_default(), remaining);
                }
            }
            prop_assert_eq!(registry.room_count(), model.rooms.len());
            let peers: usize = model.rooms.values().map(Vec::len).sum();
            prop_assert_eq!(registry.peer_count(), peers);
            for (r, name) in ROOMS.iter().enumerate() {
                let want = model.rooms.get(&r).cloned().unwrap_or_default();
                prop_assert_eq!(registry.members(&RoomName::new(*name).unwrap()), &want[..]);
                prop_assert!(want.len() <= capacity);
            }
            for other in 0..6 {
                let other = PeerId::new(other);
                prop_assert_eq!(
                    registry.same_room(id, other),
                    model.room_of(id).is_some() && model.room_of(id) == model.room_of(other)
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
