//! Headless Chromium for measuring: one process per person per measurement, each with a fresh
//! profile (a cold cache), the same flags for both apps, fake camera and microphone; and a
//! recorder of every network request of a page, from CDP events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent, EventResponseReceived,
};
use chromiumoxide::Page;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::Error;

/// Chromium switches, identical for both apps: fake devices granted without a prompt, WebRTC
/// over loopback, no background traffic of its own, and audio allowed to play without a tap
/// (the person already in the room has not clicked since the other joined).
pub const FLAGS: &[&str] = &[
    "allow-loopback-in-peer-connection",
    "disable-background-networking",
    "disable-component-update",
    "disable-sync",
    "no-first-run",
    "use-fake-ui-for-media-stream",
    "use-fake-device-for-media-stream",
];
pub const VALUED_FLAGS: &[(&str, &str)] = &[("autoplay-policy", "no-user-gesture-required")];

/// One Chromium process with its own new profile directory.
pub struct Chrome {
    browser: Browser,
    handler: JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chrome {
    pub async fn launch() -> Result<Self, Error> {
        let profile = tempfile::tempdir().map_err(|source| Error::Io {
            what: "creating a browser profile".into(),
            source,
        })?;
        let config = BrowserConfig::builder()
            .chrome_executable(chromium_path()?)
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(1000, 800)
            .launch_timeout(Duration::from_secs(30))
            .args(FLAGS.iter().copied())
            .args(VALUED_FLAGS.iter().copied())
            .build()
            .map_err(Error::Setup)?;
        let (browser, mut events) = Browser::launch(config)
            .await
            .map_err(|e| Error::cdp("launching Chromium", e))?;
        let handler = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        Ok(Chrome {
            browser,
            handler,
            _profile: profile,
        })
    }

    /// A new tab on about:blank with `script` installed for every document it will load.
    pub async fn tab(&self, script: &str) -> Result<Page, Error> {
        let page = self
            .browser
            .new_page("about:blank")
            .await
            .map_err(|e| Error::cdp("opening a tab", e))?;
        page.evaluate_on_new_document(script)
            .await
            .map_err(|e| Error::cdp("installing the measuring script", e))?;
        Ok(page)
    }

    /// Closes the browser and waits for its process to end.
    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // The process itself is killed by chromiumoxide (kill_on_drop) when `browser` drops.
        self.handler.abort();
    }
}

fn chromium_path() -> Result<PathBuf, Error> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| Error::Setup("Chromium is not installed (apt-get install chromium)".into()))
}

/// `chromium --version`, for the report.
pub fn chromium_version() -> String {
    chromium_path()
        .ok()
        .and_then(|path| {
            std::process::Command::new(path)
                .arg("--version")
                .output()
                .ok()
        })
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// One network request of a page.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The URL first asked for.
    pub url: String,
    /// Where redirects led, if anywhere.
    pub redirected_to: Option<String>,
    pub kind: String,
    /// Every status in order: `[302, 200]` for a redirect.
    pub statuses: Vec<i64>,
    pub encoding: Option<String>,
    /// Bytes received, headers included, as the browser got them (compressed):
    /// `Network.loadingFinished.encodedDataLength`, plus each redirect response's.
    /// `None` while unfinished or if it failed.
    pub bytes: Option<f64>,
    redirect_bytes: f64,
    pub failed: Option<String>,
}

#[derive(Default)]
struct Log {
    order: Vec<String>,
    requests: HashMap<String, Request>,
    last_event: Option<Instant>,
}

impl Log {
    fn entry(&mut self, id: &str) -> &mut Request {
        self.last_event = Some(Instant::now());
        if !self.requests.contains_key(id) {
            self.order.push(id.to_string());
        }
        self.requests.entry(id.to_string()).or_default()
    }
}

/// Records every request of one page from CDP's Network events (chromiumoxide enables the
/// Network domain on every page). Attach before navigating.
pub struct Recorder {
    log: Arc<Mutex<Log>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Recorder {
    pub async fn attach(page: &Page) -> Result<Self, Error> {
        let log = Arc::new(Mutex::new(Log::default()));
        let listen = |e| Error::cdp("listening to network events", e);
        let mut sent = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .map_err(listen)?;
        let mut received = page
            .event_listener::<EventResponseReceived>()
            .await
            .map_err(listen)?;
        let mut finished = page
            .event_listener::<EventLoadingFinished>()
            .await
            .map_err(listen)?;
        let mut failed = page
            .event_listener::<EventLoadingFailed>()
            .await
            .map_err(listen)?;
        let mut tasks = Vec::new();
        let l = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            while let Some(e) = sent.next().await {
                if let Ok(mut log) = l.lock() {
                    let r = log.entry(e.request_id.as_ref());
                    // A redirect is the same request id asked again, with the response that
                    // redirected it.
                    if let Some(redirect) = &e.redirect_response {
                        r.statuses.push(redirect.status);
                        r.redirect_bytes += redirect.encoded_data_length;
                        r.redirected_to = Some(e.request.url.clone());
                    } else {
                        r.url.clone_from(&e.request.url);
                    }
                    if let Some(kind) = &e.r#type {
                        r.kind = kind.as_ref().to_string();
                    }
                }
            }
        }));
        let l = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            while let Some(e) = received.next().await {
                if let Ok(mut log) = l.lock() {
                    let r = log.entry(e.request_id.as_ref());
                    r.statuses.push(e.response.status);
                    r.kind = e.r#type.as_ref().to_string();
                    if r.url.is_empty() {
                        r.url.clone_from(&e.response.url);
                    }
                    r.encoding = e
                        .response
                        .headers
                        .inner()
                        .as_object()
                        .and_then(|h| {
                            h.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("content-encoding"))
                        })
                        .and_then(|(_, v)| v.as_str().map(str::to_string));
                }
            }
        }));
        let l = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            while let Some(e) = finished.next().await {
                if let Ok(mut log) = l.lock() {
                    let r = log.entry(e.request_id.as_ref());
                    r.bytes = Some(r.redirect_bytes + e.encoded_data_length);
                }
            }
        }));
        let l = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            while let Some(e) = failed.next().await {
                if let Ok(mut log) = l.lock() {
                    log.entry(e.request_id.as_ref()).failed = Some(e.error_text.clone());
                }
            }
        }));
        Ok(Self { log, tasks })
    }

    /// Waits until no network event has arrived for `quiet` (or `limit` has passed).
    pub async fn settle(&self, quiet: Duration, limit: Duration) {
        let start = Instant::now();
        loop {
            let last = self.log.lock().ok().and_then(|log| log.last_event);
            let idle = last.map_or(start.elapsed(), |t| t.elapsed());
            if idle >= quiet || start.elapsed() >= limit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every request so far, in the order they started.
    pub fn requests(&self) -> Vec<Request> {
        let Ok(log) = self.log.lock() else {
            return Vec::new();
        };
        log.order
            .iter()
            .filter_map(|id| log.requests.get(id).cloned())
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Polls `js` until it gives a non-null value of type `T`.
pub async fn wait_for<T: serde::de::DeserializeOwned>(
    page: &Page,
    js: &str,
    what: &str,
    timeout: Duration,
) -> Result<T, Error> {
    let start = Instant::now();
    loop {
        if let Ok(result) = page.evaluate(js).await {
            if let Some(value) = result.value().filter(|v| !v.is_null()) {
                if let Ok(found) = serde_json::from_value::<T>(value.clone()) {
                    return Ok(found);
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                after: timeout,
                what: what.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls the boolean expression `js` until true.
pub async fn wait_until(page: &Page, js: &str, what: &str, timeout: Duration) -> Result<(), Error> {
    let js = format!("(() => ({js}) ? true : null)()");
    wait_for::<bool>(page, &js, what, timeout).await.map(drop)
}

/// A real click (mouse events at the element's centre, as a person's).
pub async fn click(page: &Page, selector: &str) -> Result<(), Error> {
    page.find_element(selector)
        .await
        .map_err(|e| Error::cdp(&format!("finding {selector}"), e))?
        .click()
        .await
        .map_err(|e| Error::cdp(&format!("clicking {selector}"), e))?;
    Ok(())
}

/// Focuses `selector` with a click and types `text` key by key.
pub async fn type_into(page: &Page, selector: &str, text: &str) -> Result<(), Error> {
    let input = page
        .find_element(selector)
        .await
        .map_err(|e| Error::cdp(&format!("finding {selector}"), e))?;
    input
        .click()
        .await
        .map_err(|e| Error::cdp(&format!("focusing {selector}"), e))?;
    input
        .type_str(text)
        .await
        .map_err(|e| Error::cdp(&format!("typing into {selector}"), e))?;
    Ok(())
}
