//! The call loop: connects the call core (`engine`) to the browser adapters. `use_call(room)`
//! starts the lobby and returns signals plus actions (the leptos-use shape); the call ends —
//! leave sent, connections closed, camera and microphone released — when the component that
//! started it is unmounted.
//!
//! ```text
//!  person ──commands──┐                      ┌── Effect::Send / Connect ──▶ signaling (WebSocket)
//!  signaling ─events──┤                      ├── Effect::CreatePeer / Peer(op) ─▶ peer tasks
//!  peer tasks ─events─┼──▶ engine::Call ─────┤      (one queue per connection, in order)
//!  local media ─Local─┤    (no I/O)          ├── Effect::SetTimer ──▶ browser timers
//!  timers, online ────┘                      └── View ──▶ signals ──▶ views (app.rs)
//! ```
//!
//! The loop never waits on the browser: effects are handed to their adapter and the loop goes
//! on. Events arrive through one bounded queue.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::mpsc::{self, Receiver, Sender};
use futures::StreamExt;
use gloo_events::EventListener;
use leptos::prelude::*;
use shared::{ChatText, ClientMessage, ConnectionId, DisplayName, Passcode, PeerId, RoomName};

use crate::engine::{
    self, Call, Command, Effect, Event, FailedOp, OpError, PeerEvent, StreamKey, TimerKind, Timing,
    View,
};
use crate::local::{self, LocalTracks, MediaCommand, MediaView, SharedTracks};
use crate::media::{Preferences, Stream};
use crate::peer::{self, PeerHandle, PeerSetup, RemoteStreams, SharedStreams};
use crate::signaling::{self, Socket};

/// Events that may wait for the loop. The loop handles each in microseconds; the bound is a
/// backstop against a runaway producer, not a working limit.
pub const EVENT_QUEUE: usize = 4096;

/// The call's signals and actions. Copy, so event handlers can capture it freely.
#[derive(Clone, Copy)]
pub struct UseCall {
    pub view: RwSignal<View>,
    pub media: MediaView,
    /// The browser refused to start playback without a tap.
    pub playback_blocked: RwSignal<bool>,
    commands: StoredValue<Sender<Command>, LocalStorage>,
    media_commands: StoredValue<Sender<MediaCommand>, LocalStorage>,
    streams: StoredValue<SharedStreams, LocalStorage>,
}

impl UseCall {
    pub fn join(&self, name: DisplayName, passcode: Option<Passcode>) {
        self.command(Command::Join { name, passcode });
    }

    pub fn send_chat(&self, text: ChatText) {
        self.command(Command::SendChat(text));
    }

    pub fn set_chat_open(&self, open: bool) {
        self.command(Command::SetChatOpen(open));
    }

    pub fn lock(&self, passcode: Passcode) {
        self.command(Command::Lock(passcode));
    }

    pub fn unlock(&self) {
        self.command(Command::Unlock);
    }

    pub fn retry_media(&self) {
        self.media_command(MediaCommand::RetryMedia);
    }

    pub fn toggle_mute(&self) {
        self.media_command(MediaCommand::SetMuted(!self.media.muted.get_untracked()));
    }

    pub fn toggle_camera(&self) {
        self.media_command(MediaCommand::SetCameraOff(
            !self.media.camera_off.get_untracked(),
        ));
    }

    pub fn toggle_share(&self) {
        self.media_command(if self.media.sharing.get_untracked() {
            MediaCommand::StopShare
        } else {
            MediaCommand::StartShare
        });
    }

    pub fn select_camera(&self, device_id: String) {
        self.media_command(MediaCommand::SelectCamera(device_id));
    }

    pub fn select_microphone(&self, device_id: String) {
        self.media_command(MediaCommand::SelectMicrophone(device_id));
    }

    pub fn select_speaker(&self, device_id: String) {
        self.media_command(MediaCommand::SelectSpeaker(device_id));
    }

    /// A remote stream to show (None once its connection is gone).
    pub fn stream(&self, key: StreamKey) -> Option<Stream> {
        self.streams
            .try_with_value(|streams| streams.borrow().get(key))
            .flatten()
    }

    fn command(&self, command: Command) {
        self.commands.update_value(|tx| {
            let _ = tx.try_send(command);
        });
    }

    fn media_command(&self, command: MediaCommand) {
        self.media_commands.update_value(|tx| {
            let _ = tx.try_send(command);
        });
    }
}

/// Starts the lobby for `room`: media preview, and the websocket opened ahead of the Join click.
pub fn use_call(room: RoomName) -> UseCall {
    let prefs = Preferences::load();
    let media = MediaView::new(&prefs);
    let (events_tx, events) = mpsc::channel::<Event>(EVENT_QUEUE);
    let emit: peer::Emit = Rc::new(move |event| {
        if events_tx.clone().try_send(event).is_err() {
            web_sys::console::error_1(&"call events overflowed; one was dropped".into());
        }
    });
    let tracks = LocalTracks::new();
    let streams: SharedStreams = Rc::new(RefCell::new(RemoteStreams::default()));
    let (media_tx, media_rx) = local::commands();
    {
        let emit = emit.clone();
        leptos::task::spawn_local(local::run(
            media,
            prefs,
            tracks.clone(),
            media_rx,
            move |local| emit(Event::Local(local)),
        ));
    }
    let (commands_tx, commands) = mpsc::channel::<Command>(32);
    let view = RwSignal::new(View::lobby());
    leptos::task::spawn_local(run(
        room,
        view,
        tracks,
        streams.clone(),
        emit,
        events,
        commands,
    ));
    UseCall {
        view,
        media,
        playback_blocked: RwSignal::new(false),
        commands: StoredValue::new_local(commands_tx),
        media_commands: StoredValue::new_local(media_tx),
        streams: StoredValue::new_local(streams),
    }
}

/// What executes the core's effects.
struct Adapters {
    socket: Rc<RefCell<Option<Socket>>>,
    peers: HashMap<PeerId, (ConnectionId, PeerHandle)>,
    timers: HashMap<TimerKind, TimeoutHandle>,
    /// The DTLS certificate for every connection, made in the lobby (None until ready).
    certificate: Rc<RefCell<Option<peer::Certificate>>>,
    tracks: SharedTracks,
    streams: SharedStreams,
    emit: peer::Emit,
}

async fn run(
    room: RoomName,
    view: RwSignal<View>,
    tracks: SharedTracks,
    streams: SharedStreams,
    emit: peer::Emit,
    mut events: Receiver<Event>,
    mut commands: Receiver<Command>,
) {
    let mut call = Call::new(room, Timing::default(), seed());
    let mut adapters = Adapters {
        socket: Rc::new(RefCell::new(None)),
        peers: HashMap::new(),
        timers: HashMap::new(),
        certificate: Rc::new(RefCell::new(None)),
        tracks,
        streams,
        emit: emit.clone(),
    };
    {
        // Made while the person is in the lobby, so that no connection waits for one.
        let certificate = adapters.certificate.clone();
        leptos::task::spawn_local(async move {
            match peer::generate_certificate().await {
                Ok(made) => *certificate.borrow_mut() = Some(made),
                Err(err) => console_log(&format!("no certificate made ahead: {err}")),
            }
        });
    }
    let in_call = Rc::new(Cell::new(false));
    // A server on this machine is reachable whatever the browser thinks of the network.
    let local_server = signaling::server_is_local();
    let _listeners = browser_listeners(&emit, &adapters.socket, &in_call, local_server);
    if let Some(window) = web_sys::window() {
        call.handle(Event::Online(local_server || window.navigator().on_line()));
    }
    let mut shown = u64::MAX;
    loop {
        adapters.execute(&mut call);
        if call.version() != shown {
            shown = call.version();
            let current = call.view();
            in_call.set(current.phase == engine::Phase::InCall);
            let _ = view.try_set(current);
        }
        futures::select! {
            event = events.next() => {
                if let Some(event) = event {
                    call.handle(event);
                }
            }
            command = commands.next() => match command {
                Some(command) => call.handle(Event::Command(command)),
                None => break,
            },
        }
    }
    // The view went away: leave, close every connection (the media task releases the devices).
    call.handle(Event::Command(Command::Leave));
    adapters.execute(&mut call);
}

impl Adapters {
    fn execute(&mut self, call: &mut Call) {
        while let Some(effect) = call.poll_effect() {
            match effect {
                Effect::Connect => {
                    // Drop the old socket first: its listeners go with it.
                    self.socket.borrow_mut().take();
                    let opened = signaling::server_url().and_then(|url| {
                        Socket::open(&url, {
                            let emit = self.emit.clone();
                            move |event| emit(event)
                        })
                    });
                    match opened {
                        Ok(socket) => *self.socket.borrow_mut() = Some(socket),
                        Err(err) => {
                            console_log(&format!("cannot connect: {err}"));
                            (self.emit)(Event::SignalingClosed(engine::SocketClose {
                                code: 1006,
                                reason: err.to_string(),
                            }));
                        }
                    }
                }
                Effect::Disconnect => {
                    self.socket.borrow_mut().take();
                }
                Effect::Send(message) => {
                    let sent = self
                        .socket
                        .borrow()
                        .as_ref()
                        .is_some_and(|socket| socket.send(&message));
                    if !sent {
                        console_log(&format!("not sent (no connection): {:?}", message.kind()));
                    }
                }
                Effect::CreatePeer {
                    peer,
                    connection,
                    role,
                    ice_servers,
                    sending,
                } => {
                    let setup = PeerSetup {
                        peer,
                        connection,
                        role,
                        ice_servers,
                        certificate: self.certificate.borrow().clone(),
                        sending,
                        tracks: self.tracks.clone(),
                        streams: self.streams.clone(),
                        emit: self.emit.clone(),
                    };
                    match peer::spawn(setup) {
                        Ok(handle) => {
                            self.peers.insert(peer, (connection, handle));
                        }
                        Err(err) => (self.emit)(Event::Peer {
                            peer,
                            connection,
                            event: PeerEvent::Failed(OpError {
                                operation: FailedOp::Create,
                                detail: err.to_string(),
                            }),
                        }),
                    }
                }
                Effect::Peer {
                    peer,
                    connection,
                    op,
                } => {
                    let Some((current, handle)) = self.peers.get_mut(&peer) else {
                        continue;
                    };
                    if *current != connection {
                        continue;
                    }
                    if !handle.run(op) {
                        // Hopelessly stuck: replace it like a connection that failed to start.
                        (self.emit)(Event::Peer {
                            peer,
                            connection,
                            event: PeerEvent::Failed(OpError {
                                operation: FailedOp::Create,
                                detail: "too many operations waiting".into(),
                            }),
                        });
                    }
                }
                Effect::ClosePeer { peer, connection } => {
                    if self
                        .peers
                        .get(&peer)
                        .is_some_and(|(current, _)| *current == connection)
                    {
                        // Dropping the handle closes the connection.
                        self.peers.remove(&peer);
                    }
                }
                Effect::SetTimer { timer, after } => {
                    if let Some(old) = self.timers.remove(&timer.kind) {
                        old.clear();
                    }
                    let emit = self.emit.clone();
                    let handle = set_timeout_with_handle(
                        move || emit(Event::Timer(timer)),
                        std::time::Duration::from_millis(after.max(0.0) as u64),
                    );
                    if let Ok(handle) = handle {
                        self.timers.insert(timer.kind, handle);
                    }
                }
                Effect::Log(text) => console_log(&text),
            }
        }
    }
}

impl Drop for Adapters {
    fn drop(&mut self) {
        for (_, handle) in self.timers.drain() {
            handle.clear();
        }
        // Peer handles close their connections; the socket closes when dropped.
    }
}

/// online/offline (unless the server is on this machine), and `pagehide`: a page that goes away
/// says `leave` at once (the socket's send is synchronous), so the others are not shown a ghost
/// "reconnecting" for the grace period.
fn browser_listeners(
    emit: &peer::Emit,
    socket: &Rc<RefCell<Option<Socket>>>,
    in_call: &Rc<Cell<bool>>,
    local_server: bool,
) -> Vec<EventListener> {
    let Some(window) = web_sys::window() else {
        return Vec::new();
    };
    let mut listeners = Vec::new();
    if !local_server {
        let emit_online = emit.clone();
        listeners.push(EventListener::new(&window, "online", move |_| {
            emit_online(Event::Online(true))
        }));
        let emit_offline = emit.clone();
        listeners.push(EventListener::new(&window, "offline", move |_| {
            emit_offline(Event::Online(false))
        }));
    }
    let pagehide = {
        let socket = socket.clone();
        let in_call = in_call.clone();
        EventListener::new(&window, "pagehide", move |_| {
            if in_call.get() {
                if let Some(socket) = socket.borrow().as_ref() {
                    socket.send(&ClientMessage::Leave);
                }
            }
        })
    };
    listeners.push(pagehide);
    listeners
}

fn seed() -> u64 {
    // Connection ids and reconnect jitter only need to differ between tabs, not be secret.
    let random = js_sys::Math::random();
    let now = js_sys::Date::now();
    (random * 9_007_199_254_740_991.0) as u64 ^ (now as u64).rotate_left(32)
}

fn console_log(text: &str) {
    web_sys::console::log_1(&text.into());
}
