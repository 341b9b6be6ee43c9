//! A call in one room: `use_call` starts it and returns signals for the view plus actions.
//!
//! One task (the controller) owns everything with a browser handle: the local media, the
//! websocket and one [`Peer`] per remote participant. Server messages, peer events and the
//! person's actions reach it through channels and are handled one at a time, in order, so no
//! state is shared across `.await`s. It ends when the view that started it goes away; then it
//! says `leave`, closes every connection and stops the camera and microphone.

use std::collections::BTreeMap;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use leptos::prelude::*;
use shared::{
    ClientMessage, ErrorCode, IceServer, PeerId, RoomName, ServerMessage, PROTOCOL_VERSION,
};

use crate::media::{self, Device, Stream, TrackKind};
use crate::peer::{Peer, PeerEvent};
use crate::signaling::{self, Signaling, SignalingEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asking for the camera and microphone.
    StartingMedia,
    /// Connecting to the server and joining.
    Joining,
    /// In the room (alone or with others).
    InRoom,
    /// Could not join (room full, stale page, ...): the alert says why.
    Failed,
}

/// A remote participant as the view shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemotePeer {
    pub id: PeerId,
    pub stream: Option<Stream>,
    /// RTCPeerConnection.connectionState ("new", "connecting", "connected", "failed", ...).
    pub connection: String,
}

/// What the view reads. All signals; none holds a handle the view could misuse.
#[derive(Clone, Copy)]
pub struct CallState {
    pub phase: RwSignal<Phase>,
    pub local: RwSignal<Option<Stream>, LocalStorage>,
    pub peers: RwSignal<Vec<RemotePeer>, LocalStorage>,
    pub cameras: RwSignal<Vec<Device>>,
    pub camera_id: RwSignal<Option<String>>,
    pub muted: RwSignal<bool>,
    pub camera_off: RwSignal<bool>,
    /// A sentence for the person (`role="alert"`), or nothing.
    pub alert: RwSignal<Option<String>>,
}

enum Command {
    SetMuted(bool),
    SetCameraOff(bool),
    SelectCamera(String),
}

/// The call's signals and actions. Copy, so event handlers can capture it freely.
#[derive(Clone, Copy)]
pub struct UseCall {
    pub state: CallState,
    commands: StoredValue<UnboundedSender<Command>, LocalStorage>,
}

impl UseCall {
    pub fn toggle_mute(&self) {
        let muted = !self.state.muted.get_untracked();
        self.send(Command::SetMuted(muted));
    }

    pub fn toggle_camera(&self) {
        let off = !self.state.camera_off.get_untracked();
        self.send(Command::SetCameraOff(off));
    }

    pub fn select_camera(&self, device_id: String) {
        self.send(Command::SelectCamera(device_id));
    }

    fn send(&self, command: Command) {
        self.commands.with_value(|tx| {
            let _ = tx.unbounded_send(command);
        });
    }
}

/// Starts the call in `room`. It ends (leave, hang up, camera off) when the calling component
/// is unmounted: the command sender is owned by the component and its drop stops the controller.
pub fn use_call(room: RoomName) -> UseCall {
    let state = CallState {
        phase: RwSignal::new(Phase::StartingMedia),
        local: RwSignal::new_local(None),
        peers: RwSignal::new_local(Vec::new()),
        cameras: RwSignal::new(Vec::new()),
        camera_id: RwSignal::new(None),
        muted: RwSignal::new(false),
        camera_off: RwSignal::new(false),
        alert: RwSignal::new(None),
    };
    let (tx, rx) = mpsc::unbounded();
    leptos::task::spawn_local(run(room, state, rx));
    UseCall {
        state,
        commands: StoredValue::new_local(tx),
    }
}

struct Controller {
    state: CallState,
    signaling: Option<Signaling>,
    ice_servers: Vec<IceServer>,
    peers: BTreeMap<PeerId, Peer>,
    local: Option<Stream>,
    events: UnboundedSender<PeerEvent>,
}

async fn run(room: RoomName, state: CallState, mut commands: UnboundedReceiver<Command>) {
    // Media first, as the tutorial learned the hard way: the connection must be able to send our
    // tracks before any offer can arrive. A failure is said on screen and the call goes on
    // without (we can still watch and listen).
    let local = match media::open_camera_and_microphone().await {
        Ok(stream) => Some(stream),
        Err(err) => {
            let _ = state.alert.try_set(Some(err.message()));
            None
        }
    };
    if matches!(commands.try_recv(), Err(mpsc::TryRecvError::Closed)) {
        // The person left while the browser was asking for permission.
        if let Some(stream) = &local {
            stream.stop();
        }
        return;
    }
    let _ = state.local.try_set(local.clone());
    if let Some(stream) = &local {
        let _ = state.camera_id.try_set(stream.camera_id());
        match media::cameras().await {
            Ok(cameras) => {
                let _ = state.cameras.try_set(cameras);
            }
            Err(err) => web_sys::console::warn_1(&format!("cannot list cameras: {err:?}").into()),
        }
    }

    let _ = state.phase.try_set(Phase::Joining);
    let (events_tx, mut events) = mpsc::unbounded();
    let connected = signaling::server_url().and_then(|url| signaling::connect(&url));
    let (signaling, mut incoming) = match connected {
        Ok((signaling, incoming)) => (Some(signaling), incoming),
        Err(sentence) => {
            let _ = state.alert.try_set(Some(sentence));
            let _ = state.phase.try_set(Phase::Failed);
            (None, mpsc::unbounded().1)
        }
    };
    let mut call = Controller {
        state,
        signaling,
        ice_servers: Vec::new(),
        peers: BTreeMap::new(),
        local,
        events: events_tx,
    };
    call.send(ClientMessage::Join {
        room,
        version: PROTOCOL_VERSION,
    });

    loop {
        futures::select! {
            event = incoming.next() => match event {
                Some(SignalingEvent::Message(message)) => call.on_server_message(message).await,
                Some(SignalingEvent::Closed(sentence)) => {
                    call.signaling = None;
                    call.alert(sentence);
                }
                None => {}
            },
            event = events.next() => {
                if let Some(event) = event {
                    call.on_peer_event(event);
                }
            }
            command = commands.next() => match command {
                Some(command) => call.on_command(command).await,
                None => break,
            },
        }
    }
    call.hang_up();
}

impl Controller {
    fn send(&self, message: ClientMessage) {
        if let Some(signaling) = &self.signaling {
            signaling.send(message);
        }
    }

    fn alert(&self, sentence: impl Into<String>) {
        let _ = self.state.alert.try_set(Some(sentence.into()));
    }

    async fn on_server_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Joined {
                peers, ice_servers, ..
            } => {
                self.ice_servers = ice_servers;
                let _ = self.state.phase.try_set(Phase::InRoom);
                // Ready before their offers arrive: the server sends `joined` to us before it
                // tells them we are here.
                for id in peers {
                    self.add_peer(id);
                }
            }
            ServerMessage::PeerJoined { peer } => {
                // We were here first, so we make the offer (as the tutorial does).
                let local = self.local.clone();
                if let Some(connection) = self.add_peer(peer) {
                    match connection.offer(local.as_ref()).await {
                        Ok(description) => self.send(ClientMessage::Description {
                            to: peer,
                            description,
                        }),
                        Err(err) => {
                            self.alert(format!("Could not call the new participant: {err}."))
                        }
                    }
                }
            }
            ServerMessage::PeerLeft { peer } => {
                // Dropping the Peer closes its connection and removes its listeners.
                self.peers.remove(&peer);
                let _ = self
                    .state
                    .peers
                    .try_update(|list| list.retain(|p| p.id != peer));
            }
            ServerMessage::Description { from, description } => {
                let local = self.local.clone();
                let Some(connection) = self.add_peer(from) else {
                    return;
                };
                match connection.accept(description, local.as_ref()).await {
                    Ok(Some(answer)) => self.send(ClientMessage::Description {
                        to: from,
                        description: answer,
                    }),
                    Ok(None) => {}
                    Err(err) => self.alert(format!("Could not connect to a participant: {err}.")),
                }
            }
            ServerMessage::IceCandidate { from, candidate } => {
                if let Some(connection) = self.peers.get_mut(&from) {
                    if let Err(err) = connection.add_ice_candidate(candidate).await {
                        web_sys::console::warn_1(&format!("{err}").into());
                    }
                }
            }
            // Shown on tiles by the media-state work that follows; ignored until then.
            ServerMessage::PeerMediaState { .. } => {}
            ServerMessage::Error { code, message } => {
                self.alert(message);
                if matches!(
                    code,
                    ErrorCode::RoomFull
                        | ErrorCode::InvalidRoom
                        | ErrorCode::UnsupportedVersion
                        | ErrorCode::ServerFull
                ) {
                    // Not in the room: release the camera rather than keep its light on.
                    let _ = self.state.phase.try_set(Phase::Failed);
                    self.release_media();
                }
            }
        }
    }

    /// The connection to `id`, created on first use; None if the browser refused to create one.
    fn add_peer(&mut self, id: PeerId) -> Option<&mut Peer> {
        if !self.peers.contains_key(&id) {
            match Peer::new(id, &self.ice_servers, self.events.clone()) {
                Ok(peer) => {
                    self.peers.insert(id, peer);
                    let _ = self.state.peers.try_update(|list| {
                        if !list.iter().any(|p| p.id == id) {
                            list.push(RemotePeer {
                                id,
                                stream: None,
                                connection: "new".into(),
                            });
                        }
                    });
                }
                Err(err) => {
                    self.alert(format!(
                        "Your browser could not start a call connection: {err}."
                    ));
                    return None;
                }
            }
        }
        self.peers.get_mut(&id)
    }

    fn on_peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::IceCandidate(to, candidate) => {
                if self.peers.contains_key(&to) {
                    self.send(ClientMessage::IceCandidate { to, candidate });
                }
            }
            PeerEvent::Track(id, stream) => {
                let _ = self.state.peers.try_update(|list| {
                    if let Some(peer) = list.iter_mut().find(|p| p.id == id) {
                        if peer.stream.as_ref() != Some(&stream) {
                            peer.stream = Some(stream);
                        }
                    }
                });
            }
            PeerEvent::State(id, connection) => {
                if connection == "failed" {
                    self.alert("The connection to a participant failed. A firewall may be blocking it; try another network.");
                }
                let _ = self.state.peers.try_update(|list| {
                    if let Some(peer) = list.iter_mut().find(|p| p.id == id) {
                        peer.connection = connection;
                    }
                });
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::SetMuted(muted) => {
                if let Some(stream) = &self.local {
                    stream.set_enabled(TrackKind::Audio, !muted);
                }
                let _ = self.state.muted.try_set(muted);
            }
            Command::SetCameraOff(off) => {
                if let Some(stream) = &self.local {
                    stream.set_enabled(TrackKind::Video, !off);
                }
                let _ = self.state.camera_off.try_set(off);
            }
            Command::SelectCamera(device_id) => self.switch_camera(device_id).await,
        }
    }

    /// Opens the chosen camera and swaps it into every connection with replaceTrack: no new
    /// offer, the other side's video just changes. The old camera is released afterwards.
    async fn switch_camera(&mut self, device_id: String) {
        let Some(local) = self.local.clone() else {
            return;
        };
        if local.camera_id().as_deref() == Some(device_id.as_str()) {
            return;
        }
        let track = match media::open_camera(&device_id).await {
            Ok(track) => track,
            Err(err) => {
                self.alert(err.message());
                // Put the picker back on the camera still in use.
                let _ = self.state.camera_id.try_set(local.camera_id());
                return;
            }
        };
        track.set_enabled(!self.state.camera_off.get_untracked());
        for peer in self.peers.values() {
            if let Err(err) = peer.replace_video_track(&track).await {
                self.alert(format!("{err}."));
            }
        }
        let old = local.video_track();
        let switched = local.with_video(&track);
        if let Some(old) = old {
            old.stop();
        }
        let _ = self.state.camera_id.try_set(Some(device_id));
        let _ = self.state.local.try_set(Some(switched.clone()));
        self.local = Some(switched);
    }

    fn release_media(&mut self) {
        if let Some(stream) = self.local.take() {
            stream.stop();
        }
        let _ = self.state.local.try_set(None);
    }

    fn hang_up(mut self) {
        self.send(ClientMessage::Leave);
        // Dropping `signaling` closes the websocket once the leave is written.
        self.signaling = None;
        self.peers.clear();
        self.release_media();
    }
}
