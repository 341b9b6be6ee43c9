//! One WebRTC connection to one remote participant: the only module that touches
//! `RTCPeerConnection`. A [`Peer`] owns its connection and its event listeners; dropping it closes
//! the connection and removes the listeners, so a participant who left leaves nothing behind.

use futures::channel::mpsc::UnboundedSender;
use gloo_events::EventListener;
use shared::{IceCandidate, IceServer, PeerId, SdpKind, SessionDescription};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, MediaStreamTrack, RtcConfiguration, RtcIceCandidateInit, RtcIceServer,
    RtcPeerConnection, RtcPeerConnectionIceEvent, RtcRtpTransceiver, RtcRtpTransceiverDirection,
    RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit, RtcTrackEvent,
};

use crate::media::Stream;

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
    /// Whether our own tracks are attached yet (an answerer attaches them after the offer).
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

    /// Attaches our tracks (or, lacking one, a receive-only transceiver so that we still get the
    /// other side's audio and video), then creates the offer and sets it locally.
    pub async fn offer(&mut self, local: Option<&Stream>) -> Result<SessionDescription, PeerError> {
        self.attach_local(local, true);
        let offer = JsFuture::from(self.pc.create_offer())
            .await
            .map_err(|e| js_error("cannot create an offer", e))?;
        let offer: RtcSessionDescriptionInit = offer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&offer))
            .await
            .map_err(|e| js_error("cannot use our own offer", e))?;
        self.local_description(SdpKind::Offer)
    }

    /// Applies a remote offer or answer. For an offer, attaches our tracks to the transceivers it
    /// created and returns the answer to send back.
    pub async fn accept(
        &mut self,
        description: SessionDescription,
        local: Option<&Stream>,
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
        // addTrack reuses the transceivers the offer created, so the answer sends both ways.
        self.attach_local(local, false);
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

    /// Sends `track` instead of the current video, without renegotiating (RTCRtpSender.replaceTrack).
    pub async fn replace_video_track(&self, track: &MediaStreamTrack) -> Result<(), PeerError> {
        let Some(transceiver) = self.transceiver("video") else {
            return Ok(());
        };
        JsFuture::from(transceiver.sender().replace_track(Some(track)))
            .await
            .map_err(|e| js_error("cannot switch the camera for this call", e))?;
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

    fn attach_local(&mut self, local: Option<&Stream>, receive_missing: bool) {
        if self.sending {
            return;
        }
        self.sending = true;
        let tracks = [
            ("audio", local.and_then(Stream::audio_track)),
            ("video", local.and_then(Stream::video_track)),
        ];
        for (kind, track) in tracks {
            match (track, local) {
                (Some(track), Some(stream)) => {
                    self.pc.add_track_0(&track, &stream.0);
                }
                _ if receive_missing => {
                    let init = RtcRtpTransceiverInit::new();
                    init.set_direction(RtcRtpTransceiverDirection::Recvonly);
                    self.pc.add_transceiver_with_str_and_init(kind, &init);
                }
                _ => {}
            }
        }
    }

    /// The transceiver carrying `kind` ("audio" / "video"), found by its receiver, which always
    /// has a track (a sender's track can be null).
    fn transceiver(&self, kind: &str) -> Option<RtcRtpTransceiver> {
        self.pc
            .get_transceivers()
            .iter()
            .filter_map(|t| t.dyn_into::<RtcRtpTransceiver>().ok())
            .find(|t| t.receiver().track().kind() == kind)
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

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.close();
    }
}
