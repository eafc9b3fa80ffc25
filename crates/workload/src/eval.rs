//! `tessera eval`: replays the labelled data through Kafka into the running pipeline (ingest →
//! windows → continuous queries and judges → alerts topic) and scores the alerts against the
//! labels.
//!
//! Data sets: SKAB's and NAB's layouts as shipped in `../shared/data`, or any folder of CSV
//! files with a labels file ([`FolderLabels`]: anomaly intervals per file, and failure times
//! for run-to-failure files). Every file is one motor with its own random time base (the labels
//! are stripped before publishing and kept aside). Which rules run is chosen per run
//! ([`Rules`]), so each can be scored alone (ablation). Scores, per data set:
//! - point-wise (SKAB's protocol): a reading is flagged while an alert is open (from the start
//!   of the window that opened it to the start of the window that closed it); F1, false-alarm
//!   rate FP/(FP+TN), missed-alarm rate FN/(FN+TP);
//! - event-level: an event (a labelled anomaly interval) is detected if an alert is raised
//!   (the end of its opening window) inside it; precision = raised alerts inside an event / all
//!   alerts; detection delay = raise time − event start;
//! - false-alarm episodes per hour of normal data: overlapping alerts merged into episodes, the
//!   episodes raised outside every event, over the hours of readings outside every event;
//! - lead time before failure: for a run-to-failure file, the failure time minus the first
//!   alert raised in the `lead_window` before it (that window is the file's event);
//! - the NAB standard score ([`nab_raw`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Message as _};
use serde::{Deserialize, Serialize};
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

/// Which rules run: the SQL continuous queries (the configured ones, or the default rule set)
/// and the judges beside them. Data quality runs on event time only: a replay of history has
/// no processing time worth judging (silence by processing time is off, the `min_silence` of a
/// gap is 1 h) and files of different days read side by side are no skewed clocks (off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The continuous queries.
    pub queries: bool,
    /// The shift judge (`[detect.shift]`).
    pub shift: bool,
    /// The wear judge (`[detect.wear]`).
    pub wear: bool,
    /// The data-quality judge (`[detect.data_quality]`) on event time: gaps, dropouts, stuck
    /// sensors.
    pub quality: bool,
}

impl Rules {
    /// Every rule.
    pub const ALL: Rules = Rules { queries: true, shift: true, wear: true, quality: true };
}

impl std::str::FromStr for Rules {
    type Err = WorkloadError;
    /// `all`, or a comma-separated list of `queries`, `shift`, `wear`, `quality`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "all" {
            return Ok(Rules::ALL);
        }
        let mut rules = Rules { queries: false, shift: false, wear: false, quality: false };
        for name in s.split(',').map(str::trim) {
            match name {
                "queries" => rules.queries = true,
                "shift" => rules.shift = true,
                "wear" => rules.wear = true,
                "quality" => rules.quality = true,
                other => {
                    return Err(WorkloadError::BadData(format!(
                        "unknown rule {other:?}: use all, or a list of queries, shift, wear, quality"
                    )));
                }
            }
        }
        Ok(rules)
    }
}

impl std::fmt::Display for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> =
            [(self.queries, "queries"), (self.shift, "shift"), (self.wear, "wear"), (self.quality, "quality")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        f.write_str(&names.join(","))
    }
}

/// A labelled data set.
#[derive(Debug, Clone)]
pub enum DataSet {
    /// SKAB's layout: `valve1/<n>.csv` (labels in the `anomaly` column) and
    /// `anomaly-free/anomaly-free.csv`.
    Skab {
        /// The folder.
        dir: PathBuf,
        /// How many valve1 files (0: all).
        files: usize,
        /// Include the anomaly-free file.
        anomaly_free: bool,
    },
    /// NAB's ambient temperature file and its `labels.json`.
    Nab {
        /// The folder.
        dir: PathBuf,
    },
    /// Any folder of CSV files, labelled by a [`FolderLabels`] file.
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The labels file.
        labels: PathBuf,
    },
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The data sets.
    pub sets: Vec<DataSet>,
    /// Seed of the per-motor time offsets.
    pub seed: u64,
    /// The detection config (queries, judges' settings, lateness).
    pub detect: DetectConfig,
    /// The rules that run.
    pub rules: Rules,
}

/// A folder's labels file (JSON). Either NAB's form, `{"file.csv": [["start", "end"], …]}`, or:
///
/// ```json
/// {
///   "time_column": "timestamp",
///   "columns": {"vib": "vibration_x_rms", "temp": "temperature_c", "id": "skip"},
///   "lead_window_h": 168,
///   "files": {
///     "pump-1.csv": {"anomalies": [["2024-03-01 10:00:00", "2024-03-01 12:30:00"]]},
///     "fan-7.csv": {"failure": "2024-04-12 06:00:00", "lead_window_h": 72},
///     "fan-8.csv": {}
///   }
/// }
/// ```
///
/// Only the files listed are evaluated (a file with no anomalies and no failure is normal
/// data). Times are as in the files (epoch s/ms, RFC 3339 or `YYYY-MM-DD HH:MM:SS`). Columns
/// map to channels or `extra.NAME` (unmapped ones become extras under a snake_case name; a
/// column named like a channel is that channel). A failure's event is the `lead_window_h`
/// (default 168) before it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderLabels {
    /// The time column (default: the first).
    #[serde(default)]
    pub time_column: Option<String>,
    /// Column → field.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// The default lead window before a failure, hours.
    #[serde(default)]
    pub lead_window_h: Option<f64>,
    /// Per file.
    pub files: BTreeMap<String, FileLabels>,
}

/// One file's labels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLabels {
    /// Anomaly intervals, inclusive.
    #[serde(default)]
    pub anomalies: Vec<(String, String)>,
    /// When the machine failed (run-to-failure files).
    #[serde(default)]
    pub failure: Option<String>,
    /// The lead window before this file's failure, hours.
    #[serde(default)]
    pub lead_window_h: Option<f64>,
    /// What the file holds, for people (e.g. the injected fault's kind); not scored.
    #[serde(default)]
    pub note: Option<String>,
}

impl FolderLabels {
    /// Reads a labels file in either form.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| WorkloadError::BadData(format!("{}: not JSON: {e}", path.display())))?;
        if value.get("files").is_some() {
            return serde_json::from_value(value)
                .map_err(|e| WorkloadError::BadData(format!("{}: {e}", path.display())));
        }
        // NAB's form.
        let windows: BTreeMap<String, Vec<(String, String)>> = serde_json::from_value(value).map_err(|e| {
            WorkloadError::BadData(format!(
                "{}: neither {{\"files\": …}} nor NAB's {{\"file\": [[start, end], …]}}: {e}",
                path.display()
            ))
        })?;
        Ok(FolderLabels {
            files: windows.into_iter().map(|(f, w)| (f, FileLabels { anomalies: w, ..Default::default() })).collect(),
            ..Default::default()
        })
    }
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
    /// A run-to-failure file's failure time and lead window (its last event), ms.
    pub failure: Option<(i64, i64)>,
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
    /// Hours of readings outside every event.
    pub normal_hours: f64,
    /// False-alarm episodes (overlapping alerts merged) raised outside every event.
    pub false_alarm_episodes: usize,
    /// False-alarm episodes per hour of normal data.
    pub false_alarms_per_hour: f64,
    /// Run-to-failure files.
    pub failures: usize,
    /// Failures alerted in their lead window.
    pub failures_alerted: usize,
    /// Lead times of the alerted failures, hours, ascending.
    pub lead_times_h: Vec<f64>,
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
        s.normal_hours += normal_ms(m) as f64 / 3_600_000.0;
        s.false_alarm_episodes += episodes(&m.alerts)
            .into_iter()
            .filter(|&(raised, _)| !m.events.iter().any(|&(a, b)| raised >= a && raised <= b))
            .count();
        if let Some((failure, window)) = m.failure {
            s.failures += 1;
            if let Some(first) = m.alerts.iter().map(|x| x.0).filter(|&r| r >= failure - window && r <= failure).min() {
                s.failures_alerted += 1;
                s.lead_times_h.push((failure - first) as f64 / 3_600_000.0);
            }
        }
    }
    s.lead_times_h.sort_by(f64::total_cmp);
    s.false_alarms_per_hour = if s.normal_hours > 0.0 { s.false_alarm_episodes as f64 / s.normal_hours } else { 0.0 };
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

/// Time covered by readings outside every event: the gaps between consecutive such readings,
/// each counted up to 10 times the motor's median gap (a hole in the recording is no data).
fn normal_ms(m: &MotorOutcome) -> i64 {
    let mut gaps: Vec<i64> = m.readings_ms.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).collect();
    if gaps.is_empty() {
        return 0;
    }
    gaps.sort_unstable();
    let cap = 10 * gaps[gaps.len() / 2];
    let normal = |t: i64| !m.events.iter().any(|&(a, b)| t >= a && t <= b);
    m.readings_ms.windows(2).filter(|w| normal(w[0]) && normal(w[1])).map(|w| (w[1] - w[0]).clamp(0, cap)).sum()
}

/// Alerts merged into episodes where their flagged spans overlap: (first raised, until).
fn episodes(alerts: &[(i64, i64, i64)]) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64, i64)> = alerts.iter().map(|&(raised, from, until)| (from, until, raised)).collect();
    spans.sort_unstable();
    let mut out: Vec<(i64, i64, i64)> = Vec::new();
    for (from, until, raised) in spans {
        match out.last_mut() {
            Some(last) if from <= last.1 => {
                last.1 = last.1.max(until);
                last.2 = last.2.min(raised);
            }
            _ => out.push((from, until, raised)),
        }
    }
    out.into_iter().map(|(_, until, raised)| (raised, until)).collect()
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
    /// The rules that ran.
    pub rules: String,
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
    /// Per motor, for finding what a score is made of.
    pub motors: Vec<MotorSummary>,
}

/// One motor's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct MotorSummary {
    /// The motor (file).
    pub motor: String,
    /// Its data set.
    pub dataset: String,
    /// Labelled events: hours since its first reading.
    pub events_h: Vec<(f64, f64)>,
    /// Events with an alert raised inside.
    pub detected: usize,
    /// Alerts raised, and how many inside an event.
    pub alerts: usize,
    /// Alerts raised inside an event.
    pub alerts_in_events: usize,
    /// Hours of readings outside every event.
    pub normal_hours: f64,
    /// False-alarm episodes.
    pub false_alarm_episodes: usize,
    /// Alerts opened, by kind (the alert's query).
    pub opened: BTreeMap<String, usize>,
    /// The lead time before its failure, hours, when alerted.
    pub lead_time_h: Option<f64>,
    /// When its alerts were raised: hours since its first reading, the kind, and why (its
    /// strongest `z.<channel>` features, or `t2`).
    pub raised_h: Vec<(f64, String, String)>,
}

impl EvalReport {
    /// The scores as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| data set | rules | motors | events | alerts | event P | event R | event F1 | point F1 | FAR | MAR | false alarms / h normal | median delay s | NAB score | failures alerted | lead time h (min / median) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (name, s) in &self.scores {
            let lead = if s.lead_times_h.is_empty() {
                "–".to_string()
            } else {
                format!("{:.0} / {:.0}", s.lead_times_h[0], s.lead_times_h[s.lead_times_h.len() / 2])
            };
            out += &format!(
                "| {name} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} % | {:.1} % | {:.3} ({} in {:.1} h) | {} | {:.1} | {} of {} | {lead} |\n",
                self.rules,
                s.motors,
                s.events,
                s.alerts,
                s.event_precision,
                s.event_recall,
                s.event_f1,
                s.point_f1,
                100.0 * s.false_alarm_rate,
                100.0 * s.missed_alarm_rate,
                s.false_alarms_per_hour,
                s.false_alarm_episodes,
                s.normal_hours,
                s.median_delay_s.map_or("–".into(), |d| format!("{d:.0}")),
                s.nab_score,
                s.failures_alerted,
                s.failures,
            );
        }
        out
    }
}

impl EvalReport {
    /// The per-motor outcomes as a Markdown table.
    pub fn motors_table(&self) -> String {
        let mut out = String::from(
            "| motor | data set | events (h) | detected | false-alarm episodes | lead time h | alerts opened | raised at h |\n|---|---|---|---|---|---|---|---|\n",
        );
        for m in &self.motors {
            let opened: Vec<String> = m.opened.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            let raised: Vec<String> = m
                .raised_h
                .iter()
                .map(|(h, _, why)| if why.is_empty() { format!("{h:.1}") } else { format!("{h:.1} ({why})") })
                .collect();
            let events: Vec<String> = m.events_h.iter().map(|(a, b)| format!("{a:.1}–{b:.1}")).collect();
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m.motor,
                m.dataset,
                events.join(", "),
                m.detected,
                m.false_alarm_episodes,
                m.lead_time_h.map_or("–".into(), |h| format!("{h:.0}")),
                opened.join(", "),
                raised.join(", ")
            );
        }
        out
    }
}

/// Why an alert opened, in a few words: its two strongest channel z-scores (`z.<channel>`,
/// `peak.<channel>` for a transient, Hotelling's `t2`).
fn why(features: &BTreeMap<String, f64>) -> String {
    let mut strongest: Vec<(&str, f64)> = features
        .iter()
        .filter(|(k, _)| k.starts_with("z.") || k.starts_with("peak.") || k.as_str() == "t2")
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    strongest.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    strongest.iter().take(2).map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", ")
}

/// A motor with its failure (time, lead window) where it has one.
type LabelledMotor = (ReplayMotor, Option<(i64, i64)>);

/// A data set's motors.
struct Loaded {
    name: String,
    motors: Vec<LabelledMotor>,
}

fn skab_files(dir: &Path, take: usize, anomaly_free: bool) -> Result<Vec<PathBuf>> {
    let valve = dir.join("valve1");
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&valve)
        .map_err(io(format!("reading {}", valve.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).map(|n| (n, p)))
        .collect();
    files.sort();
    let take = if take == 0 { files.len() } else { take.min(files.len()) };
    let mut out: Vec<PathBuf> = files.into_iter().take(take).map(|(_, p)| p).collect();
    if anomaly_free {
        out.push(dir.join("anomaly-free/anomaly-free.csv"));
    }
    Ok(out)
}

/// NAB's file with its labelled windows.
fn nab_set(dir: &Path, end_ms: i64, seed: u64) -> Result<Loaded> {
    let labels = dir.join("labels.json");
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
    let mut labelled = FolderLabels::read(&labels)?;
    labelled.files.retain(|f, _| f == "ambient_temperature_system_failure.csv");
    if labelled.files.is_empty() {
        return Err(WorkloadError::BadData(format!(
            "{}: does not list ambient_temperature_system_failure.csv",
            labels.display()
        )));
    }
    Ok(Loaded { name: "nab".into(), motors: label_files(dir, &labelled, &opts)? })
}

/// Any folder with a [`FolderLabels`] file.
fn folder_set(dir: &Path, labels: &Path, end_ms: i64, seed: u64) -> Result<Loaded> {
    let labelled = FolderLabels::read(labels)?;
    let mut mapping = BTreeMap::new();
    for (column, field) in &labelled.columns {
        let target = field
            .parse::<Target>()
            .map_err(|e| WorkloadError::BadData(format!("{}: columns.{column}: {e}", labels.display())))?;
        mapping.insert(column.clone(), target);
    }
    // Columns named like a channel are that channel.
    let first = labelled.files.keys().next().map(|f| dir.join(f));
    if let Some(first) = first.filter(|f| f.exists()) {
        let text = std::fs::read_to_string(&first).map_err(io(format!("reading {}", first.display())))?;
        for column in text.lines().next().unwrap_or("").split([',', ';']).map(str::trim) {
            if let Some(c) = Channel::ALL.into_iter().find(|c| c.name() == column) {
                mapping.entry(column.to_string()).or_insert(Target::Channel(c));
            }
        }
    }
    let opts = ReplayOptions {
        required_columns: labelled.columns.keys().cloned().collect(),
        mapping,
        time_column: labelled.time_column.clone(),
        label_columns: Vec::new(),
        sites: 3,
        motor_prefix: "eval-".into(),
        end_ms,
        offset_range_ms: 24 * 3_600_000,
        seed,
    };
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("data").to_string();
    Ok(Loaded { name, motors: label_files(dir, &labelled, &opts)? })
}

/// Loads the labelled files of `dir` and puts their labels on the rebased time line.
fn label_files(dir: &Path, labelled: &FolderLabels, opts: &ReplayOptions) -> Result<Vec<LabelledMotor>> {
    let files: Vec<PathBuf> = labelled.files.keys().map(|f| dir.join(f)).collect();
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        return Err(WorkloadError::BadData(format!("a labelled file is missing: {}", missing.display())));
    }
    let motors = csv_replay::load(&files, opts)?;
    let default_window_h = labelled.lead_window_h.unwrap_or(168.0);
    let mut out = Vec::new();
    for ((file, labels), mut motor) in labelled.files.iter().zip(motors) {
        let bad = |what: String| WorkloadError::BadData(format!("labels of {file}: {what}"));
        let at = |s: &str| csv_replay::parse_time(s).map_err(|e| bad(e.to_string())).map(|t| t + motor.shift_ms);
        let site = motor.readings.first().map(|r| r.site_id.as_str().to_string()).unwrap_or_default();
        let mut intervals = Vec::new();
        for (a, b) in &labels.anomalies {
            let (a, b) = (at(a)?, at(b)?);
            if b < a {
                return Err(bad(format!("an anomaly ends before it starts ({a} > {b})")));
            }
            intervals.push((a, b));
        }
        let failure = match &labels.failure {
            Some(f) => {
                let window_h = labels.lead_window_h.unwrap_or(default_window_h);
                if window_h.is_nan() || window_h <= 0.0 {
                    return Err(bad(format!("lead_window_h must be positive, not {window_h}")));
                }
                let failure = at(f)?;
                let window = (window_h * 3_600_000.0) as i64;
                intervals.push((failure - window, failure));
                Some((failure, window))
            }
            None => None,
        };
        for (a, b) in intervals {
            motor.labels.push(LabelInterval {
                motor_id: motor.motor_id.as_str().to_string(),
                site_id: site.clone(),
                source_file: dir.join(file).display().to_string(),
                label: "anomaly".into(),
                start_ms: a,
                end_ms: b,
            });
        }
        out.push((motor, failure));
    }
    Ok(out)
}

fn load_set(set: &DataSet, end_ms: i64, seed: u64) -> Result<Loaded> {
    match set {
        DataSet::Skab { dir, files, anomaly_free } => {
            // Files end up to a day apart: window boundaries and baselines fall differently for
            // every motor.
            let opts = ReplayOptions::skab(end_ms, 24 * 3_600_000, seed);
            let motors = csv_replay::load(&skab_files(dir, *files, *anomaly_free)?, &opts)?;
            Ok(Loaded { name: "skab".into(), motors: motors.into_iter().map(|m| (m, None)).collect() })
        }
        DataSet::Nab { dir } => nab_set(dir, end_ms, seed),
        DataSet::Folder { dir, labels } => folder_set(dir, labels, end_ms, seed),
    }
}

/// Runs the evaluation on an embedded Kafka.
pub fn run(opts: &EvalOptions, progress: bool) -> Result<EvalReport> {
    let started = Instant::now();
    // Whole days: where window boundaries and hours of the day fall within each file then
    // depend on the seed's offsets only, so a seed gives the same run every time.
    const DAY_MS: i64 = 24 * 3_600_000;
    let end_ms = (tessera_core::now_ms() - DAY_MS).div_euclid(DAY_MS) * DAY_MS;
    let mut motors = Vec::new();
    let mut dataset: BTreeMap<String, (String, Option<(i64, i64)>)> = BTreeMap::new();
    for set in &opts.sets {
        let loaded = load_set(set, end_ms, opts.seed)?;
        for (motor, failure) in loaded.motors {
            let id = motor.motor_id.as_str().to_string();
            if dataset.insert(id.clone(), (loaded.name.clone(), failure)).is_some() {
                return Err(WorkloadError::BadData(format!("two files make motor {id}: rename one")));
            }
            motors.push(motor);
        }
    }

    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    // The replay's end closes the last windows (stop_at_end_of_input): no processing-time
    // idleness, so a consumer stall cannot close a window early and the run is repeatable.
    // Data quality on event time only: silence by processing time means nothing for a replay
    // of history (off: no gap under an hour, longer than any evaluation), and files of
    // different days read side by side would look like skewed clocks (off).
    let mut detect = DetectConfig { idle_timeout: Duration::from_secs(24 * 3600), ..opts.detect.clone() };
    detect.data_quality.enabled &= opts.rules.quality;
    detect.data_quality.skew_bound = Duration::from_secs(10 * 365 * 24 * 3600);
    detect.data_quality.min_silence = detect.data_quality.min_silence.max(Duration::from_secs(3600));
    detect.default_rules &= opts.rules.queries;
    if !opts.rules.queries {
        detect.queries.clear();
    }
    detect.shift.enabled &= opts.rules.shift;
    detect.wear.enabled &= opts.rules.wear;
    for (topic, partitions) in
        [("telemetry", 4), ("dead-letters", 1), (detect.alerts_topic.as_str(), 1), (detect.late_topic.as_str(), 1)]
    {
        kafka.create_topic(topic, partitions)?;
    }
    let mut ingest_config = IngestConfig {
        brokers: brokers.clone(),
        group_id: "tessera-eval".into(),
        topics: vec![TopicConfig { name: "telemetry".into(), encoding: tessera_ingest::Encoding::ProtobufReading }],
        dead_letter_topic: "dead-letters".into(),
        batch_max_age: Duration::from_millis(50),
        ..Default::default()
    };
    // NAB spans 302 days of history; a folder may span more.
    ingest_config.validation.max_past_ms = 3_650 * 24 * 3_600_000;
    ingest_config.validation.max_future_ms = 3_600_000;
    let engine = build_engine(&detect)?;
    let (tx, rx) = sync_channel(64);
    let ingest = Ingest::start(ingest_config, tx)?;
    let (stage, detect_loop) = Detect::prepare(engine, &detect, &brokers, rx)?;
    let detect_thread = StageThread::spawn(detect_loop)?;
    // Published in chunks, each read before the next: the embedded broker keeps 5 MB per
    // partition and would drop what a slower reader had not read yet.
    let producer = TelemetryProducer::new(&brokers, "telemetry", WireFormat::Protobuf, &Default::default())?;
    let total: usize = motors.iter().map(|m| m.readings.len()).sum();
    let published = csv_replay::publish_paced(&motors, &producer, 20_000, &mut |sent| {
        let mut last = (ingest.metrics().snapshot().messages, Instant::now());
        while last.0 < sent {
            std::thread::sleep(Duration::from_millis(20));
            let taken = ingest.metrics().snapshot().messages;
            if taken > last.0 {
                last = (taken, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(60) {
                return Err(WorkloadError::Stalled(format!(
                    "the ingest took {taken} of {sent} readings published and then nothing for a minute"
                )));
            }
            if ingest.is_finished() {
                return Err(WorkloadError::Stalled("the ingest stopped unexpectedly".into()));
            }
        }
        if progress {
            eprintln!("{sent} of {total} readings published and read");
        }
        Ok(())
    })?;
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
        (o.dataset, o.failure) = dataset[m.motor_id.as_str()].clone();
        o.readings_ms = m.readings.iter().map(|r| r.event_time_ms).collect();
        o.events = m.labels.iter().filter(|l| l.label == "anomaly").map(|l| (l.start_ms, l.end_ms)).collect();
    }
    for (motor, alerts) in alert_intervals(&events) {
        if let Some(o) = outcomes.get_mut(&motor) {
            o.alerts = alerts;
        }
    }
    let mut summaries = Vec::new();
    for (motor, o) in &outcomes {
        let one = score(std::slice::from_ref(o));
        let mut opened = BTreeMap::new();
        let mut raised_h = Vec::new();
        let first = o.readings_ms.first().copied().unwrap_or(0);
        for e in events.iter().filter(|e| &e.motor_id == motor && e.state == AlertState::Open) {
            *opened.entry(e.query.clone()).or_insert(0) += 1;
            raised_h.push(((e.window_end_ms - first) as f64 / 3_600_000.0, e.query.clone(), why(&e.features)));
        }
        summaries.push(MotorSummary {
            motor: motor.clone(),
            dataset: o.dataset.clone(),
            events_h: o
                .events
                .iter()
                .map(|(a, b)| ((a - first) as f64 / 3_600_000.0, (b - first) as f64 / 3_600_000.0))
                .collect(),
            detected: one.events_detected,
            alerts: one.alerts,
            alerts_in_events: one.alerts_in_events,
            normal_hours: one.normal_hours,
            false_alarm_episodes: one.false_alarm_episodes,
            opened,
            lead_time_h: one.lead_times_h.first().copied(),
            raised_h,
        });
    }
    let mut scores = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = outcomes.values().map(|o| &o.dataset).collect();
    for name in names {
        let set: Vec<MotorOutcome> = outcomes.values().filter(|o| &o.dataset == name).cloned().collect();
        scores.insert(name.clone(), score(&set));
    }
    drop(kafka);
    Ok(EvalReport {
        rules: opts.rules.to_string(),
        scores,
        published,
        ingested: ingest_stats.readings_accepted,
        late,
        alert_events: events.len(),
        wall_s: started.elapsed().as_secs_f64(),
        motors: summaries,
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
        MotorOutcome {
            dataset: "t".into(),
            readings_ms: (0..100).map(|i| i * 10).collect(),
            events,
            alerts,
            failure: None,
        }
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
