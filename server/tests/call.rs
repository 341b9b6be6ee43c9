//! End to end, the call that survives (issue 11): a mesh of four people, a server restart in the
//! middle of a call, and a camera allowed after joining. The release bundle served by the real
//! server binary, driven in headless Chromium with fake camera and microphone, over loopback.
//!
//! Like `browser.rs`, these need `trunk build --release` first and a network namespace with only
//! `lo` (`scripts/test.sh` provides both). Every browser and server is killed when its guard
//! drops, also when a test panics. Each test prints `timing:` lines and what it measured.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::browser::{
    PermissionDescriptor, PermissionSetting, SetPermissionParams,
};
use chromiumoxide::Page;
use support::browser::*;
use support::process::{workspace_root, Process, ServerProcess};
use support::{require_loopback_only_network, ONE_AT_A_TIME};

/// The remote camera tiles (one per other person).
const CAMERA_TILES: &str = "#peers video[data-peer][data-source=camera]";

/// Frames decoded so far on each remote camera tile, by the peer id on the tile.
async fn camera_frames(page: &Page) -> BTreeMap<String, i64> {
    eval(
        page,
        &format!(
            "Object.fromEntries([...document.querySelectorAll({CAMERA_TILES:?})].map(v => \
             [v.dataset.peer, v.videoWidth > 0 ? v.getVideoPlaybackQuality().totalVideoFrames : 0]))"
        ),
    )
    .await
}

/// Audio RTP packets received so far on each of the page's open connections (creation order).
async fn audio_packets(page: &Page) -> Vec<i64> {
    eval(
        page,
        "(async () => Promise.all(window.__noom.pcs.filter(pc => pc.connectionState !== 'closed').map(async pc => { \
           let n = 0; (await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived; }); \
           return n; })))()",
    )
    .await
}

/// Waits until the page shows `n` remote camera tiles, each with a decoded picture.
async fn wait_for_tiles(page: &Page, n: usize, who: &str, timeout: Duration) -> Duration {
    wait_until(
        page,
        &format!(
            "(() => {{ const v = [...document.querySelectorAll({CAMERA_TILES:?})]; \
             return v.length === {n} && v.every(v => v.videoWidth > 0 && v.readyState >= 2); }})()"
        ),
        &format!("{who}: {n} remote camera tiles with pictures"),
        timeout,
    )
    .await
}

/// Asserts that every tile of `before` got at least `min` new frames in `after`, and that the
/// page shows exactly those tiles. Returns the smallest number of new frames.
fn assert_all_decoding(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    min: i64,
    who: &str,
) -> i64 {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{who}: the tiles changed while measuring"
    );
    let mut least = i64::MAX;
    for (peer, f1) in before {
        let f2 = after[peer];
        assert!(
            f2 >= f1 + min,
            "{who}: the tile of peer {peer} decoded too few new frames ({f1} -> {f2})"
        );
        least = least.min(f2 - f1);
    }
    least
}

/// Asserts that every open connection of the page receives audio: packets grow on each.
async fn assert_hears_everyone(page: &Page, expected: usize, who: &str) {
    let p1 = audio_packets(page).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let p2 = audio_packets(page).await;
    assert_eq!(
        (p1.len(), p2.len()),
        (expected, expected),
        "{who}: open connections"
    );
    for (i, (a, b)) in p1.iter().zip(&p2).enumerate() {
        assert!(
            *b > *a + 10,
            "{who}: connection {i} receives no audio ({a} -> {b} packets in 1 s)"
        );
    }
    let live: bool = eval(
        page,
        &format!(
            "[...document.querySelectorAll({CAMERA_TILES:?})].every(v => !v.muted && \
             v.srcObject?.getAudioTracks()[0]?.readyState === 'live')"
        ),
    )
    .await;
    assert!(
        live,
        "{who}: every remote tile plays a live, unmuted audio track"
    );
}

/// Every process: pid -> (parent pid, CPU time so far in clock ticks, user + system), from
/// /proc/<pid>/stat (after the `(comm)`: state, ppid, …, utime and stime, the 14th and 15th
/// fields of the line).
fn process_table() -> BTreeMap<u32, (u32, u64)> {
    let mut table = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(utime), Some(stime)) = (field(1), field(11), field(12)) {
            table.insert(pid, (ppid as u32, utime + stime));
        }
    }
    table
}

/// CPU time (clock ticks) of the processes now alive under `root`, `root` included. (A
/// process that exits during a measurement takes its time with it: the figure errs low.)
fn tree_ticks(root: u32) -> u64 {
    let table = process_table();
    let mut total = 0;
    let mut frontier = vec![root];
    let mut seen = BTreeSet::new();
    while let Some(pid) = frontier.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some((_, ticks)) = table.get(&pid) {
            total += ticks;
        }
        frontier.extend(
            table
                .iter()
                .filter(|(_, (ppid, _))| *ppid == pid)
                .map(|(child, _)| *child),
        );
    }
    total
}

/// The direct children of this test process (each Chromium's main process is one: the
/// browser's thread spawns it, and threads share the process).
fn children() -> BTreeSet<u32> {
    let me = std::process::id();
    process_table()
        .into_iter()
        .filter(|(_, (ppid, _))| *ppid == me)
        .map(|(pid, _)| pid)
        .collect()
}

/// Starts a browser and returns it with the PID of its main process (the one new child of
/// this process), for measuring its CPU without touching the shared support code.
async fn launch_tracked(launch: Launch<'_>) -> (Chrome, u32) {
    let before = children();
    let chrome = Chrome::start(launch).await;
    let new: Vec<u32> = children().difference(&before).copied().collect();
    assert_eq!(
        new.len(),
        1,
        "expected one new child process (the browser), found {new:?}"
    );
    (chrome, new[0])
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK)");
    ticks as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_people_see_and_hear_each_other_and_a_fifth_is_refused() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    // The default capacity (4).
    let server = ServerProcess::start(&[]);
    let room_url = format!("{}/r/four", server.url);

    // One Chromium per person, as in a real call (each its own encoder, decoder and audio
    // pipeline). Small fake video at 15 fps keeps four browsers within two cores.
    let launch = || {
        Launch::new(Media::Granted { cameras: 1 })
            .window(Window {
                width: 640,
                height: 480,
                autoplay_needs_gesture: false,
            })
            .arg("use-fake-device-for-media-stream=fps=15")
    };
    let mut browsers = Vec::new();
    let mut pages = Vec::new();
    for i in 0..4 {
        let (chrome, pid) = launch_tracked(launch()).await;
        let page = chrome.open(&room_url).await;
        join_from_lobby(&page).await;
        wait_in_room(&page, &format!("person {i}")).await;
        browsers.push((chrome, pid));
        pages.push(page);
    }
    let joined = started.elapsed();

    // Every page: three remote camera tiles with pictures (twelve in all).
    let mesh_start = Instant::now();
    for (i, page) in pages.iter().enumerate() {
        wait_for_tiles(page, 3, &format!("person {i}"), Duration::from_secs(45)).await;
    }
    let mesh_up = mesh_start.elapsed();
    // Each person appears on the other three pages, under one id.
    let mut seen_on: BTreeMap<String, usize> = BTreeMap::new();
    for page in &pages {
        for peer in camera_frames(page).await.keys() {
            *seen_on.entry(peer.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen_on.len(), 4, "four distinct people: {seen_on:?}");
    assert!(
        seen_on.values().all(|n| *n == 3),
        "each person is on the three other pages: {seen_on:?}"
    );

    // CPU per browser over 10 s of the four-person call (nothing else drives the pages
    // meanwhile), and the frames each of the twelve tiles decoded in that time.
    let tick = clock_ticks_per_second();
    let mut frames_before = Vec::new();
    for page in &pages {
        frames_before.push(camera_frames(page).await);
    }
    let cpu_before: Vec<u64> = browsers.iter().map(|(_, pid)| tree_ticks(*pid)).collect();
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_after: Vec<u64> = browsers.iter().map(|(_, pid)| tree_ticks(*pid)).collect();
    let wall = window_start.elapsed().as_secs_f64();
    let mut least_fps = f64::MAX;
    for (i, page) in pages.iter().enumerate() {
        let after = camera_frames(page).await;
        let least = assert_all_decoding(&frames_before[i], &after, 30, &format!("person {i}"));
        least_fps = least_fps.min(least as f64 / window_start.elapsed().as_secs_f64());
    }
    let cpu: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(a, b)| (b.saturating_sub(*a)) as f64 / tick / wall * 100.0)
        .collect();
    let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    println!(
        "cpu per browser in the 4-person call ({wall:.1} s, % of one core, {} cores): {} (mean {mean:.0}%, all four {:.0}%)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu.iter()
            .map(|c| format!("{c:.0}%"))
            .collect::<Vec<_>>()
            .join(", "),
        cpu.iter().sum::<f64>()
    );
    println!("slowest of the 12 remote tiles meanwhile: {least_fps:.1} decoded frames/s (camera at 15 fps)");
    assert!(
        cpu.iter().all(|c| *c > 1.0),
        "a browser used no CPU: did we measure the wrong process? {cpu:?}"
    );

    // Everyone hears the three others.
    for (i, page) in pages.iter().enumerate() {
        assert_hears_everyone(page, 3, &format!("person {i}")).await;
    }

    // A fifth person is refused: the lobby says the room is full and stays, with the preview.
    let (fifth, _) = launch_tracked(launch()).await;
    let page_5 = fifth.open(&room_url).await;
    join_from_lobby(&page_5).await;
    wait_until(
        &page_5,
        "/is full: it holds 4 people/.test(document.querySelector('[role=alert]')?.textContent ?? '')",
        "the fifth told the room is full",
        T,
    )
    .await;
    let (in_lobby, preview): (bool, bool) = eval(
        &page_5,
        &format!("[!!document.querySelector('#lobby #join') && !document.querySelector('#call'), !!{LOCAL_VIDEO}?.srcObject]"),
    )
    .await;
    assert!(
        in_lobby && preview,
        "the fifth stays in the lobby with the preview"
    );
    fifth.close().await;
    for (i, page) in pages.iter().enumerate() {
        let tiles: usize = eval(
            page,
            &format!("document.querySelectorAll({CAMERA_TILES:?}).length"),
        )
        .await;
        assert_eq!(tiles, 3, "person {i}: the refused fifth never showed up");
    }

    // Person 3 leaves; the three others drop its tile and keep decoding each other.
    let leaver: String = {
        let on_0 = camera_frames(&pages[0]).await;
        let on_3: BTreeSet<String> = camera_frames(&pages[3]).await.into_keys().collect();
        on_0.into_keys()
            .find(|p| !on_3.contains(p))
            .expect("person 3's id: the one on page 0 that page 3 lacks")
    };
    click(&pages[3], "#leave").await;
    let left_at = Instant::now();
    for (i, page) in pages.iter().take(3).enumerate() {
        wait_until(
            page,
            &format!(
                "document.querySelectorAll({CAMERA_TILES:?}).length === 2 && \
                 !document.querySelector('#peers video[data-peer=\"{leaver}\"]')"
            ),
            &format!("person {i}: person 3's tile gone"),
            T,
        )
        .await;
    }
    let gone = left_at.elapsed();
    let mut before = Vec::new();
    for page in pages.iter().take(3) {
        before.push(camera_frames(page).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, page) in pages.iter().take(3).enumerate() {
        let after = camera_frames(page).await;
        assert_all_decoding(&before[i], &after, 10, &format!("person {i} after 3 left"));
        assert_hears_everyone(page, 2, &format!("person {i} after 3 left")).await;
    }

    println!(
        "timing: four joined in {} ms; all 12 remote tiles showing pictures {} ms after the fourth joined; \
         a leaver's tile gone from the others in {} ms; whole test {} ms",
        joined.as_millis(),
        mesh_up.as_millis(),
        gone.as_millis(),
        started.elapsed().as_millis()
    );
    drop(pages);
    for (chrome, _) in browsers {
        chrome.close().await;
    }
}

/// The server binary on `addr` (ServerProcess always asks the OS for a free port; a restart
/// must come back on the same one), with the given data directory and resume secret. Killed
/// when dropped. Returns once it says it is listening.
fn start_server_at(addr: SocketAddr, data_dir: &Path, secret: &str) -> Process {
    let dist = workspace_root().join("dist");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
    cmd.arg("--addr")
        .arg(addr.to_string())
        .args(["--ice-server", "none", "--dist"])
        .arg(&dist)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--resume-secret", secret])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut process = Process::spawn(&mut cmd);
    let stdout = process.child_mut().stdout.take().expect("server stdout");
    let (tx, first) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading after the first line, so the server never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = first
        .recv_timeout(Duration::from_secs(20))
        .expect("the restarted server printed nothing (did it exit?)");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    assert_eq!(
        url,
        format!("http://{addr}"),
        "unexpected first line from the restarted server: {line:?}"
    );
    process
}

/// Records, in the page, every 200 ms: the page's clock, the frames decoded on the remote
/// camera tile, and the `#status` state (for the timeline after the test).
const START_SAMPLER: &str = r#"(() => {
    window.__samples = [];
    window.__sampler = setInterval(() => {
        const v = document.querySelector('#peers video[data-peer][data-source=camera]');
        window.__samples.push([performance.now(), v ? v.getVideoPlaybackQuality().totalVideoFrames : -1,
            document.querySelector('#status')?.dataset.state ?? '']);
        if (window.__samples.length > 3000) window.__samples.shift();
    }, 200);
    return null;
})()"#;

/// The longest time (ms) between two increases of the decoded-frame count in the samples, and
/// the frames decoded over the whole recording.
fn longest_gap(samples: &[(f64, i64, String)]) -> (f64, i64) {
    let Some(first) = samples.first() else {
        return (f64::MAX, 0);
    };
    let (mut last_new, mut frames, mut gap) = (first.0, first.1, 0.0f64);
    for (t, f, _) in &samples[1..] {
        if *f > frames {
            gap = gap.max(t - last_new);
            last_new = *t;
            frames = *f;
        }
    }
    let end = samples.last().map_or(first.0, |s| s.0);
    (gap.max(end - last_new), frames - first.1)
}

/// How long the server stays down between the kill and the restart.
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_call_is_a_short_reconnecting() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let data_dir = tempfile::tempdir().expect("data dir");
    let secret = "restart-test-resume-secret-0123456789";
    let data_arg = data_dir
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_string();
    let server = ServerProcess::start(&["--data-dir", &data_arg, "--resume-secret", secret]);
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let room_url = format!("{}/r/restart", server.url);

    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&room_url).await;
    let page_b = b.open(&room_url).await;
    join_from_lobby(&page_a).await;
    join_from_lobby(&page_b).await;
    wait_for_tiles(&page_a, 1, "A", T).await;
    wait_for_tiles(&page_b, 1, "B", T).await;
    let ids_before = (
        camera_frames(&page_a).await.into_keys().collect::<Vec<_>>(),
        camera_frames(&page_b).await.into_keys().collect::<Vec<_>>(),
    );
    for page in [&page_a, &page_b] {
        eval::<serde_json::Value>(page, START_SAMPLER).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // SIGKILL (the guard kills with SIGKILL and reaps): no goodbye to anyone.
    drop(server);
    let killed_at = Instant::now();
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        wait_until(
            page,
            "document.querySelector('#status')?.dataset.state === 'reconnecting' && \
             /Reconnecting/.test(document.querySelector('#status').textContent)",
            &format!("{who} shows it is reconnecting"),
            T,
        )
        .await;
    }
    let noticed = killed_at.elapsed();
    // Down for a few seconds, as during an upgrade: the pages keep trying (with backoff) and
    // the call goes on peer to peer.
    tokio::time::sleep(OUTAGE).await;
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let state: String = eval(
            page,
            "document.querySelector('#status')?.dataset.state ?? 'none'",
        )
        .await;
        assert_eq!(state, "reconnecting", "{who} while the server is down");
        assert_remote_video_playing(page, &format!("{who} while the server is down")).await;
    }

    // The new server: same port, same data directory and resume secret.
    let spawn_at = Instant::now();
    let _restarted = start_server_at(addr, data_dir.path(), secret);
    let listening_at = Instant::now();
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        wait_until(
            page,
            "!document.querySelector('#status')",
            &format!("{who}'s reconnecting status to clear"),
            Duration::from_secs(30),
        )
        .await;
    }
    let recovered = listening_at.elapsed();
    let down = killed_at.elapsed();

    // The same people on the same connections: resumed, not rejoined.
    let ids_after = (
        camera_frames(&page_a).await.into_keys().collect::<Vec<_>>(),
        camera_frames(&page_b).await.into_keys().collect::<Vec<_>>(),
    );
    assert_eq!(ids_after, ids_before, "the peers kept their ids");
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let pcs: Vec<String> = eval(page, "window.__noom.pcs.map(pc => pc.connectionState)").await;
        assert_eq!(
            pcs,
            ["connected"],
            "{who}: the one connection went on untouched"
        );
    }

    // Signaling works again: mute on A reaches B, and B's reaches A.
    click(&page_a, "#mute").await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.muted === 'true'",
        "B sees A muted after the restart",
        T,
    )
    .await;
    click(&page_b, "#mute").await;
    wait_until(
        &page_a,
        "document.querySelector('#peers .tile')?.dataset.muted === 'true'",
        "A sees B muted after the restart",
        T,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Remote video decoded frames the whole time: from a second before the kill until now.
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let samples: Vec<(f64, i64, String)> = eval(
            page,
            "(() => { clearInterval(window.__sampler); return window.__samples; })()",
        )
        .await;
        let (gap, frames) = longest_gap(&samples);
        let span = samples.last().map_or(0.0, |s| s.0) - samples.first().map_or(0.0, |s| s.0);
        let reconnecting = samples.iter().filter(|s| s.2 == "reconnecting").count();
        println!(
            "{who}: {frames} frames decoded over {:.1} s around the restart; longest gap between new frames {gap:.0} ms; \
             #status reconnecting in {reconnecting} of {} samples",
            span / 1000.0,
            samples.len()
        );
        assert!(
            reconnecting > 0,
            "{who}: the sampler saw the reconnecting status"
        );
        assert!(
            gap <= 1000.0,
            "{who}: the remote video stalled for {gap:.0} ms during the restart"
        );
        assert!(
            frames as f64 >= span / 1000.0 * 10.0,
            "{who}: only {frames} frames in {span:.0} ms"
        );
    }
    println!(
        "timing: reconnecting shown {} ms after the kill; server down {} ms; the new server listening {} ms after it was started; \
         #status cleared {} ms after the restarted server was listening ({} ms after the kill); whole test {} ms",
        noticed.as_millis(),
        (spawn_at - killed_at).as_millis(),
        (listening_at - spawn_at).as_millis(),
        recovered.as_millis(),
        down.as_millis(),
        started.elapsed().as_millis()
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_allowed_after_joining_reaches_the_others_without_rejoining() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = ServerProcess::start(&[]);
    let room_url = format!("{}/r/allow-later", server.url);

    // A has refused camera and microphone, and joins to watch and listen.
    let a = Chrome::launch(Media::Denied).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&room_url).await;
    wait_until(
        &page_a,
        "document.querySelector('[role=alert]')?.textContent.includes('blocked') && !!document.querySelector('#retry-media')",
        "A told that camera access was blocked, with Try again",
        T,
    )
    .await;
    join_from_lobby(&page_a).await;
    wait_in_room(&page_a, "A").await;
    let page_b = b.open(&room_url).await;
    join_from_lobby(&page_b).await;
    wait_for_tiles(&page_a, 1, "A (no camera) sees B", T).await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'true'",
        "B shows A's camera off",
        T,
    )
    .await;
    let a_id: String = eval(&page_b, &format!("{REMOTE_VIDEO}.dataset.peer")).await;
    let b_id: String = eval(&page_a, &format!("{REMOTE_VIDEO}.dataset.peer")).await;
    let directions: Vec<String> = eval(
        &page_a,
        "window.__noom.pcs[0].getTransceivers().map(t => t.currentDirection)",
    )
    .await;
    assert!(
        directions.iter().all(|d| d == "recvonly"),
        "A only receives before: {directions:?}"
    );
    let offers_before = offers(&page_a).await + offers(&page_b).await;

    // The person allows camera and microphone in the browser's settings (CDP sets the
    // permission for the app's origin) and presses the app's Try again.
    for name in ["camera", "microphone"] {
        page_a
            .execute(
                SetPermissionParams::builder()
                    .permission(PermissionDescriptor::new(name))
                    .setting(PermissionSetting::Granted)
                    .origin(server.url.clone())
                    .build()
                    .expect("setPermission parameters"),
            )
            .await
            .unwrap_or_else(|e| panic!("grant {name}: {e}"));
    }
    click(&page_a, "#retry-media").await;
    let allowed_at = Instant::now();
    let a_video = format!("#peers video[data-peer=\"{a_id}\"][data-source=camera]");
    wait_until(
        &page_b,
        &format!(
            "(() => {{ const v = document.querySelector({a_video:?}); return !!v && v.videoWidth > 0 && v.readyState >= 2; }})()"
        ),
        "B to see A's video",
        T,
    )
    .await;
    let first_frame = allowed_at.elapsed();
    assert_video_playing(&page_b, &a_video, "B, A's new camera").await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'false' && \
         document.querySelector('#peers .tile')?.dataset.muted === 'false'",
        "B's tile shows A's camera and microphone on",
        T,
    )
    .await;
    // And B hears A now.
    let p1 = audio_packets(&page_b).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let p2 = audio_packets(&page_b).await;
    assert!(
        p1.len() == 1 && p2.len() == 1 && p2[0] > p1[0] + 10,
        "B receives A's audio ({p1:?} -> {p2:?})"
    );

    // In place: the same peers on the same single connections, renegotiated, not rejoined.
    let (a_id_after, b_id_after, tiles_b): (String, String, usize) = (
        eval(&page_b, &format!("{REMOTE_VIDEO}.dataset.peer")).await,
        eval(&page_a, &format!("{REMOTE_VIDEO}.dataset.peer")).await,
        eval(
            &page_b,
            &format!("document.querySelectorAll({CAMERA_TILES:?}).length"),
        )
        .await,
    );
    assert_eq!(
        (a_id_after.as_str(), b_id_after.as_str(), tiles_b),
        (a_id.as_str(), b_id.as_str(), 1)
    );
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let pcs: Vec<String> = eval(page, "window.__noom.pcs.map(pc => pc.connectionState)").await;
        assert_eq!(pcs, ["connected"], "{who}: still the one connection it had");
    }
    let directions: Vec<String> = eval(
        &page_a,
        "window.__noom.pcs[0].getTransceivers().filter(t => t.currentDirection !== 'stopped').map(t => t.currentDirection)",
    )
    .await;
    assert!(
        directions.contains(&"sendrecv".to_string()),
        "A sends now: {directions:?}"
    );
    let offers_after = offers(&page_a).await + offers(&page_b).await;
    assert!(
        offers_after > offers_before,
        "adding the tracks renegotiated ({offers_before} -> {offers_after} offers)"
    );
    println!(
        "timing: A's first frame on B {} ms after Try again ({} offers before, {} after); whole test {} ms",
        first_frame.as_millis(),
        offers_before,
        offers_after,
        started.elapsed().as_millis()
    );
    a.close().await;
    b.close().await;
}
