//! The app's two places: the welcome form at `/` and a call at `/r/<room>`. Parsing is pure (and
//! unit-tested natively); `use_route` ties it to the address bar with pushState and popstate.

use gloo_events::EventListener;
use leptos::prelude::*;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are in a room's path segment; everything else is percent-encoded,
/// so any valid room name ("a/b", "팀 회의", "100%") survives the round trip.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Welcome,
    /// The raw (decoded) room name; validated by the room view, which can explain a bad one.
    Room(String),
}

impl Route {
    pub fn parse(path: &str) -> Route {
        match path.strip_prefix("/r/") {
            Some(encoded) if !encoded.is_empty() => {
                let name = percent_decode_str(encoded.trim_end_matches('/')).decode_utf8_lossy();
                Route::Room(name.into_owned())
            }
            _ => Route::Welcome,
        }
    }

    pub fn path(&self) -> String {
        match self {
            Route::Welcome => "/".to_string(),
            Route::Room(name) => format!("/r/{}", utf8_percent_encode(name, SEGMENT)),
        }
    }
}

/// Why the browser would not go to a page.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("this page has no window")]
    NoWindow,
    #[error("the browser refused to open {0}")]
    Refused(String),
}

/// Loads `to` as a new page (the whole app, when leaving the first page for a room).
pub fn load(to: &Route) -> Result<(), RouteError> {
    let window = web_sys::window().ok_or(RouteError::NoWindow)?;
    let path = to.path();
    match window.location().assign(&path) {
        Ok(()) => Ok(()),
        Err(_) => Err(RouteError::Refused(path)),
    }
}

thread_local! {
    /// The first page's listener for the first keystroke (see [`prefetch_app_when_typing`]),
    /// owned here for the page's lifetime (the browser removes it once it has fired).
    static TYPING: std::cell::RefCell<Option<EventListener>> = const { std::cell::RefCell::new(None) };
}

/// On the first page: once the person starts typing (the first `input` event anywhere in the
/// page, that is the room name), fetch the whole app ahead ([`prefetch_app`]).
pub fn prefetch_app_when_typing() {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let listener = EventListener::once(&document, "input", |_| prefetch_app());
    TYPING.with(|typing| *typing.borrow_mut() = Some(listener));
}

/// Has the browser fetch the whole app's files (its script and wasm) into its cache, as the
/// first page names them in its `<meta name="noom-app">` (scripts/welcome-page.sh writes it):
/// `<link rel="prefetch">` for each, so that loading a room then waits for none of them. Does
/// nothing where there is no such tag (the whole app itself, development builds). A prefetch
/// is only a hint: if the browser cannot, the room loads them as usual.
pub fn prefetch_app() {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Some(files) = document
        .query_selector("meta[name=noom-app]")
        .ok()
        .flatten()
        .and_then(|meta| meta.get_attribute("content"))
    else {
        return;
    };
    let Some(head) = document.head() else {
        return;
    };
    // Names of files beside the page, nothing else (the tag is ours, but a path stays a path).
    for file in files
        .split(' ')
        .filter(|f| !f.is_empty() && !f.contains(['/', ':']))
    {
        let Ok(link) = document.create_element("link") else {
            return;
        };
        let mut href = String::with_capacity(file.len() + 1);
        href.push('/');
        href.push_str(file);
        let set = link
            .set_attribute("rel", "prefetch")
            .and_then(|()| link.set_attribute("href", &href))
            .and_then(|()| link.set_attribute("crossorigin", "anonymous"));
        if set.is_ok() {
            let _ = head.append_child(&link);
        }
    }
}

/// The current route as a signal, and a way to go somewhere else (adds a history entry).
#[derive(Clone, Copy)]
pub struct UseRoute {
    pub route: ReadSignal<Route>,
    set_route: WriteSignal<Route>,
}

impl UseRoute {
    pub fn navigate(&self, to: Route) {
        if let Some(window) = web_sys::window() {
            if let Ok(history) = window.history() {
                // pushState only fails for cross-origin URLs, which a path never is.
                let _ =
                    history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&to.path()));
            }
        }
        self.set_route.set(to);
    }
}

pub fn use_route() -> UseRoute {
    let current = web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_default();
    let (route, set_route) = signal(Route::parse(&current));
    if let Some(window) = web_sys::window() {
        let listener = EventListener::new(&window, "popstate", move |_| {
            let path = web_sys::window()
                .and_then(|w| w.location().pathname().ok())
                .unwrap_or_default();
            set_route.set(Route::parse(&path));
        });
        // The app-level listener lives as long as the app; owning it in a StoredValue drops it
        // (removing the listener) if the app is ever unmounted.
        StoredValue::new_local(listener);
    }
    UseRoute { route, set_route }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(Route::parse("/"), Route::Welcome);
        assert_eq!(Route::parse("/r/"), Route::Welcome);
        assert_eq!(Route::parse("/other"), Route::Welcome);
        assert_eq!(Route::parse("/r/standup"), Route::Room("standup".into()));
        assert_eq!(Route::parse("/r/standup/"), Route::Room("standup".into()));
        assert_eq!(
            Route::parse("/r/team%20sync"),
            Route::Room("team sync".into())
        );
    }

    #[test]
    fn room_paths_round_trip() {
        for name in ["standup", "team sync", "a/b", "100%", "팀 회의", "x?y#z"] {
            let path = Route::Room(name.into()).path();
            assert!(!path[3..].contains('/'), "{path}");
            assert_eq!(Route::parse(&path), Route::Room(name.into()), "{path}");
        }
        assert_eq!(Route::Welcome.path(), "/");
    }
}
