//! One WebRTC connection to one remote participant: the only module that touches
//! `RTCPeerConnection`. Each connection runs in its own task that executes the call core's
//! operations ([`PeerOp`]) one at a time, in order, and reports back as core events, so a slow
//! operation on one connection never holds up another. The task owns the connection and its
//! listeners; dropping the [`PeerHandle`] closes the connection (which also fails any operation
//! still waiting on it) and removes the listeners and the remote streams it registered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::mpsc::{self, Receiver, Sender};
use futures::StreamExt;
use gloo_events::EventListener;
use shared::{ConnectionId, IceCandidate, IceServer, PeerId, SdpKind, SessionDescription};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, RtcConfiguration, RtcIceCandidateInit, RtcIceConnectionState, RtcIceServer,
    RtcPeerConnection, RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpTransceiver,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit,
    RtcTrackEvent,
};

use crate::engine::quality::{CandidateType, StatsSample};
use crate::engine::uplink::{VideoLimit, SCREEN_MAX_BITRATE_BPS};
use crate::engine::{
    ConnState, Event, FailedOp, IceState, OpError, PeerEvent, PeerOp, Role, Sending, StreamKey,
};
use crate::local::SharedTracks;
use crate::media::{Stream, Track};

/// Operations that may wait for one connection. Beyond this, the connection is hopelessly
/// stuck: it is reported failed and the core replaces it.
pub const MAX_QUEUED_OPS: usize = 512;

// Beware: web-sys binds JavaScript's own `MediaStream.clone()` (and `MediaStreamTrack.clone()`)
// as inherent methods, which win over `Clone::clone`: `stream.clone()` on one of them makes a NEW
// stream with copies of the tracks it has now. Everywhere a second handle to the same object is
// meant, this module writes `Clone::clone(&stream)` or `JsValue::from(&stream)`.

/// Remote streams by key, for the view to show (shared with the call loop).
#[derive(Default)]
pub struct RemoteStreams {
    streams: HashMap<StreamKey, Stream>,
    next: u32,
}

pub type SharedStreams = Rc<RefCell<RemoteStreams>>;

impl RemoteStreams {
    pub fn get(&self, key: StreamKey) -> Option<Stream> {
        self.streams.get(&key).cloned()
    }

    /// The key of `stream`, registering it if new.
    fn key_of(&mut self, stream: &MediaStream) -> StreamKey {
        if let Some((key, _)) = self
            .streams
            .iter()
            .find(|(_, s)| js_sys::Object::is(&s.0, stream))
        {
            return *key;
        }
        self.next += 1;
        let key = StreamKey(self.next);
        self.streams.insert(key, Stream(Clone::clone(stream)));
        key
    }
}

/// The DTLS certificate this page's connections use, made once in the lobby
/// (`RTCPeerConnection.generateCertificate`, ECDSA P-256 as the browser's own default): a new
/// connection otherwise makes one first, and its first offer or answer waits for it.
#[derive(Clone)]
pub struct Certificate(JsValue);

/// Makes the page's certificate (see [`Certificate`]).
pub async fn generate_certificate() -> Result<Certificate, CreateError> {
    let made = async {
        let class = js_sys::Reflect::get(&js_sys::global(), &"RTCPeerConnection".into())?;
        let algorithm = js_sys::Object::new();
        js_sys::Reflect::set(&algorithm, &"name".into(), &"ECDSA".into())?;
        js_sys::Reflect::set(&algorithm, &"namedCurve".into(), &"P-256".into())?;
        let promise: js_sys::Promise =
            call_method(&class, "generateCertificate", &[algorithm.into()])?.dyn_into()?;
        JsFuture::from(promise).await
    };
    made.await
        .map(Certificate)
        .map_err(|e| CreateError(describe(&e)))
}

/// Reports one connection's events to the call loop.
pub type Emit = Rc<dyn Fn(Event)>;

/// The call loop's side of one connection. Dropping it closes the connection.
pub struct PeerHandle {
    ops: Sender<PeerOp>,
    pc: RtcPeerConnection,
}

impl PeerHandle {
    /// Queues `op`; false if the queue is full (the connection is stuck).
    pub fn run(&mut self, op: PeerOp) -> bool {
        self.ops.try_send(op).is_ok()
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.pc.close();
    }
}

/// Everything one connection needs from outside.
pub struct PeerSetup {
    pub peer: PeerId,
    pub connection: ConnectionId,
    pub role: Role,
    pub ice_servers: Vec<IceServer>,
    /// Made in the lobby, if it is ready (else the browser makes one for this connection).
    pub certificate: Option<Certificate>,
    pub sending: Sending,
    pub tracks: SharedTracks,
    pub streams: SharedStreams,
    pub emit: Emit,
}

/// Why a connection could not even be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the browser could not create a call connection: {0}")]
pub struct CreateError(String);

/// Creates the connection and starts its task.
pub fn spawn(setup: PeerSetup) -> Result<PeerHandle, CreateError> {
    // A certificate the browser will not take (expired: a lobby left open for a month) is no
    // reason to fail: the connection makes its own.
    let pc = setup
        .certificate
        .as_ref()
        .and_then(|certificate| new_connection(&setup.ice_servers, Some(certificate)).ok())
        .map_or_else(|| new_connection(&setup.ice_servers, None), Ok)
        .map_err(|e| CreateError(describe(&e)))?;
    let (tx, rx) = mpsc::channel(MAX_QUEUED_OPS);
    let listeners = listen(&pc, &setup);
    let mut conn = Conn {
        pc: pc.clone(),
        peer: setup.peer,
        connection: setup.connection,
        sending: setup.sending,
        tracks: setup.tracks,
        streams: setup.streams,
        emit: setup.emit,
        audio: None,
        video: None,
        screen: None,
        stream_keys: Rc::new(RefCell::new(Vec::new())),
        _listeners: listeners.0,
    };
    conn.stream_keys = listeners.1;
    if setup.role == Role::Offerer {
        conn.add_transceivers();
    }
    wasm_bindgen_futures::spawn_local(conn.run(rx));
    Ok(PeerHandle { ops: tx, pc })
}

fn new_connection(
    ice_servers: &[IceServer],
    certificate: Option<&Certificate>,
) -> Result<RtcPeerConnection, JsValue> {
    let config = RtcConfiguration::new();
    if let Some(certificate) = certificate {
        js_sys::Reflect::set(
            &config,
            &"certificates".into(),
            &js_sys::Array::of1(&certificate.0),
        )?;
    }
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
    RtcPeerConnection::new_with_configuration(&config)
}

/// The connection's listeners, reporting to the call loop. The `track` listener registers
/// remote streams; their keys are returned so the connection can unregister them when closed.
fn listen(
    pc: &RtcPeerConnection,
    setup: &PeerSetup,
) -> (Vec<EventListener>, Rc<RefCell<Vec<StreamKey>>>) {
    let (peer, connection) = (setup.peer, setup.connection);
    let report = {
        let emit = setup.emit.clone();
        move |event: PeerEvent| {
            emit(Event::Peer {
                peer,
                connection,
                event,
            })
        }
    };
    let keys = Rc::new(RefCell::new(Vec::new()));
    let mut listeners = Vec::new();
    {
        let report = report.clone();
        listeners.push(EventListener::new(pc, "negotiationneeded", move |_| {
            report(PeerEvent::NegotiationNeeded)
        }));
    }
    {
        let report = report.clone();
        listeners.push(EventListener::new(pc, "icecandidate", move |event| {
            let Some(candidate) = event
                .dyn_ref::<RtcPeerConnectionIceEvent>()
                .and_then(RtcPeerConnectionIceEvent::candidate)
            else {
                // The end of gathering: nothing to send.
                return;
            };
            if candidate.candidate().is_empty() {
                return;
            }
            report(PeerEvent::IceCandidate(IceCandidate {
                candidate: candidate.candidate(),
                sdp_mid: candidate.sdp_mid(),
                sdp_m_line_index: candidate.sdp_m_line_index(),
                // Not in web-sys's RTCIceCandidate binding: read the property directly.
                username_fragment: js_sys::Reflect::get(&candidate, &"usernameFragment".into())
                    .ok()
                    .and_then(|v| v.as_string()),
            }));
        }));
    }
    {
        let report = report.clone();
        let pc2 = pc.clone();
        listeners.push(EventListener::new(
            pc,
            "iceconnectionstatechange",
            move |_| {
                report(PeerEvent::Ice(ice_state(pc2.ice_connection_state())));
            },
        ));
    }
    {
        let report = report.clone();
        let pc2 = pc.clone();
        listeners.push(EventListener::new(pc, "connectionstatechange", move |_| {
            report(PeerEvent::Connection(conn_state(pc2.connection_state())));
        }));
    }
    {
        let streams = setup.streams.clone();
        let keys = keys.clone();
        // Tracks that arrive without a stream (no msid) share one, as one participant's media.
        let loose: RefCell<Option<MediaStream>> = RefCell::new(None);
        listeners.push(EventListener::new(pc, "track", move |event| {
            let Some(event) = event.dyn_ref::<RtcTrackEvent>() else {
                return;
            };
            let stream = match event.streams().get(0).dyn_into::<MediaStream>() {
                Ok(stream) => stream,
                Err(_) => {
                    let mut loose = loose.borrow_mut();
                    let stream = match loose.as_ref() {
                        Some(stream) => Clone::clone(stream),
                        None => match MediaStream::new() {
                            Ok(stream) => {
                                *loose = Some(Clone::clone(&stream));
                                stream
                            }
                            Err(_) => return,
                        },
                    };
                    stream.add_track(&event.track());
                    stream
                }
            };
            let key = streams.borrow_mut().key_of(&stream);
            keys.borrow_mut().push(key);
            report(PeerEvent::Track {
                stream: key,
                id: stream.id(),
            });
        }));
    }
    (listeners, keys)
}

/// The local tracks and streams one connection sends, resolved from the shared table.
struct Local {
    mic: Option<Track>,
    camera: Option<Track>,
    screen: Option<Track>,
    stream: Option<Stream>,
    screen_stream: Option<Stream>,
}

struct Conn {
    pc: RtcPeerConnection,
    peer: PeerId,
    connection: ConnectionId,
    /// What the core last asked us to send.
    sending: Sending,
    tracks: SharedTracks,
    streams: SharedStreams,
    emit: Emit,
    /// Our transceivers: created by us (offerer) or adopted from the first remote offer.
    audio: Option<RtcRtpTransceiver>,
    video: Option<RtcRtpTransceiver>,
    screen: Option<RtcRtpTransceiver>,
    stream_keys: Rc<RefCell<Vec<StreamKey>>>,
    _listeners: Vec<EventListener>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.pc.close();
        let mut streams = self.streams.borrow_mut();
        for key in self.stream_keys.borrow().iter() {
            streams.streams.remove(key);
        }
    }
}

impl Conn {
    async fn run(mut self, mut ops: Receiver<PeerOp>) {
        while let Some(op) = ops.next().await {
            self.execute(op).await;
            if self.pc.signaling_state() == web_sys::RtcSignalingState::Closed {
                break;
            }
        }
    }

    fn report(&self, event: PeerEvent) {
        (self.emit)(Event::Peer {
            peer: self.peer,
            connection: self.connection,
            event,
        });
    }

    fn fail(&self, operation: FailedOp, err: &JsValue) {
        self.report(PeerEvent::Failed(OpError {
            operation,
            detail: describe(err),
        }));
    }

    async fn execute(&mut self, op: PeerOp) {
        match op {
            PeerOp::MakeOffer => match self.make_offer().await {
                Ok(description) => self.report(PeerEvent::LocalDescription(description)),
                Err(err) => self.fail(FailedOp::MakeOffer, &err),
            },
            PeerOp::AcceptOffer(offer) => match self.accept_offer(offer).await {
                Ok(answer) => {
                    self.report(PeerEvent::LocalDescription(answer));
                    self.apply_limits().await;
                }
                Err(err) => self.fail(FailedOp::AcceptOffer, &err),
            },
            PeerOp::ApplyAnswer(answer) => {
                match JsFuture::from(self.pc.set_remote_description(&init(&answer))).await {
                    Ok(_) => {
                        self.report(PeerEvent::AnswerApplied);
                        self.apply_limits().await;
                    }
                    Err(err) => self.fail(FailedOp::ApplyAnswer, &err),
                }
            }
            PeerOp::AddCandidate(candidate) => {
                if let Err(err) = self.add_candidate(&candidate).await {
                    self.fail(FailedOp::AddCandidate, &err);
                }
            }
            PeerOp::RestartIce => {
                // Not in web-sys's binding. Marks the next offer as an ICE restart and fires
                // `negotiationneeded`.
                if let Err(err) = call_method(&self.pc, "restartIce", &[]) {
                    self.fail(FailedOp::MakeOffer, &err);
                }
            }
            PeerOp::SetSending(sending) => {
                self.sending = sending;
                if let Err(err) = self.reconcile().await {
                    self.fail(FailedOp::SetSending, &err);
                }
                self.apply_limits().await;
            }
            PeerOp::StartOffering => {
                if self.audio.is_none() && self.video.is_none() {
                    self.add_transceivers();
                }
            }
            PeerOp::GetStats => {
                if let Ok(report) = JsFuture::from(self.pc.get_stats()).await {
                    let mut sample = parse_stats(&report);
                    sample.at = now();
                    self.report(PeerEvent::Stats(sample));
                }
            }
        }
    }

    async fn make_offer(&self) -> Result<SessionDescription, JsValue> {
        let offer = JsFuture::from(self.pc.create_offer()).await?;
        let offer: RtcSessionDescriptionInit = offer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&offer)).await?;
        self.local_description(SdpKind::Offer)
    }

    async fn accept_offer(
        &mut self,
        offer: SessionDescription,
    ) -> Result<SessionDescription, JsValue> {
        // In have-local-offer this rolls our own offer back (implicit rollback): we are polite.
        JsFuture::from(self.pc.set_remote_description(&init(&offer))).await?;
        if self.audio.is_none() && self.video.is_none() {
            self.adopt_transceivers();
        }
        // What we send goes on before the answer, so the answer says we send it: directions
        // and streams at once; the tracks' `replaceTrack`s are started here and the answer
        // made right behind them (the browser runs them in order), not one wait after another.
        let replacing = self.start_reconcile();
        let answer = JsFuture::from(self.pc.create_answer());
        replacing.await?;
        let answer = answer.await?;
        let answer: RtcSessionDescriptionInit = answer.unchecked_into();
        JsFuture::from(self.pc.set_local_description(&answer)).await?;
        self.local_description(SdpKind::Answer)
    }

    fn local_description(&self, kind: SdpKind) -> Result<SessionDescription, JsValue> {
        let description = self
            .pc
            .local_description()
            .ok_or_else(|| JsValue::from_str("no local description after setting it"))?;
        Ok(SessionDescription {
            kind,
            sdp: description.sdp(),
        })
    }

    async fn add_candidate(&self, candidate: &IceCandidate) -> Result<(), JsValue> {
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
        .await?;
        Ok(())
    }

    /// The tracks the core named, looked up now (a track replaced meanwhile is simply gone).
    fn local(&self) -> Local {
        let tracks = self.tracks.borrow();
        let get = |id| tracks.get(id);
        Local {
            mic: self.sending.mic.and_then(get),
            camera: self.sending.camera.and_then(get),
            screen: self
                .sending
                .screen
                .as_ref()
                .and_then(|s| tracks.get(s.track)),
            stream: tracks.camera_stream.clone(),
            screen_stream: tracks.screen_stream.clone(),
        }
    }

    /// As an offerer: our audio and video transceivers, `sendrecv` when we can send that kind
    /// (even with no track yet: camera off), else `recvonly`.
    fn add_transceivers(&mut self) {
        let Local {
            mic,
            camera,
            stream,
            ..
        } = self.local();
        let limit = self.sending.video_limit;
        self.audio = Some(self.add_transceiver(
            "audio",
            mic.as_ref(),
            self.sending.send_audio,
            stream.as_ref(),
            None,
        ));
        self.video = Some(self.add_transceiver(
            "video",
            camera.as_ref(),
            self.sending.send_video,
            stream.as_ref(),
            Some(limit),
        ));
        if self.sending.screen.is_some() {
            self.add_screen();
        }
    }

    fn add_transceiver(
        &self,
        kind: &str,
        track: Option<&Track>,
        send: bool,
        stream: Option<&Stream>,
        limit: Option<VideoLimit>,
    ) -> RtcRtpTransceiver {
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(if send {
            RtcRtpTransceiverDirection::Sendrecv
        } else {
            RtcRtpTransceiverDirection::Recvonly
        });
        if let (true, Some(stream)) = (send, stream) {
            init.set_streams(&js_sys::Array::of1(&stream.0));
        }
        if let Some(limit) = limit {
            let _ = js_sys::Reflect::set(
                &init,
                &"sendEncodings".into(),
                &encodings(limit.max_bitrate_bps, limit.scale_down_by),
            );
        }
        match track {
            Some(track) => self
                .pc
                .add_transceiver_with_media_stream_track_and_init(&track.0, &init),
            None => self.pc.add_transceiver_with_str_and_init(kind, &init),
        }
    }

    fn add_screen(&mut self) {
        let Local {
            screen,
            screen_stream,
            ..
        } = self.local();
        let Some(screen) = screen else {
            return;
        };
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendonly);
        if let Some(stream) = &screen_stream {
            init.set_streams(&js_sys::Array::of1(&stream.0));
        }
        let _ = js_sys::Reflect::set(
            &init,
            &"sendEncodings".into(),
            &encodings(SCREEN_MAX_BITRATE_BPS, 1.0),
        );
        self.screen = Some(
            self.pc
                .add_transceiver_with_media_stream_track_and_init(&screen.0, &init),
        );
    }

    /// As an answerer, after the first remote offer: its first audio and first video
    /// transceivers are the ones we answer (and send) on.
    fn adopt_transceivers(&mut self) {
        let all: Vec<RtcRtpTransceiver> = self
            .pc
            .get_transceivers()
            .iter()
            .filter_map(|t| t.dyn_into::<RtcRtpTransceiver>().ok())
            .collect();
        let first = |kind: &str| {
            all.iter()
                .find(|t| t.receiver().track().kind() == kind)
                .cloned()
        };
        self.audio = first("audio");
        self.video = first("video");
    }

    /// Puts what the core asked for on our transceivers: directions and tracks. A direction
    /// that changes makes the browser fire `negotiationneeded` (perfect negotiation takes it
    /// from there); a track swap needs no negotiation (`replaceTrack`).
    async fn reconcile(&mut self) -> Result<(), JsValue> {
        self.start_reconcile().await
    }

    /// [`Self::reconcile`]: everything that is immediate is done when this returns; the
    /// future waits for the track swaps, all started at once.
    fn start_reconcile(&mut self) -> impl std::future::Future<Output = Result<(), JsValue>> {
        let mut swaps: Vec<JsFuture> = Vec::new();
        let Local {
            mic,
            camera,
            screen,
            stream,
            screen_stream,
        } = self.local();
        for (transceiver, track, send) in [
            (self.audio.clone(), mic, self.sending.send_audio),
            (self.video.clone(), camera, self.sending.send_video),
        ] {
            let Some(transceiver) = transceiver else {
                continue;
            };
            let direction = if send {
                RtcRtpTransceiverDirection::Sendrecv
            } else {
                RtcRtpTransceiverDirection::Recvonly
            };
            if transceiver.direction() != direction {
                transceiver.set_direction(direction);
            }
            let sender = transceiver.sender();
            if send {
                if let Some(stream) = &stream {
                    // Not in web-sys: tells the other side which stream the track belongs to.
                    let _ = call_method(&sender, "setStreams", &[JsValue::from(&stream.0)]);
                }
            }
            swaps.extend(replace(&sender, track.as_ref()));
        }
        match (&self.screen, screen) {
            (None, Some(_)) => self.add_screen(),
            (Some(transceiver), Some(track)) => {
                if transceiver.direction() != RtcRtpTransceiverDirection::Sendonly {
                    transceiver.set_direction(RtcRtpTransceiverDirection::Sendonly);
                }
                if let Some(stream) = &screen_stream {
                    let _ = call_method(
                        &transceiver.sender(),
                        "setStreams",
                        &[JsValue::from(&stream.0)],
                    );
                }
                swaps.extend(replace(&transceiver.sender(), Some(&track)));
            }
            (Some(transceiver), None) => {
                swaps.extend(replace(&transceiver.sender(), None));
                if transceiver.direction() != RtcRtpTransceiverDirection::Inactive {
                    transceiver.set_direction(RtcRtpTransceiverDirection::Inactive);
                }
            }
            (None, None) => {}
        }
        async move {
            for swap in swaps {
                swap.await?;
            }
            Ok(())
        }
    }

    /// The video cap for this connection (`setParameters`); a no-op until negotiated.
    async fn apply_limits(&self) {
        let limit = self.sending.video_limit;
        if let Some(video) = &self.video {
            set_encoding(&video.sender(), limit.max_bitrate_bps, limit.scale_down_by).await;
        }
        if let Some(screen) = &self.screen {
            set_encoding(&screen.sender(), SCREEN_MAX_BITRATE_BPS, 1.0).await;
        }
    }
}

/// Starts putting `track` on `sender` (None if it is there already): the future says when done.
fn replace(sender: &web_sys::RtcRtpSender, track: Option<&Track>) -> Option<JsFuture> {
    let same = match (sender.track(), track) {
        (Some(current), Some(track)) => js_sys::Object::is(&current, &track.0),
        (None, None) => true,
        _ => false,
    };
    (!same).then(|| JsFuture::from(sender.replace_track(track.map(|t| &t.0))))
}

fn encodings(max_bitrate_bps: u32, scale_down_by: f64) -> js_sys::Array {
    let encoding = js_sys::Object::new();
    let _ = js_sys::Reflect::set(
        &encoding,
        &"maxBitrate".into(),
        &f64::from(max_bitrate_bps).into(),
    );
    let _ = js_sys::Reflect::set(
        &encoding,
        &"scaleResolutionDownBy".into(),
        &scale_down_by.into(),
    );
    js_sys::Array::of1(&encoding)
}

/// Sets the first encoding's bitrate cap and scale, if the sender has one and they differ.
async fn set_encoding(sender: &web_sys::RtcRtpSender, max_bitrate_bps: u32, scale_down_by: f64) {
    let Ok(parameters) = call_method(sender, "getParameters", &[]) else {
        return;
    };
    let Some(encoding) = js_sys::Reflect::get(&parameters, &"encodings".into())
        .ok()
        .and_then(|e| e.dyn_into::<js_sys::Array>().ok())
        .map(|e| e.get(0))
        .filter(|e| e.is_object())
    else {
        return;
    };
    let number = |key: &str| {
        js_sys::Reflect::get(&encoding, &key.into())
            .ok()
            .and_then(|v| v.as_f64())
    };
    if number("maxBitrate") == Some(f64::from(max_bitrate_bps))
        && number("scaleResolutionDownBy") == Some(scale_down_by)
    {
        return;
    }
    let _ = js_sys::Reflect::set(
        &encoding,
        &"maxBitrate".into(),
        &f64::from(max_bitrate_bps).into(),
    );
    let _ = js_sys::Reflect::set(
        &encoding,
        &"scaleResolutionDownBy".into(),
        &scale_down_by.into(),
    );
    if let Ok(promise) = call_method(sender, "setParameters", &[parameters]) {
        if let Ok(promise) = promise.dyn_into::<js_sys::Promise>() {
            if let Err(err) = JsFuture::from(promise).await {
                web_sys::console::warn_1(
                    &format!("cannot cap the video: {}", describe(&err)).into(),
                );
            }
        }
    }
}

fn init(description: &SessionDescription) -> RtcSessionDescriptionInit {
    let init = RtcSessionDescriptionInit::new(match description.kind {
        SdpKind::Offer => RtcSdpType::Offer,
        SdpKind::Answer => RtcSdpType::Answer,
    });
    init.set_sdp(&description.sdp);
    init
}

/// Calls `object.name(...args)`: for methods web-sys does not bind.
fn call_method(object: &JsValue, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let method: js_sys::Function = js_sys::Reflect::get(object, &name.into())?.dyn_into()?;
    let args: js_sys::Array = args.iter().collect();
    method.apply(object, &args)
}

/// The browser's own words about a failure, for the console (never the screen).
fn describe(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

fn now() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

fn ice_state(state: RtcIceConnectionState) -> IceState {
    match state {
        RtcIceConnectionState::Checking => IceState::Checking,
        RtcIceConnectionState::Connected => IceState::Connected,
        RtcIceConnectionState::Completed => IceState::Completed,
        RtcIceConnectionState::Disconnected => IceState::Disconnected,
        RtcIceConnectionState::Failed => IceState::Failed,
        RtcIceConnectionState::Closed => IceState::Closed,
        _ => IceState::New,
    }
}

fn conn_state(state: RtcPeerConnectionState) -> ConnState {
    match state {
        RtcPeerConnectionState::Connecting => ConnState::Connecting,
        RtcPeerConnectionState::Connected => ConnState::Connected,
        RtcPeerConnectionState::Disconnected => ConnState::Disconnected,
        RtcPeerConnectionState::Failed => ConnState::Failed,
        RtcPeerConnectionState::Closed => ConnState::Closed,
        _ => ConnState::New,
    }
}

/// Extracts the counters the core needs from an `RTCStatsReport`.
fn parse_stats(report: &JsValue) -> StatsSample {
    let get = |object: &JsValue, key: &str| js_sys::Reflect::get(object, &key.into()).ok();
    let text = |object: &JsValue, key: &str| get(object, key).and_then(|v| v.as_string());
    let number = |object: &JsValue, key: &str| get(object, key).and_then(|v| v.as_f64());
    let mut by_id: HashMap<String, JsValue> = HashMap::new();
    if let Ok(Some(entries)) = js_sys::try_iter(report) {
        for entry in entries.flatten() {
            let pair: js_sys::Array = entry.unchecked_into();
            if let Some(id) = pair.get(0).as_string() {
                by_id.insert(id, pair.get(1));
            }
        }
    }
    let mut sample = StatsSample::default();
    let selected = by_id
        .values()
        .find(|s| text(s, "type").as_deref() == Some("transport"))
        .and_then(|t| text(t, "selectedCandidatePairId"))
        .and_then(|id| by_id.get(&id).cloned())
        .or_else(|| {
            by_id
                .values()
                .find(|s| {
                    text(s, "type").as_deref() == Some("candidate-pair")
                        && get(s, "nominated").and_then(|v| v.as_bool()) == Some(true)
                        && text(s, "state").as_deref() == Some("succeeded")
                })
                .cloned()
        });
    if let Some(pair) = &selected {
        sample.rtt_ms = number(pair, "currentRoundTripTime").map(|s| s * 1000.0);
        let candidate = |key: &str| {
            text(pair, key)
                .and_then(|id| by_id.get(&id).cloned())
                .and_then(|c| text(&c, "candidateType"))
                .and_then(|t| CandidateType::parse(&t))
        };
        sample.local_candidate = candidate("localCandidateId");
        sample.remote_candidate = candidate("remoteCandidateId");
    }
    let as_u64 = |v: Option<f64>| v.map_or(0, |v| v.max(0.0) as u64);
    for stat in by_id.values() {
        match text(stat, "type").as_deref() {
            Some("inbound-rtp") => {
                sample.packets_received += as_u64(number(stat, "packetsReceived"));
                sample.packets_lost += as_u64(number(stat, "packetsLost"));
                sample.bytes_received += as_u64(number(stat, "bytesReceived"));
                if text(stat, "kind").as_deref() == Some("video") {
                    let width = number(stat, "frameWidth").map(|w| w as u32);
                    if width > sample.frame_width {
                        sample.frame_width = width;
                        sample.frame_height = number(stat, "frameHeight").map(|h| h as u32);
                        sample.frames_per_second = number(stat, "framesPerSecond");
                    }
                }
            }
            Some("outbound-rtp") => sample.bytes_sent += as_u64(number(stat, "bytesSent")),
            Some("remote-inbound-rtp") => {
                if let Some(lost) = number(stat, "fractionLost") {
                    sample.remote_fraction_lost = Some(
                        sample
                            .remote_fraction_lost
                            .map_or(lost, |l: f64| l.max(lost)),
                    );
                }
            }
            _ => {}
        }
    }
    sample
}
