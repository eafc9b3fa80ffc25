//! The memory budget (`memory_budget_mb`): when to pause consumption because the process's
//! resident memory is near the budget, with hysteresis, and without ever pausing for good.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::metrics::IngestMetrics;

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`); `None` where
/// that is not readable.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// The memory budget: checked every 50 ms; at 90 % of it the consumer pauses (what is in flight
/// still lands, hence the margin) until the process is back under 80 % of it, or until nothing
/// is in flight any more: then the memory is state, not input, and pausing cannot free it (it
/// would stall the node for good), so consumption goes on and a warning says so. That level is
/// remembered as the state's floor: the consumer pauses again only when input in flight adds
/// another 5 % of the budget on top of it (or once memory fell under 80 %), never every check,
/// which would pause and resume the partitions (dropping librdkafka's prefetched messages each
/// time) faster than anything is consumed.
pub(super) struct MemoryBudget {
    limit: Option<u64>,
    over: bool,
    /// Memory found to be state (over the threshold with nothing in flight).
    state_floor: Option<u64>,
    checked: Instant,
}

impl MemoryBudget {
    /// A budget of `mb` MiB; 0: no budget.
    pub(super) fn new(mb: u64) -> Self {
        Self { limit: (mb > 0).then_some(mb << 20), over: false, state_floor: None, checked: Instant::now() }
    }

    /// Whether to pause now; `idle`: nothing consumed is still in flight.
    pub(super) fn over(&mut self, metrics: &IngestMetrics, idle: impl FnOnce() -> bool) -> bool {
        if self.limit.is_none() || self.checked.elapsed() < Duration::from_millis(50) {
            return self.over;
        }
        self.checked = Instant::now();
        let Some(rss) = resident_bytes() else { return false };
        metrics.peak_rss_bytes.fetch_max(rss, Relaxed);
        self.step(rss, idle, metrics)
    }

    fn step(&mut self, rss: u64, idle: impl FnOnce() -> bool, metrics: &IngestMetrics) -> bool {
        let Some(limit) = self.limit else { return false };
        let was_over = self.over;
        if rss <= limit / 10 * 8 {
            self.state_floor = None;
        }
        let pause_at = (limit / 10 * 9).max(self.state_floor.map_or(0, |floor| floor + limit / 20));
        self.over = if was_over { rss > limit / 10 * 8 } else { rss > pause_at };
        if self.over && !was_over {
            metrics.memory_pauses.fetch_add(1, Relaxed);
            tracing::warn!(rss_mb = rss >> 20, budget_mb = limit >> 20, "near the memory budget: pausing consumption");
        } else if self.over && idle() {
            tracing::warn!(
                rss_mb = rss >> 20,
                budget_mb = limit >> 20,
                "over the memory budget with nothing in flight: the state fills it; consuming on"
            );
            self.state_floor = Some(rss);
            self.over = false;
        }
        self.over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget pauses at 90 %, resumes under 80 %, and never pauses for good: over it with
    /// nothing in flight, consumption goes on.
    #[test]
    fn the_memory_budget_pauses_with_hysteresis_and_never_for_good() {
        let metrics = IngestMetrics::default();
        let mut budget = MemoryBudget::new(100);
        let mb = |n: u64| n << 20;
        let busy = || false;
        assert!(!budget.step(mb(89), busy, &metrics));
        assert!(budget.step(mb(91), busy, &metrics), "pauses at 90 %");
        assert!(budget.step(mb(85), busy, &metrics), "stays paused above 80 %");
        assert!(!budget.step(mb(79), busy, &metrics), "resumes under 80 %");
        assert!(budget.step(mb(95), busy, &metrics));
        assert!(!budget.step(mb(95), || true, &metrics), "nothing in flight: pausing cannot help");
        assert!(!budget.step(mb(96), busy, &metrics), "the state's floor is not paused for again");
        assert!(budget.step(mb(101), busy, &metrics), "5 % of input on top of the state is");
        assert!(!budget.step(mb(99), || true, &metrics), "a new floor");
        assert!(!budget.step(mb(70), busy, &metrics), "under 80 %: the floor is forgotten");
        assert!(budget.step(mb(91), busy, &metrics), "and 90 % pauses again");
        assert_eq!(metrics.memory_pauses.load(Relaxed), 4);
        assert!(!MemoryBudget::new(0).step(mb(10_000), busy, &metrics), "no budget, no pause");
    }
}
