//! Our own camera, microphone and screen: one task that opens, switches, mutes and releases them
//! as the person asks and as devices come and go, and publishes what there is to send
//! ([`LocalMedia`], for the call core) and what the pickers and preview show ([`MediaView`]).
//! It runs beside the call loop, so a permission prompt stalls nothing else.
//!
//! Camera off stops the track (the camera light goes off) and sends nothing in its place; the
//! transceiver stays negotiated, so turning the camera on again needs no new offer. A kind that
//! cannot be sent at all (no device, access denied) is negotiated receive-only; gaining it later
//! renegotiates in place (perfect negotiation), without rejoining.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::mpsc::{Receiver, Sender};
use futures::StreamExt;
use gloo_events::EventListener;
use leptos::prelude::*;

use crate::engine::{LocalMedia, Screen, TrackId};
use crate::media::{
    self, Devices, Kind, MediaError, Pref, Preferences, Replacement, ShareError, Stream, Subject,
    Track,
};

/// A sentence for the person, and whether a "Try again" button belongs with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub text: String,
    pub retry_media: bool,
}

/// What the view shows about our own media. Signals only; no handles the view could misuse.
#[derive(Clone, Copy)]
pub struct MediaView {
    /// Camera and microphone have been asked for (the lobby can offer Join).
    pub ready: RwSignal<bool>,
    /// Our camera for the preview; None while the camera is off.
    pub preview: RwSignal<Option<Stream>, LocalStorage>,
    pub devices: RwSignal<Devices>,
    pub camera_id: RwSignal<Option<String>>,
    pub microphone_id: RwSignal<Option<String>>,
    pub speaker_id: RwSignal<Option<String>>,
    pub muted: RwSignal<bool>,
    pub camera_off: RwSignal<bool>,
    pub has_microphone: RwSignal<bool>,
    pub has_camera: RwSignal<bool>,
    pub sharing: RwSignal<bool>,
    pub alert: RwSignal<Option<Alert>>,
    /// Polite news ("switched to the USB camera").
    pub notice: RwSignal<Option<String>>,
}

impl MediaView {
    pub fn new(prefs: &Preferences) -> Self {
        Self {
            ready: RwSignal::new(false),
            preview: RwSignal::new_local(None),
            devices: RwSignal::new(Devices::default()),
            camera_id: RwSignal::new(prefs.camera.clone()),
            microphone_id: RwSignal::new(prefs.microphone.clone()),
            speaker_id: RwSignal::new(prefs.speaker.clone()),
            muted: RwSignal::new(false),
            camera_off: RwSignal::new(false),
            has_microphone: RwSignal::new(false),
            has_camera: RwSignal::new(false),
            sharing: RwSignal::new(false),
            alert: RwSignal::new(None),
            notice: RwSignal::new(None),
        }
    }
}

#[derive(Debug)]
pub enum MediaCommand {
    RetryMedia,
    SetMuted(bool),
    SetCameraOff(bool),
    SelectCamera(String),
    SelectMicrophone(String),
    SelectSpeaker(String),
    StartShare,
    StopShare,
}

/// Events from the devices themselves.
#[derive(Debug)]
enum DeviceEvent {
    Changed,
    TrackEnded(Slot),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Mic,
    Camera,
    Screen,
}

/// The local tracks by id, and the streams they are announced in: what peer connections look up
/// when the core tells them what to send. Shared by this task (which writes it) and the peer
/// adapters (which read it); single-threaded, never borrowed across an `.await`.
pub struct LocalTracks {
    tracks: HashMap<TrackId, Track>,
    next: u32,
    /// The stream our camera and microphone are announced in (stable for the whole call, so the
    /// other side keeps one stream for both).
    pub camera_stream: Option<Stream>,
    /// The stream the screen share is announced in (its id tells the others which is which).
    pub screen_stream: Option<Stream>,
}

pub type SharedTracks = Rc<RefCell<LocalTracks>>;

impl LocalTracks {
    pub fn new() -> SharedTracks {
        Rc::new(RefCell::new(Self {
            tracks: HashMap::new(),
            next: 1,
            camera_stream: Stream::of(&[]),
            screen_stream: None,
        }))
    }

    pub fn get(&self, id: TrackId) -> Option<Track> {
        self.tracks.get(&id).cloned()
    }

    fn add(&mut self, track: Track) -> TrackId {
        let id = TrackId(self.next);
        self.next += 1;
        self.tracks.insert(id, track);
        id
    }

    fn remove(&mut self, id: TrackId) -> Option<Track> {
        self.tracks.remove(&id)
    }
}

struct Manager {
    view: MediaView,
    prefs: Preferences,
    tracks: SharedTracks,
    mic: Option<TrackId>,
    camera: Option<TrackId>,
    screen: Option<TrackId>,
    can_send: (bool, bool),
    ended: HashMap<Slot, EventListener>,
    device_events: Sender<DeviceEvent>,
    publish: Box<dyn Fn(LocalMedia)>,
}

/// Runs until `commands` closes (the call view went away); then releases every device.
pub async fn run(
    view: MediaView,
    prefs: Preferences,
    tracks: SharedTracks,
    mut commands: Receiver<MediaCommand>,
    publish: impl Fn(LocalMedia) + 'static,
) {
    // Device events come a few per plug; when 16 are already waiting, another `Changed` adds
    // nothing (one refresh sees every change), so a full queue just drops it.
    let (device_tx, mut device_events) = futures::channel::mpsc::channel(16);
    let device_change = {
        let tx = device_tx.clone();
        media::on_device_change(move |_| {
            let _ = tx.clone().try_send(DeviceEvent::Changed);
        })
    };
    let mut manager = Manager {
        view,
        prefs,
        tracks,
        mic: None,
        camera: None,
        screen: None,
        can_send: (false, false),
        ended: HashMap::new(),
        device_events: device_tx,
        publish: Box::new(publish),
    };
    manager.acquire().await;
    let _ = manager.view.ready.try_set(true);
    loop {
        futures::select! {
            command = commands.next() => match command {
                Some(command) => manager.on_command(command).await,
                None => break,
            },
            event = device_events.next() => {
                if let Some(event) = event {
                    manager.on_device_event(event).await;
                }
            }
        }
    }
    drop(device_change);
    manager.release_all();
}

impl Manager {
    fn track(&self, id: Option<TrackId>) -> Option<Track> {
        id.and_then(|id| self.tracks.borrow().get(id))
    }

    fn alert(&self, text: impl Into<String>, retry_media: bool) {
        let _ = self.view.alert.try_set(Some(Alert {
            text: text.into(),
            retry_media,
        }));
    }

    fn notice(&self, text: impl Into<String>) {
        let _ = self.view.notice.try_set(Some(text.into()));
    }

    /// Tells the call what there is to send now, and the view what to show.
    fn publish(&self) {
        let camera_off = self.view.camera_off.get_untracked();
        let muted = self.view.muted.get_untracked();
        let screen = self.screen.and_then(|track| {
            let stream_id = self.tracks.borrow().screen_stream.as_ref()?.id();
            Some(Screen { track, stream_id })
        });
        (self.publish)(LocalMedia {
            mic: self.mic,
            camera: self.camera,
            screen,
            can_send_audio: self.can_send.0,
            can_send_video: self.can_send.1,
            muted,
            camera_off,
        });
        let preview = self
            .track(self.camera)
            .and_then(|camera| Stream::of(&[&camera]));
        let _ = self.view.preview.try_set(preview);
        let _ = self.view.sharing.try_set(self.screen.is_some());
    }

    /// Gets camera and microphone as the preferences say, falling back step by step: the default
    /// device if the chosen one is gone, audio only without a camera, nothing (watch and listen)
    /// without either. Every failure is explained on screen.
    async fn acquire(&mut self) {
        self.release(Slot::Mic);
        self.release(Slot::Camera);
        let _ = self.view.alert.try_set(None);
        let devices = media::devices().await.unwrap_or_default();
        let camera = media::choose(self.prefs.camera.as_deref(), &devices.cameras);
        let microphone = media::choose(self.prefs.microphone.as_deref(), &devices.microphones);
        let want_video = !self.view.camera_off.get_untracked();

        let mut camera_error = None;
        let mut microphone_error = None;
        let both = if want_video {
            media::open_both(camera.as_deref(), microphone.as_deref()).await
        } else {
            Err(MediaError::NotFound)
        };
        match both {
            Ok((audio, video)) => {
                self.mic = Some(self.tracks.borrow_mut().add(audio));
                self.camera = Some(self.tracks.borrow_mut().add(video));
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
                    Ok(track) => self.mic = Some(self.tracks.borrow_mut().add(track)),
                    Err(err) => microphone_error = Some(err),
                }
                if want_video {
                    match self
                        .open_with_fallback(Kind::Video, camera.as_deref())
                        .await
                    {
                        Ok(track) => self.camera = Some(self.tracks.borrow_mut().add(track)),
                        Err(err) => camera_error = Some(err),
                    }
                }
            }
        }
        if let Some(mic) = self.track(self.mic) {
            mic.set_enabled(!self.view.muted.get_untracked());
        }
        // A camera switched off by choice can come back: it still counts as sendable.
        let camera_usable = self.camera.is_some() || (!want_video && !devices.cameras.is_empty());
        self.can_send = (self.mic.is_some(), camera_usable);
        let _ = self.view.has_microphone.try_set(self.mic.is_some());
        let _ = self.view.has_camera.try_set(camera_usable);
        self.watch_tracks();
        self.refresh_devices().await;
        self.publish();

        match (camera_error, microphone_error) {
            (None, None) => {}
            (Some(cam), Some(mic)) if cam == mic => {
                let text = cam.message(Subject::CameraAndMicrophone);
                let extra = if matches!(cam, MediaError::Insecure) {
                    ""
                } else {
                    " You can still join to watch and listen."
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
                    "{} {} You can still join to watch and listen.",
                    cam.message(Subject::Camera),
                    mic.message(Subject::Microphone)
                );
                self.alert(text, cam.retryable() || mic.retryable());
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
                self.notice(MediaError::Overconstrained.message(subject(kind)));
                media::open(kind, None).await
            }
            other => other,
        }
    }

    /// Listens for our tracks ending on their own (device unplugged, permission revoked, the
    /// browser's own "Stop sharing" bar).
    fn watch_tracks(&mut self) {
        self.ended.clear();
        for (slot, id) in [
            (Slot::Mic, self.mic),
            (Slot::Camera, self.camera),
            (Slot::Screen, self.screen),
        ] {
            if let Some(track) = self.track(id) {
                let tx = self.device_events.clone();
                let listener = track.on_ended(move |_| {
                    let _ = tx.clone().try_send(DeviceEvent::TrackEnded(slot));
                });
                self.ended.insert(slot, listener);
            }
        }
    }

    async fn refresh_devices(&mut self) {
        if let Ok(devices) = media::devices().await {
            let _ = self.view.devices.try_set(devices);
        }
        let camera = self
            .track(self.camera)
            .as_ref()
            .and_then(Track::device_id)
            .or_else(|| self.prefs.camera.clone());
        let microphone = self.track(self.mic).as_ref().and_then(Track::device_id);
        let _ = self.view.camera_id.try_set(camera);
        let _ = self.view.microphone_id.try_set(microphone);
    }

    /// Stops and forgets the track in `slot`.
    fn release(&mut self, slot: Slot) {
        let id = match slot {
            Slot::Mic => self.mic.take(),
            Slot::Camera => self.camera.take(),
            Slot::Screen => self.screen.take(),
        };
        self.ended.remove(&slot);
        if let Some(track) = id.and_then(|id| self.tracks.borrow_mut().remove(id)) {
            track.stop();
        }
    }

    fn release_all(&mut self) {
        for slot in [Slot::Mic, Slot::Camera, Slot::Screen] {
            self.release(slot);
        }
        let _ = self.view.preview.try_set(None);
    }

    async fn on_command(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::RetryMedia => {
                self.acquire().await;
            }
            MediaCommand::SetMuted(muted) => {
                if let Some(mic) = self.track(self.mic) {
                    mic.set_enabled(!muted);
                }
                let _ = self.view.muted.try_set(muted);
                self.publish();
            }
            MediaCommand::SetCameraOff(true) => {
                // Stop the track (the camera light goes off) and send nothing in its place.
                let _ = self.view.camera_off.try_set(true);
                self.release(Slot::Camera);
                self.publish();
            }
            MediaCommand::SetCameraOff(false) => {
                let camera = self.view.camera_id.get_untracked();
                match self
                    .open_with_fallback(Kind::Video, camera.as_deref())
                    .await
                {
                    Ok(track) => {
                        let _ = self.view.camera_off.try_set(false);
                        self.can_send.1 = true;
                        let _ = self.view.has_camera.try_set(true);
                        self.use_track(Slot::Camera, track).await;
                    }
                    Err(err) => self.alert(err.message(Subject::Camera), err.retryable()),
                }
            }
            MediaCommand::SelectCamera(id) => {
                self.prefs.camera = Some(id.clone());
                Preferences::remember(Pref::Camera, Some(&id));
                let _ = self.view.camera_id.try_set(Some(id.clone()));
                if self.camera.is_some() {
                    self.switch(Kind::Video, id).await;
                }
            }
            MediaCommand::SelectMicrophone(id) => {
                self.prefs.microphone = Some(id.clone());
                Preferences::remember(Pref::Microphone, Some(&id));
                let _ = self.view.microphone_id.try_set(Some(id.clone()));
                if self.mic.is_some() {
                    self.switch(Kind::Audio, id).await;
                }
            }
            MediaCommand::SelectSpeaker(id) => {
                self.prefs.speaker = Some(id.clone());
                Preferences::remember(Pref::Speaker, Some(&id));
                let _ = self.view.speaker_id.try_set(Some(id));
            }
            MediaCommand::StartShare => {
                if self.screen.is_some() {
                    return;
                }
                match media::open_screen().await {
                    Ok((track, stream)) => {
                        self.tracks.borrow_mut().screen_stream = Some(stream);
                        let id = self.tracks.borrow_mut().add(track);
                        self.screen = Some(id);
                        self.watch_tracks();
                        self.publish();
                    }
                    Err(ShareError::Cancelled) => {
                        self.notice("Screen sharing was cancelled; nothing was shared.");
                    }
                    Err(err) => self.alert(err.to_string(), false),
                }
            }
            MediaCommand::StopShare => {
                self.release(Slot::Screen);
                self.publish();
            }
        }
    }

    /// Opens the chosen device and sends it instead: no new offer, the other side's media just
    /// changes. The old device is released afterwards.
    async fn switch(&mut self, kind: Kind, device_id: String) {
        let current = match kind {
            Kind::Audio => self.track(self.mic),
            Kind::Video => self.track(self.camera),
        };
        if current.as_ref().and_then(Track::device_id).as_deref() == Some(device_id.as_str()) {
            return;
        }
        match media::open(kind, Some(&device_id)).await {
            Ok(track) => self.use_track(slot_of(kind), track).await,
            Err(err) => {
                self.alert(err.message(subject(kind)), false);
                // Put the picker back on the device still in use.
                self.refresh_devices().await;
            }
        }
    }

    /// Makes `track` the one we send in `slot`, stopping the previous one.
    async fn use_track(&mut self, slot: Slot, track: Track) {
        if slot == Slot::Mic {
            track.set_enabled(!self.view.muted.get_untracked());
        }
        let id = self.tracks.borrow_mut().add(track);
        let old = match slot {
            Slot::Mic => self.mic.replace(id),
            Slot::Camera => self.camera.replace(id),
            Slot::Screen => self.screen.replace(id),
        };
        self.publish();
        // Stop the old one only after the connections were told to send the new one.
        if let Some(old) = old.and_then(|old| self.tracks.borrow_mut().remove(old)) {
            old.stop();
        }
        self.watch_tracks();
        self.refresh_devices().await;
        self.publish();
    }

    async fn on_device_event(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::Changed => {
                let before = self.view.devices.get_untracked();
                self.refresh_devices().await;
                let after = self.view.devices.get_untracked();
                // A device in use that disappeared without its track ending is handled like an
                // ended track.
                for (slot, list_before, list_after) in [
                    (Slot::Camera, &before.cameras, &after.cameras),
                    (Slot::Mic, &before.microphones, &after.microphones),
                ] {
                    let id = match slot {
                        Slot::Camera => self.camera,
                        _ => self.mic,
                    };
                    if let Some(device) = self.track(id).as_ref().and_then(Track::device_id) {
                        if list_before.iter().any(|d| d.id == device)
                            && !list_after.iter().any(|d| d.id == device)
                        {
                            self.replace_lost(slot).await;
                        }
                    }
                }
            }
            DeviceEvent::TrackEnded(Slot::Screen) => {
                // The browser's own "Stop sharing" bar: same as our button.
                self.release(Slot::Screen);
                self.publish();
            }
            DeviceEvent::TrackEnded(slot) => {
                self.refresh_devices().await;
                self.replace_lost(slot).await;
            }
        }
    }

    /// The device in use for `slot` is gone: switch to another one and say so.
    async fn replace_lost(&mut self, slot: Slot) {
        let kind = match slot {
            Slot::Mic => Kind::Audio,
            _ => Kind::Video,
        };
        let devices = self.view.devices.get_untracked();
        let (list, noun) = match kind {
            Kind::Audio => (&devices.microphones, "microphone"),
            Kind::Video => (&devices.cameras, "camera"),
        };
        let lost = self.track(match slot {
            Slot::Mic => self.mic,
            _ => self.camera,
        });
        let lost_label = lost.as_ref().map(Track::label).unwrap_or_default();
        let lost_id = lost.as_ref().and_then(Track::device_id);
        self.release(slot);
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
                self.use_track(slot, track).await;
            }
            (_, result) => {
                let why = match result {
                    Some(Err(err)) => format!(" ({})", err.message(subject(kind))),
                    _ => String::new(),
                };
                self.alert(
                    format!("Your {noun} ({lost_label}) was disconnected.{why} Plug it back in and press Try again."),
                    true,
                );
                if kind == Kind::Video {
                    let _ = self.view.camera_off.try_set(true);
                }
                self.watch_tracks();
                self.publish();
            }
        }
    }
}

fn subject(kind: Kind) -> Subject {
    match kind {
        Kind::Audio => Subject::Microphone,
        Kind::Video => Subject::Camera,
    }
}

fn slot_of(kind: Kind) -> Slot {
    match kind {
        Kind::Audio => Slot::Mic,
        Kind::Video => Slot::Camera,
    }
}

/// A bounded command queue: a person cannot click faster than the task handles clicks, and a
/// click beyond 32 waiting ones is dropped rather than remembered.
pub fn commands() -> (Sender<MediaCommand>, Receiver<MediaCommand>) {
    futures::channel::mpsc::channel(32)
}
