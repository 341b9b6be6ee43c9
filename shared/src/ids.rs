//! Identifiers. None of them ties a participant to one server process: peer ids are random (so
//! a restarted server, or another node, never hands out one already in use), and a resume token
//! is checked with a secret that every node can hold.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A participant in a room, assigned by the server when it joins (and kept when it resumes).
/// Random, below 2^53 so that it survives a trip through JavaScript numbers; never chosen by a
/// client. The order of two ids decides who is "polite" in perfect negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(u64);

impl PeerId {
    /// Largest id + 1: ids fit in a JavaScript number exactly.
    pub const LIMIT: u64 = 1 << 53;

    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// An id from 64 random bits (the server's random source), folded into `1..LIMIT`.
    pub const fn from_random(bits: u64) -> Self {
        Self(bits % (Self::LIMIT - 1) + 1)
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

/// Which `RTCPeerConnection` of the sender a description or candidate belongs to. A client picks
/// a new random one each time it creates a connection to a peer; when a peer's id changes, the
/// peer has started over (reloaded, or dropped us while we were away) and the old connection on
/// our side is useless. The server relays it untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(u32);

impl ConnectionId {
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Largest resume token accepted, in bytes.
pub const RESUME_TOKEN_MAX_BYTES: usize = 256;

/// Lets a client that lost its websocket take its seat back (same [`PeerId`], same room). Opaque
/// to clients; the server signs it (see the server's `resume` module). A bearer credential:
/// `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResumeToken(String);

/// A resume token that is not even shaped like one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a resume token is 1 to {RESUME_TOKEN_MAX_BYTES} printable ASCII characters")]
pub struct ResumeTokenError;

impl ResumeToken {
    pub fn new(token: impl Into<String>) -> Result<Self, ResumeTokenError> {
        let token = token.into();
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if token.is_empty() || token.len() > RESUME_TOKEN_MAX_BYTES || !printable {
            return Err(ResumeTokenError);
        }
        Ok(Self(token))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResumeToken {
    type Error = ResumeTokenError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ResumeToken> for String {
    fn from(value: ResumeToken) -> Self {
        value.0
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_peer_ids_fit_javascript_numbers() {
        for bits in [0, 1, u64::MAX, PeerId::LIMIT, PeerId::LIMIT - 1, 12345] {
            let id = PeerId::from_random(bits).get();
            assert!((1..PeerId::LIMIT).contains(&id), "{bits} -> {id}");
        }
    }

    #[test]
    fn resume_tokens_are_bounded_and_never_printed() {
        assert!(ResumeToken::new("").is_err());
        assert!(ResumeToken::new("a b").is_err());
        assert!(ResumeToken::new("x".repeat(257)).is_err());
        let token = ResumeToken::new("v1.abc.def").unwrap();
        assert!(!format!("{token:?}").contains("abc"));
    }
}
