//! The stream engine: window operators, the continuous queries on them, alert trackers, and
//! the queryable tables, driven by ingest batches and a processing-time clock.
//!
//! One window operator runs per distinct window spec; every query on that spec reads the same
//! closed windows. Time is passed in (`now_ms`), never read from the clock here, so tests and
//! replays are deterministic.
//!
//! The parts: this module (settings, registration, pushing batches and ticking the clock, the
//! queryable tables), `run` (a stage's queries over its closed windows, failures isolated per
//! motor, outputs read into scores and alerts), `state` (checkpoints, restore, partition
//! handover).

#[cfg(test)]
mod fixtures;
mod run;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use tessera_core::{WatermarkPolicy, WindowSpec, telemetry_schema};

use crate::StreamError;
use crate::alerts::{AlertEvent, AlertTracker, alerts_schema, motor_windows_schema};
use crate::grammar::QueryDef;
use crate::query::ContinuousQuery;
use crate::tables::BoundedTable;
/// The window spec as text; defined with the windows, and named here too, where the server
/// and the tests have always found it.
pub use crate::windowing::describe;
use crate::windowing::{WindowOperator, WindowStats};
pub use state::{
    QUALITY_SECTION, RestoreReport, SHIFT_SECTION, SIDE_SECTIONS, StateDigest, WEAR_SECTION, state_digest,
};

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    /// Allowed lateness and idle timeout.
    pub watermark: WatermarkPolicy,
    /// Rows each queryable table keeps (newest first to stay)...
    pub table_rows: usize,
    /// ...and bytes, as Arrow holds them in memory: at fast sampling `motor_windows` fills
    /// first (a row of the default rule takes about 300 bytes, so a million rows took 300 MB).
    pub table_bytes: usize,
    /// Raw readings the `telemetry` table keeps (the newest; 0: none).
    pub telemetry_rows: usize,
    /// Data-quality alerts (silent motors, dropped-out or stuck sensors, skewed clocks; see
    /// [`crate::quality`]); `None`: off.
    pub quality: Option<crate::quality::QualityConfig>,
    /// Wear alerts (vibration drifting towards its ISO 20816 limit; see [`crate::wear`]);
    /// `None`: off.
    pub wear: Option<crate::wear::WearConfig>,
    /// Sudden shifts judged at each motor's own sampling rate (see [`crate::shift`]); `None`:
    /// off.
    pub shift: Option<crate::shift::ShiftConfig>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            watermark: WatermarkPolicy { allowed_lateness_ms: 2_000, idle_timeout_ms: 30_000 },
            table_rows: 1_000_000,
            table_bytes: 64 << 20,
            telemetry_rows: 100_000,
            quality: None,
            wear: None,
            shift: None,
        }
    }
}

/// What one push or tick produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Alert events, in order.
    pub alerts: Vec<AlertEvent>,
    /// Late readings, in the `late_events` schema.
    pub late: Vec<RecordBatch>,
    /// The rows appended to `motor_windows` (its schema), for a store to keep.
    pub window_rows: Vec<RecordBatch>,
    /// The rows appended to `alerts` (its schema: the events above), for a store to keep.
    pub alert_rows: Vec<RecordBatch>,
    /// Windows closed.
    pub windows_closed: usize,
    /// Query runs that failed: their windows produced no rows, and are handed out here to be
    /// parked (dead-lettered), not lost.
    pub failed: Vec<FailedRun>,
}

/// A query run that failed, with an error or a panic (a bug some input triggers). Caught, so
/// that one bad window cannot crash-loop the node: the windows the query was to read are kept
/// here with the reason. The run's other effects stand (a window is closed once; anomaly
/// baselines may have taken in the windows scored before the failure).
#[derive(Debug, Clone)]
pub struct FailedRun {
    /// The query.
    pub query: String,
    /// What went wrong: the error, or the panic's message.
    pub error: String,
    /// The closed windows the run read (raw rows or pre-aggregated rows, as the query reads
    /// them).
    pub windows: RecordBatch,
}

/// Engine counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Per window spec.
    pub windows: Vec<(WindowSpec, WindowStats)>,
    /// Query runs that failed (their windows produced no rows).
    pub query_errors: u64,
    /// Rows the queries produced.
    pub query_rows: u64,
    /// Alert events emitted.
    pub alert_events: u64,
    /// Alerts open now.
    pub alerts_open: u64,
    /// Alerts open now per query: a continuous query's name, `shift` and `shift.day`, and
    /// `data_quality` and `wear` for those judges' alerts.
    pub alerts_open_by_query: BTreeMap<String, u64>,
    /// Per judge that keeps idle motors cold (`shift`, `wear`; see [`crate::cold`]): the
    /// motors it holds, and how many of them are in memory.
    pub judge_motors: BTreeMap<&'static str, (u64, u64)>,
}

struct RegisteredQuery {
    query: ContinuousQuery,
    tracker: Option<AlertTracker>,
}

/// One window operator and the queries on its windows.
struct Stage {
    op: WindowOperator,
    queries: Vec<RegisteredQuery>,
    /// Whether this stage reports late readings. Only the first stage of a window spec does:
    /// a later one (made for a query that needs outputs an already running stage lacks) started
    /// with fresher watermarks, so what is late for it is late for the first one too.
    reports_late: bool,
    /// A stage made for one query alone ([`StreamEngine::register_standalone`]): no other
    /// query joins it, so the query can come and go without touching other queries' state.
    standalone: bool,
}

impl Stage {
    /// True if `query` can run on this stage's windows: the stage has seen no reading yet (its
    /// outputs can still grow), or it already produces what the query reads.
    fn accepts(&self, query: &ContinuousQuery) -> bool {
        if self.standalone || query.def().window != self.op.spec() {
            return false;
        }
        if !self.op.has_input() {
            return true;
        }
        match query.aggregates() {
            Some(specs) => specs.iter().all(|s| self.op.aggregates().contains(s)),
            None => self.op.row_columns().is_some_and(|have| query.input_columns().iter().all(|c| have.contains(c))),
        }
    }

    /// Sets the operator's outputs to what the stage's queries read.
    fn configure(&mut self) {
        let mut rows: Option<Vec<usize>> = None;
        let mut aggregates = Vec::new();
        for q in &self.queries {
            match q.query.aggregates() {
                Some(specs) => aggregates.extend_from_slice(specs),
                None => rows.get_or_insert_with(Vec::new).extend_from_slice(q.query.input_columns()),
            }
        }
        self.op.set_outputs(rows, aggregates);
    }
}

/// Windows, continuous queries and alerts over the telemetry stream.
pub struct StreamEngine {
    config: StreamConfig,
    stages: Vec<Stage>,
    tables: SessionContext,
    alerts: Arc<BoundedTable>,
    motor_windows: Arc<BoundedTable>,
    late: Arc<BoundedTable>,
    /// The newest raw readings (`telemetry_rows` of them).
    telemetry: Arc<BoundedTable>,
    quality: Option<crate::quality::QualityMonitor>,
    wear: Option<crate::wear::WearMonitor>,
    shift: Option<crate::shift::ShiftMonitor>,
    health: crate::health::HealthBoard,
    query_errors: u64,
    query_rows: u64,
    alert_events: u64,
}

impl std::fmt::Debug for StreamEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEngine").field("queries", &self.queries().map(|q| &q.name).collect::<Vec<_>>()).finish()
    }
}

/// Schema of the `late_events` table: the telemetry columns and the window spec the reading
/// was late for.
pub fn late_schema() -> SchemaRef {
    let mut fields: Vec<Field> = telemetry_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("late_for", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

impl StreamEngine {
    /// An engine with no queries.
    pub fn new(config: StreamConfig) -> Self {
        let tables = SessionContext::new();
        let bounded = |schema, rows| BoundedTable::with_max_bytes(schema, rows, config.table_bytes);
        let alerts = bounded(alerts_schema(), config.table_rows);
        let motor_windows = bounded(motor_windows_schema(), config.table_rows);
        let late = bounded(late_schema(), config.table_rows);
        tables.register_table("alerts", alerts.clone()).expect("fresh context");
        tables.register_table("motor_windows", motor_windows.clone()).expect("fresh context");
        tables.register_table("late_events", late.clone()).expect("fresh context");
        let telemetry = bounded(telemetry_schema(), config.telemetry_rows);
        tables.register_table("telemetry", telemetry.clone()).expect("fresh context");
        let health = crate::health::HealthBoard::default();
        tables.register_table("motor_health", health.table()).expect("fresh context");
        Self {
            quality: config.quality.map(crate::quality::QualityMonitor::new),
            wear: config.wear.map(|w| crate::wear::WearMonitor::new(w, Default::default())),
            shift: config.shift.map(crate::shift::ShiftMonitor::new),
            health,
            config,
            stages: Vec::new(),
            tables,
            alerts,
            motor_windows,
            late,
            telemetry,
            query_errors: 0,
            query_rows: 0,
            alert_events: 0,
        }
    }

    /// Registers a `CREATE CONTINUOUS QUERY` statement; errors name the query and carry
    /// DataFusion's error ([`StreamError::Sql`]).
    pub async fn register(&mut self, sql: &str) -> Result<&QueryDef, StreamError> {
        self.register_in(sql, false).await
    }

    /// Registers a query on a window operator of its own, which no other query joins: the
    /// query can be added to a running engine and dropped again ([`Self::unregister`]) without
    /// changing any other query's windows or checkpointed state. It costs a window operator
    /// per query; the cluster-wide queries of the control plane are registered this way.
    pub async fn register_standalone(&mut self, sql: &str) -> Result<&QueryDef, StreamError> {
        self.register_in(sql, true).await
    }

    /// Drops a registered query with its anomaly and alert state (open alerts are forgotten,
    /// not closed); its stage goes with it if no other query uses it. Rows it wrote to the
    /// tables stay. Returns the dropped query's definition.
    pub fn unregister(&mut self, name: &str) -> Result<QueryDef, StreamError> {
        let (stage, index) = self
            .stages
            .iter()
            .enumerate()
            .find_map(|(s, stage)| stage.queries.iter().position(|q| q.query.def().name == name).map(|i| (s, i)))
            .ok_or_else(|| StreamError::Unknown(name.to_string()))?;
        let removed = self.stages[stage].queries.remove(index);
        if self.stages[stage].queries.is_empty() {
            let gone = self.stages.remove(stage);
            // Another stage of the same windows takes over reporting late readings.
            if gone.reports_late
                && let Some(next) = self.stages.iter_mut().find(|s| s.op.spec() == gone.op.spec())
            {
                next.reports_late = true;
            }
        }
        Ok(removed.query.def().clone())
    }

    async fn register_in(&mut self, sql: &str, standalone: bool) -> Result<&QueryDef, StreamError> {
        let query = ContinuousQuery::register(sql).await?;
        let def = query.def().clone();
        if self.queries().any(|q| q.name == def.name) {
            return Err(StreamError::Duplicate(def.name));
        }
        let tracker = def.alerts.map(|o| AlertTracker::new(&def.name, o));
        let joins = if standalone { None } else { self.stages.iter().position(|s| s.accepts(&query)) };
        let stage = match joins {
            Some(i) => i,
            None => {
                let reports_late = !self.stages.iter().any(|s| s.op.spec() == def.window);
                self.stages.push(Stage {
                    op: WindowOperator::new(def.window, self.config.watermark),
                    queries: Vec::new(),
                    reports_late,
                    standalone,
                });
                self.stages.len() - 1
            }
        };
        let stage_ref = &mut self.stages[stage];
        stage_ref.queries.push(RegisteredQuery { query, tracker });
        if !stage_ref.op.has_input() {
            stage_ref.configure();
        }
        Ok(self.stages[stage].queries.last().expect("just pushed").query.def())
    }

    /// The registered queries.
    pub fn queries(&self) -> impl Iterator<Item = &QueryDef> {
        self.stages.iter().flat_map(|s| s.queries.iter().map(|q| q.query.def()))
    }

    /// Feeds a telemetry batch that arrived at `now_ms`; runs the queries on the windows it
    /// closes.
    pub async fn push(&mut self, batch: &RecordBatch, now_ms: i64) -> Result<StepOutput, StreamError> {
        if self.config.telemetry_rows > 0 {
            self.telemetry.append(batch.clone());
        }
        let mut out = StepOutput::default();
        for i in 0..self.stages.len() {
            let closed = self.stages[i].op.push(batch, now_ms)?;
            out.windows_closed += closed.count;
            self.run_stage(i, closed, now_ms, &mut out).await;
            self.collect_late(i, &mut out)?;
        }
        if let Some(quality) = &mut self.quality {
            let events = quality.observe(batch, now_ms);
            self.record_alerts(events, &mut out);
        }
        if let Some(wear) = &mut self.wear {
            let events = wear.observe(batch, now_ms)?;
            self.record_alerts(events, &mut out);
        }
        if let Some(shift) = &mut self.shift {
            let (windows, events) = shift.observe(batch, now_ms)?;
            // Its newest score per motor goes to the health board (a window's history is not
            // kept: `motor_windows` holds the queries' windows).
            let open_above = Some(shift.open_above());
            for w in &windows {
                self.health.window(w.kind, &w.as_score(), open_above);
            }
            self.record_alerts(events, &mut out);
        }
        // The first window operator grouped the batch by motor already: one look-up per motor.
        match self.stages.first() {
            Some(stage) => self.health.motors_read(stage.op.last_pushed()),
            None => self.health.readings(batch),
        }
        Ok(out)
    }

    /// The judges' alert events (data quality, wear, shift), into the `alerts` table and the step's output.
    fn record_alerts(&mut self, events: Vec<crate::alerts::AlertEvent>, out: &mut StepOutput) {
        if events.is_empty() {
            return;
        }
        events.iter().for_each(|e| self.health.alert(e));
        let rows = crate::alerts::alerts_batch(&events);
        self.alerts.append(rows.clone());
        out.alert_rows.push(rows);
        self.alert_events += events.len() as u64;
        out.alerts.extend(events);
    }

    /// Advances processing time: closes idle motors' windows.
    pub async fn tick(&mut self, now_ms: i64) -> Result<StepOutput, StreamError> {
        self.close_where(now_ms, false).await
    }

    /// End of input (a finished replay or file): closes every open window at `now_ms`.
    pub async fn close_all(&mut self, now_ms: i64) -> Result<StepOutput, StreamError> {
        self.close_where(now_ms, true).await
    }

    async fn close_where(&mut self, now_ms: i64, all: bool) -> Result<StepOutput, StreamError> {
        let mut out = StepOutput::default();
        for i in 0..self.stages.len() {
            let op = &mut self.stages[i].op;
            let closed = if all { op.close_all(now_ms)? } else { op.tick(now_ms)? };
            out.windows_closed += closed.count;
            self.run_stage(i, closed, now_ms, &mut out).await;
        }
        // (The end of a replay is no silence.)
        if !all && let Some(quality) = &mut self.quality {
            let events = quality.tick(now_ms);
            self.record_alerts(events, &mut out);
        }
        Ok(out)
    }

    /// The engine's queryable tables, shared (not copied) for serving elsewhere: `alerts`,
    /// `motor_windows`, `late_events`, `telemetry` (the newest raw readings) and
    /// `motor_health` (one row per motor, [`crate::health`]).
    pub fn shared_tables(&self) -> Vec<(&'static str, Arc<dyn datafusion::catalog::TableProvider>)> {
        vec![
            ("alerts", self.alerts.clone()),
            ("motor_windows", self.motor_windows.clone()),
            ("late_events", self.late.clone()),
            ("telemetry", self.telemetry.clone()),
            ("motor_health", self.health.table()),
        ]
    }

    /// Runs SQL over the engine's tables: `alerts`, `motor_windows`, `late_events`, `telemetry`,
    /// `motor_health`.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, StreamError> {
        let df = self.tables.sql(sql).await.map_err(StreamError::Query)?;
        df.collect().await.map_err(StreamError::Query)
    }

    /// The wear judge's motors with a machine class of their own (None: wear is off); the
    /// node keeps it in step with the registry.
    pub fn machine_classes(&self) -> Option<crate::wear::MotorClasses> {
        self.wear.as_ref().map(crate::wear::WearMonitor::classes)
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        let by_query = self.open_by_query();
        EngineStats {
            windows: self.stages.iter().map(|s| (s.op.spec(), s.op.stats())).collect(),
            query_errors: self.query_errors,
            query_rows: self.query_rows,
            alert_events: self.alert_events,
            alerts_open: by_query.values().sum(),
            alerts_open_by_query: by_query,
            judge_motors: [
                self.shift.as_ref().map(|s| (crate::shift::SHIFT, s.motors_held())),
                self.wear.as_ref().map(|w| ("wear", w.motors_held())),
            ]
            .into_iter()
            .flatten()
            .map(|(judge, (held, hot))| (judge, (held as u64, hot as u64)))
            .collect(),
        }
    }

    /// From now on, the shift and wear judges keep motors idle `spill.after_ms` in a spill
    /// file in `spill.dir` instead of memory (see [`crate::cold`]). Set before the first
    /// reading; a judge that is off takes no file.
    pub fn spill_cold_motors(&mut self, spill: &crate::cold::ColdSpill) -> Result<(), StreamError> {
        if let Some(shift) = &mut self.shift {
            shift.spill_to(spill)?;
        }
        if let Some(wear) = &mut self.wear {
            wear.spill_to(spill)?;
        }
        Ok(())
    }

    /// Alerts open now per query (see [`EngineStats::alerts_open_by_query`]).
    fn open_by_query(&self) -> BTreeMap<String, u64> {
        let mut by_query = BTreeMap::new();
        let mut add = |query: &str, n: usize| *by_query.entry(query.to_string()).or_insert(0) += n as u64;
        for tracker in self.stages.iter().flat_map(|s| s.queries.iter().filter_map(|q| q.tracker.as_ref())) {
            add(tracker.query(), tracker.open_count());
        }
        if let Some(q) = &self.quality {
            add("data_quality", q.open_count());
        }
        if let Some(w) = &self.wear {
            add("wear", w.open_count());
        }
        for (query, n) in self.shift.iter().flat_map(|s| s.open_by_query()) {
            add(query, n);
        }
        by_query
    }

    fn collect_late(&mut self, stage: usize, out: &mut StepOutput) -> Result<(), StreamError> {
        let op = &mut self.stages[stage].op;
        let late = op.take_late()?;
        if !self.stages[stage].reports_late {
            return Ok(());
        }
        let op = &self.stages[stage].op;
        if let Some(late) = late {
            let n = late.num_rows();
            let mut columns: Vec<ArrayRef> = late.columns().to_vec();
            columns.push(Arc::new(StringArray::from(vec![describe(&op.spec()); n])));
            let batch = RecordBatch::try_new(late_schema(), columns)?;
            self.late.append(batch.clone());
            out.late.push(batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::fixtures::{QUERY, engine, engine_with, readings};
    use super::*;

    #[tokio::test]
    async fn the_tables_keep_their_newest_rows_within_their_bytes() {
        let limit = 16 << 10;
        let mut engine = StreamEngine::new(StreamConfig { table_bytes: limit, ..Default::default() });
        engine.register(QUERY).await.unwrap();
        let all = readings();
        let (mut appended, mut largest) = (0, 0);
        for start in (0..all.num_rows()).step_by(30) {
            let out = engine.push(&all.slice(start, 30.min(all.num_rows() - start)), 0).await.unwrap();
            for rows in &out.window_rows {
                appended += rows.num_rows();
                largest = largest.max(rows.get_array_memory_size());
            }
        }
        let table = &engine.motor_windows;
        assert!(appended > 150, "{appended} windows closed");
        assert!(table.num_rows() < appended, "the oldest windows went: {} of {appended} kept", table.num_rows());
        assert!(table.num_bytes() <= limit + largest, "{} bytes kept against {limit}", table.num_bytes());
        let newest = engine.sql("SELECT max(window_start) AS t FROM motor_windows").await.unwrap();
        let text = pretty_format_batches(&newest).unwrap().to_string();
        assert!(text.contains("2023-11-14T22:23:"), "the newest windows stay: {text}");
    }

    #[tokio::test]
    async fn windows_carry_only_what_their_queries_read() {
        let mut engine = engine();
        engine
            .register("CREATE CONTINUOUS QUERY a AS SELECT motor_id, window_start, avg(current_a) AS cur FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start")
            .await
            .unwrap();
        // A plain aggregate: running sums per window, no rows kept.
        let op = &engine.stages[0].op;
        assert_eq!(op.row_columns(), None);
        assert_eq!(op.aggregates().iter().map(|a| a.name()).collect::<Vec<_>>(), ["avg(current_a)"]);
        // DISTINCT needs the rows: the stage keeps the two columns the query reads (and motor_id).
        engine
            .register("CREATE CONTINUOUS QUERY b AS SELECT motor_id, window_start, count(DISTINCT site_id) AS sites, max(seq) AS last_seq FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start")
            .await
            .unwrap();
        assert_eq!(engine.stages.len(), 1, "one stage serves both");
        let names: Vec<String> =
            engine.stages[0].op.closed_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["motor_id", "site_id", "seq", "window_start", "window_end"]);
        engine.push(&readings(), 0).await.unwrap();
        engine.close_all(0).await.unwrap();
        // 3 motors × 60 windows per query; each window's readings are its own motor's.
        let check = engine
            .sql(
                "SELECT query, count(*) AS n,
                        min(features['cur']) > 9.5 AND max(features['cur']) < 13.5 AS cur_ok,
                        max(features['sites']) AS sites, max(features['last_seq']) AS seq
                 FROM motor_windows GROUP BY query ORDER BY query",
            )
            .await
            .unwrap();
        let text = pretty_format_batches(&check).unwrap().to_string();
        assert!(text.contains("| a     | 180 | true   |       |        |"), "{text}");
        assert!(text.contains("| b     | 180 |        | 1.0   | 1799.0 |"), "{text}");
    }

    #[tokio::test]
    async fn a_query_registered_after_the_start_gets_a_stage_with_what_it_reads() {
        let mut engine = engine();
        let q = |name: &str, select: &str| {
            format!(
                "CREATE CONTINUOUS QUERY {name} AS SELECT motor_id, window_start, {select} FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start"
            )
        };
        engine.register(&q("a", "avg(current_a) AS cur")).await.unwrap();
        let all = readings();
        engine.push(&all.slice(0, 900), 0).await.unwrap();
        // Covered by the running stage: joins it.
        engine.register(&q("b", "avg(current_a) AS cur2")).await.unwrap();
        assert_eq!(engine.stages.len(), 1);
        // Not covered (another aggregate): a new stage, which d (raw rows) joins as it has seen
        // no reading yet; only the first stage reports late data.
        engine.register(&q("c", "max(temperature_c) AS hot")).await.unwrap();
        engine.register(&q("d", "count(DISTINCT site_id) AS sites")).await.unwrap();
        assert_eq!(engine.stages.len(), 2);
        assert_eq!(engine.stages.iter().map(|s| s.reports_late).collect::<Vec<_>>(), [true, false]);
        engine.push(&all.slice(900, 900), 0).await.unwrap();
        engine.close_all(0).await.unwrap();
        let counts =
            engine.sql("SELECT query, count(*) AS n FROM motor_windows GROUP BY query ORDER BY query").await.unwrap();
        let text = pretty_format_batches(&counts).unwrap().to_string();
        // a sees all 60 windows per motor. b, every window that closed after it joined: the 31
        // from [290 s, 300 s) on (the stage already tracked its aggregate, so the open window is
        // complete). c and d, on a stage that started at 300 s: the 30 windows from there.
        for line in ["| a     | 180 |", "| b     | 93  |", "| c     | 90  |", "| d     | 90  |"] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    /// A query added to a running engine on a stage of its own, then dropped, leaves the other
    /// queries exactly as if it had never been there (same state, so same checkpoint); while it
    /// runs it sees the windows that close after it was added.
    #[tokio::test]
    async fn a_standalone_query_comes_and_goes_without_touching_the_others() {
        let all = readings();
        let third = all.num_rows() / 3;
        let mut alone = engine_with(&[QUERY.to_string()]).await;
        let mut with_guest = engine_with(&[QUERY.to_string()]).await;
        let guest = QUERY.replace("QUERY q ", "QUERY guest ");
        for (i, engine) in [&mut alone, &mut with_guest].into_iter().enumerate() {
            engine.push(&all.slice(0, third), 0).await.unwrap();
            if i == 1 {
                engine.register_standalone(&guest).await.unwrap();
                assert_eq!(engine.stages.len(), 2, "the guest has its own stage, though the first could take it");
            }
            engine.push(&all.slice(third, third), 0).await.unwrap();
            if i == 1 {
                assert_eq!(engine.unregister("guest").unwrap().name, "guest");
                assert_eq!(engine.stages.len(), 1);
                assert!(matches!(engine.unregister("guest"), Err(StreamError::Unknown(_))));
            }
            engine.push(&all.slice(2 * third, all.num_rows() - 2 * third), 0).await.unwrap();
        }
        assert_eq!(alone.state_digest().unwrap().checksum, with_guest.state_digest().unwrap().checksum);
        let rows = |name: &'static str| {
            let e = &with_guest;
            async move {
                let sql = format!(
                    "SELECT CAST(min(window_start) AS BIGINT) AS first, count(*) AS n FROM motor_windows WHERE query = '{name}'"
                );
                let b = e.sql(&sql).await.unwrap();
                let first = b[0].column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0));
                (first, b[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap().value(0))
            }
        };
        let (q_first, q_rows) = rows("q").await;
        let (g_first, g_rows) = rows("guest").await;
        assert!(g_rows > 0 && g_rows < q_rows / 2, "the guest ran on the middle third only: {g_rows} of {q_rows}");
        assert!(g_first > q_first, "{g_first:?} {q_first:?}");
    }

    /// `motor_health.last_reading` is each motor's newest event time, whether the board reads
    /// it from the window operator's grouping (an engine with queries) or from the batch (an
    /// engine without); a late reading pushed afterwards does not move it back.
    #[tokio::test]
    async fn the_health_board_keeps_each_motors_newest_reading() {
        let all = readings();
        for queries in [vec![QUERY.to_string()], vec![]] {
            let mut engine = engine_with(&queries).await;
            let (first, rest) = (all.slice(0, 900), all.slice(900, all.num_rows() - 900));
            engine.push(&rest, 0).await.unwrap();
            engine.push(&first, 0).await.unwrap(); // all of these are older, most are late
            let b = engine
                .sql("SELECT motor_id, CAST(last_reading AS BIGINT) AS t FROM motor_health ORDER BY motor_id")
                .await
                .unwrap();
            let t = b[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let newest: Vec<i64> = (0..3).map(|m| 1_700_000_000_000 + 599 * 1000 + m * 37).collect();
            assert_eq!(t.values().to_vec(), newest, "queries: {}", queries.len());
        }
    }

    /// A query's physical plan is made once and runs again on every batch of closed windows:
    /// a plan with a join (a build side kept between polls) and one with DISTINCT give each
    /// run its own windows' answer, however many runs there are.
    #[tokio::test]
    async fn a_plan_run_again_answers_for_each_runs_windows_alone() {
        let queries = [
            "CREATE CONTINUOUS QUERY j AS
               WITH w AS (SELECT motor_id, window_start, seq FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds'))
               SELECT a.motor_id, a.window_start, count(*) AS n
               FROM w a JOIN w b ON a.motor_id = b.motor_id AND a.window_start = b.window_start AND a.seq = b.seq
               GROUP BY a.motor_id, a.window_start",
            "CREATE CONTINUOUS QUERY d AS SELECT motor_id, window_start, count(DISTINCT seq) AS n
               FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start",
        ];
        let mut engine = engine_with(&queries.map(String::from)).await;
        let all = readings();
        for offset in (0..all.num_rows()).step_by(7) {
            let n = 7.min(all.num_rows() - offset);
            engine.push(&all.slice(offset, n), 0).await.unwrap();
        }
        engine.close_all(0).await.unwrap();
        // 3 motors × 60 windows of 10 readings, for each query.
        let b = engine
            .sql("SELECT query, count(*) AS windows, min(features['n']) AS lo, max(features['n']) AS hi FROM motor_windows GROUP BY query ORDER BY query")
            .await
            .unwrap();
        let text = pretty_format_batches(&b).unwrap().to_string();
        for q in ["d", "j"] {
            assert!(text.contains(&format!("| {q}     | 180     | 10.0 | 10.0 |")), "{text}");
        }
    }
}
