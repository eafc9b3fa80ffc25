//! Replaying CSV files as motors: one file is one motor. A timestamp column plus numeric
//! columns mapped to reading fields (SKAB's columns by default); label columns are stripped
//! from the readings and returned as ground truth. Every file gets its own time base: its
//! timestamps are shifted so that it ends a random time (up to `offset_range`) before `end`,
//! so neither absolute time nor time since a motor's first reading carries the labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tessera_core::{Channel, MotorId, Reading, SiteId};

use crate::producer::TelemetryProducer;
use crate::simulate::site_name;

use crate::error::{WorkloadError, io};

type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// Where a CSV column goes in a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A standard channel.
    Channel(Channel),
    /// An extra named measurement.
    Extra(String),
    /// Nowhere: the column is dropped.
    Skip,
}

impl std::str::FromStr for Target {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self> {
        if s == "skip" {
            return Ok(Target::Skip);
        }
        if let Some(name) = s.strip_prefix("extra.") {
            return Ok(Target::Extra(name.to_string()));
        }
        Channel::ALL.into_iter().find(|c| c.name() == s).map(Target::Channel).ok_or_else(|| {
            WorkloadError::BadData(format!(
                "unknown field {s:?}: use a channel ({}), extra.NAME or skip",
                channel_names()
            ))
        })
    }
}

fn channel_names() -> String {
    Channel::ALL.map(Channel::name).join(", ")
}

/// SKAB's columns (a motor-driven pump testbed) mapped to reading fields.
pub fn skab_mapping() -> BTreeMap<String, Target> {
    [
        ("Accelerometer1RMS", Target::Channel(Channel::VibrationXRms)),
        ("Accelerometer2RMS", Target::Channel(Channel::VibrationYRms)),
        ("Current", Target::Channel(Channel::CurrentA)),
        ("Temperature", Target::Channel(Channel::TemperatureC)),
        ("Voltage", Target::Channel(Channel::VoltageV)),
        ("Pressure", Target::Extra("pressure_bar".into())),
        ("Thermocouple", Target::Extra("fluid_temperature_c".into())),
        ("Volume Flow RateRMS", Target::Extra("flow_rate_lpm".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// How to read and rebase the files.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Column mapping; columns not named here become extras under a snake_case name.
    pub mapping: BTreeMap<String, Target>,
    /// Columns every file must have (those mapped explicitly by the user).
    pub required_columns: Vec<String>,
    /// The timestamp column; default: the first column.
    pub time_column: Option<String>,
    /// Columns holding labels (0/1): stripped and returned as ground truth.
    pub label_columns: Vec<String>,
    /// Number of sites to spread the motors over, round-robin.
    pub sites: u32,
    /// Motor id prefix; the id is `<prefix><parent dir>-<file stem>`.
    pub motor_prefix: String,
    /// The latest rebased event time (usually now), ms since the epoch.
    pub end_ms: i64,
    /// Each file ends a random time in `[0, offset_range_ms]` before `end_ms`.
    pub offset_range_ms: i64,
    /// Seed for the offsets.
    pub seed: u64,
}

impl ReplayOptions {
    /// SKAB's layout: its column mapping, `anomaly` and `changepoint` as labels, three sites,
    /// motor ids `skab-<dir>-<file>`; files end up to `offset_range_ms` before `end_ms`.
    pub fn skab(end_ms: i64, offset_range_ms: i64, seed: u64) -> Self {
        Self {
            mapping: skab_mapping(),
            required_columns: Vec::new(),
            time_column: None,
            label_columns: vec!["anomaly".into(), "changepoint".into()],
            sites: 3,
            motor_prefix: "skab-".into(),
            end_ms,
            offset_range_ms,
            seed,
        }
    }
}

/// A labelled interval of one replayed motor, in rebased event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelInterval {
    /// The motor (file).
    pub motor_id: String,
    /// Its site.
    pub site_id: String,
    /// The file it came from.
    pub source_file: String,
    /// The label column, e.g. `anomaly` or `changepoint`.
    pub label: String,
    /// First labelled event time, ms.
    pub start_ms: i64,
    /// Last labelled event time, ms.
    pub end_ms: i64,
}

/// One file, read and rebased.
#[derive(Debug, Clone)]
pub struct ReplayMotor {
    /// The motor id given to the file.
    pub motor_id: MotorId,
    /// The readings, in file order, sequence numbers from 0.
    pub readings: Vec<Reading>,
    /// The labelled intervals.
    pub labels: Vec<LabelInterval>,
    /// How far the file's times were moved (rebased = original + this), ms.
    pub shift_ms: i64,
}

/// Reads and rebases every file.
pub fn load(files: &[PathBuf], opts: &ReplayOptions) -> Result<Vec<ReplayMotor>> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let offset = if opts.offset_range_ms > 0 { rng.random_range(0..=opts.offset_range_ms) } else { 0 };
            let site = SiteId::new(site_name(i as u32 % opts.sites.max(1)))?;
            load_file(path, opts, site, opts.end_ms - offset)
                .map_err(|e| WorkloadError::Replay { path: path.clone(), source: Box::new(e) })
        })
        .collect()
}

fn motor_id_of(path: &Path, prefix: &str) -> Result<MotorId> {
    let clean = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect::<String>()
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("motor");
    let dir = path.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str());
    let name = match dir {
        Some(d) if d != stem => format!("{prefix}{}-{}", clean(d), clean(stem)),
        _ => format!("{prefix}{}", clean(stem)),
    };
    Ok(MotorId::new(name)?)
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

fn load_file(path: &Path, opts: &ReplayOptions, site_id: SiteId, end_ms: i64) -> Result<ReplayMotor> {
    let text = std::fs::read_to_string(path).map_err(io("reading the file"))?;
    let delimiter =
        if text.lines().next().is_some_and(|l| l.matches(';').count() > l.matches(',').count()) { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_string()).collect();
    if let Some(missing) = opts.required_columns.iter().find(|c| !header.contains(c)) {
        return Err(WorkloadError::BadData(format!("mapped column {missing:?} is not in the header {header:?}")));
    }
    let time_index = match &opts.time_column {
        Some(name) => header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| WorkloadError::BadData(format!("no time column {name:?} in {header:?}")))?,
        None => 0,
    };
    let targets: Vec<Option<Target>> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == time_index || opts.label_columns.contains(h) {
                None
            } else {
                Some(opts.mapping.get(h).cloned().unwrap_or_else(|| Target::Extra(snake_case(h))))
            }
        })
        .collect();
    let labels: Vec<(usize, &String)> =
        header.iter().enumerate().filter(|(_, h)| opts.label_columns.contains(h)).collect();

    let motor_id = motor_id_of(path, &opts.motor_prefix)?;
    let mut rows: Vec<(i64, Reading, Vec<bool>)> = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record?;
        let at = |i: usize| record.get(i).unwrap_or("").trim();
        let ts = parse_time(at(time_index))
            .map_err(|e| WorkloadError::BadData(format!("row {}: time {:?}: {e}", line + 2, at(time_index))))?;
        let mut reading = Reading {
            motor_id: motor_id.clone(),
            site_id: site_id.clone(),
            event_time_ms: ts,
            sequence: rows.len() as u64,
            channels: [None; 7],
            extra: BTreeMap::new(),
        };
        for (i, target) in targets.iter().enumerate() {
            let Some(target) = target else { continue };
            if at(i).is_empty() {
                continue;
            }
            let value: f64 = at(i)
                .parse()
                .map_err(|e| WorkloadError::BadData(format!("row {}: column {:?}: {e}", line + 2, header[i])))?;
            match target {
                Target::Channel(c) => reading.set(*c, Some(value)),
                Target::Extra(name) => {
                    reading.extra.insert(name.clone(), value);
                }
                Target::Skip => {}
            }
        }
        let flags = labels.iter().map(|(i, _)| at(*i).parse::<f64>().is_ok_and(|v| v != 0.0)).collect();
        rows.push((ts, reading, flags));
    }
    let Some(last) = rows.iter().map(|r| r.0).max() else {
        return Err(WorkloadError::BadData("no data rows".into()));
    };
    let shift = end_ms - last;
    let source_file = path.display().to_string();
    let mut intervals = Vec::new();
    for (n, (_, label)) in labels.iter().enumerate() {
        let mut open: Option<(i64, i64)> = None;
        for (ts, _, flags) in &rows {
            match (flags[n], open) {
                (true, None) => open = Some((*ts, *ts)),
                (true, Some((s, _))) => open = Some((s, *ts)),
                (false, Some((s, e))) => {
                    intervals.push((label.to_string(), s, e));
                    open = None;
                }
                (false, None) => {}
            }
        }
        if let Some((s, e)) = open {
            intervals.push((label.to_string(), s, e));
        }
    }
    Ok(ReplayMotor {
        shift_ms: shift,
        labels: intervals
            .into_iter()
            .map(|(label, s, e)| LabelInterval {
                motor_id: motor_id.to_string(),
                site_id: site_id.to_string(),
                source_file: source_file.clone(),
                label,
                start_ms: s + shift,
                end_ms: e + shift,
            })
            .collect(),
        motor_id,
        readings: rows
            .into_iter()
            .map(|(_, mut r, _)| {
                r.event_time_ms += shift;
                r
            })
            .collect(),
    })
}

/// Parses a timestamp: epoch seconds or milliseconds, RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]`
/// (UTC).
pub fn parse_time(s: &str) -> Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(if n.abs() >= 100_000_000_000 { n } else { n * 1000 });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(WorkloadError::BadData(format!("{s:?} is not a timestamp (epoch s/ms, RFC 3339 or YYYY-MM-DD HH:MM:SS)")))
}

/// Publishes the motors' readings merged in event-time order. `speedup` > 0 paces them at
/// that many times real time; 0 publishes as fast as possible. Returns readings sent.
pub fn publish(
    motors: &[ReplayMotor],
    producer: &TelemetryProducer,
    speedup: f64,
    progress: bool,
    stop: &AtomicBool,
) -> Result<u64> {
    let order = time_order(motors);
    let bar = if progress { indicatif::ProgressBar::new(order.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} readings, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    let first = order.first().map_or(0, |o| o.0);
    let started = Instant::now();
    let mut sent = 0;
    for (ts, m, i) in order {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if speedup > 0.0 {
            let due = Duration::from_secs_f64((ts - first) as f64 / 1000.0 / speedup);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        producer.send_readings(std::slice::from_ref(&motors[m].readings[i]))?;
        sent += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(sent)
}

/// Every reading of `motors` as (event time, motor, index), in event-time order.
fn time_order(motors: &[ReplayMotor]) -> Vec<(i64, usize, usize)> {
    let mut order: Vec<(i64, usize, usize)> = motors
        .iter()
        .enumerate()
        .flat_map(|(m, motor)| motor.readings.iter().enumerate().map(move |(i, r)| (r.event_time_ms, m, i)))
        .collect();
    order.sort_unstable();
    order
}

/// Publishes the motors' readings in event-time order as fast as possible, handing over to
/// `caught_up(sent)` after every `chunk` readings (and at the end) to wait for a consumer: a
/// broker that keeps a bounded log (librdkafka's mock cluster keeps 5 MB per partition) then
/// never drops readings not yet read. Returns the readings sent.
pub fn publish_paced(
    motors: &[ReplayMotor],
    producer: &TelemetryProducer,
    chunk: u64,
    caught_up: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<u64> {
    let mut sent = 0;
    for (_, m, i) in time_order(motors) {
        producer.send_readings(std::slice::from_ref(&motors[m].readings[i]))?;
        sent += 1;
        if sent % chunk.max(1) == 0 {
            producer.flush(Duration::from_secs(60))?;
            caught_up(sent)?;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    caught_up(sent)?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_and_names() {
        assert_eq!(parse_time("1970-01-01 00:00:01").unwrap(), 1000);
        assert_eq!(parse_time("2013-07-04 00:00:00.000000").unwrap(), 1_372_896_000_000);
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:02Z").unwrap(), 2000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(snake_case("Volume Flow RateRMS"), "volume_flow_rate_r_m_s");
        assert_eq!("extra.p".parse::<Target>().unwrap(), Target::Extra("p".into()));
        assert!("temprature".parse::<Target>().unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn strips_labels_rebases_and_maps_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("valve1").join("3.csv");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "datetime;Current;Pressure;anomaly;changepoint\n\
             2020-03-09 10:00:00;1.5;0.2;0;0\n\
             2020-03-09 10:00:01;1.6;;1;1\n\
             2020-03-09 10:00:02;1.7;0.3;1;0\n\
             2020-03-09 10:00:03;1.8;0.3;0;0\n",
        )
        .unwrap();
        let opts = ReplayOptions::skab(10_000_000, 5_000, 1);
        let motors = load(&[path], &opts).unwrap();
        let m = &motors[0];
        assert_eq!(m.motor_id.as_str(), "skab-valve1-3");
        assert_eq!(m.readings.len(), 4);
        let last = m.readings[3].event_time_ms;
        assert!((10_000_000 - 5_000..=10_000_000).contains(&last), "{last}");
        assert_eq!(m.readings[1].event_time_ms - m.readings[0].event_time_ms, 1000);
        assert_eq!(m.readings[1].get(Channel::CurrentA), Some(1.6));
        assert!(m.readings[1].extra.is_empty(), "empty cell stays absent");
        assert_eq!(m.readings[0].extra.get("pressure_bar"), Some(&0.2));
        assert!(m.readings.iter().all(|r| !r.extra.contains_key("anomaly")), "labels are stripped");
        let t1 = m.readings[1].event_time_ms;
        assert_eq!(
            m.labels.iter().map(|l| (l.label.as_str(), l.start_ms - t1, l.end_ms - t1)).collect::<Vec<_>>(),
            [("anomaly", 0, 1000), ("changepoint", 0, 0)]
        );
    }
}
