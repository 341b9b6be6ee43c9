//! Resuming a seat over real websockets: a dropped connection's seat is kept for the grace
//! period, a reconnect with the seat's token takes it back with the same id, and what was sent to
//! it meanwhile follows `joined` (or the seat is released when that overflows). Tokens that are
//! forged, expired, malformed or for another room are refused with `resume-refused`. (A restart
//! of the server binary is in `signaling.rs`, with the other tests of the binary.)

mod common;

use std::time::{Duration, Instant};

use common::{
    described, offer, peer_joined, Client, Event, TestServer, TEST_RESUME_SECRET, TIMEOUT,
};
use server::datadir::Secret;
use server::resume::{ResumeKeys, TOKEN_LIFETIME};
use shared::{
    ChatText, ClientMessage, ErrorCode, MediaState, PeerId, ResumeToken, RoomName, SdpKind,
    ServerMessage,
};

/// Reads until the server's close frame and returns its code and reason.
async fn expect_close(client: &mut Client) -> (u16, String) {
    loop {
        match client.next_event(TIMEOUT).await {
            Event::Message(_) => continue,
            Event::Close(Some(frame)) => return (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Three people in `room`, all notifications read: (client, id, token) each.
async fn three(server: &TestServer, room: &str) -> Vec<(Client, PeerId, ResumeToken)> {
    let mut members: Vec<(Client, PeerId, ResumeToken)> = Vec::new();
    for name in ["Ana", "Bo", "Cy"] {
        let mut client = server.client().await;
        let joined = client.join_as(room, name).await;
        for (other, _, _) in &mut members {
            assert_eq!(peer_joined(&other.recv().await), joined.you);
        }
        members.push((client, joined.you, joined.resume_token));
    }
    members
}

#[tokio::test]
async fn resume_within_the_grace_keeps_the_peer_id_and_the_room_never_hears_peer_left() {
    let server = TestServer::start_with(&["--resume-grace-secs", "2"]).await;
    let mut members = three(&server, "standup").await;
    let (b, b_id, b_token) = members.remove(1);
    let (a_id, c_id) = (members[0].1, members[1].1);
    // b sets its media state, then its connection drops without a close frame.
    let mut b = b;
    let muted = MediaState {
        muted: true,
        ..MediaState::default()
    };
    b.send(&ClientMessage::MediaState(muted.clone())).await;
    for (other, _, _) in &mut members {
        assert!(matches!(
            other.recv().await,
            ServerMessage::PeerMediaState { .. }
        ));
    }
    drop(b);
    let dropped = Instant::now();
    for (other, _, _) in &mut members {
        assert_eq!(
            other.recv().await,
            ServerMessage::PeerReconnecting { peer: b_id }
        );
    }
    // Meanwhile a calls b (kept for it) and chats (restated by `joined`).
    members[0]
        .0
        .send(&offer(b_id, "v=0 offer while b was away"))
        .await;
    members[0]
        .0
        .send(&ClientMessage::Chat {
            text: ChatText::new("is b back?").unwrap(),
        })
        .await;
    for (other, _, _) in &mut members {
        assert!(matches!(other.recv().await, ServerMessage::Chat(_)));
    }
    // b reconnects with its token.
    let mut back = server.client().await;
    let joined = back.resume("standup", &b_token).await;
    assert_eq!(joined.you, b_id, "the same id");
    assert!(joined.resumed);
    assert_eq!(joined.peer_ids(), [a_id, c_id]);
    assert_eq!(joined.chat.len(), 1);
    assert_eq!(
        back.recv().await,
        described(a_id, SdpKind::Offer, "v=0 offer while b was away"),
        "what was sent to the seat follows joined"
    );
    for (other, _, _) in &mut members {
        assert_eq!(
            other.recv().await,
            ServerMessage::PeerReconnected { peer: b_id }
        );
    }
    // Its media state was kept for newcomers.
    let (mut d, d_joined) = server.joined_client("standup").await;
    let b_member = d_joined.peers.iter().find(|m| m.id == b_id).unwrap();
    assert_eq!(b_member.media, muted);
    assert!(!b_member.reconnecting);
    // Past the end of the original grace: nobody hears that b left.
    let wait = Duration::from_millis(2500).saturating_sub(dropped.elapsed());
    tokio::time::sleep(wait).await;
    for (other, _, _) in &mut members {
        assert_eq!(peer_joined(&other.recv().await), d_joined.you);
        other.expect_silence().await;
    }
    assert_eq!(peer_joined(&back.recv().await), d_joined.you);
    // The resumed seat relays both ways.
    back.send(&offer(a_id, "from b again")).await;
    assert_eq!(
        members[0].0.recv().await,
        described(b_id, SdpKind::Offer, "from b again")
    );
    d.expect_silence().await;
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_resumes_total{outcome="resumed"}"#),
        1.0
    );
    assert_eq!(
        metrics.value(r#"noom_seats_expired_total{reason="grace"}"#),
        0.0
    );
}

#[tokio::test]
async fn after_the_grace_the_room_hears_peer_left_and_the_token_seats_the_person_again() {
    let server = TestServer::start_with(&["--resume-grace-secs", "1"]).await;
    let mut members = three(&server, "standup").await;
    let (b, b_id, b_token) = members.remove(1);
    b.close().await;
    let closed = Instant::now();
    for (other, _, _) in &mut members {
        assert_eq!(
            other.recv().await,
            ServerMessage::PeerReconnecting { peer: b_id }
        );
    }
    for (other, _, _) in &mut members {
        assert_eq!(other.recv().await, ServerMessage::PeerLeft { peer: b_id });
    }
    let waited = closed.elapsed();
    eprintln!("peerLeft {waited:?} after the close");
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Too late to resume, but the token still seats b again with the same id: the others
    // hear a newcomer (and drop whatever connection they had to the old b).
    let mut back = server.client().await;
    let joined = back.resume("standup", &b_token).await;
    assert_eq!(joined.you, b_id);
    assert!(!joined.resumed);
    for (other, _, _) in &mut members {
        assert_eq!(peer_joined(&other.recv().await), b_id);
    }
    back.expect_silence().await;
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_seats_expired_total{reason="grace"}"#),
        1.0
    );
    assert_eq!(
        metrics.value(r#"noom_resumes_total{outcome="restored"}"#),
        1.0
    );
}

#[tokio::test]
async fn forged_expired_malformed_and_other_room_tokens_are_refused() {
    let server = TestServer::start().await;
    let mut members = three(&server, "standup").await;
    let (_, a_id, a_token) = &members[0];
    let (a_id, a_token) = (*a_id, a_token.clone());
    let room = RoomName::new("standup").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed with the server's own secret 13 hours ago: genuine, but expired.
    let ours = ResumeKeys::new(&Secret::from_text(TEST_RESUME_SECRET).unwrap());
    let expired = ours
        .mint(a_id, &room, now - TOKEN_LIFETIME.as_secs() - 3600)
        .unwrap();
    // Signed with another secret.
    let theirs = ResumeKeys::new(&Secret::from_text("not the server's secret").unwrap());
    let forged = theirs.mint(a_id, &room, now).unwrap();
    let malformed = ResumeToken::new("v1.0123.4567").unwrap();
    let mut c = server.client().await;
    for (token, room, why) in [
        (&forged, "standup", "not signed by this server"),
        (&expired, "standup", "expired"),
        (&malformed, "standup", "not one this server issues"),
        (&a_token, "another room", "for another room"),
    ] {
        c.send(&common::join_with(room, "Mallory", Some(token), None))
            .await;
        let text = c.expect_error(ErrorCode::ResumeRefused).await;
        assert!(text.contains(why), "{text:?} should say {why:?}");
    }
    // Nobody took a's seat; a hears nothing; and the refused client can still join afresh.
    for (member, _, _) in &mut members {
        member.expect_silence().await;
    }
    let joined = c.join("another room").await;
    assert_ne!(joined.you, a_id);
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_resumes_total{outcome="refused"}"#),
        4.0
    );
    assert_eq!(
        metrics.value(r#"noom_errors_total{code="resume-refused"}"#),
        4.0
    );
}

#[tokio::test]
async fn kept_messages_that_overflow_release_the_seat() {
    let server =
        TestServer::start_with(&["--max-queue-bytes", "524288", "--rate-per-sec", "0"]).await;
    let mut members = three(&server, "standup").await;
    let (b, b_id, b_token) = members.remove(1);
    drop(b);
    for (other, _, _) in &mut members {
        assert_eq!(
            other.recv().await,
            ServerMessage::PeerReconnecting { peer: b_id }
        );
    }
    // A held seat keeps at most half the queue bound (256 KiB): the fifth 60 KB offer does not
    // fit, and the seat is released rather than the offer silently dropped.
    let sdp = "s".repeat(60_000);
    for i in 0..5 {
        members[0].0.send(&offer(b_id, &format!("{i} {sdp}"))).await;
    }
    for (other, _, _) in &mut members {
        assert_eq!(other.recv().await, ServerMessage::PeerLeft { peer: b_id });
    }
    // b's token now seats it again (not a resume: nothing is delivered).
    let mut back = server.client().await;
    let joined = back.resume("standup", &b_token).await;
    assert_eq!(joined.you, b_id);
    assert!(!joined.resumed);
    back.expect_silence().await;
    for (other, _, _) in &mut members {
        assert_eq!(peer_joined(&other.recv().await), b_id);
    }
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_seats_expired_total{reason="overflow"}"#),
        1.0
    );
}

#[tokio::test]
async fn a_token_for_a_seat_still_open_takes_it_over_and_closes_the_old_connection() {
    let server = TestServer::start().await;
    let mut members = three(&server, "standup").await;
    let (mut old, b_id, b_token) = members.remove(1);
    let a_id = members[0].1;
    // The server still believes `old` is alive (it has not noticed it died). A signal for b
    // waits in its queue.
    members[0].0.send(&offer(b_id, "for b")).await;
    let mut newer = server.client().await;
    let joined = newer.resume("standup", &b_token).await;
    assert_eq!(joined.you, b_id);
    assert!(joined.resumed);
    // The old connection is closed with a clear code. (The offer was most likely written to it
    // already; had it still been queued, it would follow the new `joined`.)
    let (code, reason) = expect_close(&mut old).await;
    assert_eq!(code, server::close_code::REPLACED);
    assert_eq!(reason, "replaced by a newer connection");
    // The room noticed nothing.
    for (other, _, _) in &mut members {
        other.expect_silence().await;
    }
    members[0].0.send(&offer(b_id, "for the new b")).await;
    loop {
        let message = newer.recv().await;
        if message == described(a_id, SdpKind::Offer, "for the new b") {
            break;
        }
        assert_eq!(message, described(a_id, SdpKind::Offer, "for b"));
    }
    server.wait_for_connection_count(3).await;
    assert_eq!(server.state.hub.held_count(), 0);
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_resumes_total{outcome="taken-over"}"#),
        1.0
    );
}
