//! Arbitrary text frames from three clients, through the decoder and the hub, as the websocket
//! task would hand them over. The input is a list of frames separated by 0xFF (a byte UTF-8 never
//! uses); each frame's first byte picks what happens:
//! - below 0xD0: client `byte % 3` sends the rest of the frame as a text frame. In a signal, a
//!   `to` below 3 means "client `to`'s seat" (seat ids are random, so a seed could not name them);
//! - 0xD0..0xDF: time passes (`byte - 0xCF` seconds) and held seats expire;
//! - 0xE0..0xEF: client `byte % 3` joins with the last resume token client `(byte / 3) % 3` got;
//! - 0xF0 and up: client `byte % 3` disconnects (and connects again at its next frame).
//!
//! Checks, besides "no panic": every message the hub queues parses back unchanged, names only
//! seats that exist or existed, never lists a member as its own peer, and stamps no one but a
//! real sender.

#![no_main]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use server::clock::{Clock, ManualClock};
use server::datadir::Secret;
use server::hub::{Hub, HubConfig, Session};
use server::metrics::Metrics;
use server::resume::ResumeKeys;
use shared::{
    ClientMessage, DisplayName, PeerId, ResumeToken, RoomName, ServerMessage, PROTOCOL_VERSION,
};

const CLIENTS: usize = 3;

struct Client {
    session: Option<Session>,
    /// The last `joined`'s room and token.
    token: Option<(RoomName, ResumeToken)>,
}

fuzz_target!(|data: &[u8]| {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let secret = Secret::from_text("fuzzing resume secret").expect("long enough");
    let hub = Hub::with_clock(
        HubConfig {
            room_capacity: 2,
            max_rooms: 2,
            resume_grace: Duration::from_secs(5),
            // Key stretching runs inline here: keep it cheap.
            passcode_iterations: std::num::NonZeroU32::MIN,
            ..HubConfig::new(ResumeKeys::new(&secret))
        },
        Arc::new(Metrics::new()),
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client {
            session: Some(hub.connect(None)),
            token: None,
        })
        .collect();
    // Every seat id ever handed out.
    let mut seats: HashSet<PeerId> = HashSet::new();

    for frame in data.split(|b| *b == 0xff) {
        let Some((&selector, text)) = frame.split_first() else {
            continue;
        };
        let who = usize::from(selector) % CLIENTS;
        match selector {
            0xf0.. => {
                clients[who].session = None;
                continue;
            }
            0xe0..=0xef => {
                let from = (usize::from(selector) / CLIENTS) % CLIENTS;
                if let Some((room, token)) = clients[from].token.clone() {
                    let join = ClientMessage::Join {
                        room,
                        version: PROTOCOL_VERSION,
                        name: DisplayName::new("Back").expect("valid"),
                        resume: Some(token),
                        passcode: None,
                    };
                    let session = clients[who]
                        .session
                        .get_or_insert_with(|| hub.connect(None));
                    let _ = session.handle_inline(join);
                }
            }
            0xd0..=0xdf => {
                clock.advance(Duration::from_secs(u64::from(selector - 0xcf)));
                hub.expire();
            }
            _ => {
                // Websocket text frames are UTF-8 (tungstenite refuses anything else).
                let Ok(text) = std::str::from_utf8(text) else {
                    continue;
                };
                match ClientMessage::decode(text) {
                    Ok(message) => {
                        // What decodes must encode to something that decodes to the same message.
                        let again = ClientMessage::decode(&message.to_json());
                        assert_eq!(again.as_ref(), Ok(&message));
                        let message = aim(message, &clients);
                        let session = clients[who]
                            .session
                            .get_or_insert_with(|| hub.connect(None));
                        let _ = session.handle_inline(message);
                    }
                    Err(err) => {
                        let _ = (err.code(), err.to_string());
                    }
                }
            }
        }
        // Everything queued in this step: first learn the seats it announces (a `peerJoined`
        // may be read before the newcomer's own `joined`), then check it.
        let mut queued = Vec::new();
        for client in &mut clients {
            let Some(session) = &client.session else {
                continue;
            };
            while let Some(frame) = session.try_recv() {
                let message = frame.decode().expect("server JSON parses");
                assert_eq!(message.kind(), frame.kind());
                if let ServerMessage::Joined {
                    room,
                    you,
                    resume_token,
                    ..
                } = &message
                {
                    seats.insert(*you);
                    client.token = Some((room.clone(), resume_token.clone()));
                }
                queued.push(message);
            }
        }
        for message in &queued {
            check(message, &seats);
        }
    }
});

/// A signal addressed to 0, 1 or 2 goes to that client's seat.
fn aim(message: ClientMessage, clients: &[Client]) -> ClientMessage {
    let seat = |to: PeerId| {
        usize::try_from(to.get())
            .ok()
            .and_then(|i| clients.get(i))
            .and_then(|c| c.session.as_ref())
            .and_then(Session::seat)
            .unwrap_or(to)
    };
    match message {
        ClientMessage::Description {
            to,
            connection,
            description,
        } => ClientMessage::Description {
            to: seat(to),
            connection,
            description,
        },
        ClientMessage::IceCandidate {
            to,
            connection,
            candidate,
        } => ClientMessage::IceCandidate {
            to: seat(to),
            connection,
            candidate,
        },
        other => other,
    }
}

fn check(message: &ServerMessage, seats: &HashSet<PeerId>) {
    let back = ServerMessage::from_json(&message.to_json()).expect("server JSON parses");
    assert_eq!(&back, message);
    let named: Vec<PeerId> = match message {
        ServerMessage::Joined {
            you, peers, chat, ..
        } => {
            assert!(peers.iter().all(|m| m.id != *you), "listed as its own peer");
            peers
                .iter()
                .map(|m| m.id)
                .chain(chat.iter().map(|c| c.from))
                .collect()
        }
        ServerMessage::PeerJoined { peer } => vec![peer.id],
        ServerMessage::PeerLeft { peer }
        | ServerMessage::PeerReconnecting { peer }
        | ServerMessage::PeerReconnected { peer }
        | ServerMessage::PeerMediaState { peer, .. } => vec![*peer],
        ServerMessage::Description { from, .. } | ServerMessage::IceCandidate { from, .. } => {
            vec![*from]
        }
        ServerMessage::Chat(entry) => vec![entry.from],
        ServerMessage::LockChanged { by, .. } => vec![*by],
        ServerMessage::Error { .. } => Vec::new(),
    };
    for id in named {
        assert!(
            seats.contains(&id),
            "{message:?} names a seat that never existed"
        );
    }
}
