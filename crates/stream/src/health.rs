//! The `motor_health` table: one row per motor the engine holds, the data a fleet view shows —
//! its status, its newest score and the query that gave it, why (the kinds of its open alerts,
//! data-quality ones naming their channel), the estimated time to a threshold where a rule
//! gives one (a rule's `seconds_to_…` output, or an open wear alert's `seconds_to_limit`), and
//! its newest reading.
//!
//! Status, worst first: `critical` (an open alert at critical), `silent` (the data-quality
//! `silent` alert is open), `warning` (any other open alert), `watch` (the newest score of a
//! query is at least half its `open_above`), else `healthy`. A rule gives a time to threshold
//! by an output column named `seconds_to_…` (e.g. `time_to_threshold(…) AS seconds_to_110c`);
//! the smallest of the newest window's is shown.
//!
//! The engine updates the board as it scores windows and raises alerts; the table reads a
//! snapshot of it at each scan, so queries never wait for the detection thread.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::alerts::{AlertEvent, AlertState, Severity, WindowScore};
use crate::schema::ts_type;

/// A motor's row.
#[derive(Debug, Clone, Default)]
struct MotorHealth {
    /// Shared ([`crate::ids`]); empty until known.
    site: Option<Arc<str>>,
    last_reading_ms: i64,
    /// The newest score of each query (sorted by query, each name shared), and whether it is
    /// at least half its `open_above`: a few entries, where a map's node took 450 bytes.
    scores: Vec<(Arc<str>, f64, bool)>,
    time_to_threshold_s: Option<f64>,
    /// The motor's open alerts (boxed: most motors have none).
    alerts: Option<Box<OpenAlerts>>,
}

/// A motor's open alerts.
#[derive(Debug, Clone, Default)]
struct OpenAlerts {
    /// By kind (the query, or the data-quality or wear kind).
    open: BTreeMap<String, Severity>,
    /// The time to a limit that open alerts estimate (wear alerts' `seconds_to_limit`).
    time_to_limit: BTreeMap<String, f64>,
}

impl MotorHealth {
    /// The open alerts by kind.
    fn open(&self) -> impl Iterator<Item = (&String, &Severity)> {
        self.alerts.iter().flat_map(|a| &a.open)
    }

    fn status(&self) -> &'static str {
        if self.open().any(|(_, s)| *s == Severity::Critical) {
            "critical"
        } else if self.open().any(|(kind, _)| kind == "silent") {
            "silent"
        } else if self.open().next().is_some() {
            "warning"
        } else if self.scores.iter().any(|(_, _, watch)| *watch) {
            "watch"
        } else {
            "healthy"
        }
    }

    /// The nearest time to a threshold, from the newest windows or the open alerts.
    fn time_to_threshold(&self) -> Option<f64> {
        let limits = self.alerts.iter().flat_map(|a| a.time_to_limit.values().copied());
        self.time_to_threshold_s.into_iter().chain(limits).min_by(f64::total_cmp)
    }

    /// The highest newest score, and its query.
    fn worst_score(&self) -> Option<(&str, f64)> {
        self.scores.iter().map(|(q, s, _)| (&**q, *s)).max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Motor id → its health.
type Board = crate::ids::MotorTable<MotorHealth>;

/// The engine's board of motor health, shared with the `motor_health` table.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    motors: Arc<RwLock<Board>>,
}

impl HealthBoard {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Board> {
        self.motors.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes readings taken in: the newest event time of each motor of `batch` (telemetry
    /// schema). A known motor costs a look-up per run of its readings and no allocation. (An
    /// engine with window operators uses [`Self::motors_read`] instead.)
    pub fn readings(&self, batch: &RecordBatch) {
        let Some((motors, sites, ts)) = crate::schema::keys(batch) else { return };
        let mut board = self.write();
        let mut row = 0;
        while row < batch.num_rows() {
            let motor = motors.value(row);
            let (mut newest, mut end) = (ts.value(row), row + 1);
            while end < batch.num_rows() && motors.value(end) == motor {
                newest = newest.max(ts.value(end));
                end += 1;
            }
            match board.get_mut(motor) {
                Some(m) => m.last_reading_ms = m.last_reading_ms.max(newest),
                None => {
                    let site = Some(crate::ids::shared(sites.value(row)));
                    let m = MotorHealth { site, last_reading_ms: newest, ..Default::default() };
                    board.insert(crate::ids::shared(motor), m);
                }
            }
            row = end;
        }
    }

    /// Notes readings taken in, given as each motor's id, site and newest event time (once per
    /// motor and batch: what a window operator's [`crate::windowing::WindowOperator::last_pushed`]
    /// gives, so a batch's readings are not looked up again one by one).
    pub fn motors_read<'a>(&self, motors: impl Iterator<Item = (&'a str, &'a str, i64)>) {
        let mut board = self.write();
        for (motor, site, newest) in motors {
            match board.get_mut(motor) {
                Some(m) => m.last_reading_ms = m.last_reading_ms.max(newest),
                None => {
                    let site = Some(crate::ids::shared(site));
                    let m = MotorHealth { site, last_reading_ms: newest, ..Default::default() };
                    board.insert(crate::ids::shared(motor), m);
                }
            }
        }
    }

    /// Notes a scored window of `query`, whose alerts open at `open_above` (if it has alerts).
    pub fn window(&self, query: &str, w: &WindowScore<'_>, open_above: Option<f64>) {
        let mut board = self.write();
        let m =
            board.entry(w.motor_id, || MotorHealth { site: Some(crate::ids::shared(w.site_id)), ..Default::default() });
        match w.score {
            Some(score) => {
                let watch = open_above.is_some_and(|o| score >= o / 2.0);
                // (A query already scored keeps its entry: no allocation per window.)
                match m.scores.binary_search_by(|(q, _, _)| (**q).cmp(query)) {
                    Ok(i) => (m.scores[i].1, m.scores[i].2) = (score, watch),
                    Err(i) => {
                        // One more, not twice as many: a few queries score a motor.
                        m.scores.reserve_exact(1);
                        m.scores.insert(i, (crate::ids::shared(query), score, watch))
                    }
                }
            }
            None => {
                if let Ok(i) = m.scores.binary_search_by(|(q, _, _)| (**q).cmp(query)) {
                    m.scores.remove(i);
                }
            }
        }
        // A rule with `seconds_to_…` outputs sets the time to threshold (none, when it gives no
        // valid one this window); other rules leave it.
        let mut horizons =
            w.features.iter().filter(|(name, _)| name.starts_with("seconds_to_")).map(|(_, v)| *v).peekable();
        if horizons.peek().is_some() {
            m.time_to_threshold_s = horizons.filter(|v| v.is_finite() && *v >= 0.0).min_by(f64::total_cmp);
        }
    }

    /// Notes an alert event.
    pub fn alert(&self, e: &AlertEvent) {
        let mut board = self.write();
        let m = board.entry(&e.motor_id, MotorHealth::default);
        if m.site.is_none() {
            m.site = Some(crate::ids::shared(&e.site_id));
        }
        match e.state {
            AlertState::Open | AlertState::Update => {
                let alerts = m.alerts.get_or_insert_default();
                alerts.open.insert(e.query.clone(), e.severity);
                match e
                    .features
                    .iter()
                    .filter(|(k, _)| k.starts_with("seconds_to_"))
                    .map(|(_, v)| *v)
                    .min_by(f64::total_cmp)
                {
                    Some(s) => alerts.time_to_limit.insert(e.query.clone(), s),
                    None => alerts.time_to_limit.remove(&e.query),
                };
            }
            AlertState::Close => {
                if let Some(alerts) = &mut m.alerts {
                    alerts.open.remove(&e.query);
                    alerts.time_to_limit.remove(&e.query);
                    if alerts.open.is_empty() && alerts.time_to_limit.is_empty() {
                        m.alerts = None;
                    }
                }
            }
        }
    }

    /// Notes a motor whose state this engine took over (a restore or a partition handed over),
    /// with the alerts of `query` it has open, before any reading of it arrives here.
    pub fn adopted(&self, motor: &str, site: &str, open: &[(&str, Severity)]) {
        let mut board = self.write();
        let m = board.entry(motor, MotorHealth::default);
        if m.site.is_none() {
            m.site = Some(crate::ids::shared(site));
        }
        for (query, severity) in open {
            m.alerts.get_or_insert_default().open.insert(query.to_string(), *severity);
        }
    }

    /// Forgets every motor `drop` accepts (their partition was handed over).
    pub fn drop_motors(&self, drop: &dyn Fn(&str) -> bool) {
        self.write().retain(|m, _| !drop(m));
    }

    /// The table's rows now, worst status first, then by motor.
    pub fn snapshot(&self) -> RecordBatch {
        let board = self.motors.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rank = |s: &str| ["critical", "silent", "warning", "watch", "healthy"].iter().position(|x| *x == s);
        let mut rows: Vec<(&Arc<str>, &MotorHealth, &'static str)> =
            board.iter().map(|(k, m)| (k, m, m.status())).collect();
        rows.sort_by(|a, b| rank(a.2).cmp(&rank(b.2)).then(a.0.cmp(b.0)));
        let worst: Vec<Option<(&str, f64)>> = rows.iter().map(|(_, m, _)| m.worst_score()).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(k, _, _)| &***k))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, m, _)| m.site.as_deref().unwrap_or("")))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, s)| *s))),
            Arc::new(Float64Array::from_iter(worst.iter().map(|w| w.map(|(_, s)| s)))),
            Arc::new(StringArray::from_iter(worst.iter().map(|w| w.map(|(q, _)| q)))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, m, _)| m.open().map(|(kind, _)| kind.as_str()).collect::<Vec<_>>().join(",")),
            )),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|(_, m, _)| m.open().count() as u32))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|(_, m, _)| m.time_to_threshold()))),
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    rows.iter().map(|(_, m, _)| (m.last_reading_ms > 0).then_some(m.last_reading_ms)),
                )
                .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(health_schema(), columns).expect("the columns match the schema")
    }

    /// The SQL table over the board.
    pub fn table(&self) -> Arc<HealthTable> {
        Arc::new(HealthTable { board: self.clone() })
    }
}

/// The `motor_health` table's schema.
pub fn health_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("motor_id", DataType::Utf8, false),
                Field::new("site_id", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("score", DataType::Float64, true),
                Field::new("score_query", DataType::Utf8, true),
                Field::new("reasons", DataType::Utf8, false),
                Field::new("alerts_open", DataType::UInt32, false),
                Field::new("time_to_threshold_s", DataType::Float64, true),
                Field::new("last_reading", ts_type(), true),
            ]))
        })
        .clone()
}

/// The `motor_health` table: a snapshot of the board at each scan.
#[derive(Debug)]
pub struct HealthTable {
    board: HealthBoard,
}

#[async_trait]
impl TableProvider for HealthTable {
    fn schema(&self) -> SchemaRef {
        health_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::tables::memory_scan(vec![self.board.snapshot()], &health_schema(), projection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window<'a>(motor: &'a str, score: Option<f64>, features: Vec<(&'a str, f64)>) -> WindowScore<'a> {
        WindowScore { motor_id: motor, site_id: "s", window_start_ms: 0, window_end_ms: 1000, score, features }
    }

    fn event(motor: &str, query: &str, state: AlertState, severity: Severity) -> AlertEvent {
        AlertEvent {
            alert_id: "x".into(),
            query: query.into(),
            motor_id: motor.into(),
            site_id: "s".into(),
            state,
            severity,
            score: None,
            peak_score: 0.0,
            window_start_ms: 0,
            window_end_ms: 0,
            opened_window_start_ms: 0,
            emitted_at_ms: 0,
            features: Default::default(),
        }
    }

    #[test]
    fn status_is_the_worst_of_alerts_and_scores_and_rows_come_worst_first() {
        let board = HealthBoard::default();
        board.window("q", &window("M1", Some(1.0), vec![]), Some(7.0));
        board.window("q", &window("M2", Some(4.0), vec![("seconds_to_110c", 900.0)]), Some(7.0));
        board.window("q", &window("M3", Some(9.0), vec![]), Some(7.0));
        board.alert(&event("M3", "q", AlertState::Open, Severity::Warning));
        board.alert(&event("M4", "silent", AlertState::Open, Severity::Warning));
        board.alert(&event("M5", "q", AlertState::Open, Severity::Warning));
        board.alert(&event("M5", "q", AlertState::Update, Severity::Critical));
        board.alert(&event("M5", "stuck_sensor.speed_rpm", AlertState::Open, Severity::Warning));
        let b = board.snapshot();
        let col = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(col(0), ["M5", "M4", "M3", "M2", "M1"]);
        assert_eq!(col(2), ["critical", "silent", "warning", "watch", "healthy"]);
        assert_eq!(col(5)[0], "q,stuck_sensor.speed_rpm", "the reasons name the channel");
        let ttt = b.column(7).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(ttt.value(3), 900.0);
        board.alert(&event("M3", "q", AlertState::Close, Severity::Warning));
        board.drop_motors(&|m| m == "M5");
        let b = board.snapshot();
        assert_eq!(b.num_rows(), 4);
        let status = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(status.value(2), "watch", "M3: closed, its newest score 9 ≥ 3.5");
    }
}
