//! The welcome form at `/`: a room name in, a room to go to out. The whole app shows it when
//! the person goes back to `/` (no reload); `bin/welcome.rs` mounts it alone as the first page,
//! which the server sends for `/` so that a first visit loads this form and not the call (see
//! ARCHITECTURE.md, "Two entry pages"); there, once the person starts typing a room name, the
//! browser fetches the whole app ahead, so that the room opens from its cache.

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use shared::RoomName;

use crate::route::{self, Route, RouteError};

/// The bar at the top of every page.
#[component]
pub fn Header() -> impl IntoView {
    view! {
        <header class="top">
            <a href="/" class="brand">"Noom"</a>
        </header>
    }
}

/// The form. `on_room` goes to the chosen room, or says why it cannot.
#[component]
pub fn Welcome(#[prop(into)] on_room: Callback<RoomName, Result<(), RouteError>>) -> impl IntoView {
    let (error, set_error) = signal(None::<String>);
    let input = NodeRef::<html::Input>::new();
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let value = input.get().map(|i| i.value()).unwrap_or_default();
        let message = match RoomName::new(value.trim()) {
            Ok(room) => on_room
                .run(room)
                .err()
                .map(|err| format!("The room cannot be opened: {err}.")),
            Err(err) => Some(format!("Please choose another room name: {err}.")),
        };
        set_error.set(message);
    };
    view! {
        <section id="welcome">
            <h1>"Video calls, peer to peer"</h1>
            <p>"Pick a room name and share the link: whoever opens it joins you."</p>
            <form on:submit=on_submit>
                <label for="room-name">"Room name"</label>
                <input id="room-name" type="text" name="room" placeholder="room name" required
                    maxlength="64" autocomplete="off" node_ref=input />
                <button type="submit">"Enter room"</button>
            </form>
            <p role="alert" class="alert">{move || error.get()}</p>
        </section>
    }
}

/// The first page on its own: choosing a room loads the whole app at the room's address, which
/// the browser starts fetching once the person starts typing.
#[component]
pub fn WelcomePage() -> impl IntoView {
    route::prefetch_app_when_typing();
    view! {
        <Header />
        <main>
            <Welcome
                on_room=move |room: RoomName| route::load(&Route::Room(room.to_string()))
            />
        </main>
    }
}
