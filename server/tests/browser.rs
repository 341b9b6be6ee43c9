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
    window: Window,
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

/// Window size and autoplay policy of a test browser.
#[derive(Clone, Copy)]
struct Window {
    width: u32,
    height: u32,
    /// Chrome's default policy for a page the person has not interacted with: playback with
    /// sound needs a tap. Off for most tests (the join click counts as interaction anyway).
    autoplay_needs_gesture: bool,
}

const DESKTOP: Window = Window {
    width: 1000,
    height: 800,
    autoplay_needs_gesture: false,
};

/// An iPhone-sized window: the layout must still work at 375 px.
const PHONE: Window = Window {
    width: 375,
    height: 812,
    autoplay_needs_gesture: false,
};

impl Chrome {
    async fn launch(media: Media) -> Self {
        Self::launch_with(media, DESKTOP).await
    }

    async fn launch_with(media: Media, window: Window) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let autoplay = if window.autoplay_needs_gesture {
            "document-user-activation-required"
        } else {
            "no-user-gesture-required"
        };
        let mut flags = vec![
            "allow-loopback-in-peer-connection",
            "disable-background-networking",
            "disable-component-update",
            "disable-sync",
            "no-first-run",
        ];
        // Options with a value go in as (key, value) pairs: chromiumoxide keeps arguments in a
        // map and merges values per key, so our `disable-features` joins its own default one
        // (two separate --disable-features flags come out in random order, and Chrome only
        // honours the last).
        let mut values = vec![("autoplay-policy", autoplay.to_string())];
        match media {
            Media::Granted { cameras } => {
                flags.push("use-fake-ui-for-media-stream");
                values.push((
                    "use-fake-device-for-media-stream",
                    format!("device-count={cameras}"),
                ));
            }
            Media::Denied => {
                flags.push("use-fake-device-for-media-stream");
                flags.push("deny-permission-prompts");
                // Without a media grant Chromium hides host candidates behind mDNS `.local`
                // names, which resolve on a real LAN but not in a loopback-only namespace.
                values.push(("disable-features", "WebRtcHideLocalIpsWithMdns".to_string()));
            }
        }
        let config = BrowserConfig::builder()
            .chrome_executable(chromium_path())
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(window.width, window.height)
            .launch_timeout(Duration::from_secs(30))
            .args(flags)
            .args(values.iter().map(|(key, value)| (*key, value.as_str())))
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
            window,
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
        if self.window.width < 500 {
            // Headless Chrome will not make a window narrower than 500 px: emulate the phone.
            let phone = chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams::new(
                self.window.width,
                self.window.height,
                2.0,
                true,
            );
            page.execute(phone).await.expect("emulate a phone screen");
        }
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
            let state = diagnostics(page).await;
            panic!("timed out after {timeout:?} waiting for {what}; on-screen alert: {alert:?}; page: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the page's connections and videos are doing, for failure messages.
async fn diagnostics(page: &Page) -> String {
    let js = r#"(async () => JSON.stringify({
        phase: document.querySelector('#call, #lobby')?.id + ':' + (document.querySelector('#call')?.dataset.phase ?? ''),
        pcs: await Promise.all((window.__noom?.pcs ?? []).map(async pc => {
            const out = {};
            (await pc.getStats()).forEach(r => {
                if (r.type === 'outbound-rtp' || r.type === 'inbound-rtp') out[r.type + ':' + r.kind] = r.framesEncoded ?? r.framesDecoded ?? r.packetsReceived ?? r.packetsSent;
                if (r.type === 'local-candidate' || r.type === 'remote-candidate') out[r.type] = (out[r.type] ?? '') + r.address + ';';
            });
            return { conn: pc.connectionState, sig: pc.signalingState, ice: pc.iceConnectionState, gather: pc.iceGatheringState,
                     tx: pc.getTransceivers().map(t => [t.receiver.track.kind, t.direction, t.currentDirection, t.sender.track?.readyState ?? null]), stats: out };
        })),
        videos: [...document.querySelectorAll('video')].map(v => ({ id: v.id || v.dataset.peer, paused: v.paused, ready: v.readyState,
            w: v.videoWidth, frames: v.getVideoPlaybackQuality().totalVideoFrames, tracks: v.srcObject ? v.srcObject.getTracks().map(t => t.kind + ':' + t.readyState + ':' + t.enabled) : null })),
    }))()"#;
    page.evaluate(js)
        .await
        .ok()
        .and_then(|r| r.value().and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_else(|| "(unavailable)".into())
}

/// Browser tests run one at a time: each starts two or three Chromium processes, and several
/// tests at once on a 2-core machine starve WebRTC of CPU (missed deadlines, stalled ICE).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    click(page, "#welcome form button").await;
    join_from_lobby(page).await;
}

/// In the lobby: wait for the preview step to finish, then press Join (a real click).
async fn join_from_lobby(page: &Page) {
    wait_until(
        page,
        "(() => { const b = document.querySelector('#lobby #join'); return !!b && !b.disabled; })()",
        "the lobby's Join button",
        T,
    )
    .await;
    click(page, "#join").await;
}

fn remote_video_has_frames() -> String {
    format!("(() => {{ const v = {REMOTE_VIDEO}; return !!v && v.videoWidth > 0 && v.readyState >= 2; }})()")
}

/// Decoded video frames of the remote video for the peer at `selector` (from
/// getVideoPlaybackQuality: frames really received and decoded, not just a clock running).
async fn frames(page: &Page, selector: &str) -> i64 {
    eval(
        page,
        &format!("(() => {{ const v = document.querySelector({selector:?}); return v ? v.getVideoPlaybackQuality().totalVideoFrames : -1; }})()"),
    )
    .await
}

/// The remote video keeps getting new frames and its clock advances.
async fn assert_remote_video_playing(page: &Page, who: &str) {
    assert_video_playing(page, "#peers video[data-peer]", who).await;
}

async fn assert_video_playing(page: &Page, selector: &str, who: &str) {
    let time = format!("document.querySelector({selector:?})?.currentTime ?? -1");
    let (t1, f1): (f64, i64) = (eval(page, &time).await, frames(page, selector).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (t2, f2): (f64, i64) = (eval(page, &time).await, frames(page, selector).await);
    assert!(
        t1 >= 0.0 && t2 > t1,
        "{who}: video clock not advancing ({t1} -> {t2})"
    );
    if f2 < f1 + 5 {
        panic!(
            "{who}: too few new frames ({f1} -> {f2}); page: {}",
            diagnostics(page).await
        );
    }
    let width: u32 = eval(
        page,
        &format!("document.querySelector({selector:?}).videoWidth"),
    )
    .await;
    assert!(width > 0, "{who}: video has no width");
}

/// The remote video gets (almost) no new frames: nothing is being sent.
async fn assert_remote_video_frozen(page: &Page, who: &str) {
    let selector = "#peers video[data-peer]";
    // Frames already in flight when the sender stopped may still arrive: let them drain first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let f1 = frames(page, selector).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let f2 = frames(page, selector).await;
    assert!(f2 - f1 <= 1, "{who}: frames still arriving ({f1} -> {f2})");
}

/// Saves a PNG of `page` when NOOM_SCREENSHOT_DIR is set (for the README and for looking).
async fn screenshot(page: &Page, name: &str) {
    let Ok(dir) = std::env::var("NOOM_SCREENSHOT_DIR") else {
        return;
    };
    // The viewport only: a full-page capture resets the phone emulation afterwards.
    let params = chromiumoxide::page::ScreenshotParams::builder().build();
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

async fn tile_attr(page: &Page, attr: &str) -> String {
    eval(
        page,
        &format!("document.querySelector('#peers video[data-peer]')?.closest('.tile')?.getAttribute({attr:?}) ?? 'no tile'"),
    )
    .await
}

async fn select(page: &Page, selector: &str, value: &str) {
    eval::<serde_json::Value>(
        page,
        &format!(
            "(() => {{ const s = document.querySelector({selector:?}); s.value = {value:?}; s.dispatchEvent(new Event('change', {{bubbles: true}})); return null; }})()"
        ),
    )
    .await;
}

async fn options(page: &Page, selector: &str) -> Vec<String> {
    eval(
        page,
        &format!("[...document.querySelectorAll('{selector} option')].map(o => o.value)"),
    )
    .await
}

/// The device id of the track A's first connection sends for `kind` ("none" if it sends nothing).
fn sender_device(kind: &str) -> String {
    format!(
        "(() => {{ const t = window.__noom.pcs[0].getTransceivers().find(t => t.receiver.track.kind === '{kind}'); \
         return t?.sender.track ? t.sender.track.getSettings().deviceId : 'none'; }})()"
    )
}

const LOCAL_TRACK: &str = "document.querySelector('#myFace').srcObject?.getVideoTracks()[0]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other_and_use_the_controls() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let room = "e2e call";

    let a = Chrome::launch(Media::Granted { cameras: 3 }).await;
    // B on a phone-sized screen: the layout must work at 375 px.
    let b = Chrome::launch_with(Media::Granted { cameras: 1 }, PHONE).await;
    let page_a = a.open(&server.url).await;
    let page_b = b.open(&server.url).await;

    // A enters the room name, sees the lobby (deep link in the address bar), joins and waits.
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
    // Voice processing is on (no echo, no background noise).
    let processing: Vec<bool> = eval(
        &page_a,
        "(() => { const s = window.__noom.pcs[0].getTransceivers().find(t => t.receiver.track.kind === 'audio').sender.track.getSettings(); \
         return [s.echoCancellation, s.noiseSuppression, s.autoGainControl]; })()",
    )
    .await;
    assert_eq!(
        processing,
        [true, true, true],
        "echo cancellation, noise suppression, gain control"
    );
    let (fits, width): (bool, u32) = eval(
        &page_b,
        "[document.documentElement.scrollWidth <= window.innerWidth, window.innerWidth]",
    )
    .await;
    assert_eq!(width, 375, "B's viewport is phone-sized");
    assert!(fits, "B's 375 px wide page scrolls sideways");
    // The tile is labelled with the peer id the server assigned.
    let peer_attr: String = eval(&page_b, &format!("{REMOTE_VIDEO}.dataset.peer")).await;
    assert!(
        peer_attr.parse::<u64>().is_ok(),
        "data-peer = {peer_attr:?}"
    );
    // One offer in the whole call, made by A (already in the room), as in the tutorial.
    assert_eq!((offers(&page_a).await, offers(&page_b).await), (1, 0));
    assert_eq!(tile_attr(&page_b, "data-muted").await, "false");
    assert_eq!(tile_attr(&page_b, "data-camera-off").await, "false");

    // Mute on A: the track stays but is disabled, the button says so, B's tile shows it.
    let a_audio_sender = "window.__noom.pcs[0].getTransceivers().find(t => t.receiver.track.kind === 'audio').sender.track";
    click(&page_a, "#mute").await;
    wait_until(
        &page_a,
        &format!("{a_audio_sender}.enabled === false && {a_audio_sender}.readyState === 'live'"),
        "A's mic track disabled",
        T,
    )
    .await;
    let (text, pressed): (String, String) = eval(&page_a, "[document.querySelector('#mute').textContent, document.querySelector('#mute').getAttribute('aria-pressed')]").await;
    assert_eq!((text.as_str(), pressed.as_str()), ("Unmute", "true"));
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.muted === 'true'",
        "B sees A muted",
        T,
    )
    .await;
    screenshot(&page_b, "call-peer-muted").await;
    click(&page_a, "#mute").await;
    wait_until(
        &page_a,
        &format!("{a_audio_sender}.enabled === true"),
        "A's mic back on",
        T,
    )
    .await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.muted === 'false'",
        "B sees A unmuted",
        T,
    )
    .await;

    let offers_before = (offers(&page_a).await, offers(&page_b).await);
    // Camera switch on A: the second fake camera replaces the first in the call, by
    // replaceTrack: no new offer on either side, B's video keeps playing, the old camera is
    // released.
    let cameras = options(&page_a, "#cameras").await;
    assert_eq!(cameras.len(), 3, "fake cameras listed: {cameras:?}");
    let current: String = eval(&page_a, &format!("{LOCAL_TRACK}.getSettings().deviceId")).await;
    let selected: String = eval(&page_a, "document.querySelector('#cameras').value").await;
    assert_eq!(selected, current, "the picker shows the camera in use");
    // Chrome's second fake camera emulates a depth camera (Y16 pixels): a <video> shows it, but
    // WebRTC's encoder sends no frames from it (checked with plain JS, without the app). The
    // third one is an ordinary camera.
    let other: String = eval(
        &page_a,
        "[...document.querySelectorAll('#cameras option')].find(o => o.textContent.trim() === 'fake_device_2').value",
    )
    .await;
    assert_ne!(other, current);
    eval::<serde_json::Value>(
        &page_a,
        &format!("window.__oldCamera = {LOCAL_TRACK}; null"),
    )
    .await;
    select(&page_a, "#cameras", &other).await;
    wait_until(
        &page_a,
        &format!("{LOCAL_TRACK}?.getSettings().deviceId === {other:?}"),
        "A's preview on the second camera",
        T,
    )
    .await;
    wait_until(
        &page_a,
        &format!("{} === {other:?}", sender_device("video")),
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

    // Microphone switch on A, likewise: the call goes on.
    let microphones = options(&page_a, "#microphones").await;
    assert!(
        microphones.len() >= 2,
        "fake microphones listed: {microphones:?}"
    );
    let current_mic: String = eval(&page_a, &sender_device("audio")).await;
    let other_mic = microphones
        .iter()
        .find(|m| **m != current_mic && *m != "default")
        .expect("another microphone")
        .clone();
    select(&page_a, "#microphones", &other_mic).await;
    wait_until(
        &page_a,
        &format!("{} === {other_mic:?}", sender_device("audio")),
        "A's connection sending the other microphone",
        T,
    )
    .await;
    let audio: String = eval(
        &page_b,
        &format!("{REMOTE_VIDEO}.srcObject.getAudioTracks()[0]?.readyState ?? 'none'"),
    )
    .await;
    assert_eq!(audio, "live", "B still hears A");
    let packets = "(async () => { let n = 0; (await window.__noom.pcs[0].getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived; }); return n; })()";
    let p1: i64 = eval(&page_b, packets).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p2: i64 = eval(&page_b, packets).await;
    assert!(
        p2 > p1 + 5,
        "B receives A's audio after the switch ({p1} -> {p2})"
    );
    assert_remote_video_playing(&page_b, "B after A switched microphone").await;
    assert_eq!(
        (offers(&page_a).await, offers(&page_b).await),
        offers_before,
        "no renegotiation"
    );

    // Camera off on A releases the camera (track ended, preview placeholder), sends nothing,
    // and B's tile shows camera-off instead of a frozen frame.
    eval::<serde_json::Value>(&page_a, &format!("window.__camera = {LOCAL_TRACK}; null")).await;
    click(&page_a, "#camera").await;
    wait_until(
        &page_a,
        "window.__camera.readyState === 'ended'",
        "A's camera track ended",
        T,
    )
    .await;
    wait_until(
        &page_a,
        &format!("{} === 'none'", sender_device("video")),
        "A sending no video",
        T,
    )
    .await;
    let (text, pressed): (String, String) = eval(&page_a, "[document.querySelector('#camera').textContent, document.querySelector('#camera').getAttribute('aria-pressed')]").await;
    assert_eq!(
        (text.as_str(), pressed.as_str()),
        ("Turn camera on", "true")
    );
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'true'",
        "B sees A's camera off",
        T,
    )
    .await;
    let placeholder: bool = eval(
        &page_b,
        "getComputedStyle(document.querySelector('#peers .tile .placeholder')).display !== 'none'",
    )
    .await;
    assert!(placeholder, "B shows a placeholder for A");
    assert_remote_video_frozen(&page_b, "B while A's camera is off").await;
    // Camera on: the camera is opened again and B's video plays again, with no new offer.
    click(&page_a, "#camera").await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'false'",
        "B sees A's camera on",
        T,
    )
    .await;
    assert_remote_video_playing(&page_b, "B after A's camera came back").await;
    assert_eq!(
        (offers(&page_a).await, offers(&page_b).await),
        offers_before,
        "camera off/on renegotiated"
    );

    // A third person gets a clear room-full message and no camera left running.
    let c = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_c = c.open(&format!("{}/r/e2e%20call", server.url)).await;
    join_from_lobby(&page_c).await;
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
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);

    // A refuses camera and microphone: the lobby says so, with a way forward, and A can still
    // join (first, so it makes the offer with receive-only transceivers) to watch and listen.
    let a = Chrome::launch(Media::Denied).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&format!("{}/r/denied", server.url)).await;
    wait_until(
        &page_a,
        "document.querySelector('[role=alert]')?.textContent.includes('blocked')",
        "A told that camera access was blocked",
        T,
    )
    .await;
    let retry: bool = eval(
        &page_a,
        "!!document.querySelector('[role=alert] #retry-media')",
    )
    .await;
    assert!(retry, "a Try again button comes with the denied message");
    let disabled: bool = eval(
        &page_a,
        "document.querySelector('#mute').disabled && document.querySelector('#camera').disabled",
    )
    .await;
    assert!(disabled, "no media: mute and camera buttons are disabled");
    // Trying again while still denied gives the same answer, not a stuck page.
    click(&page_a, "#retry-media").await;
    wait_until(
        &page_a,
        "document.querySelector('[role=alert]')?.textContent.includes('blocked')",
        "the denied message again",
        T,
    )
    .await;
    join_from_lobby(&page_a).await;
    wait_until(
        &page_a,
        "document.querySelector('#call')?.dataset.phase === 'inroom'",
        "A in the room",
        T,
    )
    .await;

    let page_b = b.open(&format!("{}/r/denied", server.url)).await;
    join_from_lobby(&page_b).await;
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
    let recvonly: Vec<String> = eval(
        &page_a,
        "window.__noom.pcs[0].getTransceivers().map(t => t.currentDirection)",
    )
    .await;
    assert_eq!(recvonly, ["recvonly", "recvonly"], "A only receives");
    // B: a tile for A showing camera off and muted, and no error.
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'true'",
        "B shows A's camera off",
        T,
    )
    .await;
    assert_eq!(tile_attr(&page_b, "data-muted").await, "true");
    let alert_b: String = eval(
        &page_b,
        "document.querySelector('[role=alert]').textContent",
    )
    .await;
    assert_eq!(alert_b, "", "nothing is broken on B's side");

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_remembers_the_chosen_camera() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let a = Chrome::launch(Media::Granted { cameras: 2 }).await;
    let page = a.open(&format!("{}/r/remember", server.url)).await;

    // The lobby: a live preview, the pickers, and Join.
    wait_until(
        &page,
        "!!document.querySelector('#lobby #join') && !document.querySelector('#join').disabled",
        "the lobby",
        T,
    )
    .await;
    assert_video_playing(&page, "#myFace", "lobby preview").await;
    let cameras = options(&page, "#cameras").await;
    assert_eq!(cameras.len(), 2, "{cameras:?}");
    let speakers_shown: bool = eval(
        &page,
        "!!document.querySelector('#speakers') === ('setSinkId' in HTMLMediaElement.prototype)",
    )
    .await;
    assert!(
        speakers_shown,
        "the speaker picker is shown exactly where setSinkId exists"
    );
    screenshot(&page, "lobby").await;

    // Pick the second camera in the lobby: the preview switches at once.
    let second = cameras[1].clone();
    select(&page, "#cameras", &second).await;
    wait_until(
        &page,
        &format!("{LOCAL_TRACK}?.getSettings().deviceId === {second:?}"),
        "the preview on the second camera",
        T,
    )
    .await;

    // Join, leave, come back: the second camera is still the one in use and selected.
    join_from_lobby(&page).await;
    wait_until(
        &page,
        "document.querySelector('#call')?.dataset.phase === 'inroom'",
        "in the room",
        T,
    )
    .await;
    let in_call: String = eval(&page, &format!("{LOCAL_TRACK}.getSettings().deviceId")).await;
    assert_eq!(in_call, second);
    click(&page, "#leave").await;
    wait_until(
        &page,
        "!!document.querySelector('#welcome')",
        "back at the start",
        T,
    )
    .await;
    page.goto(format!("{}/r/remember", server.url))
        .await
        .expect("reload the room");
    wait_until(
        &page,
        "!!document.querySelector('#lobby #join') && !document.querySelector('#join').disabled",
        "the lobby again",
        T,
    )
    .await;
    let (selected, using): (String, String) = eval(
        &page,
        &format!("[document.querySelector('#cameras').value, {LOCAL_TRACK}?.getSettings().deviceId ?? 'none']"),
    )
    .await;
    assert_eq!(
        (selected.as_str(), using.as_str()),
        (second.as_str(), second.as_str())
    );
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoplay_refusal_offers_a_tap_to_start() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    // B joins to watch only (no camera or microphone: Chrome lets a page that is capturing
    // autoplay, so only a watcher meets the policy), in a browser that wants a real tap before
    // playing sound, and joins without one (a script click is not a user gesture): the remote
    // video cannot start by itself.
    let b = Chrome::launch_with(
        Media::Denied,
        Window {
            autoplay_needs_gesture: true,
            ..DESKTOP
        },
    )
    .await;
    let page_a = a.open(&format!("{}/r/autoplay", server.url)).await;
    join_from_lobby(&page_a).await;
    let page_b = b.open(&format!("{}/r/autoplay", server.url)).await;
    wait_until(
        &page_b,
        "(() => { const b = document.querySelector('#join'); return !!b && !b.disabled; })()",
        "B's lobby",
        T,
    )
    .await;
    eval::<serde_json::Value>(&page_b, "document.querySelector('#join').click(), null").await;
    wait_until(
        &page_b,
        "!!document.querySelector('#start-media')",
        "B offered a tap to start",
        T,
    )
    .await;
    let paused: bool = eval(&page_b, &format!("{REMOTE_VIDEO}.paused")).await;
    assert!(paused, "the remote video is waiting for the tap");
    // The tap (a real click) starts it.
    click(&page_b, "#start-media").await;
    wait_until(
        &page_b,
        "!document.querySelector('#start-media')",
        "the tap control gone",
        T,
    )
    .await;
    assert_remote_video_playing(&page_b, "B after the tap").await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_camera_is_replaced_and_the_person_told() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let a = Chrome::launch(Media::Granted { cameras: 3 }).await;
    let page = a.open(&format!("{}/r/unplug", server.url)).await;
    join_from_lobby(&page).await;
    wait_until(
        &page,
        "document.querySelector('#call')?.dataset.phase === 'inroom'",
        "in the room",
        T,
    )
    .await;
    let before: String = eval(&page, &format!("{LOCAL_TRACK}.getSettings().deviceId")).await;

    // Fake devices cannot be unplugged, so the browser's device list is made to forget the
    // camera in use and `devicechange` fires, as on a real unplug; the app's own code does the rest.
    eval::<serde_json::Value>(
        &page,
        &format!(
            r#"(() => {{
                const md = navigator.mediaDevices;
                const real = md.enumerateDevices.bind(md);
                md.enumerateDevices = async () => (await real()).filter(d => d.deviceId !== {before:?});
                md.dispatchEvent(new Event('devicechange'));
                return null;
            }})()"#
        ),
    )
    .await;
    wait_until(
        &page,
        &format!("{LOCAL_TRACK}?.readyState === 'live' && {LOCAL_TRACK}.getSettings().deviceId !== {before:?}"),
        "the preview on another camera",
        T,
    )
    .await;
    wait_until(
        &page,
        "document.querySelector('.status')?.textContent.includes('now using')",
        "the person told",
        T,
    )
    .await;
    let listed = options(&page, "#cameras").await;
    assert!(
        !listed.contains(&before),
        "the unplugged camera is no longer offered"
    );
    a.close().await;
}
