//! One WebRTC connection to one remote participant: the only module that touches
//! `RTCPeerConnection`. A [`Peer`] owns its connection and its event listeners; dropping it closes
//! the connection and removes the listeners, so a participant who left leaves nothing behind.

use futures::channel::mpsc::UnboundedSender;
use gloo_events::EventListener;
use shared::{IceCandidate, IceServer, PeerId, SdpKind, SessionDescription};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, RtcConfiguration, RtcIceCandidateInit, RtcIceServer, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcRtpTransceiver, RtcRtpTransceiverDirection,
    RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit, RtcTrackEvent,
};

use crate::media::{Kind, Stream, Track};

/// What a peer connection reports to the call, through a channel (listeners never touch the UI).
#[derive(Debug)]
pub enum PeerEvent {
    /// A local ICE candidate to send to `peer` through the server.
    IceCandidate(PeerId, IceCandidate),
    /// Remote media arrived (or changed) for `peer`.
    Track(PeerId, Stream),
    /// The connection state changed ("connecting", "connected", "failed", ...).
    State(PeerId, String),
}

/// A WebRTC failure, with the browser's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerError(pub String);

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn js_error(context: &str, value: JsValue) -> PeerError {
    let detail = value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"));
    PeerError(format!("{context}: {detail}"))
}

pub struct Peer {
    pc: RtcPeerConnection,
    /// Candidates that arrived before the remote description; added right after it is set.
    pending_candidates: Vec<IceCandidate>,
    /// Whether what we send is set up yet (an answerer does it after the offer).
    sending: bool,
    /// Owned listeners: removed from the connection when the peer is dropped.
    _listeners: Vec<EventListener>,
}

impl Peer {
    /// A connection to `id` using `ice_servers`, reporting through `events`. No media yet: the
    /// offerer calls [`Peer::offer`], the answerer [`Peer::accept`].
    pub fn new(
        id: PeerId,
        ice_servers: &[IceServer],
        events: UnboundedSender<PeerEvent>,
    ) -> Result<Self, PeerError> {
        let config = RtcConfiguration::new();
        let servers = js_sys::Array::new();
        for server in ice_servers {
            let entry = RtcIceServer::new();
            let urls: js_sys::Array = server.urls.iter().map(|u| JsValue::from_str(u)).collect();
            entry.set_urls(&urls);
            if let Some(username) = &server.username {
                entry.set_username(username);
            }
            if let Some(credential) = &server.credential {
                entry.set_credential(credential);
            }
            servers.push(&entry);
        }
        config.set_ice_servers(&servers);
        let pc = RtcPeerConnection::new_with_configuration(&config)
            .map_err(|e| js_error("cannot create a peer connection", e))?;

        let mut listeners = Vec::new();
        {
            let events = events.clone();
            listeners.push(EventListener::new(&pc, "icecandidate", move |event| {
                let Some(event) = event.dyn_ref::<RtcPeerConnectionIceEvent>() else {
                    return;
                };
                // A null candidate marks the end of gathering; nothing to send.
                if let Some(candidate) = event.candidate() {
                    if candidate.candidate().is_empty() {
                        return;
                    }
                    let _ = events.unbounded_send(PeerEvent::IceCandidate(
                        id,
                        IceCandidate {
                            candidate: candidate.candidate(),
                            sdp_mid: candidate.sdp_mid(),
                            sdp_m_line_index: candidate.sdp_m_line_index(),
                            // Not in web-sys's RTCIceCandidate binding: read the property directly.
                            username_fragment: js_sys::Reflect::get(
                                &candidate,
                                &"usernameFragment".into(),
                            )
                            .ok()
                            .and_then(|v| v.as_string()),
                        },
                    ));
                }
            }));
        }
        {
            let events = events.clone();
            // Remote media comes through `track` (the tutorial's `addstream` is long deprecated).
            // The sender attaches both its tracks to one stream; use it, or make one.
            let fallback =
                MediaStream::new().map_err(|e| js_error("cannot create a media stream", e))?;
            listeners.push(EventListener::new(&pc, "track", move |event| {
                let Some(event) = event.dyn_ref::<RtcTrackEvent>() else {
                    return;
                };
                let stream = match event.streams().get(0).dyn_into::<MediaStream>() {
                    Ok(stream) => stream,
                    Err(_) => {
                        fallback.add_track(&event.track());
                        fallback.clone()
                    }
                };
                let _ = events.unbounded_send(PeerEvent::Track(id, Stream(stream)));
            }));
        }
        {
            let pc2 = pc.clone();
            listeners.push(EventListener::new(
                &pc,
                "connectionstatechange",
                move |_| {
                    let state = js_sys::Reflect::get(&pc2, &"connectionState".into())
                        .ok()
                        .and_then(|v| v.as_string())
                        .unwrap_or_default();
                    let _ = events.unbounded_send(PeerEvent::State(id, state));
                },
            ));
        }
        Ok(Self {
            pc,
            pending_candidates: Vec::new(),
            sending: false,
            _listeners: listeners,
        })
    }

    /// Attaches what we send, then creates the offer and sets it locally.
    pub async fn offer(&mut self, local: &Outgoing<'_>) -> Result<SessionDescription, PeerError> {
        if !self.sending {
            self.sending = true;
            for (kind, track, can_send) in local.kinds() {
                let init = RtcRtpTransceiverInit::new();
                init.set_direction(if can_send {
                    RtcRtpTransceiverDirection::Sendrecv
                } else {
                    RtcRtpTransceiverDirection::Recvonly
                });
                if can_send {
                    init.set_streams(&js_sys::Array::of1(&local.stream.0));
                }
                match track {
                    Some(track) => self
                        .pc
                        .add_transceiver_with_media_stream_track_and_init(&track.0, &init),
                    None => self
                        .pc
                        .add_transceiver_with_str_and_init(kind.as_str(), &init),
                };
            }
        }
        let offer = JsFuture::from(self.pc.create_offer())
            .await
            .map_err(|e| js_error("cannot create an offer", e))?;
        let offer: RtcSessionDescriptionInit = offer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&offer))
            .await
            .map_err(|e| js_error("cannot use our own offer", e))?;
        self.local_description(SdpKind::Offer)
    }

    /// Applies a remote offer or answer. For an offer, puts what we send on the transceivers the
    /// offer created and returns the answer to send back.
    pub async fn accept(
        &mut self,
        description: SessionDescription,
        local: &Outgoing<'_>,
    ) -> Result<Option<SessionDescription>, PeerError> {
        let kind = match description.kind {
            SdpKind::Offer => RtcSdpType::Offer,
            SdpKind::Answer => RtcSdpType::Answer,
        };
        let init = RtcSessionDescriptionInit::new(kind);
        init.set_sdp(&description.sdp);
        JsFuture::from(self.pc.set_remote_description(&init))
            .await
            .map_err(|e| js_error("cannot use the other side's description", e))?;
        for candidate in std::mem::take(&mut self.pending_candidates) {
            self.add_candidate_now(&candidate).await?;
        }
        if description.kind == SdpKind::Answer {
            return Ok(None);
        }
        if !self.sending {
            self.sending = true;
            for (kind, track, can_send) in local.kinds() {
                let Some(transceiver) = self.transceiver(kind) else {
                    continue;
                };
                if can_send {
                    transceiver.set_direction(RtcRtpTransceiverDirection::Sendrecv);
                    // Tells the other side which stream our tracks belong to (msid).
                    let sender = transceiver.sender();
                    if let Ok(set_streams) = js_sys::Reflect::get(&sender, &"setStreams".into()) {
                        if let Ok(set_streams) = set_streams.dyn_into::<js_sys::Function>() {
                            let _ = set_streams.call1(&sender, &local.stream.0);
                        }
                    }
                    if let Some(track) = track {
                        JsFuture::from(sender.replace_track(Some(&track.0)))
                            .await
                            .map_err(|e| js_error("cannot send our media", e))?;
                    }
                } else {
                    transceiver.set_direction(RtcRtpTransceiverDirection::Recvonly);
                }
            }
        }
        let answer = JsFuture::from(self.pc.create_answer())
            .await
            .map_err(|e| js_error("cannot create an answer", e))?;
        let answer: RtcSessionDescriptionInit = answer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&answer))
            .await
            .map_err(|e| js_error("cannot use our own answer", e))?;
        self.local_description(SdpKind::Answer).map(Some)
    }

    /// Adds a remote ICE candidate, or keeps it until the remote description is set: candidates
    /// can overtake the offer they belong to, and dropping them can break the call.
    pub async fn add_ice_candidate(&mut self, candidate: IceCandidate) -> Result<(), PeerError> {
        if self.pc.remote_description().is_none() {
            self.pending_candidates.push(candidate);
            return Ok(());
        }
        self.add_candidate_now(&candidate).await
    }

    /// Sends `track` (None: nothing) for `kind` from now on, without renegotiating
    /// (RTCRtpSender.replaceTrack). Switching cameras or microphones, camera off and on.
    pub async fn replace_track(&self, kind: Kind, track: Option<&Track>) -> Result<(), PeerError> {
        let Some(transceiver) = self.transceiver(kind) else {
            return Ok(());
        };
        JsFuture::from(transceiver.sender().replace_track(track.map(|t| &t.0)))
            .await
            .map_err(|e| js_error("cannot change what this call sends", e))?;
        Ok(())
    }

    async fn add_candidate_now(&self, candidate: &IceCandidate) -> Result<(), PeerError> {
        let init = RtcIceCandidateInit::new(&candidate.candidate);
        init.set_sdp_mid(candidate.sdp_mid.as_deref());
        init.set_sdp_m_line_index(candidate.sdp_m_line_index);
        if let Some(fragment) = &candidate.username_fragment {
            // Not in web-sys's RTCIceCandidateInit binding; a plain property on the dictionary.
            let _ = js_sys::Reflect::set(&init, &"usernameFragment".into(), &fragment.into());
        }
        JsFuture::from(
            self.pc
                .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
        )
        .await
        .map_err(|e| js_error("cannot use a network candidate", e))?;
        Ok(())
    }

    /// The transceiver carrying `kind`, found by its receiver, which always has a track (a
    /// sender's track is null while the camera is off).
    fn transceiver(&self, kind: Kind) -> Option<RtcRtpTransceiver> {
        self.pc
            .get_transceivers()
            .iter()
            .filter_map(|t| t.dyn_into::<RtcRtpTransceiver>().ok())
            .find(|t| t.receiver().track().kind() == kind.as_str())
    }

    fn local_description(&self, kind: SdpKind) -> Result<SessionDescription, PeerError> {
        let description = self
            .pc
            .local_description()
            .ok_or_else(|| PeerError("no local description after setting it".into()))?;
        Ok(SessionDescription {
            kind,
            sdp: description.sdp(),
        })
    }
}

/// What we send to every peer: a track per kind (None while the camera is off or absent), whether
/// that kind can be sent at all (false: receive only, e.g. no camera or access denied), and the
/// stream our tracks are announced in, so the other side gets them as one stream.
pub struct Outgoing<'a> {
    pub audio: Option<&'a Track>,
    pub video: Option<&'a Track>,
    pub can_send_audio: bool,
    pub can_send_video: bool,
    pub stream: &'a Stream,
}

impl Outgoing<'_> {
    fn kinds(&self) -> [(Kind, Option<&Track>, bool); 2] {
        [
            (
                Kind::Audio,
                self.audio,
                self.can_send_audio || self.audio.is_some(),
            ),
            (
                Kind::Video,
                self.video,
                self.can_send_video || self.video.is_some(),
            ),
        ]
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.close();
    }
}
