//! Time, injected. The hub never sleeps and never reads the system clock itself: it asks its
//! [`Clock`], so tests can drive grace periods, token expiry and rate limits with a
//! [`ManualClock`] instead of waiting, and the transport decides when to call
//! [`crate::hub::Hub::expire`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One reading of a [`Clock`]: a monotonic time for deadlines (grace periods, rate limits), and
/// the wall clock for what leaves the process (chat timestamps, token expiry, which must mean the
/// same after a restart or on another node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a monotonic clock with an arbitrary start.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    pub fn unix_secs(self) -> u64 {
        self.unix_ms / 1000
    }
}

/// A source of [`Now`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Now;
}

/// The real clocks: `Instant` (monotonic) and `SystemTime`.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        let mono_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        // A clock set before 1970 reads as 1970: tokens then look expired, which is safe.
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Now { mono_ms, unix_ms }
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    mono_ms: AtomicU64,
    unix_ms: AtomicU64,
}

impl ManualClock {
    /// Starts at monotonic 0 and at `unix_ms` on the wall clock.
    pub fn new(unix_ms: u64) -> Self {
        Self {
            mono_ms: AtomicU64::new(0),
            unix_ms: AtomicU64::new(unix_ms),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.mono_ms.fetch_add(ms, Ordering::SeqCst);
        self.unix_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.mono_ms.load(Ordering::SeqCst),
            unix_ms: self.unix_ms.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_both_readings() {
        let clock = ManualClock::new(1_700_000_000_000);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            clock.now(),
            Now {
                mono_ms: 1500,
                unix_ms: 1_700_000_001_500
            }
        );
        assert_eq!(clock.now().unix_secs(), 1_700_000_001);
    }

    #[test]
    fn system_clock_is_monotonic_and_after_2020() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b.mono_ms >= a.mono_ms);
        assert!(a.unix_ms > 1_577_836_800_000);
    }
}
