//! Headless Chromium driven over CDP (chromiumoxide), with fake camera and microphone, on
//! loopback or inside a network namespace; and the page helpers the browser tests share.
//!
//! Each browser gets an OS thread of its own. That thread first enters the browser's network
//! namespace (if any; `setns` changes only the calling thread, and processes it starts inherit
//! it), checks that the namespace holds exactly the interfaces the test built (plus `lo`), then
//! runs a current-thread tokio runtime that launches Chromium, connects to its DevTools
//! websocket (which listens on the namespace's own loopback, out of the test process's reach)
//! and drives the CDP connection. The test holds [`chromiumoxide::Page`]s, whose calls are
//! messages to that connection, so they work from the test's runtime. Dropping a [`Chrome`]
//! (also on panic) ends the thread's command loop, which kills and reaps Chromium; the drop
//! then joins the thread.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::error::CdpError;
use chromiumoxide::Page;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::netns::{self, Namespace};

/// Wraps RTCPeerConnection before the app loads, so the test can count offers, look at the
/// connections' senders and see when their states changed, and keeps what the app logs to the
/// console (the call core's decisions: ICE restarts, say), without the app exposing anything
/// for tests.
const INSTRUMENT: &str = r#"
(() => {
  const Original = window.RTCPeerConnection;
  window.__noom = { offers: 0, pcs: [], states: [], log: [] };
  // The page's console (the call core's log goes there) and uncaught errors (a wasm panic lands
  // there), with the page's clock: the last 2000 lines, for timelines and failure messages.
  const keep = (level, args) => {
    const text = args.map(a => { try { return typeof a === 'string' ? a : JSON.stringify(a); } catch (e) { return String(a); } }).join(' ');
    window.__noom.log.push({ t: performance.now(), level, text: text.slice(0, 500) });
    if (window.__noom.log.length > 2000) window.__noom.log.shift();
  };
  for (const level of ['log', 'warn', 'error']) {
    const original = console[level].bind(console);
    console[level] = (...args) => { keep(level, args); original(...args); };
  }
  window.addEventListener('error', e => keep('uncaught', [String(e.message)]));
  window.addEventListener('unhandledrejection', e => keep('unhandled rejection', [String(e.reason)]));
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      const pc = window.__noom.pcs.push(this) - 1;
      const log = () => window.__noom.states.push({
        t: performance.now(), pc, ice: this.iceConnectionState, conn: this.connectionState });
      this.addEventListener('iceconnectionstatechange', log);
      this.addEventListener('connectionstatechange', log);
      // Local candidates as gathered (address and ICE generation), for timelines.
      this.addEventListener('icecandidate', e => keep('ice', [
        `pc${pc} local candidate ${e.candidate ? e.candidate.address + ' ufrag ' + e.candidate.usernameFragment : '(end)'}`]));
    }
    setRemoteDescription(d, ...rest) {
      const ufrag = (d?.sdp ?? '').match(/a=ice-ufrag:(\S+)/)?.[1];
      keep('ice', [`remote ${d?.type} ufrag ${ufrag}`]);
      return super.setRemoteDescription(d, ...rest);
    }
    addIceCandidate(c, ...rest) {
      if (c?.candidate) keep('ice', [`remote candidate ${c.candidate.split(' ')[4]} ufrag ${c.usernameFragment}`]);
      return super.addIceCandidate(c, ...rest).catch(e => { keep('ice', ['addIceCandidate failed: ' + e]); throw e; });
    }
    createOffer(...args) { window.__noom.offers += 1; return super.createOffer(...args); }
  };
})();
"#;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Media {
    /// Permission granted, `cameras` fake cameras.
    Granted { cameras: u32 },
    /// Fake devices exist but the browser refuses access (no fake-UI grant): NotAllowedError.
    Denied,
}

/// Window size and autoplay policy of a test browser.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub width: u32,
    pub height: u32,
    /// Chrome's default policy for a page the person has not interacted with: playback with
    /// sound needs a tap. Off for most tests (the join click counts as interaction anyway).
    pub autoplay_needs_gesture: bool,
}

pub const DESKTOP: Window = Window {
    width: 1000,
    height: 800,
    autoplay_needs_gesture: false,
};

/// An iPhone-sized window: the layout must still work at 375 px.
pub const PHONE: Window = Window {
    width: 375,
    height: 812,
    autoplay_needs_gesture: false,
};

/// How to start a browser: media, window, network namespace and extra command-line flags.
pub struct Launch<'a> {
    media: Media,
    window: Window,
    namespace: Option<&'a Namespace>,
    args: Vec<(String, Option<String>)>,
}

impl<'a> Launch<'a> {
    pub fn new(media: Media) -> Self {
        Launch {
            media,
            window: DESKTOP,
            namespace: None,
            args: Vec::new(),
        }
    }

    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Runs the browser inside `ns`: it sees only `lo` and the interfaces the test made there.
    pub fn in_namespace(mut self, ns: &'a Namespace) -> Self {
        self.namespace = Some(ns);
        self
    }

    /// An extra Chromium flag, `name` or `name=value` (a leading `--` is optional). Values of
    /// the same flag are merged with commas, as Chromium expects for list flags
    /// (`disable-features`, `ignore-certificate-errors-spki-list`): a repeated flag would
    /// otherwise be ignored but for its last occurrence.
    pub fn arg(mut self, flag: &str) -> Self {
        let flag = flag.trim_start_matches("--");
        self.args.push(match flag.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (flag.to_string(), None),
        });
        self
    }
}

enum Command {
    NewPage(oneshot::Sender<Result<Page, CdpError>>),
    Close(oneshot::Sender<()>),
}

/// One headless Chromium with fake media devices and its own profile directory, on a thread of
/// its own (see the module's documentation). Dropping it kills the browser and joins the thread.
pub struct Chrome {
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
    window: Window,
    /// The namespace it runs in, if any (for messages).
    pub namespace: Option<String>,
    _profile: tempfile::TempDir,
}

impl Chrome {
    pub async fn launch(media: Media) -> Self {
        Self::start(Launch::new(media)).await
    }

    pub async fn launch_with(media: Media, window: Window) -> Self {
        Self::start(Launch::new(media).window(window)).await
    }

    pub async fn start(launch: Launch<'_>) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let window = launch.window;
        let autoplay = if window.autoplay_needs_gesture {
            "document-user-activation-required"
        } else {
            "no-user-gesture-required"
        };
        let mut flags = vec![
            "disable-background-networking",
            "disable-component-update",
            "disable-sync",
            "no-first-run",
        ];
        // Options with a value go in as (key, value) pairs: chromiumoxide keeps arguments in a
        // map and merges values per key, so our `disable-features` joins its own default one
        // (two separate --disable-features flags come out in random order, and Chrome only
        // honours the last).
        if launch.namespace.is_none() {
            // On the loopback-only network, 127.0.0.1 is the only way between two browsers. In a
            // namespace it would only add candidates that lead back to the browser's own host.
            flags.push("allow-loopback-in-peer-connection");
        }
        let mut values = vec![("autoplay-policy", autoplay.to_string())];
        match launch.media {
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
        let mut builder = BrowserConfig::builder()
            .chrome_executable(chromium_path())
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            // chromiumoxide otherwise tells every page to ignore certificate errors (CDP
            // Security.setIgnoreCertificateErrors): an HTTPS test would then pass with any
            // certificate. Trust comes from the flags a test gives (an SPKI hash), as for a person.
            .respect_https_errors()
            .window_size(window.width, window.height)
            .launch_timeout(Duration::from_secs(30))
            .args(flags)
            .args(values.iter().map(|(key, value)| (*key, value.as_str())));
        for (name, value) in &launch.args {
            builder = match value {
                Some(value) => builder.arg((name.as_str(), value.as_str())),
                None => builder.arg(name.as_str()),
            };
        }
        let config = builder.build().expect("browser config");

        // Where the browser runs: the namespace's handle and the interfaces it must have.
        let place = launch
            .namespace
            .map(|ns| (ns.path(), ns.expected_interfaces()));
        let (commands, receiver) = mpsc::channel(4);
        let (ready_tx, ready) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!(
                "chromium{}",
                launch
                    .namespace
                    .map(|ns| format!(" in {}", ns.name()))
                    .unwrap_or_default()
            ))
            .spawn(move || browser_thread(place, config, ready_tx, receiver))
            .expect("start the browser's thread");
        let chrome = Chrome {
            commands: Some(commands),
            thread: Some(thread),
            window,
            namespace: launch.namespace.map(|ns| ns.name().to_string()),
            _profile: profile,
        };
        match ready.await {
            Ok(Ok(())) => chrome,
            Ok(Err(err)) => panic!("{err}"),
            Err(_) => panic!("the browser's thread ended before Chromium started"),
        }
    }

    pub async fn open(&self, url: &str) -> Page {
        let page = self.blank().await;
        page.goto(url).await.expect("load the app");
        page
    }

    /// A new tab on `about:blank`, instrumented for whatever it loads next (phone emulation
    /// too): for a navigation the test wants to see fail, say.
    pub async fn blank(&self) -> Page {
        let (reply, page) = oneshot::channel();
        self.commands
            .as_ref()
            .expect("browser running")
            .send(Command::NewPage(reply))
            .await
            .expect("the browser's thread is gone");
        let page = page
            .await
            .expect("the browser's thread is gone")
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
        page
    }

    /// Closes the browser politely (CDP Browser.close, then waits for it), then joins its thread.
    pub async fn close(mut self) {
        if let Some(commands) = self.commands.take() {
            let (reply, done) = oneshot::channel();
            if commands.send(Command::Close(reply)).await.is_ok() {
                let _ = done.await;
            }
        }
        // Drop joins the thread, which has finished (or is about to).
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop: it kills Chromium and reaps it.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The browser's thread: enter the namespace, check its interfaces, run Chromium and its CDP
/// connection until told to close (or until the [`Chrome`] is dropped), then kill and reap it.
fn browser_thread(
    place: Option<(PathBuf, BTreeSet<String>)>,
    config: BrowserConfig,
    ready: oneshot::Sender<Result<(), String>>,
    mut commands: mpsc::Receiver<Command>,
) {
    let entered = match &place {
        Some((path, expected)) => {
            netns::enter(path).and_then(|()| netns::check_thread_interfaces(expected))
        }
        // On the test process's own network, which must be loopback only.
        None => netns::check_thread_interfaces(&BTreeSet::new()),
    };
    if let Err(err) = entered {
        let _ = ready.send(Err(err));
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(format!("the browser thread's runtime: {err}")));
            return;
        }
    };
    runtime.block_on(async move {
        let (mut browser, mut events) = match Browser::launch(config).await {
            Ok(launched) => launched,
            Err(err) => {
                let _ = ready.send(Err(format!("launch chromium: {err}")));
                return;
            }
        };
        let handler = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        let _ = ready.send(Ok(()));
        let mut closing = None;
        while let Some(command) = commands.recv().await {
            match command {
                Command::NewPage(reply) => {
                    let _ = reply.send(browser.new_page("about:blank").await);
                }
                Command::Close(reply) => {
                    closing = Some(reply);
                    break;
                }
            }
        }
        if closing.is_some() {
            let polite = async {
                let _ = browser.close().await;
                let _ = browser.wait().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), polite).await;
        }
        // Whatever is left (always, when the Chrome was dropped without close): SIGKILL, reap.
        let _ = browser.kill().await;
        let _ = browser.wait().await;
        handler.abort();
        if let Some(reply) = closing {
            let _ = reply.send(());
        }
    });
}

pub fn chromium_path() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is not installed (apt-get install chromium chromium-driver; scripts/test.sh does)")
}

/// One end of an ICE candidate pair, from getStats.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// `host`, `srflx`, `prflx` or `relay`.
    #[serde(rename = "type")]
    pub kind: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    /// `udp` or `tcp`.
    pub protocol: Option<String>,
    /// For a local relay candidate: how the browser reaches its TURN server (`udp`, `tcp`, `tls`).
    pub relay_protocol: Option<String>,
    /// For a local srflx or relay candidate: the STUN/TURN server's URL.
    pub url: Option<String>,
}

/// The candidate pair a connection's transport has selected (getStats: the `transport`
/// report's `selectedCandidatePairId`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidatePair {
    pub state: String,
    pub nominated: bool,
    pub local: Candidate,
    pub remote: Candidate,
    /// Seconds.
    pub current_round_trip_time: Option<f64>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
}

/// The selected candidate pair of each RTCPeerConnection the page made, in creation order
/// (`None` where nothing is selected, for example before ICE connects or after it failed).
pub async fn selected_pairs(page: &Page) -> Vec<Option<CandidatePair>> {
    let js = r#"(async () => Promise.all(window.__noom.pcs.map(async pc => {
        const stats = await pc.getStats();
        const byId = new Map();
        stats.forEach(r => byId.set(r.id, r));
        let pair = null;
        stats.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId) ?? null; });
        if (!pair) return null;
        const end = id => { const c = byId.get(id) ?? {};
            return { type: c.candidateType ?? 'unknown', address: c.address ?? c.ip ?? null, port: c.port ?? null,
                     protocol: c.protocol ?? null, relayProtocol: c.relayProtocol ?? null, url: c.url ?? null }; };
        return { state: pair.state, nominated: !!pair.nominated, local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId),
                 currentRoundTripTime: pair.currentRoundTripTime ?? null, bytesSent: pair.bytesSent ?? null, bytesReceived: pair.bytesReceived ?? null };
    })))()"#;
    eval(page, js).await
}

/// The selected candidate pair of the page's connection number `pc` (creation order).
pub async fn selected_pair(page: &Page, pc: usize) -> Option<CandidatePair> {
    selected_pairs(page).await.into_iter().nth(pc).flatten()
}

/// A change of an RTCPeerConnection's `iceConnectionState` or `connectionState`, as the page
/// saw it (`t`: the page's `performance.now()`, in ms).
#[derive(Clone, Debug, Deserialize)]
pub struct StateChange {
    pub t: f64,
    pub pc: usize,
    pub ice: String,
    pub conn: String,
}

/// Every state change of the page's connections so far, oldest first.
pub async fn state_changes(page: &Page) -> Vec<StateChange> {
    eval(page, "window.__noom.states").await
}

/// A line the page wrote with `console.log` (`t`: the page's `performance.now()`, in ms).
#[derive(Clone, Debug, Deserialize)]
pub struct LogLine {
    pub t: f64,
    pub level: String,
    pub text: String,
}

/// What the page has logged to the console (the last 2000 lines), oldest first.
pub async fn console_log(page: &Page) -> Vec<LogLine> {
    eval(page, "window.__noom.log").await
}

/// The page's clock (`performance.now()`, ms), to compare with [`StateChange::t`].
pub async fn page_now(page: &Page) -> f64 {
    eval(page, "performance.now()").await
}

/// Waits until connection `pc`'s `iceConnectionState` is `state` and returns when (page clock,
/// ms) it changed to it.
///
/// Measured with Chromium 156 in these namespaces: when the path dies, `iceConnectionState`
/// turns `disconnected` after about 5.5 s and then stays `disconnected` (it never reached
/// `failed`, even after 70 s); `connectionState` turns `failed` after about 15.5 s. Wait for
/// that one with [`wait_for_connection_state`].
pub async fn wait_for_ice_state(page: &Page, pc: usize, state: &str, timeout: Duration) -> f64 {
    wait_for_state(page, pc, "iceConnectionState", state, timeout).await
}

/// Waits until connection `pc`'s `connectionState` is `state` and returns when (page clock, ms)
/// it changed to it.
pub async fn wait_for_connection_state(
    page: &Page,
    pc: usize,
    state: &str,
    timeout: Duration,
) -> f64 {
    wait_for_state(page, pc, "connectionState", state, timeout).await
}

async fn wait_for_state(
    page: &Page,
    pc: usize,
    property: &str,
    state: &str,
    timeout: Duration,
) -> f64 {
    let js = format!("window.__noom.pcs[{pc}]?.{property} === {state:?}");
    wait_until(
        page,
        &js,
        &format!("{property} {state} on connection {pc}"),
        timeout,
    )
    .await;
    state_changes(page)
        .await
        .iter()
        .rev()
        .find(|c| {
            c.pc == pc
                && if property == "connectionState" {
                    c.conn == state
                } else {
                    c.ice == state
                }
        })
        .map(|c| c.t)
        .unwrap_or_else(|| panic!("no recorded change of {property} to {state} on connection {pc}"))
}

pub async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    let result = page
        .evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"));
    let value = result.value().cloned().unwrap_or(serde_json::Value::Null);
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{js} gave {value}: {e}"))
}

/// Polls `js` (a boolean expression) until true, or fails with `what` after `timeout`.
pub async fn wait_until(page: &Page, js: &str, what: &str, timeout: Duration) -> Duration {
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
pub async fn diagnostics(page: &Page) -> String {
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
        console: (window.__noom?.log ?? []).slice(-30).map(l => l.level + ': ' + l.text),
        videos: [...document.querySelectorAll('video')].map(v => ({ id: v.id || v.dataset.peer, paused: v.paused, ready: v.readyState,
            w: v.videoWidth, frames: v.getVideoPlaybackQuality().totalVideoFrames, tracks: v.srcObject ? v.srcObject.getTracks().map(t => t.kind + ':' + t.readyState + ':' + t.enabled) : null })),
    }))()"#;
    page.evaluate(js)
        .await
        .ok()
        .and_then(|r| r.value().and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_else(|| "(unavailable)".into())
}

pub const T: Duration = Duration::from_secs(20);

pub const REMOTE_VIDEO: &str = "document.querySelector('#peers video[data-peer]')";
pub const LOCAL_VIDEO: &str = "document.querySelector('#myFace')";

pub async fn join_through_form(page: &Page, room: &str) {
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

/// True once the page is in the call (joined: the server has the join).
pub const IN_ROOM: &str = "document.querySelector('#call')?.dataset.phase === 'inroom'";

/// Waits until `who`'s page is in the call.
pub async fn wait_in_room(page: &Page, who: &str) {
    wait_until(page, IN_ROOM, &format!("{who} in the room"), T).await;
}

/// In the lobby: wait for the preview step to finish, then press Join (a real click).
pub async fn join_from_lobby(page: &Page) {
    wait_until(
        page,
        "(() => { const b = document.querySelector('#lobby #join'); return !!b && !b.disabled; })()",
        "the lobby's Join button",
        T,
    )
    .await;
    click(page, "#join").await;
}

/// The remote video shows a picture: sized, playable, and at least one frame decoded.
pub fn remote_video_has_frames() -> String {
    format!(
        "(() => {{ const v = {REMOTE_VIDEO}; return !!v && v.videoWidth > 0 && v.readyState >= 2 \
         && v.getVideoPlaybackQuality().totalVideoFrames > 0; }})()"
    )
}

/// Decoded video frames of the remote video for the peer at `selector` (from
/// getVideoPlaybackQuality: frames really received and decoded, not just a clock running).
pub async fn frames(page: &Page, selector: &str) -> i64 {
    eval(
        page,
        &format!("(() => {{ const v = document.querySelector({selector:?}); return v ? v.getVideoPlaybackQuality().totalVideoFrames : -1; }})()"),
    )
    .await
}

/// The remote video keeps getting new frames and its clock advances.
pub async fn assert_remote_video_playing(page: &Page, who: &str) {
    assert_video_playing(page, "#peers video[data-peer]", who).await;
}

pub async fn assert_video_playing(page: &Page, selector: &str, who: &str) {
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
pub async fn assert_remote_video_frozen(page: &Page, who: &str) {
    let selector = "#peers video[data-peer]";
    // Frames already in flight when the sender stopped may still arrive: let them drain first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let f1 = frames(page, selector).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let f2 = frames(page, selector).await;
    assert!(f2 - f1 <= 1, "{who}: frames still arriving ({f1} -> {f2})");
}

/// Saves a PNG of `page` when NOOM_SCREENSHOT_DIR is set (for the README and for looking).
pub async fn screenshot(page: &Page, name: &str) {
    let Ok(dir) = std::env::var("NOOM_SCREENSHOT_DIR") else {
        return;
    };
    // The viewport only: a full-page capture resets the phone emulation afterwards.
    let params = chromiumoxide::page::ScreenshotParams::builder().build();
    let png = page.screenshot(params).await.expect("screenshot");
    std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).expect("write screenshot");
}

pub async fn offers(page: &Page) -> u32 {
    eval(page, "window.__noom.offers").await
}

pub async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

pub async fn tile_attr(page: &Page, attr: &str) -> String {
    eval(
        page,
        &format!("document.querySelector('#peers video[data-peer]')?.closest('.tile')?.getAttribute({attr:?}) ?? 'no tile'"),
    )
    .await
}

pub async fn select(page: &Page, selector: &str, value: &str) {
    eval::<serde_json::Value>(
        page,
        &format!(
            "(() => {{ const s = document.querySelector({selector:?}); s.value = {value:?}; s.dispatchEvent(new Event('change', {{bubbles: true}})); return null; }})()"
        ),
    )
    .await;
}

pub async fn options(page: &Page, selector: &str) -> Vec<String> {
    eval(
        page,
        &format!("[...document.querySelectorAll('{selector} option')].map(o => o.value)"),
    )
    .await
}

/// The device id of the track A's first connection sends for `kind` ("none" if it sends nothing).
pub fn sender_device(kind: &str) -> String {
    format!(
        "(() => {{ const t = window.__noom.pcs[0].getTransceivers().find(t => t.receiver.track.kind === '{kind}'); \
         return t?.sender.track ? t.sender.track.getSettings().deviceId : 'none'; }})()"
    )
}

pub const LOCAL_TRACK: &str = "document.querySelector('#myFace').srcObject?.getVideoTracks()[0]";

/// The page's last console lines (log, warn, error, uncaught errors), oldest first.
pub async fn console_lines(page: &Page) -> Vec<String> {
    eval(page, "window.__noom.log.map(l => l.level + ': ' + l.text)").await
}
