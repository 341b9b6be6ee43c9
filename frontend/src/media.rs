//! Local media: the only module that touches `navigator.mediaDevices`. Everything else gets
//! opaque [`Stream`]s and [`Device`] lists, and failures as [`MediaError`] with a sentence for
//! the person in front of the screen.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaDeviceInfo, MediaDeviceKind, MediaStream, MediaStreamConstraints, MediaStreamTrack,
};

/// A camera or microphone as the pickers show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub label: String,
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
            Err(value) => MediaError::Other(
                value
                    .as_string()
                    .unwrap_or_else(|| "unknown error".to_string()),
            ),
        }
    }

    /// A sentence for the person, saying what happened and what they can do.
    pub fn message(&self) -> String {
        match self {
            MediaError::Denied => "Camera and microphone access was blocked. Allow it in the browser's address bar (the camera icon), then reload the page. Others can still see that you joined.".into(),
            MediaError::NotFound => "No camera or microphone was found. Plug one in and reload; you can still watch and listen.".into(),
            MediaError::Busy => "Your camera or microphone is in use by another application (or blocked by the system). Close the other app and reload.".into(),
            MediaError::Overconstrained => "The chosen camera is not available any more. Pick another one.".into(),
            MediaError::Insecure => "This page is not secure (it needs https, or localhost), so the browser does not allow camera or microphone access.".into(),
            MediaError::Other(detail) => format!("The camera or microphone could not be started ({detail})."),
        }
    }
}

/// A local or remote media stream, passed around opaquely; only this module and `peer` look inside.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream(pub(crate) MediaStream);

impl Stream {
    /// A stable identity, for keying views.
    pub fn id(&self) -> String {
        self.0.id()
    }

    pub fn video_track(&self) -> Option<MediaStreamTrack> {
        first_track(&self.0.get_video_tracks())
    }

    pub fn audio_track(&self) -> Option<MediaStreamTrack> {
        first_track(&self.0.get_audio_tracks())
    }

    /// Enables or disables every track of one kind (mute / camera off keep the track).
    pub fn set_enabled(&self, kind: TrackKind, enabled: bool) {
        let tracks = match kind {
            TrackKind::Audio => self.0.get_audio_tracks(),
            TrackKind::Video => self.0.get_video_tracks(),
        };
        for track in tracks.iter() {
            if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
                track.set_enabled(enabled);
            }
        }
    }

    /// The same audio with another video track (the old one is not stopped here).
    pub fn with_video(&self, video: &MediaStreamTrack) -> Stream {
        let tracks = js_sys::Array::new();
        if let Some(audio) = self.audio_track() {
            tracks.push(&audio);
        }
        tracks.push(video);
        match MediaStream::new_with_tracks(&tracks) {
            Ok(stream) => Stream(stream),
            // Only fails for non-track arguments, which cannot happen here; keep the old stream.
            Err(_) => self.clone(),
        }
    }

    /// Stops every track: releases the camera and microphone (their lights go off).
    pub fn stop(&self) {
        for track in self.0.get_tracks().iter() {
            if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
                track.stop();
            }
        }
    }

    /// The device id of the current camera, if any.
    pub fn camera_id(&self) -> Option<String> {
        self.video_track()
            .and_then(|track| track.get_settings().get_device_id())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
}

fn first_track(tracks: &js_sys::Array) -> Option<MediaStreamTrack> {
    tracks.get(0).dyn_into::<MediaStreamTrack>().ok()
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

fn audio_constraints() -> JsValue {
    let audio = js_sys::Object::new();
    for key in ["echoCancellation", "noiseSuppression", "autoGainControl"] {
        let _ = js_sys::Reflect::set(&audio, &key.into(), &JsValue::TRUE);
    }
    audio.into()
}

fn video_constraints(camera: Option<&str>) -> JsValue {
    let video = js_sys::Object::new();
    match camera {
        Some(id) => {
            let exact = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&exact, &"exact".into(), &id.into());
            let _ = js_sys::Reflect::set(&video, &"deviceId".into(), &exact);
        }
        None => {
            let _ = js_sys::Reflect::set(&video, &"facingMode".into(), &"user".into());
        }
    }
    video.into()
}

async fn get_user_media(constraints: &MediaStreamConstraints) -> Result<MediaStream, MediaError> {
    let promise = media_devices()?
        .get_user_media_with_constraints(constraints)
        .map_err(MediaError::from_js)?;
    let stream = JsFuture::from(promise).await.map_err(MediaError::from_js)?;
    stream
        .dyn_into::<MediaStream>()
        .map_err(|_| MediaError::Other("getUserMedia returned no stream".into()))
}

/// Camera and microphone, as the tutorial asks: `{audio: true, video: {facingMode: "user"}}`,
/// with echo cancellation, noise suppression and gain control on.
pub async fn open_camera_and_microphone() -> Result<Stream, MediaError> {
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&audio_constraints());
    constraints.set_video(&video_constraints(None));
    get_user_media(&constraints).await.map(Stream)
}

/// One specific camera (`deviceId: {exact}`), video only, for switching cameras mid-call.
pub async fn open_camera(device_id: &str) -> Result<MediaStreamTrack, MediaError> {
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&JsValue::FALSE);
    constraints.set_video(&video_constraints(Some(device_id)));
    let stream = get_user_media(&constraints).await?;
    first_track(&stream.get_video_tracks())
        .ok_or_else(|| MediaError::Other("the camera gave no video".into()))
}

/// The cameras the browser lists (labels are filled in once access was granted).
pub async fn cameras() -> Result<Vec<Device>, MediaError> {
    let promise = media_devices()?
        .enumerate_devices()
        .map_err(MediaError::from_js)?;
    let list = JsFuture::from(promise).await.map_err(MediaError::from_js)?;
    let list: js_sys::Array = list
        .dyn_into()
        .map_err(|_| MediaError::Other("no device list".into()))?;
    let mut out = Vec::new();
    for (index, info) in list.iter().enumerate() {
        let Ok(info) = info.dyn_into::<MediaDeviceInfo>() else {
            continue;
        };
        if info.kind() == MediaDeviceKind::Videoinput && !info.device_id().is_empty() {
            let label = match info.label() {
                label if label.is_empty() => format!("Camera {}", index + 1),
                label => label,
            };
            out.push(Device {
                id: info.device_id(),
                label,
            });
        }
    }
    Ok(out)
}

/// Shows `stream` in a `<video>` element (or clears it). Only re-assigns when it changed, so
/// a playing element does not restart.
pub fn attach(video: &web_sys::HtmlVideoElement, stream: Option<&Stream>) {
    let current = video.src_object();
    let same = match (&current, stream) {
        (Some(current), Some(stream)) => js_sys::Object::is(current, &stream.0),
        (None, None) => true,
        _ => false,
    };
    if !same {
        video.set_src_object(stream.map(|s| &s.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_error_has_a_sentence() {
        for error in [
            MediaError::Denied,
            MediaError::NotFound,
            MediaError::Busy,
            MediaError::Overconstrained,
            MediaError::Insecure,
            MediaError::Other("x".into()),
        ] {
            let text = error.message();
            assert!(text.ends_with('.') && text.len() > 30, "{text}");
        }
        assert!(MediaError::Denied.message().contains("blocked"));
        assert!(MediaError::Insecure.message().contains("https"));
    }
}
