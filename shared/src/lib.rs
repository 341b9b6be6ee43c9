//! Noom's signaling protocol: the typed messages that the browser app and the server exchange over
//! the `/ws` websocket, as JSON text frames.
//!
//! This crate does no I/O. It is compiled into both the server (native) and the frontend (wasm),
//! so both sides agree on the wire format at compile time; `tests/golden.rs` pins that format.
//!
//! The flow:
//! 1. A client sends [`ClientMessage::Join`] with a [`RoomName`], its [`DisplayName`] and its
//!    [`PROTOCOL_VERSION`] (plus a [`ResumeToken`] when it is coming back after a dropped
//!    connection, and a [`Passcode`] for a locked room).
//! 2. The server answers [`ServerMessage::Joined`] (the client's [`PeerId`], the other
//!    [`Member`]s, the ICE servers with credentials minted for it, a fresh resume token, the
//!    room's lock and recent chat) and tells every other member [`ServerMessage::PeerJoined`].
//! 3. Each member that was already in the room calls the newcomer. After that, either side may
//!    renegotiate at any time (perfect negotiation: the lower [`PeerId`] is the polite one).
//!    Offers, answers and ICE candidates are [`ClientMessage::Description`] /
//!    [`ClientMessage::IceCandidate`] addressed `to` one peer and tagged with the sender's
//!    [`ConnectionId`]. The server relays them unchanged except for `from`, which it stamps
//!    itself: a client can never choose who a message appears to come from.
//! 4. A dropped websocket: the room hears [`ServerMessage::PeerReconnecting`], and then
//!    [`ServerMessage::PeerReconnected`] if the client resumes within the grace period, or
//!    [`ServerMessage::PeerLeft`]. [`ClientMessage::Leave`] leaves at once.
//!
//! Anything the server refuses is answered with [`ServerMessage::Error`] carrying an
//! [`ErrorCode`] (stable, for programs) and a sentence (for people).
//!
//! Every message type, error code and their wire names are declared once (see `kinds`): the
//! lists used for unknown-type checks and metric labels are derived from those declarations.

mod error;
mod ids;
mod kinds;
mod messages;
mod text;

pub use error::{DecodeError, ErrorCode};
pub use ids::{ConnectionId, PeerId, ResumeToken, ResumeTokenError, RESUME_TOKEN_MAX_BYTES};
pub use messages::{
    ChatEntry, ClientKind, ClientMessage, IceCandidate, IceServer, LockState, MediaState, Member,
    SdpKind, ServerKind, ServerMessage, SessionDescription, STREAM_ID_MAX_BYTES,
};
pub use text::{
    ChatText, DisplayName, Passcode, RoomName, TextError, CHAT_MAX_BYTES, DISPLAY_NAME_MAX_CHARS,
    PASSCODE_MAX_CHARS, ROOM_NAME_MAX_CHARS,
};

/// Version of this protocol. A client sends it in [`ClientMessage::Join`]; the server refuses
/// any other value with [`ErrorCode::UnsupportedVersion`], so a browser still running an old
/// bundle is told to reload instead of failing in odd ways. Bump it on any incompatible change.
///
/// 2: display names, resume tokens, connection ids on signals, reconnecting peers, chat, room
/// locks, media state kept by the server.
pub const PROTOCOL_VERSION: u32 = 2;

/// Chat messages a room keeps for late joiners (in memory only; gone with the room).
pub const CHAT_HISTORY: usize = 50;

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join","room":"","name":"A","version":2}"#),
            Err(DecodeError::InvalidRoom(TextError::Empty { .. }))
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join","room":"r","name":" A","version":2}"#),
            Err(DecodeError::InvalidName(_))
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"description","to":"x"}"#),
            Err(DecodeError::Malformed(_))
        ));
        let long = "x".repeat(CHAT_MAX_BYTES + 1);
        assert!(matches!(
            ClientMessage::decode(&format!(r#"{{"type":"chat","text":"{long}"}}"#)),
            Err(DecodeError::InvalidChat(TextError::TooManyBytes { .. }))
        ));
        assert_eq!(
            ClientMessage::decode(r#"{"type":"dance"}"#).map_err(|e| e.code()),
            Err(ErrorCode::UnknownType)
        );
    }

    #[test]
    fn an_old_page_is_told_to_reload_whatever_its_join_looks_like() {
        for old in [
            r#"{"type":"join","room":"a"}"#,
            r#"{"type":"join","room":"a","version":1}"#,
            r#"{"type":"join","room":"","version":1}"#,
        ] {
            let err = ClientMessage::decode(old).unwrap_err();
            assert_eq!(err.code(), ErrorCode::UnsupportedVersion, "{old}");
            assert!(err.to_string().contains("reload"), "{err}");
        }
    }

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()));
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), *code);
        }
        assert!(serde_json::from_str::<ErrorCode>(r#""no-such-code""#).is_err());
    }

    #[test]
    fn kinds_index_their_own_list() {
        for (i, kind) in ClientKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        for (i, kind) in ServerKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
        }
    }
}
