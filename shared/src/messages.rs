//! The messages themselves: [`ClientMessage`] (browser → server) and [`ServerMessage`] (server →
//! browser), JSON objects tagged with `type`, camelCase fields.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::ids::{ConnectionId, PeerId, ResumeToken};
use crate::kinds::kinds;
use crate::text::{ChatText, DisplayName, Passcode, RoomName};
use crate::{ErrorCode, PROTOCOL_VERSION};

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

/// A STUN or TURN server for RTCPeerConnection's `iceServers`, mirroring RTCIceServer. TURN
/// entries carry time-limited credentials minted for one participant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    /// The credential is a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Largest stream id in a [`MediaState`].
pub const STREAM_ID_MAX_BYTES: usize = 64;

/// What a participant is sending: whether the microphone is muted, the camera off, and, while
/// sharing a screen, the id of the `MediaStream` the screen track arrives in (so that the others
/// can tell it from the camera).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    pub muted: bool,
    pub camera_off: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "stream_id"
    )]
    pub screen: Option<String>,
}

fn stream_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id = Option::<String>::deserialize(d)?;
    match &id {
        Some(s)
            if s.is_empty() || s.len() > STREAM_ID_MAX_BYTES || s.chars().any(char::is_control) =>
        {
            Err(serde::de::Error::custom(
                "a stream id is 1 to 64 bytes of text",
            ))
        }
        _ => Ok(id),
    }
}

/// A member of a room, as the others see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: PeerId,
    pub name: DisplayName,
    pub media: MediaState,
    /// Its connection to the server dropped and it has not come back yet (its seat is kept for a
    /// grace period; its media may still be flowing peer to peer).
    #[serde(default)]
    pub reconnecting: bool,
}

/// Whether newcomers may enter a room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LockState {
    /// Anyone with the link may join.
    #[default]
    Open,
    /// Newcomers need the passcode.
    Passcode,
    /// No newcomers at all (locked with an empty passcode).
    Closed,
}

impl LockState {
    /// The wire name (as serialized), also the page's `data-lock` value.
    pub fn as_str(self) -> &'static str {
        match self {
            LockState::Open => "open",
            LockState::Passcode => "passcode",
            LockState::Closed => "closed",
        }
    }
}

/// One chat message as delivered: the sender and its name are stamped by the server, and so is
/// the time (unix milliseconds, the server's clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatEntry {
    pub from: PeerId,
    pub name: DisplayName,
    pub text: ChatText,
    pub at: u64,
}

kinds!(
    /// The `type` of each [`ClientMessage`].
    ClientKind {
        Join = "join",
        Leave = "leave",
        Description = "description",
        IceCandidate = "iceCandidate",
        MediaState = "mediaState",
        Chat = "chat",
        Lock = "lock",
        Unlock = "unlock",
    }
);

/// Messages from a browser to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMessage {
    /// Enter a room (once per connection, until [`ClientMessage::Leave`]). With `resume`, take
    /// back the seat a dropped connection had; with `passcode`, enter a locked room (or, for the
    /// first person in, create the room locked with it).
    #[serde(rename_all = "camelCase")]
    Join {
        room: RoomName,
        /// The sender's [`PROTOCOL_VERSION`]; 0 when absent (a bundle from before versioning).
        #[serde(default)]
        version: u32,
        name: DisplayName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeToken>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passcode: Option<Passcode>,
    },
    /// Leave the room on purpose (no grace period); the connection stays open and may join again.
    Leave,
    /// An offer or answer for one peer in the same room, from our connection `connection`.
    #[serde(rename_all = "camelCase")]
    Description {
        to: PeerId,
        connection: ConnectionId,
        description: SessionDescription,
    },
    /// An ICE candidate for one peer in the same room, from our connection `connection`.
    #[serde(rename_all = "camelCase")]
    IceCandidate {
        to: PeerId,
        connection: ConnectionId,
        candidate: IceCandidate,
    },
    /// The sender's microphone, camera and screen state, for the others' tiles. The server keeps
    /// the latest one and hands it to newcomers.
    MediaState(MediaState),
    /// A chat message for everyone in the room.
    Chat { text: ChatText },
    /// Lock the room: newcomers need `passcode` (empty: no newcomers at all).
    Lock { passcode: Passcode },
    /// Open the room again.
    Unlock,
}

impl ClientMessage {
    pub fn kind(&self) -> ClientKind {
        match self {
            ClientMessage::Join { .. } => ClientKind::Join,
            ClientMessage::Leave => ClientKind::Leave,
            ClientMessage::Description { .. } => ClientKind::Description,
            ClientMessage::IceCandidate { .. } => ClientKind::IceCandidate,
            ClientMessage::MediaState(_) => ClientKind::MediaState,
            ClientMessage::Chat { .. } => ClientKind::Chat,
            ClientMessage::Lock { .. } => ClientKind::Lock,
            ClientMessage::Unlock => ClientKind::Unlock,
        }
    }

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
    let Some(tag) = value.get("type").and_then(|t| t.as_str()) else {
        return DecodeError::Malformed("expected a JSON object with a string \"type\"".into());
    };
    let Some(kind) = ClientKind::from_wire(tag) else {
        return DecodeError::UnknownType(tag.chars().take(64).collect());
    };
    let field = |name: &str| value.get(name).and_then(|v| v.as_str());
    match kind {
        ClientKind::Join => {
            // An old page's join may not even have this version's shape: say "reload" first.
            let got = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
            if got != u64::from(PROTOCOL_VERSION) {
                return DecodeError::UnsupportedVersion {
                    got: u32::try_from(got).unwrap_or(u32::MAX),
                    expected: PROTOCOL_VERSION,
                };
            }
            if let Some(Err(reason)) = field("room").map(RoomName::new) {
                return DecodeError::InvalidRoom(reason);
            }
            if let Some(Err(reason)) = field("name").map(DisplayName::new) {
                return DecodeError::InvalidName(reason);
            }
        }
        ClientKind::Chat => {
            if let Some(Err(reason)) = field("text").map(ChatText::new) {
                return DecodeError::InvalidChat(reason);
            }
        }
        _ => {}
    }
    DecodeError::Malformed(format!("invalid \"{tag}\" message ({err})"))
}

kinds!(
    /// The `type` of each [`ServerMessage`].
    ServerKind {
        Joined = "joined",
        PeerJoined = "peerJoined",
        PeerLeft = "peerLeft",
        PeerReconnecting = "peerReconnecting",
        PeerReconnected = "peerReconnected",
        Description = "description",
        IceCandidate = "iceCandidate",
        PeerMediaState = "peerMediaState",
        Chat = "chat",
        LockChanged = "lockChanged",
        Error = "error",
    }
);

/// Messages from the server to a browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// The reply to a successful [`ClientMessage::Join`].
    #[serde(rename_all = "camelCase")]
    Joined {
        room: RoomName,
        /// This participant's id (the old one when resumed).
        you: PeerId,
        /// The other members, oldest first. Each of them will call this client (send an offer).
        peers: Vec<Member>,
        /// How many people the room holds.
        capacity: u32,
        /// What to pass to RTCPeerConnection as `iceServers` (may be empty); TURN credentials in
        /// it are minted for this participant and expire.
        ice_servers: Vec<IceServer>,
        /// Present this with `join` to take the seat back after a dropped connection.
        resume_token: ResumeToken,
        /// True when a seat held for this participant was taken back: the others kept their
        /// connections to it, and messages sent to it meanwhile follow this one.
        resumed: bool,
        lock: LockState,
        /// The room's recent chat, oldest first.
        chat: Vec<ChatEntry>,
    },
    /// Someone entered the caller's room: time to call them. When the caller already has a
    /// connection to `peer.id` (the server restarted, or the peer came back), it keeps it.
    PeerJoined { peer: Member },
    /// Someone left the caller's room, or did not come back within the grace period.
    PeerLeft { peer: PeerId },
    /// Someone's connection to the server dropped; their seat is kept for a grace period.
    PeerReconnecting { peer: PeerId },
    /// Someone whose connection dropped is back, with the same id; nothing else changed.
    PeerReconnected { peer: PeerId },
    /// An offer or answer from `from`'s connection `connection` (`from` stamped by the server).
    #[serde(rename_all = "camelCase")]
    Description {
        from: PeerId,
        connection: ConnectionId,
        description: SessionDescription,
    },
    /// An ICE candidate from `from`'s connection `connection` (`from` stamped by the server).
    #[serde(rename_all = "camelCase")]
    IceCandidate {
        from: PeerId,
        connection: ConnectionId,
        candidate: IceCandidate,
    },
    /// A member's microphone / camera / screen state changed.
    PeerMediaState { peer: PeerId, state: MediaState },
    /// A chat message (sender, name and time stamped by the server).
    Chat(ChatEntry),
    /// The room was locked or opened, by `by`.
    LockChanged { lock: LockState, by: PeerId },
    /// A request was refused. The connection stays usable unless the server closes it.
    Error { code: ErrorCode, message: String },
}

impl ServerMessage {
    pub fn kind(&self) -> ServerKind {
        match self {
            ServerMessage::Joined { .. } => ServerKind::Joined,
            ServerMessage::PeerJoined { .. } => ServerKind::PeerJoined,
            ServerMessage::PeerLeft { .. } => ServerKind::PeerLeft,
            ServerMessage::PeerReconnecting { .. } => ServerKind::PeerReconnecting,
            ServerMessage::PeerReconnected { .. } => ServerKind::PeerReconnected,
            ServerMessage::Description { .. } => ServerKind::Description,
            ServerMessage::IceCandidate { .. } => ServerKind::IceCandidate,
            ServerMessage::PeerMediaState { .. } => ServerKind::PeerMediaState,
            ServerMessage::Chat(_) => ServerKind::Chat,
            ServerMessage::LockChanged { .. } => ServerKind::LockChanged,
            ServerMessage::Error { .. } => ServerKind::Error,
        }
    }

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

#[cfg(test)]
mod lock_state_tests {
    use super::LockState;

    #[test]
    fn as_str_is_the_wire_name() {
        for state in [LockState::Open, LockState::Passcode, LockState::Closed] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
    }
}
