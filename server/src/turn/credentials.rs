//! Time-limited TURN credentials in the "TURN REST API" format that coturn implements with
//! `use-auth-secret` / `static-auth-secret` (draft-uberti-behave-turn-rest-00):
//!
//! - username: `EXPIRY:PEER`, where EXPIRY is a Unix time in seconds and PEER is who it was
//!   minted for (informational: only the expiry is checked);
//! - password: base64(HMAC-SHA1(secret, username)).
//!
//! Anyone holding the secret can mint and check them, so the same credentials work on the
//! built-in server and on an external coturn configured with the same secret, and a server node
//! never has to store them. They are minted per `joined` and never logged.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::prelude::BASE64_STANDARD;
use base64::Engine;
use ring::hmac;
use shared::PeerId;

use crate::datadir::Secret;

/// How long minted credentials stay valid. TURN re-authenticates every request that keeps a
/// relay alive (Refresh about every 10 minutes, CreatePermission every 5, ChannelBind every 10),
/// with the credentials handed out when the browser joined, so they must outlast the longest
/// call: a relayed call that runs past this loses its relay. 24 hours covers any real call (and a
/// tab left open in a room all day), while credentials that leak (a screenshot of
/// chrome://webrtc-internals) are useless by the next day.
pub const LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// A username and password for one peer. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a username is refused before its password is even checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("the username does not start with an expiry time")]
    Malformed,
    #[error("the credentials have expired")]
    Expired,
}

/// Credentials for `peer`, valid until `now + lifetime`.
pub fn mint(secret: &Secret, peer: PeerId, now: SystemTime, lifetime: Duration) -> Credentials {
    let expiry = unix_seconds(now).saturating_add(lifetime.as_secs());
    let username = format!("{expiry}:{peer}");
    let password = password_for(secret, &username);
    Credentials { username, password }
}

/// The password that goes with `username`: base64(HMAC-SHA1(secret, username)), as coturn
/// computes it.
pub fn password_for(secret: &Secret, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    BASE64_STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Checks that `username` carries an expiry (the digits before the first `:`, or the whole
/// username, as coturn accepts) that is still in the future at `now`.
pub fn check_expiry(username: &str, now: SystemTime) -> Result<(), UsernameError> {
    let stamp = username.split(':').next().unwrap_or_default();
    if stamp.is_empty() || stamp.len() > 20 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsernameError::Malformed);
    }
    let expiry: u64 = stamp.parse().map_err(|_| UsernameError::Malformed)?;
    if expiry <= unix_seconds(now) {
        return Err(UsernameError::Expired);
    }
    Ok(())
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_text("0123456789abcdef-test-secret").unwrap()
    }

    #[test]
    fn minted_credentials_are_coturns_rest_format() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let creds = mint(&secret(), PeerId::new(42), now, LIFETIME);
        assert_eq!(creds.username, "1700086400:42");
        // The same computation coturn does (and `openssl dgst -sha1 -hmac ... | base64`).
        assert_eq!(creds.password, password_for(&secret(), "1700086400:42"));
        assert_eq!(creds.password.len(), 28, "base64 of 20 bytes");
        assert!(check_expiry(&creds.username, now).is_ok());
        assert!(!format!("{creds:?}").contains(&creds.password));
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA1("secretsecretsecret", "1234567890:user"), computed independently with
        // `printf %s 1234567890:user | openssl dgst -sha1 -hmac secretsecretsecret -binary | base64`.
        let secret = Secret::from_text("secretsecretsecret").unwrap();
        assert_eq!(
            password_for(&secret, "1234567890:user"),
            "lJ3ICZ8jhSjEM4+MsE1H8YFp5Iw="
        );
    }

    #[test]
    fn expiry_is_checked() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000);
        assert_eq!(check_expiry("2001:7", now), Ok(()));
        assert_eq!(check_expiry("2001", now), Ok(()));
        assert_eq!(check_expiry("2000:7", now), Err(UsernameError::Expired));
        assert_eq!(check_expiry("12:7", now), Err(UsernameError::Expired));
        for bad in [
            "",
            ":7",
            "abc:7",
            "-5:7",
            "99999999999999999999999:1",
            " 2001:7",
        ] {
            assert_eq!(
                check_expiry(bad, now),
                Err(UsernameError::Malformed),
                "{bad}"
            );
        }
    }
}
