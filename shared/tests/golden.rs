//! Golden JSON: the exact wire text of every message. A change here is a protocol change: old
//! bundles in people's browsers still speak the old text, so bump `PROTOCOL_VERSION` with it.

use serde_json::{json, Value};
use shared::*;

fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

fn candidate() -> IceCandidate {
    IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    }
}

/// Serializes `message`, compares with `golden`, and parses `golden` back into `message`.
fn check<T>(message: T, golden: Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(
        serde_json::to_value(&message).unwrap(),
        golden,
        "{message:?}"
    );
    let back: T = serde_json::from_value(golden).unwrap();
    assert_eq!(back, message);
}

#[test]
fn client_messages() {
    check(
        ClientMessage::Join {
            room: room("standup"),
            version: PROTOCOL_VERSION,
        },
        json!({"type": "join", "room": "standup", "version": 1}),
    );
    check(ClientMessage::Leave, json!({"type": "leave"}));
    check(
        ClientMessage::Description {
            to: PeerId::new(7),
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: "v=0\r\n".into(),
            },
        },
        json!({"type": "description", "to": 7, "description": {"kind": "offer", "sdp": "v=0\r\n"}}),
    );
    check(
        ClientMessage::Description {
            to: PeerId::new(7),
            description: SessionDescription {
                kind: SdpKind::Answer,
                sdp: "v=0\r\n".into(),
            },
        },
        json!({"type": "description", "to": 7, "description": {"kind": "answer", "sdp": "v=0\r\n"}}),
    );
    check(
        ClientMessage::IceCandidate {
            to: PeerId::new(7),
            candidate: candidate(),
        },
        json!({"type": "iceCandidate", "to": 7, "candidate": {
            "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}),
    );
}

#[test]
fn media_state_messages() {
    check(
        ClientMessage::MediaState(MediaState {
            muted: true,
            camera_off: false,
        }),
        json!({"type": "mediaState", "muted": true, "cameraOff": false}),
    );
    check(
        ServerMessage::PeerMediaState {
            peer: PeerId::new(4),
            state: MediaState {
                muted: false,
                camera_off: true,
            },
        },
        json!({"type": "peerMediaState", "peer": 4, "muted": false, "cameraOff": true}),
    );
}

#[test]
fn every_client_type_is_listed() {
    // ClientMessage::TYPES drives the unknown-type error; it must name every variant.
    let samples = [
        ClientMessage::Join {
            room: room("a"),
            version: 1,
        },
        ClientMessage::Leave,
        ClientMessage::Description {
            to: PeerId::new(1),
            description: SessionDescription {
                kind: SdpKind::Offer,
                sdp: String::new(),
            },
        },
        ClientMessage::IceCandidate {
            to: PeerId::new(1),
            candidate: candidate(),
        },
        ClientMessage::MediaState(MediaState::default()),
    ];
    assert_eq!(samples.len(), ClientMessage::TYPES.len());
    for sample in samples {
        let value = serde_json::to_value(&sample).unwrap();
        let kind = value["type"].as_str().unwrap();
        assert!(ClientMessage::TYPES.contains(&kind), "{kind} not listed");
    }
}

#[test]
fn ice_candidate_optional_fields_are_omitted_and_defaulted() {
    let bare = IceCandidate {
        candidate: "candidate:x".into(),
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    };
    check(bare, json!({"candidate": "candidate:x"}));
}

#[test]
fn server_messages() {
    check(
        ServerMessage::Joined {
            room: room("standup"),
            you: PeerId::new(2),
            peers: vec![PeerId::new(1)],
            capacity: 2,
            ice_servers: vec![
                IceServer {
                    urls: vec!["stun:stun.l.google.com:19302".into()],
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
                    username: Some("u".into()),
                    credential: Some("p".into()),
                },
            ],
        },
        json!({"type": "joined", "room": "standup", "you": 2, "peers": [1], "capacity": 2,
        "iceServers": [
            {"urls": ["stun:stun.l.google.com:19302"]},
            {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "u", "credential": "p"}
        ]}),
    );
    check(
        ServerMessage::PeerJoined {
            peer: PeerId::new(3),
        },
        json!({"type": "peerJoined", "peer": 3}),
    );
    check(
        ServerMessage::PeerLeft {
            peer: PeerId::new(3),
        },
        json!({"type": "peerLeft", "peer": 3}),
    );
    check(
        ServerMessage::Description {
            from: PeerId::new(1),
            description: SessionDescription {
                kind: SdpKind::Answer,
                sdp: "v=0\r\n".into(),
            },
        },
        json!({"type": "description", "from": 1, "description": {"kind": "answer", "sdp": "v=0\r\n"}}),
    );
    check(
        ServerMessage::IceCandidate {
            from: PeerId::new(1),
            candidate: candidate(),
        },
        json!({"type": "iceCandidate", "from": 1, "candidate": {
            "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}),
    );
    check(
        ServerMessage::error(ErrorCode::RoomFull, "This room is full."),
        json!({"type": "error", "code": "room-full", "message": "This room is full."}),
    );
    check(
        ServerMessage::error(ErrorCode::RateLimited, "Slow down."),
        json!({"type": "error", "code": "rate-limited", "message": "Slow down."}),
    );
}

#[test]
fn invalid_room_name_is_rejected_when_parsing() {
    let err = serde_json::from_value::<ClientMessage>(json!({"type": "join", "room": ""}));
    assert!(err.is_err());
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
