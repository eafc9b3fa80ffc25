//! Data-quality alerts: what the anomaly rules cannot see because the data itself is wrong.
//! Each is its own alert kind (the alert's `query`), judged per motor from its own readings and
//! the processing time passed in (no clock is read here):
//!
//! - `silent`: no reading for `silent_intervals` of the motor's own reporting interval (an
//!   average of its event-time gaps), and at least `min_silence`, by processing time, so a
//!   motor on a quiet partition is seen too. Closes at its next reading. A gap that long in
//!   event time that the processing time never saw (the node was down, a gateway buffered, a
//!   replay of history) is opened and closed at the reading that ends it, scored in seconds.
//! - `sensor_dropout.<channel>`: a channel the motor reported stays empty for
//!   `dropout_readings` readings in a row. Closes when it reports again.
//! - `stuck_sensor.<channel>`: a channel reports exactly the same value `stuck_readings` times
//!   in a row (a live sensor's noise never repeats that long). Closes when it moves.
//! - `clock_skew`: the motor's event times run ahead of or behind those of the other motors in
//!   the same batches by more than `skew_bound` on average (per batch, the motor's mean event
//!   time against the median of the motors' means: readings read together, so consumer lag
//!   and a backlog's span cancel out). Needs batches of at least 5 motors. Closes below half
//!   the bound.
//!
//! The score is what was measured: seconds silent, readings empty or unchanged, seconds of
//! skew. Every event is a warning; the alert id is `xxh3_64(kind, motor, opening time)` as for
//! the rules' alerts. The state is per motor and bounded (a few hundred bytes, see
//! [`MotorQuality`]) and goes with the motor's partition in its checkpoint ([`QualityMonitor::
//! snapshot`]): the new owner keeps its open alerts, averages and runs, and starts its silence
//! clock when it takes the motor over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};
use tessera_core::Channel;

use crate::alerts::{AlertEvent, AlertState, Severity, alert_id};

/// When data is judged wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// A motor is silent after this many of its own reporting intervals without a reading...
    pub silent_intervals: u32,
    /// ...and never before this long (ms).
    pub min_silence_ms: i64,
    /// A channel empty this many readings in a row (after it reported) has dropped out.
    pub dropout_readings: u32,
    /// A channel with the same value this many readings in a row is stuck.
    pub stuck_readings: u32,
    /// A motor whose clock is off from its batch-mates' by more than this (ms) is skewed.
    pub skew_bound_ms: i64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            silent_intervals: 5,
            min_silence_ms: 30_000,
            dropout_readings: 20,
            stuck_readings: 60,
            skew_bound_ms: 30_000,
        }
    }
}

/// Batches with fewer motors than this tell nothing about one motor's clock.
const SKEW_MIN_MOTORS: usize = 5;
/// Weight of the newest gap or skew in the motor's running averages.
const EWMA: f64 = 0.1;
/// Readings of a motor (in batches that could be judged) before its skew is judged.
const SKEW_MIN_READINGS: u32 = 10;

/// One channel's run of equal or missing values (16 bytes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ChannelRun {
    /// The last value's bits folded to 32 ([`fold`]), once the channel `reported` one: two
    /// different values fold alike once in 2³² comparisons, which a run of repeats (tens
    /// of readings) does not notice.
    last: u32,
    same: u32,
    missing: u32,
    reported: bool,
}

/// `v`'s 64 bits folded to 32 (high half XOR low half).
fn fold(v: f64) -> u32 {
    let bits = v.to_bits();
    (bits >> 32) as u32 ^ bits as u32
}

/// An open data-quality alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    id: String,
    opened_ms: i64,
    peak: f64,
}

/// What is kept per motor: 7 × 16 bytes of channel runs, a few numbers, and its open alerts
/// (boxed: most motors have none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MotorQuality {
    /// Shared by every motor of the site.
    site: Arc<str>,
    last_seen_ms: i64,
    last_event_ms: i64,
    interval_ms: f64,
    gaps: u32,
    skew_ms: f64,
    skew_samples: u32,
    channels: [ChannelRun; Channel::ALL.len()],
    #[allow(clippy::box_collection, reason = "8 bytes for a motor with none open, where a map takes 24")]
    open: Option<Box<BTreeMap<String, Open>>>,
}

impl MotorQuality {
    fn is_open(&self, kind: &str) -> bool {
        self.open.as_ref().is_some_and(|o| o.contains_key(kind))
    }

    fn open_count(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.len())
    }
}

/// The data-quality judge of one engine's motors.
#[derive(Debug, Clone)]
pub struct QualityMonitor {
    config: QualityConfig,
    /// By the motor's shared id ([`crate::ids`]).
    motors: crate::ids::MotorTable<MotorQuality>,
}

impl QualityMonitor {
    /// A judge with no motors yet.
    pub fn new(config: QualityConfig) -> Self {
        Self { config, motors: crate::ids::MotorTable::new() }
    }

    /// Takes in a batch of readings (the telemetry schema) that arrived at `now_ms`; the alert
    /// events it opens or closes.
    pub fn observe(&mut self, batch: &RecordBatch, now_ms: i64) -> Vec<AlertEvent> {
        let Some((motors, sites, ts)) = crate::schema::keys(batch) else { return Vec::new() };
        let channels: Vec<_> = Channel::ALL.iter().map(|c| crate::schema::channel_values(batch, *c)).collect();
        let means = motor_means(motors, ts);
        let mut events = Vec::new();
        for row in 0..batch.num_rows() {
            let motor = motors.value(row);
            let event_ms = ts.value(row);
            let q = self.motors.entry(motor, || MotorQuality {
                site: crate::ids::shared(sites.value(row)),
                last_seen_ms: now_ms,
                last_event_ms: event_ms,
                interval_ms: 0.0,
                gaps: 0,
                skew_ms: 0.0,
                skew_samples: 0,
                channels: Default::default(),
                open: None,
            });
            let gap = (event_ms - q.last_event_ms) as f64;
            // A silence the processing time never saw (the node was down, a gateway buffered,
            // a replay of history): known at the reading that ends it, opened and closed there.
            let silent_after =
                (q.interval_ms * f64::from(self.config.silent_intervals)).max(self.config.min_silence_ms as f64);
            if q.gaps > 0 && gap > silent_after && !q.is_open("silent") {
                open(q, motor, "silent".into(), gap / 1000.0, event_ms, now_ms, &mut events);
            }
            if gap > 0.0 {
                q.interval_ms = if q.gaps == 0 { gap } else { q.interval_ms + EWMA * (gap - q.interval_ms) };
                q.gaps += 1;
            }
            q.last_event_ms = q.last_event_ms.max(event_ms);
            q.last_seen_ms = now_ms;
            close(q, motor, "silent", event_ms, now_ms, &mut events);
            for (c, values) in channels.iter().enumerate() {
                let value = values.as_ref().and_then(|v| v.is_valid(row).then(|| v.value(row)));
                let (dropout, stuck) = &channel_kinds()[c];
                let run = &mut q.channels[c];
                match value {
                    None => {
                        run.missing += 1;
                        run.same = 0;
                        if run.reported && run.missing >= self.config.dropout_readings {
                            let missing = f64::from(run.missing);
                            open(q, motor, dropout.clone(), missing, event_ms, now_ms, &mut events);
                        }
                    }
                    Some(v) => {
                        let v = fold(v);
                        run.same = if run.reported && run.last == v { run.same + 1 } else { 0 };
                        run.last = v;
                        run.missing = 0;
                        run.reported = true;
                        let same = run.same;
                        close(q, motor, dropout, event_ms, now_ms, &mut events);
                        // `same` counts repeats: the value was read `same + 1` times in a row.
                        if same + 1 >= self.config.stuck_readings {
                            let score = f64::from(same + 1);
                            open(q, motor, stuck.clone(), score, event_ms, now_ms, &mut events);
                        } else {
                            close(q, motor, stuck, event_ms, now_ms, &mut events);
                        }
                    }
                }
            }
        }
        if let Some((reference, means)) = means {
            let bound = self.config.skew_bound_ms as f64;
            let mut judged: Vec<(&str, (f64, u32))> = means.into_iter().collect();
            judged.sort_by(|a, b| a.0.cmp(b.0));
            for (motor, (mean, readings)) in judged {
                let Some(q) = self.motors.get_mut(motor) else { continue };
                let skew = mean - reference;
                q.skew_ms = if q.skew_samples == 0 { skew } else { q.skew_ms + EWMA * (skew - q.skew_ms) };
                q.skew_samples = q.skew_samples.saturating_add(readings);
                let at = q.last_event_ms;
                if q.skew_samples >= SKEW_MIN_READINGS && q.skew_ms.abs() > bound {
                    open(q, motor, "clock_skew".into(), q.skew_ms.abs() / 1000.0, at, now_ms, &mut events);
                } else if q.skew_ms.abs() < bound / 2.0 {
                    close(q, motor, "clock_skew", at, now_ms, &mut events);
                }
            }
        }
        events
    }

    /// Advances processing time to `now_ms`: the motors silent for too long.
    pub fn tick(&mut self, now_ms: i64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (motor, q) in self.motors.iter_mut() {
            let silent_for = now_ms - q.last_seen_ms;
            let by_interval =
                if q.gaps == 0 { 0 } else { (q.interval_ms * f64::from(self.config.silent_intervals)) as i64 };
            if silent_for > by_interval.max(self.config.min_silence_ms) && !q.is_open("silent") {
                let at = q.last_event_ms;
                open(q, motor, "silent".into(), silent_for as f64 / 1000.0, at, now_ms, &mut events);
            }
        }
        events.sort_by(|a, b| a.motor_id.cmp(&b.motor_id));
        events
    }

    /// The state of the motors `include` accepts, for a checkpoint (sorted by motor).
    pub fn snapshot(&self, include: &dyn Fn(&str) -> bool) -> Vec<(String, MotorQuality)> {
        let mut motors: Vec<(String, MotorQuality)> =
            self.motors.iter().filter(|(m, _)| include(m)).map(|(m, q)| (m.to_string(), q.clone())).collect();
        motors.sort_by(|a, b| a.0.cmp(&b.0));
        motors
    }

    /// Takes over [`Self::snapshot`]'s motors at processing time `now_ms` (a restart, or a
    /// partition handed over): their silence is counted from now, not from when the former
    /// owner last saw them.
    pub fn adopt(&mut self, motors: Vec<(String, MotorQuality)>, now_ms: i64) {
        for (motor, mut q) in motors {
            q.last_seen_ms = now_ms;
            q.site = crate::ids::shared(&q.site);
            self.motors.insert(crate::ids::shared(&motor), q);
        }
    }

    /// Forgets every motor `drop` accepts (their partition was handed over); how many.
    pub fn drop_motors(&mut self, drop: &dyn Fn(&str) -> bool) -> usize {
        let before = self.motors.len();
        self.motors.retain(|m, _| !drop(m));
        before - self.motors.len()
    }

    /// Open data-quality alerts.
    pub fn open_count(&self) -> usize {
        self.motors.values().map(MotorQuality::open_count).sum()
    }
}

/// Each motor's mean event time in the batch (and its readings there), and the median of those
/// means (the batch's reference time), if the batch has enough motors to say.
type Means<'a> = HashMap<&'a str, (f64, u32)>;
fn motor_means<'a>(
    motors: &'a datafusion::arrow::array::StringArray,
    ts: &datafusion::arrow::array::TimestampMillisecondArray,
) -> Option<(f64, Means<'a>)> {
    let mut sums: HashMap<&str, (f64, u32)> = HashMap::new();
    for row in 0..motors.len() {
        let s = sums.entry(motors.value(row)).or_insert((0.0, 0));
        *s = (s.0 + ts.value(row) as f64, s.1 + 1);
    }
    if sums.len() < SKEW_MIN_MOTORS {
        return None;
    }
    let means: Means = sums.into_iter().map(|(m, (sum, n))| (m, (sum / f64::from(n), n))).collect();
    let mut values: Vec<f64> = means.values().map(|(mean, _)| *mean).collect();
    let mid = values.len() / 2;
    let reference = *values.select_nth_unstable_by(mid, f64::total_cmp).1;
    Some((reference, means))
}

/// Each channel's alert kinds, `sensor_dropout.<channel>` and `stuck_sensor.<channel>`, made
/// once (every reading of every channel looks them up).
fn channel_kinds() -> &'static [(String, String)] {
    static KINDS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    KINDS.get_or_init(|| {
        Channel::ALL
            .iter()
            .map(|c| (format!("sensor_dropout.{}", c.name()), format!("stuck_sensor.{}", c.name())))
            .collect()
    })
}

/// Opens alert `kind` for the motor (or raises its peak) with `score`.
fn open(
    q: &mut MotorQuality,
    motor: &str,
    kind: String,
    score: f64,
    at_ms: i64,
    now_ms: i64,
    events: &mut Vec<AlertEvent>,
) {
    if let Some(open) = q.open.as_mut().and_then(|o| o.get_mut(&kind)) {
        open.peak = open.peak.max(score);
        return;
    }
    let id = alert_id(&kind, motor, at_ms);
    q.open.get_or_insert_default().insert(kind.clone(), Open { id: id.clone(), opened_ms: at_ms, peak: score });
    events.push(event(q, motor, kind, AlertState::Open, id, score, score, at_ms, at_ms, now_ms));
}

/// Closes alert `kind` for the motor, if open.
fn close(q: &mut MotorQuality, motor: &str, kind: &str, at_ms: i64, now_ms: i64, events: &mut Vec<AlertEvent>) {
    let Some(open) = q.open.as_mut().and_then(|o| o.remove(kind)) else { return };
    if q.open.as_ref().is_some_and(|o| o.is_empty()) {
        q.open = None;
    }
    let (id, peak, opened_ms) = (open.id, open.peak, open.opened_ms);
    events.push(event(q, motor, kind.to_string(), AlertState::Close, id, peak, peak, at_ms, opened_ms, now_ms));
}

#[allow(clippy::too_many_arguments)]
fn event(
    q: &MotorQuality,
    motor: &str,
    kind: String,
    state: AlertState,
    id: String,
    score: f64,
    peak: f64,
    at_ms: i64,
    opened_ms: i64,
    now_ms: i64,
) -> AlertEvent {
    AlertEvent {
        alert_id: id,
        query: kind,
        motor_id: motor.to_string(),
        site_id: q.site.to_string(),
        state,
        severity: Severity::Warning,
        score: Some(score),
        peak_score: peak,
        window_start_ms: at_ms,
        window_end_ms: at_ms,
        opened_window_start_ms: opened_ms,
        emitted_at_ms: now_ms,
        features: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// `motors` motors, one reading each at `t_ms` (+ that motor's `skew`), channel values from
    /// `value(motor, channel)`.
    fn batch(
        motors: u32,
        t_ms: i64,
        skew: impl Fn(u32) -> i64,
        value: impl Fn(u32, usize) -> Option<f64>,
    ) -> RecordBatch {
        let mut fields = vec![Field::new("motor_id", DataType::Utf8, false), Field::new("ts", DataType::Int64, false)];
        fields.extend(Channel::ALL.iter().map(|c| Field::new(c.name(), DataType::Float64, true)));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values((0..motors).map(|m| format!("M{m}")))),
            Arc::new(Int64Array::from_iter_values((0..motors).map(|m| t_ms + skew(m)))),
        ];
        for c in 0..Channel::ALL.len() {
            columns.push(Arc::new(Float64Array::from_iter((0..motors).map(|m| value(m, c)))));
        }
        let raw = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        crate::conform::to_telemetry(&raw, &[], 0).unwrap()
    }

    fn kinds(events: &[AlertEvent]) -> Vec<(String, String, AlertState)> {
        events.iter().map(|e| (e.motor_id.clone(), e.query.clone(), e.state)).collect()
    }

    /// A noisy value no two readings share.
    fn live(m: u32, c: usize, t: i64) -> Option<f64> {
        Some(f64::from(m) * 10.0 + c as f64 + (t as f64 * 0.37).sin())
    }

    #[test]
    fn a_silent_motor_is_seen_by_processing_time_and_closes_when_it_reports() {
        let mut q = QualityMonitor::new(QualityConfig::default());
        for s in 0..10 {
            let t = s * 1000;
            assert!(q.observe(&batch(6, t, |_| 0, |m, c| live(m, c, t)), t).is_empty());
        }
        // M5 stops at 9 s; the others report until 60 s.
        for s in 10..60 {
            let t = s * 1000;
            let events = q.observe(&batch(5, t, |_| 0, |m, c| live(m, c, t)), t);
            assert!(events.is_empty(), "{events:?}");
            let ticked = q.tick(t);
            let expect_silent = t - 9000 > 30_000;
            assert_eq!(!ticked.is_empty(), expect_silent && t - 1000 - 9000 <= 30_000, "at {t}: {ticked:?}");
        }
        assert_eq!(q.open_count(), 1);
        // The whole partition quiet: every motor silent 30 s after its last reading.
        let later = q.tick(60_000 + 31_000);
        assert_eq!(later.len(), 5, "{later:?}");
        let back = q.observe(&batch(6, 100_000, |_| 0, |m, c| live(m, c, 100_000)), 100_000);
        assert_eq!(back.iter().filter(|e| e.state == AlertState::Close && e.query == "silent").count(), 6);
        assert_eq!(q.open_count(), 0);
    }

    #[test]
    fn a_silence_the_processing_time_never_saw_is_alerted_at_the_reading_that_ends_it() {
        // A replay: readings every minute of event time, arriving together; M0 misses 2 hours.
        let mut q = QualityMonitor::new(QualityConfig::default());
        let mut events = Vec::new();
        for s in 0..300i64 {
            let t = s * 60_000;
            let motors = if (100..220).contains(&s) { 5 } else { 6 };
            events.extend(q.observe(&batch(motors, t, |_| 0, |m, c| live(m, c, t)), 1_000));
        }
        let silent: Vec<_> = events.iter().filter(|e| e.query == "silent").collect();
        assert_eq!(silent.len(), 2, "opened and closed at once: {silent:?}");
        // M5 is the one left out (motors 0..5 report); known at its reading at 220 min.
        assert!(silent.iter().all(|e| e.motor_id == "M5" && e.window_start_ms == 220 * 60_000));
        assert_eq!((silent[0].state, silent[1].state), (AlertState::Open, AlertState::Close));
        assert_eq!(silent[0].score, Some(121.0 * 60.0), "seconds without a reading");
        assert_eq!(q.open_count(), 0);
    }

    #[test]
    fn a_motor_handed_over_keeps_its_open_alert_and_its_silence_counts_from_the_take_over() {
        let mut old = QualityMonitor::new(QualityConfig::default());
        let temperature = Channel::TemperatureC as usize;
        for s in 0..40i64 {
            let t = s * 1000;
            old.observe(
                &batch(6, t, |_| 0, |m, c| if m == 1 && c == temperature && s >= 10 { None } else { live(m, c, t) }),
                t,
            );
        }
        assert_eq!(old.open_count(), 1, "M1's dropout");
        let bytes = crate::checkpoint::to_versioned_bytes(&old.snapshot(&|m| m == "M1")).unwrap();
        let mut new = QualityMonitor::new(QualityConfig::default());
        new.adopt(crate::checkpoint::from_versioned_bytes(&bytes).unwrap(), 500_000);
        assert_eq!(new.open_count(), 1, "the open alert came along");
        assert!(new.tick(520_000).is_empty(), "silence counts from the take-over, not from 39 s");
        let back = new.observe(&batch(6, 40_000, |_| 0, |m, c| live(m, c, 40_000)), 521_000);
        assert_eq!(kinds(&back), [("M1".to_string(), "sensor_dropout.temperature_c".to_string(), AlertState::Close)]);
        assert_eq!(back[0].alert_id, alert_id("sensor_dropout.temperature_c", "M1", 29_000), "the same alert closes");
        assert_eq!(new.tick(600_000).len(), 6, "silent 30 s after their last reading here");
    }

    #[test]
    fn dropped_out_and_stuck_sensors_and_a_skewed_clock_are_their_own_alerts() {
        let mut q = QualityMonitor::new(QualityConfig::default());
        let temperature = Channel::TemperatureC as usize;
        let mut events = Vec::new();
        for s in 0..100i64 {
            let t = s * 1000;
            // M1's temperature empty from 20 s; M2's speed stuck at 1480 from 10 s; M3's clock
            // 2 minutes ahead; M4 stuck for only 50 readings.
            let value = |m: u32, c: usize| match (m, c) {
                (1, c) if c == temperature && s >= 20 => None,
                (2, 6) if s >= 10 => Some(1480.0),
                (4, 6) if (10..60).contains(&s) => Some(1480.0),
                _ => live(m, c, t),
            };
            events.extend(q.observe(&batch(8, t, |m| if m == 3 { 120_000 } else { 0 }, value), t));
        }
        let opened: Vec<_> = kinds(&events).into_iter().filter(|(_, _, s)| *s == AlertState::Open).collect();
        assert_eq!(
            opened,
            [
                ("M3".to_string(), "clock_skew".to_string(), AlertState::Open),
                ("M1".into(), "sensor_dropout.temperature_c".into(), AlertState::Open),
                ("M2".into(), "stuck_sensor.speed_rpm".into(), AlertState::Open),
            ]
        );
        let skew = events.iter().find(|e| e.query == "clock_skew").unwrap();
        assert!((100.0..=120.0).contains(&skew.score.unwrap()), "seconds of skew: {skew:?}");
        // Back to normal: each closes.
        let t = 100_000;
        let closed = q.observe(&batch(8, t, |_| 0, |m, c| live(m, c, t)), t);
        assert_eq!(closed.iter().filter(|e| e.state == AlertState::Close).count(), 2, "dropout and stuck: {closed:?}");
        for s in 101..140 {
            q.observe(&batch(8, s * 1000, |_| 0, |m, c| live(m, c, s * 1000)), s * 1000);
        }
        assert_eq!(q.open_count(), 0, "the clock closes once its average is back under half the bound");
    }
}
