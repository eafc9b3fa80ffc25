//! `tessera eval`: replays the labelled data through Kafka into the running pipeline (ingest →
//! windows → continuous queries → alerts topic) and scores the alerts against the labels.
//!
//! Every file is one motor with its own random time base (the labels are stripped before
//! publishing and kept aside). Scores, per data set:
//! - point-wise (SKAB's protocol): a reading is flagged while an alert is open (from the start
//!   of the window that opened it to the start of the window that closed it); F1, false-alarm
//!   rate FP/(FP+TN), missed-alarm rate FN/(FN+TP);
//! - event-level: an event (a labelled anomaly interval) is detected if an alert is raised
//!   (the end of its opening window) inside it; precision = raised alerts inside an event / all
//!   alerts; detection delay = raise time − event start;
//! - the NAB standard score ([`nab_score`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Message as _};
use serde::Serialize;
use tessera_core::Channel;
use tessera_ingest::{Ingest, IngestConfig, TopicConfig};
use tessera_stream::{AlertEvent, AlertState};

use crate::csv_replay::{self, LabelInterval, ReplayMotor, ReplayOptions, Target};
use crate::embedded::EmbeddedKafka;
use crate::producer::{TelemetryProducer, WireFormat};
use tessera_node::detect::{Detect, DetectConfig, build_engine};
use tessera_node::lifecycle::StageThread;

use crate::error::{WorkloadError, io, kafka};

type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The SKAB folder (with `valve1/` and `anomaly-free/`).
    pub skab_dir: PathBuf,
    /// The NAB folder (with `ambient_temperature_system_failure.csv` and `labels.json`).
    pub nab_dir: Option<PathBuf>,
    /// How many valve1 files (0: all 16).
    pub skab_files: usize,
    /// Include SKAB's anomaly-free file.
    pub anomaly_free: bool,
    /// Seed of the per-motor time offsets.
    pub seed: u64,
    /// The detection config (queries, lateness).
    pub detect: DetectConfig,
}

/// One motor's truth and alerts.
#[derive(Debug, Clone, Default)]
pub struct MotorOutcome {
    /// Data set name (`skab`, `nab`).
    pub dataset: String,
    /// Event times of the readings, ms.
    pub readings_ms: Vec<i64>,
    /// Labelled anomaly intervals, inclusive, ms.
    pub events: Vec<(i64, i64)>,
    /// Alerts: (raised at = end of the opening window, flagged from, flagged until).
    pub alerts: Vec<(i64, i64, i64)>,
}

/// Scores of one data set.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Scores {
    /// Motors (files).
    pub motors: usize,
    /// Labelled events.
    pub events: usize,
    /// Alerts raised.
    pub alerts: usize,
    /// Alerts raised inside an event.
    pub alerts_in_events: usize,
    /// Events with an alert raised inside.
    pub events_detected: usize,
    /// Event-level precision, recall, F1.
    pub event_precision: f64,
    /// Event-level recall.
    pub event_recall: f64,
    /// Event-level F1.
    pub event_f1: f64,
    /// Point-wise F1.
    pub point_f1: f64,
    /// Point-wise false-alarm rate FP/(FP+TN).
    pub false_alarm_rate: f64,
    /// Point-wise missed-alarm rate FN/(FN+TP).
    pub missed_alarm_rate: f64,
    /// Median detection delay of detected events, s.
    pub median_delay_s: Option<f64>,
    /// NAB standard-profile score, normalised (null detector 0, perfect 100).
    pub nab_score: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

/// Scores motors (all of one data set).
pub fn score(motors: &[MotorOutcome]) -> Scores {
    let (mut tp, mut fp, mut fnn, mut tn) = (0usize, 0usize, 0usize, 0usize);
    let mut s = Scores { motors: motors.len(), ..Default::default() };
    let mut delays = Vec::new();
    let mut nab = Vec::new();
    for m in motors {
        for &t in &m.readings_ms {
            let truth = m.events.iter().any(|&(a, b)| t >= a && t <= b);
            let flagged = m.alerts.iter().any(|&(_, from, until)| t >= from && t < until);
            match (truth, flagged) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fnn += 1,
                (false, false) => tn += 1,
            }
        }
        s.events += m.events.len();
        s.alerts += m.alerts.len();
        s.alerts_in_events += m
            .alerts
            .iter()
            .filter(|&&(raised, _, _)| m.events.iter().any(|&(a, b)| raised >= a && raised <= b))
            .count();
        for &(a, b) in &m.events {
            if let Some(first) = m.alerts.iter().map(|x| x.0).filter(|&r| r >= a && r <= b).min() {
                s.events_detected += 1;
                delays.push((first - a) as f64 / 1000.0);
            }
        }
        nab.push(nab_raw(m));
    }
    s.event_precision = ratio(s.alerts_in_events, s.alerts);
    s.event_recall = ratio(s.events_detected, s.events);
    s.event_f1 = f1(s.event_precision, s.event_recall);
    s.point_f1 = f1(ratio(tp, tp + fp), ratio(tp, tp + fnn));
    s.false_alarm_rate = ratio(fp, fp + tn);
    s.missed_alarm_rate = ratio(fnn, fnn + tp);
    delays.sort_by(f64::total_cmp);
    s.median_delay_s = (!delays.is_empty()).then(|| delays[delays.len() / 2]);
    let (raw, null, perfect) = nab.iter().fold((0.0, 0.0, 0.0), |acc, x| (acc.0 + x.0, acc.1 + x.1, acc.2 + x.2));
    s.nab_score = if perfect == null { 0.0 } else { 100.0 * (raw - null) / (perfect - null) };
    s
}

/// NAB's scaled sigmoid: +1 at −∞ … −1 for positions beyond 3.
fn scaled_sigmoid(p: f64) -> f64 {
    if p > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * p).exp()) - 1.0 }
}

/// One motor's NAB raw score, and the raw scores of the null and the perfect detector, with the
/// standard profile (A_tp = 1, A_fp = 0.11, A_fn = 1), following NAB's `sweeper.py`:
///
/// - positions are row indices; rows before `min(⌊0.15·N⌋, 750)` are a probationary period and
///   count for nothing;
/// - inside a window of rows `[L, R]` (width `W`), a detection at row `i` scores
///   `S(−(R − i + 1)/W) / S(−1)` (1 at the window's first row, falling towards its end); only the
///   earliest detection in a window counts; a window without one scores −1;
/// - a detection outside every window scores `0.11 · S(|i − R_prev| / (W_prev − 1))` after the
///   last window that ended before it (cheap right after it, −0.11 far away), or −0.11 if no
///   window has ended yet;
/// - normalised score = 100 · (raw − null) / (perfect − null), null = −windows, perfect = +windows.
///
/// Tessera's detector is binary: its detections are the readings at which alerts are raised (the
/// first reading at or after the end of each alert's opening window).
pub fn nab_raw(m: &MotorOutcome) -> (f64, f64, f64) {
    const TP: f64 = 1.0;
    const FP: f64 = 0.11;
    const FN: f64 = 1.0;
    let n = m.readings_ms.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let probation = ((0.15 * n as f64).floor() as usize).min(750);
    let max_tp = scaled_sigmoid(-1.0);
    // Windows as row ranges.
    let mut windows: Vec<(usize, usize)> = m
        .events
        .iter()
        .filter_map(|&(a, b)| {
            let l = m.readings_ms.iter().position(|&t| t >= a)?;
            let r = m.readings_ms.iter().rposition(|&t| t <= b)?;
            (l <= r && r >= probation).then_some((l, r))
        })
        .collect();
    windows.sort_unstable();
    let null = -FN * windows.len() as f64;
    let perfect = TP * windows.len() as f64;
    let mut window_scores = vec![-FN; windows.len()];
    let mut fp = 0.0;
    let mut detections: Vec<usize> = m
        .alerts
        .iter()
        .filter_map(|&(raised, _, _)| m.readings_ms.iter().position(|&t| t >= raised))
        .filter(|&i| i >= probation)
        .collect();
    detections.sort_unstable();
    detections.dedup();
    for i in detections {
        if let Some(k) = windows.iter().position(|&(l, r)| i >= l && i <= r) {
            let (_, r) = windows[k];
            let w = (windows[k].1 - windows[k].0 + 1) as f64;
            let score = TP * scaled_sigmoid(-((r - i + 1) as f64) / w) / max_tp;
            window_scores[k] = window_scores[k].max(score);
        } else {
            fp += match windows.iter().rev().find(|&&(_, r)| r < i) {
                Some(&(l, r)) => FP * scaled_sigmoid((i - r) as f64 / ((r - l + 1) as f64 - 1.0).max(1.0)),
                None => -FP,
            };
        }
    }
    (fp + window_scores.iter().sum::<f64>(), null, perfect)
}

/// Everything an evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Scores by data set.
    pub scores: BTreeMap<String, Scores>,
    /// Readings published.
    pub published: u64,
    /// Readings the ingest accepted (more than published if a rebalance redelivered some:
    /// the ingest is at-least-once).
    pub ingested: u64,
    /// Readings the windows sent to the late path.
    pub late: u64,
    /// Alert events read back from the alerts topic.
    pub alert_events: usize,
    /// Wall time, s.
    pub wall_s: f64,
}

impl EvalReport {
    /// The scores as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| data set | motors | events | alerts | event P | event R | event F1 | point F1 | FAR | MAR | median delay s | NAB score |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (name, s) in &self.scores {
            out += &format!(
                "| {name} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} % | {:.1} % | {} | {:.1} |\n",
                s.motors,
                s.events,
                s.alerts,
                s.event_precision,
                s.event_recall,
                s.event_f1,
                s.point_f1,
                100.0 * s.false_alarm_rate,
                100.0 * s.missed_alarm_rate,
                s.median_delay_s.map_or("–".into(), |d| format!("{d:.0}")),
                s.nab_score
            );
        }
        out
    }
}

fn skab_files(opts: &EvalOptions) -> Result<Vec<PathBuf>> {
    let dir = opts.skab_dir.join("valve1");
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).map(|n| (n, p)))
        .collect();
    files.sort();
    let take = if opts.skab_files == 0 { files.len() } else { opts.skab_files.min(files.len()) };
    let mut out: Vec<PathBuf> = files.into_iter().take(take).map(|(_, p)| p).collect();
    if opts.anomaly_free {
        out.push(opts.skab_dir.join("anomaly-free/anomaly-free.csv"));
    }
    Ok(out)
}

/// NAB's labelled windows for the file, shifted by the motor's rebasing.
fn nab_motor(dir: &Path, end_ms: i64, seed: u64) -> Result<ReplayMotor> {
    let file = dir.join("ambient_temperature_system_failure.csv");
    let mut mapping = BTreeMap::new();
    mapping.insert("value".to_string(), Target::Channel(Channel::TemperatureC));
    let opts = ReplayOptions {
        mapping,
        required_columns: vec!["value".into()],
        time_column: Some("timestamp".into()),
        label_columns: Vec::new(),
        sites: 3,
        motor_prefix: "nab-".into(),
        end_ms,
        offset_range_ms: 24 * 3_600_000,
        seed,
    };
    let mut motor = csv_replay::load(std::slice::from_ref(&file), &opts)?.remove(0);
    let text = std::fs::read_to_string(&file).map_err(io(format!("reading {}", file.display())))?;
    let first_original = text
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next())
        .ok_or_else(|| WorkloadError::BadData("NAB file has no rows".into()))
        .and_then(csv_replay::parse_time)?;
    let shift = motor.readings[0].event_time_ms - first_original;
    let labels_file = dir.join("labels.json");
    let labels = std::fs::read_to_string(&labels_file).map_err(io(format!("reading {}", labels_file.display())))?;
    let labels: serde_json::Value = serde_json::from_str(&labels)?;
    let bad_labels = |what: &str| WorkloadError::BadData(format!("{}: {what}", labels_file.display()));
    let windows = labels["ambient_temperature_system_failure.csv"]
        .as_array()
        .ok_or_else(|| bad_labels("does not list ambient_temperature_system_failure.csv"))?;
    for w in windows {
        let a = csv_replay::parse_time(w[0].as_str().ok_or_else(|| bad_labels("a window has no start"))?)? + shift;
        let b = csv_replay::parse_time(w[1].as_str().ok_or_else(|| bad_labels("a window has no end"))?)? + shift;
        motor.labels.push(LabelInterval {
            motor_id: motor.motor_id.as_str().to_string(),
            site_id: motor.readings[0].site_id.as_str().to_string(),
            source_file: file.display().to_string(),
            label: "anomaly".into(),
            start_ms: a,
            end_ms: b,
        });
    }
    Ok(motor)
}

/// Runs the evaluation on an embedded Kafka.
pub fn run(opts: &EvalOptions, progress: bool) -> Result<EvalReport> {
    let started = Instant::now();
    // Whole hours: where window boundaries fall within each file then depends on the seed's
    // offsets only, so a seed gives the same run every time.
    let end_ms = (tessera_core::now_ms() - 3_600_000).div_euclid(3_600_000) * 3_600_000;
    // Files end up to a day apart: window boundaries and baselines fall differently for every motor.
    let skab_opts = ReplayOptions::skab(end_ms, 24 * 3_600_000, opts.seed);
    let mut motors = csv_replay::load(&skab_files(opts)?, &skab_opts)?;
    let mut dataset: BTreeMap<String, String> =
        motors.iter().map(|m| (m.motor_id.as_str().to_string(), "skab".to_string())).collect();
    if let Some(dir) = &opts.nab_dir {
        let nab = nab_motor(dir, end_ms, opts.seed)?;
        dataset.insert(nab.motor_id.as_str().to_string(), "nab".into());
        motors.push(nab);
    }

    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    // The replay's end closes the last windows (stop_at_end_of_input): no processing-time
    // idleness, so a consumer stall cannot close a window early and the run is repeatable.
    // Data quality is judged by processing time, which means nothing for a replay of history
    // (files of different days read side by side would look like skewed clocks): off.
    let mut detect = DetectConfig { idle_timeout: Duration::from_secs(24 * 3600), ..opts.detect.clone() };
    detect.data_quality.enabled = false;
    detect.wear.enabled = false;
    for (topic, partitions) in
        [("telemetry", 4), ("dead-letters", 1), (detect.alerts_topic.as_str(), 1), (detect.late_topic.as_str(), 1)]
    {
        kafka.create_topic(topic, partitions)?;
    }
    let producer = TelemetryProducer::new(&brokers, "telemetry", WireFormat::Protobuf, &Default::default())?;
    let published = csv_replay::publish(&motors, &producer, 0.0, progress, &AtomicBool::new(false))?;
    producer.flush(Duration::from_secs(60))?;

    let mut ingest_config = IngestConfig {
        brokers: brokers.clone(),
        group_id: "tessera-eval".into(),
        topics: vec![TopicConfig { name: "telemetry".into(), encoding: tessera_ingest::Encoding::ProtobufReading }],
        dead_letter_topic: "dead-letters".into(),
        batch_max_age: Duration::from_millis(50),
        ..Default::default()
    };
    // NAB spans 302 days of history.
    ingest_config.validation.max_past_ms = 400 * 24 * 3_600_000;
    ingest_config.validation.max_future_ms = 3_600_000;
    let engine = build_engine(&detect)?;
    let (tx, rx) = sync_channel(64);
    let ingest = Ingest::start(ingest_config, tx)?;
    let (stage, detect_loop) = Detect::prepare(engine, &detect, &brokers, rx)?;
    let detect_thread = StageThread::spawn(detect_loop)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while ingest.metrics().snapshot().messages < published {
        if Instant::now() >= deadline {
            return Err(WorkloadError::Stalled("the ingest did not take every reading within 5 minutes".into()));
        }
        if ingest.is_finished() {
            return Err(WorkloadError::Stalled("the ingest stopped unexpectedly".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ingest_stats = ingest.stop()?;
    if ingest_stats.dead_letters_sent > 0 {
        return Err(WorkloadError::BadData(format!(
            "readings were dead-lettered: {:?}",
            ingest_stats.rejected_by_reason
        )));
    }
    stage.request_stop_at_end_of_input();
    let engine = detect_thread.join().map_err(|f| WorkloadError::from((*f).into_error()))?;
    let late = engine.stats().windows.iter().map(|w| w.1.rows_late).sum();

    let events = read_alerts(&brokers, &detect.alerts_topic)?;
    let mut outcomes: BTreeMap<String, MotorOutcome> = BTreeMap::new();
    for m in &motors {
        let o = outcomes.entry(m.motor_id.as_str().to_string()).or_default();
        o.dataset = dataset[m.motor_id.as_str()].clone();
        o.readings_ms = m.readings.iter().map(|r| r.event_time_ms).collect();
        o.events = m.labels.iter().filter(|l| l.label == "anomaly").map(|l| (l.start_ms, l.end_ms)).collect();
    }
    for (motor, alerts) in alert_intervals(&events) {
        if let Some(o) = outcomes.get_mut(&motor) {
            o.alerts = alerts;
        }
    }
    let mut scores = BTreeMap::new();
    for name in ["skab", "nab"] {
        let set: Vec<MotorOutcome> = outcomes.values().filter(|o| o.dataset == name).cloned().collect();
        if !set.is_empty() {
            scores.insert(name.to_string(), score(&set));
        }
    }
    drop(kafka);
    Ok(EvalReport {
        scores,
        published,
        ingested: ingest_stats.readings_accepted,
        late,
        alert_events: events.len(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Alert intervals per motor: (raised at, flagged from, flagged until).
pub fn alert_intervals(events: &[AlertEvent]) -> BTreeMap<String, Vec<(i64, i64, i64)>> {
    let mut by_id: BTreeMap<&str, (&AlertEvent, Option<&AlertEvent>)> = BTreeMap::new();
    for e in events {
        match e.state {
            AlertState::Open => {
                by_id.entry(&e.alert_id).or_insert((e, None));
            }
            AlertState::Close => {
                if let Some(entry) = by_id.get_mut(e.alert_id.as_str()) {
                    entry.1 = Some(e);
                }
            }
            AlertState::Update => {}
        }
    }
    let mut out: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for (open, close) in by_id.values() {
        let until = close.map_or(i64::MAX, |c| c.window_start_ms);
        out.entry(open.motor_id.clone()).or_default().push((open.window_end_ms, open.opened_window_start_ms, until));
    }
    out
}

/// Reads every alert event on the (one-partition) topic.
fn read_alerts(brokers: &str, topic: &str) -> Result<Vec<AlertEvent>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tessera-eval-alerts")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka("creating the alerts reader"))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_err(kafka(format!("reading {topic}'s offsets")))?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Offset(low))
        .and_then(|()| consumer.assign(&assignment))
        .map_err(kafka(format!("assigning {topic}")))?;
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = low;
    while next < high {
        if Instant::now() >= deadline {
            return Err(WorkloadError::Stalled(format!(
                "reading {topic}: offsets {next}..{high} did not arrive within 30 s"
            )));
        }
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.map_err(kafka(format!("reading {topic}")))?;
            next = m.offset() + 1;
            if let Some(p) = m.payload() {
                events.push(serde_json::from_slice(p)?);
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn motor(events: Vec<(i64, i64)>, alerts: Vec<(i64, i64, i64)>) -> MotorOutcome {
        MotorOutcome { dataset: "t".into(), readings_ms: (0..100).map(|i| i * 10).collect(), events, alerts }
    }

    #[test]
    fn point_and_event_scores_by_hand() {
        // readings 0..990 every 10; event [500, 599] (10 readings); one alert raised at 550,
        // flagged 520..600 (8 readings, all inside), one false alert raised at 200, flagged 200..220.
        let s = score(&[motor(vec![(500, 599)], vec![(550, 520, 600), (200, 200, 220)])]);
        assert_eq!((s.events, s.alerts, s.alerts_in_events, s.events_detected), (1, 2, 1, 1));
        assert_eq!(s.event_precision, 0.5);
        assert_eq!(s.event_recall, 1.0);
        // point: TP 8, FN 2, FP 2, TN 88
        assert!((s.point_f1 - 2.0 * 0.8 * 0.8 / 1.6).abs() < 1e-12);
        assert!((s.false_alarm_rate - 2.0 / 90.0).abs() < 1e-12);
        assert!((s.missed_alarm_rate - 0.2).abs() < 1e-12);
        assert_eq!(s.median_delay_s, Some(0.05));
    }

    #[test]
    fn nab_score_by_hand() {
        // 100 readings (rows 0..99, one every 10 ms); probation = 15 rows; window rows 50..59 (W = 10).
        let at_start = score(&[motor(vec![(500, 599)], vec![(500, 500, 510)])]);
        assert!((at_start.nab_score - 100.0).abs() < 1e-9, "a detection on the window's first row is perfect");
        assert_eq!(score(&[motor(vec![(500, 599)], vec![])]).nab_score, 0.0, "no detection: the null score");
        // A detection on the window's last row: S(−1/10)/S(−1).
        let at_end = nab_raw(&motor(vec![(500, 599)], vec![(590, 590, 600)]));
        assert!((at_end.0 - scaled_sigmoid(-0.1) / scaled_sigmoid(-1.0)).abs() < 1e-12);
        // Only the earliest detection in a window counts.
        let two = nab_raw(&motor(vec![(500, 599)], vec![(500, 500, 510), (550, 550, 560)]));
        assert!((two.0 - 1.0).abs() < 1e-12);
        // A false positive 20 rows after the window: 0.11 · S(20 / 9); before any window: −0.11.
        let after = nab_raw(&motor(vec![(300, 399)], vec![(300, 300, 310), (590, 590, 600)]));
        assert!((after.0 - (1.0 + 0.11 * scaled_sigmoid(20.0 / 9.0))).abs() < 1e-12);
        let before = nab_raw(&motor(vec![(500, 599)], vec![(200, 200, 210)]));
        assert!((before.0 - (-1.0 - 0.11)).abs() < 1e-12);
        // Detections in the probationary period (rows < 15) do not count.
        assert_eq!(nab_raw(&motor(vec![(500, 599)], vec![(100, 100, 110)])).0, -1.0);
    }

    #[test]
    fn alert_intervals_pair_opens_with_closes() {
        let ev = |id: &str, state, start, opened| AlertEvent {
            alert_id: id.into(),
            query: "q".into(),
            motor_id: "m".into(),
            site_id: "s".into(),
            state,
            severity: tessera_stream::Severity::Warning,
            score: Some(1.0),
            peak_score: 1.0,
            window_start_ms: start,
            window_end_ms: start + 10,
            opened_window_start_ms: opened,
            emitted_at_ms: 0,
            features: BTreeMap::new(),
        };
        let events = [
            ev("a", AlertState::Open, 100, 100),
            ev("a", AlertState::Close, 150, 100),
            ev("b", AlertState::Open, 300, 300),
        ];
        let iv = alert_intervals(&events);
        assert_eq!(iv["m"], [(110, 100, 150), (310, 300, i64::MAX)]);
    }
}
