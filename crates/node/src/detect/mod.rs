//! The detection stage of a node: takes the ingest's shard batches, runs them through the
//! stream engine (windows, continuous queries, alerts) on its own thread, and writes alert
//! events and late readings to Kafka.
//!
//! Without a checkpoint store, a batch is acknowledged to the ingest once the engine has taken
//! it in, so offsets advance while windows are still open: a crash loses open windows.
//!
//! Checkpointed ([`Detect::prepare_checkpointed`]), state is kept per Kafka partition (see
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
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};
use tessera_core::WatermarkPolicy;
use tessera_core::{ConfigError, ensure};
use tessera_ingest::{ShardBatch, TopicPartition};
use tessera_stream::{EngineStats, StreamConfig, StreamEngine};

use tessera_core::now_ms;

mod checkpoint_writer;
pub mod rules;
mod worker;

use crate::durability::StoreLink;
use crate::error::NodeError;
use crate::lifecycle::StageLoop;
use checkpoint_writer::CheckpointWriter;
use worker::Worker;

type Result<T, E = NodeError> = std::result::Result<T, E>;

/// The `[detect]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// `CREATE CONTINUOUS QUERY` statements; empty: the default rule set ([`crate::rules`]).
    pub queries: Vec<String>,
    /// With no `queries`: run the default rule set (true) or no continuous query at all, only
    /// the judges (false).
    pub default_rules: bool,
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
    /// Rows kept in each queryable table (`alerts`, `motor_windows`, `late_events`)...
    pub table_rows: usize,
    /// ...and bytes, in memory (each of those and `telemetry`): at fast sampling
    /// `motor_windows` reaches this first (about 300 bytes a row of the default rule).
    pub table_bytes: usize,
    /// Raw readings kept for the `telemetry` table (the newest; 0: none).
    pub telemetry_rows: usize,
    /// A motor that has sent nothing for this long (processing time) has its shift and wear
    /// state moved out of memory into the spill file, sealed, until its next reading: a
    /// sensor reporting every half hour spends most of its time there, one reporting every
    /// minute never goes ("0s": every motor stays in memory). Bringing a motor back costs
    /// tens of microseconds, a sensor's interval minutes.
    #[serde(with = "humantime_serde")]
    pub cold_after: Duration,
    /// The spill file's directory (the file is unlinked at once: a cache the checkpoints
    /// make good). Default: `@spill` under `[state] dir`, else the system's temporary
    /// directory.
    pub spill_dir: Option<std::path::PathBuf>,
    /// `[detect.data_quality]`: alerts for data that is wrong rather than anomalous.
    pub data_quality: DataQualityConfig,
    /// `[detect.wear]`: alerts for vibration drifting towards its limit over days.
    pub wear: WearConfig,
    /// `[detect.shift]`: alerts for sudden shifts, judged at each motor's own sampling rate.
    pub shift: ShiftConfig,
}

/// `[detect.shift]`: per motor, windows of `readings_per_window` of its own readings (at least
/// `min_window` long), each channel's window mean against a gated robust baseline learnt over
/// `baseline`, Hotelling's T² across channels, daily profiles for temperature and load where
/// the day shows; an alert `shift` (see `tessera_stream::shift`). The same settings serve any
/// sampling rate. Beside it, each whole day's mean against the `days` before (`shift.day`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShiftConfig {
    /// Off: no shift alerts.
    pub enabled: bool,
    /// Readings per window.
    pub readings_per_window: u32,
    /// The shortest window.
    #[serde(with = "humantime_serde")]
    pub min_window: Duration,
    /// The baseline's span (at least `min_baseline_windows` windows).
    #[serde(with = "humantime_serde")]
    pub baseline: Duration,
    /// Windows before the first score.
    pub min_baseline_windows: u32,
    /// A channel beyond this |z| stays out of its baseline.
    pub gate: f64,
    /// A channel kept out of its baseline this long relearns it.
    #[serde(with = "humantime_serde")]
    pub relearn: Duration,
    /// Hotelling's T² across channels.
    pub t2: bool,
    /// Daily profiles for temperature and load.
    pub seasonal: bool,
    /// The day scale: each whole day's channel means against the last `days` days' (judged
    /// from `days / 2` on), at most 255; 0 turns it off.
    pub days: u32,
    /// Transients: a channel's range within a window at this z against its usual range opens
    /// an alert by itself (one spike is enough); 0 turns them off (the default).
    pub transient_above: f64,
    /// A score at or above this, `open_windows` windows in a row, opens an alert...
    pub open_above: f64,
    /// ...and below this, `close_windows` in a row, closes it.
    pub close_below: f64,
    /// Critical at or above this.
    pub critical_above: f64,
    /// Windows in a row to open.
    pub open_windows: u32,
    /// Windows in a row to close.
    pub close_windows: u32,
}

impl Default for ShiftConfig {
    fn default() -> Self {
        let s = tessera_stream::shift::ShiftConfig::default();
        let ms = |v: i64| Duration::from_millis(v as u64);
        Self {
            enabled: true,
            readings_per_window: s.readings_per_window,
            min_window: ms(s.min_window_ms),
            baseline: ms(s.baseline_ms),
            min_baseline_windows: s.min_baseline_windows,
            gate: s.gate,
            relearn: ms(s.relearn_ms),
            t2: s.t2,
            seasonal: s.seasonal,
            days: s.days,
            transient_above: s.transient_above.unwrap_or(0.0),
            open_above: s.alerts.open_above,
            close_below: s.alerts.close_below,
            critical_above: s.alerts.critical_above.unwrap_or(f64::INFINITY),
            open_windows: s.alerts.open_windows,
            close_windows: s.alerts.close_windows,
        }
    }
}

impl ShiftConfig {
    /// The demo's settings, for minutes of data at 1 Hz (`tessera demo`): windows of 5
    /// readings, a baseline of 30 s and 6 windows (the window means' spread floored by their
    /// readings' own noise, which keeps so short a baseline calm), open at 8, and transients
    /// (one reading far outside its window's usual range, a current spike) at 16. Chosen on
    /// the demo's simulated fleet (`tessera eval --fleet`), not on real data: a baseline of
    /// half a minute follows nothing slower.
    pub fn demo() -> Self {
        Self {
            readings_per_window: 5,
            min_window: Duration::from_secs(5),
            baseline: Duration::from_secs(30),
            min_baseline_windows: 6,
            open_above: 8.0,
            transient_above: 16.0,
            ..Self::default()
        }
    }

    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.readings_per_window >= 1, "readings_per_window", "must be at least 1")?;
        ensure(!self.min_window.is_zero(), "min_window", "must be longer than 0")?;
        ensure(!self.baseline.is_zero(), "baseline", "must be longer than 0")?;
        ensure(self.min_baseline_windows >= 2, "min_baseline_windows", "must be at least 2")?;
        ensure(self.gate > 0.0, "gate", "must be positive")?;
        ensure(!self.relearn.is_zero(), "relearn", "must be longer than 0")?;
        ensure(self.days == 0 || (4..=255).contains(&self.days), "days", "must be 0 (off) or 4 to 255")?;
        ensure(self.transient_above >= 0.0, "transient_above", "must be 0 (off) or positive")?;
        ensure(self.close_below <= self.open_above, "close_below", "must not be above open_above")?;
        ensure(self.critical_above >= self.open_above, "critical_above", "must not be below open_above")?;
        ensure(self.open_windows >= 1, "open_windows", "must be at least 1")?;
        ensure(self.close_windows >= 1, "close_windows", "must be at least 1")
    }

    fn shift(&self) -> Option<tessera_stream::shift::ShiftConfig> {
        self.enabled.then_some(tessera_stream::shift::ShiftConfig {
            readings_per_window: self.readings_per_window,
            min_window_ms: self.min_window.as_millis() as i64,
            baseline_ms: self.baseline.as_millis() as i64,
            min_baseline_windows: self.min_baseline_windows,
            gate: self.gate,
            relearn_ms: self.relearn.as_millis() as i64,
            t2: self.t2,
            seasonal: self.seasonal,
            days: self.days,
            transient_above: (self.transient_above > 0.0).then_some(self.transient_above),
            alerts: tessera_stream::grammar::AlertOptions {
                open_above: self.open_above,
                close_below: self.close_below,
                critical_above: self.critical_above.is_finite().then_some(self.critical_above),
                open_windows: self.open_windows,
                close_windows: self.close_windows,
            },
        })
    }
}

/// `[detect.wear]`: per motor and vibration channel, an early-life baseline, an hourly level,
/// its trend and the time until it reaches the ISO 20816 zone C/D boundary of `class`; an
/// alert `wear.<channel>` when that is nearer than `horizon` (see `tessera_stream::wear`).
/// Judged on event time: the same at any sampling rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WearConfig {
    /// Off: no wear alerts.
    pub enabled: bool,
    /// The machine class of the vibration zones: `I` (small, up to 15 kW), `II` (medium),
    /// `III` (large, rigid foundation), `IV` (large, soft foundation).
    pub class: tessera_stream::wear::MachineClass,
    /// How long of a motor's first readings make its early-life baseline.
    #[serde(with = "humantime_serde")]
    pub baseline: Duration,
    /// The level's time constant.
    #[serde(with = "humantime_serde")]
    pub level: Duration,
    /// How far back the trend looks.
    #[serde(with = "humantime_serde")]
    pub trend: Duration,
    /// Alert when the limit is nearer than this (and the level has drifted 30 % above the
    /// baseline).
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// The limit of the temperature rise over what the load explains (°C): alert
    /// `wear.temperature_rise` past half of it with the limit nearer than `horizon`.
    pub temperature_rise_limit: f64,
}

impl Default for WearConfig {
    fn default() -> Self {
        let w = tessera_stream::wear::WearConfig::default();
        let ms = |v: i64| Duration::from_millis(v as u64);
        Self {
            enabled: true,
            class: w.class,
            baseline: ms(w.baseline_ms),
            level: ms(w.level_ms),
            trend: ms(w.sample_ms * w.trend_samples as i64),
            horizon: ms(w.horizon_ms),
            temperature_rise_limit: w.rise_limit_c,
        }
    }
}

impl WearConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [("baseline", self.baseline), ("level", self.level), ("horizon", self.horizon)] {
            ensure(!d.is_zero(), name, "must be longer than 0")?;
        }
        ensure(self.trend >= Duration::from_secs(3600), "trend", "must be at least 1h")?;
        ensure(self.temperature_rise_limit > 0.0, "temperature_rise_limit", "must be positive")
    }

    fn wear(&self) -> Option<tessera_stream::wear::WearConfig> {
        let defaults = tessera_stream::wear::WearConfig::default();
        // 36 trend samples over the trend span (at least a minute apart).
        let sample_ms = (self.trend.as_millis() as i64 / 36).max(60_000);
        self.enabled.then_some(tessera_stream::wear::WearConfig {
            class: self.class,
            baseline_ms: self.baseline.as_millis() as i64,
            level_ms: self.level.as_millis() as i64,
            sample_ms,
            trend_samples: (self.trend.as_millis() as i64 / sample_ms).max(2) as usize,
            horizon_ms: self.horizon.as_millis() as i64,
            rise_limit_c: self.temperature_rise_limit,
            ..defaults
        })
    }
}

/// `[detect.data_quality]`: alerts of their own kinds (`silent`, `sensor_dropout.<channel>`,
/// `stuck_sensor.<channel>`, `clock_skew`) for motors whose data cannot be trusted; see
/// `tessera_stream::quality`. Judged by processing time: meant for live data, not replays of
/// history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataQualityConfig {
    /// Off: no data-quality alerts.
    pub enabled: bool,
    /// A motor is silent after this many of its own reporting intervals without a reading...
    pub silent_intervals: u32,
    /// ...and never before this long.
    #[serde(with = "humantime_serde")]
    pub min_silence: Duration,
    /// A channel the motor reported, empty this many readings in a row, has dropped out.
    pub dropout_readings: u32,
    /// A channel with exactly the same value this many readings in a row is stuck.
    pub stuck_readings: u32,
    /// A motor whose event times are off from those read with it by more than this is skewed.
    #[serde(with = "humantime_serde")]
    pub skew_bound: Duration,
}

impl Default for DataQualityConfig {
    fn default() -> Self {
        let q = tessera_stream::quality::QualityConfig::default();
        Self {
            enabled: true,
            silent_intervals: q.silent_intervals,
            min_silence: Duration::from_millis(q.min_silence_ms as u64),
            dropout_readings: q.dropout_readings,
            stuck_readings: q.stuck_readings,
            skew_bound: Duration::from_millis(q.skew_bound_ms as u64),
        }
    }
}

impl DataQualityConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.silent_intervals >= 1, "silent_intervals", "must be at least 1")?;
        ensure(!self.min_silence.is_zero(), "min_silence", "must be longer than 0")?;
        ensure(self.dropout_readings >= 1, "dropout_readings", "must be at least 1")?;
        ensure(self.stuck_readings >= 2, "stuck_readings", "must be at least 2")?;
        ensure(!self.skew_bound.is_zero(), "skew_bound", "must be longer than 0")
    }

    fn quality(&self) -> Option<tessera_stream::quality::QualityConfig> {
        self.enabled.then_some(tessera_stream::quality::QualityConfig {
            silent_intervals: self.silent_intervals,
            min_silence_ms: self.min_silence.as_millis() as i64,
            dropout_readings: self.dropout_readings,
            stuck_readings: self.stuck_readings,
            skew_bound_ms: self.skew_bound.as_millis() as i64,
        })
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            queries: Vec::new(),
            default_rules: true,
            allowed_lateness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            alerts_topic: "tessera-alerts".into(),
            late_topic: "tessera-late".into(),
            dead_letter_topic: "tessera-detect-dead-letter".into(),
            table_rows: 1_000_000,
            table_bytes: 64 << 20,
            telemetry_rows: 100_000,
            cold_after: Duration::from_secs(120),
            spill_dir: None,
            data_quality: DataQualityConfig::default(),
            wear: WearConfig::default(),
            shift: ShiftConfig::default(),
        }
    }
}

impl DetectConfig {
    /// What `tessera demo` runs: the default rules, the demo's windows
    /// ([`rules::DEMO_RULES`]) and the shift judge at [`ShiftConfig::demo`].
    pub fn demo() -> Self {
        Self {
            queries: rules::DEFAULT_RULES.iter().chain(rules::DEMO_RULES).map(|s| s.to_string()).collect(),
            shift: ShiftConfig::demo(),
            ..Self::default()
        }
    }

    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.alerts_topic.is_empty(), "alerts_topic", "must not be empty")?;
        ensure(!self.late_topic.is_empty(), "late_topic", "must not be empty")?;
        ensure(!self.dead_letter_topic.is_empty(), "dead_letter_topic", "must not be empty")?;
        ensure(self.idle_timeout > Duration::ZERO, "idle_timeout", "must be positive")?;
        ensure(self.table_rows > 0, "table_rows", "must be positive")?;
        ensure(self.table_bytes > 0, "table_bytes", "must be positive")?;
        self.data_quality.validate().map_err(|e| e.within("data_quality"))?;
        self.wear.validate().map_err(|e| e.within("wear"))?;
        self.shift.validate().map_err(|e| e.within("shift"))
    }

    /// The queries to run: the configured ones or the defaults.
    pub fn effective_queries(&self) -> Vec<String> {
        if self.queries.is_empty() && !self.default_rules {
            Vec::new()
        } else if self.queries.is_empty() {
            crate::detect::rules::DEFAULT_RULES.iter().map(|s| s.to_string()).collect()
        } else {
            self.queries.clone()
        }
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            watermark: WatermarkPolicy {
                allowed_lateness_ms: self.allowed_lateness.as_millis() as i64,
                idle_timeout_ms: self.idle_timeout.as_millis() as i64,
            },
            table_rows: self.table_rows,
            table_bytes: self.table_bytes,
            telemetry_rows: self.telemetry_rows,
            quality: self.data_quality.quality(),
            wear: self.wear.wear(),
            shift: self.shift.shift(),
        }
    }
}

/// Builds an engine with the configured queries; a bad query fails here, naming it.
pub fn build_engine(config: &DetectConfig) -> Result<StreamEngine> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| NodeError::Io { what: "building a runtime to plan the queries", source })?;
    let mut engine = StreamEngine::new(config.stream_config());
    if !config.cold_after.is_zero() {
        let spill = tessera_stream::cold::ColdSpill {
            dir: config.spill_dir.clone().unwrap_or_else(std::env::temp_dir),
            after_ms: config.cold_after.as_millis() as i64,
        };
        engine.spill_cold_motors(&spill).map_err(|source| NodeError::Engine {
            what: format!("detect.spill_dir {}: the spill file of cold motors", spill.dir.display()),
            source,
        })?;
    }
    for sql in config.effective_queries() {
        rt.block_on(engine.register(&sql))
            .map_err(|source| NodeError::Query { name: "in detect.queries".into(), source })?;
    }
    Ok(engine)
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
    /// Alert events written, by (query, severity, state).
    pub alert_events: BTreeMap<(String, &'static str, &'static str), u64>,
    /// How long encoding each checkpoint took (the detection stage pauses for it).
    pub checkpoint_encode: Arc<tessera_core::LatencyHistogram>,
    /// How long writing each checkpoint took, from the wait for the broker's confirmations to
    /// the files written (in the background).
    pub checkpoint_write: Arc<tessera_core::LatencyHistogram>,
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
        let rows = engine
            .queries()
            .map(|q| (q.name.clone(), tessera_stream::engine::describe(&q.window), q.text.clone()))
            .collect();
        if let Ok(mut list) = self.0.lock() {
            *list = rows;
        }
    }

    /// The table's schema: name, window, sql.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("window", DataType::Utf8, false),
            Field::new("sql", DataType::Utf8, false),
        ]))
    }

    /// The table's rows now.
    pub fn rows(&self) -> Vec<RecordBatch> {
        let rows = self.0.lock().map(|l| l.clone()).unwrap_or_default();
        let column =
            |f: fn(&(String, String, String)) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as _;
        RecordBatch::try_new(Self::schema(), vec![column(|r| &r.0), column(|r| &r.1), column(|r| &r.2)])
            .map(|b| vec![b])
            .unwrap_or_default()
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

/// A detection stage's handle: its counters, query changes and stop request (its loop runs on
/// a thread the caller started, see [`Detect::prepare`]).
pub struct Detect {
    stop: Arc<AtomicBool>,
    end_of_input: Arc<AtomicBool>,
    stats: Arc<Mutex<DetectStats>>,
    changes: Sender<QueryChange>,
    running: RunningQueries,
    alert_latency: Arc<tessera_core::LatencyHistogram>,
    last_turn_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// Counts deliveries the broker refused, so that a checkpoint never covers a lost alert.
pub(super) struct DeliveryCheck {
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
    /// Prepares the stage on `engine`, reading `batches`, writing to `brokers`: its handle, and
    /// its loop for the caller to run on a thread ([`crate::lifecycle::StageThread::spawn`]);
    /// the loop returns the engine once the stage is asked to stop.
    pub fn prepare(
        engine: StreamEngine,
        config: &DetectConfig,
        brokers: &str,
        batches: Receiver<ShardBatch>,
    ) -> Result<(Self, StageLoop<StreamEngine>)> {
        let kafka = crate::topics::KafkaClient { brokers: brokers.to_string(), settings: Default::default() };
        Self::prepare_checkpointed(engine, config, &kafka, batches, false, None, None)
    }

    /// Like [`Detect::prepare`], with per-partition checkpoints when `checkpointed`: the ingest
    /// must then send barriers (its `checkpoint_interval` set) and partitions' checkpoints
    /// ([`tessera_ingest::Ingest::start_with_states`] with
    /// [`crate::checkpoints::PartitionCheckpoints`]). With `raw`, every reading taken in is
    /// also sent there (the site's store, see [`crate::store`]), and nothing is checkpointed
    /// or acknowledged before the store holds it durably ([`crate::durability`]); if the store
    /// is gone, the stage stops with an error rather than drop readings.
    pub fn prepare_checkpointed(
        engine: StreamEngine,
        config: &DetectConfig,
        kafka: &crate::topics::KafkaClient,
        batches: Receiver<ShardBatch>,
        checkpointed: bool,
        raw: Option<StoreLink>,
        notifier: Option<crate::notify::Notifier>,
    ) -> Result<(Self, StageLoop<StreamEngine>)> {
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<DeliveryCheck> = kafka
            .client_config()
            .set("enable.idempotence", "true")
            // Alerts are few and urgent: send each at once.
            .set("linger.ms", "0")
            .create_with_context(DeliveryCheck { failed: failed.clone() })
            .map_err(|source| NodeError::Kafka { what: "creating the alerts producer".into(), source })?;
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
        let checkpoint_writer = checkpointed.then(|| CheckpointWriter {
            producer: producer.clone(),
            delivery_failed: failed.clone(),
            stats: stats.clone(),
            store: raw.as_ref().map(|link| link.durability.clone()),
        });
        let worker = Worker {
            engine,
            producer,
            checkpoint_writer,
            writer: None,
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
            notifier,
            last_epoch: 0,
            alert_latency: alert_latency.clone(),
            last_turn_ms: last_turn_ms.clone(),
        };
        let handle = Self { stop, end_of_input, stats, changes, running, alert_latency, last_turn_ms };
        Ok((handle, StageLoop::new("detect", move || worker.run(batches))))
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

    /// Asks the stage to stop after the batches already queued; its loop then flushes the
    /// producer and returns the engine (whose tables stay queryable).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Like [`Detect::request_stop`], but the input is complete (a finished replay): every
    /// window still open is closed, and its alerts written, before stopping. Replays are then
    /// independent of processing-time idleness.
    pub fn request_stop_at_end_of_input(&self) {
        self.end_of_input.store(true, Ordering::Relaxed);
        self.request_stop();
    }
}

impl Drop for Detect {
    /// A stage whose handle is gone stops (its thread is joined by whoever started it).
    fn drop(&mut self) {
        self.request_stop();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_dir_that_cannot_be_made_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let config = DetectConfig { spill_dir: Some(file.join("spill")), ..DetectConfig::default() };
        let Err(err) = build_engine(&config) else { panic!("a spill directory under a file was taken") };
        let text = tessera_core::error_chain(&err);
        assert!(text.contains("detect.spill_dir") && text.contains("creating its directory"), "{text}");
        let off = DetectConfig { cold_after: Duration::ZERO, ..config };
        build_engine(&off).expect("no spill file when motors never go cold");
    }
}
