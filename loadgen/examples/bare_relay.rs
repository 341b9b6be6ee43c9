//! A calibration relay: the least a server can do to pass loadgen's shapes in Noom's protocol
//! (join → joined / peerJoined, iceCandidate forwarded `to` a peer with `from` stamped), with no
//! limits, no metrics, no origin check and no logging. Measuring it with the same generator on
//! the same machine tells which part of a figure is the machine and the generator, and which is
//! our server:
//!
//!     cargo build --release -p loadgen --example bare_relay
//!     target/release/loadgen all --no-baseline --no-auto-limits --shapes s2 \
//!         --server-bin target/release/examples/bare_relay
//!
//! It takes loadgen's server arguments (`--addr ADDR`, others ignored) and prints the same
//! "Noom is listening on http://ADDR" line.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, LockState, MediaState, Member, PeerId, ResumeToken, ServerMessage};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct State {
    next_id: u64,
    peers: HashMap<u64, (String, mpsc::UnboundedSender<String>)>,
    rooms: HashMap<String, Vec<u64>>,
}

fn main() {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            println!("bare_relay: a calibration relay for loadgen. Options: --addr ADDR (others are ignored)");
            return;
        }
        if arg == "--addr" {
            if let Some(value) = args.next().and_then(|v| v.parse().ok()) {
                addr = value;
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(addr).expect("bind");
        let listener = socket.listen(4096).expect("listen");
        println!(
            "Noom is listening on http://{}",
            listener.local_addr().expect("addr")
        );
        let _ = std::io::stdout().flush();
        let state = Arc::new(Mutex::new(State::default()));
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve(tcp, Arc::clone(&state)));
        }
    });
}

async fn serve(tcp: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let config = loadgen::wire::ws_config(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let me = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.next_id += 1;
        let id = s.next_id;
        s.peers.insert(id, (String::new(), tx.clone()));
        id
    };
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => handle(&state, me, &tx, text.as_str()),
                Some(Ok(_)) => {}
                _ => break,
            },
            out = rx.recv() => match out {
                Some(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((room, _)) = s.peers.remove(&me) {
        if let Some(members) = s.rooms.get_mut(&room) {
            members.retain(|&m| m != me);
            if members.is_empty() {
                s.rooms.remove(&room);
            }
        }
    }
}

fn handle(state: &Mutex<State>, me: u64, tx: &mpsc::UnboundedSender<String>, text: &str) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    match ClientMessage::decode(text) {
        Ok(ClientMessage::Join {
            room,
            name: display,
            ..
        }) => {
            let name = room.as_str().to_string();
            let members = s.rooms.entry(name.clone()).or_default();
            let others = members.clone();
            members.push(me);
            if let Some(entry) = s.peers.get_mut(&me) {
                entry.0 = name;
            }
            let member = |id: u64| Member {
                id: PeerId::new(id),
                name: display.clone(),
                media: MediaState::default(),
                reconnecting: false,
            };
            let Ok(resume_token) = ResumeToken::new("bare-relay") else {
                return;
            };
            let joined = ServerMessage::Joined {
                room,
                you: PeerId::new(me),
                peers: others.iter().copied().map(member).collect(),
                capacity: 2,
                ice_servers: Vec::new(),
                resume_token,
                resumed: false,
                lock: LockState::Open,
                chat: Vec::new(),
            };
            let _ = tx.send(joined.to_json());
            let note = ServerMessage::PeerJoined { peer: member(me) }.to_json();
            for other in others {
                if let Some((_, peer)) = s.peers.get(&other) {
                    let _ = peer.send(note.clone());
                }
            }
        }
        Ok(ClientMessage::IceCandidate {
            to,
            connection,
            candidate,
        }) => {
            if let Some((_, peer)) = s.peers.get(&to.get()) {
                let relayed = ServerMessage::IceCandidate {
                    from: PeerId::new(me),
                    connection,
                    candidate,
                };
                let _ = peer.send(relayed.to_json());
            }
        }
        _ => {}
    }
}
