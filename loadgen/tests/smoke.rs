//! Every shape at a tiny size against the real server, started in this process on a port-0
//! loopback listener, with real worker processes (this crate's own binary). Needs neither node
//! nor any network beyond loopback; takes a few seconds.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use loadgen::coord::{self, IdleParams, Settings, StormParams, TrafficParams};
use loadgen::servers::{self, Target};
use loadgen::wire::Dialect;

/// The server with every limit at its generous benchmark value, exactly as `loadgen all` would
/// set it from `--help`.
fn server_config() -> server::Config {
    let flags: Vec<String> = server::Config::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let (limits, _) = servers::limit_args(&flags, &[]);
    let mut args = vec!["server".to_string(), "--ice-server".into(), "none".into()];
    args.extend([
        "--resume-secret".into(),
        "loadgen smoke test resume secret".into(),
    ]);
    args.extend(limits);
    server::Config::parse_from(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_runs_at_tiny_size() {
    let state = server::AppState::new(&server_config()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(
        listener,
        state,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let target = Target::external(Dialect::Noom, addr, std::process::id());
    let mut settings = Settings::new(PathBuf::from(env!("CARGO_BIN_EXE_loadgen")));
    settings.setup_timeout = Duration::from_secs(10);
    settings.conns_per_worker = 10; // 20 connections → 2 worker processes
    settings.room_prefix = "smoke".into();

    // S1
    let s1 = coord::idle(
        &settings,
        &target,
        &IdleParams {
            connections: 20,
            settle: Duration::from_millis(200),
            idle: Duration::from_secs(1),
        },
    )
    .await
    .expect("S1");
    assert_eq!((s1.connections, s1.workers), (20, 2), "{s1:?}");
    assert_eq!((s1.dropped, s1.errors), (0, 0), "{s1:?}");
    assert!(s1.establish_s > 0.0 && s1.establish_s < 10.0, "{s1:?}");
    assert!(s1.rss_before_kib > 0 && s1.idle_max_kib > 0, "{s1:?}");

    // S2: 10 rooms, 200 signals/s for 1 s after 0.2 s of warm-up.
    let s2 = coord::latency(
        &settings,
        &target,
        &TrafficParams {
            rooms: 10,
            signal_bytes: 1024,
            warmup: Duration::from_millis(200),
            measure: Duration::from_secs(1),
            drain: Duration::from_secs(2),
            rate_per_sec: 200.0,
            window: 0,
        },
    )
    .await
    .expect("S2");
    assert_eq!((s2.lost, s2.errors), (0, 0), "{s2:?}");
    assert!((190..=250).contains(&s2.sent), "{s2:?}");
    assert!((150..=210).contains(&s2.measured), "{s2:?}");
    assert!(
        s2.p50_us > 0.0 && s2.p50_us <= s2.p99_us && s2.p99_us <= s2.max_us,
        "{s2:?}"
    );
    assert!(s2.max_us < 1_000_000.0, "{s2:?}");
    assert!(
        s2.cpu.interval_s > 0.9 && s2.cpu.generator_pct > 0.0,
        "{s2:?}"
    );

    // S3
    let s3 = coord::throughput(
        &settings,
        &target,
        &TrafficParams {
            rooms: 10,
            signal_bytes: 512,
            warmup: Duration::from_millis(200),
            measure: Duration::from_secs(1),
            drain: Duration::from_secs(2),
            rate_per_sec: 0.0,
            window: 8,
        },
    )
    .await
    .expect("S3");
    assert_eq!((s3.unacked, s3.errors), (0, 0), "{s3:?}");
    assert!(s3.relayed > 100, "{s3:?}");
    assert!(
        s3.cpu_s_per_100k.is_finite() && s3.cpu_s_per_100k > 0.0,
        "{s3:?}"
    );

    // S4
    let s4 = coord::join_storm(
        &settings,
        &target,
        &StormParams {
            clients: 40,
            inflight: 10,
        },
    )
    .await
    .expect("S4");
    assert_eq!(
        (s4.joins, s4.rooms_welcomed, s4.errors),
        (40, 20, 0),
        "{s4:?}"
    );
    assert!(
        s4.joins_per_sec > 0.0 && s4.all_welcomed_ms >= s4.all_joined_ms * 0.0,
        "{s4:?}"
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// A relay that is not there: the shape fails with a reason instead of hanging.
#[tokio::test]
async fn an_absent_server_fails_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target::external(
        Dialect::Noom,
        ([127, 0, 0, 1], port).into(),
        std::process::id(),
    );
    let mut settings = Settings::new(PathBuf::from(env!("CARGO_BIN_EXE_loadgen")));
    settings.setup_timeout = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let err = coord::idle(
        &settings,
        &target,
        &IdleParams {
            connections: 4,
            settle: Duration::ZERO,
            idle: Duration::from_millis(100),
        },
    )
    .await
    .expect_err("nothing listens there");
    assert!(err.contains("failed to set up"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
