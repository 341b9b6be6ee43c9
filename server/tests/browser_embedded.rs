//! One file is the deployment: the real server binary, started with NO `--dist` from a
//! temporary working directory with no `dist/` beside it, serves the web app built into it;
//! two headless Chromium processes with fake devices load it cold (no request fails, the
//! favicon included) and call each other.
//!
//! Like `browser.rs`: needs a network namespace with only `lo` (scripts/test.sh runs every test
//! in one), and a server built with the bundle inside (scripts/test.sh builds the bundle first
//! and sets NOOM_BUNDLE_DIR). Every browser and the server are killed when their guard drops.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::network::{EventLoadingFailed, EventResponseReceived};
use chromiumoxide::Page;
use futures::StreamExt;
use support::browser::{
    click, eval, join_from_lobby, join_through_form, remote_video_has_frames, wait_in_room,
    wait_until, Chrome, Media,
};
use support::require_loopback_only_network;

const T: Duration = Duration::from_secs(20);

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
    let page = chrome.blank().await;
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

/// Clicks `button` (which loads the room's page), then joins from the lobby.
async fn join_from_lobby_after(page: &Page, button: &str) {
    click(page, button).await;
    join_from_lobby(page).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_alone_serves_an_app_that_loads_cleanly_and_calls() {
    require_loopback_only_network();
    let server = EmbeddedServer::start();

    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
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

    join_through_form(&page_a, "one file").await;
    wait_in_room(&page_a, "A").await;
    // B types the room name and waits before pressing Enter room: meanwhile the first page
    // fetches the whole app ahead, so the room opens from the cache.
    let app_wasm_fetched = "performance.getEntriesByType('resource').some(e => \
         e.name.includes('/frontend-') && e.name.endsWith('_bg.wasm') && e.responseEnd > 0)";
    wait_until(
        &page_b,
        "!!document.querySelector('#welcome form input')",
        "the welcome form",
        T,
    )
    .await;
    let loaded_before: bool = eval(&page_b, app_wasm_fetched).await;
    assert!(
        !loaded_before,
        "the whole app is fetched on the first page before any typing"
    );
    let input = page_b
        .find_element("#welcome form input")
        .await
        .expect("room input");
    input.click().await.expect("focus input");
    input.type_str("one file").await.expect("type room name");
    wait_until(
        &page_b,
        app_wasm_fetched,
        "the whole app's wasm fetched ahead while typing",
        T,
    )
    .await;
    join_from_lobby_after(&page_b, "#welcome form button").await;
    // On the room's page the app's script and wasm came from the cache (transferSize 0).
    let from_network: Vec<String> = eval(
        &page_b,
        "performance.getEntriesByType('resource').filter(e => e.name.includes('/frontend-') \
         && e.transferSize > 0).map(e => e.name)",
    )
    .await;
    assert!(
        from_network.is_empty(),
        "the room's page fetched these again instead of using the prefetched copies: {from_network:?}"
    );
    wait_until(&page_b, &remote_video_has_frames(), "B to see A's video", T).await;
    wait_until(&page_a, &remote_video_has_frames(), "A to see B's video", T).await;
    let path: String = eval(&page_b, "location.pathname").await;
    assert_eq!(path, "/r/one%20file");

    for (who, record) in [("A", &failures_a), ("B", &failures_b)] {
        let failed = record.failed.lock().unwrap().clone();
        assert!(failed.is_empty(), "{who}: failed requests: {failed:?}");
        // Both pages were loaded, each with its own script and wasm: the first page (`/`, the
        // welcome form alone) and the whole app at the room's address; the style at least once.
        let responses = record.responses.lock().unwrap().clone();
        for (program, ext) in [
            ("/welcome-", ".js"),
            ("/welcome-", "_bg.wasm"),
            ("/frontend-", ".js"),
            ("/frontend-", "_bg.wasm"),
            ("/style-", ".css"),
        ] {
            assert!(
                responses
                    .iter()
                    .any(|r| r.starts_with("200 ") && r.contains(program) && r.ends_with(ext)),
                "{who}: no {program}*{ext} response seen: {responses:?}"
            );
        }
    }
    a.close().await;
    b.close().await;
}
