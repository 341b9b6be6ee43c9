//! The views. They read signals and call actions; they hold no browser handles of their own
//! (media goes through `media::attach`, connections live in the call loop and its adapters).

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use shared::{ChatEntry, ChatText, DisplayName, ErrorCode, LockState, Passcode, PeerId, RoomName};

use crate::call::{use_call, UseCall};
use crate::engine::quality::QualityView;
use crate::engine::{PeerProblem, PeerView, Phase, StreamKey, TileState};
use crate::media::{self, Device, PlayError, Pref, Preferences};
use crate::route::{use_route, Route, UseRoute};
use crate::sentences::{self, Piece};
use crate::welcome::{Header, Welcome};

#[component]
pub fn App() -> impl IntoView {
    let nav = use_route();
    // A memo, so that navigating to the page we are on does not restart the call.
    let route = Memo::new(move |_| nav.route.get());
    view! {
        <Header />
        <main>
            {move || match route.get() {
                Route::Welcome => view! {
                    <Welcome on_room=move |room: RoomName| {
                        nav.navigate(Route::Room(room.to_string()));
                        Ok(())
                    } />
                }
                .into_any(),
                Route::Room(name) => view! { <Room nav=nav name=name /> }.into_any(),
            }}
        </main>
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

/// The lobby (preview, pickers, name, Join) and then the call, sharing one call loop.
#[component]
fn Call(nav: UseRoute, room: RoomName) -> impl IntoView {
    let call = use_call(room.clone());
    let v = call.view;
    let in_lobby =
        Memo::new(move |_| matches!(v.with(|v| v.phase.clone()), Phase::Lobby | Phase::Joining));
    let room_title = room.to_string();
    view! {
        <AlertBox call=call />
        <LinkStatus call=call />
        <Notice call=call />
        <Show
            when=move || in_lobby.get()
            fallback=move || view! { <InCall call=call nav=nav room=room.to_string() /> }
        >
            <Lobby call=call room=room_title.clone() />
        </Show>
    }
}

/// The one `role="alert"` region: media problems (with Try again) and why we are not in the call.
#[component]
fn AlertBox(call: UseCall) -> impl IntoView {
    let v = call.view;
    let m = call.media;
    let call_text = move || {
        v.with(|v| {
            v.refusal
                .as_ref()
                .map(sentences::refusal)
                .or_else(|| v.problem.clone())
        })
    };
    let reload = move || {
        v.with(|v| {
            v.refusal
                .as_ref()
                .is_some_and(|r| r.code == ErrorCode::UnsupportedVersion)
        })
    };
    view! {
        <div role="alert" class="alert">
            {move || call_text().map(|text| view! {
                <span class="call-alert">{text}</span>
                {reload().then(|| view! {
                    <button id="reload" on:click=|_| {
                        if let Some(w) = web_sys::window() { let _ = w.location().reload(); }
                    }>"Reload"</button>
                })}
            })}
            {move || m.alert.get().map(|alert| view! {
                <span>{alert.text}</span>
                {alert.retry_media.then(|| view! {
                    <button id="retry-media" on:click=move |_| call.retry_media()>"Try again"</button>
                })}
            })}
        </div>
    }
}

/// `#status`: only while the server connection is being re-established (or the browser is
/// offline); the call itself goes on.
#[component]
fn LinkStatus(call: UseCall) -> impl IntoView {
    let v = call.view;
    let link = Memo::new(move |_| v.with(|v| v.link));
    view! {
        {move || sentences::link(link.get()).map(|text| {
            let state = match link.get() {
                crate::engine::Link::Offline => "offline",
                _ => "reconnecting",
            };
            view! { <p id="status" class="link-status" data-state=state role="status">{text}</p> }
        })}
    }
}

/// Polite news and what to do next, under the title.
#[component]
fn Notice(call: UseCall) -> impl IntoView {
    let v = call.view;
    let m = call.media;
    let share = web_sys::window()
        .and_then(|w| w.location().href().ok())
        .unwrap_or_default();
    let text = move || {
        let phase = v.with(|v| v.phase.clone());
        let alone = v.with(|v| v.peers.is_empty());
        let base = match phase {
            Phase::Lobby if !m.ready.get() => "Starting your camera and microphone…".to_string(),
            Phase::Lobby => "Check your camera and microphone, then join.".to_string(),
            Phase::Joining => "Joining…".to_string(),
            Phase::InCall if alone => {
                format!("Waiting for others to join. Share this link: {share}")
            }
            Phase::InCall | Phase::Left => String::new(),
        };
        match m.notice.get() {
            Some(notice) if base.is_empty() => notice,
            Some(notice) => format!("{base} {notice}"),
            None => base,
        }
    };
    view! { <p class="status" aria-live="polite">{text}</p> }
}

#[component]
fn Lobby(call: UseCall, room: String) -> impl IntoView {
    let v = call.view;
    let m = call.media;
    let prefs = Preferences::load();
    let default_name = format!("Guest {}", (js_sys::Math::random() * 90.0) as u32 + 10);
    let name_input = NodeRef::<html::Input>::new();
    let passcode_input = NodeRef::<html::Input>::new();
    let (error, set_error) = signal(None::<String>);
    let needs_passcode = move || {
        v.with(|v| {
            v.refusal.as_ref().is_some_and(|r| {
                matches!(
                    r.code,
                    ErrorCode::PasscodeRequired | ErrorCode::WrongPasscode
                )
            })
        })
    };
    let joining = move || v.with(|v| v.phase == Phase::Joining);
    let default_for_join = default_name.clone();
    let join = move |ev: SubmitEvent| {
        ev.prevent_default();
        let typed = name_input.get().map(|i| i.value()).unwrap_or_default();
        let typed = typed.trim();
        let name = if typed.is_empty() {
            default_for_join.as_str()
        } else {
            typed
        };
        let name = match DisplayName::new(name) {
            Ok(name) => name,
            Err(err) => {
                set_error.set(Some(format!("Please choose another name: {err}.")));
                return;
            }
        };
        if !typed.is_empty() {
            Preferences::remember(Pref::Name, Some(name.as_str()));
        }
        let passcode = passcode_input
            .get()
            .map(|i| i.value())
            .filter(|p| !p.is_empty())
            .map(Passcode::new);
        let passcode = match passcode.transpose() {
            Ok(passcode) => passcode,
            Err(err) => {
                set_error.set(Some(format!("Please check the passcode: {err}.")));
                return;
            }
        };
        set_error.set(None);
        call.join(name, passcode);
    };
    view! {
        <section id="lobby">
            <h1 class="room">{room}</h1>
            <div class="lobby-grid">
                <SelfTile call=call />
                <form class="lobby-side" on:submit=join>
                    <label class="field">
                        <span>"Your name"</span>
                        <input id="name" type="text" maxlength="32" autocomplete="nickname"
                            placeholder=default_name.clone()
                            prop:value=prefs.name.clone().unwrap_or_default()
                            node_ref=name_input />
                    </label>
                    <label class="field" class:attention=needs_passcode>
                        <span>"Room passcode (if it has one, or to lock a new room)"</span>
                        <input id="passcode" type="password" maxlength="64" autocomplete="off"
                            node_ref=passcode_input />
                    </label>
                    <Pickers call=call />
                    <div class="controls">
                        <MuteButton call=call />
                        <CameraButton call=call />
                    </div>
                    <p class="field-error" role="status">{move || error.get()}</p>
                    <button id="join" type="submit" class="primary"
                        disabled=move || !m.ready.get() || joining()>
                        {move || if joining() { "Joining…" } else { "Join" }}
                    </button>
                </form>
            </div>
        </section>
    }
}

#[component]
fn InCall(call: UseCall, nav: UseRoute, room: String) -> impl IntoView {
    let v = call.view;
    let start_playback = move |_| {
        let blocked = call.playback_blocked;
        leptos::task::spawn_local(async move {
            if media::play_all().await.is_ok() {
                let _ = blocked.try_set(false);
            }
        });
    };
    let phase = move || match v.with(|v| v.phase.clone()) {
        Phase::InCall => "inroom",
        Phase::Joining => "joining",
        Phase::Lobby => "lobby",
        Phase::Left => "left",
    };
    let count = move || v.with(|v| v.peers.len()).to_string();
    let has_screen = move || v.with(|v| v.peers.iter().any(|p| p.screen.is_some()));
    // One tile per person, kept when their stream arrives (the tile follows it): building a
    // new tile then would hold up the page just as the connection is being set up.
    let peer_keys = move || v.with(|v| v.peers.iter().map(|p| p.id).collect::<Vec<_>>());
    let screen_keys = move || {
        v.with(|v| {
            v.peers
                .iter()
                .filter_map(|p| p.screen.map(|s| (p.id, s)))
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section id="call" data-phase=phase>
            <h1 class="room">{room}</h1>
            <Show when=move || call.playback_blocked.get()>
                <button id="start-media" class="primary" on:click=start_playback>
                    "Tap to start audio and video"
                </button>
            </Show>
            <div class="call-body">
                <div class="stage" class:has-screen=has_screen>
                    <div id="screens">
                        <For each=screen_keys key=|k| *k
                            children=move |(id, key)| view! { <ScreenTile call=call id=id key=key /> } />
                    </div>
                    <div id="peers" data-count=count>
                        <For each=peer_keys key=|k| *k
                            children=move |id| view! { <RemoteTile call=call id=id /> } />
                    </div>
                    <SelfTile call=call />
                </div>
                <ChatPanel call=call />
            </div>
            <div class="controls">
                <MuteButton call=call />
                <CameraButton call=call />
                <ShareButton call=call />
                <ChatToggle call=call />
                <LockControl call=call />
                <button id="leave" class="danger" on:click=move |_| nav.navigate(Route::Welcome)>
                    "Leave"
                </button>
            </div>
            <Pickers call=call />
        </section>
    }
}

#[component]
fn MuteButton(call: UseCall) -> impl IntoView {
    let m = call.media;
    view! {
        <button id="mute" type="button" aria-pressed=move || m.muted.get().to_string()
            disabled=move || !m.has_microphone.get()
            on:click=move |_| call.toggle_mute()>
            {move || if m.muted.get() { "Unmute" } else { "Mute" }}
        </button>
    }
}

#[component]
fn CameraButton(call: UseCall) -> impl IntoView {
    let m = call.media;
    view! {
        <button id="camera" type="button" aria-pressed=move || m.camera_off.get().to_string()
            disabled=move || !m.has_camera.get() && !m.camera_off.get()
            on:click=move |_| call.toggle_camera()>
            {move || if m.camera_off.get() { "Turn camera on" } else { "Turn camera off" }}
        </button>
    }
}

/// Absent where the browser cannot share a screen (most phones), rather than broken.
#[component]
fn ShareButton(call: UseCall) -> impl IntoView {
    let m = call.media;
    media::screen_share_supported().then(|| {
        view! {
            <button id="share" type="button" aria-pressed=move || m.sharing.get().to_string()
                on:click=move |_| call.toggle_share()>
                {move || if m.sharing.get() { "Stop sharing" } else { "Share screen" }}
            </button>
        }
    })
}

#[component]
fn ChatToggle(call: UseCall) -> impl IntoView {
    let v = call.view;
    let open = move || v.with(|v| v.chat_open);
    let unread = move || v.with(|v| v.unread);
    view! {
        <button id="chat-toggle" type="button" aria-pressed=move || open().to_string()
            aria-controls="chat" data-unread=move || unread().to_string()
            on:click=move |_| call.set_chat_open(!open())>
            "Chat"
            {move || (unread() > 0 && !open()).then(|| view! {
                <span class="unread" aria-label=format!("{} unread", unread())>{unread()}</span>
            })}
        </button>
    }
}

/// Lock the room (with a passcode, or empty: no newcomers at all) or open it again.
#[component]
fn LockControl(call: UseCall) -> impl IntoView {
    let v = call.view;
    let lock = move || v.with(|v| v.lock);
    let input = NodeRef::<html::Input>::new();
    let (error, set_error) = signal(None::<String>);
    let toggle = move |_| {
        if lock() != LockState::Open {
            call.unlock();
            return;
        }
        let typed = input.get().map(|i| i.value()).unwrap_or_default();
        match Passcode::new(typed) {
            Ok(passcode) => {
                set_error.set(None);
                if let Some(i) = input.get() {
                    i.set_value("");
                }
                call.lock(passcode);
            }
            Err(err) => set_error.set(Some(format!("Please check the passcode: {err}."))),
        }
    };
    let label = move || match lock() {
        LockState::Open => "Lock room",
        LockState::Passcode | LockState::Closed => "Unlock room",
    };
    let state = move || match lock() {
        LockState::Open => "Anyone with the link can join.",
        LockState::Passcode => "Locked: newcomers need the passcode.",
        LockState::Closed => "Locked: no newcomers.",
    };
    view! {
        <div class="lock" data-lock=move || lock().as_str()>
            <Show when=move || lock() == LockState::Open>
                <input id="lock-passcode" type="password" maxlength="64" autocomplete="off"
                    aria-label="Passcode for the room (leave empty to let nobody new in)"
                    placeholder="passcode (empty: no newcomers)" node_ref=input />
            </Show>
            <button id="lock" type="button" aria-pressed=move || (lock() != LockState::Open).to_string()
                on:click=toggle>{label}</button>
            <span class="lock-state">{state}</span>
            <span class="field-error">{move || error.get()}</span>
        </div>
    }
}

/// Camera, microphone and (where the browser can route audio) speaker pickers.
#[component]
fn Pickers(call: UseCall) -> impl IntoView {
    let m = call.media;
    let speakers_supported = media::speaker_choice_supported();
    view! {
        <div class="pickers">
            <Picker id="cameras" label="Camera" none="No camera found"
                options=Signal::derive(move || m.devices.with(|d| d.cameras.clone()))
                selected=m.camera_id.into()
                on_pick=Callback::new(move |id| call.select_camera(id)) />
            <Picker id="microphones" label="Microphone" none="No microphone found"
                options=Signal::derive(move || m.devices.with(|d| d.microphones.clone()))
                selected=m.microphone_id.into()
                on_pick=Callback::new(move |id| call.select_microphone(id)) />
            <Show when=move || speakers_supported>
                <Picker id="speakers" label="Speaker" none="System default"
                    options=Signal::derive(move || m.devices.with(|d| d.speakers.clone()))
                    selected=m.speaker_id.into()
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
    let m = call.media;
    let video = NodeRef::<html::Video>::new();
    Effect::new(move |_| {
        let stream = m.preview.get();
        if let Some(el) = video.get() {
            leptos::task::spawn_local(async move {
                // Our own muted preview may always autoplay; a failure here changes nothing.
                let _ = media::attach(&el, stream.as_ref()).await;
            });
        }
    });
    let camera_off = move || m.camera_off.get() || m.preview.with(Option::is_none);
    view! {
        <div class="tile self" data-camera-off=move || camera_off().to_string()
            data-muted=move || m.muted.get().to_string()>
            // `prop:muted`: the attribute alone leaves the property false on a created element.
            <video id="myFace" autoplay playsinline prop:muted=true node_ref=video></video>
            <div class="placeholder" aria-hidden="true">"Camera off"</div>
            <span class="label">"You"<span class="muted-icon">" · muted"</span></span>
        </div>
    }
}

/// Attaches the stream `key` (looked up when it changes) to `video`, reporting an autoplay
/// refusal.
fn play_into(
    call: UseCall,
    video: NodeRef<html::Video>,
    key: impl Fn() -> Option<StreamKey> + 'static,
) {
    Effect::new(move |_| {
        let Some(el) = video.get() else {
            return;
        };
        let stream = key().and_then(|k| call.stream(k));
        leptos::task::spawn_local(async move {
            if let Err(PlayError::NeedsGesture) = media::attach(&el, stream.as_ref()).await {
                let _ = call.playback_blocked.try_set(true);
            }
        });
    });
    Effect::new(move |_| {
        let speaker = call.media.speaker_id.get().unwrap_or_default();
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
}

#[component]
fn RemoteTile(call: UseCall, id: PeerId) -> impl IntoView {
    let v = call.view;
    let video = NodeRef::<html::Video>::new();
    let key =
        Memo::new(move |_| v.with(|v| v.peers.iter().find(|p| p.id == id).and_then(|p| p.stream)));
    play_into(call, video, move || key.get());
    let peer = Memo::new(move |_| v.with(|v| v.peers.iter().find(|p| p.id == id).cloned()));
    let with = move |f: fn(&PeerView) -> String| {
        move || peer.with(|p| p.as_ref().map(f).unwrap_or_default())
    };
    let (details_open, set_details_open) = signal(false);
    view! {
        <div class="tile"
            data-muted=with(|p| p.media.muted.to_string())
            data-camera-off=with(|p| p.media.camera_off.to_string())
            data-connection=with(|p| match p.tile {
                TileState::Connecting => "connecting",
                TileState::Connected => "connected",
                TileState::Reconnecting => "reconnecting",
            }.to_string())
            data-quality=move || peer.with(|p| p.as_ref().and_then(|p| p.quality.as_ref()).map(|q| q.quality.as_str()))
            data-route=move || peer.with(|p| p.as_ref().and_then(|p| p.route).map(|r| r.as_str()))
            data-problem=move || peer.with(|p| p.as_ref().and_then(|p| p.problem).map(PeerProblem::as_str))>
            <video data-peer=id.to_string() data-source="camera" autoplay playsinline node_ref=video></video>
            <div class="placeholder" aria-hidden="true">"Camera off"</div>
            <span class="label">
                <span class="name">{with(|p| p.name.to_string())}</span>
                <span class="muted-icon">" · muted"</span>
                <span class="tile-state">{with(|p| sentences::tile(p.tile).to_string())}</span>
            </span>
            <button type="button" class="quality" aria-expanded=move || details_open.get().to_string()
                aria-label=move || peer.with(|p| p.as_ref().and_then(|p| p.quality.as_ref())
                    .map(|q| format!("Connection {}; show details", q.quality.as_str()))
                    .unwrap_or_else(|| "Connection: measuring".into()))
                on:click=move |_| set_details_open.update(|o| *o = !*o)>
                <span class="bars" aria-hidden="true"></span>
            </button>
            <Show when=move || details_open.get()>
                <QualityDetails peer=peer />
            </Show>
            {move || peer.with(|p| p.as_ref().and_then(|p| {
                let name = p.name.to_string();
                let text = match (p.problem, p.sending_reduced) {
                    (Some(problem), _) => sentences::problem(problem, &name),
                    (None, true) => format!("{name}'s connection is poor: sending them lower-quality video."),
                    (None, false) => return None,
                };
                Some(view! { <p class="tile-problem" role="status">{text}</p> })
            }))}
        </div>
    }
}

/// The numbers behind the quality indicator.
#[component]
fn QualityDetails(peer: Memo<Option<PeerView>>) -> impl IntoView {
    let q = move || peer.with(|p| p.as_ref().and_then(|p| p.quality.clone()));
    let route = move || {
        peer.with(|p| {
            p.as_ref()
                .and_then(|p| p.route)
                .map_or("unknown", |r| match r {
                    crate::engine::quality::Route::Direct => "direct",
                    crate::engine::quality::Route::Relay => "relayed (TURN)",
                })
        })
    };
    let row =
        |f: fn(&QualityView) -> String| move || q().as_ref().map(f).unwrap_or_else(|| "…".into());
    view! {
        <dl class="quality-details">
            <dt>"Route"</dt><dd>{route}</dd>
            <dt>"Round trip"</dt><dd>{row(|q| q.rtt_ms.map_or("…".into(), |r| format!("{r:.0} ms")))}</dd>
            <dt>"Loss in / out"</dt><dd>{row(|q| format!("{:.1} % / {:.1} %", q.loss_in * 100.0, q.loss_out * 100.0))}</dd>
            <dt>"Receiving"</dt><dd>{row(|q| format!("{:.0} kbit/s", q.bitrate_in_bps / 1000.0))}</dd>
            <dt>"Sending"</dt><dd>{row(|q| format!("{:.0} kbit/s", q.bitrate_out_bps / 1000.0))}</dd>
            <dt>"Video"</dt><dd>{row(|q| match (q.frame_width, q.frame_height) {
                (Some(w), Some(h)) => format!("{w}×{h} at {:.0} fps", q.frames_per_second.unwrap_or(0.0)),
                _ => "none".into(),
            })}</dd>
            <dt>"Candidates"</dt><dd>{row(|q| format!("{} ↔ {}",
                q.local_candidate.map_or("?", |c| c.as_str()),
                q.remote_candidate.map_or("?", |c| c.as_str())))}</dd>
        </dl>
    }
}

#[component]
fn ScreenTile(call: UseCall, id: PeerId, key: StreamKey) -> impl IntoView {
    let v = call.view;
    let video = NodeRef::<html::Video>::new();
    play_into(call, video, move || Some(key));
    let name = move || {
        v.with(|v| {
            v.peers
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.to_string())
                .unwrap_or_default()
        })
    };
    view! {
        <div class="tile screen">
            <video data-peer=id.to_string() data-source="screen" autoplay playsinline prop:muted=true node_ref=video></video>
            <span class="label">{move || format!("{}'s screen", name())}</span>
        </div>
    }
}

#[component]
fn ChatPanel(call: UseCall) -> impl IntoView {
    let v = call.view;
    let input = NodeRef::<html::Input>::new();
    let log = NodeRef::<html::Ol>::new();
    let (error, set_error) = signal(None::<String>);
    let entries = Memo::new(move |_| v.with(|v| v.chat.clone()));
    Effect::new(move |_| {
        entries.track();
        if let Some(log) = log.get() {
            log.set_scroll_top(log.scroll_height());
        }
    });
    let send = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(field) = input.get() else {
            return;
        };
        let typed = field.value();
        if typed.trim().is_empty() {
            return;
        }
        match ChatText::new(typed) {
            Ok(text) => {
                set_error.set(None);
                field.set_value("");
                call.send_chat(text);
            }
            Err(err) => set_error.set(Some(format!("Not sent: {err}."))),
        }
    };
    let indexed = move || {
        let list: Vec<(usize, ChatEntry)> = entries.get().into_iter().enumerate().collect();
        list
    };
    view! {
        <section id="chat" data-open=move || v.with(|v| v.chat_open).to_string() aria-label="Chat">
            <ol id="chat-log" node_ref=log>
                <For each=indexed
                    key=|(i, e)| (*i, e.at, e.from)
                    children=move |(_, entry)| view! { <ChatLine entry=entry /> } />
            </ol>
            <form on:submit=send>
                <input type="text" name="text" maxlength="2048" autocomplete="off"
                    aria-label="Message" placeholder="Message everyone" node_ref=input />
                <button type="submit">"Send"</button>
            </form>
            <p class="field-error" role="status">{move || error.get()}</p>
        </section>
    }
}

#[component]
fn ChatLine(entry: ChatEntry) -> impl IntoView {
    let date = js_sys::Date::new(&(entry.at as f64).into());
    let time = format!("{:02}:{:02}", date.get_hours(), date.get_minutes());
    // Text nodes only: whatever the message holds is shown, never interpreted as HTML.
    let pieces = sentences::linkify(entry.text.as_str())
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => view! { <span>{text}</span> }.into_any(),
            Piece::Link(url) => {
                let href = url.clone();
                view! { <a href=href target="_blank" rel="noopener noreferrer">{url}</a> }
            }
            .into_any(),
        })
        .collect_view();
    view! {
        <li data-from=entry.from.to_string()>
            <span class="from">{entry.name.to_string()}</span>
            <time>{time}</time>
            <span class="text">{pieces}</span>
        </li>
    }
}
