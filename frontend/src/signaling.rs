//! The websocket to the server (`/ws` on the page's own host): the only module that touches
//! `WebSocket`. A [`Socket`] owns the browser socket and its listeners; it reports what happens
//! as call-core events and closes the socket when dropped. The core decides when to connect,
//! reconnect or give up; this module only carries bytes.

use gloo_events::EventListener;
use shared::{ClientMessage, ServerMessage};
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::engine::{Event, SocketClose};

/// Why the websocket could not even be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignalingError {
    #[error("the page address cannot be read")]
    NoLocation,
    #[error("the browser refused to open a connection to {0}")]
    Refused(String),
}

/// `ws://host/ws` or `wss://host/ws`, matching how the page itself was loaded.
pub fn server_url() -> Result<String, SignalingError> {
    let location = web_sys::window()
        .ok_or(SignalingError::NoLocation)?
        .location();
    let protocol = location
        .protocol()
        .map_err(|_| SignalingError::NoLocation)?;
    let host = location.host().map_err(|_| SignalingError::NoLocation)?;
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}/ws"))
}

/// Whether the server runs on this machine (the page came from a loopback host). The browser's
/// online/offline state then says nothing about reaching it: with Wi-Fi off, or in a sandbox
/// with only loopback, `navigator.onLine` is false and 127.0.0.1 still answers.
pub fn server_is_local() -> bool {
    web_sys::window()
        .and_then(|w| w.location().hostname().ok())
        .is_some_and(|host| is_loopback_host(&host))
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = host.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One open (or opening) websocket. Dropping it closes the socket (1000) and removes the
/// listeners, so a replaced socket can report nothing more.
pub struct Socket {
    ws: WebSocket,
    _listeners: [EventListener; 4],
}

impl Socket {
    /// Opens `url`; `emit` receives `SignalingOpened`, each `Server` message and one
    /// `SignalingClosed`.
    pub fn open(url: &str, emit: impl Fn(Event) + Clone + 'static) -> Result<Self, SignalingError> {
        let ws = WebSocket::new(url).map_err(|_| SignalingError::Refused(url.to_string()))?;
        let opened = {
            let emit = emit.clone();
            EventListener::new(&ws, "open", move |_| emit(Event::SignalingOpened))
        };
        let message = {
            let emit = emit.clone();
            EventListener::new(&ws, "message", move |event| {
                let Some(text) = event
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string())
                else {
                    return;
                };
                match ServerMessage::from_json(&text) {
                    Ok(message) => emit(Event::Server(message)),
                    // A newer server's message type: not ours to understand.
                    Err(err) => {
                        web_sys::console::warn_1(&format!("ignored a server message: {err}").into())
                    }
                }
            })
        };
        let closed = {
            let emit = emit.clone();
            EventListener::new(&ws, "close", move |event| {
                let (code, reason) = event
                    .dyn_ref::<CloseEvent>()
                    .map(|c| (c.code(), c.reason()))
                    .unwrap_or((1006, String::new()));
                emit(Event::SignalingClosed(SocketClose { code, reason }));
            })
        };
        // An error is always followed by a close event, which carries what we need.
        let error = EventListener::new(&ws, "error", |_| {});
        Ok(Self {
            ws,
            _listeners: [opened, message, closed, error],
        })
    }

    /// Sends now if the socket is open; false if it is not (the core keeps what matters).
    pub fn send(&self, message: &ClientMessage) -> bool {
        self.ws.ready_state() == WebSocket::OPEN
            && self.ws.send_with_str(&message.to_json()).is_ok()
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = self.ws.close_with_code_and_reason(1000, "left");
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "app.localhost",
            "127.0.0.1",
            "127.8.9.1",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "noom.example",
            "192.168.1.20",
            "[2001:db8::1]",
            "localhost.example",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
