//! Helpers for integration tests that talk to a real Noom server over real sockets: start the
//! server in-process on 127.0.0.1 port 0, connect websocket clients, and send / receive typed
//! protocol messages. Every receive has a timeout, so a broken server fails a test instead of
//! hanging it.
//!
//! Kept generic on purpose: any test file can `mod common;` and use what it needs.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use server::{AppState, Config};
use shared::{
    ChatEntry, ClientMessage, ConnectionId, DisplayName, ErrorCode, IceCandidate, LockState,
    Member, Passcode, PeerId, ResumeToken, RoomName, SdpKind, ServerMessage, SessionDescription,
    PROTOCOL_VERSION,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long to listen when asserting that nothing arrives. A heuristic by nature: the server
/// relays within microseconds on loopback, so a message that was going to arrive would arrive
/// well within this window.
pub const QUIET: Duration = Duration::from_millis(300);

/// The `index.html` written into the fake dist directory; tests look for this marker.
pub const INDEX_MARKER: &str = "noom-test-index";

/// Name of a compressible asset (> 1 KiB) in the fake dist directory.
pub const BIG_ASSET: &str = "app-0123abcd.js";

/// The resume secret test servers get (unless a test gives its own, or a data directory), so
/// that no test writes a `noom-data` directory into the source tree.
pub const TEST_RESUME_SECRET: &str = "integration-test resume secret";

/// The connection id test clients tag their signals with.
pub const CONNECTION: ConnectionId = ConnectionId::new(77);

/// Creates a fake `dist` directory: an `index.html` carrying [`INDEX_MARKER`] and a large,
/// very compressible JavaScript asset named [`BIG_ASSET`].
pub fn fake_dist() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create temp dist dir");
    write_fake_dist(dir.path());
    dir
}

pub fn write_fake_dist(dir: &Path) {
    let index = format!(
        "<!doctype html><html><head><title>Noom</title></head><body>{INDEX_MARKER}</body></html>\n"
    );
    std::fs::write(dir.join("index.html"), index).expect("write index.html");
    let asset = "console.log('noom test asset, compress me please');\n".repeat(100);
    assert!(asset.len() > 4096);
    std::fs::write(dir.join(BIG_ASSET), asset).expect("write asset");
}

/// A server running in-process on 127.0.0.1 with an OS-chosen port. Dropping it triggers its
/// shutdown and aborts the serving task.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// The directory served as the app bundle.
    pub dist: PathBuf,
    /// Owns the fake dist directory (absent when the caller passed its own `--dist`).
    _dist_dir: Option<tempfile::TempDir>,
    _data_dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Defaults, no ICE servers, a fake dist directory.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra command line flags (as the `server` binary takes them). Adds
    /// `--ice-server none`, a fake `--dist` and [`TEST_RESUME_SECRET`] unless `args` sets them
    /// (or a `--data-dir`). The shutdown grace is `--shutdown-grace-secs` (default 5).
    pub async fn start_with(args: &[&str]) -> Self {
        let has = |flag: &str| {
            args.iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        let dist_dir = (!has("--dist")).then(fake_dist);
        let mut argv: Vec<String> = vec!["server".into()];
        if !has("--ice-server") {
            argv.extend(["--ice-server".into(), "none".into()]);
        }
        if let Some(dir) = &dist_dir {
            argv.extend(["--dist".into(), dir.path().display().to_string()]);
        }
        if !has("--resume-secret") && !has("--data-dir") {
            argv.extend(["--resume-secret".into(), TEST_RESUME_SECRET.into()]);
        }
        // Whatever else the server keeps (a TURN secret, say) goes to a temporary directory,
        // never to `noom-data/` in the checkout (the tests' working directory).
        let data_dir = (!has("--data-dir")).then(|| tempfile::tempdir().expect("data dir"));
        if let Some(dir) = &data_dir {
            argv.extend(["--data-dir".into(), dir.path().display().to_string()]);
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        let config = Config::try_parse_from(&argv)
            .unwrap_or_else(|err| panic!("bad test server flags {argv:?}: {err}"));
        let state = AppState::new(&config).expect("valid test config");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // Sender dropped counts as "shut down" too.
            let _ = rx.await;
        };
        let task = tokio::spawn(server::run(
            listener,
            Arc::clone(&state),
            shutdown,
            config.shutdown_grace(),
        ));
        Self {
            addr,
            state,
            dist: config.dist.clone().expect("test servers always get --dist"),
            _dist_dir: dist_dir,
            _data_dir: data_dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A new websocket client on `/ws`.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A new client that has joined `room`, with its `joined` reply already read.
    pub async fn joined_client(&self, room: &str) -> (Client, Joined) {
        let mut client = self.client().await;
        let joined = client.join(room).await;
        (client, joined)
    }

    /// Triggers the shutdown future without waiting for anything.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Takes the handle of the task running `server::run`, to await it.
    pub fn take_task(&mut self) -> JoinHandle<std::io::Result<()>> {
        self.task.take().expect("server task already taken")
    }

    /// `GET /metrics`, as text (fails the test on any other status).
    pub async fn scrape(&self) -> Metrics {
        let response = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("http client")
            .get(self.http_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        Metrics(response.text().await.expect("metrics body"))
    }

    /// Polls `state.hub.room_count()` until it equals `expected` (or fails after [`TIMEOUT`]).
    pub async fn wait_for_room_count(&self, expected: usize) {
        wait_until(
            || self.state.hub.room_count() == expected,
            || {
                format!(
                    "room_count is {}, expected {expected}",
                    self.state.hub.room_count()
                )
            },
        )
        .await;
    }

    /// Polls `state.hub.connection_count()` until it equals `expected`.
    pub async fn wait_for_connection_count(&self, expected: usize) {
        wait_until(
            || self.state.hub.connection_count() == expected,
            || {
                format!(
                    "connection_count is {}, expected {expected}",
                    self.state.hub.connection_count()
                )
            },
        )
        .await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `condition` every 10 ms until true; panics with `describe()` after [`TIMEOUT`].
pub async fn wait_until(mut condition: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > TIMEOUT {
            panic!("timed out after {TIMEOUT:?}: {}", describe());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fields of a `joined` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub room: RoomName,
    pub you: PeerId,
    pub peers: Vec<Member>,
    pub capacity: u32,
    pub ice_servers: Vec<shared::IceServer>,
    pub resume_token: ResumeToken,
    pub resumed: bool,
    pub lock: LockState,
    pub chat: Vec<ChatEntry>,
}

impl Joined {
    /// The ids of the other members, oldest first.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.iter().map(|m| m.id).collect()
    }

    fn from_message(message: ServerMessage) -> Option<Self> {
        match message {
            ServerMessage::Joined {
                room,
                you,
                peers,
                capacity,
                ice_servers,
                resume_token,
                resumed,
                lock,
                chat,
            } => Some(Self {
                room,
                you,
                peers,
                capacity,
                ice_servers,
                resume_token,
                resumed,
                lock,
                chat,
            }),
            _ => None,
        }
    }
}

/// What [`Client::next_event`] saw.
#[derive(Debug)]
pub enum Event {
    /// A text frame that decoded as a [`ServerMessage`].
    Message(ServerMessage),
    /// A close frame (possibly without a code).
    Close(Option<CloseFrame>),
    /// The stream ended without a close frame.
    End,
    /// The websocket layer reported an error (e.g. the TCP connection was reset).
    Error(tungstenite::Error),
    /// Nothing within the wait.
    Timeout,
}

/// A websocket client speaking the Noom protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a websocket upgrade went: connected, or refused with an HTTP status and body.
pub enum Upgrade {
    Connected(Box<Client>),
    Refused { status: u16, body: String },
}

impl Upgrade {
    pub fn connected(self) -> Client {
        match self {
            Upgrade::Connected(client) => *client,
            Upgrade::Refused { status, body } => {
                panic!("upgrade refused with {status}: {body}")
            }
        }
    }

    /// The refusal's status and body; fails the test if the upgrade went through.
    pub fn refused(self) -> (u16, String) {
        match self {
            Upgrade::Connected(_) => panic!("expected the upgrade to be refused"),
            Upgrade::Refused { status, body } => (status, body),
        }
    }
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"))
            .unwrap_or_else(|err| panic!("cannot connect to {url}: {err}"));
        Self { ws }
    }

    /// Connects with a small TCP receive buffer (`SO_RCVBUF`, set before connecting so that the
    /// advertised window stays small): the server's writes to this client then wait in its
    /// queue rather than in kernel buffers, as for a client on a slow link.
    pub async fn connect_with_small_window(url: &str, recv_buffer: u32) -> Self {
        let request = url.into_client_request().expect("websocket request");
        let target: SocketAddr = request
            .uri()
            .authority()
            .expect("authority")
            .as_str()
            .parse()
            .expect("ws URL with an IP address");
        let attempt = async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .set_recv_buffer_size(recv_buffer)
                .expect("set SO_RCVBUF");
            let stream = socket.connect(target).await.expect("tcp connect");
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket handshake")
        };
        let (ws, _response) = tokio::time::timeout(TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"));
        Self { ws }
    }

    /// Connects to `url` with extra request `headers` (e.g. `origin`), from the local address
    /// `from` if given (any 127.x.y.z works on Linux loopback): for the origin check and the
    /// per-IP limit.
    pub async fn upgrade(url: &str, headers: &[(&str, &str)], from: Option<IpAddr>) -> Upgrade {
        let mut request = url.into_client_request().expect("websocket request");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let target: SocketAddr = request
            .uri()
            .authority()
            .expect("authority")
            .as_str()
            .parse()
            .expect("ws URL with an IP address");
        let attempt = async {
            let socket = match from {
                Some(IpAddr::V4(_)) | None => tokio::net::TcpSocket::new_v4(),
                Some(IpAddr::V6(_)) => tokio::net::TcpSocket::new_v6(),
            }
            .expect("socket");
            if let Some(ip) = from {
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .expect("bind client address");
            }
            let stream = socket.connect(target).await.expect("tcp connect");
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await
        };
        match tokio::time::timeout(TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"))
        {
            Ok((ws, _response)) => Upgrade::Connected(Box::new(Self { ws })),
            Err(tungstenite::Error::Http(response)) => Upgrade::Refused {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            },
            Err(err) => panic!("cannot connect to {url}: {err}"),
        }
    }

    /// Sends one typed message as a JSON text frame.
    pub async fn send(&mut self, message: &ClientMessage) {
        self.send_raw(message.to_json()).await;
    }

    /// Sends arbitrary text as one text frame (for malformed or hand-crafted input).
    pub async fn send_raw(&mut self, text: impl Into<String>) {
        self.send_frame(Message::text(text.into())).await;
    }

    /// Sends any websocket frame.
    pub async fn send_frame(&mut self, frame: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(frame))
            .await
            .expect("timed out sending a frame")
            .expect("sending a frame failed");
    }

    /// The next event within `wait`. Pings and pongs are skipped; a text frame that does not
    /// decode as a [`ServerMessage`] fails the test (the server must only send protocol JSON).
    pub async fn next_event(&mut self, wait: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Event::Timeout,
                Ok(None) => return Event::End,
                Ok(Some(Err(err))) => return Event::Error(err),
                Ok(Some(Ok(Message::Text(text)))) => {
                    let message = ServerMessage::from_json(&text).unwrap_or_else(|err| {
                        panic!("server sent text that is not a ServerMessage ({err}): {text}")
                    });
                    return Event::Message(message);
                }
                Ok(Some(Ok(Message::Close(frame)))) => return Event::Close(frame),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(other))) => panic!("unexpected frame from the server: {other:?}"),
            }
        }
    }

    /// The next server message; fails the test on timeout, close or error.
    pub async fn recv(&mut self) -> ServerMessage {
        match self.next_event(TIMEOUT).await {
            Event::Message(message) => message,
            other => panic!("expected a server message, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for [`QUIET`] (a short wait: see its doc).
    pub async fn expect_silence(&mut self) {
        match self.next_event(QUIET).await {
            Event::Timeout => {}
            other => panic!("expected nothing for {QUIET:?}, got {other:?}"),
        }
    }

    /// Expects an `error` reply with `code`; returns its human-readable message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv().await {
            ServerMessage::Error { code: got, message } if got == code => {
                assert!(!message.is_empty(), "error {code} has an empty message");
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Joins `room` (as "Guest") with the current protocol version and expects `joined`.
    pub async fn join(&mut self, room: &str) -> Joined {
        self.join_as(room, "Guest").await
    }

    /// Joins `room` as `name` and expects `joined`.
    pub async fn join_as(&mut self, room: &str, name: &str) -> Joined {
        self.send(&join_as(room, name)).await;
        self.expect_joined(room).await
    }

    /// Sends `join` for `room` with a resume token, expects `joined` (resumed or restored).
    pub async fn resume(&mut self, room: &str, token: &ResumeToken) -> Joined {
        self.send(&join_with(room, "Guest", Some(token), None))
            .await;
        self.expect_joined(room).await
    }

    /// Expects `joined` for `room` as the next message.
    pub async fn expect_joined(&mut self, room: &str) -> Joined {
        let message = self.recv().await;
        let joined = Joined::from_message(message.clone())
            .unwrap_or_else(|| panic!("expected joined for room {room:?}, got {message:?}"));
        assert_eq!(joined.room.as_str(), room);
        joined
    }

    /// Starts the closing handshake and waits (bounded) for the server's close reply.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(TIMEOUT, self.ws.close(None)).await;
        let _ = tokio::time::timeout(TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// `join` with the current protocol version, as "Guest".
pub fn join(room: &str) -> ClientMessage {
    join_as(room, "Guest")
}

/// `join` as `name`.
pub fn join_as(room: &str, name: &str) -> ClientMessage {
    join_with(room, name, None, None)
}

/// `join` with everything.
pub fn join_with(
    room: &str,
    name: &str,
    resume: Option<&ResumeToken>,
    passcode: Option<&str>,
) -> ClientMessage {
    ClientMessage::Join {
        room: RoomName::new(room).expect("valid room name"),
        version: PROTOCOL_VERSION,
        name: DisplayName::new(name).expect("valid display name"),
        resume: resume.cloned(),
        passcode: passcode.map(|p| Passcode::new(p).expect("valid passcode")),
    }
}

pub fn description(to: PeerId, kind: SdpKind, sdp: &str) -> ClientMessage {
    ClientMessage::Description {
        to,
        connection: CONNECTION,
        description: SessionDescription {
            kind,
            sdp: sdp.into(),
        },
    }
}

/// What a peer receives for [`description`] sent by `from`.
pub fn described(from: PeerId, kind: SdpKind, sdp: &str) -> ServerMessage {
    ServerMessage::Description {
        from,
        connection: CONNECTION,
        description: SessionDescription {
            kind,
            sdp: sdp.into(),
        },
    }
}

pub fn offer(to: PeerId, sdp: &str) -> ClientMessage {
    description(to, SdpKind::Offer, sdp)
}

pub fn answer(to: PeerId, sdp: &str) -> ClientMessage {
    description(to, SdpKind::Answer, sdp)
}

pub fn candidate(candidate: &str) -> IceCandidate {
    IceCandidate {
        candidate: candidate.into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("frag".into()),
    }
}

pub fn ice(to: PeerId, c: &str) -> ClientMessage {
    ClientMessage::IceCandidate {
        to,
        connection: CONNECTION,
        candidate: candidate(c),
    }
}

/// What a peer receives for [`ice`] sent by `from`.
pub fn iced(from: PeerId, c: &str) -> ServerMessage {
    ServerMessage::IceCandidate {
        from,
        connection: CONNECTION,
        candidate: candidate(c),
    }
}

/// The id a `peerJoined` announces (fails the test on anything else).
pub fn peer_joined(message: &ServerMessage) -> PeerId {
    match message {
        ServerMessage::PeerJoined { peer } => peer.id,
        other => panic!("expected peerJoined, got {other:?}"),
    }
}

/// Two clients that joined the same room, with all join notifications consumed.
pub struct Pair {
    pub a: Client,
    pub a_id: PeerId,
    pub b: Client,
    pub b_id: PeerId,
}

impl Pair {
    pub async fn new(server: &TestServer, room: &str) -> Self {
        let (mut a, a_joined) = server.joined_client(room).await;
        let (b, b_joined) = server.joined_client(room).await;
        assert_eq!(b_joined.peer_ids(), [a_joined.you]);
        assert_eq!(peer_joined(&a.recv().await), b_joined.you);
        Self {
            a,
            a_id: a_joined.you,
            b,
            b_id: b_joined.you,
        }
    }

    /// An offer, an answer and a candidate go through both ways with `from` stamped, and
    /// nothing else arrives: the pair is unaffected by whatever else happened on the server.
    pub async fn assert_relays(&mut self) {
        self.a.send(&offer(self.b_id, "v=0 pair offer")).await;
        assert_eq!(
            self.b.recv().await,
            described(self.a_id, SdpKind::Offer, "v=0 pair offer")
        );
        self.b.send(&answer(self.a_id, "v=0 pair answer")).await;
        assert_eq!(
            self.a.recv().await,
            described(self.b_id, SdpKind::Answer, "v=0 pair answer")
        );
        self.a.send(&ice(self.b_id, "candidate:pair")).await;
        assert_eq!(self.b.recv().await, iced(self.a_id, "candidate:pair"));
        self.a.expect_silence().await;
        self.b.expect_silence().await;
    }
}

/// A `/metrics` scrape.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series written exactly as `series` (name and labels, as in the text),
    /// or `None` if there is no such line.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("numeric metric value"))
        })
    }

    /// Like [`Metrics::get`], failing the test if the series is missing.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.0))
    }
}
