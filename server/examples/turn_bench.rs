//! The built-in TURN relay's CPU cost per Mbit/s relayed. Not a test: it prints figures.
//!
//! It starts the server binary (release build) with TURN on loopback, makes two allocations
//! with webrtc-rs's TURN client, the way two browsers that can only reach the server do, and
//! sends fixed-size datagrams from A through both relays to B at a fixed rate for a fixed time;
//! B echoes each one back the same way. Every payload byte crosses the server twice per
//! direction (client A -> relay A -> relay B -> client B), so the figures are for a call where
//! both ends are relayed; a call with one relayed end costs about half. The server's CPU time
//! comes from /proc/PID/stat; relayed bytes from its own /metrics (`to-peer`).
//!
//! ```sh
//! cargo build --release -p server
//! cargo run --release -p server --example turn_bench -- [--server target/release/server]
//!     [--rates 1,5,10,20] [--secs 10] [--size 1000]
//! ```
//! (`--rates` in Mbit/s of payload per direction.) Runs on loopback, needs no root.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use server::datadir::Secret;
use server::turn::credentials;
use shared::PeerId;
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const SECRET: &str = "turn-bench-secret-0123456789";

struct Args {
    server: String,
    rates: Vec<f64>,
    secs: u64,
    size: usize,
}

fn args() -> Args {
    let mut out = Args {
        server: "target/release/server".into(),
        rates: vec![1.0, 5.0, 10.0, 20.0],
        secs: 10,
        size: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => out.server = value,
            "--rates" => {
                out.rates = value
                    .split(',')
                    .map(|r| r.parse().expect("--rates: numbers"))
                    .collect()
            }
            "--secs" => out.secs = value.parse().expect("--secs: a number"),
            "--size" => out.size = value.parse().expect("--size: bytes"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(out.size >= 16 && out.size <= 1400, "--size: 16..=1400");
    out
}

/// User + system CPU seconds of process `pid`, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which may contain spaces) are space-separated; utime and stime
    // are the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

async fn relayed_bytes(http: SocketAddr) -> f64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("noom_turn_relayed_bytes_total{direction=\"to-peer\"} ")?
                .parse()
                .ok()
        })
        .expect("the to-peer series")
}

async fn allocate(turn: SocketAddr, peer: u64) -> (Client, impl Conn) {
    let secret = Secret::from_text(SECRET).unwrap();
    let creds = credentials::mint(
        &secret,
        PeerId::new(peer),
        SystemTime::now(),
        credentials::LIFETIME,
    );
    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = Client::new(ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: turn.to_string(),
        username: creds.username,
        password: creds.password,
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let relay = client.allocate().await.expect("allocate");
    (client, relay)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let dir = std::env::temp_dir().join(format!("noom-turn-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("dist")).unwrap();
    std::fs::write(dir.join("dist/index.html"), "bench").unwrap();
    let mut child = Command::new(&args.server)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--turn",
            "127.0.0.1:0",
            "--ice-server",
            "none",
        ])
        .args(["--turn-secret", SECRET])
        .args(["--dist", dir.join("dist").to_str().unwrap()])
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (cargo build --release -p server)",
                args.server
            )
        });
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let http: SocketAddr = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("Noom is listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    let turn_line = lines.next().unwrap().unwrap();
    let turn: SocketAddr = turn_line
        .split(" and tcp ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();

    let (_a_client, a) = allocate(turn, 1).await;
    let (_b_client, b) = allocate(turn, 2).await;
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // Permissions both ways (and channel bindings, made in the background by the client).
    a.send_to(b"hello", b_addr).await.unwrap();
    b.send_to(b"hello", a_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let a = Arc::new(a);
    let b = Arc::new(b);
    // B echoes everything back to A's relay.
    tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, _)) = b.recv_from(&mut buf).await {
                let _ = b.send_to(&buf[..n], a_addr).await;
            }
        }
    });
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    tokio::spawn({
        let (a, received, rtts) = (Arc::clone(&a), Arc::clone(&received), Arc::clone(&rtts));
        async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, _)) = a.recv_from(&mut buf).await {
                if n >= 16 && &buf[..4] == b"NOOM" {
                    let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                    let now = epoch.elapsed().as_micros() as u64;
                    rtts.lock().unwrap().push(now.saturating_sub(sent));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    println!(
        "TURN relay cost, both ends relayed, {} B datagrams, {} s per rate, echo (A->B->A)",
        args.size, args.secs
    );
    println!(
        "{:>10} {:>10} {:>10} {:>8} {:>12} {:>14} {:>9} {:>9}",
        "offered", "relayed", "packets", "lost", "server CPU", "CPU s per", "rtt p50", "rtt p99"
    );
    println!(
        "{:>10} {:>10} {:>10} {:>8} {:>12} {:>14} {:>9} {:>9}",
        "Mbit/s", "Mbit/s", "sent", "", "(cores)", "Mbit relayed", "ms", "ms"
    );
    for rate in &args.rates {
        let pps = rate * 1e6 / 8.0 / args.size as f64;
        let interval = Duration::from_secs_f64(1.0 / pps);
        received.store(0, Ordering::Relaxed);
        rtts.lock().unwrap().clear();
        let bytes0 = relayed_bytes(http).await;
        let cpu0 = cpu_secs(pid);
        let start = Instant::now();
        let mut sent: u64 = 0;
        let mut payload = vec![0u8; args.size];
        payload[..4].copy_from_slice(b"NOOM");
        while start.elapsed() < Duration::from_secs(args.secs) {
            // Catch up in bursts: a datagram is due every `interval`.
            let due = (start.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64;
            while sent < due {
                payload[8..16].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_le_bytes());
                let _ = a.send_to(&payload, b_addr).await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu = cpu_secs(pid) - cpu0;
        let bytes = relayed_bytes(http).await - bytes0;
        let got = received.load(Ordering::Relaxed);
        let mut rtt = rtts.lock().unwrap().clone();
        rtt.sort_unstable();
        let pct = |p: f64| {
            rtt.get(((rtt.len() as f64 * p) as usize).min(rtt.len().saturating_sub(1)))
                .map_or(f64::NAN, |us| *us as f64 / 1000.0)
        };
        // Payload relay sockets sent, both directions; per direction is half.
        let mbps = bytes * 8.0 / 1e6 / elapsed;
        println!(
            "{:>10.1} {:>10.2} {:>10} {:>8} {:>12.3} {:>14.4} {:>9.2} {:>9.2}",
            rate,
            mbps,
            sent,
            sent.saturating_sub(got),
            cpu / elapsed,
            cpu / elapsed / mbps,
            pct(0.5),
            pct(0.99),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
