//! Event-time windows: how a motor's readings are grouped, and the per-motor watermark that
//! says when a window can close.
//!
//! Windows are half-open, `[start_ms, end_ms)`, aligned to the Unix epoch (a 10 s tumbling
//! window starts at a multiple of 10 s), so every node and every restart cuts the same windows.
//! Watermarks are kept per motor: a silent motor or one with a fast clock moves only its own
//! watermark, never another motor's.

use serde::{Deserialize, Serialize};

/// How readings are grouped in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowSpec {
    /// Back-to-back windows of `size_ms`.
    Tumbling {
        /// Window length, ms.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (overlapping when slide < size).
    Hopping {
        /// Window length, ms.
        size_ms: i64,
        /// Distance between window starts, ms.
        slide_ms: i64,
    },
    /// A window per burst of readings, closed by `gap_ms` without a reading.
    Session {
        /// Silence that ends a session, ms.
        gap_ms: i64,
    },
}

/// A window `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First event time inside, ms.
    pub start_ms: i64,
    /// First event time after, ms.
    pub end_ms: i64,
}

/// Why a window spec is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A duration is zero or negative.
    #[error("{field} must be positive, got {value} ms")]
    NotPositive {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A hopping window slides further than it is long, leaving gaps nobody sees.
    #[error("slide_ms ({slide_ms}) must not exceed size_ms ({size_ms})")]
    SlideTooLong {
        /// Window length.
        size_ms: i64,
        /// Slide.
        slide_ms: i64,
    },
}

impl WindowSpec {
    /// Checks the durations.
    pub fn validate(&self) -> Result<(), WindowError> {
        let positive =
            |field, value: i64| if value > 0 { Ok(()) } else { Err(WindowError::NotPositive { field, value }) };
        match *self {
            WindowSpec::Tumbling { size_ms } => positive("size_ms", size_ms),
            WindowSpec::Hopping { size_ms, slide_ms } => {
                positive("size_ms", size_ms)?;
                positive("slide_ms", slide_ms)?;
                if slide_ms > size_ms {
                    return Err(WindowError::SlideTooLong { size_ms, slide_ms });
                }
                Ok(())
            }
            WindowSpec::Session { gap_ms } => positive("gap_ms", gap_ms),
        }
    }

    /// The fixed windows holding event time `ts_ms`, earliest first. Sessions depend on the
    /// neighbouring readings, so they have none here (the window engine merges them).
    pub fn windows_of(&self, ts_ms: i64) -> Vec<Window> {
        match *self {
            WindowSpec::Tumbling { size_ms } => {
                let start = ts_ms - ts_ms.rem_euclid(size_ms);
                vec![Window { start_ms: start, end_ms: start + size_ms }]
            }
            WindowSpec::Hopping { size_ms, slide_ms } => {
                let last_start = ts_ms - ts_ms.rem_euclid(slide_ms);
                let mut windows: Vec<Window> = (0..)
                    .map(|k| last_start - k * slide_ms)
                    .take_while(|start| start + size_ms > ts_ms)
                    .map(|start| Window { start_ms: start, end_ms: start + size_ms })
                    .collect();
                windows.reverse();
                windows
            }
            WindowSpec::Session { .. } => Vec::new(),
        }
    }
}

/// When a motor's windows may close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkPolicy {
    /// How far behind the motor's newest event time a reading may arrive and still count.
    pub allowed_lateness_ms: i64,
    /// After this long (processing time) without a reading, the motor is idle: its open
    /// windows close without waiting for more data.
    pub idle_timeout_ms: i64,
}

/// One motor's event-time progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MotorWatermark {
    /// Newest event time seen, ms.
    max_event_ms: Option<i64>,
    /// Processing time of the last reading, ms.
    last_arrival_ms: i64,
    /// Restored from a checkpoint, and the idle clock not restarted yet: the time its last
    /// reading arrived at a previous process says nothing about how long it has been silent
    /// here. (Not checkpointed: a restored state checkpoints to the same bytes.)
    #[serde(skip)]
    resumed: bool,
}

impl MotorWatermark {
    /// Records a reading with event time `event_ms` that arrived at `arrival_ms`. Returns
    /// false if the reading is too late: older than the watermark before it arrived (its
    /// windows may already be closed; it belongs on the late-data path).
    pub fn observe(&mut self, event_ms: i64, arrival_ms: i64, policy: &WatermarkPolicy) -> bool {
        let on_time = self.watermark(policy).is_none_or(|w| event_ms >= w);
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        self.last_arrival_ms = self.last_arrival_ms.max(arrival_ms);
        self.resumed = false;
        on_time
    }

    /// Newest event time seen, ms (`None` before the first reading).
    pub fn newest_event_ms(&self) -> Option<i64> {
        self.max_event_ms
    }

    /// Event time up to which this motor's data is complete: newest event time minus the
    /// allowed lateness. `None` before the first reading.
    pub fn watermark(&self, policy: &WatermarkPolicy) -> Option<i64> {
        self.max_event_ms.map(|m| m.saturating_sub(policy.allowed_lateness_ms))
    }

    /// True if the motor has been silent for the idle timeout at processing time `now_ms`.
    /// A restored motor is never idle before its idle clock restarted ([`Self::start_idle_clock`]).
    pub fn is_idle(&self, now_ms: i64, policy: &WatermarkPolicy) -> bool {
        self.max_event_ms.is_some()
            && !self.resumed
            && now_ms.saturating_sub(self.last_arrival_ms) >= policy.idle_timeout_ms
    }

    /// Marks the motor as restored from a checkpoint: its silence is measured from when this
    /// process starts looking ([`Self::start_idle_clock`]). not from its last reading at the
    /// process that wrote the checkpoint. Otherwise a restart longer than the idle timeout
    /// would close every restored window at once, and the readings read again after the
    /// restore (which belong in those windows) would all be late.
    pub fn mark_resumed(&mut self) {
        self.resumed = true;
    }

    /// Starts a restored motor's idle clock at `now_ms` (no effect on any other motor).
    pub fn start_idle_clock(&mut self, now_ms: i64) {
        if self.resumed {
            self.resumed = false;
            self.last_arrival_ms = self.last_arrival_ms.max(now_ms);
        }
    }

    /// True if window `w` can close: the watermark passed its end, or the motor is idle.
    pub fn closes(&self, w: &Window, now_ms: i64, policy: &WatermarkPolicy) -> bool {
        self.watermark(policy).is_some_and(|wm| wm >= w.end_ms) || self.is_idle(now_ms, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start_ms: i64, end_ms: i64) -> Window {
        Window { start_ms, end_ms }
    }

    #[test]
    fn tumbling_windows_align_to_the_epoch() {
        let spec = WindowSpec::Tumbling { size_ms: 10_000 };
        assert_eq!(spec.windows_of(0), [w(0, 10_000)]);
        assert_eq!(spec.windows_of(9_999), [w(0, 10_000)]);
        assert_eq!(spec.windows_of(10_000), [w(10_000, 20_000)]);
        assert_eq!(spec.windows_of(-1), [w(-10_000, 0)], "negative times floor, not truncate");
    }

    #[test]
    fn hopping_windows_overlap() {
        let spec = WindowSpec::Hopping { size_ms: 10_000, slide_ms: 5_000 };
        assert_eq!(spec.windows_of(12_000), [w(5_000, 15_000), w(10_000, 20_000)]);
        assert_eq!(spec.windows_of(10_000), [w(5_000, 15_000), w(10_000, 20_000)]);
        let thirds = WindowSpec::Hopping { size_ms: 30, slide_ms: 10 };
        assert_eq!(thirds.windows_of(25), [w(0, 30), w(10, 40), w(20, 50)]);
        assert!(WindowSpec::Session { gap_ms: 5 }.windows_of(3).is_empty());
    }

    #[test]
    fn specs_are_validated() {
        assert_eq!(
            WindowSpec::Tumbling { size_ms: 0 }.validate(),
            Err(WindowError::NotPositive { field: "size_ms", value: 0 })
        );
        assert_eq!(
            WindowSpec::Hopping { size_ms: 10, slide_ms: 20 }.validate(),
            Err(WindowError::SlideTooLong { size_ms: 10, slide_ms: 20 })
        );
        assert!(WindowSpec::Session { gap_ms: 1 }.validate().is_ok());
    }

    #[test]
    fn watermarks_are_per_motor_with_lateness_and_idle_timeout() {
        let policy = WatermarkPolicy { allowed_lateness_ms: 2_000, idle_timeout_ms: 30_000 };
        let mut m = MotorWatermark::default();
        assert_eq!(m.watermark(&policy), None);
        assert!(m.observe(10_000, 100, &policy));
        assert_eq!(m.watermark(&policy), Some(8_000));
        assert!(m.observe(8_500, 200, &policy), "within the allowed lateness");
        assert!(!m.observe(7_999, 300, &policy), "behind the watermark: too late");
        assert_eq!(m.watermark(&policy), Some(8_000), "a late reading does not move the watermark back");

        let window = w(0, 10_000);
        assert!(!m.closes(&window, 1_000, &policy));
        assert!(m.observe(12_000, 1_100, &policy));
        assert!(m.closes(&window, 1_100, &policy), "watermark 10 000 reached the window's end");
        let next = w(10_000, 20_000);
        assert!(!m.closes(&next, 31_000, &policy));
        assert!(m.closes(&next, 31_100, &policy), "idle for 30 s closes it anyway");
    }
}
