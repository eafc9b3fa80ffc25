//! Shift: sudden faults, judged per motor at the motor's own sampling rate. The SQL rules fix
//! their windows in the statement (10 s), which gives a motor reporting every ten minutes one
//! reading per window and a baseline of hours of windows; this judge sizes everything from the
//! motor's measured reporting interval instead, so the same settings serve a 10 Hz drive and a
//! 10-minute condition-monitoring sensor:
//!
//! - **interval**: an average of the motor's event-time gaps;
//! - **window**: `readings_per_window` of its readings (at least `min_window` long), opened at
//!   a reading and closed by the first reading past its end;
//! - **baseline** per channel (the seven telemetry channels and every extra): the mean and
//!   spread of the window means, learnt over `baseline` of event time (at least
//!   `min_baseline_windows` windows): a plain mean and standard deviation while it fills, then
//!   a robust moving centre and scale (deviations clipped at 3 scales, so one wild window moves
//!   it little). Gated: a window whose channel is beyond `gate`, or that opens or holds an
//!   alert, is kept out, so a fault lasting hours does not become the new normal; a channel
//!   kept out for `relearn` in a row relearns from scratch (a new operating point, accepted);
//! - **score**: the largest robust |z| over the channels and, across them, Hotelling's T² of
//!   the z vector against its own correlation (learnt from the same gated windows, shrunk
//!   towards the identity), as a normal-equivalent z (Wilson–Hilferty), so a broken relation
//!   between channels that each look normal is seen too;
//! - **seasonal**: once the motor reports at least every 30 minutes, every channel learns its
//!   first two daily harmonics (a 24- and a 12-hour wave, 40 bytes); once a day of readings
//!   puts 20 % of the channel's variance in them, the channel gets a daily profile (160
//!   bytes: one level per hour of day, started from the harmonics, learnt over about a week,
//!   read linearly between the hours). When the profile explains at least 30 % of the
//!   channel's variance, the channel is judged on its residual from the profile instead of
//!   its raw value, and back when that falls under 15 %: ambient temperature, shift loads
//!   and what follows them. A profile not in use two days on, with less than 10 % of the
//!   variance in the harmonics, is dropped: only the channels that follow the day keep one;
//! - **transients** (off unless `transient_above` is set): each channel's range within the
//!   window (largest minus smallest reading) against a gated baseline of its ranges,
//!   one-sided: a reading far outside the window's usual spread (a current spike, a vibration
//!   impact) that a window's mean dilutes. A window at `transient_above` holds its score for
//!   `open_windows` windows, so one transient opens an alert. Off by default: on SKAB's real
//!   pump vibration, heavy-tailed, it raised false alarms (docs/DETECTION.md);
//! - **day scale**: every channel's mean over each whole UTC day is judged against the means of
//!   the days before it (the last `days`, from `days / 2` on) by the median and the median
//!   absolute deviation: a level that moves over days (a building or room running warm for
//!   days, a machine's operating point drifting) where a window's baseline of an hour follows
//!   it. A day holding less than half of the motor's usual readings is not judged.
//!
//! An alert `shift` opens after `open_windows` windows at a score of at least `open_above`,
//! closes after `close_windows` below `close_below`, and is critical at `critical_above` (the
//! same hysteresis as the SQL rules'). Its features say the window's length, the motor's
//! interval, `t2` and the channels at |z| ≥ 2 (`z.<channel>`): which channel, and how far; the
//! newest score of every motor is on the `motor_health` board. The day scale's alert is
//! `shift.day`, opened by one day at `open_above` and closed by one below `close_below`. The
//! state goes with the motor's partition in its checkpoint; in memory it is about 1.6 KB of
//! heap for a motor sending the seven telemetry channels (heaptrack of `motor_memory`,
//! docs/PERFORMANCE.md): 128 bytes per channel (baseline, window sums, noise, harmonics, the
//! open day), the day scale's 28 days per channel as half-precision offsets from their median
//! in one block, the correlation's upper triangle, the motor's row and two alert trackers'. A
//! channel that keeps a profile takes 160 bytes more. A motor silent for `detect.cold_after`
//! keeps it in the spill file instead, until its next reading ([`crate::cold`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use datafusion::arrow::array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};
use tessera_core::Channel;

use crate::alerts::{AlertEvent, AlertTracker, TrackerState, WindowScore};
use crate::grammar::AlertOptions;

/// The alert kind (the alert's `query`) and `motor_health` score name of this judge's windows.
pub const SHIFT: &str = "shift";
/// ...and of its day scale.
pub const SHIFT_DAY: &str = "shift.day";

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// How sudden faults are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftConfig {
    /// Readings per window.
    pub readings_per_window: u32,
    /// A window is never shorter than this (ms): a 10 Hz drive gets 10 s windows, not 1 s.
    pub min_window_ms: i64,
    /// The baseline's span of event time (ms)...
    pub baseline_ms: i64,
    /// ...and never fewer windows than this; no score before.
    pub min_baseline_windows: u32,
    /// A channel beyond this |z| stays out of its baseline.
    pub gate: f64,
    /// A channel kept out of its baseline this long in a row (ms) relearns it.
    pub relearn_ms: i64,
    /// Hotelling's T² across channels, beside the per-channel z.
    pub t2: bool,
    /// Daily profiles, for the channels that turn out to follow the day.
    pub seasonal: bool,
    /// The day scale: days of history a day is judged against (0: off; at most 255 are kept).
    pub days: u32,
    /// Transients: a channel's range within a window at this z against its usual range opens
    /// an alert by itself (None: off).
    pub transient_above: Option<f64>,
    /// The alerts' hysteresis.
    pub alerts: AlertOptions,
}

impl Default for ShiftConfig {
    fn default() -> Self {
        Self {
            readings_per_window: 10,
            min_window_ms: 10_000,
            baseline_ms: HOUR,
            min_baseline_windows: 50,
            gate: 5.0,
            relearn_ms: 6 * HOUR,
            t2: true,
            seasonal: true,
            days: 28,
            transient_above: None,
            alerts: AlertOptions {
                open_above: 6.0,
                close_below: 3.0,
                critical_above: Some(20.0),
                open_windows: 3,
                close_windows: 3,
            },
        }
    }
}

/// One channel's baseline of window means (16 bytes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Baseline {
    /// Windows learnt.
    n: u32,
    /// While filling, the sum of squared deviations (Welford); once filled, the spread (a
    /// standard deviation's equivalent).
    spread: f32,
    /// Centre (`f64`: a steady channel's small steps would vanish in an `f32`'s rounding).
    mean: f64,
}

impl Baseline {
    /// The robust z of `x`, once the baseline is filled and has a spread; `slack` is an
    /// uncertainty of `x` beyond the baseline's own (a profile's, between its hours), added to
    /// the spread in quadrature; the spread is never below `floor`.
    fn z(&self, x: f64, slack: f64, floor: f64, min_windows: u32) -> Option<f64> {
        let spread = f64::from(self.spread);
        (self.n >= min_windows && spread > 1e-9 * self.mean.abs().max(1.0))
            .then(|| (x - self.mean) / spread.hypot(slack).max(floor))
    }

    /// Takes window mean `x` in; `alpha` is the smallest weight of a window (window / span).
    fn learn(&mut self, x: f64, alpha: f64, min_windows: u32) {
        let mut spread = f64::from(self.spread);
        if self.n < min_windows {
            self.n += 1;
            let d = x - self.mean;
            self.mean += d / self.n as f64;
            spread += d * (x - self.mean);
            if self.n == min_windows {
                spread = (spread / (self.n - 1).max(1) as f64).sqrt();
            }
        } else {
            let a = (1.0 / (self.n as f64 + 1.0)).max(alpha);
            let d = x - self.mean;
            let clipped = if spread > 0.0 { d.clamp(-3.0 * spread, 3.0 * spread) } else { d };
            self.mean += a * clipped;
            // E|X − μ| = σ·√(2/π) for a normal X: 1.2533 turns a mean absolute deviation into a σ.
            spread += a * (1.2533 * clipped.abs() - spread);
            self.n = self.n.saturating_add(1);
        }
        self.spread = spread as f32;
    }
}

/// A daily profile: a level per hour of day (UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Profile {
    first_ms: i64,
    levels: [f32; 24],
    counts: [u16; 24],
    /// Judged on the residual from the profile.
    active: bool,
}

/// What [`Profile::learn`] found.
#[derive(Debug, PartialEq)]
enum ProfileTurn {
    /// Nothing changed.
    Same,
    /// The channel switches between raw and residual judging.
    Switched,
    /// The trial is over and the channel does not follow the day: the profile goes.
    Dropped,
}

/// A profile not in use this long after it started, on a channel with less than
/// [`DROP_SHARE`] of its variance in its day, is dropped.
const TRIAL_MS: i64 = 2 * DAY;
/// The share of a channel's variance in its daily harmonics ([`DayCycle`]) under which a
/// profile on trial is dropped...
const DROP_SHARE: f64 = 0.1;
/// ...and from which a channel without one gets a new one.
const GROW_SHARE: f64 = 0.2;

/// Whether a channel follows the day, kept for every channel of a motor that reports at least
/// every 30 minutes (40 bytes, where a profile takes 160): the readings' mean and variance,
/// and their first two daily harmonics (a 24- and a 12-hour period), each a moving average
/// over about a week. A day's shape, a shift's square load or an ambient wave, has most of its
/// variance in them; noise has about 2 / readings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DayCycle {
    n: u32,
    /// E[(x − mean)·b] for b = cos θ, sin θ, cos 2θ, sin 2θ, θ the reading's phase in its day.
    harmonics: [f32; 4],
    var: f32,
    /// `f64`: a week's average moves by steps an `f32` would round away.
    mean: f64,
}

impl DayCycle {
    /// The harmonics' basis at `t`.
    fn basis(t: i64) -> [f64; 4] {
        let phase = std::f64::consts::TAU * t.rem_euclid(DAY) as f64 / DAY as f64;
        [phase.cos(), phase.sin(), (2.0 * phase).cos(), (2.0 * phase).sin()]
    }

    /// Learns reading `v` (`interval_ms` apart) with the basis of its time.
    fn learn(&mut self, v: f64, basis: &[f64; 4], interval_ms: f64) {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.mean = v; // no deviation yet
            return;
        }
        let a = (1.0 / f64::from(self.n)).max(interval_ms / (7 * DAY) as f64).min(1.0);
        let d = v - self.mean;
        self.mean += a * d;
        self.var = ((1.0 - a) * (f64::from(self.var) + a * d * d)) as f32;
        for (h, b) in self.harmonics.iter_mut().zip(basis) {
            *h += (a * (d * b - f64::from(*h))) as f32;
        }
    }

    /// The share of the variance in the two daily harmonics (a sinusoid of amplitude A
    /// holds A²/2, and its coefficients' squares sum to A²/4).
    fn daily_share(&self) -> f64 {
        if self.var <= 0.0 {
            return 0.0;
        }
        2.0 * self.harmonics.iter().map(|h| f64::from(*h).powi(2)).sum::<f64>() / f64::from(self.var)
    }
}

impl Profile {
    /// A profile at `t` from a day's harmonics: each hour's level where they put the middle
    /// of the hour, as if seen three times, so the next readings of the hour soon outweigh
    /// it; judged from the next check on, as if a day old.
    fn from_cycle(cycle: &DayCycle, t: i64) -> Self {
        let levels = std::array::from_fn(|h| {
            let basis = DayCycle::basis(h as i64 * HOUR + HOUR / 2);
            let wave: f64 = cycle.harmonics.iter().zip(basis).map(|(c, b)| 2.0 * f64::from(*c) * b).sum();
            (cycle.mean + wave) as f32
        });
        Self { first_ms: t - DAY, levels, counts: [3; 24], active: false }
    }

    /// What is judged of reading `v` at `t`: `v`, or its residual from the profile when
    /// active.
    fn judged(&self, v: f64, t: i64) -> f64 {
        if self.active { v - self.level_at(t) } else { v }
    }

    /// The profile's level at `t`: linear between the hours' levels, each taken at the middle
    /// of its hour (a shift's load ramp is no step).
    fn level_at(&self, t: i64) -> f64 {
        let (lower, upper, frac) = Self::between(t);
        f64::from(self.levels[lower]) * (1.0 - frac) + f64::from(self.levels[upper]) * frac
    }

    /// How far the truth may be from [`Self::level_at`] at `t`, as a standard deviation: a
    /// straight line between two hours' levels misses a corner inside them (a ramp starting
    /// mid-way) by up to half their difference, taken here as 3 σ. Zero where the profile is
    /// flat, so the hours of steady running keep their full sensitivity.
    fn slack_at(&self, t: i64) -> f64 {
        if !self.active {
            return 0.0;
        }
        let (lower, upper, _) = Self::between(t);
        f64::from((self.levels[upper] - self.levels[lower]).abs()) / 6.0
    }

    /// The hours whose levels `t` lies between (each taken at the middle of its hour), and how
    /// far along.
    fn between(t: i64) -> (usize, usize, f64) {
        let h = (t.rem_euclid(DAY) as f64 / HOUR as f64 - 0.5).rem_euclid(24.0);
        let lower = h.floor() as usize % 24;
        (lower, (lower + 1) % 24, h.fract())
    }

    /// Learns reading `v` at `t` (`interval_ms` apart); `cycle` has learnt it already.
    fn learn(&mut self, cycle: &DayCycle, v: f64, t: i64, interval_ms: f64) -> ProfileTurn {
        let h = hour_of_day(t);
        self.counts[h] = self.counts[h].saturating_add(1);
        // About a week of each hour: 7 · (readings per hour) readings.
        let a = (1.0 / f64::from(self.counts[h])).max(interval_ms / (7 * HOUR) as f64).min(1.0);
        self.levels[h] += (a * (v - f64::from(self.levels[h]))) as f32;
        // Judged every 64 readings (a day holds hundreds at the rates that keep a profile).
        if !cycle.n.is_multiple_of(64)
            || t - self.first_ms < DAY
            || self.counts.iter().any(|c| *c < 3)
            || cycle.var <= 0.0
        {
            return ProfileTurn::Same;
        }
        let mean = self.levels.iter().map(|l| f64::from(*l)).sum::<f64>() / 24.0;
        let explained =
            self.levels.iter().map(|l| (f64::from(*l) - mean).powi(2)).sum::<f64>() / 24.0 / f64::from(cycle.var);
        let switch = if self.active { explained < 0.15 } else { explained >= 0.3 };
        if switch {
            self.active = !self.active;
            return ProfileTurn::Switched;
        }
        if !self.active && t - self.first_ms >= TRIAL_MS && cycle.daily_share() < DROP_SHARE {
            return ProfileTurn::Dropped;
        }
        ProfileTurn::Same
    }
}

fn hour_of_day(t: i64) -> usize {
    (t.rem_euclid(DAY) / HOUR) as usize
}

/// The transient scale of one channel: the open window's extremes and the usual range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Range {
    lo: f64,
    hi: f64,
    base: Baseline,
}

impl Range {
    fn take(&mut self, v: f64, first: bool) {
        if first {
            (self.lo, self.hi) = (v, v);
        } else {
            self.lo = self.lo.min(v);
            self.hi = self.hi.max(v);
        }
    }
}

/// The day scale of one channel: the open day's sum, and what the channel's past days (kept
/// in the motor's [`DayPast`]) are offsets from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DayLevel {
    sum: f64,
    count: u32,
    /// What the past days are kept as offsets from: their median when the last day closed.
    reference: f32,
}

/// The day scale's past of every channel of a motor, in one block: each channel's last whole
/// days' means, oldest first, as half-precision offsets from its [`DayLevel::reference`] (2
/// bytes a day: the offsets are about the days' spread, which their 11 bits of mantissa keep
/// to 3–4 digits). Channel `k`'s days are `means[k * keep..][..kept[k]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DayPast {
    means: Box<[u16]>,
    /// Days kept per channel at most (the block's row length).
    keep: u16,
}

impl DayPast {
    /// Laid out for `channels` channels of `keep` days, each channel keeping its newest days
    /// (`kept` says how many each has, and is updated).
    fn fit(&mut self, channels: usize, keep: usize, kept: &mut [u8]) {
        let keep = keep.min(usize::from(u8::MAX));
        if self.means.len() == channels * keep && usize::from(self.keep) == keep {
            return;
        }
        let mut means = vec![0u16; channels * keep].into_boxed_slice();
        let old = usize::from(self.keep);
        for (k, n) in kept.iter_mut().enumerate() {
            let have = usize::from(*n);
            let take = have.min(keep);
            if old > 0 && (k + 1) * old <= self.means.len() {
                means[k * keep..][..take].copy_from_slice(&self.means[k * old + have - take..][..take]);
            }
            *n = take as u8;
        }
        (self.means, self.keep) = (means, keep as u16);
    }

    /// Channel `k`'s days, `kept` of them.
    fn days(&self, k: usize, kept: u8) -> &[u16] {
        &self.means[k * usize::from(self.keep)..][..usize::from(kept)]
    }

    /// Channel `k`'s row, to change.
    fn row(&mut self, k: usize) -> &mut [u16] {
        let keep = usize::from(self.keep);
        &mut self.means[k * keep..][..keep]
    }
}

impl DayLevel {
    /// `past`'s days as means, oldest first.
    fn past_means<'a>(&self, past: &'a [u16]) -> impl Iterator<Item = f64> + 'a {
        let reference = f64::from(self.reference);
        past.iter().map(move |offset| reference + half::f16::from_bits(*offset).to_f64())
    }

    /// The robust z of the open day's mean against the `past` days, once there are `min` of
    /// them.
    fn z(&self, past: &[u16], min: usize) -> Option<f64> {
        if self.count == 0 || past.len() < min.max(2) {
            return None;
        }
        let x = self.sum / f64::from(self.count);
        let mut sorted: Vec<f64> = self.past_means(past).collect();
        let centre = median(&mut sorted);
        let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - centre).abs()).collect();
        // 1.4826 turns a normal's median absolute deviation into its σ; a floor of 10⁻⁴ of the
        // level keeps a channel that never moves (or f32's rounding) from dividing by nothing.
        let scale = (1.4826 * median(&mut deviations)).max(1e-4 * centre.abs()).max(1e-9);
        Some((x - centre) / scale)
    }

    /// Closes the open day: its mean joins the channel's `row` of past days (`kept` of them)
    /// when it was a whole day's worth, and the past is kept again as offsets from its new
    /// median.
    fn close(&mut self, whole: bool, row: &mut [u16], kept: &mut u8) {
        if whole && self.count > 0 && !row.is_empty() {
            let mean = self.sum / f64::from(self.count);
            if *kept == 0 {
                self.reference = mean as f32;
            }
            if usize::from(*kept) == row.len() {
                row.copy_within(1.., 0);
                *kept -= 1;
            }
            row[usize::from(*kept)] = half_offset(self.reference, mean);
            *kept += 1;
            let past = &mut row[..usize::from(*kept)];
            // Kept again from the median when it moved far from the reference (each time
            // costs a rounding of every day, so not every day).
            let mut means: Vec<f64> = self.past_means(past).collect();
            let centre = median(&mut means);
            let mut deviations: Vec<f64> = means.iter().map(|m| (m - centre).abs()).collect();
            let scale = 1.4826 * median(&mut deviations);
            if (centre - f64::from(self.reference)).abs() > 8.0 * scale.max(1e-4 * centre.abs()) {
                let means: Vec<f64> = self.past_means(past).collect();
                self.reference = centre as f32;
                for (day, mean) in past.iter_mut().zip(means) {
                    *day = half_offset(self.reference, mean);
                }
            }
        }
        self.sum = 0.0;
        self.count = 0;
    }
}

/// `value` as a day scale keeps it: its offset from `reference`, in half precision.
fn half_offset(reference: f32, value: f64) -> u16 {
    let max = f64::from(half::f16::MAX);
    half::f16::from_f64((value - f64::from(reference)).clamp(-max, max)).to_bits()
}

/// A channel's name in two bytes: a standard channel's place in [`Channel::ALL`], else the
/// place of an extra channel's name in this process's table of extra names, where each name
/// is kept once (for every motor of every judge), at most [`MAX_EXTRA_NAMES`] of them.
/// Checkpointed as the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChannelName(u16);

/// Extra channel names a process keeps; an extra channel past them is not judged.
const MAX_EXTRA_NAMES: usize = 4096;

/// The extra names, in order, and each one's number.
type ExtraNames = (Vec<&'static str>, HashMap<&'static str, u16>);

fn extra_names() -> &'static RwLock<ExtraNames> {
    static NAMES: OnceLock<RwLock<ExtraNames>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

impl ChannelName {
    /// The standard channel at `Channel::ALL[i]`.
    fn standard(i: usize) -> Self {
        Self(i as u16)
    }

    /// The name's number; `None` for a new extra name when the table is full.
    fn of(name: &str) -> Option<Self> {
        if let Some(i) = Channel::ALL.iter().position(|c| c.name() == name) {
            return Some(Self::standard(i));
        }
        if let Some(i) = extra_names().read().ok()?.1.get(name) {
            return Some(Self(*i));
        }
        let mut table = extra_names().write().ok()?;
        if let Some(i) = table.1.get(name) {
            return Some(Self(*i));
        }
        if table.0.len() >= MAX_EXTRA_NAMES {
            return None;
        }
        // Kept for the process's life: the table is bounded, and every motor shares it.
        let kept: &'static str = Box::leak(name.into());
        let i = (Channel::ALL.len() + table.0.len()) as u16;
        table.0.push(kept);
        table.1.insert(kept, i);
        Some(Self(i))
    }

    fn name(self) -> &'static str {
        match Channel::ALL.get(usize::from(self.0)) {
            Some(c) => c.name(),
            None => extra_names()
                .read()
                .ok()
                .and_then(|t| t.0.get(usize::from(self.0) - Channel::ALL.len()).copied())
                .unwrap_or("unknown"),
        }
    }
}

impl Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(deserializer)?;
        Self::of(&name).ok_or_else(|| serde::de::Error::custom(format!("more than {MAX_EXTRA_NAMES} extra channels")))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// One channel of one motor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChannelShift {
    name: ChannelName,
    base: Baseline,
    /// Event time kept out of the baseline in a row, ms (saturating: a `relearn` beyond 49
    /// days never comes).
    gated_ms: u32,
    profile: Option<Box<Profile>>,
    /// Whether the channel follows the day (learnt while the motor reports often enough).
    cycle: DayCycle,
    /// The open window's sum and count.
    sum: f64,
    count: u32,
    /// The open window's sum of the profile's slack ([`Profile::slack_at`]).
    slack: f32,
    /// The open window's sum of squares, and the usual standard error of a window's mean from
    /// its readings' own spread (learnt like the baseline): a floor under the baseline's
    /// spread, which a short baseline of a few windows can underestimate.
    squares: f64,
    noise: Noise,
    /// The channel's |z| in the last window (the profile learns only while it is normal).
    last_z: f32,
    /// The open window's smallest and largest judged reading, and the baseline of ranges
    /// (only when transients are judged).
    range: Option<Box<Range>>,
    /// The day scale: the open day, and how many past days the motor's [`DayPast`] keeps of
    /// the channel.
    day: DayLevel,
    days_kept: u8,
}

/// Hotelling's T² state: the correlation of the channels' z vectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Correlation {
    /// The channels it is over: bit `i` for the motor's channel `i` (its first 64 channels).
    dims: u64,
    /// The upper triangle, column by column ([`tri`]).
    r: Box<[f32]>,
    /// Windows learnt.
    n: u32,
}

/// Where `(i, j)` of a symmetric matrix is in its upper triangle, column by column.
fn tri(i: usize, j: usize) -> usize {
    let (i, j) = if i <= j { (i, j) } else { (j, i) };
    j * (j + 1) / 2 + i
}

/// A motor's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MotorShift {
    /// Mean event-time gap, ms (0 until two readings).
    interval_ms: f64,
    /// The newest reading's event time (`i64::MIN`: none yet).
    last_ms: i64,
    /// The open window: start and length, ms (length 0: none open).
    window_start: i64,
    window_len: u32,
    channels: Vec<ChannelShift>,
    correlation: Correlation,
    /// The open day (days since the epoch, UTC), and its readings so far (0: none open).
    day: i32,
    day_readings: u32,
    /// A whole day's readings: the most of recent days (decaying by a `days`th a day).
    usual_day: f32,
    /// A transient's score, held for this many more windows.
    transient_score: f32,
    transient_hold: u32,
    /// The day scale's past days.
    past: DayPast,
}

/// A scored window, for the alert tracker and the health board.
#[derive(Debug, Clone)]
pub struct ShiftWindow {
    /// Which scale: [`SHIFT`] (the motor's windows) or [`SHIFT_DAY`].
    pub kind: &'static str,
    /// The motor.
    pub motor_id: String,
    /// Its site.
    pub site_id: String,
    /// Window start and end, ms.
    pub window_start_ms: i64,
    /// Window end, ms.
    pub window_end_ms: i64,
    /// The score, once the baseline is filled.
    pub score: Option<f64>,
    /// Features, sorted by name.
    pub features: Vec<(String, f64)>,
}

impl ShiftWindow {
    /// As the alert tracker and the tables take a window.
    pub fn as_score(&self) -> WindowScore<'_> {
        WindowScore {
            motor_id: &self.motor_id,
            site_id: &self.site_id,
            window_start_ms: self.window_start_ms,
            window_end_ms: self.window_end_ms,
            score: self.score,
            features: self.features.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        }
    }
}

/// A checkpoint section of the judge.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShiftSnapshot {
    motors: Vec<(String, MotorShift)>,
    tracker: TrackerState,
    #[serde(default)]
    day_tracker: Option<TrackerState>,
}

/// The shift judge of one engine's motors.
#[derive(Debug)]
pub struct ShiftMonitor {
    config: ShiftConfig,
    /// By the motor's shared id ([`crate::ids`]); idle ones cold ([`crate::cold`]).
    motors: crate::cold::Tiered<MotorShift>,
    tracker: AlertTracker,
    day_tracker: AlertTracker,
}

impl ShiftMonitor {
    /// A judge with no motors yet.
    pub fn new(config: ShiftConfig) -> Self {
        let tracker = AlertTracker::new(SHIFT, config.alerts);
        // A day is a long window: one opens, one closes.
        let day_alerts = AlertOptions { open_windows: 1, close_windows: 1, ..config.alerts };
        Self {
            config,
            motors: crate::cold::Tiered::new(),
            tracker,
            day_tracker: AlertTracker::new(SHIFT_DAY, day_alerts),
        }
    }

    /// Alerts open at `open_above`.
    pub fn open_above(&self) -> f64 {
        self.config.alerts.open_above
    }

    /// From now on, motors idle `spill.after_ms` keep their state in a spill file (see
    /// [`crate::cold`]); set before the first reading.
    pub fn spill_to(&mut self, spill: &crate::cold::ColdSpill) -> Result<(), crate::StreamError> {
        self.motors.spill_to(spill)
    }

    /// Motors held, and how many of them are in memory.
    pub fn motors_held(&self) -> (usize, usize) {
        (self.motors.len(), self.motors.hot_len())
    }

    /// Takes in a batch of readings (telemetry schema) at processing time `now_ms`: the
    /// windows it closed, scored, and the alert events they caused. Fails only if the spill
    /// file of cold motors does.
    pub fn observe(
        &mut self,
        batch: &RecordBatch,
        now_ms: i64,
    ) -> Result<(Vec<ShiftWindow>, Vec<AlertEvent>), crate::StreamError> {
        let Some((motors, sites, ts)) = crate::schema::keys(batch) else { return Ok(Default::default()) };
        let columns: Vec<_> = Channel::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| (ChannelName::standard(i), crate::schema::channel_values(batch, *c)))
            .collect();
        let extras = crate::schema::extras(batch);
        let mut windows = Vec::new();
        let mut values: Vec<(ChannelName, f64)> = Vec::new();
        for row in 0..batch.num_rows() {
            let motor = motors.value(row);
            let t = ts.value(row);
            values.clear();
            for (name, column) in &columns {
                if let Some(c) = column
                    && c.is_valid(row)
                    && c.value(row).is_finite()
                {
                    values.push((*name, c.value(row)));
                }
            }
            if let Some((map, keys, vals)) = extras {
                let offsets = map.value_offsets();
                for i in offsets[row] as usize..offsets[row + 1] as usize {
                    if vals.is_valid(i)
                        && vals.value(i).is_finite()
                        && let Some(name) = ChannelName::of(keys.value(i))
                    {
                        values.push((name, vals.value(i)));
                    }
                }
            }
            let m = self.motors.entry(motor, now_ms, || MotorShift {
                interval_ms: 0.0,
                last_ms: i64::MIN,
                window_start: 0,
                window_len: 0,
                channels: Vec::new(),
                correlation: Correlation::default(),
                day: 0,
                day_readings: 0,
                usual_day: 0.0,
                transient_score: 0.0,
                transient_hold: 0,
                past: DayPast::default(),
            })?;
            take(&self.config, m, (motor, sites.value(row)), t, &values, &mut windows);
        }
        let mut events = Vec::new();
        for w in &windows {
            let tracker = if w.kind == SHIFT_DAY { &mut self.day_tracker } else { &mut self.tracker };
            if let Some(e) = tracker.observe(w.as_score(), now_ms) {
                events.push(e);
            }
        }
        // The alert trackers keep the open alerts: any idle motor may go cold.
        self.motors.sweep(now_ms, |_| true)?;
        Ok((windows, events))
    }

    /// The state of the motors `include` accepts, for a checkpoint (sorted by motor).
    pub fn snapshot(&self, include: &dyn Fn(&str) -> bool) -> Result<ShiftSnapshot, crate::StreamError> {
        Ok(ShiftSnapshot {
            motors: self.motors.collect(include)?,
            tracker: self.tracker.snapshot(include),
            day_tracker: Some(self.day_tracker.snapshot(include)),
        })
    }

    /// Takes over [`Self::snapshot`]'s motors at processing time `now_ms`.
    pub fn adopt(&mut self, snapshot: ShiftSnapshot, now_ms: i64) -> Result<(), crate::StreamError> {
        self.motors.adopt(snapshot.motors, now_ms)?;
        if let Some(day) = snapshot.day_tracker {
            self.day_tracker.restore(day, true)?;
        }
        self.tracker.restore(snapshot.tracker, true)
    }

    /// Forgets every motor `drop` accepts.
    pub fn drop_motors(&mut self, drop: &dyn Fn(&str) -> bool) {
        self.motors.retain(|m| !drop(m));
        self.tracker.drop_motors(drop);
        self.day_tracker.drop_motors(drop);
    }

    /// Open shift alerts (both scales).
    pub fn open_count(&self) -> usize {
        self.tracker.open_count() + self.day_tracker.open_count()
    }

    /// Open shift alerts per scale's query ([`SHIFT`], [`SHIFT_DAY`]).
    pub fn open_by_query(&self) -> [(&'static str, usize); 2] {
        [(SHIFT, self.tracker.open_count()), (SHIFT_DAY, self.day_tracker.open_count())]
    }
}

/// Takes one reading of motor `m` (id and site) in; the windows it closed (the motor's
/// window, its day), scored, into `closed`.
fn take(
    config: &ShiftConfig,
    m: &mut MotorShift,
    motor: (&str, &str),
    t: i64,
    values: &[(ChannelName, f64)],
    closed: &mut Vec<ShiftWindow>,
) {
    if m.last_ms != i64::MIN {
        if t < m.last_ms {
            return; // out of order: the judge moves forward only
        }
        let gap = (t - m.last_ms) as f64;
        if gap > 0.0 {
            m.interval_ms = if m.interval_ms == 0.0 { gap } else { m.interval_ms + 0.1 * (gap - m.interval_ms) };
        }
    }
    m.last_ms = t;
    let today = t.div_euclid(DAY) as i32;
    if config.days > 0 {
        if m.day_readings > 0 && today > m.day {
            closed.push(close_day(config, m, motor, m.day));
            (m.day, m.day_readings) = (today, 1);
        } else if m.day_readings > 0 {
            m.day_readings += 1;
        } else {
            (m.day, m.day_readings) = (today, 1);
        }
    }
    let start = m.window_start;
    if m.window_len == 0 {
        (m.window_start, m.window_len) = (t, window_len(config, m.interval_ms));
    } else if t >= start + i64::from(m.window_len) {
        closed.push(close(config, m, motor, start, i64::from(m.window_len)));
        (m.window_start, m.window_len) = (t, window_len(config, m.interval_ms));
    }
    let daily = config.seasonal && m.interval_ms > 0.0 && m.interval_ms <= 30.0 * 60_000.0;
    let basis = if daily { DayCycle::basis(t) } else { [0.0; 4] };
    for (k, (name, v)) in values.iter().enumerate() {
        // A motor sends the same channels in the same order: the k-th value is usually its
        // k-th channel.
        let known = match m.channels.get(k) {
            Some(c) if c.name == *name => Some(k),
            _ => m.channels.iter().position(|c| c.name == *name),
        };
        let i = match known {
            Some(i) => i,
            None => {
                // Grown by one: a motor's channels are set once, and a doubled vector would
                // leave room for as many again (about 180 bytes a channel).
                m.channels.reserve_exact(1);
                m.channels.push(ChannelShift {
                    name: *name,
                    base: Baseline::default(),
                    gated_ms: 0,
                    profile: None,
                    cycle: DayCycle::default(),
                    sum: 0.0,
                    count: 0,
                    slack: 0.0,
                    squares: 0.0,
                    noise: Noise::default(),
                    last_z: 0.0,
                    range: None,
                    day: DayLevel::default(),
                    days_kept: 0,
                });
                m.correlation = Correlation::default();
                m.channels.len() - 1
            }
        };
        let c = &mut m.channels[i];
        if config.days > 0 {
            c.day.sum += v;
            c.day.count += 1;
        }
        if daily {
            c.cycle.learn(*v, &basis, m.interval_ms);
        }
        let judged = match &mut c.profile {
            Some(p) => {
                let judged = p.judged(*v, t);
                // Until the profile is in use, the raw z says nothing of whether a reading is
                // normal for its hour (a shift's load change is beyond any gate): it learns
                // from every reading; once in use, only from the normal ones.
                let learns = !p.active || f64::from(c.last_z) < config.gate;
                match if learns { p.learn(&c.cycle, *v, t, m.interval_ms) } else { ProfileTurn::Same } {
                    ProfileTurn::Switched => {
                        // Raw and residual values are not comparable: the channel starts afresh.
                        c.base = Baseline::default();
                        c.sum = 0.0;
                        c.count = 0;
                        c.slack = 0.0;
                        c.squares = 0.0;
                        m.correlation = Correlation::default();
                        continue;
                    }
                    // Not in use: the channel was judged raw, and goes on so.
                    ProfileTurn::Dropped => c.profile = None,
                    ProfileTurn::Same => c.slack += p.slack_at(t) as f32,
                }
                judged
            }
            None => {
                // A profile comes when a day of readings shows the day in the channel's
                // harmonics, and starts from them.
                if daily && f64::from(c.cycle.n) * m.interval_ms >= DAY as f64 && c.cycle.daily_share() >= GROW_SHARE {
                    c.profile = Some(Box::new(Profile::from_cycle(&c.cycle, t)));
                }
                *v
            }
        };
        if config.transient_above.is_some() {
            c.range.get_or_insert_default().take(judged, c.count == 0);
        }
        c.sum += judged;
        c.squares += judged * judged;
        c.count += 1;
    }
}

/// Closes the motor's day `day` (days since the epoch): scores it against the days before and
/// keeps its means.
fn close_day(config: &ShiftConfig, m: &mut MotorShift, (motor, site): (&str, &str), day: i32) -> ShiftWindow {
    let keep = (config.days as usize).min(usize::from(u8::MAX));
    // Half of a day's usual readings make it a whole day: the most of recent days, or before
    // any day closed, a day's worth at the motor's interval (a first day, begun part-way, is
    // then no whole day).
    let readings = f64::from(m.day_readings);
    let usual = if m.usual_day > 0.0 {
        f64::from(m.usual_day)
    } else if m.interval_ms > 0.0 {
        DAY as f64 / m.interval_ms
    } else {
        f64::INFINITY
    };
    m.usual_day = (f64::from(m.usual_day) * (1.0 - 1.0 / f64::from(config.days.max(1)))).max(readings) as f32;
    let mut kept: Vec<u8> = m.channels.iter().map(|c| c.days_kept).collect();
    m.past.fit(m.channels.len(), keep, &mut kept);
    let mut score: Option<f64> = None;
    let mut features = Vec::new();
    let mut judged_days = 0;
    for (k, (c, kept)) in m.channels.iter_mut().zip(kept).enumerate() {
        c.days_kept = kept;
        let whole = f64::from(c.day.count) >= 0.5 * usual;
        if whole && let Some(z) = c.day.z(m.past.days(k, c.days_kept), keep / 2) {
            score = Some(score.map_or(z.abs(), |s| s.max(z.abs())));
            if z.abs() >= 2.0 {
                features.push((format!("z.{}", c.name.name()), z));
            }
            judged_days = judged_days.max(usize::from(c.days_kept));
        }
        c.day.close(whole, m.past.row(k), &mut c.days_kept);
    }
    features.push(("days".to_string(), judged_days as f64));
    features.push(("interval_s".to_string(), m.interval_ms / 1000.0));
    features.sort_by(|a, b| a.0.cmp(&b.0));
    ShiftWindow {
        kind: SHIFT_DAY,
        motor_id: motor.to_string(),
        site_id: site.to_string(),
        window_start_ms: i64::from(day) * DAY,
        window_end_ms: (i64::from(day) + 1) * DAY,
        score,
        features,
    }
}

/// A window's length for a motor reporting every `interval_ms`.
fn window_len(config: &ShiftConfig, interval_ms: f64) -> u32 {
    // At most 49 days (a motor reporting every five days or less).
    (interval_ms * f64::from(config.readings_per_window))
        .ceil()
        .max(config.min_window_ms as f64)
        .min(f64::from(u32::MAX)) as u32
}

/// Closes the motor's window `[start, start + len)`: scores it and learns from it.
fn close(config: &ShiftConfig, m: &mut MotorShift, (motor, site): (&str, &str), start: i64, len: i64) -> ShiftWindow {
    let min = config.min_baseline_windows;
    let means: Vec<Option<f64>> =
        m.channels.iter().map(|c| (c.count > 0).then(|| c.sum / f64::from(c.count))).collect();
    let zs: Vec<Option<f64>> = m
        .channels
        .iter()
        .zip(&means)
        .map(|(c, x)| x.and_then(|x| c.base.z(x, f64::from(c.slack) / f64::from(c.count), noise_floor(c, min), min)))
        .collect();
    let max_z = zs.iter().flatten().map(|z| z.abs()).fold(None, |a: Option<f64>, z| Some(a.map_or(z, |a| a.max(z))));
    let dims = dims(&zs);
    let t2 = if config.t2 { hotelling(m, &zs, dims, min) } else { None };
    // Transients: one-sided z of each channel's range (two readings at least).
    let peaks: Vec<Option<f64>> = m
        .channels
        .iter()
        .map(|c| {
            let r = c.range.as_ref().filter(|_| config.transient_above.is_some() && c.count >= 2)?;
            r.base.z(r.hi - r.lo, 0.0, 0.0, min)
        })
        .collect();
    let peak = peaks.iter().flatten().fold(0.0_f64, |a, z| a.max(*z));
    if let Some(above) = config.transient_above
        && peak >= above
    {
        (m.transient_score, m.transient_hold) = (peak as f32, config.alerts.open_windows);
    }
    let held = if m.transient_hold > 0 {
        m.transient_hold -= 1;
        Some(f64::from(m.transient_score))
    } else {
        None
    };
    let score = max_z.map(|z| t2.map_or(z, |t| z.max(t))).map(|s| held.map_or(s, |h| s.max(h)));
    let anomalous = score.is_some_and(|s| s >= config.alerts.open_above);
    // Learn: the window's normal channels, unless the window as a whole is anomalous.
    let span = (config.baseline_ms as f64).max(f64::from(min) * len as f64);
    let alpha = len as f64 / span;
    for ((c, x), z) in m.channels.iter_mut().zip(&means).zip(&zs) {
        c.last_z = z.map_or(0.0, f64::abs) as f32;
        let Some(x) = x else { continue };
        if let Some(r) = c.range.as_mut().filter(|_| config.transient_above.is_some() && c.count >= 2) {
            let range = r.hi - r.lo;
            if r.base.z(range, 0.0, 0.0, min).is_none_or(|z| z < config.gate) {
                r.base.learn(range, alpha, min);
            }
        }
        if z.is_none() || (f64::from(c.last_z) < config.gate && !anomalous) {
            c.gated_ms = 0;
            c.base.learn(*x, alpha, min);
            if c.count >= 2 {
                let n = f64::from(c.count);
                let variance = ((c.squares - c.sum * c.sum / n) / (n - 1.0)).max(0.0);
                c.noise.learn((variance / n).sqrt(), alpha);
            }
        } else {
            c.gated_ms = c.gated_ms.saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
            if i64::from(c.gated_ms) >= config.relearn_ms {
                c.base = Baseline::default();
            }
        }
    }
    if config.t2 && !anomalous {
        learn_correlation(m, &zs, dims, config.gate, alpha);
    }
    let mut features = vec![
        ("interval_s".to_string(), m.interval_ms / 1000.0),
        ("readings".to_string(), f64::from(m.channels.iter().map(|c| c.count).max().unwrap_or(0))),
        ("window_s".to_string(), len as f64 / 1000.0),
    ];
    if let Some(t2) = t2 {
        features.push(("t2".to_string(), t2));
    }
    for ((c, z), peak) in m.channels.iter().zip(&zs).zip(&peaks) {
        if let Some(z) = z.filter(|z| z.abs() >= 2.0) {
            features.push((format!("z.{}", c.name.name()), z));
        }
        if let Some(p) = peak.filter(|p| *p >= 2.0) {
            features.push((format!("peak.{}", c.name.name()), p));
        }
    }
    features.sort_by(|a, b| a.0.cmp(&b.0));
    for c in &mut m.channels {
        c.sum = 0.0;
        c.count = 0;
        c.slack = 0.0;
        c.squares = 0.0;
    }
    ShiftWindow {
        kind: SHIFT,
        motor_id: motor.to_string(),
        site_id: site.to_string(),
        window_start_ms: start,
        window_end_ms: start + len,
        score,
        features,
    }
}

/// The floor under a channel's spread: the usual standard error of its window means from the
/// readings' own spread, once learnt.
fn noise_floor(c: &ChannelShift, min: u32) -> f64 {
    if c.noise.n >= min { f64::from(c.noise.se) } else { 0.0 }
}

/// The usual standard error of a channel's window mean, from its readings' own spread: a
/// moving average (the baseline's weights), in 8 bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Noise {
    n: u32,
    se: f32,
}

impl Noise {
    fn learn(&mut self, se: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        let a = (1.0 / f64::from(self.n)).max(alpha);
        self.se += (a * (se - f64::from(self.se))) as f32;
    }
}

/// The channels with a z this window (of the first 64), as correlation dimensions.
fn dims(zs: &[Option<f64>]) -> u64 {
    zs.iter().take(64).enumerate().filter(|(_, z)| z.is_some()).fold(0, |dims, (i, _)| dims | 1 << i)
}

/// The channels of `dims`, in order.
fn dim_list(dims: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| dims & (1 << i) != 0)
}

/// Hotelling's T² of the window's z vector against the learnt correlation (shrunk 10 % towards
/// the identity), as a normal-equivalent z by Wilson–Hilferty; `None` with fewer than two
/// channels or before the correlation has `min` windows (and 3 per dimension).
fn hotelling(m: &MotorShift, zs: &[Option<f64>], dims: u64, min: u32) -> Option<f64> {
    let k = dims.count_ones() as usize;
    let c = &m.correlation;
    if k < 2 || c.dims != dims || c.n < min.max(3 * k as u32) {
        return None;
    }
    let u: Vec<f64> = dim_list(dims).map(|i| zs[i].expect("a dimension has a z")).collect();
    let a: Vec<Vec<f64>> = (0..k)
        .map(|i| (0..k).map(|j| 0.9 * f64::from(c.r[tri(i, j)]) + if i == j { 0.1 } else { 0.0 }).collect())
        .collect();
    let y = crate::anomaly::solve(a, u.clone())?;
    let q: f64 = u.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>().max(0.0);
    let k = k as f64;
    let v = 2.0 / (9.0 * k);
    Some(((q / k).cbrt() - (1.0 - v)) / v.sqrt())
}

/// Learns the window's z vector into the correlation, when every channel is within the gate.
fn learn_correlation(m: &mut MotorShift, zs: &[Option<f64>], dims: u64, gate: f64, alpha: f64) {
    let k = dims.count_ones() as usize;
    if k < 2 {
        return;
    }
    let c = &mut m.correlation;
    if c.dims != dims {
        *c = Correlation { r: identity(k), dims, n: 0 };
    }
    let u: Vec<f64> = dim_list(dims).map(|i| zs[i].expect("a dimension has a z")).collect();
    if u.iter().any(|z| z.abs() >= gate) {
        return;
    }
    c.n = c.n.saturating_add(1);
    let a = (1.0 / f64::from(c.n)).max(alpha);
    for j in 0..k {
        for i in 0..=j {
            let r = &mut c.r[tri(i, j)];
            *r += (a * (u[i] * u[j] - f64::from(*r))) as f32;
        }
    }
}

/// The identity's upper triangle ([`tri`]).
fn identity(k: usize) -> Box<[f32]> {
    let mut r = vec![0.0; k * (k + 1) / 2];
    for i in 0..k {
        r[tri(i, i)] = 1.0;
    }
    r.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertState;

    /// Readings of current and temperature: (motor, ms, current, temperature).
    fn batch(rows: &[(&str, i64, f64, f64)]) -> RecordBatch {
        crate::conform::current_and_temperature(rows)
    }

    /// Deterministic noise in [-0.5, 0.5).
    fn noise(i: i64, seed: i64) -> f64 {
        (((i * 7919 + seed * 104_729) % 1000 + 1000) % 1000) as f64 / 1000.0 - 0.5
    }

    /// A motor reporting every `step_ms` for `days`, whose current steps up by 3 A (against
    /// ±0.5 A noise) from `fault_from` to `fault_until`; its healthy twin beside it. Returns
    /// the events and the windows' lengths.
    fn run(step_ms: i64, days: i64, fault: (i64, i64)) -> (Vec<AlertEvent>, Vec<ShiftWindow>) {
        let mut judge = ShiftMonitor::new(ShiftConfig::default());
        let (mut events, mut windows) = (Vec::new(), Vec::new());
        for i in 0..(days * DAY / step_ms) {
            let t = i * step_ms;
            let step = if (fault.0..fault.1).contains(&t) { 3.0 } else { 0.0 };
            let rows = [
                ("faulty", t, 10.0 + step + noise(i, 1), 40.0 + noise(i, 2)),
                ("twin", t, 10.0 + noise(i, 3), 40.0 + noise(i, 4)),
            ];
            let (w, e) = judge.observe(&batch(&rows), t).unwrap();
            windows.extend(w.into_iter().filter(|w| w.kind == SHIFT));
            events.extend(e.into_iter().filter(|e| e.query == SHIFT));
        }
        (events, windows)
    }

    #[test]
    fn the_same_settings_find_a_step_at_one_reading_a_second_and_one_every_ten_minutes() {
        for (step_ms, days, fault, window_s) in
            [(1_000, 1, (12 * HOUR, 13 * HOUR), 10.0), (600_000, 40, (30 * DAY, 32 * DAY), 6_000.0)]
        {
            let (events, windows) = run(step_ms, days, fault);
            assert!(events.iter().all(|e| e.motor_id == "faulty"), "the twin is never alerted: {events:?}");
            let open: Vec<_> = events.iter().filter(|e| e.state == AlertState::Open).collect();
            assert_eq!(open.len(), 1, "one alert, for the step ({step_ms} ms): {events:?}");
            assert!(
                open[0].window_start_ms >= fault.0 && open[0].window_start_ms < fault.0 + 4 * (window_s as i64) * 1000
            );
            assert!(open[0].features["z.current_a"] >= 5.0, "the alert names the channel: {:?}", open[0].features);
            let closed = events.iter().find(|e| e.state == AlertState::Close).expect("closed after the step");
            assert!(closed.window_start_ms >= fault.1);
            let last = windows.last().unwrap();
            let len = last.features.iter().find(|f| f.0 == "window_s").unwrap().1;
            assert!((len - window_s).abs() <= window_s * 0.02, "windows sized from the interval: {len} s");
        }
    }

    #[test]
    fn a_daily_cycle_is_learnt_and_an_excursion_from_it_is_seen() {
        // Temperature with a ±8 °C daily cycle, every 10 minutes for 20 days; on day 15 it
        // stays 4 °C above the hour's usual level for 8 hours: within the day's range, so only
        // a daily profile sees it.
        let step = 600_000;
        let fault = (15 * DAY + 2 * HOUR, 15 * DAY + 10 * HOUR);
        let run = |seasonal: bool| {
            let mut judge = ShiftMonitor::new(ShiftConfig { seasonal, ..Default::default() });
            let mut events = Vec::new();
            for i in 0..(20 * DAY / step) {
                let t = i * step;
                let cycle = 8.0 * (2.0 * std::f64::consts::PI * (t % DAY) as f64 / DAY as f64).sin();
                let excursion = if (fault.0..fault.1).contains(&t) { 4.0 } else { 0.0 };
                let rows = [("m", t, 10.0 + 0.1 * noise(i, 5), 30.0 + cycle + excursion + 0.6 * noise(i, 6))];
                events.extend(judge.observe(&batch(&rows), t).unwrap().1.into_iter().filter(|e| e.query == SHIFT));
            }
            let active = judge
                .motors
                .get("m")
                .unwrap()
                .unwrap()
                .channels
                .iter()
                .any(|c| c.profile.as_ref().is_some_and(|p| p.active));
            (active, events)
        };
        let (active, events) = run(true);
        assert!(active, "the cycle is found");
        assert!(run(false).1.is_empty(), "without the profile the excursion is lost in the cycle");
        let open: Vec<_> = events.iter().filter(|e| e.state == AlertState::Open).collect();
        assert!(!open.is_empty(), "the excursion is alerted");
        assert!(
            open.iter().all(|e| e.window_start_ms >= fault.0 - HOUR && e.window_start_ms < fault.1),
            "and nothing else: {open:?}"
        );
    }

    #[test]
    fn a_channel_without_a_day_keeps_no_profile_and_gets_one_when_a_day_appears() {
        // Every 10 minutes for 20 days: current steady throughout; temperature steady for 8
        // days, then with a ±6 °C daily cycle (a building's heating switched to day mode).
        let step = 600_000;
        let mut judge = ShiftMonitor::new(ShiftConfig::default());
        let profiles = |j: &ShiftMonitor| -> Vec<(&'static str, Option<bool>)> {
            j.motors
                .get("m")
                .unwrap()
                .unwrap()
                .channels
                .iter()
                .map(|c| (c.name.name(), c.profile.as_ref().map(|p| p.active)))
                .collect()
        };
        let mut after_trial = Vec::new();
        for i in 0..(20 * DAY / step) {
            let t = i * step;
            let cycle =
                if t >= 8 * DAY { 6.0 * (std::f64::consts::TAU * (t % DAY) as f64 / DAY as f64).sin() } else { 0.0 };
            let rows = [("m", t, 10.0 + 0.1 * noise(i, 17), 30.0 + cycle + 0.3 * noise(i, 18))];
            judge.observe(&batch(&rows), t).unwrap();
            if t == DAY / 2 {
                assert_eq!(profiles(&judge), [("current_a", None), ("temperature_c", None)], "no day seen yet");
            }
            if t == 7 * DAY {
                after_trial = profiles(&judge);
            }
        }
        assert_eq!(after_trial, [("current_a", None), ("temperature_c", None)], "no day: no profile");
        assert_eq!(
            profiles(&judge),
            [("current_a", None), ("temperature_c", Some(true))],
            "the day that appeared is learnt and judged on"
        );
        // The state goes through a checkpoint as it is.
        let bytes = crate::checkpoint::to_versioned_bytes(&judge.snapshot(&|_| true).unwrap()).unwrap();
        let mut restored = ShiftMonitor::new(ShiftConfig::default());
        restored.adopt(crate::checkpoint::from_versioned_bytes(&bytes).unwrap(), 0).unwrap();
        assert_eq!(profiles(&restored), profiles(&judge));
    }

    #[test]
    fn day_means_kept_in_half_precision_stay_within_a_thousandth_of_their_spread() {
        // Day means near 1480 (rpm) spread by about 2, and one far day, through 60 day closes.
        let mut day = DayLevel::default();
        let (mut row, mut days) = ([0u16; 28], 0u8);
        let mut kept = std::collections::VecDeque::new();
        for d in 0..60 {
            let mean = 1480.0 + 2.0 * noise(d, 19) + if d == 45 { 300.0 } else { 0.0 };
            (day.sum, day.count) = (mean * 48.0, 48);
            day.close(true, &mut row, &mut days);
            kept.push_back(mean);
            if kept.len() > 28 {
                kept.pop_front();
            }
            for (exact, read) in kept.iter().zip(day.past_means(&row[..usize::from(days)])) {
                let tolerance = if (exact - 1480.0_f64).abs() > 100.0 { 0.3 } else { 0.002 };
                assert!((exact - read).abs() <= tolerance, "day {d}: {exact} kept as {read}");
            }
        }
    }

    #[test]
    fn the_day_block_keeps_each_channels_newest_days_when_channels_or_days_change() {
        let mut past = DayPast::default();
        let (mut levels, mut kept) = (vec![DayLevel::default(), DayLevel::default()], vec![0u8; 2]);
        past.fit(2, 4, &mut kept);
        for day in 0..6u16 {
            for (k, (level, n)) in levels.iter_mut().zip(&mut kept).enumerate() {
                (level.sum, level.count) = (f64::from(100 * k as u16 + day), 1);
                level.close(true, past.row(k), n);
            }
        }
        let means = |past: &DayPast, kept: &[u8], levels: &[DayLevel], k: usize| -> Vec<f64> {
            levels[k].past_means(past.days(k, kept[k])).collect()
        };
        assert_eq!(means(&past, &kept, &levels, 1), [102.0, 103.0, 104.0, 105.0], "the newest four, oldest first");
        // A third channel, and fewer days: each channel keeps its newest three.
        levels.push(DayLevel::default());
        kept.push(0);
        past.fit(3, 3, &mut kept);
        assert_eq!(past.means.len(), 9);
        assert_eq!(means(&past, &kept, &levels, 0), [3.0, 4.0, 5.0]);
        assert_eq!(means(&past, &kept, &levels, 1), [103.0, 104.0, 105.0]);
        assert!(means(&past, &kept, &levels, 2).is_empty());
    }

    #[test]
    fn a_shift_load_ramp_is_no_fault_once_its_day_is_learnt() {
        // Every minute for 6 days: a two-shift load ramping over 2 hours from 06:00 and back
        // from 20:00 (corners half-way between the profile's hours), ±0.3 % noise. The first
        // day has no profile and alerts at the ramps; from then on the profile, with its slack
        // between the hours, explains them. A 10 % current step on day 5 is still found.
        let step = 60_000;
        let fault = (4 * DAY + 13 * HOUR, 4 * DAY + 15 * HOUR);
        let mut judge = ShiftMonitor::new(ShiftConfig::default());
        let mut events = Vec::new();
        for i in 0..(6 * DAY / step) {
            let t = i * step;
            let h = (t % DAY) as f64 / HOUR as f64;
            let load = 0.35 + 0.5 * (((h - 6.0) / 2.0).clamp(0.0, 1.0) - ((h - 20.0) / 2.0).clamp(0.0, 1.0));
            let current = 40.0 * (0.25 + 0.75 * load) * if (fault.0..fault.1).contains(&t) { 1.1 } else { 1.0 };
            let rows = [("m", t, current * (1.0 + 0.006 * noise(i, 10)), 40.0 + 0.2 * noise(i, 11))];
            events.extend(judge.observe(&batch(&rows), t).unwrap().1);
        }
        let open: Vec<_> = events.iter().filter(|e| e.state == AlertState::Open).collect();
        let after_day_one: Vec<_> = open.iter().filter(|e| e.window_start_ms >= DAY).collect();
        assert!(!after_day_one.is_empty(), "the step is found: {open:?}");
        assert!(
            after_day_one.iter().all(|e| (fault.0..fault.1).contains(&e.window_start_ms)),
            "after the first day only the step is alerted: {after_day_one:?}"
        );
    }

    #[test]
    fn a_level_that_moves_for_days_is_seen_by_the_day_scale() {
        // Hourly temperature for 50 days: a ±5 °C day, days whose level wanders by ±1 °C, and
        // days 40–42 running 6 °C warm, a warm spell no hour-long baseline keeps up with. Day
        // 30 has only 6 readings: not a whole day, not judged.
        let mut judge = ShiftMonitor::new(ShiftConfig::default());
        let mut events = Vec::new();
        for i in 0..(50 * 24) {
            let t = i * HOUR;
            let day = t / DAY;
            if day == 30 && t % DAY >= 6 * HOUR {
                continue;
            }
            let cycle = 5.0 * (2.0 * std::f64::consts::PI * (t % DAY) as f64 / DAY as f64).sin();
            let level = 2.0 * noise(day, 12) + if (40..43).contains(&day) { 6.0 } else { 0.0 };
            let rows = [("m", t, 10.0 + 0.1 * noise(i, 13), 20.0 + cycle + level + 0.3 * noise(i, 14))];
            events.extend(judge.observe(&batch(&rows), t).unwrap().1);
        }
        let days: Vec<_> = events.iter().filter(|e| e.query == SHIFT_DAY).collect();
        let open: Vec<_> = days.iter().filter(|e| e.state == AlertState::Open).collect();
        assert_eq!(open.len(), 1, "one warm spell: {days:?}");
        assert_eq!(open[0].window_start_ms, 40 * DAY, "alerted on its first day: {days:?}");
        assert!(open[0].features["z.temperature_c"] >= 6.0, "{:?}", open[0].features);
        let closed = days.iter().find(|e| e.state == AlertState::Close).expect("closed after the spell");
        assert_eq!(closed.window_start_ms, 43 * DAY);
        let m = judge.motors.get("m").unwrap().unwrap();
        assert_eq!(m.channels[1].days_kept, 28, "a bounded history");
        assert_eq!(m.past.means.len(), 28 * m.channels.len(), "in one block");
    }

    #[test]
    fn a_single_spike_is_a_transient_when_transients_are_on() {
        // One reading a second, current 20 A ± 0.5 A; after 10 minutes, one reading at 50 A
        // (a 2.5× spike): diluted in its window's mean, it is a transient.
        let run = |transient_above: Option<f64>| {
            let mut judge = ShiftMonitor::new(ShiftConfig { transient_above, ..Default::default() });
            let mut events = Vec::new();
            for i in 0..1200 {
                let t = i * 1000;
                let current = if i == 900 { 50.0 } else { 20.0 + noise(i, 15) };
                events.extend(judge.observe(&batch(&[("m", t, current, 40.0 + 0.2 * noise(i, 16))]), t).unwrap().1);
            }
            events.into_iter().filter(|e| e.state == AlertState::Open).collect::<Vec<_>>()
        };
        assert!(run(None).is_empty(), "off by default, and the window's mean moves too little");
        let open = run(Some(16.0));
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(open[0].window_start_ms >= 890_000 && open[0].window_start_ms <= 940_000, "{open:?}");
    }

    #[test]
    fn a_broken_relation_between_channels_is_seen_by_t2() {
        // Current and temperature move together with a shared load (±3 over two hours); for
        // an hour current runs 5 above and temperature 5 below where the load puts them: each
        // within its usual range, which only T² sees as wrong.
        let run = |t2: bool| {
            let mut judge = ShiftMonitor::new(ShiftConfig { t2, ..Default::default() });
            let mut events = Vec::new();
            for i in 0..(8 * HOUR / 1000) {
                let t = i * 1000;
                let load = 3.0 * (2.0 * std::f64::consts::PI * t as f64 / (2 * HOUR) as f64).sin();
                let apart = if (5 * HOUR..6 * HOUR).contains(&t) { 5.0 } else { 0.0 };
                let rows = [("m", t, 10.0 + load + apart + 0.3 * noise(i, 7), 40.0 + load - apart + 0.3 * noise(i, 8))];
                events.extend(judge.observe(&batch(&rows), t).unwrap().1);
            }
            events.into_iter().filter(|e| e.state == AlertState::Open).collect::<Vec<_>>()
        };
        let with = run(true);
        assert!(!with.is_empty() && with.iter().all(|e| e.window_start_ms >= 5 * HOUR), "{with:?}");
        assert!(with[0].features["t2"] >= 7.0);
        assert!(run(false).is_empty(), "each channel alone looks normal");
    }

    #[test]
    fn the_state_survives_a_checkpoint() {
        let mut a = ShiftMonitor::new(ShiftConfig::default());
        for i in 0..2_000 {
            a.observe(&batch(&[("m", i * 1000, 10.0 + noise(i, 9), 40.0)]), 0).unwrap();
        }
        let bytes = crate::checkpoint::to_versioned_bytes(&a.snapshot(&|_| true).unwrap()).unwrap();
        let mut b = ShiftMonitor::new(ShiftConfig::default());
        b.adopt(crate::checkpoint::from_versioned_bytes(&bytes).unwrap(), 0).unwrap();
        assert_eq!(crate::checkpoint::to_versioned_bytes(&b.snapshot(&|_| true).unwrap()).unwrap(), bytes);
        // Both go on alike.
        let step = |j: &mut ShiftMonitor| j.observe(&batch(&[("m", 2_000_000, 30.0, 40.0)]), 0).unwrap().0;
        assert_eq!(format!("{:?}", step(&mut a)), format!("{:?}", step(&mut b)));
    }
}
