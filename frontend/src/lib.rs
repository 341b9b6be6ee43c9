//! Noom's browser app, as a library for its two entry pages (see ARCHITECTURE.md, "Two entry
//! pages"): `main.rs` mounts the whole app, `bin/welcome.rs` only the welcome form, the first
//! page a visitor to `/` loads. Module map:
//! - `engine`: the call core, sans I/O: events in, effects out, the view model. Tested natively.
//! - `call`: the loop that runs the core against the adapters (`use_call`).
//! - `signaling`: the websocket to the server.
//! - `peer`: the only module that touches `RTCPeerConnection` (one task per connection).
//! - `media`: the only module that touches `navigator.mediaDevices`.
//! - `local`: our own camera, microphone and screen, as the person and the devices change them.
//! - `app`: the views; signals in, actions out, no browser handles.
//! - `sentences`: what the person reads, for every state.
//! - `welcome`: the welcome form, shared by both pages.
//! - `route`: `/` and `/r/<room>`, kept in the address bar.

mod app;
mod call;
mod engine;
mod local;
mod media;
mod peer;
mod route;
mod sentences;
mod signaling;
mod welcome;

/// The whole app: the welcome form, the lobby and the call.
pub fn start_app() {
    // A panic would otherwise be an empty page with nothing in the console.
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

/// The first page alone: the welcome form, which loads the whole app at the room's address.
pub fn start_welcome() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(welcome::WelcomePage);
}
