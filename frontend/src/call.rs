//! A call in one room, from the lobby to hanging up: `use_call` starts it and returns signals for
//! the view plus actions.
//!
//! One task (the controller) owns everything with a browser handle: the local tracks, the
//! websocket and one [`Peer`] per remote participant. Server messages, peer events, device events
//! and the person's actions reach it through channels and are handled one at a time, in order, so
//! no state is shared across `.await`s. It ends when the view that started it goes away; then it
//! says `leave`, closes every connection and stops the camera and microphone.

use std::collections::{BTreeMap, HashMap};

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use gloo_events::EventListener;
use leptos::prelude::*;
use shared::{
    ClientMessage, ErrorCode, IceServer, MediaState, PeerId, RoomName, ServerMessage,
    PROTOCOL_VERSION,
};

use crate::media::{
    self, Devices, Kind, MediaError, Preferences, Replacement, Stream, Subject, Track,
};
use crate::peer::{Outgoing, Peer, PeerEvent};
use crate::signaling::{self, Signaling, SignalingEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asking for the camera and microphone.
    StartingMedia,
    /// Preview and device pickers; the person has not joined yet.
    Lobby,
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
    pub muted: bool,
    pub camera_off: bool,
}

/// A sentence for the person, and whether a "Try again" button belongs with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub text: String,
    pub retry_media: bool,
}

/// What the view reads. All signals; none holds a handle the view could misuse.
#[derive(Clone, Copy)]
pub struct CallState {
    pub phase: RwSignal<Phase>,
    /// Our own camera (and microphone) for the preview; None while the camera is off.
    pub preview: RwSignal<Option<Stream>, LocalStorage>,
    pub peers: RwSignal<Vec<RemotePeer>, LocalStorage>,
    pub devices: RwSignal<Devices>,
    pub camera_id: RwSignal<Option<String>>,
    pub microphone_id: RwSignal<Option<String>>,
    pub speaker_id: RwSignal<Option<String>>,
    pub muted: RwSignal<bool>,
    pub camera_off: RwSignal<bool>,
    /// Whether we have a microphone / could have a camera (false: denied or absent).
    pub has_microphone: RwSignal<bool>,
    pub has_camera: RwSignal<bool>,
    pub alert: RwSignal<Option<Alert>>,
    /// Polite news ("switched to the USB camera").
    pub notice: RwSignal<Option<String>>,
    /// The browser refused to start playback without a tap.
    pub playback_blocked: RwSignal<bool>,
}

#[derive(Debug)]
enum Command {
    Join,
    RetryMedia,
    SetMuted(bool),
    SetCameraOff(bool),
    SelectCamera(String),
    SelectMicrophone(String),
    SelectSpeaker(String),
}

/// Events from the devices themselves.
#[derive(Debug)]
enum DeviceEvent {
    Changed,
    TrackEnded(Kind),
}

/// The call's signals and actions. Copy, so event handlers can capture it freely.
#[derive(Clone, Copy)]
pub struct UseCall {
    pub state: CallState,
    commands: StoredValue<UnboundedSender<Command>, LocalStorage>,
}

impl UseCall {
    pub fn join(&self) {
        self.send(Command::Join);
    }

    pub fn retry_media(&self) {
        self.send(Command::RetryMedia);
    }

    pub fn toggle_mute(&self) {
        self.send(Command::SetMuted(!self.state.muted.get_untracked()));
    }

    pub fn toggle_camera(&self) {
        self.send(Command::SetCameraOff(
            !self.state.camera_off.get_untracked(),
        ));
    }

    pub fn select_camera(&self, device_id: String) {
        self.send(Command::SelectCamera(device_id));
    }

    pub fn select_microphone(&self, device_id: String) {
        self.send(Command::SelectMicrophone(device_id));
    }

    pub fn select_speaker(&self, device_id: String) {
        self.send(Command::SelectSpeaker(device_id));
    }

    fn send(&self, command: Command) {
        self.commands.with_value(|tx| {
            let _ = tx.unbounded_send(command);
        });
    }
}

/// Starts the lobby for `room` (media preview). The call ends (leave, hang up, camera and
/// microphone released) when the calling component is unmounted: the command sender is owned by
/// the component and its drop stops the controller.
pub fn use_call(room: RoomName) -> UseCall {
    let prefs = Preferences::load();
    let state = CallState {
        phase: RwSignal::new(Phase::StartingMedia),
        preview: RwSignal::new_local(None),
        peers: RwSignal::new_local(Vec::new()),
        devices: RwSignal::new(Devices::default()),
        camera_id: RwSignal::new(prefs.camera.clone()),
        microphone_id: RwSignal::new(prefs.microphone.clone()),
        speaker_id: RwSignal::new(prefs.speaker.clone()),
        muted: RwSignal::new(false),
        camera_off: RwSignal::new(false),
        has_microphone: RwSignal::new(false),
        has_camera: RwSignal::new(false),
        alert: RwSignal::new(None),
        notice: RwSignal::new(None),
        playback_blocked: RwSignal::new(false),
    };
    let (tx, rx) = mpsc::unbounded();
    leptos::task::spawn_local(run(room, state, prefs, rx));
    UseCall {
        state,
        commands: StoredValue::new_local(tx),
    }
}

struct Controller {
    state: CallState,
    room: RoomName,
    prefs: Preferences,
    audio: Option<Track>,
    video: Option<Track>,
    /// Whether each kind can be sent at all: what the peer connections were negotiated with.
    can_send: (bool, bool),
    /// The stream our tracks are announced in (stable, so the other side keeps one stream).
    announce_stream: Option<Stream>,
    ended_listeners: HashMap<Kind, EventListener>,
    device_events: UnboundedSender<DeviceEvent>,
    signaling: Option<Signaling>,
    joined: bool,
    /// `can_send` at the time of joining: a change needs a new negotiation (rejoin).
    negotiated: (bool, bool),
    ice_servers: Vec<IceServer>,
    peers: BTreeMap<PeerId, Peer>,
    events: UnboundedSender<PeerEvent>,
}

async fn run(
    room: RoomName,
    state: CallState,
    prefs: Preferences,
    mut commands: UnboundedReceiver<Command>,
) {
    let (events_tx, mut events) = mpsc::unbounded();
    let (device_tx, mut device_events) = mpsc::unbounded();
    let device_change = {
        let tx = device_tx.clone();
        media::on_device_change(move |_| {
            let _ = tx.unbounded_send(DeviceEvent::Changed);
        })
    };
    let mut call = Controller {
        state,
        room,
        prefs,
        audio: None,
        video: None,
        can_send: (false, false),
        announce_stream: Stream::of(&[]),
        ended_listeners: HashMap::new(),
        device_events: device_tx,
        signaling: None,
        joined: false,
        negotiated: (false, false),
        ice_servers: Vec::new(),
        peers: BTreeMap::new(),
        events: events_tx,
    };
    call.acquire().await;
    if !matches!(commands.try_recv(), Err(mpsc::TryRecvError::Closed)) {
        call.set_phase(Phase::Lobby);
        // Until joined there is no server connection: an ended channel, which `select!` skips.
        let mut incoming: UnboundedReceiver<SignalingEvent> = mpsc::unbounded().1;
        loop {
            futures::select! {
                event = incoming.next() => match event {
                    Some(SignalingEvent::Message(message)) => call.on_server_message(message).await,
                    Some(SignalingEvent::Closed(sentence)) => {
                        call.signaling = None;
                        call.alert(sentence, false);
                    }
                    None => {}
                },
                event = events.next() => {
                    if let Some(event) = event {
                        call.on_peer_event(event);
                    }
                }
                event = device_events.next() => {
                    if let Some(event) = event {
                        call.on_device_event(event).await;
                    }
                }
                command = commands.next() => match command {
                    Some(Command::Join) => {
                        if let Some(receiver) = call.join() {
                            incoming = receiver;
                        }
                    }
                    Some(command) => call.on_command(command).await,
                    None => break,
                },
            }
        }
    }
    drop(device_change);
    call.hang_up();
}

/// What we send, from the controller's fields (a function of fields rather than a method, so
/// that it can be borrowed alongside `peers`).
fn outgoing<'a>(
    audio: &'a Option<Track>,
    video: &'a Option<Track>,
    can_send: (bool, bool),
    stream: &'a Option<Stream>,
) -> Option<Outgoing<'a>> {
    Some(Outgoing {
        audio: audio.as_ref(),
        video: video.as_ref(),
        can_send_audio: can_send.0,
        can_send_video: can_send.1,
        stream: stream.as_ref()?,
    })
}

impl Controller {
    fn send(&self, message: ClientMessage) {
        if let Some(signaling) = &self.signaling {
            signaling.send(message);
        }
    }

    fn set_phase(&self, phase: Phase) {
        let _ = self.state.phase.try_set(phase);
    }

    fn alert(&self, text: impl Into<String>, retry_media: bool) {
        let _ = self.state.alert.try_set(Some(Alert {
            text: text.into(),
            retry_media,
        }));
    }

    fn notice(&self, text: impl Into<String>) {
        let _ = self.state.notice.try_set(Some(text.into()));
    }

    /// Gets camera and microphone as the preferences say, falling back step by step: the default
    /// device if the chosen one is gone, audio only without a camera, nothing (watch and listen)
    /// without either. Every failure is explained on screen.
    async fn acquire(&mut self) {
        self.release_tracks();
        let _ = self.state.alert.try_set(None);
        let devices = media::devices().await.unwrap_or_default();
        let camera = media::choose(self.prefs.camera.as_deref(), &devices.cameras);
        let microphone = media::choose(self.prefs.microphone.as_deref(), &devices.microphones);
        let want_video = !self.state.camera_off.get_untracked();

        let mut camera_error = None;
        let mut microphone_error = None;
        let both = if want_video {
            media::open_both(camera.as_deref(), microphone.as_deref()).await
        } else {
            Err(MediaError::NotFound)
        };
        match both {
            Ok((audio, video)) => {
                self.audio = Some(audio);
                self.video = Some(video);
            }
            Err(MediaError::Insecure) => {
                camera_error = Some(MediaError::Insecure);
                microphone_error = Some(MediaError::Insecure);
            }
            // One of them failed (or the camera is off by choice): find out which, keep the other.
            Err(_) => {
                match self
                    .open_with_fallback(Kind::Audio, microphone.as_deref())
                    .await
                {
                    Ok(track) => self.audio = Some(track),
                    Err(err) => microphone_error = Some(err),
                }
                if want_video {
                    match self
                        .open_with_fallback(Kind::Video, camera.as_deref())
                        .await
                    {
                        Ok(track) => self.video = Some(track),
                        Err(err) => camera_error = Some(err),
                    }
                }
            }
        }
        if let Some(audio) = &self.audio {
            audio.set_enabled(!self.state.muted.get_untracked());
        }
        // A camera switched off by choice can come back: it still counts as sendable.
        let camera_usable = self.video.is_some() || (!want_video && !devices.cameras.is_empty());
        self.can_send = (self.audio.is_some(), camera_usable);
        let _ = self.state.has_microphone.try_set(self.audio.is_some());
        let _ = self.state.has_camera.try_set(camera_usable);
        self.watch_tracks();
        self.refresh_devices().await;
        self.update_preview();

        let joined_note = |watch_only: bool| {
            if watch_only {
                " You can still join to watch and listen."
            } else {
                ""
            }
        };
        match (camera_error, microphone_error) {
            (None, None) => {}
            (Some(cam), Some(mic)) if cam == mic => {
                let text = cam.message(Subject::CameraAndMicrophone);
                let extra = if matches!(cam, MediaError::Insecure) {
                    ""
                } else {
                    joined_note(true)
                };
                self.alert(format!("{text}{extra}"), cam.retryable());
            }
            (Some(cam), None) => {
                let text = cam.message(Subject::Camera);
                self.alert(
                    format!("{text} You can still join with audio only."),
                    cam.retryable(),
                );
            }
            (None, Some(mic)) => {
                let text = mic.message(Subject::Microphone);
                self.alert(format!("{text} Others will not hear you."), mic.retryable());
            }
            (Some(cam), Some(mic)) => {
                let text = format!(
                    "{} {}",
                    cam.message(Subject::Camera),
                    mic.message(Subject::Microphone)
                );
                self.alert(
                    format!("{text}{}", joined_note(true)),
                    cam.retryable() || mic.retryable(),
                );
            }
        }
    }

    /// Opens one device; if it is gone (OverconstrainedError), the default one, and says so.
    async fn open_with_fallback(
        &mut self,
        kind: Kind,
        device_id: Option<&str>,
    ) -> Result<Track, MediaError> {
        match media::open(kind, device_id).await {
            Err(MediaError::Overconstrained) if device_id.is_some() => {
                let subject = match kind {
                    Kind::Audio => Subject::Microphone,
                    Kind::Video => Subject::Camera,
                };
                self.notice(MediaError::Overconstrained.message(subject));
                media::open(kind, None).await
            }
            other => other,
        }
    }

    /// Listens for our tracks ending on their own (device unplugged, permission revoked).
    fn watch_tracks(&mut self) {
        self.ended_listeners.clear();
        for (kind, track) in [(Kind::Audio, &self.audio), (Kind::Video, &self.video)] {
            if let Some(track) = track {
                let tx = self.device_events.clone();
                let listener = track.on_ended(move |_| {
                    let _ = tx.unbounded_send(DeviceEvent::TrackEnded(kind));
                });
                self.ended_listeners.insert(kind, listener);
            }
        }
    }

    async fn refresh_devices(&mut self) {
        if let Ok(devices) = media::devices().await {
            let _ = self.state.devices.try_set(devices);
        }
        let camera = self
            .video
            .as_ref()
            .and_then(Track::device_id)
            .or_else(|| self.prefs.camera.clone());
        let microphone = self.audio.as_ref().and_then(Track::device_id);
        let _ = self.state.camera_id.try_set(camera);
        let _ = self.state.microphone_id.try_set(microphone);
    }

    fn update_preview(&mut self) {
        let tracks: Vec<&Track> = self.video.iter().collect();
        let preview = if tracks.is_empty() {
            None
        } else {
            Stream::of(&tracks)
        };
        let _ = self.state.preview.try_set(preview);
        let muted = self.state.muted.get_untracked() || self.audio.is_none();
        let camera_off = self.state.camera_off.get_untracked() || self.video.is_none();
        if self.joined {
            self.send(ClientMessage::MediaState(MediaState { muted, camera_off }));
        }
    }

    fn release_tracks(&mut self) {
        self.ended_listeners.clear();
        for track in [self.audio.take(), self.video.take()].into_iter().flatten() {
            track.stop();
        }
    }

    /// Connects and asks to join. Returns the server's message stream.
    fn join(&mut self) -> Option<UnboundedReceiver<SignalingEvent>> {
        if !matches!(self.state.phase.get_untracked(), Phase::Lobby) {
            return None;
        }
        self.set_phase(Phase::Joining);
        let connected = signaling::server_url().and_then(|url| signaling::connect(&url));
        match connected {
            Ok((signaling, incoming)) => {
                self.signaling = Some(signaling);
                self.negotiated = self.can_send;
                self.send(ClientMessage::Join {
                    room: self.room.clone(),
                    version: PROTOCOL_VERSION,
                });
                Some(incoming)
            }
            Err(sentence) => {
                self.alert(sentence, false);
                self.set_phase(Phase::Failed);
                None
            }
        }
    }

    /// Leaves and joins again, so the others offer afresh: needed when what we can send changed
    /// kind (a camera allowed after joining without one).
    fn rejoin(&mut self) {
        self.send(ClientMessage::Leave);
        self.peers.clear();
        let _ = self.state.peers.try_update(Vec::clear);
        self.joined = false;
        self.negotiated = self.can_send;
        self.send(ClientMessage::Join {
            room: self.room.clone(),
            version: PROTOCOL_VERSION,
        });
    }

    async fn on_server_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Joined {
                peers, ice_servers, ..
            } => {
                self.ice_servers = ice_servers;
                self.joined = true;
                self.set_phase(Phase::InRoom);
                // Ready before their offers arrive: the server sends `joined` to us before it
                // tells them we are here.
                for id in peers {
                    self.add_peer(id);
                }
                self.update_preview();
            }
            ServerMessage::PeerJoined { peer } => {
                // We were here first, so we make the offer (as the tutorial does).
                self.add_peer(peer);
                let result = match (
                    outgoing(
                        &self.audio,
                        &self.video,
                        self.can_send,
                        &self.announce_stream,
                    ),
                    self.peers.get_mut(&peer),
                ) {
                    (Some(outgoing), Some(connection)) => Some(connection.offer(&outgoing).await),
                    _ => None,
                };
                match result {
                    Some(Ok(description)) => self.send(ClientMessage::Description {
                        to: peer,
                        description,
                    }),
                    Some(Err(err)) => {
                        self.alert(format!("Could not call the new participant: {err}."), false)
                    }
                    None => {}
                }
                // Tell the newcomer whether we are muted or have the camera off.
                self.update_preview();
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
                self.add_peer(from);
                let result = match (
                    outgoing(
                        &self.audio,
                        &self.video,
                        self.can_send,
                        &self.announce_stream,
                    ),
                    self.peers.get_mut(&from),
                ) {
                    (Some(outgoing), Some(connection)) => {
                        Some(connection.accept(description, &outgoing).await)
                    }
                    _ => None,
                };
                match result {
                    Some(Ok(Some(answer))) => self.send(ClientMessage::Description {
                        to: from,
                        description: answer,
                    }),
                    Some(Err(err)) => {
                        self.alert(format!("Could not connect to a participant: {err}."), false)
                    }
                    _ => {}
                }
            }
            ServerMessage::IceCandidate { from, candidate } => {
                if let Some(connection) = self.peers.get_mut(&from) {
                    if let Err(err) = connection.add_ice_candidate(candidate).await {
                        web_sys::console::warn_1(&format!("{err}").into());
                    }
                }
            }
            ServerMessage::PeerMediaState { peer, state } => {
                let _ = self.state.peers.try_update(|list| {
                    if let Some(p) = list.iter_mut().find(|p| p.id == peer) {
                        p.muted = state.muted;
                        p.camera_off = state.camera_off;
                    }
                });
            }
            ServerMessage::Error { code, message } => {
                self.alert(message, false);
                if matches!(
                    code,
                    ErrorCode::RoomFull
                        | ErrorCode::InvalidRoom
                        | ErrorCode::UnsupportedVersion
                        | ErrorCode::ServerFull
                ) {
                    // Not in the room: release the camera rather than keep its light on.
                    self.set_phase(Phase::Failed);
                    self.signaling = None;
                    self.release_tracks();
                    self.update_preview();
                }
            }
        }
    }

    /// Adds a connection (and a tile) for `id` unless there is one.
    fn add_peer(&mut self, id: PeerId) {
        if self.peers.contains_key(&id) {
            return;
        }
        match Peer::new(id, &self.ice_servers, self.events.clone()) {
            Ok(peer) => {
                self.peers.insert(id, peer);
                let _ = self.state.peers.try_update(|list| {
                    if !list.iter().any(|p| p.id == id) {
                        list.push(RemotePeer {
                            id,
                            stream: None,
                            connection: "new".into(),
                            muted: false,
                            camera_off: false,
                        });
                    }
                });
            }
            Err(err) => self.alert(
                format!("Your browser could not start a call connection: {err}."),
                false,
            ),
        }
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
                    self.alert(
                        "The connection to a participant failed. A firewall may be blocking it; try another network.",
                        false,
                    );
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
            Command::Join => {}
            Command::RetryMedia => {
                self.acquire().await;
                if self.joined {
                    if self.can_send != self.negotiated {
                        self.rejoin();
                    } else {
                        self.send_tracks().await;
                    }
                }
            }
            Command::SetMuted(muted) => {
                if let Some(audio) = &self.audio {
                    audio.set_enabled(!muted);
                }
                let _ = self.state.muted.try_set(muted);
                self.update_preview();
            }
            Command::SetCameraOff(true) => {
                // Stop the track (the camera light goes off) and send nothing in its place.
                let _ = self.state.camera_off.try_set(true);
                if let Some(video) = self.video.take() {
                    self.ended_listeners.remove(&Kind::Video);
                    video.stop();
                }
                self.send_track(Kind::Video).await;
                self.update_preview();
            }
            Command::SetCameraOff(false) => {
                let camera = self.state.camera_id.get_untracked();
                match self
                    .open_with_fallback(Kind::Video, camera.as_deref())
                    .await
                {
                    Ok(track) => {
                        let _ = self.state.camera_off.try_set(false);
                        self.use_track(Kind::Video, track).await;
                        if self.joined && !self.negotiated.1 {
                            self.can_send.1 = true;
                            self.rejoin();
                        }
                    }
                    Err(err) => self.alert(err.message(Subject::Camera), err.retryable()),
                }
            }
            Command::SelectCamera(id) => {
                self.prefs.camera = Some(id.clone());
                self.prefs.save();
                let _ = self.state.camera_id.try_set(Some(id.clone()));
                if self.video.is_some() {
                    self.switch(Kind::Video, id).await;
                }
            }
            Command::SelectMicrophone(id) => {
                self.prefs.microphone = Some(id.clone());
                self.prefs.save();
                let _ = self.state.microphone_id.try_set(Some(id.clone()));
                if self.audio.is_some() {
                    self.switch(Kind::Audio, id).await;
                }
            }
            Command::SelectSpeaker(id) => {
                self.prefs.speaker = Some(id.clone());
                self.prefs.save();
                let _ = self.state.speaker_id.try_set(Some(id));
            }
        }
    }

    /// Opens the chosen device and swaps it into every connection with replaceTrack: no new
    /// offer, the other side's media just changes. The old device is released afterwards.
    async fn switch(&mut self, kind: Kind, device_id: String) {
        let current = match kind {
            Kind::Audio => &self.audio,
            Kind::Video => &self.video,
        };
        if current.as_ref().and_then(Track::device_id).as_deref() == Some(device_id.as_str()) {
            return;
        }
        match media::open(kind, Some(&device_id)).await {
            Ok(track) => self.use_track(kind, track).await,
            Err(err) => {
                let subject = match kind {
                    Kind::Audio => Subject::Microphone,
                    Kind::Video => Subject::Camera,
                };
                self.alert(err.message(subject), false);
                // Put the picker back on the device still in use.
                self.refresh_devices().await;
            }
        }
    }

    /// Makes `track` the one we send for `kind`, stopping the previous one.
    async fn use_track(&mut self, kind: Kind, track: Track) {
        if kind == Kind::Audio {
            track.set_enabled(!self.state.muted.get_untracked());
        }
        let old = match kind {
            Kind::Audio => self.audio.replace(track),
            Kind::Video => self.video.replace(track),
        };
        self.send_track(kind).await;
        if let Some(old) = old {
            old.stop();
        }
        self.watch_tracks();
        self.refresh_devices().await;
        self.update_preview();
    }

    /// Puts the current track of `kind` (or nothing) on every connection.
    async fn send_track(&self, kind: Kind) {
        let track = match kind {
            Kind::Audio => self.audio.as_ref(),
            Kind::Video => self.video.as_ref(),
        };
        for peer in self.peers.values() {
            if let Err(err) = peer.replace_track(kind, track).await {
                self.alert(format!("{err}."), false);
            }
        }
    }

    async fn send_tracks(&self) {
        self.send_track(Kind::Audio).await;
        self.send_track(Kind::Video).await;
    }

    async fn on_device_event(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::Changed => {
                let before = self.state.devices.get_untracked();
                self.refresh_devices().await;
                let after = self.state.devices.get_untracked();
                // A device in use that disappeared without its track ending is handled like an
                // ended track.
                if let Some(id) = self.video.as_ref().and_then(Track::device_id) {
                    if before.cameras.iter().any(|d| d.id == id)
                        && !after.cameras.iter().any(|d| d.id == id)
                    {
                        self.replace_lost(Kind::Video).await;
                    }
                }
                if let Some(id) = self.audio.as_ref().and_then(Track::device_id) {
                    if before.microphones.iter().any(|d| d.id == id)
                        && !after.microphones.iter().any(|d| d.id == id)
                    {
                        self.replace_lost(Kind::Audio).await;
                    }
                }
            }
            DeviceEvent::TrackEnded(kind) => {
                self.refresh_devices().await;
                self.replace_lost(kind).await;
            }
        }
    }

    /// The device in use for `kind` is gone: switch to another one and say so.
    async fn replace_lost(&mut self, kind: Kind) {
        let devices = self.state.devices.get_untracked();
        let (lost, list, noun) = match kind {
            Kind::Audio => (self.audio.take(), &devices.microphones, "microphone"),
            Kind::Video => (self.video.take(), &devices.cameras, "camera"),
        };
        let lost_label = lost.as_ref().map(Track::label).unwrap_or_default();
        if let Some(lost) = &lost {
            lost.stop();
        }
        let lost_id = lost.as_ref().and_then(Track::device_id);
        let target = match media::replacement(lost_id.as_deref(), list) {
            // Still listed (the track ended for another reason): try the same device again.
            Replacement::Keep => list
                .iter()
                .find(|d| Some(&d.id) == lost_id.as_ref())
                .cloned(),
            Replacement::SwitchTo(device) => Some(device),
            Replacement::NoneLeft => None,
        };
        let opened = match &target {
            Some(device) => Some(media::open(kind, Some(&device.id)).await),
            None => None,
        };
        match (target, opened) {
            (Some(device), Some(Ok(track))) => {
                self.notice(format!(
                    "Your {noun} ({lost_label}) stopped; now using {}.",
                    device.label
                ));
                self.use_track(kind, track).await;
            }
            (_, result) => {
                let why = match result {
                    Some(Err(err)) => format!(" ({err:?})"),
                    _ => String::new(),
                };
                self.alert(
                    format!("Your {noun} ({lost_label}) was disconnected{why}. Plug it back in and press Try again."),
                    true,
                );
                if kind == Kind::Video {
                    let _ = self.state.camera_off.try_set(true);
                }
                self.send_track(kind).await;
                self.watch_tracks();
                self.update_preview();
            }
        }
    }

    fn hang_up(mut self) {
        if self.joined {
            self.send(ClientMessage::Leave);
        }
        // Dropping `signaling` closes the websocket once the leave is written.
        self.signaling = None;
        self.peers.clear();
        self.release_tracks();
        let _ = self.state.preview.try_set(None);
    }
}
