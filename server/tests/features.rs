//! End to end, the in-call features of issue 12: text chat, screen share, the connection quality
//! indicator and the room lock. The release bundle is served by the real server binary and
//! driven in separate headless Chromium processes (fake camera, microphone and screen) that call
//! each other over loopback.
//!
//! Like `browser.rs`, these need `trunk build --release` first and a network namespace with only
//! `lo` (`scripts/test.sh` provides both). Every browser and the server are killed when their
//! guard drops, also when a test panics.
//!
//! The screen picker: Debian's Chromium in `--headless=new` with the flags every test browser
//! already has (`--use-fake-ui-for-media-stream` picks a source without asking, and
//! `--use-fake-device-for-media-stream` makes that source a fake 800×600 screen, `screen:-3:0`)
//! answers `getDisplayMedia` with a live track. `--auto-select-desktop-capture-source` alone
//! does nothing in headless mode (the promise never settles), and fake UI without the fake
//! device gives `NotReadableError` (no screen to capture): checked by hand with Chromium 156.
//!
//! With `NOOM_SCREENSHOT_DIR=docs` set, `screen_share_adds_a_tile_and_ends_with_the_track` saves the
//! README's picture of a call with the chat open and a screen shared to `docs/call.png`.

mod support;

use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::page::{
    EventJavascriptDialogOpening, HandleJavaScriptDialogParams,
};
use chromiumoxide::Page;
use futures::StreamExt;
use support::browser::*;
use support::process::ServerProcess;
use support::{require_loopback_only_network, ONE_AT_A_TIME};

const ALERT: &str = "document.querySelector('[role=alert]')?.textContent ?? ''";
const CHAT_LINES: &str = "document.querySelectorAll('#chat-log li').length";
const SCREEN_VIDEO: &str = "#screens video[data-peer][data-source=screen]";
const CAMERA_VIDEO: &str = "#peers video[data-peer][data-source=camera]";

/// Puts `text` into the field at `selector` the way a person does (focus by a click, then text
/// input through the browser's input pipeline, which fires `input` events), after clearing it.
async fn type_into(page: &Page, selector: &str, text: &str) {
    eval::<serde_json::Value>(
        page,
        &format!("(() => {{ document.querySelector({selector:?}).value = ''; return null; }})()"),
    )
    .await;
    click(page, selector).await;
    page.execute(InsertTextParams::new(text))
        .await
        .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
}

/// In the lobby: wait for Join to be usable, fill in the name (and the passcode, if given), and
/// press Join (a real click).
async fn join_as(page: &Page, name: &str, passcode: Option<&str>) {
    wait_until(
        page,
        "(() => { const b = document.querySelector('#lobby #join'); return !!b && !b.disabled; })()",
        "the lobby's Join button",
        T,
    )
    .await;
    type_into(page, "#name", name).await;
    if let Some(passcode) = passcode {
        type_into(page, "#passcode", passcode).await;
    }
    click(page, "#join").await;
}

/// The number of remote camera videos on `page` that show frames.
fn playing_cameras(count: usize) -> String {
    format!(
        "[...document.querySelectorAll({CAMERA_VIDEO:?})].filter(v => v.videoWidth > 0 && v.readyState >= 2).length === {count}"
    )
}

/// Opens the chat panel if it is closed (a real click on the toggle).
async fn open_chat(page: &Page) {
    let open: String = eval(page, "document.querySelector('#chat').dataset.open").await;
    if open != "true" {
        click(page, "#chat-toggle").await;
        wait_until(
            page,
            "document.querySelector('#chat').dataset.open === 'true' && getComputedStyle(document.querySelector('#chat')).display !== 'none'",
            "the chat panel open",
            T,
        )
        .await;
    }
}

/// Sends `text` from the chat form: opens the panel, types, presses Send.
async fn send_chat(page: &Page, text: &str) {
    open_chat(page).await;
    type_into(page, "#chat form input", text).await;
    click(page, "#chat form button[type=submit]").await;
}

/// A chat line as the page shows it.
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Line {
    from: String,
    time: String,
    text: String,
}

async fn chat_lines(page: &Page) -> Vec<Line> {
    eval(
        page,
        "[...document.querySelectorAll('#chat-log li')].map(li => ({ \
            from: li.querySelector('.from')?.textContent ?? '', \
            time: li.querySelector('time')?.textContent ?? '', \
            text: li.querySelector('.text')?.textContent ?? '' }))",
    )
    .await
}

/// A dialog (alert, confirm, prompt) the page opened, if any did.
async fn dialog_opened(
    dialogs: &mut (impl futures::Stream<Item = std::sync::Arc<EventJavascriptDialogOpening>> + Unpin),
    wait: Duration,
) -> Option<String> {
    tokio::time::timeout(wait, dialogs.next())
        .await
        .ok()
        .flatten()
        .map(|d| d.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_the_room_and_late_joiners_as_text() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = ServerProcess::start(&[]);
    let url = format!("{}/r/chat", server.url);

    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&url).await;
    let page_b = b.open(&url).await;
    let mut dialogs_a = page_a
        .event_listener::<EventJavascriptDialogOpening>()
        .await
        .expect("listen for dialogs on A");
    let mut dialogs_b = page_b
        .event_listener::<EventJavascriptDialogOpening>()
        .await
        .expect("listen for dialogs on B");
    join_as(&page_a, "Alice", None).await;
    wait_in_room(&page_a, "A").await;
    join_as(&page_b, "Bob", None).await;
    wait_in_room(&page_b, "B").await;
    // Both know of each other (chat does not wait for media).
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        wait_until(
            page,
            "document.querySelectorAll('#peers .tile').length === 1",
            &format!("{who} sees the other's tile"),
            T,
        )
        .await;
    }

    // A plain message with links: B sees it with A's name and a time, while B's panel is closed
    // (so the toggle counts it as unread).
    let hello =
        "Hello from Alice: notes at https://example.com/notes?id=1, and http://example.org. Not javascript:alert(1)";
    let sent = Instant::now();
    send_chat(&page_a, hello).await;
    wait_until(
        &page_b,
        &format!("{CHAT_LINES} === 1"),
        "B gets A's message",
        T,
    )
    .await;
    let delivery = sent.elapsed();
    println!(
        "chat: A's Send click -> B shows it: {} ms",
        delivery.as_millis()
    );
    let lines = chat_lines(&page_b).await;
    assert_eq!(lines[0].from, "Alice", "the sender's name: {lines:?}");
    assert_eq!(lines[0].text, hello, "the text, as typed");
    assert!(
        lines[0].time.len() == 5 && lines[0].time.as_bytes()[2] == b':',
        "a time (HH:MM): {:?}",
        lines[0].time
    );
    let (from_id, a_id): (String, String) = eval(
        &page_b,
        &format!("[document.querySelector('#chat-log li').dataset.from, document.querySelector({CAMERA_VIDEO:?})?.dataset.peer ?? 'no tile']"),
    )
    .await;
    assert_eq!(from_id, a_id, "the line is stamped with A's peer id");
    let unread: String = eval(
        &page_b,
        "document.querySelector('#chat-toggle').dataset.unread",
    )
    .await;
    assert_eq!(unread, "1", "B's closed chat counts one unread message");
    // A sees its own message too, and nothing counts as unread for the sender.
    wait_until(
        &page_a,
        &format!("{CHAT_LINES} === 1"),
        "A's own message in A's log",
        T,
    )
    .await;

    // Links: only the http(s) ones, opening in a new tab without opener or referrer.
    let links: Vec<(String, String)> = eval(
        &page_b,
        "[...document.querySelectorAll('#chat-log li a')].map(a => [a.getAttribute('href'), a.textContent])",
    )
    .await;
    assert_eq!(
        links,
        [
            (
                "https://example.com/notes?id=1".to_string(),
                "https://example.com/notes?id=1".to_string()
            ),
            (
                "http://example.org".to_string(),
                "http://example.org".to_string()
            ),
        ],
        "the http(s) links, without the trailing punctuation, and nothing else"
    );
    let safe_links: usize = eval(
        &page_b,
        "document.querySelectorAll('#chat-log li a[target=_blank][rel~=noopener][rel~=noreferrer]').length",
    )
    .await;
    assert_eq!(
        safe_links, 2,
        "links open in a new tab with rel=noopener noreferrer"
    );

    // Markup is shown as text and runs nothing: no element made from it, no onerror handler
    // run (it would set a flag, or open an alert).
    let markup = "look <img src=x onerror=alert(1)> <img src=x onerror=window.__xss=1> <b>bold</b>";
    send_chat(&page_a, markup).await;
    wait_until(
        &page_b,
        &format!("{CHAT_LINES} === 2"),
        "B gets the markup message",
        T,
    )
    .await;
    // An image that failed to load would have fired its onerror by now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (page, dialogs, who) in [
        (&page_a, &mut dialogs_a, "A"),
        (&page_b, &mut dialogs_b, "B"),
    ] {
        assert_eq!(
            dialog_opened(dialogs, Duration::from_millis(100)).await,
            None,
            "{who}: a chat message opened a dialog"
        );
        let (elements, flag, shown): (usize, bool, String) = eval(
            page,
            "[document.querySelectorAll('#chat-log img, #chat-log b, #chat-log script').length, \
              window.__xss !== undefined, \
              document.querySelectorAll('#chat-log li .text')[1]?.textContent ?? '']",
        )
        .await;
        assert_eq!(elements, 0, "{who}: markup in a message became elements");
        assert!(!flag, "{who}: an onerror handler from a message ran");
        assert_eq!(shown, markup, "{who}: the markup is shown as text");
    }

    // C joins late and finds both messages in the history, in order, with A's name.
    let c = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_c = c.open(&url).await;
    let mut dialogs_c = page_c
        .event_listener::<EventJavascriptDialogOpening>()
        .await
        .expect("listen for dialogs on C");
    let joined = Instant::now();
    join_as(&page_c, "Carol", None).await;
    wait_until(
        &page_c,
        &format!("{CHAT_LINES} === 2"),
        "C gets the history",
        T,
    )
    .await;
    println!(
        "chat: C's Join click -> the history shown: {} ms",
        joined.elapsed().as_millis()
    );
    let history = chat_lines(&page_c).await;
    assert_eq!(
        history
            .iter()
            .map(|l| (l.from.as_str(), l.text.as_str()))
            .collect::<Vec<_>>(),
        [("Alice", hello), ("Alice", markup)],
        "C's history"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dialog_opened(&mut dialogs_c, Duration::from_millis(100)).await,
        None
    );
    let (elements, flag): (usize, bool) = eval(
        &page_c,
        "[document.querySelectorAll('#chat-log img, #chat-log b').length, window.__xss !== undefined]",
    )
    .await;
    assert_eq!((elements, flag), (0, false), "C: history markup stays text");

    // C answers and both others see it under C's name (the order is the server's).
    send_chat(&page_c, "Hi both, Carol here").await;
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        wait_until(
            page,
            &format!("{CHAT_LINES} === 3"),
            &format!("{who} gets C's message"),
            T,
        )
        .await;
        let last = chat_lines(page).await.pop().expect("a line");
        assert_eq!(
            (last.from.as_str(), last.text.as_str()),
            ("Carol", "Hi both, Carol here")
        );
    }

    // The dialog check above can fail: a real alert on B is seen (then dismissed).
    eval::<serde_json::Value>(&page_b, "(setTimeout(() => alert('probe'), 0), null)").await;
    assert_eq!(
        dialog_opened(&mut dialogs_b, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("probe"),
        "the dialog listener sees a real alert"
    );
    page_b
        .execute(HandleJavaScriptDialogParams::new(true))
        .await
        .expect("dismiss the probe alert");

    a.close().await;
    b.close().await;
    c.close().await;
    println!("chat test: {} ms in all", started.elapsed().as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_share_adds_a_tile_and_ends_with_the_track() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = ServerProcess::start(&[]);
    let url = format!("{}/r/share", server.url);

    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&url).await;
    let page_b = b.open(&url).await;
    join_as(&page_a, "Alice", None).await;
    wait_in_room(&page_a, "A").await;
    join_as(&page_b, "Bob", None).await;
    wait_until(&page_b, &playing_cameras(1), "B to see A's camera", T).await;
    wait_until(&page_a, &playing_cameras(1), "A to see B's camera", T).await;
    let (pressed, label): (String, String) = eval(
        &page_a,
        "[document.querySelector('#share').getAttribute('aria-pressed'), document.querySelector('#share').textContent]",
    )
    .await;
    assert_eq!(
        (pressed.as_str(), label.as_str()),
        ("false", "Share screen")
    );

    // A closes the picker without choosing. Headless Chromium shows no picker to close, so the
    // page's getDisplayMedia answers once as Chromium does then (NotAllowedError); the app's own
    // code does the rest: a sentence, and nothing else changes.
    let offers_before = offers(&page_a).await;
    eval::<serde_json::Value>(
        &page_a,
        "(() => { const md = navigator.mediaDevices; const real = md.getDisplayMedia.bind(md); \
           md.getDisplayMedia = () => { md.getDisplayMedia = real; \
             return Promise.reject(new DOMException('Permission denied by user', 'NotAllowedError')); }; \
           return null; })()",
    )
    .await;
    click(&page_a, "#share").await;
    wait_until(
        &page_a,
        "document.querySelector('.status')?.textContent.includes('Screen sharing was cancelled')",
        "A told the share was cancelled",
        T,
    )
    .await;
    let (pressed, alert): (String, String) = eval(
        &page_a,
        &format!("[document.querySelector('#share').getAttribute('aria-pressed'), {ALERT}]"),
    )
    .await;
    assert_eq!(pressed, "false", "a cancelled share shares nothing");
    assert_eq!(alert, "", "a cancelled share is no error");
    assert_eq!(offers(&page_a).await, offers_before, "no renegotiation");
    let screens: usize = eval(
        &page_b,
        &format!("document.querySelectorAll({SCREEN_VIDEO:?}).length"),
    )
    .await;
    assert_eq!(screens, 0, "B sees no screen");

    // A shares (a real click: getDisplayMedia wants a user gesture). B gets a second tile, the
    // screen, from the same peer, while A's camera keeps playing.
    let clicked = Instant::now();
    click(&page_a, "#share").await;
    wait_until(
        &page_b,
        &format!("(() => {{ const v = document.querySelector({SCREEN_VIDEO:?}); return !!v && v.videoWidth > 0 && v.readyState >= 2; }})()"),
        "B to see A's screen",
        T,
    )
    .await;
    println!(
        "screen share: A's Share click -> B shows the screen's first frame: {} ms",
        clicked.elapsed().as_millis()
    );
    let (pressed, label): (String, String) = eval(
        &page_a,
        "[document.querySelector('#share').getAttribute('aria-pressed'), document.querySelector('#share').textContent]",
    )
    .await;
    assert_eq!((pressed.as_str(), label.as_str()), ("true", "Stop sharing"));
    let (screen_peer, camera_peer, screens): (String, String, usize) = eval(
        &page_b,
        &format!("[document.querySelector({SCREEN_VIDEO:?}).dataset.peer, document.querySelector({CAMERA_VIDEO:?}).dataset.peer, document.querySelectorAll({SCREEN_VIDEO:?}).length]"),
    )
    .await;
    assert_eq!(screen_peer, camera_peer, "the screen tile is A's");
    assert_eq!(screens, 1);
    assert_video_playing(&page_b, SCREEN_VIDEO, "B's tile of A's screen").await;
    assert_video_playing(
        &page_b,
        CAMERA_VIDEO,
        "B's tile of A's camera, while sharing",
    )
    .await;
    // The screen is sent for legibility, as its own track beside the camera.
    let screen_sender = format!(
        "window.__noom.pcs[0].getSenders().find(s => s.track && s.track.kind === 'video' && s.track.id !== {LOCAL_TRACK}?.id)"
    );
    let (hint, surface): (String, String) = eval(
        &page_a,
        &format!("(() => {{ const t = {screen_sender}.track; return [t.contentHint, t.getSettings().displaySurface ?? '']; }})()"),
    )
    .await;
    assert_eq!(hint, "detail", "the screen track is encoded for detail");
    assert_eq!(surface, "monitor", "the fake screen is what A shares");

    // The picture for the README: B's view, with the chat open and a message from A.
    send_chat(&page_a, "Here are the slides: https://example.com/slides").await;
    wait_until(
        &page_b,
        &format!("{CHAT_LINES} === 1"),
        "B gets A's message",
        T,
    )
    .await;
    open_chat(&page_b).await;
    send_chat(&page_b, "Looks good, thanks!").await;
    wait_until(
        &page_b,
        &format!("{CHAT_LINES} === 2"),
        "B's own message",
        T,
    )
    .await;
    screenshot(&page_b, "call").await;

    // The browser's own "Stop sharing" bar ends the track: stop() it (which by itself fires no
    // event) and dispatch `ended`, as the browser does. B's screen tile goes away, and A's
    // camera keeps playing at B.
    let ended = Instant::now();
    eval::<serde_json::Value>(
        &page_a,
        &format!("(() => {{ const t = {screen_sender}.track; t.stop(); t.dispatchEvent(new Event('ended')); return null; }})()"),
    )
    .await;
    wait_until(
        &page_b,
        &format!("document.querySelectorAll({SCREEN_VIDEO:?}).length === 0"),
        "A's screen tile gone at B",
        T,
    )
    .await;
    println!(
        "screen share: track ended at A -> B's screen tile gone: {} ms",
        ended.elapsed().as_millis()
    );
    wait_until(
        &page_a,
        "document.querySelector('#share').getAttribute('aria-pressed') === 'false'",
        "A's share button back to off",
        T,
    )
    .await;
    let sending_screen: bool = eval(&page_a, &format!("!!{screen_sender}")).await;
    assert!(!sending_screen, "A no longer sends the screen");
    assert_video_playing(
        &page_b,
        CAMERA_VIDEO,
        "B's tile of A's camera, after sharing",
    )
    .await;

    a.close().await;
    b.close().await;
    println!(
        "screen share test: {} ms in all",
        started.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_remote_tile_shows_good_quality_on_loopback() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = ServerProcess::start(&[]);
    let url = format!("{}/r/quality", server.url);

    // Three people: each page has two remote tiles.
    let browsers = [
        Chrome::launch(Media::Granted { cameras: 1 }).await,
        Chrome::launch(Media::Granted { cameras: 1 }).await,
        Chrome::launch(Media::Granted { cameras: 1 }).await,
    ];
    let mut pages = Vec::new();
    for (browser, name) in browsers.iter().zip(["Alice", "Bob", "Carol"]) {
        let page = browser.open(&url).await;
        join_as(&page, name, None).await;
        wait_in_room(&page, name).await;
        pages.push((page, name));
    }
    for (page, name) in &pages {
        wait_until(
            page,
            &playing_cameras(2),
            &format!("{name} to see both others"),
            T,
        )
        .await;
    }
    let connected = Instant::now();
    for (page, name) in &pages {
        wait_until(
            page,
            "(() => { const t = [...document.querySelectorAll('#peers .tile')]; return t.length === 2 && t.every(t => t.hasAttribute('data-quality')); })()",
            &format!("{name}: every remote tile rated"),
            T,
        )
        .await;
    }
    println!(
        "quality: all media playing -> every tile on every page rated: {} ms",
        connected.elapsed().as_millis()
    );
    for (page, name) in &pages {
        let tiles: Vec<(String, String)> = eval(
            page,
            "[...document.querySelectorAll('#peers .tile')].map(t => [t.dataset.quality, t.dataset.route ?? 'none'])",
        )
        .await;
        assert_eq!(
            tiles,
            [
                ("good".to_string(), "direct".to_string()),
                ("good".to_string(), "direct".to_string())
            ],
            "{name}: quality and route of each remote tile on loopback; page: {}",
            diagnostics(page).await
        );
    }

    // The numbers behind the indicator, on a tap.
    let (page, _) = &pages[0];
    click(page, "#peers .tile button.quality").await;
    wait_until(
        page,
        "!!document.querySelector('#peers .tile .quality-details')",
        "the quality details open",
        T,
    )
    .await;
    let (expanded, details): (String, String) = eval(
        page,
        "[document.querySelector('#peers .tile button.quality').getAttribute('aria-expanded'), document.querySelector('#peers .tile .quality-details').textContent]",
    )
    .await;
    assert_eq!(expanded, "true");
    for word in ["direct", " ms", "kbit/s", "host"] {
        assert!(
            details.contains(word),
            "the details show {word:?}: {details:?}"
        );
    }

    for browser in browsers {
        browser.close().await;
    }
    println!("quality test: {} ms in all", started.elapsed().as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_room_needs_its_passcode() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = ServerProcess::start(&[]);
    let url = format!("{}/r/locked", server.url);

    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&url).await;
    join_as(&page_a, "Alice", None).await;
    wait_in_room(&page_a, "A").await;

    // A locks the room with a passcode.
    type_into(&page_a, "#lock-passcode", "open sesame").await;
    click(&page_a, "#lock").await;
    wait_until(
        &page_a,
        "document.querySelector('.lock')?.dataset.lock === 'passcode' && document.querySelector('#lock').getAttribute('aria-pressed') === 'true'",
        "A's room locked",
        T,
    )
    .await;
    let state: String = eval(
        &page_a,
        "document.querySelector('.lock .lock-state').textContent",
    )
    .await;
    assert_eq!(state, "Locked: newcomers need the passcode.");

    // B without the passcode: refused, told why, still in the lobby with the preview.
    let page_b = b.open(&url).await;
    join_as(&page_b, "Bob", None).await;
    wait_until(
        &page_b,
        &format!("({ALERT}).includes('This room is locked')"),
        "B told the room is locked",
        T,
    )
    .await;
    let alert: String = eval(&page_b, ALERT).await;
    assert_eq!(
        alert,
        "This room is locked. Enter its passcode below, then press Join."
    );
    let (in_lobby, preview, attention): (bool, bool, bool) = eval(
        &page_b,
        &format!("[!!document.querySelector('#lobby #join') && !document.querySelector('#call'), !!{LOCAL_VIDEO}?.srcObject, \
                   !!document.querySelector('#passcode').closest('.attention')]"),
    )
    .await;
    assert!(in_lobby && preview, "B stays in the lobby with the preview");
    assert!(attention, "the passcode field is pointed out");

    // A wrong passcode: refused with its own sentence.
    join_as(&page_b, "Bob", Some("open sesam")).await;
    wait_until(
        &page_b,
        &format!("({ALERT}).includes('That passcode is not right')"),
        "B told the passcode is wrong",
        T,
    )
    .await;
    let peers_a: usize = eval(&page_a, "document.querySelectorAll('#peers .tile').length").await;
    assert_eq!(peers_a, 0, "nobody got in to A");

    // The right one: B is admitted and the call connects both ways.
    let joined = Instant::now();
    join_as(&page_b, "Bob", Some("open sesame")).await;
    wait_in_room(&page_b, "B").await;
    wait_until(&page_b, &playing_cameras(1), "B to see A's camera", T).await;
    wait_until(&page_a, &playing_cameras(1), "A to see B's camera", T).await;
    println!(
        "lock: B's Join click with the passcode -> both see the other's video: {} ms",
        joined.elapsed().as_millis()
    );
    assert_remote_video_playing(&page_b, "B in the locked room").await;
    let alert: String = eval(&page_b, ALERT).await;
    assert_eq!(alert, "", "no alert left once admitted");
    // B sees the room is locked too.
    let lock_b: String = eval(
        &page_b,
        "document.querySelector('.lock')?.dataset.lock ?? 'none'",
    )
    .await;
    assert_eq!(lock_b, "passcode");

    a.close().await;
    b.close().await;
    println!("lock test: {} ms in all", started.elapsed().as_millis());
}
