//! The two measurements, done the same way for both apps.
//!
//! - **Cold load**: a fresh browser profile opens `/`; every request of the page is recorded
//!   (bytes as received, `Network.loadingFinished.encodedDataLength`) until the welcome form is
//!   interactive and the network has been quiet for a second. Time to interactive is measured in
//!   the page: `performance.now()` (from navigation start) when `#welcome form input` exists,
//!   is enabled, and the document has finished parsing (so the app's scripts have run: the
//!   tutorial's are synchronous at the end of `<body>`, Noom's wasm renders the form itself).
//!   Noom's `/` is its first page (the welcome form alone); a room link loads the whole app,
//!   measured the same way up to the lobby's name field (the tutorial has no such page).
//! - **Call setup**: two fresh browsers. A opens `/`, joins a new room and settles; B opens `/`,
//!   gets up to the button that joins (Noom: welcome form → lobby, `#join` enabled; the
//!   tutorial: the welcome form filled in) and settles; then B clicks it. In both pages a
//!   capturing click listener and `requestVideoFrameCallback` on the remote video stamp
//!   `performance.timeOrigin + performance.now()` (one machine, one clock): setup is the later
//!   of the two remote first frames minus B's click.
//! - **Trace** (`--trace`, a diagnostic): the same call with [`TRACE_SCRIPT`] installed too. It
//!   wraps `RTCPeerConnection` (construction, when each offer/answer/description promise
//!   settles, candidates, ICE and connection states, tracks) and `WebSocket` (the *type* of each
//!   message sent and received, never its content), and watches the remote `<video>`
//!   (`srcObject` set, `loadedmetadata`, `playing`), stamping each event with the same clock into
//!   `window.__bench.trace`, and notes when the main thread was busy (a timer chain's gaps).
//!   Identical for both apps; it only listens and forwards.

use std::time::Duration;

use crate::browser::{self, Chrome, Recorder, Request};
use crate::Error;

/// Time given to one wait in a page.
const WAIT: Duration = Duration::from_secs(20);
/// A whole call measurement, browsers included.
pub const CALL_LIMIT: Duration = Duration::from_secs(90);
/// A whole cold-load measurement.
pub const LOAD_LIMIT: Duration = Duration::from_secs(60);
/// Pause after A is in the room and after B is at the join button, identical for both apps:
/// a person takes longer than this, and it keeps the previous step's work out of the figure.
const SETTLE: Duration = Duration::from_millis(1000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    Noom,
    Tutorial,
}

impl App {
    pub fn name(self) -> &'static str {
        match self {
            App::Noom => "Noom",
            App::Tutorial => "tutorial",
        }
    }

    /// The button whose click joins the room.
    fn join_button(self) -> &'static str {
        match self {
            App::Noom => "#lobby #join",
            App::Tutorial => "#welcome form button",
        }
    }

    /// The other person's video.
    fn remote_video(self) -> &'static str {
        match self {
            App::Noom => "#peers video[data-peer]",
            App::Tutorial => "video#peerFace",
        }
    }

    /// True once this page has joined and the server has the join.
    fn in_room(self) -> &'static str {
        match self {
            App::Noom => "document.querySelector('#call')?.dataset.phase === 'inroom'",
            // app.js sets roomName right before emitting join_room (after getUserMedia and
            // the peer connection): top-level `let`s are visible to evaluated scripts.
            App::Tutorial => {
                "typeof roomName !== 'undefined' && !!roomName && typeof myPeerConnection !== 'undefined' && !!myPeerConnection"
            }
        }
    }

    /// From the welcome page to the button that joins `room`, ready to be clicked.
    async fn up_to_join_button(self, page: &chromiumoxide::Page, room: &str) -> Result<(), Error> {
        browser::wait_until(
            page,
            "!!document.querySelector('#welcome form input')",
            "the welcome form",
            WAIT,
        )
        .await?;
        browser::type_into(page, "#welcome form input", room).await?;
        if self == App::Noom {
            browser::click(page, "#welcome form button").await?;
            browser::wait_until(
                page,
                "(() => { const b = document.querySelector('#lobby #join'); return !!b && !b.disabled; })()",
                "the lobby's Join button",
                WAIT,
            )
            .await?;
        }
        Ok(())
    }

    /// The page script that stamps B's join click and each page's first remote frame (and,
    /// with `trace`, every step in between: [`TRACE_SCRIPT`]).
    fn call_script(self, trace: bool) -> String {
        let stamps = format!(
            r#"(() => {{
  const bench = window.__bench = window.__bench || {{}};
  const now = () => performance.timeOrigin + performance.now();
  addEventListener('click', (event) => {{
    if (bench.click === undefined && event.target instanceof Element && event.target.closest({join:?})) {{ bench.click = now(); if (bench.stamp) bench.stamp('click'); }}
  }}, true);
  const watch = () => {{
    const video = document.querySelector({video:?});
    if (!video || video.__benchWatched) return;
    video.__benchWatched = true;
    video.requestVideoFrameCallback(() => {{ if (bench.firstFrame === undefined) {{ bench.firstFrame = now(); if (bench.stamp) bench.stamp('first frame'); }} }});
  }};
  new MutationObserver(watch).observe(document, {{ childList: true, subtree: true }});
  document.addEventListener('DOMContentLoaded', watch);
}})();"#,
            join = self.join_button(),
            video = self.remote_video(),
        );
        if trace {
            format!("{TRACE_SCRIPT}\n{stamps}")
        } else {
            stamps
        }
    }
}

/// The page script of `--trace`: every step of a call setup, stamped (see the module's doc).
/// socket.io's frames (`42["offer",…]`) are named by their event; Noom's JSON by its `type`.
pub const TRACE_SCRIPT: &str = r#"(() => {
  const bench = window.__bench = window.__bench || {};
  const trace = bench.trace = bench.trace || [];
  const now = () => performance.timeOrigin + performance.now();
  const stamp = (what) => { if (trace.length < 2000) trace.push([now(), what]); };
  bench.stamp = stamp;
  const kindOf = (data) => {
    if (typeof data !== 'string') return 'binary';
    try {
      if (data.startsWith('{')) return JSON.parse(data).type || '?';
      const sio = /^(\d+)(.*)$/s.exec(data);
      if (sio) {
        if (sio[1] === '42' || sio[1] === '43') { const body = JSON.parse(sio[2]); return Array.isArray(body) ? String(body[0]) : 'sio' + sio[1]; }
        return 'sio' + sio[1];
      }
    } catch (_) {}
    return '?';
  };
  const NativeWS = window.WebSocket;
  const send = NativeWS.prototype.send;
  NativeWS.prototype.send = function (data) { stamp('ws.send ' + kindOf(data)); return send.call(this, data); };
  window.WebSocket = new Proxy(NativeWS, { construct(target, args, newTarget) {
    const ws = Reflect.construct(target, args, newTarget);
    stamp('ws.new');
    ws.addEventListener('open', () => stamp('ws.open'));
    ws.addEventListener('message', (e) => stamp('ws.recv ' + kindOf(e.data)));
    return ws;
  } });
  const NativePC = window.RTCPeerConnection;
  let pcs = 0;
  window.RTCPeerConnection = new Proxy(NativePC, { construct(target, args, newTarget) {
    const pc = Reflect.construct(target, args, newTarget);
    const n = pc.__benchN = ++pcs;
    stamp('pc' + n + ' new');
    pc.addEventListener('negotiationneeded', () => stamp('pc' + n + ' negotiationneeded'));
    pc.addEventListener('icecandidate', (e) => stamp('pc' + n + ' icecandidate ' + (e.candidate ? (e.candidate.type || '?') + ' ' + (e.candidate.protocol || '') : 'end')));
    pc.addEventListener('icegatheringstatechange', () => stamp('pc' + n + ' gathering ' + pc.iceGatheringState));
    pc.addEventListener('iceconnectionstatechange', () => stamp('pc' + n + ' ice ' + pc.iceConnectionState));
    pc.addEventListener('connectionstatechange', () => stamp('pc' + n + ' conn ' + pc.connectionState));
    pc.addEventListener('track', (e) => stamp('pc' + n + ' track ' + e.track.kind));
    return pc;
  } });
  const wrap = (name, label) => {
    const native = NativePC.prototype[name];
    if (typeof native !== 'function') return;
    NativePC.prototype[name] = function (...args) {
      const what = 'pc' + (this.__benchN || '?') + ' ' + name + label(args);
      stamp(what);
      const result = native.apply(this, args);
      if (result && typeof result.then === 'function') result.then(() => stamp(what + ' done'), () => stamp(what + ' failed'));
      return result;
    };
  };
  const none = () => '';
  const type = (args) => args[0] && args[0].type ? '(' + args[0].type + ')' : '()';
  wrap('createOffer', none);
  wrap('createAnswer', none);
  wrap('setLocalDescription', type);
  wrap('setRemoteDescription', type);
  wrap('addIceCandidate', none);
  wrap('addTransceiver', (args) => '(' + (typeof args[0] === 'string' ? args[0] : args[0] && args[0].kind) + ')');
  wrap('addTrack', (args) => '(' + (args[0] && args[0].kind) + ')');
  const source = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  if (source && source.set) {
    Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', { ...source, set(value) {
      if (!this.muted || this.id !== 'myFace') stamp('video srcObject ' + (this.id || this.dataset.source || 'video') + (value ? '' : ' cleared'));
      source.set.call(this, value);
    } });
  }
  // Main-thread stalls: a 1 ms timer chain (4 ms once nested) that notes every gap over 8 ms,
  // stamped at the gap's start. A gap is the page's own work (or other tasks the scheduler
  // ran first): whatever waited on the main thread meanwhile was held up.
  let last = performance.now();
  const tick = () => {
    const t = performance.now();
    if (t - last > 8 && trace.length < 2000) trace.push([performance.timeOrigin + last, 'main thread busy ' + Math.round(t - last) + ' ms']);
    last = t;
    setTimeout(tick, 1);
  };
  setTimeout(tick, 1);
  for (const event of ['loadedmetadata', 'playing']) {
    addEventListener(event, (e) => { const v = e.target; if (v instanceof HTMLVideoElement && v.id !== 'myFace') stamp('video ' + event + ' ' + (v.id || v.dataset.source || 'video')); }, true);
  }
})();"#;

/// What a cold load waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The welcome form at `/` (both apps).
    WelcomeForm,
    /// Noom's lobby at a room link: the whole app, the camera preview asked for, the name field
    /// ready to type in.
    Lobby,
}

impl Ready {
    fn selector(self) -> &'static str {
        match self {
            Ready::WelcomeForm => "#welcome form input",
            Ready::Lobby => "#lobby #name",
        }
    }

    /// The page script that stamps when the element is there and enabled (and the document
    /// has finished parsing, so the page's scripts have run).
    fn script(self) -> String {
        format!(
            r#"(() => {{
  const bench = window.__bench = window.__bench || {{}};
  const check = () => {{
    if (bench.tti !== undefined || document.readyState === 'loading') return;
    const input = document.querySelector({selector:?});
    if (input && !input.disabled) bench.tti = performance.now();
  }};
  new MutationObserver(check).observe(document, {{ childList: true, subtree: true }});
  document.addEventListener('DOMContentLoaded', check);
}})();"#,
            selector = self.selector()
        )
    }
}

/// One cold load.
pub struct Load {
    /// Navigation start → interactive welcome form, ms.
    pub tti_ms: f64,
    pub requests: Vec<Request>,
}

pub async fn cold_load(url: &str, ready: Ready) -> Result<Load, Error> {
    let chrome = Chrome::launch().await?;
    let result = async {
        let page = chrome.tab(&ready.script()).await?;
        let recorder = Recorder::attach(&page).await?;
        page.goto(url)
            .await
            .map_err(|e| Error::cdp("loading the app", e))?;
        let tti_ms: f64 =
            browser::wait_for(&page, "window.__bench?.tti", ready.selector(), WAIT).await?;
        // Whatever the page still fetches on its own (favicon, socket.io's handshake).
        recorder
            .settle(Duration::from_secs(1), Duration::from_secs(10))
            .await;
        Ok(Load {
            tti_ms,
            requests: recorder.requests(),
        })
    }
    .await;
    chrome.close().await;
    result
}

/// One call's result: B's join click → both remote first frames, in ms, and with `--trace`
/// both pages' steps.
pub struct Call {
    pub ms: f64,
    pub trace: Option<Trace>,
}

/// Both pages' steps, in ms since B's join click (A's steps from shortly before it).
pub struct Trace {
    /// (ms since B's click, 'A' or 'B', what)
    pub steps: Vec<(f64, char, String)>,
}

/// A's steps are kept from this long before B's click (B's in full: its lobby is part of
/// what the click costs or saves).
const TRACE_BEFORE_MS: f64 = 1500.0;

async fn read_trace(page: &chromiumoxide::Page) -> Vec<(f64, String)> {
    browser::wait_for::<Vec<(f64, String)>>(
        page,
        "window.__bench?.trace",
        "the page's trace",
        Duration::from_secs(2),
    )
    .await
    .unwrap_or_default()
}

/// One call: B's join click → both remote first frames, in ms.
pub async fn call(app: App, url: &str, room: &str, trace: bool) -> Result<Call, Error> {
    let (a, b) = match tokio::join!(Chrome::launch(), Chrome::launch()) {
        (Ok(a), Ok(b)) => (a, b),
        // Whichever did launch is killed as it drops.
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let result = async {
        let script = app.call_script(trace);
        let page_a = a.tab(&script).await?;
        page_a
            .goto(url)
            .await
            .map_err(|e| Error::cdp("loading the app (A)", e))?;
        app.up_to_join_button(&page_a, room).await?;
        browser::click(&page_a, app.join_button()).await?;
        browser::wait_until(&page_a, app.in_room(), "A in the room", WAIT).await?;
        tokio::time::sleep(SETTLE).await;

        let page_b = b.tab(&script).await?;
        page_b
            .goto(url)
            .await
            .map_err(|e| Error::cdp("loading the app (B)", e))?;
        app.up_to_join_button(&page_b, room).await?;
        tokio::time::sleep(SETTLE).await;
        browser::click(&page_b, app.join_button()).await?;

        let clicked: f64 =
            browser::wait_for(&page_b, "window.__bench?.click", "B's join click", WAIT).await?;
        let frame_b: f64 = browser::wait_for(
            &page_b,
            "window.__bench?.firstFrame",
            "B's first frame of A",
            WAIT,
        )
        .await?;
        let frame_a: f64 = browser::wait_for(
            &page_a,
            "window.__bench?.firstFrame",
            "A's first frame of B",
            WAIT,
        )
        .await?;
        let trace = if trace {
            let mut steps: Vec<(f64, char, String)> = Vec::new();
            for (who, page) in [('A', &page_a), ('B', &page_b)] {
                for (at, what) in read_trace(page).await {
                    let since = at - clicked;
                    if who == 'B' || since >= -TRACE_BEFORE_MS {
                        steps.push((since, who, what));
                    }
                }
            }
            steps.sort_by(|x, y| x.0.total_cmp(&y.0));
            Some(Trace { steps })
        } else {
            None
        };
        Ok(Call {
            ms: frame_a.max(frame_b) - clicked,
            trace,
        })
    }
    .await;
    a.close().await;
    b.close().await;
    result
}
