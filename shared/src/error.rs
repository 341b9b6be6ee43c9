//! Refusals: [`ErrorCode`] (stable, on the wire, for programs) and [`DecodeError`] (why a text
//! frame is not a [`crate::ClientMessage`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kinds::kinds;
use crate::text::TextError;

kinds!(
    /// Stable, machine-readable reasons for [`crate::ServerMessage::Error`] (kebab-case on the
    /// wire). The connection stays usable after any of them unless the server closes it.
    ErrorCode {
        /// The room already holds its capacity.
        RoomFull = "room-full",
        /// The room name failed [`crate::RoomName`] validation.
        InvalidRoom = "invalid-room",
        /// The display name failed [`crate::DisplayName`] validation.
        InvalidName = "invalid-name",
        /// The client speaks another protocol version (usually: a stale page; reload).
        UnsupportedVersion = "unsupported-version",
        /// Not JSON, or not the shape of any message.
        Malformed = "malformed",
        /// A `type` this server does not know.
        UnknownType = "unknown-type",
        /// The request needs a room and the client has not joined one.
        NotInRoom = "not-in-room",
        /// `join` while already in a room.
        AlreadyJoined = "already-joined",
        /// The addressed peer is not in the sender's room.
        UnknownPeer = "unknown-peer",
        /// The server is at a configured limit (rooms, connections).
        ServerFull = "server-full",
        /// The client sent messages faster than its rate limit; this one was dropped.
        RateLimited = "rate-limited",
        /// A resume token that is forged, expired, or for another room: join afresh.
        ResumeRefused = "resume-refused",
        /// The room is locked with a passcode and none was given.
        PasscodeRequired = "passcode-required",
        /// The room is locked and the passcode given is not its passcode.
        WrongPasscode = "wrong-passcode",
        /// The room is closed to newcomers (locked with an empty passcode).
        RoomClosed = "room-closed",
        /// Too many passcode attempts from this address or for this room; wait a minute.
        TooManyAttempts = "too-many-attempts",
        /// A chat message that is blank, too long, or holds control characters.
        InvalidChat = "invalid-chat",
    }
);

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = String::deserialize(deserializer)?;
        ErrorCode::from_wire(&wire)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {wire:?}")))
    }
}

/// Why a text frame is not a [`crate::ClientMessage`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown message type \"{0}\"")]
    UnknownType(String),
    #[error(
        "this page is out of date (protocol {got}, the server speaks {expected}); reload the page"
    )]
    UnsupportedVersion { got: u32, expected: u32 },
    #[error("invalid room name: {0}")]
    InvalidRoom(TextError),
    #[error("invalid name: {0}")]
    InvalidName(TextError),
    #[error("invalid chat message: {0}")]
    InvalidChat(TextError),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::InvalidRoom(_) => ErrorCode::InvalidRoom,
            DecodeError::InvalidName(_) => ErrorCode::InvalidName,
            DecodeError::InvalidChat(_) => ErrorCode::InvalidChat,
        }
    }
}
