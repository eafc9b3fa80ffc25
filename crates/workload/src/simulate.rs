//! The motor fleet simulator: realistic telemetry for N motors across S sites, with seeded,
//! injected faults and a ground-truth list of them.
//!
//! Each motor has its own baseline (rated current, thermal rise, vibration level, speed)
//! and a slow load cycle with noise. Current follows load; temperature follows load² through
//! a first-order thermal lag; vibration rises with load; speed drops with load (slip).
//! Faults change these signals over an interval, as the real failure would.

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use tessera_core::{Channel, MotorId, Reading, SiteId};

/// The kinds of fault the simulator injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Vibration trends upward, accelerating, over the interval.
    BearingWear,
    /// Temperature climbs well above what the load explains.
    Overheating,
    /// Radial vibration steps up and speed wobbles.
    Imbalance,
    /// Short current spikes of 2–3× the normal current.
    CurrentSpikes,
    /// The temperature and axial vibration sensors report nothing.
    SensorDropout,
    /// The motor's clock is off by a constant amount for the whole run.
    SkewedClock,
    /// The motor stops reporting (its gateway or the motor died) until the end of the run.
    Silent,
}

impl FaultKind {
    const ALL: [FaultKind; 7] = [
        FaultKind::BearingWear,
        FaultKind::Overheating,
        FaultKind::Imbalance,
        FaultKind::CurrentSpikes,
        FaultKind::SensorDropout,
        FaultKind::SkewedClock,
        FaultKind::Silent,
    ];
}

/// One injected fault: the ground truth that detection is scored against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultInterval {
    /// The faulty motor.
    pub motor_id: String,
    /// Its site.
    pub site_id: String,
    /// What was injected.
    pub fault: FaultKind,
    /// First affected event time (ms since the epoch, true time, without clock skew).
    pub start_ms: i64,
    /// Last affected event time.
    pub end_ms: i64,
    /// For a skewed clock: the skew in ms added to the motor's event times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skew_ms: Option<i64>,
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    /// Number of motors (ids `M0001`...).
    pub motors: u32,
    /// Number of sites (ids `site-a`...); motors are spread round-robin.
    pub sites: u32,
    /// Readings per second per motor (event time).
    pub rate_hz: f64,
    /// Readings per motor in the run.
    pub steps: u64,
    /// Event time of the first reading, ms since the epoch.
    pub start_ms: i64,
    /// Share of motors that get a fault (0 to 1).
    pub fault_fraction: f64,
    /// Seed for everything random.
    pub seed: u64,
}

impl FleetSpec {
    /// `tessera demo`'s fleet with its defaults: 1,000 motors on 3 sites at 1 Hz for 3
    /// minutes, 5 % with a fault, from 2024-01-01 (for an offline replay, where the date is
    /// rebased anyway).
    pub fn demo(seed: u64) -> Self {
        Self {
            motors: 1000,
            sites: 3,
            rate_hz: 1.0,
            steps: 180,
            start_ms: 1_704_067_200_000,
            fault_fraction: 0.05,
            seed,
        }
    }
}

/// Site id number `i` (0-based): `site-a`, `site-b`, ..., `site-z`, `site-27`...
pub fn site_name(i: u32) -> String {
    if i < 26 { format!("site-{}", (b'a' + i as u8) as char) } else { format!("site-{}", i + 1) }
}

struct Motor {
    id: MotorId,
    site: SiteId,
    rng: StdRng,
    rated_current: f64,
    thermal_rise: f64,
    vibration: f64,
    rated_speed: f64,
    load_period_s: f64,
    load_phase: f64,
    temperature: f64,
    fault: Option<Fault>,
    skew_ms: i64,
}

struct Fault {
    kind: FaultKind,
    first_step: u64,
    last_step: u64,
}

/// A deterministic fleet: the same spec gives the same readings and faults.
pub struct Simulator {
    spec: FleetSpec,
    motors: Vec<Motor>,
    step: u64,
    noise: Normal<f64>,
}

const AMBIENT_C: f64 = 25.0;
const THERMAL_TAU_S: f64 = 600.0;

impl Simulator {
    /// Builds the fleet and draws its faults.
    pub fn new(spec: FleetSpec) -> Self {
        let mut fleet_rng = StdRng::seed_from_u64(spec.seed);
        let faulty = ((spec.motors as f64) * spec.fault_fraction.clamp(0.0, 1.0)).round() as u32;
        let mut order: Vec<u32> = (0..spec.motors).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, fleet_rng.random_range(0..=i));
        }
        let faulty_motors: BTreeMap<u32, FaultKind> = order
            .iter()
            .take(faulty as usize)
            .enumerate()
            .map(|(n, &m)| (m, FaultKind::ALL[n % FaultKind::ALL.len()]))
            .collect();

        let motors = (0..spec.motors)
            .map(|i| {
                let mut rng = StdRng::seed_from_u64(spec.seed ^ (u64::from(i) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let fault = faulty_motors.get(&i).map(|&kind| {
                    if kind == FaultKind::SkewedClock {
                        return Fault { kind, first_step: 0, last_step: spec.steps.saturating_sub(1) };
                    }
                    let start = rng.random_range(0.2..0.6) * spec.steps as f64;
                    let len = rng.random_range(0.1..0.3) * spec.steps as f64;
                    let first_step = start as u64;
                    let last = if kind == FaultKind::Silent { spec.steps } else { (start + len) as u64 };
                    Fault { kind, first_step, last_step: last.min(spec.steps.saturating_sub(1)) }
                });
                let skew_ms = match &fault {
                    Some(f) if f.kind == FaultKind::SkewedClock => {
                        let minutes = rng.random_range(1.0..4.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                        (minutes * 60_000.0) as i64
                    }
                    _ => 0,
                };
                let rated_speed = if rng.random_bool(0.7) { 1480.0 } else { 2960.0 };
                let thermal_rise = rng.random_range(30.0..45.0);
                let mut motor = Motor {
                    id: MotorId::new(format!("M{:04}", i + 1)).expect("generated ids are valid"),
                    site: SiteId::new(site_name(i % spec.sites.max(1))).expect("generated ids are valid"),
                    rated_current: rng.random_range(10.0..60.0),
                    thermal_rise,
                    vibration: rng.random_range(1.0..3.0),
                    rated_speed,
                    load_period_s: rng.random_range(300.0..1800.0),
                    load_phase: rng.random_range(0.0..TAU),
                    temperature: 0.0,
                    fault,
                    skew_ms,
                    rng,
                };
                motor.temperature = motor.settled_temperature(spec.start_ms as f64 / 1000.0);
                motor
            })
            .collect();
        Self { spec, motors, step: 0, noise: Normal::new(0.0, 1.0).expect("unit normal") }
    }

    /// Every motor of the fleet with its site.
    pub fn motors(&self) -> impl Iterator<Item = (&MotorId, &SiteId)> {
        self.motors.iter().map(|m| (&m.id, &m.site))
    }

    /// The injected faults, in motor order.
    pub fn ground_truth(&self) -> Vec<FaultInterval> {
        let step_ms = self.step_ms();
        self.motors
            .iter()
            .filter_map(|m| {
                let f = m.fault.as_ref()?;
                Some(FaultInterval {
                    motor_id: m.id.to_string(),
                    site_id: m.site.to_string(),
                    fault: f.kind,
                    start_ms: self.spec.start_ms + (f.first_step as f64 * step_ms) as i64,
                    end_ms: self.spec.start_ms + (f.last_step as f64 * step_ms) as i64,
                    skew_ms: (f.kind == FaultKind::SkewedClock).then_some(m.skew_ms),
                })
            })
            .collect()
    }

    fn step_ms(&self) -> f64 {
        1000.0 / self.spec.rate_hz
    }

    /// Readings left to produce, over all motors.
    pub fn remaining(&self) -> u64 {
        (self.spec.steps - self.step) * u64::from(self.spec.motors)
    }

    /// The next time step: one reading per motor (none from a silent one), or `None` when the
    /// run is over.
    pub fn next_step(&mut self) -> Option<Vec<Reading>> {
        if self.step >= self.spec.steps {
            return None;
        }
        let step = self.step;
        self.step += 1;
        let dt_s = 1.0 / self.spec.rate_hz;
        let t_ms = self.spec.start_ms + (step as f64 * self.step_ms()) as i64;
        let noise = self.noise;
        Some(self.motors.iter_mut().filter_map(|m| m.reading(step, t_ms, dt_s, noise)).collect())
    }
}

impl Motor {
    /// The temperature at `t_s` of a motor that has been running its load cycle for hours: the
    /// thermal lag's periodic steady state on load² (its mean, and each harmonic attenuated and
    /// delayed by the first-order lag), so a run starts with motors already warm, as a plant's
    /// are when someone starts watching them.
    fn settled_temperature(&self, t_s: f64) -> f64 {
        // load² = (0.55 + 0.3 sin θ)² = 0.3475 + 0.33 sin θ − 0.045 cos 2θ, θ = ωt + φ.
        let w = TAU / self.load_period_s;
        let theta = w * t_s + self.load_phase;
        let (lag1, lag2) = ((w * THERMAL_TAU_S).atan(), (2.0 * w * THERMAL_TAU_S).atan());
        let first = 0.33 * (theta - lag1).sin() / (1.0 + (w * THERMAL_TAU_S).powi(2)).sqrt();
        let second = 0.045 * (2.0 * theta - lag2).cos() / (1.0 + (2.0 * w * THERMAL_TAU_S).powi(2)).sqrt();
        AMBIENT_C + self.thermal_rise * (0.3475 + first - second)
    }

    fn reading(&mut self, step: u64, t_ms: i64, dt_s: f64, noise: Normal<f64>) -> Option<Reading> {
        let mut n = |scale: f64| noise.sample(&mut self.rng) * scale;
        let t_s = t_ms as f64 / 1000.0;
        let load = (0.55 + 0.3 * (TAU * t_s / self.load_period_s + self.load_phase).sin() + n(0.03)).clamp(0.05, 1.1);

        let mut current = self.rated_current * (0.3 + 0.7 * load) + n(0.01 * self.rated_current);
        let target = AMBIENT_C + self.thermal_rise * load * load;
        self.temperature += (target - self.temperature) * (dt_s / THERMAL_TAU_S).min(1.0);
        let mut temperature = self.temperature + n(0.1);
        let mut vib = self.vibration * (0.8 + 0.4 * load);
        let mut vib_x = vib + n(0.05 * self.vibration);
        let mut vib_y = 0.9 * vib + n(0.05 * self.vibration);
        let vib_z = 0.5 * vib + n(0.03 * self.vibration);
        let mut speed = self.rated_speed * (1.0 - 0.03 * load) + n(1.0);
        let voltage = 400.0 + n(2.0);
        let mut channels_present = [true; 7];

        if let Some(f) = &self.fault
            && (f.first_step..=f.last_step).contains(&step)
        {
            let progress = (step - f.first_step) as f64 / (f.last_step - f.first_step).max(1) as f64;
            match f.kind {
                FaultKind::BearingWear => {
                    vib *= 1.0 + 2.0 * progress * progress;
                    vib_x = vib + n(0.05 * self.vibration);
                    vib_y = 0.9 * vib + n(0.05 * self.vibration);
                }
                FaultKind::Overheating => temperature += 30.0 * progress.sqrt(),
                FaultKind::Imbalance => {
                    vib_x *= 1.8;
                    vib_y *= 1.6;
                    speed += 6.0 * (step as f64 * 0.7).sin();
                }
                FaultKind::CurrentSpikes => {
                    if self.rng.random_bool(0.05) {
                        current *= self.rng.random_range(2.0..3.0);
                    }
                }
                FaultKind::SensorDropout => {
                    channels_present[Channel::TemperatureC as usize] = false;
                    channels_present[Channel::VibrationZRms as usize] = false;
                }
                FaultKind::SkewedClock => {}
                FaultKind::Silent => return None,
            }
        }

        let values = [current, voltage, temperature, vib_x.max(0.0), vib_y.max(0.0), vib_z.max(0.0), speed];
        Some(Reading {
            motor_id: self.id.clone(),
            site_id: self.site.clone(),
            event_time_ms: t_ms + self.skew_ms,
            sequence: step,
            channels: std::array::from_fn(|i| channels_present[i].then_some(values[i])),
            extra: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FleetSpec {
        FleetSpec {
            motors: 70,
            sites: 3,
            rate_hz: 1.0,
            steps: 600,
            start_ms: 1_700_000_000_000,
            fault_fraction: 0.1,
            seed: 7,
        }
    }

    #[test]
    fn same_seed_same_fleet() {
        let (mut a, mut b) = (Simulator::new(spec()), Simulator::new(spec()));
        assert_eq!(a.ground_truth(), b.ground_truth());
        for _ in 0..50 {
            assert_eq!(a.next_step(), b.next_step());
        }
    }

    #[test]
    fn motors_start_warm_on_their_load_cycle() {
        // No faults, 1 Hz: a motor's temperature one load period after the start is where it
        // started (the thermal lag has settled on the cycle); a cold start would still be
        // climbing, several °C below, after one period of a 10-minute lag.
        let mut sim = Simulator::new(FleetSpec { motors: 20, steps: 1900, fault_fraction: 0.0, ..spec() });
        let periods: Vec<usize> = sim.motors.iter().map(|m| m.load_period_s.round() as usize).collect();
        let mut series = vec![Vec::new(); 20];
        while let Some(step) = sim.next_step() {
            for (m, r) in step.iter().enumerate() {
                series[m].push(r.get(Channel::TemperatureC).unwrap());
            }
        }
        for (m, s) in series.iter().enumerate() {
            let (start, later) = (s[0], s[periods[m]]);
            assert!((start - later).abs() < 0.6, "motor {m}: {start:.2} °C at the start, {later:.2} °C a period later");
        }
    }

    #[test]
    fn faults_are_injected_and_change_the_signals() {
        let mut sim = Simulator::new(spec());
        let truth = sim.ground_truth();
        assert_eq!(truth.len(), 7, "10 % of 70 motors, one of each kind");
        let kinds: std::collections::BTreeSet<_> = truth.iter().map(|f| format!("{:?}", f.fault)).collect();
        assert_eq!(kinds.len(), 7);

        let mut rows = Vec::new();
        while let Some(step) = sim.next_step() {
            rows.extend(step);
        }
        let of = |kind: FaultKind| truth.iter().find(|f| f.fault == kind).unwrap();
        let silent = of(FaultKind::Silent);
        let silent_steps = (silent.end_ms - silent.start_ms) / 1000 + 1;
        assert_eq!(rows.len() as i64, 70 * 600 - silent_steps, "a silent motor reports nothing from its start");
        assert_eq!(silent.end_ms, spec().start_ms + 599_000, "...to the end of the run");
        let series = |motor: &str| rows.iter().filter(|r| r.motor_id.as_str() == motor).collect::<Vec<_>>();

        let wear = of(FaultKind::BearingWear);
        let s = series(&wear.motor_id);
        let before = s
            .iter()
            .filter(|r| r.event_time_ms < wear.start_ms)
            .map(|r| r.get(Channel::VibrationXRms).unwrap())
            .sum::<f64>()
            / s.iter().filter(|r| r.event_time_ms < wear.start_ms).count() as f64;
        let at_end = s.iter().find(|r| r.event_time_ms == wear.end_ms).unwrap().get(Channel::VibrationXRms).unwrap();
        assert!(at_end > 2.0 * before, "vibration rises: {before} -> {at_end}");

        let dropout = of(FaultKind::SensorDropout);
        let r = series(&dropout.motor_id).into_iter().find(|r| r.event_time_ms == dropout.start_ms).unwrap();
        assert_eq!(r.get(Channel::TemperatureC), None);
        assert!(r.get(Channel::CurrentA).is_some());

        let skew = of(FaultKind::SkewedClock);
        let first = series(&skew.motor_id)[0].event_time_ms;
        assert_eq!(first - spec().start_ms, skew.skew_ms.unwrap());
        assert!(skew.skew_ms.unwrap().abs() >= 60_000);
    }
}
