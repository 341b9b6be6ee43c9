//! Connection quality from `getStats` samples: pure arithmetic on counters the peer adapter
//! reads every ~2 s. The thresholds are stated in the README.
//!
//! | quality | packet loss (either way) | round-trip time |
//! |---|---|---|
//! | good | < 2 % | < 250 ms |
//! | fair | < 8 % | < 500 ms |
//! | poor | otherwise | otherwise |
//!
//! What we send to one peer is lowered (see `uplink::reduced`) after [`POOR_SAMPLES`] poor
//! samples in a row of what that peer receives from us, and raised again one step after
//! [`GOOD_SAMPLES`] good ones.

/// Poor samples in a row (about 6 s) before we send less to that peer.
pub const POOR_SAMPLES: u32 = 3;
/// Good samples in a row (about 20 s) before we send more again.
pub const GOOD_SAMPLES: u32 = 10;
/// Most reduction steps.
pub const MAX_STEPS: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    Good,
    Fair,
    Poor,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Fair => "fair",
            Quality::Poor => "poor",
        }
    }

    pub fn classify(loss: f64, rtt_ms: Option<f64>) -> Self {
        let rtt = rtt_ms.unwrap_or(0.0);
        if loss < 0.02 && rtt < 250.0 {
            Quality::Good
        } else if loss < 0.08 && rtt < 500.0 {
            Quality::Fair
        } else {
            Quality::Poor
        }
    }
}

/// How media reaches a peer: straight between the two browsers (host or STUN-discovered
/// addresses), or through a TURN relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Direct,
    Relay,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Relay => "relay",
        }
    }
}

/// The kind of the candidates of the selected pair, as `getStats` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

impl CandidateType {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "host" => Some(Self::Host),
            "srflx" => Some(Self::Srflx),
            "prflx" => Some(Self::Prflx),
            "relay" => Some(Self::Relay),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Srflx => "srflx",
            Self::Prflx => "prflx",
            Self::Relay => "relay",
        }
    }
}

/// Cumulative counters from one `getStats` call (what the adapter extracts; no browser types).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSample {
    /// When it was taken (ms, the driver's clock).
    pub at: f64,
    /// The selected candidate pair's current round-trip time.
    pub rtt_ms: Option<f64>,
    pub local_candidate: Option<CandidateType>,
    pub remote_candidate: Option<CandidateType>,
    /// inbound-rtp, all kinds: packets received and lost, bytes received.
    pub packets_received: u64,
    pub packets_lost: u64,
    pub bytes_received: u64,
    /// outbound-rtp, all kinds.
    pub bytes_sent: u64,
    /// remote-inbound-rtp (what the peer reports about our media): fraction lost, 0..1, worst
    /// kind.
    pub remote_fraction_lost: Option<f64>,
    /// The peer's camera video as we decode it.
    pub frame_width: Option<u32>,
    pub frame_height: Option<u32>,
    pub frames_per_second: Option<f64>,
}

/// What the tile's detail view shows.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityView {
    pub quality: Quality,
    pub rtt_ms: Option<f64>,
    /// Loss of what we receive from them, 0..1.
    pub loss_in: f64,
    /// Loss of what they receive from us, 0..1 (as they report it).
    pub loss_out: f64,
    pub bitrate_in_bps: f64,
    pub bitrate_out_bps: f64,
    pub frame_width: Option<u32>,
    pub frame_height: Option<u32>,
    pub frames_per_second: Option<f64>,
    pub local_candidate: Option<CandidateType>,
    pub remote_candidate: Option<CandidateType>,
}

/// Quality tracking for one connection.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    last: Option<StatsSample>,
    poor_out: u32,
    good_out: u32,
    /// How many steps below the room budget we send to this peer.
    pub steps: u8,
}

/// The sending level changed (the caller re-applies what it sends and may tell the person).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adjust {
    Lowered,
    Raised,
}

impl Tracker {
    /// Takes a new sample; returns the view (from the second sample on) and whether to change
    /// what we send.
    pub fn sample(&mut self, sample: StatsSample) -> (Option<QualityView>, Option<Adjust>) {
        let Some(last) = self.last.replace(sample.clone()) else {
            return (None, None);
        };
        let seconds = ((sample.at - last.at) / 1000.0).max(0.001);
        let received = sample
            .packets_received
            .saturating_sub(last.packets_received);
        let lost = sample.packets_lost.saturating_sub(last.packets_lost);
        let loss_in = if received + lost == 0 {
            0.0
        } else {
            lost as f64 / (received + lost) as f64
        };
        let loss_out = sample.remote_fraction_lost.unwrap_or(0.0).clamp(0.0, 1.0);
        let quality = Quality::classify(loss_in.max(loss_out), sample.rtt_ms);
        let out_quality = Quality::classify(loss_out, sample.rtt_ms);
        let mut adjust = None;
        match out_quality {
            Quality::Poor => {
                self.good_out = 0;
                self.poor_out += 1;
                if self.poor_out >= POOR_SAMPLES && self.steps < MAX_STEPS {
                    self.poor_out = 0;
                    self.steps += 1;
                    adjust = Some(Adjust::Lowered);
                }
            }
            Quality::Good => {
                self.poor_out = 0;
                self.good_out += 1;
                if self.good_out >= GOOD_SAMPLES && self.steps > 0 {
                    self.good_out = 0;
                    self.steps -= 1;
                    adjust = Some(Adjust::Raised);
                }
            }
            Quality::Fair => {
                self.poor_out = 0;
                self.good_out = 0;
            }
        }
        let view = QualityView {
            quality,
            rtt_ms: sample.rtt_ms,
            loss_in,
            loss_out,
            bitrate_in_bps: sample.bytes_received.saturating_sub(last.bytes_received) as f64 * 8.0
                / seconds,
            bitrate_out_bps: sample.bytes_sent.saturating_sub(last.bytes_sent) as f64 * 8.0
                / seconds,
            frame_width: sample.frame_width,
            frame_height: sample.frame_height,
            frames_per_second: sample.frames_per_second,
            local_candidate: sample.local_candidate,
            remote_candidate: sample.remote_candidate,
        };
        (Some(view), adjust)
    }

    /// Starts over (a new connection, or an ICE restart).
    pub fn reset(&mut self) {
        self.last = None;
        self.poor_out = 0;
        self.good_out = 0;
    }
}

/// Relay if either end of the selected pair is a relay candidate.
pub fn route(local: Option<CandidateType>, remote: Option<CandidateType>) -> Option<Route> {
    match (local, remote) {
        (None, None) => None,
        (Some(CandidateType::Relay), _) | (_, Some(CandidateType::Relay)) => Some(Route::Relay),
        _ => Some(Route::Direct),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, received: u64, lost: u64, remote_lost: f64, rtt: f64) -> StatsSample {
        StatsSample {
            at,
            rtt_ms: Some(rtt),
            packets_received: received,
            packets_lost: lost,
            bytes_received: received * 1000,
            bytes_sent: (at as u64) * 100,
            remote_fraction_lost: Some(remote_lost),
            local_candidate: Some(CandidateType::Host),
            remote_candidate: Some(CandidateType::Relay),
            ..StatsSample::default()
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(Quality::classify(0.0, Some(20.0)), Quality::Good);
        assert_eq!(Quality::classify(0.03, Some(20.0)), Quality::Fair);
        assert_eq!(Quality::classify(0.0, Some(300.0)), Quality::Fair);
        assert_eq!(Quality::classify(0.10, Some(20.0)), Quality::Poor);
        assert_eq!(Quality::classify(0.0, Some(800.0)), Quality::Poor);
        assert_eq!(Quality::classify(0.0, None), Quality::Good);
    }

    #[test]
    fn rates_and_loss_come_from_differences() {
        let mut t = Tracker::default();
        assert_eq!(t.sample(sample(0.0, 0, 0, 0.0, 10.0)), (None, None));
        let (view, adjust) = t.sample(sample(2000.0, 98, 2, 0.0, 10.0));
        let view = view.unwrap();
        assert!((view.loss_in - 0.02).abs() < 1e-9);
        assert_eq!(view.quality, Quality::Fair);
        assert!((view.bitrate_in_bps - 98.0 * 1000.0 * 8.0 / 2.0).abs() < 1e-6);
        assert_eq!(adjust, None);
        assert_eq!(
            route(view.local_candidate, view.remote_candidate),
            Some(Route::Relay)
        );
    }

    #[test]
    fn sustained_poor_sending_lowers_then_good_raises() {
        let mut t = Tracker::default();
        let mut at = 0.0;
        let mut next = |t: &mut Tracker, remote_lost| {
            at += 2000.0;
            t.sample(sample(at, at as u64, 0, remote_lost, 30.0)).1
        };
        next(&mut t, 0.0);
        assert_eq!(next(&mut t, 0.2), None);
        assert_eq!(next(&mut t, 0.2), None);
        assert_eq!(next(&mut t, 0.2), Some(Adjust::Lowered));
        assert_eq!(t.steps, 1);
        for _ in 0..GOOD_SAMPLES - 1 {
            assert_eq!(next(&mut t, 0.0), None);
        }
        assert_eq!(next(&mut t, 0.0), Some(Adjust::Raised));
        assert_eq!(t.steps, 0);
    }

    #[test]
    fn direct_unless_a_relay_is_involved() {
        assert_eq!(
            route(Some(CandidateType::Host), Some(CandidateType::Srflx)),
            Some(Route::Direct)
        );
        assert_eq!(route(None, None), None);
    }
}
