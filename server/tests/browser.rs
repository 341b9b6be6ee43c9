//! End to end: the release bundle served by the real server binary, driven in separate headless
//! Chromium processes with fake camera and microphone, calling each other over loopback.
//!
//! Needs `trunk build --release` first (for `dist/`) and a network namespace with only `lo`,
//! because Chromium offers every interface's address as an ICE candidate and test traffic must
//! stay on loopback. `scripts/test.sh` (the README's test command) provides both; run directly,
//! these tests fail with a message saying so rather than touch the real network.
//!
//! Every browser and the server are killed when their guard drops, also when a test panics.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::Page;
use futures::StreamExt;

/// Wraps RTCPeerConnection before the app loads, so the test can count offers and look at the
/// connections' senders without the app exposing anything for tests.
const INSTRUMENT: &str = r#"
(() => {
  const Original = window.RTCPeerConnection;
  window.__noom = { offers: 0, pcs: [] };
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__noom.pcs.push(this); }
    createOffer(...args) { window.__noom.offers += 1; return super.createOffer(...args); }
  };
})();
"#;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Refuses to run where Chromium could send test traffic off this machine.
fn require_loopback_only_network() {
    // /proc/net/dev lists the interfaces of the reader's own network namespace
    // (/sys/class/net would show the host's unless sysfs is remounted).
    let table = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let interfaces: Vec<String> = table
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_string())
        .collect();
    let others: Vec<&String> = interfaces.iter().filter(|name| *name != "lo").collect();
    assert!(
        others.is_empty(),
        "browser tests must run in a network namespace with only `lo` (found {others:?}); \
         run them with scripts/test.sh, which uses `unshare -n`"
    );
}

/// The server binary, killed (by PID, through its Child) when dropped.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(extra: &[&str]) -> Self {
        let dist = workspace_root().join("dist");
        assert!(
            dist.join("index.html").is_file(),
            "no release bundle at {}: run `trunk build --release` first (scripts/test.sh does)",
            dist.display()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--addr", "127.0.0.1:0", "--ice-server", "none", "--dist"])
            .arg(&dist)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server binary");
        let stdout = child.stdout.take().expect("server stdout");
        let mut guard = ServerProcess {
            child,
            url: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        guard.url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_string();
        guard
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium with fake media devices and its own profile directory. Dropping it
/// kills the browser process (chromiumoxide sets kill_on_drop) and stops its event handler.
struct Chrome {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Media {
    /// Permission granted, `cameras` fake cameras.
    Granted { cameras: u32 },
    /// Fake devices exist but the browser refuses access (no fake-UI grant): NotAllowedError.
    Denied,
}

impl Chrome {
    async fn launch(media: Media) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "allow-loopback-in-peer-connection".to_string(),
            "autoplay-policy=no-user-gesture-required".to_string(),
            "disable-background-networking".to_string(),
            "disable-component-update".to_string(),
            "disable-sync".to_string(),
            "no-first-run".to_string(),
        ];
        match media {
            Media::Granted { cameras } => {
                args.push("use-fake-ui-for-media-stream".to_string());
                args.push(format!(
                    "use-fake-device-for-media-stream=device-count={cameras}"
                ));
            }
            Media::Denied => {
                args.push("use-fake-device-for-media-stream".to_string());
                args.push("deny-permission-prompts".to_string());
                // Without a media grant Chromium hides host candidates behind mDNS `.local`
                // names, which resolve on a real LAN but not in a loopback-only namespace.
                args.push("disable-features=WebRtcHideLocalIpsWithMdns".to_string());
            }
        }
        let config = BrowserConfig::builder()
            .chrome_executable(chromium_path())
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(1000, 800)
            .launch_timeout(Duration::from_secs(30))
            .args(args)
            .build()
            .expect("browser config");
        let (browser, mut events) = Browser::launch(config).await.expect("launch chromium");
        let handler = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        Chrome {
            browser,
            handler,
            _profile: profile,
        }
    }

    async fn open(&self, url: &str) -> Page {
        let page = self
            .browser
            .new_page("about:blank")
            .await
            .expect("new page");
        page.evaluate_on_new_document(INSTRUMENT)
            .await
            .expect("install instrumentation");
        page.goto(url).await.expect("load the app");
        page
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

fn chromium_path() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is not installed (apt-get install chromium chromium-driver; scripts/test.sh does)")
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    let result = page
        .evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"));
    let value = result.value().cloned().unwrap_or(serde_json::Value::Null);
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{js} gave {value}: {e}"))
}

/// Polls `js` (a boolean expression) until true, or fails with `what` after `timeout`.
async fn wait_until(page: &Page, js: &str, what: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let ok: Option<bool> = page
            .evaluate(js)
            .await
            .ok()
            .and_then(|r| r.value().and_then(|v| v.as_bool()));
        if ok == Some(true) {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let alert: String = eval(
                page,
                "document.querySelector('[role=alert]')?.textContent ?? ''",
            )
            .await;
            panic!("timed out after {timeout:?} waiting for {what}; on-screen alert: {alert:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const T: Duration = Duration::from_secs(20);

const REMOTE_VIDEO: &str = "document.querySelector('#peers video[data-peer]')";
const LOCAL_VIDEO: &str = "document.querySelector('#myFace')";

async fn join_through_form(page: &Page, room: &str) {
    wait_until(
        page,
        "!!document.querySelector('#welcome form input')",
        "the welcome form",
        T,
    )
    .await;
    screenshot(page, "welcome").await;
    let input = page
        .find_element("#welcome form input")
        .await
        .expect("room input");
    input.click().await.expect("focus input");
    input.type_str(room).await.expect("type room name");
    page.find_element("#welcome form button")
        .await
        .expect("submit button")
        .click()
        .await
        .expect("submit");
}

fn remote_video_has_frames() -> String {
    format!("(() => {{ const v = {REMOTE_VIDEO}; return !!v && v.videoWidth > 0 && v.readyState >= 2; }})()")
}

async fn remote_current_time(page: &Page) -> f64 {
    eval(page, &format!("{REMOTE_VIDEO}?.currentTime ?? -1")).await
}

/// The remote video's clock advances over `over`: frames keep arriving and playing.
async fn assert_remote_video_playing(page: &Page, who: &str) {
    let t1 = remote_current_time(page).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t2 = remote_current_time(page).await;
    assert!(
        t2 > t1 && t1 >= 0.0,
        "{who}: remote video not playing (currentTime {t1} -> {t2})"
    );
    let width: u32 = eval(page, &format!("{REMOTE_VIDEO}.videoWidth")).await;
    assert!(width > 0, "{who}: remote video has no width");
}

/// Saves a PNG of `page` when NOOM_SCREENSHOT_DIR is set (for the README and for looking).
async fn screenshot(page: &Page, name: &str) {
    let Ok(dir) = std::env::var("NOOM_SCREENSHOT_DIR") else {
        return;
    };
    let params = chromiumoxide::page::ScreenshotParams::builder()
        .full_page(true)
        .build();
    let png = page.screenshot(params).await.expect("screenshot");
    std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).expect("write screenshot");
}

async fn offers(page: &Page) -> u32 {
    eval(page, "window.__noom.offers").await
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other_and_use_the_controls() {
    require_loopback_only_network();
    let server = ServerProcess::start(&[]);
    let room = "e2e call";

    let a = Chrome::launch(Media::Granted { cameras: 2 }).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&server.url).await;
    let page_b = b.open(&server.url).await;

    // A joins first and waits alone; the address bar shows the room's deep link.
    join_through_form(&page_a, room).await;
    wait_until(
        &page_a,
        "document.querySelector('#call')?.dataset.phase === 'inroom'",
        "A in the room",
        T,
    )
    .await;
    let path: String = eval(&page_a, "location.pathname").await;
    assert_eq!(path, "/r/e2e%20call");
    let local_ok: bool = eval(
        &page_a,
        &format!("(() => {{ const v = {LOCAL_VIDEO}; return v.muted && v.autoplay && v.playsInline && !!v.srcObject; }})()"),
    )
    .await;
    assert!(
        local_ok,
        "A's preview must be muted, autoplay, playsinline and showing the camera"
    );

    // B joins; measure until both see the other's first frame.
    join_through_form(&page_b, room).await;
    let joined_at = Instant::now();
    wait_until(&page_b, &remote_video_has_frames(), "B to see A's video", T).await;
    wait_until(&page_a, &remote_video_has_frames(), "A to see B's video", T).await;
    let setup = joined_at.elapsed();
    println!(
        "call setup (B's join click -> both remote videos' first frame): {} ms",
        setup.as_millis()
    );

    assert_remote_video_playing(&page_a, "A").await;
    assert_remote_video_playing(&page_b, "B").await;
    screenshot(&page_a, "call").await;
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let audio: String = eval(
            page,
            &format!("{REMOTE_VIDEO}.srcObject.getAudioTracks()[0]?.readyState ?? 'none'"),
        )
        .await;
        assert_eq!(audio, "live", "{who}: remote audio track");
        let muted: bool = eval(page, &format!("{REMOTE_VIDEO}.muted")).await;
        assert!(!muted, "{who}: the remote video must not be muted");
    }
    // The tile is labelled with the peer id the server assigned.
    let peer_attr: String = eval(&page_b, &format!("{REMOTE_VIDEO}.dataset.peer")).await;
    assert!(
        peer_attr.parse::<u64>().is_ok(),
        "data-peer = {peer_attr:?}"
    );
    // One offer in the whole call, made by A (already in the room), as in the tutorial.
    assert_eq!((offers(&page_a).await, offers(&page_b).await), (1, 0));

    // Mute on A: the audio track is disabled and the button says so.
    let audio_enabled = format!("{LOCAL_VIDEO}.srcObject.getAudioTracks()[0].enabled");
    click(&page_a, "#mute").await;
    wait_until(
        &page_a,
        &format!("{audio_enabled} === false"),
        "A's mic track disabled",
        T,
    )
    .await;
    let (text, pressed): (String, String) = eval(&page_a, "[document.querySelector('#mute').textContent, document.querySelector('#mute').getAttribute('aria-pressed')]").await;
    assert_eq!((text.as_str(), pressed.as_str()), ("Unmute", "true"));
    click(&page_a, "#mute").await;
    wait_until(
        &page_a,
        &format!("{audio_enabled} === true"),
        "A's mic back on",
        T,
    )
    .await;
    let text: String = eval(&page_a, "document.querySelector('#mute').textContent").await;
    assert_eq!(text, "Mute");

    // Camera off on A, likewise.
    let video_enabled = format!("{LOCAL_VIDEO}.srcObject.getVideoTracks()[0].enabled");
    click(&page_a, "#camera").await;
    wait_until(
        &page_a,
        &format!("{video_enabled} === false"),
        "A's camera track disabled",
        T,
    )
    .await;
    let (text, pressed): (String, String) = eval(&page_a, "[document.querySelector('#camera').textContent, document.querySelector('#camera').getAttribute('aria-pressed')]").await;
    assert_eq!(
        (text.as_str(), pressed.as_str()),
        ("Turn camera on", "true")
    );
    click(&page_a, "#camera").await;
    wait_until(
        &page_a,
        &format!("{video_enabled} === true"),
        "A's camera back on",
        T,
    )
    .await;

    // Camera switch on A: the second fake camera replaces the first in the call, by
    // replaceTrack: no new offer on either side, and B's video keeps playing.
    let cameras: Vec<String> = eval(
        &page_a,
        "[...document.querySelectorAll('#cameras option')].map(o => o.value)",
    )
    .await;
    assert_eq!(cameras.len(), 2, "two fake cameras listed: {cameras:?}");
    let current: String = eval(
        &page_a,
        &format!("{LOCAL_VIDEO}.srcObject.getVideoTracks()[0].getSettings().deviceId"),
    )
    .await;
    let selected: String = eval(&page_a, "document.querySelector('#cameras').value").await;
    assert_eq!(selected, current, "the picker shows the camera in use");
    let other = cameras
        .iter()
        .find(|c| **c != current)
        .expect("another camera")
        .clone();
    let offers_before = (offers(&page_a).await, offers(&page_b).await);
    eval::<serde_json::Value>(
        &page_a,
        &format!("window.__oldCamera = {LOCAL_VIDEO}.srcObject.getVideoTracks()[0]; null"),
    )
    .await;
    eval::<serde_json::Value>(
        &page_a,
        &format!("(() => {{ const s = document.querySelector('#cameras'); s.value = {other:?}; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()"),
    )
    .await;
    wait_until(
        &page_a,
        &format!(
            "{LOCAL_VIDEO}.srcObject.getVideoTracks()[0].getSettings().deviceId === {other:?}"
        ),
        "A's preview on the second camera",
        T,
    )
    .await;
    wait_until(
        &page_a,
        &format!("window.__noom.pcs[0].getSenders().some(s => s.track && s.track.kind === 'video' && s.track.getSettings().deviceId === {other:?})"),
        "A's connection sending the second camera",
        T,
    )
    .await;
    let old_state: String = eval(&page_a, "window.__oldCamera.readyState").await;
    assert_eq!(
        old_state, "ended",
        "the first camera is released after the switch"
    );
    assert_remote_video_playing(&page_b, "B after A switched camera").await;
    assert_eq!(
        (offers(&page_a).await, offers(&page_b).await),
        offers_before,
        "no renegotiation"
    );

    // A third person gets a clear room-full message and no camera left running.
    let c = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_c = c.open(&format!("{}/r/e2e%20call", server.url)).await;
    wait_until(
        &page_c,
        "document.querySelector('[role=alert]')?.textContent.includes('full')",
        "C told the room is full",
        T,
    )
    .await;
    wait_until(
        &page_c,
        &format!("{LOCAL_VIDEO}?.srcObject == null"),
        "C's camera released",
        T,
    )
    .await;
    screenshot(&page_c, "room-full").await;
    let peers_b: u32 = eval(
        &page_b,
        "document.querySelectorAll('#peers video[data-peer]').length",
    )
    .await;
    assert_eq!(peers_b, 1, "B still sees only A");

    // A leaves: B's tile for A goes away; A is back on the welcome form.
    click(&page_a, "#leave").await;
    wait_until(
        &page_b,
        "document.querySelectorAll('#peers video[data-peer]').length === 0",
        "A's tile removed on B",
        T,
    )
    .await;
    wait_until(
        &page_a,
        "!!document.querySelector('#welcome')",
        "A back at the start",
        T,
    )
    .await;

    // The room has a free place again: C tries again and calls B.
    click(&page_c, "#leave").await;
    join_through_form(&page_c, room).await;
    wait_until(&page_c, &remote_video_has_frames(), "C to see B's video", T).await;
    wait_until(&page_b, &remote_video_has_frames(), "B to see C's video", T).await;
    assert_remote_video_playing(&page_b, "B with C").await;

    // The server goes away mid-call: B is told in a sentence, and the call itself (peer to
    // peer) keeps playing.
    drop(server);
    wait_until(
        &page_b,
        "/server|connection/i.test(document.querySelector('[role=alert]')?.textContent ?? '')",
        "B told the server connection is lost",
        T,
    )
    .await;
    assert_remote_video_playing(&page_b, "B with C, server gone").await;

    a.close().await;
    b.close().await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_camera_is_explained_and_the_call_still_receives() {
    require_loopback_only_network();
    let server = ServerProcess::start(&[]);
    let room = "denied";

    // A refuses camera and microphone, joins anyway (first, so it makes the offer with
    // receive-only transceivers) and still sees and hears B.
    let a = Chrome::launch(Media::Denied).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&server.url).await;
    join_through_form(&page_a, room).await;
    wait_until(
        &page_a,
        "document.querySelector('[role=alert]')?.textContent.includes('blocked')",
        "A told that camera access was blocked",
        T,
    )
    .await;
    wait_until(
        &page_a,
        "document.querySelector('#call')?.dataset.phase === 'inroom'",
        "A in the room",
        T,
    )
    .await;
    let disabled: bool = eval(
        &page_a,
        "document.querySelector('#mute').disabled && document.querySelector('#camera').disabled",
    )
    .await;
    assert!(disabled, "no media: mute and camera buttons are disabled");

    let page_b = b.open(&format!("{}/r/denied", server.url)).await;
    wait_until(
        &page_a,
        &remote_video_has_frames(),
        "A (no camera) to see B's video",
        T,
    )
    .await;
    assert_remote_video_playing(&page_a, "A").await;
    let audio: String = eval(
        &page_a,
        &format!("{REMOTE_VIDEO}.srcObject.getAudioTracks()[0]?.readyState ?? 'none'"),
    )
    .await;
    assert_eq!(audio, "live", "A hears B");
    // B has a tile for A (no video from A, but no error either).
    wait_until(
        &page_b,
        "document.querySelectorAll('#peers video[data-peer]').length === 1",
        "B shows A's tile",
        T,
    )
    .await;
    let alert_b: String = eval(
        &page_b,
        "document.querySelector('[role=alert]').textContent",
    )
    .await;
    assert_eq!(alert_b, "", "nothing is broken on B's side");

    a.close().await;
    b.close().await;
}
