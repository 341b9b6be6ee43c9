//! Golden JSON: the exact wire text of every message. A change here is a protocol change: old
//! bundles in people's browsers still speak the old text, so bump `PROTOCOL_VERSION` with it.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use shared::*;

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

fn name(text: &str) -> DisplayName {
    DisplayName::new(text).unwrap()
}

fn token() -> ResumeToken {
    ResumeToken::new("v1.AAAA.BBBB").unwrap()
}

fn candidate() -> IceCandidate {
    IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    }
}

fn candidate_json() -> Value {
    json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
           "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"})
}

fn member(id: u64, who: &str) -> Member {
    Member {
        id: PeerId::new(id),
        name: name(who),
        media: MediaState {
            muted: true,
            camera_off: false,
            screen: None,
        },
        reconnecting: false,
    }
}

/// Serializes `message`, compares with `golden`, and parses `golden` back into `message`.
fn check<T>(message: &T, golden: &Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(
        &serde_json::to_value(message).unwrap(),
        golden,
        "{message:?}"
    );
    let back: T = serde_json::from_value(golden.clone()).unwrap();
    assert_eq!(&back, message);
}

/// One sample of every client message, with its golden text.
fn client_samples() -> Vec<(ClientMessage, Value)> {
    vec![
        (
            ClientMessage::Join {
                room: room("standup"),
                version: PROTOCOL_VERSION,
                name: name("Ana"),
                resume: None,
                passcode: None,
            },
            json!({"type": "join", "room": "standup", "version": 2, "name": "Ana"}),
        ),
        (
            ClientMessage::Join {
                room: room("standup"),
                version: PROTOCOL_VERSION,
                name: name("Ana"),
                resume: Some(token()),
                passcode: Some(Passcode::new("open sesame").unwrap()),
            },
            json!({"type": "join", "room": "standup", "version": 2, "name": "Ana",
                   "resume": "v1.AAAA.BBBB", "passcode": "open sesame"}),
        ),
        (ClientMessage::Leave, json!({"type": "leave"})),
        (
            ClientMessage::Description {
                to: PeerId::new(7),
                connection: ConnectionId::new(42),
                description: SessionDescription {
                    kind: SdpKind::Offer,
                    sdp: "v=0\r\n".into(),
                },
            },
            json!({"type": "description", "to": 7, "connection": 42,
                   "description": {"kind": "offer", "sdp": "v=0\r\n"}}),
        ),
        (
            ClientMessage::Description {
                to: PeerId::new(7),
                connection: ConnectionId::new(42),
                description: SessionDescription {
                    kind: SdpKind::Answer,
                    sdp: "v=0\r\n".into(),
                },
            },
            json!({"type": "description", "to": 7, "connection": 42,
                   "description": {"kind": "answer", "sdp": "v=0\r\n"}}),
        ),
        (
            ClientMessage::IceCandidate {
                to: PeerId::new(7),
                connection: ConnectionId::new(42),
                candidate: candidate(),
            },
            json!({"type": "iceCandidate", "to": 7, "connection": 42, "candidate": candidate_json()}),
        ),
        (
            ClientMessage::MediaState(MediaState {
                muted: true,
                camera_off: false,
                screen: Some("screen-stream-1".into()),
            }),
            json!({"type": "mediaState", "muted": true, "cameraOff": false, "screen": "screen-stream-1"}),
        ),
        (
            ClientMessage::Chat {
                text: ChatText::new("hello <b>there</b>\nsecond line").unwrap(),
            },
            json!({"type": "chat", "text": "hello <b>there</b>\nsecond line"}),
        ),
        (
            ClientMessage::Lock {
                passcode: Passcode::new("1234").unwrap(),
            },
            json!({"type": "lock", "passcode": "1234"}),
        ),
        (
            ClientMessage::Lock {
                passcode: Passcode::empty(),
            },
            json!({"type": "lock", "passcode": ""}),
        ),
        (ClientMessage::Unlock, json!({"type": "unlock"})),
    ]
}

fn server_samples() -> Vec<(ServerMessage, Value)> {
    vec![
        (
            ServerMessage::Joined {
                room: room("standup"),
                you: PeerId::new(2),
                peers: vec![member(1, "Bo")],
                capacity: 4,
                ice_servers: vec![
                    IceServer {
                        urls: vec!["stun:stun.l.google.com:19302".into()],
                        username: None,
                        credential: None,
                    },
                    IceServer {
                        urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
                        username: Some("1700000000:2".into()),
                        credential: Some("p".into()),
                    },
                ],
                resume_token: token(),
                resumed: false,
                lock: LockState::Open,
                chat: vec![ChatEntry {
                    from: PeerId::new(1),
                    name: name("Bo"),
                    text: ChatText::new("hi").unwrap(),
                    at: 1_700_000_000_123,
                }],
            },
            json!({"type": "joined", "room": "standup", "you": 2,
                   "peers": [{"id": 1, "name": "Bo", "media": {"muted": true, "cameraOff": false}, "reconnecting": false}],
                   "capacity": 4,
                   "iceServers": [
                       {"urls": ["stun:stun.l.google.com:19302"]},
                       {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "1700000000:2", "credential": "p"}
                   ],
                   "resumeToken": "v1.AAAA.BBBB", "resumed": false, "lock": "open",
                   "chat": [{"from": 1, "name": "Bo", "text": "hi", "at": 1_700_000_000_123u64}]}),
        ),
        (
            ServerMessage::PeerJoined {
                peer: member(3, "Cy"),
            },
            json!({"type": "peerJoined", "peer": {"id": 3, "name": "Cy",
                   "media": {"muted": true, "cameraOff": false}, "reconnecting": false}}),
        ),
        (
            ServerMessage::PeerLeft {
                peer: PeerId::new(3),
            },
            json!({"type": "peerLeft", "peer": 3}),
        ),
        (
            ServerMessage::PeerReconnecting {
                peer: PeerId::new(3),
            },
            json!({"type": "peerReconnecting", "peer": 3}),
        ),
        (
            ServerMessage::PeerReconnected {
                peer: PeerId::new(3),
            },
            json!({"type": "peerReconnected", "peer": 3}),
        ),
        (
            ServerMessage::Description {
                from: PeerId::new(1),
                connection: ConnectionId::new(9),
                description: SessionDescription {
                    kind: SdpKind::Answer,
                    sdp: "v=0\r\n".into(),
                },
            },
            json!({"type": "description", "from": 1, "connection": 9,
                   "description": {"kind": "answer", "sdp": "v=0\r\n"}}),
        ),
        (
            ServerMessage::IceCandidate {
                from: PeerId::new(1),
                connection: ConnectionId::new(9),
                candidate: candidate(),
            },
            json!({"type": "iceCandidate", "from": 1, "connection": 9, "candidate": candidate_json()}),
        ),
        (
            ServerMessage::PeerMediaState {
                peer: PeerId::new(4),
                state: MediaState {
                    muted: false,
                    camera_off: true,
                    screen: None,
                },
            },
            json!({"type": "peerMediaState", "peer": 4, "state": {"muted": false, "cameraOff": true}}),
        ),
        (
            ServerMessage::Chat(ChatEntry {
                from: PeerId::new(4),
                name: name("Di"),
                text: ChatText::new("<img src=x onerror=alert(1)>").unwrap(),
                at: 5,
            }),
            json!({"type": "chat", "from": 4, "name": "Di", "text": "<img src=x onerror=alert(1)>", "at": 5}),
        ),
        (
            ServerMessage::LockChanged {
                lock: LockState::Passcode,
                by: PeerId::new(4),
            },
            json!({"type": "lockChanged", "lock": "passcode", "by": 4}),
        ),
        (
            ServerMessage::LockChanged {
                lock: LockState::Closed,
                by: PeerId::new(4),
            },
            json!({"type": "lockChanged", "lock": "closed", "by": 4}),
        ),
        (
            ServerMessage::error(ErrorCode::RoomFull, "This room is full."),
            json!({"type": "error", "code": "room-full", "message": "This room is full."}),
        ),
        (
            ServerMessage::error(ErrorCode::ResumeRefused, "Joining afresh."),
            json!({"type": "error", "code": "resume-refused", "message": "Joining afresh."}),
        ),
    ]
}

#[test]
fn client_messages() {
    for (message, golden) in client_samples() {
        check(&message, &golden);
        assert_eq!(ClientMessage::decode(&golden.to_string()), Ok(message));
    }
}

#[test]
fn server_messages() {
    for (message, golden) in server_samples() {
        check(&message, &golden);
    }
}

#[test]
fn every_kind_has_a_golden_sample_and_its_wire_name_is_the_tag() {
    let mut seen = BTreeSet::new();
    for (message, golden) in client_samples() {
        assert_eq!(golden["type"], message.kind().as_str());
        seen.insert(message.kind());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ClientKind::ALL);
    let mut seen = BTreeSet::new();
    for (message, golden) in server_samples() {
        assert_eq!(golden["type"], message.kind().as_str());
        seen.insert(message.kind());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ServerKind::ALL);
}

#[test]
fn ice_candidate_optional_fields_are_omitted_and_defaulted() {
    let bare = IceCandidate {
        candidate: "candidate:x".into(),
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    };
    check(&bare, &json!({"candidate": "candidate:x"}));
}

#[test]
fn invalid_text_is_rejected_when_parsing() {
    for bad in [
        json!({"type": "join", "room": "", "name": "A", "version": 2}),
        json!({"type": "join", "room": "r", "name": "", "version": 2}),
        json!({"type": "join", "room": "r", "version": 2}),
        json!({"type": "chat", "text": "   "}),
        json!({"type": "mediaState", "muted": false, "cameraOff": false, "screen": ""}),
        json!({"type": "join", "room": "r", "name": "A", "version": 2, "resume": "has space"}),
    ] {
        assert!(
            serde_json::from_value::<ClientMessage>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn credentials_never_print() {
    let server = IceServer {
        urls: vec!["turn:x".into()],
        username: Some("1:2".into()),
        credential: Some("s3cret".into()),
    };
    assert!(!format!("{server:?}").contains("s3cret"));
    let join = ClientMessage::Join {
        room: room("r"),
        version: PROTOCOL_VERSION,
        name: name("A"),
        resume: Some(token()),
        passcode: Some(Passcode::new("hunter2").unwrap()),
    };
    let shown = format!("{join:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("AAAA"),
        "{shown}"
    );
}

#[test]
fn to_json_matches_serde() {
    let message = ServerMessage::PeerLeft {
        peer: PeerId::new(9),
    };
    assert_eq!(message.to_json(), r#"{"type":"peerLeft","peer":9}"#);
    assert_eq!(
        ServerMessage::from_json(&message.to_json()).unwrap(),
        message
    );
    assert_eq!(ClientMessage::Leave.to_json(), r#"{"type":"leave"}"#);
}
