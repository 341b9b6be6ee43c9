//! The two relays' wire formats, spoken by one client type so both are driven the same way.
//!
//! - [`Dialect::Noom`]: our `/ws` protocol, with the `shared` crate's [`ClientMessage`] and
//!   [`ServerMessage`]. A signal is an `iceCandidate` addressed `to` the peer (from connection
//!   [`CONNECTION`]), the payload in its `candidate` string. A client leaves on purpose (`leave`)
//!   before closing, as a browser does, so the server does not keep its seat for a resume.
//! - [`Dialect::SocketIo`]: the tutorial's express + socket.io relay, spoken as Engine.IO 4 over
//!   a raw websocket (`../shared/bench/sio-relay/README.md`): open packet `0{..}`, `40`
//!   namespace connect, `420["join_room",R]` acked by `430[]`, `42["welcome"]`,
//!   `42["ice",PAYLOAD,R]` relayed as `42["ice",PAYLOAD]`, ping `2` answered with `3`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use shared::{
    ClientMessage, ConnectionId, DisplayName, IceCandidate, PeerId, RoomName, ServerMessage,
    PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::sys;

/// Which relay a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dialect {
    /// Noom's server (`/ws`, typed JSON).
    Noom,
    /// The tutorial's socket.io 4 relay.
    SocketIo,
}

impl Dialect {
    pub fn label(self) -> &'static str {
        match self {
            Dialect::Noom => "noom",
            Dialect::SocketIo => "socket.io",
        }
    }

    fn url(self, addr: SocketAddr) -> String {
        match self {
            Dialect::Noom => format!("ws://{addr}/ws"),
            Dialect::SocketIo => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

pub type Ws = WebSocketStream<TcpStream>;

/// Something a client received, in dialect-neutral terms.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// The join was acknowledged. Noom tells the client its id and who was there; socket.io
    /// tells neither (`you` is 0, `peers` empty).
    Joined { you: u64, peers: Vec<u64> },
    /// Another client entered the room (Noom `peerJoined`, socket.io `welcome`).
    PeerJoined { peer: u64 },
    /// A relayed signal's payload.
    Signal(String),
    /// Something that ends the test for this client: an error reply, a peer that left, a
    /// socket.io disconnect.
    Failure(String),
    /// Anything else (a Noom `peerMediaState`, socket.io namespace packets...).
    Other,
}

/// A connected client of either relay.
pub struct Client {
    pub ws: Ws,
    pub dialect: Dialect,
    pub room: String,
    /// Our id (Noom only; 0 for socket.io).
    pub me: u64,
    /// The other member of the room (Noom only; 0 for socket.io, which addresses the room).
    pub peer: u64,
    /// Whether this client has been told that another member joined (or, for Noom, found one
    /// in the room when it joined).
    pub peer_seen: bool,
}

/// A websocket configuration with a small read buffer: thousands of idle clients would
/// otherwise hold tungstenite's default 128 KiB each (the generator's memory, not the server's,
/// but it is the same machine).
pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// The display name every generated client joins with.
const NAME: &str = "loadgen";

/// The `RTCPeerConnection` id generated clients tag their signals with.
pub const CONNECTION: ConnectionId = ConnectionId::new(1);

fn other(text: impl Into<String>) -> io::Error {
    io::Error::other(text.into())
}

impl Client {
    /// Opens a websocket (and, for socket.io, the Engine.IO session and default namespace).
    pub async fn connect(
        dialect: Dialect,
        addr: SocketAddr,
        source: Ipv4Addr,
        room: String,
        read_buffer: usize,
    ) -> io::Result<Self> {
        let stream = sys::connect_from(source, addr).await?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            dialect.url(addr),
            stream,
            Some(ws_config(read_buffer)),
        )
        .await
        .map_err(|e| other(format!("websocket handshake: {e}")))?;
        let mut client = Client {
            ws,
            dialect,
            room,
            me: 0,
            peer: 0,
            peer_seen: false,
        };
        if dialect == Dialect::SocketIo {
            let open = client.next_text().await?;
            if !open.starts_with('0') {
                return Err(other(format!(
                    "expected the Engine.IO open packet, got {open:.80}"
                )));
            }
            client.send_text("40".into()).await?;
            loop {
                let text = client.next_text().await?;
                if text.starts_with("40") {
                    break;
                }
                if text.starts_with("44") {
                    return Err(other(format!("socket.io connect error: {text:.200}")));
                }
            }
        }
        Ok(client)
    }

    /// Sends the join request for `self.room`.
    pub async fn send_join(&mut self) -> io::Result<()> {
        let text = match self.dialect {
            Dialect::Noom => ClientMessage::Join {
                room: RoomName::new(self.room.clone())
                    .map_err(|e| other(format!("room name: {e}")))?,
                version: PROTOCOL_VERSION,
                name: DisplayName::new(NAME).map_err(|e| other(format!("name: {e}")))?,
                resume: None,
                passcode: None,
            }
            .to_json(),
            Dialect::SocketIo => format!("420[\"join_room\",{}]", json_string(&self.room)),
        };
        self.send_text(text).await
    }

    /// Joins `self.room` and waits for the acknowledgement. Returns the peers already there
    /// (always empty for socket.io). A `welcome` that overtakes the ack is remembered in `peer`.
    pub async fn join(&mut self, timeout: Duration) -> io::Result<Vec<u64>> {
        self.send_join().await?;
        let wait = async {
            loop {
                match self.next_event().await? {
                    Event::Joined { you, peers } => {
                        self.me = you;
                        if let Some(&first) = peers.first() {
                            self.peer = first;
                            self.peer_seen = true;
                        }
                        return Ok(peers);
                    }
                    Event::Failure(why) => return Err(other(why)),
                    Event::PeerJoined { peer } => {
                        self.peer = peer;
                        self.peer_seen = true;
                    }
                    Event::Signal(_) | Event::Other => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| other("timed out waiting for the join acknowledgement"))?
    }

    /// Waits for the room's second member (Noom `peerJoined`, socket.io `welcome`).
    pub async fn wait_peer(&mut self, timeout: Duration) -> io::Result<()> {
        let wait = async {
            loop {
                match self.next_event().await? {
                    Event::PeerJoined { peer } => {
                        self.peer = peer;
                        self.peer_seen = true;
                        return Ok(());
                    }
                    Event::Failure(why) => return Err(other(why)),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| other("timed out waiting for the peer to join"))?
    }

    /// Bytes a signal frame takes besides its payload (the payload is plain ASCII, never
    /// escaped), so a payload can be padded to give an exact frame size.
    pub fn signal_overhead(&self) -> usize {
        self.encode_signal(String::new()).len()
    }

    /// The text frame that relays `payload` to the peer.
    pub fn encode_signal(&self, payload: String) -> String {
        match self.dialect {
            Dialect::Noom => ClientMessage::IceCandidate {
                to: PeerId::new(self.peer),
                connection: CONNECTION,
                candidate: IceCandidate {
                    candidate: payload,
                    sdp_mid: None,
                    sdp_m_line_index: None,
                    username_fragment: None,
                },
            }
            .to_json(),
            Dialect::SocketIo => {
                let mut text = String::with_capacity(payload.len() + self.room.len() + 16);
                text.push_str("42[\"ice\",");
                text.push_str(&json_string(&payload));
                text.push(',');
                text.push_str(&json_string(&self.room));
                text.push(']');
                text
            }
        }
    }

    pub async fn send_text(&mut self, text: String) -> io::Result<()> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| other(format!("send: {e}")))
    }

    /// Queues a frame without flushing it (see [`Client::flush`]).
    pub async fn feed_text(&mut self, text: String) -> io::Result<()> {
        self.ws
            .feed(Message::Text(text.into()))
            .await
            .map_err(|e| other(format!("send: {e}")))
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.ws
            .flush()
            .await
            .map_err(|e| other(format!("flush: {e}")))
    }

    /// The next text frame. Websocket pings are answered by tungstenite itself.
    pub async fn next_text(&mut self) -> io::Result<String> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(other(format!("closed by the server: {frame:?}")))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(other(format!("receive: {e}"))),
                None => return Err(other("connection closed")),
            }
        }
    }

    /// The next event, answering socket.io pings on the way.
    pub async fn next_event(&mut self) -> io::Result<Event> {
        loop {
            let text = self.next_text().await?;
            match parse(self.dialect, &text) {
                Parsed::Event(event) => return Ok(event),
                Parsed::Ping => self.send_text("3".into()).await?,
            }
        }
    }

    /// Handles a frame received elsewhere (when the caller polls `ws` itself): answers a
    /// socket.io ping and returns `None` for it.
    pub async fn on_text(&mut self, text: &str) -> io::Result<Option<Event>> {
        match parse(self.dialect, text) {
            Parsed::Event(event) => Ok(Some(event)),
            Parsed::Ping => {
                self.feed_text("3".into()).await?;
                Ok(None)
            }
        }
    }

    /// Leaves the room (Noom), sends a close frame and waits (briefly) for the server to finish
    /// the close handshake.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if self.dialect == Dialect::Noom && self.me != 0 {
                let _ = self.feed_text(ClientMessage::Leave.to_json()).await;
            }
            if self.ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

/// A received frame as the client sees it.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Event(Event),
    /// An Engine.IO ping (`2`), to be answered with `3`.
    Ping,
}

/// Decodes one received text frame.
pub fn parse(dialect: Dialect, text: &str) -> Parsed {
    match dialect {
        Dialect::Noom => Parsed::Event(match ServerMessage::from_json(text) {
            Ok(ServerMessage::Joined { you, peers, .. }) => Event::Joined {
                you: you.get(),
                peers: peers.into_iter().map(|member| member.id.get()).collect(),
            },
            Ok(ServerMessage::PeerJoined { peer }) => Event::PeerJoined {
                peer: peer.id.get(),
            },
            Ok(ServerMessage::IceCandidate { candidate, .. }) => Event::Signal(candidate.candidate),
            Ok(ServerMessage::Description { description, .. }) => Event::Signal(description.sdp),
            Ok(ServerMessage::PeerLeft { peer }) => Event::Failure(format!("peer {peer} left")),
            Ok(ServerMessage::PeerReconnecting { peer }) => {
                Event::Failure(format!("peer {peer} lost its connection"))
            }
            Ok(ServerMessage::Error { code, message }) => {
                Event::Failure(format!("server error {code}: {message}"))
            }
            Ok(
                ServerMessage::PeerMediaState { .. }
                | ServerMessage::PeerReconnected { .. }
                | ServerMessage::Chat(_)
                | ServerMessage::LockChanged { .. },
            ) => Event::Other,
            Err(e) => Event::Failure(format!("undecodable server message ({e}): {text:.120}")),
        }),
        Dialect::SocketIo => {
            if text == "2" {
                return Parsed::Ping;
            }
            Parsed::Event(if let Some(args) = text.strip_prefix("42") {
                match serde_json::from_str::<Vec<serde_json::Value>>(args) {
                    Ok(args) => match args.first().and_then(|v| v.as_str()) {
                        Some("welcome") => Event::PeerJoined { peer: 0 },
                        Some("ice" | "offer" | "answer") => match args.get(1) {
                            Some(serde_json::Value::String(payload)) => {
                                Event::Signal(payload.clone())
                            }
                            _ => Event::Failure(format!("signal without a payload: {text:.120}")),
                        },
                        _ => Event::Other,
                    },
                    Err(e) => Event::Failure(format!("undecodable event ({e}): {text:.120}")),
                }
            } else if text.starts_with("43") {
                // The only acknowledgement we ask for is the join's.
                Event::Joined {
                    you: 0,
                    peers: Vec::new(),
                }
            } else if text.starts_with("41") || text.starts_with('1') {
                Event::Failure(format!("socket.io disconnect: {text:.120}"))
            } else if text.starts_with("44") {
                Event::Failure(format!("socket.io error: {text:.200}"))
            } else {
                Event::Other
            })
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_io_frames() {
        assert_eq!(parse(Dialect::SocketIo, "2"), Parsed::Ping);
        assert_eq!(
            parse(Dialect::SocketIo, "430[]"),
            Parsed::Event(Event::Joined {
                you: 0,
                peers: vec![]
            })
        );
        assert_eq!(
            parse(Dialect::SocketIo, r#"42["welcome"]"#),
            Parsed::Event(Event::PeerJoined { peer: 0 })
        );
        assert_eq!(
            parse(Dialect::SocketIo, r#"42["ice","S 1 2 xx"]"#),
            Parsed::Event(Event::Signal("S 1 2 xx".into()))
        );
        assert!(matches!(
            parse(Dialect::SocketIo, "41"),
            Parsed::Event(Event::Failure(_))
        ));
    }

    #[test]
    fn noom_frames() {
        let text = ServerMessage::IceCandidate {
            from: PeerId::new(3),
            connection: CONNECTION,
            candidate: IceCandidate {
                candidate: "S 1 2".into(),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            },
        }
        .to_json();
        assert_eq!(
            parse(Dialect::Noom, &text),
            Parsed::Event(Event::Signal("S 1 2".into()))
        );
        let text = ServerMessage::PeerJoined {
            peer: shared::Member {
                id: PeerId::new(9),
                name: DisplayName::new(NAME).unwrap(),
                media: shared::MediaState::default(),
                reconnecting: false,
            },
        }
        .to_json();
        assert_eq!(
            parse(Dialect::Noom, &text),
            Parsed::Event(Event::PeerJoined { peer: 9 })
        );
    }
}
