//! The views. They read signals and call actions; they hold no browser handles of their own
//! (media goes through `media::attach`, connections live in the call controller).

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use shared::{PeerId, RoomName};

use crate::call::{use_call, Phase, RemotePeer, UseCall};
use crate::media::{self, Device, PlayError, Stream};
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

/// The lobby (preview, pickers, Join) and then the call, sharing one controller.
#[component]
fn Call(nav: UseRoute, room: RoomName) -> impl IntoView {
    let call = use_call(room.clone());
    let s = call.state;
    let share = web_sys::window()
        .and_then(|w| w.location().href().ok())
        .unwrap_or_default();
    let status = move || {
        let text = match s.phase.get() {
            Phase::StartingMedia => "Starting your camera and microphone…".to_string(),
            Phase::Lobby => "Check your camera and microphone, then join.".to_string(),
            Phase::Joining => "Connecting…".to_string(),
            Phase::InRoom if s.peers.with(Vec::is_empty) => {
                format!("Waiting for someone to join. Share this link: {share}")
            }
            Phase::InRoom => String::new(),
            Phase::Failed => "You are not in the call.".to_string(),
        };
        match s.notice.get() {
            Some(notice) if text.is_empty() => notice,
            Some(notice) => format!("{text} {notice}"),
            None => text,
        }
    };
    let in_lobby = move || matches!(s.phase.get(), Phase::StartingMedia | Phase::Lobby);
    let room_title = room.to_string();
    view! {
        <AlertBox call=call />
        <p class="status" aria-live="polite">{status}</p>
        <Show
            when=in_lobby
            fallback=move || view! { <InCall call=call nav=nav room=room.to_string() /> }
        >
            <section id="lobby">
                <h1 class="room">{room_title.clone()}</h1>
                <div class="lobby-grid">
                    <SelfTile call=call />
                    <div class="lobby-side">
                        <Pickers call=call />
                        <div class="controls">
                            <MuteButton call=call />
                            <CameraButton call=call />
                        </div>
                        <button id="join" class="primary"
                            disabled=move || s.phase.get() != Phase::Lobby
                            on:click=move |_| call.join()>
                            "Join"
                        </button>
                    </div>
                </div>
            </section>
        </Show>
    }
}

#[component]
fn AlertBox(call: UseCall) -> impl IntoView {
    let s = call.state;
    view! {
        <div role="alert" class="alert">
            {move || s.alert.get().map(|alert| view! {
                <span>{alert.text}</span>
                {alert.retry_media.then(|| view! {
                    <button id="retry-media" on:click=move |_| call.retry_media()>"Try again"</button>
                })}
            })}
        </div>
    }
}

#[component]
fn InCall(call: UseCall, nav: UseRoute, room: String) -> impl IntoView {
    let s = call.state;
    let start_playback = move |_| {
        leptos::task::spawn_local(async move {
            if media::play_all().await.is_ok() {
                let _ = s.playback_blocked.try_set(false);
            }
        });
    };
    view! {
        <section id="call" data-phase=move || format!("{:?}", s.phase.get()).to_lowercase()>
            <h1 class="room">{room}</h1>
            <Show when=move || s.playback_blocked.get()>
                <button id="start-media" class="primary" on:click=start_playback>
                    "Tap to start audio and video"
                </button>
            </Show>
            <div class="stage">
                <div id="peers">
                    <For
                        each=move || s.peers.get()
                        key=|p: &RemotePeer| (p.id, p.stream.as_ref().map(Stream::id))
                        children=move |peer: RemotePeer| view! {
                            <RemoteTile call=call id=peer.id stream=peer.stream />
                        }
                    />
                </div>
                <SelfTile call=call />
            </div>
            <div class="controls">
                <MuteButton call=call />
                <CameraButton call=call />
                <button id="leave" class="danger" on:click=move |_| nav.navigate(Route::Welcome)>
                    {move || if s.phase.get() == Phase::Failed { "Back to start" } else { "Leave" }}
                </button>
            </div>
            <Pickers call=call />
        </section>
    }
}

#[component]
fn MuteButton(call: UseCall) -> impl IntoView {
    let s = call.state;
    view! {
        <button id="mute" aria-pressed=move || s.muted.get().to_string()
            disabled=move || !s.has_microphone.get()
            on:click=move |_| call.toggle_mute()>
            {move || if s.muted.get() { "Unmute" } else { "Mute" }}
        </button>
    }
}

#[component]
fn CameraButton(call: UseCall) -> impl IntoView {
    let s = call.state;
    view! {
        <button id="camera" aria-pressed=move || s.camera_off.get().to_string()
            disabled=move || !s.has_camera.get()
            on:click=move |_| call.toggle_camera()>
            {move || if s.camera_off.get() { "Turn camera on" } else { "Turn camera off" }}
        </button>
    }
}

/// Camera, microphone and (where the browser can route audio) speaker pickers.
#[component]
fn Pickers(call: UseCall) -> impl IntoView {
    let s = call.state;
    let speakers_supported = media::speaker_choice_supported();
    view! {
        <div class="pickers">
            <Picker id="cameras" label="Camera" none="No camera found"
                options=Signal::derive(move || s.devices.with(|d| d.cameras.clone()))
                selected=s.camera_id.into()
                on_pick=Callback::new(move |id| call.select_camera(id)) />
            <Picker id="microphones" label="Microphone" none="No microphone found"
                options=Signal::derive(move || s.devices.with(|d| d.microphones.clone()))
                selected=s.microphone_id.into()
                on_pick=Callback::new(move |id| call.select_microphone(id)) />
            <Show when=move || speakers_supported>
                <Picker id="speakers" label="Speaker" none="System default"
                    options=Signal::derive(move || s.devices.with(|d| d.speakers.clone()))
                    selected=s.speaker_id.into()
                    on_pick=Callback::new(move |id| call.select_speaker(id)) />
            </Show>
        </div>
    }
}

#[component]
fn Picker(
    id: &'static str,
    label: &'static str,
    none: &'static str,
    options: Signal<Vec<Device>>,
    selected: Signal<Option<String>>,
    on_pick: Callback<String>,
) -> impl IntoView {
    view! {
        <label class="picker">
            <span>{label}</span>
            <select id=id disabled=move || options.with(Vec::is_empty)
                on:change=move |ev| on_pick.run(event_target_value(&ev))>
                <Show when=move || options.with(Vec::is_empty)>
                    <option value="">{none}</option>
                </Show>
                <For
                    each=move || options.get()
                    key=|d| (d.id.clone(), d.label.clone())
                    children=move |d| {
                        let id = d.id.clone();
                        view! {
                            <option value=d.id.clone()
                                prop:selected=move || selected.get().as_deref() == Some(id.as_str())>
                                {d.label}
                            </option>
                        }
                    }
                />
            </select>
        </label>
    }
}

/// Our own preview: muted (no echo), mirrored, a placeholder while the camera is off.
#[component]
fn SelfTile(call: UseCall) -> impl IntoView {
    let s = call.state;
    let video = NodeRef::<html::Video>::new();
    Effect::new(move |_| {
        let stream = s.preview.get();
        if let Some(el) = video.get() {
            leptos::task::spawn_local(async move {
                // Our own muted preview may always autoplay; a failure here changes nothing.
                let _ = media::attach(&el, stream.as_ref()).await;
            });
        }
    });
    let camera_off = move || s.camera_off.get() || s.preview.with(Option::is_none);
    view! {
        <div class="tile self" data-camera-off=move || camera_off().to_string()
            data-muted=move || s.muted.get().to_string()>
            // `prop:muted`: the attribute alone leaves the property false on a created element.
            <video id="myFace" autoplay playsinline prop:muted=true node_ref=video></video>
            <div class="placeholder" aria-hidden="true">"Camera off"</div>
            <span class="label">"You"<span class="muted-icon">" · muted"</span></span>
        </div>
    }
}

#[component]
fn RemoteTile(call: UseCall, id: PeerId, stream: Option<Stream>) -> impl IntoView {
    let s = call.state;
    let video = NodeRef::<html::Video>::new();
    Effect::new(move |_| {
        let Some(el) = video.get() else {
            return;
        };
        let stream = stream.clone();
        leptos::task::spawn_local(async move {
            if let Err(PlayError::NeedsGesture) = media::attach(&el, stream.as_ref()).await {
                let _ = s.playback_blocked.try_set(true);
            }
        });
    });
    Effect::new(move |_| {
        let speaker = s.speaker_id.get().unwrap_or_default();
        let Some(el) = video.get() else {
            return;
        };
        if media::speaker_choice_supported() {
            leptos::task::spawn_local(async move {
                if let Err(err) = media::set_speaker(&el, &speaker).await {
                    web_sys::console::warn_1(&format!("cannot use that speaker: {err:?}").into());
                }
            });
        }
    });
    let info = move || {
        s.peers.with(|list| {
            list.iter()
                .find(|p| p.id == id)
                .map(|p| (p.muted, p.camera_off, p.connection.clone()))
                .unwrap_or_default()
        })
    };
    view! {
        <div class="tile" data-muted=move || info().0.to_string()
            data-camera-off=move || info().1.to_string()
            data-connection=move || info().2>
            <video data-peer=id.to_string() autoplay playsinline node_ref=video></video>
            <div class="placeholder" aria-hidden="true">"Camera off"</div>
            <span class="label">{format!("Participant {id}")}<span class="muted-icon">" · muted"</span></span>
        </div>
    }
}
