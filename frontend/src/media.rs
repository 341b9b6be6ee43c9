//! Local media: the only module that touches `navigator.mediaDevices` (getUserMedia,
//! enumerateDevices, devicechange) and the media side of `<video>` elements (srcObject, play,
//! setSinkId). Everything else gets opaque [`Stream`]s and [`Track`]s, [`Device`] lists, and
//! failures as [`MediaError`] with a sentence for the person in front of the screen.

use gloo_events::EventListener;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaDeviceInfo, MediaDeviceKind, MediaStream, MediaStreamConstraints, MediaStreamTrack,
};

/// A camera, microphone or speaker as the pickers show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub label: String,
}

/// Every device the browser lists, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    pub cameras: Vec<Device>,
    pub microphones: Vec<Device>,
    pub speakers: Vec<Device>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

/// Why camera or microphone access failed, from the DOMException name getUserMedia rejects with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaError {
    /// NotAllowedError / SecurityError: the person or the browser said no.
    Denied,
    /// NotFoundError: no such device.
    NotFound,
    /// NotReadableError / AbortError: the device exists but cannot be opened (often: in use).
    Busy,
    /// OverconstrainedError: the chosen device is gone or cannot do what was asked.
    Overconstrained,
    /// No `navigator.mediaDevices`: the page is not a secure context (http on a LAN address).
    Insecure,
    /// Anything else, with the browser's own words.
    Other(String),
}

impl MediaError {
    /// Maps a DOMException `name` (and `message`) to a [`MediaError`]. Pure, unit-tested.
    pub fn from_name(name: &str, message: &str) -> Self {
        match name {
            "NotAllowedError" | "PermissionDeniedError" | "SecurityError" => MediaError::Denied,
            "NotFoundError" | "DevicesNotFoundError" => MediaError::NotFound,
            "NotReadableError" | "TrackStartError" | "AbortError" => MediaError::Busy,
            "OverconstrainedError" | "ConstraintNotSatisfiedError" => MediaError::Overconstrained,
            _ if message.is_empty() => MediaError::Other(name.to_string()),
            _ => MediaError::Other(format!("{name}: {message}")),
        }
    }

    fn from_js(value: JsValue) -> Self {
        match value.dyn_into::<web_sys::DomException>() {
            Ok(exception) => Self::from_name(&exception.name(), &exception.message()),
            Err(value) => {
                // OverconstrainedError is not a DOMException in every browser.
                let name = js_sys::Reflect::get(&value, &"name".into())
                    .ok()
                    .and_then(|n| n.as_string());
                match name {
                    Some(name) => Self::from_name(&name, ""),
                    None => MediaError::Other(
                        value.as_string().unwrap_or_else(|| "unknown error".into()),
                    ),
                }
            }
        }
    }

    /// Whether trying again can help without reloading (permission changed, other app closed,
    /// device plugged in).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            MediaError::Denied | MediaError::NotFound | MediaError::Busy | MediaError::Other(_)
        )
    }

    /// A sentence for the person: what happened, and what they can do.
    pub fn message(&self, what: Subject) -> String {
        let thing = what.noun();
        match self {
            MediaError::Denied => format!(
                "Access to your {thing} is blocked. Click the camera icon in the address bar (or the site settings), allow it, then press Try again."
            ),
            MediaError::NotFound => format!("No {thing} was found. Plug one in and press Try again."),
            MediaError::Busy => format!(
                "Your {thing} is in use by another application, or blocked by the system. Close the other app and press Try again."
            ),
            MediaError::Overconstrained => format!("The chosen {thing} is not available any more; using the default one."),
            MediaError::Insecure => "This page is not secure (it needs https://, or localhost), so the browser allows no camera or microphone here. You can still watch and listen.".into(),
            MediaError::Other(detail) => format!("Your {thing} could not be started ({detail})."),
        }
    }
}

/// What a sentence is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Camera,
    Microphone,
    CameraAndMicrophone,
}

impl Subject {
    fn noun(self) -> &'static str {
        match self {
            Subject::Camera => "camera",
            Subject::Microphone => "microphone",
            Subject::CameraAndMicrophone => "camera and microphone",
        }
    }
}

/// Picks the device to use: the remembered one if it still exists, else the first listed
/// (None: let the browser choose its default). Pure, unit-tested.
pub fn choose(preferred: Option<&str>, available: &[Device]) -> Option<String> {
    match preferred {
        Some(id) if available.iter().any(|d| d.id == id) => Some(id.to_string()),
        _ => available.first().map(|d| d.id.clone()),
    }
}

/// When the device in use disappears: the device to switch to (the first other one), if any.
/// Pure, unit-tested.
pub fn replacement(current: Option<&str>, available: &[Device]) -> Replacement {
    match current {
        Some(id) if available.iter().any(|d| d.id == id) => Replacement::Keep,
        _ => match available.first() {
            Some(device) => Replacement::SwitchTo(device.clone()),
            None => Replacement::NoneLeft,
        },
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replacement {
    Keep,
    SwitchTo(Device),
    NoneLeft,
}

/// One local camera or microphone track.
#[derive(Clone, Debug, PartialEq)]
pub struct Track(pub(crate) MediaStreamTrack);

impl Track {
    pub fn device_id(&self) -> Option<String> {
        self.0
            .get_settings()
            .get_device_id()
            .filter(|id| !id.is_empty())
    }

    pub fn label(&self) -> String {
        self.0.label()
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.0.set_enabled(enabled);
    }

    /// Releases the device (its light goes off).
    pub fn stop(&self) {
        self.0.stop();
    }

    /// Calls `f` when the track ends on its own (device unplugged, permission revoked).
    pub fn on_ended(&self, f: impl FnMut(&web_sys::Event) + 'static) -> EventListener {
        EventListener::new(&self.0, "ended", f)
    }
}

/// A local or remote media stream, passed around opaquely; only this module and `peer` look inside.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream(pub(crate) MediaStream);

impl Stream {
    /// A stream holding `tracks` (for the local preview).
    pub fn of(tracks: &[&Track]) -> Option<Stream> {
        let array: js_sys::Array = tracks.iter().map(|t| JsValue::from(&t.0)).collect();
        MediaStream::new_with_tracks(&array).ok().map(Stream)
    }

    /// A stable identity, for keying views.
    pub fn id(&self) -> String {
        self.0.id()
    }
}

fn media_devices() -> Result<web_sys::MediaDevices, MediaError> {
    let window = web_sys::window().ok_or(MediaError::Insecure)?;
    if !window.is_secure_context() {
        return Err(MediaError::Insecure);
    }
    window
        .navigator()
        .media_devices()
        .map_err(|_| MediaError::Insecure)
}

fn set(object: &js_sys::Object, key: &str, value: &JsValue) {
    // Reflect.set on a plain object cannot fail.
    let _ = js_sys::Reflect::set(object, &key.into(), value);
}

fn exact(device_id: &str) -> JsValue {
    let exact = js_sys::Object::new();
    set(&exact, "exact", &device_id.into());
    exact.into()
}

/// `{echoCancellation, noiseSuppression, autoGainControl: true, deviceId?}`: voice, not music.
fn audio_constraints(device_id: Option<&str>) -> JsValue {
    let audio = js_sys::Object::new();
    for key in ["echoCancellation", "noiseSuppression", "autoGainControl"] {
        set(&audio, key, &JsValue::TRUE);
    }
    if let Some(id) = device_id {
        set(&audio, "deviceId", &exact(id));
    }
    audio.into()
}

/// The chosen camera (`deviceId: {exact}`), or the front camera on a phone (`facingMode: user`).
fn video_constraints(device_id: Option<&str>) -> JsValue {
    let video = js_sys::Object::new();
    match device_id {
        Some(id) => set(&video, "deviceId", &exact(id)),
        None => set(&video, "facingMode", &"user".into()),
    }
    video.into()
}

async fn get_user_media(audio: JsValue, video: JsValue) -> Result<MediaStream, MediaError> {
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&audio);
    constraints.set_video(&video);
    let promise = media_devices()?
        .get_user_media_with_constraints(&constraints)
        .map_err(MediaError::from_js)?;
    let stream = JsFuture::from(promise).await.map_err(MediaError::from_js)?;
    stream
        .dyn_into::<MediaStream>()
        .map_err(|_| MediaError::Other("getUserMedia returned no stream".into()))
}

fn first(tracks: js_sys::Array) -> Option<Track> {
    tracks.get(0).dyn_into::<MediaStreamTrack>().ok().map(Track)
}

/// Camera and microphone in one prompt. `None` ids mean the browser's default (front camera).
pub async fn open_both(
    camera: Option<&str>,
    microphone: Option<&str>,
) -> Result<(Track, Track), MediaError> {
    let stream = get_user_media(audio_constraints(microphone), video_constraints(camera)).await?;
    match (
        first(stream.get_audio_tracks()),
        first(stream.get_video_tracks()),
    ) {
        (Some(audio), Some(video)) => Ok((audio, video)),
        _ => Err(MediaError::NotFound),
    }
}

/// One camera or microphone.
pub async fn open(kind: Kind, device_id: Option<&str>) -> Result<Track, MediaError> {
    let (audio, video) = match kind {
        Kind::Audio => (audio_constraints(device_id), JsValue::FALSE),
        Kind::Video => (JsValue::FALSE, video_constraints(device_id)),
    };
    let stream = get_user_media(audio, video).await?;
    let tracks = match kind {
        Kind::Audio => stream.get_audio_tracks(),
        Kind::Video => stream.get_video_tracks(),
    };
    first(tracks).ok_or(MediaError::NotFound)
}

/// Why a screen share did not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The person closed the picker, or refused.
    #[error("screen sharing was cancelled")]
    Cancelled,
    /// This browser cannot share a screen (most phones).
    #[error("This browser cannot share a screen.")]
    Unsupported,
    #[error("The screen could not be shared ({0}).")]
    Failed(String),
}

/// Whether this browser can share a screen at all (`getDisplayMedia`; absent on most phones).
pub fn screen_share_supported() -> bool {
    media_devices()
        .map(|devices| js_sys::Reflect::has(&devices, &"getDisplayMedia".into()).unwrap_or(false))
        .unwrap_or(false)
}

/// Asks the person which screen or window to share (`getDisplayMedia`). The track is marked
/// `contentHint = "detail"` so the encoder keeps text legible rather than motion smooth. Returns
/// the track and the stream it is announced in.
pub async fn open_screen() -> Result<(Track, Stream), ShareError> {
    let devices = media_devices().map_err(|_| ShareError::Unsupported)?;
    let method = js_sys::Reflect::get(&devices, &"getDisplayMedia".into())
        .ok()
        .and_then(|m| m.dyn_into::<js_sys::Function>().ok())
        .ok_or(ShareError::Unsupported)?;
    let constraints = js_sys::Object::new();
    set(&constraints, "video", &JsValue::TRUE);
    set(&constraints, "audio", &JsValue::FALSE);
    let promise: js_sys::Promise = method
        .call1(&devices, &constraints)
        .map_err(|e| ShareError::Failed(format!("{:?}", MediaError::from_js(e))))?
        .dyn_into()
        .map_err(|_| ShareError::Failed("no promise".into()))?;
    let stream = match JsFuture::from(promise).await {
        Ok(stream) => stream
            .dyn_into::<MediaStream>()
            .map_err(|_| ShareError::Failed("no stream".into()))?,
        Err(err) => {
            return Err(match MediaError::from_js(err) {
                // NotAllowedError: the picker was closed or the person said no.
                MediaError::Denied | MediaError::Busy => ShareError::Cancelled,
                other => ShareError::Failed(format!("{other:?}")),
            });
        }
    };
    let track = first(stream.get_video_tracks()).ok_or(ShareError::Cancelled)?;
    set(&track.0, "contentHint", &"detail".into());
    Ok((track, Stream(stream)))
}

/// The devices the browser lists (labels are filled in once access was granted).
pub async fn devices() -> Result<Devices, MediaError> {
    let promise = media_devices()?
        .enumerate_devices()
        .map_err(MediaError::from_js)?;
    let list = JsFuture::from(promise).await.map_err(MediaError::from_js)?;
    let list: js_sys::Array = list
        .dyn_into()
        .map_err(|_| MediaError::Other("no device list".into()))?;
    let mut out = Devices::default();
    for info in list.iter() {
        let Ok(info) = info.dyn_into::<MediaDeviceInfo>() else {
            continue;
        };
        // Before permission is granted, ids are empty: nothing to pick yet.
        if info.device_id().is_empty() {
            continue;
        }
        let (list, noun) = match info.kind() {
            MediaDeviceKind::Videoinput => (&mut out.cameras, "Camera"),
            MediaDeviceKind::Audioinput => (&mut out.microphones, "Microphone"),
            MediaDeviceKind::Audiooutput => (&mut out.speakers, "Speaker"),
            _ => continue,
        };
        let label = match info.label() {
            label if label.is_empty() => format!("{noun} {}", list.len() + 1),
            label => label,
        };
        list.push(Device {
            id: info.device_id(),
            label,
        });
    }
    Ok(out)
}

/// Calls `f` when a device is plugged in or removed.
pub fn on_device_change(f: impl FnMut(&web_sys::Event) + 'static) -> Option<EventListener> {
    media_devices()
        .ok()
        .map(|devices| EventListener::new(&devices, "devicechange", f))
}

/// Whether this browser can route audio to a chosen speaker (`HTMLMediaElement.setSinkId`).
pub fn speaker_choice_supported() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    js_sys::Reflect::get(&window, &"HTMLMediaElement".into())
        .and_then(|class| js_sys::Reflect::get(&class, &"prototype".into()))
        .map(|proto| js_sys::Reflect::has(&proto, &"setSinkId".into()).unwrap_or(false))
        .unwrap_or(false)
}

/// Plays `video`'s audio on speaker `id` ("" = the system default).
pub async fn set_speaker(video: &web_sys::HtmlVideoElement, id: &str) -> Result<(), MediaError> {
    let method = js_sys::Reflect::get(video, &"setSinkId".into()).map_err(MediaError::from_js)?;
    let method: js_sys::Function = method
        .dyn_into()
        .map_err(|_| MediaError::Other("this browser cannot choose a speaker".into()))?;
    let promise: js_sys::Promise = method
        .call1(video, &id.into())
        .map_err(MediaError::from_js)?
        .dyn_into()
        .map_err(|_| MediaError::Other("setSinkId returned no promise".into()))?;
    JsFuture::from(promise).await.map_err(MediaError::from_js)?;
    Ok(())
}

/// Why a `<video>` would not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlayError {
    /// The autoplay policy wants a tap or click first.
    NeedsGesture,
    Other(String),
}

/// Shows `stream` in a `<video>` element (or clears it) and starts playback. Only re-assigns when
/// the stream changed, so a playing element does not restart.
pub async fn attach(
    video: &web_sys::HtmlVideoElement,
    stream: Option<&Stream>,
) -> Result<(), PlayError> {
    let current = video.src_object();
    let same = match (&current, stream) {
        (Some(current), Some(stream)) => js_sys::Object::is(current, &stream.0),
        (None, None) => true,
        _ => false,
    };
    if !same {
        video.set_src_object(stream.map(|s| &s.0));
    }
    if stream.is_none() {
        return Ok(());
    }
    play(video).await
}

async fn play(video: &web_sys::HtmlVideoElement) -> Result<(), PlayError> {
    let promise = video
        .play()
        .map_err(|e| PlayError::Other(format!("{e:?}")))?;
    match JsFuture::from(promise).await {
        Ok(_) => Ok(()),
        Err(err) => match MediaError::from_js(err) {
            MediaError::Denied => Err(PlayError::NeedsGesture),
            // AbortError: a newer srcObject replaced this one; not a failure.
            MediaError::Busy => Ok(()),
            other => Err(PlayError::Other(format!("{other:?}"))),
        },
    }
}

/// Starts every `<video>` on the page; called from a tap, which satisfies the autoplay policy.
pub async fn play_all() -> Result<(), PlayError> {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return Ok(());
    };
    let Ok(videos) = document.query_selector_all("video") else {
        return Ok(());
    };
    let mut result = Ok(());
    for index in 0..videos.length() {
        if let Some(video) = videos
            .get(index)
            .and_then(|n| n.dyn_into::<web_sys::HtmlVideoElement>().ok())
        {
            if video.src_object().is_some() {
                if let Err(err) = play(&video).await {
                    result = Err(err);
                }
            }
        }
    }
    result
}

/// Remembered choices, in localStorage (per browser, per origin): devices and display name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preferences {
    pub camera: Option<String>,
    pub microphone: Option<String>,
    pub speaker: Option<String>,
    pub name: Option<String>,
}

const PREF_KEYS: [&str; 4] = [
    "noom.camera",
    "noom.microphone",
    "noom.speaker",
    "noom.name",
];

impl Preferences {
    fn storage() -> Option<web_sys::Storage> {
        // Storage can be unavailable (private mode, disabled cookies): then nothing is remembered.
        web_sys::window().and_then(|w| w.local_storage().ok().flatten())
    }

    pub fn load() -> Self {
        let Some(storage) = Self::storage() else {
            return Self::default();
        };
        let get = |key: &str| {
            storage
                .get_item(key)
                .ok()
                .flatten()
                .filter(|v| !v.is_empty())
        };
        Self {
            camera: get(PREF_KEYS[0]),
            microphone: get(PREF_KEYS[1]),
            speaker: get(PREF_KEYS[2]),
            name: get(PREF_KEYS[3]),
        }
    }

    /// Remembers one choice (only that one: the lobby and the media task each save their own).
    pub fn remember(pref: Pref, value: Option<&str>) {
        let Some(storage) = Self::storage() else {
            return;
        };
        let key = PREF_KEYS[pref as usize];
        let _ = match value {
            Some(value) => storage.set_item(key, value),
            None => storage.remove_item(key),
        };
    }
}

/// One remembered choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pref {
    Camera = 0,
    Microphone = 1,
    Speaker = 2,
    Name = 3,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str) -> Device {
        Device {
            id: id.into(),
            label: id.to_uppercase(),
        }
    }

    #[test]
    fn maps_dom_exception_names() {
        assert_eq!(
            MediaError::from_name("NotAllowedError", "Permission denied"),
            MediaError::Denied
        );
        assert_eq!(
            MediaError::from_name("SecurityError", ""),
            MediaError::Denied
        );
        assert_eq!(
            MediaError::from_name("NotFoundError", ""),
            MediaError::NotFound
        );
        assert_eq!(
            MediaError::from_name("NotReadableError", ""),
            MediaError::Busy
        );
        assert_eq!(
            MediaError::from_name("OverconstrainedError", ""),
            MediaError::Overconstrained
        );
        assert_eq!(
            MediaError::from_name("TypeError", "bad constraints"),
            MediaError::Other("TypeError: bad constraints".into())
        );
    }

    #[test]
    fn every_error_has_a_sentence_with_a_way_forward() {
        for error in [
            MediaError::Denied,
            MediaError::NotFound,
            MediaError::Busy,
            MediaError::Overconstrained,
            MediaError::Insecure,
            MediaError::Other("x".into()),
        ] {
            for what in [
                Subject::Camera,
                Subject::Microphone,
                Subject::CameraAndMicrophone,
            ] {
                let text = error.message(what);
                assert!(text.ends_with('.') && text.len() > 30, "{text}");
            }
        }
        let denied = MediaError::Denied.message(Subject::Camera);
        assert!(
            denied.contains("blocked") && denied.contains("camera") && denied.contains("Try again")
        );
        assert!(MediaError::Busy
            .message(Subject::Microphone)
            .contains("another application"));
        assert!(MediaError::Insecure
            .message(Subject::Camera)
            .contains("https"));
        assert!(MediaError::Denied.retryable() && !MediaError::Insecure.retryable());
    }

    #[test]
    fn choose_prefers_a_remembered_device_that_still_exists() {
        let list = [d("a"), d("b")];
        assert_eq!(choose(Some("b"), &list), Some("b".into()));
        assert_eq!(choose(Some("gone"), &list), Some("a".into()));
        assert_eq!(choose(None, &list), Some("a".into()));
        assert_eq!(choose(Some("b"), &[]), None);
    }

    #[test]
    fn replacement_when_a_device_disappears() {
        let list = [d("a"), d("b")];
        assert_eq!(replacement(Some("b"), &list), Replacement::Keep);
        assert_eq!(
            replacement(Some("gone"), &list),
            Replacement::SwitchTo(d("a"))
        );
        assert_eq!(replacement(None, &list), Replacement::SwitchTo(d("a")));
        assert_eq!(replacement(Some("gone"), &[]), Replacement::NoneLeft);
    }
}
