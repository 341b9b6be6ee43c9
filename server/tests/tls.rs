//! HTTPS over real TLS sockets: the `server` binary on 127.0.0.1 (and, in a network namespace
//! this test makes, on 198.18.0.0/15 addresses added to its `lo`), clients built on rustls
//! trusting only the certificate under test. Covers the self-signed certificate (kept across
//! restarts, its names, its fingerprints as printed), `--tls auto`, websockets over wss with the
//! origin check and per-IP limits, handshake timeouts and bounds, garbage instead of a
//! ClientHello, certificate files replaced on disk, `--http-redirect`, and ACME against
//! Debian's real `pebble`. Every process started here is killed by PID on drop.

mod common;

use std::io::{BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{offer, Client, Upgrade, INDEX_MARKER, TIMEOUT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use shared::ServerMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{tungstenite, MaybeTlsStream};

// ---------------------------------------------------------------------------------------------
// The server binary

/// A `server` process; killed (by PID) and reaped on drop.
struct Server {
    child: Child,
    port: u16,
    /// The first stdout line (`Noom is listening on ...`).
    first_line: String,
    /// The stdout lines printed with it (URLs, fingerprints, redirect).
    banner: Vec<String>,
    /// Everything on stderr so far (logs), filled by a reader thread.
    stderr: Arc<Mutex<String>>,
    _dist: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary with `args` (plus `--ice-server none`, `--turn off` unless `args` says
    /// otherwise — these tests are about TLS, and TURN's fixed port 3478 would collide between
    /// servers started in parallel — and a fake `--dist`) and reads its first stdout line and
    /// the lines printed with it.
    fn start(args: &[&str]) -> Self {
        Self::start_in(common::fake_dist(), args)
    }

    /// Like [`Server::start`], serving `dist` as the app.
    fn start_in(dist: tempfile::TempDir, args: &[&str]) -> Self {
        let turn_given = args.iter().any(|a| a.starts_with("--turn"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--ice-server", "none", "--dist"])
            .arg(dist.path())
            .args(if turn_given {
                &[][..]
            } else {
                &["--turn", "off"][..]
            })
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            port: 0,
            first_line: String::new(),
            banner: Vec::new(),
            stderr,
            _dist: dist,
        };
        server.first_line = rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            panic!("no first stdout line in time; stderr:\n{}", server.stderr())
        });
        // The banner is written in one go right after the first line.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            server.banner.push(line);
        }
        server.port = server
            .first_line
            .rsplit_once(':')
            .and_then(|(_, port)| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {:?}", server.first_line));
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The value printed after `prefix` in the banner.
    fn banner_value(&self, prefix: &str) -> String {
        self.banner
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {:#?}", self.banner))
            .trim()
            .to_string()
    }

    fn fingerprint(&self) -> String {
        self.banner_value("Certificate SHA-256 fingerprint: ")
    }

    fn spki(&self) -> String {
        self.banner_value("Certificate public key SHA-256 (SPKI, base64): ")
    }

    fn addr(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), self.port)
    }
}

/// Runs the binary with `args`, expecting it to refuse them: its exit status and stderr.
fn refused(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server binary");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server with {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

// ---------------------------------------------------------------------------------------------
// TLS clients

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting only `roots` (HTTP/1.1 ALPN, as browsers also offer).
fn client_config(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("add trust anchor");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).expect("server name")
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr`, verifying the certificate for `name` (a DNS name or an IP).
async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::clone(config))
        .connect(server_name(name), tcp)
        .await
}

/// The leaf certificate the server presented on `stream`.
fn presented(stream: &ClientTls) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

/// `AB:CD:...` of the SHA-256 of `der` (computed here independently of the server).
fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One HTTP/1.1 request over a fresh TLS connection; the whole response as text.
async fn https_get(addr: SocketAddr, name: &str, config: &Arc<ClientConfig>, path: &str) -> String {
    let mut tls = tokio::time::timeout(TIMEOUT, tls_connect(addr, name, config))
        .await
        .expect("TLS connect timed out")
        .unwrap_or_else(|err| panic!("TLS connect to {addr} as {name}: {err}"));
    let host = if name.contains(':') {
        format!("[{name}]:{}", addr.port())
    } else {
        format!("{name}:{}", addr.port())
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut response))
        .await
        .expect("HTTPS response timed out")
        .ok();
    String::from_utf8_lossy(&response).into_owned()
}

/// A `/metrics` value over HTTPS.
async fn metric(addr: SocketAddr, name: &str, config: &Arc<ClientConfig>, series: &str) -> f64 {
    let response = https_get(addr, name, config, "/metrics").await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    common::Metrics(body.to_string()).value(series)
}

/// A websocket over TLS to `addr` (as `name`), with extra request headers, optionally from
/// the local address `from`.
async fn wss(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> Upgrade {
    let mut request = format!("wss://{name}:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    for (header, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(header.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(ip) = from {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        let tcp = socket.connect(addr).await.expect("tcp connect");
        let tls = TlsConnector::from(Arc::clone(config))
            .connect(server_name(name), tcp)
            .await
            .expect("TLS handshake");
        tokio_tungstenite::client_async(request, MaybeTlsStream::Rustls(tls)).await
    };
    match tokio::time::timeout(TIMEOUT, attempt)
        .await
        .expect("wss connect timed out")
    {
        Ok((ws, _)) => Upgrade::Connected(Box::new(Client { ws })),
        Err(tungstenite::Error::Http(response)) => Upgrade::Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        },
        Err(err) => panic!("wss upgrade failed: {err}"),
    }
}

/// Reads from a raw socket until the server closes it; how long that took and what it sent.
async fn until_closed(stream: &mut TcpStream, wait: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + wait),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!("connection still open after {wait:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A self-signed certificate for `names` (DNS names) and its key, as PEM.
fn self_signed_pair(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .self_signed(&key)
            .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// Writes `bytes` to `path` by renaming a temporary file over it (as certbot's symlink swap
/// and most tools make a change appear at once).
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn host_label() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim().to_ascii_lowercase();
    let label = host.split('.').next()?.to_string();
    (!label.is_empty() && label != "localhost").then_some(label)
}

// ---------------------------------------------------------------------------------------------
// Self-signed, auto, fingerprints

#[tokio::test]
async fn self_signed_certificate_is_made_once_and_kept_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("noom-data");
    let data_arg = data_dir.to_str().unwrap();
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--tls",
        "self-signed",
        "--data-dir",
        data_arg,
    ];

    let first = Server::start(&args);
    assert_eq!(
        first.first_line,
        format!("Noom is listening on https://127.0.0.1:{}", first.port)
    );
    let port = first.port;
    assert!(
        first
            .banner
            .contains(&format!("Open: https://localhost:{port}/")),
        "{:#?}",
        first.banner
    );
    let printed = first.fingerprint();
    let spki = first.spki();

    // A client that trusts exactly the kept certificate verifies it for every name it should
    // carry: localhost, 127.0.0.1 (an IP SAN), and <host>.local.
    let kept_cert = data_dir.join("tls-self-signed.crt");
    let trust = client_config(&pem_certs(&kept_cert));
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(label) = host_label() {
        names.push(format!("{label}.local"));
    }
    for name in &names {
        let stream = tls_connect(first.addr("127.0.0.1"), name, &trust)
            .await
            .unwrap_or_else(|err| panic!("the certificate does not verify for {name}: {err}"));
        let der = presented(&stream);
        assert_eq!(fingerprint(&der), printed, "printed fingerprint");
        // The printed SPKI hash is the base64 SHA-256 of the SubjectPublicKeyInfo.
        let info = server::tls::CertInfo::from_der(&der).unwrap();
        assert_eq!(info.spki_sha256_base64, spki);
    }
    // A name it does not carry is refused by a verifying client.
    assert!(
        tls_connect(first.addr("127.0.0.1"), "other.example", &trust)
            .await
            .is_err()
    );
    // The app is served over it.
    let page = https_get(first.addr("127.0.0.1"), "localhost", &trust, "/r/standup").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(INDEX_MARKER));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        assert_eq!(mode(&data_dir.join("tls-self-signed.key")), 0o600);
    }
    // The key never reaches the logs.
    let key_pem = std::fs::read_to_string(data_dir.join("tls-self-signed.key")).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!first.stderr().contains(&key_body[..40]));
    drop(first);

    // Restarted with the same data directory: the same certificate, so a browser that trusted
    // it once is not asked again.
    let second = Server::start(&args);
    assert_eq!(second.fingerprint(), printed);
    assert_eq!(second.spki(), spki);
    let stream = tls_connect(second.addr("127.0.0.1"), "localhost", &trust)
        .await
        .expect("the kept certificate still verifies");
    assert_eq!(fingerprint(&presented(&stream)), printed);
    assert!(
        second
            .stderr()
            .contains("using the kept self-signed certificate"),
        "{}",
        second.stderr()
    );
}

#[tokio::test]
async fn auto_on_loopback_is_plain_http_and_keeps_no_key() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("untouched");
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        server.first_line,
        format!("Noom is listening on http://127.0.0.1:{}", server.port)
    );
    assert!(server.banner.is_empty(), "{:#?}", server.banner);
    let body = reqwest::get(format!("http://127.0.0.1:{}/healthz", server.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "ok");
    // Plain HTTP: a TLS ClientHello gets no certificate.
    let trust = client_config(&[]);
    assert!(tls_connect(server.addr("127.0.0.1"), "localhost", &trust)
        .await
        .is_err());
    // No certificate, no key: the only file is the resume-token secret (so that a restart keeps
    // everyone's seat), owner-only.
    let written: Vec<String> = std::fs::read_dir(&data_dir)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        written,
        ["resume-secret"],
        "plain HTTP on loopback wrote {written:?} in {data_dir:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join("resume-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "resume-secret mode {mode:o}");
    }
}

#[test]
fn contradictory_tls_flags_are_refused_before_binding() {
    for (args, needle) in [
        (
            vec!["--tls", "off", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            "--tls off cannot be combined with --tls-cert",
        ),
        (
            vec![
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--acme",
                "a.example",
            ],
            "cannot be combined with --acme",
        ),
        (vec!["--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
        (
            vec!["--addr", "127.0.0.1:0", "--http-redirect", "127.0.0.1:0"],
            "--http-redirect needs HTTPS",
        ),
        (vec!["--acme", "*.example.org"], "no wildcard"),
    ] {
        let (code, stderr) = refused(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Missing certificate files: a clear error naming the file.
    let (code, stderr) = refused(&[
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}

#[test]
fn help_documents_every_tls_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--tls <MODE>",
        "[env: NOOM_TLS=]",
        "self-signed",
        "--tls-cert <FILE>",
        "[env: NOOM_TLS_CERT=]",
        "--tls-key <FILE>",
        "--acme <DOMAIN>",
        "[env: NOOM_ACME=]",
        "--acme-email <EMAIL>",
        "--acme-directory <URL>",
        "--acme-ca-root <FILE>",
        "--http-redirect <ADDR>",
        "--tls-handshake-timeout-ms",
        "--max-tls-handshakes",
        "letsencrypt.org",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

// ---------------------------------------------------------------------------------------------
// The websocket, the origin check, the limits and /metrics over TLS

#[tokio::test]
async fn websockets_relay_over_wss_with_the_origin_check_and_per_ip_limits() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--tls",
        "self-signed",
        "--max-connections-per-ip",
        "2",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let addr = server.addr("127.0.0.1");
    let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));
    let own_origin = format!("https://127.0.0.1:{}", server.port);

    // Two browsers on the page's own https origin join and relay; `from` is stamped.
    let mut a = wss(addr, "127.0.0.1", &trust, &[("origin", &own_origin)], None)
        .await
        .connected();
    let mut b = wss(addr, "127.0.0.1", &trust, &[("origin", &own_origin)], None)
        .await
        .connected();
    let a_id = a.join("tls-room").await.you;
    let b_joined = b.join("tls-room").await;
    assert_eq!(b_joined.peer_ids(), [a_id]);
    assert_eq!(common::peer_joined(&a.recv().await), b_joined.you);
    a.send(&offer(b_joined.you, "v=0 over tls")).await;
    match b.recv().await {
        ServerMessage::Description {
            from, description, ..
        } => {
            assert_eq!(from, a_id);
            assert_eq!(description.sdp, "v=0 over tls");
        }
        other => panic!("expected the offer, got {other:?}"),
    }

    // A page on another site is refused (403), over TLS as over HTTP.
    let (status, body) = wss(
        addr,
        "127.0.0.1",
        &trust,
        &[("origin", "https://evil.example")],
        None,
    )
    .await
    .refused();
    assert_eq!(status, 403, "{body}");

    // The per-IP limit sees the client's own address through TLS: 127.0.0.1 has two open,
    // the third is refused, while 127.0.0.2 still gets in.
    let (status, _) = wss(addr, "127.0.0.1", &trust, &[], None).await.refused();
    assert_eq!(status, 429);
    let other_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let c = wss(addr, "127.0.0.1", &trust, &[], Some(other_ip))
        .await
        .connected();

    // /metrics over HTTPS counts all of it; handshakes are counted and none failed.
    let text = https_get(addr, "127.0.0.1", &trust, "/metrics").await;
    let metrics = common::Metrics(text.split("\r\n\r\n").nth(1).unwrap().to_string());
    assert_eq!(metrics.value("noom_connections_open"), 3.0);
    assert_eq!(
        metrics.value("noom_rejections_total{reason=\"origin\"}"),
        1.0
    );
    assert_eq!(
        metrics.value("noom_rejections_total{reason=\"per-ip\"}"),
        1.0
    );
    assert!(metrics.value("noom_tls_handshakes_total") >= 6.0);
    assert_eq!(
        metrics.value("noom_tls_handshake_failures_total{reason=\"error\"}"),
        0.0
    );
    assert!(metrics.value("noom_tls_certificate_expiry_timestamp_seconds") > 1.7e9);
    drop((a, b, c));
}

// ---------------------------------------------------------------------------------------------
// Handshakes: bounded in time and number, garbage refused

#[tokio::test]
async fn a_stalled_handshake_is_dropped_after_the_timeout_and_blocks_no_one() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--tls",
        "self-signed",
        "--tls-handshake-timeout-ms",
        "2000",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let addr = server.addr("127.0.0.1");
    let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));

    // One connects and says nothing; another sends half a ClientHello and stalls.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let stalled_at = Instant::now();

    // Meanwhile a real client connects and is served at once.
    let page = https_get(addr, "localhost", &trust, "/healthz").await;
    assert!(page.ends_with("ok\n"), "{page}");
    assert!(
        stalled_at.elapsed() < Duration::from_millis(1500),
        "a good client waited {:?} behind stalled handshakes",
        stalled_at.elapsed()
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(silent.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent connection was closed before its timeout"
    );

    // Both stalled connections are closed once the timeout has passed, not before.
    for stream in [&mut silent, &mut half] {
        let (_, _) = until_closed(stream, Duration::from_secs(6)).await;
    }
    let waited = stalled_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "stalled handshakes closed after {waited:?}"
    );
    assert_eq!(
        metric(
            addr,
            "localhost",
            &trust,
            "noom_tls_handshake_failures_total{reason=\"timeout\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(addr, "localhost", &trust, "noom_tls_handshakes_in_flight").await,
        // The scrape's own connection is handed over before it is answered.
        0.0
    );
}

#[tokio::test]
async fn handshakes_in_flight_are_bounded_and_the_rest_wait_their_turn() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--tls",
        "self-signed",
        "--tls-handshake-timeout-ms",
        "1500",
        "--max-tls-handshakes",
        "2",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let addr = server.addr("127.0.0.1");
    let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));
    // Warm up: one full handshake works.
    assert!(https_get(addr, "localhost", &trust, "/healthz")
        .await
        .ends_with("ok\n"));

    // Two silent connections take both handshake places.
    let _s1 = TcpStream::connect(addr).await.unwrap();
    let _s2 = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    // The third waits in the listen queue until a place frees (the first timeout), then
    // completes normally.
    let stream = tokio::time::timeout(
        Duration::from_secs(8),
        tls_connect(addr, "localhost", &trust),
    )
    .await
    .expect("the waiting handshake never completed")
    .expect("the waiting handshake failed");
    let waited = start.elapsed();
    drop(stream);
    assert!(
        waited >= Duration::from_millis(1000),
        "the third handshake did not wait for a place ({waited:?}): no bound"
    );
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    // Both silent connections time out; the second one's deadline may still be a few
    // milliseconds away when the third handshake is through (it was accepted a little later).
    let series = "noom_tls_handshake_failures_total{reason=\"timeout\"}";
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut timeouts = metric(addr, "localhost", &trust, series).await;
    while timeouts < 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        timeouts = metric(addr, "localhost", &trust, series).await;
    }
    assert_eq!(timeouts, 2.0);
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_refused_at_once() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--tls",
        "self-signed",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let addr = server.addr("127.0.0.1");
    // Plain HTTP to the HTTPS port, and random bytes.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (took, got) = until_closed(&mut plain, Duration::from_secs(3)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "answered in plain HTTP: {got:?}"
    );
    assert!(took < Duration::from_secs(3));
    let mut noise = TcpStream::connect(addr).await.unwrap();
    noise.write_all(&[0xde; 300]).await.unwrap();
    let (_, got) = until_closed(&mut noise, Duration::from_secs(3)).await;
    // At most a TLS alert (content type 21), never data.
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");

    let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));
    assert_eq!(
        metric(
            addr,
            "localhost",
            &trust,
            "noom_tls_handshake_failures_total{reason=\"error\"}"
        )
        .await,
        2.0
    );
    assert!(https_get(addr, "localhost", &trust, "/healthz")
        .await
        .ends_with("ok\n"));
}

// ---------------------------------------------------------------------------------------------
// Certificate files

#[tokio::test]
async fn replaced_certificate_files_are_served_on_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("fullchain.pem");
    let key_path = dir.path().join("privkey.pem");
    let (cert_a, key_a, der_a) = self_signed_pair(&["localhost", "noom.test"]);
    let (cert_b, key_b, der_b) = self_signed_pair(&["localhost", "noom.test"]);
    std::fs::write(&cert_path, &cert_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    let addr = server.addr("127.0.0.1");
    assert_eq!(server.fingerprint(), fingerprint(&der_a));
    assert!(
        server
            .banner
            .contains(&format!("Open: https://noom.test:{}/", server.port)),
        "{:#?}",
        server.banner
    );
    let trust = client_config(&[der_a.clone(), der_b.clone()]);
    let served = |der: CertificateDer<'static>| fingerprint(&der);
    let stream = tls_connect(addr, "noom.test", &trust).await.unwrap();
    assert_eq!(served(presented(&stream)), fingerprint(&der_a));

    // certbot renews: key and certificate replaced on disk.
    replace_file(&key_path, key_b.as_bytes());
    replace_file(&cert_path, cert_b.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = tls_connect(addr, "noom.test", &trust).await.unwrap();
        if served(presented(&stream)) == fingerprint(&der_b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still serving the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metric(
            addr,
            "noom.test",
            &trust,
            "noom_tls_certificate_reloads_total"
        )
        .await
            >= 1.0
    );

    // A broken new file: logged, counted, and the last good certificate stays. (The renewal
    // above may already have counted a failure: a poll between the key and the certificate.)
    let failures = "noom_tls_certificate_reload_failures_total";
    let before = metric(addr, "noom.test", &trust, failures).await;
    replace_file(
        &cert_path,
        b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, "noom.test", &trust, failures).await <= before {
        assert!(
            Instant::now() < deadline,
            "the broken file was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream = tls_connect(addr, "noom.test", &trust).await.unwrap();
    assert_eq!(served(presented(&stream)), fingerprint(&der_b));
    assert!(
        server
            .stderr()
            .contains("still serving the previous certificate"),
        "{}",
        server.stderr()
    );
    // Keys never reach the log.
    let stderr = server.stderr();
    for key in [&key_a, &key_b] {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!stderr.contains(&body[..40]));
    }
}

// ---------------------------------------------------------------------------------------------
// --http-redirect

#[tokio::test]
async fn http_redirect_answers_308_to_the_https_url() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1:0",
        "--tls",
        "self-signed",
        "--http-redirect",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let redirect_line = server.banner_value("Redirecting http://");
    let redirect_port: u16 = redirect_line
        .strip_prefix("127.0.0.1:")
        .and_then(|rest| rest.strip_suffix(" to HTTPS"))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("bad redirect line {redirect_line:?}"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{redirect_port}/r/standup?lang=fr");
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 308);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("https://127.0.0.1:{}/r/standup?lang=fr", server.port)
    );
    // Another host name the person typed is kept, and so is a POST's method (308).
    let response = http
        .post(format!("http://127.0.0.1:{redirect_port}/x"))
        .header("host", format!("localhost:{redirect_port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://localhost:{}/x", server.port).as_str()
    );
    // Following it lands on the app over HTTPS.
    let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));
    let page = https_get(
        server.addr("127.0.0.1"),
        "127.0.0.1",
        &trust,
        "/r/standup?lang=fr",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(INDEX_MARKER));
}

// ---------------------------------------------------------------------------------------------
// Non-loopback addresses, in a network namespace of this test's own

/// Runs `body` on a thread moved into a new network namespace (`unshare(CLONE_NEWNET)`, which
/// needs root, as CI has) whose `lo` is up and carries `addrs` (198.18.0.0/15). Processes started
/// from that thread live in the namespace too; it vanishes when they and the thread are gone.
fn in_private_network<F>(addrs: &[&str], body: F)
where
    F: FnOnce() + Send + 'static,
{
    let addrs: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace; no memory is involved.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed ({}): this test needs root, as CI has",
            std::io::Error::last_os_error()
        );
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["link", "set", "lo", "up"]);
        for addr in &addrs {
            ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        body();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn auto_on_other_addresses_is_https_naming_every_address_listened_on() {
    in_private_network(&["198.18.0.1", "198.18.0.2"], || {
        block_on(async {
            let data = tempfile::tempdir().unwrap();
            let data_arg = data.path().to_str().unwrap().to_string();
            // Default --tls (auto) on one LAN address.
            let one = Server::start(&["--addr", "198.18.0.1:0", "--data-dir", &data_arg]);
            assert_eq!(
                one.first_line,
                format!("Noom is listening on https://198.18.0.1:{}", one.port)
            );
            assert_eq!(
                one.banner[0],
                format!("Open: https://198.18.0.1:{}/", one.port)
            );
            let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));
            let page = https_get(one.addr("198.18.0.1"), "198.18.0.1", &trust, "/healthz").await;
            assert!(page.ends_with("ok\n"), "{page}");
            let first_fingerprint = one.fingerprint();
            drop(one);

            // On every interface: the kept certificate lacks 198.18.0.2, so a new one is made
            // (and the log says why) naming every address, the old ones kept.
            let all = Server::start(&["--addr", "0.0.0.0:0", "--data-dir", &data_arg]);
            assert!(all
                .first_line
                .starts_with("Noom is listening on https://0.0.0.0:"));
            assert_ne!(all.fingerprint(), first_fingerprint);
            assert!(
                all.stderr().contains("does not name every address"),
                "{}",
                all.stderr()
            );
            for ip in ["198.18.0.1", "198.18.0.2"] {
                assert!(
                    all.banner
                        .contains(&format!("Open: https://{ip}:{}/", all.port)),
                    "{:#?}",
                    all.banner
                );
            }
            let trust = client_config(&pem_certs(&data.path().join("tls-self-signed.crt")));
            for ip in ["198.18.0.1", "198.18.0.2", "127.0.0.1"] {
                let stream = tls_connect(all.addr(ip), ip, &trust)
                    .await
                    .unwrap_or_else(|err| panic!("not valid for {ip}: {err}"));
                assert_eq!(fingerprint(&presented(&stream)), all.fingerprint());
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// ACME against Debian's pebble

/// pebble and pebble-challtestsrv, killed by PID on drop.
struct Pebble {
    children: Vec<Child>,
    /// The ACME directory URL.
    directory: String,
    /// The CA certificate of pebble's own HTTPS (what `--acme-ca-root` takes).
    https_ca: PathBuf,
    management: SocketAddr,
    https_ca_der: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `tls_port`, resolving every name to 127.0.0.1
    /// through pebble-challtestsrv's DNS.
    fn start(tls_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // pebble's HTTPS: a CA of ours and a leaf for 127.0.0.1 signed by it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test API CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(path("key.pem"), leaf_key.serialize_pem()).unwrap();

        let (api, management, dns) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"{{"pebble": {{
                "listenAddress": "127.0.0.1:{api}",
                "managementListenAddress": "127.0.0.1:{management}",
                "certificate": "{cert}",
                "privateKey": "{key}",
                "httpPort": {http},
                "tlsPort": {tls_port},
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }}}}"#,
            cert = path("cert.pem").display(),
            key = path("key.pem").display(),
            http = free_port(),
        );
        std::fs::write(path("pebble.json"), config).unwrap();

        let mut pebble = Self {
            children: Vec::new(),
            directory: format!("https://127.0.0.1:{api}/dir"),
            https_ca: path("ca.pem"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            https_ca_der: ca.der().clone(),
            _dir: dir,
        };
        let quiet = |cmd: &mut Command| {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut dns_server = Command::new("/usr/bin/pebble-challtestsrv");
        dns_server.args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", free_port()),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]);
        quiet(&mut dns_server);
        pebble
            .children
            .push(dns_server.spawn().expect("start pebble-challtestsrv"));
        let mut ca_server = Command::new("/usr/bin/pebble");
        ca_server
            .args(["-config"])
            .arg(pebble._dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // Validate at once, and do not reject 5% of nonces at random (a test of the client's
            // retries that rustls-acme answers with a backoff of seconds, not of our server).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        quiet(&mut ca_server);
        pebble
            .children
            .push(ca_server.spawn().expect("start pebble"));
        // Ready when its API port accepts connections.
        let deadline = Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    /// pebble's issuing root (from its management API), to trust the certificates it issues.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(
                (*client_config(std::slice::from_ref(&self.https_ca_der))).clone(),
            )
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        let pem = http
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .expect("GET /roots/0")
            .text()
            .await
            .unwrap();
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM root")
    }
}

#[tokio::test]
async fn acme_certificate_from_pebble_is_obtained_served_and_cached() {
    let port = free_port();
    let pebble = Pebble::start(port);
    let data = tempfile::tempdir().unwrap();
    let addr_arg = format!("127.0.0.1:{port}");
    let directory = pebble.directory.clone();
    // A copy that outlives pebble's directory, for the restart below.
    let keep = tempfile::tempdir().unwrap();
    std::fs::copy(&pebble.https_ca, keep.path().join("pebble-api-ca.pem")).unwrap();
    let ca_root = keep
        .path()
        .join("pebble-api-ca.pem")
        .to_str()
        .unwrap()
        .to_string();
    let args = [
        "--addr",
        addr_arg.as_str(),
        "--acme",
        "noom.test",
        "--acme-email",
        "ops@noom.test",
        "--acme-directory",
        directory.as_str(),
        "--acme-ca-root",
        ca_root.as_str(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ];
    let server = Server::start(&args);
    assert_eq!(
        server.first_line,
        format!("Noom is listening on https://127.0.0.1:{port}")
    );
    assert!(
        server
            .banner
            .contains(&format!("Open: https://noom.test:{port}/")),
        "{:#?}",
        server.banner
    );
    let root = pebble.issuing_root().await;
    let trust = client_config(&[root]);
    let addr = server.addr("127.0.0.1");

    // Until the order completes, handshakes fail; then a client trusting pebble's root
    // verifies the certificate for noom.test without any exception.
    let deadline = Instant::now() + Duration::from_secs(60);
    let issued = loop {
        match tls_connect(addr, "noom.test", &trust).await {
            Ok(stream) => break presented(&stream),
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "no certificate from pebble within 60 s (last error: {err}); server log:\n{}",
                    server.stderr()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let info = server::tls::CertInfo::from_der(&issued).unwrap();
    assert_eq!(info.dns_names, ["noom.test"]);
    let page = https_get(addr, "noom.test", &trust, "/r/standup").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(INDEX_MARKER));
    // The CA validated over our HTTPS port (TLS-ALPN-01), and nothing failed.
    assert!(metric(addr, "noom.test", &trust, "noom_tls_acme_challenges_total").await >= 1.0);
    assert_eq!(
        metric(addr, "noom.test", &trust, "noom_tls_acme_errors_total").await,
        0.0
    );
    assert!(server.stderr().contains("ACME: serving the certificate"));

    // Account and certificate are cached in the data directory, owner-only.
    let mut cached: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "resume-secret")
        .collect();
    cached.sort();
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert!(cached[0].starts_with("acme-account-"), "{cached:?}");
    assert!(cached[1].starts_with("acme-cert-") && cached[1].ends_with(".pem"));
    #[cfg(unix)]
    for name in &cached {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    drop(server);

    // With pebble gone, a restart serves the cached certificate at once.
    let root_for_later = trust.clone();
    drop(pebble);
    let again = Server::start(&args);
    let stream = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(stream) =
                tls_connect(again.addr("127.0.0.1"), "noom.test", &root_for_later).await
            {
                break stream;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the cached certificate was not served after a restart");
    assert_eq!(fingerprint(&presented(&stream)), fingerprint(&issued));
}

// ---------------------------------------------------------------------------------------------
// Chromium with the printed SPKI hash

#[test]
fn chromium_trusting_the_printed_spki_gets_a_secure_context_on_a_lan_address() {
    in_private_network(&["198.18.0.1"], || {
        let dist = tempfile::tempdir().unwrap();
        std::fs::write(
            dist.path().join("index.html"),
            "<!doctype html><html><body><div id=out>not run</div><script>\
             document.getElementById('out').textContent = 'secure=' + window.isSecureContext \
             + ' media=' + (typeof navigator.mediaDevices);</script></body></html>\n",
        )
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        let server = Server::start_in(
            dist,
            &[
                "--addr",
                "198.18.0.1:0",
                "--data-dir",
                data.path().to_str().unwrap(),
            ],
        );
        let url = format!("https://198.18.0.1:{}/r/standup", server.port);
        let chromium = |profile: &str, extra: Option<String>| -> String {
            let profile = data.path().join(profile);
            let mut cmd = Command::new("/usr/bin/chromium");
            cmd.args(["--headless=new", "--no-sandbox", "--disable-gpu"])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .args(["--dump-dom", &url])
                .stdin(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start chromium");
            let mut out = String::new();
            let mut stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let _ = stdout.read_to_string(&mut out);
                out
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("chromium did not finish");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            reader.join().unwrap()
        };
        let trusted = chromium(
            "trusting",
            Some(format!(
                "--ignore-certificate-errors-spki-list={}",
                server.spki()
            )),
        );
        assert!(
            trusted.contains("secure=true media=object"),
            "with the SPKI flag: {trusted}"
        );
        // Without it, the same page does not load: the certificate is refused.
        let refused = chromium("plain", None);
        assert!(
            !refused.contains("secure=true"),
            "without the flag: {refused}"
        );
    });
}
