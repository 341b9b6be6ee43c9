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
