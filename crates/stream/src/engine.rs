//! The stream engine: window operators, the continuous queries on them, alert trackers, and
//! the queryable tables, driven by ingest batches and a processing-time clock.
//!
//! One window operator runs per distinct window spec; every query on that spec reads the same
//! closed windows. Time is passed in (`now_ms`), never read from the clock here, so tests and
//! replays are deterministic.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use tessera_core::{WatermarkPolicy, WindowSpec, telemetry_schema};

use serde::{Deserialize, Serialize};

use crate::alerts::{
    AlertEvent, AlertTracker, MotorWindowsBuilder, TrackerState, WindowScore, alerts_batch, alerts_schema, motor_windows_schema,
};
use crate::anomaly::CallState;
use crate::checkpoint;
use crate::grammar::QueryDef;
use crate::query::{ContinuousQuery, OutputLayout};
use crate::tables::BoundedTable;
use crate::windowing::{Closed, OperatorState, WindowOperator, WindowStats};
use crate::StreamError;

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Allowed lateness and idle timeout.
    pub watermark: WatermarkPolicy,
    /// Rows each queryable table keeps (newest first to stay).
    pub table_rows: usize,
    /// Raw readings the `telemetry` table keeps (the newest; 0: none).
    pub telemetry_rows: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self { watermark: WatermarkPolicy { allowed_lateness_ms: 2_000, idle_timeout_ms: 30_000 }, table_rows: 1_000_000, telemetry_rows: 100_000 }
    }
}

/// What one push or tick produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Alert events, in order.
    pub alerts: Vec<AlertEvent>,
    /// Late readings, in the `late_events` schema.
    pub late: Vec<RecordBatch>,
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

/// Polls a future, turning a panic inside it into an error with the panic's message.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()))),
        }
    }
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
}

/// The canonical checksum of an engine state, and what it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    /// xxh3-64 of the canonical form.
    pub checksum: u64,
    /// Readings the first stage's windows took in, over the engine's life.
    pub rows_in: u64,
}

/// The canonical checksum of [`StreamEngine::checkpoint`] bytes: per stage, the window
/// operator's content without processing times or first-seen order, every query's anomaly
/// baselines and alert hysteresis (already sorted by motor), in stage order.
pub fn state_digest(checkpoint_bytes: &[u8]) -> Result<StateDigest, StreamError> {
    let state: EngineState = checkpoint::from_versioned_bytes(checkpoint_bytes)?;
    let mut canonical = Vec::new();
    for stage in &state.stages {
        stage.window.canonical_into(&mut canonical)?;
        for q in &stage.queries {
            canonical.extend(checkpoint::to_bytes(&(&q.name, &q.anomaly, &q.tracker))?);
        }
    }
    Ok(StateDigest {
        checksum: xxhash_rust::xxh3::xxh3_64(&canonical),
        rows_in: state.stages.first().map_or(0, |s| s.window.rows_in()),
    })
}

/// What [`StreamEngine::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Queries whose state (windows, anomaly baselines, alert hysteresis) was restored.
    pub restored: Vec<String>,
    /// Registered queries that start fresh: not in the checkpoint, or their stage's queries
    /// changed since.
    pub fresh: Vec<String>,
    /// Checkpointed queries that are no longer registered as they were (state dropped).
    pub dropped: Vec<String>,
    /// Motors with restored window state (the most of any stage).
    pub motors: usize,
    /// Open windows restored, over all stages.
    pub open_windows: usize,
    /// The motors whose state came back (any stage), sorted.
    pub motor_ids: Vec<String>,
}

/// The engine's checkpointed state (after the format version).
#[derive(Serialize, Deserialize)]
struct EngineState {
    stages: Vec<StageState>,
    /// query_errors, query_rows, alert_events.
    counters: [u64; 3],
}

/// One stage: its queries' states and its window operator's.
#[derive(Serialize, Deserialize)]
struct StageState {
    queries: Vec<QueryState>,
    window: OperatorState,
}

/// One query's state; restored only into a query of the same name and text.
#[derive(Serialize, Deserialize)]
struct QueryState {
    name: String,
    text: String,
    anomaly: Vec<CallState>,
    tracker: Option<TrackerState>,
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

/// A window spec as text, e.g. `tumble 10000 ms`.
pub fn describe(spec: &WindowSpec) -> String {
    match *spec {
        WindowSpec::Tumbling { size_ms } => format!("tumble {size_ms} ms"),
        WindowSpec::Hopping { size_ms, slide_ms } => format!("hop {size_ms} ms every {slide_ms} ms"),
        WindowSpec::Session { gap_ms } => format!("session gap {gap_ms} ms"),
    }
}

impl StreamEngine {
    /// An engine with no queries.
    pub fn new(config: StreamConfig) -> Self {
        let tables = SessionContext::new();
        let alerts = BoundedTable::new(alerts_schema(), config.table_rows);
        let motor_windows = BoundedTable::new(motor_windows_schema(), config.table_rows);
        let late = BoundedTable::new(late_schema(), config.table_rows);
        tables.register_table("alerts", alerts.clone()).expect("fresh context");
        tables.register_table("motor_windows", motor_windows.clone()).expect("fresh context");
        tables.register_table("late_events", late.clone()).expect("fresh context");
        let telemetry = BoundedTable::new(telemetry_schema(), config.telemetry_rows);
        tables.register_table("telemetry", telemetry.clone()).expect("fresh context");
        Self { config, stages: Vec::new(), tables, alerts, motor_windows, late, telemetry, query_errors: 0, query_rows: 0, alert_events: 0 }
    }

    /// Registers a `CREATE CONTINUOUS QUERY` statement; errors name the query and carry
    /// DataFusion's message.
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
                self.stages.push(Stage { op: WindowOperator::new(def.window, self.config.watermark), queries: Vec::new(), reports_late, standalone });
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
        Ok(out)
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
        Ok(out)
    }

    /// The engine's state for a checkpoint: every window operator's open windows, watermarks
    /// and buffered rows, every anomaly call's per-motor state, and every alert tracker's
    /// hysteresis (see [`crate::checkpoint`]). Take it between steps; restoring it into an
    /// engine with the same queries and feeding that engine what followed gives the same
    /// windows, scores and alerts as never stopping. The queryable tables are not part of it:
    /// they are recent history, not state.
    pub fn checkpoint(&self) -> Result<Vec<u8>, StreamError> {
        self.checkpoint_motors(&|_| true)
    }

    /// [`Self::checkpoint`] of only the motors `include` accepts: the state of one Kafka
    /// partition's motors, which moves with the partition when the consumer group rebalances
    /// (see [`Self::adopt`]).
    pub fn checkpoint_motors(&self, include: &dyn Fn(&str) -> bool) -> Result<Vec<u8>, StreamError> {
        let stages = self
            .stages
            .iter()
            .map(|stage| {
                let queries = stage
                    .queries
                    .iter()
                    .map(|q| {
                        Ok(QueryState {
                            name: q.query.def().name.clone(),
                            text: q.query.def().text.clone(),
                            anomaly: q.query.anomaly_state(include)?,
                            tracker: q.tracker.as_ref().map(|t| t.snapshot(include)),
                        })
                    })
                    .collect::<Result<_, StreamError>>()?;
                Ok(StageState { queries, window: stage.op.snapshot(include)? })
            })
            .collect::<Result<_, StreamError>>()?;
        let state = EngineState { stages, counters: [self.query_errors, self.query_rows, self.alert_events] };
        checkpoint::to_versioned_bytes(&state)
    }

    /// A checksum of [`Self::checkpoint`]'s bytes in canonical form (see
    /// [`state_digest`]): equal for two engines that took in the same readings, however they
    /// were batched, interleaved across motors, or stopped and restored on the way.
    pub fn state_digest(&self) -> Result<StateDigest, StreamError> {
        state_digest(&self.checkpoint()?)
    }

    /// Restores a [`Self::checkpoint`] into this engine, which must have its queries
    /// registered and no input yet. A stage whose queries (names and text) are exactly those
    /// of a checkpointed stage gets that stage's state; the others start fresh, and the report
    /// says which and why. Bytes that do not decode are an error.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<RestoreReport, StreamError> {
        if self.stages.iter().any(|s| s.op.has_input()) {
            return Err(StreamError::Checkpoint("restoring into an engine that already has input".into()));
        }
        let (report, counters) = self.restore_stages(bytes, false)?;
        [self.query_errors, self.query_rows, self.alert_events] = counters;
        Ok(report)
    }

    /// Adds the motors of a [`Self::checkpoint_motors`] state to this running engine: a
    /// partition handed over by the node that owned it. Stages are matched as in
    /// [`Self::restore`]; a motor this engine already holds gets the handed-over state. The
    /// engine's counters stay its own.
    pub fn adopt(&mut self, bytes: &[u8]) -> Result<RestoreReport, StreamError> {
        Ok(self.restore_stages(bytes, true)?.0)
    }

    /// Forgets every motor `drop` accepts: open windows, watermarks, anomaly baselines, alert
    /// hysteresis (their partition was handed to another node, with this state). The queryable
    /// tables keep their rows. Returns how many motors the engine held state for.
    pub fn release_motors(&mut self, drop: &dyn Fn(&str) -> bool) -> Result<usize, StreamError> {
        let mut dropped = 0;
        for stage in &mut self.stages {
            dropped = dropped.max(stage.op.drop_motors(drop));
            for q in &mut stage.queries {
                q.query.drop_motors(drop)?;
                if let Some(t) = &mut q.tracker {
                    t.drop_motors(drop);
                }
            }
        }
        Ok(dropped)
    }

    /// The motors the engine holds window state for (any stage), sorted.
    pub fn motor_ids(&self) -> Vec<String> {
        let ids: std::collections::BTreeSet<&str> = self.stages.iter().flat_map(|s| s.op.motor_ids()).collect();
        ids.into_iter().map(str::to_string).collect()
    }

    /// Restores (or with `merge`, adds) a checkpoint's stages; the saved engine counters.
    fn restore_stages(&mut self, bytes: &[u8], merge: bool) -> Result<(RestoreReport, [u64; 3]), StreamError> {
        let state: EngineState = checkpoint::from_versioned_bytes(bytes)?;
        let mut report = RestoreReport::default();
        let mut motor_ids = std::collections::BTreeSet::new();
        let mut used = vec![false; self.stages.len()];
        for saved in state.stages {
            let same_queries = |stage: &Stage| {
                stage.queries.len() == saved.queries.len()
                    && stage.queries.iter().zip(&saved.queries).all(|(q, s)| q.query.def().name == s.name && q.query.def().text == s.text)
            };
            let Some(i) = (0..self.stages.len()).find(|&i| !used[i] && same_queries(&self.stages[i])) else {
                for q in saved.queries {
                    report.dropped.push(q.name);
                }
                continue;
            };
            used[i] = true;
            let stage = &mut self.stages[i];
            motor_ids.extend(saved.window.motor_ids().map(str::to_string));
            let (motors, open_windows) = (saved.window.motor_count(), saved.window.open_windows());
            match merge {
                true => stage.op.merge(saved.window)?,
                false => stage.op.restore(saved.window)?,
            }
            for (q, s) in stage.queries.iter_mut().zip(saved.queries) {
                q.query.restore_anomaly_state(s.anomaly, merge)?;
                match (&mut q.tracker, s.tracker) {
                    (Some(t), Some(saved)) => t.restore(saved, merge)?,
                    (None, None) => {}
                    _ => return Err(StreamError::Checkpoint(format!("query {}: alert options differ from the checkpoint's", s.name))),
                }
                report.restored.push(s.name);
            }
            report.motors = report.motors.max(motors);
            report.open_windows += open_windows;
        }
        for (stage, used) in self.stages.iter().zip(used) {
            if !used {
                report.fresh.extend(stage.queries.iter().map(|q| q.query.def().name.clone()));
            }
        }
        report.motor_ids = motor_ids.into_iter().collect();
        Ok((report, state.counters))
    }

    /// The engine's queryable tables, shared (not copied) for serving elsewhere: `alerts`,
    /// `motor_windows`, `late_events`, and `telemetry` (the newest raw readings).
    pub fn shared_tables(&self) -> Vec<(&'static str, Arc<dyn datafusion::catalog::TableProvider>)> {
        vec![
            ("alerts", self.alerts.clone()),
            ("motor_windows", self.motor_windows.clone()),
            ("late_events", self.late.clone()),
            ("telemetry", self.telemetry.clone()),
        ]
    }

    /// Runs SQL over the engine's tables: `alerts`, `motor_windows`, `late_events`, `telemetry`.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, StreamError> {
        let df = self.tables.sql(sql).await.map_err(StreamError::Query)?;
        df.collect().await.map_err(StreamError::Query)
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            windows: self.stages.iter().map(|s| (s.op.spec(), s.op.stats())).collect(),
            query_errors: self.query_errors,
            query_rows: self.query_rows,
            alert_events: self.alert_events,
            alerts_open: self
                .stages
                .iter()
                .flat_map(|s| s.queries.iter().filter_map(|q| q.tracker.as_ref()))
                .map(|t| t.open_count() as u64)
                .sum(),
        }
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

    /// Runs the stage's queries on the windows that closed: raw-row queries on their rows,
    /// pre-aggregated ones on their aggregates.
    async fn run_stage(&mut self, stage: usize, closed: Closed, now_ms: i64, out: &mut StepOutput) {
        let spec = self.stages[stage].op.spec();
        let sites = &closed.sites;
        for q in &mut self.stages[stage].queries {
            let name = q.query.def().name.clone();
            let input = if q.query.aggregates().is_some() { &closed.aggregates } else { &closed.windows };
            let Some(input) = input else { continue };
            let batches = match guarded_run(&q.query, input).await {
                Ok(b) => b,
                Err(error) => {
                    // Isolate the culprit: run each motor's windows alone (a motor's anomaly
                    // state is its own, so this scores as the whole run would have); only the
                    // motors whose run fails again are handed out.
                    tracing::error!(query = %name, error = %error, windows = input.num_rows(), "continuous query failed; running its windows motor by motor");
                    let mut ok = Vec::new();
                    for part in split_by_motor(input) {
                        match guarded_run(&q.query, &part).await {
                            Ok(b) => ok.extend(b),
                            Err(error) => {
                                self.query_errors += 1;
                                tracing::error!(query = %name, error = %error, windows = part.num_rows(), "continuous query failed on a motor's windows; they are handed out");
                                out.failed.push(FailedRun { query: name.clone(), error, windows: part });
                            }
                        }
                    }
                    ok
                }
            };
            let layout = q.query.layout().clone();
            let mut rows = MotorWindowsBuilder::default();
            let mut events = Vec::new();
            for batch in &batches {
                self.query_rows += batch.num_rows() as u64;
                match scores(batch, &layout, &spec, sites) {
                    Ok(mut scored) => {
                        scored.sort_by(|a, b| a.motor_id.cmp(b.motor_id).then(a.window_start_ms.cmp(&b.window_start_ms)));
                        for w in scored {
                            rows.append(&name, &w);
                            if let Some(t) = &mut q.tracker
                                && let Some(e) = t.observe(w, now_ms)
                            {
                                events.push(e);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(query = %name, error = %e, "unreadable query output");
                        self.query_errors += 1;
                    }
                }
            }
            self.motor_windows.append(rows.finish());
            if !events.is_empty() {
                self.alerts.append(alerts_batch(&events));
                self.alert_events += events.len() as u64;
                out.alerts.extend(events);
            }
        }
    }
}

/// Runs a query over closed windows; an error or a panic comes back as its message.
async fn guarded_run(query: &ContinuousQuery, input: &RecordBatch) -> Result<Vec<RecordBatch>, String> {
    match CatchUnwind(Box::pin(query.run(input.clone()))).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("panicked: {panic}")),
    }
}

/// Closed windows split by motor (first-seen order); the whole batch if it has no readable
/// `motor_id` column.
fn split_by_motor(windows: &RecordBatch) -> Vec<RecordBatch> {
    let Some(ids) = windows.column_by_name("motor_id").and_then(|c| c.as_any().downcast_ref::<StringArray>()) else {
        return vec![windows.clone()];
    };
    let mut motors: Vec<&str> = Vec::new();
    for id in ids.iter().flatten() {
        if !motors.contains(&id) {
            motors.push(id);
        }
    }
    motors
        .into_iter()
        .filter_map(|m| {
            let mask: datafusion::arrow::array::BooleanArray = ids.iter().map(|id| Some(id == Some(m))).collect();
            datafusion::arrow::compute::filter_record_batch(windows, &mask).ok()
        })
        .collect()
}

/// Reads a query's output rows.
fn scores<'a>(
    batch: &'a RecordBatch,
    layout: &'a OutputLayout,
    spec: &WindowSpec,
    sites: &'a HashMap<String, String>,
) -> Result<Vec<WindowScore<'a>>, StreamError> {
    let motors = cast(batch.column(layout.motor), &DataType::Utf8)?;
    let motors = motors.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone();
    let ts = |i: usize| -> Result<TimestampMillisecondArray, StreamError> {
        let a = batch.column(i);
        a.as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .cloned()
            .ok_or_else(|| StreamError::Schema(format!("column {i} is not a millisecond timestamp")))
    };
    let starts = ts(layout.window_start)?;
    let ends = layout.window_end.map(ts).transpose()?;
    let as_f64 = |i: usize| -> Result<datafusion::arrow::array::Float64Array, StreamError> {
        let a = cast(batch.column(i), &DataType::Float64)?;
        Ok(a.as_any().downcast_ref::<datafusion::arrow::array::Float64Array>().expect("cast to Float64").clone())
    };
    let score = layout.score.map(as_f64).transpose()?;
    let mut features: Vec<(&'a str, datafusion::arrow::array::Float64Array)> = layout
        .features
        .iter()
        .map(|&i| Ok((layout.schema.field(i).name().as_str(), as_f64(i)?)))
        .collect::<Result<_, StreamError>>()?;
    features.sort_by_key(|(name, _)| *name);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        if motors.is_null(row) || starts.is_null(row) {
            continue;
        }
        let start = starts.value(row);
        let end = match (&ends, spec) {
            (Some(e), _) if !e.is_null(row) => e.value(row),
            (_, WindowSpec::Tumbling { size_ms } | WindowSpec::Hopping { size_ms, .. }) => start + size_ms,
            (_, WindowSpec::Session { .. }) => start,
        };
        let motor: &'a str = sites.get_key_value(motors.value(row)).map(|(k, _)| k.as_str()).unwrap_or("");
        let motor_owned = if motor.is_empty() { None } else { Some(motor) };
        let Some(motor_id) = motor_owned else {
            tracing::warn!(motor = motors.value(row), "query output names a motor not in its windows; row skipped");
            continue;
        };
        let features: Vec<(&'a str, f64)> =
            features.iter().filter(|(_, a)| !a.is_null(row) && a.value(row).is_finite()).map(|(n, a)| (*n, a.value(row))).collect();
        out.push(WindowScore {
            motor_id,
            site_id: sites.get(motor_id).map(String::as_str).unwrap_or(""),
            window_start_ms: start,
            window_end_ms: end,
            score: score.as_ref().filter(|s| !s.is_null(row)).map(|s| s.value(row)).filter(|v| v.is_finite()),
            features,
        });
    }
    Ok(out)
}

/// The engine's results must not depend on how the input is cut into batches: the same
/// readings pushed one by one, in small batches, or all at once give the same window scores
/// and alerts.
#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use std::sync::Arc;
    use crate::conform;

    const QUERY: &str = "CREATE CONTINUOUS QUERY q WITH (open_above = 3, close_below = 1.5, open_windows = 2, close_windows = 2) AS
      SELECT motor_id, window_start, avg(current_a) AS a,
             greatest(abs(zscore(motor_id, window_start, avg(current_a), 10, 5)),
                      abs(zscore(motor_id, window_start, avg(temperature_c), 10, 5))) AS score
      FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start";

    /// Three motors, 1 reading/s for 600 s, interleaved by time; a step in motor m1.
    fn readings() -> RecordBatch {
        let (mut motors, mut ts, mut cur, mut temp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for t in 0..600i64 {
            for (m, name) in ["m0", "m1", "m2"].iter().enumerate() {
                let noise = (((t * 7919 + m as i64 * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.4;
                let step = if *name == "m1" && (300..400).contains(&t) { 3.0 } else { 0.0 };
                motors.push(*name);
                ts.push(1_700_000_000_000 + t * 1000 + m as i64 * 37);
                cur.push(10.0 + noise + step);
                temp.push(50.0 + noise * 2.0);
            }
        }
        let schema = Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("current_a", DataType::Float64, true),
            Field::new("temperature_c", DataType::Float64, true),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(motors)),
                Arc::new(Int64Array::from(ts)),
                Arc::new(Float64Array::from(cur)),
                Arc::new(Float64Array::from(temp)),
            ],
        )
        .unwrap();
        conform::to_telemetry(&b, &[], 0).unwrap()
    }

    async fn run(batch_rows: usize) -> (String, String) {
        let mut engine = StreamEngine::new(StreamConfig {
            watermark: WatermarkPolicy { allowed_lateness_ms: 1_000, idle_timeout_ms: 3_600_000 },
            table_rows: 100_000,
            telemetry_rows: 0,
        });
        engine.register(QUERY).await.unwrap();
        let all = readings();
        let mut offset = 0;
        while offset < all.num_rows() {
            let n = batch_rows.min(all.num_rows() - offset);
            let slice = all.slice(offset, n);
            engine.push(&slice, offset as i64).await.unwrap();
            offset += n;
        }
        engine.close_all(offset as i64).await.unwrap();
        let windows = engine.sql("SELECT motor_id, window_start, round(score, 9) AS s FROM motor_windows ORDER BY 1, 2").await.unwrap();
        let alerts = engine.sql("SELECT alert_id, state, window_start FROM alerts ORDER BY window_start, alert_id, state").await.unwrap();
        (pretty_format_batches(&windows).unwrap().to_string(), pretty_format_batches(&alerts).unwrap().to_string())
    }

    #[tokio::test]
    async fn results_do_not_depend_on_batching() {
        let (windows, alerts) = run(usize::MAX).await;
        assert!(alerts.contains("open") && alerts.contains("close"), "the step in m1 raises and clears an alert:\n{alerts}");
        for rows in [1, 7, 64, 250] {
            let (w, a) = run(rows).await;
            assert_eq!(w, windows, "window scores differ with batches of {rows} rows");
            assert_eq!(a, alerts, "alerts differ with batches of {rows} rows");
        }
    }

    /// Queries of every window kind and both window paths (running aggregates, raw rows),
    /// with anomaly functions and alerts.
    fn checkpointed_queries() -> Vec<String> {
        vec![
            QUERY.to_string(),
            "CREATE CONTINUOUS QUERY h WITH (open_above = 2, close_below = 1, open_windows = 1, close_windows = 2) AS
             SELECT motor_id, window_start, count(DISTINCT site_id) AS sites, abs(ewma_dev(motor_id, window_start, max(current_a), 0.2)) AS score
             FROM HOP(telemetry, ts, INTERVAL '5 seconds', INTERVAL '15 seconds') GROUP BY motor_id, window_start"
                .to_string(),
            "CREATE CONTINUOUS QUERY s AS SELECT motor_id, window_start, window_end, count(*) AS n, avg(temperature_c) AS t
             FROM SESSION(telemetry, ts, INTERVAL '3 seconds') WHERE current_a < 12.5 GROUP BY motor_id, window_start, window_end"
                .to_string(),
        ]
    }

    /// Every query's window rows and every alert, as text (processing times left out).
    async fn results(engines: &[&StreamEngine]) -> (String, String) {
        let mut windows = Vec::new();
        let mut alerts = Vec::new();
        for e in engines {
            windows.extend(e.sql("SELECT query, motor_id, window_start, window_end, score, features FROM motor_windows").await.unwrap());
            alerts.extend(e.sql("SELECT alert_id, query, state, severity, score, peak_score, window_start FROM alerts").await.unwrap());
        }
        let ctx = SessionContext::new();
        let text = |batches: Vec<RecordBatch>, order: &'static str| {
            let ctx = &ctx;
            async move {
                let schema = batches[0].schema();
                ctx.register_table("t", Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![batches]).unwrap())).unwrap();
                let sorted = ctx.sql(&format!("SELECT * FROM t ORDER BY {order}")).await.unwrap().collect().await.unwrap();
                ctx.deregister_table("t").unwrap();
                pretty_format_batches(&sorted).unwrap().to_string()
            }
        };
        (text(windows, "query, motor_id, window_start, window_end").await, text(alerts, "window_start, alert_id, state").await)
    }

    async fn engine_with(queries: &[String]) -> StreamEngine {
        let mut engine = engine();
        for q in queries {
            engine.register(q).await.unwrap();
        }
        engine
    }

    /// Stopping at any point, checkpointing, restoring into a new engine and going on gives
    /// the same windows, scores and alerts as an uninterrupted run; the restored engine's own
    /// checkpoint is byte-identical to the one it was restored from.
    #[tokio::test]
    async fn restore_and_resume_equals_an_uninterrupted_run() {
        let queries = checkpointed_queries();
        let all = readings();
        let batch_rows = 97;
        let feed = async |engine: &mut StreamEngine, rows: std::ops::Range<usize>| {
            let mut offset = rows.start;
            while offset < rows.end {
                let n = batch_rows.min(rows.end - offset);
                engine.push(&all.slice(offset, n), offset as i64).await.unwrap();
                engine.tick(offset as i64).await.unwrap();
                offset += n;
            }
        };
        let mut whole = engine_with(&queries).await;
        feed(&mut whole, 0..all.num_rows()).await;
        whole.close_all(all.num_rows() as i64).await.unwrap();
        let expected = results(&[&whole]).await;
        assert!(expected.1.contains("open") && expected.1.contains("close"), "{}", expected.1);
        assert!(expected.0.contains("| h ") && expected.0.contains("| s "), "{}", expected.0);

        for cut in [1, 291, 900, 1_000, 1_799] {
            let mut first = engine_with(&queries).await;
            feed(&mut first, 0..cut).await;
            let state = first.checkpoint().unwrap();
            let mut second = engine_with(&queries).await;
            let report = second.restore(&state).unwrap();
            assert_eq!(report.restored, ["q", "h", "s"], "cut at {cut}");
            assert!(report.fresh.is_empty() && report.dropped.is_empty());
            assert_eq!(second.checkpoint().unwrap(), state, "the restored state checkpoints to the same bytes (cut at {cut})");
            feed(&mut second, cut..all.num_rows()).await;
            second.close_all(all.num_rows() as i64).await.unwrap();
            assert_eq!(second.state_digest().unwrap(), whole.state_digest().unwrap(), "same state as the uninterrupted run (cut at {cut})");
            let got = results(&[&first, &second]).await;
            assert_eq!(got.0, expected.0, "window results differ after a restore at row {cut}");
            assert_eq!(got.1, expected.1, "alerts differ after a restore at row {cut}");
        }
    }

    /// Motor m1's partition moves from one engine to another mid-stream: its state is
    /// checkpointed alone, released by the old owner and adopted by the new one, which goes on
    /// with every motor. Windows, alerts and the final state equal an uninterrupted run's;
    /// per-motor checkpoints adopted into an empty engine add up to the whole checkpoint.
    #[tokio::test]
    async fn a_partition_handed_over_mid_stream_equals_an_uninterrupted_run() {
        let queries = checkpointed_queries();
        let all = readings();
        let moved = |m: &str| m == "m1";
        let motors_where = |batch: &RecordBatch, keep: &dyn Fn(&str) -> bool| {
            let ids = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let mask: datafusion::arrow::array::BooleanArray = ids.iter().map(|m| Some(keep(m.unwrap()))).collect();
            datafusion::arrow::compute::filter_record_batch(batch, &mask).unwrap()
        };
        let feed = async |engine: &mut StreamEngine, rows: std::ops::Range<usize>, keep: &dyn Fn(&str) -> bool| {
            let mut offset = rows.start;
            while offset < rows.end {
                let n = 97.min(rows.end - offset);
                engine.push(&motors_where(&all.slice(offset, n), keep), offset as i64).await.unwrap();
                engine.tick(offset as i64).await.unwrap();
                offset += n;
            }
        };
        let mut whole = engine_with(&queries).await;
        feed(&mut whole, 0..all.num_rows(), &|_| true).await;
        whole.close_all(all.num_rows() as i64).await.unwrap();
        let expected = results(&[&whole]).await;

        for cut in [450, 1_000] {
            let (mut a, mut b) = (engine_with(&queries).await, engine_with(&queries).await);
            feed(&mut a, 0..cut, &|m| !moved(m)).await;
            feed(&mut b, 0..cut, &moved).await;
            let handed = b.checkpoint_motors(&moved).unwrap();
            assert_eq!(b.release_motors(&moved).unwrap(), 1);
            assert!(b.motor_ids().is_empty() && b.checkpoint_motors(&moved).unwrap() != handed, "the old owner keeps nothing of m1");
            let report = a.adopt(&handed).unwrap();
            assert_eq!((report.restored.len(), report.motor_ids.clone()), (3, vec!["m1".to_string()]), "{report:?}");
            assert_eq!(a.motor_ids(), ["m0", "m1", "m2"]);
            feed(&mut a, cut..all.num_rows(), &|_| true).await;
            a.close_all(all.num_rows() as i64).await.unwrap();
            assert_eq!(a.state_digest().unwrap(), whole.state_digest().unwrap(), "same state as the uninterrupted run (cut at {cut})");
            let got = results(&[&a, &b]).await;
            assert_eq!(got.0, expected.0, "window results differ after a handover at row {cut}");
            assert_eq!(got.1, expected.1, "alerts differ after a handover at row {cut}");
        }

        // Split by motor and adopted piece by piece, the state is the whole state.
        let mut half = engine_with(&queries).await;
        feed(&mut half, 0..1_000, &|_| true).await;
        let mut joined = engine_with(&queries).await;
        for m in ["m2", "m0", "m1"] {
            joined.adopt(&half.checkpoint_motors(&|id| id == m).unwrap()).unwrap();
        }
        assert_eq!(joined.state_digest().unwrap(), half.state_digest().unwrap());
    }

    /// A changed query starts fresh and is reported; bytes that do not decode are an error.
    #[tokio::test]
    async fn a_changed_query_starts_fresh_and_garbage_is_refused() {
        let queries = checkpointed_queries();
        let mut first = engine_with(&queries).await;
        first.push(&readings().slice(0, 600), 0).await.unwrap();
        let state = first.checkpoint().unwrap();
        let mut changed = queries.clone();
        changed[2] = changed[2].replace("12.5", "13");
        let mut second = engine_with(&changed).await;
        let report = second.restore(&state).unwrap();
        assert!(report.open_windows > 0 && report.motors == 3, "{report:?}");
        assert_eq!((report.restored, report.fresh, report.dropped), (vec!["q".to_string(), "h".into()], vec!["s".to_string()], vec!["s".to_string()]));
        let mut third = engine_with(&queries).await;
        let err = third.restore(&state[..state.len() / 2]).unwrap_err().to_string();
        assert!(err.starts_with("checkpoint: decoding state"), "{err}");
        let err = second.restore(&state).unwrap_err().to_string();
        assert!(err.contains("already has input") || err.contains("fit"), "{err}");
    }

    fn engine() -> StreamEngine {
        StreamEngine::new(StreamConfig { watermark: WatermarkPolicy { allowed_lateness_ms: 1_000, idle_timeout_ms: 3_600_000 }, table_rows: 100_000, telemetry_rows: 0 })
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
        let names: Vec<String> = engine.stages[0].op.closed_schema().fields().iter().map(|f| f.name().clone()).collect();
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
        let q = |name: &str, select: &str| format!("CREATE CONTINUOUS QUERY {name} AS SELECT motor_id, window_start, {select} FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start");
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
        let counts = engine.sql("SELECT query, count(*) AS n FROM motor_windows GROUP BY query ORDER BY query").await.unwrap();
        let text = pretty_format_batches(&counts).unwrap().to_string();
        // a sees all 60 windows per motor. b, every window that closed after it joined: the 31
        // from [290 s, 300 s) on (the stage already tracked its aggregate, so the open window is
        // complete). c and d, on a stage that started at 300 s: the 30 windows from there.
        for line in ["| a     | 180 |", "| b     | 93  |", "| c     | 90  |", "| d     | 90  |"] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    /// Readings of two motors with some NULL currents, 4 per second.
    fn readings_with_nulls() -> RecordBatch {
        let (mut motors, mut ts, mut cur) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..2_000i64 {
            let motor = if i % 2 == 0 { "m0" } else { "m1" };
            motors.push(motor);
            ts.push(1_700_000_000_000 + i * 250 + (i * 37) % 200);
            let v = 10.0 + ((i * 7919) % 1000) as f64 / 97.0 - (i as f64 / 300.0).sin();
            cur.push(if i % 7 == 3 || (400..460).contains(&i) { None } else { Some(v) });
        }
        let schema = Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("current_a", DataType::Float64, true),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(motors)), Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(cur))],
        )
        .unwrap();
        conform::to_telemetry(&b, &[], 0).unwrap()
    }

    /// Every supported aggregate gives the same bits pre-aggregated as over raw rows (a filter
    /// that keeps every row forces the raw path), for tumbling and hopping windows, with NULLs
    /// and with windows where the column is all NULL.
    #[tokio::test]
    async fn preaggregated_and_raw_windows_agree() {
        for window in ["TUMBLE(telemetry, ts, INTERVAL '10 seconds')", "HOP(telemetry, ts, INTERVAL '5 seconds', INTERVAL '15 seconds')"] {
            let select = "count(*) AS n, count(current_a) AS c, sum(current_a) AS s, avg(current_a) AS a, min(current_a) AS lo, max(current_a) AS hi,
                          var_samp(current_a) AS vs, var_pop(current_a) AS vp, stddev_samp(current_a) AS ss, stddev_pop(current_a) AS sp,
                          zscore(motor_id, window_start, avg(current_a), 5) AS score";
            let mut engine = engine();
            for (name, filter) in [("p", ""), ("r", "WHERE seq >= 0")] {
                engine
                    .register(&format!("CREATE CONTINUOUS QUERY {name} AS SELECT motor_id, window_start, {select} FROM {window} {filter} GROUP BY motor_id, window_start"))
                    .await
                    .unwrap();
            }
            assert_eq!(engine.stages.len(), 1);
            assert!(engine.stages[0].queries[0].query.aggregates().is_some() && engine.stages[0].queries[1].query.aggregates().is_none());
            let all = readings_with_nulls();
            for offset in (0..all.num_rows()).step_by(333) {
                engine.push(&all.slice(offset, 333.min(all.num_rows() - offset)), 0).await.unwrap();
            }
            engine.close_all(0).await.unwrap();
            let rows = |q: &'static str| {
                let engine = &engine;
                async move {
                    let b = engine.sql(&format!("SELECT motor_id, window_start, score, features FROM motor_windows WHERE query = '{q}' ORDER BY 1, 2")).await.unwrap();
                    pretty_format_batches(&b).unwrap().to_string()
                }
            };
            let (p, r) = (rows("p").await, rows("r").await);
            assert!(p.lines().count() > 100, "{p}");
            assert_eq!(p, r, "{window}");
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
                let sql = format!("SELECT CAST(min(window_start) AS BIGINT) AS first, count(*) AS n FROM motor_windows WHERE query = '{name}'");
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
}
