//! The views. They read signals and call actions; they hold no browser handles of their own
//! (media goes through `media::attach`, connections live in the call controller).

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use shared::RoomName;

use crate::call::{use_call, Phase, RemotePeer, UseCall};
use crate::media::{self, Stream};
use crate::route::{use_route, Route, UseRoute};

#[component]
pub fn App() -> impl IntoView {
    let nav = use_route();
    // A memo, so that navigating to the page we are on does not restart the call.
    let route = Memo::new(move |_| nav.route.get());
    view! {
        <header class="top">
            <a href="/" class="brand">"Noom"</a>
        </header>
        <main>
            {move || match route.get() {
                Route::Welcome => view! { <Welcome nav=nav /> }.into_any(),
                Route::Room(name) => view! { <Room nav=nav name=name /> }.into_any(),
            }}
        </main>
    }
}

#[component]
fn Welcome(nav: UseRoute) -> impl IntoView {
    let (error, set_error) = signal(None::<String>);
    let input = NodeRef::<html::Input>::new();
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let value = input.get().map(|i| i.value()).unwrap_or_default();
        match RoomName::new(value.trim()) {
            Ok(room) => nav.navigate(Route::Room(room.to_string())),
            Err(err) => set_error.set(Some(format!("Please choose another room name: {err}."))),
        }
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

#[component]
fn Room(nav: UseRoute, name: String) -> impl IntoView {
    match RoomName::new(name) {
        Ok(room) => view! { <Call nav=nav room=room /> }.into_any(),
        Err(err) => view! {
            <section id="welcome">
                <p role="alert" class="alert">{format!("This link's room name cannot be used: {err}.")}</p>
                <button on:click=move |_| nav.navigate(Route::Welcome)>"Choose a room"</button>
            </section>
        }
        .into_any(),
    }
}

#[component]
fn Call(nav: UseRoute, room: RoomName) -> impl IntoView {
    let call = use_call(room.clone());
    let s = call.state;
    let share = web_sys::window()
        .and_then(|w| w.location().href().ok())
        .unwrap_or_default();
    let status = move || match s.phase.get() {
        Phase::StartingMedia => "Starting your camera and microphone…".to_string(),
        Phase::Joining => "Connecting…".to_string(),
        Phase::InRoom if s.peers.with(Vec::is_empty) => {
            format!("Waiting for someone to join. Share this link: {share}")
        }
        Phase::InRoom => String::new(),
        Phase::Failed => "You are not in the call.".to_string(),
    };
    view! {
        <section id="call" data-phase=move || format!("{:?}", s.phase.get()).to_lowercase()>
            <h1 class="room">{room.to_string()}</h1>
            <p class="status" aria-live="polite">{status}</p>
            <p role="alert" class="alert">{move || s.alert.get()}</p>
            <div class="stage">
                <div id="peers">
                    <For
                        each=move || s.peers.get()
                        key=|p: &RemotePeer| (p.id, p.stream.as_ref().map(Stream::id))
                        children=move |peer: RemotePeer| view! { <RemoteTile peer=peer /> }
                    />
                </div>
                <div class="tile self">
                    <LocalVideo call=call />
                    <span class="label">"You"</span>
                </div>
            </div>
            <Controls call=call nav=nav />
        </section>
    }
}

#[component]
fn LocalVideo(call: UseCall) -> impl IntoView {
    let video = NodeRef::<html::Video>::new();
    let local = call.state.local;
    Effect::new(move |_| {
        if let Some(el) = video.get() {
            local.with(|stream| media::attach(&el, stream.as_ref()));
        }
    });
    // Muted so we never hear ourselves; `prop:` because the attribute alone leaves the
    // property false on a script-created element.
    view! { <video id="myFace" autoplay playsinline prop:muted=true node_ref=video></video> }
}

#[component]
fn RemoteTile(peer: RemotePeer) -> impl IntoView {
    let video = NodeRef::<html::Video>::new();
    let stream = peer.stream.clone();
    Effect::new(move |_| {
        if let Some(el) = video.get() {
            media::attach(&el, stream.as_ref());
        }
    });
    let label = format!("Participant {}", peer.id);
    view! {
        <div class="tile" data-connection=peer.connection.clone()>
            <video data-peer=peer.id.to_string() autoplay playsinline node_ref=video></video>
            <span class="label">{label}</span>
        </div>
    }
}

#[component]
fn Controls(call: UseCall, nav: UseRoute) -> impl IntoView {
    let s = call.state;
    let in_call = move || s.phase.get() != Phase::Failed;
    view! {
        <div class="controls">
            <button id="mute" aria-pressed=move || s.muted.get().to_string()
                disabled=move || s.local.with(Option::is_none)
                on:click=move |_| call.toggle_mute()>
                {move || if s.muted.get() { "Unmute" } else { "Mute" }}
            </button>
            <button id="camera" aria-pressed=move || s.camera_off.get().to_string()
                disabled=move || s.local.with(Option::is_none)
                on:click=move |_| call.toggle_camera()>
                {move || if s.camera_off.get() { "Turn camera on" } else { "Turn camera off" }}
            </button>
            <label class="picker">
                <span class="visually-hidden">"Camera"</span>
                <select id="cameras" on:change=move |ev| call.select_camera(event_target_value(&ev))>
                    <For
                        each=move || s.cameras.get()
                        key=|d| d.id.clone()
                        children=move |d| {
                            let id = d.id.clone();
                            view! {
                                <option value=d.id.clone()
                                    prop:selected=move || s.camera_id.get().as_deref() == Some(id.as_str())>
                                    {d.label}
                                </option>
                            }
                        }
                    />
                </select>
            </label>
            <button id="leave" class="danger" on:click=move |_| nav.navigate(Route::Welcome)>
                {move || if in_call() { "Leave" } else { "Back to start" }}
            </button>
        </div>
    }
}
