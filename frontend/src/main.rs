//! Noom's browser app. Module map (see ARCHITECTURE.md):
//! - `app`: the views (welcome form, call); signals in, actions out, no browser handles.
//! - `call`: one call's controller task and its signals (`use_call`).
//! - `media`: the only module that touches `navigator.mediaDevices`.
//! - `peer`: the only module that touches `RTCPeerConnection`.
//! - `signaling`: the websocket to the server.
//! - `route`: `/` and `/r/<room>`, kept in the address bar.

mod app;
mod call;
mod media;
mod peer;
mod route;
mod signaling;

fn main() {
    // A panic would otherwise be an empty page with nothing in the console.
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
