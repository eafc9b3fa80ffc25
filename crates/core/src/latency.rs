//! A latency histogram that many threads record into without locks, read at scrape time in
//! Prometheus' shape (cumulative buckets, a sum and a count).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 1 ms to 60 s, roughly ×2.5 apart.
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Counts of observed durations per bucket (the last slot counts those above every bound).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of a [`LatencyHistogram`]'s counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative, ascending.
    pub cumulative: Vec<(f64, u64)>,
    /// The sum of every observation, in seconds.
    pub sum_s: f64,
    /// Observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S.iter().position(|b| s <= *b).unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let cumulative = LATENCY_BUCKETS_S
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                total += n.load(Relaxed);
                (*bound, total)
            })
            .collect();
        LatencySnapshot { cumulative, sum_s: self.sum_us.load(Relaxed) as f64 / 1e6, count: self.count.load(Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_overflow_counts_only_in_the_total() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 3, 40, 40, 90_000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.cumulative[0], (0.001, 2), "0 ms and 1 ms are at or below 1 ms");
        assert_eq!(s.cumulative[2], (0.005, 3));
        assert_eq!(s.cumulative[5], (0.05, 5));
        assert_eq!(s.cumulative.last().copied(), Some((60.0, 5)), "90 s is above every bound");
        assert!((s.sum_s - 90.084).abs() < 1e-9, "{}", s.sum_s);
    }
}
