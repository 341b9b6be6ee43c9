//! Arbitrary text frames from three clients, through the decoder and the hub, as the websocket
//! task would hand them over. The input is a list of frames separated by 0xFF (a byte UTF-8 never
//! uses); each frame's first byte picks the client (0xF0 and up: that client disconnects), the
//! rest is the frame's text. Checks, besides "no panic": every message the hub queues serializes
//! and parses back unchanged, names only real connections, and stamps no one but a real sender.

#![no_main]

use libfuzzer_sys::fuzz_target;
use server::hub::{Hub, HubConfig, Session};
use shared::{ClientMessage, PeerId, ServerMessage};

const CLIENTS: usize = 3;

fuzz_target!(|data: &[u8]| {
    let hub = Hub::new(HubConfig {
        room_capacity: 2,
        max_rooms: 2,
        queue_capacity: 4,
        ice_servers: Default::default(),
    });
    let mut clients: Vec<Option<Session>> = (0..CLIENTS).map(|_| Some(hub.connect())).collect();
    let ids: Vec<PeerId> = clients.iter().flatten().map(Session::id).collect();

    for frame in data.split(|b| *b == 0xff) {
        let Some((&selector, text)) = frame.split_first() else {
            continue;
        };
        let who = usize::from(selector) % CLIENTS;
        if selector >= 0xf0 {
            clients[who] = None;
            continue;
        }
        // Websocket text frames are UTF-8 (tungstenite refuses anything else).
        let Ok(text) = std::str::from_utf8(text) else {
            continue;
        };
        match ClientMessage::decode(text) {
            Ok(message) => {
                // What decodes must encode to something that decodes to the same message.
                let again = ClientMessage::decode(&message.to_json());
                assert_eq!(again.as_ref(), Ok(&message));
                if let Some(session) = &clients[who] {
                    let _ = session.handle(message);
                }
            }
            Err(err) => {
                let _ = (err.code(), err.to_string());
            }
        }
        for session in clients.iter().flatten() {
            while let Some(message) = session.try_recv() {
                check(&message, &ids);
            }
        }
    }
});

fn check(message: &ServerMessage, ids: &[PeerId]) {
    let back = ServerMessage::from_json(&message.to_json()).expect("server JSON parses");
    assert_eq!(&back, message);
    let named = match message {
        ServerMessage::Joined { you, peers, .. } => {
            assert!(!peers.contains(you));
            Some(*you)
        }
        ServerMessage::PeerJoined { peer }
        | ServerMessage::PeerLeft { peer }
        | ServerMessage::PeerMediaState { peer, .. } => Some(*peer),
        ServerMessage::Description { from, .. } | ServerMessage::IceCandidate { from, .. } => {
            Some(*from)
        }
        ServerMessage::Error { .. } => None,
    };
    if let Some(id) = named {
        assert!(ids.contains(&id), "{message:?} names a peer that never connected");
    }
}
