//! A latency histogram that worker processes fill and the coordinator merges: 1 µs buckets up to
//! 10 ms, 100 µs buckets up to 1 s, 10 ms buckets up to 100 s, and the exact maximum.

use serde::{Deserialize, Serialize};

const FINE_US: u64 = 10_000;
const MID_STEP_US: u64 = 100;
const MID_END_US: u64 = 1_000_000;
const COARSE_STEP_US: u64 = 10_000;
const COARSE_END_US: u64 = 100_000_000;
const MID_FIRST: u64 = FINE_US;
const COARSE_FIRST: u64 = MID_FIRST + (MID_END_US - FINE_US) / MID_STEP_US;
const BUCKETS: usize = (COARSE_FIRST + (COARSE_END_US - MID_END_US) / COARSE_STEP_US + 1) as usize;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

/// The wire form: only the buckets that are not empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SparseHistogram {
    pub buckets: Vec<(u32, u64)>,
    pub max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    let index = if us < FINE_US {
        us
    } else if us < MID_END_US {
        MID_FIRST + (us - FINE_US) / MID_STEP_US
    } else {
        COARSE_FIRST + (us.min(COARSE_END_US) - MID_END_US) / COARSE_STEP_US
    };
    index as usize
}

/// The lower edge of a bucket, in µs.
fn bucket_floor_us(index: usize) -> u64 {
    let index = index as u64;
    if index < MID_FIRST {
        index
    } else if index < COARSE_FIRST {
        FINE_US + (index - MID_FIRST) * MID_STEP_US
    } else {
        MID_END_US + (index - COARSE_FIRST) * COARSE_STEP_US
    }
}

impl Histogram {
    pub fn record_ns(&mut self, ns: u64) {
        self.counts[bucket(ns / 1_000)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1_000.0
    }

    /// The value at quantile `q` (0..=1), in µs (the lower edge of its bucket; the maximum is
    /// exact).
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return (bucket_floor_us(index) as f64).min(self.max_us());
            }
        }
        self.max_us()
    }

    pub fn merge(&mut self, other: &SparseHistogram) {
        for &(index, count) in &other.buckets {
            if let Some(slot) = self.counts.get_mut(index as usize) {
                *slot += count;
                self.total += count;
            }
        }
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn to_sparse(&self) -> SparseHistogram {
        SparseHistogram {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (i as u32, c))
                .collect(),
            max_ns: self.max_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_merge() {
        let mut a = Histogram::default();
        for us in 1..=100u64 {
            a.record_ns(us * 1_000 + 500);
        }
        assert_eq!(a.quantile_us(0.5), 50.0);
        assert_eq!(a.quantile_us(0.99), 99.0);
        assert_eq!(a.max_us(), 100.5);
        let mut b = Histogram::default();
        b.record_ns(25_000_000);
        b.record_ns(2_345_000_000);
        b.record_ns(500_000_000_000); // beyond the range: the last bucket; the max stays exact
        a.merge(&b.to_sparse());
        assert_eq!(a.count(), 103);
        assert_eq!(a.max_us(), 500_000_000.0);
        assert_eq!(a.quantile_us(101.0 / 103.0), 25_000.0);
        assert_eq!(a.quantile_us(102.0 / 103.0), 2_340_000.0);
        assert_eq!(a.quantile_us(1.0), 100_000_000.0);
    }
}
