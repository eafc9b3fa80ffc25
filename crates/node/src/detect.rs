//! The detection stage of a node: takes the ingest's shard batches, runs them through the
//! stream engine (windows, continuous queries, alerts) on its own thread, and writes alert
//! events and late readings to Kafka.
//!
//! Without a checkpoint store, a batch is acknowledged to the ingest once the engine has taken
//! it in, so offsets advance while windows are still open: a crash loses open windows.
//!
//! Checkpointed ([`Detect::start_checkpointed`]), state is kept per Kafka partition (see
//! [`crate::checkpoints`]). When the ingest is assigned a partition, the partition's
//! checkpoint arrives ahead of its readings and its motors' state is adopted into the engine.
//! The stage holds every acknowledgement until a checkpoint covers the batch. On each barrier
//! from the ingest, the detection thread (1) encodes, for each partition with new messages,
//! the state of that partition's motors with its next offset, (2) forgets the motors of
//! partitions revoked at the barrier (their new owner takes them over from that checkpoint),
//! and hands the encoded checkpoints and the held acknowledgements to the checkpoint writer
//! thread, and goes on with the next batch. The writer, one barrier after the other, (3) waits
//! until every alert and late reading produced so far is confirmed by the broker, (4) writes
//! each checkpoint to its partition's store (temp file, fsync, rename), and only then (5)
//! acknowledges the batches before the barrier, which lets the ingest commit their offsets
//! (a revoke waits for these, so a partition is handed over only once its checkpoint is
//! durable). A crash anywhere loses nothing: the partition's next owner restores its newest
//! checkpoint and re-reads from its offset; what was sent after it is sent again with the same
//! alert ids (see ARCHITECTURE.md, "Effectively-once alerts"). A failed checkpoint write stops
//! the stage with the error.
//!
//! The set of queries can change while the stage runs ([`Detect::query_changes`]): the
//! detection thread adds or drops a query between two steps, each on a window operator of its
//! own (see [`StreamEngine::register_standalone`]), so a checkpoint never holds half a change.
//!
//! Alerts go to `alerts_topic` as JSON keyed by motor id (schema in `tessera_stream::alerts`);
//! late readings go to `late_topic` as reading JSON with the header `tessera.late.for` naming
//! the window they missed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tessera_core::{ConfigError, ensure};
use anyhow::{Context as _, Result};
use arrow_array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};
use tessera_core::WatermarkPolicy;
use tessera_ingest::{Barrier, BatchAck, Control, PartitionStart, ShardBatch, TopicPartition, readings_from_batch};
use tessera_state::{Checkpoint, CheckpointStore, SourceOffset};
use tessera_stream::{EngineStats, StepOutput, StreamConfig, StreamEngine};

use tessera_core::now_ms;

/// The `[detect]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// `CREATE CONTINUOUS QUERY` statements; empty: the default rule set ([`crate::rules`]).
    pub queries: Vec<String>,
    /// How far behind a motor's newest reading a reading may arrive and still count.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Silence after which a motor's open windows close.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Topic of alert events.
    pub alerts_topic: String,
    /// Topic of late readings.
    pub late_topic: String,
    /// The detection stage's dead letters: the closed windows of a query run that failed (an
    /// error, or a panic some input triggered), as Arrow IPC, with the query and the reason in
    /// headers. The node goes on.
    pub dead_letter_topic: String,
    /// Rows kept in each queryable table.
    pub table_rows: usize,
    /// Raw readings kept for the `telemetry` table (the newest; 0: none).
    pub telemetry_rows: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            queries: Vec::new(),
            allowed_lateness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            alerts_topic: "tessera-alerts".into(),
            late_topic: "tessera-late".into(),
            dead_letter_topic: "tessera-detect-dead-letter".into(),
            table_rows: 1_000_000,
            telemetry_rows: 100_000,
        }
    }
}

impl DetectConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.alerts_topic.is_empty(), "alerts_topic", "must not be empty")?;
        ensure(!self.late_topic.is_empty(), "late_topic", "must not be empty")?;
        ensure(!self.dead_letter_topic.is_empty(), "dead_letter_topic", "must not be empty")?;
        ensure(self.idle_timeout > Duration::ZERO, "idle_timeout", "must be positive")?;
        ensure(self.table_rows > 0, "table_rows", "must be positive")
    }

    /// The queries to run: the configured ones or the defaults.
    pub fn effective_queries(&self) -> Vec<String> {
        if self.queries.is_empty() { crate::rules::DEFAULT_RULES.iter().map(|s| s.to_string()).collect() } else { self.queries.clone() }
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            watermark: WatermarkPolicy {
                allowed_lateness_ms: self.allowed_lateness.as_millis() as i64,
                idle_timeout_ms: self.idle_timeout.as_millis() as i64,
            },
            table_rows: self.table_rows,
            telemetry_rows: self.telemetry_rows,
        }
    }
}

/// Builds an engine with the configured queries; a bad query fails here, naming it.
pub fn build_engine(config: &DetectConfig) -> Result<StreamEngine> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut engine = StreamEngine::new(config.stream_config());
    for sql in config.effective_queries() {
        rt.block_on(engine.register(&sql)).map_err(|e| anyhow::anyhow!("detect.queries: {e}"))?;
    }
    Ok(engine)
}

/// A partition this stage owns: its store, and what its newest checkpoint covers.
#[derive(Debug)]
struct OwnedPartition {
    /// Written by the checkpoint writer only.
    store: Arc<Mutex<CheckpointStore>>,
    /// Id of the newest checkpoint in the store (0: none).
    last_id: u64,
    /// The next offset past what the engine has taken in of this partition, and past what the
    /// newest checkpoint holds (`None`: nothing yet).
    next_offset: Option<i64>,
    checkpointed_offset: Option<i64>,
}

/// A partition's checkpoint adopted on assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The partition.
    pub partition: TopicPartition,
    /// The checkpoint's id.
    pub id: u64,
    /// Motors whose state came back.
    pub motors: usize,
    /// Open windows that came back.
    pub open_windows: usize,
    /// Queries that start fresh (new or changed since the checkpoint).
    pub fresh: Vec<String>,
}

/// Name of the engine's section in a checkpoint.
pub const ENGINE_SECTION: &str = "engine";

/// Counters of the detection stage.
#[derive(Debug, Clone, Default)]
pub struct DetectStats {
    /// Checkpoint files written (one per partition with new messages, per barrier).
    pub checkpoints: u64,
    /// Size of the last barrier's checkpoint files, in bytes.
    pub last_checkpoint_bytes: u64,
    /// Encoding the engine state, in microseconds (last barrier, all its partitions).
    pub last_checkpoint_encode_us: u64,
    /// Writing it durably, in microseconds (last barrier, all its partitions; on the writer
    /// thread).
    pub last_checkpoint_write_us: u64,
    /// Waiting for the broker to confirm alerts and late readings, in microseconds (last; on
    /// the writer thread).
    pub last_checkpoint_flush_us: u64,
    /// The longest time a barrier held up the detection thread, in microseconds: encoding,
    /// releasing handed-over motors, and waiting for the writer to take the job (it holds one
    /// barrier's job while it writes another's).
    pub longest_checkpoint_pause_us: u64,
    /// Partitions owned now.
    pub partitions_owned: usize,
    /// The newest checkpoint id written per partition (partitions owned at some point).
    pub written: BTreeMap<TopicPartition, u64>,
    /// Checkpoints adopted on assignment, in order.
    pub adopted: Vec<Adopted>,
    /// Motors forgotten because their partition was handed over.
    pub motors_released: u64,
    /// The engine's counters.
    pub engine: EngineStats,
    /// Alert events written to Kafka.
    pub alerts_sent: u64,
    /// Late readings written to Kafka.
    pub late_sent: u64,
    /// Failed query runs whose windows went to the dead-letter topic.
    pub failed_runs: u64,
    /// Batches taken from the ingest.
    pub batches: u64,
    /// The queries running now, by name (sorted).
    pub queries: Vec<String>,
    /// Query changes applied while running (registered or dropped).
    pub query_changes: u64,
    /// Query changes refused (the query does not plan here), with why.
    pub query_changes_refused: Vec<String>,
}

/// The queries a node runs now, as the `continuous_queries` table shows them.
#[derive(Debug, Clone, Default)]
pub struct RunningQueries(Arc<Mutex<Vec<(String, String, String)>>>);

impl RunningQueries {
    /// Sets the list from the engine's registered queries.
    pub fn update(&self, engine: &StreamEngine) {
        let rows = engine.queries().map(|q| (q.name.clone(), tessera_stream::engine::describe(&q.window), q.text.clone())).collect();
        if let Ok(mut list) = self.0.lock() {
            *list = rows;
        }
    }

    /// The table's schema: name, window, sql.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false), Field::new("window", DataType::Utf8, false), Field::new("sql", DataType::Utf8, false)]))
    }

    /// The table's rows now.
    pub fn rows(&self) -> Vec<RecordBatch> {
        let rows = self.0.lock().map(|l| l.clone()).unwrap_or_default();
        let column = |f: fn(&(String, String, String)) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as _;
        RecordBatch::try_new(Self::schema(), vec![column(|r| &r.0), column(|r| &r.1), column(|r| &r.2)]).map(|b| vec![b]).unwrap_or_default()
    }
}

/// A change to the queries a running stage runs, applied between two steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryChange {
    /// Start running a `CREATE CONTINUOUS QUERY` statement, on windows of its own.
    Register {
        /// The query's name (as its statement says).
        name: String,
        /// The statement.
        sql: String,
    },
    /// Stop running a query and drop its state.
    Drop {
        /// The query's name.
        name: String,
    },
}

/// A running detection stage.
pub struct Detect {
    stop: Arc<AtomicBool>,
    end_of_input: Arc<AtomicBool>,
    stats: Arc<Mutex<DetectStats>>,
    changes: Sender<QueryChange>,
    running: RunningQueries,
    alert_latency: Arc<tessera_core::LatencyHistogram>,
    last_turn_ms: Arc<std::sync::atomic::AtomicI64>,
    thread: Option<JoinHandle<Result<StreamEngine>>>,
}

/// Counts deliveries the broker refused, so that a checkpoint never covers a lost alert.
struct DeliveryCheck {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for DeliveryCheck {}

impl ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result
            && let Ok(mut failed) = self.failed.lock()
        {
            use rdkafka::Message as _;
            failed.get_or_insert_with(|| format!("delivery to {} failed: {e}", m.topic()));
        }
    }
}


impl Detect {
    /// Starts the stage on `engine`, reading `batches`, writing to `brokers`.
    pub fn start(engine: StreamEngine, config: &DetectConfig, brokers: &str, batches: Receiver<ShardBatch>) -> Result<Self> {
        Self::start_checkpointed(engine, config, brokers, batches, false, None)
    }

    /// Like [`Detect::start`], with per-partition checkpoints when `checkpointed`: the ingest
    /// must then send barriers (its `checkpoint_interval` set) and partitions' checkpoints
    /// ([`tessera_ingest::Ingest::start_with_states`] with
    /// [`crate::checkpoints::PartitionCheckpoints`]). With `raw`, every reading taken in is
    /// also sent there (the site's store, see [`crate::store`]); if it is gone, the stage
    /// stops with an error rather than drop readings.
    pub fn start_checkpointed(engine: StreamEngine, config: &DetectConfig, brokers: &str, batches: Receiver<ShardBatch>, checkpointed: bool, raw: Option<SyncSender<RecordBatch>>) -> Result<Self> {
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<DeliveryCheck> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            // Alerts are few and urgent: send each at once.
            .set("linger.ms", "0")
            .create_with_context(DeliveryCheck { failed: failed.clone() })
            .context("creating the alerts producer")?;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let end_of_input = Arc::new(AtomicBool::new(false));
        let mut queries: Vec<String> = engine.queries().map(|q| q.name.clone()).collect();
        queries.sort();
        let stats = Arc::new(Mutex::new(DetectStats { queries, ..Default::default() }));
        let (changes, change_queue) = std::sync::mpsc::channel();
        let running = RunningQueries::default();
        running.update(&engine);
        let alert_latency = Arc::new(tessera_core::LatencyHistogram::default());
        let last_turn_ms = Arc::new(std::sync::atomic::AtomicI64::new(now_ms()));
        let writer = match checkpointed {
            true => {
                // One job queued while another is written: a slow disk holds up the detection
                // thread (and so the ingest) instead of piling up encoded state.
                let (jobs, queue) = std::sync::mpsc::sync_channel(1);
                let writer = CheckpointWriter { producer: producer.clone(), delivery_failed: failed.clone(), stats: stats.clone() };
                let thread = std::thread::Builder::new().name("tessera-checkpoint".into()).spawn(move || writer.run(queue))?;
                Some((jobs, thread))
            }
            false => None,
        };
        let worker = Worker {
            engine,
            producer,
            writer,
            config: config.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            end_of_input: end_of_input.clone(),
            checkpointed,
            owned: BTreeMap::new(),
            motor_partition: HashMap::new(),
            held: Vec::new(),
            batches_since_checkpoint: 0,
            changes: change_queue,
            running: running.clone(),
            raw,
            alert_latency: alert_latency.clone(),
            last_turn_ms: last_turn_ms.clone(),
        };
        let thread = std::thread::Builder::new().name("tessera-detect".into()).spawn(move || worker.run(batches))?;
        Ok(Self { stop, end_of_input, stats, changes, running, alert_latency, last_turn_ms, thread: Some(thread) })
    }

    /// True once the stage's thread has ended (after a stop, or on an error such as a failed
    /// checkpoint write; [`Detect::stop`] returns it).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Where to send changes to the running queries; the detection thread applies each one
    /// between two steps, and [`DetectStats::queries`] then shows it.
    pub fn query_changes(&self) -> Sender<QueryChange> {
        self.changes.clone()
    }

    /// The queries the stage runs now (kept current as they change).
    pub fn running_queries(&self) -> RunningQueries {
        self.running.clone()
    }

    /// Window close to alert: from the start of the step that closed a window to its alert
    /// event handed to the producer (processing time).
    pub fn alert_latency(&self) -> Arc<tessera_core::LatencyHistogram> {
        self.alert_latency.clone()
    }

    /// A handle on the counters for the metrics endpoint.
    pub fn probe(&self) -> DetectProbe {
        DetectProbe { stats: self.stats.clone(), last_turn_ms: self.last_turn_ms.clone() }
    }

    /// Counters so far.
    pub fn stats(&self) -> DetectStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Like [`Detect::stop`], but the input is complete (a finished replay): every window
    /// still open is closed, and its alerts written, before stopping. Replays are then
    /// independent of processing-time idleness.
    pub fn stop_at_end_of_input(self) -> Result<StreamEngine> {
        self.end_of_input.store(true, Ordering::Relaxed);
        self.stop()
    }

    /// Stops after the batches already queued, flushes the producer, and returns the engine
    /// (its tables stay queryable).
    pub fn stop(mut self) -> Result<StreamEngine> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("running").join().map_err(|_| anyhow::anyhow!("the detect thread panicked"))?
    }
}

impl Drop for Detect {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The detection stage's counters and heartbeat, for the metrics and health endpoints.
#[derive(Clone)]
pub struct DetectProbe {
    stats: Arc<Mutex<DetectStats>>,
    last_turn_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl DetectProbe {
    /// Counters so far.
    pub fn stats(&self) -> DetectStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// When the stage's loop last turned (it turns at least every 100 ms while it runs).
    pub fn last_turn_ms(&self) -> i64 {
        self.last_turn_ms.load(Ordering::Relaxed)
    }
}

struct Worker {
    engine: StreamEngine,
    producer: Arc<ThreadedProducer<DeliveryCheck>>,
    /// The checkpoint writer's queue and thread (checkpointed stages only).
    writer: Option<(SyncSender<CheckpointJob>, JoinHandle<Result<()>>)>,
    config: DetectConfig,
    stats: Arc<Mutex<DetectStats>>,
    stop: Arc<AtomicBool>,
    end_of_input: Arc<AtomicBool>,
    checkpointed: bool,
    /// The partitions this stage owns, and the partition of each motor it holds state for.
    owned: BTreeMap<TopicPartition, OwnedPartition>,
    motor_partition: HashMap<String, TopicPartition>,
    /// Acknowledgements held until a checkpoint covers their batches.
    held: Vec<BatchAck>,
    batches_since_checkpoint: u64,
    /// Changes to the running queries, applied between steps.
    changes: Receiver<QueryChange>,
    running: RunningQueries,
    /// The site's store of raw readings, if any.
    raw: Option<SyncSender<RecordBatch>>,
    alert_latency: Arc<tessera_core::LatencyHistogram>,
    /// When the loop last turned (the liveness probe's heartbeat).
    last_turn_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl Worker {
    fn run(mut self, batches: Receiver<ShardBatch>) -> Result<StreamEngine> {
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let tick = Duration::from_millis(100);
        loop {
            match batches.recv_timeout(tick) {
                Ok(ShardBatch { batch: rows, ack, control, span, .. }) => {
                    if rows.num_rows() > 0 {
                        let step = tracing::info_span!(parent: &span, "detect.step", rows = rows.num_rows(), windows_closed = tracing::field::Empty, alerts = tracing::field::Empty);
                        let _in_step = step.enter();
                        let started = Instant::now();
                        if let Some(raw) = &self.raw {
                            let telemetry = rows.project(&(0..tessera_core::telemetry_schema().fields().len()).collect::<Vec<_>>())?;
                            raw.send(telemetry).map_err(|_| anyhow::anyhow!("the telemetry store has stopped; readings would be lost"))?;
                        }
                        let out = rt.block_on(self.engine.push(&rows, now_ms()))?;
                        step.record("windows_closed", out.windows_closed);
                        step.record("alerts", out.alerts.len());
                        self.publish(out, started)?;
                        self.batches_since_checkpoint += 1;
                        if let Ok(mut s) = self.stats.lock() {
                            s.batches += 1;
                        }
                    }
                    match self.checkpointed {
                        true => self.held.push(ack),
                        false => ack.ack(),
                    }
                    match control {
                        Some(Control::Barrier(barrier)) if self.checkpointed => self.checkpoint(&barrier)?,
                        Some(Control::Assigned(starts)) if self.checkpointed => self.adopt(starts)?,
                        _ => {}
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.last_turn_ms.store(now_ms(), Ordering::Relaxed);
            let started = Instant::now();
            let out = rt.block_on(self.engine.tick(now_ms()))?;
            self.publish(out, started)?;
            self.apply_query_changes(&rt);
            if let Ok(mut s) = self.stats.lock() {
                s.engine = self.engine.stats();
            }
            if self.writer.as_ref().is_some_and(|(_, thread)| thread.is_finished()) {
                return Err(self.stop_writer().expect_err("the writer stops only on an error"));
            }
        }
        if self.end_of_input.load(Ordering::Relaxed) {
            let started = Instant::now();
            let out = rt.block_on(self.engine.close_all(now_ms()))?;
            self.publish(out, started)?;
        }
        self.stop_writer()?;
        self.producer.flush(Duration::from_secs(30)).context("flushing alerts and late readings")?;
        Ok(self.engine)
    }

    /// Applies the queued changes to the running queries. A change that cannot be applied is
    /// logged and counted, not fatal: one bad query must not stop the stage.
    fn apply_query_changes(&mut self, rt: &tokio::runtime::Runtime) {
        let mut applied = false;
        while let Ok(change) = self.changes.try_recv() {
            let result = match &change {
                QueryChange::Register { name, sql } => self.register_standalone(rt, name, sql),
                QueryChange::Drop { name } if !self.engine.queries().any(|q| q.name == *name) => {
                    // Never ran here (refused when registered): nothing to stop.
                    tracing::debug!(query = %name, "dropping a query that is not running");
                    continue;
                }
                QueryChange::Drop { name } => self.engine.unregister(name).map(|_| ()).map_err(|e| anyhow::anyhow!("query {name}: {e}")),
            };
            match result {
                Ok(()) => {
                    tracing::info!(change = ?change, "running queries changed");
                    applied = true;
                    if let Ok(mut s) = self.stats.lock() {
                        s.query_changes += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "a change to the running queries was refused");
                    if let Ok(mut s) = self.stats.lock() {
                        s.query_changes_refused.push(e.to_string());
                    }
                }
            }
        }
        if applied {
            self.running.update(&self.engine);
        }
        if applied && let Ok(mut s) = self.stats.lock() {
            let mut names: Vec<String> = self.engine.queries().map(|q| q.name.clone()).collect();
            names.sort();
            s.queries = names;
        }
    }

    /// Registers `sql` on windows of its own, if it creates the query `name`.
    fn register_standalone(&mut self, rt: &tokio::runtime::Runtime, name: &str, sql: &str) -> Result<()> {
        let created = rt.block_on(self.engine.register_standalone(sql)).map_err(|e| anyhow::anyhow!("query {name}: {e}"))?.name.clone();
        if created != name {
            self.engine.unregister(&created)?;
            anyhow::bail!("query {name}: the statement creates '{created}'");
        }
        Ok(())
    }

    /// Lets the checkpoint writer finish the jobs it has, and returns its error if it failed.
    fn stop_writer(&mut self) -> Result<()> {
        let Some((jobs, thread)) = self.writer.take() else { return Ok(()) };
        drop(jobs);
        thread.join().map_err(|_| anyhow::anyhow!("the checkpoint writer panicked"))?
    }

    /// Newly assigned partitions: each one's checkpoint is adopted into the engine (its motors'
    /// state added), and the partition is owned from now on.
    fn adopt(&mut self, starts: Vec<PartitionStart>) -> Result<()> {
        for start in starts {
            let tp = (start.topic, start.partition);
            if self.owned.contains_key(&tp) {
                // Our state of it is newer than its checkpoint: keep it.
                tracing::warn!(topic = %tp.0, partition = tp.1, "assigned a partition this stage already owns; keeping its state");
                continue;
            }
            let assigned = start
                .state
                .and_then(|s| s.downcast::<crate::checkpoints::AssignedStore>().ok())
                .with_context(|| format!("partition {}/{} was assigned without its checkpoint store", tp.0, tp.1))?;
            let mut last_id = assigned.store.newest().unwrap_or(0);
            if let Some(loaded) = &assigned.loaded {
                let section = loaded
                    .checkpoint
                    .section(ENGINE_SECTION)
                    .with_context(|| format!("checkpoint {} has no {ENGINE_SECTION} section", loaded.path.display()))?;
                let report = self.engine.adopt(section).with_context(|| format!("restoring {}", loaded.path.display()))?;
                for m in &report.motor_ids {
                    self.motor_partition.insert(m.clone(), tp.clone());
                }
                tracing::info!(
                    topic = %tp.0, partition = tp.1, id = loaded.checkpoint.id, motors = report.motors, open_windows = report.open_windows,
                    fresh = ?report.fresh, dropped = ?report.dropped, "adopted the partition's checkpoint"
                );
                last_id = last_id.max(loaded.checkpoint.id);
                if let Ok(mut s) = self.stats.lock() {
                    s.adopted.push(Adopted { partition: tp.clone(), id: loaded.checkpoint.id, motors: report.motors, open_windows: report.open_windows, fresh: report.fresh });
                }
            }
            let offset = start.resume_at;
            self.owned.insert(tp, OwnedPartition { store: Arc::new(Mutex::new(assigned.store)), last_id, next_offset: offset, checkpointed_offset: offset });
        }
        if let Ok(mut s) = self.stats.lock() {
            s.partitions_owned = self.owned.len();
        }
        Ok(())
    }

    /// Takes a checkpoint at `barrier`: the state of each partition with new messages encoded
    /// with its offset, then the revoked partitions' motors forgotten, then the checkpoints and
    /// the held batches' acknowledgements handed to the writer (which confirms what was sent,
    /// writes, and then acknowledges).
    fn checkpoint(&mut self, barrier: &Barrier) -> Result<()> {
        let started = Instant::now();
        for (motor, tp) in &barrier.motors {
            self.motor_partition.insert(motor.clone(), tp.clone());
        }
        for (topic, partition, next) in &barrier.offsets {
            match self.owned.get_mut(&(topic.clone(), *partition)) {
                Some(p) => p.next_offset = Some(p.next_offset.map_or(*next, |o| o.max(*next))),
                None => tracing::warn!(topic, partition, "a barrier names a partition this node was not assigned; not checkpointed"),
            }
        }
        let revoked = |tp: &TopicPartition| barrier.revoked.contains(tp);
        let due: Vec<TopicPartition> = self
            .owned
            .iter()
            .filter(|(tp, p)| p.next_offset != p.checkpointed_offset && !(barrier.lost && revoked(tp)))
            .map(|(tp, _)| tp.clone())
            .collect();
        let encoding = Instant::now();
        let files = self.encode_checkpoints(&due)?;
        let job = CheckpointJob { epoch: barrier.epoch, files, acks: std::mem::take(&mut self.held), encode: encoding.elapsed() };
        if !barrier.revoked.is_empty() {
            let released = self.engine.release_motors(&|m| self.motor_partition.get(m).is_some_and(revoked))?;
            self.motor_partition.retain(|_, tp| !revoked(tp));
            self.owned.retain(|tp, _| !revoked(tp));
            tracing::info!(partitions = barrier.revoked.len(), motors = released, lost = barrier.lost, "handed partitions over");
            if let Ok(mut s) = self.stats.lock() {
                s.motors_released += released as u64;
                s.partitions_owned = self.owned.len();
            }
        }
        self.batches_since_checkpoint = 0;
        let (jobs, _) = self.writer.as_ref().expect("a checkpointed stage has a writer");
        if jobs.send(job).is_err() {
            return Err(self.stop_writer().err().unwrap_or_else(|| anyhow::anyhow!("the checkpoint writer stopped")));
        }
        if let Ok(mut s) = self.stats.lock() {
            s.longest_checkpoint_pause_us = s.longest_checkpoint_pause_us.max(started.elapsed().as_micros() as u64);
        }
        Ok(())
    }

    /// Encodes the checkpoint of each `due` partition: its motors' state and its next offset.
    /// The partitions count them as written from here on (if the writer fails, the stage
    /// stops).
    fn encode_checkpoints(&mut self, due: &[TopicPartition]) -> Result<Vec<CheckpointFile>> {
        let mut files = Vec::with_capacity(due.len());
        for tp in due {
            let engine = self.engine.checkpoint_motors(&|m| self.motor_partition.get(m) == Some(tp)).context("checkpoint: encoding the engine state")?;
            let p = self.owned.get_mut(tp).expect("due partitions are owned");
            let next_offset = p.next_offset.expect("a due partition has an offset");
            let checkpoint = Checkpoint {
                id: p.last_id + 1,
                created_ms: now_ms(),
                offsets: vec![SourceOffset { topic: tp.0.clone(), partition: tp.1, next_offset }],
                sections: vec![(ENGINE_SECTION.to_string(), engine)],
            };
            (p.last_id, p.checkpointed_offset) = (checkpoint.id, Some(next_offset));
            files.push((tp.clone(), p.store.clone(), checkpoint));
        }
        Ok(files)
    }

    /// Writes a step's alerts, late readings and failed runs; `started` is when the step that
    /// closed the windows began.
    fn publish(&mut self, out: StepOutput, started: Instant) -> Result<()> {
        let mut alerts = 0;
        for event in &out.alerts {
            let _alert = tracing::info_span!(
                "alert.emit",
                query = %event.query,
                motor_id = %event.motor_id,
                state = ?event.state,
                severity = ?event.severity,
                peak_score = event.peak_score
            )
            .entered();
            let payload = serde_json::to_vec(event)?;
            self.send(&self.config.alerts_topic, &event.motor_id, &payload, None)?;
            self.alert_latency.observe(started.elapsed());
            alerts += 1;
        }
        let mut late = 0;
        for batch in &out.late {
            late += self.publish_late(batch)?;
        }
        for failed in &out.failed {
            self.publish_failed(failed)?;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.alerts_sent += alerts;
            s.late_sent += late;
        }
        Ok(())
    }

    /// A failed query run's windows, to the dead-letter topic: Arrow IPC, with the reason
    /// (`query_failed`), the error and the query in headers, keyed by the query.
    fn publish_failed(&mut self, failed: &tessera_stream::FailedRun) -> Result<()> {
        use tessera_ingest::dead_letter_headers as h;
        let mut payload = Vec::new();
        let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut payload, failed.windows.schema_ref())?;
        writer.write(&failed.windows)?;
        writer.finish()?;
        drop(writer);
        let headers = OwnedHeaders::new()
            .insert(Header { key: h::REASON, value: Some("query_failed") })
            .insert(Header { key: h::DETAIL, value: Some(failed.error.as_str()) })
            .insert(Header { key: "tessera.dlq.query", value: Some(failed.query.as_str()) })
            .insert(Header { key: "content-type", value: Some("application/vnd.apache.arrow.stream") });
        let record = BaseRecord::to(&self.config.dead_letter_topic).key(failed.query.as_str()).payload(&payload).headers(headers);
        self.producer.send(record).map_err(|(e, _)| anyhow::anyhow!("writing to {}: {e}", self.config.dead_letter_topic))?;
        if let Ok(mut s) = self.stats.lock() {
            s.failed_runs += 1;
        }
        Ok(())
    }

    fn publish_late(&self, batch: &RecordBatch) -> Result<u64> {
        let telemetry = batch.project(&(0..tessera_core::telemetry_schema().fields().len()).collect::<Vec<_>>())?;
        let late_for = batch.column(batch.num_columns() - 1).as_any().downcast_ref::<arrow_array::StringArray>().cloned();
        for (i, r) in readings_from_batch(&telemetry).iter().enumerate() {
            let payload = serde_json::to_vec(&reading_json(r))?;
            let why = late_for.as_ref().map(|a| a.value(i).to_string()).unwrap_or_default();
            self.send(&self.config.late_topic, r.motor_id.as_str(), &payload, Some(&why))?;
        }
        Ok(telemetry.num_rows() as u64)
    }

    fn send(&self, topic: &str, key: &str, payload: &[u8], late_for: Option<&str>) -> Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(why) = late_for {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "tessera.late.for", value: Some(why) }));
        }
        let mut record = Some(record);
        // The producer's queue can be full for a moment: wait rather than drop.
        for _ in 0..600 {
            match self.producer.send(record.take().expect("record")) {
                Ok(()) => return Ok(()),
                Err((e, back)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    record = Some(back);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(anyhow::anyhow!("writing to {topic}: {e}")),
            }
        }
        anyhow::bail!("writing to {topic}: the producer queue stayed full for 30 s")
    }
}

/// A due partition, its store, and its checkpoint.
type CheckpointFile = (TopicPartition, Arc<Mutex<CheckpointStore>>, Checkpoint);

/// One barrier's checkpoints, encoded on the detection thread, for the writer.
struct CheckpointJob {
    epoch: u64,
    files: Vec<CheckpointFile>,
    /// The batches before the barrier: acknowledged once the checkpoints are durable.
    acks: Vec<BatchAck>,
    /// Time spent encoding.
    encode: Duration,
}

/// The checkpoint writer thread: takes the barriers' jobs in order, and for each waits for the
/// broker to confirm what the stage sent so far, writes the checkpoints durably, and then
/// acknowledges the batches they cover. It stops at the first failure, acknowledging nothing
/// more (the detection thread then stops the stage with the error).
struct CheckpointWriter {
    producer: Arc<ThreadedProducer<DeliveryCheck>>,
    delivery_failed: Arc<Mutex<Option<String>>>,
    stats: Arc<Mutex<DetectStats>>,
}

impl CheckpointWriter {
    fn run(self, jobs: Receiver<CheckpointJob>) -> Result<()> {
        for job in jobs {
            if !job.files.is_empty() {
                self.write(&job)?;
                fail::fail_point!("detect-after-checkpoint-write");
            }
            job.acks.into_iter().for_each(BatchAck::ack);
        }
        Ok(())
    }

    fn write(&self, job: &CheckpointJob) -> Result<()> {
        let started = Instant::now();
        self.producer.flush(Duration::from_secs(60)).context("checkpoint: waiting for the broker to confirm alerts and late readings")?;
        if let Some(why) = self.delivery_failed.lock().ok().and_then(|f| f.clone()) {
            anyhow::bail!("checkpoint: an alert or late reading was not delivered ({why}); stopping without committing past it");
        }
        let flushed = started.elapsed();
        let (mut bytes, mut write) = (0, Duration::ZERO);
        for (tp, store, checkpoint) in &job.files {
            let written = store.lock().map_err(|_| anyhow::anyhow!("checkpoint store lock poisoned"))?.write(checkpoint).context("checkpoint")?;
            bytes += written.bytes;
            write += written.elapsed;
            if let Ok(mut s) = self.stats.lock() {
                s.written.insert(tp.clone(), checkpoint.id);
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            s.checkpoints += job.files.len() as u64;
            s.last_checkpoint_bytes = bytes;
            s.last_checkpoint_flush_us = flushed.as_micros() as u64;
            s.last_checkpoint_encode_us = job.encode.as_micros() as u64;
            s.last_checkpoint_write_us = write.as_micros() as u64;
        }
        tracing::debug!(partitions = job.files.len(), bytes, epoch = job.epoch, "checkpoints written");
        Ok(())
    }
}

/// The JSON form of a reading (the protobuf field names; absent channels omitted).
fn reading_json(r: &tessera_core::Reading) -> serde_json::Value {
    use tessera_core::Channel;
    let mut o = serde_json::Map::new();
    o.insert("motor_id".into(), r.motor_id.as_str().into());
    o.insert("site_id".into(), r.site_id.as_str().into());
    o.insert("event_time_ms".into(), r.event_time_ms.into());
    o.insert("sequence".into(), r.sequence.into());
    for c in Channel::ALL {
        if let Some(v) = r.get(c) {
            o.insert(c.name().into(), v.into());
        }
    }
    if !r.extra.is_empty() {
        o.insert("extra".into(), r.extra.iter().map(|(k, v)| (k.clone(), (*v).into())).collect::<serde_json::Map<_, _>>().into());
    }
    o.into()
}
