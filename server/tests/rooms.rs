//! Chat and room locks over real websockets: chat reaches the whole room (sender included) and no
//! one else, stamped by the server, with a size limit, the rate limit, and a history for late
//! joiners bounded at 50; a room locked with a passcode asks newcomers for it, refuses a wrong
//! one, limits guesses per address and per room, and lets a member with a resume token back in.

mod common;

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{join_with, peer_joined, Client, TestServer};
use shared::{
    ChatText, ClientMessage, DisplayName, ErrorCode, LockState, Passcode, PeerId, ServerMessage,
    CHAT_HISTORY, CHAT_MAX_BYTES,
};

fn chat(text: &str) -> ClientMessage {
    ClientMessage::Chat {
        text: ChatText::new(text).unwrap(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `names` join `room` in order; every notification read. (client, id) each.
async fn room_of(server: &TestServer, room: &str, names: &[&str]) -> Vec<(Client, PeerId)> {
    let mut members: Vec<(Client, PeerId)> = Vec::new();
    for name in names {
        let mut client = server.client().await;
        let joined = client.join_as(room, name).await;
        for (other, _) in &mut members {
            assert_eq!(peer_joined(&other.recv().await), joined.you);
        }
        members.push((client, joined.you));
    }
    members
}

async fn expect_chat(client: &mut Client) -> shared::ChatEntry {
    match client.recv().await {
        ServerMessage::Chat(entry) => entry,
        other => panic!("expected chat, got {other:?}"),
    }
}

#[tokio::test]
async fn chat_reaches_the_whole_room_in_one_order_stamped_by_the_server() {
    let server = TestServer::start().await;
    let mut room = room_of(&server, "standup", &["Ana", "Bo", "Cy"]).await;
    let mut elsewhere = room_of(&server, "elsewhere", &["Di"]).await;
    let before = unix_ms();
    // A forged `from`, `name` and `at` are ignored: the server stamps them.
    room[0]
        .0
        .send_raw(
            r#"{"type":"chat","text":"<img src=x onerror=alert(1)>","from":1,"name":"Bo","at":5}"#,
        )
        .await;
    room[1].0.send(&chat("second\nline")).await;
    let (ana, bo) = (room[0].1, room[1].1);
    let mut orders = Vec::new();
    for (client, _) in &mut room {
        let first = expect_chat(client).await;
        let second = expect_chat(client).await;
        orders.push([first, second]);
    }
    let after = unix_ms();
    for (client, _) in &mut room {
        client.expect_silence().await;
    }
    for entry in &orders[0] {
        assert!((before..=after).contains(&entry.at), "{}", entry.at);
    }
    // Everyone, the senders included, saw the same messages in the same order.
    assert!(orders.windows(2).all(|w| w[0] == w[1]));
    let ana_entry = orders[0].iter().find(|e| e.from == ana).unwrap();
    assert_eq!(ana_entry.name, DisplayName::new("Ana").unwrap());
    assert_eq!(ana_entry.text.as_str(), "<img src=x onerror=alert(1)>");
    let bo_entry = orders[0].iter().find(|e| e.from == bo).unwrap();
    assert_eq!(bo_entry.name, DisplayName::new("Bo").unwrap());
    assert_eq!(bo_entry.text.as_str(), "second\nline");
    elsewhere[0].0.expect_silence().await;
    // Before joining, there is no one to chat with.
    let mut lobby = server.client().await;
    lobby.send(&chat("anyone?")).await;
    lobby.expect_error(ErrorCode::NotInRoom).await;
    let metrics = server.scrape().await;
    assert_eq!(metrics.value("noom_chat_messages_total"), 2.0);
    assert_eq!(
        metrics.value(r#"noom_messages_relayed_total{type="chat"}"#),
        6.0
    );
}

#[tokio::test]
async fn oversize_and_blank_chat_is_refused_and_nothing_is_relayed() {
    let server = TestServer::start().await;
    let mut room = room_of(&server, "standup", &["Ana", "Bo"]).await;
    let longest = "x".repeat(CHAT_MAX_BYTES);
    room[0].0.send(&chat(&longest)).await;
    for (client, _) in &mut room {
        assert_eq!(
            expect_chat(client).await.text.as_str().len(),
            CHAT_MAX_BYTES
        );
    }
    for bad in [
        format!(
            r#"{{"type":"chat","text":"{}"}}"#,
            "x".repeat(CHAT_MAX_BYTES + 1)
        ),
        format!(
            r#"{{"type":"chat","text":"{}"}}"#,
            "é".repeat(CHAT_MAX_BYTES / 2 + 1)
        ),
        r#"{"type":"chat","text":"  "}"#.to_string(),
        r#"{"type":"chat","text":"bell\u0007"}"#.to_string(),
    ] {
        room[0].0.send_raw(bad).await;
        let text = room[0].0.expect_error(ErrorCode::InvalidChat).await;
        assert!(text.contains("chat message"), "{text}");
    }
    room[1].0.expect_silence().await;
    // Still usable.
    room[0].0.send(&chat("fine")).await;
    assert_eq!(expect_chat(&mut room[1].0).await.text.as_str(), "fine");
}

#[tokio::test]
async fn a_chat_flood_is_rate_limited() {
    let server = TestServer::start_with(&[
        "--rate-burst",
        "6",
        "--rate-per-sec",
        "1",
        "--max-bad-messages",
        "0",
    ])
    .await;
    let mut room = room_of(&server, "standup", &["Ana", "Bo"]).await;
    // The join took one token: five chats go through, the rest are refused.
    for i in 0..12 {
        room[0].0.send(&chat(&format!("flood {i}"))).await;
    }
    let mut relayed = Vec::new();
    while let common::Event::Message(message) = room[1].0.next_event(common::QUIET).await {
        match message {
            ServerMessage::Chat(entry) => relayed.push(entry.text.as_str().to_string()),
            other => panic!("expected chat, got {other:?}"),
        }
    }
    assert!((5..=6).contains(&relayed.len()), "{relayed:?}");
    for (i, text) in relayed.iter().enumerate() {
        assert_eq!(text, &format!("flood {i}"), "in order, the first ones");
    }
    let mut refused = 0;
    while let common::Event::Message(message) = room[0].0.next_event(common::QUIET).await {
        match message {
            ServerMessage::Chat(_) => {}
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            } => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(relayed.len() + refused, 12);
}

#[tokio::test]
async fn a_late_joiner_gets_the_last_fifty_messages_and_the_history_dies_with_the_room() {
    let server =
        TestServer::start_with(&["--rate-burst", "1000", "--resume-grace-secs", "0"]).await;
    let mut room = room_of(&server, "standup", &["Ana"]).await;
    for i in 0..CHAT_HISTORY + 7 {
        room[0].0.send(&chat(&format!("message {i}"))).await;
        expect_chat(&mut room[0].0).await;
    }
    let mut late = server.client().await;
    let joined = late.join_as("standup", "Late").await;
    assert_eq!(joined.chat.len(), CHAT_HISTORY);
    for (i, entry) in joined.chat.iter().enumerate() {
        assert_eq!(entry.text.as_str(), format!("message {}", i + 7));
        assert_eq!(entry.from, room[0].1);
        assert_eq!(entry.name, DisplayName::new("Ana").unwrap());
    }
    // Everyone leaves: the room, and its history, are gone.
    late.send(&ClientMessage::Leave).await;
    drop(room);
    server.wait_for_room_count(0).await;
    let (_again, joined) = server.joined_client("standup").await;
    assert!(joined.chat.is_empty());
}

#[tokio::test]
async fn a_passcode_lock_asks_newcomers_for_it_and_refuses_a_wrong_one() {
    let server = TestServer::start().await;
    let mut room = room_of(&server, "standup", &["Ana", "Bo"]).await;
    let ana = room[0].1;
    room[0]
        .0
        .send(&ClientMessage::Lock {
            passcode: Passcode::new("open sesame").unwrap(),
        })
        .await;
    for (client, _) in &mut room {
        assert_eq!(
            client.recv().await,
            ServerMessage::LockChanged {
                lock: LockState::Passcode,
                by: ana
            }
        );
    }
    let mut c = server.client().await;
    c.send(&join_with("standup", "Cy", None, None)).await;
    let text = c.expect_error(ErrorCode::PasscodeRequired).await;
    assert!(text.contains("passcode"), "{text}");
    let started = std::time::Instant::now();
    c.send(&join_with("standup", "Cy", None, Some("open sesam")))
        .await;
    c.expect_error(ErrorCode::WrongPasscode).await;
    eprintln!("a wrong passcode was refused in {:?}", started.elapsed());
    for (client, _) in &mut room {
        client.expect_silence().await;
    }
    c.send(&join_with("standup", "Cy", None, Some("open sesame")))
        .await;
    let joined = c.expect_joined("standup").await;
    assert_eq!(joined.lock, LockState::Passcode);
    assert_eq!(joined.peers.len(), 2);
    for (client, _) in &mut room {
        assert_eq!(peer_joined(&client.recv().await), joined.you);
    }
    // Open again: anyone may come in.
    let bo = room[1].1;
    room[1].0.send(&ClientMessage::Unlock).await;
    let opened = ServerMessage::LockChanged {
        lock: LockState::Open,
        by: bo,
    };
    for (client, _) in &mut room {
        assert_eq!(client.recv().await, opened);
    }
    assert_eq!(c.recv().await, opened);
    let (_d, d_joined) = server.joined_client("standup").await;
    assert_eq!(d_joined.lock, LockState::Open);
    let metrics = server.scrape().await;
    assert_eq!(metrics.value("noom_lock_changes_total"), 2.0);
    assert_eq!(metrics.value("noom_passcode_failures_total"), 1.0);
    assert_eq!(
        metrics.value(r#"noom_errors_total{code="passcode-required"}"#),
        1.0
    );
    assert_eq!(
        metrics.value(r#"noom_errors_total{code="wrong-passcode"}"#),
        1.0
    );
}

#[tokio::test]
async fn an_empty_passcode_closes_the_room_but_a_member_with_a_token_gets_back_in() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let a_joined = a.join_as("standup", "Ana").await;
    let mut b = server.client().await;
    let b_joined = b.join_as("standup", "Bo").await;
    assert_eq!(peer_joined(&a.recv().await), b_joined.you);
    a.send(&ClientMessage::Lock {
        passcode: Passcode::empty(),
    })
    .await;
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.recv().await,
            ServerMessage::LockChanged {
                lock: LockState::Closed,
                by: a_joined.you
            }
        );
    }
    let mut c = server.client().await;
    for passcode in [None, Some("anything")] {
        c.send(&join_with("standup", "Cy", None, passcode)).await;
        c.expect_error(ErrorCode::RoomClosed).await;
    }
    // b's connection drops; it comes back with its token, through the closed door.
    drop(b);
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerReconnecting { peer: b_joined.you }
    );
    let mut back = server.client().await;
    let joined = back.resume("standup", &b_joined.resume_token).await;
    assert!(joined.resumed);
    assert_eq!(joined.lock, LockState::Closed);
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerReconnected { peer: b_joined.you }
    );
}

#[tokio::test]
async fn a_room_created_with_a_passcode_is_locked_and_the_lock_dies_with_the_room() {
    let server = TestServer::start_with(&["--resume-grace-secs", "0"]).await;
    let mut a = server.client().await;
    a.send(&join_with("private", "Ana", None, Some("1234")))
        .await;
    let joined = a.expect_joined("private").await;
    assert_eq!(joined.lock, LockState::Passcode);
    let mut b = server.client().await;
    b.send(&join_with("private", "Bo", None, None)).await;
    b.expect_error(ErrorCode::PasscodeRequired).await;
    b.send(&join_with("private", "Bo", None, Some("1234")))
        .await;
    b.expect_joined("private").await;
    drop(a);
    drop(b);
    server.wait_for_room_count(0).await;
    let (_c, joined) = server.joined_client("private").await;
    assert_eq!(joined.lock, LockState::Open);
}

#[tokio::test]
async fn passcode_guesses_are_limited_per_address_and_per_room() {
    let server = TestServer::start_with(&[
        "--passcode-attempts-per-ip",
        "3",
        "--passcode-attempts-per-room",
        "5",
    ])
    .await;
    let mut a = server.client().await;
    a.join_as("standup", "Ana").await;
    // Locking with a passcode costs an attempt too (of 127.0.0.1, and of the room): 4 left.
    a.send(&ClientMessage::Lock {
        passcode: Passcode::new("right").unwrap(),
    })
    .await;
    assert!(matches!(a.recv().await, ServerMessage::LockChanged { .. }));
    let url = server.ws_url();
    let from = |ip: &str| Some(ip.parse::<IpAddr>().unwrap());
    let mut guesser = Client::upgrade(&url, &[], from("127.0.0.2"))
        .await
        .connected();
    for _ in 0..3 {
        guesser
            .send(&join_with("standup", "Eve", None, Some("wrong")))
            .await;
        guesser.expect_error(ErrorCode::WrongPasscode).await;
    }
    // The fourth try from the same address is refused before it is checked, right or not.
    guesser
        .send(&join_with("standup", "Eve", None, Some("right")))
        .await;
    let text = guesser.expect_error(ErrorCode::TooManyAttempts).await;
    assert!(text.contains("Wait a minute"), "{text}");
    // Another address gets the room's last attempt, then the room is out of attempts too.
    let mut other = Client::upgrade(&url, &[], from("127.0.0.3"))
        .await
        .connected();
    other
        .send(&join_with("standup", "Fay", None, Some("wrong")))
        .await;
    other.expect_error(ErrorCode::WrongPasscode).await;
    other
        .send(&join_with("standup", "Fay", None, Some("right")))
        .await;
    other.expect_error(ErrorCode::TooManyAttempts).await;
    // Another room is unaffected.
    let mut elsewhere = Client::upgrade(&url, &[], from("127.0.0.3"))
        .await
        .connected();
    elsewhere
        .send(&join_with("open room", "Fay", None, Some("set on create")))
        .await;
    elsewhere.expect_joined("open room").await;
    a.expect_silence().await;
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_errors_total{code="too-many-attempts"}"#),
        2.0
    );
    assert_eq!(metrics.value("noom_passcode_failures_total"), 4.0);
}
