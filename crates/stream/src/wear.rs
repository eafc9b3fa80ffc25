//! Wear: slow degradation over days, seen coming. Per motor and vibration channel, on event time
//! (so the same at any sampling rate):
//!
//! - an early-life **baseline**: the mean over the motor's first `baseline` of readings;
//! - a **level**: an average of the readings with a time constant of `level` (an hour by
//!   default), so noise and single spikes do not count;
//! - a **trend**: the least-squares slope of the level, sampled every `sample` over the last
//!   `trend_samples` samples (24 hours by default: a whole daily cycle of load and ambient, so
//!   the day does not read as a trend);
//! - the **zone** of the level by ISO 20816 (10816-3): velocity RMS boundaries A/B, B/C and C/D
//!   of the motor's machine class, in mm/s (the channel's unit): the registry's for that motor
//!   ([`MotorClasses`], kept current by the node), else the configured one;
//! - the **time to the limit** (the C/D boundary, where damage is expected): how long the
//!   trend takes the level there.
//!
//! Beside vibration, the **temperature rise over load**: over the early life (at least a day, so
//! the fit sees the day's loads), temperature is fitted against current² (the copper losses) by
//! least squares; afterwards the rise over what the load explains gets a level averaged over at
//! least a day (an ambient day is no rise), the same trend and the time to its limit
//! (`rise_limit_c`, 15 °C by default: cooling fouled, a fan lost, a winding shorted); alert
//! `wear.temperature_rise` when it is past half the limit and the limit is nearer than
//! `horizon`, or at the limit (critical).
//!
//! An alert `wear.<channel>` opens when the level is in zone C or D, or when it has drifted at
//! least `drift` above the baseline and the time to the limit is shorter than `horizon`; it is
//! critical in zone D or with less than a day to go, and closes when the level is back in zone
//! A or B and the time to the limit is longer than twice the horizon. Its features say the
//! level, the baseline, the limit, the zone and `seconds_to_limit`, which the `motor_health`
//! table shows. The state (about 0.9 KB of heap per motor in `motor_memory`: four trends of 36
//! samples of 4 bytes, four 72-byte channels) goes with the motor's partition in its
//! checkpoint. A motor silent for `detect.cold_after` with no wear alert open keeps it in the
//! spill file instead, until its next reading ([`crate::cold`]).

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};
use tessera_core::Channel;

use crate::alerts::{AlertEvent, AlertState, Severity, alert_id};

pub use tessera_core::MachineClass;

/// Each motor's own vibration zone boundaries (A/B, B/C, C/D in mm/s), where the registry
/// gives its class one; shared with the node that keeps it current. A motor not in it is
/// judged by [`WearConfig::class`].
#[derive(Debug, Clone, Default)]
pub struct MotorClasses(std::sync::Arc<std::sync::RwLock<HashMap<String, [f64; 3]>>>);

impl MotorClasses {
    /// Replaces the motors' boundaries.
    pub fn set(&self, classes: HashMap<String, [f64; 3]>) {
        if let Ok(mut c) = self.0.write() {
            *c = classes;
        }
    }

    /// A motor's boundaries, if the registry gives it a class.
    pub fn get(&self, motor: &str) -> Option<[f64; 3]> {
        self.0.read().ok().and_then(|c| c.get(motor).copied())
    }
}

/// How wear is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WearConfig {
    /// The vibration zones' machine class.
    pub class: MachineClass,
    /// The early-life baseline: the first this long of a motor's readings (ms).
    pub baseline_ms: i64,
    /// The level's time constant (ms).
    pub level_ms: i64,
    /// How often the level is sampled for the trend (ms)...
    pub sample_ms: i64,
    /// ...and how many samples the trend spans.
    pub trend_samples: usize,
    /// A drift above the baseline (fraction) that makes the trend count.
    pub drift: f64,
    /// Alert when the limit is nearer than this (ms).
    pub horizon_ms: i64,
    /// The limit of the temperature rise over what the load explains, °C.
    pub rise_limit_c: f64,
}

impl Default for WearConfig {
    fn default() -> Self {
        Self {
            class: MachineClass::II,
            baseline_ms: 6 * HOUR,
            level_ms: HOUR,
            sample_ms: 40 * 60_000,
            trend_samples: 36,
            drift: 0.3,
            horizon_ms: 7 * 24 * HOUR,
            rise_limit_c: 15.0,
        }
    }
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// The alert kind of the temperature rise over what the load explains.
pub const RISE: &str = "wear.temperature_rise";
/// The channels wear is judged on.
const CHANNELS: [Channel; 3] = [Channel::VibrationXRms, Channel::VibrationYRms, Channel::VibrationZRms];

/// One channel of one motor (72 bytes, and its trend's samples).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelWear {
    /// The first reading's event time (`i64::MIN`: none yet).
    first_ms: i64,
    baseline_sum: f64,
    baseline_n: u32,
    /// The level (NaN: no reading yet).
    level: f64,
    last_ms: i64,
    /// The trend's samples.
    samples: Trend,
    /// The open alert: id, opening time, worst severity (boxed: most channels have none).
    open: Option<Box<(String, i64, Severity)>>,
}

impl Default for ChannelWear {
    fn default() -> Self {
        Self {
            first_ms: i64::MIN,
            baseline_sum: 0.0,
            baseline_n: 0,
            level: f64::NAN,
            last_ms: 0,
            samples: Trend::default(),
            open: None,
        }
    }
}

/// A channel's trend samples: each its event time in whole minutes since `base_min` and its
/// level in half precision (4 bytes a sample), in a ring allocated once at the trend's length
/// (a motor holds four trends). Half precision keeps a level to 0.05 %, under the noise of an
/// hour's average.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Trend {
    /// Minutes since the epoch the samples' times count from.
    base_min: u32,
    /// Where the oldest sample is in `ring`, and how many there are.
    head: u16,
    len: u16,
    ring: Box<[(u16, u16)]>,
}

impl Trend {
    /// The `i`th sample, oldest first.
    fn get(&self, i: usize) -> (u16, u16) {
        self.ring[(usize::from(self.head) + i) % self.ring.len()]
    }

    fn pop_front(&mut self) {
        self.head = ((usize::from(self.head) + 1) % self.ring.len()) as u16;
        self.len -= 1;
    }

    /// The ring at `keep` samples, with the newest of those it holds.
    fn fit(&mut self, keep: usize) {
        let have = usize::from(self.len);
        let kept: Vec<(u16, u16)> = (have.saturating_sub(keep)..have).map(|i| self.get(i)).collect();
        let mut ring = vec![(0, 0); keep].into_boxed_slice();
        ring[..kept.len()].copy_from_slice(&kept);
        (self.ring, self.head, self.len) = (ring, 0, kept.len() as u16);
    }

    /// The last sample's time, ms.
    fn last_ms(&self) -> Option<i64> {
        (self.len > 0).then(|| (i64::from(self.base_min) + i64::from(self.get(self.len() - 1).0)) * 60_000)
    }

    /// Adds a sample at `t_ms`, dropping the oldest beyond `keep` (and any older than 45
    /// days before it, which the minutes no longer reach).
    fn push(&mut self, t_ms: i64, level: f64, keep: usize) {
        let keep = keep.clamp(1, usize::from(u16::MAX));
        if self.ring.len() != keep {
            self.fit(keep);
        }
        if self.len() == keep {
            self.pop_front();
        }
        let minute = u32::try_from(t_ms.div_euclid(60_000).max(0)).unwrap_or(u32::MAX);
        if self.len == 0 {
            self.base_min = minute;
        }
        let since = |base: u32| u16::try_from(minute.saturating_sub(base)).ok();
        if since(self.base_min).is_none() {
            while self.len > 0 && since(self.base_min + u32::from(self.get(0).0)).is_none() {
                self.pop_front();
            }
            let rebase = if self.len > 0 { self.base_min + u32::from(self.get(0).0) } else { minute };
            let shift = (rebase - self.base_min) as u16;
            for i in 0..self.len() {
                let at = (usize::from(self.head) + i) % self.ring.len();
                self.ring[at].0 -= shift;
            }
            self.base_min = rebase;
        }
        let max = f64::from(half::f16::MAX);
        let level = half::f16::from_f64(level.clamp(-max, max)).to_bits();
        let at = (usize::from(self.head) + self.len()) % self.ring.len();
        self.ring[at] = (since(self.base_min).unwrap_or(u16::MAX), level);
        self.len += 1;
    }

    /// The samples as (ms, level), oldest first.
    fn points(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        (0..self.len()).map(|i| {
            let (m, level) = self.get(i);
            ((i64::from(self.base_min) + i64::from(m)) * 60_000, half::f16::from_bits(level).to_f64())
        })
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Least-squares slope of the level, per ms.
    fn slope(&self) -> f64 {
        let n = self.len() as f64;
        let t0 = self.points().next().map_or(0, |p| p.0);
        let (mut st, mut sy, mut stt, mut sty) = (0.0, 0.0, 0.0, 0.0);
        for (t, y) in self.points() {
            let t = (t - t0) as f64;
            st += t;
            sy += y;
            stt += t * t;
            sty += t * y;
        }
        let denominator = n * stt - st * st;
        if denominator <= 0.0 { 0.0 } else { (n * sty - st * sy) / denominator }
    }
}

/// The thermal fit of the early life: temperature against current², by least squares.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoadFit {
    /// The first reading's event time (`i64::MIN`: none yet).
    first_ms: i64,
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl Default for LoadFit {
    fn default() -> Self {
        Self { first_ms: i64::MIN, n: 0.0, sx: 0.0, sy: 0.0, sxx: 0.0, sxy: 0.0 }
    }
}

impl LoadFit {
    /// The temperature the load `x` (current²) explains, once the early life is over.
    fn explained(&self, x: f64) -> f64 {
        let var = self.n * self.sxx - self.sx * self.sx;
        let b = if var > 1e-9 * self.n * self.sxx.abs().max(1.0) {
            (self.n * self.sxy - self.sx * self.sy) / var
        } else {
            0.0
        };
        (self.sy - b * self.sx) / self.n + b * x
    }
}

/// A motor's wear state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MotorWear {
    channels: [ChannelWear; 3],
    /// Temperature against load over the early life...
    fit: LoadFit,
    /// ...and the rise over what the load explains, as a channel.
    rise: ChannelWear,
}

impl MotorWear {
    /// Its open alerts (a channel's or the temperature rise's).
    fn open_alerts(&self) -> usize {
        self.channels.iter().chain([&self.rise]).filter(|c| c.open.is_some()).count()
    }
}

/// What a level is judged against.
#[derive(Clone, Copy)]
enum Scale {
    /// ISO 20816 zones (A/B, B/C, C/D); the limit is C/D.
    Zones([f64; 3]),
    /// A limit of its own (the temperature rise, °C).
    Limit(f64),
}

/// What one judgement found, for an alert's features.
struct Judged {
    level: f64,
    baseline: f64,
    limit: f64,
    /// The ISO zone (1 = A … 4 = D), for vibration.
    zone: Option<f64>,
    seconds_to_limit: Option<f64>,
}

/// The wear judge of one engine's motors.
#[derive(Debug)]
pub struct WearMonitor {
    config: WearConfig,
    classes: MotorClasses,
    /// By the motor's shared id ([`crate::ids`]); idle ones without an open alert cold
    /// ([`crate::cold`]).
    motors: crate::cold::Tiered<MotorWear>,
}

impl WearMonitor {
    /// A judge with no motors yet; `classes` gives motors a class of their own.
    pub fn new(config: WearConfig, classes: MotorClasses) -> Self {
        Self { config, classes, motors: crate::cold::Tiered::new() }
    }

    /// The motors with a class of their own (shared: setting it changes this judge's zones).
    pub fn classes(&self) -> MotorClasses {
        self.classes.clone()
    }

    /// From now on, motors idle `spill.after_ms` with no open alert keep their state in a
    /// spill file (see [`crate::cold`]); set before the first reading.
    pub fn spill_to(&mut self, spill: &crate::cold::ColdSpill) -> Result<(), crate::StreamError> {
        self.motors.spill_to(spill)
    }

    /// Motors held, and how many of them are in memory.
    pub fn motors_held(&self) -> (usize, usize) {
        (self.motors.len(), self.motors.hot_len())
    }

    /// Takes in a batch of readings (telemetry schema) at processing time `now_ms`; the alert
    /// events it opens, raises or closes. Fails only if the spill file of cold motors does.
    pub fn observe(&mut self, batch: &RecordBatch, now_ms: i64) -> Result<Vec<AlertEvent>, crate::StreamError> {
        let Some((motors, sites, ts)) = crate::schema::keys(batch) else { return Ok(Vec::new()) };
        let columns: Vec<_> = CHANNELS.iter().map(|c| crate::schema::channel_values(batch, *c)).collect();
        let thermal = (
            crate::schema::channel_values(batch, Channel::TemperatureC),
            crate::schema::channel_values(batch, Channel::CurrentA),
        );
        let mut events = Vec::new();
        let classes = self.classes.0.read().ok();
        let default_zones = self.config.class.boundaries();
        for row in 0..batch.num_rows() {
            let motor = motors.value(row);
            let t = ts.value(row);
            let zones = Scale::Zones(classes.as_ref().and_then(|c| c.get(motor).copied()).unwrap_or(default_zones));
            let site = sites.value(row);
            let m = self.motors.entry(motor, now_ms, MotorWear::default)?;
            for (c, values) in columns.iter().enumerate() {
                let Some(v) = values.as_ref().and_then(|v| v.is_valid(row).then(|| v.value(row))) else { continue };
                if !v.is_finite() {
                    continue;
                }
                let Some(judged) = take(&self.config, &mut m.channels[c], t, v, zones) else { continue };
                let kind = format!("wear.{}", CHANNELS[c].name());
                if let Some(e) = decide(&self.config, &mut m.channels[c], site, motor, kind, judged, t, now_ms) {
                    events.push(e);
                }
            }
            let value = |values: &Option<&datafusion::arrow::array::Float64Array>| {
                values.and_then(|v| (v.is_valid(row) && v.value(row).is_finite()).then(|| v.value(row)))
            };
            if let (Some(temperature), Some(current)) = (value(&thermal.0), value(&thermal.1)) {
                let x = current * current;
                if m.fit.first_ms == i64::MIN {
                    m.fit.first_ms = t;
                }
                let first = m.fit.first_ms;
                // At least a day of early life, so the fit sees the day's loads; the rise is
                // averaged over at least a day, so an ambient day is no rise.
                let rise_config = WearConfig {
                    baseline_ms: self.config.baseline_ms.max(DAY),
                    level_ms: self.config.level_ms.max(DAY),
                    ..self.config
                };
                if t - first < rise_config.baseline_ms {
                    let f = &mut m.fit;
                    (f.n, f.sx, f.sy, f.sxx, f.sxy) =
                        (f.n + 1.0, f.sx + x, f.sy + temperature, f.sxx + x * x, f.sxy + x * temperature);
                } else {
                    let excess = temperature - m.fit.explained(x);
                    let limit = Scale::Limit(self.config.rise_limit_c);
                    if let Some(judged) = take(&rise_config, &mut m.rise, t, excess, limit)
                        && let Some(e) =
                            decide(&rise_config, &mut m.rise, site, motor, RISE.to_string(), judged, t, now_ms)
                    {
                        events.push(e);
                    }
                }
            }
        }
        drop(classes); // before the sweep's writes
        // A motor with an open alert stays in memory: the open count reads only those.
        self.motors.sweep(now_ms, |m| m.open_alerts() == 0)?;
        Ok(events)
    }

    /// The state of the motors `include` accepts, for a checkpoint (sorted by motor).
    pub fn snapshot(&self, include: &dyn Fn(&str) -> bool) -> Result<Vec<(String, MotorWear)>, crate::StreamError> {
        self.motors.collect(include)
    }

    /// Takes over [`Self::snapshot`]'s motors at processing time `now_ms`. Those with an open
    /// alert stay in memory.
    pub fn adopt(&mut self, motors: Vec<(String, MotorWear)>, now_ms: i64) -> Result<(), crate::StreamError> {
        let (open, quiet): (Vec<_>, Vec<_>) = motors.into_iter().partition(|(_, m)| m.open_alerts() > 0);
        self.motors.adopt(quiet, now_ms)?;
        self.motors.adopt_hot(open, now_ms);
        Ok(())
    }

    /// Forgets every motor `drop` accepts.
    pub fn drop_motors(&mut self, drop: &dyn Fn(&str) -> bool) {
        self.motors.retain(|m| !drop(m));
    }

    /// Open wear alerts.
    pub fn open_count(&self) -> usize {
        self.motors.hot_values().map(MotorWear::open_alerts).sum()
    }
}

/// Takes reading `v` at `t` into the channel; a judgement when a trend sample was taken.
fn take(config: &WearConfig, c: &mut ChannelWear, t: i64, v: f64, scale: Scale) -> Option<Judged> {
    if c.first_ms == i64::MIN {
        c.first_ms = t;
    }
    let first = c.first_ms;
    if t < c.last_ms {
        return None; // out of order: the level moves forward only
    }
    if t - first < config.baseline_ms {
        c.baseline_sum += v;
        c.baseline_n += 1;
    }
    let dt = (t - c.last_ms) as f64;
    c.level = if c.level.is_nan() { v } else { c.level + (1.0 - (-dt / config.level_ms as f64).exp()) * (v - c.level) };
    c.last_ms = t;
    let due = c.samples.last_ms().is_none_or(|s| t - s >= config.sample_ms);
    if !due {
        return None;
    }
    let level = c.level;
    c.samples.push(t, level, config.trend_samples);
    // Judged once the baseline is complete and the trend spans half its samples.
    if t - first < config.baseline_ms || c.samples.len() < config.trend_samples / 2 || c.baseline_n == 0 {
        return None;
    }
    let baseline = c.baseline_sum / c.baseline_n as f64;
    let (limit, zone) = match scale {
        Scale::Zones(b) => (b[2], Some(1.0 + b.iter().filter(|b| level >= **b).count() as f64)),
        Scale::Limit(limit) => (limit, None),
    };
    let slope = c.samples.slope(); // per ms
    let seconds_to_limit = if level >= limit {
        Some(0.0)
    } else if slope > 0.0 {
        Some((limit - level) / slope / 1000.0)
    } else {
        None
    };
    Some(Judged { level, baseline, limit, zone, seconds_to_limit })
}

/// Opens, raises or closes the channel's alert on a judgement.
#[allow(clippy::too_many_arguments)]
fn decide(
    config: &WearConfig,
    c: &mut ChannelWear,
    site: &str,
    motor: &str,
    kind: String,
    j: Judged,
    t: i64,
    now_ms: i64,
) -> Option<AlertEvent> {
    let horizon_s = config.horizon_ms as f64 / 1000.0;
    // Vibration: drifted `drift` above its early life, in zone C or D (critical in D). The
    // temperature rise (about 0 in early life): past half its limit, or at the limit (critical).
    let (drifted, bad_zone, at_worst) = match j.zone {
        Some(zone) => (j.level >= j.baseline * (1.0 + config.drift), zone >= 3.0, zone >= 4.0),
        None => (j.level >= j.limit / 2.0, j.level >= j.limit, j.level >= j.limit),
    };
    let soon = j.seconds_to_limit.is_some_and(|s| s < horizon_s);
    let critical = at_worst || j.seconds_to_limit.is_some_and(|s| s < (DAY / 1000) as f64);
    let severity = if critical { Severity::Critical } else { Severity::Warning };
    let state = match c.open.as_deref_mut() {
        None if bad_zone || (drifted && soon) => {
            c.open = Some(Box::new((alert_id(&kind, motor, t), t, severity)));
            AlertState::Open
        }
        None => return None,
        Some((_, _, worst)) if severity > *worst => {
            *worst = severity;
            AlertState::Update
        }
        Some(_) if !bad_zone && j.seconds_to_limit.is_none_or(|s| s > 2.0 * horizon_s) => AlertState::Close,
        Some(_) => return None,
    };
    let (id, opened, worst) = c.open.as_deref().cloned().expect("open");
    if state == AlertState::Close {
        c.open = None;
    }
    let mut features = BTreeMap::from([
        ("level".to_string(), j.level),
        ("baseline".to_string(), j.baseline),
        ("limit".to_string(), j.limit),
    ]);
    if let Some(zone) = j.zone {
        features.insert("zone".to_string(), zone);
    }
    if let Some(s) = j.seconds_to_limit {
        features.insert("seconds_to_limit".to_string(), s);
    }
    Some(AlertEvent {
        alert_id: id,
        query: kind,
        motor_id: motor.to_string(),
        site_id: site.to_string(),
        state,
        severity: worst,
        score: Some(j.level / j.limit),
        peak_score: j.level / j.limit,
        window_start_ms: t,
        window_end_ms: t,
        opened_window_start_ms: opened,
        emitted_at_ms: now_ms,
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// One reading of each motor at `t_ms`, vibration x from `vib(motor)`.
    fn batch(t_ms: i64, vib: &[(&str, f64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("vibration_x_rms", DataType::Float64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(vib.iter().map(|(m, _)| *m))),
            Arc::new(Int64Array::from_iter_values(vib.iter().map(|_| t_ms))),
            Arc::new(Float64Array::from_iter_values(vib.iter().map(|(_, v)| *v))),
        ];
        crate::conform::to_telemetry(&RecordBatch::try_new(Arc::new(schema), columns).unwrap(), &[], 0).unwrap()
    }

    /// Deterministic noise in [-0.5, 0.5).
    fn noise(i: i64, seed: i64) -> f64 {
        ((i * 7919 + seed * 104_729) % 1000) as f64 / 1000.0 - 0.5
    }

    /// A motor whose bearing wears from day 3 (vibration growing to the class II limit 7.1 mm/s
    /// at day 12) and its healthy twin, sampled every `step_ms`: the worn one is alerted at
    /// least a day before it reaches the limit, the twin never.
    fn wear_is_seen_a_day_ahead(step_ms: i64) {
        let mut wear = WearMonitor::new(WearConfig::default(), MotorClasses::default());
        let (start, failure) = (3 * DAY, 12 * DAY);
        let worn = |t: i64| {
            let x = ((t - start) as f64 / (failure - start) as f64).max(0.0);
            1.5 + 5.6 * x * x
        };
        let mut events = Vec::new();
        let mut crossed = None;
        for i in 0..(14 * DAY / step_ms) {
            let t = i * step_ms;
            let w = worn(t) + 0.3 * noise(i, 1);
            if w >= 7.1 && crossed.is_none() {
                crossed = Some(t);
            }
            events.extend(wear.observe(&batch(t, &[("worn", w), ("twin", 1.5 + 0.3 * noise(i, 2))]), t).unwrap());
        }
        assert!(events.iter().all(|e| e.motor_id == "worn"), "the twin is never alerted: {events:?}");
        let first = events.iter().find(|e| e.state == AlertState::Open).expect("the worn motor is alerted");
        let lead_h = (crossed.expect("it fails") - first.window_start_ms) / HOUR;
        assert!(lead_h >= 24, "alerted {lead_h} h before the limit (at {} h)", first.window_start_ms / HOUR);
        println!(
            "wear: sampled every {} s, alerted at {} h, {lead_h} h before the limit; {} events, none on the twin",
            step_ms / 1000,
            first.window_start_ms / HOUR,
            events.len()
        );
        assert_eq!(first.query, "wear.vibration_x_rms");
        assert!(first.features["seconds_to_limit"] > 0.0 && first.features["limit"] == 7.1, "{first:?}");
        assert!(events.iter().any(|e| e.severity == Severity::Critical), "critical before or at the limit");
    }

    #[test]
    fn a_motor_is_judged_by_the_zones_of_its_own_class() {
        // Three motors running steadily at 3 mm/s for two days: zone C of the default class
        // II (B/C 2.8), zone B of class III (B/C 4.5), zone D of a plant's own class whose C/D
        // boundary is 2.5.
        let mut wear = WearMonitor::new(WearConfig::default(), MotorClasses::default());
        let mut own = HashMap::new();
        own.insert("large".to_string(), MachineClass::III.boundaries());
        own.insert("pump".to_string(), [1.0, 2.0, 2.5]);
        wear.classes().set(own);
        let mut events = Vec::new();
        for i in 0..(2 * DAY / 600_000) {
            let t = i * 600_000;
            let rows = [("medium", 3.0 + 0.05 * noise(i, 1)), ("large", 3.0 + 0.05 * noise(i, 2)), ("pump", 3.0)];
            events.extend(wear.observe(&batch(t, &rows), t).unwrap());
        }
        let opened = |motor: &str| events.iter().find(|e| e.motor_id == motor && e.state == AlertState::Open);
        let medium = opened("medium").expect("zone C of class II is alerted");
        assert_eq!((medium.features["zone"], medium.features["limit"]), (3.0, 7.1), "{medium:?}");
        assert!(opened("large").is_none(), "zone B of class III is not: {events:?}");
        let pump = opened("pump").expect("zone D of the plant's class is alerted");
        assert_eq!((pump.features["zone"], pump.features["limit"], pump.severity), (4.0, 2.5, Severity::Critical));
    }

    #[test]
    fn wear_is_seen_a_day_ahead_sampled_every_10_minutes() {
        wear_is_seen_a_day_ahead(10 * 60_000);
    }

    #[test]
    fn wear_is_seen_a_day_ahead_sampled_every_minute() {
        wear_is_seen_a_day_ahead(60_000);
    }

    /// Readings of current and temperature, one per motor at `t_ms`.
    fn thermal(t_ms: i64, rows: &[(&str, f64, f64)]) -> RecordBatch {
        let rows: Vec<(&str, i64, f64, f64)> = rows.iter().map(|(m, c, t)| (*m, t_ms, *c, *t)).collect();
        crate::conform::current_and_temperature(&rows)
    }

    #[test]
    fn a_temperature_rising_over_what_the_load_explains_is_seen_a_day_ahead() {
        // Load cycles 20–40 A over the day; temperature follows current² (30 + 0.02·I²: 38–62 °C).
        // From day 3 the cooling fouls: the rise over the load grows to the 15 °C limit at day 11.
        // Its twin runs the same load with clean cooling.
        let mut wear = WearMonitor::new(WearConfig::default(), MotorClasses::default());
        let step = 10 * 60_000;
        let (start, limit_at) = (3 * DAY, 11 * DAY);
        let mut events = Vec::new();
        for i in 0..(13 * DAY / step) {
            let t = i * step;
            let current = 30.0 + 10.0 * (std::f64::consts::TAU * (t % DAY) as f64 / DAY as f64).sin();
            let x = ((t - start) as f64 / (limit_at - start) as f64).max(0.0);
            let fouled = 15.0 * x * x;
            let rows = [
                ("fouled", current, 30.0 + 0.02 * current * current + fouled + noise(i, 4)),
                ("clean", current, 30.0 + 0.02 * current * current + noise(i, 5)),
            ];
            events.extend(wear.observe(&thermal(t, &rows), t).unwrap());
        }
        assert!(events.iter().all(|e| e.motor_id == "fouled"), "the clean twin is never alerted: {events:?}");
        let first = events.iter().find(|e| e.state == AlertState::Open).expect("the fouled motor is alerted");
        assert_eq!(first.query, RISE);
        assert!(!first.features.contains_key("zone") && first.features["limit"] == 15.0, "{first:?}");
        let lead_h = (limit_at - first.window_start_ms) / HOUR;
        assert!(lead_h >= 24, "alerted {lead_h} h before the limit");
        println!("temperature rise: alerted at {} h, {lead_h} h before the limit", first.window_start_ms / HOUR);
    }

    #[test]
    fn a_trend_keeps_its_newest_samples_in_a_ring_of_its_length() {
        let mut trend = Trend::default();
        let points: Vec<(i64, f64)> =
            (0..50).map(|i| (1_700_000_000_000 + i * 2_400_000, 1.0 + 0.01 * i as f64)).collect();
        for (t, level) in &points {
            trend.push(*t, *level, 36);
        }
        assert_eq!((trend.len(), trend.ring.len()), (36, 36), "allocated at its length");
        let per_hour = trend.slope() * HOUR as f64;
        assert!((per_hour - 0.015).abs() < 1e-4, "the trend: {per_hour} per hour");
        for ((t, level), (t0, level0)) in trend.points().zip(&points[14..]) {
            assert!(t <= *t0 && t0 - t < 60_000, "{t} against {t0}: kept to the minute, newest last");
            assert!((level - level0).abs() < 1e-3, "{level} against {level0}: half precision keeps a level");
        }
        // A shorter trend (a changed config) keeps the newest.
        trend.push(points[49].0 + 2_400_000, 1.5, 10);
        assert_eq!(trend.len(), 10);
        assert_eq!(trend.points().next().map(|p| p.0), Some(points[41].0 - points[41].0 % 60_000));
    }

    #[test]
    fn a_trend_spanning_more_than_its_minutes_reach_keeps_its_newest_samples() {
        // Daily samples: the minutes reach 45 days, so a 60-sample trend keeps the last 46.
        let mut trend = Trend::default();
        for day in 0..60 {
            trend.push(1_700_000_000_000 + day * DAY, 2.0 + 0.01 * day as f64, 60);
            let (first, last) = (trend.points().next().unwrap().0, trend.last_ms().unwrap());
            assert!(last - first <= 45 * DAY + DAY, "day {day}: {} days kept", (last - first) / DAY);
        }
        assert_eq!(trend.len(), 46);
        assert_eq!(trend.last_ms(), Some(1_700_000_000_000 + 59 * DAY - (1_700_000_000_000 % 60_000)));
        let per_day = trend.slope() * DAY as f64;
        assert!((per_day - 0.01).abs() < 1e-3, "the trend read from what is kept: {per_day} a day");
    }

    #[test]
    fn the_state_survives_a_checkpoint() {
        let mut a = WearMonitor::new(WearConfig::default(), MotorClasses::default());
        for i in 0..(8 * HOUR / 60_000) {
            a.observe(&batch(i * 60_000, &[("m", 1.5 + 0.3 * noise(i, 3))]), 0).unwrap();
        }
        let bytes = crate::checkpoint::to_versioned_bytes(&a.snapshot(&|_| true).unwrap()).unwrap();
        let mut b = WearMonitor::new(WearConfig::default(), MotorClasses::default());
        b.adopt(crate::checkpoint::from_versioned_bytes(&bytes).unwrap(), 0).unwrap();
        assert_eq!(
            crate::checkpoint::to_versioned_bytes(&b.snapshot(&|_| true).unwrap()).unwrap(),
            bytes,
            "baseline, level and trend samples came back whole"
        );
    }
}
