//! Labelled scenarios for `tessera eval --scenarios DIR`: a folder of CSV files (one motor each) and its
//! `labels.json` ([`crate::eval::FolderLabels`]), made by the simulator with known truth, in
//! the shapes the fleet simulator's minutes-long runs do not have:
//!
//! - **run to failure** (`wear-N`): sampled every 10 minutes for about two weeks; a bearing
//!   starts wearing on day 3–5 and its vibration grows (quadratically, as spalling spreads)
//!   until it crosses the ISO 20816 class II C/D boundary (7.1 mm/s) on day 11–13, where the
//!   file ends: that is the failure. Each has a healthy twin (`twin-N`) of the same life;
//! - **daily cycles** (`cooling-N`): every 5 minutes for 12 days, temperature following the
//!   ambient day (±6 °C) and load following the shifts; for 8 hours the cooling fails and the
//!   temperature runs 5 °C above what the hour and load explain, inside the day's range;
//! - **several sampling rates** (`step-<interval>`, `steady-<interval>`): every 1 s (2 hours),
//!   10 s (2 days), 1 min (3 days) and 10 min (20 days); an imbalance steps vibration up by
//!   60 % and current by 6 % for 20 windows' worth of readings in the last 40 % of the span;
//!   each rate has a healthy motor beside it.
//!
//! Every motor has its own noise, level and daily phase (seeded). Times are real dates
//! (`YYYY-MM-DD HH:MM:SS`, UTC), so the daily cycle falls on the hour of day.
//!
//! [`write_fleet`] writes the demo's fleet ([`crate::simulate`]: minutes of 1 Hz data, faults
//! that develop in seconds) the same way, so the demo's detection can be scored offline.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::error::{WorkloadError, io};

type Result<T, E = WorkloadError> = std::result::Result<T, E>;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2024-01-01 00:00:00 UTC.
const EPOCH_MS: i64 = 1_704_067_200_000;

/// What a scenario file holds.
struct Motor {
    name: String,
    interval_ms: i64,
    days: f64,
    /// Bearing wear: (start, failure) times; the file ends at the failure.
    wear: Option<(i64, i64)>,
    /// Cooling failure: (start, end).
    cooling: Option<(i64, i64)>,
    /// Imbalance: (start, end).
    imbalance: Option<(i64, i64)>,
}

/// One motor's physics: a rated current, a daily load and ambient cycle, a thermal rise with
/// load, a vibration level; faults on top.
struct Physics {
    rated_a: f64,
    ambient_c: f64,
    phase_h: f64,
    vibration: f64,
    noise: Normal<f64>,
}

impl Physics {
    fn new(rng: &mut StdRng) -> Self {
        Self {
            rated_a: rng.random_range(20.0..60.0),
            ambient_c: rng.random_range(15.0..25.0),
            phase_h: rng.random_range(-1.5..1.5),
            vibration: rng.random_range(1.2..2.0),
            noise: Normal::new(0.0, 1.0).expect("a valid normal"),
        }
    }

    /// The reading at `t` (ms since EPOCH_MS) with the motor's faults.
    fn reading(&self, m: &Motor, t: i64, rng: &mut StdRng) -> [f64; 6] {
        let hour = (t.rem_euclid(DAY) as f64 / HOUR as f64 + self.phase_h).rem_euclid(24.0);
        // Two shifts: full load 06–22 h, a third at night, with ramps.
        let load = 0.35 + 0.5 * (((hour - 6.0) / 2.0).clamp(0.0, 1.0) - ((hour - 20.0) / 2.0).clamp(0.0, 1.0));
        let ambient = self.ambient_c + 6.0 * ((hour - 9.0) / 24.0 * TAU).sin();
        let mut n = || self.noise.sample(rng);
        let mut current = self.rated_a * (0.25 + 0.75 * load) * (1.0 + 0.01 * n());
        let mut temperature = ambient + 35.0 * load * load + 0.4 * n();
        let mut vibration = self.vibration * (0.9 + 0.2 * load) + 0.08 * n();
        if let Some((start, failure)) = m.wear
            && t >= start
        {
            let x = (t - start) as f64 / (failure - start) as f64;
            // From the level at the start to the C/D boundary at the failure.
            vibration += (7.1 - self.vibration * 1.1) * x * x;
            temperature += 3.0 * x * x;
        }
        if let Some((start, end)) = m.cooling
            && t >= start
            && t <= end
        {
            temperature += 5.0;
        }
        if let Some((start, end)) = m.imbalance
            && t >= start
            && t <= end
        {
            vibration *= 1.6;
            current *= 1.06;
        }
        let voltage = 400.0 + 1.5 * n();
        let speed = 1_480.0 - 20.0 * load + 0.8 * n();
        [current, voltage, temperature, vibration, vibration * 0.8 + 0.05 * n(), speed]
    }
}

fn timestamp(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(EPOCH_MS + t)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The scenario motors, their faults drawn from `rng`.
fn motors(rng: &mut StdRng, wear_pairs: usize) -> Vec<Motor> {
    let mut out = Vec::new();
    for i in 1..=wear_pairs {
        let start = rng.random_range(3 * DAY..5 * DAY) / MINUTE * MINUTE;
        let failure = rng.random_range(11 * DAY..13 * DAY) / (10 * MINUTE) * (10 * MINUTE);
        let days = failure as f64 / DAY as f64;
        out.push(Motor {
            name: format!("wear-{i}"),
            interval_ms: 10 * MINUTE,
            days,
            wear: Some((start, failure)),
            cooling: None,
            imbalance: None,
        });
        out.push(Motor {
            name: format!("twin-{i}"),
            interval_ms: 10 * MINUTE,
            days,
            wear: None,
            cooling: None,
            imbalance: None,
        });
    }
    for i in 1..=2 {
        let start = rng.random_range(8 * DAY..10 * DAY) / HOUR * HOUR;
        out.push(Motor {
            name: format!("cooling-{i}"),
            interval_ms: 5 * MINUTE,
            days: 12.0,
            wear: None,
            cooling: Some((start, start + 8 * HOUR)),
            imbalance: None,
        });
    }
    for (label, interval_ms, days) in
        [("1s", 1_000, 2.0 / 24.0), ("10s", 10_000, 2.0), ("1min", MINUTE, 3.0), ("10min", 10 * MINUTE, 20.0)]
    {
        let span = (days * DAY as f64) as i64;
        // 20 windows of 10 readings (at least 10 s each).
        let length = 20 * (10 * interval_ms).max(10_000);
        let start = rng.random_range(span * 6 / 10..span - length - span / 20) / interval_ms * interval_ms;
        out.push(Motor {
            name: format!("step-{label}"),
            interval_ms,
            days,
            wear: None,
            cooling: None,
            imbalance: Some((start, start + length)),
        });
        out.push(Motor {
            name: format!("steady-{label}"),
            interval_ms,
            days,
            wear: None,
            cooling: None,
            imbalance: None,
        });
    }
    out
}

/// Writes the scenarios into `dir` (created if missing): one CSV per motor and `labels.json`.
/// `wear_pairs` run-to-failure motors (each with a healthy twin). Returns the files written.
pub fn write(dir: &Path, seed: u64, wear_pairs: usize) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut files = BTreeMap::new();
    let mut written = Vec::new();
    for m in motors(&mut rng, wear_pairs) {
        let physics = Physics::new(&mut rng);
        let mut csv =
            String::from("timestamp,current_a,voltage_v,temperature_c,vibration_x_rms,vibration_y_rms,speed_rpm\n");
        let end = m.wear.map_or((m.days * DAY as f64) as i64, |w| w.1);
        let mut t = 0;
        while t <= end {
            let r = physics.reading(&m, t, &mut rng);
            let _ = writeln!(
                csv,
                "{},{:.3},{:.2},{:.2},{:.4},{:.4},{:.1}",
                timestamp(t),
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5]
            );
            t += m.interval_ms;
        }
        let file = format!("{}.csv", m.name);
        let path = dir.join(&file);
        std::fs::write(&path, csv).map_err(io(format!("writing {}", path.display())))?;
        let mut labels = serde_json::Map::new();
        let anomaly = m.cooling.or(m.imbalance);
        if let Some((a, b)) = anomaly {
            labels.insert("anomalies".into(), serde_json::json!([[timestamp(a), timestamp(b)]]));
        }
        if let Some((_, failure)) = m.wear {
            labels.insert("failure".into(), serde_json::json!(timestamp(failure)));
        }
        files.insert(file.clone(), serde_json::Value::Object(labels));
        written.push(file);
    }
    let labels = serde_json::json!({ "lead_window_h": 168, "files": files });
    let path = dir.join("labels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&labels)?).map_err(io(format!("writing {}", path.display())))?;
    Ok(written)
}

/// Writes the simulated fleet of `spec` into `dir` (created if missing) as a labelled folder:
/// one CSV per motor (epoch ms, the seven channels, empty cells where a sensor dropped out) and
/// `labels.json` with each injected fault as an anomaly (in true time; a skewed clock's
/// readings carry its skew, which a replay of one file cannot tell from its own time base).
/// Returns the files.
pub fn write_fleet(dir: &Path, spec: crate::simulate::FleetSpec) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut sim = crate::simulate::Simulator::new(spec);
    let truth = sim.ground_truth();
    let header = std::iter::once("timestamp")
        .chain(tessera_core::Channel::ALL.iter().map(|c| c.name()))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    let mut csv: BTreeMap<String, String> =
        sim.motors().map(|(m, _)| (m.as_str().to_string(), header.clone())).collect();
    while let Some(step) = sim.next_step() {
        for r in step {
            let line = &mut csv.get_mut(r.motor_id.as_str()).expect("a fleet motor");
            let _ = write!(line, "{}", r.event_time_ms);
            for v in r.channels {
                match v {
                    Some(v) => {
                        let _ = write!(line, ",{v:.4}");
                    }
                    None => line.push(','),
                }
            }
            line.push('\n');
        }
    }
    let mut files = serde_json::Map::new();
    let mut written = Vec::new();
    for (motor, text) in csv {
        let file = format!("{motor}.csv");
        let path = dir.join(&file);
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
        let labels = match truth.iter().find(|f| f.motor_id == motor) {
            Some(f) => serde_json::json!({
                "anomalies": [[f.start_ms.to_string(), f.end_ms.to_string()]],
                "note": serde_json::to_value(f.fault)?,
            }),
            None => serde_json::json!({}),
        };
        files.insert(file.clone(), labels);
        written.push(file);
    }
    let path = dir.join("labels.json");
    let labels = serde_json::json!({ "time_column": "timestamp", "files": files });
    std::fs::write(&path, serde_json::to_string_pretty(&labels)?).map_err(io(format!("writing {}", path.display())))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenarios_are_labelled_and_the_worn_bearing_reaches_its_limit_at_the_failure() {
        let dir = std::env::temp_dir().join(format!("tessera-scenarios-{}", std::process::id()));
        let files = write(&dir, 3, 2).unwrap();
        assert_eq!(files.len(), 4 + 2 + 8);
        let labels = crate::eval::FolderLabels::read(&dir.join("labels.json")).unwrap();
        assert_eq!(labels.files.len(), files.len());
        assert!(labels.files["wear-1.csv"].failure.is_some() && labels.files["twin-1.csv"].failure.is_none());
        assert_eq!(labels.files["step-1min.csv"].anomalies.len(), 1);
        let wear = std::fs::read_to_string(dir.join("wear-1.csv")).unwrap();
        let last: Vec<f64> = wear.lines().last().unwrap().split(',').skip(1).map(|v| v.parse().unwrap()).collect();
        assert!(last[3] > 6.5, "vibration at the failure: {}", last[3]);
        assert!(wear.lines().last().unwrap().starts_with(labels.files["wear-1.csv"].failure.as_ref().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
