//! Alerts: opened and closed with hysteresis from a query's per-window `score`, with ids that
//! are the same on every node and every replay.
//!
//! An alert opens when the score is at or above `open_above` for `open_windows` windows in a
//! row, escalates to critical when it reaches `critical_above`, and closes when the score is
//! below `close_below` for `close_windows` windows in a row. A NULL score (no baseline yet) counts
//! neither way. Its id is `xxh3_64(query, motor, start of the window that opened it)` in hex.
//!
//! The JSON written to the alerts topic (one object per event, key = motor id):
//!
//! ```json
//! {"alert_id":"5f0c…","query":"hot_bearing","motor_id":"M0001","site_id":"site-a",
//!  "state":"open","severity":"warning","score":4.2,"peak_score":4.2,
//!  "window_start_ms":1735689600000,"window_end_ms":1735689610000,
//!  "opened_window_start_ms":1735689600000,"emitted_at_ms":1735689612345,
//!  "features":{"vib":2.91}}
//! ```
//!
//! `state` is `open`, `update` (severity rose) or `close`; `severity` is `warning` or `critical`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, MapBuilder, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::grammar::AlertOptions;
use crate::schema::ts_type;

/// Open, update or close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The alert opened.
    Open,
    /// The alert's severity rose.
    Update,
    /// The alert closed.
    Close,
}

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Score at or above `open_above`.
    Warning,
    /// Score at or above `critical_above`.
    Critical,
}

impl AlertState {
    /// `open`, `update` or `close`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Update => "update",
            AlertState::Close => "close",
        }
    }
}

impl Severity {
    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert event, as written to the alerts topic and the `alerts` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// `xxh3_64(query, motor, opening window start)`, 16 hex digits.
    pub alert_id: String,
    /// The continuous query.
    pub query: String,
    /// The motor.
    pub motor_id: String,
    /// The motor's site.
    pub site_id: String,
    /// Open, update or close.
    pub state: AlertState,
    /// Severity now.
    pub severity: Severity,
    /// This window's score.
    pub score: Option<f64>,
    /// Highest score since the alert opened.
    pub peak_score: f64,
    /// This window's start, ms.
    pub window_start_ms: i64,
    /// This window's end, ms.
    pub window_end_ms: i64,
    /// Start of the window that opened the alert, ms.
    pub opened_window_start_ms: i64,
    /// Processing time of the event, ms.
    pub emitted_at_ms: i64,
    /// The window's other numeric output columns.
    pub features: BTreeMap<String, f64>,
}

/// A deterministic alert id.
pub fn alert_id(query: &str, motor: &str, window_start_ms: i64) -> String {
    let mut key = Vec::with_capacity(query.len() + motor.len() + 10);
    key.extend_from_slice(query.as_bytes());
    key.push(0);
    key.extend_from_slice(motor.as_bytes());
    key.push(0);
    key.extend_from_slice(&window_start_ms.to_be_bytes());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&key))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenAlert {
    id: String,
    opened_window_start_ms: i64,
    severity: Severity,
    peak: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MotorAlert {
    above: u32,
    below: u32,
    /// The newest window's start (`i64::MIN`: none yet).
    last_window_ms: i64,
    /// Boxed: most motors have none open (24 bytes a motor, not 72).
    open: Option<Box<OpenAlert>>,
}

impl Default for MotorAlert {
    fn default() -> Self {
        Self { above: 0, below: 0, last_window_ms: i64::MIN, open: None }
    }
}

/// One window's result for one motor, as the tracker sees it.
#[derive(Debug, Clone)]
pub struct WindowScore<'a> {
    /// The motor.
    pub motor_id: &'a str,
    /// Its site.
    pub site_id: &'a str,
    /// Window start, ms.
    pub window_start_ms: i64,
    /// Window end, ms.
    pub window_end_ms: i64,
    /// The score, if any.
    pub score: Option<f64>,
    /// The window's features (name, value), sorted by name.
    pub features: Vec<(&'a str, f64)>,
}

/// An [`AlertTracker`]'s checkpointed state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TrackerState {
    query: String,
    motors: Vec<(String, MotorAlert)>,
}

/// Hysteresis state of one query's alerts, per motor.
#[derive(Debug)]
pub struct AlertTracker {
    query: String,
    options: AlertOptions,
    /// By the motor's shared id ([`crate::ids`]).
    motors: crate::ids::MotorTable<MotorAlert>,
}

impl AlertTracker {
    /// A tracker for query `query`.
    pub fn new(query: &str, options: AlertOptions) -> Self {
        Self { query: query.to_string(), options, motors: crate::ids::MotorTable::new() }
    }

    /// The open alerts: motor, alert, severity.
    pub fn open_alerts(&self) -> impl Iterator<Item = (&str, &str, Severity)> {
        self.motors.iter().filter_map(|(m, a)| a.open.as_ref().map(|o| (&**m, o.id.as_str(), o.severity)))
    }

    /// The per-motor hysteresis state of the motors `include` accepts, for a checkpoint
    /// (sorted by motor).
    pub(crate) fn snapshot(&self, include: &dyn Fn(&str) -> bool) -> TrackerState {
        let mut motors: Vec<(String, MotorAlert)> =
            self.motors.iter().filter(|(k, _)| include(k)).map(|(k, v)| (k.to_string(), v.clone())).collect();
        motors.sort_by(|a, b| a.0.cmp(&b.0));
        TrackerState { query: self.query.clone(), motors }
    }

    /// Restores [`Self::snapshot`]'s state into the same query's tracker: in place of what it
    /// holds, or with `merge`, added to it.
    pub(crate) fn restore(&mut self, state: TrackerState, merge: bool) -> Result<(), crate::StreamError> {
        if state.query != self.query {
            return Err(crate::StreamError::Checkpoint(format!(
                "alert state of query {} restored into query {}",
                state.query, self.query
            )));
        }
        if !merge {
            self.motors.clear();
        }
        self.motors.extend(state.motors.into_iter().map(|(motor, m)| (crate::ids::shared(&motor), m)));
        Ok(())
    }

    /// Forgets the hysteresis of the motors `drop` accepts (an open alert goes on at the
    /// node the motor moved to, from the state handed over with it).
    pub(crate) fn drop_motors(&mut self, drop: &dyn Fn(&str) -> bool) {
        self.motors.retain(|m, _| !drop(m));
    }

    /// The query whose alerts this tracks.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Alerts open now.
    pub fn open_count(&self) -> usize {
        self.motors.values().filter(|m| m.open.is_some()).count()
    }

    /// Feeds one window's score (a motor's windows must come in window order; a window at or
    /// before the last one seen is a replay and is ignored). Returns the event it causes.
    pub fn observe(&mut self, w: WindowScore<'_>, now_ms: i64) -> Option<AlertEvent> {
        let o = self.options;
        let m = self.motors.entry(w.motor_id, MotorAlert::default);
        if m.last_window_ms != i64::MIN && w.window_start_ms <= m.last_window_ms {
            return None;
        }
        m.last_window_ms = w.window_start_ms;
        let score = w.score?;
        let severity_of =
            |s: f64| if o.critical_above.is_some_and(|c| s >= c) { Severity::Critical } else { Severity::Warning };
        let state = match m.open.as_deref_mut() {
            None => {
                m.above = if score >= o.open_above { m.above + 1 } else { 0 };
                if m.above < o.open_windows {
                    return None;
                }
                m.below = 0;
                m.open = Some(Box::new(OpenAlert {
                    id: alert_id(&self.query, w.motor_id, w.window_start_ms),
                    opened_window_start_ms: w.window_start_ms,
                    severity: severity_of(score),
                    peak: score,
                }));
                AlertState::Open
            }
            Some(open) => {
                open.peak = open.peak.max(score);
                m.below = if score < o.close_below { m.below + 1 } else { 0 };
                if m.below >= o.close_windows {
                    AlertState::Close
                } else if severity_of(score) > open.severity {
                    open.severity = severity_of(score);
                    AlertState::Update
                } else {
                    return None;
                }
            }
        };
        let open = m.open.as_deref().cloned().expect("an alert is open");
        if state == AlertState::Close {
            m.open = None;
            m.above = 0;
            m.below = 0;
        }
        Some(AlertEvent {
            alert_id: open.id,
            query: self.query.clone(),
            motor_id: w.motor_id.to_string(),
            site_id: w.site_id.to_string(),
            state,
            severity: open.severity,
            score: Some(score),
            peak_score: open.peak,
            window_start_ms: w.window_start_ms,
            window_end_ms: w.window_end_ms,
            opened_window_start_ms: open.opened_window_start_ms,
            emitted_at_ms: now_ms,
            features: w.features.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        })
    }
}

/// Schema of the `alerts` table.
pub fn alerts_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("alert_id", DataType::Utf8, false),
            Field::new("query", DataType::Utf8, false),
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("site_id", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("score", DataType::Float64, true),
            Field::new("peak_score", DataType::Float64, false),
            Field::new("window_start", ts_type(), false),
            Field::new("window_end", ts_type(), false),
            Field::new("opened_window_start", ts_type(), false),
            Field::new("emitted_at", ts_type(), false),
        ]))
    })
    .clone()
}

/// Alert events as a batch of the `alerts` table.
pub fn alerts_batch(events: &[AlertEvent]) -> RecordBatch {
    let text = |f: &dyn Fn(&AlertEvent) -> &str| -> ArrayRef {
        let mut b = StringBuilder::new();
        events.iter().for_each(|e| b.append_value(f(e)));
        Arc::new(b.finish())
    };
    let time = |f: &dyn Fn(&AlertEvent) -> i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter_values(events.iter().map(f)).with_timezone("UTC"))
    };
    let mut score = Float64Builder::new();
    let mut peak = Float64Builder::new();
    for e in events {
        score.append_option(e.score);
        peak.append_value(e.peak_score);
    }
    RecordBatch::try_new(
        alerts_schema(),
        vec![
            text(&|e| &e.alert_id),
            text(&|e| &e.query),
            text(&|e| &e.motor_id),
            text(&|e| &e.site_id),
            text(&|e| e.state.as_str()),
            text(&|e| e.severity.as_str()),
            Arc::new(score.finish()),
            Arc::new(peak.finish()),
            time(&|e| e.window_start_ms),
            time(&|e| e.window_end_ms),
            time(&|e| e.opened_window_start_ms),
            time(&|e| e.emitted_at_ms),
        ],
    )
    .expect("alerts batch matches its schema")
}

/// Schema of the `motor_windows` table: one row per query, motor and window.
pub fn motor_windows_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("query", DataType::Utf8, false),
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("window_start", ts_type(), false),
            Field::new("window_end", ts_type(), false),
            Field::new("score", DataType::Float64, true),
            Field::new("features", features_type(), false),
        ]))
    })
    .clone()
}

fn features_type() -> DataType {
    datafusion::arrow::array::Array::data_type(
        &MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()).finish(),
    )
    .clone()
}

/// Builds `motor_windows` rows.
#[derive(Debug)]
pub struct MotorWindowsBuilder {
    query: StringBuilder,
    motor: StringBuilder,
    start: Vec<i64>,
    end: Vec<i64>,
    score: Float64Builder,
    features: MapBuilder<StringBuilder, Float64Builder>,
}

impl Default for MotorWindowsBuilder {
    fn default() -> Self {
        Self {
            query: StringBuilder::new(),
            motor: StringBuilder::new(),
            start: Vec::new(),
            end: Vec::new(),
            score: Float64Builder::new(),
            features: MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()),
        }
    }
}

impl MotorWindowsBuilder {
    /// Adds one row.
    pub fn append(&mut self, query: &str, w: &WindowScore<'_>) {
        self.query.append_value(query);
        self.motor.append_value(w.motor_id);
        self.start.push(w.window_start_ms);
        self.end.push(w.window_end_ms);
        self.score.append_option(w.score);
        for (k, v) in &w.features {
            self.features.keys().append_value(*k);
            self.features.values().append_value(*v);
        }
        self.features.append(true).expect("map entries are balanced");
    }

    /// The rows so far.
    pub fn finish(mut self) -> RecordBatch {
        RecordBatch::try_new(
            motor_windows_schema(),
            vec![
                Arc::new(self.query.finish()),
                Arc::new(self.motor.finish()),
                Arc::new(TimestampMillisecondArray::from(self.start).with_timezone("UTC")),
                Arc::new(TimestampMillisecondArray::from(self.end).with_timezone("UTC")),
                Arc::new(self.score.finish()),
                Arc::new(self.features.finish()),
            ],
        )
        .expect("motor_windows batch matches its schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut AlertTracker, scores: &[Option<f64>]) -> Vec<(i64, AlertState, Severity)> {
        scores
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let w = WindowScore {
                    motor_id: "M1",
                    site_id: "site-a",
                    window_start_ms: i as i64 * 10,
                    window_end_ms: i as i64 * 10 + 10,
                    score: *s,
                    features: Vec::new(),
                };
                t.observe(w, 0).map(|e| (e.window_start_ms, e.state, e.severity))
            })
            .collect()
    }

    #[test]
    fn hysteresis_opens_and_closes_without_flapping() {
        let opts = AlertOptions {
            open_above: 3.0,
            close_below: 1.0,
            critical_above: Some(6.0),
            open_windows: 2,
            close_windows: 2,
        };
        let mut t = AlertTracker::new("q", opts);
        let s = |v: f64| Some(v);
        let events = feed(
            &mut t,
            &[None, s(3.5), s(0.0), s(3.5), s(3.2), s(2.0), s(0.5), s(2.0), s(7.0), s(0.5), s(0.2), s(3.1)],
        );
        assert_eq!(
            events,
            [
                (40, AlertState::Open, Severity::Warning),    // two in a row above 3 (30, 40)
                (80, AlertState::Update, Severity::Critical), // 2.0 at 50 stays open, 0.5 then 2.0 resets the count
                (100, AlertState::Close, Severity::Critical), // 0.5, 0.2: two below 1
            ]
        );
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn ids_are_deterministic_and_replays_are_ignored() {
        assert_eq!(alert_id("q", "M1", 40), alert_id("q", "M1", 40));
        assert_ne!(alert_id("q", "M1", 40), alert_id("q", "M2", 40));
        assert_ne!(alert_id("q", "M1", 40), alert_id("q2", "M1", 40));
        let opts =
            AlertOptions { open_above: 1.0, close_below: 1.0, critical_above: None, open_windows: 1, close_windows: 1 };
        let mut t = AlertTracker::new("q", opts);
        assert_eq!(feed(&mut t, &[Some(2.0)]).len(), 1);
        assert!(feed(&mut t, &[Some(2.0)]).is_empty(), "window 0 again is a replay");
        let batch = alerts_batch(&[]);
        assert_eq!(batch.num_rows(), 0);
    }
}
