//! Resume tokens: what lets a client that lost its websocket take its seat back, on this server
//! process, on a restarted one, or (later) on another node holding the same secret.
//!
//! A token is `v1.<claims>.<tag>`, both parts lowercase hex:
//! - claims (24 bytes): the [`PeerId`] (8 bytes, big endian), the expiry in Unix seconds (8
//!   bytes), and the first 8 bytes of SHA-256 of the room name (so a token names its room without
//!   carrying up to 256 bytes of it, and a token for another room is told apart from a forgery);
//! - tag (32 bytes): HMAC-SHA256 under the resume secret over a domain label and the claims.
//!
//! The server keeps no record of the tokens it minted: anyone holding the secret verifies them.
//! Verification checks the tag first (in constant time, `ring::hmac::verify`), so a client learns
//! nothing about a token it did not get from us; only then expiry and room.
//!
//! Lifetime: [`TOKEN_LIFETIME`], 12 hours. A token is minted with every `joined` and there is no
//! message to refresh it, so it must stay valid for as long as a call can last — a connection may
//! drop in the fifth hour of a meeting. Twelve hours covers a working day of calls while a token
//! that leaked (it is a bearer credential: whoever holds it can take the seat) is useless the
//! next day. Every resume hands out a fresh one.

use std::fmt;
use std::time::Duration;

use ring::digest;
use ring::hmac;
use shared::{PeerId, ResumeToken, ResumeTokenError, RoomName};

use crate::datadir::Secret;

/// How long a token minted now stays valid (see the module docs for why).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Prefix of this token format.
const VERSION: &str = "v1";
/// What the tag signs besides the claims: a token of this format, for this purpose, only.
const DOMAIN: &[u8] = b"noom resume token v1\0";
const CLAIMS_BYTES: usize = 24;

/// Why a token was refused. Every kind is answered `resume-refused`; the kind goes to the log
/// and the sentence the client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("the resume token is not one this server issues")]
    Malformed,
    #[error("the resume token was not signed by this server")]
    Forged,
    #[error("the resume token has expired")]
    Expired,
    #[error("the resume token is for another room")]
    OtherRoom,
}

/// Mints and verifies resume tokens with one secret.
#[derive(Clone)]
pub struct ResumeKeys {
    key: hmac::Key,
    lifetime: Duration,
}

impl fmt::Debug for ResumeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeKeys")
            .field("key", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// What a valid token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Claims {
    peer: PeerId,
    expires_unix: u64,
    room: [u8; 8],
}

impl Claims {
    fn to_bytes(self) -> [u8; CLAIMS_BYTES] {
        let mut out = [0u8; CLAIMS_BYTES];
        out[..8].copy_from_slice(&self.peer.get().to_be_bytes());
        out[8..16].copy_from_slice(&self.expires_unix.to_be_bytes());
        out[16..].copy_from_slice(&self.room);
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; CLAIMS_BYTES] = bytes.try_into().ok()?;
        let peer = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let expires_unix = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
        let room = bytes[16..].try_into().ok()?;
        (1..PeerId::LIMIT).contains(&peer).then_some(Self {
            peer: PeerId::new(peer),
            expires_unix,
            room,
        })
    }
}

fn room_tag(room: &RoomName) -> [u8; 8] {
    let hash = digest::digest(&digest::SHA256, room.as_str().as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash.as_ref()[..8]);
    out
}

fn signed(claims: &[u8]) -> Vec<u8> {
    [DOMAIN, claims].concat()
}

impl ResumeKeys {
    pub fn new(secret: &Secret) -> Self {
        Self::with_lifetime(secret, TOKEN_LIFETIME)
    }

    pub fn with_lifetime(secret: &Secret, lifetime: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            lifetime,
        }
    }

    /// A token for `peer`'s seat in `room`, valid from `now_unix` for the lifetime. (Always 116
    /// printable ASCII characters, well inside what [`ResumeToken`] accepts: the error is only
    /// there because its constructor checks.)
    pub fn mint(
        &self,
        peer: PeerId,
        room: &RoomName,
        now_unix: u64,
    ) -> Result<ResumeToken, ResumeTokenError> {
        let claims = Claims {
            peer,
            expires_unix: now_unix.saturating_add(self.lifetime.as_secs()),
            room: room_tag(room),
        }
        .to_bytes();
        let tag = hmac::sign(&self.key, &signed(&claims));
        ResumeToken::new(format!("{VERSION}.{}.{}", hex(&claims), hex(tag.as_ref())))
    }

    /// The seat `token` names, if it is ours, unexpired at `now_unix`, and for `room`.
    pub fn verify(
        &self,
        token: &ResumeToken,
        room: &RoomName,
        now_unix: u64,
    ) -> Result<PeerId, ResumeError> {
        let mut parts = token.as_str().split('.');
        let (Some(VERSION), Some(claims), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ResumeError::Malformed);
        };
        let claims_bytes = unhex(claims).ok_or(ResumeError::Malformed)?;
        let tag = unhex(tag).ok_or(ResumeError::Malformed)?;
        if claims_bytes.len() != CLAIMS_BYTES {
            return Err(ResumeError::Malformed);
        }
        hmac::verify(&self.key, &signed(&claims_bytes), &tag).map_err(|_| ResumeError::Forged)?;
        // Signed by us, so well formed unless the format itself changed.
        let claims = Claims::from_bytes(&claims_bytes).ok_or(ResumeError::Malformed)?;
        if claims.expires_unix <= now_unix {
            return Err(ResumeError::Expired);
        }
        if claims.room != room_tag(room) {
            return Err(ResumeError::OtherRoom);
        }
        Ok(claims.peer)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keys(secret: &str) -> ResumeKeys {
        ResumeKeys::new(&Secret::from_text(secret).unwrap())
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_for_its_seat_and_room() {
        let keys = keys("0123456789abcdef-resume");
        let peer = PeerId::new(PeerId::LIMIT - 1);
        let token = keys.mint(peer, &room("standup"), NOW).unwrap();
        assert_eq!(token.as_str().len(), 116);
        assert_eq!(keys.verify(&token, &room("standup"), NOW), Ok(peer));
        // Another process with the same secret accepts it too.
        let restarted = self::keys("0123456789abcdef-resume");
        assert_eq!(
            restarted.verify(&token, &room("standup"), NOW + 3600),
            Ok(peer)
        );
    }

    #[test]
    fn each_kind_of_bad_token_has_its_own_error() {
        let keys = keys("0123456789abcdef-resume");
        let peer = PeerId::new(42);
        let token = keys.mint(peer, &room("standup"), NOW).unwrap();
        let lifetime = TOKEN_LIFETIME.as_secs();
        assert_eq!(
            keys.verify(&token, &room("standup"), NOW + lifetime),
            Err(ResumeError::Expired)
        );
        assert_eq!(
            keys.verify(&token, &room("other"), NOW),
            Err(ResumeError::OtherRoom)
        );
        assert_eq!(
            self::keys("another secret, 16+ chars").verify(&token, &room("standup"), NOW),
            Err(ResumeError::Forged)
        );
        // Tampering with the claims (a different peer id) breaks the tag.
        let text = token.as_str();
        let mut tampered = text.to_string();
        tampered.replace_range(3..4, if &text[3..4] == "0" { "1" } else { "0" });
        let tampered = ResumeToken::new(tampered).unwrap();
        assert_eq!(
            keys.verify(&tampered, &room("standup"), NOW),
            Err(ResumeError::Forged)
        );
        for malformed in [
            "x",
            "v1.abc.def",
            "v2.00.00",
            "v1.zz.zz",
            "v1..",
            "v1.00.00.00",
        ] {
            assert_eq!(
                keys.verify(&ResumeToken::new(malformed).unwrap(), &room("standup"), NOW),
                Err(ResumeError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn keys_never_print() {
        let keys = keys("correct horse battery staple");
        assert!(!format!("{keys:?}").contains("horse"));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("AB"), None, "lowercase only: one spelling per token");
    }
}
