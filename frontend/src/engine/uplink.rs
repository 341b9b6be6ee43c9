//! How much video we send to each peer. In a mesh every other participant gets its own copy of
//! our camera, so the uplink is shared: the more people, the smaller each copy. Quality trouble
//! on one connection lowers only that connection further.
//!
//! The budget (also in the README): about 1.5 Mbit/s of video in total from one participant,
//! which a home uplink of 5 Mbit/s carries with room for audio (~40 kbit/s per peer), the
//! others' traffic and TCP.
//!
//! | other people | per copy (max) | resolution (from 640×480 or 1280×720) |
//! |---|---|---|
//! | 1 | 1,500 kbit/s | full |
//! | 2 | 750 kbit/s | full |
//! | 3 | 500 kbit/s | ÷1.5 |
//! | 4–7 | 300 kbit/s | ÷2 |

/// A cap on one outgoing video copy: `RTCRtpEncodingParameters.maxBitrate` and
/// `scaleResolutionDownBy`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoLimit {
    pub max_bitrate_bps: u32,
    pub scale_down_by: f64,
}

/// Total video we send, in bits per second.
pub const VIDEO_BUDGET_BPS: u32 = 1_500_000;

/// The cap on each copy when `others` people get one.
pub fn for_room(others: usize) -> VideoLimit {
    match others {
        0 | 1 => VideoLimit {
            max_bitrate_bps: VIDEO_BUDGET_BPS,
            scale_down_by: 1.0,
        },
        2 => VideoLimit {
            max_bitrate_bps: VIDEO_BUDGET_BPS / 2,
            scale_down_by: 1.0,
        },
        3 => VideoLimit {
            max_bitrate_bps: VIDEO_BUDGET_BPS / 3,
            scale_down_by: 1.5,
        },
        _ => VideoLimit {
            max_bitrate_bps: 300_000,
            scale_down_by: 2.0,
        },
    }
}

/// The cap after quality trouble on one connection: half the bitrate and a further halving of
/// the resolution per step, down to a floor that still shows a face.
pub fn reduced(limit: VideoLimit, steps: u8) -> VideoLimit {
    let mut out = limit;
    for _ in 0..steps {
        out.max_bitrate_bps = (out.max_bitrate_bps / 2).max(150_000);
        out.scale_down_by = (out.scale_down_by * 2.0).min(4.0);
    }
    out
}

/// A screen share: legible text matters more than motion.
pub const SCREEN_MAX_BITRATE_BPS: u32 = 1_200_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_never_exceeded() {
        for others in 1..=7usize {
            let limit = for_room(others);
            let total = limit.max_bitrate_bps as usize * others;
            assert!(
                total <= VIDEO_BUDGET_BPS as usize * 3 / 2,
                "{others}: {total}"
            );
            assert!(limit.max_bitrate_bps >= 300_000);
        }
        assert!(for_room(3).max_bitrate_bps < for_room(2).max_bitrate_bps);
    }

    #[test]
    fn reductions_have_a_floor() {
        let low = reduced(for_room(4), 5);
        assert_eq!(low.max_bitrate_bps, 150_000);
        assert_eq!(low.scale_down_by, 4.0);
        assert_eq!(reduced(for_room(1), 0), for_room(1));
    }
}
