//! Room passcodes: stored only as a salted PBKDF2-HMAC-SHA256 hash, in memory, for as long as the
//! room exists; verified in constant time by `ring::pbkdf2::verify`; guesses limited per client
//! address and per room by [`Attempts`] buckets.
//!
//! Hashing and verifying cost [`DEFAULT_ITERATIONS`] rounds of HMAC on purpose (tens of
//! milliseconds), so they never run under the hub's lock: the hub hands the work out as a
//! [`crate::hub::Stretch`] and the transport runs it on a blocking thread.
//!
//! Why 100,000 iterations and not OWASP's 600,000 for stored passwords: the hash never leaves the
//! process's memory and dies with the room, and online guessing is what the attempt limits are
//! for. The stretching only matters if memory were dumped, and then a room passcode protects one
//! call for its duration; each verification costs CPU that a crowd of joiners pays on a 2-core
//! server.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;

use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};
use shared::Passcode;

/// PBKDF2 rounds for a passcode (see the module docs).
pub const DEFAULT_ITERATIONS: NonZeroU32 = match NonZeroU32::new(100_000) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;
const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;

/// The system's random number generator failed (no salt, no id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomError;

/// A salted passcode hash. `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasscodeHash {
    salt: [u8; SALT_BYTES],
    hash: [u8; HASH_BYTES],
    iterations: NonZeroU32,
}

impl fmt::Debug for PasscodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasscodeHash(<redacted>)")
    }
}

impl PasscodeHash {
    /// Hashes `passcode` with a fresh random salt. Slow on purpose: call it off the hub's lock.
    pub fn new(
        passcode: &Passcode,
        iterations: NonZeroU32,
        rng: &SystemRandom,
    ) -> Result<Self, RandomError> {
        let mut salt = [0u8; SALT_BYTES];
        rng.fill(&mut salt).map_err(|_| RandomError)?;
        let mut hash = [0u8; HASH_BYTES];
        pbkdf2::derive(
            ALGORITHM,
            iterations,
            &salt,
            passcode.as_str().as_bytes(),
            &mut hash,
        );
        Ok(Self {
            salt,
            hash,
            iterations,
        })
    }

    /// Whether `passcode` is the one hashed, compared in constant time. Slow on purpose.
    pub fn verify(&self, passcode: &Passcode) -> bool {
        pbkdf2::verify(
            ALGORITHM,
            self.iterations,
            &self.salt,
            passcode.as_str().as_bytes(),
            &self.hash,
        )
        .is_ok()
    }
}

/// How many passcode attempts one key (an address, a room) gets: `per_minute` at once, refilled
/// evenly over a minute. `per_minute == 0` turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
}

/// A token bucket on the hub's monotonic milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempts {
    tokens: f64,
    last_ms: u64,
}

impl Attempts {
    pub fn full(rate: Rate, now_ms: u64) -> Self {
        Self {
            tokens: f64::from(rate.per_minute),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        let burst = f64::from(rate.per_minute);
        self.tokens = (self.tokens + elapsed * burst / 60_000.0).min(burst);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes one attempt if there is one.
    pub fn try_take(&mut self, rate: Rate, now_ms: u64) -> bool {
        if rate.per_minute == 0 {
            return true;
        }
        self.refill(rate, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Refilled completely: forgetting it changes nothing.
    fn is_full(&mut self, rate: Rate, now_ms: u64) -> bool {
        self.refill(rate, now_ms);
        self.tokens >= f64::from(rate.per_minute)
    }
}

/// Attempt buckets per client address, bounded: at [`IpAttempts::MAX_ADDRESSES`] addresses the
/// buckets that have refilled are forgotten (at most once a second: the sweep runs under the
/// hub's lock), and if none has, a new address is refused (fail closed: a flood from many
/// addresses cannot grow memory or escape the limit).
#[derive(Debug)]
pub struct IpAttempts {
    rate: Rate,
    buckets: HashMap<IpAddr, Attempts>,
    last_sweep_ms: Option<u64>,
}

impl IpAttempts {
    pub const MAX_ADDRESSES: usize = 65_536;

    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
            last_sweep_ms: None,
        }
    }

    /// Takes one attempt for `ip` (no address known: only the room's limit applies).
    pub fn try_take(&mut self, ip: Option<IpAddr>, now_ms: u64) -> bool {
        let Some(ip) = ip else { return true };
        if self.rate.per_minute == 0 {
            return true;
        }
        let rate = self.rate;
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= Self::MAX_ADDRESSES {
            let due = self
                .last_sweep_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= 1000);
            if due {
                self.last_sweep_ms = Some(now_ms);
                self.buckets
                    .retain(|_, bucket| !bucket.is_full(rate, now_ms));
            }
            if self.buckets.len() >= Self::MAX_ADDRESSES {
                return false;
            }
        }
        self.buckets
            .entry(ip)
            .or_insert_with(|| Attempts::full(rate, now_ms))
            .try_take(rate, now_ms)
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Passcode {
        Passcode::new(text).unwrap()
    }

    #[test]
    fn a_hash_verifies_its_passcode_only_and_is_salted() {
        let rng = SystemRandom::new();
        let few = NonZeroU32::new(1000).unwrap();
        let hash = PasscodeHash::new(&code("open sesame"), few, &rng).unwrap();
        assert!(hash.verify(&code("open sesame")));
        assert!(!hash.verify(&code("open sesame ")));
        assert!(!hash.verify(&code("")));
        let again = PasscodeHash::new(&code("open sesame"), few, &rng).unwrap();
        assert_ne!(hash, again, "a fresh salt each time");
        assert!(!format!("{hash:?}").contains("sesame"));
    }

    #[test]
    fn attempts_refill_over_a_minute() {
        let rate = Rate { per_minute: 6 };
        let mut bucket = Attempts::full(rate, 0);
        assert!((0..6).all(|_| bucket.try_take(rate, 0)));
        assert!(!bucket.try_take(rate, 0));
        // One every 10 s.
        assert!(!bucket.try_take(rate, 9_000));
        assert!(bucket.try_take(rate, 10_000));
        assert!(!bucket.try_take(rate, 10_000));
        let off = Rate { per_minute: 0 };
        assert!((0..100).all(|_| bucket.try_take(off, 0)));
    }

    #[test]
    fn addresses_are_limited_separately_and_forgotten_when_refilled() {
        let mut ips = IpAttempts::new(Rate { per_minute: 2 });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(ips.try_take(Some(a), 0) && ips.try_take(Some(a), 0));
        assert!(!ips.try_take(Some(a), 0));
        assert!(ips.try_take(Some(b), 0));
        assert!(ips.try_take(None, 0), "no address: no per-address limit");
        assert_eq!(ips.len(), 2);
        // Filling the table: refilled buckets are dropped to make room.
        for i in 0..IpAttempts::MAX_ADDRESSES as u32 - 2 {
            assert!(ips.try_take(Some(IpAddr::from(i.to_be_bytes())), 0));
        }
        assert_eq!(ips.len(), IpAttempts::MAX_ADDRESSES);
        let c: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(!ips.try_take(Some(c), 1), "full of live buckets: refused");
        assert!(
            !ips.try_take(Some(c), 500),
            "no second sweep within a second"
        );
        assert!(
            ips.try_take(Some(c), 120_000),
            "after a minute all refilled"
        );
        assert_eq!(ips.len(), 1);
    }
}
