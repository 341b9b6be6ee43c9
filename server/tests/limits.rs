//! The limits that let the server face the internet, over real websockets on 127.0.0.1 port 0:
//! message size (1009), bad-message and rate limits (1008, `rate-limited`), connection limits
//! (503 / 429), the Origin check (403), keep-alive, slow readers, `/metrics`. Each test also
//! checks that a well-behaved pair in another room is unaffected. Every wait is bounded.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{ice, join, offer, Client, Event, Pair, TestServer, TIMEOUT};
use futures::SinkExt;
use shared::{ChatText, ClientMessage, ErrorCode, MediaState, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

/// Reads until the server's close frame and returns its code and reason. Messages queued before
/// the close (error replies, `peerLeft`) are skipped.
async fn expect_close(client: &mut Client) -> (u16, String) {
    loop {
        match client.next_event(TIMEOUT).await {
            Event::Message(_) => continue,
            Event::Close(Some(frame)) => return (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// One offer each way, without the quiet periods of `Pair::assert_relays` (during which an
/// unread client would miss fast keep-alive pings).
async fn relay_once(pair: &mut Pair) {
    pair.a.send(&offer(pair.b_id, "quick")).await;
    assert!(
        matches!(pair.b.recv().await, ServerMessage::Description { from, .. } if from == pair.a_id)
    );
    pair.b.send(&offer(pair.a_id, "quick")).await;
    assert!(
        matches!(pair.a.recv().await, ServerMessage::Description { from, .. } if from == pair.b_id)
    );
}

fn media_state() -> ClientMessage {
    ClientMessage::MediaState(MediaState {
        muted: true,
        camera_off: false,
        screen: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Message size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversize_messages_close_with_1009_and_the_room_is_told() {
    let server = TestServer::start_with(&["--max-message-bytes", "1024"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    // Just over the limit (read whole, then refused), and far over it (stopped by the
    // websocket layer after the frame header): both get a 1009 close.
    for size in [1100, 1 << 20] {
        let mut pair = Pair::new(&server, "x").await;
        let big = offer(pair.b_id, &"b".repeat(size));
        // A frame this big may not be fully written before the server closes: ignore errors.
        let _ = tokio::time::timeout(TIMEOUT, pair.a.ws.send(Message::text(big.to_json()))).await;
        assert_eq!(
            expect_close(&mut pair.a).await,
            (server::close_code::TOO_BIG, "message too big".into()),
            "{size} bytes"
        );
        assert_eq!(
            pair.b.recv().await,
            ServerMessage::PeerLeft { peer: pair.a_id },
            "the message was not relayed; the sender left"
        );
        pair.b.send(&ClientMessage::Leave).await;
        pair.b.close().await;
        server.wait_for_room_count(1).await;
    }
    bystanders.assert_relays().await;
    let metrics = server.scrape().await;
    assert_eq!(metrics.value("noom_oversize_closes_total"), 2.0);
}

// ---------------------------------------------------------------------------------------------
// Bad messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_keeps_sending_bad_messages_is_closed_with_1008() {
    let server = TestServer::start_with(&["--max-bad-messages", "6"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let (mut bad, _) = server.joined_client("bad").await;
    // Refusals a correct client can run into do not count: a candidate for a peer that just
    // left, a full room.
    for _ in 0..10 {
        bad.send(&ice(bystanders.a_id, "late")).await;
        bad.expect_error(ErrorCode::UnknownPeer).await;
    }
    // Each kind of bad message counts once; every one is answered until the last.
    let inputs = [
        (Message::text("{not json"), ErrorCode::Malformed),
        (Message::binary(vec![1, 2, 3]), ErrorCode::Malformed),
        (Message::text(r#"{"type":"dance"}"#), ErrorCode::UnknownType),
        (
            Message::text(r#"{"type":"join","room":"","name":"A","version":2}"#),
            ErrorCode::InvalidRoom,
        ),
        (
            Message::text(join("again").to_json()),
            ErrorCode::AlreadyJoined,
        ),
    ];
    for (input, code) in inputs {
        bad.send_frame(input).await;
        bad.expect_error(code).await;
    }
    bad.expect_silence().await;
    // The sixth bad message: its error reply, then the close.
    bad.send_raw("still not json").await;
    bad.expect_error(ErrorCode::Malformed).await;
    assert_eq!(
        expect_close(&mut bad).await,
        (server::close_code::POLICY, "too many bad messages".into())
    );
    server.wait_for_connection_count(2).await;
    bystanders.assert_relays().await;
    let metrics = server.scrape().await;
    assert_eq!(metrics.value("noom_bad_message_closes_total"), 1.0);
    assert_eq!(
        metrics.value(r#"noom_errors_total{code="unknown-peer"}"#),
        10.0
    );
    assert_eq!(metrics.value(r#"noom_errors_total{code="malformed"}"#), 3.0);
}

// ---------------------------------------------------------------------------------------------
// Rate limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_over_the_rate_limit_are_refused_and_a_flood_is_closed() {
    let server = TestServer::start_with(&[
        "--rate-burst",
        "20",
        "--rate-per-sec",
        "1",
        "--max-bad-messages",
        "5",
    ])
    .await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let mut pair = Pair::new(&server, "x").await;
    // The join took one token; 19 more go through, in order.
    for i in 0..19 {
        pair.a
            .send(&ice(pair.b_id, &format!("candidate:{i}")))
            .await;
    }
    for i in 0..19 {
        match pair.b.recv().await {
            ServerMessage::IceCandidate {
                from, candidate, ..
            } => {
                assert_eq!(from, pair.a_id);
                assert_eq!(candidate.candidate, format!("candidate:{i}"));
            }
            other => panic!("expected candidate {i}, got {other:?}"),
        }
    }
    // Over the limit: refused, not relayed, and the connection stays usable at first.
    pair.a.send(&ice(pair.b_id, "too fast")).await;
    let text = pair.a.expect_error(ErrorCode::RateLimited).await;
    assert!(text.contains("too fast"), "{text}");
    pair.b.expect_silence().await;
    // Keeping on flooding counts toward the bad-message limit: closed with 1008.
    for _ in 0..10 {
        pair.a.send(&media_state()).await;
    }
    assert_eq!(
        expect_close(&mut pair.a).await,
        (server::close_code::POLICY, "too many bad messages".into())
    );
    assert_eq!(
        pair.b.recv().await,
        ServerMessage::PeerLeft { peer: pair.a_id }
    );
    pair.b.expect_silence().await;
    bystanders.assert_relays().await;
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_rejections_total{reason="rate"}"#),
        5.0
    );
    assert_eq!(
        metrics.value(r#"noom_errors_total{code="rate-limited"}"#),
        5.0
    );
}

#[tokio::test]
async fn the_rate_limit_refills_over_time() {
    let server = TestServer::start_with(&["--rate-burst", "3", "--rate-per-sec", "5"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let mut pair = Pair::new(&server, "x").await;
    // The join took one token. Of ten messages sent at once, two go through, plus at most one
    // per 200 ms that the test has taken so far; the rest are refused.
    for _ in 0..10 {
        pair.a.send(&media_state()).await;
    }
    let mut relayed = 0;
    while let Event::Message(message) = pair.b.next_event(common::QUIET).await {
        assert!(matches!(message, ServerMessage::PeerMediaState { .. }));
        relayed += 1;
    }
    let mut refused = 0;
    while let Event::Message(message) = pair.a.next_event(common::QUIET).await {
        assert!(matches!(
            message,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        ));
        refused += 1;
    }
    assert_eq!(relayed + refused, 10);
    assert!(relayed >= 2 && refused >= 1, "{relayed} relayed");
    // 5 a second: after 400 ms there are tokens again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    pair.a.send(&media_state()).await;
    assert!(matches!(
        pair.b.recv().await,
        ServerMessage::PeerMediaState { .. }
    ));
    pair.a.expect_silence().await;
    bystanders.assert_relays().await;
}

// ---------------------------------------------------------------------------------------------
// Connection limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_over_the_total_limit_are_refused_with_503() {
    let server = TestServer::start_with(&["--max-connections", "3"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let third = server.client().await;
    let (status, body) = Client::upgrade(&server.ws_url(), &[], None).await.refused();
    assert_eq!(status, 503);
    assert!(body.contains("too many connections"), "{body}");
    // Plain HTTP is not limited.
    let health = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    // A place frees up when a connection closes.
    third.close().await;
    common::wait_until(
        || server.state.limiter.open() == 2,
        || format!("{} connections open", server.state.limiter.open()),
    )
    .await;
    let mut again = Client::upgrade(&server.ws_url(), &[], None)
        .await
        .connected();
    again.join("again").await;
    bystanders.assert_relays().await;
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_rejections_total{reason="total"}"#),
        1.0
    );
    assert_eq!(metrics.value("noom_connections_open"), 3.0);
    assert_eq!(metrics.value("noom_connections_total"), 4.0);
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_are_refused_with_429() {
    let server = TestServer::start_with(&["--max-connections-per-ip", "2"]).await;
    // Two from 127.0.0.1 (the bystanders), then a third from the same address is refused...
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let (status, body) = Client::upgrade(&server.ws_url(), &[], None).await.refused();
    assert_eq!(status, 429);
    assert!(body.contains("from your address"), "{body}");
    // ...while other addresses still get in (Linux routes all of 127/8 to loopback).
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = Client::upgrade(&server.ws_url(), &[], Some(other))
        .await
        .connected();
    let mut d = Client::upgrade(&server.ws_url(), &[], Some(other))
        .await
        .connected();
    c.join("other").await;
    d.join("other").await;
    bystanders.assert_relays().await;
    assert_eq!(
        server
            .scrape()
            .await
            .value(r#"noom_rejections_total{reason="per-ip"}"#),
        1.0
    );
}

#[tokio::test]
async fn behind_a_proxy_the_client_ip_header_is_what_counts() {
    let server = TestServer::start_with(&[
        "--max-connections-per-ip",
        "1",
        "--client-ip-header",
        "x-forwarded-for",
    ])
    .await;
    let url = server.ws_url();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    // All from 127.0.0.1 (the "proxy"), for different clients.
    let mut a = Client::upgrade(&url, &from("198.51.100.1"), None)
        .await
        .connected();
    let mut b = Client::upgrade(&url, &from("10.0.0.1, 198.51.100.2"), None)
        .await
        .connected();
    let (status, _) = Client::upgrade(&url, &from("198.51.100.1"), None)
        .await
        .refused();
    assert_eq!(status, 429);
    a.join("x").await;
    b.join("x").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
}

#[tokio::test]
async fn max_rooms_refuses_a_new_room_with_server_full() {
    let server = TestServer::start_with(&["--max-rooms", "2"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let (_solo, _) = server.joined_client("solo").await;
    let mut c = server.client().await;
    c.send(&join("third")).await;
    c.expect_error(ErrorCode::ServerFull).await;
    // Existing rooms can still be entered; the refused client is not stuck.
    let joined = c.join("solo").await;
    assert_eq!(joined.peers.len(), 1);
    bystanders.assert_relays().await;
}

// ---------------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_origin_is_checked() {
    let server = TestServer::start_with(&["--allowed-origin", "http://127.0.0.1:8080"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let url = server.ws_url();
    let own = format!("http://{}", server.addr);
    // The page this server served, the configured dev origin, and a non-browser client (no
    // Origin) are allowed.
    for headers in [
        vec![("origin", own.as_str())],
        vec![("origin", "http://127.0.0.1:8080")],
        vec![],
    ] {
        let mut client = Client::upgrade(&url, &headers, None).await.connected();
        client.join(&format!("room {headers:?}")).await;
    }
    // Another site, another port of this host, and opaque origins are refused.
    let other_port = format!("http://127.0.0.1:{}", server.addr.port() + 1);
    for origin in [
        "http://evil.example",
        "https://127.0.0.1:8080",
        other_port.as_str(),
        "null",
    ] {
        let (status, body) = Client::upgrade(&url, &[("origin", origin)], None)
            .await
            .refused();
        assert_eq!(status, 403, "{origin}");
        assert!(body.contains("Origin"), "{body}");
    }
    bystanders.assert_relays().await;
    assert_eq!(
        server
            .scrape()
            .await
            .value(r#"noom_rejections_total{reason="origin"}"#),
        4.0
    );
}

// ---------------------------------------------------------------------------------------------
// Keep-alive and slow readers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_and_its_room_told() {
    let server =
        TestServer::start_with(&["--ping-interval-ms", "200", "--ping-timeout-ms", "200"]).await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let mut pair = Pair::new(&server, "x").await;
    // b stops reading (so it answers no pings); everyone else keeps reading, which answers them.
    let started = tokio::time::Instant::now();
    let watch = Duration::from_millis(1500);
    let a = &mut pair.a;
    let b_id = pair.b_id;
    let (took, quiet_a, quiet_b) = tokio::join!(
        async move {
            // Its seat is kept for a resume (the default grace is 30 s).
            assert_eq!(
                a.recv().await,
                ServerMessage::PeerReconnecting { peer: b_id }
            );
            let took = started.elapsed();
            let rest = a.next_event(watch.saturating_sub(took)).await;
            assert!(matches!(rest, Event::Timeout), "{rest:?}");
            took
        },
        bystanders.a.next_event(watch),
        bystanders.b.next_event(watch),
    );
    assert!(took < Duration::from_secs(1), "noticed after {took:?}");
    assert!(matches!(quiet_a, Event::Timeout), "{quiet_a:?}");
    assert!(matches!(quiet_b, Event::Timeout), "{quiet_b:?}");
    // Right away (pings are due every 200 ms, and only reading answers them): the other
    // clients are still there and relay; b's seat is kept for it, shown as reconnecting.
    relay_once(&mut bystanders).await;
    let (_c, joined) = server.joined_client("x").await;
    assert_eq!(joined.peer_ids(), [pair.a_id, pair.b_id]);
    assert!(joined.peers[1].reconnecting);
    // When b reads again, it finds the ping it missed and the server's close.
    assert_eq!(
        expect_close(&mut pair.b).await,
        (
            server::close_code::POLICY,
            "no answer to keep-alive pings".into()
        )
    );
    let metrics = server.scrape().await;
    assert_eq!(metrics.value("noom_keepalive_timeouts_total"), 1.0);
}

#[tokio::test]
async fn with_pings_off_a_silent_client_stays() {
    let server =
        TestServer::start_with(&["--ping-interval-ms", "0", "--ping-timeout-ms", "100"]).await;
    let mut pair = Pair::new(&server, "x").await;
    // Nobody reads for many would-be timeouts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    pair.assert_relays().await;
    assert_eq!(
        server.scrape().await.value("noom_keepalive_timeouts_total"),
        0.0
    );
}

/// The measurement that motivated byte-bounded queues: with 100 signals in flight per client
/// (well inside the default burst of 200), the old 128-message queue dropped a member of every
/// room. Here, in rooms of four with every limit at its default, each newcomer gets a full chat
/// history in `joined` and three peers' bursts of 100 ICE candidates at once, and reads them
/// through a small TCP window, so that they really wait in its queue (the test checks that some
/// queue held more than 128 messages). Everyone gets everything, in order, and no one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_bursts_in_rooms_of_four_pass() {
    const ROOMS: usize = 6;
    const BURST: usize = 100;
    let server = TestServer::start().await;
    let padding = "c".repeat(400);
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let room = format!("mesh {r}");
        let mut members = Vec::new();
        for _ in 0..3 {
            let (client, joined) = server.joined_client(&room).await;
            members.push((client, joined.you));
        }
        // Fill the room's chat history (50 messages of 1,900 bytes) from the three members.
        for i in 0..shared::CHAT_HISTORY {
            let text = ChatText::new(format!("{i:02} {}", "h".repeat(1900))).unwrap();
            members[i % 3].0.send(&ClientMessage::Chat { text }).await;
        }
        for (i, (client, _)) in members.iter_mut().enumerate() {
            // Member i heard the later members join, then the chat.
            for _ in i + 1..3 {
                assert!(matches!(
                    client.recv().await,
                    ServerMessage::PeerJoined { .. }
                ));
            }
            for _ in 0..shared::CHAT_HISTORY {
                assert!(matches!(client.recv().await, ServerMessage::Chat(_)));
            }
        }
        let mut newcomer = Client::connect_with_small_window(&server.ws_url(), 4096).await;
        newcomer.send(&join(&room)).await;
        rooms.push((room, members, newcomer));
    }
    // Wait until every newcomer is seated (their `joined` waits unread in their queue).
    common::wait_until(
        || server.state.hub.seat_count() == ROOMS * 4,
        || format!("{} seats", server.state.hub.seat_count()),
    )
    .await;
    // Everyone learns the newcomer's id from `peerJoined`, then all bursts go at once.
    let mut ids = Vec::new();
    for (_, members, _) in &mut rooms {
        let mut newcomer_id = None;
        for (client, _) in members.iter_mut() {
            newcomer_id = Some(common::peer_joined(&client.recv().await));
        }
        ids.push(newcomer_id.unwrap());
    }
    let sends = rooms
        .iter_mut()
        .zip(&ids)
        .map(|((_, members, _), newcomer)| {
            let padding = &padding;
            async move {
                for (client, _) in members.iter_mut() {
                    for i in 0..BURST {
                        client
                            .send(&ice(*newcomer, &format!("{i} {padding}")))
                            .await;
                    }
                }
            }
        });
    futures::future::join_all(sends).await;
    // Only once the server has queued every burst does a newcomer start reading.
    let expected_relays = (ROOMS * 3 * BURST) as f64;
    let started = std::time::Instant::now();
    loop {
        let relayed = server
            .scrape()
            .await
            .value(r#"noom_messages_relayed_total{type="iceCandidate"}"#);
        if relayed >= expected_relays {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "only {relayed} relayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (high_bytes, high_messages) = server.state.hub.queue_high_water();
    eprintln!("largest queue: {high_bytes} bytes, {high_messages} messages");
    assert!(
        high_messages > 128,
        "the bursts never queued more than the old 128-message bound ({high_messages})"
    );
    for ((room, members, newcomer), _) in rooms.iter_mut().zip(&ids) {
        let joined = newcomer.expect_joined(room).await;
        assert_eq!(joined.chat.len(), shared::CHAT_HISTORY);
        let senders: Vec<_> = members.iter().map(|(_, id)| *id).collect();
        assert_eq!(joined.peer_ids(), senders);
        let mut next = [0usize; 3];
        for _ in 0..3 * BURST {
            match newcomer.recv().await {
                ServerMessage::IceCandidate {
                    from, candidate, ..
                } => {
                    let sender = senders.iter().position(|id| *id == from).unwrap();
                    let number: usize = candidate
                        .candidate
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(number, next[sender], "in order from each sender");
                    next[sender] += 1;
                }
                other => panic!("expected a candidate, got {other:?}"),
            }
        }
        newcomer.expect_silence().await;
        for (member, _) in members.iter_mut() {
            member.expect_silence().await;
        }
    }
    let metrics = server.scrape().await;
    for reason in ["stalled", "queue-full"] {
        assert_eq!(
            metrics.value(&format!(
                r#"noom_slow_reader_disconnects_total{{reason="{reason}"}}"#
            )),
            0.0
        );
    }
    assert_eq!(server.state.hub.connection_count(), ROOMS * 4);
}

/// A client that stops reading while a peer keeps sending: once the kernel's socket buffers
/// are full, the server's write makes no progress, and after `--write-timeout-ms` the client is
/// dropped (its seat kept: the room hears `peerReconnecting`). With its token it comes back and
/// gets, in order, what was still queued for it.
#[tokio::test]
async fn a_stalled_reader_is_dropped_within_the_write_timeout_and_can_resume() {
    let server = TestServer::start_with(&[
        "--rate-per-sec",
        "0",
        "--write-timeout-ms",
        "500",
        // Big enough that only the stall can end it.
        "--max-queue-bytes",
        "134217728",
        "--max-message-bytes",
        "65536",
    ])
    .await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let (mut a, a_joined) = server.joined_client("x").await;
    let mut b = server.client().await;
    let b_joined = b.join("x").await;
    assert_eq!(common::peer_joined(&a.recv().await), b_joined.you);
    // b stops reading. a sends 60 KB offers, numbered, far more than loopback buffers hold.
    let sdp = "s".repeat(60_000);
    const SENT: usize = 400;
    for i in 0..SENT {
        a.send(&offer(b_joined.you, &format!("{i:04} {sdp}"))).await;
    }
    let sent_at = tokio::time::Instant::now();
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerReconnecting { peer: b_joined.you }
    );
    let took = sent_at.elapsed();
    eprintln!("dropped {took:?} after the last send");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let metrics = server.scrape().await;
    assert_eq!(
        metrics.value(r#"noom_slow_reader_disconnects_total{reason="stalled"}"#),
        1.0
    );
    let (high_bytes, _) = server.state.hub.queue_high_water();
    assert!(high_bytes <= 134_217_728);
    server.wait_for_connection_count(3).await;
    // b comes back on a new connection: `joined` (resumed), then what was still queued, in
    // order and up to the last one sent. (What the server had already written into the dead
    // socket is gone with it.)
    let mut back = server.client().await;
    let resumed = back.resume("x", &b_joined.resume_token).await;
    assert_eq!(resumed.you, b_joined.you);
    assert!(resumed.resumed);
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerReconnected { peer: b_joined.you }
    );
    let mut expected = None;
    loop {
        match back.recv().await {
            ServerMessage::Description {
                from, description, ..
            } => {
                assert_eq!(from, a_joined.you);
                let number: usize = description.sdp[..4].parse().unwrap();
                if let Some(expected) = expected {
                    assert_eq!(number, expected, "no gaps, in order");
                }
                expected = Some(number + 1);
                if number == SENT - 1 {
                    break;
                }
            }
            other => panic!("expected a kept offer, got {other:?}"),
        }
    }
    back.expect_silence().await;
    a.expect_silence().await;
    bystanders.assert_relays().await;
    drop(b);
}

/// A client that reads, but slower than messages arrive for it, is dropped when its queue would
/// go over `--max-queue-bytes`, and the queue never grows past it. What was queued is lost, so
/// its seat is released (the room hears `peerLeft`), not kept.
#[tokio::test]
async fn a_queue_never_exceeds_its_byte_bound_and_overflow_releases_the_seat() {
    const BOUND: usize = 524_288;
    let server = TestServer::start_with(&[
        "--max-queue-bytes",
        "524288",
        "--rate-per-sec",
        "0",
        // Long enough that the stall rule cannot end it first.
        "--write-timeout-ms",
        "60000",
    ])
    .await;
    let mut bystanders = Pair::new(&server, "bystanders").await;
    let mut pair = Pair::new(&server, "x").await;
    // b never reads: once the socket buffers are full, its queue fills up to the bound.
    let sdp = "s".repeat(60_000);
    let mut dropped = false;
    for _ in 0..1000 {
        pair.a.send(&offer(pair.b_id, &sdp)).await;
        if let Event::Message(message) = pair.a.next_event(Duration::from_millis(2)).await {
            assert_eq!(message, ServerMessage::PeerLeft { peer: pair.b_id });
            dropped = true;
            break;
        }
        let (high_bytes, _) = server.state.hub.queue_high_water();
        assert!(high_bytes <= BOUND, "{high_bytes}");
    }
    assert!(dropped, "b was never dropped");
    let (high_bytes, _) = server.state.hub.queue_high_water();
    eprintln!("largest queue: {high_bytes} bytes (bound {BOUND})");
    assert!(
        high_bytes <= BOUND && high_bytes > BOUND - 61_000,
        "{high_bytes}"
    );
    let metrics = server.scrape().await;
    assert!(metrics.value("noom_queue_high_water_bytes") <= BOUND as f64);
    assert_eq!(
        metrics.value(r#"noom_slow_reader_disconnects_total{reason="queue-full"}"#),
        1.0
    );
    pair.a.send(&offer(pair.b_id, "after")).await;
    pair.a.expect_error(ErrorCode::UnknownPeer).await;
    // Once b reads what is in its socket, the server's write completes and the close follows.
    assert_eq!(
        expect_close(&mut pair.b).await,
        (
            server::close_code::POLICY,
            "too slow: messages were not being read".into()
        )
    );
    server.wait_for_connection_count(3).await;
    bystanders.assert_relays().await;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_real_traffic() {
    let server = TestServer::start().await;
    let empty = server.scrape().await;
    assert_eq!(empty.value("noom_connections_open"), 0.0);
    assert_eq!(empty.value("noom_rooms_open"), 0.0);

    let mut pair = Pair::new(&server, "x").await;
    pair.assert_relays().await; // offer, answer, candidate
    pair.a
        .send(&ClientMessage::Chat {
            text: ChatText::new("hello").unwrap(),
        })
        .await;
    pair.a.recv().await;
    pair.b.recv().await;
    pair.a.send(&media_state()).await;
    pair.b.recv().await;
    pair.a.send_raw("{oops").await;
    pair.a.expect_error(ErrorCode::Malformed).await;
    let (_solo, _) = server.joined_client("y").await;
    let refused = Client::upgrade(&server.ws_url(), &[("origin", "http://evil.example")], None)
        .await
        .refused();
    assert_eq!(refused.0, 403);

    let response = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let metrics = common::Metrics(response.text().await.unwrap());
    eprintln!("{}", metrics.0);
    for (series, expected) in [
        ("noom_connections_open", 3.0),
        ("noom_connections_total", 3.0),
        ("noom_rooms_open", 2.0),
        (r#"noom_messages_received_total{type="join"}"#, 3.0),
        (r#"noom_messages_received_total{type="description"}"#, 2.0),
        (r#"noom_messages_received_total{type="iceCandidate"}"#, 1.0),
        (r#"noom_messages_received_total{type="mediaState"}"#, 1.0),
        (r#"noom_messages_received_total{type="chat"}"#, 1.0),
        (r#"noom_messages_received_total{type="invalid"}"#, 1.0),
        (r#"noom_messages_relayed_total{type="description"}"#, 2.0),
        (r#"noom_messages_relayed_total{type="iceCandidate"}"#, 1.0),
        (r#"noom_messages_relayed_total{type="peerMediaState"}"#, 1.0),
        (r#"noom_messages_relayed_total{type="chat"}"#, 2.0),
        (r#"noom_messages_relayed_total{type="joined"}"#, 0.0),
        ("noom_chat_messages_total", 1.0),
        (r#"noom_errors_total{code="malformed"}"#, 1.0),
        (r#"noom_errors_total{code="room-full"}"#, 0.0),
        (r#"noom_errors_total{code="wrong-passcode"}"#, 0.0),
        (r#"noom_rejections_total{reason="origin"}"#, 1.0),
        (
            r#"noom_slow_reader_disconnects_total{reason="stalled"}"#,
            0.0,
        ),
        (
            r#"noom_slow_reader_disconnects_total{reason="queue-full"}"#,
            0.0,
        ),
        (r#"noom_resumes_total{outcome="resumed"}"#, 0.0),
        ("noom_seats_reconnecting", 0.0),
    ] {
        assert_eq!(metrics.value(series), expected, "{series}");
    }
    // Disconnects and empty rooms are reflected: b drops (its seat is held), a leaves.
    let Pair { mut a, b, .. } = pair;
    b.close().await;
    common::wait_until(
        || server.state.metrics.seats_reconnecting.get() == 1,
        || "seats_reconnecting did not rise to 1".into(),
    )
    .await;
    a.send(&ClientMessage::Leave).await;
    a.close().await;
    common::wait_until(
        // b's held seat and the solo client's.
        || server.state.hub.held_count() == 1 && server.state.hub.seat_count() == 2,
        || "a's seat was not released".into(),
    )
    .await;
    assert_eq!(server.scrape().await.value("noom_seats_reconnecting"), 1.0);
    common::wait_until(
        || server.state.metrics.connections_open.get() == 1,
        || "connections_open did not drop to 1".into(),
    )
    .await;
    let after = server.scrape().await;
    assert_eq!(
        after.value("noom_rooms_open"),
        2.0,
        "b's held seat keeps its room"
    );
    assert_eq!(after.value("noom_connections_open"), 1.0);
}
