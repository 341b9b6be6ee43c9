//! The hub without sockets: sessions driven directly, time from a [`ManualClock`].

use std::net::IpAddr;

use shared::{ConnectionId, LockState, MediaState, SdpKind, SessionDescription, CHAT_HISTORY};

use super::*;
use crate::clock::ManualClock;
use crate::datadir::Secret;

const START_UNIX_MS: u64 = 1_700_000_000_000;
const GRACE: Duration = Duration::from_secs(30);

struct Fixture {
    hub: Arc<Hub>,
    clock: Arc<ManualClock>,
}

fn keys() -> ResumeKeys {
    ResumeKeys::new(&Secret::from_text("hub unit test resume secret").unwrap())
}

fn config(capacity: usize) -> HubConfig {
    HubConfig {
        room_capacity: capacity,
        passcode_iterations: NonZeroU32::new(100).unwrap(),
        ..HubConfig::new(keys())
    }
}

fn fixture_with(config: HubConfig) -> Fixture {
    let clock = Arc::new(ManualClock::new(START_UNIX_MS));
    let hub = Hub::with_clock(
        config,
        Arc::new(Metrics::new()),
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    Fixture { hub, clock }
}

fn fixture(capacity: usize) -> Fixture {
    fixture_with(config(capacity))
}

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

fn name(text: &str) -> DisplayName {
    DisplayName::new(text).unwrap()
}

fn join(room_name: &str, who: &str) -> ClientMessage {
    ClientMessage::Join {
        room: room(room_name),
        version: PROTOCOL_VERSION,
        name: name(who),
        resume: None,
        passcode: None,
    }
}

fn join_with(
    room_name: &str,
    resume: Option<ResumeToken>,
    passcode: Option<&str>,
) -> ClientMessage {
    ClientMessage::Join {
        room: room(room_name),
        version: PROTOCOL_VERSION,
        name: name("Back"),
        resume,
        passcode: passcode.map(|p| Passcode::new(p).unwrap()),
    }
}

fn offer(to: PeerId, sdp: &str) -> ClientMessage {
    ClientMessage::Description {
        to,
        connection: ConnectionId::new(7),
        description: SessionDescription {
            kind: SdpKind::Offer,
            sdp: sdp.into(),
        },
    }
}

fn drain(session: &Session) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    while let Some(frame) = session.try_recv() {
        out.push(frame.decode().unwrap());
    }
    out
}

fn error_code(messages: &[ServerMessage]) -> Option<ErrorCode> {
    messages.iter().find_map(|m| match m {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    })
}

struct Joined {
    you: PeerId,
    peers: Vec<Member>,
    token: ResumeToken,
    resumed: bool,
    lock: LockState,
    chat: Vec<ChatEntry>,
}

/// The `joined` at the front of `messages` (the rest returned).
fn joined(messages: Vec<ServerMessage>) -> (Joined, Vec<ServerMessage>) {
    let mut messages = messages.into_iter();
    match messages.next() {
        Some(ServerMessage::Joined {
            you,
            peers,
            resume_token,
            resumed,
            lock,
            chat,
            ..
        }) => (
            Joined {
                you,
                peers,
                token: resume_token,
                resumed,
                lock,
                chat,
            },
            messages.collect(),
        ),
        other => panic!("expected joined, got {other:?}"),
    }
}

impl Fixture {
    /// A new connection that joined `room_name` as `who`, its `joined` read.
    fn member(&self, room_name: &str, who: &str) -> (Session, Joined) {
        let session = self.hub.connect(None);
        session.handle_inline(join(room_name, who)).unwrap();
        let (joined, rest) = joined(drain(&session));
        assert!(rest.is_empty(), "{rest:?}");
        (session, joined)
    }
}

#[test]
fn joined_and_peer_joined_carry_names_and_media_and_random_ids() {
    let f = fixture(4);
    let (a, a_joined) = f.member("x", "Ana");
    assert!(a_joined.peers.is_empty() && !a_joined.resumed);
    assert_eq!(a_joined.lock, LockState::Open);
    assert!((1..PeerId::LIMIT).contains(&a_joined.you.get()));
    let media = MediaState {
        muted: true,
        camera_off: false,
        screen: Some("screen-1".into()),
    };
    a.handle_inline(ClientMessage::MediaState(media.clone()))
        .unwrap();
    let (b, b_joined) = f.member("x", "Bo");
    assert_ne!(a_joined.you, b_joined.you);
    // The newcomer learns the others' last media state from `joined`, without a re-announce.
    assert_eq!(
        b_joined.peers,
        [Member {
            id: a_joined.you,
            name: name("Ana"),
            media,
            reconnecting: false
        }]
    );
    assert_eq!(
        drain(&a),
        [ServerMessage::PeerJoined {
            peer: Member {
                id: b_joined.you,
                name: name("Bo"),
                media: MediaState::default(),
                reconnecting: false
            }
        }]
    );
    assert_eq!(a.seat(), Some(a_joined.you));
    drop(b);
}

#[test]
fn relay_stamps_from_and_keeps_the_connection_id() {
    let f = fixture(3);
    let (a, a_j) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    let (c, _) = f.member("x", "C");
    drain(&a);
    drain(&b);
    a.handle_inline(offer(b_j.you, "v=0 opaque\r\n")).unwrap();
    assert_eq!(
        drain(&b),
        [ServerMessage::Description {
            from: a_j.you,
            connection: ConnectionId::new(7),
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: "v=0 opaque\r\n".into()
            }
        }]
    );
    assert!(drain(&a).is_empty());
    assert!(drain(&c).is_empty(), "only the addressed peer");
}

#[test]
fn media_state_goes_to_the_rest_of_the_room_stamped() {
    let f = fixture(3);
    let lobby = f.hub.connect(None);
    assert_eq!(
        lobby.handle_inline(ClientMessage::MediaState(MediaState::default())),
        Err(ErrorCode::NotInRoom)
    );
    let (a, a_j) = f.member("x", "A");
    let (b, _) = f.member("x", "B");
    let (c, _) = f.member("y", "C");
    drain(&a);
    let state = MediaState {
        muted: true,
        ..MediaState::default()
    };
    a.handle_inline(ClientMessage::MediaState(state.clone()))
        .unwrap();
    assert_eq!(
        drain(&b),
        [ServerMessage::PeerMediaState {
            peer: a_j.you,
            state
        }]
    );
    assert!(drain(&a).is_empty(), "not echoed to the sender");
    assert!(drain(&c).is_empty(), "not to other rooms");
}

#[test]
fn relay_outside_the_room_is_refused() {
    let f = fixture(2);
    let lobby = f.hub.connect(None);
    let (a, a_j) = f.member("x", "A");
    let (_b, b_j) = f.member("y", "B");
    assert_eq!(
        lobby.handle_inline(offer(a_j.you, "x")),
        Err(ErrorCode::NotInRoom)
    );
    assert_eq!(
        a.handle_inline(offer(b_j.you, "x")),
        Err(ErrorCode::UnknownPeer)
    );
    assert_eq!(
        a.handle_inline(offer(a_j.you, "x")),
        Err(ErrorCode::UnknownPeer)
    );
    assert_eq!(error_code(&drain(&a)), Some(ErrorCode::UnknownPeer));
}

#[test]
fn stale_protocol_version_and_double_join_are_refused() {
    let f = fixture(2);
    let a = f.hub.connect(None);
    let stale = ClientMessage::Join {
        room: room("x"),
        version: 1,
        name: name("A"),
        resume: None,
        passcode: None,
    };
    assert_eq!(a.handle_inline(stale), Err(ErrorCode::UnsupportedVersion));
    assert_eq!(f.hub.room_count(), 0);
    a.handle_inline(join("x", "A")).unwrap();
    assert_eq!(
        a.handle_inline(join("y", "A")),
        Err(ErrorCode::AlreadyJoined)
    );
    assert_eq!(f.hub.room_count(), 1);
}

#[test]
fn leave_releases_the_seat_at_once() {
    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    b.handle_inline(ClientMessage::Leave).unwrap();
    assert_eq!(drain(&a), [ServerMessage::PeerLeft { peer: b_j.you }]);
    assert_eq!(b.seat(), None);
    assert_eq!(f.hub.held_count(), 0);
    // The connection may join again, with a new id.
    b.handle_inline(join("x", "B")).unwrap();
    let (again, _) = joined(drain(&b));
    assert_ne!(again.you, b_j.you);
}

#[test]
fn a_dropped_connection_is_held_for_the_grace_then_released() {
    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    drop(b);
    assert_eq!(
        drain(&a),
        [ServerMessage::PeerReconnecting { peer: b_j.you }]
    );
    assert_eq!(f.hub.held_count(), 1);
    assert_eq!(f.hub.connection_count(), 1);
    // Newcomers see the seat as reconnecting, and it still counts toward capacity.
    let c = f.hub.connect(None);
    assert_eq!(c.handle_inline(join("x", "C")), Err(ErrorCode::RoomFull));
    f.clock.advance(GRACE - Duration::from_millis(1));
    assert_eq!(f.hub.expire(), 0);
    assert!(drain(&a).is_empty());
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(f.hub.expire(), 1);
    assert_eq!(drain(&a), [ServerMessage::PeerLeft { peer: b_j.you }]);
    assert_eq!(f.hub.held_count(), 0);
    assert_eq!(f.hub.seat_count(), 1);
    // A room whose last seat expires vanishes.
    drop(a);
    f.clock.advance(GRACE);
    f.hub.expire();
    assert_eq!(f.hub.room_count(), 0);
}

#[test]
fn resume_within_the_grace_keeps_the_id_and_delivers_kept_signals() {
    let f = fixture(3);
    let (a, a_j) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    drop(b);
    drain(&a);
    // Meanwhile: a signal (kept), a media state and a chat message (restated by `joined`).
    a.handle_inline(offer(b_j.you, "while away")).unwrap();
    a.handle_inline(ClientMessage::MediaState(MediaState {
        muted: true,
        ..MediaState::default()
    }))
    .unwrap();
    a.handle_inline(ClientMessage::Chat {
        text: ChatText::new("where did B go?").unwrap(),
    })
    .unwrap();
    drain(&a);
    f.clock.advance(Duration::from_secs(10));
    let back = f.hub.connect(None);
    back.handle_inline(join_with("x", Some(b_j.token), None))
        .unwrap();
    let (j, rest) = joined(drain(&back));
    assert_eq!(j.you, b_j.you, "same id");
    assert!(j.resumed);
    assert_eq!(j.peers.len(), 1);
    assert!(j.peers[0].media.muted, "current state of the others");
    assert_eq!(j.chat.len(), 1, "chat history instead of the chat message");
    assert_eq!(j.chat[0].text.as_str(), "where did B go?");
    assert_eq!(
        rest,
        [ServerMessage::Description {
            from: a_j.you,
            connection: ConnectionId::new(7),
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: "while away".into()
            }
        }],
        "only the signal was kept, after joined"
    );
    assert_eq!(
        drain(&a),
        [ServerMessage::PeerReconnected { peer: b_j.you }]
    );
    // The grace timer that was running finds nothing to expire.
    f.clock.advance(GRACE);
    assert_eq!(f.hub.expire(), 0);
    assert!(drain(&a).is_empty(), "never a peerLeft");
    // And the resumed seat works both ways.
    back.handle_inline(offer(a_j.you, "hello again")).unwrap();
    assert!(
        matches!(&drain(&a)[..], [ServerMessage::Description { from, .. }] if *from == b_j.you)
    );
    assert_eq!(back.seat(), Some(b_j.you));
    // The fresh token in the resumed `joined` works too.
    drop(back);
    drain(&a);
    let third = f.hub.connect(None);
    third
        .handle_inline(join_with("x", Some(j.token), None))
        .unwrap();
    assert!(joined(drain(&third)).0.resumed);
}

#[test]
fn kept_signals_that_overflow_release_the_seat() {
    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    drop(b);
    drain(&a);
    // A held seat keeps at most half the queue bound.
    let big = "s".repeat(60_000);
    let mut sent = 0usize;
    while drain(&a).is_empty() {
        a.handle_inline(offer(b_j.you, &big)).unwrap_or(());
        sent += 1;
        assert!(sent < 100, "never released");
    }
    let half = f.hub.config.max_queue_bytes / 2;
    assert!(
        (sent - 1) * 60_000 <= half && sent * 60_200 > half,
        "{sent}"
    );
    assert_eq!(f.hub.held_count(), 0);
    // Released: a resume now seats the person again as a newcomer with the same id, and the
    // room hears peerJoined.
    let back = f.hub.connect(None);
    back.handle_inline(join_with("x", Some(b_j.token), None))
        .unwrap();
    let (j, rest) = joined(drain(&back));
    assert_eq!(j.you, b_j.you);
    assert!(!j.resumed);
    assert!(
        rest.is_empty(),
        "nothing delivered: it was released instead"
    );
    assert!(matches!(&drain(&a)[..], [ServerMessage::PeerJoined { peer }] if peer.id == b_j.you));
}

#[test]
fn a_token_for_a_seat_still_open_takes_it_over() {
    let f = fixture(2);
    let (a, a_j) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    // b's connection is dead but the server has not noticed: messages pile up for it.
    a.handle_inline(offer(b_j.you, "queued for the old connection"))
        .unwrap();
    let newer = f.hub.connect(None);
    newer
        .handle_inline(join_with("x", Some(b_j.token), None))
        .unwrap();
    let (j, rest) = joined(drain(&newer));
    assert_eq!(j.you, b_j.you);
    assert!(j.resumed);
    assert!(matches!(&rest[..], [ServerMessage::Description { from, .. }] if *from == a_j.you));
    assert_eq!(b.closed(), Some(Closed::Replaced));
    assert_eq!(b.seat(), None);
    assert!(b.try_recv().is_none());
    // The room noticed nothing, and the old connection ending changes nothing.
    assert!(drain(&a).is_empty());
    drop(b);
    assert!(drain(&a).is_empty());
    assert_eq!(f.hub.held_count(), 0);
    a.handle_inline(offer(b_j.you, "to the new one")).unwrap();
    assert_eq!(drain(&newer).len(), 1);
}

#[test]
fn bad_tokens_are_refused_with_resume_refused() {
    let f = fixture(2);
    let (a, a_j) = f.member("x", "A");
    drain(&a);
    let other_secret = ResumeKeys::new(&Secret::from_text("somebody else's secret").unwrap());
    let forged = other_secret
        .mint(a_j.you, &room("x"), START_UNIX_MS / 1000)
        .unwrap();
    let malformed = ResumeToken::new("v1.nothex.nothex").unwrap();
    let c = f.hub.connect(None);
    for (token, room_name) in [(&forged, "x"), (&malformed, "x"), (&a_j.token, "elsewhere")] {
        assert_eq!(
            c.handle_inline(join_with(room_name, Some(token.clone()), None)),
            Err(ErrorCode::ResumeRefused)
        );
    }
    // Expired: 12 hours later.
    f.clock.advance(crate::resume::TOKEN_LIFETIME);
    assert_eq!(
        c.handle_inline(join_with("x", Some(a_j.token.clone()), None)),
        Err(ErrorCode::ResumeRefused)
    );
    let texts: Vec<String> = drain(&c)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, message } => {
                assert_eq!(code, ErrorCode::ResumeRefused);
                Some(message)
            }
            _ => None,
        })
        .collect();
    for (text, why) in texts.iter().zip([
        "not signed",
        "not one this server issues",
        "another room",
        "expired",
    ]) {
        assert!(text.contains(why), "{text:?} should say {why:?}");
    }
    assert!(drain(&a).is_empty(), "nobody took the seat");
    assert_eq!(c.seat(), None);
}

#[test]
fn a_token_for_an_unknown_seat_restores_it_after_a_restart() {
    let before = fixture(2);
    let (_a, a_j) = before.member("x", "A");
    let (_b, b_j) = before.member("x", "B");
    // Another hub with the same secret: the server restarted.
    let after = fixture(2);
    let a = after.hub.connect(None);
    a.handle_inline(join_with("x", Some(a_j.token), None))
        .unwrap();
    let (j, _) = joined(drain(&a));
    assert_eq!(j.you, a_j.you);
    assert!(
        !j.resumed,
        "restored, not resumed: the server did not keep the seat"
    );
    let b = after.hub.connect(None);
    b.handle_inline(join_with("x", Some(b_j.token), None))
        .unwrap();
    let (j, _) = joined(drain(&b));
    assert_eq!(j.you, b_j.you);
    assert_eq!(j.peers.iter().map(|m| m.id).collect::<Vec<_>>(), [a_j.you]);
    assert!(matches!(&drain(&a)[..], [ServerMessage::PeerJoined { peer }] if peer.id == b_j.you));
    // Restoring needs space like any join.
    let (_c, c_j) = before.member("y", "C");
    let (_d, _) = after.member("y", "D");
    let (_e, _) = after.member("y", "E");
    let c = after.hub.connect(None);
    assert_eq!(
        c.handle_inline(join_with("y", Some(c_j.token), None)),
        Err(ErrorCode::RoomFull)
    );
}

#[test]
fn with_no_grace_or_when_expelled_the_room_hears_peer_left_at_once() {
    let f = fixture_with(HubConfig {
        resume_grace: Duration::ZERO,
        ..config(2)
    });
    let (a, _) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    drop(b);
    assert_eq!(drain(&a), [ServerMessage::PeerLeft { peer: b_j.you }]);

    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    let (mut b, b_j) = f.member("x", "B");
    drain(&a);
    assert_eq!(b.end(Ending::Expelled), None);
    assert_eq!(drain(&a), [ServerMessage::PeerLeft { peer: b_j.you }]);
    assert_eq!(f.hub.held_count(), 0);
}

#[test]
fn chat_goes_to_everyone_in_the_room_in_one_order_and_is_remembered() {
    let f = fixture(4);
    let (a, a_j) = f.member("x", "Ana");
    let (b, _) = f.member("x", "Bo");
    let (other, _) = f.member("y", "Other");
    drain(&a);
    let lobby = f.hub.connect(None);
    assert_eq!(
        lobby.handle_inline(ClientMessage::Chat {
            text: ChatText::new("hi").unwrap()
        }),
        Err(ErrorCode::NotInRoom)
    );
    f.clock.advance(Duration::from_millis(1234));
    a.handle_inline(ClientMessage::Chat {
        text: ChatText::new("<b>hi</b>").unwrap(),
    })
    .unwrap();
    let expected = ServerMessage::Chat(ChatEntry {
        from: a_j.you,
        name: name("Ana"),
        text: ChatText::new("<b>hi</b>").unwrap(),
        at: START_UNIX_MS + 1234,
    });
    assert_eq!(drain(&a), std::slice::from_ref(&expected), "the sender too");
    assert_eq!(drain(&b), [expected]);
    assert!(drain(&other).is_empty());
    for i in 0..CHAT_HISTORY + 5 {
        b.handle_inline(ClientMessage::Chat {
            text: ChatText::new(format!("message {i}")).unwrap(),
        })
        .unwrap();
    }
    let (_late, late) = f.member("x", "Late");
    assert_eq!(late.chat.len(), CHAT_HISTORY);
    assert_eq!(late.chat[0].text.as_str(), "message 5");
    assert_eq!(
        late.chat[CHAT_HISTORY - 1].text.as_str(),
        format!("message {}", CHAT_HISTORY + 4)
    );
    assert_eq!(
        f.hub.metrics().chat_messages.get(),
        1 + CHAT_HISTORY as u64 + 5
    );
}

#[test]
fn chat_history_dies_with_the_room() {
    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    a.handle_inline(ClientMessage::Chat {
        text: ChatText::new("secret plans").unwrap(),
    })
    .unwrap();
    a.handle_inline(ClientMessage::Leave).unwrap();
    let (_b, b_j) = f.member("x", "B");
    assert!(b_j.chat.is_empty());
}

#[test]
fn a_closed_room_admits_no_newcomers_but_its_members_with_a_token() {
    let f = fixture(4);
    let (a, a_j) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    a.handle_inline(ClientMessage::Lock {
        passcode: Passcode::empty(),
    })
    .unwrap();
    let changed = ServerMessage::LockChanged {
        lock: LockState::Closed,
        by: a_j.you,
    };
    assert_eq!(drain(&a), std::slice::from_ref(&changed));
    assert_eq!(drain(&b), [changed]);
    let c = f.hub.connect(None);
    assert_eq!(c.handle_inline(join("x", "C")), Err(ErrorCode::RoomClosed));
    assert_eq!(
        c.handle_inline(join_with("x", None, Some("anything"))),
        Err(ErrorCode::RoomClosed)
    );
    // b drops and comes back with its token: let in.
    drop(b);
    let back = f.hub.connect(None);
    back.handle_inline(join_with("x", Some(b_j.token), None))
        .unwrap();
    let (j, _) = joined(drain(&back));
    assert!(j.resumed);
    assert_eq!(j.lock, LockState::Closed);
    // Unlocked: newcomers again.
    back.handle_inline(ClientMessage::Unlock).unwrap();
    assert_eq!(
        drain(&a)[..],
        [
            ServerMessage::PeerReconnecting { peer: b_j.you },
            ServerMessage::PeerReconnected { peer: b_j.you },
            ServerMessage::LockChanged {
                lock: LockState::Open,
                by: b_j.you
            }
        ]
    );
    drain(&c);
    c.handle_inline(join("x", "C")).unwrap();
    assert_eq!(joined(drain(&c)).0.lock, LockState::Open);
    // Unlocking an open room changes nothing and tells no one.
    drain(&a);
    a.handle_inline(ClientMessage::Unlock).unwrap();
    assert!(drain(&a).is_empty());
    assert_eq!(f.hub.metrics().lock_changes.get(), 2);
}

#[test]
fn a_passcode_room_needs_the_passcode() {
    let f = fixture(4);
    let (a, a_j) = f.member("x", "A");
    let locked = a.handle(ClientMessage::Lock {
        passcode: Passcode::new("open sesame").unwrap(),
    });
    // Hashing is handed out: the hub is not locked meanwhile.
    let Handled::Stretch(stretch) = locked else {
        panic!("expected key stretching, got {locked:?}");
    };
    let (other, _) = f.member("elsewhere", "O");
    other.handle_inline(ClientMessage::Leave).unwrap();
    assert!(matches!(a.finish(stretch.run()), Handled::Done));
    assert_eq!(
        drain(&a),
        [ServerMessage::LockChanged {
            lock: LockState::Passcode,
            by: a_j.you
        }]
    );
    let c = f.hub.connect(None);
    assert_eq!(
        c.handle_inline(join("x", "C")),
        Err(ErrorCode::PasscodeRequired)
    );
    assert_eq!(
        c.handle_inline(join_with("x", None, Some(""))),
        Err(ErrorCode::PasscodeRequired),
        "an empty passcode is no passcode"
    );
    assert_eq!(
        c.handle_inline(join_with("x", None, Some("open sesame!"))),
        Err(ErrorCode::WrongPasscode)
    );
    assert_eq!(f.hub.metrics().passcode_failures.get(), 1);
    drain(&c);
    c.handle_inline(join_with("x", None, Some("open sesame")))
        .unwrap();
    let (j, _) = joined(drain(&c));
    assert_eq!(j.peers[0].id, a_j.you);
    assert_eq!(j.lock, LockState::Passcode);
}

#[test]
fn a_room_can_be_created_locked_and_the_lock_goes_with_it() {
    let f = fixture(4);
    let a = f.hub.connect(None);
    a.handle_inline(join_with("x", None, Some("1234"))).unwrap();
    let (j, _) = joined(drain(&a));
    assert_eq!(j.lock, LockState::Passcode);
    let b = f.hub.connect(None);
    assert_eq!(
        b.handle_inline(join("x", "B")),
        Err(ErrorCode::PasscodeRequired)
    );
    b.handle_inline(join_with("x", None, Some("1234"))).unwrap();
    b.handle_inline(ClientMessage::Leave).unwrap();
    a.handle_inline(ClientMessage::Leave).unwrap();
    // Empty room: gone, lock and all.
    let c = f.hub.connect(None);
    drain(&c);
    c.handle_inline(join("x", "C")).unwrap();
    assert_eq!(joined(drain(&c)).0.lock, LockState::Open);
}

#[test]
fn a_check_against_an_old_lock_is_done_again() {
    let f = fixture(4);
    let (a, _) = f.member("x", "A");
    a.handle_inline(ClientMessage::Lock {
        passcode: Passcode::new("first").unwrap(),
    })
    .unwrap();
    let c = f.hub.connect(None);
    let Handled::Stretch(check) = c.handle(join_with("x", None, Some("first"))) else {
        panic!("expected a passcode check");
    };
    let verified = check.run();
    // The passcode changes while the check runs.
    a.handle_inline(ClientMessage::Lock {
        passcode: Passcode::new("second").unwrap(),
    })
    .unwrap();
    let Handled::Stretch(again) = c.finish(verified) else {
        panic!("expected the check to be done again against the new lock");
    };
    assert!(matches!(
        c.finish(again.run()),
        Handled::Refused(ErrorCode::WrongPasscode)
    ));
}

#[test]
fn passcode_attempts_are_limited_per_address_and_per_room() {
    let f = fixture_with(HubConfig {
        attempts_per_ip: Rate { per_minute: 3 },
        attempts_per_room: Rate { per_minute: 5 },
        ..config(8)
    });
    let (a, _) = f.member("x", "A");
    a.handle_inline(ClientMessage::Lock {
        passcode: Passcode::new("right").unwrap(),
    })
    .unwrap(); // spends one of the room's five (no address: no per-address limit)
    let ip = |last: u8| Some(IpAddr::from([192, 0, 2, last]));
    let guesser = f.hub.connect(ip(1));
    for _ in 0..3 {
        assert_eq!(
            guesser.handle_inline(join_with("x", None, Some("wrong"))),
            Err(ErrorCode::WrongPasscode)
        );
    }
    assert_eq!(
        guesser.handle_inline(join_with("x", None, Some("right"))),
        Err(ErrorCode::TooManyAttempts),
        "even the right one, once the address is out of attempts"
    );
    // Another address may still try, until the room is out of attempts (1 + 3 + 1 = 5).
    let second = f.hub.connect(ip(2));
    assert_eq!(
        second.handle_inline(join_with("x", None, Some("wrong"))),
        Err(ErrorCode::WrongPasscode)
    );
    assert_eq!(
        second.handle_inline(join_with("x", None, Some("right"))),
        Err(ErrorCode::TooManyAttempts)
    );
    // Another room is unaffected; a minute later the limits have refilled.
    let (_b, _) = f.member("y", "B");
    f.clock.advance(Duration::from_secs(60));
    second
        .handle_inline(join_with("x", None, Some("right")))
        .unwrap();
}

#[test]
fn a_queue_over_its_byte_bound_closes_its_connection_and_releases_the_seat() {
    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    let (b, b_j) = f.member("x", "B");
    drain(&a);
    // b never reads.
    let big = "s".repeat(50_000);
    let bound = f.hub.config.max_queue_bytes;
    for _ in 0..bound / 50_000 + 1 {
        a.handle_inline(offer(b_j.you, &big)).unwrap_or(());
    }
    assert_eq!(b.closed(), Some(Closed::SlowReader));
    assert_eq!(drain(&a), [ServerMessage::PeerLeft { peer: b_j.you }]);
    let (high_bytes, _) = f.hub.queue_high_water();
    assert!(
        high_bytes <= bound && high_bytes > bound - 60_000,
        "{high_bytes}"
    );
    assert!(b.try_recv().is_none());
    let waker = futures_util::task::noop_waker();
    assert!(matches!(
        b.poll_recv(&mut Context::from_waker(&waker)),
        Poll::Ready(Err(Closed::SlowReader))
    ));
    assert_eq!(
        a.handle_inline(offer(b_j.you, "x")),
        Err(ErrorCode::UnknownPeer)
    );
    drain(&a);
    // Requests from the closed connection do nothing.
    assert!(matches!(b.handle(offer(b_j.you, "x")), Handled::Done));
    drop(b);
    assert!(drain(&a).is_empty());
}

#[tokio::test]
async fn recv_waits_for_a_message_and_ends_when_closed() {
    let f = fixture(2);
    let (a, _) = f.member("x", "A");
    let a = Arc::new(a);
    let waiting = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.recv().await.map(|frame| frame.decode().unwrap()) }
    });
    tokio::task::yield_now().await;
    let (_b, b_j) = f.member("x", "B");
    assert!(matches!(
        waiting.await.unwrap(),
        Ok(ServerMessage::PeerJoined { peer }) if peer.id == b_j.you
    ));
    // Taken over by a newer connection: the waiting task wakes with the reason.
    let waiting = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.recv().await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    let a_token = {
        // a's own token: from a fresh `joined` is not available here, so mint one as the hub
        // would (same keys).
        let seat = a.seat().unwrap();
        keys().mint(seat, &room("x"), START_UNIX_MS / 1000).unwrap()
    };
    let newer = f.hub.connect(None);
    newer
        .handle_inline(join_with("x", Some(a_token), None))
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting task was woken")
        .unwrap();
    assert_eq!(result, Err(Closed::Replaced));
}
