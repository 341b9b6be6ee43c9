//! One file is the deployment: the real server binary, started with NO `--dist` from a
//! temporary working directory with no `dist/` beside it, serves the web app built into it;
//! two headless Chromium processes with fake devices load it cold (no request fails, the
//! favicon included) and call each other.
//!
//! Like `browser.rs`: needs a network namespace with only `lo` (scripts/test.sh runs every test
//! in one), and a server built with the bundle inside (scripts/test.sh builds the bundle first
//! and sets NOOM_BUNDLE_DIR). Every browser and the server are killed when their guard drops.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::{EventLoadingFailed, EventResponseReceived};
use chromiumoxide::Page;
use futures::StreamExt;

const T: Duration = Duration::from_secs(20);
const REMOTE_VIDEO: &str = "document.querySelector('#peers video[data-peer]')";

// TODO(merge): use support:: (a copy of browser.rs's check, which is moving to tests/support/).
/// Refuses to run where Chromium could send test traffic off this machine.
fn require_loopback_only_network() {
    let table = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let others: Vec<String> = table
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_string())
        .filter(|name| name != "lo")
        .collect();
    assert!(
        others.is_empty(),
        "browser tests must run in a network namespace with only `lo` (found {others:?}); \
         run them with scripts/test.sh, which uses `unshare -n`"
    );
}

/// The server binary started with no `--dist` in an empty temporary directory; killed (by
/// PID, through its Child) when dropped.
struct EmbeddedServer {
    child: Child,
    url: String,
    _cwd: tempfile::TempDir,
}

impl EmbeddedServer {
    fn start() -> Self {
        // The binary and this test share the server crate's build script, so this is the
        // binary's bundle.
        assert!(
            server::bundle::Bundle::embedded().is_some(),
            "this build of the server has no web app inside: build it with `trunk build --release` \
             first, then the tests (scripts/test.sh does, with NOOM_BUNDLE_DIR set)"
        );
        let cwd = tempfile::tempdir().expect("temp working directory");
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--addr", "127.0.0.1:0", "--ice-server", "none"])
            .current_dir(cwd.path())
            .env_remove("NOOM_DIST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server binary");
        let mut lines = BufReader::new(child.stdout.take().expect("server stdout")).lines();
        let mut guard = EmbeddedServer {
            child,
            url: String::new(),
            _cwd: cwd,
        };
        let first = lines
            .next()
            .and_then(Result::ok)
            .expect("read the server's first line");
        guard.url = first
            .strip_prefix("Noom is listening on ")
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line from the server: {first:?}"))
            .to_string();
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        guard
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// TODO(merge): use support:: (a reduced copy of browser.rs's Chrome).
/// One headless Chromium with a fake camera and microphone and its own fresh profile; the
/// process is killed when dropped (chromiumoxide's kill_on_drop) or closed.
struct Chrome {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chrome {
    async fn launch() -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(chromium_path())
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(1000, 800)
            .launch_timeout(Duration::from_secs(30))
            .args([
                "allow-loopback-in-peer-connection",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "no-first-run",
                "use-fake-ui-for-media-stream",
                "use-fake-device-for-media-stream",
            ])
            .args([("autoplay-policy", "no-user-gesture-required")])
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

/// Requests of one page that failed (network error) or got an HTTP error status, and every
/// response seen (so that an empty failure list means something).
#[derive(Default)]
struct Failures {
    failed: Mutex<Vec<String>>,
    responses: Mutex<Vec<String>>,
}

/// Opens `url` in a new tab, recording every failed request of the load (listeners are in
/// place before navigating).
async fn open_recording_failures(chrome: &Chrome, url: &str) -> (Page, Arc<Failures>) {
    let page = chrome
        .browser
        .new_page("about:blank")
        .await
        .expect("new page");
    let failures = Arc::new(Failures::default());
    let mut failed = page
        .event_listener::<EventLoadingFailed>()
        .await
        .expect("listen for failed requests");
    let mut responses = page
        .event_listener::<EventResponseReceived>()
        .await
        .expect("listen for responses");
    let sink = Arc::clone(&failures);
    tokio::spawn(async move {
        while let Some(event) = failed.next().await {
            sink.failed
                .lock()
                .unwrap()
                .push(format!("{:?}: {}", event.r#type, event.error_text));
        }
    });
    let sink = Arc::clone(&failures);
    tokio::spawn(async move {
        while let Some(event) = responses.next().await {
            let line = format!("{} {}", event.response.status, event.response.url);
            if event.response.status >= 400 {
                sink.failed.lock().unwrap().push(line.clone());
            }
            sink.responses.lock().unwrap().push(line);
        }
    });
    page.goto(url).await.expect("load the app");
    (page, failures)
}

// TODO(merge): use support:: (copies of browser.rs's eval / wait_until / click).
async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    let result = page
        .evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"));
    let value = result.value().cloned().unwrap_or(serde_json::Value::Null);
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{js} gave {value}: {e}"))
}

async fn wait_until(page: &Page, js: &str, what: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let ok: Option<bool> = page
            .evaluate(js)
            .await
            .ok()
            .and_then(|r| r.value().and_then(|v| v.as_bool()));
        if ok == Some(true) {
            return;
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

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

/// Welcome form → lobby → Join, with real clicks and typing.
async fn join(page: &Page, room: &str) {
    wait_until(
        page,
        "!!document.querySelector('#welcome form input')",
        "the welcome form",
        T,
    )
    .await;
    let input = page
        .find_element("#welcome form input")
        .await
        .expect("room input");
    input.click().await.expect("focus input");
    input.type_str(room).await.expect("type room name");
    click(page, "#welcome form button").await;
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
    format!(
        "(() => {{ const v = {REMOTE_VIDEO}; return !!v && v.videoWidth > 0 && v.readyState >= 2 \
         && v.getVideoPlaybackQuality().totalVideoFrames > 0; }})()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_alone_serves_an_app_that_loads_cleanly_and_calls() {
    require_loopback_only_network();
    let server = EmbeddedServer::start();

    let a = Chrome::launch().await;
    let b = Chrome::launch().await;
    let (page_a, failures_a) = open_recording_failures(&a, &server.url).await;
    let (page_b, failures_b) = open_recording_failures(&b, &server.url).await;

    // The favicon the page names is served (a 404 here would be a failing request on every
    // cold load).
    let icon: (String, u16, String) = eval(
        &page_a,
        "(async () => { const href = document.querySelector('link[rel=icon]')?.href; \
         if (!href) return ['none', 0, '']; const r = await fetch(href); \
         return [href, r.status, r.headers.get('content-type')]; })()",
    )
    .await;
    assert_eq!(
        (icon.1, icon.2.as_str()),
        (200, "image/svg+xml"),
        "favicon {}",
        icon.0
    );

    join(&page_a, "one file").await;
    wait_until(
        &page_a,
        "document.querySelector('#call')?.dataset.phase === 'inroom'",
        "A in the room",
        T,
    )
    .await;
    join(&page_b, "one file").await;
    wait_until(&page_b, &remote_video_has_frames(), "B to see A's video", T).await;
    wait_until(&page_a, &remote_video_has_frames(), "A to see B's video", T).await;
    let path: String = eval(&page_b, "location.pathname").await;
    assert_eq!(path, "/r/one%20file");

    for (who, record) in [("A", &failures_a), ("B", &failures_b)] {
        let failed = record.failed.lock().unwrap().clone();
        assert!(failed.is_empty(), "{who}: failed requests: {failed:?}");
        // The page, its script, its wasm and its style at least were seen loading.
        let responses = record.responses.lock().unwrap().clone();
        for ext in [".js", ".wasm", ".css"] {
            assert!(
                responses
                    .iter()
                    .any(|r| r.starts_with("200 ") && r.ends_with(ext)),
                "{who}: no {ext} response seen: {responses:?}"
            );
        }
    }
    a.close().await;
    b.close().await;
}
