//! TURN, with real components: the server binary's built-in TURN server driven by webrtc-rs's
//! TURN client and by coturn's own test client (`turnutils_uclient`), and Debian's real coturn
//! (`turnserver`) used as the external TURN server with credentials taken from a real `joined`.
//!
//! Every test runs in its own network namespaces, made by the test and gone with it: the test
//! thread leaves the namespace it runs in (`unshare(CLONE_NEWNET)`, loopback only), so the
//! processes it starts live there too, and a second thread holds a "peer" namespace joined by a
//! veth pair: 198.18.0.1/24 on our side, 198.18.0.2/24 on the peer's, plus 198.19.0.1 behind the
//! peer (routed through it). From the TURN server's side 198.18.0.2 is on one of its own networks
//! (allowed), while 198.19.0.1 is a special-purpose range that is not (refused). Needs root, as
//! CI runs it (`scripts/test.sh`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Client as WsClient, Joined, TestServer, QUIET, TIMEOUT};
use server::datadir::Secret;
use server::turn::credentials::{self, Credentials};
use shared::{IceServer, PeerId};
use tokio::net::UdpSocket;
use turn::client::{Client as TurnClient, ClientConfig};
use webrtc_util::Conn;

const SECRET: &str = "turn-test-secret-0123456789";

fn secret() -> Secret {
    Secret::from_text(SECRET).unwrap()
}

// ---- namespaces ----

/// Runs `program args` (from the calling thread, so in its network namespace); panics on failure.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread (the test's: `#[tokio::test]` runs on one thread) into a new network
/// namespace with loopback up. It is freed when the test's thread and processes are gone.
fn isolate() {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed ({}): the TURN tests need root, as in scripts/test.sh",
        std::io::Error::last_os_error()
    );
    run("ip", &["link", "set", "lo", "up"]);
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in its own network namespace, joined to the test's by a veth pair. Dropping it ends
/// the thread, which frees the namespace and with it both ends of the veth pair.
struct PeerNs {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The test side of the veth pair.
const NEAR: &str = "198.18.0.1";
/// The peer side: on the server's own network.
const PEER: &str = "198.18.0.2";
/// Behind the peer: a special-purpose range that is not one of the server's networks.
const FAR: &str = "198.19.0.1";

impl PeerNs {
    fn new() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: as in `isolate`, for this thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            // SAFETY: gettid(2) has no preconditions.
            let tid = unsafe { libc::gettid() };
            let _ = tid_tx.send((rc, tid));
            while let Ok(job) = rx.recv() {
                job();
            }
        });
        let (rc, tid) = tid_rx.recv().unwrap();
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET) for the peer namespace");
        let peer = Self {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        let tid = tid.to_string();
        run(
            "ip",
            &[
                "link", "add", "nt-near", "type", "veth", "peer", "name", "nt-far",
            ],
        );
        run("ip", &["link", "set", "nt-far", "netns", &tid]);
        run(
            "ip",
            &["addr", "add", &format!("{NEAR}/24"), "dev", "nt-near"],
        );
        run("ip", &["link", "set", "nt-near", "up"]);
        run("ip", &["route", "add", "198.19.0.0/24", "via", PEER]);
        peer.run(|| {
            run("ip", &["link", "set", "lo", "up"]);
            run(
                "ip",
                &["addr", "add", &format!("{PEER}/24"), "dev", "nt-far"],
            );
            run("ip", &["link", "set", "nt-far", "up"]);
            run("ip", &["addr", "add", &format!("{FAR}/32"), "dev", "lo"]);
        });
        peer
    }

    /// Runs `f` on the peer's thread (in its namespace).
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .unwrap();
        rx.recv().expect("the peer namespace's job panicked")
    }

    /// A UDP socket bound in the peer namespace.
    fn udp(&self, ip: &str) -> UdpSocket {
        let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
        let socket = self.run(move || std::net::UdpSocket::bind(addr).unwrap());
        socket.set_nonblocking(true).unwrap();
        UdpSocket::from_std(socket).unwrap()
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---- the server binary ----

/// The real server binary, killed (by PID) on drop.
struct Noom {
    child: Child,
    http: SocketAddr,
    /// Whether it serves HTTPS (`--tls auto` off loopback): then clients use wss and trust the
    /// self-signed certificate it keeps in its data directory.
    https: bool,
    /// The TURN server's TCP address (the UDP listeners share its port).
    turn: Option<SocketAddr>,
    /// Everything the server logged (RUST_LOG=debug), to check that no secret is in it.
    logs: Arc<Mutex<String>>,
    dist: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Noom {
    /// Starts with `args`, plus a fake bundle, a fresh data directory and no STUN servers.
    fn start(args: &[&str], expect_turn: bool) -> Self {
        let dist = common::fake_dist();
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command
            .args(["--dist", dist.path().to_str().unwrap()])
            .args(["--data-dir", data.path().join("data").to_str().unwrap()])
            .args(["--ice-server", "none"])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !args.contains(&"--addr") {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        let mut child = command.spawn().expect("start the server binary");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let logs = Arc::clone(&logs);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut noom = Self {
            child,
            http: "0.0.0.0:0".parse().unwrap(),
            https: false,
            turn: None,
            logs,
            dist,
            data,
        };
        let first = lines
            .recv_timeout(TIMEOUT * 2)
            .unwrap_or_else(|_| panic!("the server did not start:\n{}", noom.logs.lock().unwrap()));
        let (https, at) = if let Some(at) = first.strip_prefix("Noom is listening on https://") {
            (true, at)
        } else if let Some(at) = first.strip_prefix("Noom is listening on http://") {
            (false, at)
        } else {
            panic!("unexpected first line {first:?}")
        };
        noom.https = https;
        noom.http = at.parse().unwrap();
        let wait = if expect_turn { TIMEOUT } else { QUIET };
        // Over HTTPS the URLs a person can open and the certificate's fingerprints come first.
        let turn_line = loop {
            match lines.recv_timeout(wait) {
                Ok(line) if line.starts_with("TURN is listening on ") => break Some(line),
                Ok(line) if https && !line.starts_with("TURN") => continue,
                Ok(line) => panic!("unexpected line {line:?}"),
                Err(_) => break None,
            }
        };
        if let Some(line) = turn_line {
            // "TURN is listening on udp A[, B] and tcp C (relay ports ...)"
            let tcp = line
                .split(" and tcp ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            noom.turn = Some(tcp.parse().unwrap());
        }
        assert_eq!(noom.turn.is_some(), expect_turn, "TURN line");
        noom
    }

    fn turn(&self) -> SocketAddr {
        self.turn.expect("TURN is on")
    }

    async fn joined(&self, room: &str) -> (WsClient, Joined) {
        self.joined_at(self.http, room).await
    }

    async fn joined_at(&self, addr: SocketAddr, room: &str) -> (WsClient, Joined) {
        let mut client = if self.https {
            self.wss(addr).await
        } else {
            WsClient::connect(&format!("ws://{addr}/ws")).await
        };
        let joined = client.join(room).await;
        (client, joined)
    }

    /// A websocket over TLS to `addr`, verifying the server's kept self-signed certificate for
    /// that IP address (one of its SANs).
    async fn wss(&self, addr: SocketAddr) -> WsClient {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let cert = self.data.path().join("data").join("tls-self-signed.crt");
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(&cert).expect("the kept certificate") {
            roots.add(der.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .expect("tcp connect");
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
            let url = format!("wss://{addr}/ws");
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Rustls(tls))
                .await
                .unwrap_or_else(|e| panic!("wss upgrade at {addr}: {e}"))
        };
        let (ws, _) = tokio::time::timeout(TIMEOUT, attempt)
            .await
            .expect("wss connect timed out");
        WsClient { ws }
    }

    async fn metrics(&self) -> String {
        scrape(self.http).await
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Noom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn scrape(http: SocketAddr) -> String {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .unwrap()
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap()
}

/// The value of the series `name` (with its labels, as in the text) in a scrape.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Polls `/metrics` until `name` has `value`.
async fn wait_metric(http: SocketAddr, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = scrape(http).await;
        if metric(&text, name) == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- TURN clients ----

/// A TURN client (webrtc-rs) on a fresh loopback UDP socket.
async fn turn_client(server: SocketAddr, credentials: &Credentials) -> TurnClient {
    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = TurnClient::new(ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: server.to_string(),
        username: credentials.username.clone(),
        password: credentials.password.clone(),
        realm: String::new(),
        software: String::new(),
        // Long enough that no request is retransmitted on a busy machine, so counts are exact.
        rto_in_ms: 2000,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

/// Allocates a relay; `Err` carries the server's refusal (like "... (error 401: Unauthorized)").
async fn allocate(client: &TurnClient) -> Result<impl Conn, String> {
    match tokio::time::timeout(Duration::from_secs(15), client.allocate()).await {
        Ok(Ok(relay)) => Ok(relay),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer to Allocate".into()),
    }
}

/// Sends through `relay` to `peer`; `Err` carries the refusal of the permission.
async fn relay_send(relay: &impl Conn, data: &[u8], peer: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, relay.send_to(data, peer)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer to CreatePermission".into()),
    }
}

async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("a datagram")
        .unwrap();
    (buf[..n].to_vec(), from)
}

async fn relay_recv(relay: &impl Conn) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(TIMEOUT, relay.recv_from(&mut buf))
        .await
        .expect("a datagram through the relay")
        .unwrap();
    (buf[..n].to_vec(), from)
}

async fn assert_nothing_arrives(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    if let Ok(Ok((n, from))) = tokio::time::timeout(QUIET, socket.recv_from(&mut buf)).await {
        panic!("{n} bytes from {from} reached an address the relay must not reach");
    }
}

/// The TURN entry (with credentials) of a `joined`.
fn turn_entry(servers: &[IceServer]) -> (&IceServer, Credentials) {
    let entry = servers
        .iter()
        .find(|s| s.username.is_some())
        .unwrap_or_else(|| panic!("no TURN server with credentials in {servers:?}"));
    let credentials = Credentials {
        username: entry.username.clone().unwrap(),
        password: entry.credential.clone().unwrap(),
    };
    (entry, credentials)
}

fn minted(peer: u64) -> Credentials {
    credentials::mint(
        &secret(),
        PeerId::new(peer),
        SystemTime::now(),
        credentials::LIFETIME,
    )
}

// ---- tests ----

#[tokio::test]
async fn built_in_turn_relays_to_allowed_peers_only_and_checks_credentials() {
    isolate();
    let peer = PeerNs::new();
    let noom = Noom::start(
        &[
            "--turn",
            "127.0.0.1:0",
            "--turn-secret",
            SECRET,
            "--turn-relay-ports",
            "40000-40999",
        ],
        true,
    );
    let turn = noom.turn();

    // The credentials come from a real `joined`, with the built-in server's URLs.
    let (_ws, joined) = noom.joined("turn-room").await;
    let (entry, good) = turn_entry(&joined.ice_servers);
    assert_eq!(
        joined.ice_servers[0].urls,
        [format!("stun:127.0.0.1:{}", turn.port())]
    );
    assert_eq!(
        entry.urls,
        [
            format!("turn:127.0.0.1:{}?transport=udp", turn.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", turn.port()),
        ]
    );
    let (expiry, who) = good.username.split_once(':').unwrap();
    assert_eq!(who, joined.you.to_string());
    let lifetime = expiry.parse::<u64>().unwrap()
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    assert!((86_390..=86_400).contains(&lifetime), "{lifetime}");

    // Right credentials: an allocation on a port of the range, data to and from a peer on an
    // allowed address.
    let client = turn_client(turn, &good).await;
    // The `stun:` URL works too: a binding request answers with our own address.
    let mapped = tokio::time::timeout(TIMEOUT, client.send_binding_request_to(&turn.to_string()))
        .await
        .expect("a STUN answer")
        .unwrap();
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    let relay = allocate(&client)
        .await
        .expect("allocation with joined's credentials");
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!((40000..=40999).contains(&relayed.port()), "{relayed}");
    let peer_socket = peer.udp(PEER);
    let peer_addr = peer_socket.local_addr().unwrap();
    relay_send(&relay, b"ping", peer_addr).await.unwrap();
    let (data, from) = recv(&peer_socket).await;
    assert_eq!(data, b"ping");
    assert_eq!(from, format!("{NEAR}:{}", relayed.port()).parse().unwrap());
    peer_socket.send_to(b"pong", from).await.unwrap();
    assert_eq!(relay_recv(&relay).await, (b"pong".to_vec(), peer_addr));

    // Wrong password, expired username: 401.
    let wrong = Credentials {
        username: good.username.clone(),
        password: "bm90IHRoZSBwYXNzd29yZA==".into(),
    };
    let err = allocate(&turn_client(turn, &wrong).await)
        .await
        .err()
        .unwrap();
    assert!(err.contains("401"), "{err}");
    let past = SystemTime::now() - Duration::from_secs(60);
    let expired = credentials::mint(&secret(), PeerId::new(1), past, Duration::from_secs(30));
    let err = allocate(&turn_client(turn, &expired).await)
        .await
        .err()
        .unwrap();
    assert!(err.contains("401"), "{err}");

    // Denied peers: refused with 403, and nothing reaches them.
    let loopback = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let own = UdpSocket::bind(format!("{NEAR}:0")).await.unwrap();
    let far = peer.udp(FAR);
    for socket in [&loopback, &own, &far] {
        let target = socket.local_addr().unwrap();
        let err = relay_send(&relay, b"secret", target).await.err().unwrap();
        assert!(err.contains("403"), "{target}: {err}");
        assert_nothing_arrives(socket).await;
    }
    // The allowed peer still works after the refusals.
    relay_send(&relay, b"again", peer_addr).await.unwrap();
    assert_eq!(recv(&peer_socket).await.0, b"again");

    let text = noom.metrics().await;
    assert_eq!(metric(&text, "noom_turn_allocations_open"), 1.0);
    assert_eq!(
        metric(
            &text,
            "noom_turn_auth_failures_total{reason=\"bad-credentials\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "noom_turn_auth_failures_total{reason=\"expired\"}"),
        1.0
    );
    assert_eq!(metric(&text, "noom_turn_permissions_refused_total"), 3.0);
    assert_eq!(metric(&text, "noom_turn_relay_denied_total"), 0.0);
    assert!(
        metric(
            &text,
            "noom_turn_relayed_bytes_total{direction=\"to-peer\"}"
        ) >= 9.0
    );
    assert!(
        metric(
            &text,
            "noom_turn_relayed_bytes_total{direction=\"from-peer\"}"
        ) >= 4.0
    );

    // Closing the allocation frees it.
    relay.close().await.unwrap();
    wait_metric(noom.http, "noom_turn_allocations_open", 0.0).await;

    // Credentials never reach the logs, even at debug level.
    let logs = noom.logs();
    assert!(
        logs.contains("TURN credentials refused"),
        "debug logs are on"
    );
    for secret in [SECRET, &good.password, &wrong.password, &expired.password] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}

#[tokio::test]
async fn allocations_are_limited_per_user_and_per_ip() {
    isolate();
    let noom = Noom::start(
        &[
            "--turn",
            "127.0.0.1:0",
            "--turn-secret",
            SECRET,
            "--turn-max-allocations-per-user",
            "2",
            "--turn-max-allocations-per-ip",
            "3",
        ],
        true,
    );
    let turn = noom.turn();
    let (alice, bob) = (minted(1), minted(2));
    let a1 = allocate(&turn_client(turn, &alice).await).await.unwrap();
    let _a2 = allocate(&turn_client(turn, &alice).await).await.unwrap();
    let err = allocate(&turn_client(turn, &alice).await)
        .await
        .err()
        .unwrap();
    assert!(err.contains("486"), "third for one user: {err}");
    let _b1 = allocate(&turn_client(turn, &bob).await).await.unwrap();
    let err = allocate(&turn_client(turn, &bob).await)
        .await
        .err()
        .unwrap();
    assert!(err.contains("486"), "fourth from one address: {err}");

    let text = noom.metrics().await;
    assert_eq!(metric(&text, "noom_turn_allocations_open"), 3.0);
    assert_eq!(
        metric(
            &text,
            "noom_turn_allocations_refused_total{reason=\"per-user\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "noom_turn_allocations_refused_total{reason=\"per-ip\"}"
        ),
        1.0
    );

    // A closed allocation gives its place back.
    a1.close().await.unwrap();
    wait_metric(noom.http, "noom_turn_allocations_open", 2.0).await;
    allocate(&turn_client(turn, &bob).await)
        .await
        .expect("room again after a close");
}

/// Two browsers that both relay through this server reach each other through their two
/// allocations, also when the relays are advertised on a public address the server does not
/// have (behind a NAT) and the traffic must not leave the machine.
#[tokio::test]
async fn two_allocations_relay_to_each_other() {
    isolate();
    for public_ip in [None, Some("198.18.0.77")] {
        let mut args = vec!["--turn", "127.0.0.1:0", "--turn-secret", SECRET];
        if let Some(ip) = public_ip {
            args.extend(["--turn-public-ip", ip]);
        }
        let noom = Noom::start(&args, true);
        let (_wa, a_joined) = noom.joined("both-relayed").await;
        let (_wb, b_joined) = noom.joined("both-relayed").await;
        let advertised = public_ip.unwrap_or("127.0.0.1");
        assert_eq!(
            a_joined.ice_servers[0].urls,
            [format!("stun:{advertised}:{}", noom.turn().port())]
        );
        let a_client = turn_client(noom.turn(), &turn_entry(&a_joined.ice_servers).1).await;
        let b_client = turn_client(noom.turn(), &turn_entry(&b_joined.ice_servers).1).await;
        let a = allocate(&a_client).await.unwrap();
        let b = allocate(&b_client).await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(a_addr.ip().to_string(), advertised);

        // Each side permits the other (as ICE does by sending checks both ways), then data flows
        // both ways, seen as coming from the other's relay address.
        relay_send(&a, b"a1", b_addr).await.unwrap();
        relay_send(&b, b"b1", a_addr).await.unwrap();
        assert_eq!(relay_recv(&a).await, (b"b1".to_vec(), b_addr));
        relay_send(&a, b"a2", b_addr).await.unwrap();
        let (data, from) = relay_recv(&b).await;
        assert_eq!(from, a_addr);
        assert!(data == b"a2" || data == b"a1", "{data:?}");

        let text = noom.metrics().await;
        assert_eq!(metric(&text, "noom_turn_allocations_open"), 2.0);
        assert_eq!(metric(&text, "noom_turn_permissions_refused_total"), 0.0);
    }
}

/// coturn's own test client, over UDP and over TCP (our framing), between two allocations.
#[tokio::test]
async fn coturn_client_over_udp_and_tcp() {
    isolate();
    let noom = Noom::start(&["--turn", "127.0.0.1:0", "--turn-secret", SECRET], true);
    let (_ws, joined) = noom.joined("uclient").await;
    let credentials = turn_entry(&joined.ice_servers).1;
    for tcp in [false, true] {
        let port = noom.turn().port().to_string();
        // 201-byte messages: ChannelData over TCP then needs padding, which framing must skip.
        let mut args = vec!["-y", "-n", "20", "-l", "201", "-z", "5"];
        if tcp {
            // -D: pad ChannelData over TCP, as RFC 5766 and browsers do.
            args.extend(["-t", "-D"]);
        }
        args.extend([
            "-u",
            &credentials.username,
            "-w",
            &credentials.password,
            "-p",
            &port,
            "127.0.0.1",
        ]);
        // Started from this thread, so in the test's namespace; waited for off the runtime.
        let child = Command::new("timeout")
            .arg("60")
            .arg("turnutils_uclient")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run turnutils_uclient (Debian package coturn)");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let totals = text
            .lines()
            .rfind(|l| l.contains("tot_send_msgs=") && l.contains("tot_recv_msgs="))
            .unwrap_or_else(|| panic!("tcp={tcp}: no totals in:\n{text}"));
        let count = |key: &str| -> u32 {
            totals
                .split(key)
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {totals:?}"))
        };
        // Two clients, each an RTP and an RTCP allocation, 20 messages each.
        assert_eq!(count("tot_send_msgs="), 80, "tcp={tcp}:\n{text}");
        assert_eq!(count("tot_recv_msgs="), 80, "tcp={tcp}:\n{text}");
        assert!(text.contains("Total lost packets 0 "), "tcp={tcp}:\n{text}");
    }
    let text = noom.metrics().await;
    // 2 runs x 80 messages x 201 bytes, each sent by one relay to the other.
    let relayed = metric(
        &text,
        "noom_turn_relayed_bytes_total{direction=\"to-peer\"}",
    );
    assert!(relayed >= 32_000.0, "{relayed}");
}

/// The server without `--turn` or `--tls`: plain HTTP and no TURN on loopback; reachable from
/// other machines it serves HTTPS (self-signed) and TURN (port 3478 of the --addr IP), with the
/// TURN secret kept in the data directory.
#[tokio::test]
async fn turn_auto_follows_reachability() {
    isolate();
    let noom = Noom::start(&[], false);
    let (_ws, joined) = noom.joined("loopback").await;
    assert!(joined.ice_servers.is_empty());

    run("ip", &["addr", "add", "198.18.5.1/32", "dev", "lo"]);
    let noom = Noom::start(&["--addr", "198.18.5.1:0"], true);
    assert_eq!(noom.turn(), "198.18.5.1:3478".parse().unwrap());
    let (_ws, joined) = noom.joined("reachable").await;
    let (entry, credentials) = turn_entry(&joined.ice_servers);
    assert_eq!(entry.urls[0], "turn:198.18.5.1:3478?transport=udp");
    let file = noom.data.path().join("data").join("turn-secret");
    let kept = std::fs::read_to_string(&file).expect("the secret file");
    let kept = Secret::from_text(kept.trim()).unwrap();
    assert_eq!(
        credentials.password,
        credentials::password_for(&kept, &credentials.username)
    );
    allocate(&turn_client(noom.turn(), &credentials).await)
        .await
        .expect("allocation with the data directory's secret");
    drop(noom);

    // Listening everywhere: the URLs name the address the browser used.
    let noom = Noom::start(&["--addr", "0.0.0.0:0", "--turn-secret", SECRET], true);
    assert_eq!(noom.turn(), "0.0.0.0:3478".parse().unwrap());
    for ip in ["127.0.0.1", "198.18.5.1"] {
        let at = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), noom.http.port());
        let (_ws, joined) = noom.joined_at(at, "everywhere").await;
        let (entry, credentials) = turn_entry(&joined.ice_servers);
        assert_eq!(entry.urls[1], format!("turn:{ip}:3478?transport=tcp"));
        let turn: SocketAddr = format!("{ip}:3478").parse().unwrap();
        let relay = allocate(&turn_client(turn, &credentials).await)
            .await
            .unwrap_or_else(|e| panic!("allocation at {turn}: {e}"));
        assert_eq!(relay.local_addr().unwrap().ip().to_string(), ip);
    }
}

// ---- external coturn ----

/// Debian's coturn, configured for TURN REST credentials, killed by PID on drop.
struct Coturn {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Coturn {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .arg("--listening-ip=127.0.0.1")
            .arg(format!("--listening-port={port}"))
            // Relays on the veth address, to reach the peer namespace without loopback peers.
            .arg(format!("--relay-ip={NEAR}"))
            .args(["--min-port=42000", "--max-port=42100"])
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={SECRET}"))
            .arg("--realm=noom")
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .arg(format!("--db={}", dir.path().join("turndb").display()))
            .arg("--log-file=stdout")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver (Debian package coturn)");
        Self { child, _dir: dir }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn external_coturn_accepts_the_credentials_from_joined() {
    isolate();
    let peer = PeerNs::new();
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let _coturn = Coturn::start(port);
    let coturn: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let url = format!("turn:127.0.0.1:{port}?transport=udp");
    let server =
        TestServer::start_with(&["--turn", "off", "--turn-url", &url, "--turn-secret", SECRET])
            .await;
    let (_ws, joined) = server.joined_client("coturn").await;
    assert_eq!(joined.ice_servers.len(), 1);
    let (entry, good) = turn_entry(&joined.ice_servers);
    assert_eq!(entry.urls, [url]);

    // coturn takes a moment to listen.
    let probe = turn_client(coturn, &good).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::timeout(
        Duration::from_millis(500),
        probe.send_binding_request_to(&coturn.to_string()),
    )
    .await
    .map_or(true, |r| r.is_err())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "coturn did not start"
        );
    }

    let relay = allocate(&turn_client(coturn, &good).await)
        .await
        .expect("coturn accepts joined's credentials");
    let peer_socket = peer.udp(PEER);
    let peer_addr = peer_socket.local_addr().unwrap();
    relay_send(&relay, b"via coturn", peer_addr).await.unwrap();
    let (data, from) = recv(&peer_socket).await;
    assert_eq!(data, b"via coturn");
    peer_socket.send_to(b"back", from).await.unwrap();
    assert_eq!(relay_recv(&relay).await, (b"back".to_vec(), peer_addr));

    // Tampered: refused.
    let mut password = good.password.into_bytes();
    password[0] = if password[0] == b'A' { b'B' } else { b'A' };
    let tampered = Credentials {
        username: good.username.clone(),
        password: String::from_utf8(password).unwrap(),
    };
    let err = allocate(&turn_client(coturn, &tampered).await)
        .await
        .err()
        .unwrap();
    assert!(err.contains("401"), "{err}");
    let later = Credentials {
        username: good.username.replacen(':', "0:", 1),
        password: credentials::password_for(&secret(), &good.username),
    };
    let err = allocate(&turn_client(coturn, &later).await)
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("401"),
        "a username changed after signing: {err}"
    );
}

// ---- nonces ----

/// One raw STUN request (built with the `stun` crate) and its decoded answer.
async fn stun_request(
    socket: &UdpSocket,
    to: SocketAddr,
    setters: Vec<Box<dyn stun::message::Setter>>,
) -> stun::message::Message {
    let mut request = stun::message::Message::new();
    request.build(&setters).unwrap();
    socket.send_to(&request.raw, to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let mut answer = stun::message::Message {
        raw: buf[..n].to_vec(),
        ..Default::default()
    };
    answer.decode().unwrap();
    answer
}

/// An Allocate request: anonymous, or signed with `credentials` and `nonce`.
fn allocate_request(signed: Option<(&Credentials, &str)>) -> Vec<Box<dyn stun::message::Setter>> {
    use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
    use stun::message::{MessageType, CLASS_REQUEST, METHOD_ALLOCATE};
    use stun::textattrs::TextAttribute;
    let mut setters: Vec<Box<dyn stun::message::Setter>> = vec![
        Box::new(stun::agent::TransactionId::new()),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(turn::proto::reqtrans::RequestedTransport {
            protocol: turn::proto::PROTO_UDP,
        }),
    ];
    if let Some((credentials, nonce)) = signed {
        setters.push(Box::new(TextAttribute::new(
            ATTR_USERNAME,
            credentials.username.clone(),
        )));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, "noom".into())));
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())));
        setters.push(Box::new(
            stun::integrity::MessageIntegrity::new_long_term_integrity(
                credentials.username.clone(),
                "noom".into(),
                credentials.password.clone(),
            ),
        ));
    }
    setters
}

/// (error code, nonce) of an error answer.
fn challenge_of(answer: &stun::message::Message) -> (u16, String) {
    use stun::message::Getter;
    let mut code = stun::error_code::ErrorCodeAttribute::default();
    code.get_from(answer)
        .unwrap_or_else(|_| panic!("not an error answer: {answer}"));
    let nonce = stun::textattrs::TextAttribute::get_from_as(answer, stun::attributes::ATTR_NONCE)
        .map(|n| n.text)
        .unwrap_or_default();
    (code.code.0, nonce)
}

/// The `turn` crate remembers every nonce it issues; the gate makes it issue one and then
/// challenges everyone with that one, whatever they send.
#[tokio::test]
async fn challenges_reuse_the_nonce_the_library_issued() {
    isolate();
    let noom = Noom::start(&["--turn", "127.0.0.1:0", "--turn-secret", SECRET], true);
    let turn = noom.turn();
    let alice = minted(1);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Before any nonce exists, a signed request with a made-up nonce is the library's to answer:
    // 438 with the first nonce.
    let answer = stun_request(&socket, turn, allocate_request(Some((&alice, "made-up")))).await;
    let (code, first) = challenge_of(&answer);
    assert_eq!(code, 438);
    assert!(!first.is_empty());

    // From then on every challenge carries that same nonce: anonymous requests (401), other
    // nonces (438), bad passwords (401), from any client.
    for round in 0..20 {
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (code, nonce) = challenge_of(&stun_request(&other, turn, allocate_request(None)).await);
        assert_eq!(
            (code, nonce.as_str()),
            (401, first.as_str()),
            "round {round}"
        );
        let stale = format!("stale-{round}");
        let (code, nonce) = challenge_of(
            &stun_request(&other, turn, allocate_request(Some((&alice, &stale)))).await,
        );
        assert_eq!(
            (code, nonce.as_str()),
            (438, first.as_str()),
            "round {round}"
        );
    }
    let wrong = Credentials {
        username: alice.username.clone(),
        password: "d3JvbmcgcGFzc3dvcmQ=".into(),
    };
    let (code, nonce) =
        challenge_of(&stun_request(&socket, turn, allocate_request(Some((&wrong, &first)))).await);
    assert_eq!((code, nonce.as_str()), (401, first.as_str()));

    // And the nonce works: a signed Allocate with it succeeds.
    let answer = stun_request(&socket, turn, allocate_request(Some((&alice, &first)))).await;
    assert_eq!(
        answer.typ.class,
        stun::message::CLASS_SUCCESS_RESPONSE,
        "{answer}"
    );
    let text = noom.metrics().await;
    assert_eq!(metric(&text, "noom_turn_allocations_open"), 1.0);
    assert_eq!(
        metric(
            &text,
            "noom_turn_auth_failures_total{reason=\"bad-credentials\"}"
        ),
        1.0
    );
}

// ---- a real browser ----

/// Two RTCPeerConnections in one page, restricted to relay candidates (`iceTransportPolicy`,
/// for this test only: the app never sets it), using the TURN entry of a real `joined` with only
/// the `?transport=` URL given in the query. Reports through console lines starting "RESULT".
const RELAY_PAGE: &str = r#"<!doctype html><html><body><script>
const transport = new URLSearchParams(location.search).get('t');
const log = s => console.log('RESULT ' + s);
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onopen = () => ws.send(JSON.stringify({type: 'join', room: 'chromium-relay', name: 'Relay', version: 2}));
ws.onmessage = async (e) => {
  const m = JSON.parse(e.data);
  if (m.type !== 'joined') { log(`unexpected ${e.data} END`); return; }
  const iceServers = m.iceServers.filter(s => s.username).map(s => ({
    urls: s.urls.filter(u => u.endsWith('transport=' + transport)),
    username: s.username, credential: s.credential}));
  const config = {iceServers, iceTransportPolicy: 'relay'};
  const a = new RTCPeerConnection(config), b = new RTCPeerConnection(config);
  a.onicecandidate = e => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = e => e.candidate && a.addIceCandidate(e.candidate);
  b.ondatachannel = ev => { ev.channel.onmessage = async msg => {
    const stats = await b.getStats();
    let pair;
    stats.forEach(r => { if (r.type === 'transport') pair = stats.get(r.selectedCandidatePairId); });
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    log(`got ${msg.data} local=${local.candidateType}/${local.relayProtocol} remote=${remote.candidateType} END`);
  }; };
  const channel = a.createDataChannel('x');
  channel.onopen = () => channel.send('hello-through-turn');
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  setTimeout(() => log(`timeout ice=${a.iceConnectionState} END`), 15000);
};
</script></body></html>"#;

/// A headless Chromium on `url`, killed by PID on drop; its console lines starting "RESULT".
struct Chromium {
    child: Child,
    results: mpsc::Receiver<String>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--enable-logging=stderr", "--v=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium (Debian package chromium)");
        let (tx, results) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(result) = line.split("\"RESULT ").nth(1) {
                    let _ = tx.send(result.split(" END").next().unwrap_or(result).to_string());
                }
            }
        });
        Self {
            child,
            results,
            _profile: profile,
        }
    }

    /// The page's final report.
    fn report(&self) -> String {
        self.results
            .recv_timeout(Duration::from_secs(30))
            .expect("a report from the page")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real Chromium allocates on the built-in server, over UDP and over TCP, and its two peer
/// connections (both relayed: relay to relay on the same server) exchange data.
#[tokio::test]
async fn chromium_relays_through_the_built_in_turn_over_udp_and_tcp() {
    isolate();
    // Chromium gathers nothing on a machine whose only interface is loopback: the veth gives it
    // a network (the peer namespace itself is not used).
    let _peer = PeerNs::new();
    let noom = Noom::start(
        &["--turn", &format!("{NEAR}:0"), "--turn-secret", SECRET],
        true,
    );
    std::fs::write(noom.dist.path().join("relay.html"), RELAY_PAGE).unwrap();
    for transport in ["udp", "tcp"] {
        let chromium = Chromium::open(&format!("http://{}/relay.html?t={transport}", noom.http));
        let report = tokio::task::spawn_blocking(move || chromium.report())
            .await
            .unwrap();
        assert_eq!(
            report,
            format!("got hello-through-turn local=relay/{transport} remote=relay"),
            "over {transport}"
        );
    }
    let text = noom.metrics().await;
    assert!(
        metric(
            &text,
            "noom_turn_relayed_bytes_total{direction=\"to-peer\"}"
        ) > 0.0
    );
    assert_eq!(
        metric(
            &text,
            "noom_turn_auth_failures_total{reason=\"bad-credentials\"}"
        ),
        0.0
    );
}
