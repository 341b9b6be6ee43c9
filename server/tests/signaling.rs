//! End-to-end tests of the signaling server: a real `server::run` on 127.0.0.1 port 0, real
//! websocket clients (tokio-tungstenite) and a real HTTP client (reqwest), plus the real
//! `server` binary. Every receive is bounded by `common::TIMEOUT`; "nothing arrives" is
//! checked by listening for `common::QUIET` (300 ms), which is a heuristic: on loopback a relayed
//! message arrives in well under a millisecond.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    answer, described, ice, iced, join, offer, peer_joined, Client, Event, Pair, TestServer,
    BIG_ASSET, CONNECTION, INDEX_MARKER, TEST_RESUME_SECRET, TIMEOUT,
};
use shared::{
    ClientMessage, DisplayName, ErrorCode, LockState, MediaState, PeerId, RoomName, SdpKind,
    ServerMessage, PROTOCOL_VERSION,
};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Helpers local to this file
// ---------------------------------------------------------------------------------------------

/// A protocol error test: `bad` sends `input`, expects `code`, and is still usable afterwards;
/// a pair in another room, connected the whole time, still relays and heard nothing.
async fn assert_refused_and_harmless(inputs: &[Message], code: ErrorCode) {
    let server = TestServer::start().await;
    let mut pair = Pair::new(&server, "bystanders").await;
    let mut bad = server.client().await;
    for input in inputs {
        bad.send_frame(input.clone()).await;
        let text = bad.expect_error(code).await;
        eprintln!("{code} for {input:?}: {text}");
    }
    // Exactly one reply per bad input.
    bad.expect_silence().await;
    // Still usable: it can join and be joined.
    let joined = bad.join("after-error").await;
    assert!(joined.peers.is_empty());
    pair.assert_relays().await;
    assert_eq!(server.state.hub.room_count(), 2);
}

fn text(s: impl Into<String>) -> Message {
    Message::text(s.into())
}

// ---------------------------------------------------------------------------------------------
// Joining
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn join_reports_identity_peers_capacity_and_no_ice_servers() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let a_joined = a.join_as("team sync", "Ana").await;
    assert_eq!(a_joined.room, RoomName::new("team sync").unwrap());
    assert!(a_joined.peers.is_empty(), "first joiner sees no peers");
    assert_eq!(a_joined.capacity, 4, "mesh rooms of 4 by default");
    assert!(
        a_joined.ice_servers.is_empty(),
        "--ice-server none hands out no ICE servers"
    );
    assert!(!a_joined.resumed);
    assert_eq!(a_joined.lock, LockState::Open);
    assert!(a_joined.chat.is_empty());
    assert!(!a_joined.resume_token.as_str().is_empty());
    assert!((1..PeerId::LIMIT).contains(&a_joined.you.get()));

    // Ana announces her media state once; a newcomer learns it from `joined`.
    let muted = MediaState {
        muted: true,
        ..MediaState::default()
    };
    a.send(&ClientMessage::MediaState(muted.clone())).await;
    a.expect_silence().await;

    let mut b = server.client().await;
    let b_joined = b.join_as("team sync", "Bo").await;
    assert_ne!(a_joined.you, b_joined.you, "ids are unique");
    assert_ne!(a_joined.resume_token, b_joined.resume_token);
    assert_eq!(b_joined.peer_ids(), [a_joined.you]);
    assert_eq!(b_joined.peers[0].name, DisplayName::new("Ana").unwrap());
    assert_eq!(b_joined.peers[0].media, muted);
    assert!(!b_joined.peers[0].reconnecting);
    assert_eq!(b_joined.capacity, 4);
    assert!(b_joined.ice_servers.is_empty());

    match a.recv().await {
        ServerMessage::PeerJoined { peer } => {
            assert_eq!(peer.id, b_joined.you);
            assert_eq!(peer.name, DisplayName::new("Bo").unwrap());
            assert_eq!(peer.media, MediaState::default());
        }
        other => panic!("expected peerJoined, got {other:?}"),
    }
    // The newcomer is not told about itself.
    a.expect_silence().await;
    b.expect_silence().await;
    assert_eq!(server.state.hub.room_count(), 1);
}

#[tokio::test]
async fn joined_lists_configured_stun_servers() {
    let server =
        TestServer::start_with(&["--ice-server", "stun:stun.example.org:3478,stun:other:1"]).await;
    let (_a, joined) = server.joined_client("x").await;
    let urls: Vec<_> = joined
        .ice_servers
        .into_iter()
        .flat_map(|s| s.urls)
        .collect();
    assert_eq!(urls, ["stun:stun.example.org:3478", "stun:other:1"]);
}

#[tokio::test]
async fn unicode_and_64_char_room_names_are_accepted() {
    let server = TestServer::start().await;
    let long = "é".repeat(64);
    for name in ["팀 회의", "a/b?c", long.as_str()] {
        let (_c, joined) = server.joined_client(name).await;
        assert_eq!(joined.room.as_str(), name);
    }
}

#[tokio::test]
async fn third_joiner_gets_room_full_and_members_hear_nothing() {
    let server = TestServer::start_with(&["--room-capacity", "2"]).await;
    let mut pair = Pair::new(&server, "x").await;
    let mut c = server.client().await;
    c.send(&join("x")).await;
    let text = c.expect_error(ErrorCode::RoomFull).await;
    assert!(text.contains('2'), "message names the capacity: {text}");
    pair.a.expect_silence().await;
    pair.b.expect_silence().await;
    // The refused client is not in the room: it can neither signal the members...
    c.send(&offer(pair.a_id, "sneaky")).await;
    c.expect_error(ErrorCode::NotInRoom).await;
    pair.a.expect_silence().await;
    // ...nor is it stuck: it can join elsewhere.
    let joined = c.join("y").await;
    assert!(joined.peers.is_empty());
    pair.assert_relays().await;
}

#[tokio::test]
async fn room_capacity_flag_allows_a_third() {
    let server = TestServer::start_with(&["--room-capacity", "3"]).await;
    let mut pair = Pair::new(&server, "x").await;
    let (mut c, c_joined) = server.joined_client("x").await;
    assert_eq!(c_joined.capacity, 3);
    assert_eq!(c_joined.peer_ids(), [pair.a_id, pair.b_id], "oldest first");
    for member in [&mut pair.a, &mut pair.b] {
        assert_eq!(peer_joined(&member.recv().await), c_joined.you);
    }
    // And a fourth is refused.
    let mut d = server.client().await;
    d.send(&join("x")).await;
    d.expect_error(ErrorCode::RoomFull).await;
    c.expect_silence().await;
    pair.assert_relays().await;
}

// ---------------------------------------------------------------------------------------------
// Relaying
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn signals_reach_only_the_addressed_peer_with_from_stamped() {
    // Three in a room, so that "only the addressed peer" is observable.
    let server = TestServer::start_with(&["--room-capacity", "3"]).await;
    let (mut a, a_j) = server.joined_client("x").await;
    let (mut b, b_j) = server.joined_client("x").await;
    let (mut c, c_j) = server.joined_client("x").await;
    let (a_id, b_id, c_id) = (a_j.you, b_j.you, c_j.you);
    for (client, expected) in [(&mut a, vec![b_id, c_id]), (&mut b, vec![c_id])] {
        for peer in expected {
            assert_eq!(peer_joined(&client.recv().await), peer);
        }
    }

    // SDP is opaque: relayed byte for byte, line breaks, quotes, non-ASCII and all.
    let sdp = "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=\"quoted\" ünïcode\r\na=group:BUNDLE 0\r\n";
    a.send(&offer(b_id, sdp)).await;
    assert_eq!(b.recv().await, described(a_id, SdpKind::Offer, sdp));
    b.send(&answer(a_id, "v=0 answer")).await;
    assert_eq!(
        a.recv().await,
        described(b_id, SdpKind::Answer, "v=0 answer")
    );

    // A candidate with every optional field, and one with none.
    a.send(&ice(
        c_id,
        "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
    ))
    .await;
    assert_eq!(
        c.recv().await,
        iced(
            a_id,
            "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"
        )
    );
    let bare = shared::IceCandidate {
        candidate: String::new(), // end-of-candidates
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    };
    // The connection id is relayed untouched, whatever its value.
    let connection = shared::ConnectionId::new(u32::MAX);
    c.send(&ClientMessage::IceCandidate {
        to: b_id,
        connection,
        candidate: bare.clone(),
    })
    .await;
    assert_eq!(
        b.recv().await,
        ServerMessage::IceCandidate {
            from: c_id,
            connection,
            candidate: bare
        }
    );

    // No echoes to senders, no copies to bystanders.
    a.expect_silence().await;
    b.expect_silence().await;
    c.expect_silence().await;

    // Addressing yourself is refused.
    a.send(&offer(a_id, "self")).await;
    a.expect_error(ErrorCode::UnknownPeer).await;
}

#[tokio::test]
async fn spoofed_from_field_is_ignored_and_stamped_by_the_server() {
    let server = TestServer::start_with(&["--room-capacity", "3"]).await;
    let (mut a, a_j) = server.joined_client("x").await;
    let (mut b, b_j) = server.joined_client("x").await;
    let (mut c, c_j) = server.joined_client("x").await;
    let (a_id, b_id, c_id) = (a_j.you, b_j.you, c_j.you);
    for _ in 0..2 {
        assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    }
    assert!(matches!(b.recv().await, ServerMessage::PeerJoined { .. }));

    // A made-up id, then the id of a real member (c): b must see a as the sender both times.
    let connection = CONNECTION.get();
    for spoof in [999, c_id.get()] {
        a.send_raw(format!(
            r#"{{"type":"description","from":{spoof},"to":{b},"connection":{connection},"description":{{"kind":"offer","sdp":"spoof"}}}}"#,
            b = b_id.get()
        ))
        .await;
        assert_eq!(b.recv().await, described(a_id, SdpKind::Offer, "spoof"));
        a.send_raw(format!(
            r#"{{"type":"iceCandidate","to":{b},"connection":{connection},"candidate":{{"candidate":"c"}},"from":{spoof}}}"#,
            b = b_id.get()
        ))
        .await;
        match b.recv().await {
            ServerMessage::IceCandidate {
                from, candidate, ..
            } => {
                assert_eq!(from, a_id);
                assert_eq!(candidate.candidate, "c");
            }
            other => panic!("expected iceCandidate, got {other:?}"),
        }
    }
    a.expect_silence().await;
    c.expect_silence().await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = TestServer::start().await;
    let mut red = Pair::new(&server, "red").await;
    let mut blue = Pair::new(&server, "blue").await;
    assert_eq!(server.state.hub.room_count(), 2);

    red.a.send(&offer(red.b_id, "red offer")).await;
    assert_eq!(
        red.b.recv().await,
        described(red.a_id, SdpKind::Offer, "red offer")
    );
    blue.b.send(&ice(blue.a_id, "blue cand")).await;
    assert_eq!(blue.a.recv().await, iced(blue.b_id, "blue cand"));
    for client in [&mut red.a, &mut red.b, &mut blue.a, &mut blue.b] {
        client.expect_silence().await;
    }

    // Reaching across rooms is refused, and the other room hears nothing.
    red.a.send(&offer(blue.a_id, "cross")).await;
    red.a.expect_error(ErrorCode::UnknownPeer).await;
    red.a.send(&ice(blue.b_id, "cross")).await;
    red.a.expect_error(ErrorCode::UnknownPeer).await;
    // A peer id no connection has.
    red.a.send(&offer(PeerId::new(987_654), "nobody")).await;
    red.a.expect_error(ErrorCode::UnknownPeer).await;
    for client in [&mut red.b, &mut blue.a, &mut blue.b] {
        client.expect_silence().await;
    }

    red.assert_relays().await;
    blue.assert_relays().await;
}

// ---------------------------------------------------------------------------------------------
// Leaving
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn leave_notifies_the_room_and_the_leaver_can_join_again() {
    let server = TestServer::start().await;
    let mut pair = Pair::new(&server, "x").await;
    pair.b.send(&ClientMessage::Leave).await;
    assert_eq!(
        pair.a.recv().await,
        ServerMessage::PeerLeft { peer: pair.b_id }
    );
    pair.b.expect_silence().await; // `leave` has no acknowledgement

    // Out of the room: signaling is refused, and a no longer counts b as a peer.
    pair.b.send(&offer(pair.a_id, "late")).await;
    pair.b.expect_error(ErrorCode::NotInRoom).await;
    pair.a.send(&offer(pair.b_id, "late")).await;
    pair.a.expect_error(ErrorCode::UnknownPeer).await;

    // Another room, on the same connection: a new seat, with a new id.
    let other = pair.b.join("elsewhere").await;
    assert_ne!(other.you, pair.b_id);
    assert!(other.peers.is_empty());
    assert_eq!(server.state.hub.room_count(), 2);
    pair.b.send(&ClientMessage::Leave).await;
    server.wait_for_room_count(1).await;

    // Back into the first room.
    let again = pair.b.join("x").await;
    assert_eq!(again.peer_ids(), [pair.a_id]);
    assert_eq!(peer_joined(&pair.a.recv().await), again.you);
    pair.b_id = again.you;
    pair.assert_relays().await;
}

#[tokio::test]
async fn closing_or_dropping_the_socket_keeps_the_seat_for_the_grace_then_peer_left() {
    let server = TestServer::start_with(&["--resume-grace-secs", "1"]).await;
    // Clean close handshake (without `leave`).
    let mut polite = Pair::new(&server, "polite").await;
    let b_id = polite.b_id;
    polite.b.close().await;
    let closed = std::time::Instant::now();
    assert_eq!(
        polite.a.recv().await,
        ServerMessage::PeerReconnecting { peer: b_id }
    );

    // No close frame at all: the TCP connection just goes away.
    let rude = Pair::new(&server, "rude").await;
    let Pair {
        a: mut rude_a,
        b: rude_b,
        b_id: rude_b_id,
        ..
    } = rude;
    drop(rude_b);
    assert_eq!(
        rude_a.recv().await,
        ServerMessage::PeerReconnecting { peer: rude_b_id }
    );
    server.wait_for_connection_count(2).await;
    // Newcomers see the held seats as reconnecting.
    let (_c, c_joined) = server.joined_client("polite").await;
    assert!(c_joined
        .peers
        .iter()
        .any(|m| m.id == b_id && m.reconnecting));
    assert_eq!(peer_joined(&polite.a.recv().await), c_joined.you);
    // After the grace (1 s), the room hears that they left.
    assert_eq!(
        polite.a.recv().await,
        ServerMessage::PeerLeft { peer: b_id }
    );
    let waited = closed.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(
        rude_a.recv().await,
        ServerMessage::PeerLeft { peer: rude_b_id }
    );
    polite.a.expect_silence().await;
    rude_a.expect_silence().await;
    assert_eq!(server.state.hub.held_count(), 0);
}

#[tokio::test]
async fn empty_room_disappears_and_its_name_starts_fresh() {
    let server = TestServer::start_with(&["--resume-grace-secs", "0"]).await;
    let pair = Pair::new(&server, "x").await;
    assert_eq!(server.state.hub.room_count(), 1);
    let Pair { mut a, b, a_id, .. } = pair;
    a.send(&ClientMessage::Leave).await;
    drop(b);
    server.wait_for_room_count(0).await;
    // a's connection is still open but in no room.
    assert_eq!(server.state.hub.connection_count(), 1);

    let mut fresh = Pair::new(&server, "x").await; // asserts peers == [first] for the second
    let (_solo, solo) = server.joined_client("y").await;
    assert_eq!(server.state.hub.held_count(), 0, "no grace: nothing kept");
    assert!(solo.peers.is_empty());
    assert!(
        fresh.a_id != a_id && fresh.b_id != a_id,
        "the new pair has new ids"
    );
    fresh.assert_relays().await;
    a.expect_silence().await;
}

// ---------------------------------------------------------------------------------------------
// Protocol errors: each gets a typed reply, and nothing else is disturbed
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_refused() {
    assert_refused_and_harmless(
        &[
            text("{not json"),
            text(""),
            text("[1,2]"),
            text(r#"{"room":"x"}"#),
            text(r#"{"type":42}"#),
            text(r#"{"type":"description","to":"x"}"#),
            text(r#"{"type":"join","version":2}"#),
            text(r#"{"type":"join","version":2,"room":"x"}"#),
        ],
        ErrorCode::Malformed,
    )
    .await;
}

#[tokio::test]
async fn unknown_type_is_refused() {
    assert_refused_and_harmless(
        &[
            text(r#"{"type":"dance"}"#),
            text(r#"{"type":"Join","room":"x","version":1}"#),
        ],
        ErrorCode::UnknownType,
    )
    .await;
}

#[tokio::test]
async fn invalid_room_names_are_refused() {
    let raw = |room: &str| {
        text(
            serde_json::json!({"type": "join", "room": room, "name": "A", "version": PROTOCOL_VERSION})
                .to_string(),
        )
    };
    assert_refused_and_harmless(
        &[
            raw(""),
            raw("   "),
            raw(&"x".repeat(65)),
            raw("a\u{1}b"),
            raw("tab\there"),
            raw(" padded "),
        ],
        ErrorCode::InvalidRoom,
    )
    .await;
}

#[tokio::test]
async fn invalid_names_are_refused() {
    let raw = |name: &str| {
        text(
            serde_json::json!({"type": "join", "room": "x", "name": name, "version": PROTOCOL_VERSION})
                .to_string(),
        )
    };
    assert_refused_and_harmless(
        &[
            raw(""),
            raw(&"n".repeat(33)),
            raw(" padded"),
            raw("a\u{7}b"),
        ],
        ErrorCode::InvalidName,
    )
    .await;
}

#[tokio::test]
async fn wrong_or_missing_version_is_refused() {
    let inputs = [
        // A page from before versioning, and one of protocol 1 (no name): told to reload.
        text(r#"{"type":"join"}"#),
        text(r#"{"type":"join","room":"x"}"#),
        text(r#"{"type":"join","room":"x","version":1}"#),
        text(r#"{"type":"join","room":"x","name":"A","version":0}"#),
        text(format!(
            r#"{{"type":"join","room":"x","name":"A","version":{}}}"#,
            PROTOCOL_VERSION + 1
        )),
    ];
    assert_refused_and_harmless(&inputs, ErrorCode::UnsupportedVersion).await;
}

#[tokio::test]
async fn refused_versions_do_not_create_rooms() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(&ClientMessage::Join {
        room: RoomName::new("x").unwrap(),
        version: PROTOCOL_VERSION + 1,
        name: DisplayName::new("A").unwrap(),
        resume: None,
        passcode: None,
    })
    .await;
    let text = c.expect_error(ErrorCode::UnsupportedVersion).await;
    assert!(text.to_lowercase().contains("reload"), "{text}");
    assert_eq!(server.state.hub.room_count(), 0);
}

#[tokio::test]
async fn joining_twice_is_refused_and_keeps_the_first_room() {
    let server = TestServer::start().await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let mut pair = Pair::new(&server, "x").await;
    pair.a.send(&join("x")).await;
    let text = pair.a.expect_error(ErrorCode::AlreadyJoined).await;
    assert!(text.contains("\"x\""), "names the current room: {text}");
    pair.a.send(&join("elsewhere")).await;
    pair.a.expect_error(ErrorCode::AlreadyJoined).await;
    pair.b.expect_silence().await;
    assert_eq!(server.state.hub.room_count(), 2);
    // Still in "x", still relaying.
    pair.assert_relays().await;
    bystanders.assert_relays().await;
}

#[tokio::test]
async fn signaling_before_joining_is_refused() {
    let server = TestServer::start().await;
    let mut pair = Pair::new(&server, "bystanders").await;
    let mut c = server.client().await;
    c.send(&offer(pair.a_id, "early")).await;
    c.expect_error(ErrorCode::NotInRoom).await;
    c.send(&ice(pair.b_id, "early")).await;
    c.expect_error(ErrorCode::NotInRoom).await;
    // `leave` outside a room is a silent no-op, not an error.
    c.send(&ClientMessage::Leave).await;
    c.expect_silence().await;
    pair.assert_relays().await;
    c.join("after").await;
}

#[tokio::test]
async fn binary_frames_are_refused() {
    assert_refused_and_harmless(
        &[
            Message::binary(b"\x00\x01\x02".to_vec()),
            // Even valid JSON: the protocol is text frames only.
            Message::binary(join("x").to_json().into_bytes()),
        ],
        ErrorCode::Malformed,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Size limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_message_closes_only_that_connection() {
    let server = TestServer::start_with(&["--max-message-bytes", "1024"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let mut pair = Pair::new(&server, "x").await;

    // Just under the limit is relayed.
    let small = "s".repeat(900);
    let message = offer(pair.b_id, &small);
    assert!(message.to_json().len() < 1024);
    pair.a.send(&message).await;
    assert_eq!(
        pair.b.recv().await,
        described(pair.a_id, SdpKind::Offer, &small)
    );

    // Over the limit: the connection is closed with 1009 (message too big). (Much bigger
    // messages are covered in tests/limits.rs.)
    let big = offer(pair.b_id, &"b".repeat(2000));
    pair.a.send(&big).await;
    match pair.a.next_event(TIMEOUT).await {
        Event::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), server::close_code::TOO_BIG);
            assert_eq!(frame.reason.as_str(), "message too big");
        }
        other => panic!("expected a 1009 close frame, got {other:?}"),
    }
    // The relay never happened; its room is told the sender is gone.
    assert_eq!(
        pair.b.recv().await,
        ServerMessage::PeerLeft { peer: pair.a_id }
    );
    pair.b.expect_silence().await;
    bystanders.assert_relays().await;
    server.wait_for_connection_count(3).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("http client")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn http_serves_the_app_and_deep_links() {
    let server = TestServer::start().await;
    for path in [
        "/",
        "/index.html",
        "/r/some-room",
        "/r/team%20sync",
        "/r/a/b",
    ] {
        let response = http().get(server.http_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        let content_type = header(&response, "content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/html"),
            "GET {path}: content-type {content_type:?}"
        );
        assert_eq!(
            header(&response, "cache-control"),
            Some("no-cache"),
            "GET {path}"
        );
        let body = response.text().await.unwrap();
        assert!(body.contains(INDEX_MARKER), "GET {path}: {body}");
    }
}

#[tokio::test]
async fn http_missing_asset_is_404() {
    let server = TestServer::start().await;
    for path in ["/missing.js", "/r", "/assets/nope.wasm"] {
        let response = http().get(server.http_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "GET {path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(INDEX_MARKER), "GET {path} served the app");
    }
}

#[tokio::test]
async fn http_healthz() {
    let server = TestServer::start().await;
    let response = http()
        .get(server.http_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap().trim(), "ok");
}

#[tokio::test]
async fn http_compresses_assets_when_asked() {
    let server = TestServer::start().await;
    let original = std::fs::read(server.dist.join(BIG_ASSET)).unwrap();
    let path = format!("/{BIG_ASSET}");

    let plain = http().get(server.http_url(&path)).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(header(&plain, "content-encoding"), None);
    assert_eq!(plain.bytes().await.unwrap(), original);

    let gzipped = http()
        .get(server.http_url(&path))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.status(), 200);
    assert_eq!(header(&gzipped, "content-encoding"), Some("gzip"));
    let body = gzipped.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(
        body.len() * 4 < original.len(),
        "{} bytes compressed to {}",
        original.len(),
        body.len()
    );
}

#[tokio::test]
async fn websocket_path_without_upgrade_is_refused() {
    let server = TestServer::start().await;
    let response = http().get(server.http_url("/ws")).send().await.unwrap();
    assert!(
        response.status().is_client_error(),
        "GET /ws without upgrade: {}",
        response.status()
    );
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

async fn expect_going_away(client: &mut Client) {
    loop {
        match client.next_event(TIMEOUT).await {
            // A room-mate's close may be reported first.
            Event::Message(
                ServerMessage::PeerLeft { .. } | ServerMessage::PeerReconnecting { .. },
            ) => continue,
            Event::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), server::close_code::GOING_AWAY);
                assert_eq!(frame.reason.as_str(), "server shutting down");
                return;
            }
            other => panic!("expected a 1001 close frame, got {other:?}"),
        }
    }
}

// Multi-threaded like the binary's runtime, so that `run` returning and the websocket tasks
// finishing really race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_websockets_with_1001() {
    let grace = Duration::from_secs(3);
    let mut server = TestServer::start_with(&["--shutdown-grace-secs", "3"]).await;
    let mut pair = Pair::new(&server, "x").await;
    let mut lobby = server.client().await; // connected, never joined
    let task = server.take_task();

    let started = Instant::now();
    server.trigger_shutdown();
    let result = tokio::time::timeout(grace + Duration::from_secs(2), task)
        .await
        .expect("run did not return within the grace period")
        .expect("run panicked");
    result.expect("run returned an error");
    let took = started.elapsed();
    assert!(took < grace, "run took {took:?}, grace is {grace:?}");
    // `run` returns once connections have finished: every session is gone by now, not later.
    assert_eq!(
        server.state.hub.connection_count(),
        0,
        "websocket sessions still alive after run returned"
    );

    for client in [&mut pair.a, &mut pair.b, &mut lobby] {
        expect_going_away(client).await;
    }
    // The listener is gone too.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// Kills and reaps the child when dropped, so a panicking test leaves no server behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Waits (polling) for the process to exit; `None` if it is still running after `wait`.
    fn wait_exit(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts the `server` binary on port 0 (unless `extra` gives an `--addr`) and returns it with
/// the port read from its stdout. Uses [`TEST_RESUME_SECRET`] unless `extra` has a
/// `--data-dir` or `--resume-secret`.
fn spawn_binary(dist: &std::path::Path, extra: &[&str]) -> (ChildGuard, u16) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
    if !extra.contains(&"--addr") {
        command.args(["--addr", "127.0.0.1:0"]);
    }
    if !extra.contains(&"--data-dir") && !extra.contains(&"--resume-secret") {
        command.args(["--resume-secret", TEST_RESUME_SECRET]);
    }
    let child = command
        .args(["--ice-server", "none", "--dist"])
        .arg(dist)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the server binary");
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(TIMEOUT)
        .expect("no 'listening' line on stdout in time");
    let port = line
        .strip_prefix("Noom is listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
        .trim()
        .parse::<u16>()
        .unwrap_or_else(|err| panic!("bad port in {line:?}: {err}"));
    assert_ne!(port, 0);
    (guard, port)
}

#[tokio::test]
async fn binary_prints_its_port_and_serves_healthz() {
    let dist = common::fake_dist();
    let (mut child, port) = spawn_binary(dist.path(), &[]);
    let response = http()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap().trim(), "ok");
    let index = http()
        .get(format!("http://127.0.0.1:{port}/r/room"))
        .send()
        .await
        .unwrap();
    assert!(index.text().await.unwrap().contains(INDEX_MARKER));
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}

#[cfg(unix)]
#[tokio::test]
async fn binary_sigterm_closes_websockets_with_1001_and_exits_cleanly() {
    let dist = common::fake_dist();
    let (mut child, port) = spawn_binary(dist.path(), &["--shutdown-grace-secs", "3"]);
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    client.join("x").await;
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    expect_going_away(&mut client).await;
    let exit = tokio::task::spawn_blocking(move || {
        let status = child.wait_exit(Duration::from_secs(5));
        (status, child)
    })
    .await
    .unwrap()
    .0
    .expect("server still running 5 s after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}

/// Reads until the connection ends (the server process died).
async fn expect_gone(client: &mut Client) {
    loop {
        match client.next_event(TIMEOUT).await {
            Event::Message(_) => continue,
            Event::Close(_) | Event::End | Event::Error(_) => return,
            Event::Timeout => panic!("the connection outlived the server"),
        }
    }
}

/// An upgrade of the server: killed (SIGKILL, no goodbye) and started again on the same port
/// with the same data directory. The resume secret it generated on first start is read back, so
/// the tokens it handed out still work: everyone comes back with the same id (as a restored seat:
/// the new process never knew the old seats), sees the others, and signaling works again.
#[tokio::test]
async fn a_restarted_binary_with_the_same_data_dir_accepts_the_old_tokens() {
    let dist = common::fake_dist();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("noom-data");
    let data_arg = data_dir.to_str().unwrap();
    let (child, port) = spawn_binary(dist.path(), &["--data-dir", data_arg]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut a = Client::connect(&url).await;
    let a_joined = a.join_as("standup", "Ana").await;
    let mut b = Client::connect(&url).await;
    let b_joined = b.join_as("standup", "Bo").await;
    assert_eq!(peer_joined(&a.recv().await), b_joined.you);
    // The secret was generated into the data directory, readable by the owner only.
    let secret = data_dir.join("resume-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(child); // SIGKILL, and reaped
    expect_gone(&mut a).await;
    expect_gone(&mut b).await;

    let addr = format!("127.0.0.1:{port}");
    let (_child, again) = spawn_binary(dist.path(), &["--addr", &addr, "--data-dir", data_arg]);
    assert_eq!(again, port);
    let mut a = Client::connect(&url).await;
    let a_back = a.resume("standup", &a_joined.resume_token).await;
    assert_eq!(a_back.you, a_joined.you);
    assert!(
        !a_back.resumed,
        "a new process: the seat is restored, not resumed"
    );
    assert!(a_back.peers.is_empty());
    let mut b = Client::connect(&url).await;
    let b_back = b.resume("standup", &b_joined.resume_token).await;
    assert_eq!(b_back.you, b_joined.you);
    assert_eq!(b_back.peer_ids(), [a_joined.you]);
    assert_eq!(peer_joined(&a.recv().await), b_joined.you);
    a.send(&offer(b_joined.you, "after the restart")).await;
    assert_eq!(
        b.recv().await,
        described(a_joined.you, SdpKind::Offer, "after the restart")
    );
    // A token from a server with another secret is still refused.
    let mut c = Client::connect(&url).await;
    let forged = server::resume::ResumeKeys::new(
        &server::datadir::Secret::from_text("some other server's secret").unwrap(),
    )
    .mint(
        a_joined.you,
        &RoomName::new("standup").unwrap(),
        2_000_000_000,
    )
    .unwrap();
    c.send(&common::join_with(
        "standup",
        "Mallory",
        Some(&forged),
        None,
    ))
    .await;
    c.expect_error(ErrorCode::ResumeRefused).await;
    a.expect_silence().await;
}

#[test]
fn binary_refuses_a_bad_ice_server() {
    let child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", "127.0.0.1:0", "--ice-server", "http://bad"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server binary");
    let mut guard = ChildGuard(child);
    let status = guard
        .wait_exit(TIMEOUT)
        .expect("server with a bad --ice-server did not exit");
    assert!(!status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut guard.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stun:"), "stderr: {stderr}");
    assert!(stderr.contains("http://bad"), "stderr: {stderr}");
}
