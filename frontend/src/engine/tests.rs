//! Tests of the call core, natively. Two kinds:
//! - scenario tests feed one [`Call`] events by hand and look at its effects;
//! - a small world (a fake server that relays like the real one, and fake peer connections that
//!   follow the JSEP offer/answer state machine, including implicit rollback) runs several cores
//!   against each other with event deliveries interleaved in many random orders, and checks that
//!   every pair of connections ends stable on the same offer and answer.

use std::collections::{BTreeMap, VecDeque};

use shared::{
    ChatText, ClientMessage, ConnectionId, DisplayName, ErrorCode, IceCandidate, LockState,
    MediaState, Member, PeerId, ResumeToken, RoomName, SdpKind, ServerMessage, SessionDescription,
};

use super::*;

fn room() -> RoomName {
    RoomName::new("room").unwrap()
}

fn name(text: &str) -> DisplayName {
    DisplayName::new(text).unwrap()
}

fn member(id: u64) -> Member {
    Member {
        id: PeerId::new(id),
        name: name(&format!("P{id}")),
        media: MediaState::default(),
        reconnecting: false,
    }
}

fn token(tag: &str) -> ResumeToken {
    ResumeToken::new(format!("t.{tag}")).unwrap()
}

fn joined(you: u64, peers: &[u64], resumed: bool) -> ServerMessage {
    ServerMessage::Joined {
        room: room(),
        you: PeerId::new(you),
        peers: peers.iter().map(|p| member(*p)).collect(),
        capacity: 4,
        ice_servers: Vec::new(),
        resume_token: token(&you.to_string()),
        resumed,
        lock: LockState::Open,
        chat: Vec::new(),
    }
}

fn offer(sdp: &str) -> SessionDescription {
    SessionDescription {
        kind: SdpKind::Offer,
        sdp: sdp.into(),
    }
}

fn answer(sdp: &str) -> SessionDescription {
    SessionDescription {
        kind: SdpKind::Answer,
        sdp: sdp.into(),
    }
}

fn cand(text: &str) -> IceCandidate {
    IceCandidate {
        candidate: text.into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

fn drain(call: &mut Call) -> Vec<Effect> {
    std::iter::from_fn(|| call.poll_effect()).collect()
}

fn join_command() -> Event {
    Event::Command(Command::Join {
        name: name("Me"),
        passcode: None,
    })
}

/// A call that has joined as `you` with `peers` already there; effects drained.
fn in_call(you: u64, peers: &[u64]) -> Call {
    let mut call = Call::new(room(), Timing::default(), 7);
    call.handle(Event::SignalingOpened);
    call.handle(join_command());
    call.handle(Event::Server(joined(you, peers, false)));
    drain(&mut call);
    call
}

fn created(effects: &[Effect]) -> Vec<(PeerId, ConnectionId, Role)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreatePeer {
                peer,
                connection,
                role,
                ..
            } => Some((*peer, *connection, *role)),
            _ => None,
        })
        .collect()
}

fn ops(effects: &[Effect]) -> Vec<(PeerId, PeerOp)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Peer { peer, op, .. } => Some((*peer, op.clone())),
            _ => None,
        })
        .collect()
}

fn sent(effects: &[Effect]) -> Vec<ClientMessage> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn timers(effects: &[Effect]) -> Vec<(Timer, Millis)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SetTimer { timer, after } => Some((*timer, *after)),
            _ => None,
        })
        .collect()
}

fn timer_of(effects: &[Effect], kind: TimerKind) -> Timer {
    timers(effects)
        .into_iter()
        .map(|(t, _)| t)
        .rfind(|t| t.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} timer in {effects:?}"))
}

fn connection_of(call: &Call, peer: u64) -> ConnectionId {
    call.remotes[&PeerId::new(peer)].connection
}

fn peer_event(call: &mut Call, peer: u64, event: PeerEvent) -> Vec<Effect> {
    let connection = connection_of(call, peer);
    call.handle(Event::Peer {
        peer: PeerId::new(peer),
        connection,
        event,
    });
    drain(call)
}

fn from_server(call: &mut Call, message: ServerMessage) -> Vec<Effect> {
    call.handle(Event::Server(message));
    drain(call)
}

fn description_from(peer: u64, connection: u32, description: SessionDescription) -> ServerMessage {
    ServerMessage::Description {
        from: PeerId::new(peer),
        connection: ConnectionId::new(connection),
        description,
    }
}

// ----- scenario tests -----

#[test]
fn the_lobby_connects_at_once_and_joins_on_the_open_socket() {
    let mut call = Call::new(room(), Timing::default(), 1);
    assert_eq!(drain(&mut call), [Effect::Connect]);
    call.handle(Event::SignalingOpened);
    assert!(
        drain(&mut call).is_empty(),
        "no join before the person asks"
    );
    call.handle(join_command());
    let effects = drain(&mut call);
    assert!(matches!(
        &sent(&effects)[..],
        [ClientMessage::Join { name, resume: None, .. }] if name.as_str() == "Me"
    ));
    assert_eq!(call.view().phase, Phase::Joining);
}

#[test]
fn a_newcomer_offers_at_once_and_members_answer() {
    let mut call = Call::new(room(), Timing::default(), 1);
    call.handle(Event::SignalingOpened);
    call.handle(join_command());
    drain(&mut call);
    let effects = from_server(&mut call, joined(5, &[2, 9], false));
    let made = created(&effects);
    assert_eq!(
        made.iter()
            .map(|(p, _, r)| (p.get(), *r))
            .collect::<Vec<_>>(),
        [(2, Role::Offerer), (9, Role::Offerer)]
    );
    assert_ne!(made[0].1, made[1].1, "each connection has its own id");
    // The offers are made at once, without waiting for the browser's `negotiationneeded`...
    let offers: Vec<u64> = ops(&effects)
        .into_iter()
        .filter(|(_, op)| *op == PeerOp::MakeOffer)
        .map(|(p, _)| p.get())
        .collect();
    assert_eq!(offers, [2, 9]);
    // ...which, should it still come, makes no second one while the first is out.
    let effects = peer_event(&mut call, 2, PeerEvent::NegotiationNeeded);
    assert!(ops(&effects).is_empty());
    // A newcomer after us calls us: we answer (and wait for their offer).
    let effects = from_server(&mut call, ServerMessage::PeerJoined { peer: member(11) });
    assert_eq!(created(&effects)[0].2, Role::Answerer);
    assert!(!ops(&effects).contains(&(PeerId::new(11), PeerOp::MakeOffer)));
    timer_of(&effects, TimerKind::AwaitOffer(PeerId::new(11)));
    assert_eq!(call.view().peers.len(), 3);
    // Three others: every copy of our video is capped by the shared uplink budget.
    let caps: Vec<u32> = ops(&effects)
        .into_iter()
        .filter_map(|(_, op)| match op {
            PeerOp::SetSending(s) => Some(s.video_limit.max_bitrate_bps),
            _ => None,
        })
        .collect();
    assert_eq!(caps, [uplink::for_room(3).max_bitrate_bps; 2]);
}

#[test]
fn offers_and_answers_carry_our_connection_id_and_candidates_follow() {
    let mut call = in_call(2, &[]);
    let effects = from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    let connection = created(&effects)[0].1;
    assert_eq!(
        ops(&peer_event(&mut call, 3, PeerEvent::NegotiationNeeded)),
        [(PeerId::new(3), PeerOp::MakeOffer)]
    );
    let effects = peer_event(&mut call, 3, PeerEvent::LocalDescription(offer("o")));
    assert_eq!(
        sent(&effects),
        [ClientMessage::Description {
            to: PeerId::new(3),
            connection,
            description: offer("o")
        }]
    );
    assert_eq!(
        timer_of(&effects, TimerKind::AnswerWatchdog(PeerId::new(3))).kind,
        TimerKind::AnswerWatchdog(PeerId::new(3))
    );
    let effects = peer_event(&mut call, 3, PeerEvent::IceCandidate(cand("c")));
    assert_eq!(
        sent(&effects),
        [ClientMessage::IceCandidate {
            to: PeerId::new(3),
            connection,
            candidate: cand("c")
        }]
    );
    let effects = from_server(&mut call, description_from(3, 77, answer("a")));
    assert_eq!(
        ops(&effects),
        [(PeerId::new(3), PeerOp::ApplyAnswer(answer("a")))]
    );
}

#[test]
fn glare_both_orders_polite_accepts_impolite_ignores() {
    // We are 2. Peer 1 is lower: we are impolite towards it. Peer 3 is higher: polite.
    for (peer, polite) in [(1u64, false), (3u64, true)] {
        let mut call = in_call(2, &[]);
        from_server(&mut call, ServerMessage::PeerJoined { peer: member(peer) });
        peer_event(&mut call, peer, PeerEvent::NegotiationNeeded);
        // Order 1: their offer arrives while ours is being made.
        let effects = from_server(&mut call, description_from(peer, 50, offer("theirs")));
        if polite {
            assert_eq!(
                ops(&effects),
                [(PeerId::new(peer), PeerOp::AcceptOffer(offer("theirs")))]
            );
            // Ours completes first but is rolled back by theirs: never sent.
            let effects = peer_event(&mut call, peer, PeerEvent::LocalDescription(offer("ours")));
            assert!(sent(&effects).is_empty(), "{effects:?}");
        } else {
            assert!(ops(&effects).is_empty(), "impolite ignores: {effects:?}");
            let effects = peer_event(&mut call, peer, PeerEvent::LocalDescription(offer("ours")));
            assert_eq!(sent(&effects).len(), 1);
        }
    }
    // Order 2: our offer is already out when theirs arrives.
    for (peer, polite) in [(1u64, false), (3u64, true)] {
        let mut call = in_call(2, &[]);
        from_server(&mut call, ServerMessage::PeerJoined { peer: member(peer) });
        peer_event(&mut call, peer, PeerEvent::NegotiationNeeded);
        peer_event(&mut call, peer, PeerEvent::LocalDescription(offer("ours")));
        let effects = from_server(&mut call, description_from(peer, 50, offer("theirs")));
        assert_eq!(!ops(&effects).is_empty(), polite, "{effects:?}");
    }
}

#[test]
fn candidates_before_the_description_are_kept_and_added_after_it() {
    let mut call = in_call(5, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(2) });
    // Candidates from peer 2's connection 40, before its offer: we know no connection of theirs
    // yet, so they would be dropped as stale... unless the offer came first. The server keeps
    // per-sender order, so a candidate never overtakes its own offer; what can happen is a
    // candidate arriving before the offer has been *applied*: it waits.
    let effects = from_server(&mut call, description_from(2, 40, offer("o")));
    assert_eq!(
        ops(&effects),
        [(PeerId::new(2), PeerOp::AcceptOffer(offer("o")))]
    );
    let effects = from_server(
        &mut call,
        ServerMessage::IceCandidate {
            from: PeerId::new(2),
            connection: ConnectionId::new(40),
            candidate: cand("c1"),
        },
    );
    assert_eq!(
        ops(&effects),
        [(PeerId::new(2), PeerOp::AddCandidate(cand("c1")))]
    );
    // A candidate from another (old) connection of theirs is dropped.
    let effects = from_server(
        &mut call,
        ServerMessage::IceCandidate {
            from: PeerId::new(2),
            connection: ConnectionId::new(39),
            candidate: cand("stale"),
        },
    );
    assert!(ops(&effects).is_empty());
}

#[test]
fn early_candidates_wait_in_the_negotiation_until_a_description_is_set() {
    // Our offer is out; their candidates (same connection as their coming answer) arrive
    // before the answer has been applied: kept, then added right after the answer.
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::NegotiationNeeded);
    peer_event(&mut call, 3, PeerEvent::LocalDescription(offer("o")));
    // Their connection id becomes known with the answer; a candidate with that id before the
    // answer cannot be matched yet, so the order on the wire (answer first) matters:
    let effects = from_server(&mut call, description_from(3, 8, answer("a")));
    assert_eq!(ops(&effects).len(), 1);
    let effects = from_server(
        &mut call,
        ServerMessage::IceCandidate {
            from: PeerId::new(3),
            connection: ConnectionId::new(8),
            candidate: cand("c"),
        },
    );
    assert_eq!(
        ops(&effects),
        [(PeerId::new(3), PeerOp::AddCandidate(cand("c")))]
    );
}

#[test]
fn a_peer_leaving_mid_negotiation_is_closed_and_its_late_events_ignored() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::NegotiationNeeded);
    let connection = connection_of(&call, 3);
    let effects = from_server(
        &mut call,
        ServerMessage::PeerLeft {
            peer: PeerId::new(3),
        },
    );
    assert!(effects.contains(&Effect::ClosePeer {
        peer: PeerId::new(3),
        connection
    }));
    assert!(call.view().peers.is_empty());
    // The offer that was being made completes after the close: nothing is sent.
    call.handle(Event::Peer {
        peer: PeerId::new(3),
        connection,
        event: PeerEvent::LocalDescription(offer("late")),
    });
    assert!(sent(&drain(&mut call)).is_empty());
    // Its watchdog, if it fires, does nothing either.
    call.handle(Event::Timer(Timer {
        kind: TimerKind::AnswerWatchdog(PeerId::new(3)),
        generation: 1_000,
    }));
    assert!(drain(&mut call).is_empty());
}

#[test]
fn the_polite_side_waits_for_the_other_sides_ice_restart() {
    // We are 2, they are 3: we are polite. Both see the failure at once.
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    let effects = peer_event(&mut call, 3, PeerEvent::Ice(IceState::Failed));
    assert!(ops(&effects).is_empty(), "no restart of our own at first");
    assert_eq!(call.view().peers[0].tile, TileState::Reconnecting);
    let retry = timer_of(&effects, TimerKind::IceRetry(PeerId::new(3)));
    // Their restart offer arrives within the period: we answer it and still do not offer.
    from_server(
        &mut call,
        ServerMessage::Description {
            from: PeerId::new(3),
            connection: ConnectionId::new(9),
            description: offer("their restart"),
        },
    );
    drain(&mut call);
    call.handle(Event::Timer(retry));
    let effects = drain(&mut call);
    assert!(
        !ops(&effects).contains(&(PeerId::new(3), PeerOp::RestartIce)),
        "{effects:?}"
    );
    // A whole period with no offer from them (they may be the one that cannot): we restart.
    let retry = timer_of(&effects, TimerKind::IceRetry(PeerId::new(3)));
    call.handle(Event::Timer(retry));
    let effects = drain(&mut call);
    assert!(ops(&effects).contains(&(PeerId::new(3), PeerOp::RestartIce)));
}

#[test]
fn ice_restarts_repeat_quickly_then_slowly_until_connected() {
    let timing = Timing::default();
    // We are 4, they are 3: we are impolite, restarts are ours to make.
    let mut call = in_call(4, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    let mut effects = peer_event(&mut call, 3, PeerEvent::Ice(IceState::Failed));
    let retry_after = |effects: &[Effect]| {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::SetTimer { timer, after }
                    if timer.kind == TimerKind::IceRetry(PeerId::new(3)) =>
                {
                    Some((*timer, *after))
                }
                _ => None,
            })
            .expect("an ICE retry timer")
    };
    // The network may come back any moment: restart every few seconds for a while...
    for _ in 0..timing.ice_fast_retries {
        assert_eq!(ops(&effects), [(PeerId::new(3), PeerOp::RestartIce)]);
        let (timer, after) = retry_after(&effects);
        assert_eq!(after, timing.ice_retry);
        call.handle(Event::Timer(timer));
        effects = drain(&mut call);
    }
    // ...then, in a long outage, less often.
    assert_eq!(ops(&effects), [(PeerId::new(3), PeerOp::RestartIce)]);
    let (timer, after) = retry_after(&effects);
    assert_eq!(after, timing.ice_slow_retry);
    // Connected again: no more restarts, and the next outage starts with quick ones again.
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    call.handle(Event::Timer(timer));
    assert!(ops(&drain(&mut call)).is_empty());
    let effects = peer_event(&mut call, 3, PeerEvent::Ice(IceState::Failed));
    assert_eq!(retry_after(&effects).1, timing.ice_retry);
}

#[test]
fn ice_failure_restarts_ice_and_disconnection_waits_first() {
    // We are 4, they are 3: we are impolite, restarts are ours to make.
    let mut call = in_call(4, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    peer_event(&mut call, 3, PeerEvent::Connection(ConnState::Connected));
    assert_eq!(call.view().peers[0].tile, TileState::Connected);
    // Disconnected: wait ~3 s before restarting (it often comes back by itself).
    let effects = peer_event(&mut call, 3, PeerEvent::Ice(IceState::Disconnected));
    assert!(ops(&effects).is_empty());
    let timer = timer_of(&effects, TimerKind::IceDisconnected(PeerId::new(3)));
    call.handle(Event::Timer(timer));
    let effects = drain(&mut call);
    assert_eq!(ops(&effects), [(PeerId::new(3), PeerOp::RestartIce)]);
    assert_eq!(call.view().peers[0].tile, TileState::Reconnecting);
    // The restart's negotiation goes through perfect negotiation as usual.
    assert_eq!(
        ops(&peer_event(&mut call, 3, PeerEvent::NegotiationNeeded)),
        [(PeerId::new(3), PeerOp::MakeOffer)]
    );
    // Connected again: the tile clears, the retry timer is void.
    let retry = timer_of(&effects, TimerKind::IceRetry(PeerId::new(3)));
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    assert_eq!(call.view().peers[0].tile, TileState::Connected);
    call.handle(Event::Timer(retry));
    assert!(ops(&drain(&mut call)).is_empty());

    // A disconnection that heals within the wait restarts nothing.
    let effects = peer_event(&mut call, 3, PeerEvent::Ice(IceState::Disconnected));
    let timer = timer_of(&effects, TimerKind::IceDisconnected(PeerId::new(3)));
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    call.handle(Event::Timer(timer));
    assert!(ops(&drain(&mut call)).is_empty());

    // Failed: restart at once.
    let effects = peer_event(&mut call, 3, PeerEvent::Ice(IceState::Failed));
    assert_eq!(ops(&effects), [(PeerId::new(3), PeerOp::RestartIce)]);
    assert_eq!(
        call.view().peers[0].problem,
        None,
        "a call that worked before is reconnecting, not a firewall problem"
    );
}

#[test]
fn each_problem_has_its_own_cause_and_clears() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    // Never connected, then ICE fails: the network path (firewall/NAT).
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Checking));
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Failed));
    assert_eq!(call.view().peers[0].problem, Some(PeerProblem::NetworkPath));
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    assert_eq!(call.view().peers[0].problem, None);
    // ICE up, DTLS fails: the secure handshake.
    peer_event(&mut call, 3, PeerEvent::Connection(ConnState::Failed));
    assert_eq!(
        call.view().peers[0].problem,
        Some(PeerProblem::SecureHandshake)
    );
    peer_event(&mut call, 3, PeerEvent::Connection(ConnState::Connected));
    assert_eq!(call.view().peers[0].problem, None);

    // Their offer cannot be used (no common codec): said, not stuck at "connecting".
    let mut call = in_call(5, &[2]);
    from_server(&mut call, description_from(2, 1, offer("bad")));
    peer_event(
        &mut call,
        2,
        PeerEvent::Failed(OpError {
            operation: FailedOp::AcceptOffer,
            detail: "no codecs in common".into(),
        }),
    );
    assert_eq!(
        call.view().peers[0].problem,
        Some(PeerProblem::NothingNegotiated)
    );

    // Nothing connects within the deadline.
    let mut call = Call::new(room(), Timing::default(), 3);
    call.handle(Event::SignalingOpened);
    call.handle(join_command());
    call.handle(Event::Server(joined(5, &[2], false)));
    let effects = drain(&mut call);
    let deadline = timer_of(&effects, TimerKind::ConnectDeadline(PeerId::new(2)));
    call.handle(Event::Timer(deadline));
    assert_eq!(
        call.view().peers[0].problem,
        Some(PeerProblem::NeverConnected)
    );
    // A peer that leaves takes its problem with it.
    from_server(
        &mut call,
        ServerMessage::PeerLeft {
            peer: PeerId::new(2),
        },
    );
    assert!(call.view().peers.is_empty());
}

#[test]
fn a_member_that_gets_no_offer_from_a_newcomer_calls_instead() {
    let mut call = in_call(5, &[]);
    let effects = from_server(&mut call, ServerMessage::PeerJoined { peer: member(2) });
    let wait = timer_of(&effects, TimerKind::AwaitOffer(PeerId::new(2)));
    call.handle(Event::Timer(wait));
    assert_eq!(
        ops(&drain(&mut call)),
        [(PeerId::new(2), PeerOp::StartOffering)]
    );
}

#[test]
fn reconnect_backoff_has_full_jitter_under_a_growing_cap() {
    let timing = Timing::default();
    let mut call = in_call(2, &[]);
    let mut ceilings = Vec::new();
    for attempt in 0..10 {
        call.handle(Event::SignalingClosed(SocketClose {
            code: 1006,
            reason: String::new(),
        }));
        let effects = drain(&mut call);
        assert_eq!(call.view().link, Link::Reconnecting(attempt));
        let (timer, after) = timers(&effects)
            .into_iter()
            .find(|(t, _)| t.kind == TimerKind::Reconnect)
            .expect("a reconnect timer");
        let ceiling = (timing.reconnect_base * 2f64.powi(attempt as i32)).min(timing.reconnect_cap);
        assert!(
            (0.0..=ceiling).contains(&after),
            "{attempt}: {after} > {ceiling}"
        );
        ceilings.push(ceiling);
        call.handle(Event::Timer(timer));
        assert_eq!(drain(&mut call), [Effect::Connect]);
    }
    assert_eq!(ceilings[0], 500.0);
    assert_eq!(*ceilings.last().unwrap(), 30_000.0);
    // Different delays, not a fixed schedule (jitter), over many draws.
    let mut call = in_call(2, &[]);
    let mut delays = Vec::new();
    for _ in 0..20 {
        call.attempts = 3;
        call.handle(Event::SignalingClosed(SocketClose {
            code: 1006,
            reason: String::new(),
        }));
        delays.push(timers(&drain(&mut call))[0].1);
    }
    delays.sort_by(f64::total_cmp);
    assert!(delays[0] < 2000.0 && delays[19] > 2000.0, "{delays:?}");
}

#[test]
fn offline_waits_for_the_network_and_online_reconnects_at_once() {
    let mut call = in_call(2, &[]);
    call.handle(Event::Online(false));
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    let effects = drain(&mut call);
    assert_eq!(call.view().link, Link::Offline);
    assert!(timers(&effects).is_empty(), "no attempts while offline");
    call.handle(Event::Online(true));
    assert_eq!(drain(&mut call), [Effect::Connect]);
    assert_eq!(call.view().link, Link::Reconnecting(0));
}

#[test]
fn leaving_on_purpose_or_being_refused_does_not_reconnect() {
    let mut call = in_call(2, &[3]);
    call.handle(Event::Command(Command::Leave));
    let effects = drain(&mut call);
    assert!(sent(&effects).contains(&ClientMessage::Leave));
    assert!(effects.contains(&Effect::Disconnect));
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1000,
        reason: "left".into(),
    }));
    assert!(drain(&mut call).is_empty());
    assert_eq!(call.view().phase, Phase::Left);

    for code in [
        ErrorCode::RoomFull,
        ErrorCode::PasscodeRequired,
        ErrorCode::WrongPasscode,
        ErrorCode::RoomClosed,
        ErrorCode::UnsupportedVersion,
    ] {
        let mut call = Call::new(room(), Timing::default(), 1);
        call.handle(Event::SignalingOpened);
        call.handle(join_command());
        drain(&mut call);
        from_server(&mut call, ServerMessage::error(code, "no"));
        let view = call.view();
        assert_eq!(view.phase, Phase::Lobby, "{code}");
        assert_eq!(view.refusal.map(|r| r.code), Some(code));
        // The lobby's socket stays; joining again (with a passcode) goes out on it.
        call.handle(Event::Command(Command::Join {
            name: name("Me"),
            passcode: Some(Passcode::new("1234").unwrap()),
        }));
        assert!(matches!(
            &sent(&drain(&mut call))[..],
            [ClientMessage::Join {
                passcode: Some(_),
                ..
            }]
        ));
    }
}

#[test]
fn signaling_drop_keeps_every_connection_and_resumes_the_seat() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    let connection = connection_of(&call, 3);
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    let effects = drain(&mut call);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ClosePeer { .. })),
        "media keeps flowing while signaling is down"
    );
    // A candidate gathered meanwhile waits in the outbox.
    let effects = peer_event(&mut call, 3, PeerEvent::IceCandidate(cand("late")));
    assert!(sent(&effects).is_empty());
    call.handle(Event::SignalingOpened);
    let effects = drain(&mut call);
    assert!(matches!(
        &sent(&effects)[..],
        [ClientMessage::Join { resume: Some(t), .. }] if *t == token("2")
    ));
    assert_eq!(
        call.view().phase,
        Phase::InCall,
        "the call view stays while rejoining"
    );
    let effects = from_server(&mut call, joined(2, &[3], true));
    assert_eq!(connection_of(&call, 3), connection, "same connection");
    assert!(created(&effects).is_empty());
    let messages = sent(&effects);
    assert!(
        matches!(&messages[0], ClientMessage::IceCandidate { candidate, .. } if candidate.candidate == "late")
    );
    assert_eq!(call.view().link, Link::Open);
}

#[test]
fn a_reconnect_in_the_middle_of_a_negotiation_completes_it() {
    // Our offer went out, then signaling dropped. Two outcomes:
    // 1. the seat was kept: the answer sent meanwhile follows `joined` and completes it;
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::NegotiationNeeded);
    peer_event(&mut call, 3, PeerEvent::LocalDescription(offer("o1")));
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    call.handle(Event::SignalingOpened);
    drain(&mut call);
    let effects = from_server(&mut call, joined(2, &[3], true));
    assert!(!ops(&effects).contains(&(PeerId::new(3), PeerOp::MakeOffer)));
    let effects = from_server(&mut call, description_from(3, 4, answer("a1")));
    assert_eq!(
        ops(&effects),
        [(PeerId::new(3), PeerOp::ApplyAnswer(answer("a1")))]
    );

    // 2. the seat was lost (server restarted): the answer may be gone, so we offer again.
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::NegotiationNeeded);
    peer_event(&mut call, 3, PeerEvent::LocalDescription(offer("o1")));
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    call.handle(Event::SignalingOpened);
    drain(&mut call);
    let effects = from_server(&mut call, joined(2, &[3], false));
    assert!(ops(&effects).contains(&(PeerId::new(3), PeerOp::MakeOffer)));
    let effects = peer_event(&mut call, 3, PeerEvent::LocalDescription(offer("o2")));
    assert!(
        matches!(&sent(&effects)[..], [ClientMessage::Description { description, .. }] if description.sdp == "o2")
    );
}

#[test]
fn after_a_server_restart_peers_not_back_yet_are_kept_for_a_grace() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(4) });
    let (c3, c4) = (connection_of(&call, 3), connection_of(&call, 4));
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1001,
        reason: "server shutting down".into(),
    }));
    call.handle(Event::SignalingOpened);
    drain(&mut call);
    // The restarted server knows only 3 so far (4 is still reconnecting).
    let effects = from_server(&mut call, joined(2, &[3], false));
    assert!(created(&effects).is_empty());
    assert_eq!(
        call.view().peers.iter().map(|p| p.tile).collect::<Vec<_>>(),
        [TileState::Connecting, TileState::Reconnecting]
    );
    let missing = timer_of(&effects, TimerKind::Missing(PeerId::new(4)));
    // 4 comes back: announced as joined; we keep our connection to it.
    let effects = from_server(&mut call, ServerMessage::PeerJoined { peer: member(4) });
    assert!(created(&effects).is_empty());
    assert_eq!((connection_of(&call, 3), connection_of(&call, 4)), (c3, c4));
    call.handle(Event::Timer(missing));
    assert_eq!(
        call.view().peers.len(),
        2,
        "the stale grace timer does nothing"
    );

    // Someone who never comes back is dropped after the grace.
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    call.handle(Event::SignalingOpened);
    drain(&mut call);
    let effects = from_server(&mut call, joined(2, &[3], false));
    let missing = timer_of(&effects, TimerKind::Missing(PeerId::new(4)));
    call.handle(Event::Timer(missing));
    let effects = drain(&mut call);
    assert!(effects.contains(&Effect::ClosePeer {
        peer: PeerId::new(4),
        connection: c4
    }));
    assert_eq!(call.view().peers.len(), 1);
}

#[test]
fn a_refused_resume_starts_over_with_a_new_identity() {
    let mut call = in_call(2, &[3]);
    let old = connection_of(&call, 3);
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    call.handle(Event::SignalingOpened);
    drain(&mut call);
    let effects = from_server(
        &mut call,
        ServerMessage::error(ErrorCode::ResumeRefused, "expired"),
    );
    assert!(matches!(
        &sent(&effects)[..],
        [ClientMessage::Join { resume: None, .. }]
    ));
    let effects = from_server(&mut call, joined(8, &[3], false));
    assert!(effects.contains(&Effect::ClosePeer {
        peer: PeerId::new(3),
        connection: old
    }));
    // A newcomer again: it calls them.
    assert_eq!(created(&effects)[0].2, Role::Offerer);
    assert_eq!(call.view().me, Some(PeerId::new(8)));
}

#[test]
fn a_peer_that_started_over_gets_a_new_connection_from_us() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(&mut call, 3, PeerEvent::NegotiationNeeded);
    peer_event(&mut call, 3, PeerEvent::LocalDescription(offer("o")));
    from_server(&mut call, description_from(3, 100, answer("a")));
    let old = connection_of(&call, 3);
    // They reloaded (or dropped us): a new offer from a new connection of theirs.
    let effects = from_server(&mut call, description_from(3, 101, offer("fresh")));
    let new = connection_of(&call, 3);
    assert_ne!(new, old);
    assert!(effects.contains(&Effect::ClosePeer {
        peer: PeerId::new(3),
        connection: old
    }));
    assert_eq!(created(&effects), [(PeerId::new(3), new, Role::Answerer)]);
    assert!(ops(&effects).contains(&(PeerId::new(3), PeerOp::AcceptOffer(offer("fresh")))));
    // An answer from a connection that is not the current one is ignored.
    let effects = from_server(&mut call, description_from(3, 99, answer("old")));
    assert!(ops(&effects).is_empty());
}

#[test]
fn gaining_a_camera_after_joining_renegotiates_in_place() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    let no_camera = LocalMedia {
        mic: Some(TrackId(1)),
        can_send_audio: true,
        ..LocalMedia::default()
    };
    call.handle(Event::Local(no_camera.clone()));
    drain(&mut call);
    let effects = {
        call.handle(Event::Local(LocalMedia {
            camera: Some(TrackId(2)),
            can_send_video: true,
            ..no_camera
        }));
        drain(&mut call)
    };
    let sending: Vec<Sending> = ops(&effects)
        .into_iter()
        .filter_map(|(_, op)| match op {
            PeerOp::SetSending(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sending.len(), 1);
    assert!(sending[0].send_video && sending[0].camera == Some(TrackId(2)));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ClosePeer { .. })),
        "no rejoin, no new connection"
    );
    assert!(sent(&effects)
        .iter()
        .any(|m| matches!(m, ClientMessage::MediaState(s) if !s.camera_off)));
}

#[test]
fn chat_counts_unread_while_closed_and_keeps_a_bounded_log() {
    let mut call = in_call(2, &[3]);
    let chat = |from: u64, text: &str| {
        ServerMessage::Chat(shared::ChatEntry {
            from: PeerId::new(from),
            name: name("X"),
            text: ChatText::new(text).unwrap(),
            at: 1,
        })
    };
    from_server(&mut call, chat(3, "hello"));
    from_server(&mut call, chat(2, "mine"));
    assert_eq!(call.view().unread, 1, "our own messages are not unread");
    call.handle(Event::Command(Command::SetChatOpen(true)));
    assert_eq!(call.view().unread, 0);
    for i in 0..CHAT_KEPT + 10 {
        from_server(&mut call, chat(3, &i.to_string()));
    }
    assert_eq!(call.view().chat.len(), CHAT_KEPT);
    call.handle(Event::Command(Command::SendChat(
        ChatText::new("hi").unwrap(),
    )));
    assert!(matches!(
        &sent(&drain(&mut call))[..],
        [ClientMessage::Chat { .. }]
    ));
}

#[test]
fn screen_and_camera_streams_are_told_apart_by_the_announced_id() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    peer_event(
        &mut call,
        3,
        PeerEvent::Track {
            stream: StreamKey(1),
            id: "cam".into(),
        },
    );
    peer_event(
        &mut call,
        3,
        PeerEvent::Track {
            stream: StreamKey(2),
            id: "scr".into(),
        },
    );
    from_server(
        &mut call,
        ServerMessage::PeerMediaState {
            peer: PeerId::new(3),
            state: MediaState {
                muted: false,
                camera_off: false,
                screen: Some("scr".into()),
            },
        },
    );
    let view = &call.view().peers[0];
    assert_eq!(
        (view.stream, view.screen),
        (Some(StreamKey(1)), Some(StreamKey(2)))
    );
    from_server(
        &mut call,
        ServerMessage::PeerMediaState {
            peer: PeerId::new(3),
            state: MediaState::default(),
        },
    );
    assert_eq!(call.view().peers[0].screen, None);
}

#[test]
fn poor_quality_lowers_only_that_peers_video() {
    let mut call = in_call(2, &[]);
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(3) });
    from_server(&mut call, ServerMessage::PeerJoined { peer: member(4) });
    peer_event(&mut call, 3, PeerEvent::Ice(IceState::Connected));
    let mut lowered = None;
    for i in 0..=quality::POOR_SAMPLES {
        let effects = peer_event(
            &mut call,
            3,
            PeerEvent::Stats(StatsSample {
                at: f64::from(i) * 2000.0,
                rtt_ms: Some(40.0),
                remote_fraction_lost: Some(0.25),
                ..StatsSample::default()
            }),
        );
        for (peer, op) in ops(&effects) {
            if let PeerOp::SetSending(s) = op {
                assert_eq!(peer, PeerId::new(3), "only the poor connection changes");
                lowered = Some(s.video_limit);
            }
        }
    }
    let lowered = lowered.expect("video lowered");
    assert!(lowered.max_bitrate_bps < uplink::for_room(2).max_bitrate_bps);
    let view = call.view();
    assert!(view.peers[0].sending_reduced && !view.peers[1].sending_reduced);
    assert_eq!(
        view.peers[0].quality.as_ref().map(|q| q.quality),
        Some(quality::Quality::Poor)
    );
}

#[test]
fn a_seat_taken_by_another_tab_is_not_taken_back() {
    let mut call = in_call(2, &[3]);
    call.handle(Event::SignalingClosed(SocketClose {
        code: SEAT_TAKEN,
        reason: "seat taken over".into(),
    }));
    let effects = drain(&mut call);
    assert!(timers(&effects).is_empty(), "no reconnect: {effects:?}");
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::ClosePeer { .. })));
    let view = call.view();
    assert_eq!(view.phase, Phase::Lobby);
    assert!(view.problem.is_some_and(|p| p.contains("another tab")));
}

#[test]
fn stale_timers_do_nothing() {
    let mut call = in_call(2, &[]);
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    let first = timer_of(&drain(&mut call), TimerKind::Reconnect);
    call.handle(Event::SignalingClosed(SocketClose {
        code: 1006,
        reason: String::new(),
    }));
    drain(&mut call);
    call.handle(Event::Timer(first));
    assert!(drain(&mut call).is_empty());
}

// ----- the world: several cores, a relaying server, JSEP-following fake connections -----

#[derive(Clone, Debug, PartialEq)]
enum Sig {
    Stable,
    LocalOffer(String),
    RemoteOffer(String),
}

/// Follows the JSEP state machine closely enough for negotiation logic: offers in
/// have-remote-offer fail, a remote offer in have-local-offer rolls back (implicitly), answers
/// must answer the current local offer, candidates need a remote description.
struct FakePc {
    owner: PeerId,
    remote: PeerId,
    sig: Sig,
    has_remote: bool,
    /// The negotiation-needed flag.
    needed: bool,
    has_transceivers: bool,
    sending: Option<(bool, bool, bool)>,
    count: u32,
    /// The last completed exchange: (offer, answer).
    current: Option<(String, String)>,
    restarts: u32,
    connected: bool,
}

impl FakePc {
    fn new(owner: PeerId, remote: PeerId, role: Role) -> Self {
        Self {
            owner,
            remote,
            sig: Sig::Stable,
            has_remote: false,
            needed: role == Role::Offerer,
            has_transceivers: role == Role::Offerer,
            sending: None,
            count: 0,
            current: None,
            restarts: 0,
            connected: false,
        }
    }

    /// Runs one operation; returns the events it causes, in order.
    fn run(&mut self, op: PeerOp) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        match op {
            PeerOp::MakeOffer => {
                if matches!(self.sig, Sig::RemoteOffer(_)) {
                    out.push(fail(FailedOp::MakeOffer));
                    return out;
                }
                self.count += 1;
                let sdp = format!(
                    "offer {}->{} #{} r{}",
                    self.owner, self.remote, self.count, self.restarts
                );
                self.sig = Sig::LocalOffer(sdp.clone());
                self.needed = false;
                out.push(PeerEvent::LocalDescription(offer(&sdp)));
                out.push(PeerEvent::IceCandidate(cand(&format!("c {sdp}"))));
            }
            PeerOp::AcceptOffer(remote_offer) => {
                if let Sig::LocalOffer(_) = self.sig {
                    // Implicit rollback: our offer's changes still need negotiating.
                    self.needed = true;
                }
                self.sig = Sig::RemoteOffer(remote_offer.sdp.clone());
                self.has_remote = true;
                self.has_transceivers = true;
                let sdp = format!("answer to [{}]", remote_offer.sdp);
                self.sig = Sig::Stable;
                self.current = Some((remote_offer.sdp, sdp.clone()));
                out.push(PeerEvent::LocalDescription(answer(&sdp)));
                self.on_stable(&mut out);
            }
            PeerOp::ApplyAnswer(remote_answer) => match &self.sig {
                Sig::LocalOffer(ours) if remote_answer.sdp == format!("answer to [{ours}]") => {
                    self.current = Some((ours.clone(), remote_answer.sdp));
                    self.sig = Sig::Stable;
                    self.has_remote = true;
                    out.push(PeerEvent::AnswerApplied);
                    self.on_stable(&mut out);
                }
                _ => out.push(fail(FailedOp::ApplyAnswer)),
            },
            PeerOp::AddCandidate(_) => {
                if !self.has_remote {
                    out.push(fail(FailedOp::AddCandidate));
                }
            }
            PeerOp::RestartIce => {
                self.restarts += 1;
                self.set_needed(&mut out);
            }
            PeerOp::SetSending(sending) => {
                let directions = (
                    sending.send_audio,
                    sending.send_video,
                    sending.screen.is_some(),
                );
                let changed = self.sending.is_some_and(|old| old != directions);
                self.sending = Some(directions);
                if changed && self.has_transceivers {
                    self.set_needed(&mut out);
                }
            }
            PeerOp::StartOffering => {
                self.has_transceivers = true;
                self.set_needed(&mut out);
            }
            PeerOp::GetStats => {}
        }
        out
    }

    fn set_needed(&mut self, out: &mut Vec<PeerEvent>) {
        self.needed = true;
        if self.sig == Sig::Stable {
            out.push(PeerEvent::NegotiationNeeded);
        }
    }

    fn on_stable(&mut self, out: &mut Vec<PeerEvent>) {
        if !self.connected && self.current.is_some() {
            self.connected = true;
            out.push(PeerEvent::Ice(IceState::Connected));
            out.push(PeerEvent::Connection(ConnState::Connected));
        }
        if self.needed {
            out.push(PeerEvent::NegotiationNeeded);
        }
    }
}

fn fail(operation: FailedOp) -> PeerEvent {
    PeerEvent::Failed(OpError {
        operation,
        detail: "fake".into(),
    })
}

/// Where an event waits: each websocket and each peer connection is a FIFO of its own; the
/// world delivers from a random non-empty one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Socket(usize),
    Pc(usize, PeerId, ConnectionId),
}

struct World {
    calls: Vec<Call>,
    ids: Vec<PeerId>,
    /// Index of each peer id's call.
    joined: Vec<bool>,
    pcs: BTreeMap<(usize, PeerId, ConnectionId), FakePc>,
    queues: BTreeMap<Source, VecDeque<Event>>,
    rng: u64,
    offers: u32,
    failures: Vec<String>,
}

impl World {
    fn new(people: usize, seed: u64) -> Self {
        let calls = (0..people)
            .map(|i| {
                Call::new(
                    room(),
                    Timing::default(),
                    seed.wrapping_add(i as u64 * 7919),
                )
            })
            .collect();
        // Ids in a scrambled order, so that politeness does not follow join order.
        let ids = (0..people)
            .map(|i| PeerId::new(((i as u64 * 37 + seed) % 101) * 10 + i as u64 + 1))
            .collect();
        let mut world = Self {
            calls,
            ids,
            joined: vec![false; people],
            pcs: BTreeMap::new(),
            queues: BTreeMap::new(),
            rng: seed | 1,
            offers: 0,
            failures: Vec::new(),
        };
        for i in 0..people {
            world.pump(i);
        }
        world
    }

    fn random(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }

    fn push(&mut self, source: Source, event: Event) {
        self.queues.entry(source).or_default().push_back(event);
    }

    fn index_of(&self, id: PeerId) -> usize {
        self.ids.iter().position(|p| *p == id).expect("known id")
    }

    /// Executes call `i`'s pending effects.
    fn pump(&mut self, i: usize) {
        while let Some(effect) = self.calls[i].poll_effect() {
            match effect {
                Effect::Connect => self.push(Source::Socket(i), Event::SignalingOpened),
                Effect::Send(message) => self.server(i, message),
                Effect::CreatePeer {
                    peer,
                    connection,
                    role,
                    sending,
                    ..
                } => {
                    let mut pc = FakePc::new(self.ids[i], peer, role);
                    let events = pc.run(PeerOp::SetSending(sending));
                    let mut all = events;
                    if role == Role::Offerer {
                        all.push(PeerEvent::NegotiationNeeded);
                    }
                    self.pcs.insert((i, peer, connection), pc);
                    for event in all {
                        self.push(
                            Source::Pc(i, peer, connection),
                            Event::Peer {
                                peer,
                                connection,
                                event,
                            },
                        );
                    }
                }
                Effect::Peer {
                    peer,
                    connection,
                    op,
                } => {
                    if matches!(op, PeerOp::MakeOffer) {
                        self.offers += 1;
                    }
                    let Some(pc) = self.pcs.get_mut(&(i, peer, connection)) else {
                        continue;
                    };
                    for event in pc.run(op) {
                        if let PeerEvent::Failed(e) = &event {
                            if e.operation != FailedOp::AddCandidate {
                                self.failures.push(format!("{i}: {e:?}"));
                            }
                        }
                        self.push(
                            Source::Pc(i, peer, connection),
                            Event::Peer {
                                peer,
                                connection,
                                event,
                            },
                        );
                    }
                }
                Effect::ClosePeer { peer, connection } => {
                    self.pcs.remove(&(i, peer, connection));
                    self.queues.remove(&Source::Pc(i, peer, connection));
                }
                Effect::Disconnect | Effect::SetTimer { .. } | Effect::Log(_) => {}
            }
        }
    }

    /// The relay, as the real server does it (the parts these tests use).
    fn server(&mut self, from: usize, message: ClientMessage) {
        let me = self.ids[from];
        match message {
            ClientMessage::Join { .. } => {
                let peers: Vec<Member> = (0..self.calls.len())
                    .filter(|j| self.joined[*j])
                    .map(|j| Member {
                        id: self.ids[j],
                        ..member(0)
                    })
                    .collect();
                self.joined[from] = true;
                self.push(
                    Source::Socket(from),
                    Event::Server(ServerMessage::Joined {
                        room: room(),
                        you: me,
                        peers: peers.clone(),
                        capacity: 8,
                        ice_servers: Vec::new(),
                        resume_token: token("x"),
                        resumed: false,
                        lock: LockState::Open,
                        chat: Vec::new(),
                    }),
                );
                for other in peers {
                    let j = self.index_of(other.id);
                    self.push(
                        Source::Socket(j),
                        Event::Server(ServerMessage::PeerJoined {
                            peer: Member {
                                id: me,
                                ..member(0)
                            },
                        }),
                    );
                }
            }
            ClientMessage::Description {
                to,
                connection,
                description,
            } => {
                let j = self.index_of(to);
                self.push(
                    Source::Socket(j),
                    Event::Server(ServerMessage::Description {
                        from: me,
                        connection,
                        description,
                    }),
                );
            }
            ClientMessage::IceCandidate {
                to,
                connection,
                candidate,
            } => {
                let j = self.index_of(to);
                self.push(
                    Source::Socket(j),
                    Event::Server(ServerMessage::IceCandidate {
                        from: me,
                        connection,
                        candidate,
                    }),
                );
            }
            ClientMessage::MediaState(_)
            | ClientMessage::Leave
            | ClientMessage::Chat { .. }
            | ClientMessage::Lock { .. }
            | ClientMessage::Unlock => {}
        }
    }

    /// Delivers events in random order (FIFO per source) until nothing is left.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let sources: Vec<Source> = self
                .queues
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(s, _)| *s)
                .collect();
            if sources.is_empty() {
                return;
            }
            let source = sources[self.random(sources.len())];
            let Some(event) = self.queues.get_mut(&source).and_then(VecDeque::pop_front) else {
                continue;
            };
            let i = match source {
                Source::Socket(i) | Source::Pc(i, _, _) => i,
            };
            // Like a browser, the connection checks when `negotiationneeded` is due whether
            // negotiation is still needed (an offer made meanwhile covers it) and whether it is
            // stable (if not, it asks again once it is: `on_stable`).
            if let (
                Source::Pc(_, peer, connection),
                Event::Peer {
                    event: PeerEvent::NegotiationNeeded,
                    ..
                },
            ) = (source, &event)
            {
                let due = self
                    .pcs
                    .get(&(i, peer, connection))
                    .is_some_and(|pc| pc.needed && pc.sig == Sig::Stable);
                if !due {
                    continue;
                }
            }
            self.calls[i].handle(event);
            self.pump(i);
        }
        panic!("the world did not settle");
    }

    fn join(&mut self, i: usize) {
        self.calls[i].handle(join_command());
        self.pump(i);
    }

    fn set_local(&mut self, i: usize, local: LocalMedia) {
        self.calls[i].handle(Event::Local(local));
        self.pump(i);
    }

    /// Every pair has exactly one live connection each way, both stable on the same exchange.
    fn assert_converged(&self, seed: u64) {
        assert!(self.failures.is_empty(), "seed {seed}: {:?}", self.failures);
        let n = self.calls.len();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let (ida, idb) = (self.ids[a], self.ids[b]);
                let mine: Vec<&FakePc> = self
                    .pcs
                    .iter()
                    .filter(|((i, p, _), _)| *i == a && *p == idb)
                    .map(|(_, pc)| pc)
                    .collect();
                assert_eq!(
                    mine.len(),
                    1,
                    "seed {seed}: {ida} has {} pcs to {idb}",
                    mine.len()
                );
                let theirs = self
                    .pcs
                    .iter()
                    .find(|((i, p, _), _)| *i == b && *p == ida)
                    .map(|(_, pc)| pc)
                    .expect("their pc");
                assert_eq!(
                    mine[0].sig,
                    Sig::Stable,
                    "seed {seed}: {ida}->{idb} not stable"
                );
                assert!(
                    !mine[0].needed,
                    "seed {seed}: {ida}->{idb} still needs negotiating"
                );
                assert!(
                    mine[0].current.is_some(),
                    "seed {seed}: {ida}->{idb} never negotiated"
                );
                assert_eq!(
                    mine[0].current, theirs.current,
                    "seed {seed}: {ida} and {idb} disagree"
                );
                let remote = &self.calls[a].remotes[&idb];
                assert!(remote.negotiation.is_stable(), "seed {seed}");
                assert_eq!(
                    remote.remote_connection,
                    Some(self.calls[b].remotes[&ida].connection),
                    "seed {seed}: {ida} talks to an old connection of {idb}"
                );
            }
        }
    }
}

fn with_camera(camera: bool, screen: bool) -> LocalMedia {
    LocalMedia {
        mic: Some(TrackId(1)),
        camera: camera.then_some(TrackId(2)),
        screen: screen.then(|| Screen {
            track: TrackId(3),
            stream_id: "s".into(),
        }),
        can_send_audio: true,
        can_send_video: camera,
        muted: false,
        camera_off: false,
    }
}

#[test]
fn two_people_connect_with_a_single_offer() {
    for seed in 1..50 {
        let mut world = World::new(2, seed);
        world.run();
        world.join(0);
        world.run();
        world.join(1);
        world.run();
        world.assert_converged(seed);
        assert_eq!(world.offers, 1, "seed {seed}: one offer, by the newcomer");
    }
}

#[test]
fn renegotiation_from_both_sides_at_once_converges_in_any_order() {
    for seed in 1..300 {
        let mut world = World::new(2, seed);
        world.run();
        world.join(0);
        world.run();
        world.join(1);
        world.run();
        // Both start sharing a screen (or gain a camera) at the same moment: glare.
        world.set_local(0, with_camera(true, true));
        world.set_local(1, with_camera(false, true));
        world.run();
        world.assert_converged(seed);
    }
}

#[test]
fn a_mesh_of_four_joining_at_once_converges_in_any_order() {
    for seed in 1..200 {
        let mut world = World::new(4, seed);
        world.run();
        for i in 0..4 {
            world.join(i);
        }
        world.run();
        world.assert_converged(seed);
        // Everyone changes what they send at once, twice.
        for round in 0..2 {
            for i in 0..4 {
                world.set_local(i, with_camera(round == 0, i % 2 == round));
            }
            world.run();
            world.assert_converged(seed);
        }
    }
}

#[test]
fn ice_restarts_on_both_sides_at_once_converge() {
    for seed in 1..200 {
        let mut world = World::new(3, seed);
        world.run();
        for i in 0..3 {
            world.join(i);
            world.run();
        }
        for i in 0..3 {
            let peers: Vec<PeerId> = world.calls[i].remotes.keys().copied().collect();
            for peer in peers {
                let connection = world.calls[i].remotes[&peer].connection;
                world.push(
                    Source::Pc(i, peer, connection),
                    Event::Peer {
                        peer,
                        connection,
                        event: PeerEvent::Ice(IceState::Failed),
                    },
                );
            }
        }
        world.run();
        world.assert_converged(seed);
        // One side of each pair restarts (the impolite one, with the higher id); the polite one
        // takes its offer instead of offering at the same moment.
        for pc in world.pcs.values() {
            if pc.owner > pc.remote {
                assert!(
                    pc.restarts >= 1,
                    "seed {seed}: the impolite side restarted ICE"
                );
            } else {
                assert_eq!(pc.restarts, 0, "seed {seed}: the polite side waited");
            }
        }
    }
}
