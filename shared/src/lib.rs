//! Noom's signaling protocol: the typed messages that the browser app and the server exchange over
//! the `/ws` websocket, as JSON text frames.
//!
//! This crate does no I/O. It is compiled into both the server (native) and the frontend (wasm),
//! so both sides agree on the wire format at compile time; `tests/golden.rs` pins that format.
//!
//! The flow (the tutorial app's, made typed and addressed):
//! 1. A client sends [`ClientMessage::Join`] with a [`RoomName`] and its [`PROTOCOL_VERSION`].
//! 2. The server answers [`ServerMessage::Joined`] (the client's server-assigned [`PeerId`], the
//!    peers already in the room, the ICE servers to use), and tells every other member
//!    [`ServerMessage::PeerJoined`] (the tutorial's "welcome").
//! 3. Each member that was already in the room sends an offer to the newcomer; offers, answers and
//!    ICE candidates are [`ClientMessage::Description`] / [`ClientMessage::IceCandidate`]
//!    addressed `to` one peer. The server relays them unchanged except for `from`, which it
//!    stamps itself: a client can never choose who a message appears to come from.
//! 4. [`ClientMessage::Leave`] or a closed socket: the rest of the room gets
//!    [`ServerMessage::PeerLeft`].
//!
//! Anything the server refuses is answered with [`ServerMessage::Error`] carrying an
//! [`ErrorCode`] (stable, for programs) and a sentence (for people).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of this protocol. A client sends it in [`ClientMessage::Join`]; the server refuses
/// any other value with [`ErrorCode::UnsupportedVersion`], so a browser still running an old
/// bundle is told to reload instead of failing in odd ways. Bump it on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest room name, in characters (not bytes).
pub const ROOM_NAME_MAX_CHARS: usize = 64;

/// A participant, as assigned by the server when its websocket connects. Unique for the life of
/// one server process; never chosen by a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(u64);

impl PeerId {
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not a valid [`RoomName`]. The `Display` text is a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("a room name cannot be empty")]
    Empty,
    #[error("a room name can have at most {max} characters (this one has {len})", max = ROOM_NAME_MAX_CHARS)]
    TooLong { len: usize },
    #[error("a room name cannot contain control characters such as tabs or line breaks")]
    ControlCharacter,
    #[error("a room name cannot start or end with a space")]
    SurroundingWhitespace,
}

/// A validated room name: 1 to 64 characters, no control characters, no leading or trailing
/// white space. Any other Unicode is fine ("Café", "팀 회의", "a/b").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

impl RoomName {
    pub fn new(name: impl Into<String>) -> Result<Self, RoomNameError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(RoomNameError::Empty);
        }
        let len = name.chars().count();
        if len > ROOM_NAME_MAX_CHARS {
            return Err(RoomNameError::TooLong { len });
        }
        if name.chars().any(char::is_control) {
            return Err(RoomNameError::ControlCharacter);
        }
        if name.trim() != name {
            return Err(RoomNameError::SurroundingWhitespace);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomName {
    type Error = RoomNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RoomName> for String {
    fn from(value: RoomName) -> Self {
        value.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a [`SessionDescription`] is an offer or an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SdpKind {
    Offer,
    Answer,
}

/// An SDP offer or answer (RTCSessionDescriptionInit). The server relays `sdp` as an opaque
/// string and never parses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    pub kind: SdpKind,
    pub sdp: String,
}

/// One ICE candidate, mirroring RTCIceCandidateInit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A STUN or TURN server for RTCPeerConnection's `iceServers`, mirroring RTCIceServer.
/// `Debug` hides the credential, so logging a message that carries one never leaks it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Messages from a browser to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMessage {
    /// Enter a room. Exactly once per connection (until [`ClientMessage::Leave`]).
    Join {
        room: RoomName,
        /// The sender's [`PROTOCOL_VERSION`]; 0 when absent (a bundle from before versioning).
        #[serde(default)]
        version: u32,
    },
    /// Leave the room; the connection stays open and may join again.
    Leave,
    /// An offer or answer for one peer in the same room.
    #[serde(rename_all = "camelCase")]
    Description {
        to: PeerId,
        description: SessionDescription,
    },
    /// An ICE candidate for one peer in the same room.
    #[serde(rename_all = "camelCase")]
    IceCandidate { to: PeerId, candidate: IceCandidate },
    /// The sender's microphone and camera state, for the others' tiles. Sent on joining, on
    /// every change, and again when someone new joins.
    #[serde(rename_all = "camelCase")]
    MediaState(MediaState),
}

/// What a participant is sending: whether the microphone is muted, the camera off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    pub muted: bool,
    pub camera_off: bool,
}

impl ClientMessage {
    /// Every `type` tag a client may send; used to tell an unknown type from a malformed message.
    pub const TYPES: &'static [&'static str] =
        &["join", "leave", "description", "iceCandidate", "mediaState"];

    /// Decodes one text frame, classifying failures so that the server can answer with the right
    /// [`ErrorCode`]. The well-formed case costs one parse; only failures are looked at twice.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        match serde_json::from_str(text) {
            Ok(message) => Ok(message),
            Err(err) => Err(classify(text, err)),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no Serialize impl
        // returns an error.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn classify(text: &str, err: serde_json::Error) -> DecodeError {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return DecodeError::Malformed(format!("not valid JSON ({err})"));
    };
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return DecodeError::Malformed("expected a JSON object with a string \"type\"".into());
    };
    if !ClientMessage::TYPES.contains(&kind) {
        return DecodeError::UnknownType(kind.chars().take(64).collect());
    }
    if kind == "join" {
        if let Some(room) = value.get("room").and_then(|r| r.as_str()) {
            if let Err(reason) = RoomName::new(room) {
                return DecodeError::InvalidRoom(reason);
            }
        }
    }
    DecodeError::Malformed(format!("invalid \"{kind}\" message ({err})"))
}

/// Why a text frame is not a [`ClientMessage`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown message type \"{0}\"")]
    UnknownType(String),
    #[error("invalid room name: {0}")]
    InvalidRoom(RoomNameError),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::InvalidRoom(_) => ErrorCode::InvalidRoom,
        }
    }
}

/// Messages from the server to a browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// The reply to a successful [`ClientMessage::Join`].
    #[serde(rename_all = "camelCase")]
    Joined {
        room: RoomName,
        /// The id the server gave this connection.
        you: PeerId,
        /// Members already in the room, oldest first. Each of them will send this client an offer.
        peers: Vec<PeerId>,
        /// How many people the room holds.
        capacity: u32,
        /// What to pass to RTCPeerConnection as `iceServers` (may be empty).
        ice_servers: Vec<IceServer>,
    },
    /// Someone entered the caller's room (the tutorial's "welcome"): time to send them an offer.
    PeerJoined { peer: PeerId },
    /// Someone left the caller's room, or their connection was lost.
    PeerLeft { peer: PeerId },
    /// An offer or answer from `from`, a member of the caller's room (stamped by the server).
    #[serde(rename_all = "camelCase")]
    Description {
        from: PeerId,
        description: SessionDescription,
    },
    /// An ICE candidate from `from`, a member of the caller's room (stamped by the server).
    #[serde(rename_all = "camelCase")]
    IceCandidate {
        from: PeerId,
        candidate: IceCandidate,
    },
    /// A member's microphone / camera state changed (or was re-announced for a newcomer).
    #[serde(rename_all = "camelCase")]
    PeerMediaState {
        peer: PeerId,
        #[serde(flatten)]
        state: MediaState,
    },
    /// A request was refused. The connection stays usable unless the server closes it.
    Error { code: ErrorCode, message: String },
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // See ClientMessage::to_json: cannot fail for these types.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Stable, machine-readable reasons for [`ServerMessage::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The room already holds its capacity.
    RoomFull,
    /// The room name failed [`RoomName`] validation.
    InvalidRoom,
    /// The client speaks another [`PROTOCOL_VERSION`] (usually: a stale page; reload).
    UnsupportedVersion,
    /// Not JSON, or not the shape of any message.
    Malformed,
    /// A `type` this server does not know.
    UnknownType,
    /// The request needs a room and the client has not joined one.
    NotInRoom,
    /// `join` while already in a room.
    AlreadyJoined,
    /// The addressed peer is not in the sender's room.
    UnknownPeer,
    /// The server is at a configured limit (rooms, connections).
    ServerFull,
    /// The client sent messages faster than the server's per-connection rate limit; this one
    /// was dropped. Repeatedly going over the limit gets the connection closed (1008).
    RateLimited,
}

impl ErrorCode {
    /// Every code, for counters and tests that must cover them all. `as_str` below is an
    /// exhaustive match, so a new variant is noticed there; add it here too.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::RoomFull,
        ErrorCode::InvalidRoom,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Malformed,
        ErrorCode::UnknownType,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::ServerFull,
        ErrorCode::RateLimited,
    ];

    /// The code as it appears on the wire (`room-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RoomFull => "room-full",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::RateLimited => "rate-limited",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_accept_ordinary_text() {
        for ok in [
            "a",
            "team sync",
            "Café",
            "팀 회의",
            "a/b?c",
            &"x".repeat(64),
        ] {
            assert_eq!(RoomName::new(ok).map(|r| r.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn room_names_reject_with_a_reason() {
        assert_eq!(RoomName::new(""), Err(RoomNameError::Empty));
        assert_eq!(RoomName::new("   "), Err(RoomNameError::Empty));
        assert_eq!(
            RoomName::new("x".repeat(65)),
            Err(RoomNameError::TooLong { len: 65 })
        );
        // 64 multi-byte characters are fine: the limit is in characters, not bytes.
        assert!(RoomName::new("é".repeat(64)).is_ok());
        assert_eq!(RoomName::new("a\tb"), Err(RoomNameError::ControlCharacter));
        assert_eq!(
            RoomName::new("a\u{7f}"),
            Err(RoomNameError::ControlCharacter)
        );
        assert_eq!(
            RoomName::new(" a"),
            Err(RoomNameError::SurroundingWhitespace)
        );
        assert_eq!(
            RoomNameError::TooLong { len: 70 }.to_string(),
            "a room name can have at most 64 characters (this one has 70)"
        );
    }

    #[test]
    fn decode_classifies_failures() {
        assert!(matches!(
            ClientMessage::decode("{not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            ClientMessage::decode("[1,2]"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            ClientMessage::decode(r#"{"type":"dance"}"#),
            Err(DecodeError::UnknownType("dance".into()))
        );
        assert_eq!(
            ClientMessage::decode(r#"{"type":"join","room":""}"#),
            Err(DecodeError::InvalidRoom(RoomNameError::Empty))
        );
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"description","to":"x"}"#),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            ClientMessage::decode(r#"{"type":"dance"}"#).map_err(|e| e.code()),
            Err(ErrorCode::UnknownType)
        );
    }

    #[test]
    fn join_without_version_decodes_as_version_zero() {
        assert_eq!(
            ClientMessage::decode(r#"{"type":"join","room":"a"}"#),
            Ok(ClientMessage::Join {
                room: RoomName::new("a").unwrap(),
                version: 0
            })
        );
    }

    #[test]
    fn error_code_as_str_matches_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }

    #[test]
    fn ice_server_debug_hides_the_credential() {
        let server = IceServer {
            urls: vec!["turn:t.example:3478".into()],
            username: Some("1700000000:7".into()),
            credential: Some("c2VjcmV0LXBhc3N3b3Jk".into()),
        };
        let text = format!("{server:?}");
        assert!(text.contains("1700000000:7") && text.contains("turn:t.example"));
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
